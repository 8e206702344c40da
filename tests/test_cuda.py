"""The CUDA backend: its kernel tests run in a child process under Numba's CUDA simulator
(NUMBA_ENABLE_CUDASIM=1 must be set before numba.cuda is imported), so CI covers them
without a GPU.  On a machine with a GPU, run tests/cuda directly (see its docstring)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp

HERE = os.path.dirname(os.path.abspath(__file__))


def test_cuda_kernels_under_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", FASTBP_CUDA_TESTS="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.join(HERE, "cuda")], env=env, capture_output=True, text=True,
                       timeout=1500, cwd=os.path.dirname(HERE))
    print(r.stdout[-3000:], r.stderr[-2000:])
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout


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
