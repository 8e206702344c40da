"""Optimizer updates over the flat parameter buffer on the GPU: one launch updates every
parameter.  Formulas and operation order as fastbp.kernels.cpu.optim (torch.optim)."""
import math

from numba import cuda, float32, float64

from .. import codes
from .launch import launch

THREADS = 256


def _grid(n):
    return (n + THREADS - 1) // THREADS, THREADS


@cuda.jit(cache=True)
def _sgd(p, g, v, lr, momentum, weight_decay, nesterov, gscale):
    i = cuda.grid(1)
    if i < p.shape[0]:
        d = g[i] * float32(gscale[0])
        if weight_decay != 0.0:
            d = d + weight_decay * p[i]
        if momentum != 0.0:
            v[i] = momentum * v[i] + d
            if nesterov:
                d = d + momentum * v[i]
            else:
                d = v[i]
        p[i] = p[i] - lr * d


@cuda.jit(cache=True)
def _adam(p, g, m, v, beta1, beta2, eps, l2, step_size, sqrt_bias2, decay, gscale):
    # l2: the L2 weight decay added to the gradient (Adam), 0 for AdamW; decay: AdamW's
    # decoupled factor 1 - lr * weight_decay, 1 for Adam
    i = cuda.grid(1)
    if i < p.shape[0]:
        d = g[i] * float32(gscale[0])
        if decay != 1.0:
            p[i] = p[i] * decay
        if l2 != 0.0:
            d = d + l2 * p[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * d
        v[i] = beta2 * v[i] + (1.0 - beta2) * d * d
        p[i] = p[i] - step_size * (m[i] / (math.sqrt(v[i]) / sqrt_bias2 + eps))


def sgd_update(p, g, v, lr, momentum, weight_decay, nesterov, gscale, stream=0, plan=None):
    """gscale: (1,) float64 device array, the gradient's scale (clip_scale; 1: none)."""
    launch(_sgd, *_grid(p.shape[0]), (p, g, v, lr, momentum, weight_decay, nesterov, gscale),
           stream, plan)


def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step, gscale,
                stream=0, plan=None):
    """step counts from 1; the bias corrections are scalars computed here on the host.
    gscale: as sgd_update's."""
    step_size = lr / (1.0 - beta1 ** step)
    sqrt_bias2 = math.sqrt(1.0 - beta2 ** step)
    launch(_adam, *_grid(p.shape[0]), (p, g, m, v, beta1, beta2, eps,
                                       0.0 if decoupled else weight_decay, step_size,
                                       sqrt_bias2, 1.0 - lr * weight_decay if decoupled else 1.0,
                                       gscale), stream, plan)


@cuda.jit(cache=True)
def _unit_square_sums(dW, db, out, offset):
    o = cuda.grid(1)
    if o < dW.shape[0]:
        s = 0.0
        for j in range(dW.shape[1]):
            x = float64(dW[o, j])
            s += x * x
        b = float64(db[o])
        out[offset + o] = s + b * b


def unit_square_sums(dW, db, out, offset, stream=0, plan=None):
    """out[offset + o] = sum_j dW[o, j]^2 + db[o]^2 (float64) for each unit o of a layer
    (the CPU's optim.unit_square_sums, summed in another order)."""
    launch(_unit_square_sums, *_grid(dW.shape[0]), (dW, db, out, offset), stream, plan)


_scale_of = cuda.jit(device=True, inline=True)(codes.clip_scale)


@cuda.jit(cache=True)
def _clip_scale(unit_sq, max_norm, gscale):
    if cuda.grid(1) == 0:
        total = 0.0
        for i in range(unit_sq.shape[0]):
            total += unit_sq[i]
        gscale[0] = _scale_of(total, max_norm)
        gscale[1] = math.sqrt(total)


def clip_scale(unit_sq, max_norm, gscale, stream=0, plan=None):
    """gscale[0] = min(1, max_norm / (norm + 1e-6)) and gscale[1] = norm, the norm of the
    gradient whose units' squared sums are unit_sq (as the CPU's optim.clip_coefficient)."""
    launch(_clip_scale, 1, 1, (unit_sq, max_norm, gscale), stream, plan)


@cuda.jit(cache=True)
def _fill(x, value):
    i = cuda.grid(1)
    if i < x.shape[0]:
        x[i] = value


def fill(x, value, stream=0, plan=None):
    """x[:] = value for a 1-D device array."""
    launch(_fill, *_grid(x.shape[0]), (x, value), stream, plan)


@cuda.jit(cache=True)
def _add_scaled(y, x, alpha):
    i = cuda.grid(1)
    if i < y.shape[0]:
        y[i] += alpha * x[i]


def add_scaled(y, x, alpha, stream=0, plan=None):
    """y += alpha * x for 1-D device arrays (the L2 gradient dW += l2 * W)."""
    launch(_add_scaled, *_grid(y.shape[0]), (y, x, alpha), stream, plan)
