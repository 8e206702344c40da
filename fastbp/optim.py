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


class Optimizer:
    """Base class.  `lr` may be changed between steps (learning-rate schedules do)."""

    def __init__(self, model, lr):
        if not hasattr(model, "params") or not hasattr(model, "grads"):
            raise TypeError(
                f"{type(self).__name__} needs a model with flat .params and .grads buffers "
                f"(a fastbp.MLP), got {type(model).__name__}"
            )
        self.model = model
        self.lr = check_float(lr, "lr", 0.0)
        self.step_count = 0

    def zero_grad(self):
        self.model.zero_grad()

    def state_dict(self):
        """Hyper-parameters, step count and state buffers (copies)."""
        def copy(v):
            if hasattr(v, "copy_to_host"):
                return v.copy_to_host()
            return v.copy() if isinstance(v, np.ndarray) else v
        state = {k: copy(v) for k, v in vars(self).items()
                 if k != "model" and not k.startswith("_") and not callable(v)}
        state["type"] = type(self).__name__
        return state

    def load_state_dict(self, state):
        if state.get("type", type(self).__name__) != type(self).__name__:
            raise ValueError(f"state is for {state['type']}, not {type(self).__name__}")
        for k, v in state.items():
            if k == "type":
                continue
            cur = getattr(self, k, None)
            if hasattr(cur, "copy_to_device"):
                cur.copy_to_device(np.ascontiguousarray(v, dtype=cur.dtype))
            elif isinstance(cur, np.ndarray):
                if np.shape(v) != cur.shape:
                    raise ValueError(f"optimizer state {k!r} has shape {np.shape(v)}, "
                                     f"expected {cur.shape}")
                cur[...] = v
            else:
                setattr(self, k, v)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight
    decay, as torch.optim.SGD (dampening 0)."""

    def __init__(self, model, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(model, lr)
        self.momentum = check_float(momentum, "momentum", 0.0)
        self.weight_decay = check_float(weight_decay, "weight_decay", 0.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.velocity = _zeros_like_params(model)
        self._plan = (None, None)    # (hyper-parameters, recorded device launch)

    def step(self):
        self.step_count += 1
        args = (self.model.params, self.model.grads, self.velocity, self.lr, self.momentum,
                self.weight_decay, self.nesterov)
        if not _on_device(self.model):
            ensure_threads()   # sgd_update reaches a parallel kernel (see runtime.py)
            _optim.sgd_update(*args, _cpu_parallel(self.model))
            return
        # the launch is recorded once and replayed while the hyper-parameters stay put
        key = (id(self.model.params), *args[3:])
        if self._plan[0] != key:
            plan = []
            _cuda_kernels().sgd_update(*args, plan=plan)
            self._plan = (key, plan)
        _cuda_kernels().run_plan(self._plan[1])


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, as torch.optim.Adam."""

    decoupled = False

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(model, lr)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = check_float(betas[0], "betas[0]", 0.0, 1.0)
        self.beta2 = check_float(betas[1], "betas[1]", 0.0, 1.0)
        if self.beta1 >= 1.0 or self.beta2 >= 1.0:
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.eps = check_float(eps, "eps", 0.0)
        self.weight_decay = check_float(weight_decay, "weight_decay", 0.0)
        self.exp_avg = _zeros_like_params(model)
        self.exp_avg_sq = _zeros_like_params(model)

    @property
    def betas(self):
        return (self.beta1, self.beta2)

    def step(self):
        self.step_count += 1
        args = (self.model.params, self.model.grads, self.exp_avg, self.exp_avg_sq, self.lr,
                self.beta1, self.beta2, self.eps, self.weight_decay, self.decoupled,
                self.step_count)
        if _on_device(self.model):
            _cuda_kernels().adam_update(*args)
        else:
            ensure_threads()   # adam_update reaches a parallel kernel (see runtime.py)
            _optim.adam_update(*args, _cpu_parallel(self.model))


class AdamW(Adam):
    """Adam with decoupled weight decay (p *= 1 - lr*wd before the update), as torch.optim.AdamW."""

    decoupled = True

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(model, lr, betas, eps, weight_decay)
