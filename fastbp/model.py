"""MLP: a stack of Linear layers and activations over one flat parameter buffer.

Layout of the flat buffers (params and grads alike), layer after layer:
    [W1 (m1*m0, row-major as (out, in)), b1 (m1), W2, b2, ...]
so an optimizer step is one kernel over one array and a checkpoint is one array.

The training step (loss_and_grad) runs the fused kernels on preallocated workspace:

    forward   Z_l = A_{l-1} W_l^T + b_l,  A_l = f(Z_l)      one GEMM + epilogue per layer
              (the last layer has no activation: Z_L are the logits / outputs)
    loss      L, G_L = dL/dZ_L                               one fused pass per row
    backward  dW_l = G_l^T A_{l-1},  db_l = sum_rows G_l     one GEMM, db from the same loads
              G_{l-1} = (G_l W_l) * f'(Z_{l-1})              one GEMM + epilogue

Workspace is kept per batch size (the last partial batch of an epoch gets its own), so the
steady state allocates nothing.
"""
import numpy as np

from . import kernels as K
from .kernels import codes
from ._validation import (
    as_float_array,
    check_class_labels,
    check_dtype,
    check_positive_int,
    check_targets,
)
from .kernels.cpu import gemm as _gemm
from .kernels.cpu import losses as _losses
from .layers import INITS, Linear, Sequential, _linear_views, activation_module, init_linear
from .runtime import ensure_threads

LOSSES = codes.LOSSES
_MAX_WORKSPACES = 4


def host_probabilities(Z, loss):
    """Probabilities from output pre-activations Z (b, n) on the host, in float64: softmax
    over the row for cross_entropy (row maximum subtracted), the sigmoid of each output for
    binary_cross_entropy."""
    Z = np.asarray(Z, dtype=np.float64)
    if loss == "cross_entropy":
        P = Z - Z.max(axis=1, keepdims=True)
        np.exp(P, out=P)
        P /= P.sum(axis=1, keepdims=True)
        return P
    return 0.5 * (1.0 + np.tanh(0.5 * Z))


class _Workspace:
    """Activations, pre-activations and deltas for one batch size."""

    def __init__(self, sizes, batch, dtype, identity_hidden):
        L = len(sizes) - 1
        self.batch = batch
        self.Z = [np.empty((batch, sizes[l + 1]), dtype) for l in range(L)]
        # A_l is Z_l itself where f is the identity (and for the output layer).
        self.A = [self.Z[l] if (l == L - 1 or identity_hidden) else np.empty_like(self.Z[l])
                  for l in range(L)]
        self.G = [np.empty((batch, sizes[l + 1]), dtype) for l in range(L)]
        self.row_loss = np.empty(batch)
        # Packing buffers for the largest of the layer products (forward, dW, dX): a_part
        # elements hold one packed A, apack a copy for each thread (see gemm.pack_copies).
        na = nb = 0
        for l in range(L):
            n_in, n_out = sizes[l], sizes[l + 1]
            for m, n, k in ((batch, n_out, n_in), (n_out, n_in, batch), (batch, n_in, n_out)):
                a, b = _gemm.pack_sizes(m, n, k, a_copies=1)
                na, nb = max(na, a), max(nb, b)
        self.a_part = na
        self.apack = _gemm.pack_buffer(na * _gemm.pack_copies(), dtype)
        self.bpack = _gemm.pack_buffer(nb, dtype)


class MLP:
    """Multi-layer perceptron trained by backpropagation on fastbp's kernels.

    sizes: [n_features, hidden..., n_outputs], at least two positive ints.
    activation: hidden activation (identity, relu, leaky_relu, sigmoid/logistic, tanh, gelu).
    loss: "cross_entropy" (softmax over outputs; integer labels or probability targets),
          "mse" (regression outputs), or "binary_cross_entropy" (sigmoid per output, multi-label).
    dtype: float32 (default) or float64.  init: "torch" (as torch.nn.Linear), "he", "xavier".
    matmul: "own" (fastbp's GEMM, the default) or "blas" (np.dot inside the same compiled
    layer code: the in-run reference the benchmarks compare our GEMM against).
    device: "cpu" or "cuda" (numba.cuda, float32; see fastbp.cuda_model).

    Attributes: params / grads (flat buffers); weights, biases, weight_grads, bias_grads
    (per-layer views, W shaped (out, in)); layers (the Sequential module view).
    """

    device = "cpu"

    def __new__(cls, *args, device="cpu", **kwargs):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and cls is MLP:
            from .cuda_model import CudaMLP
            return super().__new__(CudaMLP)
        return super().__new__(cls)

    def __init__(self, sizes, activation="relu", loss="cross_entropy", dtype=np.float32,
                 seed=None, init="torch", matmul="own", device="cpu"):
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise TypeError(f"sizes must be a sequence of layer widths, got {sizes!r}")
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least an input and an output width, got {list(sizes)}")
        self.sizes = [check_positive_int(s, f"sizes[{i}]") for i, s in enumerate(sizes)]
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
        if matmul not in ("own", "blas"):
            raise ValueError(f"matmul must be 'own' or 'blas', got {matmul!r}")
        self.matmul = matmul
        self._gemm = _gemm.gemm if matmul == "own" else _gemm.gemm_blas
        self.activation = activation
        entry = codes.activation(activation)
        self.act_code = entry.code
        self.slope = entry.slope
        self.loss = loss
        self.dtype = check_dtype(dtype)
        self.init = init
        self.seed = seed

        n_params = sum(self.sizes[l + 1] * (self.sizes[l] + 1) for l in range(self.n_layers))
        self.params = np.empty(n_params, dtype=self.dtype)
        self.grads = np.zeros(n_params, dtype=self.dtype)
        self.weights, self.biases, self.weight_grads, self.bias_grads = [], [], [], []
        modules, offset = [], 0
        rng = np.random.default_rng(seed)
        for l in range(self.n_layers):
            fan_in, fan_out = self.sizes[l], self.sizes[l + 1]
            views = _linear_views(self.params, self.grads, offset, fan_in, fan_out)
            init_linear(views[0], views[1], init, rng)
            offset += fan_out * (fan_in + 1)
            modules.append(Linear(fan_in, fan_out, dtype=self.dtype, _views=views))
            self.weights.append(views[0])
            self.biases.append(views[1])
            self.weight_grads.append(views[2])
            self.bias_grads.append(views[3])
            if l < self.n_layers - 1:
                modules.append(activation_module(activation))
        self.layers = Sequential(*modules)
        self._flat_w = [w.reshape(-1) for w in self.weights]
        self._flat_dw = [g.reshape(-1) for g in self.weight_grads]
        self._last_output = None
        self._workspaces = {}
        self._none = np.empty(0, self.dtype)
        self._empty2 = np.empty((0, 0), self.dtype)

    # ------------------------------------------------------------------ properties
    @property
    def n_layers(self):
        """Number of Linear layers."""
        return len(self.sizes) - 1

    @property
    def n_features(self):
        return self.sizes[0]

    @property
    def n_outputs(self):
        return self.sizes[-1]

    def __repr__(self):
        return (f"MLP(sizes={self.sizes}, activation={self.activation!r}, loss={self.loss!r}, "
                f"dtype={self.dtype.name})")

    def config(self):
        """The constructor arguments that rebuild this architecture."""
        return {"sizes": list(self.sizes), "activation": self.activation, "loss": self.loss,
                "dtype": self.dtype.name, "init": self.init, "matmul": self.matmul}

    # ------------------------------------------------------------------ checks
    def _check_X(self, X, name="X"):
        X = as_float_array(X, name, self.dtype)
        if X.shape[1] != self.n_features:
            raise ValueError(
                f"{name} has {X.shape[1]} features, but the model expects {self.n_features} "
                f"(sizes={self.sizes})"
            )
        return X

    def _check_y(self, y, n):
        if self.loss == "cross_entropy":
            y = y if isinstance(y, np.ndarray) else np.asarray(y)
            if y.ndim == 2:
                return check_targets(y, self.n_outputs, n, self.dtype)
            return check_class_labels(y, self.n_outputs, n)
        return check_targets(y, self.n_outputs, n, self.dtype,
                             unit_interval=self.loss == "binary_cross_entropy")

    def _workspace(self, batch):
        ws = self._workspaces.get(batch)
        if ws is None:
            ensure_threads()
            if len(self._workspaces) >= _MAX_WORKSPACES:
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = _Workspace(self.sizes, batch, self.dtype, self.act_code == 0)
            self._workspaces[batch] = ws
        return ws

    # ------------------------------------------------------------------ compute
    def _chunk_address(self):
        """gemm's chunk_addr for this model's dtype and activation (0 for the BLAS variant,
        which has none)."""
        return _gemm.column_chunk_address(self.dtype, self.act_code) if self.matmul == "own" else 0

    def _forward(self, X, ws):
        """Fused forward pass into the workspace; returns the output pre-activation Z_L."""
        A_prev = X
        last = self.n_layers - 1
        chunk = self._chunk_address()
        for l in range(self.n_layers):
            code = 0 if l == last else self.act_code
            self._gemm(A_prev, False, self.weights[l], True, ws.Z[l], _gemm.EPI_BIAS_ACT,
                       self.biases[l], code, self.slope, ws.A[l], self._empty2, self._empty2,
                       self._none, ws.apack, ws.bpack, True, chunk)
            A_prev = ws.A[l]
        return ws.Z[last]

    def _loss(self, Z, y, G, row_loss):
        if self.loss == "cross_entropy":
            if y.ndim == 1:
                return _losses.cross_entropy_labels(Z, y, G, row_loss)
            return _losses.cross_entropy_targets(Z, y, G, row_loss)
        if self.loss == "mse":
            return _losses.mse(Z, y, G, row_loss)
        return _losses.binary_cross_entropy(Z, y, G, row_loss)

    def _backward(self, X, ws):
        """Backward pass from ws.G[last] = dL/dZ_L; fills the flat gradient buffer."""
        chunk = self._chunk_address()
        for l in range(self.n_layers - 1, -1, -1):
            A_prev = X if l == 0 else ws.A[l - 1]
            # dW_l = G_l^T A_{l-1}, and db_l = column sums of G_l from the same pass
            self._gemm(ws.G[l], True, A_prev, False, self.weight_grads[l], _gemm.EPI_NONE,
                       self._none, 0, 0.0, self._empty2, self._empty2, self._empty2,
                       self.bias_grads[l], ws.apack, ws.bpack, True, chunk)
            if l > 0:
                # G_{l-1} = (G_l W_l) * f'(Z_{l-1})
                self._gemm(ws.G[l], False, self.weights[l], False, ws.G[l - 1],
                           _gemm.EPI_ACT_GRAD, self._none, self.act_code, self.slope,
                           self._empty2, ws.Z[l - 1], ws.A[l - 1], self._none, ws.apack,
                           ws.bpack, True, chunk)

    def loss_and_grad(self, X, y, l2=0.0):
        """Mean loss on (X, y) as a float; fills self.grads (overwriting, not accumulating).

        X: (b, n_features).  y: (b,) integer labels or (b, n_outputs) targets for
        cross_entropy; (b, n_outputs) targets for mse and binary_cross_entropy.
        l2: adds 0.5 * l2 * sum of squared weights (not biases) to the loss and l2 * W to
        the weight gradients (scikit-learn's alpha / batch_size).
        """
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        return self._loss_and_grad_checked(X, y, l2)

    def _loss_and_grad_checked(self, X, y, l2=0.0):
        """loss_and_grad on inputs already checked by _check_X/_check_y (the trainer's path)."""
        ws = self._workspace(X.shape[0])
        Z = self._forward(X, ws)
        loss = self._loss(Z, y, ws.G[-1], ws.row_loss)
        self._backward(X, ws)
        self._last_output = Z
        if l2:
            for w, dw in zip(self._flat_w, self._flat_dw):
                loss += _losses.add_l2(w, dw, l2)
        return float(loss)

    def _count_correct(self, y):
        """Correct predictions in the last batch given to loss_and_grad (classification)."""
        if self.loss == "cross_entropy" and y.ndim == 1:
            return _losses.count_correct_labels(self._last_output, y)
        if self.loss == "binary_cross_entropy":
            return _losses.count_correct_multilabel(self._last_output, y)
        return 0

    def compute_loss(self, X, y):
        """Mean loss on (X, y) without touching the gradients."""
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        ws = self._workspace(X.shape[0])
        Z = self._forward(X, ws)
        # The loss kernels write a gradient; use the output delta buffer as scratch.
        return float(self._loss(Z, y, ws.G[-1], ws.row_loss))

    def forward(self, X):
        """Output of the last layer, (b, n_outputs): logits for cross_entropy and
        binary_cross_entropy, predictions for mse.  Returns a new array."""
        X = self._check_X(X)
        return self._forward(X, self._workspace(X.shape[0])).copy()

    __call__ = forward

    def predict_proba(self, X):
        """Class probabilities: softmax over outputs (cross_entropy) or per-output sigmoid
        (binary_cross_entropy).  (b, n_outputs)."""
        if self.loss == "mse":
            raise ValueError("predict_proba is not defined for loss='mse'; use predict")
        Z = self.forward(X)
        if self.loss == "cross_entropy":
            P = np.empty_like(Z)
            _losses.softmax_rows(Z, P)
            return P
        return K.activation(Z, "sigmoid")

    def predict(self, X):
        """Class index (cross_entropy, (b,) int64), 0/1 labels per output
        (binary_cross_entropy, (b, n_outputs) int64) or outputs (mse, (b, n_outputs))."""
        Z = self.forward(X)
        if self.loss == "cross_entropy":
            return np.argmax(Z, axis=1)
        if self.loss == "binary_cross_entropy":
            return (Z > 0).astype(np.int64)
        return Z

    def evaluate(self, X, y, batch_size=4096):
        """(mean loss, accuracy) on a data set, in chunks of batch_size rows.

        Accuracy is None for loss='mse' and for probability targets."""
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        return self._evaluate_checked(X, y, batch_size)

    def _evaluate_checked(self, X, y, batch_size=4096):
        n = X.shape[0]
        total, correct = 0.0, 0
        for i in range(0, n, batch_size):
            Xb, yb = X[i:i + batch_size], y[i:i + batch_size]
            ws = self._workspace(Xb.shape[0])
            Z = self._forward(Xb, ws)
            total += self._loss(Z, yb, ws.G[-1], ws.row_loss) * Xb.shape[0]
            self._last_output = Z
            correct += self._count_correct(yb)
        has_acc = self.loss == "binary_cross_entropy" or (self.loss == "cross_entropy"
                                                          and y.ndim == 1)
        return total / n, (correct / n if has_acc else None)

    # ------------------------------------------------------------------ persistence
    def save(self, path, **extra):
        """Write the model to a .npz file atomically (see fastbp.io.save_model)."""
        from .io import save_model
        save_model(self, path, **extra)

    def to_torch_state_dict(self):
        """State dict of the equivalent torch.nn.Sequential (see fastbp.io)."""
        from .io import to_torch_state_dict
        return to_torch_state_dict(self)

    @classmethod
    def from_torch_state_dict(cls, state_dict, activation="relu", loss="cross_entropy",
                              dtype=np.float32):
        """An MLP holding the weights of a torch.nn.Sequential of Linear layers."""
        from .io import from_torch_state_dict
        return from_torch_state_dict(state_dict, activation=activation, loss=loss, dtype=dtype)

    def __getstate__(self):
        # Rebuild on unpickling so that weights/biases stay views into one flat buffer.
        return {"config": self.config(), "seed": self.seed, "params": self.params,
                "grads": self.grads}

    def __setstate__(self, state):
        cfg = state["config"]
        self.__init__(cfg["sizes"], cfg["activation"], cfg["loss"], cfg["dtype"],
                      seed=state["seed"], init=cfg["init"], matmul=cfg.get("matmul", "own"))
        self.params[...] = state["params"]
        self.grads[...] = state["grads"]

    def zero_grad(self):
        self.grads[...] = 0

    def copy(self):
        """An independent model with the same architecture and parameters."""
        other = MLP(self.sizes, self.activation, self.loss, self.dtype, init=self.init,
                    matmul=self.matmul)
        other.params[...] = self.params
        return other
