"""The batched trainer: fastbp.fit(model, X, y, optimizer=...) -> History.

Each epoch visits every sample once, in a fresh random order when shuffle=True.  Batches
are gathered by index into two preallocated buffers (full batches and the last partial
one), so the data set is never copied or reordered in memory and the last partial batch is
trained, not dropped.  Data flows one way: fit -> model.loss_and_grad -> kernels.
"""
import itertools
import math
import time
import weakref

import numpy as np

from ._validation import check_float, check_positive_int
from .kernels import codes
from .schedules import make_schedule


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


def _progress(verbose, total):
    """One bar over the whole run (tqdm, optional); None when silent or without tqdm."""
    if verbose < 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: fall back to one line per epoch
        return None
    return tqdm(total=total, unit="sample", dynamic_ncols=True, mininterval=0.2)


def _diverged(model, good_params, history, loss, where):
    """Put back the weights of the last finite epoch and return the error to raise."""
    _restore(model, good_params)
    return TrainingDiverged(
        f"training loss became {loss} {where}; the model holds the weights from the end of "
        "the last finite epoch. Lower the learning rate, or scale the inputs.", history)


def _bar_update(bar, run, rows, has_acc):
    """Advance the progress bar by `rows` and show the epoch's running loss/accuracy."""
    bar.update(rows)
    post = {"loss": f"{run.total_loss / max(run.seen, 1):.4f}"}
    if has_acc:
        post["acc"] = f"{run.correct / max(run.seen, 1):.4f}"
    bar.set_postfix(post, refresh=False)


def _snapshot(model, into=None):
    """A copy of the flat parameters (on the model's device), reusing `into` if given."""
    p = model.params
    if hasattr(p, "copy_to_host"):
        if into is None:
            from numba import cuda
            into = cuda.device_array_like(p)
        into.copy_to_device(p)
        return into
    if into is None:
        return p.copy()
    into[...] = p
    return into


def _restore(model, snap):
    if hasattr(model.params, "copy_to_device"):
        model.params.copy_to_device(snap)
    else:
        model.params[...] = snap


def _epoch_cuda(model, optimizer, Xd, yd, order, bs, has_acc, bar, dev, l2):
    """One epoch on the device: batches gathered by index on the GPU, loss and accuracy
    summed there; returns (sum of losses, correct) with one synchronisation.

    ``dev`` holds, per batch length m, the gather buffers, the index buffer and the
    recorded gather launches (kernels/cuda/launch.py), whose only changing argument is the
    batch's offset into the epoch's order."""
    from numba import cuda
    K = model._K
    n = Xd.shape[0]
    if "idx" not in dev:
        dev["idx"] = cuda.device_array(n, np.int64)
    idx_d = dev["idx"]
    idx_d.copy_to_device(np.ascontiguousarray(order, dtype=np.int64))
    model._read_counters()
    for start in range(0, n, bs):
        stop = min(start + bs, n)
        m = stop - start
        if m not in dev:
            xb = cuda.device_array((m,) + Xd.shape[1:], Xd.dtype)
            ybb = cuda.device_array((m,) + yd.shape[1:], yd.dtype)
            gathers = []
            K.gather_rows(Xd, idx_d, xb, plan=gathers)
            if yd.ndim == 1:
                K.gather_rows(yd.reshape(n, 1), idx_d, ybb.reshape(m, 1), plan=gathers)
            else:
                K.gather_rows(yd, idx_d, ybb, plan=gathers)
            dev[m] = [xb, ybb, gathers, None]
        xb, ybb, gathers, count = dev[m]
        for g in gathers:
            g.set_scalar(2, start)
            g()
        model._step_dev(xb, ybb, l2)
        optimizer.step()
        if has_acc:
            if count is None or count[0] is not model._last_output:
                count = dev[m][3] = (model._last_output, [])
                model._count_correct_dev(ybb, plan=count[1])
            K.run_plan(count[1])
        if bar is not None:
            bar.update(m)
    return model._read_counters()


def _split(X, y, fraction, rng):
    n = X.shape[0]
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_split={fraction} leaves {n - n_val} training and "
                         f"{n_val} validation samples out of {n}; both need at least one")
    perm = rng.permutation(n)
    tr, va = np.sort(perm[n_val:]), np.sort(perm[:n_val])
    return X[tr], y[tr], X[va], y[va]


class _Run:
    """The state of a training run that a checkpoint must carry (see fastbp.checkpoint)."""

    def __init__(self, n):
        self.epoch = 0            # current epoch
        self.pos = 0              # next row of the epoch's order to train on
        self.total_loss = 0.0     # the epoch's sums so far
        self.correct = 0
        self.seen = 0
        self.step = 0             # optimizer steps taken in this run
        self.best_metric = math.inf
        self.bad_epochs = 0
        self.order = np.arange(n)


def _save_checkpoint(checkpoint_dir, run, model, optimizer, rng, schedule, history,
                     good_params, best_params, batch_size):
    from . import checkpoint
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


def _load_checkpoint(checkpoint_dir, run, model, optimizer, rng, schedule, history,
                     good_params, batch_size):
    """Restore a run from checkpoint_dir; returns best_params (or None)."""
    from . import checkpoint
    found = checkpoint.load(checkpoint_dir)
    if found is None:
        return None
    meta, arrays = found
    if meta["model"] != model.config() or meta["n"] != run.order.shape[0] \
            or meta["batch_size"] != batch_size:
        raise ValueError(
            f"the checkpoint in {checkpoint_dir!r} is for another run (model "
            f"{meta['model']}, {meta['n']} rows, batch {meta['batch_size']}); this run has "
            f"{model.config()}, {run.order.shape[0]} rows, batch {batch_size}")
    model.params[...] = arrays["params"]
    opt_state = dict(meta["optimizer"])
    opt_state.update({k[4:]: v for k, v in arrays.items() if k.startswith("opt_")})
    optimizer.load_state_dict(opt_state)
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


SERIAL_STEP_FLOPS = 3e7
# Steps of up to this many flops (and more than SERIAL_STEP_FLOPS) compute their weight
# gradients and updates shared out by rows (see steps.run_steps).  Measured (2 threads,
# geometric means of 4 processes, each interleaving both ways): 784-512-512-10 b128
# (0.5 GFLOP a step) 1.027x and, in another set, 1.064x; 784-2048-2048-10 b256 (8 GFLOP)
# 0.983x and 0.979x.  SplitChooser could not tell a gain this size from the noise of
# single steps (with it, 1.00x), so this is a fixed threshold.
ROW_SPLIT_MAX_FLOPS = 2e9
SPLIT_MIN_ROWS = 16           # rows per thread below which a split step is not worth it


def _layer_weights(sizes):
    """Weights (fan_in * fan_out) of each layer: its share of a step's multiply-adds."""
    return [a * b for a, b in itertools.pairwise(sizes)]


def split_threads(sizes, bs):
    """Threads to split a small step over (1: do not split; see steps.run_steps).

    Needs a thread-safe threading layer (omp or tbb) and at least SPLIT_MIN_ROWS rows per
    thread.  Measured (2 threads, in-process A/B against one thread): 40-100-100-10 b32
    1.0-1.26x, 64-128-64-10 b32 1.0-1.26x, 100-200-200-200-10 b64 1.24-1.39x; 784-100-10
    b32 0.89-0.96x while the weight gradients were shared out by whole layers, 1.10x
    (median of 20 rounds) since a layer's rows can be shared (``layer_row_split``).  On
    this VM the gain comes and goes with the machine's state, so the trainer still
    measures, chunk by chunk, whether the split pays (``SplitChooser``)."""
    import numba

    from .runtime import threadsafe
    if not threadsafe():
        return 1
    return max(1, min(numba.get_num_threads(), bs // SPLIT_MIN_ROWS))


def layer_row_split(sizes, n_split):
    """(L, n_split + 1) int64: thread t computes the weight gradients and updates of layer
    l's output rows [split[l, t], split[l, t + 1]) in a split step.

    The layers' output rows, in order, are cut into n_split runs of about equal work (a row
    of layer l is fan_in multiply-adds per example), each cut rounded to a whole panel of
    the GEMM (MR rows) within its layer.  So at most n_split - 1 layers are shared between
    threads (each shared layer packs its other operand once per thread) and the rest are
    whole; a network whose weights sit in one layer still keeps every thread busy."""
    from .kernels.cpu.microkernel import MR
    fan_in, fan_out = sizes[:-1], sizes[1:]
    total = sum(_layer_weights(sizes))
    split = np.zeros((len(fan_out), n_split + 1), np.int64)
    split[:, n_split] = fan_out
    done = 0                                  # work of the layers before l
    for l, (k, n) in enumerate(zip(fan_in, fan_out)):
        for t in range(1, n_split):
            rows = (t * total / n_split - done) / k       # the cut, in rows of layer l
            split[l, t] = min(max(round(rows / MR) * MR, 0), n)
        done += k * n
    return split


class SplitChooser:
    """Chooses, while training, whether each chunk of steps runs split over n_split
    threads (see steps.run_steps: a small step's rows, a large step's weight gradients)
    or not (a small step on one thread, a large one with parallel products throughout).

    Both give the same bits, so only speed decides, and on these 2-core VMs which one is
    faster changes with the machine's state from one second to the next (split against
    one thread, in-process A/B, 40-100-100-10 b32: 0.55-1.25x per round; medians 0.78x
    and 0.85x in one session, 1.0-1.26x in earlier ones).  So the trainer measures: every
    PERIOD chunks it runs PROBE chunks each way, alternating, and keeps the faster (per
    step, the best of its probes: the first chunk of a fit may include loading the
    compiled code) for the rest of the period.  A probe's slower half costs at most a
    few percent of the period.  A chunk that runs REPROBE times slower per step than its
    way did in the last probes (the machine's state changed; in one benchmark run a split
    step went from 45 to 104 us for a whole epoch while one thread took 62 us) starts the
    next probes at once instead of at the end of the period."""

    PROBE = 2
    PERIOD = 50
    REPROBE = 1.5

    def __init__(self, n_split, probe=True):
        """Options: n_split threads or one, or (probe False, or n_split 1) n_split only."""
        self.options = (n_split, 1) if n_split > 1 and probe else (n_split,)
        self.current = self.options[0]
        self.calls = 0
        self.times = {n: [] for n in self.options}
        self.reference = None     # seconds per step of the current way in the last probes

    def pick(self):
        """Threads for the next chunk of steps."""
        phase = self.calls % self.PERIOD
        if len(self.options) > 1 and phase < 2 * self.PROBE:
            return self.options[phase % 2]
        return self.current

    def record(self, n, seconds, steps):
        """The chunk just run with n threads took seconds for steps steps."""
        phase = self.calls % self.PERIOD
        self.calls += 1
        if len(self.options) == 1:
            return
        per_step = seconds / steps
        if phase >= 2 * self.PROBE:
            if self.reference is not None and per_step > self.REPROBE * self.reference:
                self.calls += (-self.calls) % self.PERIOD    # the next chunk starts a period
            return
        self.times[n].append(per_step)
        if phase == 2 * self.PROBE - 1:
            self.current = min(self.options, key=lambda k: min(self.times[k]))
            self.reference = min(self.times[self.current])
            for k in self.options:
                self.times[k].clear()


# Each model's choosers, one per (batch size, threads): kept across fit calls, so that a
# run of short fits (partial_fit, an epoch per call) goes on with the period and the
# choice it had, instead of probing again at every start (where the first chunk also
# includes loading the compiled code).
_CHOOSERS = weakref.WeakKeyDictionary()


def _chooser(model, bs, n_split, probe=True):
    """The SplitChooser for model's steps of bs rows split over n_split threads (probe:
    whether it measures split against not split, or always splits)."""
    per_model = _CHOOSERS.setdefault(model, {})
    key = (bs, n_split, probe)
    if key not in per_model:
        per_model[key] = SplitChooser(n_split, probe)
    return per_model[key]


def _split_pack_buffers(model, bs, n_split):
    """GEMM packing workspace for run_steps: n_split equal parts, each large enough for any
    product of the step and a whole number of cache lines long."""
    from .kernels.cpu.gemm import pack_buffer
    ws = model._workspace(bs)
    if n_split == 1:
        return ws.apack, ws.bpack
    line = 64 // model.dtype.itemsize
    na = -(-ws.a_part // line) * line        # the kernels run on one thread each: one A
    nb = -(-ws.bpack.shape[0] // line) * line
    return pack_buffer(n_split * na, model.dtype), pack_buffer(n_split * nb, model.dtype)


class _Compiled:
    """Flat workspace and fixed arguments for fastbp.kernels.cpu.steps.run_steps."""

    def __init__(self, model, optimizer, X, y, bs, l2, has_acc, checkpoint_every):
        import numba

        from .kernels.cpu import steps as S
        from .kernels.cpu.gemm import pack_buffer
        from .kernels.cpu.sync import sync_buffer
        from .optim import SGD
        from .runtime import ensure_threads
        ensure_threads()   # run_steps reaches parallel kernels from compiled code
        self.S = S
        dt = model.dtype
        width = sum(model.sizes[1:])
        self.sizes = np.array(model.sizes, np.int64)
        # cache-line aligned, so that threads sharing a split step's rows write to lines of
        # their own wherever their rows start on a line
        self.zbuf = pack_buffer(bs * width, dt)
        self.abuf = pack_buffer(bs * width, dt)
        # slack past the last layer's block for _layer_weight_grad's shifted views of G,
        # zeroed: packing may copy it into a panel's padding rows, where uninitialised
        # memory could hold NaNs or denormals (slow arithmetic, though never stored)
        self.gbuf = pack_buffer(bs * width + max(model.sizes), dt)
        self.gbuf[bs * width:] = 0.0
        self.row_loss = pack_buffer(bs, np.float64)
        self.xbuf = pack_buffer(bs * X.shape[1], dt)
        self.loss_code = codes.loss_code(model.loss, labels=y.ndim == 1)
        if y.ndim == 1:
            self.ylab, self.ytgt = y, np.empty((0, 1), dt)
        else:
            self.ylab, self.ytgt = np.empty(0, np.int64), y
        self.ylab_buf = pack_buffer(bs, np.int64)
        self.ytgt_buf = np.empty(bs * max(self.ytgt.shape[1], 1), dt)
        self.l2, self.count_acc = l2, has_acc
        self.sgd = isinstance(optimizer, SGD)
        self.none = np.empty(0, dt)
        flops = 6.0 * bs * sum(_layer_weights(model.sizes))
        # A step this small runs faster on one thread than with a parallel region per product
        # (measured: 40-100-100-10 batch 32, 1.25-1.7x).  With threads to spare it is split
        # by rows instead (run_steps' n_split): one parallel region per chunk of steps, where
        # SplitChooser finds that this is faster than one thread.
        # A larger step runs its products in parallel, and up to ROW_SPLIT_MAX_FLOPS its
        # weight gradients and updates are shared out by rows (run_steps with n_split > 1
        # and parallel), always.
        # With matmul="blas" the products run on OpenBLAS's threads: nothing of the step
        # runs a Numba parallel region (see optimizer_update) and the step is not split.
        blas = model.matmul == "blas"
        self.serial = blas or flops < SERIAL_STEP_FLOPS
        # Steps per call (never across a checkpoint): about 2e8 flops (a few ms) of small
        # steps, the SplitChooser's unit; larger steps about 2e9, so that the ~29 us of
        # Python and argument passing each call costs is not paid every step (784-512-512-10
        # b128, 3 steps a call against 1, in-process, medians of 40 interleaved rounds:
        # 1.009, 1.020 and 1.036x in three processes).
        per_call = 2e8 if flops < SERIAL_STEP_FLOPS else 2e9   # matmul="blas" alike
        self.chunk = int(max(1, min(4096, per_call // max(flops, 1))))
        if blas or (not self.serial and flops > ROW_SPLIT_MAX_FLOPS):
            self.n_split = 1
        else:
            self.n_split = split_threads(model.sizes, bs)
        self.row_split = {n: layer_row_split(model.sizes, n) for n in {self.n_split, 1}}
        self.chooser = _chooser(model, bs, self.n_split, probe=self.serial)
        self.layer_loss = np.zeros(len(model.sizes) - 1)
        self.sync = sync_buffer(self.n_split)
        self.apack, self.bpack = _split_pack_buffers(model, bs, self.n_split)
        self.checkpoint_every = checkpoint_every
        self.out = np.zeros(2)
        self.kernels = S.kernel_pointers(dt, numba.typeof(X), numba.typeof(self.ylab),
                                         numba.typeof(self.ytgt), model.matmul,
                                         model.act_code, self.loss_code, not self.serial)

    @staticmethod
    def eligible(model, optimizer, dp):
        """The compiled path serves plain CPU training with fastbp's own optimizers; an
        optimizer whose step was replaced and MPI take the Python path.  matmul='blas'
        runs here too, with the BLAS product in place of the GEMM (the same trainer)."""
        from .optim import SGD, Adam, AdamW
        return (dp is None and getattr(model, "device", "cpu") == "cpu"
                and type(optimizer) in (SGD, Adam, AdamW)
                and "step" not in vars(optimizer))

    def run(self, model, opt, X, order, pos, n_steps, bs, loss_total=0.0):
        """n_steps steps from row pos of order; returns the position after them.  The
        steps add loss * rows to out[0], which starts at loss_total: the epoch's running
        sum, so that it is summed in the same order as step by step in Python."""
        self.out[0], self.out[1] = loss_total, 0.0
        if self.sgd:
            args = (self.S.OPT_SGD, opt.velocity, self.none, opt.lr, opt.momentum,
                    opt.weight_decay, opt.nesterov, 0.0, 0.0, 0.0, False, 0)
        else:
            args = (self.S.OPT_ADAM, opt.exp_avg, opt.exp_avg_sq, opt.lr, 0.0,
                    opt.weight_decay, False, opt.beta1, opt.beta2, opt.eps, opt.decoupled,
                    opt.step_count)
        n_split = self.chooser.pick()
        t = time.perf_counter()
        pos = self._run_steps(X, order, pos, n_steps, bs, model, args, n_split)
        self.chooser.record(n_split, time.perf_counter() - t, n_steps)
        opt.step_count += n_steps
        return pos

    def _run_steps(self, X, order, pos, n_steps, bs, model, args, n_split):
        return self.S.run_steps(X, self.ylab, self.ytgt, order, pos, n_steps, bs, self.sizes,
                               model.act_code, model.slope, self.loss_code, model.params,
                               model.grads, self.zbuf, self.abuf, self.gbuf, self.row_loss,
                               self.apack, self.bpack, self.xbuf, self.ylab_buf, self.ytgt_buf,
                               self.l2, self.count_acc, *args, self.out, not self.serial,
                               n_split, self.row_split[n_split], self.layer_loss,
                               self.sync, *self.kernels)


def _epoch_compiled(model, optimizer, X, run, bs, comp, bar, good_params, history,
                    after_step):
    """_epoch_cpu's work in chunks of steps inside one compiled call each."""
    n = X.shape[0]
    while run.pos < n:
        steps_left = (n - run.pos + bs - 1) // bs
        n_steps = min(steps_left, comp.chunk)
        if comp.checkpoint_every:
            n_steps = min(n_steps, comp.checkpoint_every - run.step % comp.checkpoint_every)
        start = run.pos
        stop = comp.run(model, optimizer, X, run.order, start, n_steps, bs, run.total_loss)
        total = comp.out[0]
        if not math.isfinite(total):     # the running sum was finite before this chunk
            raise _diverged(model, good_params, history,
                            (total - run.total_loss) / (stop - start),
                            f"at epoch {run.epoch + 1}, samples {start}-{stop}")
        run.total_loss = total
        run.correct += int(comp.out[1])
        run.seen += stop - start
        run.pos = stop
        run.step += n_steps
        if bar is not None:
            _bar_update(bar, run, stop - start, comp.count_acc)
        after_step()


def _epoch_cpu(model, optimizer, X, y, run, bs, shuffle, l2, has_acc, bar, dp, buffers,
               good_params, history, after_step):
    """Train from row run.pos of the epoch's order to its end, updating run's sums."""
    n = X.shape[0]
    for start in range(run.pos, n, bs):
        stop = min(start + bs, n)
        lo, hi = dp.shard(start, stop) if dp is not None else (start, stop)
        m = hi - lo
        if m == 0:  # more ranks than rows in this batch
            model.grads[...] = 0
            loss = 0.0
        else:
            if shuffle:
                xb, ybb = buffers.get(m) or buffers.setdefault(
                    m, (np.empty((m,) + X.shape[1:], X.dtype),
                        np.empty((m,) + y.shape[1:], y.dtype)))
                idx = run.order[lo:hi]
                np.take(X, idx, axis=0, out=xb)
                np.take(y, idx, axis=0, out=ybb)
            else:
                xb, ybb = X[lo:hi], y[lo:hi]
            loss = model._loss_and_grad_checked(xb, ybb, l2)
        if not math.isfinite(loss):
            raise _diverged(model, good_params, history, loss,
                            f"at epoch {run.epoch + 1}, samples {start}-{stop}")
        if dp is not None:
            dp.average_grads(m, stop - start)
        optimizer.step()
        run.total_loss += loss * m
        if has_acc and m:
            run.correct += model._count_correct(ybb)
        run.seen += stop - start
        run.pos = stop
        run.step += 1
        if bar is not None:
            _bar_update(bar, run, stop - start, has_acc)
        after_step()


def fit(model, X, y, *, optimizer, batch_size=128, epochs=10, shuffle=True, seed=None,
        validation_data=None, validation_split=0.0, early_stopping=False, patience=10,
        min_delta=0.0, lr_schedule=None, callbacks=(), verbose=1, l2=0.0, comm=None,
        checkpoint_dir=None, checkpoint_every=None, resume=False):
    """Train `model` on (X, y) with `optimizer` in mini-batches; returns a History.

    X: (n, n_features); y as for model.loss_and_grad.  batch_size: samples per step (the
    last batch of an epoch may be smaller).  seed: shuffling and validation split.
    validation_data=(X_val, y_val), or validation_split: a fraction of (X, y) held out.
    early_stopping: stop when the monitored loss (val_loss if there is validation data,
    else loss) has not improved by min_delta for `patience` epochs, and restore the best
    weights.  lr_schedule: see fastbp.schedules.  callbacks: objects with
    on_epoch_end(epoch, logs) or callables (epoch, logs); returning True stops training.
    verbose: 0 silent, 1 progress bar, 2 also a line per epoch.  l2: see loss_and_grad.
    comm: an MPI communicator (mpi4py) for data-parallel training (fastbp.distributed):
    each rank passes the same data and seed and trains on its shard of every batch.
    checkpoint_dir / checkpoint_every: write a checkpoint (fastbp.checkpoint) every
    checkpoint_every optimizer steps and at the end of every epoch (and on Ctrl-C);
    resume=True continues from the checkpoint in checkpoint_dir if there is one, so that
    an interrupted and resumed run ends with the weights of an uninterrupted one.

    A NaN/inf loss raises TrainingDiverged with the model set back to the last finite
    epoch.  Ctrl-C stops training after the current step and returns the history so far
    (history.interrupted is True).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    epochs = check_positive_int(epochs, "epochs") if epochs != 0 else 0
    patience = check_positive_int(patience, "patience")
    validation_split = check_float(validation_split, "validation_split", 0.0, 1.0)
    l2 = check_float(l2, "l2", 0.0)
    if checkpoint_every is not None:
        checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
        if checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    if getattr(optimizer, "model", None) is not model:
        raise ValueError("optimizer was built for a different model; "
                         "create it with the model being trained")
    X = model._check_X(X)
    y = model._check_y(y, X.shape[0])
    rng = np.random.default_rng(seed)
    X_val = y_val = None
    if validation_data is not None:
        if len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        X_val = model._check_X(validation_data[0], "X_val")
        y_val = model._check_y(validation_data[1], X_val.shape[0])
    elif validation_split > 0:
        X, y, X_val, y_val = _split(X, y, validation_split, rng)
    callbacks = list(callbacks)
    for cb in callbacks:
        if not (callable(cb) or hasattr(cb, "on_epoch_end")):
            raise TypeError(f"callback {cb!r} has no on_epoch_end and is not callable")
    schedule = make_schedule(lr_schedule)
    optimizer.lr = schedule.start(optimizer.lr, epochs)

    n = X.shape[0]
    bs = min(batch_size, n)
    on_gpu = getattr(model, "device", "cpu") == "cuda"
    if on_gpu:
        if comm is not None or checkpoint_dir is not None:
            raise ValueError("comm (MPI) and checkpoints are not supported with device='cuda'")
        from numba import cuda
        Xd, yd = cuda.to_device(X), cuda.to_device(y)   # the data set, copied once
        if X_val is not None:
            X_val, y_val = cuda.to_device(X_val), cuda.to_device(y_val)
        dev_buffers = {}
    dp = None
    if comm is not None:
        from .distributed import DataParallel
        dp = DataParallel(comm, model)
    # Gather buffers, one per batch (or shard) size, reused every step: rows of X / y are
    # picked by index, so the data set is never copied or reordered.
    buffers = {}
    run = _Run(n)
    history = History()
    best_params = None
    good_params = _snapshot(model)
    rank0 = dp is None or dp.rank == 0
    resuming = False
    if resume:
        best_params = _load_checkpoint(checkpoint_dir, run, model, optimizer, rng, schedule,
                                       history, good_params, bs)
        resuming = run.pos > 0
        if dp is not None:  # every rank continues from rank 0's checkpoint
            dp.comm.Bcast(model.params, root=0)

    def checkpoint_now():
        if checkpoint_dir is not None and rank0:
            _save_checkpoint(checkpoint_dir, run, model, optimizer, rng, schedule, history,
                             good_params, best_params, bs)

    def after_step():
        if checkpoint_every and run.step % checkpoint_every == 0:
            checkpoint_now()

    has_acc = model.loss == "binary_cross_entropy" or (model.loss == "cross_entropy"
                                                       and y.ndim == 1)
    compiled = None
    if not on_gpu and _Compiled.eligible(model, optimizer, dp):
        compiled = _Compiled(model, optimizer, X, y, bs, l2, has_acc, checkpoint_every)
    bar = _progress(verbose, n * (epochs - run.epoch))
    while run.epoch < epochs:
        epoch = run.epoch
        t0 = time.perf_counter()
        if not resuming:
            if shuffle:
                rng.shuffle(run.order)
            run.pos, run.total_loss, run.correct, run.seen = 0, 0.0, 0, 0
        resuming = False
        if bar is not None:
            bar.set_description(f"epoch {epoch + 1}/{epochs}", refresh=False)
        seen_before = run.seen
        try:
            if on_gpu:
                run.total_loss, run.correct = _epoch_cuda(model, optimizer, Xd, yd, run.order,
                                                          bs, has_acc, bar, dev_buffers, l2)
                run.seen = run.pos = n
                if not math.isfinite(run.total_loss):
                    raise _diverged(model, good_params, history, run.total_loss / n,
                                    f"in epoch {epoch + 1}")
            elif compiled is not None:
                _epoch_compiled(model, optimizer, X, run, bs, compiled, bar, good_params,
                                history, after_step)
            else:
                _epoch_cpu(model, optimizer, X, y, run, bs, shuffle, l2, has_acc, bar, dp,
                           buffers, good_params, history, after_step)
        except KeyboardInterrupt:
            history.interrupted = True
            history.samples_seen += run.seen - seen_before
            checkpoint_now()
            break
        except Exception as exc:
            if dp is not None:
                dp.abort(exc)
            raise
        history.samples_seen += run.seen - seen_before
        total_loss, correct = run.total_loss, run.correct
        if dp is not None:
            total_loss, correct = dp.sum([total_loss, correct])
        elapsed = time.perf_counter() - t0
        logs = {"epoch": epoch, "loss": total_loss / n, "accuracy": correct / n if has_acc else None,
                "val_loss": None, "val_accuracy": None, "lr": optimizer.lr,
                "samples_per_s": n / elapsed, "time": elapsed,
                "samples_seen": history.samples_seen}
        if X_val is not None:
            evaluate = model._evaluate_dev if on_gpu else model._evaluate_checked
            logs["val_loss"], logs["val_accuracy"] = evaluate(X_val, y_val)
        for key in history.history:
            history.history[key].append(logs[key])
        _snapshot(model, into=good_params)
        if verbose >= 2 or (verbose >= 1 and bar is None):
            msg = f"epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f}"
            if has_acc:
                msg += f", accuracy {logs['accuracy']:.4f}"
            if logs["val_loss"] is not None:
                msg += f", val_loss {logs['val_loss']:.4f}"
            msg += f", {logs['samples_per_s']:.3g} samples/s"
            if bar is not None:
                bar.write(msg)
            else:
                print(msg, flush=True)
        monitored = logs["val_loss"] if X_val is not None else logs["loss"]
        if monitored < run.best_metric - min_delta:
            run.best_metric, run.bad_epochs, history.best_epoch = monitored, 0, epoch
            if early_stopping:
                best_params = _snapshot(model, into=best_params)
        else:
            run.bad_epochs += 1
        optimizer.lr = schedule.on_epoch_end(epoch, logs)
        stop = False
        for cb in callbacks:
            fn = cb.on_epoch_end if hasattr(cb, "on_epoch_end") else cb
            stop = bool(fn(epoch, logs)) or stop
        if early_stopping and run.bad_epochs >= patience:
            history.stopped_early = True
            stop = True
        run.epoch += 1
        run.pos = 0
        checkpoint_now()
        if stop:
            break
    if bar is not None:
        bar.close()
    if early_stopping and best_params is not None:
        _restore(model, best_params)
    return history
