"""asv benchmarks of what users run end to end: the scikit-learn estimators' fit, a small
tabular regression, the first run's compile time, and two correctness tracks (test accuracy
on digits, a training run's bits against a stored reference), so that a regression in
correctness shows in the same history as one in speed."""
import os
from pathlib import Path

import numpy as np

import fastbp

# asv's sampling, for every benchmark here that sets none: per round (process), 3 to 10
# samples, no more after 2 s; 2 rounds (asv's default).  Enough samples for asv's test of
# significance on a 2-core VM, and the whole suite in minutes.
repeat = (3, 10, 2.0)

REFERENCE = Path(__file__).with_name("reference_digits_float64.npz")


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def _tabular(n=20_000, d=8):
    """A smooth nonlinear target of 8 features (the size of a housing table)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * X[:, 3] ** 2
         + 0.1 * rng.standard_normal(n)).astype(np.float32)
    return X, y


class EstimatorFit:
    """fit of 20 epochs, as a scikit-learn user calls it (validation, checks, the loop)."""
    params = ["MLPClassifier digits", "MLPRegressor tabular"]
    param_names = ["estimator"]
    number = 1
    timeout = 300

    def setup(self, name):
        from fastbp.estimators import MLPClassifier, MLPRegressor
        options = dict(hidden_layer_sizes=(128, 64), max_iter=20, random_state=0, tol=0.0,
                       n_iter_no_change=10_000)
        if name.startswith("MLPClassifier"):
            self.X, _, self.y, _ = _digits()
            self.est = MLPClassifier(**options)
        else:
            self.X, self.y = _tabular(4000)
            self.est = MLPRegressor(**options)
        self.est.set_params(max_iter=1).fit(self.X, self.y)   # compile outside the timing
        self.est.set_params(max_iter=20)

    def time_fit(self, name):
        self.est.fit(self.X, self.y)


class TabularRegression:
    """One epoch of 8-64-64-1, squared error, Adam, batch 64, on 20,000 rows."""
    number = 1

    def setup(self):
        self.X, self.y = _tabular()
        self.model = fastbp.MLP([8, 64, 64, 1], loss="mse", seed=0)
        self.opt = fastbp.Adam(self.model, 1e-3)
        self.time_epoch()                                    # compile outside the timing

    def time_epoch(self):
        fastbp.fit(self.model, self.X, self.y, optimizer=self.opt, batch_size=64, epochs=1,
                   seed=0, verbose=0)


def _reference_run():
    """float64 64-32-10 tanh, SGD with momentum, 3 epochs of digits: the final weights."""
    X, _, y, _ = _digits()
    model = fastbp.MLP([64, 32, 10], activation="tanh", dtype="float64", seed=0)
    fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.05, momentum=0.9), batch_size=32,
               epochs=3, seed=0, verbose=0)
    return np.array(model.params)


class Correctness:
    """Tracked like speed: a drop here is a bug, whatever the timings say."""
    timeout = 300

    def track_digits_test_error(self):
        """1 - test accuracy of MLPClassifier((128, 64)), 30 epochs on 75% of digits, scored
        on the rest (the error, not the accuracy: asv reads a rise as a regression)."""
        from fastbp.estimators import MLPClassifier
        Xtr, Xte, ytr, yte = _digits()
        est = MLPClassifier((128, 64), max_iter=30, random_state=0, tol=0.0,
                            n_iter_no_change=10_000).fit(Xtr, ytr)
        return 1.0 - float(est.score(Xte, yte))

    track_digits_test_error.unit = "error rate"

    def track_reference_max_relative_difference(self):
        """max |w - w_ref| / max |w_ref| over the weights of _reference_run against the file
        written at a known-good commit (0.0: the same bits). The file was written on an AVX2
        machine; another micro-kernel may differ in the last bits (about 1e-16 here), a bug
        by far more."""
        ref = np.load(REFERENCE)["params"]
        got = _reference_run()
        if got.shape != ref.shape:
            return float("inf")
        return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))

    track_reference_max_relative_difference.unit = "relative"

    def track_reference_bits_differ(self):
        """0 when _reference_run's weights equal the stored reference bit for bit, else 1."""
        ref = np.load(REFERENCE)["params"]
        return int(not np.array_equal(_reference_run(), ref))

    track_reference_bits_differ.unit = "differ"


_TRAIN_CLI = """
import contextlib, io, os, tempfile
os.environ["NUMBA_CACHE_DIR"] = {cache!r}
from fastbp.cli import main
out = os.path.join(tempfile.mkdtemp(), "model.fbp")
with contextlib.redirect_stdout(io.StringIO()):   # asv reads the time from stdout
    main(["train", "--epochs", "1", "--quiet", "--out", out])
"""


class FirstRun:
    """`fastbp train --epochs 1` (digits, 64-128-64-10) in a new process. Cold, with an empty
    Numba cache (what a fresh container pays): timed once per commit in setup_cache (a cold
    compile costs ~40 s on 2 cores; its spread is a few per cent) and tracked. Warm, with
    the cache that cold run left: timeraw_, a new process per sample."""
    number = 1
    repeat = (2, 3, 10.0)
    rounds = 1
    timeout = 600

    def setup_cache(self):
        import subprocess
        import sys
        import time
        # asv runs setup_cache in a folder of its own and deletes it after the commit's run
        cache = os.path.abspath("numba-cache-first-run")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", _TRAIN_CLI.format(cache=cache)],
                       check=True)
        return cache, time.perf_counter() - t

    def track_cold_seconds(self, state):
        return state[1]

    track_cold_seconds.unit = "seconds"

    def timeraw_warm(self, state):
        return _TRAIN_CLI.format(cache=state[0])


def write_reference():
    """Rewrite the stored reference, only once a change of bits is understood and meant:
    python -c "from benchmarks.bench_users import write_reference; write_reference()" """
    np.savez(REFERENCE, params=_reference_run())
