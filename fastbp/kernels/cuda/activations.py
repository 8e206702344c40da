"""Activations and derivatives as CUDA device functions and element-wise kernels.

Codes and formulas as fastbp.kernels.cpu.activations (0 identity, 1 relu, 2 leaky_relu,
3 sigmoid, 4 tanh, 5 gelu with the tanh approximation).  f' uses the stored output A where
that is exact (relu, sigmoid, tanh) and the pre-activation Z otherwise.
"""
import math

import numpy as np
from numba import cuda, float32

# float32 constants: a Python float is a float64 in Numba, and one of them in an
# expression turns the whole expression into float64 arithmetic (converted each way),
# which runs at a fraction of float32's rate, 1/64 on consumer GPUs.  With float64
# operands (the binary cross-entropy's sigmoid) these exact constants promote exactly.
_F = np.float32
_ZERO, _HALF, _ONE, _THREE = _F(0.0), _F(0.5), _F(1.0), _F(3.0)
_GELU_C = _F(math.sqrt(2.0 / math.pi))
_GELU_K = _F(0.044715)
_GELU_ZMIN, _GELU_ZMAX = _F(-20.0), _F(20.0)   # z^3 overflows float32 past |z| ~ 7e12


@cuda.jit(device=True, inline=True)
def act(z, code, slope):
    """f(z) for one value (float32 z: float32 arithmetic throughout; slope of z's type)."""
    if code == 1:
        return z if z > _ZERO else _ZERO * z
    if code == 2:
        return z if z > _ZERO else slope * z
    if code == 3:
        if z >= _ZERO:
            return _ONE / (_ONE + math.exp(-z))
        e = math.exp(z)
        return e / (_ONE + e)
    if code == 4:
        return math.tanh(z)
    if code == 5:
        zc = min(max(z, _GELU_ZMIN), _GELU_ZMAX)
        return _HALF * z * (_ONE + math.tanh(_GELU_C * (zc + _GELU_K * zc * zc * zc)))
    return z


@cuda.jit(device=True, inline=True)
def act_grad(z, a, code, slope):
    """f'(z) for one value, given z and a = f(z) (as act: float32 in, float32 out)."""
    if code == 1:
        return _ONE if z > _ZERO else _ZERO
    if code == 2:
        return _ONE if z > _ZERO else slope
    if code == 3:
        return a * (_ONE - a)
    if code == 4:
        return _ONE - a * a
    if code == 5:
        zc = min(max(z, _GELU_ZMIN), _GELU_ZMAX)
        t = math.tanh(_GELU_C * (zc + _GELU_K * zc * zc * zc))
        return (_HALF * (_ONE + t)
                + _HALF * z * (_ONE - t * t) * _GELU_C * (_ONE + _THREE * _GELU_K * zc * zc))
    return _ONE


@cuda.jit(cache=True)
def activation_forward(Z, A, code, slope):
    """A = f(Z) for 2-D (rows, cols) float32 arrays; one thread per element (2-D grid)."""
    i, j = cuda.grid(2)
    if i < Z.shape[0] and j < Z.shape[1]:
        A[i, j] = act(Z[i, j], code, float32(slope))


@cuda.jit(cache=True)
def activation_backward(G, Z, A, code, slope):
    """G *= f'(Z) in place (float32); one thread per element (2-D grid)."""
    i, j = cuda.grid(2)
    if i < G.shape[0] and j < G.shape[1]:
        G[i, j] = G[i, j] * act_grad(Z[i, j], A[i, j], code, float32(slope))
