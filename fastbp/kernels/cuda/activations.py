"""Activations as CUDA device functions and element-wise kernels.

The formulas are fastbp.kernels.codes', compiled for the GPU with the primitives below
(float32 arithmetic for float32 values: every constant is a float32).  ``act(z, code,
slope)`` is f(z); ``act_back(g, z, a, code, slope)`` is g * f'(z), from z or from the
stored output a = f(z) as the registry says.
"""
import math

import numpy as np
from numba import cuda, float32

from .. import codes

# float32 constants: a Python float is a float64 in Numba, and one of them in an
# expression turns the whole expression into float64 arithmetic (converted each way),
# which runs at a fraction of float32's rate, 1/64 on consumer GPUs.  With float64
# operands (the binary cross-entropy's sigmoid) these exact constants promote exactly.
_F = np.float32
_ZERO, _HALF, _ONE, _THREE = _F(0.0), _F(0.5), _F(1.0), _F(3.0)
_GELU_C = _F(codes.GELU_C)
_GELU_K = _F(codes.GELU_K)
_GELU_ZMIN, _GELU_ZMAX = _F(-20.0), _F(20.0)   # z^3 overflows float32 past |z| ~ 7e12


@cuda.jit(device=True, inline=True)
def like(x, c):
    return float32(c)


@cuda.jit(device=True, inline=True)
def exp(x):
    return math.exp(x)


@cuda.jit(device=True, inline=True)
def log1p(x):
    return math.log1p(x)


@cuda.jit(device=True, inline=True)
def sigmoid(z):
    if z >= _ZERO:
        return _ONE / (_ONE + math.exp(-z))
    e = math.exp(z)
    return e / (_ONE + e)


@cuda.jit(device=True, inline=True)
def tanh(x):
    return math.tanh(x)


@cuda.jit(device=True, inline=True)
def gelu(z):
    zc = min(max(z, _GELU_ZMIN), _GELU_ZMAX)
    return _HALF * z * (_ONE + math.tanh(_GELU_C * (zc + _GELU_K * zc * zc * zc)))


@cuda.jit(device=True, inline=True)
def gelu_grad(z):
    zc = min(max(z, _GELU_ZMIN), _GELU_ZMAX)
    t = math.tanh(_GELU_C * (zc + _GELU_K * zc * zc * zc))
    return (_HALF * (_ONE + t)
            + _HALF * z * (_ONE - t * t) * _GELU_C * (_ONE + _THREE * _GELU_K * zc * zc))


CUDA_PRIMITIVES = {"like": like, "exp": exp, "log1p": log1p, "sigmoid": sigmoid,
                   "tanh": tanh, "gelu": gelu, "gelu_grad": gelu_grad}


def _device(fn):
    return cuda.jit(device=True, inline=True)(codes.make_formula(fn, CUDA_PRIMITIVES))


def _act_chain(table):
    """act(z, code, slope) over the activations in table (any other code: z)."""
    if not table:
        @cuda.jit(device=True, inline=True)
        def act(z, code, slope):
            return z
        return act
    code_here, f, rest = table[0].code, _device(table[0].forward), _act_chain(table[1:])

    @cuda.jit(device=True, inline=True)
    def act(z, code, slope):
        if code == code_here:
            return f(z, slope)
        return rest(z, code, slope)
    return act


def _back_chain(table):
    """act_back(g, z, a, code, slope) = g * f'(z) over the activations in table (any
    other code: g)."""
    if not table:
        @cuda.jit(device=True, inline=True)
        def act_back(g, z, a, code, slope):
            return g
        return act_back
    entry = table[0]
    code_here, df, rest = entry.code, _device(entry.backward), _back_chain(table[1:])
    if entry.grad_from == "a":
        @cuda.jit(device=True, inline=True)
        def act_back(g, z, a, code, slope):
            if code == code_here:
                return df(g, a, slope)
            return rest(g, z, a, code, slope)
    else:
        @cuda.jit(device=True, inline=True)
        def act_back(g, z, a, code, slope):
            if code == code_here:
                return df(g, z, slope)
            return rest(g, z, a, code, slope)
    return act_back


act = _act_chain(codes.ACTIVATIONS)
act_back = _back_chain(codes.ACTIVATIONS)


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
        G[i, j] = act_back(G[i, j], Z[i, j], A[i, j], code, float32(slope))
