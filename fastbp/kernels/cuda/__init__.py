"""fastbp's CUDA kernels (numba.cuda), with the same names and meanings as the CPU set.

Importing this package imports numba.cuda; set NUMBA_ENABLE_CUDASIM=1 before that to run
the kernels on Numba's CUDA simulator (no GPU).  The CUDA backend stores and trains in
float32.  Launch helpers take device arrays and return nothing; nothing here synchronises
with the host.
"""
from .activations import activation_backward, activation_forward
from .gemm import EPI_ACT_GRAD, EPI_BIAS_ACT, EPI_NONE, SplitWorkspace, column_sum, gemm
from .launch import Prepared, launch, run_plan
from .losses import (
    SCALE_ARG,
    accumulate,
    accumulate_squares,
    binary_cross_entropy,
    count_correct_labels,
    count_correct_multilabel,
    cross_entropy_labels,
    cross_entropy_targets,
    gather_rows,
    huber,
    mse,
    poisson,
    softmax_rows,
)
from .dropout import STREAM_ARG, dropout
from .optim import adam_update, add_scaled, clip_scale, fill, sgd_update, unit_square_sums

__all__ = [
    "SCALE_ARG",
    "STREAM_ARG",
    "EPI_ACT_GRAD",
    "EPI_BIAS_ACT",
    "EPI_NONE",
    "Prepared",
    "SplitWorkspace",
    "accumulate",
    "accumulate_squares",
    "activation_backward",
    "activation_forward",
    "adam_update",
    "add_scaled",
    "binary_cross_entropy",
    "column_sum",
    "count_correct_labels",
    "clip_scale",
    "count_correct_multilabel",
    "cross_entropy_labels",
    "cross_entropy_targets",
    "dropout",
    "fill",
    "gather_rows",
    "gemm",
    "huber",
    "launch",
    "mse",
    "poisson",
    "run_plan",
    "sgd_update",
    "softmax_rows",
    "unit_square_sums",
]
