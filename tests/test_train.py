"""fastbp.fit: batching, shuffling, validation, early stopping, schedules, callbacks,
divergence and interruption."""
import math

import numba
import numpy as np
import pytest

import fastbp


def blobs(n=300, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 3
    y = rng.integers(0, k, size=n)
    X = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    return X, y


def test_fit_learns_and_reports_history(capsys):
    X, y = blobs()
    model = fastbp.MLP([8, 16, 3], seed=0)
    h = fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.1, momentum=0.9),
                   batch_size=32, epochs=5, seed=0, validation_split=0.2, verbose=0)
    assert capsys.readouterr().out == ""
    assert h.epochs == 5 and len(h["val_loss"]) == 5
    assert h["accuracy"][-1] > 0.95 and h["val_accuracy"][-1] > 0.95
    assert h["loss"][-1] < h["loss"][0]
    assert all(v > 0 for v in h["samples_per_s"])
    # the last partial batch is trained: 240 rows in batches of 32 = 7 full + 16
    assert h.samples_seen == 5 * 240


def test_fit_is_deterministic_and_seed_matters():
    X, y = blobs()
    runs = []
    for seed in (1, 1, 2):
        model = fastbp.MLP([8, 16, 3], seed=0)
        fastbp.fit(model, X, y, optimizer=fastbp.Adam(model, 1e-2), batch_size=17, epochs=3,
                   seed=seed, verbose=0)
        runs.append(model.params.copy())
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_no_shuffle_equals_manual_loop():
    X, y = blobs(n=100)
    m1 = fastbp.MLP([8, 5, 3], seed=3)
    m2 = m1.copy()
    fastbp.fit(m1, X, y, optimizer=fastbp.SGD(m1, 0.05), batch_size=30, epochs=2,
               shuffle=False, verbose=0)
    opt = fastbp.SGD(m2, 0.05)
    for _ in range(2):
        for i in range(0, 100, 30):
            m2.loss_and_grad(X[i:i + 30], y[i:i + 30])
            opt.step()
    assert np.array_equal(m1.params, m2.params)


def test_early_stopping_restores_best_weights():
    X, y = blobs(n=200)
    Xv, yv = blobs(n=60, seed=1)
    yv = (yv + 1) % 3  # validation labels that disagree: val_loss rises as training fits
    model = fastbp.MLP([8, 16, 3], seed=0)
    seen = []
    h = fastbp.fit(model, X, y, optimizer=fastbp.Adam(model, 1e-2), epochs=50, patience=3,
                   early_stopping=True, validation_data=(Xv, yv), verbose=0, seed=0,
                   callbacks=[lambda epoch, logs: seen.append(model.params.copy())])
    assert h.stopped_early and h.epochs < 50
    assert np.array_equal(model.params, seen[h.best_epoch])
    assert h["val_loss"][h.best_epoch] == min(h["val_loss"])


def test_callbacks_stop_and_see_logs():
    X, y = blobs(n=64)
    model = fastbp.MLP([8, 4, 3], seed=0)

    class StopAt2:
        def on_epoch_end(self, epoch, logs):
            assert {"loss", "accuracy", "lr", "samples_per_s"} <= set(logs)
            return epoch == 1

    h = fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.1), epochs=10,
                   callbacks=[StopAt2()], verbose=0)
    assert h.epochs == 2
    with pytest.raises(TypeError, match="on_epoch_end"):
        fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.1), callbacks=[3], verbose=0)


@pytest.mark.parametrize("schedule,expected", [
    ("constant", [0.1] * 4),
    (fastbp.StepLR(step_size=2, gamma=0.5), [0.1, 0.1, 0.05, 0.05]),
    (fastbp.CosineLR(T_max=4), [0.1] + [0.05 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3)]),
])
def test_lr_schedules(schedule, expected):
    X, y = blobs(n=40)
    model = fastbp.MLP([8, 4, 3], seed=0)
    h = fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.1), epochs=4,
                   lr_schedule=schedule, verbose=0)
    assert np.allclose(h["lr"], expected)


def test_invscaling_and_plateau_schedules():
    X, y = blobs(n=40)
    model = fastbp.MLP([8, 4, 3], seed=0)
    h = fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.1), epochs=3, batch_size=10,
                   lr_schedule="invscaling", verbose=0)
    assert np.allclose(h["lr"], [0.1, 0.1 / 41 ** 0.5, 0.1 / 81 ** 0.5])
    sched = fastbp.ReduceLROnPlateau(factor=0.5, patience=0)
    sched.start(1.0, 5)
    lrs = [sched.on_epoch_end(e, {"loss": v}) for e, v in enumerate([3, 2, 2, 2, 1])]
    assert lrs == [1.0, 1.0, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.1), lr_schedule="exp", verbose=0)


def test_divergence_stops_with_last_good_weights():
    X, y = blobs(n=64)
    X = X * 1e3
    model = fastbp.MLP([8, 32, 3], seed=0)
    snapshots = []
    with pytest.raises(fastbp.TrainingDiverged, match="loss became") as info:
        fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 1e4), epochs=50, batch_size=8,
                   verbose=0, callbacks=[lambda e, logs: snapshots.append(model.params.copy())])
    assert np.all(np.isfinite(model.params))
    if snapshots:
        assert np.array_equal(model.params, snapshots[-1])
    assert info.value.history.epochs == len(snapshots)


def test_keyboard_interrupt_returns_history():
    X, y = blobs(n=64)
    model = fastbp.MLP([8, 4, 3], seed=0)
    opt = fastbp.SGD(model, 0.1)
    calls = {"n": 0}
    real_step = opt.step

    def step():
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real_step()

    opt.step = step
    h = fastbp.fit(model, X, y, optimizer=opt, batch_size=16, epochs=3, verbose=0)
    assert h.interrupted and h.epochs == 1 and h.samples_seen == 64


def test_fit_rejects_bad_arguments():
    X, y = blobs(n=20)
    model = fastbp.MLP([8, 4, 3], seed=0)
    other = fastbp.MLP([8, 4, 3], seed=0)
    with pytest.raises(ValueError, match="different model"):
        fastbp.fit(model, X, y, optimizer=fastbp.SGD(other, 0.1), verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.1), batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        fastbp.fit(model, X[:1], y[:1], optimizer=fastbp.SGD(model, 0.1),
                   validation_split=0.5, verbose=0)
    with pytest.raises(ValueError, match="label 5"):
        fastbp.fit(model, X, np.full(20, 5), optimizer=fastbp.SGD(model, 0.1), verbose=0)


@pytest.mark.parametrize("loss,sizes", [("cross_entropy", [12, 16, 4]), ("mse", [12, 9, 3]),
                                        ("binary_cross_entropy", [12, 9, 1]),
                                        ("binary_cross_entropy", [12, 8, 3])])
@pytest.mark.parametrize("matmul", ["own", "blas"])
def test_compiled_steps_equal_python_steps(loss, sizes, matmul):
    """fit runs chunks of steps in one compiled call; replacing optimizer.step forces the
    step-by-step Python path.  Both must give the same bits, with either product."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((70, 12)).astype(np.float32)
    if loss == "cross_entropy":
        y = rng.integers(0, sizes[-1], size=70)
    else:
        y = (rng.random((70, sizes[-1])) > 0.5).astype(np.float32)
    results = []
    for python_path in (False, True):
        for make in (lambda m: fastbp.SGD(m, 0.05, momentum=0.9, nesterov=True),
                     lambda m: fastbp.AdamW(m, 1e-2)):
            m = fastbp.MLP(sizes, activation="gelu", loss=loss, seed=0, matmul=matmul)
            opt = make(m)
            if python_path:
                opt.step = opt.step
            h = fastbp.fit(m, X, y, optimizer=opt, batch_size=16, epochs=2, seed=1,
                           verbose=0, l2=1e-3)
            results.append((m.params.copy(), h["loss"], h["accuracy"]))
    for compiled, python in zip(results[:2], results[2:]):
        assert np.array_equal(compiled[0], python[0])
        assert compiled[1] == python[1] and compiled[2] == python[2]


@pytest.mark.parametrize("loss,sizes,l2,act", [("cross_entropy", [12, 16, 9, 4], 1e-3, "gelu"),
                                               ("mse", [12, 9, 3], 0.0, "tanh"),
                                               ("binary_cross_entropy", [12, 8, 3], 1e-3,
                                                "relu"),
                                               # the last layer shared: G's shifted view
                                               ("cross_entropy", [12, 3, 40], 1e-3, "relu")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_split", [2, 3])
def test_split_steps_equal_python_steps(monkeypatch, loss, sizes, l2, act, dtype, n_split):
    """A small step split over two or three threads (rows of the batch for the forward
    and data gradients, rows of the layers for the weight gradients and updates) gives
    the same bits as the Python path, down to a last batch of one row (a part with no
    rows)."""
    from fastbp.train import split as T
    rng = np.random.default_rng(5)
    X = rng.standard_normal((69, 12)).astype(dtype)   # batches of 17: last one 1 row
    if loss == "cross_entropy":
        y = rng.integers(0, sizes[-1], size=69)
    else:
        y = (rng.random((69, sizes[-1])) > 0.5).astype(dtype)
    monkeypatch.setattr(T, "split_threads", lambda sizes, bs: n_split)
    _assert_compiled_equals_python(
        lambda: fastbp.MLP(sizes, activation=act, loss=loss, dtype=dtype, seed=0), X, y, l2)


@pytest.mark.parametrize("n_split", [2, 3])
def test_split_steps_on_one_thread_equal_python_steps(monkeypatch, n_split):
    """The parts of a split step are shared among the threads that turn up: with one
    thread running the parallel region's iterations one after the other, the first does
    every part of every step (it would wait forever for the others if it did only its
    own), and the bits are the same."""
    import numba

    from fastbp.train import split as T
    rng = np.random.default_rng(7)
    X = rng.standard_normal((69, 12)).astype(np.float32)
    y = rng.integers(0, 4, size=69)
    monkeypatch.setattr(T, "split_threads", lambda sizes, bs: n_split)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        _assert_compiled_equals_python(lambda: fastbp.MLP([12, 16, 9, 4], seed=0), X, y, 1e-3)
    finally:
        numba.set_num_threads(threads)


def test_epoch_loss_over_several_compiled_calls_equals_python_steps(monkeypatch):
    """An epoch of several compiled calls (chunks of steps) sums its loss in the same order
    as the Python path does step by step: the same bits, not just the same parameters.
    (Found by a fuzz campaign: 397 steps of batch 1 ran as two calls, and the epoch's loss
    differed in its last bit.)"""
    from fastbp.train import compiled as T
    init = T.Compiled.__init__

    def two_steps_a_call(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.chunk = 2          # 69 rows in batches of 17: calls of 2, 2 and 1 steps
    monkeypatch.setattr(T.Compiled, "__init__", two_steps_a_call)
    rng = np.random.default_rng(8)
    X = rng.standard_normal((69, 12)).astype(np.float32)
    y = rng.integers(0, 4, size=69)
    _assert_compiled_equals_python(lambda: fastbp.MLP([12, 16, 4], seed=0), X, y, 1e-3)


def _assert_compiled_equals_python(make_model, X, y, l2, adam_lr=1e-2, check=None,
                                   clip=None):
    """Two epochs of batches of 17 with SGD (momentum) and Adam, on the compiled path and on
    the Python path (an optimizer whose step is replaced): the same parameters and losses,
    bit for bit.  check(model, optimizer) runs before each compiled fit; clip: the
    optimizers' clip_grad_norm."""
    results = []
    for python_path in (False, True):
        for make in (lambda m: fastbp.SGD(m, 0.05, momentum=0.9, clip_grad_norm=clip),
                     lambda m: fastbp.Adam(m, adam_lr, clip_grad_norm=clip)):
            m = make_model()
            opt = make(m)
            if python_path:
                opt.step = opt.step
            elif check is not None:
                check(m, opt)
            h = fastbp.fit(m, X, y, optimizer=opt, batch_size=17, epochs=2, seed=1,
                           verbose=0, l2=l2)
            results.append((m.params.copy(), h["loss"]))
    for compiled, python in zip(results[:2], results[2:]):
        assert np.array_equal(compiled[0], python[0])
        assert compiled[1] == python[1]


@pytest.mark.parametrize("sizes,l2", [([300, 700, 10], 0.0), ([300, 700, 10], 1e-3),
                                      ([12, 16, 9, 4], 1e-3)])
@pytest.mark.parametrize("by_rows", [True, False])
def test_large_steps_with_weight_gradients_by_rows_equal_python_steps(monkeypatch, sizes, l2,
                                                                      by_rows):
    """A large step (parallel products) whose weight gradients and updates are shared out
    by rows (run_steps with n_split > 1 and parallel), and the same step with parallel
    weight-gradient products, give the same bits as the Python path."""
    from fastbp.train import compiled as C
    from fastbp.train import split as T
    rng = np.random.default_rng(6)
    X = rng.standard_normal((69, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=69)
    monkeypatch.setattr(T, "SERIAL_STEP_FLOPS", 0.0)
    monkeypatch.setattr(T, "ROW_SPLIT_MAX_FLOPS", np.inf if by_rows else 0.0)
    monkeypatch.setattr(T, "split_threads", lambda sizes, bs: 2)

    def check(m, opt):
        comp = C.Compiled(m, opt, X, y, None, 17, l2, False, True, 0)
        assert not comp.serial and comp.n_split == (2 if by_rows else 1)
        assert comp.chooser.options == (comp.n_split,)
    _assert_compiled_equals_python(lambda: fastbp.MLP(sizes, seed=0), X, y, l2, 1e-3, check)


def test_split_threads_choice():
    from fastbp.train import split as T
    from fastbp.runtime import threadsafe
    if threadsafe() and numba.get_num_threads() >= 2:
        assert T.split_threads([40, 100, 100, 10], 32) == 2
        assert T.split_threads([784, 100, 10], 32) == 2   # a dominant layer is shared too
    assert T.split_threads([40, 100, 100, 10], 8) == 1     # too few rows per thread


def test_split_chooser_keeps_the_faster_way():
    """Every PERIOD chunks the trainer probes split and one-thread chunks alternately and
    keeps the faster per step (the best of each one's probes)."""
    from fastbp.train.split import SplitChooser
    c = SplitChooser(2)
    speed = {2: 1.0, 1: 3.0}                    # seconds per step: split faster
    seen = []
    for call in range(3 * c.PERIOD):
        if call == c.PERIOD:
            speed = {2: 3.0, 1: 1.0}            # the machine changes: one thread faster
        n = c.pick()
        seen.append(n)
        steps = 10
        # the first chunk of all includes loading the compiled code
        c.record(n, speed[n] * steps + (100.0 if call == 0 else 0.0), steps)
    probe = 2 * c.PROBE
    assert seen[:probe] == [2, 1] * c.PROBE
    assert set(seen[probe:c.PERIOD]) == {2}
    assert seen[c.PERIOD:c.PERIOD + probe] == [2, 1] * c.PROBE
    assert set(seen[c.PERIOD + probe:2 * c.PERIOD]) == {1}
    one = SplitChooser(1)
    assert one.options == (1,) and one.pick() == 1


def test_split_chooser_probes_again_when_its_way_slows_down():
    """A chunk much slower per step than its way was at the last probes starts new probes
    at once; chunks within REPROBE of it do not."""
    from fastbp.train.split import SplitChooser
    c = SplitChooser(2)
    probe = 2 * c.PROBE
    speed = {2: 1.0, 1: 2.0}
    seen = []
    for call in range(30):
        if call == 10:
            speed = {2: 1.4, 1: 2.0}      # slower, within REPROBE: no new probes
        if call == 20:
            speed = {2: 3.0, 1: 2.0}      # split now slower than one thread
        n = c.pick()
        seen.append(n)
        c.record(n, speed[n] * 10, 10)
    assert seen[:probe] == [2, 1] * c.PROBE and set(seen[probe:21]) == {2}
    assert seen[21:21 + probe] == [2, 1] * c.PROBE      # probes right after the slow chunk
    assert set(seen[21 + probe:]) == {1}


def test_split_chooser_kept_across_fits():
    """A model's SplitChooser outlives one fit: the next fit with the same batch size goes
    on with its period (no new probes at its start) and the choice it made."""
    import gc

    from fastbp.train import split as T
    rng = np.random.default_rng(3)
    X = rng.standard_normal((320, 40)).astype(np.float32)
    y = rng.integers(0, 10, size=320)
    gc.collect()
    models_before = len(T._CHOOSERS)
    model = fastbp.MLP([40, 100, 100, 10], seed=0)
    opt = fastbp.SGD(model, lr=0.01)
    fastbp.fit(model, X, y, optimizer=opt, batch_size=32, epochs=1, verbose=0)
    choosers = T._CHOOSERS[model]
    assert len(choosers) == 1
    (key, chooser), = choosers.items()
    calls = chooser.calls
    assert key[0] == 32 and calls > 0
    fastbp.fit(model, X, y, optimizer=opt, batch_size=32, epochs=1, verbose=0)
    assert T._CHOOSERS[model][key] is chooser and chooser.calls > calls
    fastbp.fit(model, X, y, optimizer=opt, batch_size=16, epochs=1, verbose=0)
    assert len(T._CHOOSERS[model]) == 2
    del model, opt, choosers, chooser
    gc.collect()
    assert len(T._CHOOSERS) <= models_before     # the model's entry went with it


def test_layer_row_split():
    """The layers' rows cut into runs of equal work, at whole GEMM panels (MR rows: 8
    with AVX-512, else 6)."""
    from fastbp.train import split as T
    from fastbp.kernels.cpu.microkernel import MR

    def panels(rows):
        return round(rows / MR) * MR
    # work 4000, 10000, 1000: the cut at 7500 falls in layer 1 at row 35 -> 36 or 32
    assert T.layer_row_split([40, 100, 100, 10], 2).tolist() == [[0, 100, 100],
                                                                 [0, panels(35), 100],
                                                                 [0, 0, 10]]
    assert panels(35) in (32, 36)
    assert T.layer_row_split([784, 100, 10], 2).tolist() == [[0, 48, 100], [0, 0, 10]]
    assert T.layer_row_split([784, 100, 10], 1).tolist() == [[0, 100], [0, 10]]
    # work 36, 120: the cut at 78 falls in layer 1 at row 14 -> 12 or 16
    assert T.layer_row_split([12, 3, 40], 2).tolist() == [[0, 3, 3], [0, panels(14), 40]]
    for sizes in ([12, 16, 9, 4], [3, 1, 1000, 17, 1], [5, 2, 2]):
        for n in (2, 3, 4):
            split = T.layer_row_split(sizes, n)
            assert (np.diff(split, axis=1) >= 0).all()
            assert (split[:, 0] == 0).all() and (split[:, -1] == sizes[1:]).all()


def test_loss_rows_by_kind_of_loss():
    """The compiled step calls the loss through a pointer that kernel_pointers picks by
    the kind of loss (integer labels or float targets), so that a network compiles only
    its kind; both agree with the loss kernels called directly."""
    import numba

    from fastbp.kernels import codes
    from fastbp.kernels.cpu import losses as Lk
    from fastbp.kernels.cpu import steps as S
    from fastbp.kernels.cpu.linking import jit_address
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 3)).astype(np.float32)
    ylab = np.array([2, 0, 1, 1, 0])
    y = rng.random((5, 3)).astype(np.float32)
    for code, fn, ref in ((S.LOSS_CE_LABELS, S._label_loss_rows, None),
                          (S.LOSS_CE_TARGETS, S._target_loss_rows,
                           Lk.cross_entropy_targets_rows),
                          (S.LOSS_MSE, S._target_loss_rows, Lk.mse_rows),
                          (S.LOSS_BCE, S._target_loss_rows, Lk.binary_cross_entropy_rows),
                          (codes.LOSS_POISSON, S._target_loss_rows, Lk.poisson_rows),
                          (codes.LOSS_HUBER, S._target_loss_rows, Lk.huber_rows)):
        sig = S.step_signatures(numba.float32, *(numba.typeof(a) for a in (z, ylab, z)))
        assert S.kernel_pointers(np.float32, loss_code=code)[0].loss == jit_address(fn,
                                                                              sig["loss"])
        g, rl, g0, rl0 = np.zeros_like(z), np.zeros(5), np.zeros_like(z), np.zeros(5)
        w = np.array([0.5, 2.0, 0.0, 1.0, 3.0])
        param = {codes.LOSS_HUBER: 0.3, codes.LOSS_CE_TARGETS: 0.1}.get(code, 0.0)
        fn(code, z, ylab, y, g, rl, 0.2, w, param)
        if ref is None:
            Lk.cross_entropy_labels_rows(z, ylab, g0, rl0, 0.2, w, param)
        elif param:
            ref(z, y, g0, rl0, 0.2, w, param)
        else:
            ref(z, y, g0, rl0, 0.2, w)
        assert np.array_equal(g, g0) and np.array_equal(rl, rl0)


def test_read_only_inputs_give_the_same_bits():
    """Read-only arrays (a memory-mapped data set, say) are a type of their own to Numba;
    the GEMM passes them to its column kernel as writable views (linking.as_writable).
    Kernels, the compiled training steps and the Python path give the same bits as with
    writable copies."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((45, 13)).astype(np.float32)
    y = rng.integers(0, 3, size=45)
    W = rng.standard_normal((17, 13)).astype(np.float32)
    bias = rng.standard_normal(17).astype(np.float32)
    Xr, Wr, br, yr = (a.copy() for a in (X, W, bias, y))
    for a in (Xr, Wr, br, yr):
        a.flags.writeable = False
    K = fastbp.kernels
    assert np.array_equal(K.matmul(Xr, Wr, trans_b=True), K.matmul(X, W, trans_b=True))
    for got, want in zip(K.linear(Xr, Wr, br, "relu"), K.linear(X, W, bias, "relu")):
        assert np.array_equal(got, want)
    delta = rng.standard_normal((45, 17)).astype(np.float32)
    for got, want in zip(K.linear_backward(delta, Xr, Wr), K.linear_backward(delta, X, W)):
        assert np.array_equal(got, want)
    results = []
    for data in ((X, y), (Xr, yr)):
        for python_path in (False, True):
            m = fastbp.MLP([13, 10, 3], seed=0)
            opt = fastbp.SGD(m, 0.05, momentum=0.9)
            if python_path:
                opt.step = opt.step
            fastbp.fit(m, *data, optimizer=opt, batch_size=16, epochs=2, seed=1, verbose=0)
            results.append(m.params.copy())
    assert all(np.array_equal(r, results[0]) for r in results[1:])


def test_fit_refuses_to_return_non_finite_weights():
    """Issue 30 (6): SGD at lr=1e300 left every parameter non-finite while the reported
    loss was finite (0.723), without an error; now TrainingDiverged, and the model holds
    the last finite epoch's weights (here the initial ones)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    m = fastbp.MLP([5, 8, 3], seed=0)
    before = m.params.copy()
    with pytest.raises(fastbp.TrainingDiverged, match="NaN or infinite"):
        fastbp.fit(m, X, y, optimizer=fastbp.SGD(m, lr=1e300), epochs=2, verbose=0)
    assert np.all(np.isfinite(m.params)) and np.array_equal(m.params, before)
