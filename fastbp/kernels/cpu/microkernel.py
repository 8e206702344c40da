"""GEMM micro-kernel: one MR x NR tile of C from a packed A panel and a packed B panel (CPU).

    C[i0:i0+MR, j0:j0+NR] (+)= sum_k Ap[k, 0:MR] (outer) Bp[k, 0:NR]

Ap is an A panel packed k-major, shape (kc, MR); Bp a B panel packed k-major, shape
(kc, NR); C the C-contiguous output, or an (MR, NR) scratch tile the caller copies the
valid part of an edge tile from (panels are zero-padded, so the product always runs on a
full tile).  accumulate=False overwrites the tile, True adds to it (later K blocks).
Each element is summed over k in order, one fused multiply-add per k, so the result does
not depend on where the tile lies or how many threads run.

The loop is written as LLVM vector IR (an @intrinsic), the textbook AVX2 6 x 16 kernel:
per k, two 8-lane loads of the B row, then for each of the 6 rows of A a broadcast of
Ap[k, r] and two FMAs into the row's two accumulators: 12 accumulator registers, 2 for
B, 1 for the broadcast, of AVX2's 16.  float64 (4 lanes) runs the same loop twice, over
columns 0-7 and 8-15, so that it too keeps 12 accumulators.

Why not plain Numba: the previous kernel kept a 4 x 16 tile in 64 scalar locals and relied
on LLVM's SLP vectoriser to rebuild the vectors.  It could not do that for 6 rows (3-8
GFLOP/s), so the tile had 8 accumulators, just enough to cover the FMA latency of two
pipes; in float64 it was not vectorised at all.  Measured here, one core, full tiles,
GFLOP/s (old 4 x 16 -> this kernel): float32 K=32 67 -> 86, K=384 77 -> 87; float64
9-10 -> 30-42.  It also compiles in a fraction of the time (no 64-variable SLP graph).

copy_mr and copy_nr copy one k-row (MR or NR values) of a panel for the packing routines.
"""
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

MR = 6
NR = 16
_ACCUMULATORS = 12     # vector registers of C per pass over k (AVX2 has 16)


@intrinsic
def _tile_product(typingctx, Ap, Bp, C, i0, j0, accumulate):
    """The micro-kernel's body; see the module docstring.  Ap (kc, MR), Bp (kc, NR), C:
    2-D, C-contiguous, one float dtype.  Nothing is bounds-checked."""
    arrays = (Ap, Bp, C)
    if not (all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
                for a in arrays)
            and Ap.dtype == Bp.dtype == C.dtype
            and Ap.dtype in (types.float32, types.float64)):
        return None
    sig = types.void(Ap, Bp, C, types.intp, types.intp, types.boolean)

    def codegen(context, builder, signature, args):
        ap, bp, c, i0v, j0v, acc_flag = args
        dtype = signature.args[0].dtype
        a_arr = context.make_array(signature.args[0])(context, builder, ap)
        b_arr = context.make_array(signature.args[1])(context, builder, bp)
        c_arr = context.make_array(signature.args[2])(context, builder, c)
        intp = context.get_value_type(types.intp)
        width = dtype.bitwidth // 8
        lanes = 32 // width                           # one 256-bit register
        vec = ir.VectorType(context.get_data_type(dtype), lanes)
        kc = cgutils.unpack_tuple(builder, a_arr.shape, 2)[0]
        c_ld = builder.sdiv(cgutils.unpack_tuple(builder, c_arr.strides, 2)[0],
                            ir.Constant(intp, width))  # C's row stride in elements

        def const(i):
            return ir.Constant(intp, i)

        def vector_at(base, index):
            return builder.bitcast(builder.gep(base, [index]), vec.as_pointer())

        def broadcast(x):
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), x,
                                         ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                          ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                      None))

        n_vec = NR // lanes                            # vectors per row of the tile
        per_pass = max(1, _ACCUMULATORS // MR)         # of them held per pass over k
        for v0 in range(0, n_vec, per_pass):
            cols = range(v0, min(v0 + per_pass, n_vec))
            # accumulators live in allocas; LLVM's mem2reg turns them into registers
            acc = {(r, v): cgutils.alloca_once_value(builder, ir.Constant(vec, None))
                   for r in range(MR) for v in cols}
            with cgutils.for_range(builder, kc) as loop:
                b_row = builder.gep(b_arr.data, [builder.mul(loop.index, const(NR))])
                b = {v: builder.load(vector_at(b_row, const(v * lanes)), align=width)
                     for v in cols}
                a_row = builder.gep(a_arr.data, [builder.mul(loop.index, const(MR))])
                for r in range(MR):
                    a = broadcast(builder.load(builder.gep(a_row, [const(r)])))
                    for v in cols:
                        # acc += a * b, fused where the target has FMA ('contract')
                        prod = builder.fmul(a, b[v], flags=("contract",))
                        builder.store(builder.fadd(builder.load(acc[r, v]), prod,
                                                   flags=("contract",)), acc[r, v])
            for r in range(MR):
                c_row = builder.gep(c_arr.data, [builder.add(
                    builder.mul(builder.add(i0v, const(r)), c_ld), j0v)])
                for v in cols:
                    dst = vector_at(c_row, const(v * lanes))
                    total = builder.load(acc[r, v])
                    with builder.if_else(acc_flag) as (add, overwrite):
                        with add:
                            builder.store(builder.fadd(builder.load(dst, align=width),
                                                       total), dst, align=width)
                        with overwrite:
                            builder.store(total, dst, align=width)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, _nrt=False)
def micro_kernel(Ap, Bp, C, i0, j0, accumulate):
    """C[i0:i0+MR, j0:j0+NR] = (or +=) Ap (kc, MR) (outer-product sum) Bp (kc, NR)."""
    _tile_product(Ap, Bp, C, i0, j0, accumulate)


@njit(cache=True, _nrt=False)
def copy_mr(src, dst):
    """dst[0:6] = src[0:6]: one k-row of an A panel when packing.  Every load comes
    before the first store: LLVM cannot prove that src and dst do not overlap, and
    with loads and stores interleaved its SLP vectoriser leaves the copy scalar.
    """
    v0 = src[0]
    v1 = src[1]
    v2 = src[2]
    v3 = src[3]
    v4 = src[4]
    v5 = src[5]
    dst[0] = v0
    dst[1] = v1
    dst[2] = v2
    dst[3] = v3
    dst[4] = v4
    dst[5] = v5


@njit(cache=True, _nrt=False)
def copy_nr(src, dst):
    """dst[0:16] = src[0:16]: one k-row of a B panel when packing (loads first, as in
    copy_mr)."""
    v0 = src[0]
    v1 = src[1]
    v2 = src[2]
    v3 = src[3]
    v4 = src[4]
    v5 = src[5]
    v6 = src[6]
    v7 = src[7]
    v8 = src[8]
    v9 = src[9]
    v10 = src[10]
    v11 = src[11]
    v12 = src[12]
    v13 = src[13]
    v14 = src[14]
    v15 = src[15]
    dst[0] = v0
    dst[1] = v1
    dst[2] = v2
    dst[3] = v3
    dst[4] = v4
    dst[5] = v5
    dst[6] = v6
    dst[7] = v7
    dst[8] = v8
    dst[9] = v9
    dst[10] = v10
    dst[11] = v11
    dst[12] = v12
    dst[13] = v13
    dst[14] = v14
    dst[15] = v15
