"""Matrix products of a dense layer (CPU, Numba), with fused epilogues.

Backprop needs three layouts (rows are examples, W is (out, in) like torch.nn.Linear):

    forward        Z  = A_prev W^T + b        "NT"   A_prev (b, in),  W (out, in)
    weight grad    dW = Delta^T A_prev        "TN"   Delta (b, out), A_prev (b, in)
    data grad      G  = (Delta W) * f'(Z_prev) "NN"  Delta (b, out), W (out, in)

The kernel computes C (M, N) = op(A) (M, K) @ B (K, N) with B always row-major (K, N): the
"T" of the forward product is absorbed by packing W^T once into caller-owned workspace
(see ``pack_transpose``), and the "T" of the weight gradient by reading A column-wise
(``trans_a``).  The inner loop always streams a contiguous row of B and of C, which LLVM
vectorises.  The epilogue runs on each tile of C while it is still in cache:

    EPI_NONE      C = acc
    EPI_BIAS_ACT  C = acc + bias[j];  Aout = f(C)            (C holds Z)
    EPI_ACT_GRAD  C = acc * f'(Zsrc)  (f' from Asrc where exact)

``rowsum`` (length M, or length 0 for none) receives sum_k op(A)[i, k]: for the weight
gradient op(A) = Delta^T, so this is the bias gradient db = sum over the batch of Delta,
computed from the values the product loads anyway.

Work is split into fixed tiles of MR rows x NC columns; every element of C is summed over k
in the same order whatever the thread count, so results are bit-identical run to run.
"""
import numpy as np
from numba import njit, prange

from .activations import activation_backward_rows, activation_forward_rows

EPI_NONE, EPI_BIAS_ACT, EPI_ACT_GRAD = 0, 1, 2

MR = 4     # rows of C per tile
NC = 128   # columns of C per tile


@njit(parallel=True, cache=True)
def pack_transpose(W, out):
    """out (K, N) = W^T for W (N, K): packs a weight matrix for the forward product."""
    n, k = W.shape
    nblk = (n + 31) // 32
    for blk in prange(nblk):
        j0 = blk * 32
        j1 = min(j0 + 32, n)
        for kk in range(k):
            for j in range(j0, j1):
                out[kk, j] = W[j, kk]


@njit(cache=True, fastmath={"contract"})
def _tile_product(A, trans_a, B, C, i0, i1, j0, j1):
    """C[i0:i1, j0:j1] = op(A)[i0:i1, :] @ B[:, j0:j1], MR rows at a time."""
    K = B.shape[0]
    for i in range(i0, i1):
        for j in range(j0, j1):
            C[i, j] = 0.0
    if i1 - i0 == MR:
        for k in range(K):
            if trans_a:
                a0 = A[k, i0]
                a1 = A[k, i0 + 1]
                a2 = A[k, i0 + 2]
                a3 = A[k, i0 + 3]
            else:
                a0 = A[i0, k]
                a1 = A[i0 + 1, k]
                a2 = A[i0 + 2, k]
                a3 = A[i0 + 3, k]
            for j in range(j0, j1):
                b = B[k, j]
                C[i0, j] += a0 * b
                C[i0 + 1, j] += a1 * b
                C[i0 + 2, j] += a2 * b
                C[i0 + 3, j] += a3 * b
    else:
        for i in range(i0, i1):
            for k in range(K):
                a = A[k, i] if trans_a else A[i, k]
                for j in range(j0, j1):
                    C[i, j] += a * B[k, j]


@njit(parallel=True, cache=True, fastmath={"contract"})
def gemm(A, trans_a, B, C, epilogue, bias, code, slope, Aout, Zsrc, Asrc, rowsum):
    """C (M, N) = op(A) @ B with a fused epilogue; see the module docstring.

    A: (M, K), or (K, M) when trans_a.  B: (K, N).  C: (M, N).  bias: (N,).
    Aout, Zsrc, Asrc: (M, N) or unused (any shape) per ``epilogue``.  rowsum: (M,) or (0,).
    All C-contiguous and of one dtype; the caller validates shapes.
    """
    M, N = C.shape
    K = B.shape[0]
    n_iblk = (M + MR - 1) // MR
    n_jblk = (N + NC - 1) // NC
    # Tiles ordered column block first so that consecutive tiles (one thread's share)
    # reuse the same panel B[:, j0:j1] from cache.
    for t in prange(n_iblk * n_jblk):
        jb = t // n_iblk
        ib = t - jb * n_iblk
        i0 = ib * MR
        i1 = min(i0 + MR, M)
        j0 = jb * NC
        j1 = min(j0 + NC, N)
        _tile_product(A, trans_a, B, C, i0, i1, j0, j1)
        if jb == 0 and rowsum.shape[0] == M:
            for i in range(i0, i1):
                s = 0.0
                for k in range(K):
                    s += A[k, i] if trans_a else A[i, k]
                rowsum[i] = s
        if epilogue == EPI_BIAS_ACT:
            for i in range(i0, i1):
                for j in range(j0, j1):
                    C[i, j] += bias[j]
            activation_forward_rows(C, Aout, i0, i1, j0, j1, code, slope)
        elif epilogue == EPI_ACT_GRAD:
            activation_backward_rows(C, Zsrc, Asrc, i0, i1, j0, j1, code, slope)


@njit(parallel=True, cache=True)
def column_sum(D, out):
    """out (N,) = sum over rows of D (M, N): the bias gradient db = sum_i Delta[i, :]."""
    m, n = D.shape
    nblk = (n + 63) // 64
    for blk in prange(nblk):
        j0 = blk * 64
        j1 = min(j0 + 64, n)
        for j in range(j0, j1):
            out[j] = 0.0
        for i in range(m):
            for j in range(j0, j1):
                out[j] += D[i, j]
