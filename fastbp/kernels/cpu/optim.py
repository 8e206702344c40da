"""Optimizer updates over the flat parameter buffer (CPU, Numba).

One kernel call updates every parameter of the model: p, g and the state buffers are the
flat 1-D buffers that all layers' W and b are views into.  The arithmetic follows
torch.optim's single-tensor implementations operation for operation, so a fastbp optimizer
and a torch one stay within rounding of each other step after step.

SGD (dampening 0):
    g  = g + wd * p
    v  = mu * v + g                      (v starts at 0, so the first step gives v = g)
    d  = g + mu * v  if nesterov else v  (d = g when mu == 0)
    p  = p - lr * d
Adam (L2 weight decay) / AdamW (decoupled, p = p * (1 - lr * wd) first):
    m  = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
    p  = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
"""
import math

import numpy as np
from numba import njit, prange

from .. import codes
from ..codes import OPT_ADAM, OPT_SGD  # noqa: F401 (the registry's codes)
from .linking import num_threads
from .losses import _square_sum

BLOCK = 4096
_clip_scale = njit(cache=True, inline="always")(codes.clip_scale)


@njit(cache=True, fastmath={"contract"}, _nrt=False, inline="always")
def _sgd_block(p, g, v, lr, mu, wd, momentum, weight_decay, nesterov, gs):
    # p, g, v are one block's slices: indices start at 0, which lets LLVM drop Numba's
    # negative-index handling and vectorise the loops.  gs: the gradient's scale (see
    # optimizer_update; g * 1 is g, bit for bit).
    if momentum == 0.0:
        if weight_decay == 0.0:
            for i in range(p.shape[0]):
                p[i] = p[i] - lr * (g[i] * gs)
        else:
            for i in range(p.shape[0]):
                p[i] = p[i] - lr * (g[i] * gs + wd * p[i])
    elif weight_decay == 0.0 and nesterov:
        for i in range(p.shape[0]):
            gi = g[i] * gs
            vi = mu * v[i] + gi
            v[i] = vi
            p[i] = p[i] - lr * (gi + mu * vi)
    elif weight_decay == 0.0:
        for i in range(p.shape[0]):
            vi = mu * v[i] + g[i] * gs
            v[i] = vi
            p[i] = p[i] - lr * vi
    else:
        for i in range(p.shape[0]):
            d = g[i] * gs + wd * p[i]
            vi = mu * v[i] + d
            v[i] = vi
            p[i] = p[i] - lr * ((d + mu * vi) if nesterov else vi)


@njit(cache=True, fastmath={"contract"}, _nrt=False, inline="always")
def _adam_block(p, g, m, v, T, decoupled):
    # T: _update_scalars' tuple, in the storage dtype
    (_, _, wd, step_size, sqrt_bias2, b1, b2, one_b1, one_b2, eps, decay, l2, gs) = T
    if decoupled:
        for i in range(p.shape[0]):
            p[i] = p[i] * decay
    if l2:
        for i in range(p.shape[0]):
            g_i = g[i] * gs + wd * p[i]
            mi = b1 * m[i] + one_b1 * g_i
            vi = b2 * v[i] + one_b2 * g_i * g_i
            m[i] = mi
            v[i] = vi
            p[i] = p[i] - step_size * (mi / (math.sqrt(vi) / sqrt_bias2 + eps))
    else:
        for i in range(p.shape[0]):
            g_i = g[i] * gs
            mi = b1 * m[i] + one_b1 * g_i
            vi = b2 * v[i] + one_b2 * g_i * g_i
            m[i] = mi
            v[i] = vi
            p[i] = p[i] - step_size * (mi / (math.sqrt(vi) / sqrt_bias2 + eps))


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def _update_block(hyper, p, g, s1, s2, T):
    """One block of either update, _sgd_block's or _adam_block's loops inlined here.
    hyper: as optimizer_update's; T: _update_scalars' tuple.

    error_model="numpy": with Numba's default, every division tests its divisor for zero
    (to raise ZeroDivisionError), and that branch kept Adam's loop scalar.  Adam's divisor
    is >= eps > 0; with eps = 0 and v = 0 it gives inf or nan, as torch does, instead of
    raising."""
    opt_code, lr, momentum, weight_decay, nesterov, beta1, beta2, eps, decoupled, _ = hyper
    if opt_code == OPT_SGD:
        _sgd_block(p, g, s1, T[0], T[1], T[2], momentum, weight_decay, nesterov, T[12])
    else:
        _adam_block(p, g, s1, s2, T, decoupled)


@njit(cache=True, _nrt=False, inline="always")
def _update_scalars(p, hyper, step):
    """The updates' scalars, cast to the storage dtype once (so that the loops stay in it
    and vectorise; torch, too, computes in the parameter's dtype), Adam's bias corrections
    computed in float64 first: (T_lr, T_mu, T_wd, step_size, sqrt_bias2, b1, b2, one_b1,
    one_b2, T_eps, decay, l2, T_grad_scale)."""
    opt_code, lr, momentum, weight_decay, nesterov, beta1, beta2, eps, decoupled, gs = hyper
    T = p.dtype.type
    bias1 = 1.0 - beta1 ** step
    bias2 = 1.0 - beta2 ** step
    return (T(lr), T(momentum), T(weight_decay), T(lr / bias1), T(math.sqrt(bias2)),
            T(beta1), T(beta2), T(1.0 - beta1), T(1.0 - beta2), T(eps),
            T(1.0 - lr * weight_decay), not decoupled and weight_decay != 0.0, T(gs))


@njit(cache=True, _nrt=False, error_model="numpy")
def optimizer_update_serial(hyper, p, g, s1, s2, step, parallel):
    """optimizer_update on the calling thread whatever `parallel` says: what a trainer
    whose steps never run parallel regions is given (steps.kernel_pointers), so that it
    does not compile optimizer_update's parallel loop (about 1 s of a cold start)."""
    _update_block(hyper, p, g, s1, s2, _update_scalars(p, hyper, step))


@njit(parallel=True, cache=True, _nrt=False, error_model="numpy")
def optimizer_update(hyper, p, g, s1, s2, step, parallel):
    """One update of the flat buffers p, g (P,) in place, by either optimizer.

    hyper: (opt_code int64, lr, momentum, weight_decay float64, nesterov bool, beta1,
    beta2, eps float64, decoupled bool, grad_scale float64), codes.OPT_SGD or
    codes.OPT_ADAM.  The update uses g * grad_scale (in p's dtype) for g: gradient
    clipping's coefficient (clip_coefficient), 1.0 otherwise (the same bits as g).  SGD: s1 is the
    momentum buffer (s2, beta1, beta2, eps, decoupled, step unused).  Adam: s1, s2 are
    exp_avg and exp_avg_sq; step is 1 on the first call (momentum, nesterov unused).
    parallel: False to stay on the calling thread: inside a parallel region, and in
    training with matmul="blas", where OpenBLAS's threads do the products (Numba's idle
    OpenMP workers spin and would share the cores with them).

    One parallel loop serves both optimizers: each parallel region costs ~1.9 s of compile
    wherever it is linked, and the compiled training step links whichever update it may run.
    """
    T = _update_scalars(p, hyper, step)
    n = p.shape[0]
    nblk = (n + BLOCK - 1) // BLOCK
    # few blocks: a parallel region costs more than this; one thread (a forked child
    # among them, runtime.py): no parallel region
    if nblk < 4 or not parallel or num_threads() < 2:
        _update_block(hyper, p, g, s1, s2, T)
        return
    for blk in prange(nblk):
        i0 = blk * BLOCK
        i1 = min(i0 + BLOCK, n)
        _update_block(hyper, p[i0:i1], g[i0:i1], s1[i0:i1], s2[i0:i1], T)


def hyper_tuple(opt_code, lr, momentum=0.0, weight_decay=0.0, nesterov=False, beta1=0.0,
                beta2=0.0, eps=0.0, decoupled=False, grad_scale=1.0):
    """optimizer_update's hyper tuple, typed as the compiled code expects it (one
    specialisation whatever numeric types the caller holds)."""
    return (np.int64(opt_code), float(lr), float(momentum), float(weight_decay),
            bool(nesterov), float(beta1), float(beta2), float(eps), bool(decoupled),
            float(grad_scale))


@njit(cache=True, _nrt=False)
def with_grad_scale(hyper, grad_scale):
    """hyper with its grad_scale replaced."""
    return (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5], hyper[6], hyper[7],
            hyper[8], np.float64(grad_scale))


@njit(cache=True, _nrt=False)
def unit_square_sums(dW, db, out):
    """out[o] = sum_j dW[o, j]^2 + db[o]^2 in float64, for each output unit o of a layer's
    gradient rows dW (k, n), db (k,); out (k,).  Gradient clipping's norm is summed unit by
    unit (clip_coefficient), so that threads sharing a layer's rows give the same bits."""
    for o in range(dW.shape[0]):
        out[o] = _square_sum(dW[o]) + np.float64(db[o]) * db[o]


@njit(cache=True, _nrt=False)
def clip_coefficient(unit_sums, max_norm):
    """(coefficient, norm) of clipping the gradient whose units' squared sums are unit_sums
    (every unit of every layer, in order) to norm max_norm, as
    torch.nn.utils.clip_grad_norm_: norm = sqrt(sum), coefficient = min(1, max_norm /
    (norm + 1e-6)) (NaN for a NaN or infinite norm, which the trainer reports)."""
    total = 0.0
    for i in range(unit_sums.shape[0]):
        total += unit_sums[i]
    return _clip_scale(total, max_norm), math.sqrt(total)


@njit(cache=True)
def sgd_update(p, g, v, lr, momentum, weight_decay, nesterov, parallel, grad_scale):
    """p, g, v: (P,) flat parameter, gradient and momentum buffers. Updates p and v in place.
    parallel: False to stay on the calling thread (see optimizer_update); grad_scale: as
    optimizer_update's."""
    # runtime values, not constants: a constant argument is typed as a literal, and Numba
    # would compile another copy of the parallel loop for each wrapper
    hyper = (np.int64(OPT_SGD), np.float64(lr), np.float64(momentum),
             np.float64(weight_decay), np.bool_(nesterov), 0.0, 0.0, 0.0, np.bool_(False),
             np.float64(grad_scale))
    optimizer_update(hyper, p, g, v, v, np.int64(1), parallel)


@njit(cache=True)
def adam_update(p, g, m, v, lr, betas, eps, weight_decay, decoupled, step, parallel,
                grad_scale):
    """p, g, m, v: (P,) flat buffers; betas: (beta1, beta2); step is 1 on the first call.
    Updates p, m, v in place.  parallel: False to stay on the calling thread (see
    optimizer_update); grad_scale: as optimizer_update's."""
    hyper = (np.int64(OPT_ADAM), np.float64(lr), 0.0, np.float64(weight_decay),
             np.bool_(False), np.float64(betas[0]), np.float64(betas[1]), np.float64(eps),
             np.bool_(decoupled), np.float64(grad_scale))
    optimizer_update(hyper, p, g, m, v, np.int64(step), parallel)
