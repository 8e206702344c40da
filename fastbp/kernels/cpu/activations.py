"""Element-wise activations and their derivatives (CPU, Numba).

The formulas are fastbp.kernels.codes' (one table for every device); this module supplies
their primitives for the CPU and compiles the row kernels from them:

    activation_forward_rows(Z, A, i0, i1, j0, j1, code, slope)      A = f(Z) on a block
    activation_backward_rows(G, Z, A, i0, i1, j0, j1, code, slope)  G *= f'(Z) on a block
    piecewise_backward_rows(...)       the same for ReLU and leaky ReLU only (the GEMM's
                                       lean epilogue; any other code: nothing)

Kernels work on row ranges of 2-D C-contiguous arrays so that the GEMM can call them on a
tile while it is still in cache; activation_forward / activation_backward call them on
whole arrays.  float32 and float64 values go through versions of exp, tanh, sigmoid and
GELU that vectorise (below: within 3 float32 or 2 float64 ulps of libm).
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from .. import codes
from .linking import num_threads
from ..codes import IDENTITY

_GELU_C = codes.GELU_C
_GELU_K = codes.GELU_K


# ----------------------------------------------------------------------------- float32
# exp, tanh, sigmoid and GELU for float32 values that LLVM vectorises: plain arithmetic in
# float32, no call into libm and no branch (both ways computed, then selected), and
# error_model="numpy" (Numba's default tests every division for zero, which keeps a loop
# scalar).  libm's tanhf/tanh cost ~16 ns a value here, these ~0.5 ns (16 lanes); a
# 784-512-512-10 b128 step with GELU spent more time in tanh than in its products.
# Accuracy against float64 over [-30, 30], tiny and huge values: exp <= 1 ulp, tanh <= 1.2,
# sigmoid <= 2.5 (subnormal results included).  exp_f32 clamps its argument to [-104, 88]
# (0 to about 1.6e38); the functions below reach the upper bound only where their results
# have saturated, and GELU cubes z clamped to [-20, 20] (tanh is +-1 in float32 well
# before that).  The polynomials are Cephes' (S. Moshier): expf's on [-ln2/2, ln2/2] after
# 2^n is split off, tanhf's below |x| = 0.625.
_F = np.float32
_EXP_LO, _EXP_HI = _F(-104.0), _F(88.0)   # exp(-104) < half the least subnormal
_LOG2E, _LN2_HI, _LN2_LO = _F(1.4426950408889634), _F(0.693359375), _F(-2.12194440e-4)
_EXP_P = (_F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3),
          _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1))
_TANH_P = (_F(-5.70498872745e-3), _F(2.06390887954e-2), _F(-5.37397155531e-2),
           _F(1.33314422036e-1), _F(-3.33332819422e-1))
_TANH_SMALL = _F(0.625)
_ONE, _HALF, _TWO, _THREE = _F(1.0), _F(0.5), _F(2.0), _F(3.0)
_GELU_C32, _GELU_K32 = _F(_GELU_C), _F(_GELU_K)
_GELU_ZMIN, _GELU_ZMAX = _F(-20.0), _F(20.0)


@intrinsic
def _float32_with_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of the integer bits."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        low = args[0]
        if bits.bitwidth > 32:
            low = builder.trunc(low, ir.IntType(32))
        return builder.bitcast(low, ir.FloatType())
    return types.float32(bits), codegen


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def exp_f32(x):
    """exp(x), x float32: x = n ln2 + r, exp(r) by a polynomial, times 2^n as two powers of
    two built from their exponent bits (so that results below 2^-126 come out subnormal,
    as expf's do)."""
    x = min(max(x, _EXP_LO), _EXP_HI)
    n = np.floor(x * _LOG2E + _HALF)
    r = x - n * _LN2_HI - n * _LN2_LO
    p0, p1, p2, p3, p4, p5 = _EXP_P
    p = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * r * r + r + _ONE
    k = np.int64(n)
    half = k >> 1
    return (p * _float32_with_bits((half + 127) << 23)
            * _float32_with_bits((k - half + 127) << 23))


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def tanh_f32(x):
    """tanh(x), x float32: an odd polynomial below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1)
    above, with x's sign (tanh(-0.0) = -0.0)."""
    ax = abs(x)
    large = _ONE - _TWO / (exp_f32(_TWO * ax) + _ONE)
    z = x * x
    t0, t1, t2, t3, t4 = _TANH_P
    small = ((((t0 * z + t1) * z + t2) * z + t3) * z + t4) * z * ax + ax
    return math.copysign(small if ax < _TANH_SMALL else large, x)


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def sigmoid_f32(z):
    """1 / (1 + exp(-z)), z float32, from e = exp(-|z|) <= 1 either way."""
    e = exp_f32(-abs(z))
    s = _ONE / (_ONE + e)
    return s if z >= 0 else e * s


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def gelu_f32(z):
    zc = min(max(z, _GELU_ZMIN), _GELU_ZMAX)    # z^3 overflows float32 past |z| ~ 7e12
    return _HALF * z * (_ONE + tanh_f32(_GELU_C32 * (zc + _GELU_K32 * zc * zc * zc)))


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def gelu_grad_f32(z):
    zc = min(max(z, _GELU_ZMIN), _GELU_ZMAX)
    t = tanh_f32(_GELU_C32 * (zc + _GELU_K32 * zc * zc * zc))
    return (_HALF * (_ONE + t)
            + _HALF * z * (_ONE - t * t) * _GELU_C32 * (_ONE + _THREE * _GELU_K32 * zc * zc))


# ----------------------------------------------------------------------------- float64
# The same for float64 values (8 lanes): exp by a degree-12 polynomial after 2^n is split
# off (fdlibm's two-part ln2), tanh by Cephes' rational function below |x| = 0.625.
# Against libm over [-30, 30] and tiny |x|: exp and tanh within 2 ulps; tanh 1.4 against
# 15 ns a value.
_LOG2E64, _LN2_HI64, _LN2_LO64 = 1.4426950408889634, 6.93147180369123816490e-01, \
    1.90821492927058770002e-10
_EXP_C64 = tuple(1.0 / math.factorial(k) for k in range(12, 1, -1))     # 1/12! ... 1/2!
_TANH_P64 = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_TANH_Q64 = (1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)


@intrinsic
def _float64_with_bits(typingctx, bits):
    """The float64 whose bit pattern is the 64-bit integer bits."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 64):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(bits), codegen


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def exp_f64(x):
    """exp(x), x float64, clamped to [-746, 709] (0 to about 8e307); as exp_f32."""
    x = min(max(x, -746.0), 709.0)
    n = np.floor(x * _LOG2E64 + 0.5)
    r = (x - n * _LN2_HI64) - n * _LN2_LO64
    c12, c11, c10, c9, c8, c7, c6, c5, c4, c3, c2 = _EXP_C64
    p = ((((((((((c12 * r + c11) * r + c10) * r + c9) * r + c8) * r + c7) * r + c6) * r
              + c5) * r + c4) * r + c3) * r + c2) * r * r + r + 1.0
    k = np.int64(n)
    half = k >> 1
    return (p * _float64_with_bits((half + 1023) << 52)
            * _float64_with_bits((k - half + 1023) << 52))


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def tanh_f64(x):
    """tanh(x), x float64: x + x z P(z) / Q(z) (z = x^2) below |x| = 0.625,
    1 - 2 / (exp(2|x|) + 1) above, with x's sign."""
    ax = abs(x)
    large = 1.0 - 2.0 / (exp_f64(2.0 * ax) + 1.0)
    z = x * x
    p0, p1, p2 = _TANH_P64
    q0, q1, q2 = _TANH_Q64
    small = ax + ax * z * ((p0 * z + p1) * z + p2) / (((z + q0) * z + q1) * z + q2)
    return math.copysign(small if ax < 0.625 else large, x)


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def sigmoid_f64(z):
    """1 / (1 + exp(-z)), z float64, from e = exp(-|z|) <= 1 either way."""
    e = exp_f64(-abs(z))
    s = 1.0 / (1.0 + e)
    return s if z >= 0 else e * s


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def gelu_f64(z):
    zc = min(max(z, -20.0), 20.0)
    return 0.5 * z * (1.0 + tanh_f64(_GELU_C * (zc + _GELU_K * zc * zc * zc)))


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def gelu_grad_f64(z):
    # d/dz [0.5 z (1 + t)],  t = tanh(u),  u = c (z + k z^3)
    #   = 0.5 (1 + t) + 0.5 z (1 - t^2) c (1 + 3 k z^2)
    zc = min(max(z, -20.0), 20.0)
    t = tanh_f64(_GELU_C * (zc + _GELU_K * zc * zc * zc))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_K * zc * zc)


# ----------------------------------------------------------------------------- any dtype
# The scalar functions the kernels call: the float32 versions above for float32 values,
# the float64 ones for the rest (Numba picks one by the argument's type when it compiles a
# caller: overload).  exp_scalar keeps libm's exp for float64 (the cross-entropy's rows:
# ten classes are too few for vectors to pay).  Plain Python, they are the float64 ones.
def exp_scalar(z):
    return math.exp(z)


def sigmoid_scalar(z):
    return sigmoid_f64(z)


def tanh_scalar(z):
    return tanh_f64(z)


def gelu_scalar(z):
    return gelu_f64(z)


def gelu_grad_scalar(z):
    return gelu_grad_f64(z)


@overload(exp_scalar, inline="always")
def _exp_scalar_by_type(z):
    if z == types.float32:
        return lambda z: exp_f32(z)
    return lambda z: math.exp(z)


@overload(sigmoid_scalar, inline="always")
def _sigmoid_scalar_by_type(z):
    if z == types.float32:
        return lambda z: sigmoid_f32(z)
    return lambda z: sigmoid_f64(z)


@overload(tanh_scalar, inline="always")
def _tanh_scalar_by_type(z):
    if z == types.float32:
        return lambda z: tanh_f32(z)
    return lambda z: tanh_f64(z)


@overload(gelu_scalar, inline="always")
def _gelu_scalar_by_type(z):
    if z == types.float32:
        return lambda z: gelu_f32(z)
    return lambda z: gelu_f64(z)


@overload(gelu_grad_scalar, inline="always")
def _gelu_grad_scalar_by_type(z):
    if z == types.float32:
        return lambda z: gelu_grad_f32(z)
    return lambda z: gelu_grad_f64(z)


# ----------------------------------------------------------------------------- kernels
# The formulas of fastbp.kernels.codes compiled for the CPU: its primitives replaced by the
# ones above, inlined into the loops below at Numba's level (so the loops vectorise).
def like(x, c):
    return c


@overload(like, inline="always")
def _like_by_type(x, c):
    if x == types.float32:
        return lambda x, c: np.float32(c)
    return lambda x, c: np.float64(c)


CPU_PRIMITIVES = {"like": like, "exp": exp_scalar, "log1p": math.log1p, "sigmoid": sigmoid_scalar,
                  "tanh": tanh_scalar, "gelu": gelu_scalar, "gelu_grad": gelu_grad_scalar}


def _compiled(fn):
    return njit(inline="always")(codes.make_formula(fn, CPU_PRIMITIVES))


def _forward_chain(table):
    """rows(Z, A, i0, i1, j0, j1, code, slope): A[i0:i1, j0:j1] = f(Z[...]) for the
    activations in table (any other code: nothing).  One test of the code per block, then
    plain loops over contiguous row slices whose index starts at 0 (LLVM drops Numba's
    negative-index handling and vectorises them)."""
    if not table:
        @njit(inline="always")
        def rows(Z, A, i0, i1, j0, j1, code, slope):
            return
        return rows
    code_here, f, rest = table[0].code, _compiled(table[0].forward), _forward_chain(table[1:])

    @njit(inline="always")
    def rows(Z, A, i0, i1, j0, j1, code, slope):
        if code == code_here:
            for i in range(i0, i1):
                z, a = Z[i, j0:j1], A[i, j0:j1]
                for j in range(z.shape[0]):
                    a[j] = f(z[j], slope)
        else:
            rest(Z, A, i0, i1, j0, j1, code, slope)
    return rows


@njit(inline="always")
def _stored_output(Z, A):
    return A


@njit(inline="always")
def _pre_activation(Z, A):
    return Z


def _backward_chain(table):
    """rows(G, Z, A, i0, i1, j0, j1, code, slope): G[i0:i1, j0:j1] *= f'(Z) in place for
    the activations in table, from Z or from the stored output A (grad_from)."""
    if not table:
        @njit(inline="always")
        def rows(G, Z, A, i0, i1, j0, j1, code, slope):
            return
        return rows
    act = table[0]
    code_here, df, rest = act.code, _compiled(act.backward), _backward_chain(table[1:])
    source = _stored_output if act.grad_from == "a" else _pre_activation

    @njit(inline="always")
    def rows(G, Z, A, i0, i1, j0, j1, code, slope):
        if code == code_here:
            X = source(Z, A)
            for i in range(i0, i1):
                g, x = G[i, j0:j1], X[i, j0:j1]
                for j in range(g.shape[0]):
                    g[j] = df(g[j], x[j], slope)
        else:
            rest(G, Z, A, i0, i1, j0, j1, code, slope)
    return rows


# Every activation, and only the piecewise-linear ones (the GEMM's lean epilogue, which
# compiles without the vectorised exp, tanh and GELU).
activation_forward_rows = _forward_chain(codes.ACTIVATIONS)
activation_backward_rows = _backward_chain(codes.ACTIVATIONS)
_PIECEWISE = tuple(a for a in codes.ACTIVATIONS if a.piecewise_linear and a.code != IDENTITY)
piecewise_backward_rows = _backward_chain(_PIECEWISE)


@njit(parallel=True, cache=True)
def activation_forward(Z, A, code, slope):
    """A = f(Z) for 2-D (rows, cols) arrays; rows split across threads in fixed blocks."""
    m, n = Z.shape
    if num_threads() < 2:           # no parallel region on one thread (runtime.py: fork)
        activation_forward_rows(Z, A, 0, m, 0, n, code, slope)
        return
    nblocks = (m + 63) // 64
    for blk in prange(nblocks):
        i0 = blk * 64
        activation_forward_rows(Z, A, i0, min(i0 + 64, m), 0, n, code, slope)


@njit(parallel=True, cache=True)
def activation_backward(G, Z, A, code, slope):
    """G *= f'(Z) in place for 2-D (rows, cols) arrays; A = f(Z) is the stored output."""
    m, n = G.shape
    if num_threads() < 2:
        activation_backward_rows(G, Z, A, 0, m, 0, n, code, slope)
        return
    nblocks = (m + 63) // 64
    for blk in prange(nblocks):
        i0 = blk * 64
        activation_backward_rows(G, Z, A, i0, min(i0 + 64, m), 0, n, code, slope)
