"""GEMM micro-kernel: one tile of at most MR x NR of C from strided A and B (CPU).

    C[i, j] (+)= sum_{k < kc} A[i, k] B[k, j]      i < mr <= MR, j < nr <= NR

Every operand is a flat 1-D array with an offset and strides, in elements:

    A[i, k] = Af[a_off + i * a_rs + k * a_ks]
    B[k, j] = Bf[b_off + k * b_ks + j]           (a row of the tile is contiguous)
    C[i, j] = Cf[c_off + i * c_ld + j]

so one kernel reads a packed panel (A: a_ks = MR, a_rs = 1; B: b_ks = NR) or an operand in
place (A stored (M, K): a_ks = 1, a_rs = lda; A stored (K, M), i.e. op(A) = A^T: a_ks = lda,
a_rs = 1; B stored (K, N): b_ks = ldb).  Reading in place saves packing where a packed
panel would be used too few times to pay for its copy (gemm.py: small products).

accumulate=False overwrites the tile, True adds to it (later K blocks).  Each element is
summed over k in order, one fused multiply-add per k, into an accumulator that starts at
zero, then stored or added to C: the result does not depend on where the tile lies, on
whether its operands were packed, or on how many threads run.

Partial tiles (mr < MR or nr < NR, at the edges of C) run loops sized to them: 2, 4 or MR
rows, and, where a row of the tile is two vectors, one of them where nr fits in it; where
it is one (float32 with AVX-512), vectors of half its width where nr fits in those.  Rows
past mr within that read valid memory (A's next values where they lie inside Af, else row
mr - 1 again) and are not stored.  B's rows are loaded whole while the NR values lie
inside Bf (the lanes past nr then hold the next row's values, or a packed panel's zero
padding, and are never stored), masked near the end of Bf; C's partial rows are read and
written with masked vector operations.

The loop is written as LLVM vector IR (an @intrinsic), the textbook register-blocked
kernel, in one of two shapes picked at import for the CPU Numba compiles for:

    AVX-512 (``AVX512``): an 8 x 16 tile; per k, one 16-lane load of the B row, then for
        each of the 8 rows of A a broadcast of A[i, k] and an FMA into the row's
        accumulator.  float64 (8 lanes) holds two vectors a row: 16 accumulators of 32.
    AVX2: a 6 x 16 tile; per k, two 8-lane loads of the B row, then for each of the 6
        rows a broadcast and two FMAs: 12 accumulators, 2 for B, 1 for the broadcast, of
        AVX2's 16.  float64 (4 lanes) runs the same loop twice, over columns 0-7 and 8-15,
        so that it too keeps 12 accumulators.

A full tile with A's rows adjacent (a_rs = 1) goes straight to one loop with A's rows at
constant offsets from one pointer; everything else about a tile is decided only for the
others.

Why 8 x 16 in 512-bit vectors where the CPU has them, although Zen 4 runs a 512-bit FMA as
two 256-bit halves (the same peak): half the instructions per flop, one B load per k
instead of two, and rows in multiples of 8 (no 2-row edge tile at M = 32 or 128).
Measurements: docs/performance.md.
"""
import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic


def compiles_for_avx512():
    """Whether Numba compiles for a CPU with AVX-512 F: the host's features, or
    NUMBA_CPU_FEATURES where set, as numba.core.codegen picks them (NUMBA_ENABLE_AVX=0
    turns both off).  Numba's cache is keyed on the same features, so a cached kernel of
    the other shape is never loaded."""
    from numba.core import config
    if config.CPU_FEATURES is not None:
        features = config.CPU_FEATURES
    else:
        try:
            from numba.core.codegen import get_host_cpu_features
            features = get_host_cpu_features()
        except ImportError:                  # older or newer Numba: ask LLVM directly
            features = llvm.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


AVX512 = compiles_for_avx512()
VECTOR_BYTES = 64 if AVX512 else 32     # one vector register
MR = 8 if AVX512 else 6                 # rows of a tile (of A)
NR = 16                                 # columns of a tile (of B)
_ACCUMULATORS = 16 if AVX512 else 12    # vector registers of C per pass over k (of 32 / 16)


def _masked_access(builder, vec, store):
    """The llvm.masked.load / llvm.masked.store intrinsic for vectors of type vec."""
    i32 = ir.IntType(32)
    mask = ir.VectorType(ir.IntType(1), vec.count)
    ptr = vec.as_pointer()
    name = f"v{vec.count}{'f32' if isinstance(vec.element, ir.FloatType) else 'f64'}.p0"
    if store:
        fnty = ir.FunctionType(ir.VoidType(), [vec, ptr, i32, mask])
        return cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.store." + name)
    fnty = ir.FunctionType(vec, [ptr, i32, mask, vec])
    return cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.load." + name)


@intrinsic
def _tile_product(typingctx, Af, a_off, a_ks, a_rs, Bf, b_off, b_ks, Cf, c_off, c_ld, kc,
                  mr, nr, accumulate):
    """The micro-kernel's body; see the module docstring.  Af, Bf, Cf: 1-D, C-contiguous,
    one float dtype; the rest intp (accumulate boolean).  Nothing is bounds-checked."""
    arrays = (Af, Bf, Cf)
    if not (all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                for a in arrays)
            and Af.dtype == Bf.dtype == Cf.dtype
            and Af.dtype in (types.float32, types.float64)):
        return None
    i = types.intp
    sig = types.void(Af, i, i, i, Bf, i, i, Cf, i, i, i, i, i, types.boolean)

    def codegen(context, builder, signature, args):
        af, aoff, aks, ars, bf, boff, bks, cf, coff, cld, kcv, mrv, nrv, acc_flag = args
        dtype = signature.args[0].dtype
        a_arr, b_arr, c_arr = (context.make_array(signature.args[n])(context, builder, x)
                               for n, x in ((0, af), (4, bf), (7, cf)))
        intp = context.get_value_type(types.intp)
        width = dtype.bitwidth // 8
        lanes = VECTOR_BYTES // width                 # one vector register
        element = context.get_data_type(dtype)
        vec = ir.VectorType(element, lanes)
        i32 = ir.IntType(32)
        align = ir.Constant(i32, width)

        def const(x):
            return ir.Constant(intp, x)

        # Every helper below takes the vector type vt it works in: vec, or half of it for
        # the narrow edge tiles (see the edge path).
        def vector_at(base, index, vt):
            return builder.bitcast(builder.gep(base, [index]), vt.as_pointer())

        def broadcast(x, vt):
            one = builder.insert_element(ir.Constant(vt, ir.Undefined), x,
                                         ir.Constant(i32, 0))
            return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined),
                                          ir.Constant(ir.VectorType(i32, vt.count), None))

        a_base = builder.gep(a_arr.data, [aoff])
        b_base = builder.gep(b_arr.data, [boff])
        c_base = builder.gep(c_arr.data, [coff])
        n_vec = NR // lanes                            # vectors per row of the tile
        per_pass = max(1, _ACCUMULATORS // MR)         # of them held per pass over k
        passes = [range(v0, min(v0 + per_pass, n_vec)) for v0 in range(0, n_vec, per_pass)]
        whole = {v: None for v in range(n_vec)}        # no masks: whole vectors
        adjacent_offsets = [const(r) for r in range(MR)]

        def lane_mask(v, vt):
            """Lanes of vector v of a row (columns v*vt.count ...) that lie before nr."""
            vty = ir.VectorType(i32, vt.count)
            first = ir.Constant(vty, [v * vt.count + x for x in range(vt.count)])
            limit = builder.insert_element(ir.Constant(vty, ir.Undefined),
                                           builder.trunc(nrv, i32), ir.Constant(i32, 0))
            limit = builder.shuffle_vector(limit, ir.Constant(vty, ir.Undefined),
                                           ir.Constant(vty, None))
            return builder.icmp_signed("<", first, limit)

        def load(ptr, mask, vt):
            if mask is None:
                return builder.load(ptr, align=width)
            return builder.call(_masked_access(builder, vt, store=False),
                                [ptr, align, mask, ir.Constant(vt, None)])

        def store(value, ptr, mask, vt):
            if mask is None:
                builder.store(value, ptr, align=width)
            else:
                builder.call(_masked_access(builder, vt, store=True),
                             [value, ptr, align, mask])

        def zeroed_accumulators(cols, vt):
            # allocas; LLVM's mem2reg turns them into registers
            return {(r, v): cgutils.alloca_once_value(builder, ir.Constant(vt, None))
                    for r in range(MR) for v in cols}

        def k_loop(acc, rows, cols, k0, k1, masks, row_offsets, vt):
            """acc[r, v] += A[r, k] * B[k, v-th vector] for r < rows, v in cols and
            k0 <= k < k1, A's row r at row_offsets[r] from its k-th column."""
            with cgutils.for_range(builder, k1, start=k0) as loop:
                k = loop.index
                b_row = builder.gep(b_base, [builder.mul(k, bks)])
                b = {v: load(vector_at(b_row, const(v * vt.count), vt), masks[v], vt)
                     for v in cols}
                a_k = builder.gep(a_base, [builder.mul(k, aks)])
                for r in range(rows):
                    a = broadcast(builder.load(builder.gep(a_k, [row_offsets[r]])), vt)
                    for v in cols:
                        # acc += a * b, fused where the target has FMA ('contract')
                        prod = builder.fmul(a, b[v], flags=("contract",))
                        builder.store(builder.fadd(builder.load(acc[r, v]), prod,
                                                   flags=("contract",)), acc[r, v])

        def store_row(acc, r, cols, masks, vt):
            """C's row r (+)= acc[r, :]."""
            c_row = builder.gep(c_base, [builder.mul(const(r), cld)])
            for v in cols:
                dst = vector_at(c_row, const(v * vt.count), vt)
                total = builder.load(acc[r, v])
                with builder.if_else(acc_flag) as (add, overwrite):
                    with add:
                        store(builder.fadd(load(dst, masks[v], vt), total), dst, masks[v],
                              vt)
                    with overwrite:
                        store(total, dst, masks[v], vt)

        # A full tile with A's rows adjacent (a_rs = 1: packed panels, or op(A) = A^T in
        # place), the common case: one loop, A's rows at constant offsets from one pointer,
        # nothing else decided per tile.
        full_tile = builder.and_(builder.and_(builder.icmp_signed(">=", mrv, const(MR)),
                                              builder.icmp_signed(">=", nrv, const(NR))),
                                 builder.icmp_signed("==", ars, const(1)))
        with builder.if_else(full_tile) as (full, other):
            with full:
                for cols in passes:
                    acc = zeroed_accumulators(cols, vec)
                    k_loop(acc, MR, cols, const(0), kcv, whole, adjacent_offsets, vec)
                    for r in range(MR):
                        store_row(acc, r, cols, whole, vec)
            with other:
                # Edge tiles, and A's rows apart (A in place, not transposed).  Rows past
                # mr read row mr - 1 again, or A's next values where those lie inside Af.
                last_row = builder.sub(mrv, const(1))
                a_row_offsets = [builder.mul(builder.select(
                    builder.icmp_signed("<", const(r), mrv), const(r), last_row), ars)
                    for r in range(MR)]
                # A's rows adjacent and all MR of them inside Af: constant offsets again.
                a_len = cgutils.unpack_tuple(builder, a_arr.shape, 1)[0]
                a_end = builder.add(builder.add(aoff, builder.mul(builder.sub(kcv, const(1)),
                                                                  aks)), const(MR))
                adjacent_rows = builder.and_(
                    builder.icmp_signed("==", ars, const(1)),
                    builder.or_(builder.icmp_signed(">=", mrv, const(MR)),
                                builder.icmp_signed("<=", a_end, a_len)))
                full_width = builder.icmp_signed(">=", nrv, const(NR))
                # Rows k < k_plain of B are loaded whole: all of them in a full-width tile,
                # and in a narrower one those whose NR values lie inside Bf (the lanes past
                # nr then hold the next row's values, or a packed panel's zero padding, and
                # are never stored).  The rest use masked loads, which are slower (here
                # 87-90 against 110 GFLOP/s).
                b_len = cgutils.unpack_tuple(builder, b_arr.shape, 1)[0]
                room = builder.sub(b_len, builder.add(boff, const(NR)))
                whole_rows = builder.select(builder.icmp_signed("<", room, const(0)),
                                            const(0),
                                            builder.add(builder.sdiv(room, bks), const(1)))
                whole_rows = builder.select(builder.icmp_signed("<", whole_rows, kcv),
                                            whole_rows, kcv)
                k_plain = builder.select(full_width, kcv, whole_rows)
                # Loops sized to the tile: 2, 4 or MR rows (with MR = 6, the 2 rows left of a
                # batch of 32 at a third of a full tile's cost), and one vector of a pass's
                # two where nr ends within the first.  Each is a few lines of IR; a switch
                # picks one.
                row_class = builder.add(
                    builder.zext(builder.icmp_signed(">", mrv, const(2)), intp),
                    builder.zext(builder.icmp_signed(">", mrv, const(4)), intp))

                def edge_pass(cols, vt):
                    """One pass over k for the vectors cols of the tile's rows, in vectors
                    of type vt, then the tile's rows stored."""
                    acc = zeroed_accumulators(cols, vt)
                    masks = {v: lane_mask(v, vt) for v in cols}
                    narrow = builder.icmp_signed("<=", nrv, const((cols[0] + 1) * vt.count))
                    variant = builder.add(builder.mul(row_class, const(4)), builder.add(
                        builder.mul(builder.zext(narrow, intp), const(2)),
                        builder.zext(adjacent_rows, intp)))
                    merge = builder.append_basic_block("tile.loaded")
                    choice = builder.switch(variant, merge)
                    # (with one vector a row, the one-vector case is the whole row's
                    # loop: one block serves both)
                    halves = (False,) if len(cols) == 1 else (False, True)
                    for c, rows in enumerate((2, 4, MR)):
                        for half in halves:
                            for adjacent in (False, True):
                                block = builder.append_basic_block("tile.loop")
                                choice.add_case(
                                    ir.Constant(intp, 4 * c + 2 * half + adjacent), block)
                                if len(cols) == 1:
                                    choice.add_case(
                                        ir.Constant(intp, 4 * c + 2 + adjacent), block)
                                builder.position_at_end(block)
                                k_loop(acc, rows, cols[:1] if half else cols, const(0),
                                       k_plain, whole,
                                       adjacent_offsets if adjacent else a_row_offsets, vt)
                                builder.branch(merge)
                    builder.position_at_end(merge)
                    k_loop(acc, MR, cols, k_plain, kcv, masks, a_row_offsets, vt)
                    for r in range(MR):
                        stored = builder.icmp_signed("<", const(r), mrv)
                        if vt is not vec:        # never a full-width row
                            with builder.if_then(stored):
                                store_row(acc, r, cols, masks, vt)
                            continue
                        with builder.if_then(stored), \
                                builder.if_else(full_width) as (wide, narrower):
                            with wide:
                                store_row(acc, r, cols, whole, vec)
                            with narrower:
                                store_row(acc, r, cols, masks, vec)

                # A row of one vector (float32 with AVX-512): where nr fits in half of
                # it, the tile runs in half-width vectors.  Zen 4 splits a 512-bit FMA
                # into two 256-bit ones, so a half-width edge tile (the 4 columns left of
                # N = 100, say) costs half as much; the sums are the same.
                half_vec = ir.VectorType(element, lanes // 2) if n_vec == 1 else None
                for cols in passes:
                    v0 = cols[0]
                    with builder.if_then(builder.icmp_signed(">", nrv, const(v0 * lanes))):
                        if half_vec is None:
                            edge_pass(cols, vec)
                            continue
                        fits_half = builder.icmp_signed("<=", nrv, const(half_vec.count))
                        with builder.if_else(fits_half) as (narrow_tile, wide_tile):
                            with narrow_tile:
                                edge_pass(cols, half_vec)
                            with wide_tile:
                                edge_pass(cols, vec)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, _nrt=False)
def micro_kernel(Af, a_off, a_ks, a_rs, Bf, b_off, b_ks, Cf, c_off, c_ld, kc, mr, nr,
                 accumulate):
    """C[i, j] = (or +=) sum_{k < kc} A[i, k] B[k, j] for i < mr, j < nr (mr <= MR,
    nr <= NR), operands addressed as in the module docstring."""
    _tile_product(Af, a_off, a_ks, a_rs, Bf, b_off, b_ks, Cf, c_off, c_ld, kc, mr, nr,
                  accumulate)


@njit(cache=True, _nrt=False)
def _copy6(src, dst):
    """dst[0:6] = src[0:6]: one k-row of an A panel when packing (MR = 6).  Every load comes
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
def _copy8(src, dst):
    """dst[0:8] = src[0:8]: one k-row of an A panel when packing (MR = 8; loads first,
    as in _copy6)."""
    v0 = src[0]
    v1 = src[1]
    v2 = src[2]
    v3 = src[3]
    v4 = src[4]
    v5 = src[5]
    v6 = src[6]
    v7 = src[7]
    dst[0] = v0
    dst[1] = v1
    dst[2] = v2
    dst[3] = v3
    dst[4] = v4
    dst[5] = v5
    dst[6] = v6
    dst[7] = v7


copy_mr = _copy8 if MR == 8 else _copy6


@njit(cache=True, _nrt=False)
def copy_nr(src, dst):
    """dst[0:16] = src[0:16]: one k-row of a B panel when packing (loads first, as in
    _copy6)."""
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
