"""Label smoothing (cross-entropy) and the Huber loss: against PyTorch autograd, the
compiled step against the Python path, and what a model file keeps of them."""
import pickle

import numpy as np
import pytest
import torch

import fastbp
from conftest import DTYPES, rel_err
from test_gradients import torch_model

F = torch.nn.functional


def torch_grads(model, X, y, w, loss_fn):
    tm = torch_model(model)
    rows = loss_fn(tm(torch.from_numpy(X)), torch.from_numpy(y))
    wt = torch.from_numpy(w.astype(X.dtype))
    L = (wt * rows).sum() / wt.sum()
    L.backward()
    grads = []
    for m in tm:
        if isinstance(m, torch.nn.Linear):
            grads += [m.weight.grad.numpy().ravel(), m.bias.grad.numpy()]
    return L.item(), np.concatenate(grads)


@pytest.mark.parametrize("targets", ["labels", "probabilities"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_label_smoothing_against_torch(targets, dtype):
    rng = np.random.default_rng(0)
    model = fastbp.MLP([9, 14, 5], activation="gelu", dtype=dtype, seed=1, label_smoothing=0.15)
    X = rng.standard_normal((31, 9)).astype(dtype)
    y = (rng.integers(0, 5, 31) if targets == "labels"
         else rng.dirichlet(np.ones(5), 31).astype(dtype))
    w = rng.uniform(0, 2, 31)
    value = model.loss_and_grad(X, y, sample_weight=w)
    t_value, t_grads = torch_grads(model, X, y, w, lambda out, t: F.cross_entropy(
        out, t, label_smoothing=0.15, reduction="none"))
    limit = 1e-9 if dtype == np.float64 else 1e-3
    assert rel_err(model.grads, t_grads) <= limit
    assert abs(value - t_value) <= limit * max(1.0, abs(t_value))
    loss, g = fastbp.kernels.cross_entropy(model.forward(X), y, label_smoothing=0.15)
    zt = torch.from_numpy(model.forward(X)).requires_grad_(True)
    ref = F.cross_entropy(zt, torch.from_numpy(y), label_smoothing=0.15)
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=limit) and rel_err(g, zt.grad.numpy()) <= limit


@pytest.mark.parametrize("dtype", DTYPES)
def test_huber_delta_against_torch(dtype):
    rng = np.random.default_rng(1)
    model = fastbp.MLP([6, 10, 3], activation="tanh", loss="huber", delta=0.3, dtype=dtype,
                       seed=0)
    X = rng.standard_normal((40, 6)).astype(dtype)
    y = rng.standard_normal((40, 3)).astype(dtype)
    w = rng.uniform(0, 2, 40)
    value = model.loss_and_grad(X, y, sample_weight=w)
    t_value, t_grads = torch_grads(model, X, y, w, lambda out, t: F.huber_loss(
        out, t, delta=0.3, reduction="none").mean(dim=1))
    limit = 1e-9 if dtype == np.float64 else 1e-3
    assert rel_err(model.grads, t_grads) <= limit
    assert abs(value - t_value) <= limit * max(1.0, abs(t_value))
    assert np.array_equal(model.predict(X), model.forward(X))
    with pytest.raises(ValueError, match="predict_proba is not defined"):
        model.predict_proba(X)


@pytest.mark.parametrize("options", [dict(label_smoothing=0.1),
                                     dict(loss="huber", delta=0.5)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_steps_equal_the_python_path(options, dtype):
    rng = np.random.default_rng(2)
    huber = options.get("loss") == "huber"
    X = rng.standard_normal((150, 12)).astype(dtype)
    y = (2 * rng.standard_normal((150, 4))).astype(dtype) if huber else rng.integers(0, 4, 150)
    assert_compiled_equals_python_with_validation(
        lambda: fastbp.MLP([12, 32, 4], dtype=dtype, seed=0, **options), X, y)


def assert_compiled_equals_python_with_validation(make_model, X, y):
    """Two epochs of Adam at batch 32 with a validation split, on the compiled path and on
    the Python path (the optimizer's step replaced): the same parameters, loss and
    validation loss, bit for bit.  Returns the last model (the Python path's)."""
    runs = []
    for python in (False, True):
        model = make_model()
        opt = fastbp.Adam(model, 1e-3)
        if python:
            opt.step = opt.step
        h = fastbp.fit(model, X, y, optimizer=opt, batch_size=32, epochs=2, seed=0,
                       verbose=0, validation_split=0.2)
        runs.append((model.params.copy(), h["loss"], h["val_loss"]))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1] and runs[0][2] == runs[1][2]
    return model


def test_options_are_kept_and_checked(tmp_path):
    smooth = fastbp.MLP([3, 4, 2], label_smoothing=0.2, seed=0)
    huber = fastbp.MLP([3, 4, 2], loss="huber", delta=0.25, seed=0)
    for m in (smooth, huber):
        m.save(tmp_path / "m.npz")
        for other in (fastbp.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(m)), m.copy()):
            assert (other.label_smoothing, other.delta, other.loss_param) == \
                (m.label_smoothing, m.delta, m.loss_param)
    assert "label_smoothing" not in fastbp.MLP([3, 2]).config()     # files read as before
    assert "delta" not in fastbp.MLP([3, 2], loss="mse").config()
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        fastbp.MLP([3, 2], label_smoothing=1.0)
    with pytest.raises(ValueError, match="applies to loss='cross_entropy' only"):
        fastbp.MLP([3, 2], loss="mse", label_smoothing=0.1)
    with pytest.raises(ValueError, match="delta must be > 0"):
        fastbp.MLP([3, 2], loss="huber", delta=0.0)
    with pytest.raises(ValueError, match="label_smoothing must be >= 0"):
        fastbp.kernels.cross_entropy(np.zeros((2, 3)), [0, 1], label_smoothing=-0.1)


@pytest.mark.parametrize("options", [dict(label_smoothing=0.2), dict(loss="huber", delta=0.3)])
def test_against_finite_differences(options):
    """gradcheck builds its float64 twin with the model's loss options (it dropped them,
    checking the plain loss instead)."""
    rng = np.random.default_rng(3)
    model = fastbp.MLP([5, 7, 3], activation="tanh", dtype=np.float64, seed=1, **options)
    X = rng.standard_normal((11, 5))
    y = rng.standard_normal((11, 3)) if "delta" in options else rng.integers(0, 3, 11)
    res = fastbp.gradcheck(model, X, y, max_params=None)
    assert res.passed and res.rel_error <= 1e-7, res
    twin = model.copy()
    assert twin.loss_param == model.loss_param
