"""The CUDA backend: a model's flat buffers, gradients and workspace as numba.cuda device
arrays (float32), its steps on fastbp's CUDA kernels (kernels/cuda).

The same forward / loss / backward as the CPU backend.  Inputs may be host (NumPy) or
device arrays.  Inside fastbp.fit (train/cuda.py) the data set is copied to the device
once, batches are gathered there, and the loss and accuracy are summed on the device and
read once per epoch (``step``, ``count_correct_device``, ``read_counters``): the host does
not synchronise inside an epoch.
"""
import numpy as np

from .cpu import cached_workspace, host_probabilities


def _cuda():
    from numba import cuda
    return cuda


def is_device_array(x):
    # duck-typed: Numba device arrays (real or simulated) have copy_to_host
    return hasattr(x, "copy_to_host") and not isinstance(x, np.ndarray)


class DeviceWorkspace:
    """Z, A, G per layer and the row losses for one batch size, on the device."""

    def __init__(self, sizes, batch, identity_hidden):
        cuda = _cuda()
        L = len(sizes) - 1
        self.Z = [cuda.device_array((batch, sizes[l + 1]), np.float32) for l in range(L)]
        self.A = [self.Z[l] if (l == L - 1 or identity_hidden) else
                  cuda.device_array((batch, sizes[l + 1]), np.float32) for l in range(L)]
        self.G = [cuda.device_array((batch, sizes[l + 1]), np.float32) for l in range(L)]
        self.row_loss = cuda.device_array(batch, np.float64)
        self.step_plan = None     # (X, y, recorded launches) of the last training step


class CUDABackend:
    """See fastbp.backends for the protocol (float32 only; no matmul='blas')."""

    device = "cuda"

    def __init__(self, model, host_params):
        if model.dtype != np.float32:
            raise ValueError("the CUDA backend trains in float32; pass dtype=np.float32")
        if model.matmul != "own":
            raise ValueError("matmul='blas' is a CPU reference; the CUDA backend has one GEMM")
        cuda = _cuda()
        from ..kernels import cuda as KC
        self.model = model
        self._K = KC
        self.params = cuda.to_device(host_params)
        self.grads = cuda.to_device(np.zeros_like(host_params))
        self.weights, self.biases = model.layout.views(self.params)
        self.weight_grads, self.bias_grads = model.layout.views(self.grads)
        self._last_output = None
        self._workspaces = {}
        self._split_ws = KC.SplitWorkspace()   # this model's split-K partial sums
        self._none = cuda.device_array(0, np.float32)
        self._empty2 = cuda.device_array((0, 0), np.float32)
        self._correct = cuda.to_device(np.zeros(1, np.int64))
        self._loss_acc = cuda.to_device(np.zeros(1, np.float64))

    # ------------------------------------------------------------------ inputs
    def prepare(self, X, y=None):
        """X (and y) on the device: host arrays are checked as on the CPU and copied;
        device arrays are checked for shape and dtype."""
        m = self.model
        if is_device_array(X):
            if X.ndim != 2 or X.shape[1] != m.n_features or X.dtype != np.float32:
                raise ValueError(f"X on the device must be float32 of shape (n, "
                                 f"{m.n_features}), got {X.dtype} {X.shape}")
        else:
            X = _cuda().to_device(m.check_X(X))
        if y is None:
            return X
        if not is_device_array(y):
            y = _cuda().to_device(m.check_y(y, X.shape[0]))
        return X, y

    def workspace(self, batch):
        m = self.model
        return cached_workspace(self._workspaces, batch,
                                lambda: DeviceWorkspace(m.sizes, batch, m.act_code == 0))

    # ------------------------------------------------------------------ compute (device)
    def _forward(self, X, ws, plan=None):
        K, m = self._K, self.model
        A_prev = X
        last = m.n_layers - 1
        for l in range(m.n_layers):
            code = 0 if l == last else m.act_code
            K.gemm(A_prev, False, self.weights[l], True, ws.Z[l], K.EPI_BIAS_ACT,
                   self.biases[l], code, m.slope, ws.A[l], self._empty2, self._empty2,
                   plan=plan, workspace=self._split_ws)
            A_prev = ws.A[l]
        return ws.Z[last]

    def _loss(self, Z, y, G, row_loss, plan=None):
        K, loss = self._K, self.model.loss
        if loss == "cross_entropy":
            (K.cross_entropy_labels if y.ndim == 1 else K.cross_entropy_targets)(
                Z, y, G, row_loss, plan=plan)
        elif loss == "mse":
            K.mse(Z, y, G, row_loss, plan=plan)
        else:
            K.binary_cross_entropy(Z, y, G, row_loss, plan=plan)

    def _backward(self, X, ws, plan=None):
        K, m = self._K, self.model
        for l in range(m.n_layers - 1, -1, -1):
            A_prev = X if l == 0 else ws.A[l - 1]
            K.gemm(ws.G[l], True, A_prev, False, self.weight_grads[l], K.EPI_NONE,
                   self._none, 0, 0.0, self._empty2, self._empty2, self._empty2, plan=plan,
                   workspace=self._split_ws)
            K.column_sum(ws.G[l], self.bias_grads[l], plan=plan)
            if l > 0:
                K.gemm(ws.G[l], False, self.weights[l], False, ws.G[l - 1], K.EPI_ACT_GRAD,
                       self._none, m.act_code, m.slope, self._empty2, ws.Z[l - 1],
                       ws.A[l - 1], plan=plan, workspace=self._split_ws)

    def step(self, X, y, l2=0.0):
        """One forward/backward on device arrays; the batch's summed loss is added to the
        device accumulator.  l2 as MLP.loss_and_grad (weights only).

        The step's launches are recorded once per workspace and input pair (X, y) and
        replayed (kernels/cuda/launch.py): inside fit, X and y are the same gather buffers
        every step, so the arguments are converted for the driver once per fit."""
        ws = self.workspace(X.shape[0])
        if ws.step_plan is None or ws.step_plan[0] is not X or ws.step_plan[1] is not y:
            plan = []
            Z = self._forward(X, ws, plan)
            self._loss(Z, y, ws.G[-1], ws.row_loss, plan)
            self._K.accumulate(ws.row_loss, 1.0, self._loss_acc, plan=plan)
            self._backward(X, ws, plan)
            ws.step_plan = (X, y, plan)
        self._K.run_plan(ws.step_plan[2])
        if l2:
            for w, dw in zip(self.weights, self.weight_grads):
                w1, dw1 = w.reshape(w.size), dw.reshape(dw.size)
                self._K.add_scaled(dw1, w1, l2)
                self._K.accumulate_squares(w1, 0.5 * l2 * X.shape[0], self._loss_acc)
        self._last_output = ws.Z[-1]

    @property
    def last_output(self):
        """Z_L of the last step or evaluated batch, on the device."""
        return self._last_output

    def count_correct_device(self, y, plan=None):
        """Adds the last output's correct predictions to the device counter."""
        loss = self.model.loss
        if loss == "cross_entropy" and y.ndim == 1:
            self._K.count_correct_labels(self._last_output, y, self._correct, plan=plan)
        elif loss == "binary_cross_entropy":
            self._K.count_correct_multilabel(self._last_output, y, self._correct, plan=plan)

    def read_counters(self, reset=True):
        """(sum of per-row losses, correct count) from the device; one synchronisation."""
        loss = float(self._loss_acc.copy_to_host()[0])
        correct = int(self._correct.copy_to_host()[0])
        if reset:
            self._K.fill(self._loss_acc, 0.0)
            self._K.fill(self._correct, 0)
        return loss, correct

    # ------------------------------------------------------------------ protocol
    def loss_and_grad(self, X, y, l2=0.0):
        self.read_counters()
        self.step(X, y, l2)
        return self.read_counters()[0] / X.shape[0]

    def compute_loss(self, X, y):
        return self.evaluate(X, y)[0]

    def forward(self, X):
        return self._forward(X, self.workspace(X.shape[0]))

    def count_correct(self, y):
        self.count_correct_device(y)
        return self.read_counters()[1]

    def evaluate(self, X, y, batch_size=4096):
        n = X.shape[0]
        self.read_counters()
        for i in range(0, n, batch_size):
            Xb, yb = X[i:i + batch_size], y[i:i + batch_size]
            ws = self.workspace(Xb.shape[0])
            Z = self._forward(Xb, ws)
            self._loss(Z, yb, ws.G[-1], ws.row_loss)
            self._K.accumulate(ws.row_loss, 1.0, self._loss_acc)
            self._last_output = Z
            self.count_correct_device(yb)
        total, correct = self.read_counters()
        return total / n, (correct / n if self.model.has_accuracy(y) else None)

    def predict_proba(self, X):
        """Probabilities for X (checked), on the host (float32, a new array)."""
        return self.probabilities(self.to_host(self.forward(X)))

    def probabilities(self, Z):
        """Class probabilities from host pre-activations Z (float32, a new array)."""
        return host_probabilities(Z, self.model.loss).astype(np.float32)

    # ------------------------------------------------------------------ buffers
    def to_host(self, buf):
        return buf.copy_to_host()

    def copy_into(self, dst, src):
        if is_device_array(dst):
            dst.copy_to_device(src)
        else:
            src.copy_to_host(dst)

    def restore(self, snap):
        """Put back the parameters of a snapshot (a device array)."""
        self.params.copy_to_device(snap)

    def snapshot(self, into=None):
        if into is None:
            into = _cuda().device_array_like(self.params)
        into.copy_to_device(self.params)
        return into

    def fill_grads(self, value):
        self._K.fill(self.grads, value)

    def params_finite(self):
        """Whether every parameter is finite (the parameters are copied to the host)."""
        return bool(np.isfinite(self.params.copy_to_host()).all())
