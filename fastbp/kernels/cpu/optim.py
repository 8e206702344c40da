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

from numba import njit, prange

BLOCK = 4096


@njit(parallel=True, cache=True, fastmath={"contract"})
def sgd_update(p, g, v, lr, momentum, weight_decay, nesterov):
    """p, g, v: (P,) flat parameter, gradient and momentum buffers. Updates p and v in place."""
    n = p.shape[0]
    nblk = (n + BLOCK - 1) // BLOCK
    for blk in prange(nblk):
        for i in range(blk * BLOCK, min((blk + 1) * BLOCK, n)):
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


@njit(parallel=True, cache=True, fastmath={"contract"})
def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
    """p, g, m, v: (P,) flat buffers; step is 1 on the first call. Updates p, m, v in place."""
    n = p.shape[0]
    bias1 = 1.0 - beta1 ** step
    bias2 = 1.0 - beta2 ** step
    step_size = lr / bias1
    sqrt_bias2 = math.sqrt(bias2)
    decay = 1.0 - lr * weight_decay
    nblk = (n + BLOCK - 1) // BLOCK
    for blk in prange(nblk):
        for i in range(blk * BLOCK, min((blk + 1) * BLOCK, n)):
            d = g[i]
            if decoupled:
                p[i] = p[i] * decay
            elif weight_decay != 0.0:
                d = d + weight_decay * p[i]
            m[i] = beta1 * m[i] + (1.0 - beta1) * d
            v[i] = beta2 * v[i] + (1.0 - beta2) * d * d
            denom = math.sqrt(v[i]) / sqrt_bias2 + eps
            p[i] = p[i] - step_size * (m[i] / denom)
