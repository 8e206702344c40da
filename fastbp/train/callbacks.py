"""Callbacks for fastbp.fit: objects with any of on_train_begin(logs), on_epoch_end(epoch,
logs) and on_train_end(logs) (Keras' names), or plain callables (epoch, logs)."""
import csv
import math

HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")
COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "samples_per_s",
           "time")


class CSVLogger:
    """One row per epoch in a CSV file a spreadsheet opens: epoch (from 1), loss, accuracy,
    val_loss, val_accuracy, lr, samples_per_s, time (seconds); a metric the run does not
    have is an empty cell.  Each row is on disk when its epoch ends (the file is opened,
    appended to and closed every epoch), so a run that stops keeps the rows so far.
    append: keep an existing file's rows (a resumed run) instead of starting it afresh."""

    def __init__(self, path, append=False):
        self.path = path
        self.append = append

    def on_train_begin(self, logs=None):
        import os
        if self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            return
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerow(COLUMNS)

    def on_epoch_end(self, epoch, logs):
        row = []
        for key in COLUMNS:
            value = epoch + 1 if key == "epoch" else logs.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                row.append("")
            else:
                row.append(repr(float(value)) if key != "epoch" else str(value))
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(row)

    def on_train_end(self, logs=None):
        pass


def hook(callback, name):
    """callback's method `name`, or None (callables have on_epoch_end only)."""
    fn = getattr(callback, name, None)
    if fn is None and name == "on_epoch_end" and callable(callback):
        return callback
    return fn
