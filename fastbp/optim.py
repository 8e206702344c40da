"""Optimizers over a model's flat parameter buffer: SGD, Adam, AdamW.

Each step() is one kernel call over all parameters.  The update rules, defaults and order
of operations follow torch.optim (see fastbp.kernels.cpu.optim for the formulas), so the
same model, data and hyper-parameters give the same trajectory within rounding.
"""
import numpy as np

from ._validation import check_float
from .kernels.cpu import optim as _optim
from .runtime import ensure_threads


def _on_device(model):
    return getattr(model, "device", "cpu") == "cuda"


def _cpu_parallel(model):
    """Whether the CPU update may use Numba's threads: not with matmul="blas", whose
    products run on OpenBLAS's threads (see kernels.cpu.optim.optimizer_update)."""
    return getattr(model, "matmul", "own") != "blas"


def _zeros_like_params(model):
    """A zeroed state buffer shaped like the flat parameters, on the model's device."""
    if _on_device(model):
        from numba import cuda
        return cuda.to_device(np.zeros(model.params.shape, model.params.dtype))
    return np.zeros_like(model.params)


def _cuda_kernels():
    from .kernels import cuda as KC
    return KC


def _buffer(name):
    """A state buffer as a read-only attribute: compiled code indexes it as long as the
    parameters, so it is owned (load_state_dict copies into it)."""
    def get(self):
        return self._buffers[name]
    return property(get, doc=f"the optimizer's {name} buffer, shaped like the parameters "
                             "(read-only attribute; its values may be changed in place)")


def _check_clip(value):
    """clip_grad_norm: None (no clipping) or a positive float."""
    if value is None:
        return None
    return check_float(value, "clip_grad_norm", 0.0, low_open=True)


def _unit_square_sums(model):
    """Each output unit's squared gradient (its row of dW and its entry of db), every
    layer in order: the sums the compiled step clips by (kernels/cpu/steps.py)."""
    out = np.empty(sum(model.sizes[1:]))
    off = 0
    for dW, db in zip(model.weight_grads, model.bias_grads):
        _optim.unit_square_sums(dW, db, out[off:off + db.shape[0]])
        off += db.shape[0]
    return out


def clip_grad_norm_(model, max_norm):
    """Scale model.grads in place so that their global L2 norm (every weight and bias) is at
    most max_norm, as torch.nn.utils.clip_grad_norm_: by min(1, max_norm / (norm + 1e-6)).
    Returns the norm before clipping.  CPU models (a CUDA model's optimizers clip on the
    device: clip_grad_norm=)."""
    if _on_device(model):
        raise ValueError("fastbp.clip_grad_norm_ takes CPU models; on the GPU, give the "
                         "optimizer clip_grad_norm=")
    max_norm = _check_clip(max_norm)
    if max_norm is None:
        raise TypeError("max_norm must be a positive number, got None")
    coef, norm = _optim.clip_coefficient(_unit_square_sums(model), max_norm)
    if coef != 1.0:
        g = model.grads
        g *= g.dtype.type(coef)
    return float(norm)


class Optimizer:
    """Base class.  `lr` may be changed between steps (learning-rate schedules do).
    clip_grad_norm: clip the gradient to this global L2 norm before each update
    (torch.nn.utils.clip_grad_norm_ before optimizer.step(); None: no clipping).  The
    update uses the clipped gradient; model.grads keep the unclipped values."""

    _NON_NEGATIVE = ()    # state buffers that hold squares (Adam's second moment)

    def __init__(self, model, lr, clip_grad_norm=None):
        if not hasattr(model, "params") or not hasattr(model, "grads"):
            raise TypeError(
                f"{type(self).__name__} needs a model with flat .params and .grads buffers "
                f"(a fastbp.MLP), got {type(model).__name__}"
            )
        self.model = model
        self.lr = check_float(lr, "lr", 0.0)
        self.clip_grad_norm = _check_clip(clip_grad_norm)
        self.step_count = 0
        self._buffers = {}
        self._gscale = None              # CUDA: [scale, norm] on the device (_device_scale)
        self._clip_plan = (None, None, None)

    def _grad_scale(self):
        """The update's gradient scale: clipping's coefficient, or 1.0."""
        if self.clip_grad_norm is None:
            return 1.0
        return _optim.clip_coefficient(_unit_square_sums(self.model), self.clip_grad_norm)[0]

    def _device_scale(self):
        """CUDA: the update's gradient scale as a (2,) float64 device array [scale, norm]:
        [1, 0] without clipping; with it, computed on the device from the gradient (the
        launches recorded once and replayed: no synchronisation)."""
        from numba import cuda
        K = _cuda_kernels()
        model = self.model
        if self._gscale is None:
            self._gscale = cuda.to_device(np.array([1.0, 0.0]))
        if self.clip_grad_norm is None:
            if self._clip_plan[0] is not None:        # clipping was on: back to 1
                K.fill(self._gscale, 1.0)
                self._clip_plan = (None, None, None)
            return self._gscale
        key = (id(model.grads), self.clip_grad_norm)
        if self._clip_plan[0] != key:
            plan = []
            unit_sq = cuda.device_array(sum(model.sizes[1:]), np.float64)
            off = 0
            for dW, db in zip(model.weight_grads, model.bias_grads):
                K.unit_square_sums(dW, db, unit_sq, off, plan=plan)
                off += db.shape[0]
            K.clip_scale(unit_sq, float(self.clip_grad_norm), self._gscale, plan=plan)
            self._clip_plan = (key, plan, unit_sq)
        K.run_plan(self._clip_plan[1])
        return self._gscale

    def _add_buffer(self, name):
        self._buffers[name] = _zeros_like_params(self.model)

    def zero_grad(self):
        self.model.zero_grad()

    def state_dict(self):
        """Hyper-parameters, step count and state buffers (copies)."""
        def copy(v):
            if hasattr(v, "copy_to_host"):
                return v.copy_to_host()
            return v.copy() if isinstance(v, np.ndarray) else v
        state = {k: v for k, v in vars(self).items()
                 if k != "model" and not k.startswith("_") and not callable(v)}
        state.update({k: copy(v) for k, v in self._buffers.items()})
        state["type"] = type(self).__name__
        return state

    def _checked(self, name, value):
        """A hyper-parameter or counter from a state dict, checked as the constructor
        checks it (compiled code trusts them: step_count 0 divides by zero in Adam)."""
        if name == "step_count":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                    or value < 0:
                raise ValueError(f"step_count must be an integer >= 0, got {value!r}")
            return int(value)
        if name == "clip_grad_norm":
            try:
                return _check_clip(value)
            except TypeError as exc:
                raise ValueError(str(exc)) from None
        if name == "nesterov":
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"nesterov must be a bool, got {value!r}")
            return bool(value)
        try:
            if name in ("beta1", "beta2"):
                value = check_float(value, name, 0.0, 1.0)
                if value >= 1.0:
                    raise ValueError(f"{name} must be in [0, 1), got {value}")
                return value
            return check_float(value, name, 0.0)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def load_state_dict(self, state):
        """Restore from state_dict()'s output.  Everything is checked first (names, the
        buffers' shapes and dtypes, the hyper-parameters' ranges); on an error nothing has
        changed."""
        if state.get("type", type(self).__name__) != type(self).__name__:
            raise ValueError(f"state is for {state['type']}, not {type(self).__name__}")
        scalars = {k for k in vars(self) if k != "model" and not k.startswith("_")}
        unknown = sorted(set(state) - scalars - set(self._buffers) - {"type"})
        if unknown:
            raise ValueError(f"state holds {unknown}, which {type(self).__name__} does not have")
        missing = sorted(set(self._buffers) - set(state))
        if missing:
            raise ValueError(f"state lacks the buffers {missing}")
        checked = {k: self._checked(k, v) for k, v in state.items() if k in scalars}
        for k in self._buffers:
            cur, v = self._buffers[k], state[k]
            if np.shape(v) != cur.shape:
                raise ValueError(f"optimizer state {k!r} has shape {np.shape(v)}, "
                                 f"expected {cur.shape}")
            if np.asarray(v).dtype != cur.dtype:
                raise ValueError(f"optimizer state {k!r} has dtype {np.asarray(v).dtype}, "
                                 f"expected {cur.dtype}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"optimizer state {k!r} holds NaN or infinite values")
            if k in self._NON_NEGATIVE and np.any(np.asarray(v) < 0):
                raise ValueError(f"optimizer state {k!r} holds negative values")
        for k, v in checked.items():
            setattr(self, k, v)
        for k, cur in self._buffers.items():
            if hasattr(cur, "copy_to_device"):
                cur.copy_to_device(np.ascontiguousarray(state[k], dtype=cur.dtype))
            else:
                cur[...] = state[k]


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight
    decay, as torch.optim.SGD (dampening 0)."""

    velocity = _buffer("velocity")

    def __init__(self, model, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
                 clip_grad_norm=None):
        super().__init__(model, lr, clip_grad_norm)
        self.momentum = check_float(momentum, "momentum", 0.0)
        self.weight_decay = check_float(weight_decay, "weight_decay", 0.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self._add_buffer("velocity")
        self._plan = (None, None)    # (hyper-parameters, recorded device launch)

    def step(self):
        self.step_count += 1
        args = (self.model.params, self.model.grads, self.velocity, self.lr, self.momentum,
                self.weight_decay, self.nesterov)
        if not _on_device(self.model):
            ensure_threads()   # sgd_update reaches a parallel kernel (see runtime.py)
            _optim.sgd_update(*args, _cpu_parallel(self.model), self._grad_scale())
            return
        # the launch is recorded once and replayed while the hyper-parameters stay put
        gscale = self._device_scale()
        key = (id(self.model.params), *args[3:])
        if self._plan[0] != key:
            plan = []
            _cuda_kernels().sgd_update(*args, gscale, plan=plan)
            self._plan = (key, plan)
        _cuda_kernels().run_plan(self._plan[1])


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, as torch.optim.Adam."""

    decoupled = False
    _NON_NEGATIVE = ("exp_avg_sq",)
    exp_avg = _buffer("exp_avg")
    exp_avg_sq = _buffer("exp_avg_sq")

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 clip_grad_norm=None):
        super().__init__(model, lr, clip_grad_norm)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = check_float(betas[0], "betas[0]", 0.0, 1.0)
        self.beta2 = check_float(betas[1], "betas[1]", 0.0, 1.0)
        if self.beta1 >= 1.0 or self.beta2 >= 1.0:
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.eps = check_float(eps, "eps", 0.0)
        self.weight_decay = check_float(weight_decay, "weight_decay", 0.0)
        self._add_buffer("exp_avg")
        self._add_buffer("exp_avg_sq")

    @property
    def betas(self):
        return (self.beta1, self.beta2)

    def step(self):
        self.step_count += 1
        p, g = self.model.params, self.model.grads
        if _on_device(self.model):
            _cuda_kernels().adam_update(p, g, self.exp_avg, self.exp_avg_sq, self.lr,
                                        self.beta1, self.beta2, self.eps, self.weight_decay,
                                        self.decoupled, self.step_count, self._device_scale())
        else:
            ensure_threads()   # adam_update reaches a parallel kernel (see runtime.py)
            _optim.adam_update(p, g, self.exp_avg, self.exp_avg_sq, self.lr,
                               (self.beta1, self.beta2), self.eps, self.weight_decay,
                               self.decoupled, self.step_count, _cpu_parallel(self.model),
                               self._grad_scale())


class AdamW(Adam):
    """Adam with decoupled weight decay (p *= 1 - lr*wd before the update), as torch.optim.AdamW."""

    decoupled = True

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 clip_grad_norm=None):
        super().__init__(model, lr, betas, eps, weight_decay, clip_grad_norm)
