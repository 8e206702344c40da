"""fastbp's asv suite.

Every benchmark runs with the same thread counts, so that one machine's results compare over
commits: FASTBP_BENCH_THREADS (default 2) threads for Numba and for the BLAS of the NumPy
peers, set here, before asv imports a benchmark module and with it Numba and NumPy.
bench_env.Environment records the counts in the history.
"""
import os

THREADS = os.environ.get("FASTBP_BENCH_THREADS", "2")
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "MKL_NUM_THREADS"):
    os.environ[_var] = THREADS
