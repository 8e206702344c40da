"""Matrix product with fused epilogues on the GPU (numba.cuda), float32.

    C (M, N) = op(A) (M, K) @ op(B) (K, N),  op(X) = X^T when trans_x

Same contract as fastbp.kernels.cpu.gemm.gemm (epilogues EPI_NONE, EPI_BIAS_ACT,
EPI_ACT_GRAD), without rowsum: the bias gradient is ``column_sum``.

Register-blocked SGEMM.  A block of 16 x 16 threads computes a BM x BN tile of C; each
thread owns TM x TN elements of it, in runs of 4 consecutive rows and 4 consecutive
columns (rows ty*4 + r, plus BM/2 + ty*4 + r when TM = 8; columns likewise), so that the
operands it reads from shared memory each step are 16-byte loads.  K advances BK = 8 at a
time: the op(A) and op(B) slices live in two shared-memory buffers, and while one is
multiplied the next slice is loaded from global memory into registers and then stored
into the other buffer, so each slice costs one barrier.  Shared rows are padded by 4
floats: the transposed stores of a warp then fall in distinct banks.  Loads outside the
matrix read as zero and only the final stores are guarded, so no thread leaves before a
barrier.

Two tile shapes, compiled from one template (_make_kernel): 128 x 128 (8 x 8 per thread,
216 registers, one block per multiprocessor) and 64 x 64 (4 x 4, 126 registers, two).
The MLP products are too small to fill an H100's 132 multiprocessors with output tiles
alone (1024 x 512 is 32 tiles of 128 x 128), so K is split as well (split-K): the blocks
of one tile each sum a contiguous K range into a workspace, and _split_k_sum adds the
parts in a fixed order (deterministic) and applies the epilogue.  choose_tiling picks
the tile and the split count.

On an H100 (tools/cuda_gemm_lab.py, 2026-11-24, TFLOP/s, cuBLAS with TF32 off in
brackets): 4096^3 26.3 (51.6); 1024x784 @ (512x784)^T 16.2 (31.4) with 64 x 64 tiles and
K in 2 parts, against 14.0 unsplit and 5.7 on 128 x 128 tiles unsplit; dW (1024x512)^T @
1024x512 13.8 (26.2) in 4 parts, against 6.8 unsplit; the products with 10 outputs or
inputs, 0.7 (1.2-1.3) against 0.1-0.3.  Tried and dropped: K steps of 16 or 32 (more
registers, local memory on 64 x 64: slower on every shape), splits that give 128 x 128
tiles more blocks than one wave (two waves: 9.7 against 14 on the 1024x784 product).
Earlier (2026-11-23): the first kernel (64 x 64 tiles, 4 x 4 strided per thread, one
shared buffer, K loop not unrolled) gave 11.5 on 4096^3; capping registers at 128 for
two blocks of 128 x 128 per multiprocessor spilled and was slower (22).
"""
import functools

import numpy as np
from numba import cuda, float32

from .activations import act, act_back
from .launch import launch

EPI_NONE, EPI_BIAS_ACT, EPI_ACT_GRAD = 0, 1, 2
BK = 8
THREADS = 16   # per side of the thread block


@cuda.jit(device=True, inline=True)
def store_epilogue(C, i, j, v, epilogue, bias, code, slope, Aout, Zsrc, Asrc):
    """C[i, j] = v (EPI_NONE); C[i, j] = v + bias[j], Aout[i, j] = f(C[i, j])
    (EPI_BIAS_ACT); C[i, j] = v * f'(Zsrc[i, j]) (EPI_ACT_GRAD).  All in float32 (slope
    is converted once)."""
    if epilogue == EPI_BIAS_ACT:
        v += bias[j]
        C[i, j] = v
        Aout[i, j] = act(v, code, float32(slope))
    elif epilogue == EPI_ACT_GRAD:
        C[i, j] = act_back(v, Zsrc[i, j], Asrc[i, j], code, float32(slope))
    else:
        C[i, j] = v


def _make_kernel(BM, BN):
    """The GEMM kernel for a BM x BN tile (BM, BN in {64, 128}) with 16 x 16 threads."""
    TM, TN = BM // THREADS, BN // THREADS        # elements of C per thread, 4 or 8
    RUN_A, RUN_B = BM // (TM // 4), BN // (TN // 4)   # distance between a thread's runs
    NT = THREADS * THREADS
    LA, LB = BM * BK // NT, BN * BK // NT        # elements of each slice a thread loads
    SA_W, SB_W = BM + 4, BN + 4                  # padded shared rows

    @cuda.jit(device=True, inline=True)
    def slice_fma(sA, sB, buf, kk, tx, ty, acc, fa, fb):
        """acc += op(A)[my rows, k] op(B)[k, my columns] for k = k0 + kk (an outer product)"""
        for r in range(TM):
            fa[r] = sA[buf, kk, (r // 4) * RUN_A + ty * 4 + (r % 4)]
        for c in range(TN):
            fb[c] = sB[buf, kk, (c // 4) * RUN_B + tx * 4 + (c % 4)]
        for r in range(TM):
            for c in range(TN):
                acc[r, c] += fa[r] * fb[c]

    @cuda.jit(device=True, inline=True)
    def load_slice(A, trans_a, B, trans_b, M, N, K, row0, col0, k0, tid, ra, rb):
        """This thread's share of the op(A) and op(B) K-slices at k0, into registers;
        zero outside the matrices.  Element e is (kk, ii) of op(A), (kk, jj) of op(B),
        numbered so that neighbouring threads read neighbouring addresses."""
        for e in range(LA):
            idx = tid + e * NT
            if trans_a:                     # A is (K, M): contiguous along i
                kk = idx // BM
                ii = idx - kk * BM
            else:                           # A is (M, K): contiguous along k
                ii = idx // BK
                kk = idx - ii * BK
            gi = row0 + ii
            gk = k0 + kk
            v = float32(0.0)
            if gi < M and gk < K:
                v = A[gk, gi] if trans_a else A[gi, gk]
            ra[e] = v
        for e in range(LB):
            idx = tid + e * NT
            if trans_b:                     # B is (N, K): contiguous along k
                jj = idx // BK
                kk = idx - jj * BK
            else:                           # B is (K, N): contiguous along j
                kk = idx // BN
                jj = idx - kk * BN
            gj = col0 + jj
            gk = k0 + kk
            w = float32(0.0)
            if gj < N and gk < K:
                w = B[gj, gk] if trans_b else B[gk, gj]
            rb[e] = w

    @cuda.jit(device=True, inline=True)
    def store_slice(sA, sB, buf, trans_a, trans_b, tid, ra, rb):
        """The registers of load_slice into shared buffer buf, transposed to [k, i].

        The (kk, ii) numbering is spelled out here and in load_slice on purpose: moving it
        into a device function returning a tuple took the 128 x 128 kernel from 222 to 242
        registers with 256 bytes of local memory, and the NN layout from 13 to 7 TFLOP/s
        (H100, 2026-11-23)."""
        for e in range(LA):
            idx = tid + e * NT
            if trans_a:
                kk = idx // BM
                ii = idx - kk * BM
            else:
                ii = idx // BK
                kk = idx - ii * BK
            sA[buf, kk, ii] = ra[e]
        for e in range(LB):
            idx = tid + e * NT
            if trans_b:
                jj = idx // BK
                kk = idx - jj * BK
            else:
                kk = idx // BN
                jj = idx - kk * BN
            sB[buf, kk, jj] = rb[e]

    @cuda.jit(cache=True)
    def kernel(A, trans_a, B, trans_b, C, M, N, K, epilogue, bias, code, slope, Aout,
               Zsrc, Asrc, kc, W):
        sA = cuda.shared.array((2, BK, SA_W), float32)   # sA[buf, k, i] = op(A)[row0+i, k0+k]
        sB = cuda.shared.array((2, BK, SB_W), float32)   # sB[buf, k, j] = op(B)[k0+k, col0+j]
        acc = cuda.local.array((TM, TN), float32)
        ra = cuda.local.array(LA, float32)               # next slice, in registers
        rb = cuda.local.array(LB, float32)
        fa = cuda.local.array(TM, float32)
        fb = cuda.local.array(TN, float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * THREADS + tx
        row0 = cuda.blockIdx.y * BM
        col0 = cuda.blockIdx.x * BN
        split = cuda.blockIdx.z          # this block sums k in [kb, ke)
        kb = split * kc
        ke = min(K, kb + kc)
        for r in range(TM):
            for c in range(TN):
                acc[r, c] = 0.0
        load_slice(A, trans_a, B, trans_b, M, N, ke, row0, col0, kb, tid, ra, rb)
        store_slice(sA, sB, 0, trans_a, trans_b, tid, ra, rb)
        cuda.syncthreads()
        buf = 0
        for k0 in range(kb, ke, BK):
            more = k0 + BK < ke
            if more:      # the next slice's global loads are in flight during the FMAs
                load_slice(A, trans_a, B, trans_b, M, N, ke, row0, col0, k0 + BK, tid, ra, rb)
            # written out for BK = 8: constant k offsets, and LLVM does not unroll a loop
            # this size by itself (unrolled: 27 against 19 TFLOP/s on 4096^3, H100)
            slice_fma(sA, sB, buf, 0, tx, ty, acc, fa, fb)
            slice_fma(sA, sB, buf, 1, tx, ty, acc, fa, fb)
            slice_fma(sA, sB, buf, 2, tx, ty, acc, fa, fb)
            slice_fma(sA, sB, buf, 3, tx, ty, acc, fa, fb)
            slice_fma(sA, sB, buf, 4, tx, ty, acc, fa, fb)
            slice_fma(sA, sB, buf, 5, tx, ty, acc, fa, fb)
            slice_fma(sA, sB, buf, 6, tx, ty, acc, fa, fb)
            slice_fma(sA, sB, buf, 7, tx, ty, acc, fa, fb)
            if more:      # the other buffer was last read before the previous barrier
                store_slice(sA, sB, 1 - buf, trans_a, trans_b, tid, ra, rb)
            cuda.syncthreads()
            buf = 1 - buf
        for r in range(TM):
            i = row0 + (r // 4) * RUN_A + ty * 4 + (r % 4)
            for c in range(TN):
                j = col0 + (c // 4) * RUN_B + tx * 4 + (c % 4)
                if i < M and j < N:
                    if cuda.gridDim.z > 1:      # a partial sum: _split_k_sum finishes it
                        W[split, i, j] = acc[r, c]
                    else:
                        store_epilogue(C, i, j, acc[r, c], epilogue, bias, code, slope,
                                       Aout, Zsrc, Asrc)

    return kernel


_gemm_64 = _make_kernel(64, 64)
_gemm_128 = _make_kernel(128, 128)

MIN_SPLIT_K = 96        # the fewest k worth a split of its own


@functools.cache
def _sm_count():
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # noqa: BLE001 - the simulator has no attributes
        return 1 << 30


def choose_tiling(M, N, K, sm_count):
    """(tile, splits) for C (M, N) with inner dimension K on a GPU of sm_count
    multiprocessors.

    One 128 x 128 block fits on a multiprocessor (216 registers a thread), two 64 x 64
    ones (126).  128 x 128 tiles when they alone give every multiprocessor a block, or
    when splitting K into sm_count // tiles parts (one wave of blocks) leaves each part
    at least 512 long.  Otherwise 64 x 64 tiles, K split so that about two blocks run
    per multiprocessor, each part at least MIN_SPLIT_K long.  A split block sums its K
    range into a workspace; _split_k_sum adds the parts in a fixed order and applies the
    epilogue.  (Measured on an H100: tools/cuda_gemm_lab.py.)
    """
    tiles_128 = ((M + 127) // 128) * ((N + 127) // 128)
    if tiles_128 >= sm_count:
        return 128, 1
    splits_128 = sm_count // tiles_128
    if splits_128 >= 2 and K // splits_128 >= 512:
        return 128, splits_128
    tiles_64 = ((M + 63) // 64) * ((N + 63) // 64)
    return 64, max(1, min(K // MIN_SPLIT_K, 2 * sm_count // tiles_64))


class SplitWorkspace:
    """Device memory for split-K partial sums, one buffer per stream, grown on demand.

    Launches on one stream run in order, so the GEMMs one caller issues on a stream can
    share a buffer; callers that may launch at the same time (two threads training two
    models) need a workspace each: every CUDA model owns one.  A recorded launch keeps
    the buffer it was given alive.  choose_tiling splits only products with fewer tiles
    than blocks in a wave, so a buffer stays under sm_count * 128 * 128 floats (8.6 MB on
    an H100)."""

    def __init__(self):
        self._buffers = {}

    def view(self, splits, M, N, stream=0):
        """A (splits, M, N) float32 device array for a GEMM on ``stream``."""
        need = splits * M * N
        buf = self._buffers.get(stream)
        if buf is None or buf.shape[0] < need:
            buf = cuda.device_array(max(need, 1 << 16), np.float32)
            self._buffers[stream] = buf
        return buf[:need].reshape(splits, M, N)


_shared_workspace = SplitWorkspace()    # for callers that pass none (one thread at a time)


@functools.cache
def _no_workspace():
    """The empty workspace argument of a GEMM that does not split K."""
    return cuda.device_array((0, 0, 0), np.float32)


def gemm(A, trans_a, B, trans_b, C, epilogue, bias, code, slope, Aout, Zsrc, Asrc,
         stream=0, plan=None, tile=None, splits=None, workspace=None):
    """Launch the GEMM on device arrays (shapes validated by the caller); with a list as
    ``plan``, record the launches there instead (see launch.py).  ``tile`` (64 or 128)
    and ``splits`` (of K) override choose_tiling.  ``workspace``: the caller's
    SplitWorkspace (default: one shared by every caller that passes none)."""
    M, N = C.shape
    K = A.shape[0] if trans_a else A.shape[1]
    auto_tile, auto_splits = choose_tiling(M, N, K, _sm_count())
    tile = auto_tile if tile is None else tile
    splits = auto_splits if splits is None else max(1, splits)
    kc = -(-K // splits)
    kc = max(BK, -(-kc // BK) * BK)             # parts start on a slice boundary
    splits = max(1, -(-K // kc))
    kernel = _gemm_128 if tile == 128 else _gemm_64
    grid = ((N + tile - 1) // tile, (M + tile - 1) // tile, splits)
    if splits > 1:
        W = (_shared_workspace if workspace is None else workspace).view(splits, M, N, stream)
    else:
        W = _no_workspace()
    launch(kernel, grid, (THREADS, THREADS),
           (A, trans_a, B, trans_b, C, M, N, K, epilogue, bias, code, slope, Aout, Zsrc,
            Asrc, kc, W), stream, plan)
    if splits > 1:
        launch(_split_k_sum, (M * N + 255) // 256, 256,
               (W, C, epilogue, bias, code, slope, Aout, Zsrc, Asrc), stream, plan)


@cuda.jit(cache=True)
def _split_k_sum(W, C, epilogue, bias, code, slope, Aout, Zsrc, Asrc):
    """C = epilogue(W[0] + W[1] + ...), summed in that order: the end of a split-K GEMM."""
    t = cuda.grid(1)
    splits, M, N = W.shape
    if t < M * N:
        i = t // N
        j = t - i * N
        v = W[0, i, j]
        for s in range(1, splits):
            v += W[s, i, j]
        store_epilogue(C, i, j, v, epilogue, bias, code, slope, Aout, Zsrc, Asrc)


COLSUM_COLS, COLSUM_ROWS = 32, 32      # thread block of the column sum, at most


@cuda.jit(cache=True)
def _column_sum_kernel(D, out):
    """out[j] = sum_i D[i, j]: a block per 32 columns and R = blockDim.y threads per
    column (a power of two up to 32); thread (x, y) sums rows y, y + R, ... of column
    j = 32 * block + x (neighbouring threads read neighbouring addresses), then the R
    partial sums of a column are added pairwise in a fixed order."""
    part = cuda.shared.array((COLSUM_ROWS, COLSUM_COLS), float32)
    x = cuda.threadIdx.x
    y = cuda.threadIdx.y
    rows = cuda.blockDim.y
    j = cuda.blockIdx.x * COLSUM_COLS + x
    s = float32(0.0)
    if j < D.shape[1]:
        for i in range(y, D.shape[0], rows):
            s += D[i, j]
    part[y, x] = s
    cuda.syncthreads()
    width = rows // 2
    while width > 0:
        if y < width:
            part[y, x] += part[y + width, x]
        cuda.syncthreads()
        width //= 2
    if y == 0 and j < D.shape[1]:
        out[j] = part[0, x]


def column_sum(D, out, stream=0, plan=None):
    """out (N,) = sum over rows of D (M, N): the bias gradient.  Threads per column: 32
    from 256 rows up (6.9-7.0 us for 1024 x 512 on an H100), fewer for fewer rows, so
    that each sums about 8 rows or more."""
    m, n = D.shape
    rows = 1
    while rows < COLSUM_ROWS and rows * 8 < m:
        rows *= 2
    launch(_column_sum_kernel, (n + COLSUM_COLS - 1) // COLSUM_COLS, (COLSUM_COLS, rows),
           (D, out), stream, plan)
