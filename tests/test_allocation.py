"""The steady-state training step (loss_and_grad + optimizer step) allocates nothing.

Numba's runtime counts one allocation per array argument passed in from Python (the
MemInfo that wraps the NumPy buffer, freed on return).  So a kernel allocates nothing of its
own exactly when its count equals its number of array arguments; and a training step
allocates no data when its count does not grow with the problem size and NumPy/Python
(tracemalloc) sees nothing retained.
"""
import tracemalloc

import numpy as np
import pytest
from numba.core.runtime import _nrt_python, rtsys

import fastbp
from fastbp.kernels.cpu import gemm as G
from fastbp.kernels.cpu import losses as L
from fastbp.kernels.cpu import optim as O
from fastbp.runtime import ensure_threads


@pytest.fixture(autouse=True, scope="module")
def nrt_stats():
    # These tests call compiled kernels directly, not through fastbp's Python entries,
    # which start Numba's thread pool first: a parallel kernel loaded from the cache
    # crashes the process otherwise (numba/numba#8578; runtime.ensure_threads).
    ensure_threads()
    _nrt_python.memsys_enable_stats()
    yield
    _nrt_python.memsys_disable_stats()


def nrt_allocs(fn, *args):
    fn(*args)  # compile
    before = rtsys.get_allocation_stats().alloc
    fn(*args)
    return rtsys.get_allocation_stats().alloc - before


def test_hot_path_kernels_allocate_only_their_argument_wrappers():
    f = np.float32
    a, b = np.ones((64, 32), f), np.ones((32, 16), f)
    c, z = np.empty((64, 16), f), np.ones((64, 16), f)
    e, n, bias = np.empty((0, 0), f), np.empty(0, f), np.zeros(16, f)
    ap, bp = np.empty(1 << 16, f), np.empty(1 << 16, f)
    chunk = G.column_chunk_address(f)
    cases = [
        (G.gemm, (a, False, b, False, c, (G.EPI_BIAS_ACT, bias, 1, 0.0, np.empty_like(c), e, e),
                  n, ap, bp, True, chunk)),
        (G.gemm, (c, False, b, True, a, (G.EPI_ACT_GRAD, n, 3, 0.0, e, a, a), n, ap, bp, False,
                  chunk)),
        (G.gemm, (c, True, a, False, np.empty((16, 32), f), (G.EPI_NONE, n, 0, 0.0, e, e, e),
                  bias, ap, bp, True, chunk)),
        (L.cross_entropy_labels, (z, np.zeros(64, np.int64), c, np.empty(64), np.empty(0), 0.1)),
        (L.huber, (z, z * 0, c, np.empty(64), np.empty(0), 0.5)),
        (L.mse, (z, z, c, np.empty(64), np.ones(64))),
        (L.binary_cross_entropy, (z, z * 0, c, np.empty(64), np.empty(0))),
        (L.poisson, (z, z * 0, c, np.empty(64), np.ones(64))),
        (O.sgd_update, (bias, bias, bias.copy(), 0.1, 0.9, 0.0, True, True, 1.0)),
        (O.adam_update, (bias, bias, bias.copy(), bias.copy(), 0.1, (0.9, 0.99), 1e-8, 0.0, False,
                         1, True, 1.0)),
    ]
    for fn, args in cases:
        # gemm is compiled without reference counting: not even the argument wrappers
        n_arrays = 0 if fn is G.gemm else sum(isinstance(x, np.ndarray) for x in args)
        assert nrt_allocs(fn, *args) == n_arrays, fn


def _step_allocs(sizes, batch):
    rng = np.random.default_rng(0)
    model = fastbp.MLP(sizes, seed=0)
    opt = fastbp.SGD(model, lr=0.01, momentum=0.9)
    X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=batch)
    for _ in range(3):  # compile and build the workspace
        model.loss_and_grad(X, y)
        opt.step()
    before = rtsys.get_allocation_stats().alloc
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for _ in range(10):
        model.loss_and_grad(X, y)
        opt.step()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    nrt = rtsys.get_allocation_stats().alloc - before
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename") if s.size_diff > 0)
    return nrt, grown


def test_steady_state_step_allocates_nothing():
    small_nrt, small_grown = _step_allocs([16, 32, 10], 8)
    big_nrt, big_grown = _step_allocs([64, 256, 10], 512)
    assert small_nrt == big_nrt          # argument wrappers only: independent of sizes
    assert small_grown < 4096 and big_grown < 4096, (small_grown, big_grown)
