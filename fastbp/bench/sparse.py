"""Training on sparse input: a synthetic TF-IDF-like CSR matrix (rows of about 50 stored
values out of 50,000 features, L2-normalised, 20 classes, one hidden layer of 256), one
epoch of fastbp.MLPClassifier against scikit-learn's MLPClassifier on the same matrix, and
fastbp on the same rows densified where they fit in memory (the first 10,000 rows).

    fastbp bench --sparse [--quick]

Each measurement runs in its own process (the worker below), after a warm-up fit on a few
rows (Numba's compilation is not timed); figures are rows per second of one epoch
(Adam, batch_size "auto" = 200) and the process's peak resident memory.
"""
import json
import resource
import sys
import time

import numpy as np

from . import in_own_process

ROWS, FEATURES, DENSITY, CLASSES, HIDDEN = 100_000, 50_000, 1e-3, 20, 256
DENSE_ROWS = 10_000
QUICK_ROWS = 20_000


def tfidf_like(n, d=FEATURES, density=DENSITY, classes=CLASSES, seed=0):
    """(X CSR float32 (n, d), y (n,)): Zipf-distributed column choices, positive values
    scaled to unit row norm, labels from a random linear map of X (so there is something
    to learn)."""
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    per_row = max(1, int(round(d * density)))
    ranks = np.arange(1, d + 1, dtype=np.float64)
    p = 1.0 / ranks ** 0.8
    p /= p.sum()
    cols = rng.choice(d, size=(n, per_row), p=p)
    vals = rng.exponential(1.0, size=(n, per_row)).astype(np.float32)
    X = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, n * per_row + 1, per_row)),
                      shape=(n, d))
    X.sum_duplicates()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    X = sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ X
    R = rng.standard_normal((d, classes)).astype(np.float32)
    y = np.asarray(X @ R).argmax(axis=1)
    return X.tocsr(), y


def worker(kind, n):
    """One epoch in this process: {"rows_per_s", "seconds", "peak_rss_mb"}."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    warnings.simplefilter("ignore", ConvergenceWarning)
    X, y = tfidf_like(n)
    if kind == "fastbp-dense":
        X = X.toarray()
    if kind == "sklearn":
        from sklearn.neural_network import MLPClassifier
        make = lambda: MLPClassifier((HIDDEN,), max_iter=1, random_state=0)   # noqa: E731
    else:
        import fastbp
        make = lambda: fastbp.MLPClassifier((HIDDEN,), max_iter=1, random_state=0)  # noqa: E731
        make().fit(X[:400], y[:400])                  # compile outside the timing
    t = time.perf_counter()
    make().fit(X, y)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows_per_s": n / seconds, "seconds": seconds, "peak_rss_mb": peak}


def run(quick=False, rounds=2):
    n = QUICK_ROWS if quick else ROWS
    jobs = [("fastbp", n), ("sklearn", n), ("fastbp", DENSE_ROWS), ("fastbp-dense", DENSE_ROWS)]
    results = {}
    for _ in range(1 if quick else rounds):
        for kind, rows in jobs:
            results.setdefault((kind, rows), []).append(
                in_own_process("fastbp.bench.sparse", kind, rows))
    return results


def format_table(results, header):
    out = [f"fastbp sparse-input benchmark: {header}", "",
           f"TF-IDF-like CSR, {FEATURES:,} features, density {DENSITY:g}, {CLASSES} classes, "
           f"hidden {HIDDEN}, one epoch of Adam (batch 200), float32 for fastbp", "",
           "| run | rows | rows/s (best) | seconds | peak RSS (MB) |", "|---|---:|---:|---:|---:|"]
    for (kind, rows), rs in results.items():
        best = max(rs, key=lambda r: r["rows_per_s"])
        out.append(f"| {kind} | {rows:,} | {best['rows_per_s']:,.0f} | {best['seconds']:.1f} "
                   f"| {max(r['peak_rss_mb'] for r in rs):,.0f} |")
    speed = {k: max(r["rows_per_s"] for r in v) for k, v in results.items()}
    n = max(rows for _, rows in results)
    if ("fastbp", n) in speed and ("sklearn", n) in speed:
        out.append(f"\nfastbp / scikit-learn on the sparse matrix: "
                   f"{speed[('fastbp', n)] / speed[('sklearn', n)]:.1f}x")
    if ("fastbp", DENSE_ROWS) in speed and ("fastbp-dense", DENSE_ROWS) in speed:
        out.append(f"fastbp sparse / fastbp on the densified rows: "
                   f"{speed[('fastbp', DENSE_ROWS)] / speed[('fastbp-dense', DENSE_ROWS)]:.1f}x")
    return "\n".join(out)


def main(quick=False):
    from . import print_report
    return print_report(format_table, run(quick))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "WORKER":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]))))
    else:
        sys.exit(main(quick="--quick" in sys.argv))
