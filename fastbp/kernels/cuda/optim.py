"""Optimizer updates over the flat parameter buffer on the GPU: one launch updates every
parameter.  Formulas and operation order as fastbp.kernels.cpu.optim (torch.optim)."""
import math

from numba import cuda

from .launch import launch

THREADS = 256


def _grid(n):
    return (n + THREADS - 1) // THREADS, THREADS


@cuda.jit(cache=True)
def _sgd(p, g, v, lr, momentum, weight_decay, nesterov):
    i = cuda.grid(1)
    if i < p.shape[0]:
        d = g[i]
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
def _adam(p, g, m, v, beta1, beta2, eps, weight_decay, decoupled, step_size, sqrt_bias2,
          decay):
    i = cuda.grid(1)
    if i < p.shape[0]:
        d = g[i]
        if decoupled:
            p[i] = p[i] * decay
        elif weight_decay != 0.0:
            d = d + weight_decay * p[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * d
        v[i] = beta2 * v[i] + (1.0 - beta2) * d * d
        p[i] = p[i] - step_size * (m[i] / (math.sqrt(v[i]) / sqrt_bias2 + eps))


def sgd_update(p, g, v, lr, momentum, weight_decay, nesterov, stream=0, plan=None):
    launch(_sgd, *_grid(p.shape[0]), (p, g, v, lr, momentum, weight_decay, nesterov),
           stream, plan)


def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step, stream=0,
                plan=None):
    """step counts from 1; the bias corrections are scalars computed here on the host."""
    step_size = lr / (1.0 - beta1 ** step)
    sqrt_bias2 = math.sqrt(1.0 - beta2 ** step)
    launch(_adam, *_grid(p.shape[0]), (p, g, m, v, beta1, beta2, eps, weight_decay,
                                       decoupled, step_size, sqrt_bias2,
                                       1.0 - lr * weight_decay), stream, plan)


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
