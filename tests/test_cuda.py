"""The CUDA backend: its kernel tests run in a child process under Numba's CUDA simulator
(NUMBA_ENABLE_CUDASIM=1 must be set before numba.cuda is imported), so CI covers them
without a GPU.  On a machine with a GPU, run tests/cuda directly (see its docstring)."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastbp

HERE = os.path.dirname(os.path.abspath(__file__))


SIMULATOR_TEST = "test_cuda_kernels_under_simulator"


def start_simulator_child():
    """The simulator's run of tests/cuda, started in the background: conftest starts it
    when the session collects SIMULATOR_TEST (and runs that test last), so that its ~3
    minutes of single-threaded simulation overlap the rest of the suite."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", FASTBP_CUDA_TESTS="1",
               NUMBA_NUM_THREADS="1")
    out = tempfile.TemporaryFile("w+")        # a pipe could fill up and stall the child
    child = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              os.path.join(HERE, "cuda")], env=env, stdout=out,
                             stderr=subprocess.STDOUT, text=True, cwd=os.path.dirname(HERE))
    child.output = out
    return child


def test_cuda_kernels_under_simulator(request):
    child = getattr(request.config, "_fastbp_simulator", None) or start_simulator_child()
    try:
        child.wait(timeout=1500)
    finally:
        if child.poll() is None:
            child.kill()
    child.output.seek(0)
    out = child.output.read()
    print(out[-5000:])
    assert child.returncode == 0, out[-3000:]
    assert " passed" in out


def test_device_cuda_without_gpu_is_a_clear_error():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("simulator enabled")
    from fastbp.backends import cuda_status
    if cuda_status().startswith("usable"):
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="device='cuda' requested but CUDA is not usable"):
        fastbp.MLP([3, 2], device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        fastbp.MLP([3, 2], device="tpu")
    assert fastbp.MLP([3, 2]).device == "cpu"
    assert isinstance(fastbp.MLP([3, 2]).params, np.ndarray)
