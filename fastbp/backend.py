"""Which kernel set runs a model: 'cpu' (Numba @njit) or 'cuda' (Numba @cuda.jit)."""

DEVICES = ("cpu", "cuda")


def cuda_status():
    """A line saying whether CUDA is usable, and why not."""
    try:
        from numba import cuda
    except ImportError as exc:
        return f"not usable (numba-cuda is not installed: pip install 'fastbp[cuda]'; {exc})"
    try:
        if cuda.is_available():
            dev = cuda.get_current_device()
            name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
            sim = " (simulator)" if getattr(cuda, "simulator", None) and \
                __import__("os").environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ""
            return f"usable: {name}{sim}"
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
