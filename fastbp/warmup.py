"""Compile ahead of use: fill Numba's on-disk cache with what training and prediction run,
so that the first `fastbp train`, `fit` or `predict` of a new process loads machine code
instead of compiling it (a cold first run takes tens of seconds on two cores).

    fastbp warmup                                   # the defaults: relu, float32, CE, adam
    fastbp warmup --activation relu,tanh --dtype float32,float64 --loss cross_entropy,mse

Meant for a Docker image's build step or a CI cache: the cache lives beside the installed
package (its __pycache__ folders) or in NUMBA_CACHE_DIR, and holds for the same fastbp
files, Numba version and CPU model; another CPU compiles again, as does an edited file.
"""
import time

import numpy as np

# A small network takes the serial step and the serial inference path; the wide one the
# parallel step, the row-split step and the parallel inference path.  Sizes do not change
# what is compiled: activations, dtype, loss and optimizer do.
SHAPES = ((16, 32, 16), 32), ((256, 512, 512), 128)


def combinations(activations=("relu",), dtypes=("float32",), losses=("cross_entropy",),
                 optimizers=("adam",)):
    """Every (activation, dtype, loss, optimizer) of the four lists, in that order."""
    return [(a, d, lo, o) for a in activations for d in dtypes for lo in losses
            for o in optimizers]


def _targets(loss, rng, n, classes):
    if loss == "cross_entropy":
        return rng.integers(0, classes, n), classes
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, n).astype(np.float64), 1
    if loss == "poisson":
        return rng.poisson(2.0, n).astype(np.float64), 1
    return rng.standard_normal(n), 1


def warm(activation="relu", dtype="float32", loss="cross_entropy", optimizer="adam",
         shapes=SHAPES):
    """Train (one epoch, with a validation split) and predict with one combination, on each
    of shapes ((input, *hidden), batch); returns the seconds it took."""
    import fastbp
    make = {"sgd": lambda m: fastbp.SGD(m, 0.01, momentum=0.9),
            "adam": lambda m: fastbp.Adam(m, 1e-3),
            "adamw": lambda m: fastbp.AdamW(m, 1e-3, weight_decay=0.01)}[optimizer]
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    for (n_in, *hidden), batch in shapes:
        n = 4 * batch
        X = rng.standard_normal((n, n_in)).astype(dtype)
        y, n_out = _targets(loss, rng, n, 10)
        model = fastbp.MLP([n_in, *hidden, n_out], activation=activation, loss=loss,
                           dtype=dtype, seed=0)
        fastbp.fit(model, X, y, optimizer=make(model), batch_size=batch,
                   epochs=1, validation_split=0.25, seed=0, verbose=0)
        model.predict(X[:1])
        model.predict(np.repeat(X, 4, axis=0))
        if loss in ("cross_entropy", "binary_cross_entropy"):
            model.predict_proba(X[:1])
            model.predict_proba(np.repeat(X, 4, axis=0))
    return time.perf_counter() - t


def warmup(combos, report=print, shapes=SHAPES):
    """warm() each combination; report() a line each; returns [(combo, seconds)]."""
    done = []
    for combo in combos:
        seconds = warm(*combo, shapes=shapes)
        report("warmed {} ({}, {}, {}) in {:.1f} s".format(*combo, seconds))
        done.append((combo, seconds))
    return done
