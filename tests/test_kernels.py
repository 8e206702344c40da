"""Every kernel against a float64 NumPy reference: random and odd shapes, both dtypes,
non-contiguous and Fortran-ordered inputs."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import (
    ACTIVATIONS,
    DTYPES,
    ref_activation,
    ref_activation_grad,
    rel_err,
    tol,
)
from hypothesis import given
from hypothesis import strategies as st

import fastbp
from fastbp import kernels as K

SIZES = st.sampled_from([1, 2, 3, 5, 17, 33, 64, 100, 129])


@pytest.fixture(autouse=True, scope="module")
def _thread_pool():
    """Numba's thread pool running before any test calls a compiled kernel directly (gemm,
    the micro-kernel), as fastbp's Python entries make sure it is (runtime.ensure_threads):
    run alone, a test calling gemm first crashed when the cache was warm."""
    fastbp.runtime.ensure_threads()


def _layout(x, kind):
    """The same values as x, laid out as 'C', 'F' or a strided (non-contiguous) view."""
    if kind == "C":
        return np.ascontiguousarray(x)
    if kind == "F":
        return np.asfortranarray(x)
    big = np.zeros((x.shape[0] * 2, x.shape[1] * 3), dtype=x.dtype)
    big[::2, ::3] = x
    return big[::2, ::3]


@given(M=SIZES, K_=SIZES, N=SIZES, trans_a=st.booleans(), trans_b=st.booleans(),
       dtype=st.sampled_from(DTYPES), la=st.sampled_from("CFS"), lb=st.sampled_from("CFS"))
def test_matmul_random_shapes_layouts(M, K_, N, trans_a, trans_b, dtype, la, lb):
    rng = np.random.default_rng(M * 1000 + K_ * 10 + N)
    a = rng.standard_normal((M, K_)).astype(dtype)
    b = rng.standard_normal((K_, N)).astype(dtype)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    A = _layout(a.T if trans_a else a, la)
    B = _layout(b.T if trans_b else b, lb)
    c = K.matmul(A, B, trans_a=trans_a, trans_b=trans_b)
    assert c.dtype == dtype and c.shape == (M, N)
    assert rel_err(c, ref) <= tol(dtype)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 17, 1000), (1000, 3, 17), (17, 1000, 3),
                                   (128, 784, 512)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_odd_and_mlp_shapes(shape, dtype, rng):
    M, K_, N = shape
    a = rng.standard_normal((M, K_)).astype(dtype)
    b = rng.standard_normal((K_, N)).astype(dtype)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    for ta in (False, True):
        for tb in (False, True):
            c = K.matmul(a.T.copy() if ta else a, b.T.copy() if tb else b,
                         trans_a=ta, trans_b=tb)
            assert rel_err(c, ref) <= tol(dtype), (ta, tb)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_fast_path_checks_what_the_general_path_checks(dtype, rng):
    """Once a thread has run a product of a dtype, matmul's arguments are checked in
    compiled code (gemm.matmul_checked) and everything it refuses goes the general way:
    each case here runs after a warm-up, and gives the reference or the general path's
    error, with out untouched on error."""
    a = rng.standard_normal((7, 5)).astype(dtype)
    b = rng.standard_normal((5, 3)).astype(dtype)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    K.matmul(a, b)                                   # warm: workspace and compiled entry
    for A, B, ta, tb in ((a, b, False, False), (a.T.copy(), b, True, False),
                         (a, b.T.copy(), False, True), (a.T.copy(), b.T.copy(), True, True),
                         (np.asfortranarray(a), b, False, False), (a, _layout(b, "S"), 0, 0),
                         (a, np.asfortranarray(b.T), False, 1)):
        assert rel_err(K.matmul(A, B, trans_a=ta, trans_b=tb), ref) <= tol(dtype)
        out = np.empty((7, 3), dtype)
        assert K.matmul(A, B, out=out, trans_a=ta, trans_b=tb) is out
        assert rel_err(out, ref) <= tol(dtype)
    ro_a, ro_b = a.copy(), b.copy()
    ro_a.flags.writeable = ro_b.flags.writeable = False
    assert rel_err(K.matmul(ro_a, ro_b), ref) <= tol(dtype)
    assert rel_err(K.matmul(a[:, :0], b[:0]), np.zeros((7, 3))) == 0.0
    assert K.matmul(a[:0], b).shape == (0, 3)
    bad_outs = [np.full((7, 4), 5, dtype), np.full((3, 7), 5, dtype),
                np.full((7, 3), 5, dtype, order="F"), np.full((7, 6), 5, dtype)[:, ::2]]
    ro = np.full((7, 3), 5, dtype)
    ro.flags.writeable = False
    for out in bad_outs + [ro]:
        with pytest.raises(ValueError, match="out must be"):
            K.matmul(a, b, out=out)
        assert np.all(out == 5)
    with pytest.raises(ValueError, match="inner dimensions"):
        K.matmul(a, a)
    with pytest.raises(ValueError, match="2-D"):
        K.matmul(a[0], b)


def test_matmul_out_and_mixed_dtypes(rng):
    a = rng.standard_normal((5, 4)).astype(np.float32)
    b = rng.standard_normal((4, 3))  # float64: promoted like NumPy
    out = np.empty((5, 3))
    r = K.matmul(a, b, out=out)
    assert r is out
    assert rel_err(out, a.astype(np.float64) @ b) <= 1e-7
    with pytest.raises(ValueError, match="out must be"):
        K.matmul(a, b, out=np.empty((5, 3), np.float32))
    with pytest.raises(ValueError, match="inner dimensions"):
        K.matmul(a, b.T)
    with pytest.raises(TypeError, match="real numbers"):
        K.matmul(a.astype(complex), b)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_fused_epilogue(activation, dtype, rng):
    x = rng.standard_normal((37, 17)).astype(dtype)
    w = rng.standard_normal((9, 17)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype)
    z, a = K.linear(x, w, b, activation=activation)
    zr = x.astype(np.float64) @ w.astype(np.float64).T + b
    assert rel_err(z, zr) <= tol(dtype)
    assert rel_err(a, ref_activation(activation, zr)) <= 10 * tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("code", [0, 1])
@pytest.mark.parametrize("lean", [False, True])
def test_gemm_bias_activation_epilogue_in_one_pass(lean, code, dtype, rng):
    """The GEMM's bias + identity / ReLU epilogue (one pass over each row): Z = A W^T + b
    and f(Z), into a separate array or, for the identity, into Z itself; a NaN in the
    input reaches both Z and f(Z) (ReLU keeps it, as torch.relu does).  In both column
    chunks: the one for every activation and the one for these (lean)."""
    from fastbp.kernels.cpu import gemm as G
    M, K_, N = 33, 40, 100                  # edge tiles in both directions
    a = rng.standard_normal((M, K_)).astype(dtype)
    a[5, 3] = np.nan
    w = rng.standard_normal((N, K_)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    zr = a.astype(np.float64) @ w.astype(np.float64).T + bias
    fr = np.where(np.isnan(zr) | (zr > 0), zr, 0.0) if code == 1 else zr
    none = np.empty(0, dtype)
    empty = np.empty((0, 0), dtype)
    na, nb = G.pack_sizes(M, N, K_)
    ok = ~np.isnan(zr)
    for separate in (True, False) if code == 0 else (True,):
        z = np.full((M, N), 7.0, dtype)
        f = np.full((M, N), 7.0, dtype) if separate else z
        G.gemm(a, False, w, True, z, (G.EPI_BIAS_ACT, bias, code, 0.0, f, empty, empty), none,
               G.pack_buffer(na, dtype), G.pack_buffer(nb, dtype), True,
               G.column_chunk_address(dtype, code if lean else None))
        assert np.array_equal(np.isnan(z), ~ok) and np.array_equal(np.isnan(f), ~ok)
        assert rel_err(z[ok], zr[ok]) <= tol(dtype)
        assert rel_err(f[ok], fr[ok]) <= tol(dtype)
        assert np.all((f == 0) | (f == z) | ~ok)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_piecewise_linear_chunk(dtype, rng):
    """The column chunk compiled for the identity, ReLU and leaky ReLU only
    (column_chunk_address(dtype, code), one table for each dtype however it is spelled)
    gives the same bits as the chunk for every
    activation, for the forward (bias + f) and the backward (times f') epilogues and
    without one; given sigmoid, tanh or GELU, which it does not have, it makes C all
    NaN instead of a wrong activation."""
    from fastbp.kernels.cpu import gemm as G
    M, K_, N = 131, 100, 200               # parallel, edge tiles in both directions
    a = rng.standard_normal((M, K_)).astype(dtype)
    w = rng.standard_normal((N, K_)).astype(dtype)
    bias = rng.standard_normal(N).astype(dtype)
    z = rng.standard_normal((M, N)).astype(dtype)
    none = np.empty(0, dtype)
    empty = np.empty((0, 0), dtype)
    na, nb = G.pack_sizes(M, N, K_)
    full = G.column_chunk_address(dtype)
    lean = G.column_chunk_address(dtype, G.RELU)
    assert lean != full
    # every spelling of the dtype gets the same table (a second one made for another
    # spelling once replaced, and so freed, the first while callers still held it)
    name = np.dtype(dtype).name
    for spelling in (np.dtype(dtype), name, dtype):
        assert G.column_chunk_address(spelling, G.RELU) == lean
        assert G.column_chunk_address(spelling) == full
    for code in range(6):
        assert G.column_chunk_address(dtype, code) == (lean if code <= 2 else full)
        for epi in (G.EPI_NONE, G.EPI_BIAS_ACT, G.EPI_ACT_GRAD):
            outs = []
            for chunk in (full, lean):
                c = np.empty((M, N), dtype)
                f = np.empty((M, N), dtype) if epi == G.EPI_BIAS_ACT else empty
                zs = z if epi == G.EPI_ACT_GRAD else empty
                G.gemm(a, False, w, True, c, (epi, bias, code, 0.2, f, zs, zs), none,
                       G.pack_buffer(na, dtype), G.pack_buffer(nb, dtype), True, chunk)
                outs.append((c, f))
            (c_full, f_full), (c_lean, f_lean) = outs
            if code <= 2 or epi == G.EPI_NONE:
                assert np.array_equal(c_lean, c_full) and np.array_equal(f_lean, f_full)
            else:
                assert np.isnan(c_lean).all() and not np.isnan(c_full).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 17, 5), (1000, 3, 17), (64, 100, 10)])
def test_linear_backward_matches_seed_003_formulas(shape, dtype, rng):
    """dW = delta^T x, db = sum_rows delta, dx = delta W (seed 003, in torch's W layout)."""
    b, n_in, n_out = shape
    x = rng.standard_normal((b, n_in)).astype(dtype)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    d = rng.standard_normal((b, n_out)).astype(dtype)
    dx, dw, db = K.linear_backward(d, x, w)
    d64, x64, w64 = (v.astype(np.float64) for v in (d, x, w))
    assert rel_err(dx, d64 @ w64) <= tol(dtype)
    assert rel_err(dw, d64.T @ x64) <= tol(dtype)
    assert rel_err(db, d64.sum(axis=0)) <= tol(dtype)
    assert rel_err(K.bias_grad(d), d64.sum(axis=0)) <= tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 17, 5), (33, 100, 10), (130, 40, 100),
                                   (130, 400, 100)])
def test_gemm_row_sums_of_op_a(shape, trans_a, dtype, rng):
    """gemm's rowsum output is sum_k op(A)[i, k] for both layouts of A, whatever the
    uninitialised buffer held before (here NaN).  parallel=False (used inside parallel
    regions) gives the same bits as the parallel path, which the last shape takes."""
    from fastbp.kernels.cpu import gemm as G
    M, K_, N = shape
    a = rng.standard_normal((M, K_)).astype(dtype)
    b = rng.standard_normal((K_, N)).astype(dtype)
    A = np.ascontiguousarray(a.T if trans_a else a)
    c = np.empty((M, N), dtype)
    rowsum = np.full(M, np.nan, dtype)
    none = np.empty(0, dtype)
    empty = np.empty((0, 0), dtype)
    na, nb = G.pack_sizes(M, N, K_)
    G.gemm(A, trans_a, b, False, c, (G.EPI_NONE, none, 0, 0.0, empty, empty, empty), rowsum,
           G.pack_buffer(na, dtype), G.pack_buffer(nb, dtype), True, G.column_chunk_address(dtype))
    a64 = a.astype(np.float64)
    assert rel_err(c, a64 @ b.astype(np.float64)) <= tol(dtype)
    assert rel_err(rowsum, a64.sum(axis=1)) <= tol(dtype)
    c1 = np.empty_like(c)
    G.gemm(A, trans_a, b, False, c1, (G.EPI_NONE, none, 0, 0.0, empty, empty, empty), rowsum,
           G.pack_buffer(na, dtype), G.pack_buffer(nb, dtype), False,
           G.column_chunk_address(dtype))
    assert np.array_equal(c1, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", [(False, True), (True, False), (False, False)])
def test_gemm_packed_a_per_thread_or_shared(layout, dtype, rng):
    """A parallel product packs op(A) once per thread where the workspace has room for a
    copy each, else one copy shared by all (packed first on the calling thread), else, on
    one thread, one copy: all three give the float64 reference's values and the same bits,
    with an epilogue reading the product (ReLU gradient)."""
    import numba

    from fastbp.kernels.cpu import gemm as G
    trans_a, trans_b = layout
    M, N, K_ = 131, 200, 250           # A packed in both layouts, 13 column panels, edges
    a = rng.standard_normal((M, K_)).astype(dtype)
    b = rng.standard_normal((K_, N)).astype(dtype)
    A = np.ascontiguousarray(a.T if trans_a else a)
    B = np.ascontiguousarray(b.T if trans_b else b)
    z = rng.standard_normal((M, N)).astype(dtype)
    none = np.empty(0, dtype)
    empty = np.empty((0, 0), dtype)
    na1, nb = G.pack_sizes(M, N, K_, a_copies=1)
    outs = []
    for copies, parallel in ((numba.get_num_threads(), True), (1, True), (1, False)):
        c = np.empty((M, N), dtype)
        G.gemm(A, trans_a, B, trans_b, c, (G.EPI_ACT_GRAD, none, 1, 0.0, empty, z, z), none,
               G.pack_buffer(copies * na1, dtype), G.pack_buffer(nb, dtype), parallel,
               G.column_chunk_address(dtype))
        outs.append(c)
    ref = (a.astype(np.float64) @ b.astype(np.float64)) * (z > 0)
    assert rel_err(outs[0], ref) <= tol(dtype)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K_", [1, 7, 8, 15, 16, 24, 31, 40, 1000])
def test_gemm_transposed_b_panels_exact(K_, dtype, rng):
    """The forward's W^T panels (8x8 register transposes, then a scalar tail of K % 8)
    hold exactly op(B)'s values in k-major order, and the zero-padded edge panel too."""
    from fastbp.kernels.cpu import gemm as G
    from fastbp.kernels.cpu.microkernel import NR
    N = 2 * NR + 5                         # two full panels and an edge panel
    b = rng.standard_normal((N, K_)).astype(dtype)
    bp = np.full(((N + NR - 1) // NR) * K_ * NR, np.nan, dtype)
    Bp = bp.reshape((-1, K_, NR))
    for jp in range(Bp.shape[0]):
        G._pack_b_panel(b, True, Bp, jp, N, K_)
    padded = np.zeros((Bp.shape[0] * NR, K_), dtype)
    padded[:N] = b
    expected = padded.reshape(Bp.shape[0], NR, K_).transpose(0, 2, 1)
    np.testing.assert_array_equal(Bp, expected)
    # and through a strided view (rows further apart than K)
    wide = np.zeros((N, K_ + 9), dtype)
    wide[:, 3:3 + K_] = b
    Bp[:] = np.nan
    for jp in range(Bp.shape[0]):
        G._pack_b_panel(wide[:, 3:3 + K_], True, Bp, jp, N, K_)
    np.testing.assert_array_equal(Bp, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape_c_matches_numpy(dtype):
    """linking.reshape_c (the kernels' reshape without Numba's C helper) gives the views
    numpy's reshape gives: same values, shape and strides, sharing the buffer."""
    from numba import njit

    from fastbp.kernels.cpu.linking import reshape_c

    @njit
    def views(buf, off, rows, cols):
        m = reshape_c(buf[off:off + rows * cols], (rows, cols))
        return m, reshape_c(m, (rows * cols,)), reshape_c(buf[:24], (2, 3, 4))

    buf = np.arange(1000, dtype=dtype)
    for off, rows, cols in [(0, 1, 1), (3, 17, 3), (7, 3, 17), (0, 10, 100), (5, 0, 4)]:
        m, flat, cube = views(buf, off, rows, cols)
        ref = buf[off:off + rows * cols].reshape(rows, cols)
        for got, want in [(m, ref), (flat, ref.ravel()), (cube, buf[:24].reshape(2, 3, 4))]:
            assert got.shape == want.shape and got.strides == want.strides
            np.testing.assert_array_equal(got, want)
        if rows * cols:
            m[0, 0] = -1.0
            assert buf[off] == -1.0
            buf[off] = off


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kc", [1, 3, 17, 384])
@pytest.mark.parametrize("mr, nr", [("MR", 16), (2, 16), ("MR", 4), (1, 1), (5, 15), (3, 9),
                                    (4, 8), ("MR-1", 16), (6, 16), ("MR", 8), ("MR-1", 5),
                                    ("MR", 9)])
def test_micro_kernel_tile(mr, nr, kc, dtype, rng):
    """The vector-IR micro-kernel: a tile of mr x nr at an offset inside a larger C,
    written (accumulate=False) and then added to (True), against float64 NumPy; the rest
    of C is untouched.  Its operands packed, A in place (both layouts) and B in place, the
    last rows of A and B at the very end of their buffers (edge tiles must not read past
    them): every layout gives the same bits.  Widths up to 8 run in half-width vectors
    where a row is one vector (float32 with AVX-512), 9 and up in whole ones."""
    from fastbp.kernels.cpu.microkernel import MR, NR, micro_kernel
    mr = {"MR": MR, "MR-1": MR - 1}.get(mr, mr)         # full tiles of this CPU's shape
    a = rng.standard_normal((mr, kc)).astype(dtype)
    b = rng.standard_normal((kc, nr)).astype(dtype)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    ap = np.zeros((kc, MR), dtype)                       # packed, zero-padded panels
    ap[:, :mr] = a.T
    bp = np.zeros((kc, NR), dtype)
    bp[:, :nr] = b
    a_rows = np.ascontiguousarray(a)                     # A (mr, kc): rows kc apart
    a_cols = np.ascontiguousarray(a.T)                   # A^T (kc, mr): rows adjacent
    layouts = {                                          # Af, a_ks, a_rs, Bf, b_ks
        "packed": (ap.ravel(), MR, 1, bp.ravel(), NR),
        "A in place": (a_rows.ravel(), 1, kc, bp.ravel(), NR),
        "A^T in place": (a_cols.ravel(), mr, 1, bp.ravel(), NR),
        "all in place": (a_cols.ravel(), mr, 1, np.ascontiguousarray(b).ravel(), nr),
        "rows in place": (a_rows.ravel(), 1, kc, np.ascontiguousarray(b).ravel(), nr),
    }
    results = {}
    for name, (af, a_ks, a_rs, bf, b_ks) in layouts.items():
        c = np.full((mr + 5, nr + 7), 7.0, dtype)
        ld = c.shape[1]
        micro_kernel(af, 0, a_ks, a_rs, bf, 0, b_ks, c.ravel(), 2 * ld + 3, ld, kc, mr, nr,
                     False)
        tile = c[2:2 + mr, 3:3 + nr]
        assert rel_err(tile, ref) <= tol(dtype), name
        results[name] = tile.copy()
        micro_kernel(af, 0, a_ks, a_rs, bf, 0, b_ks, c.ravel(), 2 * ld + 3, ld, kc, mr, nr,
                     True)
        assert np.array_equal(tile, results[name] + results[name]), name
        outside = np.ones(c.shape, bool)
        outside[2:2 + mr, 3:3 + nr] = False
        assert np.all(c[outside] == 7.0), name
    for name, tile in results.items():
        assert np.array_equal(tile, results["packed"]), name


def test_seed_003_worked_example():
    """Seed 003's layer z = aW + b with a: (1, 3), W: (3, 2) and its batch-of-2 version.

    In torch's layout the weight is W^T, (2, 3); the gradients must be
    dL/dW = a^T z' (3, 2), dL/db = sum z', dL/da = z' W^T.
    """
    a = np.array([[1.0, 2.0, 3.0]])
    W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])      # w1..w6, shape (3, 2)
    zp = np.array([[0.5, -1.0]])                             # z' = dL/dz
    da, dWt, db = K.linear_backward(zp, a, W.T)
    assert np.allclose(dWt.T, a.T @ zp)                        # [[a1 z'1, a1 z'2], ...]
    assert np.allclose(dWt.T, [[0.5, -1.0], [1.0, -2.0], [1.5, -3.0]])
    assert np.allclose(db, [0.5, -1.0])
    assert np.allclose(da, zp @ W.T)                           # [w1 z'1 + w2 z'2, ...]
    assert np.allclose(da, [[0.5 - 2.0, 1.5 - 4.0, 2.5 - 6.0]])
    # batch of 2: the products sum over the batch
    a2 = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    zp2 = np.array([[0.5, -1.0], [2.0, 1.0]])
    da2, dWt2, db2 = K.linear_backward(zp2, a2, W.T)
    assert np.allclose(dWt2.T, a2.T @ zp2)
    assert np.allclose(db2, zp2.sum(axis=0))
    assert np.allclose(da2, zp2 @ W.T)
    # ReLU: dL/dz = a' * [z > 0]
    z = np.array([[1.0, -2.0], [0.0, 3.0]])
    ap = np.array([[5.0, 6.0], [7.0, 8.0]])
    assert np.array_equal(K.activation_grad(ap, z, "relu"), [[5.0, 0.0], [0.0, 8.0]])


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_and_derivatives(name, dtype, rng):
    z = (rng.standard_normal((33, 17)) * 4).astype(dtype)
    z[0, :5] = [0.0, 50.0, -50.0, 800.0, -800.0]   # saturating and overflow-prone values
    a = K.activation(z, name)
    assert np.all(np.isfinite(a))
    assert rel_err(a, ref_activation(name, z)) <= 10 * tol(dtype)
    g = rng.standard_normal(z.shape).astype(dtype)
    dg = K.activation_grad(g, z, name)
    assert rel_err(dg, g * ref_activation_grad(name, z)) <= 10 * tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu"])
def test_vectorised_activations_value_by_value(name, dtype):
    """sigmoid, tanh and GELU are vectorised polynomials, not libm's functions
    (kernels/cpu/activations.py): value by value against float64 NumPy (libm) over
    [-30, 30], tiny |z| and huge ones, within 3 ulps of the dtype (subnormal results
    included); GELU within eps * |z| more (its formula cancels in 1 + tanh(u) at negative z,
    torch's as well); their derivatives within 1e-6 (float32) or 1e-14 (float64) absolute,
    nothing non-finite from finite z, and the sign of -0.0 kept."""
    z = np.concatenate([np.linspace(-30, 30, 600_001), np.geomspace(1e-30, 1e-2, 2001),
                        -np.geomspace(1e-30, 1e-2, 2001),
                        [0.0, 87.0, 89.0, -87.0, -89.0, -100.0, 1e30, -1e30]])
    z = z.astype(dtype)
    z64 = z.astype(np.float64)
    if name == "sigmoid":      # not as 0.5 (1 + tanh(z / 2)): that cancels at negative z
        e = np.exp(-np.abs(z64))
        ref = np.where(z64 >= 0, 1 / (1 + e), e / (1 + e))
        ref_grad = ref * (1 - ref)
    else:
        ref, ref_grad = ref_activation(name, z64), ref_activation_grad(name, z64)
    a = K.activation(z[None], name)[0]
    g = K.activation_grad(np.ones_like(z)[None], z[None], name)[0]
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(g))
    info = np.finfo(dtype)
    if dtype == np.float32:
        ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    else:
        ulp = np.spacing(np.abs(ref))
    ulp = np.maximum(ulp, float(info.smallest_subnormal))
    err = np.abs(a.astype(np.float64) - ref)
    if name == "gelu":
        assert np.all(err <= 3 * ulp + info.eps * np.abs(z64))
    else:
        assert np.all(err <= 3 * ulp)
    grad_tol = 1e-6 if dtype == np.float32 else 1e-14
    assert np.max(np.abs(g.astype(np.float64) - ref_grad)) <= grad_tol
    assert np.signbit(K.activation(np.array([[-0.0]], dtype), name)[0, 0]) == (name != "sigmoid")


def _ref_log_softmax(z):
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k", [(10, 0), (10, 9), (40, 5), (40, 33), (40, 39)])
def test_cross_entropy_rows_nan_logit_gives_nan_row(n, k, dtype, rng):
    """A NaN logit anywhere in a row (first, last, inside the 8 partial sums of the
    exponentials or past them) makes that row's loss and gradient NaN and no other's, so
    that training reports the divergence."""
    from fastbp.kernels.cpu import losses as L
    z = rng.standard_normal((3, n)).astype(dtype)
    z[1, k] = np.nan
    g = np.empty_like(z)
    row_loss = np.empty(3)
    L.cross_entropy_labels_rows(z, np.array([0, 1, 2]), g, row_loss, 1.0 / 3, np.empty(0), 0.0)
    assert np.isnan(row_loss[1]) and np.all(np.isnan(g[1]))
    assert np.all(np.isfinite(row_loss[[0, 2]])) and np.all(np.isfinite(g[[0, 2]]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (17, 10), (1000, 3), (3, 131), (5, 1000)])
def test_cross_entropy_labels_and_targets(shape, dtype, rng):
    b, c = shape
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    y = rng.integers(0, c, size=b)
    ls = _ref_log_softmax(z)
    p = np.exp(ls)
    Y = np.eye(c)[y]
    loss, g = K.cross_entropy(z, y)
    assert abs(loss - (-ls[np.arange(b), y].mean())) <= 10 * tol(dtype) * max(1, abs(loss))
    assert rel_err(g, (p - Y) / b) <= 10 * tol(dtype)
    T = rng.dirichlet(np.ones(c), size=b)
    loss_t, g_t = K.cross_entropy(z, T.astype(dtype))
    assert abs(loss_t - (-(T * ls).sum(axis=1).mean())) <= 10 * tol(dtype) * max(1, loss_t)
    assert rel_err(g_t, (p - T) / b) <= 10 * tol(dtype)
    assert rel_err(K.softmax(z), p) <= 10 * tol(dtype)


def test_cross_entropy_extreme_logits_are_finite():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [3e38, 0.0, -3e38]], np.float32)
    loss, g = K.cross_entropy(z, np.array([1, 2, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    assert abs(loss - (2e4 + np.log(3)) / 3) <= 1e-6 * loss


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_and_bce(dtype, rng):
    z = (rng.standard_normal((17, 3)) * 3).astype(dtype)
    t = rng.standard_normal((17, 3)).astype(dtype)
    loss, g = K.mse(z, t)
    d = z.astype(np.float64) - t
    assert abs(loss - (d ** 2).mean()) <= 10 * tol(dtype) * loss
    assert rel_err(g, 2 * d / d.size) <= 10 * tol(dtype)
    tb = rng.integers(0, 2, size=z.shape).astype(dtype)
    z[0, 0], z[0, 1] = 200.0, -200.0
    loss_b, g_b = K.binary_cross_entropy(z, tb)
    z64 = z.astype(np.float64)
    ref = np.mean(np.logaddexp(0, z64) - z64 * tb)
    assert abs(loss_b - ref) <= 10 * tol(dtype) * ref
    assert rel_err(g_b, (ref_activation("sigmoid", z64) - tb) / z.size) <= 10 * tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_kernels_serial_and_parallel_agree(dtype, rng):
    """parallel=False (the update next to BLAS-threaded products) gives the same bits as
    the parallel loop, over a buffer of several blocks with a ragged end."""
    n = 4 * 4096 + 17
    p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    out = []
    for parallel in (True, False):
        q, v, m, s = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        for step in (1, 2):
            K.sgd_update(q, g, v, lr=0.1, momentum=0.9, weight_decay=0.01, parallel=parallel)
            K.adam_update(q, g, m, s, step=step, lr=0.01, weight_decay=0.01, decoupled=True,
                          parallel=parallel)
        out.append((q, v, m, s))
    for a, b in zip(*out):
        assert np.array_equal(a, b)


def test_blas_model_updates_on_the_calling_thread(monkeypatch):
    """With matmul="blas" the optimizers pass parallel=False: a Numba parallel region
    leaves its OpenMP workers spinning into the next step's BLAS calls."""
    from fastbp import optim as fo
    seen = []
    for name in ("sgd_update", "adam_update"):
        real = getattr(fo._optim, name)
        monkeypatch.setattr(fo._optim, name,
                            lambda *a, real=real: seen.append(a[-2]) or real(*a))
    for matmul in ("own", "blas"):
        m = fastbp.MLP([3, 4, 2], matmul=matmul, seed=0)
        m.loss_and_grad(np.ones((2, 3), np.float32), np.array([0, 1]))
        fastbp.SGD(m, 0.1, momentum=0.9).step()
        fastbp.Adam(m).step()
    assert seen == [True, True, False, False]


@pytest.mark.parametrize("dtype", DTYPES)
def test_serial_optimizer_update_same_bits(dtype, rng):
    """optimizer_update_serial (what a trainer without parallel regions compiles) gives
    the parallel optimizer_update's bits, for SGD with Nesterov momentum and L2 and for
    Adam with decoupled weight decay, over enough blocks for the parallel loop to run."""
    from fastbp.kernels.cpu import optim as O
    n = 5 * O.BLOCK + 17
    g = rng.standard_normal(n).astype(dtype)
    p0 = rng.standard_normal(n).astype(dtype)
    for code, mom, wd, nest, dec in ((O.OPT_SGD, 0.9, 0.01, True, False),
                                     (O.OPT_ADAM, 0.0, 0.01, False, True)):
        outs = []
        for fn, parallel in ((O.optimizer_update, True), (O.optimizer_update_serial, True),
                             (O.optimizer_update, False)):
            p, s1, s2 = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
            for step in (1, 2, 3):
                hyper = O.hyper_tuple(code, 0.01, mom, wd, nest, 0.9, 0.999, 1e-8, dec)
                fn(hyper, p, g, s1, s2, np.int64(step), np.bool_(parallel))
            outs.append((p, s1, s2))
        for p, s1, s2 in outs[1:]:
            assert np.array_equal(p, outs[0][0]) and np.array_equal(s1, outs[0][1])
            assert np.array_equal(s2, outs[0][2])
        assert not np.array_equal(outs[0][0], p0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_kernels_against_reference(dtype, rng):
    p = rng.standard_normal(1001).astype(dtype)
    g = rng.standard_normal(1001).astype(dtype)
    v = np.zeros_like(p)
    p_ref, v_ref = p.astype(np.float64), np.zeros(1001)
    for _ in range(3):
        K.sgd_update(p, g, v, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
        d = g + 0.01 * p_ref
        v_ref = 0.9 * v_ref + d
        p_ref = p_ref - 0.1 * (d + 0.9 * v_ref)
    assert rel_err(p, p_ref) <= 10 * tol(dtype)
    m, s = np.zeros_like(p), np.zeros_like(p)
    p0 = p.astype(np.float64)
    K.adam_update(p, g, m, s, step=1, lr=0.01, eps=1e-8)
    g64 = g.astype(np.float64)
    m_ref, v_ref = 0.1 * g64, 0.001 * g64 ** 2
    ref = p0 - (0.01 / 0.1) * m_ref / (np.sqrt(v_ref) / np.sqrt(0.001) + 1e-8)
    assert rel_err(p, ref) <= 10 * tol(dtype)
    assert rel_err(m, m_ref) <= 10 * tol(dtype) and rel_err(s, v_ref) <= 10 * tol(dtype)


def test_micro_kernel_shape_follows_the_target_cpu():
    """8 x 16 tiles in 512-bit vectors where Numba compiles for AVX-512, else 6 x 16 in AVX2
    vectors (FASTBP_EXPECT_AVX2 is set by the test below for its child process)."""
    from fastbp.kernels.cpu import microkernel as mk
    assert (mk.MR, mk.NR, mk.VECTOR_BYTES) == ((8, 16, 64) if mk.AVX512 else (6, 16, 32))
    if os.environ.get("FASTBP_EXPECT_AVX2"):
        assert not mk.AVX512
    # Portable code (NUMBA_CPU_NAME=generic, as for caches shared between machines) has no
    # AVX-512 whatever the host: the kernel must not assume it.
    env = dict(os.environ, NUMBA_CPU_NAME="generic")
    env.pop("NUMBA_CPU_FEATURES", None)
    code = "from fastbp.kernels.cpu import microkernel as m; print(m.AVX512, m.MR)"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["False", "6"]


def test_avx2_kernels_in_a_child_process():
    """On an AVX-512 machine the AVX2 shape of the micro-kernel is never compiled by the
    rest of the suite: the GEMM and micro-kernel tests run again in a child process whose
    Numba compiles for this CPU without AVX-512 (NUMBA_CPU_FEATURES), so both shapes stay
    tested.  (Elsewhere the suite itself runs the AVX2 shape.)"""
    from fastbp.kernels.cpu import microkernel as mk
    if not mk.AVX512 or os.environ.get("FASTBP_EXPECT_AVX2"):
        pytest.skip("this process already runs the AVX2 kernel")
    from numba.core.codegen import get_host_cpu_features
    features = ",".join("-" + f[1:] if f.startswith("+avx512") else f
                        for f in get_host_cpu_features().split(","))
    env = dict(os.environ, NUMBA_CPU_FEATURES=features, FASTBP_EXPECT_AVX2="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.abspath(__file__), "-k",
                        "micro_kernel or gemm or matmul or transposed_b_panels"],
                       env=env, capture_output=True, text=True, timeout=1200, check=False)
    print(r.stdout[-3000:], r.stderr[-2000:])
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout and " failed" not in r.stdout


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_with_out_overlapping_an_operand_equals_numpy(dtype, rng):
    """Issue 30 (4): matmul(a, b, out=a) (or out=b) wrote C while it still read A or B and
    returned wrong numbers (max abs error 174 on 9 of 12 layouts); NumPy's is exact."""
    from fastbp import kernels as Kk
    for trans_a in (False, True):
        for trans_b in (False, True):
            for which in ("a", "b", "part of a"):
                buf = rng.standard_normal(37 * 37 + 11).astype(dtype)
                a = buf[:37 * 37].reshape(37, 37)
                b = rng.standard_normal((37, 37)).astype(dtype)
                op_a = a.T if trans_a else a
                ref = op_a.astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
                out = {"a": a, "b": b, "part of a": buf[11:].reshape(37, 37)}[which]
                got = Kk.matmul(a, b, out=out, trans_a=trans_a, trans_b=trans_b)
                assert got is out
                assert rel_err(got, ref) <= tol(dtype), (trans_a, trans_b, which)
