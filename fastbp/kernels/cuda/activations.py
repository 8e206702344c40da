"""Activations and derivatives as CUDA device functions and element-wise kernels.

Codes and formulas as fastbp.kernels.cpu.activations (0 identity, 1 relu, 2 leaky_relu,
3 sigmoid, 4 tanh, 5 gelu with the tanh approximation).  f' uses the stored output A where
that is exact (relu, sigmoid, tanh) and the pre-activation Z otherwise.
"""
import math

from numba import cuda

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715


@cuda.jit(device=True, inline=True)
def act(z, code, slope):
    """f(z) for one value."""
    if code == 1:
        return z if z > 0 else 0.0 * z
    if code == 2:
        return z if z > 0 else slope * z
    if code == 3:
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)
    if code == 4:
        return math.tanh(z)
    if code == 5:
        return 0.5 * z * (1.0 + math.tanh(_GELU_C * (z + _GELU_K * z * z * z)))
    return z


@cuda.jit(device=True, inline=True)
def act_grad(z, a, code, slope):
    """f'(z) for one value, given z and a = f(z)."""
    if code == 1:
        return 1.0 if z > 0 else 0.0
    if code == 2:
        return 1.0 if z > 0 else slope
    if code == 3:
        return a * (1.0 - a)
    if code == 4:
        return 1.0 - a * a
    if code == 5:
        t = math.tanh(_GELU_C * (z + _GELU_K * z * z * z))
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_K * z * z)
    return 1.0


@cuda.jit(cache=True)
def activation_forward(Z, A, code, slope):
    """A = f(Z) for 2-D (rows, cols) arrays; one thread per element (2-D grid)."""
    i, j = cuda.grid(2)
    if i < Z.shape[0] and j < Z.shape[1]:
        A[i, j] = act(Z[i, j], code, slope)


@cuda.jit(cache=True)
def activation_backward(G, Z, A, code, slope):
    """G *= f'(Z) in place; one thread per element (2-D grid)."""
    i, j = cuda.grid(2)
    if i < G.shape[0] and j < G.shape[1]:
        G[i, j] = G[i, j] * act_grad(Z[i, j], A[i, j], code, slope)
