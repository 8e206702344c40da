"""The sample-weighted MPI problem, shared by the MPI child (run on 2 ranks) and the test
that compares it with one process: fits with sample weights (every seventh zero) on two
losses and a sparse X; returns {name: parameters} (and the losses' histories)."""
import numpy as np
import scipy.sparse as sp

import fastbp


def weighted_runs(comm=None, sparse=True):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((203, 12))
    y = rng.integers(0, 4, size=203)
    w = np.abs(rng.standard_normal(203))
    w[::7] = 0.0
    results = {}
    for loss in ("cross_entropy", "poisson"):
        Y = y if loss == "cross_entropy" else rng.poisson(1.0, size=(203, 4)).astype(float)
        model = fastbp.MLP([12, 16, 4], loss=loss, dtype=np.float64, seed=0)
        h = fastbp.fit(model, X, Y, optimizer=fastbp.Adam(model, lr=0.01), batch_size=32,
                       epochs=3, seed=5, verbose=0, comm=comm, sample_weight=w, l2=1e-3,
                       _l2_per_weight=True)
        results[loss] = model.params.copy()
        results[loss + "_loss"] = np.array(h["loss"])
    # sparse rows on the ranks; the same rows dense in one process
    Xs = np.where(np.abs(X) > 1.0, X, 0.0)
    model = fastbp.MLP([12, 16, 4], dtype=np.float64, seed=0)
    fastbp.fit(model, sp.csr_matrix(Xs) if sparse else Xs, y,
               optimizer=fastbp.Adam(model, lr=0.01), batch_size=32, epochs=2, seed=5,
               verbose=0, comm=comm, sample_weight=w)
    results["sparse"] = model.params.copy()
    return results
