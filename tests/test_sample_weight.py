"""Sample weights, class weights and the Poisson loss: weighted gradients against PyTorch
autograd, weights against repeated and removed rows, the compiled step against the Python
path bit for bit, fastbp.fit's and the estimators' semantics and errors, and
MLPRegressor(loss="poisson") against scikit-learn's."""
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import fastbp
from conftest import DTYPES, LOSSES, rel_err
from test_gradients import make_problem, torch_model

F = torch.nn.functional


def torch_weighted_loss(name, out, y, w):
    """sum_i w_i l_i / sum_i w_i with l_i row i's loss as PyTorch defines the mean loss
    (cross-entropy per row; the others averaged over the row's outputs)."""
    if name == "cross_entropy":
        rows = F.cross_entropy(out, y, reduction="none")
    else:
        if name == "mse":
            per = F.mse_loss(out, y, reduction="none")
        elif name == "poisson":
            per = F.poisson_nll_loss(out, y, log_input=True, full=False, reduction="none")
        elif name == "huber":
            per = F.huber_loss(out, y, delta=1.0, reduction="none")
        else:
            per = F.binary_cross_entropy_with_logits(out, y, reduction="none")
        rows = per.mean(dim=1)
    return (w * rows).sum() / w.sum()


def torch_weighted_grads(model, X, y, w, l2=0.0):
    tm = torch_model(model)
    wt = torch.from_numpy(w.astype(X.dtype))
    L = torch_weighted_loss(model.loss, tm(torch.from_numpy(X)), torch.from_numpy(y), wt)
    linears = [m for m in tm if isinstance(m, torch.nn.Linear)]
    if l2:
        L = L + 0.5 * l2 * sum((m.weight ** 2).sum() for m in linears)
    L.backward()
    grads = []
    for m in linears:
        grads += [m.weight.grad.numpy().ravel(), m.bias.grad.numpy()]
    return L.item(), np.concatenate(grads)


@pytest.mark.parametrize("loss", LOSSES + ["cross_entropy_targets"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_weighted_gradients_against_torch(loss, dtype):
    rng = np.random.default_rng(LOSSES.index(loss) if loss in LOSSES else 9)
    sizes = [11, 19, 7, 4]
    name = "cross_entropy" if loss == "cross_entropy_targets" else loss
    model = fastbp.MLP(sizes, activation="tanh", loss=name, dtype=dtype, seed=2)
    X, y = make_problem(name, sizes, 37, dtype, rng)
    if loss == "cross_entropy_targets":
        y = rng.dirichlet(np.ones(4), size=37).astype(dtype)
    w = rng.uniform(0, 3, 37)
    w[[3, 10]] = 0.0
    for l2 in (0.0, 0.05):
        value = model.loss_and_grad(X, y, l2=l2, sample_weight=w)
        t_value, t_grads = torch_weighted_grads(model, X, y, w, l2)
        limit = 1e-9 if dtype == np.float64 else 1e-3
        assert rel_err(model.grads, t_grads) <= limit, l2
        assert abs(value - t_value) <= limit * max(1.0, abs(t_value))
        assert model.compute_loss(X, y, sample_weight=w) == pytest.approx(
            value - 0.5 * l2 * sum(float((W.astype(np.float64) ** 2).sum())
                                   for W in model.weights), rel=limit)


@pytest.mark.parametrize("loss", LOSSES)
def test_functional_losses_take_weights(loss):
    rng = np.random.default_rng(4)
    z = rng.standard_normal((9, 3))
    _, y = make_problem(loss, [2, 3], 9, np.float64, rng)
    w = rng.uniform(0.1, 2, 9)
    fn = getattr(fastbp.kernels, loss)
    value, g = fn(z, y, sample_weight=w)
    zt = torch.from_numpy(z).requires_grad_(True)
    L = torch_weighted_loss(loss, zt, torch.from_numpy(y), torch.from_numpy(w))
    L.backward()
    assert value == pytest.approx(L.item(), rel=1e-12)
    assert rel_err(g, zt.grad.numpy()) <= 1e-12
    # unit weights: the unweighted kernel's bits
    v1, g1 = fn(z, y, sample_weight=np.ones(9))
    v0, g0 = fn(z, y)
    assert v1 == v0 and np.array_equal(g1, g0)


def test_integer_weights_equal_repeated_rows_and_zero_weights_removed_rows():
    """sklearn's equivalence: an integer weight k is k copies of the row, 0 removes it.
    One full batch, so that both runs see the same batches (in float64 the sums over rows
    run in another order: equal to rounding, ~1e-15)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    y = rng.integers(0, 3, 40)
    w = rng.integers(0, 4, 40)
    Xr, yr = np.repeat(X, w, axis=0), np.repeat(y, w)
    a = fastbp.MLP([6, 10, 3], dtype=np.float64, seed=0)
    b = a.copy()
    la = a.loss_and_grad(X, y, l2=0.01, sample_weight=w)
    lb = b.loss_and_grad(Xr, yr, l2=0.01)
    assert la == pytest.approx(lb, rel=1e-14) and rel_err(a.grads, b.grads) <= 1e-14
    ha = fastbp.fit(a, X, y, optimizer=fastbp.Adam(a, lr=0.01), batch_size=40, epochs=20,
                    shuffle=False, verbose=0, sample_weight=w)
    hb = fastbp.fit(b, Xr, yr, optimizer=fastbp.Adam(b, lr=0.01), batch_size=len(Xr),
                    epochs=20, shuffle=False, verbose=0)
    assert np.allclose(ha["loss"], hb["loss"], rtol=1e-12, atol=0)
    assert rel_err(a.params, b.params) <= 1e-12


def python_path(optimizer):
    """The optimizer with its step replaced by itself: fit takes the step-by-step path."""
    optimizer.step = optimizer.step
    return optimizer


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [[9, 16, 3], [64, 256, 256, 3]])
def test_compiled_weighted_steps_equal_the_python_path(loss, dtype, sizes):
    """With sample weights, per-weight L2 and a partial last batch, the compiled chunks
    (split among threads for the small network, parallel products for the larger one)
    give the Python path's bits; weights of 1 give the unweighted run's bits."""
    rng = np.random.default_rng(5)
    X, y = make_problem(loss, sizes, 203, dtype, rng)
    w = rng.uniform(0, 2, 203)
    w[:7] = 0.0
    runs = {}
    for name, weights, per_weight, make in (
            ("compiled", w, True, lambda m: fastbp.Adam(m, lr=1e-3)),
            ("python", w, True, lambda m: python_path(fastbp.Adam(m, lr=1e-3))),
            ("ones", np.ones(203), False, lambda m: fastbp.SGD(m, lr=0.01, momentum=0.9)),
            ("none", None, False, lambda m: fastbp.SGD(m, lr=0.01, momentum=0.9))):
        model = fastbp.MLP(sizes, loss=loss, dtype=dtype, seed=3)
        h = fastbp.fit(model, X, y, optimizer=make(model), batch_size=32, epochs=2, seed=1,
                       verbose=0, sample_weight=weights, l2=1e-3 if per_weight else 1e-4,
                       _l2_per_weight=per_weight, validation_split=0.1)
        runs[name] = (model.params.copy(), h["loss"], h["val_loss"])
    for a, b in (("compiled", "python"), ("ones", "none")):
        assert np.array_equal(runs[a][0], runs[b][0]), (a, b)
        assert runs[a][1] == runs[b][1] and runs[a][2] == runs[b][2], (a, b)


def test_fit_reports_weighted_losses():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((100, 5)), rng.integers(0, 3, 100)
    Xv, yv, wv = rng.standard_normal((30, 5)), rng.integers(0, 3, 30), rng.uniform(0, 5, 30)
    w = rng.uniform(0, 5, 100)
    model = fastbp.MLP([5, 8, 3], dtype=np.float64, seed=0)
    h = fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, lr=0.0), batch_size=100,
                   epochs=1, verbose=0, sample_weight=w, validation_data=(Xv, yv, wv))
    # lr 0: the training loss is the weighted loss of the initial (= final) weights
    assert h["loss"][0] == pytest.approx(model.compute_loss(X, y, sample_weight=w), rel=1e-12)
    assert h["val_loss"][0] == model.evaluate(Xv, yv, sample_weight=wv)[0]
    ref = model.compute_loss(Xv, yv, sample_weight=wv)
    assert h["val_loss"][0] == pytest.approx(ref, rel=1e-12)
    assert h["val_loss"][0] != pytest.approx(model.compute_loss(Xv, yv), rel=1e-6)


@pytest.mark.parametrize("bad, kind, message", [
    (np.ones(7), ValueError, "has 7 weights but X has 10 samples"),
    (np.ones((10, 1)), ValueError, "1-D array"),
    (np.r_[np.ones(9), np.nan], ValueError, "NaN or infinite"),
    (np.r_[np.ones(9), -1.0], ValueError, "non-negative; row 9 has -1.0"),
    (np.zeros(10), ValueError, "zero for every sample"),
    (np.array(["a"] * 10), TypeError, "real numbers"),
])
def test_bad_weights_are_clear_errors(bad, kind, message):
    model = fastbp.MLP([3, 2], seed=0)
    X, y = np.zeros((10, 3)), np.zeros(10, int)
    with pytest.raises(kind, match=message):
        fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, lr=0.1), verbose=0,
                   sample_weight=bad)
    with pytest.raises(kind, match=message):
        model.loss_and_grad(X, y, sample_weight=bad)
    assert np.all(model.grads == 0)


def test_scalar_weight_and_zero_weight_batches():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((20, 4)), rng.integers(0, 2, 20)
    a, b = (fastbp.MLP([4, 5, 2], dtype=np.float64, seed=0) for _ in range(2))
    fastbp.fit(a, X, y, optimizer=fastbp.SGD(a, lr=0.1), batch_size=5, epochs=2, seed=0,
               verbose=0, sample_weight=3.0)
    fastbp.fit(b, X, y, optimizer=fastbp.SGD(b, lr=0.1), batch_size=5, epochs=2, seed=0,
               verbose=0)
    assert rel_err(a.params, b.params) <= 1e-14    # a constant weight cancels
    # the first batch weighs nothing: its step has zero gradients and leaves plain SGD's
    # parameters alone; the rest is training on the other rows
    w = np.r_[np.zeros(5), np.ones(15)]
    d = fastbp.MLP([4, 5, 2], dtype=np.float64, seed=0)
    fastbp.fit(d, X, y, optimizer=fastbp.SGD(d, lr=0.1), batch_size=5, epochs=1,
               shuffle=False, verbose=0, sample_weight=w)
    e = fastbp.MLP([4, 5, 2], dtype=np.float64, seed=0)
    fastbp.fit(e, X[5:], y[5:], optimizer=fastbp.SGD(e, lr=0.1), batch_size=5, epochs=1,
               shuffle=False, verbose=0)
    assert np.array_equal(d.params, e.params)


# ----------------------------------------------------------------------------- estimators
def quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore", ConvergenceWarning)
    return ctx


@pytest.mark.parametrize("Est", [fastbp.MLPClassifier, fastbp.MLPRegressor])
def test_estimators_take_scikit_learns_weight_errors(Est):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 3))
    y = np.arange(12) % 3
    est = Est((4,), max_iter=2)
    for bad, message in ((np.ones(5), r"sample_weight.shape == \(5,\), expected \(12,\)!"),
                         (np.r_[np.ones(11), np.nan], "Input sample_weight contains NaN"),
                         (np.r_[np.ones(11), -1], "Negative values in data passed to"),
                         (np.zeros(12), "at least one non-zero number")):
        with pytest.raises(ValueError, match=message):
            est.fit(X, y, sample_weight=bad)
    kwargs = {"classes": [0, 1, 2]} if Est is fastbp.MLPClassifier else {}
    with pytest.raises(ValueError, match="Negative values"):
        Est((4,)).partial_fit(X, y, sample_weight=-np.ones(12), **kwargs)


def test_classifier_weights_reach_the_loss_and_class_weight_composes():
    """fit's weighted loss is the loss of the weighted problem; class_weight multiplies
    sample_weight (as scikit-learn's linear models); "balanced" is n / (k * count)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((90, 4))
    y = np.array(["a"] * 60 + ["b"] * 20 + ["c"] * 10)
    sw = rng.uniform(0.5, 2, 90)
    ctx = quiet()
    base = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0, dtype="float64",
                shuffle=False)
    a = fastbp.MLPClassifier(class_weight={"a": 0.5, "c": 3.0}, **base).fit(X, y, sw)
    per_class = {"a": 0.5, "b": 1.0, "c": 3.0}
    b = fastbp.MLPClassifier(**base).fit(X, y, sample_weight=sw * [per_class[c] for c in y])
    assert np.array_equal(a.coefs_[0], b.coefs_[0]) and a.loss_curve_ == b.loss_curve_
    c = fastbp.MLPClassifier(class_weight="balanced", **base).fit(X, y)
    counts = {"a": 60, "b": 20, "c": 10}
    d = fastbp.MLPClassifier(**base).fit(X, y, sample_weight=[90 / (3 * counts[c]) for c in y])
    assert np.array_equal(c.coefs_[0], d.coefs_[0])
    # the minority classes gain recall with balanced weights
    plain = fastbp.MLPClassifier(**dict(base, max_iter=200)).fit(X, y)
    bal = fastbp.MLPClassifier(class_weight="balanced", **dict(base, max_iter=200)).fit(X, y)
    recall = lambda est: np.mean(est.predict(X[y == "c"]) == "c")   # noqa: E731
    assert recall(bal) >= recall(plain)
    with pytest.raises(ValueError, match="not supported for partial_fit"):
        fastbp.MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"classes \['z'\]"):
        fastbp.MLPClassifier(class_weight={"z": 2.0}, **base).fit(X, y)
    fastbp.MLPClassifier(class_weight={"c": 2.0}, **base).partial_fit(X, y, classes=["a", "b", "c"])
    ctx.__exit__(None, None, None)


def test_weights_in_a_pipeline_and_weighted_early_stopping():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    rng = np.random.default_rng(4)
    X = rng.standard_normal((200, 5))
    y = (X[:, 0] > 0).astype(int)
    sw = rng.uniform(0, 2, 200)
    ctx = quiet()
    pipe = make_pipeline(StandardScaler(), fastbp.MLPClassifier((8,), max_iter=20,
                                                                random_state=0))
    pipe.fit(X, y, mlpclassifier__sample_weight=sw)
    est = fastbp.MLPClassifier((8,), max_iter=15, random_state=0, early_stopping=True,
                               n_iter_no_change=50).fit(X, y, sample_weight=sw)
    assert len(est.validation_scores_) == 15
    reg = fastbp.MLPRegressor((8,), max_iter=5, random_state=0, early_stopping=True,
                              n_iter_no_change=50).fit(X, X[:, 0], sample_weight=sw)
    assert len(reg.validation_scores_) == 5
    ctx.__exit__(None, None, None)


def test_mlp_poisson_predicts_means():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((400, 3))
    y = rng.poisson(np.exp(0.5 * X[:, :1] + 0.3)).astype(np.float64)
    model = fastbp.MLP([3, 16, 1], loss="poisson", dtype=np.float64, seed=0)
    fastbp.fit(model, X, y, optimizer=fastbp.Adam(model, lr=0.01), epochs=60, verbose=0,
               seed=0)
    pred = model.predict(X)
    assert np.all(pred > 0) and np.array_equal(pred, np.exp(model.forward(X)))
    with pytest.raises(ValueError, match="non-negative for the poisson loss"):
        model.loss_and_grad(X, -y)
    with pytest.raises(ValueError, match="predict_proba is not defined"):
        model.predict_proba(X)
    truth = np.exp(0.5 * X[:, :1] + 0.3)
    assert np.mean(np.abs(pred - truth)) < 0.25


def test_poisson_regressor_matches_scikit_learn():
    """MLPRegressor(loss="poisson") against scikit-learn's, same settings and data: the
    mean Poisson deviance on held-out counts, averaged over four seeds (one seed's spread
    is about 0.01 for either), within 0.01 of each other and of the true means'."""
    from sklearn.metrics import mean_poisson_deviance
    from sklearn.neural_network import MLPRegressor
    rng = np.random.default_rng(7)
    X = rng.uniform(-1, 1, (3000, 4))
    mu = np.exp(0.8 * X[:, 0] - 0.5 * X[:, 1] ** 2 + 0.3 * X[:, 2] * X[:, 3] + 0.5)
    y = rng.poisson(mu).astype(np.float64)
    X_tr, X_te, y_tr, y_te = X[:2000], X[2000:], y[:2000], y[2000:]
    ctx = quiet()
    d_ours, d_theirs = [], []
    for seed in range(4):
        settings = dict(hidden_layer_sizes=(32,), learning_rate_init=0.003, max_iter=300,
                        random_state=seed, alpha=1e-4)
        ours = fastbp.MLPRegressor(loss="poisson", **settings).fit(X_tr, y_tr)
        theirs = MLPRegressor(loss="poisson", **settings).fit(X_tr, y_tr)
        assert ours.out_activation_ == "exp" and np.all(ours.predict(X_te) > 0)
        d_ours.append(mean_poisson_deviance(y_te, ours.predict(X_te)))
        d_theirs.append(mean_poisson_deviance(y_te, theirs.predict(X_te)))
    ctx.__exit__(None, None, None)
    oracle = mean_poisson_deviance(y_te, mu[2000:])
    assert abs(np.mean(d_ours) - np.mean(d_theirs)) <= 0.01, (d_ours, d_theirs)
    assert np.mean(d_ours) - oracle <= 0.015, (d_ours, oracle)
    with pytest.raises(ValueError, match="non-negative targets"):
        fastbp.MLPRegressor(loss="poisson").fit(X_tr, -y_tr)
    with pytest.raises(ValueError, match="loss must be one of"):
        fastbp.MLPRegressor(loss="huber").fit(X_tr, y_tr)
