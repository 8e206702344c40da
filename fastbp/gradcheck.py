"""Finite-difference check of a model's analytic gradients."""
from collections import namedtuple

import numpy as np

GradcheckResult = namedtuple(
    "GradcheckResult", "passed rel_error max_abs_error max_rel_error n_checked")


def gradcheck(model, X, y, eps=1e-6, rtol=1e-5, atol=1e-8, max_params=200, seed=0):
    """Compare model.loss_and_grad's gradient with central finite differences.

    The check runs on a float64 copy of the model (finite differences in float32 mean
    little), on up to `max_params` parameters chosen at random (all of them with
    max_params=None).  A parameter passes when |analytic - numeric| <= atol + rtol*|numeric|.

    Returns GradcheckResult(passed, rel_error, max_abs_error, max_rel_error, n_checked), where
    rel_error = ||analytic - numeric|| / ||numeric|| over the checked parameters and
    max_rel_error is the worst element-wise ratio (large for near-zero gradients).
    """
    from .model import MLP

    m64 = MLP(model.sizes, model.activation, model.loss, np.float64, init=model.init,
              **model._options())
    m64.params[...] = model.params
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if y.dtype.kind == "f":
        y = y.astype(np.float64)
    m64.loss_and_grad(X, y)
    analytic = m64.grads.copy()
    n = m64.params.size
    if max_params is None or max_params >= n:
        idx = np.arange(n)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_params, replace=False))
    max_abs = max_rel = 0.0
    passed = True
    numerics = np.empty(len(idx))
    for j, i in enumerate(idx):
        orig = m64.params[i]
        m64.params[i] = orig + eps
        up = m64.compute_loss(X, y)
        m64.params[i] = orig - eps
        down = m64.compute_loss(X, y)
        m64.params[i] = orig
        numeric = (up - down) / (2 * eps)
        numerics[j] = numeric
        err = abs(analytic[i] - numeric)
        max_abs = max(max_abs, err)
        max_rel = max(max_rel, err / max(abs(numeric), atol))
        if err > atol + rtol * abs(numeric):
            passed = False
    diff = np.linalg.norm(analytic[idx] - numerics)
    norm = np.linalg.norm(numerics)
    rel = diff / norm if norm > 0 else diff
    return GradcheckResult(passed, float(rel), float(max_abs), float(max_rel), len(idx))
