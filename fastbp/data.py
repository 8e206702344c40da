"""Users' tables for the command line, and the preprocessing a model file keeps.

A table is read into columns (`read_table`); `Preprocessing.fit` learns, from the training rows
only, how to turn its feature columns into the network's inputs and its target into the
network's targets; `transform` / `decode` apply that to any later table, matching columns by
name.  The learnt state is plain JSON (`to_json` / `from_json`): model files stay pickle-free.

    numeric column      missing cells imputed with the training median, then standardised
    text column         one-hot over the training categories (missing: the most frequent);
                        a category never seen in training encodes as all zeros, with a note
                        (scikit-learn's OneHotEncoder(handle_unknown="ignore"))
    target              classification: the distinct labels, kept as the text that was read;
                        regression: standardised for training, mapped back for predictions
"""
import csv
import os
import re
from dataclasses import dataclass, field

import numpy as np

# pandas' default missing-value markers, plus the UCI repository's "?"
MISSING = frozenset(["", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "-NaN", "NULL", "null",
                     "None", "<NA>", "#N/A", "#NA", "?"])
# an integer-valued target with more distinct values than this (and than rows/20) is
# taken for a quantity (ages, counts), not for classes
MAX_INTEGER_CLASSES = 20


def load_digits():
    """scikit-learn's bundled 8x8 digits: X (1797, 64) float in [0, 16], y (1797,) int."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise ImportError("the digits data set comes with scikit-learn: "
                          "pip install 'fastbp[cli]'") from None
    d = _load()
    return d.data, d.target


@dataclass
class Table:
    """Columns read from a file.  columns[j] is a list of stripped strings (CSV) or a 1-D
    array (.npz); lines[i] is the file line of row i, for messages; header: whether the
    names came from the file."""
    path: str
    names: list
    columns: list
    lines: list
    header: bool
    notes: list = field(default_factory=list)

    @property
    def n_rows(self):
        return len(self.lines)

    def column(self, name):
        return self.columns[self.names.index(name)]

    def where(self, i):
        return f"line {self.lines[i]}" if self.header is not None else f"row {i + 1}"


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


_DECIMAL_COMMA = re.compile(r"^([+-]?\d+),(\d+)$")


def _delimiter(sample):
    """The field separator of a CSV sample: comma, semicolon, tab or bar (csv.Sniffer's
    guess among those; a comma when it cannot tell)."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _looks_like_header(first, rest):
    """csv.Sniffer's idea: the first row is a header when, in some column, it is text above
    numbers; or when every field is text that never appears again in its column."""
    if first and first[0] == "":            # a pandas index column's blank name
        first, rest = first[1:], [r[1:] for r in rest]
    if len(set(first)) != len(first) or any(f in MISSING for f in first):
        return False
    for j, f in enumerate(first):
        vals = [r[j] for r in rest if r[j] not in MISSING]
        if not _is_number(f) and vals and all(_is_number(v) for v in vals):
            return True
    return all(not _is_number(f) and all(r[j] != f for r in rest) for j, f in enumerate(first))


def read_table(path, header=None, known_names=()):
    """A Table from an .npz (arrays X and optionally y: columns x0.. and 'y'; an optional
    string array `feature_names`) or a .csv.  A CSV's first row is its header when `header`
    says so, else when it holds one of `known_names` (a model's columns), else when it looks
    like one.  An unnamed first column (a pandas index) is dropped with a note."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return _read_npz(path)
    if ext not in (".csv", ".tsv", ".txt"):
        raise ValueError(f"unsupported file type {ext!r} for {path!r}; use .npz or .csv")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            delimiter = _delimiter(f.read(1 << 16))
            f.seek(0)
            rows = [(n, [c.strip() for c in r])
                    for n, r in enumerate(csv.reader(f, delimiter=delimiter), 1)
                    if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read {path!r}: {exc}") from exc
    if delimiter == ";":      # the European layout: decimal commas in the numbers
        rows = [(n, [_DECIMAL_COMMA.sub(r"\1.\2", c) for c in r]) for n, r in rows]
    if not rows:
        raise ValueError(f"{path!r} is empty")
    width = len(rows[0][1])
    for n, r in rows:
        if len(r) != width:
            raise ValueError(f"{path!r} line {n}: {len(r)} fields, expected {width} "
                             "(as on the first line)")
    if header is None and set(rows[0][1]) & set(known_names):
        header = True
    if header is None:
        header = _looks_like_header(rows[0][1], [r for _, r in rows[1:]])
    if header:
        names = rows[0][1]
        rows = rows[1:]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{path!r}: column names appear twice: {dup}")
    else:
        names = [f"x{j}" for j in range(width)]
    if not rows:
        raise ValueError(f"{path!r} has a header but no data rows")
    table = Table(path, list(names), [[r[j] for _, r in rows] for j in range(width)],
                  [n for n, _ in rows], bool(header))
    if header and width > 1 and (names[0] == "" or names[0].startswith("Unnamed: ")):
        table.notes.append(f"the first column has no name: taking it for an index "
                           "(as pandas writes), not a feature")
        del table.names[0], table.columns[0]
    if "" in table.names:
        raise ValueError(f"{path!r}: column {table.names.index('') + 1} has no name")
    return table


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            if "X" not in data:
                raise ValueError(f"no array 'X' (found {sorted(data.files)})")
            X = np.asarray(data["X"])
            y = np.asarray(data["y"]) if "y" in data else None
            names = [str(s) for s in data["feature_names"]] if "feature_names" in data else None
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read {path!r} as .npz: {exc}") from exc
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{path!r}: X must be numeric, got dtype {X.dtype}")
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{path!r}: X must be a non-empty 2-D array, got shape {X.shape}")
    names = names or [f"x{j}" for j in range(X.shape[1])]
    if len(names) != X.shape[1]:
        raise ValueError(f"{path!r}: {len(names)} feature_names for {X.shape[1]} columns")
    columns = [X[:, j].astype(np.float64) for j in range(X.shape[1])]
    if y is not None:
        if len(y) != X.shape[0]:
            raise ValueError(f"{path!r}: y has {len(y)} entries, X {X.shape[0]} rows")
        names, columns = names + ["y"], columns + [y]
    return Table(path, names, columns, list(range(1, X.shape[0] + 1)), None)


def _numbers(values):
    """(float64 array with NaN where missing, index of the first unparsable value or None)."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64), None
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if v in MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except ValueError:
            return out, i
    return out, None


def _numeric_column(table, name, col):
    """The column's numbers (float64, NaN where missing), or a ValueError naming the first
    cell that is not a number, or infinite, by column and line."""
    x, bad = _numbers(col)
    if bad is not None:
        raise ValueError(f"{table.path!r} {table.where(bad)}, column {name!r}: "
                         f"{_text(col)[bad]!r} is not a number")
    if np.any(np.isinf(x)):
        i = int(np.flatnonzero(np.isinf(x))[0])
        raise ValueError(f"{table.path!r} {table.where(i)}, column {name!r}: infinite value")
    return x


def _text(values):
    if isinstance(values, np.ndarray):
        return [str(v) for v in values]
    return values


def check_labels(table, target):
    """The target column as text; a missing label is an error that names the rows."""
    raw = table.column(target)
    if isinstance(raw, np.ndarray) and raw.ndim != 1:
        raise ValueError(f"{table.path!r}: {target!r} must be 1-D, got shape {raw.shape}")
    text = _text(raw)
    missing = [i for i, v in enumerate(text) if v in MISSING]
    if missing:
        where = ", ".join(table.where(i) for i in missing[:8])
        raise ValueError(f"{table.path!r}: {len(missing)} rows have no {target!r} label "
                         f"({where}{', ...' if len(missing) > 8 else ''}); drop them or "
                         "fill them in")
    return text


def _label_order(labels):
    """Distinct labels sorted as numbers when they all are, else as text."""
    distinct = set(labels)
    if all(_is_number(v) for v in distinct):
        return sorted(distinct, key=lambda v: (float(v), v))
    return sorted(distinct)


class Preprocessing:
    """From a table's columns to the network's inputs and targets, and back.

    features: list of dicts, one per input column in training order:
        {"name", "kind": "numeric", "fill", "mean", "scale"} or
        {"name", "kind": "categorical", "fill", "categories": [...]}
    target: the target column's name (None when predicting only); task: "classification" /
    "regression"; classes: labels as text (classification); y_mean, y_scale (regression);
    header: whether the training file named its columns (else columns go by position).
    """

    def __init__(self, features, target, task, classes=None, y_mean=0.0, y_scale=1.0,
                 header=True):
        self.features, self.target, self.task = features, target, task
        self.classes, self.y_mean, self.y_scale, self.header = classes, y_mean, y_scale, header

    # ------------------------------------------------------------------ learning
    @classmethod
    def choose_task(cls, table, target, task="auto"):
        """(task, reason): scikit-learn's type_of_target, except that an integer target with
        many distinct values (ages, counts) is taken for a quantity."""
        values = check_labels(table, target)
        numeric = all(_is_number(v) for v in set(values))
        if task != "auto":
            if task == "regression" and not numeric:
                bad = next(v for v in values if not _is_number(v))
                raise ValueError(f"--task regression: target {target!r} holds text ({bad!r})")
            return task, "as asked (--task)"
        if not numeric:
            return "classification", f"target {target!r} holds text labels"
        y = np.array([float(v) for v in values])
        if not np.all(np.isfinite(y)):
            raise ValueError(f"target {target!r} holds NaN or infinite values")
        if np.any(y != np.round(y)):
            return "regression", f"target {target!r} holds non-integer numbers"
        k = len(np.unique(y))
        if k > MAX_INTEGER_CLASSES and k > len(y) / 20:
            return "regression", (f"target {target!r} holds {k} distinct integers for "
                                  f"{len(y)} rows: taken for a quantity (use --task "
                                  "classification to treat them as classes)")
        return "classification", f"target {target!r} holds {k} distinct integer labels"

    @classmethod
    def fit(cls, table, target, task, rows):
        """Learn from table's rows `rows` (the training split); target: a column name."""
        features, notes = [], []
        for name, col in zip(table.names, table.columns):
            if name == target:
                continue
            try:
                x = _numeric_column(table, name, col)
            except ValueError:
                text = _text(col)
                n_num = sum(_is_number(v) for v in text if v not in MISSING)
                n_val = sum(v not in MISSING for v in text)
                if 2 * n_num >= n_val:       # mostly numbers: the text is a typo
                    raise
                seen = [text[i] for i in rows if text[i] not in MISSING]
                cats, counts = np.unique(seen, return_counts=True) if seen else ([], [])
                cats = [str(c) for c in cats]
                fill = cats[int(np.argmax(counts))] if cats else None
                features.append({"name": name, "kind": "categorical", "fill": fill,
                                 "categories": cats})
                n_missing = sum(text[i] in MISSING for i in rows)
                notes.append(f"column {name!r}: text, one-hot over {len(cats)} categories"
                             + (f"; {n_missing} missing values take the most frequent, "
                                f"{fill!r}" if n_missing else ""))
                continue
            tr = x[rows]
            n_missing = int(np.isnan(tr).sum())
            fill = float(np.nanmedian(tr)) if n_missing < len(tr) else 0.0
            tr = np.where(np.isnan(tr), fill, tr)
            scale = float(tr.std())
            features.append({"name": name, "kind": "numeric", "fill": fill,
                             "mean": float(tr.mean()), "scale": scale if scale > 0 else 1.0})
            if n_missing:
                notes.append(f"column {name!r}: {n_missing} missing values take the "
                             f"median, {fill:g}")
        if not features:
            raise ValueError(f"{table.path!r} has no feature columns besides the target")
        prep = cls(features, target, task, header=bool(table.header))
        if task == "regression":
            y = prep.targets(table)[rows, 0]
            prep.y_mean, prep.y_scale = float(y.mean()), float(y.std()) or 1.0
        else:
            labels = _text(table.column(target))
            prep.classes = _label_order(labels[i] for i in range(table.n_rows))
        return prep, notes

    # ------------------------------------------------------------------ applying
    @property
    def n_inputs(self):
        return sum(len(f["categories"]) if f["kind"] == "categorical" else 1
                   for f in self.features)

    def input_names(self):
        return [f"{f['name']}={c}" if f["kind"] == "categorical" else f["name"]
                for f in self.features for c in (f.get("categories") or [None])]

    def select(self, table):
        """The table's feature columns in training order, and notes.  Columns go by name
        when both files have headers, else by position (the count must match)."""
        want = [f["name"] for f in self.features]
        notes = []
        if self.header and table.header:
            if self.target in table.names:
                notes.append(f"ignoring column {self.target!r} (the target)")
            missing = [n for n in want if n not in table.names]
            if missing:
                raise ValueError(f"{table.path!r} lacks the model's feature column"
                                 f"{'s' if len(missing) > 1 else ''} {missing}")
            extra = [n for n in table.names if n not in want and n != self.target]
            if extra:
                notes.append(f"ignoring column{'s' if len(extra) > 1 else ''} {extra}, "
                             "which the model was not trained on")
            return [table.column(n) for n in want], notes
        columns = list(table.columns)
        if (self.target in table.names and table.header is not True
                and len(table.names) == len(want) + 1):   # the training file's layout
            notes.append(f"ignoring column {self.target!r} (the target)")
            del columns[table.names.index(self.target)]
        if len(columns) != len(want):
            raise ValueError(f"{table.path!r} has {len(table.names)} columns, the model takes "
                             f"{len(want)} ({', '.join(want)})"
                             + ("; give the file a header row to select them by name"
                                if self.header else ""))
        return columns, notes

    def transform(self, table):
        """(X float64 (n, n_inputs), notes): the network's inputs for every row of table."""
        columns, notes = self.select(table)
        X = np.empty((table.n_rows, self.n_inputs))
        j = 0
        for f, col in zip(self.features, columns):
            name = f["name"]
            if f["kind"] == "numeric":
                x = _numeric_column(table, name, col)
                n_missing = int(np.isnan(x).sum())
                if n_missing:
                    notes.append(f"column {name!r}: {n_missing} missing values take the "
                                 f"training median, {f['fill']:g}")
                X[:, j] = (np.where(np.isnan(x), f["fill"], x) - f["mean"]) / f["scale"]
                j += 1
                continue
            cats = f["categories"]
            index = {c: k for k, c in enumerate(cats)}
            text = [f["fill"] if v in MISSING else v for v in _text(col)]
            codes = np.array([index.get(v, -1) for v in text])
            block = X[:, j:j + len(cats)]
            block[:] = 0.0
            known = codes >= 0
            block[np.flatnonzero(known), codes[known]] = 1.0
            if not known.all():
                unseen = sorted({v for v, k in zip(text, known) if not k})
                notes.append(f"column {name!r}: {int((~known).sum())} rows hold categories "
                             f"unseen in training ({', '.join(map(repr, unseen[:5]))}"
                             f"{', ...' if len(unseen) > 5 else ''}): encoded as all zeros")
            j += len(cats)
        return X, notes

    def targets(self, table):
        """The network's targets for every row: class indices (int64, (n,)) or the
        standardised target (float64, (n, 1))."""
        raw = table.column(self.target)
        text = check_labels(table, self.target)
        if self.task == "regression":
            y, bad = _numbers(raw)
            if bad is not None:
                raise ValueError(f"{table.path!r} {table.where(bad)}: target "
                                 f"{self.target!r} {text[bad]!r} is not a number")
            return ((y - self.y_mean) / self.y_scale).reshape(-1, 1)
        if self.classes is None:
            return None
        index = {c: k for k, c in enumerate(self.classes)}
        return np.array([index[v] for v in text], dtype=np.int64)

    def decode(self, outputs):
        """The network's outputs as the user's values: labels (text) for class indices,
        target units for regression outputs."""
        if self.task == "regression":
            return np.asarray(outputs, dtype=np.float64) * self.y_scale + self.y_mean
        if self.classes is None:
            return np.asarray(outputs)
        return np.asarray(self.classes, dtype=object)[outputs]

    # ------------------------------------------------------------------ storing
    def to_json(self):
        return {"features": self.features, "target": self.target, "task": self.task,
                "classes": self.classes, "y_mean": self.y_mean, "y_scale": self.y_scale,
                "header": self.header}

    @classmethod
    def from_json(cls, d):
        try:
            prep = cls(list(d["features"]), d["target"], d["task"], d.get("classes"),
                       float(d["y_mean"]), float(d["y_scale"]), bool(d["header"]))
            for f in prep.features:
                if f["kind"] == "numeric":
                    float(f["fill"]), float(f["mean"]), float(f["scale"])
                elif f["kind"] != "categorical" or not isinstance(f["categories"], list):
                    raise ValueError(f"feature {f.get('name')!r} of unknown kind")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"corrupt preprocessing record: {exc}") from None
        if prep.task not in ("classification", "regression"):
            raise ValueError(f"corrupt preprocessing record: task {prep.task!r}")
        return prep

    @classmethod
    def from_legacy(cls, extra, n_features, loss):
        """Files written before the preprocessing record: x_mean/x_scale and classes."""
        mean = np.asarray(extra.get("x_mean", np.zeros(n_features)), dtype=np.float64)
        scale = np.asarray(extra.get("x_scale", np.ones(n_features)), dtype=np.float64)
        if mean.shape != (n_features,) or scale.shape != (n_features,):
            raise ValueError(f"x_mean/x_scale do not match the model's {n_features} features")
        features = [{"name": f"x{j}", "kind": "numeric", "fill": float(m), "mean": float(m),
                     "scale": float(s)} for j, (m, s) in enumerate(zip(mean, scale))]
        classes = [str(c) for c in extra["classes"]] if "classes" in extra else None
        task = "regression" if loss == "mse" else "classification"
        return cls(features, None, task, classes, header=False)


def load_model_file(path):
    """(model, Preprocessing) from a model file written by 'fastbp train' (or MLP.save:
    numeric columns taken as they are)."""
    import json

    from .model import load
    model, extra = load(path, return_extra=True)
    if "preprocessing" in extra:
        try:
            record = json.loads(str(extra["preprocessing"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path!r}: corrupt preprocessing record ({exc})") from None
        prep = Preprocessing.from_json(record)
    else:
        prep = Preprocessing.from_legacy(extra, model.n_features, model.loss)
    if prep.n_inputs != model.n_features:
        raise ValueError(f"{path!r}: its preprocessing makes {prep.n_inputs} inputs, the "
                         f"network takes {model.n_features}")
    if prep.task == "classification" and prep.classes is not None \
            and len(prep.classes) != model.n_outputs:
        raise ValueError(f"{path!r}: {len(prep.classes)} class names for "
                         f"{model.n_outputs} outputs")
    return model, prep
