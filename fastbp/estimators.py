"""scikit-learn compatible estimators: fastbp.MLPClassifier and fastbp.MLPRegressor.

Drop-in replacements for sklearn.neural_network.MLPClassifier / MLPRegressor with the same
parameter names and meanings (solver "sgd" or "adam"; "lbfgs" is not offered) and the same
fitted attributes, trained by fastbp's kernels.  Differences worth knowing:
  - dtype (default float32) sets the precision the network is stored and trained in;
  - binary problems use one logistic output, multi-class a softmax, multi-label one logistic
    output per label, regression identity outputs, as scikit-learn does;
  - the L2 penalty is scikit-learn's: alpha / (2 * batch) * sum of squared weights;
  - the data losses are PyTorch's: squared error is the plain mean (scikit-learn halves it),
    multi-label cross-entropy is averaged over labels (scikit-learn sums) and the Poisson
    loss is exp(z) - y z (scikit-learn's half deviance differs by terms in y alone, and a
    factor 2), so loss_ differs for regression and multi-label problems; the gradients
    (of the data loss) and the predictions are those of the same model;
  - sample_weight as scikit-learn's: each batch's loss is sum w_i l_i / sum w_i and the L2
    term alpha / (2 sum w_i) ||W||^2; MLPClassifier also takes class_weight (None,
    "balanced" or a dict, multiplied into sample_weight as scikit-learn's linear models do);
  - weights are initialised with Glorot/Xavier uniform bounds, from fastbp's own RNG;
  - fastbp's additions: activation may list one name per hidden layer, and dropout (a
    rate for every hidden layer, or a list of one per layer; off in predict) regularises
    as torch.nn.Dropout does (fastbp.MLP's dropout);
  - device="cuda" trains on an NVIDIA GPU (float32; see fastbp.backends.cuda).

This module is the only one that imports scikit-learn (an optional dependency).
"""
import math
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from ._validation import check_dtype
from .kernels import codes
from .backends.cpu import host_probabilities
from .model import MLP
from .optim import SGD, Adam
from .train import TrainingDiverged
from .train import fit as _fit

_ACTIVATIONS = codes.SKLEARN_ACTIVATION_NAMES


def _set_params(est, values):
    """Store each __init__ parameter of est's class as an attribute of the same name, from
    the __init__'s locals() (scikit-learn's convention: __init__ only stores them)."""
    import inspect
    for name in inspect.signature(type(est).__init__).parameters:
        if name != "self":
            setattr(est, name, values[name])


class _BaseMLP(BaseEstimator):
    """What the two estimators share; each declares its parameters in its own __init__
    (scikit-learn reads them from there)."""

    # ------------------------------------------------------------------ checks
    def _validate_hyperparameters(self):
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if np.isscalar(hidden) else list(hidden)
        for h in hidden:
            if isinstance(h, (bool, np.bool_)) or not isinstance(h, (int, np.integer)) or h <= 0:
                raise ValueError(f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}")
        acts = [self.activation] if isinstance(self.activation, str) else self.activation
        if not (isinstance(acts, (list, tuple))
                and all(isinstance(a, str) and a in _ACTIVATIONS for a in acts)
                and (isinstance(self.activation, str) or len(acts) == len(hidden))):
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, or a list of one of "
                             f"them per hidden layer ({len(hidden)}), got {self.activation!r}")
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"solver must be 'sgd' or 'adam' (fastbp has no 'lbfgs'), got {self.solver!r}")
        if self.learning_rate not in ("constant", "invscaling", "adaptive"):
            raise ValueError("learning_rate must be 'constant', 'invscaling' or 'adaptive', "
                             f"got {self.learning_rate!r}")
        checks = [("alpha", self.alpha, 0, False), ("learning_rate_init", self.learning_rate_init, 0, True),
                  ("power_t", self.power_t, 0, False), ("tol", self.tol, 0, False),
                  ("momentum", self.momentum, 0, False), ("beta_1", self.beta_1, 0, False),
                  ("beta_2", self.beta_2, 0, False), ("epsilon", self.epsilon, 0, True)]
        for name, value, low, strict in checks:
            if not isinstance(value, (int, float, np.number)) or isinstance(value, bool) \
                    or not math.isfinite(value) or value < low or (strict and value == low):
                raise ValueError(f"{name} must be a {'positive' if strict else 'non-negative'} "
                                 f"number, got {value!r}")
        if self.momentum > 1 or self.beta_1 >= 1 or self.beta_2 >= 1:
            raise ValueError("momentum must be <= 1 and beta_1, beta_2 < 1")
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if not isinstance(self.n_iter_no_change, (int, np.integer)) or self.n_iter_no_change < 1:
            raise ValueError(f"n_iter_no_change must be a positive integer, got {self.n_iter_no_change!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, (int, np.integer))
                                          or self.batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        return [int(h) for h in hidden]

    def _seed(self):
        rs = self.random_state
        if rs is None or isinstance(rs, (int, np.integer)):
            return rs
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(np.iinfo(np.int32).max))
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(np.iinfo(np.int32).max))
        raise ValueError(f"random_state must be None, an int or a RandomState, got {rs!r}")

    # ------------------------------------------------------------------ training
    def _build(self, n_features, n_outputs, hidden, seed):
        act = self.activation
        self._model = MLP([n_features] + hidden + [n_outputs], activation=act,
                          loss=self._loss_name, dtype=check_dtype(self.dtype), seed=seed,
                          init="xavier", device=self.device,
                          dropout=list(self.dropout) if isinstance(self.dropout, tuple)
                          else self.dropout)
        if self.solver == "sgd":
            self._optimizer = SGD(self._model, lr=self.learning_rate_init, momentum=self.momentum,
                                  nesterov=self.nesterovs_momentum and self.momentum > 0)
        else:
            self._optimizer = Adam(self._model, lr=self.learning_rate_init,
                                   betas=(self.beta_1, self.beta_2), eps=self.epsilon)
        self.loss_curve_ = []
        self.validation_scores_ = [] if self.early_stopping else None
        self.best_validation_score_ = None if not self.early_stopping else -np.inf
        self.best_loss_ = np.inf if not self.early_stopping else None
        self._no_improvement_count = 0
        self._best_params = None
        self.t_ = 0
        self.n_iter_ = 0

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True       # CSR / CSC, never densified (kernels/cpu/sparse.py)
        return tags

    def _agreement(self, comm):
        """A context for fit's input validation: without MPI, the seed of random_state;
        with it, every rank's validation outcome and inputs are agreed on when the block
        ends (distributed.agree), so that one rank's bad input raises on every rank
        instead of leaving them waiting, and random_state=None becomes one seed for all."""
        return _Agreement(self, comm)

    def _sample_weight(self, sample_weight, X):
        """scikit-learn's checks and errors for sample_weight (None stays None); negative
        weights are refused as well (a weighted loss with them is unbounded)."""
        if sample_weight is None:
            return None
        return _check_sample_weight(sample_weight, X, dtype=np.float64,
                                    ensure_non_negative=True)

    def _train(self, X, Y, incremental, comm=None, seed=None, sw=None):
        hidden = self._validate_hyperparameters()
        first = not (incremental or self.warm_start) or not hasattr(self, "_model")
        n, n_features = X.shape
        if not first and self._model.n_features != n_features:
            raise ValueError(f"X has {n_features} features, but this model was fitted with "
                             f"{self._model.n_features}")
        if seed is None:
            seed = self._seed()
        if first:
            self._build(n_features, Y.shape[1] if Y.ndim == 2 else self._n_outputs_1d(), hidden, seed)
        model, opt = self._model, self._optimizer
        rng = np.random.default_rng(seed)
        X_val = Y_val = sw_val = None
        if self.early_stopping and not incremental:
            # split as given (a SciPy sparse X stays one; fastbp's CSRRows would not split)
            X, Y, sw, X_val, Y_val, sw_val = self._split(X, Y, sw, rng)
            n = X.shape[0]
            if sw is not None and not sw.any():
                raise ValueError("sample_weight is zero for every sample left for training "
                                 "after the early_stopping validation split")
            X_val = model.check_X(X_val, "X_val")
        X = model.check_X(X)
        Y = model.check_y(Y, n)
        batch = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        if self.batch_size != "auto" and self.batch_size > X.shape[0]:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped", UserWarning)
        epochs = 1 if incremental else self.max_iter
        for _ in range(epochs):
            try:
                h = _fit(model, X, Y, optimizer=opt, batch_size=batch, epochs=1,
                         shuffle=self.shuffle, seed=int(rng.integers(2**31)), verbose=0,
                         l2=self.alpha, _l2_per_weight=True, sample_weight=sw, comm=comm)
            except TrainingDiverged as exc:      # scikit-learn's error, and its words
                raise ValueError(
                    "Solver produced non-finite parameter weights. The input data may "
                    "contain large values and need to be preprocessed.") from exc
            self.n_iter_ += 1
            self.t_ += n
            loss = h["loss"][0]
            self.loss_curve_.append(loss)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if self.learning_rate == "invscaling" and self.solver == "sgd":
                self._set_sgd_lr(self.learning_rate_init / (self.t_ + 1) ** self.power_t)
            if X_val is not None:
                score = self._score_val(X_val, Y_val, sw_val)
                self.validation_scores_.append(score)
                if self.verbose:
                    print(f"Validation score: {score:f}")
            if incremental:
                break
            if self._check_stop():
                break
        else:
            if not incremental:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                              "reached and the optimization hasn't converged yet.",
                              ConvergenceWarning)
        if self.early_stopping and self._best_params is not None:
            model.backend.restore(self._best_params)
        self.loss_ = self.loss_curve_[-1]
        self._export_attributes()
        return self

    def _set_sgd_lr(self, lr):
        """Change the SGD rate keeping scikit-learn's momentum semantics.

        scikit-learn keeps the velocity in parameter units (u = mu u - lr g); fastbp's SGD,
        like torch, in gradient units (v = mu v + g, step lr v), so u = -lr v.  Rescaling v
        by old/new rate when the rate changes makes the two updates identical.
        """
        opt = self._optimizer
        if lr > 0 and opt.momentum > 0:
            v = opt.velocity
            v *= v.dtype.type(opt.lr / lr)
        opt.lr = lr

    def _check_stop(self):
        """scikit-learn's convergence rule; True to stop."""
        if self.early_stopping:
            score = self.validation_scores_[-1]
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self._model.backend.snapshot(into=self._best_params)
        else:
            loss = self.loss_curve_[-1]
            if loss > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            self.best_loss_ = min(self.best_loss_, loss)
        if self._no_improvement_count > self.n_iter_no_change:
            if self.learning_rate == "adaptive" and self.solver == "sgd" \
                    and self._optimizer.lr > 1e-6:
                self._set_sgd_lr(self._optimizer.lr / 5.0)
                self._no_improvement_count = 0
                return False
            return True
        return False

    def _export_attributes(self):
        m = self._model.to_cpu()
        self.coefs_ = [w.T.copy() for w in m.weights]           # (in, out) as scikit-learn
        self.intercepts_ = [b.copy() for b in m.biases]
        self.n_layers_ = m.n_layers + 1
        self.n_outputs_ = m.n_outputs

    # skl2onnx finds these by name: skl2onnx.to_onnx(estimator, X) works with no set-up
    def onnx_shape_calculator(self):
        from .export import skl2onnx_shape_calculator
        return skl2onnx_shape_calculator

    def onnx_converter(self):
        from .export import skl2onnx_converter
        return skl2onnx_converter

    def _forward(self, X):
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32],
                          accept_sparse=["csr", "csc"])
        return self._model.forward(X)


class _Agreement:
    """See _BaseMLP._agreement."""

    def __init__(self, est, comm):
        self.est, self.comm, self.fields, self.seed = est, comm, None, None

    def inputs(self, X, Y, sw=None):
        if self.comm is not None:
            from .distributed import data_digest
            params = {k: v for k, v in self.est.get_params().items()
                      if k != "random_state" and isinstance(v, (bool, int, float, str, tuple))}
            from ._validation import as_csr, is_sparse
            dtype = str(X.dtype)
            if is_sparse(X):
                X = as_csr(X, "X", X.dtype)
            self.fields = {"X": [list(X.shape), dtype], "data": data_digest(X, Y),
                           "sample_weight": None if sw is None else data_digest(sw[:, None], sw),
                           "params": params, "seed": self.est._seed()}

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if self.comm is None:
            return False
        if exc is not None and not isinstance(exc, Exception):
            return False                          # KeyboardInterrupt and the like
        from .distributed import agree
        self.seed = agree(self.comm, exc, self.fields)["seed"]
        return False


def _split_with(X, Y, sw, **options):
    """train_test_split of X, Y and sample weights sw (or None):
    (X_tr, Y_tr, sw_tr, X_val, Y_val, sw_val)."""
    from sklearn.model_selection import train_test_split
    if sw is None:
        X_tr, X_val, Y_tr, Y_val = train_test_split(X, Y, **options)
        return X_tr, Y_tr, None, X_val, Y_val, None
    X_tr, X_val, Y_tr, Y_val, sw_tr, sw_val = train_test_split(X, Y, sw, **options)
    return X_tr, Y_tr, sw_tr, X_val, Y_val, sw_val


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier (scikit-learn API) trained by fastbp.

    Parameters and fitted attributes as sklearn.neural_network.MLPClassifier; see the
    module docstring for the differences.  Supports multi-class and multi-label targets.

    class_weight: None, "balanced" (n_samples / (n_classes * count of the class), from the
    y given to fit) or a dict {class: weight}; multiplied into sample_weight.  For
    multi-label targets, a list of such dicts (one per label) or "balanced", as
    sklearn.utils.class_weight.compute_sample_weight takes them.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 class_weight=None, dropout=0.0, dtype="float32", device="cpu"):
        _set_params(self, locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _n_outputs_1d(self):
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _prepare(self, X, y, reset, incremental=False, classes=None):
        X, y = validate_data(self, X, y, reset=reset, multi_output=True,
                             dtype=[np.float64, np.float32],
                             accept_sparse=["csr", "csc"])
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if reset:
            if classes is not None:
                self._label_binarizer = LabelBinarizer().fit(np.asarray(classes))
            else:
                self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
            if type_of_target(y) != "multilabel-indicator" and len(self.classes_) < 2:
                raise ValueError("MLPClassifier needs samples of at least 2 classes in the "
                                 f"data, but the data contains only one class: {self.classes_[0]!r}")
        # Labels outside classes_ (given to partial_fit, or from an earlier fit kept by
        # warm_start) would be mapped to a neighbouring class by searchsorted: refuse them.
        if not (reset and classes is None) and y.ndim == 1:
            unseen = np.setdiff1d(np.unique(y), self.classes_)
            if len(unseen):
                if not reset and not incremental:
                    raise ValueError(
                        f"warm_start keeps the classes of the previous fit, "
                        f"{self.classes_.tolist()}; y holds labels {unseen.tolist()} not in "
                        "them (fit again without warm_start to learn new classes)")
                raise ValueError(f"y holds labels {unseen.tolist()} not in classes_ "
                                 f"{self.classes_.tolist()} given at the first partial_fit")
        multilabel = self._label_binarizer.y_type_ == "multilabel-indicator"
        self._multilabel = multilabel
        if multilabel or len(self.classes_) == 2:
            self._loss_name = "binary_cross_entropy"
            Y = self._label_binarizer.transform(y).astype(np.float64)
        else:
            self._loss_name = "cross_entropy"
            Y = np.searchsorted(self.classes_, y).astype(np.int64)
        self.out_activation_ = "logistic" if self._loss_name == "binary_cross_entropy" else "softmax"
        return X, Y, y

    def _weights(self, sample_weight, X, y, incremental):
        """sample_weight checked (scikit-learn's errors) times the class weights of y's
        labels; None when neither is given."""
        sw = self._sample_weight(sample_weight, X)
        cw = self.class_weight
        if cw is None:
            return sw
        if self._multilabel:
            per_row = compute_sample_weight(cw, y)
        else:
            if isinstance(cw, str) and incremental:
                raise ValueError(
                    f"class_weight={cw!r} is not supported for partial_fit: the class "
                    "frequencies of one batch are not those of the data set. Compute them "
                    "from the whole training set with sklearn.utils.class_weight."
                    "compute_class_weight('balanced', classes=classes, y=y) and pass the "
                    "result as a dict")
            if isinstance(cw, dict):
                unknown = [k for k in cw if k not in set(self.classes_.tolist())]
                if unknown:
                    raise ValueError(f"class_weight names classes {unknown} that are not "
                                     f"in classes_ {self.classes_.tolist()}")
            per_class = compute_class_weight(cw, classes=self.classes_, y=y) \
                if not isinstance(cw, dict) else np.array(
                    [float(cw.get(c, 1.0)) for c in self.classes_.tolist()])
            per_row = per_class[np.searchsorted(self.classes_, y)]
        per_row = np.asarray(per_row, dtype=np.float64)
        if not np.all(np.isfinite(per_row)) or np.any(per_row < 0):
            raise ValueError("class_weight must give finite, non-negative weights")
        sw = per_row if sw is None else sw * per_row
        if not sw.any():
            raise ValueError("sample_weight times class_weight is zero for every sample")
        return sw

    def fit(self, X, y, sample_weight=None, comm=None):
        """Fit the model to data X (n_samples, n_features) and labels y.

        sample_weight: (n_samples,) non-negative weights (see the module docstring), times
        class_weight's.  comm: an MPI communicator for data-parallel training (every rank
        calls fit with the same data and random_state; see fastbp.distributed)."""
        warm = self.warm_start and hasattr(self, "_model")
        with self._agreement(comm) as agreed:
            X, Y, y = self._prepare(X, y, reset=not warm)
            if Y.ndim == 1 and self._loss_name == "binary_cross_entropy":
                Y = Y.reshape(-1, 1)
            sw = self._weights(sample_weight, X, y, incremental=False)
            agreed.inputs(X, Y, sw)
        return self._train(X, Y, incremental=False, comm=comm, seed=agreed.seed, sw=sw)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y).  `classes` (all labels) is required on the first call.
        sample_weight as in fit (class_weight must be None or a dict here)."""
        first = not hasattr(self, "_model")
        if first and classes is None and type_of_target(y) != "multilabel-indicator":
            raise ValueError("classes must be passed on the first call to partial_fit")
        X, Y, y = self._prepare(X, y, reset=first, incremental=not first, classes=classes)
        sw = self._weights(sample_weight, X, y, incremental=True)
        return self._train(X, Y, incremental=True, sw=sw)

    def _split(self, X, Y, sw, rng):
        stratify = Y if Y.ndim == 1 and not self._multilabel else None
        return _split_with(X, Y, sw, test_size=self.validation_fraction,
                           random_state=int(rng.integers(2**31)), stratify=stratify)

    def _score_val(self, X_val, Y_val, sw_val=None):
        """Accuracy on the validation split, weighted by its sample weights (if any), as
        scikit-learn's accuracy_score."""
        pred = self._predict_indicator(self._model.forward(X_val))
        right = pred == Y_val if Y_val.ndim == 1 else np.all(pred == (Y_val > 0.5), axis=1)
        return float(np.average(right, weights=sw_val))

    def _predict_indicator(self, Z):
        if self._loss_name == "cross_entropy":
            return np.argmax(Z, axis=1)
        return Z > 0

    def predict(self, X):
        """Predicted class labels (n_samples,), or a 0/1 indicator matrix for multi-label."""
        Z = self._forward(X)
        ind = self._predict_indicator(Z)
        if self._loss_name == "cross_entropy":
            return self.classes_[ind]
        if self._multilabel:
            return ind.astype(int)
        return self.classes_[ind[:, 0].astype(int)]

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes) (per-label for multi-label)."""
        P = host_probabilities(self._forward(X), self._loss_name)
        if self._loss_name == "cross_entropy" or self._multilabel:
            return P
        return np.hstack([1 - P, P])

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor (scikit-learn API) trained by fastbp.

    loss: "squared_error" (identity outputs) or "poisson" (counts or rates y >= 0: a log
    link, predictions exp(output), as scikit-learn's).  Other parameters as
    sklearn.neural_network.MLPRegressor; see the module docstring for the differences.
    """

    _LOSSES = {"squared_error": "mse", "poisson": "poisson"}

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, loss="squared_error",
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 dropout=0.0, dtype="float32", device="cpu"):
        _set_params(self, locals())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _prepare(self, X, y, reset):
        if self.loss not in self._LOSSES:
            raise ValueError(f"loss must be one of {sorted(self._LOSSES)}, got {self.loss!r}")
        if not reset and self._LOSSES[self.loss] != self._loss_name:
            raise ValueError(f"loss={self.loss!r} differs from the loss this model was "
                             "fitted with; fit again without warm_start")
        X, y = validate_data(self, X, y, reset=reset, multi_output=True, y_numeric=True,
                             dtype=[np.float64, np.float32],
                             accept_sparse=["csr", "csc"])
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("loss='poisson' needs non-negative targets y (counts or rates), "
                             f"got a minimum of {np.min(y)}")
        self._loss_name = self._LOSSES[self.loss]
        self._y_1d = y.ndim == 1
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        return X, Y.astype(np.float64)

    def _n_outputs_1d(self):
        return 1

    def fit(self, X, y, sample_weight=None, comm=None):
        """Fit the model to data X (n_samples, n_features) and targets y.

        sample_weight: (n_samples,) non-negative weights (see the module docstring).
        comm: an MPI communicator for data-parallel training (see MLPClassifier.fit)."""
        warm = self.warm_start and hasattr(self, "_model")
        with self._agreement(comm) as agreed:
            X, Y = self._prepare(X, y, reset=not warm)
            sw = self._sample_weight(sample_weight, X)
            agreed.inputs(X, Y, sw)
        return self._train(X, Y, incremental=False, comm=comm, seed=agreed.seed, sw=sw)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), weighted by sample_weight as in fit."""
        X, Y = self._prepare(X, y, reset=not hasattr(self, "_model"))
        return self._train(X, Y, incremental=True, sw=self._sample_weight(sample_weight, X))

    def _split(self, X, Y, sw, rng):
        return _split_with(X, Y, sw, test_size=self.validation_fraction,
                           random_state=int(rng.integers(2**31)))

    def _score_val(self, X_val, Y_val, sw_val=None):
        from sklearn.metrics import r2_score
        return float(r2_score(Y_val, self._outputs(self._model.forward(X_val)),
                              sample_weight=sw_val))

    def _outputs(self, Z):
        """Predictions from the network's outputs Z: exp(Z) with the Poisson loss's log
        link, else Z itself; float64."""
        Z = Z.astype(np.float64)
        return np.exp(Z, out=Z) if self._loss_name == "poisson" else Z

    def predict(self, X):
        """Predictions (n_samples,) or (n_samples, n_outputs)."""
        Z = self._outputs(self._forward(X))
        return Z[:, 0] if self._y_1d else Z
