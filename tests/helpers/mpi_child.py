"""Child of the MPI tests, run as:  mpiexec -n 2 python mpi_child.py MODE OUT

MODE "train": data-parallel training (float64 and float32); rank 0 saves the parameters.
MODE "dropout": dropout and clipping (float64).
MODE "raise": rank 1 raises in the middle of an epoch; the job must abort, not hang.
"""
import sys

import numpy as np
from mpi4py import MPI

import fastbp

mode, out = sys.argv[1], sys.argv[2]
comm = MPI.COMM_WORLD
rng = np.random.default_rng(0)
X = rng.standard_normal((203, 12))
y = rng.integers(0, 4, size=203)
results = {}
if mode == "weighted":
    from weighted_problem import weighted_runs
    results = weighted_runs(comm)
    if comm.Get_rank() == 0:
        np.savez(out, **results)
    sys.exit(0)
if mode == "estimator":
    clf = fastbp.MLPClassifier((16,), max_iter=5, random_state=0, batch_size=32,
                               dtype="float64").fit(X, y, comm=comm)
    if comm.Get_rank() == 0:
        np.savez(out, coef=clf.coefs_[0], loss=np.array(clf.loss_curve_))
    sys.exit(0)
if mode == "dropout":
    # a different seed on each rank: rank 0's parameters and dropout seed must win
    model = fastbp.MLP([12, 16, 16, 4], dtype=np.float64, seed=comm.Get_rank(),
                       dropout=[0.3, 0.1])
    h = fastbp.fit(model, X, y, optimizer=fastbp.Adam(model, clip_grad_norm=0.5),
                   batch_size=32, epochs=3, seed=5, verbose=0, comm=comm)
    if comm.Get_rank() == 0:
        np.savez(out, params=model.params, loss=np.array(h["loss"]))
    sys.exit(0)
for dtype in (np.float64, np.float32):
    # a different seed on each rank: rank 0's parameters must win the broadcast
    model = fastbp.MLP([12, 16, 4], dtype=dtype, seed=comm.Get_rank())
    opt = fastbp.SGD(model, lr=0.05, momentum=0.9)
    if mode == "raise" and comm.Get_rank() == 1:
        real, n = opt.step, [0]

        def step():
            n[0] += 1
            if n[0] == 3:
                raise RuntimeError("simulated failure on rank 1")
            real()
        opt.step = step
    h = fastbp.fit(model, X, y, optimizer=opt, batch_size=32, epochs=3, seed=5, verbose=0,
                   comm=comm)
    results[np.dtype(dtype).name] = model.params.astype(np.float64)
    results[np.dtype(dtype).name + "_loss"] = np.array(h["loss"])
if comm.Get_rank() == 0:
    np.savez(out, **results)
