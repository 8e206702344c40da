"""Dropout on the GPU: the CPU's masks (codes.dropout_kept over the keys of
kernels/cpu/dropout.stream, computed on the host), so a device run drops the same units.

    out = A * mask / (1 - p)        forward (out: D), and backward in place (A = out = G)
"""
import numpy as np
from numba import cuda

from .. import codes
from .launch import launch

_kept = cuda.jit(device=True, inline=True)(codes.dropout_kept)
STREAM_ARG = 2          # the keys' position among _dropout's arguments (set every step)
BLOCK = (32, 8)


@cuda.jit(cache=True)
def _dropout(A, out, s, row0, threshold, scale):
    j, i = cuda.grid(2)
    m, n = A.shape
    if i < m and j < n:
        if _kept(s, (row0 + i) * n + j, threshold):
            out[i, j] = A[i, j] * scale
        else:
            out[i, j] = 0


def dropout(A, out, s, row0, p, stream=0, plan=None):
    """out = A * mask / (1 - p) for (m, n) float32 device arrays (out may be A), mask of the
    batch's rows row0:row0 + m from keys s (kernels/cpu/dropout.stream)."""
    m, n = A.shape
    grid = ((n + BLOCK[0] - 1) // BLOCK[0], (m + BLOCK[1] - 1) // BLOCK[1])
    launch(_dropout, grid, BLOCK, (A, out, int(s), int(row0), codes.dropout_threshold(p),
                                   np.float32(1.0 / (1.0 - p))), stream, plan)
