"""The state of a training run: its History, how it ends (TrainingDiverged), the progress
bar, and what a checkpoint carries (fastbp.checkpoint writes and reads the file): the
epoch and position in its shuffled order, the running sums, the optimizer's state, the
random generator, the schedule and the history."""
import _signal
import math
import signal
import threading

import numpy as np


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite.  The model holds the weights of the last
    epoch whose loss was finite; `history` holds the epochs completed before."""

    def __init__(self, message, history):
        super().__init__(message)
        self.history = history


class History:
    """Per-epoch metrics.  history["loss"] etc. are lists with one entry per epoch.

    Keys: loss, accuracy (classification), val_loss, val_accuracy (with validation data),
    lr, samples_per_s, time.  Also: epochs (completed), best_epoch, stopped_early,
    interrupted (Ctrl-C), samples_seen.
    """

    def __init__(self):
        self.history = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr",
                                         "samples_per_s", "time")}
        self.best_epoch = None
        self.stopped_early = False
        self.interrupted = False
        self.samples_seen = 0

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    @property
    def epochs(self):
        return len(self.history["loss"])

    def __repr__(self):
        last = {k: v[-1] for k, v in self.history.items() if v}
        return f"History(epochs={self.epochs}, last={last})"


def progress(verbose, total):
    """One bar over the whole run (tqdm, optional); None when silent or without tqdm."""
    if verbose < 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: fall back to one line per epoch
        return None
    return tqdm(total=total, unit="sample", dynamic_ncols=True, mininterval=0.2)


def diverged(model, good_params, history, loss, where, what=None):
    """Put back the weights of the last finite epoch and return the error to raise.
    what: what went wrong, if not the loss (which was then `loss`)."""
    model.backend.restore(good_params)
    what = what or f"training loss became {loss}"
    return TrainingDiverged(
        f"{what} {where}; the model holds the weights from the end of the last finite "
        "epoch. Lower the learning rate, or scale the inputs.", history)


def batch_l2(l2, l2_per_weight, total):
    """A step's L2 factor given its batch's weight total, as the compiled step's
    (kernels/cpu/steps.l2_factor): l2, or l2 / total (0 for a batch of weight 0)."""
    if not l2_per_weight:
        return l2
    return 0.0 if total == 0.0 else l2 / total


def bar_update(bar, run, rows, has_acc):
    """Advance the progress bar by `rows` and show the epoch's running loss/accuracy."""
    bar.update(rows)
    weight = run.running_weight()
    post = {"loss": f"{run.total_loss / weight if weight > 0 else 0.0:.4f}"}
    if has_acc:
        post["acc"] = f"{run.correct / max(run.seen, 1):.4f}"
    bar.set_postfix(post, refresh=False)


class Interrupts:
    """Ctrl-C during fit.  The first one is recorded, and the run stops at the next point
    where the model, the run's counters and a checkpoint agree (after a step, or a chunk
    of compiled steps; fit then returns its history, interrupted).  A second one raises
    KeyboardInterrupt at once.  Only the main thread receives signals: elsewhere, and
    when SIGINT has no Python handler, Ctrl-C is Python's as usual.

    Why: a KeyboardInterrupt raised wherever Python happened to be (an import, Numba
    resolving a kernel, between a compiled chunk and the counters that record it) escaped
    fit or left a checkpoint whose step did not match its weights."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def start(self):
        # _signal's C functions: one call each (signal.signal and getsignal run Python
        # code, where a Ctrl-C could land half-way)
        if threading.current_thread() is threading.main_thread():
            previous = _signal.signal(_signal.SIGINT, self._handle)
            if previous is signal.default_int_handler:
                self._previous = previous
            else:       # the user's own handler (or none): theirs to keep
                _signal.signal(_signal.SIGINT, previous)
        return self

    def stop(self):
        if self._previous is not None:
            _signal.signal(_signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


class Run:
    """The state of a training run that a checkpoint must carry (see fastbp.checkpoint)."""

    def __init__(self, rows):
        """rows: the number of rows of the data set to train on, or the array of their
        indices (a validation split trains on a subset, by index)."""
        self.epoch = 0            # current epoch
        self.pos = 0              # next row of the epoch's order to train on
        self.total_loss = 0.0     # the epoch's sums so far
        self.correct = 0
        self.seen = 0
        self.step = 0             # optimizer steps taken in this run
        self.best_metric = math.inf
        self.bad_epochs = 0
        subset = isinstance(rows, np.ndarray)
        self.order = rows.astype(np.int64) if subset else np.arange(rows)
        self.subset = subset      # order is not a permutation of all of X's rows
        self.weights = None       # the data set's sample weights (n,), if any
        self._running = (0, 0.0)  # (pos, weight of order[:pos]) for running_weight

    def loss_weight(self, pos):
        """What the epoch's total_loss sums over up to row pos of the order: pos, or with
        sample weights the weight of those rows."""
        if self.weights is None:
            return pos
        return float(np.sum(self.weights[self.order[:pos]]))

    def running_weight(self):
        """loss_weight(self.pos) for the progress bar, added up as the epoch goes (a sum
        from the start at every update would cost O(n) each time)."""
        if self.weights is None:
            return self.pos
        done, weight = self._running
        if self.pos < done:       # a new epoch
            done, weight = 0, 0.0
        weight += float(np.sum(self.weights[self.order[done:self.pos]]))
        self._running = (self.pos, weight)
        return weight


def save_checkpoint(checkpoint_dir, run, model, optimizer, rng, schedule, history,
                     good_params, best_params, batch_size):
    from .. import checkpoint
    opt_state = optimizer.state_dict()
    meta = {
        "model": model.config(), "n": int(run.order.shape[0]), "batch_size": batch_size,
        "epoch": run.epoch, "pos": run.pos, "total_loss": run.total_loss,
        "correct": int(run.correct), "seen": run.seen, "step": run.step,
        "best_metric": run.best_metric, "bad_epochs": run.bad_epochs,
        "rng": rng.bit_generator.state,
        "schedule": {k: v for k, v in vars(schedule).items()
                     if isinstance(v, (int, float, str, type(None)))},
        "optimizer": {k: v for k, v in opt_state.items() if not isinstance(v, np.ndarray)},
        "history": history.history, "best_epoch": history.best_epoch,
        "samples_seen": history.samples_seen,
    }
    arrays = {"params": model.params, "order": run.order, "good_params": good_params,
              "best_params": best_params}
    arrays.update({"opt_" + k: v for k, v in opt_state.items() if isinstance(v, np.ndarray)})
    checkpoint.save(checkpoint_dir, meta, arrays)


def load_checkpoint(checkpoint_dir, run, model, optimizer, rng, schedule, history,
                     good_params, batch_size):
    """Restore a run from checkpoint_dir; returns best_params (or None)."""
    from .. import checkpoint
    found = checkpoint.load(checkpoint_dir)
    if found is None:
        return None
    meta, arrays = found
    where = f"checkpoint in {checkpoint_dir!r}"
    missing = sorted(set(_META_KEYS) - set(meta))
    if missing:
        raise ValueError(f"the {where} is damaged: it lacks {missing}")
    # dropout's seed is state, restored like the weights (a model built without a seed
    # draws its own); the rest of the architecture must match
    saved, ours = meta["model"], model.config()
    dropout_seed = None
    if isinstance(saved, dict):
        saved = dict(saved)
        dropout_seed = saved.pop("dropout_seed", None)
        if dropout_seed is not None and (not _is_int(dropout_seed)
                                         or not 0 <= dropout_seed < 1 << 63):
            raise ValueError(f"the {where} is damaged: dropout_seed {dropout_seed!r}")
    ours.pop("dropout_seed", None)
    if saved != ours or meta["n"] != run.order.shape[0] \
            or meta["batch_size"] != batch_size:
        raise ValueError(
            f"the {where} is for another run (model "
            f"{meta['model']}, {meta['n']} rows, batch {meta['batch_size']}); this run has "
            f"{model.config()}, {run.order.shape[0]} rows, batch {batch_size}")
    # Everything is checked before anything is restored: compiled code indexes the data
    # with `order` and trusts the shapes, so a damaged file must not get that far.
    _check_checkpoint(where, meta, arrays, model, run.order, rng, schedule, history)
    opt_state = dict(meta["optimizer"])
    opt_state.update({k[4:]: v for k, v in arrays.items() if k.startswith("opt_")})
    try:
        optimizer.load_state_dict(opt_state)     # validates all of it before it changes any
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the {where} is damaged: {exc}") from None
    model.params[...] = arrays["params"]
    if dropout_seed is not None:
        model.set_dropout_seed(dropout_seed)
    for k in ("epoch", "pos", "total_loss", "correct", "seen", "step", "best_metric",
              "bad_epochs"):
        setattr(run, k, meta[k])
    run.order[...] = arrays["order"]
    rng.bit_generator.state = meta["rng"]
    for k, v in meta["schedule"].items():
        setattr(schedule, k, v)
    history.history = meta["history"]
    history.best_epoch = meta["best_epoch"]
    history.samples_seen = meta["samples_seen"]
    good_params[...] = arrays["good_params"]
    return arrays.get("best_params")


_META_KEYS = ("model", "n", "batch_size", "epoch", "pos", "total_loss", "correct", "seen",
              "step", "best_metric", "bad_epochs", "rng", "schedule", "optimizer", "history",
              "best_epoch", "samples_seen")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_checkpoint(where, meta, arrays, model, rows, rng, schedule, history):
    """ValueError naming the first field of a checkpoint that cannot be this run's."""
    def bad(field, why):
        raise ValueError(f"the {where} is damaged: {field} {why}")

    n = rows.shape[0]
    if not isinstance(meta["optimizer"], dict):
        bad("optimizer", f"is {meta['optimizer']!r}, not the optimizer's settings")

    for k, lo, hi in (("epoch", 0, None), ("pos", 0, n), ("correct", 0, None),
                      ("seen", 0, None), ("step", 0, None), ("bad_epochs", 0, None),
                      ("samples_seen", 0, None)):
        v = meta[k]
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            bad(k, f"is {v!r}, not an integer in [{lo}, {hi if hi is not None else 'inf'}]")
    if meta["correct"] > meta["seen"]:
        bad("correct", f"({meta['correct']}) exceeds seen ({meta['seen']})")
    if not _is_number(meta["total_loss"]) or not math.isfinite(meta["total_loss"]) \
            or meta["total_loss"] < 0:
        bad("total_loss", f"is {meta['total_loss']!r}")
    if not _is_number(meta["best_metric"]) or math.isnan(meta["best_metric"]):
        bad("best_metric", f"is {meta['best_metric']!r}")
    size = model.layout.size
    for k in ("params", "good_params", "best_params"):
        if k not in arrays:
            if k == "best_params":
                continue
            bad(k, "is missing")
        a = arrays[k]
        if a.shape != (size,) or a.dtype != model.dtype:
            bad(k, f"has shape {a.shape} and dtype {a.dtype}, expected ({size},) {model.dtype}")
        if not np.all(np.isfinite(a)):
            bad(k, "holds NaN or infinite values")
    order = arrays.get("order")
    if order is None or order.shape != (n,) or order.dtype.kind not in "iu":
        bad("order", f"is not {n} integer row indices")
    if not np.array_equal(np.sort(order), np.sort(rows)):
        bad("order", f"is not a permutation of the run's {n} rows")
    hist = meta["history"]
    if not isinstance(hist, dict) or set(hist) != set(history.history) or not all(
            isinstance(v, list) and all(x is None or _is_number(x) for x in v)
            for v in hist.values()) or len({len(v) for v in hist.values()}) != 1:
        bad("history", "is not one list of numbers per metric, all of one length")
    epochs_done = len(hist["loss"])
    if epochs_done > meta["epoch"] + 1:
        bad("history", f"has {epochs_done} epochs, more than the checkpoint's epoch")
    best = meta["best_epoch"]
    if best is not None and (not _is_int(best) or not 0 <= best < max(epochs_done, 1)):
        bad("best_epoch", f"is {best!r}")
    sched = meta["schedule"]
    current = {k: v for k, v in vars(schedule).items()
               if isinstance(v, (int, float, str, type(None)))}
    if not isinstance(sched, dict) or not set(sched) <= set(current) or not all(
            isinstance(sched[k], type(current[k])) or (_is_number(sched[k]) and
                                                        _is_number(current[k]))
            or sched[k] is None or current[k] is None for k in sched):
        bad("schedule", f"does not fit the learning-rate schedule {type(schedule).__name__}")
    try:
        probe = type(rng.bit_generator)()
        probe.state = meta["rng"]
    except (TypeError, ValueError, KeyError) as exc:
        bad("rng", f"is not a {type(rng.bit_generator).__name__} state ({exc})")
