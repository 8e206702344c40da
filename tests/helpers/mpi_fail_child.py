"""Child of the MPI agreement tests: mpiexec -n 2 python mpi_fail_child.py MODE.

Each mode makes the ranks differ in one way (or not at all) and prints, per rank,
'rank R: <outcome>'.  The job must end (never wait forever): with the same error on every
rank, an abort, or the same result on every rank."""
import sys

import numpy as np
from mpi4py import MPI

import fastbp

mode = sys.argv[1]
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
rng = np.random.default_rng(0)
X = rng.standard_normal((203, 12))
y = rng.integers(0, 4, size=203)
hidden, epochs, cbs = 16, 3, []
if rank == 1:
    if mode == "bad_label":
        y = y.copy()
        y[7] = 99
    elif mode == "nan":
        X = X.copy()
        X[3, 3] = np.nan
    elif mode == "hidden":
        hidden = 17
    elif mode == "epochs":
        epochs = 4
    elif mode == "rows":
        X, y = X[:200], y[:200]
    elif mode == "callback":
        cbs = [lambda epoch, logs: 1 / 0 if epoch == 1 else None]
    elif mode == "interrupt":
        def stop(epoch, logs):
            if epoch == 1:
                raise KeyboardInterrupt
        cbs = [stop]
try:
    if mode.startswith("estimator"):
        if mode == "estimator_nan" and rank == 1:
            X = X.copy()
            X[0, 0] = np.nan
        clf = fastbp.MLPClassifier((8,), max_iter=20, random_state=None, batch_size=32,
                                   early_stopping=True, n_iter_no_change=3, dtype="float64")
        clf.fit(X, y, comm=comm)
        result = np.concatenate([clf.coefs_[0].ravel(), [clf.n_iter_],
                                 clf.validation_scores_])
    else:
        model = fastbp.MLP([12, hidden, 4], dtype=np.float64, seed=rank)
        h = fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.05, momentum=0.9),
                       batch_size=32, epochs=epochs, seed=None, verbose=0, comm=comm,
                       callbacks=cbs, validation_split=0.3, early_stopping=True, patience=2)
        # the validation losses too: each rank validates on its own split of the rows
        result = np.concatenate([model.params, h["val_loss"]])
    everyone = comm.allgather(result)
    same = all(np.array_equal(everyone[0], r) for r in everyone)
    print(f"rank {rank}: {'same' if same else 'different'}", flush=True)
except ValueError as exc:
    print(f"rank {rank}: ValueError {exc}", flush=True)
