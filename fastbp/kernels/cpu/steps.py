"""Whole training steps compiled into one function (CPU, Numba).

For a small network most of a step's time is spent crossing from Python into compiled
code (a dozen kernel calls, each with its argument checks, plus the batch gather).  Here
a chunk of consecutive steps runs inside one compiled call:

    for each batch of the epoch's order:
        gather rows of X, y                     (same copies as np.take)
        forward, fused loss, backward           (the kernels MLP.loss_and_grad calls)
        optional L2 on the weights
        optimizer update over the flat buffer  (optimizer_update)

The kernels are the same ones, called in the same order with the same arguments, so a
chunk gives bit-identical results to the step-by-step Python path.  Per-layer arrays are
views carved out of flat buffers by offset (no lists of arrays cross the boundary).

The GEMM and the optimizer update are passed in as compiled functions (``kernel_pointers``)
instead of being called by name.  A call by name links the callee's compiled code, and
everything it links in turn (micro-kernel, packing, epilogues, parallel regions), into
this function, and Numba re-optimises and re-emits all linked code for every function
that links it.  Called through a pointer, that code is compiled once, with the kernel.
Measured (cold cache, `fastbp train --epochs 1`, A/B/A/B): run_steps' own compile
4.8 -> 3.0-3.3 s; the call costs ~8 us per chunk of steps.
"""
import numpy as np
from numba import njit, types
from numba.experimental.function_type import _get_wrapper_address

from .gemm import EPI_ACT_GRAD, EPI_BIAS_ACT, EPI_NONE, gemm
from .losses import (
    add_l2,
    binary_cross_entropy,
    count_correct_labels,
    count_correct_multilabel,
    cross_entropy_labels,
    cross_entropy_targets,
    mse,
)
from .optim import OPT_ADAM, OPT_SGD, optimizer_update  # noqa: F401 (OPT_* for the trainer)

LOSS_CE_LABELS, LOSS_CE_TARGETS, LOSS_MSE, LOSS_BCE = 0, 1, 2, 3


@njit(cache=True)
def layer_offset(sizes, l):
    """Start of layer l's [W (out x in), b (out)] in the flat parameter buffer."""
    off = 0
    for q in range(l):
        off += sizes[q + 1] * (sizes[q] + 1)
    return off


@njit(cache=True)
def run_steps(X, ylab, ytgt, order, pos, n_steps, bs, sizes, act_code, slope, loss_code,
              params, grads, zbuf, abuf, gbuf, row_loss, apack, bpack, xbuf, ylab_buf,
              ytgt_buf, l2, count_acc,
              opt_code, state1, state2, lr, momentum, weight_decay, nesterov, beta1, beta2,
              eps, decoupled, step0, out, gemm_fn, update_fn):
    """Train n_steps batches of bs rows, taking rows order[pos:...] of X (n, d) and of the
    targets: ylab (n,) int64 labels for LOSS_CE_LABELS, else ytgt (n, k) (the other one is
    an empty placeholder).

    sizes: int64 layer widths.  zbuf/abuf/gbuf: flat float workspace of bs * sum(widths[1:])
    each (abuf unused where A is Z).  xbuf (bs*d), ylab_buf (bs), ytgt_buf (bs*k): gather
    buffers.
    out (float64, 2): out[0] += sum of batch loss * rows, out[1] += correct predictions.
    gemm_fn, update_fn: gemm.gemm and optim.optimizer_update as ``kernel_pointers`` gives them.
    Returns the position after the last row trained.
    """
    L = sizes.shape[0] - 1
    n = X.shape[0]
    d = X.shape[1]
    none = params[:0]
    empty2 = params[:0].reshape((0, 0))
    # GEMM flags as runtime values, not constants: a constant argument is typed as a literal,
    # and Numba would compile (and LLVM optimise) another copy of the GEMM for every layout.
    no, yes = np.bool_(False), np.bool_(True)
    epi_bias_act, epi_none, epi_act_grad = \
        np.int64(EPI_BIAS_ACT), np.int64(EPI_NONE), np.int64(EPI_ACT_GRAD)
    identity = np.int64(0)
    for s in range(n_steps):
        stop = min(pos + bs, n)
        m = stop - pos
        xb = xbuf[:m * d].reshape((m, d))
        for r in range(m):
            src = order[pos + r]
            for j in range(d):
                xb[r, j] = X[src, j]
        if loss_code == LOSS_CE_LABELS:
            for r in range(m):
                ylab_buf[r] = ylab[order[pos + r]]
        else:
            k = ytgt.shape[1]
            for r in range(m):
                src = order[pos + r]
                for j in range(k):
                    ytgt_buf[r * k + j] = ytgt[src, j]
        # forward
        off = 0
        a_prev = xb
        for l in range(L):
            fan_in = sizes[l]
            fan_out = sizes[l + 1]
            w_off = layer_offset(sizes, l)
            W = params[w_off:w_off + fan_out * fan_in].reshape((fan_out, fan_in))
            b = params[w_off + fan_out * fan_in:w_off + fan_out * (fan_in + 1)]
            Z = zbuf[off:off + m * fan_out].reshape((m, fan_out))
            code = identity if l == L - 1 else act_code
            A = Z if (code == 0) else abuf[off:off + m * fan_out].reshape((m, fan_out))
            gemm_fn(a_prev, no, W, yes, Z, epi_bias_act, b, code, slope, A, empty2, empty2,
                    none, apack, bpack)
            a_prev = A
            off += m * fan_out
        # loss and dL/dZ_L
        n_out = sizes[L]
        off_last = off - m * n_out
        ZL = zbuf[off_last:off].reshape((m, n_out))
        GL = gbuf[off_last:off].reshape((m, n_out))
        rl = row_loss[:m]
        if loss_code == LOSS_CE_LABELS:
            loss = cross_entropy_labels(ZL, ylab_buf[:m], GL, rl)
        else:
            k = ytgt.shape[1]
            yb = ytgt_buf[:m * k].reshape((m, k))
            if loss_code == LOSS_CE_TARGETS:
                loss = cross_entropy_targets(ZL, yb, GL, rl)
            elif loss_code == LOSS_MSE:
                loss = mse(ZL, yb, GL, rl)
            else:
                loss = binary_cross_entropy(ZL, yb, GL, rl)
        # backward
        off = off_last
        for l in range(L - 1, -1, -1):
            fan_in = sizes[l]
            fan_out = sizes[l + 1]
            w_off = layer_offset(sizes, l)
            W = params[w_off:w_off + fan_out * fan_in].reshape((fan_out, fan_in))
            dW = grads[w_off:w_off + fan_out * fan_in].reshape((fan_out, fan_in))
            db = grads[w_off + fan_out * fan_in:w_off + fan_out * (fan_in + 1)]
            G = gbuf[off:off + m * fan_out].reshape((m, fan_out))
            if l == 0:
                a_prev = xb
                off_prev = 0
            else:
                off_prev = off - m * fan_in
                a_prev = zbuf[off_prev:off].reshape((m, fan_in)) if act_code == 0 else \
                    abuf[off_prev:off].reshape((m, fan_in))
            gemm_fn(G, yes, a_prev, no, dW, epi_none, none, identity, 0.0, empty2, empty2,
                    empty2, db, apack, bpack)
            if l > 0:
                Zp = zbuf[off_prev:off].reshape((m, fan_in))
                Gp = gbuf[off_prev:off].reshape((m, fan_in))
                gemm_fn(G, no, W, no, Gp, epi_act_grad, none, act_code, slope, empty2, Zp,
                        a_prev, none, apack, bpack)
            off = off_prev
        if l2 != 0.0:
            for l in range(L):
                w_off = layer_offset(sizes, l)
                nw = sizes[l + 1] * sizes[l]
                loss += add_l2(params[w_off:w_off + nw], grads[w_off:w_off + nw], l2)
        # update
        update_fn(opt_code, params, grads, state1, state2, lr, momentum, weight_decay,
                  nesterov, beta1, beta2, eps, decoupled, step0 + s + 1)
        out[0] += loss * m
        if count_acc:
            if loss_code == LOSS_CE_LABELS:
                out[1] += count_correct_labels(ZL, ylab_buf[:m])
            elif loss_code == LOSS_BCE:
                out[1] += count_correct_multilabel(ZL, ytgt_buf[:m * n_out].reshape((m, n_out)))
        pos = stop
    return pos


class CompiledKernel:
    """A compiled kernel handed to run_steps as a function pointer: Numba types it as a
    first-class function of the given signature (``_numba_type_``) and asks it for the
    address of its compiled C-callable entry (``__wrapper_address__``), compiling the
    kernel for that signature on first use (or loading it from Numba's cache)."""

    def __init__(self, dispatcher, signature):
        self.dispatcher = dispatcher
        self.signature = signature
        self._numba_type_ = types.FunctionType(signature)
        self._address = None

    def __wrapper_address__(self):
        if self._address is None:
            self._address = _get_wrapper_address(self.dispatcher, self.signature)
        return self._address


_KERNELS = {}


def kernel_pointers(dtype):
    """(gemm, optimizer_update) as CompiledKernels for run_steps with float arrays of dtype
    (float32 or float64): the argument types run_steps calls them with."""
    dtype = np.dtype(dtype)
    if dtype not in _KERNELS:
        f = types.float32 if dtype == np.float32 else types.float64
        vec, mat = types.Array(f, 1, "C"), types.Array(f, 2, "C")
        b, i, d = types.boolean, types.int64, types.float64
        #                 A    ta B    tb C    epi bias code slope Aout Zsrc Asrc rowsum apack bpack
        gemm_sig = types.none(mat, b, mat, b, mat, i, vec, i, d, mat, mat, mat, vec, vec, vec)
        #                   opt p    g    s1   s2   lr momentum wd nesterov beta1 beta2 eps decoupled step
        update_sig = types.none(i, vec, vec, vec, vec, d, d, d, b, d, d, d, b, i)
        _KERNELS[dtype] = (CompiledKernel(gemm, gemm_sig),
                           CompiledKernel(optimizer_update, update_sig))
    return _KERNELS[dtype]
