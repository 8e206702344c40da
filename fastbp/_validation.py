"""Input checks shared by every public entry point.

Numba does no bounds checking, so everything a kernel will index is validated here first:
shapes, dtypes, finiteness and label ranges.  Errors say what was wrong and what was
expected.  Checks that look at every element use small compiled loops that allocate
nothing, so they can sit on the training hot path.
"""
import numbers
from collections import namedtuple

import numpy as np
from numba import njit

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@njit(cache=True)
def count_nonfinite(flat):
    n = 0
    for i in range(flat.shape[0]):
        v = flat[i]
        if not (v - v == 0.0):  # false for nan and +-inf
            n += 1
    return n


def check_dtype(dtype):
    """Return the model dtype as np.dtype, float32 or float64 only."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _check_numeric(arr, name):
    kind = arr.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (bool, int or float), got dtype {arr.dtype}"
        )


def check_finite(arr, name):
    """Raise ValueError if a float array holds NaN or inf (no allocation for contiguous input)."""
    if arr.dtype.kind != "f" or arr.size == 0:
        return
    flat = arr.reshape(-1) if arr.flags.c_contiguous else np.ravel(arr)
    bad = count_nonfinite(flat)
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); clean or impute them first")


def as_float_array(x, name, dtype, ndim=2, allow_empty=False):
    """x as a C-contiguous array of `dtype` and `ndim` dims, checked numeric and finite.

    Copies only when x is not already of that dtype and layout.
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} could not be converted to a numeric array: {exc}") from exc
    _check_numeric(x, name)
    if x.ndim != ndim:
        hint = ""
        if ndim == 2 and x.ndim == 1:
            hint = (" — reshape with x.reshape(-1, 1) if it is one feature, or "
                    "x.reshape(1, -1) if it is one sample")
        raise ValueError(
            f"{name} must be a {ndim}-D array, got a {x.ndim}-D array of shape {x.shape}{hint}"
        )
    if x.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {x.shape}); at least one sample is needed")
    x = np.ascontiguousarray(x, dtype=dtype)
    check_finite(x, name)
    return x


CSRRows = namedtuple("CSRRows", "indptr indices values shape")
"""A sparse X as fastbp's kernels take it (kernels/cpu/sparse.py): CSR arrays indptr
(n + 1,) int64, indices (nnz,) int64 sorted and unique within each row, values (nnz,) of the
model's dtype, all finite, and shape (n, d)."""


def is_sparse(x):
    """Whether x is a SciPy sparse matrix or array (or already CSRRows)."""
    return isinstance(x, CSRRows) or (hasattr(x, "tocsr") and hasattr(x, "nnz"))


def as_csr(x, name, dtype):
    """A SciPy sparse matrix or array (CSR, CSC, COO, ...: any index dtype) as CSRRows of
    `dtype`, checked numeric, 2-D, non-empty and finite.  Never densifies; copies the index
    arrays to int64 and the values to dtype (duplicates summed, indices sorted)."""
    if isinstance(x, CSRRows):
        return x
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers (bool, int or float), got dtype "
                        f"{x.dtype}")
    if len(x.shape) != 2:
        raise ValueError(f"{name} must be a 2-D sparse matrix, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); at least one sample is needed")
    csr = x.tocsr(copy=True)
    csr.sum_duplicates()             # sorted, unique indices per row
    values = np.ascontiguousarray(csr.data, dtype=dtype)
    check_finite(values, name)
    return CSRRows(np.ascontiguousarray(csr.indptr, dtype=np.int64),
                   np.ascontiguousarray(csr.indices, dtype=np.int64), values,
                   (int(csr.shape[0]), int(csr.shape[1])))


def check_positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def check_float(value, name, low=None, high=None, low_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_class_labels(y, n_classes, n_samples, name="y"):
    """y as C-contiguous int64 class labels in [0, n_classes), length n_samples."""
    if not isinstance(y, np.ndarray):
        y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D integer class labels, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must hold integer class labels for cross_entropy, got dtype {y.dtype}; "
            "convert with y.astype(int), or pass 2-D probability targets of shape "
            "(n_samples, n_classes)"
        )
    if y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} labels but X has {n_samples} samples")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{name} holds label {bad}, outside the valid range [0, {n_classes - 1}] "
            f"for a model with {n_classes} outputs"
        )
    # a copy, always: compiled code reads the labels for a whole fit (they are small)
    return np.array(y, dtype=np.int64, order="C", copy=True)


def check_sample_weight(w, n_samples, name="sample_weight"):
    """Sample weights for n_samples rows as a new C-contiguous float64 array (n_samples,):
    a scalar (every row that weight) or a 1-D array of finite, non-negative numbers, not
    all zero.  None stays None (every row weighs 1)."""
    if w is None:
        return None
    if isinstance(w, numbers.Real) and not isinstance(w, (bool, np.bool_)):
        w = np.full(n_samples, float(w))
    if not isinstance(w, np.ndarray):
        try:
            w = np.asarray(w)
        except Exception as exc:
            raise TypeError(f"{name} could not be converted to a numeric array: {exc}") from exc
    _check_numeric(w, name)
    if w.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of {n_samples} weights (or a scalar), "
                         f"got shape {w.shape}")
    if w.shape[0] != n_samples:
        raise ValueError(f"{name} has {w.shape[0]} weights but X has {n_samples} samples")
    # a copy, always: compiled code reads the weights for a whole fit
    w = np.array(w, dtype=np.float64, order="C", copy=True)
    check_finite(w, name)
    if w.size and w.min() < 0:
        i = int(np.argmin(w))
        raise ValueError(f"{name} must be non-negative; row {i} has {w[i]}")
    if not w.any():
        raise ValueError(f"{name} is zero for every sample: nothing to train on")
    return w


def check_targets(t, n_outputs, n_samples, dtype, name="y", unit_interval=False,
                  non_negative=False):
    """Real-valued targets as a C-contiguous (n_samples, n_outputs) array of `dtype`."""
    if not isinstance(t, np.ndarray):
        t = np.asarray(t)
    _check_numeric(t, name)
    if t.ndim == 1 and n_outputs == 1:
        t = t.reshape(-1, 1)
    if t.ndim != 2:
        raise ValueError(
            f"{name} must have shape (n_samples, {n_outputs}), got shape {t.shape}"
        )
    if t.shape[0] != n_samples:
        raise ValueError(f"{name} has {t.shape[0]} rows but X has {n_samples} samples")
    if t.shape[1] != n_outputs:
        raise ValueError(
            f"{name} has {t.shape[1]} columns but the model has {n_outputs} outputs"
        )
    t = np.ascontiguousarray(t, dtype=dtype)
    check_finite(t, name)
    if unit_interval and t.size and (t.min() < 0 or t.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1] for binary_cross_entropy")
    if non_negative and t.size and t.min() < 0:
        raise ValueError(f"{name} must be non-negative for the poisson loss (counts or "
                         f"rates), got a minimum of {t.min()}")
    return t
