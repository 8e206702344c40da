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
    from test_loss_options import assert_compiled_equals_python_with_validation
    X, y = _problem(np.float32, 200)
    model = assert_compiled_equals_python_with_validation(
        lambda: fastbp.MLP(sizes, activation=["sigmoid", "relu"], seed=0), X, y)
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


# ----------------------------------------------------------------- dropout
def _torch_with_masks(model, X, y, step):
    """Loss and gradient of model in torch, each hidden layer's output multiplied by
    fastbp's mask for this step / (1 - p)."""
    from fastbp.kernels.cpu.dropout import dropout_mask
    tm = torch_model(model)
    h = torch.from_numpy(X)
    layer = 0
    for module in tm:
        h = module(h)
        if not isinstance(module, torch.nn.Linear):       # after each hidden activation
            p = model.drop_rates[layer]
            if p:
                mask = dropout_mask(model.dropout_seed, step, layer, 0, X.shape[0],
                                    h.shape[1], p)
                h = h * torch.from_numpy(mask.astype(X.dtype)) / (1 - p)
            layer += 1
    loss = torch.nn.functional.cross_entropy(h, torch.from_numpy(y))
    loss.backward()
    grads = np.concatenate([g for m in tm if isinstance(m, torch.nn.Linear)
                            for g in (m.weight.grad.numpy().ravel(), m.bias.grad.numpy())])
    return loss.item(), grads


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_against_torch(dtype):
    X, y = _problem(dtype, 45)
    model = fastbp.MLP([8, 20, 16, 12, 3], activation=["tanh", "relu", "sigmoid"],
                       dropout=[0.3, 0.0, 0.5], dtype=dtype, seed=4)
    limit = 1e-9 if dtype == np.float64 else 1e-3
    for step in (1, 2):
        loss = model.loss_and_grad(X, y, train_step=step)
        t_loss, t_grads = _torch_with_masks(model, X, y, step)
        assert rel_err(model.grads, t_grads) <= limit
        assert abs(loss - t_loss) <= limit * abs(t_loss)
    # no train_step: no dropout, as evaluation and predict
    plain = fastbp.MLP([8, 20, 16, 12, 3], activation=["tanh", "relu", "sigmoid"],
                       dtype=dtype, seed=4)
    assert model.loss_and_grad(X, y) == plain.loss_and_grad(X, y)
    assert np.array_equal(model.forward(X), plain.forward(X))
    assert model.evaluate(X, y) == plain.evaluate(X, y)


def test_dropout_masks():
    from fastbp.kernels.cpu.dropout import dropout_mask
    for p in (0.1, 0.5, 0.8):
        mask = dropout_mask(7, 1, 0, 0, 1000, 1000, p)
        sigma = np.sqrt(p * (1 - p) / mask.size)
        assert abs(mask.mean() - (1 - p)) < 5 * sigma
        other = [dropout_mask(7, 2, 0, 0, 1000, 1000, p), dropout_mask(7, 1, 1, 0, 1000, 1000, p),
                 dropout_mask(8, 1, 0, 0, 1000, 1000, p)]
        for o in other:                       # independent: agree as often as chance says
            agree = p * p + (1 - p) * (1 - p)
            assert abs((o == mask).mean() - agree) < 5 * sigma
        assert abs(np.corrcoef(mask[:, :-1].ravel(), mask[:, 1:].ravel())[0, 1]) < 0.01
    # a part of the batch (a thread's or a rank's rows) draws its rows of the whole mask
    assert np.array_equal(dropout_mask(7, 1, 0, 300, 40, 64, 0.3),
                          dropout_mask(7, 1, 0, 0, 1000, 64, 0.3)[300:340])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_compiled_steps_equal_python_steps(monkeypatch, dtype):
    """Serial, split over 2 and 3 threads, and large steps by rows: the same bits as the
    Python path, with dropout on every hidden layer (one rate each)."""
    from fastbp.train import split as T
    from test_train import _assert_compiled_equals_python
    X, y = _problem(dtype, 69, 12, 4, seed=5)

    def make():
        return fastbp.MLP([12, 16, 9, 4], activation=["gelu", "relu"], dropout=[0.2, 0.4],
                          dtype=dtype, seed=0)
    _assert_compiled_equals_python(make, X, y, 1e-3, clip=0.5)
    for n_split in (2, 3):
        monkeypatch.setattr(T, "split_threads", lambda sizes, bs: n_split)
        _assert_compiled_equals_python(make, X, y, 1e-3)
    monkeypatch.setattr(T, "SERIAL_STEP_FLOPS", 0.0)
    monkeypatch.setattr(T, "ROW_SPLIT_MAX_FLOPS", np.inf)
    monkeypatch.setattr(T, "split_threads", lambda sizes, bs: 2)
    X, y = _problem(dtype, 69, 300, 10, seed=6)
    _assert_compiled_equals_python(lambda: fastbp.MLP([300, 70, 10], dtype=dtype, seed=0,
                                                      dropout=0.3), X, y, 1e-3, 1e-3)


def test_dropout_is_the_same_on_one_or_two_threads():
    import numba
    X, y = _problem(np.float32, 600, 64, 10, seed=7)
    runs = []
    threads = numba.get_num_threads()
    try:
        for n in (1, threads):
            numba.set_num_threads(n)
            model = fastbp.MLP([64, 256, 256, 10], dropout=0.2, seed=0)
            h = fastbp.fit(model, X, y, optimizer=fastbp.Adam(model), batch_size=100, epochs=2,
                           seed=0, verbose=0)
            runs.append((model.params.copy(), h["loss"]))
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


def test_dropout_resumes_bit_identical(tmp_path):
    """A run interrupted (Ctrl-C, step 9: a checkpoint) and resumed by a model built with
    another dropout seed (the checkpoint's is restored) ends as the uninterrupted run."""
    from test_reliability import train_with_ctrl_c
    X, y = _problem(np.float32, 96, 5, 3, seed=1)

    def train(dropout_seed=11, **options):
        model = fastbp.MLP([5, 8, 3], seed=0, dropout=0.25, dropout_seed=dropout_seed)
        return train_with_ctrl_c(model, X, y, **options)

    full, _ = train()
    ck = tmp_path / "ck"
    _, h = train(interrupt_at=9, ck=ck)
    assert h.interrupted
    done, h2 = train(resume=True, ck=ck, dropout_seed=99)
    assert done.dropout_seed == 11
    assert np.array_equal(done.params, full.params) and h2.epochs == 3


def test_dropout_module_view_and_options(tmp_path):
    X, y = _problem(np.float64, 30)
    model = fastbp.MLP([8, 6, 5, 3], activation="tanh", dropout=[0.5, 0.0], seed=2,
                       dtype=np.float64)
    assert [type(m).__name__ for m in model.layers] == [
        "Linear", "Tanh", "Dropout", "Linear", "Tanh", "Linear"]
    # the module view's n-th training forward uses the masks of step n
    out = model.layers.forward(X)
    model.loss_and_grad(X, y, train_step=1)
    assert np.array_equal(out, model.backend._last_output)
    drop = model.layers[2]
    assert np.array_equal(drop.eval().forward(X), X) and repr(drop) == "Dropout(p=0.5)"
    g = np.ones((4, 8))
    d = fastbp.Dropout(0.25, seed=3)
    y1 = d.forward(np.ones((4, 8)))
    assert np.array_equal(d.backward(g), y1)             # the mask, scaled by 1 / (1 - p)
    assert set(np.unique(y1)) <= {0.0, 1 / 0.75}
    # kept by save / load, pickle, copy; the torch state dict skips the Dropout modules
    model.save(tmp_path / "m.npz")
    for other in (fastbp.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(model)),
                  model.copy()):
        assert (other.dropout, other.dropout_seed) == ([0.5, 0.0], model.dropout_seed)
    assert list(model.to_torch_state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias",
                                                  "5.weight", "5.bias"]
    tm = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                             torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    tm.load_state_dict(model.to_torch_state_dict(tensors=True))
    back = fastbp.MLP.from_torch_state_dict(tm.state_dict(), activation="tanh",
                                            dtype=np.float64, dropout=[0.5, 0.0])
    assert np.array_equal(back.params, model.params)
    for bad, match in ((1.0, r"dropout must be in \[0, 1\)"), ([0.1], "1 rates for 2"),
                       (-0.1, "dropout must be >= 0")):
        with pytest.raises(ValueError, match=match):
            fastbp.MLP([3, 4, 4, 2], dropout=bad)
    for bad in (-1, 1 << 63, 2.5, True):
        with pytest.raises(ValueError, match="dropout_seed must be an int"):
            fastbp.MLP([3, 4, 2], dropout=0.1, dropout_seed=bad)


def test_dropout_in_the_estimators_and_cli(tmp_path):
    X, y = _problem(np.float64, 80)
    clf = fastbp.MLPClassifier((32,), dropout=0.3, max_iter=20, random_state=0).fit(X, y)
    assert clf._model.drop_rates[0] == 0.3
    assert np.array_equal(clf.predict_proba(X), clf.predict_proba(X))    # off in predict
    from fastbp.cli import main
    assert main(["train", "--hidden", "16,8", "--dropout", "0.2,0.1", "--epochs", "1",
                 "--out", str(tmp_path), "--quiet"]) == 0
    assert fastbp.load(tmp_path / "model.npz").dropout == [0.2, 0.1]
