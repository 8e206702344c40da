import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Numba compiles on first use; hypothesis must not count that as a slow example.
settings.register_profile(
    "fastbp", deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("fastbp")

from fastbp.kernels import codes  # noqa: E402


def pytest_collection_modifyitems(session, config, items):
    """The CUDA simulator's child (tests/test_cuda.py) starts now, in the background, and
    its test runs last and collects it."""
    sim = [it for it in items if it.name == "test_cuda_kernels_under_simulator"]
    if sim and len(items) > 1:
        from test_cuda import start_simulator_child
        config._fastbp_simulator = start_simulator_child()
        items[:] = [it for it in items if it not in sim] + sim


def pytest_unconfigure(config):
    child = getattr(config, "_fastbp_simulator", None)
    if child is not None and child.poll() is None:     # the session stopped before it
        child.kill()

# Every activation of the registry (new ones are tested without editing the tests' lists);
# the references below are written independently of it.
ACTIVATIONS = list(codes.ACTIVATION_NAMES)
LOSSES = ["cross_entropy", "mse", "binary_cross_entropy", "poisson", "huber"]
DTYPES = [np.float32, np.float64]


def rel_err(actual, expected):
    """Norm-wise relative error ||a - e|| / ||e|| (absolute where e is all zero)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    denom = np.linalg.norm(expected)
    diff = np.linalg.norm(actual - expected)
    return diff / denom if denom > 0 else diff


def tol(dtype):
    """Relative tolerance for a kernel result against a float64 reference."""
    return 2e-5 if np.dtype(dtype) == np.float32 else 1e-12


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# Reference activations in float64 NumPy (independent of fastbp's kernels).
def ref_activation(name, z):
    z = np.asarray(z, dtype=np.float64)
    if name == "identity":
        return z.copy()
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "sigmoid":
        return 0.5 * (1 + np.tanh(0.5 * z))
    if name == "tanh":
        return np.tanh(z)
    if name == "gelu":
        c = np.sqrt(2 / np.pi)
        return 0.5 * z * (1 + np.tanh(c * (z + 0.044715 * z ** 3)))
    if name == "silu":
        return z * ref_activation("sigmoid", z)
    if name == "softplus":
        return np.where(z > 20, z, np.logaddexp(0, np.minimum(z, 20)))
    raise KeyError(name)


def ref_activation_grad(name, z):
    z = np.asarray(z, dtype=np.float64)
    if name == "identity":
        return np.ones_like(z)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, 0.01)
    if name == "sigmoid":
        s = ref_activation("sigmoid", z)
        return s * (1 - s)
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    if name == "gelu":
        c = np.sqrt(2 / np.pi)
        u = c * (z + 0.044715 * z ** 3)
        t = np.tanh(u)
        return 0.5 * (1 + t) + 0.5 * z * (1 - t ** 2) * c * (1 + 3 * 0.044715 * z ** 2)
    if name == "silu":
        s = ref_activation("sigmoid", z)
        return s + z * s * (1 - s)
    if name == "softplus":
        return np.where(z > 20, 1.0, ref_activation("sigmoid", z))
    raise KeyError(name)


# tests/cuda runs in its own process (see tests/test_cuda.py): NUMBA_ENABLE_CUDASIM must be
# set before numba.cuda is first imported, so the main run must not import those modules.
import os  # noqa: E402

if os.environ.get("FASTBP_CUDA_TESTS") != "1":
    collect_ignore = ["cuda"]
