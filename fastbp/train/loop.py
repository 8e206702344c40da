"""The training loop: fastbp.fit(model, X, y, optimizer=...) -> History.

Each epoch visits every sample once, in a fresh random order when shuffle=True.  Batches
are gathered by index into two preallocated buffers (full batches and the last partial
one), so the data set is never copied or reordered in memory and the last partial batch is
trained, not dropped.  On the CPU with fastbp's optimizers the steps run compiled
(compiled.py); MPI and replaced optimizer steps take the step-by-step path below; CUDA
models run train/cuda.py's epoch.  Data flows one way: fit -> model / backend -> kernels.
"""
import math
import time

import numpy as np

from .._validation import CSRRows, check_float, check_positive_int, check_sample_weight
from ..backends.cpu import SparseBatch
from ..kernels.cpu.losses import weight_total
from ..schedules import make_schedule
from .callbacks import HOOKS, CSVLogger, hook
from .compiled import Compiled, epoch_compiled
from .cuda import epoch_cuda
from .state import (
    History,
    Interrupts,
    Run,
    bar_update,
    batch_l2,
    diverged,
    load_checkpoint,
    progress,
    save_checkpoint,
)


def _split(n, fraction, rng):
    """(training rows, validation rows): sorted index arrays of a random split of n rows
    (indices, so that the data set itself is never copied)."""
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_split={fraction} leaves {n - n_val} training and "
                         f"{n_val} validation samples out of {n}; both need at least one")
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _epoch_cpu(model, optimizer, X, y, w, run, bs, shuffle, l2, l2_per_weight, has_acc, bar,
               dp, buffers, good_params, history, after_step):
    """Train from row run.pos of the epoch's order to its end, updating run's sums.
    w: (n,) float64 sample weights or None."""
    n = run.order.shape[0]
    for start in range(run.pos, n, bs):
        stop = min(start + bs, n)
        lo, hi = dp.shard(start, stop) if dp is not None else (start, stop)
        m = hi - lo
        # the batch's weight total, summed in batch order as the compiled path does, and
        # this rank's rows' weights (all of the batch without MPI)
        total = stop - start if w is None else weight_total(w[run.order[start:stop]], 0)
        wb = None if w is None else w[run.order[lo:hi]]
        local = m if w is None else weight_total(wb, 0)
        if m == 0:  # more ranks than rows in this batch
            model.grads[...] = 0
            loss = 0.0
        else:
            if isinstance(X, CSRRows):      # sparse rows, gathered as CSR
                sparse = buffers.get(("csr", m)) or buffers.setdefault(
                    ("csr", m), (SparseBatch(X, m), np.empty((m,) + y.shape[1:], y.dtype)))
                idx = run.order[lo:hi]
                xb, ybb = sparse[0].take(X, idx), sparse[1]
                np.take(y, idx, axis=0, out=ybb)
            elif shuffle or run.subset:
                xb, ybb = buffers.get(m) or buffers.setdefault(
                    m, (np.empty((m,) + X.shape[1:], X.dtype),
                        np.empty((m,) + y.shape[1:], y.dtype)))
                idx = run.order[lo:hi]
                np.take(X, idx, axis=0, out=xb)
                np.take(y, idx, axis=0, out=ybb)
            else:
                xb, ybb = X[lo:hi], y[lo:hi]
            # dropout's masks: this step's, for rows from lo - start of the batch
            dropout = (optimizer.step_count + 1, lo - start) if model.has_dropout else None
            loss = model.backend.loss_and_grad(xb, ybb, batch_l2(l2, l2_per_weight, total),
                                               wb, dropout=dropout)
        if not math.isfinite(loss):
            raise diverged(model, good_params, history, loss,
                            f"at epoch {run.epoch + 1}, samples {start}-{stop}")
        if dp is not None:
            dp.average_grads(local, total)
        optimizer.step()
        run.total_loss += loss * local
        if has_acc and m:
            run.correct += model.backend.count_correct(ybb)
        run.seen += stop - start
        run.pos = stop
        run.step += 1
        if bar is not None:
            bar_update(bar, run, stop - start, has_acc)
        after_step()


def fit(model, X, y, *, optimizer, batch_size=128, epochs=10, shuffle=True, seed=None,
        validation_data=None, validation_split=0.0, early_stopping=False, patience=10,
        min_delta=0.0, lr_schedule=None, callbacks=(), verbose=1, l2=0.0, comm=None,
        checkpoint_dir=None, checkpoint_every=None, resume=False, sample_weight=None,
        log_csv=None, _l2_per_weight=False):
    """Train `model` on (X, y) with `optimizer` in mini-batches; returns a History.

    X: (n, n_features), dense or a SciPy sparse matrix (CSR, CSC, ...; CPU: batches are
    gathered as sparse rows and the first layer runs on the stored values, never
    densified); y as for model.loss_and_grad.  batch_size: samples per step (the last
    batch of an epoch may be smaller).  seed: shuffling and validation split.
    sample_weight: (n,) non-negative weights (or a scalar): each batch's loss is the
    weighted mean sum_i w_i l_i / sum_i w_i (model.loss_and_grad), and the history's loss
    and val_loss are weighted means over the epoch (accuracy is not weighted, as Keras'
    metrics); a batch whose weights are all 0 changes nothing but the optimizer's state.
    validation_data=(X_val, y_val) or (X_val, y_val, sample_weight_val), or
    validation_split: a fraction of (X, y) (and of sample_weight) held out.
    early_stopping: stop when the monitored loss (val_loss if there is validation data,
    else loss) has not improved by min_delta for `patience` epochs, and restore the best
    weights.  lr_schedule: see fastbp.schedules.  callbacks: objects with any of
    on_train_begin(logs), on_epoch_end(epoch, logs) and on_train_end(logs), or callables
    (epoch, logs); on_epoch_end returning True stops training.  log_csv: a path, for a
    fastbp.CSVLogger (one row per epoch; continued with resume=True; rank 0 with MPI).
    verbose: 0 silent, 1 progress bar, 2 also a line per epoch.  l2: see loss_and_grad.
    comm: an MPI communicator (mpi4py) for data-parallel training (fastbp.distributed):
    each rank passes the same data and seed and trains on its shard of every batch.
    checkpoint_dir / checkpoint_every: write a checkpoint (fastbp.checkpoint) every
    checkpoint_every optimizer steps and at the end of every epoch (and on Ctrl-C);
    resume=True continues from the checkpoint in checkpoint_dir if there is one, so that
    an interrupted and resumed run ends with the weights of an uninterrupted one.
    _l2_per_weight: l2 is divided by each batch's weight total (the estimators' alpha).

    A NaN/inf loss raises TrainingDiverged with the model set back to the last finite
    epoch.  Ctrl-C stops training after the current step (or chunk of compiled steps) and
    returns the history so far (history.interrupted is True), with the checkpoint, if any,
    of exactly that state; a second Ctrl-C raises KeyboardInterrupt at once.
    """
    # Ctrl-C from here on stops the run at the next step boundary (state.Interrupts)
    # (with MPI, Ctrl-C aborts the job instead: ranks would stop at different steps).
    # Nothing of fit's runs before this line: a Ctrl-C until the handler is in raises
    # KeyboardInterrupt in the caller's code or on this line, as Python's default does.
    interrupts = Interrupts().start() if comm is None else Interrupts()
    history = None
    try:
        # With MPI, every rank validates its inputs, then all agree (distributed.agree)
        # before the first collective: a rank that raised alone left the others waiting.
        failure = None
        try:
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
            X = model.check_X(X)
            y = model.check_y(y, X.shape[0])
            w = check_sample_weight(sample_weight, X.shape[0])
            X_val = y_val = w_val = None
            rows = val_rows = None          # a validation split: index arrays into X
            if validation_data is not None:
                if len(validation_data) not in (2, 3):
                    raise ValueError("validation_data must be (X_val, y_val) or (X_val, "
                                     "y_val, sample_weight_val)")
                X_val = model.check_X(validation_data[0], "X_val")
                y_val = model.check_y(validation_data[1], X_val.shape[0])
                if len(validation_data) == 3:
                    w_val = check_sample_weight(validation_data[2], X_val.shape[0],
                                                "sample_weight_val")
            callbacks = list(callbacks)
            for cb in callbacks:
                if not (callable(cb) or any(hasattr(cb, h) for h in HOOKS)):
                    raise TypeError(f"callback {cb!r} has none of {HOOKS} and is not callable")
            if log_csv is not None and (comm is None or comm.Get_rank() == 0):
                callbacks.append(CSVLogger(log_csv, append=bool(resume)))
            schedule = make_schedule(lr_schedule)
            optimizer.lr = schedule.start(optimizer.lr, epochs)
            if comm is not None:
                from ..distributed import data_digest
                fields = {
                    # dropout's seed, like the weights, is rank 0's (DataParallel)
                    "model": {k: v for k, v in model.config().items() if k != "dropout_seed"},
                    "optimizer": type(optimizer).__name__,
                    "hyper-parameters": {k: v for k, v in vars(optimizer).items()
                                         if isinstance(v, (bool, int, float, str))},
                    "X": [list(X.shape), str(X.values.dtype if isinstance(X, CSRRows)
                                              else X.dtype)],
                    "y": [list(y.shape), str(y.dtype)],
                    "data": data_digest(X, y), "batch_size": batch_size, "epochs": epochs,
                    "sample_weight": None if w is None else data_digest(w[:, None], w),
                    "l2_per_weight": bool(_l2_per_weight),
                    "shuffle": bool(shuffle), "validation_split": validation_split,
                    "validation_data": None if X_val is None else [list(X_val.shape),
                                                                   data_digest(X_val, y_val)],
                    "l2": l2, "early_stopping": bool(early_stopping), "patience": patience,
                    "min_delta": min_delta, "lr_schedule": type(schedule).__name__,
                    "resume": bool(resume),
                    "checkpoint_every": checkpoint_every, "seed": seed}
        except Exception as exc:
            if comm is None:
                raise
            failure, fields = exc, None
        if comm is not None:
            from ..distributed import agree
            seed = agree(comm, failure, fields)["seed"]
        rng = np.random.default_rng(seed)
        if validation_data is None and validation_split > 0:
            rows, val_rows = _split(X.shape[0], validation_split, rng)
            if w is not None and not np.any(w[rows]):
                raise ValueError("sample_weight is zero for every training sample left by "
                                 "validation_split")

        n = X.shape[0] if rows is None else rows.shape[0]
        bs = min(batch_size, n)
        on_gpu = model.device == "cuda"
        if on_gpu:
            if comm is not None or checkpoint_dir is not None:
                raise ValueError("comm (MPI) and checkpoints are not supported with device='cuda'")
            from numba import cuda
            Xd, yd = cuda.to_device(X), cuda.to_device(y)   # the data set, copied once
            if val_rows is not None:
                X_val, y_val = np.take(X, val_rows, axis=0), np.take(y, val_rows, axis=0)
                w_val = None if w is None else np.take(w, val_rows)
                val_rows = None
            if X_val is not None:
                X_val, y_val = cuda.to_device(X_val), cuda.to_device(y_val)
            dev_buffers = {}
        dp = None
        if comm is not None:
            from ..distributed import DataParallel
            dp = DataParallel(comm, model)
        # Gather buffers, one per batch (or shard) size, reused every step: rows of X / y are
        # picked by index, so the data set is never copied or reordered.
        buffers = {}
        run = Run(n if rows is None else rows)
        run.weights = w
        history = History()
        best_params = None
        good_params = model.backend.snapshot()
        rank0 = dp is None or dp.rank == 0
        resuming = False
        if resume:
            best_params = load_checkpoint(checkpoint_dir, run, model, optimizer, rng, schedule,
                                           history, good_params, bs)
            resuming = run.pos > 0
            if dp is not None:  # every rank continues from rank 0's checkpoint
                dp.comm.Bcast(model.params, root=0)
                model.set_dropout_seed(dp.comm.bcast(model.dropout_seed, root=0))

        def checkpoint_now():
            if checkpoint_dir is not None and rank0:
                save_checkpoint(checkpoint_dir, run, model, optimizer, rng, schedule, history,
                                 good_params, best_params, bs)

        def after_step():
            # the model and the counters agree here: the place to stop on Ctrl-C
            if checkpoint_every and run.step % checkpoint_every == 0:
                checkpoint_now()
            if interrupts.requested:
                raise KeyboardInterrupt

        has_acc = model.has_accuracy(y)
        compiled = None
        if not on_gpu and Compiled.eligible(model, optimizer, dp, X):
            compiled = Compiled(model, optimizer, X, y, w, bs, l2, _l2_per_weight, has_acc,
                                checkpoint_every)
        for cb in callbacks:
            fn = hook(cb, "on_train_begin")
            if fn is not None:
                fn({"epochs": epochs, "samples": n, "resumed_epoch": run.epoch})
        bar = progress(verbose, n * (epochs - run.epoch))
        if interrupts.requested:            # Ctrl-C while setting up: no step taken
            history.interrupted = True
        try:
            while run.epoch < epochs and not history.interrupted:
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
                        run.total_loss, run.correct = epoch_cuda(
                            model, optimizer, Xd, yd, w, run.order, bs, has_acc, bar,
                            dev_buffers, l2, _l2_per_weight)
                        run.seen = run.pos = n
                        if not math.isfinite(run.total_loss):
                            raise diverged(model, good_params, history, run.total_loss / n,
                                            f"in epoch {epoch + 1}")
                    elif compiled is not None:
                        epoch_compiled(model, optimizer, X, run, bs, compiled, bar, good_params,
                                        history, after_step)
                    else:
                        _epoch_cpu(model, optimizer, X, y, w, run, bs, shuffle, l2,
                                   _l2_per_weight, has_acc, bar, dp, buffers, good_params,
                                   history, after_step)
                except KeyboardInterrupt as exc:
                    if dp is not None:
                        dp.abort(exc)
                    history.interrupted = True
                    history.samples_seen += run.seen - seen_before
                    checkpoint_now()
                    break
                except Exception as exc:
                    if dp is not None:
                        dp.abort(exc)
                    raise
                history.samples_seen += run.seen - seen_before
                # the loss can stay finite when the weights are not
                if not model.backend.params_finite():
                    raise diverged(model, good_params, history, None, f"in epoch {epoch + 1}",
                                   "the weights became NaN or infinite")
                total_loss, correct = run.total_loss, run.correct
                if dp is not None:
                    total_loss, correct = dp.sum([total_loss, correct])
                elapsed = time.perf_counter() - t0
                logs = {"epoch": epoch, "loss": total_loss / run.loss_weight(n),
                        "accuracy": correct / n if has_acc else None,
                        "val_loss": None, "val_accuracy": None, "lr": optimizer.lr,
                        "samples_per_s": n / elapsed, "time": elapsed,
                        "samples_seen": history.samples_seen}
                if X_val is not None:
                    logs["val_loss"], logs["val_accuracy"] = model.backend.evaluate(
                        X_val, y_val, w=w_val)
                elif val_rows is not None:
                    logs["val_loss"], logs["val_accuracy"] = model.backend.evaluate(
                        X, y, rows=val_rows, w=w)
                for key in history.history:
                    history.history[key].append(logs[key])
                model.backend.snapshot(into=good_params)
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
                validated = X_val is not None or val_rows is not None
                monitored = logs["val_loss"] if validated else logs["loss"]
                if monitored < run.best_metric - min_delta:
                    run.best_metric, run.bad_epochs, history.best_epoch = monitored, 0, epoch
                    if early_stopping:
                        best_params = model.backend.snapshot(into=best_params)
                else:
                    run.bad_epochs += 1
                optimizer.lr = schedule.on_epoch_end(epoch, logs)
                stop = False
                for cb in callbacks:
                    fn = hook(cb, "on_epoch_end")
                    if fn is not None:
                        stop = bool(fn(epoch, logs)) or stop
                if early_stopping and run.bad_epochs >= patience:
                    history.stopped_early = True
                    stop = True
                run.epoch += 1
                run.pos = 0
                checkpoint_now()
                if stop:
                    break
        except BaseException as exc:
            if dp is not None and not isinstance(exc, SystemExit):
                dp.abort(exc)   # a callback, a validation pass, Ctrl-C: end the job
            raise
        if bar is not None:
            bar.close()
        if early_stopping and best_params is not None:
            model.backend.restore(best_params)
        for cb in callbacks:
            fn = hook(cb, "on_train_end")
            if fn is not None:
                fn({"epochs": history.epochs, "stopped_early": history.stopped_early,
                    "interrupted": history.interrupted})
        return history
    finally:
        interrupts.stop()
        # a Ctrl-C after the last step boundary (the last epoch's bookkeeping) is not lost:
        # the run is complete, and the history says the user asked to stop
        if interrupts.requested and history is not None:
            history.interrupted = True
