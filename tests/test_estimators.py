"""fastbp.MLPClassifier / MLPRegressor as scikit-learn estimators."""
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits, make_multilabel_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastbp


def _float32_equivalence(estimator):
    """The checks the default (float32) estimators are expected to fail, and why."""
    why = ("float32: integer weights and repeated rows sum the same terms in another "
           "order, equal to float32 rounding (7e-7 relative), not to the check's rtol of "
           "1e-7; the float64 estimators pass it (test_sample_weight_checks_in_float64)")
    return {f"check_sample_weight_equivalence_on_{kind}_data": why
            for kind in ("dense", "sparse")}


@parametrize_with_checks([fastbp.MLPClassifier(), fastbp.MLPRegressor()],
                         expected_failed_checks=_float32_equivalence)
def test_sklearn_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


SAMPLE_WEIGHT_CHECKS = ["check_sample_weight_equivalence_on_dense_data",
                        "check_sample_weight_equivalence_on_sparse_data",
                        "check_sample_weights_not_an_array", "check_sample_weights_list",
                        "check_sample_weights_shape", "check_sample_weights_not_overwritten"]


@pytest.mark.parametrize("name", SAMPLE_WEIGHT_CHECKS)
@pytest.mark.parametrize("Est", [fastbp.MLPClassifier, fastbp.MLPRegressor])
def test_sample_weight_checks_in_float64(Est, name):
    """scikit-learn's sample-weight checks, by name, on the float64 estimators: weights
    equal repeated / removed rows to the check's 1e-7."""
    from sklearn.utils import estimator_checks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        getattr(estimator_checks, name)(Est.__name__, Est(dtype="float64"))


def test_check_estimator_runs_the_sample_weight_and_sparse_checks():
    from sklearn.utils.estimator_checks import check_estimator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(fastbp.MLPRegressor(max_iter=5), on_fail=None,
                                  expected_failed_checks=_float32_equivalence(None))
    ran = {r["check_name"]: r["status"] for r in results}
    for name in SAMPLE_WEIGHT_CHECKS:
        assert name in ran, name
    for name in ("check_sample_weights_shape", "check_estimator_sparse_array",
                 "check_estimator_sparse_matrix", "check_estimator_sparse_tag"):
        assert ran[name] == "passed", name


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return train_test_split(d.data / 16.0, d.target, test_size=0.25, random_state=0,
                            stratify=d.target)


def test_classifier_on_digits_with_fitted_attributes(digits):
    X_tr, X_te, y_tr, y_te = digits
    clf = fastbp.MLPClassifier(hidden_layer_sizes=(64,), max_iter=60, random_state=0)
    clf.fit(X_tr, y_tr)
    assert clf.score(X_te, y_te) >= 0.95
    assert [c.shape for c in clf.coefs_] == [(64, 64), (64, 10)]
    assert [b.shape for b in clf.intercepts_] == [(64,), (10,)]
    assert clf.n_features_in_ == 64 and list(clf.classes_) == list(range(10))
    assert clf.n_layers_ == 3 and clf.n_outputs_ == 10 and clf.out_activation_ == "softmax"
    assert len(clf.loss_curve_) == clf.n_iter_ and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ <= clf.loss_curve_[0]
    P = clf.predict_proba(X_te)
    assert P.shape == (len(X_te), 10) and np.allclose(P.sum(1), 1)
    assert np.array_equal(clf.classes_[P.argmax(1)], clf.predict(X_te))


@pytest.mark.parametrize("activation", ["silu", "softplus"])
def test_classifier_with_the_newer_activations(digits, activation):
    """Activations scikit-learn lacks are accepted by name and reach the compiled path."""
    X_tr, X_te, y_tr, y_te = digits
    clf = fastbp.MLPClassifier(hidden_layer_sizes=(64,), activation=activation, max_iter=40,
                               random_state=0).fit(X_tr, y_tr)
    assert clf.score(X_te, y_te) >= 0.93
    assert clf._model.activation == activation


def test_sgd_solver_schedules_and_early_stopping(digits):
    X_tr, X_te, y_tr, y_te = digits
    for lr in ("constant", "invscaling", "adaptive"):
        clf = fastbp.MLPClassifier((32,), solver="sgd", learning_rate=lr,
                                   learning_rate_init=0.1, max_iter=30, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X_tr, y_tr)
        # scikit-learn with the same settings: 0.971, 0.824, 0.971
        assert clf.score(X_te, y_te) > (0.80 if lr == "invscaling" else 0.93), lr
    es = fastbp.MLPClassifier((32,), early_stopping=True, max_iter=200, random_state=0,
                              n_iter_no_change=5).fit(X_tr, y_tr)
    assert es.n_iter_ < 200 and len(es.validation_scores_) == es.n_iter_
    assert es.best_validation_score_ == max(es.validation_scores_)
    assert es.best_loss_ is None


def test_binary_string_labels_and_multilabel():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    clf = fastbp.MLPClassifier((16,), max_iter=100, random_state=0).fit(X, y)
    assert clf.out_activation_ == "logistic" and clf.coefs_[-1].shape == (16, 1)
    assert set(clf.predict(X)) <= {"yes", "no"} and clf.score(X, y) > 0.9
    assert clf.predict_proba(X).shape == (200, 2)
    Xm, Ym = make_multilabel_classification(n_samples=200, n_classes=4, random_state=0)
    ml = fastbp.MLPClassifier((32,), max_iter=200, random_state=0).fit(Xm / Xm.max(), Ym)
    assert ml.predict(Xm / Xm.max()).shape == Ym.shape
    assert ml.score(Xm / Xm.max(), Ym) > 0.4


def test_regressor_multioutput():
    X, y = make_regression(n_samples=300, n_features=5, n_targets=2, noise=0.1, random_state=0)
    y = y / y.std()
    reg = fastbp.MLPRegressor((32,), max_iter=300, random_state=0, learning_rate_init=1e-2)
    reg.fit(X, y)
    assert reg.predict(X).shape == (300, 2) and reg.score(X, y) > 0.95
    r1 = fastbp.MLPRegressor((8,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert r1.fit(X, y[:, 0]).predict(X).shape == (300,)


def test_pipeline_gridsearch_clone_pickle(digits):
    X_tr, X_te, y_tr, y_te = digits
    pipe = make_pipeline(StandardScaler(), fastbp.MLPClassifier(max_iter=20, random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(16,), (32,)],
                               "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X_tr, y_tr)
    assert grid.score(X_te, y_te) > 0.85  # scikit-learn's own MLPClassifier here: 0.902
    best = grid.best_estimator_
    again = pickle.loads(pickle.dumps(best))
    assert np.array_equal(again.predict_proba(X_te), best.predict_proba(X_te))
    c = clone(best.steps[-1][1])
    assert c.get_params() == best.steps[-1][1].get_params() and not hasattr(c, "coefs_")


def test_partial_fit_and_warm_start(digits):
    X_tr, X_te, y_tr, y_te = digits
    clf = fastbp.MLPClassifier((32,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X_tr[:10], y_tr[:10])
    for i in range(30):
        clf.partial_fit(X_tr, y_tr, classes=np.arange(10))
    assert clf.n_iter_ == 30 and clf.score(X_te, y_te) > 0.88  # scikit-learn's: 0.913
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X_tr[:5], np.full(5, 11))
    warm = fastbp.MLPClassifier((32,), max_iter=5, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm.fit(X_tr, y_tr)
        first = warm.coefs_[0].copy()
        warm.fit(X_tr, y_tr)
    assert warm.n_iter_ == 10 and not np.array_equal(first, warm.coefs_[0])


@pytest.mark.parametrize("params,match", [
    (dict(solver="lbfgs"), "no 'lbfgs'"),
    (dict(activation="softmax"), "activation must be"),
    (dict(hidden_layer_sizes=(0,)), "positive integers"),
    (dict(learning_rate="cyclic"), "learning_rate must be"),
    (dict(alpha=-1.0), "alpha"),
    (dict(batch_size=0), "batch_size"),
    (dict(validation_fraction=1.5), "validation_fraction"),
])
def test_bad_hyperparameters(params, match):
    with pytest.raises(ValueError, match=match):
        fastbp.MLPClassifier(**params).fit(np.zeros((4, 2)), [0, 1, 0, 1])


@pytest.mark.parametrize("Est", [fastbp.MLPClassifier, fastbp.MLPRegressor])
def test_non_finite_weights_are_scikit_learns_error(Est):
    """Issue 30 (6): learning_rate_init=1e300 kept non-finite coefficients and predicted
    all zeros; scikit-learn raises this ValueError."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = rng.integers(0, 3, 60) if Est is fastbp.MLPClassifier else rng.standard_normal(60)
    est = Est(solver="sgd", learning_rate_init=1e300, max_iter=3, random_state=0)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        est.fit(X, y)


def test_labels_outside_the_classes_are_refused_not_relabelled():
    """Issue 30 (7): partial_fit(classes=[0, 2, 5]) with a 1 in y, and a warm-start refit
    with a new label, trained the unknown label as a neighbouring class without a word."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    y = np.array([0, 2, 5] * 9 + [1, 0, 2])
    with pytest.raises(ValueError, match=r"labels \[1\] not in classes_"):
        fastbp.MLPClassifier(random_state=0).partial_fit(X, y, classes=[0, 2, 5])
    clf = fastbp.MLPClassifier(max_iter=2, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, np.array([0, 2] * 15))
        with pytest.raises(ValueError, match=r"warm_start keeps the classes .*\[7\]"):
            clf.fit(X, np.array([0, 2, 7] * 10))
        clf.fit(X, np.array([2, 0] * 15))     # the same classes: fine
