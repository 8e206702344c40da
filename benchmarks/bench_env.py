"""The conditions of a run, kept in asv's history beside the timings."""


class Environment:
    def track_numba_threads(self):
        """Numba's thread count (benchmarks/__init__.py fixes it: FASTBP_BENCH_THREADS)."""
        import numba
        return numba.get_num_threads()

    track_numba_threads.unit = "threads"

    def track_blas_threads(self):
        """The thread count NumPy's BLAS was asked for (the GEMM benchmarks' peer)."""
        import os
        return int(os.environ.get("OPENBLAS_NUM_THREADS", "0"))

    track_blas_threads.unit = "threads"
