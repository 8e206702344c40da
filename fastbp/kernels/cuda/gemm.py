"""Matrix product with fused epilogues on the GPU (numba.cuda), float32.

    C (M, N) = op(A) (M, K) @ op(B) (K, N),  op(X) = X^T when trans_x

Same contract as fastbp.kernels.cpu.gemm.gemm (epilogues EPI_NONE, EPI_BIAS_ACT,
EPI_ACT_GRAD), without rowsum: the bias gradient is ``column_sum``.

Shared-memory tiling with register blocking: a block of 16 x 16 threads computes a
64 x 64 tile of C, each thread a 4 x 4 sub-tile (rows ty + 16 r, columns tx + 16 c, so
that neighbouring threads touch neighbouring columns: coalesced stores).  K advances in
steps of 16: every thread loads 4 elements of the op(A) tile and 4 of the op(B) tile into
shared memory (zero outside the matrix), all threads synchronise, accumulate, synchronise
again.  No thread returns early: out-of-range threads still take part in the loads and the
barriers, and only the final stores are guarded.
"""
from numba import cuda, float32

from .activations import act, act_grad

EPI_NONE, EPI_BIAS_ACT, EPI_ACT_GRAD = 0, 1, 2
BM = 64
BN = 64
BK = 16
THREADS = 16   # per side of the thread block
TM = 4         # rows of C per thread
TN = 4         # columns of C per thread


@cuda.jit
def _gemm_kernel(A, trans_a, B, trans_b, C, M, N, K, epilogue, bias, code, slope, Aout,
                 Zsrc, Asrc):
    sA = cuda.shared.array((BK, BM), float32)   # sA[k, i] = op(A)[row0 + i, k0 + k]
    sB = cuda.shared.array((BK, BN), float32)   # sB[k, j] = op(B)[k0 + k, col0 + j]
    acc = cuda.local.array((TM, TN), float32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * THREADS + tx
    row0 = cuda.blockIdx.y * BM
    col0 = cuda.blockIdx.x * BN
    for r in range(TM):
        for c in range(TN):
            acc[r, c] = 0.0
    for k0 in range(0, K, BK):
        # each of the 256 threads loads 4 of the 16 x 64 elements of each tile
        for e in range(4):
            idx = tid + e * THREADS * THREADS     # 0 .. 1023
            kk = idx // BM
            ii = idx - kk * BM
            gi = row0 + ii
            gk = k0 + kk
            v = float32(0.0)
            if gi < M and gk < K:
                v = A[gk, gi] if trans_a else A[gi, gk]
            sA[kk, ii] = v
            gj = col0 + ii
            w = float32(0.0)
            if gj < N and gk < K:
                w = B[gj, gk] if trans_b else B[gk, gj]
            sB[kk, ii] = w
        cuda.syncthreads()
        for kk in range(BK):
            for r in range(TM):
                a = sA[kk, ty + THREADS * r]
                for c in range(TN):
                    acc[r, c] += a * sB[kk, tx + THREADS * c]
        cuda.syncthreads()
    for r in range(TM):
        i = row0 + ty + THREADS * r
        for c in range(TN):
            j = col0 + tx + THREADS * c
            if i < M and j < N:
                v = acc[r, c]
                if epilogue == EPI_BIAS_ACT:
                    v += bias[j]
                    C[i, j] = v
                    Aout[i, j] = act(v, code, slope)
                elif epilogue == EPI_ACT_GRAD:
                    C[i, j] = v * act_grad(Zsrc[i, j], Asrc[i, j], code, slope)
                else:
                    C[i, j] = v


def gemm(A, trans_a, B, trans_b, C, epilogue, bias, code, slope, Aout, Zsrc, Asrc,
         stream=0):
    """Launch the tiled GEMM: device arrays, shapes validated by the caller."""
    M, N = C.shape
    K = A.shape[0] if trans_a else A.shape[1]
    grid = ((N + BN - 1) // BN, (M + BM - 1) // BM)
    _gemm_kernel[grid, (THREADS, THREADS), stream](A, trans_a, B, trans_b, C, M, N, K,
                                                   epilogue, bias, code, slope, Aout, Zsrc,
                                                   Asrc)


@cuda.jit
def _column_sum_kernel(D, out):
    j = cuda.grid(1)
    if j < D.shape[1]:
        s = float32(0.0)
        for i in range(D.shape[0]):
            s += D[i, j]
        out[j] = s


def column_sum(D, out, stream=0):
    """out (N,) = sum over rows of D (M, N): the bias gradient."""
    n = D.shape[1]
    _column_sum_kernel[(n + 127) // 128, 128, stream](D, out)
