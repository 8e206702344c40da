"""The forward-only inference path (issue 34): the training path's numbers bit for bit,
thread-safe, and nothing kept between calls."""
import threading
import tracemalloc

import numba
import numpy as np
import pytest

import fastbp
from fastbp.kernels import codes


def training_forward(model, X):
    """The training path's forward pass (the workspace the compiled steps use)."""
    be = model.backend
    return be._forward(model.check_X(X), be.workspace(X.shape[0])).copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", codes.ACTIVATION_NAMES)
def test_same_bits_as_the_training_forward(activation, dtype):
    rng = np.random.default_rng(codes.activation(activation).code)
    model = fastbp.MLP([37, 70, 19, 5], activation=activation, dtype=dtype, seed=3)
    for n in (1, 2, 7, 64, 300, 1100, 2500):
        X = rng.standard_normal((n, 37)).astype(dtype)
        want = training_forward(model, X)
        assert np.array_equal(model.forward(X), want), n
        # one thread: the tiles in turn, where two threads take a run of tiles each
        numba.set_num_threads(1)
        try:
            assert np.array_equal(model.forward(X), want), n
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("loss", codes.LOSSES)
def test_probabilities_match_float64_numpy(loss):
    rng = np.random.default_rng(0)
    model = fastbp.MLP([10, 33, 4], activation="tanh", loss=loss, seed=1)
    X = rng.standard_normal((500, 10)).astype(np.float32)
    Z = model.forward(X).astype(np.float64)
    if loss in ("mse", "poisson", "huber"):
        with pytest.raises(ValueError, match="predict_proba"):
            model.predict_proba(X)
        return
    P = model.predict_proba(X)
    if loss == "cross_entropy":
        E = np.exp(Z - Z.max(axis=1, keepdims=True))
        ref = E / E.sum(axis=1, keepdims=True)
    else:
        ref = 1 / (1 + np.exp(-Z))
    assert P.shape == Z.shape
    assert np.max(np.abs(P - ref) / np.maximum(ref, 1e-30)) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_fused_probabilities_equal_the_separate_pass(loss, dtype):
    """The softmax / sigmoid applied per tile inside the pass gives the bits of the same
    kernels run over the whole output afterwards."""
    from fastbp.kernels.cpu.losses import softmax_rows
    rng = np.random.default_rng(4)
    model = fastbp.MLP([9, 40, 6], activation="gelu", loss=loss, dtype=dtype, seed=2)
    for n in (1, 5, 700, 1500):
        X = (3 * rng.standard_normal((n, 9))).astype(dtype)
        Z = model.forward(X)
        if loss == "cross_entropy":
            want = np.empty_like(Z)
            softmax_rows(Z, want)
        else:
            want = fastbp.kernels.activation(Z, "sigmoid")
        assert np.array_equal(model.predict_proba(X), want), n


def test_non_contiguous_and_read_only_inputs():
    rng = np.random.default_rng(1)
    model = fastbp.MLP([12, 16, 3], seed=0)
    base = rng.standard_normal((40, 24)).astype(np.float32)
    X = base[:, ::2]                          # strided
    want = model.forward(np.ascontiguousarray(X))
    assert np.array_equal(model.forward(X), want)
    ro = np.ascontiguousarray(X)
    ro.flags.writeable = False
    assert np.array_equal(model.forward(ro), want)
    assert np.array_equal(model.forward(X.astype(np.float64)), want)   # converted


def test_two_threads_predicting_get_the_single_thread_answers():
    """Two threads, different inputs of the same and of other batch sizes, 300 calls each: every answer equals
    the one computed alone (the workspace was shared: wrong answers and KeyErrors)."""
    rng = np.random.default_rng(2)
    model = fastbp.MLP([30, 64, 64, 4], seed=0)
    inputs = [rng.standard_normal((n, 30)).astype(np.float32) for n in (200, 200, 200, 33, 1)]
    want = [model.predict_proba(X) for X in inputs]
    errors = []

    def work(t):
        try:
            for i in range(300):
                k = t if i % 3 else 2 + (i + t) % 3      # same sizes at once, and mixed
                if not np.array_equal(model.predict_proba(inputs[k]), want[k]):
                    errors.append((t, i))
        except Exception as exc:             # noqa: BLE001 (report, not hang)
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_predict_keeps_nothing_between_calls():
    """Predicting on several batch sizes retains no per-size buffers (it kept Z, A and the
    unused gradients for each: here 4 x 2000 x (n rows) floats)."""
    model = fastbp.MLP([64, 2000, 10], seed=0)
    rng = np.random.default_rng(3)
    batches = [rng.standard_normal((n, 64)).astype(np.float32) for n in (2000, 1500, 1000, 500)]
    model.predict(batches[-1][:5])           # compile outside the measurement
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for X in batches:
        model.predict(X)
        model.predict_proba(X)
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert kept < 4 << 20, kept
