"""Data-parallel scaling: measured step time on 1 and N ranks, the Allreduce cost of the
flat gradient buffer, and a model of the efficiency for more machines.

    NUMBA_NUM_THREADS=1 mpiexec -n 1 python benchmarks/mpi_scaling.py
    NUMBA_NUM_THREADS=1 mpiexec -n 2 python benchmarks/mpi_scaling.py

Model (ring allreduce): each step every rank computes on global_batch / N rows, then
allreduces the P-parameter gradient buffer, moving 2 (N-1)/N * 4P bytes per rank:
    T(N)  = T_comp(1) / N + 2 (N - 1) alpha + 2 (N - 1) / N * 4P / bandwidth
    E(N)  = T_comp(1) / (N * T(N))
alpha (per-message latency) and bandwidth are parameters: the localhost figures measured
here, and typical 10 / 100 Gbit/s Ethernet.
"""
import sys
import time

import numpy as np

import fastbp


def main():
    """Measure and print (run under mpiexec, see the module docstring).  A function, not
    module-level code: asv imports every module in benchmarks/ to discover benchmarks."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    sizes, global_batch, steps = [784, 512, 512, 10], 256, 40
    rng = np.random.default_rng(0)
    X = rng.standard_normal((global_batch * steps, sizes[0])).astype(np.float32)
    y = rng.integers(0, 10, size=X.shape[0])
    model = fastbp.MLP(sizes, seed=0)
    opt = fastbp.SGD(model, lr=0.01, momentum=0.9)
    fastbp.fit(model, X[:global_batch * 2], y[:global_batch * 2], optimizer=opt,
               batch_size=global_batch, epochs=1, verbose=0, comm=comm)   # compile, warm up
    comm.Barrier()
    t = time.perf_counter()
    fastbp.fit(model, X, y, optimizer=opt, batch_size=global_batch, epochs=1, verbose=0,
               comm=comm)
    comm.Barrier()
    step = (time.perf_counter() - t) / steps

    buf = np.ones_like(model.grads)
    for _ in range(3):
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    reps = 20
    comm.Barrier()
    t = time.perf_counter()
    for _ in range(reps):
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    allreduce = (time.perf_counter() - t) / reps
    small = np.ones(1, np.float32)
    t = time.perf_counter()
    for _ in range(200):
        comm.Allreduce(MPI.IN_PLACE, small, op=MPI.SUM)
    latency = (time.perf_counter() - t) / 200

    if rank == 0:
        P = model.params.size
        print(f"{size} rank(s), MLP {sizes}, global batch {global_batch}, {P:,} parameters "
              f"({4 * P / 1e6:.2f} MB gradient buffer)")
        print(f"  step time {step * 1e3:.2f} ms, {global_batch / step:,.0f} samples/s")
        if size > 1:
            bw = 2 * (size - 1) / size * 4 * P / max(allreduce - 2 * (size - 1) * latency, 1e-9)
            print(f"  Allreduce of the flat buffer {allreduce * 1e3:.2f} ms "
                  f"({allreduce / step:.0%} of the step); 4-byte Allreduce {latency * 1e6:.1f} us; "
                  f"effective ring bandwidth {bw / 1e9:.2f} GB/s")
        comp1 = float(sys.argv[1]) / 1e3 if len(sys.argv) > 1 else step
        print(f"  predicted efficiency E(N) with T_comp(1) = {comp1 * 1e3:.2f} ms:")
        for label, alpha, bandwidth in (("10 Gbit/s", 20e-6, 1.25e9), ("100 Gbit/s", 5e-6, 12.5e9)):
            row = []
            for N in (2, 4, 8, 16, 64):
                t_n = comp1 / N + 2 * (N - 1) * alpha + 2 * (N - 1) / N * 4 * P / bandwidth
                row.append(f"N={N}: {comp1 / (N * t_n):.0%}")
            print(f"    {label}: " + ", ".join(row))


if __name__ == "__main__":
    main()
