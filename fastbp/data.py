"""Data for the command line: the bundled digits set and users' .npz / .csv files."""
import csv
import os

import numpy as np


def load_digits():
    """scikit-learn's bundled 8x8 digits: X (1797, 64) float in [0, 16], y (1797,) int."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise ImportError("the digits data set comes with scikit-learn: "
                          "pip install 'fastbp[cli]'") from None
    d = _load()
    return d.data, d.target


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_table(path, target=None, require_target=True):
    """Read X (and y) from an .npz (arrays X and y) or a .csv file.

    CSV: a header row is detected when its fields are not all numbers; the target is the
    column named `target` (needs a header), else the last column.  Feature columns must be
    numeric; the target may hold any labels (strings become classes).
    Returns (X float64 (n, d), y (n,) or None, feature_names).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                if "X" not in data:
                    raise ValueError(f"{path!r} has no array 'X' (found {sorted(data.files)})")
                X = np.asarray(data["X"])
                y = np.asarray(data["y"]) if "y" in data else None
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {path!r} as .npz: {exc}") from exc
        if require_target and y is None:
            raise ValueError(f"{path!r} has no array 'y' with the targets")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"{path!r}: X must be numeric, got dtype {X.dtype}")
        if X.ndim == 1:
            X = X.reshape(-1, 1)
        return X.astype(np.float64), y, [f"x{i}" for i in range(X.shape[1])]
    if ext not in (".csv", ".txt"):
        raise ValueError(f"unsupported file type {ext!r} for {path!r}; use .npz or .csv")
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path!r}: {exc}") from exc
    if not rows:
        raise ValueError(f"{path!r} is empty")
    header = None
    if not all(_is_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise ValueError(f"{path!r} has a header but no data rows")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ValueError(f"{path!r}: row {i + 1 + (header is not None)} has {len(r)} "
                             f"fields, expected {width}")
    names = header or [f"x{i}" for i in range(width)]
    if target is not None:
        if header is None:
            raise ValueError(f"--target {target!r} needs a header row in {path!r}")
        if target not in header:
            raise ValueError(f"no column {target!r} in {path!r}; columns: {header}")
        t = header.index(target)
    else:
        t = width - 1 if require_target else None
    cols = [j for j in range(width) if j != t]
    try:
        X = np.array([[float(r[j]) for j in cols] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path!r}: feature columns must be numeric ({exc})") from None
    y = None
    if t is not None:
        raw = [r[t].strip() for r in rows]
        y = np.array([float(v) for v in raw]) if all(_is_number(v) for v in raw) else np.array(raw)
    return X, y, [names[j] for j in cols]


def encode_labels(y):
    """(classes, codes): the sorted distinct labels and each sample's index into them."""
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    return classes, codes.astype(np.int64)


def looks_like_regression(y):
    """True for float targets that are not all whole numbers."""
    y = np.asarray(y)
    return y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y)))
