"""Save/load (atomic, bit-identical) and weights to and from PyTorch."""
import pickle

import sys

import numpy as np
import pytest
import torch

import fastbp
from fastbp import io as fio


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "binary_cross_entropy"])
def test_save_load_bit_identical(tmp_path, dtype, loss):
    rng = np.random.default_rng(0)
    model = fastbp.MLP([7, 9, 4], activation="gelu", loss=loss, dtype=dtype, seed=1)
    X = rng.standard_normal((13, 7))
    path = tmp_path / "m.npz"
    model.save(path, x_mean=np.arange(7.0), classes=np.array(["a", "b", "c", "d"]))
    loaded, extra = fastbp.load(path, return_extra=True)
    assert loaded.config() == model.config()
    assert np.array_equal(loaded.params, model.params) and loaded.params.dtype == dtype
    assert np.array_equal(loaded.forward(X), model.forward(X))
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert list(extra["classes"]) == ["a", "b", "c", "d"]
    # pickling keeps the weights views of the flat buffer
    clone = pickle.loads(pickle.dumps(model))
    assert np.shares_memory(clone.weights[0], clone.params)
    assert np.array_equal(clone.forward(X), model.forward(X))


def test_crash_mid_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    old = fastbp.MLP([3, 2], seed=0)
    old.save(path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(fio.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        fastbp.MLP([3, 2], seed=1).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temp file left behind


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="not a fastbp model file"):
        fastbp.load(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="missing 'params'"):
        fastbp.load(tmp_path / "other.npz")


def test_torch_state_dict_is_numpy_whatever_is_imported(tmp_path):
    """One type always (it was tensors whenever torch happened to be imported, which broke
    safetensors.numpy.save_file): NumPy copies; tensors=True asks for torch tensors."""
    assert "torch" in sys.modules
    model = fastbp.MLP([3, 4, 2], seed=0)
    sd = model.to_torch_state_dict()
    assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in sd.values())
    sd["0.weight"][:] = 7                     # a copy, not a view of the model
    assert not np.any(model.weights[0] == 7)


def test_torch_round_trip():
    rng = np.random.default_rng(0)
    model = fastbp.MLP([6, 8, 5, 3], activation="tanh", dtype=np.float32, seed=0)
    sd = model.to_torch_state_dict(tensors=True)
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    tm = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5),
                             torch.nn.Tanh(), torch.nn.Linear(5, 3))
    tm.load_state_dict(sd)
    X = rng.standard_normal((11, 6)).astype(np.float32)
    with torch.no_grad():
        out = tm(torch.from_numpy(X)).numpy()
    assert np.allclose(out, model.forward(X), rtol=1e-5, atol=1e-6)
    # and back from a torch-trained model
    back = fastbp.MLP.from_torch_state_dict(tm.state_dict(), activation="tanh")
    assert back.sizes == [6, 8, 5, 3]
    assert np.array_equal(back.params, model.params)
    with pytest.raises(ValueError, match="0.weight"):
        fastbp.MLP.from_torch_state_dict({"1.weight": np.zeros((2, 2))})


def test_load_checks_the_config_against_the_arrays_before_allocating(tmp_path):
    """Issue 30 (14): a small file whose config claims sizes [8000, 8000, 3] built the
    64M-parameter model (830 MB, seconds) before saying the arrays did not match."""
    import json
    import tracemalloc
    path = tmp_path / "lie.npz"
    config = dict(fastbp.MLP([3, 2]).config(), sizes=[8000, 8000, 3], format_version=1)
    np.savez(path, params=np.zeros(8, np.float32), config=np.array(json.dumps(config)))
    tracemalloc.start()
    with pytest.raises(ValueError, match="does not match the architecture"):
        fastbp.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 * 2 ** 20, peak
    for sizes in ([3], [3, 0], "abc", [3.5, 2]):
        config = dict(fastbp.MLP([3, 2]).config(), sizes=sizes, format_version=1)
        np.savez(path, params=np.zeros(8, np.float32), config=np.array(json.dumps(config)))
        with pytest.raises(ValueError):
            fastbp.load(path)


def test_evaluate_rejects_a_batch_size_below_one():
    """Issue 30 (8): evaluate(batch_size=-5) returned (0.0, 0.0) without a look at the data."""
    m = fastbp.MLP([3, 2], seed=0)
    X, y = np.ones((4, 3), np.float32), np.array([0, 1, 0, 1])
    for bs in (0, -5):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            m.evaluate(X, y, batch_size=bs)
    assert m.evaluate(X, y, batch_size=3)[0] > 0


def test_temporary_files_of_a_killed_writer_are_removed(tmp_path):
    """kill -9 during saves leaves .tmp-* files (they were never cleaned up); the next
    save of the same file removes those of dead processes on this host, and only those."""
    import os
    import signal
    import socket
    import subprocess
    import time
    path = tmp_path / "model.npz"
    child = subprocess.Popen([sys.executable, "-c", f"""
import fastbp
m = fastbp.MLP([2000, 2000, 10], seed=0)
print("ready", flush=True)
while True:
    m.save({str(path)!r})
"""], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    for _ in range(200):       # until a temporary file exists, then kill -9 mid-write
        if any(p.name.startswith(".tmp-") for p in tmp_path.iterdir()):
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    host = socket.gethostname()
    live = tmp_path / f".tmp-{host}-{os.getpid()}-abc-model.npz"      # a writer still running
    other = tmp_path / f".tmp-elsewhere-{child.pid}-abc-model.npz"     # another host's
    live.write_bytes(b"x")
    other.write_bytes(b"x")
    assert any(p.name.startswith(f".tmp-{host}-{child.pid}-") for p in tmp_path.iterdir())
    fastbp.MLP([3, 2], seed=0).save(path)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-"))
    assert left == sorted([live.name, other.name])
