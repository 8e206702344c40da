"""fit(log_csv=) / fastbp.CSVLogger and the callbacks' on_train_begin / on_train_end."""
import csv

import numpy as np
import pytest

import fastbp


def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((120, 4)), rng.integers(0, 3, 120)


def test_csv_rows_match_the_history_and_are_written_as_it_goes(tmp_path):
    X, y = data()
    path = tmp_path / "log.csv"
    seen = []

    class Peek:
        def on_epoch_end(self, epoch, logs):   # runs after the logger's row is written?
            seen.append(len(path.read_text().splitlines()))

    model = fastbp.MLP([4, 8, 3], seed=0)
    h = fastbp.fit(model, X, y, optimizer=fastbp.Adam(model, 1e-2), epochs=3, verbose=0,
                   validation_split=0.25, log_csv=path, callbacks=[Peek()])
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "samples_per_s", "time"):
        assert [float(r[key]) for r in rows] == [float(v) for v in h[key]], key
    # the logger runs after the user's callbacks: each epoch's row is there by the next
    assert seen == [1, 2, 3]
    # a metric the run has not: an empty cell
    reg = fastbp.MLP([4, 2], loss="mse", seed=0)
    fastbp.fit(reg, X, X[:, :2], optimizer=fastbp.SGD(reg, 0.01), epochs=1, verbose=0,
               log_csv=path)
    row = list(csv.DictReader(path.open()))[0]
    assert row["accuracy"] == "" and row["val_loss"] == "" and float(row["loss"]) > 0


def test_train_begin_and_end_hooks(tmp_path):
    X, y = data()
    calls = []

    class Hooks:
        def on_train_begin(self, logs):
            calls.append(("begin", logs["epochs"], logs["samples"]))

        def on_train_end(self, logs):
            calls.append(("end", logs["epochs"], logs["stopped_early"]))

    model = fastbp.MLP([4, 8, 3], seed=0)
    fastbp.fit(model, X, y, optimizer=fastbp.Adam(model, 1e-2), epochs=2, verbose=0,
               callbacks=[Hooks(), lambda epoch, logs: calls.append(("epoch", epoch))])
    assert calls == [("begin", 2, 120), ("epoch", 0), ("epoch", 1), ("end", 2, False)]
    with pytest.raises(TypeError, match="on_train_begin"):
        fastbp.fit(model, X, y, optimizer=fastbp.Adam(model, 1e-2), callbacks=[object()])


def test_resumed_run_continues_the_log(tmp_path):
    X, y = data()
    path, ck = tmp_path / "log.csv", tmp_path / "ck"

    def run(epochs, resume):
        model = fastbp.MLP([4, 8, 3], seed=0)
        return fastbp.fit(model, X, y, optimizer=fastbp.Adam(model, 1e-2), epochs=epochs,
                          seed=1, verbose=0, log_csv=path, checkpoint_dir=ck, resume=resume)
    run(2, False)
    h = run(4, True)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows] == [float(v) for v in h["loss"]]
