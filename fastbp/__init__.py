"""fastbp: Numba-compiled kernels for training multi-layer perceptrons by backpropagation."""
from . import runtime  # noqa: F401  (threading layer: must precede the first kernel call)
from . import kernels
from ._version import __version__
from .export import to_onnx
from .gradcheck import gradcheck
from .layers import ACTIVATION_CLASSES, Dropout, Linear, Module, Sequential
from .model import MLP, load
from .optim import SGD, Adam, AdamW, Optimizer, clip_grad_norm_
from .schedules import (
    ConstantLR,
    CosineLR,
    InverseScalingLR,
    LRSchedule,
    ReduceLROnPlateau,
    StepLR,
)
from .train import CSVLogger, History, TrainingDiverged, fit


# The module view's activations (ReLU, Tanh, SiLU, ...), one per registry entry.
globals().update({cls.__name__: cls for cls in ACTIVATION_CLASSES})

__all__ = [
    "MLP", "Linear", "Sequential", "Module", "Dropout",
    *(cls.__name__ for cls in ACTIVATION_CLASSES),
    "SGD", "Adam", "AdamW", "Optimizer", "clip_grad_norm_", "gradcheck", "kernels", "fit",
    "History", "TrainingDiverged", "CSVLogger", "load", "LRSchedule", "ConstantLR", "StepLR", "CosineLR",
    "InverseScalingLR", "ReduceLROnPlateau", "MLPClassifier", "MLPRegressor", "to_onnx",
]


def __getattr__(name):
    # The estimators import scikit-learn, an optional dependency: load them on first use.
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")
