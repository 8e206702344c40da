"""Numba runtime settings fastbp relies on, applied once at import.

Threading layer: Numba's parallel kernels run on one of three layers.  'workqueue' (the
fallback when neither OpenMP nor TBB can be loaded) aborts the process when two Python
threads call parallel kernels at once, so fastbp asks for a thread-safe layer ('omp' or
'tbb': Numba's "threadsafe" choice) whenever one can be loaded, and otherwise serialises
its kernel calls with a lock (see `kernel_lock`).  Setting NUMBA_THREADING_LAYER yourself
overrides this.  Note that GNU OpenMP is not fork-safe: use the 'spawn' or 'forkserver'
start methods (joblib/loky, used by scikit-learn's n_jobs, already does).

Fork: a child forked after the pool started runs on one thread (see
_one_thread_after_fork): every parallel kernel of fastbp stays on the calling thread when
the thread count is 1.

Vectorisation: the packing copies of the GEMM (copy_mr, copy_nr) and some epilogue loops
are written as runs of scalar loads and stores that LLVM's SLP vectoriser packs into SIMD
moves.  Numba leaves that pass off by default (numba.core.config.SLP_VECTORIZE = 0), so
fastbp turns it on at import, before any of its kernels compile.  The setting is
process-wide: other Numba code compiled afterwards gets the pass too (it only ever adds
vectorisation).  The micro-kernel itself is explicit vector IR and does not need it.
"""
import contextlib
import importlib
import os
import threading

import numba

_LAYER_MODULES = {"tbb": "numba.np.ufunc.tbbpool", "omp": "numba.np.ufunc.omppool"}


def _loadable(layer):
    try:
        importlib.import_module(_LAYER_MODULES[layer])
        return True
    except Exception:  # ImportError, or OSError from a missing shared library
        return False


def available_layers():
    return [name for name in ("tbb", "omp") if _loadable(name)] + ["workqueue"]


def configure_threading():
    """Pick a thread-safe threading layer unless the user chose one; returns the request."""
    if "NUMBA_THREADING_LAYER" in os.environ:
        return os.environ["NUMBA_THREADING_LAYER"]
    if any(_loadable(layer) for layer in ("tbb", "omp")):
        numba.config.THREADING_LAYER = "threadsafe"
    return numba.config.THREADING_LAYER


_REQUESTED = configure_threading()
numba.core.config.SLP_VECTORIZE = 1
_LOCK = threading.RLock()


def threadsafe():
    """True when the layer in use (or about to be) may be entered from several threads."""
    try:
        return numba.threading_layer() in ("tbb", "omp")
    except ValueError:  # no parallel region has run yet
        return _REQUESTED in ("threadsafe", "safe", "tbb", "omp")


@contextlib.contextmanager
def kernel_lock():
    """Serialise kernel calls only where the threading layer is not thread-safe."""
    if threadsafe():
        yield
    else:
        with _LOCK:
            yield


def threading_summary():
    """One line: the threading layer in use, the thread count and what was requested."""
    ensure_threads()  # starting the pool chooses the layer
    return (f"threading layer: {numba.threading_layer()} (requested {_REQUESTED!r}; "
            f"loadable: {', '.join(available_layers())}), threads: {numba.get_num_threads()}")


def kernels_cached(device="cpu"):
    """Whether Numba's on-disk cache already holds fastbp's compiled training step for
    ``device`` (so the first call will load machine code rather than compile it)."""
    import glob
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", device)
    name = "steps.run_steps-*.nbi" if device == "cpu" else "gemm.*.nbi"
    return bool(glob.glob(os.path.join(here, "__pycache__", name)))


_threads_started = False


def _one_thread_after_fork():
    """In a forked child: one thread.  GNU OpenMP cannot run in a process forked after it
    started (Numba terminates the child at its first parallel region), so, as PyTorch does,
    the child runs everything on its one thread; fastbp's kernels then enter no parallel
    region at all (each checks the thread count first)."""
    if _threads_started:
        try:
            numba.set_num_threads(1)
        except Exception:   # noqa: BLE001 (a child must not die of this)
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread_after_fork)


def ensure_threads():
    """Start Numba's worker threads if they are not running yet.

    Numba starts its thread pool when a parallel function is first called through its
    dispatcher.  A cached compiled function that reaches parallel kernels from inside (the
    compiled training steps; gemm, whose column loop is a parallel function of its own;
    sgd_update and adam_update) does not always start it: Numba records that need only when
    the parallel kernel was compiled, not loaded from the cache, in the process that
    compiled the caller (numba/numba#8578).  Loaded later as the first parallel code of a
    process, such a caller crashed with a segmentation fault (tests/test_reliability.py
    reproduces it), so every Python entry to those kernels calls this first.
    numba.get_num_threads() starts the pool (public API); the flag makes repeat calls free.
    """
    global _threads_started
    if not _threads_started:
        numba.get_num_threads()
        _threads_started = True
