"""fastbp: Numba-compiled kernels for training multi-layer perceptrons by backpropagation."""
from . import kernels
from .gradcheck import gradcheck
from .layers import (
    GELU,
    Identity,
    LeakyReLU,
    Linear,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from .model import MLP
from .optim import SGD, Adam, AdamW, Optimizer

__version__ = "0.1.0"

__all__ = [
    "MLP", "Linear", "Sequential", "Module", "Identity", "ReLU", "LeakyReLU", "Sigmoid",
    "Tanh", "GELU", "SGD", "Adam", "AdamW", "Optimizer", "gradcheck", "kernels",
]
