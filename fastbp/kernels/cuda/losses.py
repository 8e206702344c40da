"""Fused losses, reductions and batch gathering on the GPU (numba.cuda).

Formulas as fastbp.kernels.cpu.losses: each loss kernel runs one thread per row, writes
dL/dZ into G and the row's (weighted) loss into row_loss (float64), with the batch's
scale and sample weights passed in as on the CPU.  ``accumulate`` adds row_loss
into a device scalar with a fixed-order block reduction, so an epoch's loss is summed on
the device and read by the host once.
"""
import math

from numba import cuda, float64

from .. import codes
from .activations import sigmoid
from .launch import launch

# the element-wise losses' terms (codes.py: one formula for both devices)
_mse_term = cuda.jit(device=True, inline=True)(codes.mse_term)
_poisson_term = cuda.jit(device=True, inline=True)(codes.poisson_term)
_huber_term = cuda.jit(device=True, inline=True)(codes.huber_term)

ROWS = 128
REDUCE_THREADS = 256


def _rows_grid(n):
    return (n + ROWS - 1) // ROWS, ROWS


@cuda.jit(device=True, inline=True)
def _row_max_sum(Z, i):
    n = Z.shape[1]
    m = Z[i, 0]
    for c in range(1, n):
        if Z[i, c] > m:
            m = Z[i, c]
    s = 0.0
    for c in range(n):
        s += math.exp(float64(Z[i, c]) - m)
    return m, s


@cuda.jit(device=True, inline=True)
def _factor(w, i, scale):
    """Row i's gradient factor: scale, times w[i] when there are weights (w not empty)."""
    return scale if w.shape[0] == 0 else scale * w[i]


@cuda.jit(device=True, inline=True)
def _weighted(loss, w, i):
    return loss if w.shape[0] == 0 else loss * w[i]


@cuda.jit(cache=True)
def _ce_labels(Z, y, G, row_loss, w, scale, smoothing):
    i = cuda.grid(1)
    b, n = Z.shape
    if i < b:
        m, s = _row_max_sum(Z, i)
        lse = m + math.log(s)
        label = y[i]
        keep, spread = 1.0 - smoothing, smoothing / n
        zsum = 0.0
        for c in range(n):
            zsum += Z[i, c]
        row_loss[i] = _weighted(keep * (lse - Z[i, label]) + smoothing * (lse - zsum / n),
                                w, i)
        f = _factor(w, i, scale)
        for c in range(n):
            p = math.exp(float64(Z[i, c]) - m) / s
            G[i, c] = (p - spread - (keep if c == label else 0.0)) * f


@cuda.jit(cache=True)
def _ce_targets(Z, T, G, row_loss, w, scale, smoothing):
    i = cuda.grid(1)
    b, n = Z.shape
    if i < b:
        m, s = _row_max_sum(Z, i)
        lse = m + math.log(s)
        keep, spread = 1.0 - smoothing, smoothing / n
        tsum = 0.0
        acc = 0.0
        for c in range(n):
            t = keep * T[i, c] + spread
            tsum += t
            acc += t * (lse - Z[i, c])
        row_loss[i] = _weighted(acc, w, i)
        f = _factor(w, i, scale)
        for c in range(n):
            p = math.exp(float64(Z[i, c]) - m) / s
            G[i, c] = (p * tsum - (keep * T[i, c] + spread)) * f


@cuda.jit(cache=True)
def _mse(Z, T, G, row_loss, w, scale, param):
    i = cuda.grid(1)
    b, n = Z.shape
    if i < b:
        acc = 0.0
        f = _factor(w, i, scale)
        for c in range(n):
            loss, g = _mse_term(float64(Z[i, c]), float64(T[i, c]))
            acc += loss
            G[i, c] = g * f
        row_loss[i] = _weighted(acc, w, i)


@cuda.jit(cache=True)
def _bce(Z, T, G, row_loss, w, scale, param):
    i = cuda.grid(1)
    b, n = Z.shape
    if i < b:
        acc = 0.0
        f = _factor(w, i, scale)
        for c in range(n):
            z = float64(Z[i, c])
            t = float64(T[i, c])
            acc += max(z, 0.0) - z * t + math.log1p(math.exp(-abs(z)))
            G[i, c] = (sigmoid(z) - t) * f
        row_loss[i] = _weighted(acc, w, i)


@cuda.jit(cache=True)
def _poisson(Z, T, G, row_loss, w, scale, param):
    i = cuda.grid(1)
    b, n = Z.shape
    if i < b:
        acc = 0.0
        f = _factor(w, i, scale)
        for c in range(n):
            loss, g = _poisson_term(float64(Z[i, c]), float64(T[i, c]))
            acc += loss
            G[i, c] = g * f
        row_loss[i] = _weighted(acc, w, i)


@cuda.jit(cache=True)
def _huber(Z, T, G, row_loss, w, scale, delta):
    i = cuda.grid(1)
    b, n = Z.shape
    if i < b:
        acc = 0.0
        f = _factor(w, i, scale)
        for c in range(n):
            loss, g = _huber_term(float64(Z[i, c]), float64(T[i, c]), delta)
            acc += loss
            G[i, c] = g * f
        row_loss[i] = _weighted(acc, w, i)


SCALE_ARG = 5
"""The position of ``scale`` among a loss kernel's arguments (Prepared.set_scalar)."""


def _loss_launch(kernel, Z, T, G, row_loss, w, scale, param, stream, plan):
    launch(kernel, *_rows_grid(Z.shape[0]), (Z, T, G, row_loss, w, float(scale), float(param)),
           stream, plan)


def cross_entropy_labels(Z, y, G, row_loss, w, scale, param=0.0, stream=0, plan=None):
    """Z (b, C), y (b,) int64, G (b, C) out, row_loss (b,) out, w (b,) float64 weights or
    empty, scale 1 / (the batch's weight total), param the loss's parameter (label
    smoothing here, Huber's delta).  Formulas and the meaning of scale as
    kernels/cpu/losses.py: row_loss[i] = w_i l_i (the row's sum over its outputs), G rows
    times w_i * scale; the batch's mean loss is scale * sum(row_loss)."""
    _loss_launch(_ce_labels, Z, y, G, row_loss, w, scale, param, stream, plan)


def cross_entropy_targets(Z, T, G, row_loss, w, scale, param=0.0, stream=0, plan=None):
    _loss_launch(_ce_targets, Z, T, G, row_loss, w, scale, param, stream, plan)


def mse(Z, T, G, row_loss, w, scale, param=0.0, stream=0, plan=None):
    """scale: 1 / (n_outputs * the batch's weight total), as the CPU's."""
    _loss_launch(_mse, Z, T, G, row_loss, w, scale, param, stream, plan)


def binary_cross_entropy(Z, T, G, row_loss, w, scale, param=0.0, stream=0, plan=None):
    _loss_launch(_bce, Z, T, G, row_loss, w, scale, param, stream, plan)


def poisson(Z, T, G, row_loss, w, scale, param=0.0, stream=0, plan=None):
    _loss_launch(_poisson, Z, T, G, row_loss, w, scale, param, stream, plan)


def huber(Z, T, G, row_loss, w, scale, param=1.0, stream=0, plan=None):
    """param: delta."""
    _loss_launch(_huber, Z, T, G, row_loss, w, scale, param, stream, plan)


@cuda.jit(cache=True)
def _softmax(Z, P):
    i = cuda.grid(1)
    if i < Z.shape[0]:
        m, s = _row_max_sum(Z, i)
        for c in range(Z.shape[1]):
            P[i, c] = math.exp(float64(Z[i, c]) - m) / s


def softmax_rows(Z, P, stream=0, plan=None):
    launch(_softmax, *_rows_grid(Z.shape[0]), (Z, P), stream, plan)


@cuda.jit(cache=True)
def _accumulate(values, scale, out, square):
    """out[0] += scale * sum(values (squared if square)): one block, strided partial sums,
    tree reduction in a fixed order."""
    part = cuda.shared.array(REDUCE_THREADS, float64)
    t = cuda.threadIdx.x
    s = 0.0
    for i in range(t, values.shape[0], REDUCE_THREADS):
        v = float64(values[i])
        s += v * v if square else v
    part[t] = s
    cuda.syncthreads()
    width = REDUCE_THREADS // 2
    while width > 0:
        if t < width:
            part[t] += part[t + width]
        cuda.syncthreads()
        width //= 2
    if t == 0:
        out[0] += scale * part[0]


def accumulate(values, scale, out, stream=0, plan=None):
    """out[0] += scale * sum(values) on the device (deterministic order)."""
    launch(_accumulate, 1, REDUCE_THREADS, (values, scale, out, False), stream, plan)


@cuda.jit(cache=True)
def _count_labels(Z, y, out):
    i = cuda.grid(1)
    if i < Z.shape[0]:
        best = 0
        for c in range(1, Z.shape[1]):
            if Z[i, c] > Z[i, best]:
                best = c
        if best == y[i]:
            cuda.atomic.add(out, 0, 1)


@cuda.jit(cache=True)
def _count_multilabel(Z, T, out):
    i = cuda.grid(1)
    if i < Z.shape[0]:
        ok = True
        for c in range(Z.shape[1]):
            if (Z[i, c] > 0) != (T[i, c] > 0.5):
                ok = False
        if ok:
            cuda.atomic.add(out, 0, 1)


def count_correct_labels(Z, y, out, stream=0, plan=None):
    """out[0] (int64) += rows whose argmax equals the label."""
    launch(_count_labels, *_rows_grid(Z.shape[0]), (Z, y, out), stream, plan)


def count_correct_multilabel(Z, T, out, stream=0, plan=None):
    launch(_count_multilabel, *_rows_grid(Z.shape[0]), (Z, T, out), stream, plan)


@cuda.jit(cache=True)
def _gather(src, idx, start, dst):
    r, j = cuda.grid(2)
    if r < dst.shape[0] and j < dst.shape[1]:
        dst[r, j] = src[idx[start + r], j]


def gather_rows(src, idx, dst, stream=0, plan=None, start=0):
    """dst[r, :] = src[idx[start + r], :] for 2-D device arrays: a batch taken on the
    device (``start`` is argument 2 of the launch, for Prepared.set_scalar)."""
    grid = ((dst.shape[0] + 15) // 16, (dst.shape[1] + 15) // 16)
    launch(_gather, grid, (16, 16), (src, idx, start, dst), stream, plan)


def accumulate_squares(values, scale, out, stream=0, plan=None):
    """out[0] += scale * sum(values ** 2): the L2 penalty, summed on the device."""
    launch(_accumulate, 1, REDUCE_THREADS, (values, scale, out, True), stream, plan)
