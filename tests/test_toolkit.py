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
                 "--out", str(tmp_path), "--quiet"]) == 0
    assert fastbp.load(tmp_path / "model.npz").activations == ("tanh", "relu")
    assert main(["train", "--hidden", "16,8", "--activation", "tanh", "--epochs", "1",
                 "--out", str(tmp_path / "b"), "--quiet", "--activation", "tanh,relu,gelu"]) == 1
