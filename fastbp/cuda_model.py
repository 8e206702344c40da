"""MLP on an NVIDIA GPU through numba.cuda: fastbp.MLP(..., device="cuda").

Parameters, gradients and workspace are device arrays; params / grads are the flat device
buffers and weights / biases / weight_grads / bias_grads device views into them, as on
the CPU.  loss_and_grad, forward, predict and evaluate accept host (NumPy) or device
arrays.  Inside fastbp.fit the data set is copied to the device once, batches are
gathered there, and the loss and accuracy are summed on the device and read once per
epoch: the host does not synchronise inside an epoch.  Storage is float32.
"""
import numpy as np

from . import backend
from .model import _MAX_WORKSPACES, MLP, host_probabilities


def _cuda():
    from numba import cuda
    return cuda


def _is_device(x):
    # duck-typed: Numba device arrays (real or simulated) have copy_to_host
    return hasattr(x, "copy_to_host") and not isinstance(x, np.ndarray)


class _DeviceWorkspace:
    def __init__(self, sizes, batch, identity_hidden):
        cuda = _cuda()
        L = len(sizes) - 1
        self.Z = [cuda.device_array((batch, sizes[l + 1]), np.float32) for l in range(L)]
        self.A = [self.Z[l] if (l == L - 1 or identity_hidden) else
                  cuda.device_array((batch, sizes[l + 1]), np.float32) for l in range(L)]
        self.G = [cuda.device_array((batch, sizes[l + 1]), np.float32) for l in range(L)]
        self.row_loss = cuda.device_array(batch, np.float64)
        self.step_plan = None     # (X, y, recorded launches) of the last training step


class CudaMLP(MLP):
    device = "cuda"

    def __init__(self, sizes, activation="relu", loss="cross_entropy", dtype=np.float32,
                 seed=None, init="torch", matmul="own", device="cuda"):
        backend.check_device("cuda")
        if np.dtype(dtype) != np.float32:
            raise ValueError("the CUDA backend trains in float32; pass dtype=np.float32")
        if matmul != "own":
            raise ValueError("matmul='blas' is a CPU reference; the CUDA backend has one GEMM")
        super().__init__(sizes, activation, loss, np.float32, seed, init)
        cuda = _cuda()
        from .kernels import cuda as KC
        self._K = KC
        host = self.params
        self.params = cuda.to_device(host)
        self.grads = cuda.to_device(np.zeros_like(host))
        self.weights, self.biases, self.weight_grads, self.bias_grads = [], [], [], []
        offset = 0
        for l in range(self.n_layers):
            fan_in, fan_out = self.sizes[l], self.sizes[l + 1]
            w_end = offset + fan_in * fan_out
            b_end = w_end + fan_out
            self.weights.append(self.params[offset:w_end].reshape(fan_out, fan_in))
            self.biases.append(self.params[w_end:b_end])
            self.weight_grads.append(self.grads[offset:w_end].reshape(fan_out, fan_in))
            self.bias_grads.append(self.grads[w_end:b_end])
            offset = b_end
        self.layers = None  # the module view is CPU-only
        self._flat_w = self._flat_dw = None
        self._dev_workspaces = {}
        self._split_ws = KC.SplitWorkspace()   # this model's split-K partial sums
        self._none = cuda.device_array(0, np.float32)
        self._empty2 = cuda.device_array((0, 0), np.float32)
        self._correct = cuda.to_device(np.zeros(1, np.int64))
        self._loss_acc = cuda.to_device(np.zeros(1, np.float64))

    # ------------------------------------------------------------------ helpers
    def _to_device_X(self, X, name="X"):
        if _is_device(X):
            if X.ndim != 2 or X.shape[1] != self.n_features or X.dtype != np.float32:
                raise ValueError(f"{name} on the device must be float32 of shape (n, "
                                 f"{self.n_features}), got {X.dtype} {X.shape}")
            return X
        return _cuda().to_device(self._check_X(X, name))

    def _to_device_y(self, y, n):
        if _is_device(y):
            return y
        return _cuda().to_device(self._check_y(y, n))

    def _dws(self, batch):
        ws = self._dev_workspaces.get(batch)
        if ws is None:
            if len(self._dev_workspaces) >= _MAX_WORKSPACES:
                self._dev_workspaces.pop(next(iter(self._dev_workspaces)))
            ws = _DeviceWorkspace(self.sizes, batch, self.act_code == 0)
            self._dev_workspaces[batch] = ws
        return ws

    # ------------------------------------------------------------------ compute (device)
    def _forward_dev(self, X, ws, plan=None):
        K = self._K
        A_prev = X
        last = self.n_layers - 1
        for l in range(self.n_layers):
            code = 0 if l == last else self.act_code
            K.gemm(A_prev, False, self.weights[l], True, ws.Z[l], K.EPI_BIAS_ACT,
                   self.biases[l], code, self.slope, ws.A[l], self._empty2, self._empty2,
                   plan=plan, workspace=self._split_ws)
            A_prev = ws.A[l]
        return ws.Z[last]

    def _loss_dev(self, Z, y, G, row_loss, plan=None):
        K = self._K
        if self.loss == "cross_entropy":
            (K.cross_entropy_labels if y.ndim == 1 else K.cross_entropy_targets)(
                Z, y, G, row_loss, plan=plan)
        elif self.loss == "mse":
            K.mse(Z, y, G, row_loss, plan=plan)
        else:
            K.binary_cross_entropy(Z, y, G, row_loss, plan=plan)

    def _backward_dev(self, X, ws, plan=None):
        K = self._K
        for l in range(self.n_layers - 1, -1, -1):
            A_prev = X if l == 0 else ws.A[l - 1]
            K.gemm(ws.G[l], True, A_prev, False, self.weight_grads[l], K.EPI_NONE,
                   self._none, 0, 0.0, self._empty2, self._empty2, self._empty2, plan=plan,
                   workspace=self._split_ws)
            K.column_sum(ws.G[l], self.bias_grads[l], plan=plan)
            if l > 0:
                K.gemm(ws.G[l], False, self.weights[l], False, ws.G[l - 1], K.EPI_ACT_GRAD,
                       self._none, self.act_code, self.slope, self._empty2, ws.Z[l - 1],
                       ws.A[l - 1], plan=plan, workspace=self._split_ws)

    def _step_dev(self, X, y, l2=0.0):
        """One forward/backward on device arrays; the batch's summed loss is added to the
        device accumulator.  l2 as MLP.loss_and_grad (weights only).

        The step's launches are recorded once per workspace and input pair (X, y) and
        replayed (kernels/cuda/launch.py): inside fit, X and y are the same gather buffers
        every step, so the arguments are converted for the driver once per fit."""
        ws = self._dws(X.shape[0])
        if ws.step_plan is None or ws.step_plan[0] is not X or ws.step_plan[1] is not y:
            plan = []
            Z = self._forward_dev(X, ws, plan)
            self._loss_dev(Z, y, ws.G[-1], ws.row_loss, plan)
            self._K.accumulate(ws.row_loss, 1.0, self._loss_acc, plan=plan)
            self._backward_dev(X, ws, plan)
            ws.step_plan = (X, y, plan)
        self._K.run_plan(ws.step_plan[2])
        if l2:
            for w, dw in zip(self.weights, self.weight_grads):
                w1, dw1 = w.reshape(w.size), dw.reshape(dw.size)
                self._K.add_scaled(dw1, w1, l2)
                self._K.accumulate_squares(w1, 0.5 * l2 * X.shape[0], self._loss_acc)
        self._last_output = ws.Z[-1]

    def _count_correct_dev(self, y, plan=None):
        if self.loss == "cross_entropy" and y.ndim == 1:
            self._K.count_correct_labels(self._last_output, y, self._correct, plan=plan)
        elif self.loss == "binary_cross_entropy":
            self._K.count_correct_multilabel(self._last_output, y, self._correct, plan=plan)

    def _read_counters(self, reset=True):
        """(sum of per-row losses, correct count) from the device; one synchronisation."""
        loss = float(self._loss_acc.copy_to_host()[0])
        correct = int(self._correct.copy_to_host()[0])
        if reset:
            self._K.fill(self._loss_acc, 0.0)
            self._K.fill(self._correct, 0)
        return loss, correct

    # ------------------------------------------------------------------ public API
    def loss_and_grad(self, X, y, l2=0.0):
        Xd = self._to_device_X(X)
        yd = self._to_device_y(y, Xd.shape[0])
        self._read_counters()
        self._step_dev(Xd, yd, l2)
        return self._read_counters()[0] / Xd.shape[0]

    def forward(self, X):
        Xd = self._to_device_X(X)
        return self._forward_dev(Xd, self._dws(Xd.shape[0])).copy_to_host()

    __call__ = forward

    def compute_loss(self, X, y):
        return self.evaluate(X, y)[0]

    def evaluate(self, X, y, batch_size=4096):
        Xd = self._to_device_X(X)
        yd = self._to_device_y(y, Xd.shape[0])
        return self._evaluate_dev(Xd, yd, batch_size)

    def _evaluate_dev(self, Xd, yd, batch_size=4096):
        n = Xd.shape[0]
        self._read_counters()
        for i in range(0, n, batch_size):
            Xb, yb = Xd[i:i + batch_size], yd[i:i + batch_size]
            ws = self._dws(Xb.shape[0])
            Z = self._forward_dev(Xb, ws)
            self._loss_dev(Z, yb, ws.G[-1], ws.row_loss)
            self._K.accumulate(ws.row_loss, 1.0, self._loss_acc)
            self._last_output = Z
            self._count_correct_dev(yb)
        total, correct = self._read_counters()
        has_acc = self.loss == "binary_cross_entropy" or (self.loss == "cross_entropy"
                                                          and yd.ndim == 1)
        return total / n, (correct / n if has_acc else None)

    def predict_proba(self, X):
        if self.loss == "mse":
            raise ValueError("predict_proba is not defined for loss='mse'; use predict")
        return host_probabilities(self.forward(X), self.loss).astype(np.float32)

    def host_params(self):
        """The flat parameter buffer copied to the host."""
        return self.params.copy_to_host()

    def to_cpu(self):
        """An equivalent CPU MLP with these parameters."""
        m = MLP(self.sizes, self.activation, self.loss, np.float32, init=self.init)
        m.params[...] = self.host_params()
        return m

    def save(self, path, **extra):
        self.to_cpu().save(path, **extra)

    def to_torch_state_dict(self):
        return self.to_cpu().to_torch_state_dict()

    def zero_grad(self):
        self._K.fill(self.grads, 0.0)

    def copy(self):
        other = CudaMLP(self.sizes, self.activation, self.loss, init=self.init)
        other.params.copy_to_device(self.params)
        return other

    def __getstate__(self):
        return {"config": self.config(), "seed": self.seed, "params": self.host_params(),
                "grads": self.grads.copy_to_host()}

    def __setstate__(self, state):
        cfg = state["config"]
        self.__init__(cfg["sizes"], cfg["activation"], cfg["loss"], seed=state["seed"],
                      init=cfg["init"])
        self.params.copy_to_device(state["params"])
        self.grads.copy_to_device(state["grads"])
