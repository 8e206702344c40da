"""The sequential-module view of an MLP: each module has forward, backward and (for Linear)
weight gradients.

    y = module.forward(x)             remembers what backward needs
    dx = module.backward(dy)          returns dL/dx; Linear also fills weight_grad, bias_grad

Gradients are overwritten by each backward call, not accumulated (unlike PyTorch's .grad).
Arrays are 2-D, rows are examples.  A standalone Linear owns a small flat buffer; inside an
MLP, its weight and bias are views into the MLP's flat parameter buffer.
"""
import inspect

import numpy as np

from . import kernels as K
from ._validation import as_float_array, check_dtype, check_float, check_positive_int
from .kernels import codes
from .kernels.cpu import activations as _act
from .kernels.cpu import dropout as _drop
from .layout import Layout

INITS = ("torch", "he", "xavier")


def init_linear(weight, bias, init, rng):
    """Fill weight (out, in) and bias (out,) in place.

    torch:  W, b ~ U(-1/sqrt(in), 1/sqrt(in))  (torch.nn.Linear's default)
    he:     W ~ N(0, 2/in), b = 0
    xavier: W ~ U(-sqrt(6/(in+out)), +sqrt(6/(in+out))), b = 0
    """
    fan_out, fan_in = weight.shape
    if init == "torch":
        bound = 1.0 / np.sqrt(fan_in)
        weight[...] = rng.uniform(-bound, bound, size=weight.shape)
        bias[...] = rng.uniform(-bound, bound, size=bias.shape)
    elif init == "he":
        weight[...] = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=weight.shape)
        bias[...] = 0
    elif init == "xavier":
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        weight[...] = rng.uniform(-bound, bound, size=weight.shape)
        bias[...] = 0
    else:
        raise ValueError(f"unknown init {init!r}; expected one of {INITS}")


class Module:
    """Base class: forward(x) -> y, backward(grad_out) -> grad_in, parameters()."""

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_out):
        raise NotImplementedError

    def parameters(self):
        return []

    def __call__(self, x):
        return self.forward(x)


class Linear(Module):
    """y = x W^T + b.   x: (batch, in_features), W: (out_features, in_features), b: (out,).

    backward(dy) returns dx = dy W and sets weight_grad = dy^T x, bias_grad = sum_rows dy.
    """

    def __init__(self, in_features, out_features, dtype=np.float32, seed=None, init="torch",
                 _views=None):
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.dtype = check_dtype(dtype)
        if _views is None:
            n = self.out_features * (self.in_features + 1)
            params = np.empty(n, dtype=self.dtype)
            grads = np.zeros(n, dtype=self.dtype)
            layout = Layout([self.in_features, self.out_features])
            (w,), (b,) = layout.views(params)
            (dw,), (db,) = layout.views(grads)
            _views = (w, b, dw, db)
            init_linear(_views[0], _views[1], init, np.random.default_rng(seed))
        self.weight, self.bias, self.weight_grad, self.bias_grad = _views
        self._x = None

    def forward(self, x):
        x = as_float_array(x, "x", self.dtype)
        if x.shape[1] != self.in_features:
            raise ValueError(f"Linear expects {self.in_features} input features, got {x.shape[1]}")
        self._x = x
        return K.linear(x, self.weight, self.bias)[0]

    def backward(self, grad_out):
        if self._x is None:
            raise RuntimeError("Linear.backward called before forward")
        grad_out = as_float_array(grad_out, "grad_out", self.dtype)
        if grad_out.shape != (self._x.shape[0], self.out_features):
            raise ValueError(
                f"grad_out must have shape {(self._x.shape[0], self.out_features)}, got {grad_out.shape}"
            )
        dx, dw, db = K.linear_backward(grad_out, self._x, self.weight)
        self.weight_grad[...] = dw
        self.bias_grad[...] = db
        return dx

    def parameters(self):
        return [self.weight, self.bias]

    def __repr__(self):
        return f"Linear(in_features={self.in_features}, out_features={self.out_features})"


class Activation(Module):
    """Element-wise activation; backward multiplies by f'(z) at the remembered input.
    One subclass per entry of fastbp.kernels.codes.ACTIVATIONS (ReLU, Tanh, SiLU, ...)."""

    name = "identity"

    def __init__(self, slope=None):
        entry = codes.activation(self.name)
        self.code = entry.code
        self.slope = entry.slope if slope is None else float(slope)
        self._z = self._a = None

    def forward(self, x):
        dtype = x.dtype if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) \
            else np.float64
        z = as_float_array(x, "x", dtype)
        a = np.empty_like(z)
        _act.activation_forward(z, a, self.code, self.slope)
        self._z, self._a = z, a
        return a

    def backward(self, grad_out):
        if self._z is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        g = as_float_array(grad_out, "grad_out", self._z.dtype).copy()
        if g.shape != self._z.shape:
            raise ValueError(f"grad_out must have shape {self._z.shape}, got {g.shape}")
        _act.activation_backward(g, self._z, self._a, self.code, self.slope)
        return g

    def __repr__(self):
        entry = codes.activation(self.name)
        if entry.slope_name:
            return f"{type(self).__name__}({entry.slope_name}={self.slope})"
        return f"{type(self).__name__}()"


def _activation_class(entry):
    """The module-view class of a registry entry: ReLU(), LeakyReLU(negative_slope=0.01)."""
    doc = f"{entry.doc}  (as torch's {entry.torch})"
    if entry.slope_name:
        sig = inspect.Signature([
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter(entry.slope_name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=entry.slope)])

        def __init__(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            Activation.__init__(bound.arguments["self"], bound.arguments[entry.slope_name])
        __init__.__signature__ = sig
    else:
        def __init__(self):
            Activation.__init__(self)
    body = {"__init__": __init__}
    body.update(name=entry.name, __doc__=doc, __module__=__name__, __qualname__=entry.module)
    return type(entry.module, (Activation,), body)


ACTIVATION_CLASSES = tuple(_activation_class(a) for a in codes.ACTIVATIONS)
globals().update({cls.__name__: cls for cls in ACTIVATION_CLASSES})
ACTIVATION_MODULES = {n: ACTIVATION_CLASSES[a.code] for n, a in codes.ACTIVATION_BY_NAME.items()}


class Dropout(Module):
    """Inverted dropout, as torch.nn.Dropout: in training, y = x * mask / (1 - p) with each
    element kept with probability 1 - p; y = x in evaluation (eval()).  Each forward in
    training draws a new mask (kernels/cpu/dropout.py, keyed by seed, a count of forward
    calls and layer); backward multiplies by the same mask."""

    def __init__(self, p=0.5, seed=None, layer=0):
        self.p = check_float(p, "p", 0.0)
        if self.p >= 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.seed = int(np.random.default_rng(seed).integers(1 << 62)) if seed is None \
            else int(seed)
        self.layer = int(layer)
        self.training = True
        self.calls = 0
        self._stream = self._shape = None

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def forward(self, x):
        dtype = x.dtype if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) \
            else np.float64
        x = as_float_array(x, "x", dtype)
        self._shape = x.shape
        if not self.training or self.p == 0.0:
            self._stream = None
            return x
        self.calls += 1
        self._stream = _drop.stream(self.seed, self.calls, self.layer)
        y = np.empty_like(x)
        _drop.dropout_forward(x, y, self._stream, 0, self.p)
        return y

    def backward(self, grad_out):
        if self._shape is None:
            raise RuntimeError("Dropout.backward called before forward")
        g = np.array(as_float_array(grad_out, "grad_out", np.asarray(grad_out).dtype
                                    if np.asarray(grad_out).dtype in (np.float32, np.float64)
                                    else np.float64), copy=True)
        if g.shape != self._shape:
            raise ValueError(f"grad_out must have shape {self._shape}, got {g.shape}")
        if self._stream is not None:
            _drop.dropout_backward(g, self._stream, 0, self.p)
        return g

    def __repr__(self):
        return f"Dropout(p={self.p})"


def activation_module(name):
    """A new module for an activation name or alias (a clear error for an unknown one)."""
    return ACTIVATION_CLASSES[codes.activation_code(name)]()


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse."""

    def __init__(self, *modules):
        for m in modules:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes fastbp modules, got {type(m).__name__}")
        self.modules = list(modules)

    def forward(self, x):
        for m in self.modules:
            x = m.forward(x)
        return x

    def backward(self, grad_out):
        for m in reversed(self.modules):
            grad_out = m.backward(grad_out)
        return grad_out

    def parameters(self):
        return [p for m in self.modules for p in m.parameters()]

    def __getitem__(self, i):
        return self.modules[i]

    def __len__(self):
        return len(self.modules)

    def __repr__(self):
        inner = ",\n  ".join(repr(m) for m in self.modules)
        return f"Sequential(\n  {inner}\n)"
