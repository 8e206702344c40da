"""The registry: every activation, loss and optimizer fastbp knows, with its integer code
and, for activations, its formula.  One place per idea: the CPU and CUDA kernels, the
module view (``fastbp.ReLU`` ...), the estimators' and the command line's choices and the
tests' parametrisation are all derived from the tables below.

An activation's formulas are plain Python over a few primitives that each device supplies
(``like``, ``exp``, ``log1p``, ``sigmoid``, ``tanh``, ``gelu``, ``gelu_grad``; see
``PRIMITIVES``): the CPU kernels compile them with Numba's ``njit`` and their vectorised
float32/float64 primitives (``kernels/cpu/activations.py``), the CUDA kernels with
``cuda.jit(device=True)`` and libdevice's (``kernels/cuda/activations.py``).  Write
constants as ``like(x, c)`` (the constant in x's precision): a bare Python float is a
float64 in Numba and would turn float32 arithmetic into float64.

    forward(z, slope)      -> f(z)                       z: one float32 or float64 value
    backward(g, x, slope)  -> g * f'(z)                  x is z, or a = f(z) where
                                                         grad_from == "a" (exact and cheaper)
slope is leaky ReLU's negative slope (unused by the others).

To add an activation, append an ``Activation`` to ``ACTIVATIONS`` with the next code; every
kernel, the module view, the estimators and the command line then accept it.
"""
import math
from dataclasses import dataclass, field
from typing import Callable


# Primitives in plain Python (float64): what the formulas mean, and what they compute when
# called outside compiled code.  Each device replaces them (see make_formula).
def like(x, c):
    """The constant c in the precision x is computed in."""
    return c


def exp(x):
    return math.exp(x)


def log1p(x):
    return math.log1p(x)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def tanh(x):
    return math.tanh(x)


GELU_C, GELU_K = math.sqrt(2.0 / math.pi), 0.044715


def gelu(x):
    """0.5 x (1 + tanh(c (x + k x^3))), c = sqrt(2/pi), k = 0.044715 (PyTorch's "tanh")."""
    return 0.5 * x * (1.0 + math.tanh(GELU_C * (x + GELU_K * x ** 3)))


def gelu_grad(x):
    t = math.tanh(GELU_C * (x + GELU_K * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_K * x * x)


PRIMITIVES = ("like", "exp", "log1p", "sigmoid", "tanh", "gelu", "gelu_grad")


def make_formula(fn, primitives):
    """fn with its primitives replaced by a device's (a dict name -> function), for that
    device's compiler.  The code object is shared, so a formula is written once."""
    import types
    missing = set(PRIMITIVES) - set(primitives)
    if missing:
        raise ValueError(f"a device's primitives lack {sorted(missing)}")
    scope = dict(fn.__globals__)
    scope.update(primitives)
    return types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__,
                              fn.__closure__)


@dataclass(frozen=True)
class Activation:
    """One activation.  name: the canonical name; aliases: other accepted names (the first
    alias that scikit-learn uses, if any, is what the estimators list); module: the class
    name in fastbp's module view; torch: the equivalent torch.nn module, as an expression
    of ``nn`` (the tests build it); piecewise_linear: made of comparisons and products (the
    GEMM has a lean epilogue for these); slope, slope_name: the default and the module
    view's argument name of the one parameter an activation may have (leaky ReLU's);
    onnx: f(z) in standard ONNX operators, onnx(g, z, slope) -> name, where g.op(type,
    *inputs, **attributes) adds a node and g.const(x) a scalar (fastbp.export)."""
    name: str
    code: int
    forward: Callable
    backward: Callable
    grad_from: str
    module: str
    torch: str
    aliases: tuple = ()
    piecewise_linear: bool = False
    slope: float = 0.0
    slope_name: str = ""
    doc: str = field(default="", compare=False)
    onnx: Callable = field(default=None, compare=False)


# ----------------------------------------------------------------------------- formulas
def _identity(z, slope):
    return z


def _identity_back(g, z, slope):
    return g


def _relu(z, slope):
    return max(z, like(z, 0.0))


def _relu_back(g, z, slope):
    return g if z > 0 else like(g, 0.0)


def _leaky_relu(z, slope):
    return z if z > 0 else slope * z


def _leaky_relu_back(g, z, slope):
    return g if z > 0 else g * slope


def _sigmoid(z, slope):
    return sigmoid(z)


def _sigmoid_back(g, a, slope):
    return g * (a * (like(a, 1.0) - a))


def _tanh(z, slope):
    return tanh(z)


def _tanh_back(g, a, slope):
    return g * (like(a, 1.0) - a * a)


def _gelu(z, slope):
    return gelu(z)


def _gelu_back(g, z, slope):
    return g * gelu_grad(z)


def _silu(z, slope):
    return z * sigmoid(z)


def _silu_back(g, z, slope):
    s = sigmoid(z)
    return g * (s * (like(z, 1.0) + z * (like(z, 1.0) - s)))


_SOFTPLUS_THRESHOLD = 20.0     # PyTorch's: above it softplus(z) is z in float32 and float64


def _softplus(z, slope):
    return z if z > like(z, _SOFTPLUS_THRESHOLD) else log1p(exp(z))


def _softplus_back(g, z, slope):
    return g if z > like(z, _SOFTPLUS_THRESHOLD) else g * sigmoid(z)


# ----------------------------------------------------------------------------- ONNX forms
def _gelu_onnx(g, z, slope):
    cube = g.op("Mul", g.op("Mul", z, z), z)
    inner = g.op("Mul", g.const(math.sqrt(2.0 / math.pi)),
                 g.op("Add", z, g.op("Mul", g.const(0.044715), cube)))
    return g.op("Mul", g.op("Mul", g.const(0.5), z), g.op("Add", g.const(1.0),
                                                          g.op("Tanh", inner)))


def _softplus_onnx(g, z, slope):   # PyTorch's threshold; ONNX Softplus alone overflows
    return g.op("Where", g.op("Greater", z, g.const(_SOFTPLUS_THRESHOLD)), z,
                g.op("Softplus", z))


ACTIVATIONS = (
    Activation("identity", 0, _identity, _identity_back, "z", "Identity", "nn.Identity()",
               aliases=("linear",), piecewise_linear=True, doc="f(z) = z",
               onnx=lambda g, z, slope: z),
    Activation("relu", 1, _relu, _relu_back, "z", "ReLU", "nn.ReLU()",
               piecewise_linear=True, doc="f(z) = max(z, 0)",
               onnx=lambda g, z, slope: g.op("Relu", z)),
    Activation("leaky_relu", 2, _leaky_relu, _leaky_relu_back, "z", "LeakyReLU",
               "nn.LeakyReLU(0.01)", piecewise_linear=True, slope=0.01,
               slope_name="negative_slope",
               doc="f(z) = z if z > 0 else slope * z (slope 0.01)",
               onnx=lambda g, z, slope: g.op("LeakyRelu", z, alpha=slope)),
    Activation("sigmoid", 3, _sigmoid, _sigmoid_back, "a", "Sigmoid", "nn.Sigmoid()",
               aliases=("logistic",), doc="f(z) = 1 / (1 + exp(-z)); f' = a (1 - a)",
               onnx=lambda g, z, slope: g.op("Sigmoid", z)),
    Activation("tanh", 4, _tanh, _tanh_back, "a", "Tanh", "nn.Tanh()",
               doc="f(z) = tanh(z); f' = 1 - a^2",
               onnx=lambda g, z, slope: g.op("Tanh", z)),
    Activation("gelu", 5, _gelu, _gelu_back, "z", "GELU", "nn.GELU(approximate='tanh')",
               doc="f(z) = 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))",
               onnx=_gelu_onnx),
    Activation("silu", 6, _silu, _silu_back, "z", "SiLU", "nn.SiLU()",
               aliases=("swish",),
               doc="f(z) = z sigmoid(z); f' = s (1 + z (1 - s)), s = sigmoid(z)",
               onnx=lambda g, z, slope: g.op("Mul", z, g.op("Sigmoid", z))),
    Activation("softplus", 7, _softplus, _softplus_back, "z", "Softplus", "nn.Softplus()",
               doc="f(z) = log(1 + exp(z)), z above 20; f' = sigmoid(z)",
               onnx=_softplus_onnx),
)

ACTIVATION_BY_NAME = {}
for _a in ACTIVATIONS:
    for _n in (_a.name,) + _a.aliases:
        ACTIVATION_BY_NAME[_n] = _a
ACTIVATION_CODES = {n: a.code for n, a in ACTIVATION_BY_NAME.items()}
ACTIVATION_NAMES = tuple(a.name for a in ACTIVATIONS)
# Named constants for the kernels that special-case an activation (the GEMM's lean
# epilogue).  Codes are positions in ACTIVATIONS.
IDENTITY, RELU, LEAKY_RELU = 0, 1, 2
PIECEWISE_LINEAR = tuple(a.code for a in ACTIVATIONS if a.piecewise_linear)
assert all(a.code == i for i, a in enumerate(ACTIVATIONS))
assert [ACTIVATIONS[c].name for c in (IDENTITY, RELU, LEAKY_RELU)] == [
    "identity", "relu", "leaky_relu"]
# The GEMM's lean epilogue (kernels/cpu/gemm.py) is written for exactly these three.
assert PIECEWISE_LINEAR == (IDENTITY, RELU, LEAKY_RELU), "see _epilogue_piecewise_linear"

# The names scikit-learn's MLP uses (its "logistic" for sigmoid), then fastbp's additions.
SKLEARN_ACTIVATION_NAMES = tuple("logistic" if a.name == "sigmoid" else a.name
                                 for a in ACTIVATIONS)


def activation(name):
    """The Activation for a name or alias, with a clear error for anything else."""
    if not isinstance(name, str):
        raise TypeError(f"activation must be a name (str), got {name!r}")
    try:
        return ACTIVATION_BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {sorted(ACTIVATION_BY_NAME)}"
        ) from None


def activation_code(name):
    """The integer code of an activation name or alias."""
    return activation(name).code


def hidden_activations(spec, n_hidden):
    """The Activation of each of n_hidden hidden layers: spec is one name for all of them,
    or a sequence of n_hidden names (first hidden layer first)."""
    if isinstance(spec, str):
        return (activation(spec),) * n_hidden
    try:
        names = list(spec)
    except TypeError:
        raise TypeError("activation must be a name (str) or a list of one name per hidden "
                        f"layer, got {spec!r}") from None
    if len(names) != n_hidden:
        raise ValueError(f"activation lists {len(names)} names for {n_hidden} hidden "
                         f"layer{'s' if n_hidden != 1 else ''}: give one per hidden layer")
    return tuple(activation(n) for n in names)


def epilogue_code(act_codes):
    """The one code column_chunk_address needs for a network's activation codes: the
    first that is not piecewise linear, else IDENTITY (the lean epilogue serves them all)."""
    return next((int(c) for c in act_codes if int(c) not in PIECEWISE_LINEAR), IDENTITY)


# ----------------------------------------------------------------------------- losses
# Loss codes as the compiled training steps use them.  cross_entropy takes integer labels
# (CE_LABELS) or probability targets (CE_TARGETS).  Cross-entropy averages over rows, the
# others over every output of every row (kernels/cpu/losses.py has the formulas).
# poisson: the outputs are log-means (log link), predictions exp(output).  A loss may have
# one parameter (the steps' Config.loss_param): cross-entropy's label smoothing, Huber's
# delta.
LOSS_CE_LABELS, LOSS_CE_TARGETS, LOSS_MSE, LOSS_BCE, LOSS_POISSON, LOSS_HUBER = range(6)
LOSSES = ("cross_entropy", "mse", "binary_cross_entropy", "poisson", "huber")


def loss_code(name, labels):
    """The compiled steps' code for a loss name; labels: y holds integer class labels."""
    if name == "cross_entropy":
        return LOSS_CE_LABELS if labels else LOSS_CE_TARGETS
    return {"mse": LOSS_MSE, "binary_cross_entropy": LOSS_BCE, "poisson": LOSS_POISSON,
            "huber": LOSS_HUBER}[name]


# The element-wise regression losses' terms, one formula for both devices (the row kernels
# of kernels/cpu/losses.py and kernels/cuda/losses.py compile them): for a prediction z
# and target t (float64), (the term's loss, its derivative in z); the kernels sum the
# losses over a row and scale the derivatives.


def mse_term(z, t):
    """(z - t)^2 and its derivative."""
    d = z - t
    return d * d, 2.0 * d


def poisson_term(z, t):
    """exp(z) - t z (z a log-mean) and its derivative."""
    e = math.exp(z)
    return e - t * z, e - t


def huber_term(z, t, delta):
    """Huber's term of d = z - t (as torch.nn.HuberLoss: d^2 / 2 within delta, else
    delta (|d| - delta / 2)) and its derivative."""
    d = z - t
    if abs(d) <= delta:
        return 0.5 * d * d, d
    return delta * (abs(d) - 0.5 * delta), (delta if d > 0 else -delta)


# ----------------------------------------------------------------------------- dropout
# Dropout's mask, one formula for both devices (kernels/cpu/dropout.py, kernels/cuda/
# dropout.py compile it): an element is kept when the top 24 bits of its hash are at least
# p * 2^24.  The hash: two rounds of MurmurHash3's 32-bit finaliser over the element's
# index in its layer's block of the batch, XORed with the low key, then plus the high key
# (s: the two 32-bit keys of one layer at one step, from SplitMix64 in kernels/cpu/
# dropout.stream).  32-bit products: they vectorise on AVX2, where 64-bit ones do not.
# Written over int64 with masks, so that Python, Numba and CUDA compute the same bits.


def dropout_threshold(p):
    """Elements whose hash's top 24 bits fall below this are dropped (p * 2^24, rounded)."""
    return int(p * 16777216.0 + 0.5)


def dropout_kept(s, index, threshold):
    """Whether element `index` (< 2^32) of a layer's block is kept, for keys s."""
    h = (index ^ s) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h + (s >> 32)) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return (h >> 8) >= threshold


def clip_scale(total, max_norm):
    """Gradient clipping's factor for a gradient whose squares sum to total, as
    torch.nn.utils.clip_grad_norm_: min(1, max_norm / (norm + 1e-6)) (NaN stays NaN).  One
    formula for kernels/cpu/optim.clip_coefficient and kernels/cuda/optim.clip_scale."""
    coef = max_norm / (math.sqrt(total) + 1e-6)
    if coef > 1.0:
        coef = 1.0
    return coef


# ----------------------------------------------------------------------------- optimizers
OPT_SGD, OPT_ADAM = 0, 1
OPTIMIZERS = ("sgd", "adam", "adamw")
