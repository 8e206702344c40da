"""The CPU epoch in chunks of steps, each chunk one compiled call
(kernels/cpu/steps.run_steps): the same kernels in the same order as the step-by-step
path, so the same bits, without crossing from Python into compiled code a dozen times a
step."""
import math
import time

import numpy as np

from ..kernels import codes
from ..kernels.cpu.optim import hyper_tuple
from . import split
from .state import bar_update, diverged


def _split_pack_buffers(model, bs, n_split):
    """GEMM packing workspace for run_steps: n_split equal parts, each large enough for any
    product of the step and a whole number of cache lines long."""
    from ..kernels.cpu.gemm import pack_buffer
    ws = model.backend.workspace(bs)
    if n_split == 1:
        return ws.apack, ws.bpack
    line = 64 // model.dtype.itemsize
    na = -(-ws.a_part // line) * line        # the kernels run on one thread each: one A
    nb = -(-ws.bpack.shape[0] // line) * line
    return pack_buffer(n_split * na, model.dtype), pack_buffer(n_split * nb, model.dtype)


class Compiled:
    """Flat workspace and fixed arguments for fastbp.kernels.cpu.steps.run_steps."""

    def __init__(self, model, optimizer, X, y, w, bs, l2, l2_per_weight, has_acc,
                 checkpoint_every):
        """w: (n,) float64 sample weights or None; l2, l2_per_weight: steps.Config's."""
        import numba

        from ..kernels.cpu import steps as S
        from ..kernels.cpu.gemm import pack_buffer
        from ..kernels.cpu.sync import sync_buffer
        from ..optim import SGD
        from ..runtime import ensure_threads
        ensure_threads()   # run_steps reaches parallel kernels from compiled code
        self.S = S
        dt = model.dtype
        width = sum(model.sizes[1:])
        self.sizes = np.array(model.sizes, np.int64)
        # cache-line aligned, so that threads sharing a split step's rows write to lines of
        # their own wherever their rows start on a line
        self.zbuf = pack_buffer(bs * width, dt)
        self.abuf = pack_buffer(bs * width, dt)
        self.dbuf = pack_buffer(bs * width if model.has_dropout else 0, dt)
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
        self.w = np.empty(0) if w is None else w
        self.w_buf = np.empty(0) if w is None else pack_buffer(bs, np.float64)
        self.count_acc = has_acc
        self.sgd = isinstance(optimizer, SGD)
        self.none = np.empty(0, dt)
        flops = 6.0 * bs * sum(split.layer_weights(model.sizes))
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
        self.serial = blas or flops < split.SERIAL_STEP_FLOPS
        # Steps per call (never across a checkpoint): about 2e8 flops (a few ms) of small
        # steps, the SplitChooser's unit; larger steps about 2e9, so that the ~29 us of
        # Python and argument passing each call costs is not paid every step (784-512-512-10
        # b128, 3 steps a call against 1, in-process, medians of 40 interleaved rounds:
        # 1.009, 1.020 and 1.036x in three processes).
        per_call = 2e8 if flops < split.SERIAL_STEP_FLOPS else 2e9   # matmul="blas" alike
        self.chunk = int(max(1, min(4096, per_call // max(flops, 1))))
        if blas or (not self.serial and flops > split.ROW_SPLIT_MAX_FLOPS):
            self.n_split = 1
        else:
            self.n_split = split.split_threads(model.sizes, bs)
        self.row_split = {n: split.layer_row_split(model.sizes, n) for n in {self.n_split, 1}}
        self.chooser = split.chooser(model, bs, self.n_split, probe=self.serial)
        self.layer_loss = np.zeros(len(model.sizes) - 1)
        self.sync = sync_buffer(self.n_split)
        self.apack, self.bpack = _split_pack_buffers(model, bs, self.n_split)
        self.checkpoint_every = checkpoint_every
        self.out = np.zeros(2)
        self.cfg = S.Config(self.sizes, np.array(model.act_codes), np.array(model.slopes),
                            self.loss_code, model.loss_param, l2, l2_per_weight, has_acc, 0.0,
                            np.array(model.drop_rates), model.dropout_seed)
        self.unit_sq = np.zeros(width)
        kern, self.steps = S.kernel_pointers(dt, numba.typeof(X), numba.typeof(self.ylab),
                                             numba.typeof(self.ytgt), model.matmul,
                                             codes.epilogue_code(model.act_codes),
                                             self.loss_code, not self.serial)
        self.kern = tuple(kern)     # plain tuples for run_steps (see there)

    @staticmethod
    def eligible(model, optimizer, dp, X):
        """The compiled path serves plain CPU training on dense X with fastbp's own
        optimizers; an optimizer whose step was replaced, MPI and sparse X take the step
        by step path (sparse steps are large: the per-step Python cost is noise there).
        matmul='blas' runs here too, with the BLAS product in place of the GEMM."""
        from .._validation import CSRRows
        from ..optim import SGD, Adam, AdamW
        return (dp is None and model.device == "cpu" and not isinstance(X, CSRRows)
                and type(optimizer) in (SGD, Adam, AdamW)
                and "step" not in vars(optimizer))

    def run(self, model, opt, X, order, pos, n_steps, bs, loss_total=0.0):
        """n_steps steps from row pos of order; returns the position after them.  The
        steps add loss * rows to out[0], which starts at loss_total: the epoch's running
        sum, so that it is summed in the same order as step by step in Python."""
        S = self.S
        self.out[0], self.out[1] = loss_total, 0.0
        if self.sgd:
            hyper = hyper_tuple(codes.OPT_SGD, opt.lr, opt.momentum, opt.weight_decay,
                                opt.nesterov)
            state, step0 = (opt.velocity, self.none), opt.step_count
        else:
            hyper = hyper_tuple(codes.OPT_ADAM, opt.lr, 0.0, opt.weight_decay, False,
                                opt.beta1, opt.beta2, opt.eps, opt.decoupled)
            state, step0 = (opt.exp_avg, opt.exp_avg_sq), opt.step_count
        bufs = S.Buffers(model.params, model.grads, *state, self.zbuf, self.abuf, self.gbuf,
                         self.dbuf, self.row_loss, self.apack, self.bpack, self.xbuf, self.ylab_buf,
                         self.ytgt_buf, self.w_buf, self.unit_sq, self.out)
        cfg = tuple(self.cfg._replace(clip=float(opt.clip_grad_norm or 0.0)))
        n_split = self.chooser.pick()
        t = time.perf_counter()
        # plain tuples: see run_steps
        pos = S.run_steps((X, self.ylab, self.ytgt, self.w, order), pos, n_steps, bs, cfg,
                          tuple(bufs), hyper, step0, not self.serial,
                          (n_split, self.row_split[n_split], self.layer_loss, self.sync),
                          self.kern, self.steps)
        self.chooser.record(n_split, time.perf_counter() - t, n_steps)
        opt.step_count += n_steps
        return pos


def epoch_compiled(model, optimizer, X, run, bs, comp, bar, good_params, history,
                    after_step):
    """_epoch_cpu's work in chunks of steps inside one compiled call each."""
    n = run.order.shape[0]
    while run.pos < n:
        steps_left = (n - run.pos + bs - 1) // bs
        n_steps = min(steps_left, comp.chunk)
        if comp.checkpoint_every:
            n_steps = min(n_steps, comp.checkpoint_every - run.step % comp.checkpoint_every)
        start = run.pos
        stop = comp.run(model, optimizer, X, run.order, start, n_steps, bs, run.total_loss)
        total = comp.out[0]
        if not math.isfinite(total):     # the running sum was finite before this chunk
            raise diverged(model, good_params, history,
                            (total - run.total_loss) / (stop - start),
                            f"at epoch {run.epoch + 1}, samples {start}-{stop}")
        run.total_loss = total
        run.correct += int(comp.out[1])
        run.seen += stop - start
        run.pos = stop
        run.step += n_steps
        if bar is not None:
            bar_update(bar, run, stop - start, comp.count_acc)
        after_step()
