"""Data-parallel training with MPI: mpiexec -n 2 on localhost."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastbp

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "helpers", "mpi_child.py")

try:
    import mpi4py  # noqa: F401
    MPIEXEC = shutil.which("mpiexec") or shutil.which(
        "mpiexec", path=os.path.dirname(sys.executable))
except ImportError:
    MPIEXEC = None

pytestmark = pytest.mark.skipif(
    MPIEXEC is None, reason="needs mpi4py and mpiexec: pip install mpi4py mpich")


def mpirun(n, *args, timeout=300):
    env = dict(os.environ, NUMBA_NUM_THREADS="1")   # one thread per rank on 2 cores
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def single_process(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((203, 12))
    y = rng.integers(0, 4, size=203)
    model = fastbp.MLP([12, 16, 4], dtype=dtype, seed=0)
    h = fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, lr=0.05, momentum=0.9),
                   batch_size=32, epochs=3, seed=5, verbose=0)
    return model.params.astype(np.float64), np.array(h["loss"])


def test_two_ranks_equal_single_process(tmp_path):
    out = tmp_path / "mpi.npz"
    r = mpirun(2, CHILD, "train", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(out)
    # Tolerances: the batch gradient is a sum of two shard means instead of one mean, so
    # rounding differs (float64: ~1e-16 per step; float32: ~1e-7).
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        params, losses = single_process(dtype)
        name = np.dtype(dtype).name
        diff = np.linalg.norm(got[name] - params) / np.linalg.norm(params)
        assert diff <= tol, (name, diff)
        assert np.allclose(got[name + "_loss"], losses, rtol=tol)


def test_two_ranks_with_dropout_and_clipping_equal_single_process(tmp_path):
    """Each rank's rows of a batch draw their rows of the whole batch's dropout masks
    (keyed by the row's offset in the batch), with rank 0's dropout seed; clipping acts on
    the summed gradient."""
    out = tmp_path / "mpi.npz"
    r = mpirun(2, CHILD, "dropout", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(out)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((203, 12))
    y = rng.integers(0, 4, size=203)
    model = fastbp.MLP([12, 16, 16, 4], dtype=np.float64, seed=0, dropout=[0.3, 0.1])
    h = fastbp.fit(model, X, y, optimizer=fastbp.Adam(model, clip_grad_norm=0.5),
                   batch_size=32, epochs=3, seed=5, verbose=0)
    diff = np.linalg.norm(got["params"] - model.params) / np.linalg.norm(model.params)
    assert diff <= 1e-10, diff
    assert np.allclose(got["loss"], h["loss"], rtol=1e-10)


def test_two_ranks_with_sample_weights_equal_single_process(tmp_path):
    """Each rank's shard gradient is weighted by its share of the batch's weight total;
    sparse rows on the ranks equal the dense rows in one process."""
    out = tmp_path / "weighted.npz"
    r = mpirun(2, CHILD, "weighted", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(out)
    sys.path.insert(0, os.path.join(HERE, "helpers"))
    try:
        from weighted_problem import weighted_runs
    finally:
        sys.path.pop(0)
    want = weighted_runs(sparse=False)
    for name in ("cross_entropy", "poisson", "sparse"):
        diff = np.linalg.norm(got[name] - want[name]) / np.linalg.norm(want[name])
        assert diff <= 1e-10, (name, diff)
    for name in ("cross_entropy_loss", "poisson_loss"):
        assert np.allclose(got[name], want[name], rtol=1e-10)


def test_estimator_fit_with_comm_equals_single_process(tmp_path):
    import warnings
    out = tmp_path / "est.npz"
    r = mpirun(2, CHILD, "estimator", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(out)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((203, 12))
    y = rng.integers(0, 4, size=203)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = fastbp.MLPClassifier((16,), max_iter=5, random_state=0, batch_size=32,
                                   dtype="float64").fit(X, y)
    assert np.allclose(got["coef"], ref.coefs_[0], rtol=1e-10, atol=1e-12)
    assert np.allclose(got["loss"], ref.loss_curve_, rtol=1e-10)


def test_a_rank_that_raises_aborts_the_job(tmp_path):
    r = mpirun(2, CHILD, "raise", str(tmp_path / "x.npz"), timeout=120)
    assert r.returncode != 0
    assert "aborting all ranks" in r.stderr and "simulated failure on rank 1" in r.stderr


def test_cli_distributed_train(tmp_path):
    out = tmp_path / "out"
    r = mpirun(2, "-m", "fastbp", "train", "--distributed", "--epochs", "5", "--quiet",
               "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("test accuracy") == 1 and "2 MPI ranks" in r.stdout
    assert (out / "model.npz").exists() and (out / "curves.png").exists()
    assert json.loads((out / "summary.json").read_text())["test_accuracy"] > 0.9


FAIL_CHILD = os.path.join(HERE, "helpers", "mpi_fail_child.py")


def run_agreement(mode):
    try:
        r = mpirun(2, FAIL_CHILD, mode, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{mode}: the job hung")
    # the launcher may join the ranks' lines: find each rank's outcome in the text
    import re
    return r, sorted(re.findall(r"rank (\d): (ValueError|same|different)", r.stdout))


@pytest.mark.parametrize("mode,words", [
    ("bad_label", "label 99"), ("nan", "NaN"), ("hidden", "model"), ("epochs", "epochs"),
    ("rows", "X"), ("estimator_nan", "NaN")])
def test_one_rank_with_other_input_raises_on_every_rank(mode, words):
    """A label out of range, NaN, another hidden size, epochs or data on one rank: every
    rank raises the same error within seconds (the job hung: the others waited in the
    first collective)."""
    r, lines = run_agreement(mode)
    assert lines == [("0", "ValueError"), ("1", "ValueError")], (r.stdout, r.stderr[-1500:])
    assert words in r.stdout, r.stdout


@pytest.mark.parametrize("mode", ["callback", "interrupt"])
def test_a_rank_failing_mid_run_aborts_the_job(mode):
    """A callback raising, or Ctrl-C, on one rank in the middle of training: the job is
    aborted (it hung)."""
    r, lines = run_agreement(mode)
    assert r.returncode != 0 and "aborting all ranks" in r.stderr, r.stderr[-1500:]


@pytest.mark.parametrize("mode", ["seed_none", "estimator_none"])
def test_seed_none_is_one_seed_for_all_ranks(mode):
    """seed=None (fit) or random_state=None (an estimator with early stopping): every rank
    shuffles and splits alike and ends with the same weights (ranks diverged, and the
    estimators' early stopping hung)."""
    r, lines = run_agreement(mode)
    assert lines == [("0", "same"), ("1", "same")], (r.stdout, r.stderr[-1500:])
