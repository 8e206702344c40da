"""fastbp optimizers against torch.optim, step for step over 20 steps."""
import numpy as np
import pytest
import torch

import fastbp
from conftest import DTYPES, rel_err
from test_gradients import torch_model

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("SGD", dict(lr=0.1, weight_decay=0.01)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=3e-3, weight_decay=0.1)),
]


@pytest.mark.parametrize("name,kwargs", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_matches_torch_over_20_steps(name, kwargs, dtype):
    rng = np.random.default_rng(11)
    model = fastbp.MLP([8, 16, 5], activation="tanh", dtype=dtype, seed=0)
    tm = torch_model(model)
    opt = getattr(fastbp, name)(model, **kwargs)
    topt = getattr(torch.optim, name)(tm.parameters(), **kwargs)
    for step in range(20):
        X = rng.standard_normal((16, 8)).astype(dtype)
        y = rng.integers(0, 5, size=16)
        model.loss_and_grad(X, y)
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tm(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        topt.step()
    t_params = np.concatenate([p.detach().numpy().ravel() for p in tm.parameters()])
    limit = 1e-9 if dtype == np.float64 else 1e-4
    assert rel_err(model.params, t_params) <= limit


def test_optimizer_state_dict_roundtrip():
    model = fastbp.MLP([3, 4, 2], seed=0)
    opt = fastbp.Adam(model, lr=0.01)
    X = np.ones((2, 3), np.float32)
    model.loss_and_grad(X, [0, 1])
    opt.step()
    state = opt.state_dict()
    other = fastbp.Adam(model, lr=0.5)
    other.load_state_dict(state)
    assert other.lr == 0.01 and other.step_count == 1
    assert np.array_equal(other.exp_avg, opt.exp_avg)
    with pytest.raises(ValueError, match="not Adam"):
        other.load_state_dict(fastbp.SGD(model, 0.1).state_dict())


def test_optimizer_bad_arguments():
    model = fastbp.MLP([3, 2], seed=0)
    with pytest.raises(ValueError, match="lr"):
        fastbp.SGD(model, lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        fastbp.SGD(model, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        fastbp.Adam(model, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="fastbp.MLP"):
        fastbp.SGD(object(), lr=0.1)
