"""MLP: a stack of Linear layers and activations over one flat parameter buffer.

The flat buffers (parameters and gradients) are laid out by fastbp.layout.Layout; the
numbers live on a backend (fastbp.backends: the CPU's NumPy arrays or CUDA device arrays),
which runs the forward pass, the fused loss and the backward pass.  The MLP holds the
architecture, validates inputs and offers the user's API.
"""
import numpy as np

from . import backends
from . import io as _io
from ._validation import (
    as_csr,
    as_float_array,
    check_class_labels,
    check_dtype,
    check_float,
    check_positive_int,
    check_sample_weight,
    check_targets,
    is_sparse,
)
from .kernels import codes
from .layers import INITS, Dropout, Linear, Sequential, activation_module, init_linear
from .layout import Layout

LOSSES = codes.LOSSES
OPTIONS = ("label_smoothing", "delta", "dropout", "dropout_seed")   # MLP._options' keys


def _check_dropout(dropout, n_hidden):
    """(dropout as given: a float or a list of floats, each hidden layer's rate and 0 for
    the output layer as an (L,) float64 array)."""
    if isinstance(dropout, (list, tuple, np.ndarray)):
        rates = [check_float(p, f"dropout[{i}]", 0.0) for i, p in enumerate(dropout)]
        if len(rates) != n_hidden:
            raise ValueError(f"dropout lists {len(rates)} rates for {n_hidden} hidden "
                             f"layer{'s' if n_hidden != 1 else ''}: give one per hidden layer")
        given = rates
    else:
        given = check_float(dropout, "dropout", 0.0)
        rates = [given] * n_hidden
    if any(p >= 1.0 for p in rates):
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    out = np.array(rates + [0.0], np.float64)
    out.flags.writeable = False
    return given, out


def _check_blas_available():
    """matmul="blas" compiles np.dot inside Numba, which takes its BLAS from SciPy: without
    SciPy it failed deep in the first compile with Numba's "scipy 0.16+ is required"."""
    import importlib.util
    if importlib.util.find_spec("scipy") is None:
        raise ImportError('matmul="blas" needs SciPy (Numba takes np.dot\'s BLAS from it): '
                          "pip install scipy, or leave matmul at its default, \"own\"")


class MLP:
    """Multi-layer perceptron trained by backpropagation on fastbp's kernels.

    sizes: [n_features, hidden..., n_outputs], at least two positive ints.
    activation: the hidden layers' activation, a name in fastbp.kernels.codes.ACTIVATIONS
    (identity, relu, leaky_relu, sigmoid/logistic, tanh, gelu, silu/swish, softplus), or a
    list of one name per hidden layer (["relu", "tanh"] for sizes [d, h1, h2, k]).
    loss: "cross_entropy" (softmax over outputs; integer labels or probability targets),
          "mse" (regression outputs), "binary_cross_entropy" (sigmoid per output,
          multi-label), "poisson" (counts: the outputs are log-means, predict gives
          exp(output); PyTorch's PoissonNLLLoss(log_input=True)), or "huber" (regression,
          PyTorch's HuberLoss(delta)).
    dtype: float32 (default) or float64.  seed: the initial weights' random generator.
    init: "torch" (as torch.nn.Linear), "he", "xavier".
    matmul: "own" (fastbp's GEMM, the default) or "blas" (np.dot inside the same compiled
    layer code: the in-run reference the benchmarks compare our GEMM against).
    device: "cpu" or "cuda" (numba.cuda, float32; see fastbp.backends.cuda).
    label_smoothing: cross_entropy's, as PyTorch's (targets (1 - eps) onehot + eps / C),
    in [0, 1).  delta: the Huber loss's threshold (> 0).
    dropout: the probability of zeroing each hidden unit's output in training, after every
    hidden layer (a number in [0, 1)) or one per hidden layer (a list); inverted (the kept
    outputs scaled by 1 / (1 - p)), as torch.nn.Dropout, and off outside training
    (forward, predict, evaluate).  Masks are hashed from (dropout_seed, optimizer step,
    layer, row of the batch, unit): the same whatever the threads, ranks or a resume.
    dropout_seed: an int; by default drawn from seed (or at random without one).

    Attributes: params / grads (flat buffers, on the device); activations (one canonical
    name per hidden layer); act_codes, slopes (per layer, the output layer's identity last:
    what the kernels take); weights, biases,
    weight_grads, bias_grads (per-layer views, W shaped (out, in)); layers (the Sequential
    module view, CPU only); layout (fastbp.layout.Layout); backend.
    """

    def __init__(self, sizes, activation="relu", loss="cross_entropy", dtype=np.float32,
                 seed=None, init="torch", matmul="own", device="cpu", *, label_smoothing=0.0,
                 delta=1.0, dropout=0.0, dropout_seed=None):
        backends.check_device(device)
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise TypeError(f"sizes must be a sequence of layer widths, got {sizes!r}")
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least an input and an output width, got {list(sizes)}")
        self._sizes = tuple(check_positive_int(s, f"sizes[{i}]") for i, s in enumerate(sizes))
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
        self.label_smoothing = check_float(label_smoothing, "label_smoothing", 0.0)
        if self.label_smoothing >= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if self.label_smoothing and loss != "cross_entropy":
            raise ValueError("label_smoothing applies to loss='cross_entropy' only")
        self.delta = check_float(delta, "delta", 0.0, low_open=True)
        self.dropout, self.drop_rates = _check_dropout(dropout, len(self._sizes) - 2)
        if dropout_seed is None:
            dropout_seed = int(np.random.default_rng(
                None if seed is None else [seed, 0xD509]).integers(1 << 62))
        self.layers = None
        self.set_dropout_seed(dropout_seed)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        if matmul not in ("own", "blas"):
            raise ValueError(f"matmul must be 'own' or 'blas', got {matmul!r}")
        if matmul == "blas":
            _check_blas_available()
        self.matmul = matmul
        entries = codes.hidden_activations(activation, len(self._sizes) - 2)
        self.activation = activation if isinstance(activation, str) else [
            e.name for e in entries]
        self.activations = tuple(e.name for e in entries)
        # per layer, the output layer's identity last: what every kernel is given
        self.act_codes = np.array([e.code for e in entries] + [codes.IDENTITY], np.int64)
        self.slopes = np.array([e.slope for e in entries] + [0.0], np.float64)
        self.act_codes.flags.writeable = self.slopes.flags.writeable = False
        self.loss = loss
        self.dtype = check_dtype(dtype)
        self.init = init
        self.seed = seed
        self.device = device
        self.layout = Layout(list(self._sizes))

        host = np.empty(self.layout.size, dtype=self.dtype)
        rng = np.random.default_rng(seed)
        for W, b in zip(*self.layout.views(host)):
            init_linear(W, b, init, rng)
        self.backend = backends.create(device, self, host)
        self.layers = None          # the module view runs on the CPU
        if device == "cpu":
            modules = []
            for l in range(self.n_layers):
                views = (self.weights[l], self.biases[l], self.weight_grads[l],
                         self.bias_grads[l])
                modules.append(Linear(self.sizes[l], self.sizes[l + 1], dtype=self.dtype,
                                      _views=views))
                if l < self.n_layers - 1:
                    modules.append(activation_module(self.activations[l]))
                    if self.drop_rates[l]:
                        modules.append(Dropout(self.drop_rates[l], seed=self.dropout_seed,
                                               layer=l))
            self.layers = Sequential(*modules)

    # ------------------------------------------------------------------ properties
    # The buffers belong to the backend: read-only attributes, filled in place.
    params = property(lambda self: self.backend.params, doc="Flat parameter buffer.")
    grads = property(lambda self: self.backend.grads, doc="Flat gradient buffer.")
    weights = property(lambda self: self.backend.weights, doc="W_l views, (out, in).")
    biases = property(lambda self: self.backend.biases, doc="b_l views, (out,).")
    weight_grads = property(lambda self: self.backend.weight_grads)
    bias_grads = property(lambda self: self.backend.bias_grads)

    @property
    def sizes(self):
        """[n_features, hidden..., n_outputs]: a new list each time (the architecture is
        fixed; compiled code trusts it)."""
        return list(self._sizes)

    @property
    def n_layers(self):
        """Number of Linear layers."""
        return len(self._sizes) - 1

    @property
    def n_features(self):
        return self._sizes[0]

    @property
    def n_outputs(self):
        return self._sizes[-1]

    def __repr__(self):
        where = f", device={self.device!r}" if self.device != "cpu" else ""
        drop = f", dropout={self.dropout!r}" if self.has_dropout else ""
        return (f"MLP(sizes={self.sizes}, activation={self.activation!r}, loss={self.loss!r}, "
                f"dtype={self.dtype.name}{drop}{where})")

    @property
    def loss_param(self):
        """The loss's one parameter as the kernels take it: label smoothing for
        cross_entropy, delta for huber, else 0 (fastbp.kernels.codes)."""
        if self.loss == "cross_entropy":
            return self.label_smoothing
        return self.delta if self.loss == "huber" else 0.0

    @property
    def has_dropout(self):
        return bool(self.drop_rates.any())

    def set_dropout_seed(self, seed):
        """Key dropout's masks by seed (a non-negative int) from now on."""
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
                or not 0 <= seed < 1 << 63:
            raise ValueError(f"dropout_seed must be an int in [0, 2**63), got {seed!r}")
        self.dropout_seed = int(seed)
        for module in self.layers or ():
            if isinstance(module, Dropout):
                module.seed = self.dropout_seed

    def _options(self):
        """label_smoothing, delta and dropout where they matter (so that the configs of the
        models without them read as before): keyword arguments of the constructor."""
        options = {}
        if self.label_smoothing:
            options["label_smoothing"] = self.label_smoothing
        if self.loss == "huber":
            options["delta"] = self.delta
        if self.has_dropout:
            options["dropout"] = self.dropout
            options["dropout_seed"] = self.dropout_seed
        return options

    def config(self):
        """The constructor arguments that rebuild this architecture (device aside)."""
        return {"sizes": list(self.sizes), "activation": self.activation, "loss": self.loss,
                "dtype": self.dtype.name, "init": self.init, "matmul": self.matmul,
                **self._options()}

    # ------------------------------------------------------------------ checks
    def check_X(self, X, name="X"):
        """X as a 2-D float array of the model's dtype with n_features columns, or an error
        that says what was expected.  A SciPy sparse X (CPU only) becomes CSRRows
        (fastbp._validation.as_csr): never densified; its first layer runs
        kernels/cpu/sparse.py."""
        if is_sparse(X):
            if self.device != "cpu":
                raise ValueError(f"sparse {name} is supported on the CPU only; densify it "
                                 "(X.toarray()) for device='cuda'")
            X = as_csr(X, name, self.dtype)
        else:
            X = as_float_array(X, name, self.dtype)
        if X.shape[1] != self.n_features:
            raise ValueError(
                f"{name} has {X.shape[1]} features, but the model expects {self.n_features} "
                f"(sizes={self.sizes})"
            )
        return X

    def check_y(self, y, n):
        """Targets for n rows as the loss needs them: int64 labels (n,) or float targets
        (n, n_outputs) for cross_entropy; float targets for mse and binary_cross_entropy
        (in [0, 1] for the latter)."""
        if self.loss == "cross_entropy":
            y = y if isinstance(y, np.ndarray) else np.asarray(y)
            if y.ndim == 2:
                return check_targets(y, self.n_outputs, n, self.dtype)
            return check_class_labels(y, self.n_outputs, n)
        return check_targets(y, self.n_outputs, n, self.dtype,
                             unit_interval=self.loss == "binary_cross_entropy",
                             non_negative=self.loss == "poisson")

    def has_accuracy(self, y):
        """Whether accuracy is defined for targets y (labels, or multi-label targets)."""
        return self.loss == "binary_cross_entropy" or (self.loss == "cross_entropy"
                                                       and y.ndim == 1)

    # ------------------------------------------------------------------ compute
    def loss_and_grad(self, X, y, l2=0.0, sample_weight=None, train_step=None):
        """Mean loss on (X, y) as a float; fills self.grads (overwriting, not accumulating).

        X: (b, n_features).  y: (b,) integer labels or (b, n_outputs) targets for
        cross_entropy; (b, n_outputs) targets for mse, binary_cross_entropy and poisson
        (non-negative counts).  l2: adds 0.5 * l2 * sum of squared weights (not biases) to
        the loss and l2 * W to the weight gradients (scikit-learn's alpha / batch_size).
        sample_weight: (b,) non-negative weights (or a scalar): the loss becomes the
        weighted mean sum_i w_i l_i / sum_i w_i (l_i: row i's loss), as scikit-learn's MLP,
        so an integer weight counts as that many copies of the row.
        train_step: with dropout, the optimizer step (1, 2, ...) this gradient is for: its
        masks are hashed from it (kernels/cpu/dropout.py), so the same step gives the same
        masks; None (default): no dropout, as in evaluation.
        """
        X, y = self.backend.prepare(X, y)
        w = check_sample_weight(sample_weight, X.shape[0])
        if train_step is None or not self.has_dropout:
            return self.backend.loss_and_grad(X, y, l2, w)
        step = check_positive_int(train_step, "train_step")
        return self.backend.loss_and_grad(X, y, l2, w, dropout=(step, 0))

    def compute_loss(self, X, y, sample_weight=None):
        """Mean loss on (X, y) (weighted as loss_and_grad) without touching the gradients."""
        X, y = self.backend.prepare(X, y)
        return self.backend.compute_loss(X, y, check_sample_weight(sample_weight, X.shape[0]))

    def forward(self, X):
        """Output of the last layer, (b, n_outputs): logits for cross_entropy and
        binary_cross_entropy, predictions for mse, log-means for poisson.  Returns a new
        host array."""
        return self.backend.to_host(self.backend.forward(self.backend.prepare(X)))

    __call__ = forward

    def predict_proba(self, X):
        """Class probabilities: softmax over outputs (cross_entropy) or per-output sigmoid
        (binary_cross_entropy).  (b, n_outputs)."""
        if self.loss in ("mse", "poisson", "huber"):
            raise ValueError(f"predict_proba is not defined for loss={self.loss!r}; "
                             "use predict")
        return self.backend.predict_proba(self.backend.prepare(X))

    def predict(self, X):
        """Class index (cross_entropy, (b,) int64), 0/1 labels per output
        (binary_cross_entropy, (b, n_outputs) int64), outputs (mse, (b, n_outputs)) or
        predicted means exp(output) (poisson, (b, n_outputs))."""
        Z = self.forward(X)
        if self.loss == "cross_entropy":
            return np.argmax(Z, axis=1)
        if self.loss == "binary_cross_entropy":
            return (Z > 0).astype(np.int64)
        if self.loss == "poisson":
            return np.exp(Z, out=Z)
        return Z

    def evaluate(self, X, y, batch_size=4096, sample_weight=None):
        """(mean loss, accuracy) on a data set, in chunks of batch_size rows; with
        sample_weight, both are weighted means.

        Accuracy is None for loss='mse' and 'poisson' and for probability targets."""
        batch_size = check_positive_int(batch_size, "batch_size")
        X, y = self.backend.prepare(X, y)
        w = check_sample_weight(sample_weight, X.shape[0])
        return self.backend.evaluate(X, y, batch_size, w=w)

    # ------------------------------------------------------------------ persistence
    def host_params(self):
        """A copy of the flat parameter buffer on the host (NumPy)."""
        return np.array(self.backend.to_host(self.params), copy=True)

    def to_cpu(self):
        """The model itself on the CPU; an equivalent CPU model for another device."""
        if self.device == "cpu":
            return self
        m = MLP(self.sizes, self.activation, self.loss, self.dtype, init=self.init,
                matmul=self.matmul, **self._options())
        m.params[...] = self.host_params()
        return m

    def save(self, path, **extra):
        """Write the model to a .npz file atomically (see fastbp.io.save_model)."""
        _io.save_model(path, self.config(), self.backend.to_host(self.params), **extra)

    def to_torch_state_dict(self, tensors=False):
        """State dict of the equivalent torch.nn.Sequential (see fastbp.io): NumPy arrays
        (copies), or torch tensors with tensors=True (for load_state_dict)."""
        host = self.to_cpu()
        sd = _io.to_torch_state_dict(host.weights, host.biases, host.drop_rates[:-1] > 0)
        if tensors:
            import torch
            sd = {k: torch.from_numpy(v) for k, v in sd.items()}
        return sd

    @classmethod
    def from_torch_state_dict(cls, state_dict, activation="relu", loss="cross_entropy",
                              dtype=np.float32, **options):
        """An MLP holding the weights of a torch.nn.Sequential of Linear layers (with
        activations, and Dropout modules, between them); options: the constructor's
        keyword arguments (dropout=, label_smoothing=, ...)."""
        sizes, weights, biases = _io.state_dict_layers(state_dict)
        model = cls(sizes, activation=activation, loss=loss, dtype=dtype, **options)
        for l, (w, b) in enumerate(zip(weights, biases)):
            model.weights[l][...] = w
            model.biases[l][...] = b
        return model

    def __getstate__(self):
        # Rebuild on unpickling so that weights/biases stay views into one flat buffer.
        return {"config": self.config(), "seed": self.seed, "device": self.device,
                "params": self.host_params(),
                "grads": np.array(self.backend.to_host(self.grads), copy=True)}

    def __setstate__(self, state):
        cfg = state["config"]
        self.__init__(cfg["sizes"], cfg["activation"], cfg["loss"], cfg["dtype"],
                      seed=state["seed"], init=cfg["init"], matmul=cfg.get("matmul", "own"),
                      device=state.get("device", "cpu"),
                      **{k: cfg[k] for k in OPTIONS if k in cfg})
        self.backend.copy_into(self.params, state["params"])
        self.backend.copy_into(self.grads, state["grads"])

    def zero_grad(self):
        self.backend.fill_grads(0.0)

    def copy(self):
        """An independent model with the same architecture and parameters."""
        other = MLP(self.sizes, self.activation, self.loss, self.dtype, init=self.init,
                    matmul=self.matmul, device=self.device, **self._options())
        self.backend.copy_into(other.params, self.params)
        return other


def load(path, return_extra=False):
    """Load a model written by MLP.save (on the CPU).  With return_extra, also return a
    dict of the extra arrays saved with it."""
    config, params, extra = _io.read_model(path)
    sizes = config["sizes"]
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(isinstance(s, int) and s > 0 for s in sizes)
            or params.shape != (Layout(sizes).size,)):
        raise ValueError(f"{path!r}: parameter buffer {params.dtype}{params.shape} does not "
                         f"match the architecture in its config (sizes {sizes})")
    model = MLP(config["sizes"], activation=config["activation"], loss=config["loss"],
                dtype=config["dtype"], init=config.get("init", "torch"),
                matmul=config.get("matmul", "own"),
                **{k: config[k] for k in OPTIONS if k in config})
    if params.shape != model.params.shape or params.dtype != model.params.dtype:
        raise ValueError(f"{path!r}: parameter buffer {params.dtype}{params.shape} does not "
                         f"match the architecture ({model.params.dtype}{model.params.shape})")
    model.params[...] = params
    return (model, extra) if return_extra else model
