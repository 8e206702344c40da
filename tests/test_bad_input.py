"""Bad input at every public entry point gets a ValueError/TypeError that says what is wrong."""
import numpy as np
import pytest

import fastbp
from fastbp import kernels as K


@pytest.fixture(scope="module")
def model():
    return fastbp.MLP([4, 5, 3], seed=0)


X = np.zeros((6, 4), np.float32)
Y = np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("Xb,yb,exc,match", [
    (X, np.array([0, 1, 2, 3, 1, 2]), ValueError, r"label 3, outside the valid range \[0, 2\]"),
    (X, np.array([0, -1, 2, 0, 1, 2]), ValueError, "label -1"),
    (X, Y.astype(float), TypeError, "integer class labels"),
    (np.zeros((6, 5), np.float32), Y, ValueError, "has 5 features, but the model expects 4"),
    (X, Y[:5], ValueError, "5 labels but X has 6 samples"),
    (np.zeros(4, np.float32), Y, ValueError, "must be a 2-D array.*1-D"),
    (np.zeros((6, 4, 1), np.float32), Y, ValueError, "must be a 2-D array.*3-D"),
    (np.zeros((0, 4), np.float32), Y[:0], ValueError, "empty"),
    (np.full((6, 4), np.nan, np.float32), Y, ValueError, "NaN or infinite"),
    (np.full((6, 4), np.inf), Y, ValueError, "NaN or infinite"),
    (np.array([["a"] * 4] * 6), Y, TypeError, "real numbers"),
    (X.astype(complex), Y, TypeError, "real numbers"),
    (X, Y.reshape(6, 1), ValueError, "1 columns but the model has 3 outputs"),
    (X, np.array(["a"] * 6), TypeError, "integer class labels"),
])
def test_loss_and_grad_rejects(model, Xb, yb, exc, match):
    with pytest.raises(exc, match=match):
        model.loss_and_grad(Xb, yb)


def test_predict_rejects(model):
    with pytest.raises(ValueError, match="features"):
        model.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        model.predict_proba(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="empty"):
        model.forward(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="not defined for loss='mse'"):
        fastbp.MLP([4, 1], loss="mse").predict_proba(np.zeros((1, 4)))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(sizes=[4, 0, 3]), ValueError, r"sizes\[1\] must be a positive integer"),
    (dict(sizes=[4, -2, 3]), ValueError, "positive integer"),
    (dict(sizes=[4, 2.5, 3]), TypeError, "positive integer"),
    (dict(sizes=[4]), ValueError, "at least an input and an output"),
    (dict(sizes="4,3"), TypeError, "sequence of layer widths"),
    (dict(sizes=[4, 3], activation="no_such_activation"), ValueError,
     "unknown activation 'no_such_activation'"),
    (dict(sizes=[4, 3], loss="hinge"), ValueError, "unknown loss 'hinge'"),
    (dict(sizes=[4, 3], dtype=np.int32), TypeError, "float32 or float64"),
    (dict(sizes=[4, 3], dtype=np.float16), TypeError, "float32 or float64"),
    (dict(sizes=[4, 3], init="zeros"), ValueError, "unknown init"),
])
def test_constructor_rejects(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastbp.MLP(**kwargs)


def test_regression_and_multilabel_targets_checked():
    reg = fastbp.MLP([4, 2], loss="mse")
    with pytest.raises(ValueError, match="2 outputs"):
        reg.loss_and_grad(X, np.zeros((6, 3)))
    with pytest.raises(ValueError, match="NaN"):
        reg.loss_and_grad(X, np.full((6, 2), np.nan))
    bce = fastbp.MLP([4, 2], loss="binary_cross_entropy")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bce.loss_and_grad(X, np.full((6, 2), 2.0))


def test_kernel_entry_points_reject():
    with pytest.raises(ValueError, match="2-D"):
        K.matmul(np.zeros(3), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="unknown activation"):
        K.activation(np.zeros((2, 2)), "no_such_activation")
    with pytest.raises(TypeError, match="name"):
        K.activation(np.zeros((2, 2)), 3)
    with pytest.raises(ValueError, match="outside the valid range"):
        K.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="NaN"):
        K.cross_entropy(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="features but weight expects"):
        K.linear(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="match params"):
        K.sgd_update(np.zeros(3), np.zeros(4), np.zeros(3), lr=0.1)
    with pytest.raises(ValueError, match="Linear expects 3"):
        fastbp.Linear(3, 2).forward(np.zeros((1, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        fastbp.ReLU().backward(np.zeros((1, 1)))


def test_adam_kernel_rejects_a_step_or_betas_that_make_every_parameter_nan():
    """Issue 30 (8): step=0 divided by a bias correction of zero (ZeroDivisionError, or NaN
    everywhere once the update divides without checks), as did beta2 = 1."""
    p, g = np.ones(8, np.float32), np.ones(8, np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for step in (0, -1):
        with pytest.raises(ValueError, match="step must be a positive integer"):
            K.adam_update(p, g, m, v, step)
    with pytest.raises(ValueError, match=r"betas must be in \[0, 1\)"):
        K.adam_update(p, g, m, v, 1, betas=(0.9, 1.0))
    assert np.all(p == 1.0) and np.all(m == 0.0)
    K.adam_update(p, g, m, v, 1)
    assert np.all(np.isfinite(p)) and np.all(p < 1.0)


def test_matmul_blas_without_scipy_is_a_clear_error(monkeypatch):
    """matmul="blas" needs SciPy inside Numba's np.dot; without it the first compile failed
    with Numba's "scipy 0.16+ is required for linear algebra" (issue 33)."""
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "scipy" else real(name, *a))
    with pytest.raises(ImportError, match="pip install scipy"):
        fastbp.MLP([3, 4, 2], matmul="blas")
    fastbp.MLP([3, 4, 2])          # the default needs nothing more
