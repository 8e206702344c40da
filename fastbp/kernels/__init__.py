"""fastbp's compiled kernels, as a validated array-in / array-out backend.

The functions here check their arguments (shape, dtype, finiteness) and then call the
Numba kernels in ``fastbp.kernels.cpu``; those do no checking of their own.  Arrays are
float32 or float64; mixed inputs are promoted like NumPy does.  Rows are examples.

    matmul(a, b, out=None, trans_a=False, trans_b=False)  C = op(a) @ op(b)
    linear(x, weight, bias=None, activation="identity")   Z = x W^T + b, A = f(Z)
    linear_backward(delta, x, weight)                     dx = delta W, dW = delta^T x, db = sum delta
    activation(z, name) / activation_grad(grad, z, name)  f(z) and grad * f'(z)
    softmax(z)
    cross_entropy(logits, target)          -> (loss, dL/dlogits)
    mse(pred, target)                      -> (loss, dL/dpred)
    binary_cross_entropy(logits, target)   -> (loss, dL/dlogits)
    poisson(log_mean, target)              -> (loss, dL/dlog_mean)
    huber(pred, target, delta=1.0)         -> (loss, dL/dpred)
    (each loss also takes sample_weight=: a weighted mean, sum w_i l_i / sum w_i)
    bias_grad(delta)                       column sums
"""
import threading

import numpy as np

from .._validation import (
    as_float_array,
    check_class_labels,
    check_float,
    check_positive_int,
    check_sample_weight,
    check_targets,
)
from ..runtime import ensure_threads
from .cpu import activations as _act
from .cpu import gemm as _gemm
from .cpu import losses as _losses
from .cpu import optim as _optim
from .codes import ACTIVATION_CODES, activation_code

__all__ = [
    "matmul", "linear", "linear_backward", "activation", "activation_grad", "softmax",
    "cross_entropy", "mse", "binary_cross_entropy", "poisson", "huber", "bias_grad",
    "sgd_update", "adam_update", "activation_code", "ACTIVATION_CODES",
]


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# Zero-size placeholders for unused kernel arguments (nothing is ever written to them).
_EMPTY1 = {dt: np.empty(0, dt) for dt in _FLOATS}
_EMPTY2 = {dt: np.empty((0, 0), dt) for dt in _FLOATS}


def _float_dtype(*arrays):
    dt = arrays[0].dtype
    if dt in _FLOATS and all(a.dtype == dt for a in arrays[1:]):
        return dt
    dt = np.result_type(*[a.dtype for a in arrays])
    return _FLOATS[0] if dt == np.float32 else _FLOATS[1]


def _as_array(x, name):
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x


def _operand(x, trans, name, dtype):
    """A C-contiguous operand and its transpose flag; an F-ordered view flips the flag.

    Like numpy.matmul, matmul does not scan its operands for NaN/inf: they cannot make the
    kernel index out of bounds, and they propagate into the result as they would in BLAS.
    """
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if x.dtype == dtype and x.flags.f_contiguous and not x.flags.c_contiguous:
        x, trans = x.T, not trans
    return np.ascontiguousarray(x, dtype=dtype), trans


def _empty(dtype):
    return _EMPTY2[np.dtype(dtype)]


def _none(dtype):
    return _EMPTY1[np.dtype(dtype)]


def matmul(a, b, out=None, trans_a=False, trans_b=False):
    """C = op(a) @ op(b), op(x) = x.T when trans_x, computed by fastbp's own GEMM.

    a: (M, K), or (K, M) with trans_a.  b: (K, N), or (N, K) with trans_b.
    out: optional C-contiguous (M, N) array of the result dtype, written in place.
    Returns C (M, N).  No BLAS is called.
    """
    # Fast path: float arrays of one dtype, C-contiguous (checked in compiled code, see
    # gemm.matmul_checked), this thread's packing workspace already large enough.  On a
    # small product the call is most of the time (32x100 @ (10x100)^T: ~1.4 us of ~3), so
    # this path tests as little as it can in Python: a read-only `out` is refused by the
    # entry's signature (TypeError), and the threads were started by the thread's first
    # call, which took the general path.
    if type(a) is np.ndarray and type(b) is np.ndarray:
        ws = getattr(_scratch, "bufs", _NO_BUFS).get(a.dtype)
        if ws is not None and ws[3] is not None and b.dtype is a.dtype:
            c = out
            if c is None:
                sa, sb = a.shape, b.shape
                if len(sa) == 2 and len(sb) == 2:
                    c = np.empty((sa[1] if trans_a else sa[0], sb[0] if trans_b else sb[1]),
                                 a.dtype)
            elif (type(c) is not np.ndarray or c.dtype is not a.dtype
                  or np.may_share_memory(c, a) or np.may_share_memory(c, b)):
                c = None      # the general path (an `out` overlapping an operand, say)
            if c is not None:
                try:
                    if ws[3](a, bool(trans_a), b, bool(trans_b), c, ws[0], ws[1], ws[2]) == 0:
                        return c
                except TypeError:       # no compiled version for these arguments
                    pass
    return _matmul_general(a, b, out, bool(trans_a), bool(trans_b))


_NO_BUFS = {}


def _matmul_general(a, b, out, trans_a, trans_b):
    """matmul for everything the fast path does not take: conversions (other dtypes,
    mixed dtypes, non-contiguous views), errors, empty products, and the first product of
    a size on a thread (its packing workspace is grown here)."""
    ensure_threads()
    a = _as_array(a, "a")
    b = _as_array(b, "b")
    dtype = _float_dtype(a, b)
    a, trans_a = _operand(a, trans_a, "a", dtype)
    b, trans_b = _operand(b, trans_b, "b", dtype)
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if K != Kb:
        raise ValueError(
            f"matmul: inner dimensions differ: op(a) is {M}x{K} but op(b) is {Kb}x{N}"
        )
    if out is None:
        out = np.empty((M, N), dtype=dtype)
    elif not isinstance(out, np.ndarray) or out.shape != (M, N) or out.dtype != dtype \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(
            f"out must be a writeable C-contiguous {dtype} array of shape {(M, N)}, got "
            + (f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__)
        )
    if M == 0 or N == 0:
        return out
    if K == 0:
        out[...] = 0
        return out
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        # The GEMM writes C while it still reads A and B: as NumPy does, compute into a
        # new array and copy, so that out=a gives the product of the inputs as they were.
        out[...] = _matmul_general(a, b, None, trans_a, trans_b)
        return out
    ap, bp, addr, entry = _pack_buffers(M, N, K, dtype)
    if entry is None:        # the thread's first matmul of this dtype
        entry = _gemm.matmul_entry(dtype)
        _scratch.bufs[dtype] = (ap, bp, addr, entry)
    if entry(a, trans_a, b, trans_b, out, ap, bp, addr) != 0:   # an internal error:
        raise RuntimeError("fastbp: the compiled matmul refused arguments checked here")
    return out


_scratch = threading.local()


def _pack_buffers(M, N, K, dtype):
    """(apack, bpack, chunk address, matmul entry or None) for one product of dtype:
    per-thread packing buffers that only ever grow, so that repeated calls neither allocate
    nor page-fault on fresh memory, gemm's chunk address, and matmul's compiled entry once
    matmul has run on this thread (its fast path looks them all up at once)."""
    na, nb = _gemm.pack_sizes(M, N, K)
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    ws = bufs.get(dtype)
    if ws is None:
        chunk = _gemm.column_chunk_address(dtype, _gemm.IDENTITY)
        ws = (np.empty(0, dtype), np.empty(0, dtype), chunk, None)
    a, b, addr, entry = ws
    if a.size < na or b.size < nb:
        a = _gemm.pack_buffer(max(na, a.size), dtype) if a.size < na else a
        b = _gemm.pack_buffer(max(nb, b.size), dtype) if b.size < nb else b
        ws = (a, b, addr, entry)
    bufs[dtype] = ws
    return ws


def linear(x, weight, bias=None, activation="identity", slope=0.01):
    """Fused dense layer: Z = x W^T + b and A = f(Z) in one pass over the output.

    x: (b, in), weight: (out, in), bias: (out,) or None.  Returns (Z, A), each (b, out).
    """
    ensure_threads()
    x = _as_array(x, "x")
    weight = _as_array(weight, "weight")
    dtype = _float_dtype(x, weight)
    code = activation_code(activation)
    x = as_float_array(x, "x", dtype)
    weight = as_float_array(weight, "weight", dtype)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features but weight expects {weight.shape[1]} (weight is {weight.shape})"
        )
    n_out = weight.shape[0]
    if bias is None:
        bias = np.zeros(n_out, dtype=dtype)
    else:
        bias = as_float_array(bias, "bias", dtype, ndim=1)
        if bias.shape[0] != n_out:
            raise ValueError(f"bias has length {bias.shape[0]}, expected {n_out}")
    z = np.empty((x.shape[0], n_out), dtype=dtype)
    a = np.empty_like(z)
    e = _empty(dtype)
    ap, bp, _, _ = _pack_buffers(x.shape[0], n_out, x.shape[1], dtype)
    _gemm.gemm(x, False, weight, True, z, (_gemm.EPI_BIAS_ACT, bias, code, float(slope), a, e, e),
               _none(dtype), ap, bp, True, _gemm.column_chunk_address(dtype, code))
    return z, a


def linear_backward(delta, x, weight):
    """Backward pass of Z = x W^T + b given delta = dL/dZ.

    delta: (b, out), x: (b, in), weight: (out, in).
    Returns (dx (b, in) = delta W, dW (out, in) = delta^T x, db (out,) = sum_rows delta).
    """
    ensure_threads()
    delta = _as_array(delta, "delta")
    x = _as_array(x, "x")
    weight = _as_array(weight, "weight")
    dtype = _float_dtype(delta, x, weight)
    delta = as_float_array(delta, "delta", dtype)
    x = as_float_array(x, "x", dtype)
    weight = as_float_array(weight, "weight", dtype)
    b, n_out = delta.shape
    if x.shape[0] != b:
        raise ValueError(f"delta has {b} rows but x has {x.shape[0]}")
    if weight.shape != (n_out, x.shape[1]):
        raise ValueError(f"weight must have shape {(n_out, x.shape[1])}, got {weight.shape}")
    e = _empty(dtype)
    no_bias = _none(dtype)
    dx = np.empty_like(x)
    ap, bp, _, _ = _pack_buffers(b, x.shape[1], n_out, dtype)
    chunk = _gemm.column_chunk_address(dtype, _gemm.IDENTITY)
    _gemm.gemm(delta, False, weight, False, dx, (_gemm.EPI_NONE, no_bias, 0, 0.0, e, e, e),
               no_bias, ap, bp, True, chunk)
    dw = np.empty_like(weight)
    db = np.empty(n_out, dtype=dtype)
    ap, bp, _, _ = _pack_buffers(n_out, x.shape[1], b, dtype)
    _gemm.gemm(delta, True, x, False, dw, (_gemm.EPI_NONE, no_bias, 0, 0.0, e, e, e), db, ap, bp,
               True, chunk)
    return dx, dw, db


def activation(z, name="relu", slope=0.01):
    """f(z) for a 2-D array z (rows, cols); returns a new array."""
    z = _as_array(z, "z")
    code = activation_code(name)
    z = as_float_array(z, "z", _float_dtype(z))
    out = np.empty_like(z)
    _act.activation_forward(z, out, code, float(slope))
    return out


def activation_grad(grad, z, name="relu", slope=0.01):
    """grad * f'(z) for 2-D arrays of one shape; returns a new array."""
    grad = _as_array(grad, "grad")
    z = _as_array(z, "z")
    code = activation_code(name)
    dtype = _float_dtype(grad, z)
    z = as_float_array(z, "z", dtype)
    out = as_float_array(grad, "grad", dtype).copy()
    if out.shape != z.shape:
        raise ValueError(f"grad has shape {out.shape} but z has {z.shape}")
    a = np.empty_like(z)
    _act.activation_forward(z, a, code, float(slope))
    _act.activation_backward(out, z, a, code, float(slope))
    return out


def softmax(z):
    """Row-wise softmax of logits z (b, C), computed stably; returns a new array."""
    z = _as_array(z, "z")
    z = as_float_array(z, "z", _float_dtype(z))
    p = np.empty_like(z)
    _losses.softmax_rows(z, p)
    return p


_NO_WEIGHTS = np.empty(0)     # the loss kernels' "every row weighs 1"


def _weights(sample_weight, b):
    w = check_sample_weight(sample_weight, b)
    return _NO_WEIGHTS if w is None else w


def cross_entropy(logits, target, sample_weight=None, label_smoothing=0.0):
    """Mean softmax cross-entropy and its gradient w.r.t. the logits, in one fused pass.

    logits: (b, C).  target: (b,) integer class labels in [0, C), or (b, C) probability /
    one-hot targets.  Returns (loss: float, grad: (b, C) = (softmax(logits) - Y) / b).
    sample_weight (b,): the weighted mean, grad rows w_i (softmax - Y_i) / sum(w).
    label_smoothing eps in [0, 1): Y becomes (1 - eps) Y + eps / C, as PyTorch's.
    """
    eps = check_float(label_smoothing, "label_smoothing", 0.0)
    if eps >= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    logits = _as_array(logits, "logits")
    z = as_float_array(logits, "logits", _float_dtype(logits))
    b, n = z.shape
    g = np.empty_like(z)
    row_loss = np.empty(b)
    w = _weights(sample_weight, b)
    t = np.asarray(target)
    if t.ndim == 2:
        t = check_targets(t, n, b, z.dtype, name="target")
        loss = _losses.cross_entropy_targets(z, t, g, row_loss, w, eps)
    else:
        y = check_class_labels(t, n, b, name="target")
        loss = _losses.cross_entropy_labels(z, y, g, row_loss, w, eps)
    return float(loss), g


def _elementwise_loss(kernel, z, target, zname, sample_weight, **target_checks):
    """(loss, grad) of a loss averaged over every element: z (b, n) as a float array,
    target checked against it, optional row weights."""
    z = _as_array(z, zname)
    z = as_float_array(z, zname, _float_dtype(z))
    t = check_targets(target, z.shape[1], z.shape[0], z.dtype, name="target", **target_checks)
    g = np.empty_like(z)
    w = _weights(sample_weight, z.shape[0])
    return float(kernel(z, t, g, np.empty(z.shape[0]), w)), g


def mse(pred, target, sample_weight=None):
    """Mean squared error over all elements and its gradient 2 (pred - target) / size.

    pred: (b, n), target: (b, n) (or (b,) when n == 1).  Returns (loss, grad (b, n)).
    """
    return _elementwise_loss(_losses.mse, pred, target, "pred", sample_weight)


def binary_cross_entropy(logits, target, sample_weight=None):
    """Mean binary cross-entropy of sigmoid(logits) against targets in [0, 1], fused.

    logits, target: (b, n) (multi-label).  Returns (loss, grad (b, n) = (sigmoid - t) / size).
    """
    return _elementwise_loss(_losses.binary_cross_entropy, logits, target, "logits",
                             sample_weight, unit_interval=True)


def poisson(log_mean, target, sample_weight=None):
    """Mean Poisson negative log-likelihood exp(z) - t z of log-means z (the constant
    log(t!) left out, as torch's PoissonNLLLoss(log_input=True)), fused with its gradient.

    log_mean, target: (b, n), target non-negative.  Returns (loss, grad = (exp(z) - t) / size).
    """
    return _elementwise_loss(_losses.poisson, log_mean, target, "log_mean", sample_weight,
                             non_negative=True)


def huber(pred, target, delta=1.0, sample_weight=None):
    """Mean Huber loss over all elements (PyTorch's HuberLoss(delta)) and its gradient:
    per element d = pred - target, 0.5 d^2 within delta and delta (|d| - delta / 2) beyond.

    pred, target: (b, n).  Returns (loss, grad = clip(d, -delta, delta) / size).
    """
    delta = check_float(delta, "delta", 0.0, low_open=True)
    return _elementwise_loss(lambda z, t, g, rl, w: _losses.huber(z, t, g, rl, w, delta),
                             pred, target, "pred", sample_weight)


def bias_grad(delta):
    """Column sums of delta (b, out): the bias gradient. Returns (out,)."""
    delta = _as_array(delta, "delta")
    d = as_float_array(delta, "delta", _float_dtype(delta))
    out = np.empty(d.shape[1], dtype=d.dtype)
    _gemm.column_sum(d, out)
    return out


def _flat_buffers(names, *arrays):
    p = arrays[0]
    for name, a in zip(names, arrays):
        if not isinstance(a, np.ndarray) or a.ndim != 1 or not a.flags.c_contiguous \
                or not a.flags.writeable:
            raise ValueError(f"{name} must be a writeable contiguous 1-D array")
        if a.dtype != p.dtype or a.shape != p.shape:
            raise ValueError(f"{name} must match params in dtype and shape ({p.dtype}, {p.shape})")
    if p.dtype not in (np.float32, np.float64):
        raise TypeError(f"params must be float32 or float64, got {p.dtype}")


def sgd_update(params, grads, velocity, lr, momentum=0.0, weight_decay=0.0, nesterov=False,
               parallel=True):
    """One SGD step over flat buffers in place (see fastbp.kernels.cpu.optim).
    parallel=False keeps it on the calling thread (as next to BLAS-threaded products)."""
    ensure_threads()
    _flat_buffers(("params", "grads", "velocity"), params, grads, velocity)
    _optim.sgd_update(params, grads, velocity, check_float(lr, "lr", 0.0),
                      check_float(momentum, "momentum", 0.0),
                      check_float(weight_decay, "weight_decay", 0.0), bool(nesterov),
                      bool(parallel), 1.0)


def adam_update(params, grads, exp_avg, exp_avg_sq, step, lr=1e-3, betas=(0.9, 0.999),
                eps=1e-8, weight_decay=0.0, decoupled=False, parallel=True):
    """One Adam (or AdamW with decoupled=True) step over flat buffers in place.
    parallel=False keeps it on the calling thread."""
    ensure_threads()
    _flat_buffers(("params", "grads", "exp_avg", "exp_avg_sq"), params, grads, exp_avg,
                  exp_avg_sq)
    beta1 = check_float(betas[0], "beta1", 0.0, 1.0)
    beta2 = check_float(betas[1], "beta2", 0.0, 1.0)
    if beta1 >= 1.0 or beta2 >= 1.0:     # a bias correction of 0: every parameter NaN
        raise ValueError(f"betas must be in [0, 1), got {tuple(betas)!r}")
    step = check_positive_int(step, "step")   # Adam counts its steps from 1
    _optim.adam_update(params, grads, exp_avg, exp_avg_sq, check_float(lr, "lr", 0.0),
                       (beta1, beta2), check_float(eps, "eps", 0.0),
                       check_float(weight_decay, "weight_decay", 0.0), bool(decoupled), step,
                       bool(parallel), 1.0)
