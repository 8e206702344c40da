"""MLP gradients for every activation x loss against finite differences (float64) and
PyTorch autograd (float32 and float64)."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastbp
from conftest import ACTIVATIONS, DTYPES, LOSSES, rel_err

TORCH_ACT = {
    "identity": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leaky_relu": lambda: torch.nn.LeakyReLU(0.01),
    "sigmoid": torch.nn.Sigmoid,
    "tanh": torch.nn.Tanh,
    "gelu": lambda: torch.nn.GELU(approximate="tanh"),
    "silu": torch.nn.SiLU,
    "softplus": torch.nn.Softplus,
}


def test_registry_names_its_torch_equivalents():
    """Each registry entry's torch expression is the module the tests check it against."""
    from fastbp.kernels import codes
    nn = torch.nn
    assert set(TORCH_ACT) == set(codes.ACTIVATION_NAMES)
    for a in codes.ACTIVATIONS:
        assert repr(eval(a.torch, {"nn": nn})) == repr(TORCH_ACT[a.name]()), a.name


def torch_model(model):
    """torch.nn.Sequential with the same weights as a fastbp MLP."""
    tdtype = torch.float64 if model.dtype == np.float64 else torch.float32
    mods = []
    for l in range(model.n_layers):
        lin = torch.nn.Linear(model.sizes[l], model.sizes[l + 1], dtype=tdtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(model.weights[l].copy()))
            lin.bias.copy_(torch.from_numpy(model.biases[l].copy()))
        mods.append(lin)
        if l < model.n_layers - 1:
            mods.append(TORCH_ACT[model.activations[l]]())
    return torch.nn.Sequential(*mods)


def torch_loss(name, out, y):
    F = torch.nn.functional
    if name == "cross_entropy":
        return F.cross_entropy(out, y)
    if name == "mse":
        return F.mse_loss(out, y)
    if name == "poisson":
        return F.poisson_nll_loss(out, y, log_input=True, full=False)
    if name == "huber":
        return F.huber_loss(out, y, delta=1.0)
    return F.binary_cross_entropy_with_logits(out, y)


def make_problem(loss, sizes, batch, dtype, rng):
    X = rng.standard_normal((batch, sizes[0])).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, sizes[-1], size=batch)
    elif loss in ("mse", "huber"):
        y = (2 * rng.standard_normal((batch, sizes[-1]))).astype(dtype)   # both sides of delta
    elif loss == "poisson":
        y = rng.poisson(2.0, size=(batch, sizes[-1])).astype(dtype)
    else:
        y = rng.integers(0, 2, size=(batch, sizes[-1])).astype(dtype)
    return X, y


def torch_grads(model, X, y):
    tm = torch_model(model)
    yt = torch.from_numpy(y)
    out = tm(torch.from_numpy(X))
    L = torch_loss(model.loss, out, yt)
    L.backward()
    grads = []
    for mod in tm:
        if isinstance(mod, torch.nn.Linear):
            grads += [mod.weight.grad.numpy().ravel(), mod.bias.grad.numpy()]
    return L.item(), np.concatenate(grads), out.detach().numpy()


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_against_torch_autograd(activation, loss, dtype):
    rng = np.random.default_rng(ACTIVATIONS.index(activation) * 10 + LOSSES.index(loss))
    sizes = [17, 33, 9, 3]
    model = fastbp.MLP(sizes, activation=activation, loss=loss, dtype=dtype, seed=0)
    X, y = make_problem(loss, sizes, 29, dtype, rng)
    value = model.loss_and_grad(X, y)
    t_value, t_grads, t_out = torch_grads(model, X, y)
    limit = 1e-9 if dtype == np.float64 else 1e-3
    assert rel_err(model.grads, t_grads) <= limit
    assert abs(value - t_value) <= limit * max(1.0, abs(t_value))
    assert rel_err(model.forward(X), t_out) <= limit


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_against_finite_differences(activation, loss):
    rng = np.random.default_rng(7)
    sizes = [5, 7, 6, 3]
    model = fastbp.MLP(sizes, activation=activation, loss=loss, dtype=np.float64, seed=1)
    X, y = make_problem(loss, sizes, 11, np.float64, rng)
    if activation in ("relu", "leaky_relu"):
        X += 0.01  # keep pre-activations off the kink at 0 (not hit by random data anyway)
    res = fastbp.gradcheck(model, X, y, max_params=None)
    assert res.passed, res
    assert res.rel_error <= 1e-7 and res.max_abs_error <= 1e-8


def test_cross_entropy_probability_targets_against_torch():
    rng = np.random.default_rng(3)
    model = fastbp.MLP([6, 8, 4], activation="tanh", dtype=np.float64, seed=2)
    X = rng.standard_normal((13, 6))
    T = rng.dirichlet(np.ones(4), size=13)
    model.loss_and_grad(X, T)
    _, t_grads, _ = torch_grads(model, X, T)
    assert rel_err(model.grads, t_grads) <= 1e-9


@given(sizes=st.lists(st.sampled_from([1, 3, 17]), min_size=2, max_size=4),
       batch=st.sampled_from([1, 3, 17]),
       activation=st.sampled_from(ACTIVATIONS),
       loss=st.sampled_from(LOSSES),
       order=st.sampled_from("CF"))
def test_random_architectures_against_torch(sizes, batch, activation, loss, order):
    if loss == "cross_entropy" and sizes[-1] == 1:
        sizes = sizes[:-1] + [3]
    rng = np.random.default_rng(len(sizes) * 100 + batch)
    model = fastbp.MLP(sizes, activation=activation, loss=loss, dtype=np.float64, seed=3)
    X, y = make_problem(loss, sizes, batch, np.float64, rng)
    Xo = np.asfortranarray(X) if order == "F" else X
    model.loss_and_grad(Xo, y)
    _, t_grads, _ = torch_grads(model, X, y)
    assert rel_err(model.grads, t_grads) <= 1e-9


@pytest.mark.parametrize("dtype", DTYPES)
def test_module_view_matches_mlp(dtype):
    """Sequential of Linear/activation modules: forward, backward and weight grads agree with
    the fused MLP path and with torch."""
    rng = np.random.default_rng(5)
    model = fastbp.MLP([10, 12, 4], activation="gelu", dtype=dtype, seed=4)
    X = rng.standard_normal((9, 10)).astype(dtype)
    y = rng.integers(0, 4, size=9)
    model.loss_and_grad(X, y)
    fused = model.grads.copy()
    seq = model.layers
    out = seq.forward(X)
    limit = 1e-12 if dtype == np.float64 else 1e-5
    assert rel_err(out, model.forward(X)) <= limit
    _, g = fastbp.kernels.cross_entropy(out, y)
    dx = seq.backward(g)
    assert rel_err(model.grads, fused) <= limit
    # torch's input gradient
    tm = torch_model(model)
    xt = torch.from_numpy(X).requires_grad_(True)
    torch.nn.functional.cross_entropy(tm(xt), torch.from_numpy(y)).backward()
    assert rel_err(dx, xt.grad.numpy()) <= (1e-9 if dtype == np.float64 else 1e-3)


def test_standalone_linear_and_sequential():
    rng = np.random.default_rng(0)
    net = fastbp.Sequential(fastbp.Linear(4, 3, dtype=np.float64, seed=0), fastbp.Tanh(),
                            fastbp.Linear(3, 2, dtype=np.float64, seed=1))
    X = rng.standard_normal((5, 4))
    out = net.forward(X)
    lin1, lin2 = net[0], net[2]
    ref = np.tanh(X @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    assert rel_err(out, ref) <= 1e-12
    dy = rng.standard_normal(out.shape)
    dx = net.backward(dy)
    h = np.tanh(X @ lin1.weight.T + lin1.bias)
    assert rel_err(lin2.weight_grad, dy.T @ h) <= 1e-12
    assert rel_err(lin2.bias_grad, dy.sum(0)) <= 1e-12
    dh = (dy @ lin2.weight) * (1 - h ** 2)
    assert rel_err(lin1.weight_grad, dh.T @ X) <= 1e-12
    assert rel_err(dx, dh @ lin1.weight) <= 1e-12
    assert len(net.parameters()) == 4


def test_init_matches_torch_linear_bounds():
    model = fastbp.MLP([784, 512, 10], seed=0)
    bound = 1 / np.sqrt(784)
    assert np.abs(model.weights[0]).max() <= bound and np.abs(model.biases[0]).max() <= bound
    assert model.weights[0].std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
    he = fastbp.MLP([784, 512, 10], seed=0, init="he")
    assert he.weights[0].std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert np.all(he.biases[0] == 0)
    xa = fastbp.MLP([784, 512, 10], seed=0, init="xavier")
    assert np.abs(xa.weights[0]).max() <= np.sqrt(6 / (784 + 512))
    # flat buffer layout: views, not copies
    model.weights[1][0, 0] = 42.0
    assert model.params[784 * 512 + 512] == 42.0
    assert np.shares_memory(model.weight_grads[0], model.grads)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_kernels_against_torch_at_extremes(activation, dtype):
    """f and grad * f' element by element against torch, past every threshold (softplus'
    20, the exp clamps) and at tiny and saturated values."""
    z = np.array([-1e4, -90.0, -30.0, -20.5, -3.0, -1e-30, 0.0, 1e-30, 0.7, 19.9, 20.5,
                  30.0, 90.0, 1e4], dtype)
    g = np.linspace(0.5, 2.0, z.size).astype(dtype)
    zt = torch.tensor(z, requires_grad=True)
    ft = TORCH_ACT[activation]()(zt)
    ft.backward(torch.from_numpy(g))
    f = fastbp.kernels.activation(z[None, :], activation)[0]
    df = fastbp.kernels.activation_grad(g[None, :], z[None, :], activation)[0]
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(f, ft.detach().numpy(), rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(df, zt.grad.numpy(), rtol=rtol, atol=1e-30)
