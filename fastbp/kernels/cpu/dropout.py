"""Dropout (inverted) with masks from a counter-based hash (CPU, Numba).

    forward    D = A * m / (1 - p)          m[r, j] = keep(seed, step, layer, row, unit)
    backward   dL/dA = dL/dD * m / (1 - p)

An element's mask bit is a hash of (seed, optimizer step, layer, its row in the batch, its
unit), nothing else: no generator state, so any thread, any rank of an MPI run (given its
rows' offset in the batch) and a resumed run draw the same mask, and the backward pass
recomputes it instead of storing it.  Per layer and step, SplitMix64 makes two 32-bit keys
(stream); each element's bit is codes.dropout_kept, the formula the CUDA kernels share.
"""
import numpy as np
from numba import njit

from .. import codes

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def _mix(z):
    """SplitMix64's finaliser: a bijection of uint64 whose output bits all depend on every
    input bit."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def stream(seed, step, layer):
    """The keys of one layer's mask at one optimizer step: an int64 holding two 32-bit keys."""
    z = _mix(np.uint64(seed) + _GOLDEN)
    z = _mix(z ^ (np.uint64(step) * _GOLDEN))
    return np.int64(_mix(z ^ (np.uint64(layer) + np.uint64(1)) * _M1))


_threshold = njit(cache=True, inline="always")(codes.dropout_threshold)
_kept = njit(cache=True, inline="always")(codes.dropout_kept)


@njit(cache=True, _nrt=False)
def dropout_forward(A, D, s, row0, p):
    """D = A * mask / (1 - p) for A, D (m, n) C-contiguous (the batch's rows row0:row0 + m),
    mask from stream s (stream()); the scale in A's dtype, as torch's."""
    t = _threshold(p)
    scale = A.dtype.type(1.0 / (1.0 - p))
    zero = A.dtype.type(0.0)
    m, n = A.shape
    for r in range(m):
        base = (row0 + r) * n
        for j in range(n):
            D[r, j] = A[r, j] * scale if _kept(s, base + j, t) else zero


@njit(cache=True, _nrt=False)
def dropout_backward(G, s, row0, p):
    """G = G * mask / (1 - p) in place: dL/dA from dL/dD (the forward's mask, recomputed).
    Its own loop over one array: dropout_forward(G, G, ...) gives the same values, but two
    arguments that may alias kept LLVM from vectorising it (160 against 40 us for 128 x 512
    float32)."""
    t = _threshold(p)
    scale = G.dtype.type(1.0 / (1.0 - p))
    zero = G.dtype.type(0.0)
    m, n = G.shape
    for r in range(m):
        base = (row0 + r) * n
        g = G[r]
        for j in range(n):
            g[j] = g[j] * scale if _kept(s, base + j, t) else zero


@njit(cache=True)
def dropout_mask(seed, step, layer, row0, m, n, p):
    """The (m, n) boolean mask (True: kept) of rows row0:row0 + m of a layer n wide
    (what dropout_forward applies, for tests and users)."""
    s = stream(seed, step, layer)
    t = _threshold(p)
    out = np.empty((m, n), np.bool_)
    for r in range(m):
        for j in range(n):
            out[r, j] = _kept(s, (row0 + r) * n + j, t)
    return out
