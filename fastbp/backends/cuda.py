"""The CUDA backend: a model's flat buffers, gradients and workspace as numba.cuda device
arrays (float32), its steps on fastbp's CUDA kernels (kernels/cuda).

The same forward / loss / backward as the CPU backend.  Inputs may be host (NumPy) or
device arrays.  Inside fastbp.fit (train/cuda.py) the data set is copied to the device
once, batches are gathered there, and the loss and accuracy are summed on the device and
read once per epoch (``step``, ``count_correct_device``, ``read_counters``): the host does
not synchronise inside an epoch.
"""
import numpy as np

from ..kernels.cpu import dropout as _drop
from ..kernels.cpu.losses import mean_scale, weight_total
from .cpu import cached_workspace, host_probabilities


def _cuda():
    from numba import cuda
    return cuda


def is_device_array(x):
    # duck-typed: Numba device arrays (real or simulated) have copy_to_host
    return hasattr(x, "copy_to_host") and not isinstance(x, np.ndarray)


class DeviceWorkspace:
    """Z, A, G per layer and the row losses for one batch size, on the device."""

    def __init__(self, sizes, batch, act_codes, drop_rates):
        cuda = _cuda()
        L = len(sizes) - 1
        self.Z = [cuda.device_array((batch, sizes[l + 1]), np.float32) for l in range(L)]
        self.A = [self.Z[l] if act_codes[l] == 0 else
                  cuda.device_array((batch, sizes[l + 1]), np.float32) for l in range(L)]
        # D_l: A_l dropped out, for the layers with dropout (the derivative still needs A)
        self.D = [cuda.device_array((batch, sizes[l + 1]), np.float32) if drop_rates[l]
                  else None for l in range(L)]
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
        self._no_weights = cuda.device_array(0, np.float64)
        # what each row's loss is a sum over: 1 (cross-entropy) or the outputs (the others)
        self._count = 1 if model.loss == "cross_entropy" else model.n_outputs

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
                                lambda: DeviceWorkspace(m.sizes, batch, m.act_codes,
                                                        m.drop_rates))

    # ------------------------------------------------------------------ compute (device)
    def _dropout(self, l, out, A, dropout, plan, drops):
        """out = A with layer l's dropout for dropout = (step, row0); with a plan, the
        launch is recorded and listed in drops as (launch, l), its keys set each step."""
        m = self.model
        step, row0 = dropout
        self._K.dropout(A, out, _drop.stream(m.dropout_seed, step, l), row0,
                        float(m.drop_rates[l]), plan=plan)
        if plan is not None:
            drops.append((plan[-1], l))

    def _forward(self, X, ws, plan=None, dropout=None, drops=None):
        """Z_L of X into ws; dropout = (optimizer step, first row's offset in the batch) in
        training, or None (see _dropout for plan and drops)."""
        K, m = self._K, self.model
        A_prev = X
        last = m.n_layers - 1
        for l in range(m.n_layers):
            K.gemm(A_prev, False, self.weights[l], True, ws.Z[l], K.EPI_BIAS_ACT,
                   self.biases[l], int(m.act_codes[l]), float(m.slopes[l]), ws.A[l],
                   self._empty2, self._empty2,
                   plan=plan, workspace=self._split_ws)
            A_prev = ws.A[l]
            if dropout is not None and m.drop_rates[l]:
                self._dropout(l, ws.D[l], ws.A[l], dropout, plan, drops)
                A_prev = ws.D[l]
        return ws.Z[last]

    def _loss(self, Z, y, G, row_loss, w, total, plan=None):
        """The loss kernel on Z against y with weights w (device, or empty) of the given
        total; row losses summed into the accumulator as loss * total.  Returns the loss
        launch (with a plan), whose scale argument depends on the batch's total."""
        K, loss = self._K, self.model.loss
        if loss == "cross_entropy":
            kernel = K.cross_entropy_labels if y.ndim == 1 else K.cross_entropy_targets
        else:
            kernel = {"mse": K.mse, "binary_cross_entropy": K.binary_cross_entropy,
                      "poisson": K.poisson, "huber": K.huber}[loss]
        kernel(Z, y, G, row_loss, w, mean_scale(total, self._count), self.model.loss_param,
               plan=plan)
        launched = plan[-1] if plan is not None else None
        self._K.accumulate(row_loss, 1.0 / self._count, self._loss_acc, plan=plan)
        return launched

    def _backward(self, X, ws, plan=None, dropout=None, drops=None):
        K, m = self._K, self.model
        dropping = [dropout is not None and bool(p) for p in m.drop_rates]
        for l in range(m.n_layers - 1, -1, -1):
            A_prev = X if l == 0 else (ws.D[l - 1] if dropping[l - 1] else ws.A[l - 1])
            K.gemm(ws.G[l], True, A_prev, False, self.weight_grads[l], K.EPI_NONE,
                   self._none, 0, 0.0, self._empty2, self._empty2, self._empty2, plan=plan,
                   workspace=self._split_ws)
            K.column_sum(ws.G[l], self.bias_grads[l], plan=plan)
            if l > 0:
                K.gemm(ws.G[l], False, self.weights[l], False, ws.G[l - 1], K.EPI_ACT_GRAD,
                       self._none, int(m.act_codes[l - 1]), float(m.slopes[l - 1]),
                       self._empty2, ws.Z[l - 1],
                       ws.A[l - 1], plan=plan, workspace=self._split_ws)
                if dropping[l - 1]:
                    self._dropout(l - 1, ws.G[l - 1], ws.G[l - 1], dropout, plan, drops)

    def step(self, X, y, l2=0.0, w=None, total=None, dropout=None):
        """One forward/backward on device arrays; the batch's loss times its weight total
        is added to the device accumulator.  l2 as MLP.loss_and_grad (weights only).
        w: the rows' sample weights (b,) float64 on the device, or None; total: their sum
        (the host knows it: the caller computes it), b without weights.

        The step's launches are recorded once per workspace and inputs (X, y, w) and
        replayed (kernels/cuda/launch.py): inside fit, they are the same gather buffers
        every step, so the arguments are converted for the driver once per fit; only the
        loss's scale changes with the batch's weight total, and dropout's keys with the
        step.  dropout: (optimizer step, the batch's first row's offset) in training with
        dropout, else None."""
        ws = self.workspace(X.shape[0])
        w = self._no_weights if w is None else w
        total = float(X.shape[0]) if total is None else float(total)
        dropping = dropout is not None and self.model.has_dropout
        plan = ws.step_plan
        if plan is None or plan[0] is not X or plan[1] is not y or plan[2] is not w \
                or plan[5] != dropping:
            launches, drops = [], []
            Z = self._forward(X, ws, launches, dropout if dropping else None, drops)
            loss_launch = self._loss(Z, y, ws.G[-1], ws.row_loss, w, total, launches)
            self._backward(X, ws, launches, dropout if dropping else None, drops)
            plan = ws.step_plan = (X, y, w, launches, loss_launch, dropping, drops)
        plan[4].set_scalar(self._K.SCALE_ARG, mean_scale(total, self._count))
        m = self.model
        for launch, l in plan[6]:
            launch.set_scalar(self._K.STREAM_ARG, int(_drop.stream(m.dropout_seed,
                                                                   dropout[0], l)))
        self._K.run_plan(plan[3])
        if l2:
            for W, dW in zip(self.weights, self.weight_grads):
                w1, dw1 = W.reshape(W.size), dW.reshape(dW.size)
                self._K.add_scaled(dw1, w1, l2)
                self._K.accumulate_squares(w1, 0.5 * l2 * total, self._loss_acc)
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
    def _device_weights(self, w):
        """Host weights (or None) as (device array or None, total)."""
        if w is None:
            return None, None
        return _cuda().to_device(w), weight_total(w, 0)

    def loss_and_grad(self, X, y, l2=0.0, w=None, dropout=None):
        self.read_counters()
        wd, total = self._device_weights(w)
        self.step(X, y, l2, wd, total, dropout)
        total = X.shape[0] if total is None else total
        return self.read_counters()[0] / total if total > 0 else 0.0

    def compute_loss(self, X, y, w=None):
        return self.evaluate(X, y, w=w)[0]

    def forward(self, X):
        return self._forward(X, self.workspace(X.shape[0]))

    def count_correct(self, y):
        self.count_correct_device(y)
        return self.read_counters()[1]

    def evaluate(self, X, y, batch_size=4096, w=None):
        """(mean loss, accuracy or None); w: host sample weights (n,) or None (the loss
        is then their weighted mean; the accuracy is not weighted)."""
        n = X.shape[0]
        self.read_counters()
        weight = 0.0
        for i in range(0, n, batch_size):
            Xb, yb = X[i:i + batch_size], y[i:i + batch_size]
            wd, total = self._device_weights(None if w is None else w[i:i + batch_size])
            total = float(Xb.shape[0]) if total is None else total
            weight += total
            ws = self.workspace(Xb.shape[0])
            Z = self._forward(Xb, ws)
            self._loss(Z, yb, ws.G[-1], ws.row_loss,
                       self._no_weights if wd is None else wd, total)
            self._last_output = Z
            self.count_correct_device(yb)
        loss_sum, correct = self.read_counters()
        return (loss_sum / weight if weight > 0 else 0.0,
                correct / n if self.model.has_accuracy(y) else None)

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
