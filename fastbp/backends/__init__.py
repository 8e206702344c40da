"""Where a model's numbers live and which kernels run on them: one backend per device.

fastbp.MLP holds a backend (``model.backend``) and keeps no device-specific state of its
own.  The trainer and the estimators use the MLP's public methods and, for the parts of a
training epoch that differ by device, these methods of the backend (the protocol):

    params, grads                 flat buffers (fastbp.layout.Layout), on the device
    prepare(X, y=None)            validated inputs, on the device, ready for the methods below
    loss_and_grad(X, y, l2)       float mean loss; fills grads (inputs from prepare)
    forward(X)                    output pre-activations Z_L, (b, n_outputs), on the device
                                  (CPU: a new array; CUDA: valid until the next call)
    predict_proba(X)              probabilities (softmax / sigmoid of Z_L), a new host array
    count_correct(y)              correct predictions of the last loss_and_grad/evaluate batch
    evaluate(X, y, batch_size)    (mean loss, accuracy or None); the CPU's also takes rows=
                                  (an index array: a validation split, gathered by chunk)
    to_host(buf) / copy_into(dst, src)
                                  moving flat buffers between host and device
    snapshot(into=None) / restore(snap)
                                  a copy of the parameters on the device, and putting it back
    fill_grads(value)             set every gradient (zero_grad)
    params_finite()               whether every parameter is finite (checked each epoch)

``CPUBackend`` runs fastbp's Numba CPU kernels (kernels/cpu); ``CUDABackend`` runs the
numba.cuda kernels (kernels/cuda) and adds the device-resident epoch helpers that
train/cuda.py uses.  ``create`` picks one by device name.
"""
import os

DEVICES = ("cpu", "cuda")


def create(device, model, host_params):
    """The backend for model on device ("cpu" or "cuda"), holding host_params (a NumPy
    flat buffer of model.layout.size values, already initialised)."""
    check_device(device)
    if device == "cuda":
        from .cuda import CUDABackend
        return CUDABackend(model, host_params)
    from .cpu import CPUBackend
    return CPUBackend(model, host_params)


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

