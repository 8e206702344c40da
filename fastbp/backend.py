"""Which kernel set runs a model: 'cpu' (Numba @njit) or 'cuda' (Numba @cuda.jit)."""
import os

DEVICES = ("cpu", "cuda")


def cuda_status():
    """A line saying whether CUDA is usable, and why not."""
    try:
        from numba import cuda
    except ImportError as exc:
        return f"not usable (numba-cuda is not installed: pip install 'fastbp[cuda]'; {exc})"
    try:
        if cuda.is_available():
            if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
                return "usable: Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1, no GPU)"
            name = cuda.get_current_device().name
            return f"usable: {name.decode() if isinstance(name, bytes) else name}"
        return "not usable (no CUDA driver or GPU found)"
    except Exception as exc:  # driver errors
        return f"not usable ({type(exc).__name__}: {exc})"


def check_device(device):
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda":
        status = cuda_status()
        if not status.startswith("usable"):
            raise RuntimeError(f"device='cuda' requested but CUDA is {status}")
    return device
