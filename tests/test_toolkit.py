"""The modelling toolkit: a different activation per hidden layer and gradient clipping.
Each against PyTorch autograd (or torch.nn.utils), the compiled step against the Python
path, and what a model file, the torch state dict and ONNX keep of them."""
import pickle

import numpy as np
import pytest
import torch

import fastbp
from conftest import DTYPES, rel_err
from test_gradients import torch_model

MIXED = ["tanh", "relu", "gelu", "identity"]     # four hidden layers, lean and full epilogues


def _problem(dtype, n=90, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, k, n)


# ----------------------------------------------------------------- per-layer activations
@pytest.mark.parametrize("dtype", DTYPES)
def test_per_layer_activations_against_torch(dtype):
    X, y = _problem(dtype, 37)
    model = fastbp.MLP([8, 11, 9, 7, 6, 3], activation=MIXED, dtype=dtype, seed=1)
    assert model.activations == tuple(MIXED) and list(model.act_codes[-1:]) == [0]
    loss = model.loss_and_grad(X, y)
    tm = torch_model(model)
    assert [type(m).__name__ for m in tm][1::2] == ["Tanh", "ReLU", "GELU", "Identity"]
    out = tm(torch.from_numpy(X))
    t_loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
    t_loss.backward()
    t_grads = np.concatenate([g for m in tm if isinstance(m, torch.nn.Linear)
                              for g in (m.weight.grad.numpy().ravel(), m.bias.grad.numpy())])
    limit = 1e-9 if dtype == np.float64 else 1e-3
    assert rel_err(model.grads, t_grads) <= limit
    assert abs(loss - t_loss.item()) <= limit * abs(t_loss.item())
    assert rel_err(model.forward(X), out.detach().numpy()) <= limit
    assert fastbp.gradcheck(model.copy(), X[:9], y[:9]).passed


@pytest.mark.parametrize("sizes", [[8, 24, 16, 3], [8, 300, 200, 3]])   # split / parallel
def test_per_layer_compiled_equals_python_path(sizes):
    X, y = _problem(np.float32, 200)
    acts = ["sigmoid", "relu"]
    runs = []
    for python in (False, True):
        model = fastbp.MLP(sizes, activation=acts, seed=0)
        opt = fastbp.Adam(model, 1e-3)
        if python:
            opt.step = opt.step
        h = fastbp.fit(model, X, y, optimizer=opt, batch_size=32, epochs=2, seed=0,
                       verbose=0, validation_split=0.2)
        runs.append((model.params.copy(), h["loss"], h["val_loss"]))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][1:] == runs[1][1:]
    # inference (its own compiled pass) gives the training forward's bits
    model.loss_and_grad(X[:50], y[:50])
    assert np.array_equal(model.forward(X[:50]), model.backend._last_output)


def test_per_layer_activations_are_kept(tmp_path):
    X, _ = _problem(np.float32, 20)
    model = fastbp.MLP([8, 6, 5, 3], activation=["softplus", "leaky_relu"], seed=2)
    want = model.forward(X)
    model.save(tmp_path / "m.npz")
    for other in (fastbp.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(model)),
                  model.copy()):
        assert other.activations == ("softplus", "leaky_relu")
        assert np.array_equal(other.forward(X), want)
    # torch: the state dict into a Sequential with the same modules, and back
    tm = torch_model(model)
    back = fastbp.MLP.from_torch_state_dict(tm.state_dict(),
                                            activation=["softplus", "leaky_relu"])
    assert np.array_equal(back.forward(X), want)
    # the module view and ONNX
    assert [type(m).__name__ for m in model.layers][1::2] == ["Softplus", "LeakyReLU"]
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(fastbp.to_onnx(model).SerializeToString())
    (got,) = sess.run(None, {"X": X})
    assert np.max(np.abs(got - model.predict_proba(X))) <= 1e-6
    assert "MLP(sizes=[8, 6, 5, 3], activation=['softplus', 'leaky_relu']" in repr(model)


def test_per_layer_activations_are_checked():
    with pytest.raises(ValueError, match="activation lists 1 names for 2 hidden layers"):
        fastbp.MLP([3, 4, 4, 2], activation=["relu"])
    with pytest.raises(ValueError, match="unknown activation 'rleu'"):
        fastbp.MLP([3, 4, 4, 2], activation=["relu", "rleu"])
    with pytest.raises(TypeError, match="one name per hidden layer"):
        fastbp.MLP([3, 4, 2], activation=3)
    assert fastbp.MLP([3, 2], activation=[]).activations == ()


def test_estimators_and_cli_take_one_activation_per_layer(tmp_path):
    X, y = _problem(np.float64, 60)
    clf = fastbp.MLPClassifier((10, 6), activation=["tanh", "logistic"], max_iter=5,
                               random_state=0).fit(X, y)
    assert clf._model.activations == ("tanh", "sigmoid")
    with pytest.raises(ValueError, match="one of them per hidden layer"):
        fastbp.MLPClassifier((10, 6), activation=["tanh"]).fit(X, y)
    from fastbp.cli import main
    assert main(["train", "--hidden", "16,8", "--activation", "tanh,relu", "--epochs", "1",
                 "--clip-grad-norm", "0.5", "--out", str(tmp_path), "--quiet"]) == 0
    assert fastbp.load(tmp_path / "model.npz").activations == ("tanh", "relu")
    assert main(["train", "--hidden", "16,8", "--activation", "tanh", "--epochs", "1",
                 "--out", str(tmp_path / "b"), "--quiet", "--activation", "tanh,relu,gelu"]) == 1


# ----------------------------------------------------------------- gradient clipping
def _torch_sgd_with_clipping(model, X, y, steps, max_norm, lr=0.05, momentum=0.9):
    """Parameters after `steps` full-batch SGD steps in torch with clip_grad_norm_."""
    tm = torch_model(model)
    opt = torch.optim.SGD(tm.parameters(), lr=lr, momentum=momentum)
    norms = []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(tm(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        norms.append(torch.nn.utils.clip_grad_norm_(tm.parameters(), max_norm).item())
        opt.step()
    params = np.concatenate([p.detach().numpy().ravel() for m in tm
                             if isinstance(m, torch.nn.Linear) for p in (m.weight, m.bias)])
    return params, norms


@pytest.mark.parametrize("dtype", DTYPES)
def test_clipping_against_torch(dtype):
    X, y = _problem(dtype, 40)
    model = fastbp.MLP([8, 12, 7, 3], activation=["tanh", "relu"], dtype=dtype, seed=3)
    want, t_norms = _torch_sgd_with_clipping(model, X, y, 6, max_norm=0.1)
    # the function, as torch's: returns the norm, scales the gradient in place
    twin = model.copy()
    twin.loss_and_grad(X, y)
    unclipped = twin.grads.copy()
    norm = fastbp.clip_grad_norm_(twin, 0.1)
    limit = 1e-9 if dtype == np.float64 else 1e-3
    assert abs(norm - t_norms[0]) <= limit * t_norms[0]
    assert rel_err(twin.grads, unclipped * (0.1 / (norm + 1e-6))) <= limit
    # the optimizer's option: the update takes the clipped gradient
    opt = fastbp.SGD(model, 0.05, momentum=0.9, clip_grad_norm=0.1)
    for _ in range(6):
        model.loss_and_grad(X, y)
        opt.step()
    assert min(t_norms) > 0.1                      # every step was clipped
    assert rel_err(model.params, want) <= limit
    # a norm under the limit leaves the gradient alone, bit for bit
    model.loss_and_grad(X, y)
    g = model.grads.copy()
    assert fastbp.clip_grad_norm_(model, 1e9) > 0 and np.array_equal(model.grads, g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clipped_compiled_steps_equal_python_steps(monkeypatch, dtype):
    """Serial, split over 2 and 3 threads (a third phase: every thread's rows of dW before
    any update) and large parallel steps shared out by rows: the same bits as the Python
    path, with L2 and a clipping norm that cuts most steps."""
    from fastbp.train import split as T
    from test_train import _assert_compiled_equals_python
    X, y = _problem(dtype, 69, 12, 4, seed=5)
    make = lambda: fastbp.MLP([12, 16, 9, 4], activation=["gelu", "relu"], dtype=dtype, seed=0)  # noqa: E731
    _assert_compiled_equals_python(make, X, y, 1e-3, clip=0.3)
    for n_split in (2, 3):
        monkeypatch.setattr(T, "split_threads", lambda sizes, bs: n_split)
        _assert_compiled_equals_python(make, X, y, 1e-3, clip=0.3)
    monkeypatch.setattr(T, "SERIAL_STEP_FLOPS", 0.0)
    monkeypatch.setattr(T, "ROW_SPLIT_MAX_FLOPS", np.inf)
    monkeypatch.setattr(T, "split_threads", lambda sizes, bs: 2)
    X, y = _problem(dtype, 69, 300, 10, seed=6)
    _assert_compiled_equals_python(lambda: fastbp.MLP([300, 70, 10], dtype=dtype, seed=0), X, y,
                                   1e-3, 1e-3, clip=0.3)


def test_clipping_is_checked_and_kept():
    model = fastbp.MLP([3, 4, 2], seed=0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="clip_grad_norm"):
            fastbp.Adam(model, clip_grad_norm=bad)
    opt = fastbp.AdamW(model, clip_grad_norm=2.5)
    state = opt.state_dict()
    assert state["clip_grad_norm"] == 2.5
    other = fastbp.AdamW(model)
    other.load_state_dict(state)
    assert other.clip_grad_norm == 2.5
    with pytest.raises(ValueError, match="clip_grad_norm"):
        other.load_state_dict({**state, "clip_grad_norm": -1})
