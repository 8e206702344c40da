"""Reliability: determinism, checkpoint/resume after a kill, Ctrl-C, numerics at the edges,
concurrency, and no memory growth over a long run."""
import os
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest
import torch
from numba.core.runtime import _nrt_python, rtsys

import fastbp
from fastbp import kernels as K
from conftest import rel_err

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "helpers", "train_child.py")


def run_child(tmp_path, name, *args, threads=None, expect_rc=0):
    env = dict(os.environ)
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
    out = tmp_path / f"{name}.npy"
    r = subprocess.run([sys.executable, CHILD, str(out), *args], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == expect_rc, (r.returncode, r.stderr[-2000:])
    return np.load(out) if expect_rc == 0 else None


def test_bit_identical_across_runs_and_thread_counts(tmp_path):
    a = run_child(tmp_path, "a", threads=2)
    b = run_child(tmp_path, "b", threads=2)
    c = run_child(tmp_path, "c", threads=1)
    assert np.array_equal(a, b)
    # fixed work partition and reduction order: the thread count does not change the bits
    assert np.array_equal(a, c)


def test_killed_mid_epoch_and_resumed_equals_uninterrupted(tmp_path):
    full = run_child(tmp_path, "full")
    ck = tmp_path / "ck"
    # 400 training rows / 32 = 13 steps per epoch: step 17 is in the middle of epoch 2,
    # two steps after the checkpoint written at step 15
    run_child(tmp_path, "killed", "--checkpoint", str(ck), "--kill-at-step", "17",
              expect_rc=-9)
    assert (ck / "checkpoint.npz").exists()
    assert not [p for p in os.listdir(ck) if p.startswith(".tmp")]
    resumed = run_child(tmp_path, "resumed", "--checkpoint", str(ck), "--resume")
    assert np.array_equal(resumed, full)


def test_compiled_steps_as_first_parallel_code_of_a_process():
    """Run twice: the first run may compile, the second loads from Numba's cache, which is
    the case that crashed before the thread pool was started explicitly."""
    child = os.path.join(HERE, "helpers", "first_call_child.py")
    for _ in range(2):
        r = subprocess.run([sys.executable, "-X", "faulthandler", child], capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


_STAGE = """
import sys
import numpy as np
from fastbp import kernels as K
from fastbp.kernels.cpu import optim as O
rng = np.random.default_rng(0)
X = rng.standard_normal((40, 13)).astype(np.float32)
W = rng.standard_normal((17, 13)).astype(np.float32)
p = np.ones(10000, np.float32)
if sys.argv[1] == "parallel kernels first":
    O.optimizer_update(O.hyper_tuple(0, 0.1, 0.9), p, p.copy(), np.zeros_like(p), p[:0], 1,
                       True)
    C = K.matmul(X, W, trans_b=True)
else:   # their callers: sgd_update, and gemm and matmul_checked for read-only operands
    K.sgd_update(p, p.copy(), np.zeros_like(p), 0.1, 0.9)
    X.flags.writeable = W.flags.writeable = False
    C = K.matmul(X, W, trans_b=True)
assert np.allclose(C, X @ W.T, rtol=1e-5, atol=1e-5)
print("ok")
"""


def test_callers_of_cached_parallel_kernels_as_first_code_of_a_process(tmp_path):
    """numba/numba#8578: a compiled function that calls a parallel one by name, compiled in
    a process that loaded the parallel one from the cache, is cached without the note that
    it needs Numba's thread pool; loaded in a fresh process as its first parallel code, it
    crashed (segmentation fault) until the Python entries started the pool themselves."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba_cache"))
    for stage in ("parallel kernels first", "callers", "callers again"):
        r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _STAGE, stage],
                           env=env, capture_output=True, text=True, timeout=600, check=False)
        assert r.returncode == 0 and r.stdout.strip() == "ok", (stage, r.returncode,
                                                                 r.stderr[-2000:])


def test_resume_rejects_a_checkpoint_of_another_run(tmp_path):
    X = np.zeros((40, 4), np.float32)
    y = np.arange(40) % 2
    m = fastbp.MLP([4, 3, 2], seed=0)
    fastbp.fit(m, X, y, optimizer=fastbp.SGD(m, 0.1), epochs=1, verbose=0,
               checkpoint_dir=tmp_path)
    other = fastbp.MLP([4, 5, 2], seed=0)
    with pytest.raises(ValueError, match="another run"):
        fastbp.fit(other, X, y, optimizer=fastbp.SGD(other, 0.1), epochs=2, verbose=0,
                   checkpoint_dir=tmp_path, resume=True)


def train_with_ctrl_c(m, X, y, interrupt_at=None, resume=False, ck=None):
    """(m, history) of 3 epochs of SGD at batch 16 on m, with a Ctrl-C at optimizer step
    interrupt_at (its steps then run on the Python path), checkpoints in ck, resume."""
    opt = fastbp.SGD(m, 0.05, momentum=0.9)
    if interrupt_at:
        real, n = opt.step, [0]

        def step():
            n[0] += 1
            if n[0] == interrupt_at:
                raise KeyboardInterrupt
            real()
        opt.step = step
    h = fastbp.fit(m, X, y, optimizer=opt, batch_size=16, epochs=3, seed=3, verbose=0,
                   checkpoint_dir=ck, resume=resume)
    return m, h


def test_ctrl_c_writes_a_checkpoint_and_resume_finishes_the_run(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((96, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=96)

    def train(**options):
        return train_with_ctrl_c(fastbp.MLP([5, 8, 3], seed=0), X, y, **options)

    full, _ = train()
    ck = tmp_path / "ck"
    part, h = train(interrupt_at=9, ck=ck)
    assert h.interrupted and h.epochs == 1
    done, h2 = train(resume=True, ck=ck)
    assert np.array_equal(done.params, full.params) and h2.epochs == 3


# ---------------------------------------------------------------- numerics at the edges
def test_extreme_logits_and_one_class():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], np.float32)
    y = np.array([1, 0])
    loss, g = K.cross_entropy(z, y)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(y))
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-6 * ref.item() and np.all(np.isfinite(g))
    assert rel_err(g, zt.grad.numpy()) <= 1e-6
    eq, geq = K.cross_entropy(np.full((4, 7), 3.5, np.float32), np.arange(4))
    assert abs(eq - np.log(7)) <= 1e-6 and rel_err(geq, (1 / 7 - np.eye(7)[np.arange(4)]) / 4) <= 1e-6
    one = fastbp.MLP([3, 4, 1], seed=0)        # a single class: softmax is 1, loss 0
    loss1 = one.loss_and_grad(np.ones((5, 3), np.float32), np.zeros(5, np.int64))
    assert loss1 == 0.0 and np.all(one.grads == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_inputs_give_finite_correct_gradients(dtype):
    rng = np.random.default_rng(0)
    model = fastbp.MLP([6, 5, 3], activation="relu", dtype=dtype, seed=0)
    X = (rng.standard_normal((4, 6)) * 1e30).astype(dtype)
    y = np.array([0, 1, 2, 1])
    loss = model.loss_and_grad(X, y)
    assert np.isfinite(loss) and np.all(np.isfinite(model.grads))
    ref = fastbp.MLP([6, 5, 3], activation="relu", dtype=np.float64, seed=0)
    ref.params[...] = model.params
    ref_loss = ref.loss_and_grad(X.astype(np.float64), y)
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    assert rel_err(model.grads, ref.grads) <= (1e-5 if dtype == np.float32 else 1e-12)


def test_batch_of_one_and_sigmoid_saturation():
    m = fastbp.MLP([2, 3, 2], activation="sigmoid", loss="binary_cross_entropy",
                   dtype=np.float64, seed=0)
    X = np.array([[800.0, -800.0]])
    r = fastbp.gradcheck(m, X, np.array([[1.0, 0.0]]), max_params=None)
    assert r.passed and np.all(np.isfinite(m.grads))


def test_million_rows_loss_has_no_float32_drift():
    rng = np.random.default_rng(0)
    model = fastbp.MLP([4, 8, 5], seed=0)
    X = rng.standard_normal((1_000_000, 4)).astype(np.float32)
    y = rng.integers(0, 5, size=1_000_000)
    loss, acc = model.evaluate(X, y, batch_size=100_000)
    logits = model.forward(X[:1000]).astype(np.float64)   # float64 reference, in chunks
    total = 0.0
    for i in range(0, 1_000_000, 100_000):
        z = model.forward(X[i:i + 100_000]).astype(np.float64)
        m = z.max(1, keepdims=True)
        lse = (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]
        total += (lse - z[np.arange(len(z)), y[i:i + 100_000]]).sum()
    assert abs(loss - total / 1e6) <= 1e-7 * loss
    assert logits.shape == (1000, 5) and 0 <= acc <= 1


# ---------------------------------------------------------------- concurrency
def test_two_models_trained_from_two_threads_match_serial():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 10)).astype(np.float32)
    y = rng.integers(0, 4, size=400)

    def train(seed, out):
        m = fastbp.MLP([10, 32, 4], seed=seed)
        fastbp.fit(m, X, y, optimizer=fastbp.SGD(m, 0.05, momentum=0.9), batch_size=20,
                   epochs=3, seed=seed, verbose=0)
        out[seed] = m.params.copy()

    serial, threaded = {}, {}
    for s in (1, 2):
        train(s, serial)
    ts = [threading.Thread(target=train, args=(s, threaded)) for s in (1, 2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for s in (1, 2):
        assert np.array_equal(serial[s], threaded[s])


def test_gridsearch_n_jobs_2_matches_serial():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    d = load_digits()
    X, y = d.data[:400] / 16, d.target[:400]
    grid = {"hidden_layer_sizes": [(16,), (32,)], "alpha": [1e-4, 1e-2]}
    est = fastbp.MLPClassifier(max_iter=10, random_state=0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g1 = GridSearchCV(est, grid, cv=2, n_jobs=1).fit(X, y)
        g2 = GridSearchCV(est, grid, cv=2, n_jobs=2).fit(X, y)
    assert np.array_equal(g1.cv_results_["mean_test_score"], g2.cv_results_["mean_test_score"])
    assert g1.best_params_ == g2.best_params_


def test_info_names_a_threadsafe_layer():
    from fastbp.runtime import threading_summary
    line = threading_summary()
    assert "threading layer:" in line
    assert any(layer in line.split("(")[0] for layer in ("omp", "tbb")), line


# ---------------------------------------------------------------- soak
def test_500_epochs_without_memory_growth():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    m = fastbp.MLP([8, 16, 3], seed=0)
    _nrt_python.memsys_enable_stats()
    marks = {}

    def probe(epoch, logs):
        if epoch in (49, 499):
            st = rtsys.get_allocation_stats()
            marks[epoch] = (tracemalloc.get_traced_memory()[0], st.alloc - st.free)

    tracemalloc.start()
    try:
        fastbp.fit(m, X, y, optimizer=fastbp.Adam(m, 1e-3), batch_size=16, epochs=500,
                   verbose=0, callbacks=[probe])
    finally:
        tracemalloc.stop()
        _nrt_python.memsys_disable_stats()
    grown = marks[499][0] - marks[49][0]
    # History keeps 7 numbers per epoch (~450 x 7 floats); anything more would be a leak
    assert grown < 200_000, grown
    assert marks[499][1] == marks[49][1]   # Numba runtime: every allocation freed


def test_checkpoint_fuzz_every_edited_field_is_refused(tmp_path):
    """Resuming from a checkpoint with one field edited (indices past the data, negative
    counters, wrong shapes and dtypes, NaN, garbage state): a one-line ValueError each, no
    crash (an index past the data segfaulted; a one-value params was broadcast).  Then 60
    random edits of random fields: no crash."""
    r = subprocess.run([sys.executable, os.path.join(HERE, "helpers", "checkpoint_fuzz.py"),
                        str(tmp_path), "0", "60"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "done"
    targeted = [line for line in lines[:-1] if not line.startswith("random ")]
    accepted = [line for line in targeted if line.endswith(" accepted")]
    assert accepted == [], accepted
    assert len(targeted) >= 30
    # 60 random edits: refused, or (where the value happens to be valid) trained; no crash
    assert sum(line.startswith("random ") for line in lines) == 60


def test_optimizer_state_and_model_sizes_are_owned():
    """Buffers compiled code indexes cannot be swapped: the optimizer's state is read-only
    (opt.velocity = np.zeros(3) then step() segfaulted), load_state_dict checks shapes,
    dtypes and hyper-parameters, and model.sizes is a copy (m.sizes[1] = 1000 crashed)."""
    m = fastbp.MLP([4, 5, 3], seed=0)
    sgd, adam = fastbp.SGD(m, 0.1, momentum=0.9), fastbp.Adam(m)
    with pytest.raises(AttributeError):
        sgd.velocity = np.zeros(3, np.float32)
    with pytest.raises(AttributeError):
        adam.exp_avg = np.zeros(3, np.float32)
    state = adam.state_dict()
    for key, value, match in (("exp_avg", np.zeros(3, np.float32), "shape"),
                              ("exp_avg", np.zeros(m.params.shape, np.float64), "dtype"),
                              ("step_count", -1, "step_count"), ("beta2", 1.0, "beta"),
                              ("lr", float("nan"), "lr"), ("bogus", 1, "bogus")):
        with pytest.raises(ValueError, match=match):
            adam.load_state_dict({**state, key: value})
    assert adam.step_count == 0 and np.all(adam.exp_avg == 0)     # nothing half-loaded
    m.sizes[1] = 1000
    assert m.sizes == [4, 5, 3]
    X = np.ones((2, 4), np.float32)
    m.loss_and_grad(X, np.array([0, 1]))
    sgd.step()


def test_labels_given_to_fit_are_copied():
    """Labels are validated once, then read by compiled code for the whole fit: fit works
    on its own copy (another thread changing y mid-fit segfaulted)."""
    m = fastbp.MLP([3, 4, 2], seed=0)
    y = np.array([0, 1, 1, 0], np.int64)
    assert not np.shares_memory(m.check_y(y, 4), y)


FORK_CHILD = """
import multiprocessing as mp, numpy as np, fastbp
rng = np.random.default_rng(0)
X = rng.random((512, 20), dtype=np.float32); y = rng.integers(0, 3, 512)
m = fastbp.MLP([20, 64, 3], seed=0)
fastbp.fit(m, X, y, optimizer=fastbp.SGD(m, 0.1), epochs=2, batch_size=256, verbose=0)
want = m.predict_proba(X)

def work(i):
    # predict, and a little training, in the forked child
    p = m.predict_proba(X)
    other = fastbp.MLP([20, 64, 3], seed=i)
    fastbp.fit(other, X, y, optimizer=fastbp.Adam(other), epochs=1, batch_size=256,
               verbose=0)
    return bool(np.array_equal(p, want)) and bool(np.isfinite(other.params).all())

if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        print(pool.map(work, range(4)))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_fork_after_training_works():
    """fit, then multiprocessing with fork: GNU OpenMP cannot run in a forked child (Numba
    terminates it and the pool hung); fastbp's kernels stay on one thread there, as
    PyTorch's do, with the same answers."""
    try:
        r = subprocess.run([sys.executable, "-c", FORK_CHILD], capture_output=True,
                           text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked pool hung")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[True, True, True, True]", (r.stdout, r.stderr[-2000:])


SIGINT_CHILD = """
import sys, numpy as np, fastbp
rng = np.random.default_rng(0)
X = rng.random((64, 4), dtype=np.float32); y = rng.integers(0, 2, 64)
m0 = fastbp.MLP([4, 5, 2], seed=0)
fastbp.fit(m0, X, y, optimizer=fastbp.SGD(m0, 0.1), epochs=1, batch_size=16, verbose=0)
models = [fastbp.MLP([4, 5, 2], seed=i) for i in range(2000)]
print("ready", flush=True)
try:
    for m in models:
        h = fastbp.fit(m, X, y, optimizer=fastbp.SGD(m, 0.1), epochs=3, batch_size=16,
                       verbose=0)
        if h.interrupted:
            print("interrupted", flush=True)
            sys.exit(0)
except KeyboardInterrupt as exc:
    import traceback
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "fastbp" in f.filename]
    in_fit = any(f.name == "fit" and f.filename.endswith("loop.py") for f in frames)
    # In this loop between two fits (building the next model's optimizer, say), or as fit
    # installs, removes or reads its handler (a few bytecodes at its edges, on lines
    # naming it, or in Interrupts' own methods): not fit's to handle.  Out of fit anywhere
    # else: a failure, which names where it was raised.
    last = frames[-1] if frames else None
    line = last.line or "" if last is not None else ""
    edge = last is not None and ("nterrupts" in line or (
        last.filename.endswith("state.py")
        and (last.name in ("start", "stop") or (last.name == "__init__" and line.startswith(
            ("self.requested", "self._previous"))))))     # Interrupts.__init__
    print(f"raised at {last.name}: {last.line}" if in_fit and not edge else "outside")
"""


def test_ctrl_c_during_a_tiny_fit_returns_the_history():
    """Ctrl-C at random moments of back-to-back tiny fits (mostly set-up, not epochs):
    fit returns its history, interrupted, every time (it raised KeyboardInterrupt, or a
    TypeError from inside Numba, most of the time)."""
    import random
    import signal
    import time
    rnd = random.Random(0)
    outcomes = []
    while len(outcomes) < 12:
        p = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.0, 0.2))
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
        if out.strip().splitlines()[-1:] == ["outside"]:
            continue                      # landed between two fits: try again
        outcomes.append("interrupted" if out.strip() == "interrupted" and p.returncode == 0
                        else (out.strip(), err.strip().splitlines()[-1:]))
    assert outcomes == ["interrupted"] * 12, outcomes


def test_ctrl_c_with_checkpoints_then_resume_is_exact(tmp_path):
    """Ctrl-C at random moments of a run that checkpoints every 7 steps, then resume in a
    new process: the final weights equal an uninterrupted run's, bit for bit (1 in 8
    interrupted runs differed: the checkpoint recorded step N with the weights of a
    later step)."""
    import random
    import signal
    import time
    child = os.path.join(HERE, "helpers", "resume_child.py")
    subprocess.run([sys.executable, child, "-", str(tmp_path / "ref.npy"), "plain"],
                   check=True, capture_output=True, timeout=300)
    ref = np.load(tmp_path / "ref.npy")
    rnd = random.Random(2)
    trials = attempts = 0
    while trials < 4 and attempts < 40:
        attempts += 1
        ck, a, b = (str(tmp_path / f"{k}{attempts}") for k in ("ck", "a.npy", "b.npy"))
        p = subprocess.Popen([sys.executable, child, ck, a + ".npy", "interrupt"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.0, 1.0))
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=300)
        if "interrupted" not in out:
            continue                      # before or after fit: not a trial
        trials += 1
        subprocess.run([sys.executable, child, ck, b + ".npy", "resume"], check=True,
                       capture_output=True, timeout=300)
        assert np.array_equal(np.load(b + ".npy"), ref), attempts
    assert trials == 4


def test_validation_split_does_not_copy_the_data(tmp_path):
    """A validation split trains and validates by index: a memory-mapped data set is not
    copied (it was, whole: X[train] and X[val]).  Peak traced memory stays well under
    the data set's size."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40000, 200)).astype(np.float32)
    y = rng.integers(0, 3, 40000)
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    m = fastbp.MLP([200, 16, 3], seed=0)
    fastbp.fit(m, Xm[:256], y[:256], optimizer=fastbp.SGD(m, 0.01), epochs=1,
               batch_size=64, verbose=0, validation_split=0.25, seed=0)   # compile
    m = fastbp.MLP([200, 16, 3], seed=0)
    tracemalloc.start()
    h = fastbp.fit(m, Xm, y, optimizer=fastbp.SGD(m, 0.01), epochs=1, batch_size=64,
                   verbose=0, validation_split=0.25, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < X.nbytes // 5, (peak, X.nbytes)
    assert h["val_loss"][0] is not None and h["val_accuracy"][0] is not None
