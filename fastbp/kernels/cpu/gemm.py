"""Matrix products of a dense layer (CPU, Numba), with fused epilogues.

Backprop needs three layouts (rows are examples, W is (out, in) like torch.nn.Linear):

    forward        Z  = A_prev W^T + b          "NT"   A_prev (b, in),  W (out, in)
    weight grad    dW = Delta^T A_prev          "TN"   Delta (b, out), A_prev (b, in)
    data grad      G  = (Delta W) * f'(Z_prev)   "NN"   Delta (b, out), W (out, in)

``gemm`` computes C (M, N) = op(A) (M, K) @ op(B) (K, N), op(X) = X^T when trans_x, and
runs a fused epilogue (gemm's ``epi``, fields EPILOGUE) on each tile of C while it is
still in cache:

    EPI_NONE      C = acc
    EPI_BIAS_ACT  C = acc + bias[j];  Aout = f(C)            (C holds Z)
    EPI_ACT_GRAD  C = acc * f'(Zsrc)  (f' from Asrc where exact)

``rowsum`` (length M, or 0 for none) receives sum_k op(A)[i, k]; for the weight gradient
op(A) = Delta^T, so this is the bias gradient db = sum over the batch of Delta, summed
while A is in cache.

How (BLIS-style): op(A) is packed into panels of MR rows and op(B) into panels of NR
columns, k-major and zero-padded; the packing absorbs every transpose.  Each tile of C is
accumulated by the register-blocked micro-kernel (microkernel.py) over K in blocks of KC,
with A in blocks of MC rows so that its slice stays in L2, and the epilogue runs on each
block of C.  Column panels are grouped into chunks split across threads; the thread that
owns a chunk packs its part of B, and each thread packs its own copy of op(A)
(``pack_copies``).  The chunks and their epilogue run through their compiled address
(``column_chunk_address``; linking.py), so they compile once.  Products below
PARALLEL_MIN_WORK run on one thread; small products read operands in place where a packed
panel would not pay for its copy (_a_in_place, _b_in_place).  Packing buffers are
caller-owned workspace (``pack_sizes``): nothing is allocated per call.  Compiled without
reference counting (``_nrt=False``): each array view would cost atomic operations.

Every element of C is summed over k in the same order whatever the thread count and the
tile it lands in, so results are bit-identical run to run and independent of the batch
composition.  Measurements behind these choices: docs/performance.md.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .. import codes
from ..codes import IDENTITY, LEAKY_RELU, RELU
from .activations import (
    activation_backward_rows,
    activation_forward_rows,
    piecewise_backward_rows,
)
from .linking import (
    as_writable,
    assume_c,
    function_at_typed,
    jit_address,
    num_threads,
    reshape_c,
)
from .microkernel import MR, NR, copy_mr, copy_nr, micro_kernel
from .transpose import transpose8x8

EPI_NONE, EPI_BIAS_ACT, EPI_ACT_GRAD = 0, 1, 2
# The fields of an epilogue tuple, gemm's epi, in order: kind (EPI_*, int64), bias (N,),
# the activation's code (int64) and slope (float64), Aout, Zsrc, Asrc (M, N) or (0, 0).
EPILOGUE = ("kind", "bias", "code", "slope", "Aout", "Zsrc", "Asrc")

KC = 384                     # K block: a KC x NR slice of B is 24 KiB (float32), within L1 (measured: 128: 0.52x numpy, 256: 0.6-0.78x, 384: 0.62-0.72x)
PARALLEL_MIN_WORK = 1 << 18  # M*N*K below which one thread beats a parallel region
MC = 128                     # rows of A per block (16 panels of MR = 8, 21 of MR = 6): an MC x KC slice of packed A is <= 192 KiB, within L2
CHUNK_PANELS = 4             # column panels (of NR columns) per unit of parallel work
IN_PLACE_MAX_WORK = 1 << 22  # M*N*K up to which operands are read in place (_a_in_place)
IN_PLACE_MAX_PANELS = 2      # column panels up to which A (not transposed) is read in place
IN_PLACE_MAX_ROW_PANELS = 17  # row panels up to which B is read in place (M <= 102 or 136)
MAX_A_COPIES = 8             # threads up to which each packs a copy of A of its own


@njit(cache=True, inline="always")
def _a_copy_size(M, K):
    """Elements of one packed copy of op(A) (M, K), rounded up to whole 64-byte lines (so
    that every copy in the workspace starts on one; pack_sizes computes the same)."""
    n = ((M + MR - 1) // MR) * MR * K
    return (n + 15) // 16 * 16


def pack_copies():
    """Copies of packed A the workspace holds: one per thread Numba may run (its
    NUMBA_NUM_THREADS, fixed for the process), up to MAX_A_COPIES; with fewer, gemm packs
    one shared copy."""
    return max(1, min(numba.config.NUMBA_NUM_THREADS, MAX_A_COPIES))


_A_COPIES = pack_copies()


def pack_sizes(M, N, K, a_copies=_A_COPIES):
    """Elements of the A and B packing buffers a product of this shape needs (at most:
    operands read in place need none): a_copies (default pack_copies()) copies of packed
    op(A), and op(B) packed once.  (Plain Python: fastbp.kernels.matmul calls it each time.)"""
    return (a_copies * (((M + MR - 1) // MR * MR * K + 15) // 16 * 16),
            (N + NR - 1) // NR * NR * K)


def pack_buffer(n, dtype):
    """An uninitialised 1-D workspace of n elements starting on a 64-byte (cache-line)
    boundary.  A packed float32 row of a B panel is NR*4 = 64 bytes, so every row the
    micro-kernel loads then lies in one cache line; malloc's usual 16-byte alignment splits
    half the loads across two lines (measured here: 50-60 against 85-93 GFLOP/s on one core)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + 64 // itemsize, dtype)
    skip = (-raw.ctypes.data % 64) // itemsize
    return raw[skip:skip + n]


# ----------------------------------------------------------------------------- packing
@njit(cache=True, _nrt=False)
def _pack_row_segments(X, c0, P):
    """P (K, W) = X[:, c0:c0 + W], zero-padded past X's last column, W = MR or NR: a panel
    whose k-rows lie contiguous in X (A when trans_a, B when not trans_b).

    Full panels go through copy_mr/copy_nr, which load a whole k-row before storing it:
    vector moves (the loop of single copies was scalar; a 100x100 W panel 0.64 -> 0.23 us,
    25 panels of a 32x100 Delta 1.5 -> 0.9 us)."""
    K, W = P.shape
    w = min(W, X.shape[1] - c0)
    if w < W:
        P[:, :] = 0.0
        cols = X[:, c0:c0 + w]
        for k in range(K):
            for c in range(w):
                P[k, c] = cols[k, c]
        return
    f = reshape_c(P, (K * W,))
    if W == MR:
        for k in range(K):
            copy_mr(X[k, c0:c0 + MR], f[MR * k:MR * k + MR])
    else:
        for k in range(K):
            copy_nr(X[k, c0:c0 + NR], f[NR * k:NR * k + NR])


@njit(cache=True, _nrt=False, inline="always")
def _pack_a_panel(A, trans_a, Ap, ip, M, K):
    """Ap[ip] (K, MR) = rows ip*MR.. of op(A), zero-padded.

    The loops index views that start at 0 (A's rows or columns of this panel), so LLVM can
    drop Numba's negative-index handling and vectorise them."""
    i0 = ip * MR
    mr = min(MR, M - i0)
    P = Ap[ip]
    if trans_a:                      # op(A)[i, k] = A[k, i]: MR contiguous values per k
        _pack_row_segments(A, i0, P)
    elif mr == MR:                   # op(A)[i, k] = A[i, k]: MR row streams
        # A flat view with constant offsets: LLVM vectorises this (1.5-2.3x faster than
        # the 2-D loop below on the MLP shapes).
        f = reshape_c(P, (K * MR,))
        rows = A[i0:i0 + MR]
        for k in range(K):
            for r in range(MR):
                f[MR * k + r] = rows[r, k]
    else:
        P[:, :] = 0.0
        rows = A[i0:i0 + mr]
        for r in range(mr):
            row = rows[r]
            for k in range(K):
                P[k, r] = row[k]


@njit(cache=True, _nrt=False, inline="always")
def _op_row_sums(A, trans_a, out):
    """out (M,) = sum over k of op(A)[i, k], summed in order of k in A's dtype.

    For the weight gradient op(A) = Delta^T, so this is the bias gradient db = sum over
    the batch of Delta: a column sum of Delta, taken a row at a time so that it vectorises
    across columns.  (Summed per packed panel, one dependent chain per row, it was half
    the packing time of a 32-row Delta.)"""
    if trans_a:
        out[:] = 0.0
        for k in range(A.shape[0]):
            row = A[k]
            for i in range(out.shape[0]):
                out[i] += row[i]
    else:
        for i in range(A.shape[0]):
            row = A[i]
            out[i] = 0.0
            s = out[i]               # a zero of out's dtype (out starts uninitialised)
            for k in range(row.shape[0]):
                s += row[k]
            out[i] = s


@njit(cache=True, _nrt=False, inline="always")
def _pack_b_panel(B, trans_b, Bp, jp, N, K):
    """Bp[jp] (K, NR) = columns jp*NR.. of op(B), zero-padded."""
    j0 = jp * NR
    nr = min(NR, N - j0)
    P = Bp[jp]
    if trans_b and nr == NR and B.strides[1] == B.itemsize:
        # op(B)[k, j] = B[j, k]: a transpose of NR rows of B, in 8 x 8 register blocks
        # (transpose.py).  16 values of k (a cache line) of the panel's rows at a time:
        # rows K*4 bytes apart share L1 sets (K = 2048: all 16), and reading them a block at
        # a time re-fetched lines (2048^2 panel, scalar: 3.9 -> 2.0 ms).
        ld = B.strides[0] // B.itemsize
        f = reshape_c(P, (K * NR,))
        s0 = j0 * ld               # B.flat offset of the panel's first row
        s8 = s0 + 8 * ld           # and of its ninth
        K16 = K - K % 16
        K8 = K - K % 8
        for kb in range(0, K16, 16):
            transpose8x8(B, s0 + kb, ld, f, NR * kb, NR)
            transpose8x8(B, s0 + kb + 8, ld, f, NR * (kb + 8), NR)
            transpose8x8(B, s8 + kb, ld, f, NR * kb + 8, NR)
            transpose8x8(B, s8 + kb + 8, ld, f, NR * (kb + 8) + 8, NR)
        if K8 > K16:
            transpose8x8(B, s0 + K16, ld, f, NR * K16, NR)
            transpose8x8(B, s8 + K16, ld, f, NR * K16 + 8, NR)
        rows = B[j0:j0 + NR]
        for k in range(K8, K):
            for c in range(NR):
                P[k, c] = rows[c, k]
    elif trans_b and B.strides[1] == B.itemsize:
        # an edge panel (nr < NR rows of B; N = 10, say): zeros, then a first 8 rows
        # transposed in 8 x 8 blocks as above, then the rest a row of B at a time
        # (32x100 @ (10x100)^T: 2.2x faster than element by element in k order)
        P[:, :] = 0.0
        ld = B.strides[0] // B.itemsize
        f = reshape_c(P, (K * NR,))
        rows = B[j0:j0 + nr]
        c8 = 8 if nr >= 8 else 0
        K8 = K - K % 8
        if c8:
            for kb in range(0, K8, 8):
                transpose8x8(B, j0 * ld + kb, ld, f, NR * kb, NR)
            for k in range(K8, K):
                for c in range(8):
                    P[k, c] = rows[c, k]
        for c in range(c8, nr):
            row = rows[c]
            for k in range(K):
                f[k * NR + c] = row[k]
    elif trans_b:                    # rows with a column stride: zeros, then the nr rows
        # of B, element by element
        P[:, :] = 0.0
        rows = B[j0:j0 + nr]
        for k in range(K):
            for c in range(nr):
                P[k, c] = rows[c, k]
    else:                            # op(B)[k, j] = B[k, j]: NR contiguous values per k
        _pack_row_segments(B, j0, P)


# ----------------------------------------------------------------------------- epilogue
@njit(cache=True, _nrt=False)
def _epilogue_piecewise_linear(C, i0, i1, j0, j1, epi):
    """Block [i0:i1, j0:j1] of C, just computed, for the identity, ReLU and leaky ReLU
    (the activations made of comparisons and products): EPI_BIAS_ACT: C += bias (Z),
    Aout = f(Z); EPI_ACT_GRAD: C *= f'(Zsrc).

    The bias and f go in one pass over each row, the zero in C's dtype (with 0.0 ReLU
    compared in float64).  Measured alone, one thread: 32x100 in two column chunks
    1.04 -> 0.31 us, 256x2048 in 128x64 blocks 149 -> 122 us; inside a small product
    ~0.15 us less (there the stores to Aout weigh most).  The identity writes Aout only
    where it is not C itself.

    The chunk compiled for these activations (PIECEWISE_LINEAR) links only this, not the
    vectorised sigmoid, tanh and GELU; given any other code it fills the block with NaN
    instead of computing a wrong activation in silence."""
    epilogue, bias, code, slope, Aout, Zsrc, Asrc = epi
    if epilogue == EPI_NONE:
        return
    if code != IDENTITY and code != RELU and code != LEAKY_RELU:
        nan = C.dtype.type(np.nan)
        for i in range(i0, i1):
            c = C[i, j0:j1]
            for j in range(c.shape[0]):
                c[j] = nan
        return
    if epilogue == EPI_BIAS_ACT:
        b = bias[j0:j1]
        if code == RELU:
            zero = C.dtype.type(0.0)
            for i in range(i0, i1):
                c, a = C[i, j0:j1], Aout[i, j0:j1]
                for j in range(c.shape[0]):
                    v = c[j] + b[j]
                    c[j] = v
                    a[j] = max(v, zero)
        elif code == LEAKY_RELU:
            for i in range(i0, i1):
                c, a = C[i, j0:j1], Aout[i, j0:j1]
                for j in range(c.shape[0]):
                    v = c[j] + b[j]
                    c[j] = v
                    a[j] = v if v > 0 else slope * v
        else:
            copy = Aout.ctypes.data != C.ctypes.data
            for i in range(i0, i1):
                c = C[i, j0:j1]
                for j in range(c.shape[0]):
                    c[j] += b[j]
                if copy:
                    a = Aout[i, j0:j1]
                    for j in range(c.shape[0]):
                        a[j] = c[j]
    else:
        piecewise_backward_rows(C, Zsrc, Asrc, i0, i1, j0, j1, code, slope)


@njit(cache=True, _nrt=False)
def _epilogue(C, i0, i1, j0, j1, epi):
    """Block [i0:i1, j0:j1] of C, just computed: the epilogue epi = (kind, bias, code,
    slope, Aout, Zsrc, Asrc) (see EPILOGUE) for every activation.  Piecewise-linear ones go
    to _epilogue_piecewise_linear; the others add the bias in one pass and apply f
    (vectorised, activations.py) in a second."""
    epilogue, bias, code, slope, Aout, Zsrc, Asrc = epi
    if code == IDENTITY or code == RELU or code == LEAKY_RELU or epilogue == EPI_NONE:
        _epilogue_piecewise_linear(C, i0, i1, j0, j1, epi)
    elif epilogue == EPI_BIAS_ACT:
        b = bias[j0:j1]
        for i in range(i0, i1):
            c = C[i, j0:j1]
            for j in range(c.shape[0]):
                c[j] += b[j]
        activation_forward_rows(C, Aout, i0, i1, j0, j1, code, slope)
    elif epilogue == EPI_ACT_GRAD:
        activation_backward_rows(C, Zsrc, Asrc, i0, i1, j0, j1, code, slope)


# ----------------------------------------------------------------------------- tiles
@njit(cache=True)
def _n_column_chunks(n_jp):
    """Column chunks of a product with n_jp column panels: about CHUNK_PANELS panels
    each, an even number of them (two threads get equal shares), at most n_jp."""
    n_ch = (n_jp + CHUNK_PANELS - 1) // CHUNK_PANELS
    n_ch += n_ch % 2
    return max(1, min(n_ch, n_jp))


@njit(cache=True, _nrt=False)
def _column_chunk(jp0, jp1, pack_a, a_op, b_op, C, epi, epi_addr):
    """Column panels jp0..jp1-1 of C: pack all of op(A) into Af (pack_a: the first chunk a
    thread runs, see gemm), pack the chunk's B panels (pack_b), then every tile, then the
    epilogue epi (by address: epi_addr).  The thread that owns a chunk packs it, so B's
    packing needs no parallel region of its own.

    a_op = (A, trans_a, Af, a_ip, a_pc, a_ks, a_rs) and b_op = (B, trans_b, pack_b, Bf,
    b_jp, b_pc, b_ks): the operands and where the micro-kernel reads them (below).

    op(A)[i, k] with i in row panel ip and k in K block pc.. is
    Af[ip * a_ip + pc * a_pc + (i - ip * MR) * a_rs + (k - pc) * a_ks], and op(B)[k, j] with j
    in column panel jp is Bf[jp * b_jp + pc * b_pc + (k - pc) * b_ks + (j - jp * NR)]: packed
    panels or the operands in place (gemm sets the strides).  With pack_b, Bf is the
    packing workspace and B (trans_b) the matrix packed into it.

    Loop order (BLIS's, at this scale): for each block of MC rows of A, for each K block of
    about KC, for each panel of the chunk, for each A panel of the block: the micro-kernel.
    The slice of a B panel in use (KC x NR, 24 KiB) stays in L1 while the A panels of the
    block pass it, and the block's A slice (MC x KC, <= 192 KiB) stays in L2 while the
    chunk's panels pass it.  Before this, every column panel streamed all of A from L3:
    fine for a batch of 128 rows, but at 1024 or 256 x 2048 rows two threads ran no faster
    than one (68-75 GFLOP/s either way)."""
    A, trans_a, Af, a_ip, a_pc, a_ks, a_rs = a_op
    B, trans_b, pack_b, Bf, b_jp, b_pc, b_ks = b_op
    M, N = C.shape
    K = A.shape[0] if trans_a else A.shape[1]
    n_ip = (M + MR - 1) // MR
    if pack_a:
        Ap = reshape_c(Af[:n_ip * K * MR], (n_ip, K, MR))
        for ip in range(n_ip):
            _pack_a_panel(A, trans_a, Ap, ip, M, K)
    if jp0 >= jp1:
        return
    if pack_b:
        Bp = reshape_c(Bf, (Bf.shape[0] // (K * NR), K, NR))
        for jp in range(jp0, jp1):
            _pack_b_panel(B, trans_b, Bp, jp, N, K)
    Cf = reshape_c(C, (M * N,))
    # K in blocks of about KC, balanced so that no block is a sliver.
    n_kb = (K + KC - 1) // KC
    kc = (K + n_kb - 1) // n_kb
    per_block = MC // MR
    for ib in range(0, n_ip, per_block):
        ie = min(ib + per_block, n_ip)
        for pc in range(0, K, kc):
            kn = min(kc, K - pc)
            acc = pc > 0
            for jp in range(jp0, jp1):
                j0 = jp * NR
                nr = min(NR, N - j0)
                b_off = jp * b_jp + pc * b_pc
                for ip in range(ib, ie):
                    i0 = ip * MR
                    micro_kernel(Af, ip * a_ip + pc * a_pc, a_ks, a_rs, Bf, b_off, b_ks, Cf,
                                 i0 * N + j0, N, kn, min(MR, M - i0), nr, acc)
        epilogue_fn = _epilogue_at(epi_addr, C)
        epilogue_fn(C, ib * MR, min(ie * MR, M), jp0 * NR, min(jp1 * NR, N), epi)


def epilogue_type(f):
    """The Numba type of an epilogue tuple (EPILOGUE) for the float type f."""
    mat, vec = types.Array(f, 2, "C"), types.Array(f, 1, "C")
    return types.Tuple((types.int64, vec, types.int64, types.float64, mat, mat, mat))


def column_chunk_signature(f):
    """The one signature _column_chunk is compiled for, given the numba float type f: every
    array C-contiguous and writable (gemm passes its read-only inputs through as_writable)."""
    mat, vec = types.Array(f, 2, "C"), types.Array(f, 1, "C")
    i, b = types.int64, types.boolean
    a_op = types.Tuple((mat, b, vec, i, i, i, i))
    b_op = types.Tuple((mat, b, b, vec, i, i, i))
    #                 jp0 jp1 pack_a a_op b_op C  epi              epi_addr
    return types.none(i, i, b, a_op, b_op, mat, epilogue_type(f), i)


def gemm_signature(f):
    """The one signature gemm (and gemm_blas, which shares its contract) is compiled for
    and called through by address, given the numba float type f."""
    mat, vec = types.Array(f, 2, "C"), types.Array(f, 1, "C")
    b, i = types.boolean, types.int64
    #                 A    ta B    tb C    epi               rowsum apack bpack parallel chunk
    return types.none(mat, b, mat, b, mat, epilogue_type(f), vec, vec, vec, b, i)


def epilogue_signature(f):
    """The signature of _epilogue and _epilogue_piecewise_linear, given the float type f."""
    i = types.int64
    #                 C                        i0 i1 j0 j1 epi
    return types.none(types.Array(f, 2, "C"), i, i, i, i, epilogue_type(f))


@intrinsic
def _column_chunk_at(typingctx, addr, C):
    """The compiled _column_chunk for C's dtype at addr (from column_chunk_address)."""
    return function_at_typed(column_chunk_signature(C.dtype), addr, C)


@intrinsic
def _epilogue_at(typingctx, addr, C):
    """The compiled epilogue for C's dtype at addr (from column_chunk_address)."""
    return function_at_typed(epilogue_signature(C.dtype), addr, C)


@intrinsic
def _table_entry(typingctx, table, i):
    """The int64 at index i of the table at address `table` (column_chunk_address)."""
    def codegen(context, builder, sig, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load(builder.gep(ptr, [args[1]]))
    return types.int64(types.int64, types.int64), codegen


_CHUNK_TABLE = {}
PIECEWISE_LINEAR = codes.PIECEWISE_LINEAR


def column_chunk_address(dtype, code=None):
    """gemm's chunk_addr for float arrays of dtype (a numpy dtype or float type): the
    address of a table of two entry addresses, the column chunk's and its epilogue's.
    code: the one activation (besides the identity) that the products using it apply or
    differentiate in their epilogue.  For one in PIECEWISE_LINEAR, or for products with no
    activation, the epilogue is _epilogue_piecewise_linear, which compiles without the
    vectorised sigmoid, tanh and GELU; for any other code, or None (the default), it is
    _epilogue, every activation's.  Looked up as given first (np.dtype() cost 0.25 us of
    a 5 us small product).

    Why a table: gemm takes one int (typing it costs Python ~30 ns a call, a tuple more),
    and the chunk takes its epilogue as an address, not by name, so that a network of
    ReLUs compiles only the lean one.  Measured, cold cache, `fastbp train --epochs 1`:
    the chunk with every activation's epilogue linked by name compiled in 5.0-5.5 s; two
    chunks sharing an inlined body, each linking one epilogue, 3.9-4.6 s (the inlining
    itself cost ~0.6 s); one chunk calling the lean epilogue by address, 2.6-2.9 s plus
    0.5-0.6 s for the epilogue.  Training runs at the same speed (40-100-100-10 b32, 10
    processes, 1.012x).  The tables live as long as the process (this dict keeps them)."""
    lean = code in PIECEWISE_LINEAR
    table = _CHUNK_TABLE.get((dtype, lean))
    if table is None:
        # One table per dtype, never replaced (a replaced table would be freed while
        # callers still hold its address): np.float32, "float32" and np.dtype("float32")
        # hash apart, so the table is stored under np.dtype first, and setdefault keeps
        # the first one stored if two threads get here at once.
        dt = np.dtype(dtype)
        table = _CHUNK_TABLE.get((dt, lean))
        if table is None:
            f = types.float32 if dt == np.float32 else types.float64
            epilogue = _epilogue_piecewise_linear if lean else _epilogue
            table = _CHUNK_TABLE.setdefault((dt, lean), np.array(
                [jit_address(_column_chunk, column_chunk_signature(f)),
                 jit_address(epilogue, epilogue_signature(f))], np.int64))
        table = _CHUNK_TABLE.setdefault((dtype, lean), table)
    return table.ctypes.data


@njit(parallel=True, cache=True, _nrt=False)
def _column_chunks_parallel(chunk, n_parts, n_ch, n_jp, a_copy, pack_a, a_op, b_op, C, epi,
                            epi_addr):
    """gemm's n_ch column chunks shared out in n_parts contiguous runs, one per thread
    (a_op, b_op, epi as _column_chunk's).  With pack_a, part p first packs op(A) into its
    own copy, Af[p * a_copy:]."""
    A, trans_a, Af, a_ip, a_pc, a_ks, a_rs = a_op
    for t in prange(n_parts):
        p = np.int64(t)      # prange's index is unsigned; the chunk takes int64
        a_op_p = (A, trans_a, Af[p * a_copy:], a_ip, a_pc, a_ks, a_rs)
        for ch in range(p * n_ch // n_parts, (p + 1) * n_ch // n_parts):
            first = ch == p * n_ch // n_parts
            chunk(ch * n_jp // n_ch, (ch + 1) * n_jp // n_ch, pack_a and first, a_op_p, b_op,
                  C, epi, epi_addr)


# ----------------------------------------------------------------------------- entry point
@njit(cache=True, inline="always")
def _a_in_place(trans_a, M, N, K):
    """Whether the micro-kernel reads op(A) where it lies instead of from packed panels:
    when packing would not pay for its copy.  A^T in place has its tile's rows adjacent
    (one k-row of it is MR neighbouring values), nearly as good as a packed panel: in place
    up to IN_PLACE_MAX_WORK.  A itself has them a row apart (six streams, an address per
    row): in place only if at most IN_PLACE_MAX_PANELS column panels read it."""
    if trans_a:
        return M * N * K <= IN_PLACE_MAX_WORK
    return (N + NR - 1) // NR <= IN_PLACE_MAX_PANELS


@njit(cache=True, inline="always")
def _b_in_place(trans_b, M, N, K):
    """Whether it reads op(B) where it lies: B not transposed (its k-rows are the tile's
    rows), up to IN_PLACE_MAX_WORK, and read by at most IN_PLACE_MAX_ROW_PANELS row
    panels of A (a packed panel is cheaper to read than rows of B a row stride apart;
    with the 6 x 16 AVX2 tile, 128 x 10 @ 10 x 512 lost 20% in place; with the 8 x 16
    one, at 16 panels, it ran as fast as packed, 18.4 against 18.8 us)."""
    return (not trans_b and M * N * K <= IN_PLACE_MAX_WORK
            and (M + MR - 1) // MR <= IN_PLACE_MAX_ROW_PANELS)


@njit(cache=True, _nrt=False)
def gemm(A, trans_a, B, trans_b, C, epi, rowsum, apack, bpack, parallel, chunk_addr):
    """C (M, N) = op(A) @ op(B) with a fused epilogue; see the module docstring.

    A: (M, K), or (K, M) when trans_a.  B: (K, N), or (N, K) when trans_b.  C: (M, N).
    epi: (kind, bias (N,), code, slope, Aout, Zsrc, Asrc), EPILOGUE's fields; Aout, Zsrc,
    Asrc (M, N) or unused per kind.  rowsum: (M,) or (0,).
    apack, bpack: 1-D workspace of at least pack_sizes(M, N, K) elements (with room for
    fewer copies of packed A than threads, one copy is packed and shared).
    parallel: False to stay on the calling thread whatever the size (inside a parallel
    region: a nested one, even of one thread, made a split small-network step 2-3x slower).
    chunk_addr: ``column_chunk_address(C.dtype, code)``.
    All C-contiguous and of one dtype; the caller validates shapes.
    """
    M, N = C.shape
    K = A.shape[0] if trans_a else A.shape[1]
    n_jp = (N + NR - 1) // NR
    kind, bias, code, slope, Aout, Zsrc, Asrc = epi
    A, B = as_writable(A), as_writable(B)
    epi = (kind, as_writable(bias), code, slope, Aout, as_writable(Zsrc), as_writable(Asrc))
    lda = A.shape[1]
    ldb = B.shape[1]
    pack_a = not _a_in_place(trans_a, M, N, K)
    a_copy = 0
    if pack_a:
        Af = apack
        a_copy = _a_copy_size(M, K)
        a_ip, a_pc, a_ks, a_rs = K * MR, MR, MR, 1
    else:
        Af = reshape_c(A, (A.size,))
        if trans_a:                        # op(A)[i, k] = A[k, i]
            a_ip, a_pc, a_ks, a_rs = MR, lda, lda, 1
        else:
            a_ip, a_pc, a_ks, a_rs = MR * lda, 1, 1, lda
    pack_b = not _b_in_place(trans_b, M, N, K)
    if pack_b:
        Bf = bpack[:n_jp * K * NR]
        b_jp, b_pc, b_ks = K * NR, NR, NR
    else:
        Bf = reshape_c(B, (B.size,))
        b_jp, b_pc, b_ks = NR, ldb, ldb
    if rowsum.shape[0] > 0:
        _op_row_sums(A, trans_a, rowsum)
    a_op = (A, trans_a, Af, a_ip, a_pc, a_ks, a_rs)
    b_op = (B, trans_b, pack_b, Bf, b_jp, b_pc, b_ks)
    n_ch = _n_column_chunks(n_jp)
    # The column chunks run through their address, not by name (linking.py): 4-5 s less
    # compile.  chunk_addr is a table of the chunk's and its epilogue's addresses.
    chunk = _column_chunk_at(_table_entry(chunk_addr, 0), C)
    epi_addr = _table_entry(chunk_addr, 1)
    n_parts = min(num_threads(), n_ch) if parallel and M * N * K >= PARALLEL_MIN_WORK else 1
    if n_parts > 1:     # one thread (a forked child among them): no parallel region
        if pack_a and apack.shape[0] < n_parts * a_copy:
            # Too few copies in the workspace: one, shared, packed on this thread first
            # (a chunk of no columns).
            chunk(0, 0, True, a_op, b_op, C, epi, epi_addr)
            pack_a, a_copy = False, 0
        _column_chunks_parallel(chunk, n_parts, n_ch, n_jp, a_copy, pack_a, a_op, b_op, C, epi,
                                epi_addr)
    else:   # the same chunks on this thread, the first packing A
        for ch in range(n_ch):
            chunk(ch * n_jp // n_ch, (ch + 1) * n_jp // n_ch, pack_a and ch == 0, a_op, b_op,
                  C, epi, epi_addr)


@njit(cache=True, inline="always")
def _is_c_contiguous(X):
    """Whether the 2-D array X (any layout) has C-contiguous strides."""
    m, n = X.shape
    return ((n <= 1 or X.strides[1] == X.itemsize)
            and (m <= 1 or X.strides[0] == n * X.itemsize))


def matmul_checked(A, trans_a, B, trans_b, C, apack, bpack, chunk_addr):
    """C = op(A) @ op(B) (no epilogue) if the arguments allow it, returning 0; else 1, and
    C is untouched: an operand that is not C-contiguous, shapes that disagree, an empty
    product or workspace smaller than pack_sizes(M, N, K, a_copies=1).

    fastbp.kernels.matmul's compiled entry (matmul_entry builds it for one dtype): a tiny
    product's call was mostly Python checking its arguments (32x100 @ (10x100)^T: 4-6 us
    against 2.4-3.0 us of numpy.matmul, and 2.3-2.8 us of it our kernel and the call
    itself), so they are checked here, in compiled code, and the Python path only takes
    over for the rest (conversions, errors with messages, growing the workspace).
    A, B: any layout, read-only or not; C: writable."""
    m_a, k_a = A.shape
    k_b, n_b = B.shape
    M, N = C.shape
    if trans_a:
        m_a, k_a = k_a, m_a
    if trans_b:
        k_b, n_b = n_b, k_b
    if m_a != M or n_b != N or k_a != k_b or M == 0 or N == 0 or k_a == 0:
        return 1
    K = k_a
    if not (_is_c_contiguous(A) and _is_c_contiguous(B) and _is_c_contiguous(C)):
        return 1
    if apack.shape[0] < _a_copy_size(M, K) or bpack.shape[0] < (N + NR - 1) // NR * NR * K:
        return 1
    none = apack[:0]
    empty = reshape_c(none, (0, 0))
    gemm(assume_c(A), trans_a, assume_c(B), trans_b, assume_c(C),
         (np.int64(EPI_NONE), none, np.int64(0), 0.0, empty, empty, empty), none, apack, bpack,
         True, chunk_addr)
    return 0


_MATMUL_ENTRY = {}


def matmul_entry(dtype):
    """matmul_checked compiled (or loaded from Numba's cache) on first use for arrays of
    dtype only, with one signature that takes operands of any layout, read-only or not.
    One signature, so that the dispatcher never compiles another version for a new layout
    of the caller's arrays; one dispatcher per dtype, so that float64 is only compiled
    when used."""
    fn = _MATMUL_ENTRY.get(dtype)
    if fn is None:
        dt = np.dtype(dtype)
        f = types.float32 if dt == np.float32 else types.float64
        any_ro = types.Array(f, 2, "A", readonly=True)
        vec = types.Array(f, 1, "C")
        sig = types.int64(any_ro, types.boolean, any_ro, types.boolean,
                          types.Array(f, 2, "A"), vec, vec, types.int64)
        fn = njit(sig, cache=True)(matmul_checked)
        _MATMUL_ENTRY[dtype] = _MATMUL_ENTRY[dt] = fn
    return fn


@njit(parallel=True, cache=True)
def column_sum(D, out):
    """out (N,) = sum over rows of D (M, N): the bias gradient db = sum_i Delta[i, :]."""
    m, n = D.shape
    nblk = (n + 63) // 64
    if num_threads() < 2:           # no parallel region on one thread (runtime.py: fork)
        _column_sum_blocks(D, out, 0, nblk)
        return
    for blk in prange(nblk):
        _column_sum_blocks(D, out, blk, blk + 1)


@njit(cache=True, inline="always")
def _column_sum_blocks(D, out, b0, b1):
    m, n = D.shape
    for blk in range(b0, b1):
        j0 = blk * 64
        j1 = min(j0 + 64, n)
        for j in range(j0, j1):
            out[j] = 0.0
        for i in range(m):
            for j in range(j0, j1):
                out[j] += D[i, j]


# ----------------------------------------------------------------------------- BLAS variant
@njit(cache=True)
def gemm_blas(A, trans_a, B, trans_b, C, epi, rowsum, apack, bpack, parallel, chunk_addr):
    """The same contract as ``gemm``, with the product done by BLAS (np.dot inside @njit).

    The opt-in ``matmul="blas"`` reference: it shows what fusion and our own GEMM are
    worth against the library product.  apack, bpack, parallel and chunk_addr are unused.
    """
    M, N = C.shape
    # One call per layout: a conditional expression would unify the C- and F-ordered
    # views into a non-contiguous type that Numba does not hand to BLAS.
    if trans_a and trans_b:
        np.dot(A.T, B.T, C)
    elif trans_a:
        np.dot(A.T, B, C)
    elif trans_b:
        np.dot(A, B.T, C)
    else:
        np.dot(A, B, C)
    if rowsum.shape[0] > 0:
        for i in range(M):
            rowsum[i] = 0.0
        if trans_a:
            for k in range(A.shape[0]):
                for i in range(M):
                    rowsum[i] += A[k, i]
        else:
            for i in range(M):
                s = 0.0
                for k in range(A.shape[1]):
                    s += A[i, k]
                rowsum[i] = s
    _epilogue(C, 0, M, 0, N, epi)
