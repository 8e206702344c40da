"""Fuzzing the public API: a battery of bad inputs, each in a child process (a segfault or
a hang fails the test), and hypothesis properties over random shapes, dtypes and values."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastbp
from conftest import ACTIVATIONS, LOSSES

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "helpers"))
from bad_input_child import CASES  # noqa: E402


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_in_child_process(case):
    r = subprocess.run([sys.executable, os.path.join(HERE, "helpers", "bad_input_child.py"),
                        case], capture_output=True, text=True, timeout=180)
    out = r.stdout.strip()
    assert r.returncode == 0, f"rc={r.returncode} out={out!r} err={r.stderr[-1500:]!r}"
    kind, _, message = out.partition(": ")
    assert kind in ("ValueError", "TypeError", "NotFittedError")
    assert len(message) > 15     # says what is wrong, not just that something is


def test_battery_is_large_enough():
    assert len(CASES) >= 25


VALUES = st.sampled_from(["normal", "large", "nan", "inf", "zeros"])


@given(sizes=st.lists(st.integers(1, 12), min_size=2, max_size=4),
       batch=st.integers(1, 9), dtype=st.sampled_from([np.float32, np.float64, np.int64]),
       values=VALUES, activation=st.sampled_from(ACTIVATIONS), loss=st.sampled_from(LOSSES),
       order=st.sampled_from("CF"))
def test_loss_and_grad_is_finite_or_a_clear_error(sizes, batch, dtype, values, activation,
                                                  loss, order):
    rng = np.random.default_rng(sum(sizes) + batch)
    X = {"normal": rng.standard_normal((batch, sizes[0])),
         "large": rng.standard_normal((batch, sizes[0])) * 1e6,
         "nan": np.full((batch, sizes[0]), np.nan),
         "inf": np.full((batch, sizes[0]), -np.inf),
         "zeros": np.zeros((batch, sizes[0]))}[values]
    if dtype == np.int64 and values in ("nan", "inf"):
        values = "zeros"
        X = np.zeros((batch, sizes[0]))
    X = np.asarray(X, order=order).astype(dtype)
    model = fastbp.MLP(sizes, activation=activation, loss=loss, seed=0)
    if loss == "cross_entropy":
        y = rng.integers(0, sizes[-1], size=batch)
    else:
        y = rng.integers(0, 2, size=(batch, sizes[-1])).astype(np.float64)
    if values in ("nan", "inf"):
        with pytest.raises(ValueError, match="NaN or infinite"):
            model.loss_and_grad(X, y)
        return
    loss_value = model.loss_and_grad(X, y)
    if loss == "poisson" and values == "large":
        return        # exp of a huge log-mean overflows: the trainer reports divergence
    assert np.isfinite(loss_value) and (loss_value >= 0 or loss == "poisson")
    assert np.all(np.isfinite(model.grads))
    assert model.predict(X).shape[0] == batch


@given(M=st.integers(1, 40), K=st.integers(1, 40), N=st.integers(1, 40),
       ta=st.booleans(), tb=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]))
def test_matmul_matches_numpy_on_any_shape(M, K, N, ta, tb, dtype):
    rng = np.random.default_rng(M * 10000 + K * 100 + N)
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    c = fastbp.kernels.matmul(a, b, trans_a=ta, trans_b=tb)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    assert np.allclose(c, ref, rtol=1e-4 if dtype == np.float32 else 1e-12,
                       atol=1e-4 if dtype == np.float32 else 1e-12)


@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=3), data=st.data())
def test_random_bad_shapes_never_crash(sizes, data):
    model = fastbp.MLP(sizes, seed=0)
    shape = data.draw(st.lists(st.integers(0, 7), min_size=0, max_size=3))
    X = np.zeros(shape, np.float32)
    ok = len(shape) == 2 and shape[0] > 0 and shape[1] == sizes[0]
    try:
        out = model.forward(X)
        assert ok and out.shape == (shape[0], sizes[-1])
    except (ValueError, TypeError):
        assert not ok
