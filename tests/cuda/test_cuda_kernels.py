"""CUDA kernels against the CPU kernels on small random shapes (odd sizes, sizes not
divisible by the tiles), and the device="cuda" training path against the CPU one.

Run by tests/test_cuda.py in a child process under Numba's CUDA simulator
(NUMBA_ENABLE_CUDASIM=1), or directly on a machine with a GPU:
    FASTBP_CUDA_TESTS=1 python -m pytest tests/cuda
The simulator runs each GPU thread as a Python thread, so shapes are kept small.
"""
import importlib
import os

import numpy as np
import pytest
from conftest import ACTIVATIONS, rel_err
from numba import cuda

import fastbp
from fastbp import kernels as K
from fastbp.kernels import cuda as KC
from fastbp.kernels.cpu import losses as L

F = np.float32
TOL = 2e-5
RNG = np.random.default_rng(42)


def dev(x):
    return cuda.to_device(np.ascontiguousarray(x))


def empty2():
    return cuda.device_array((0, 0), F)


@pytest.mark.parametrize("M,Kd,N", [(3, 17, 5), (67, 20, 65), (130, 9, 129)])
@pytest.mark.parametrize("ta,tb", [(False, True), (True, False), (False, False), (True, True)])
@pytest.mark.parametrize("tile", [64, 128])
def test_gemm_layouts(M, Kd, N, ta, tb, tile):
    if M > 10 and ((ta, tb) == (True, True) or (tile, M) in ((64, 130), (128, 67))):
        pytest.skip("covered on another shape; keeps the simulator run short")
    a = RNG.standard_normal((Kd, M) if ta else (M, Kd)).astype(F)
    b = RNG.standard_normal((N, Kd) if tb else (Kd, N)).astype(F)
    C = dev(np.full((M, N), np.nan, F))       # every element must be written
    n = cuda.device_array(0, F)
    KC.gemm(dev(a), ta, dev(b), tb, C, KC.EPI_NONE, n, 0, 0.0, empty2(), empty2(), empty2(),
            tile=tile)
    assert rel_err(C.copy_to_host(), K.matmul(a, b, trans_a=ta, trans_b=tb)) <= TOL


def test_recorded_launches_replay_on_new_data():
    """A recorded plan keeps its buffers: refilling them in place and replaying gives the
    new product; set_scalar moves the gather offset."""
    a, w = dev(RNG.standard_normal((5, 7)).astype(F)), dev(RNG.standard_normal((6, 7)).astype(F))
    C, n = cuda.device_array((5, 6), F), cuda.device_array(0, F)
    plan = []
    KC.gemm(a, False, w, True, C, KC.EPI_NONE, n, 0, 0.0, empty2(), empty2(), empty2(),
            plan=plan)
    assert len(plan) == 1
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        assert plan[0]._fast is not None, "the driver fast path should be active on a GPU"
    for _ in range(2):
        a_host = RNG.standard_normal((5, 7)).astype(F)
        a.copy_to_device(a_host)
        KC.run_plan(plan)
        assert rel_err(C.copy_to_host(), a_host @ w.copy_to_host().T) <= TOL
    src = RNG.standard_normal((10, 3)).astype(F)
    idx = np.array([9, 2, 4, 0, 7, 1], np.int64)
    dst = cuda.device_array((2, 3), F)
    g = []
    KC.gather_rows(dev(src), dev(idx), dst, plan=g)
    for start in (0, 4, 2):
        g[0].set_scalar(2, start)
        g[0]()
        assert np.array_equal(dst.copy_to_host(), src[idx[start:start + 2]])


@pytest.mark.parametrize("M,Kd,N,splits", [(3, 17, 5, 2), (5, 40, 3, 3), (2, 9, 66, 8),
                                            (1, 1, 1, 4)])
@pytest.mark.parametrize("ta,tb", [(False, True), (True, False), (False, False)])
def test_gemm_split_k(M, Kd, N, splits, ta, tb):
    """K split over blocks (partial sums in a workspace, added by a second kernel),
    including more splits than K slices and K not a multiple of the slice."""
    a = RNG.standard_normal((Kd, M) if ta else (M, Kd)).astype(F)
    b = RNG.standard_normal((N, Kd) if tb else (Kd, N)).astype(F)
    C = dev(np.full((M, N), np.nan, F))
    n = cuda.device_array(0, F)
    KC.gemm(dev(a), ta, dev(b), tb, C, KC.EPI_NONE, n, 0, 0.0, empty2(), empty2(), empty2(),
            tile=64, splits=splits)
    assert rel_err(C.copy_to_host(), K.matmul(a, b, trans_a=ta, trans_b=tb)) <= TOL


def test_gemm_with_empty_inner_dimension():
    """K = 0: C is the epilogue of zeros (bias, then the activation), split or not."""
    bias = np.array([1.0, -2.0, 3.0], F)
    for splits in (None, 4):
        Z, A = dev(np.full((2, 3), np.nan, F)), dev(np.full((2, 3), np.nan, F))
        KC.gemm(dev(np.zeros((2, 0), F)), False, dev(np.zeros((3, 0), F)), True, Z,
                KC.EPI_BIAS_ACT, dev(bias), K.activation_code("relu"), 0.0, A, empty2(),
                empty2(), splits=splits)
        assert np.array_equal(Z.copy_to_host(), np.tile(bias, (2, 1)))
        assert np.array_equal(A.copy_to_host(), np.tile(np.maximum(bias, 0), (2, 1)))


def test_choose_tiling():
    from fastbp.kernels.cuda.gemm import MIN_SPLIT_K, choose_tiling
    # the H100 measurements behind the rule (tools/cuda_gemm_lab.py, 2026-11-24)
    assert choose_tiling(4096, 4096, 4096, 132) == (128, 1)       # 1024 tiles: no split
    assert choose_tiling(1024, 512, 784, 132) == (64, 2)          # 128 tiles of 64
    assert choose_tiling(512, 512, 1024, 132) == (64, 4)          # 64 tiles of 64
    assert choose_tiling(256, 2048, 2048, 132) == (128, 4)        # long K: 4 x 32 tiles
    assert choose_tiling(1024, 512, 10, 132) == (64, 1)           # K too short to split
    for M, N, Kd in [(10, 512, 1024), (1024, 10, 512), (128, 512, 784), (1, 1, 1)]:
        tile, splits = choose_tiling(M, N, Kd, 132)
        assert tile in (64, 128) and 1 <= splits <= max(1, Kd // MIN_SPLIT_K)
        tiles = -(-M // tile) * -(-N // tile)
        assert tiles * splits <= (132 if tile == 128 else 264)   # one wave of blocks


@pytest.mark.parametrize("activation", ["relu", "gelu", "sigmoid"])
@pytest.mark.parametrize("splits", [1, 3])
def test_gemm_bias_activation_epilogue(activation, splits):
    x = RNG.standard_normal((19, 21)).astype(F)
    w = RNG.standard_normal((66, 21)).astype(F)
    bias = RNG.standard_normal(66).astype(F)
    code = K.activation_code(activation)
    Z = cuda.device_array((19, 66), F)
    A = cuda.device_array((19, 66), F)
    KC.gemm(dev(x), False, dev(w), True, Z, KC.EPI_BIAS_ACT, dev(bias), code, 0.0, A,
            empty2(), empty2(), splits=splits)
    z_ref, a_ref = K.linear(x, w, bias, activation=activation)
    assert rel_err(Z.copy_to_host(), z_ref) <= TOL
    assert rel_err(A.copy_to_host(), a_ref) <= TOL


@pytest.mark.parametrize("activation,splits", [("tanh", 1), ("leaky_relu", 1),
                                               ("leaky_relu", 2)])
def test_gemm_activation_grad_epilogue_and_column_sum(activation, splits):
    d = RNG.standard_normal((13, 17)).astype(F)
    w = RNG.standard_normal((17, 18)).astype(F)
    z = RNG.standard_normal((13, 18)).astype(F)
    code = K.activation_code(activation)
    a = K.activation(z, activation)
    G = cuda.device_array((13, 18), F)
    KC.gemm(dev(d), False, dev(w), False, G, KC.EPI_ACT_GRAD, cuda.device_array(0, F), code,
            0.01, empty2(), dev(z), dev(a), splits=splits)
    ref = K.activation_grad(K.matmul(d, w), z, activation)
    assert rel_err(G.copy_to_host(), ref) <= TOL
    out = cuda.device_array(17, F)
    KC.column_sum(dev(d), out)
    assert rel_err(out.copy_to_host(), d.sum(0)) <= TOL


def test_column_sum_many_rows_and_columns():
    """More rows than the block has (each thread sums several) and a partial column block;
    a strided (non-contiguous) view."""
    d = RNG.standard_normal((70, 2 * 35)).astype(F)
    out = dev(np.full(35, np.nan, F))
    KC.column_sum(dev(d)[:, ::2], out)
    assert rel_err(out.copy_to_host(), d[:, ::2].astype(np.float64).sum(0)) <= TOL


def test_split_k_recorded_launches_share_the_workspace():
    """Recorded split-K products on one stream, replayed in turn, all stay right: two
    sharing the default workspace, one with a workspace of its own (as each CUDA model
    has, so that models trained from two threads do not share partial sums)."""
    plans, refs = [], []
    own = KC.SplitWorkspace()
    for (M, Kd, N), ws in [((4, 30, 6), None), ((7, 25, 3), None), ((5, 20, 4), own)]:
        a = RNG.standard_normal((M, Kd)).astype(F)
        b = RNG.standard_normal((N, Kd)).astype(F)
        C = cuda.device_array((M, N), F)
        plan = []
        KC.gemm(dev(a), False, dev(b), True, C, KC.EPI_NONE, cuda.device_array(0, F), 0, 0.0,
                empty2(), empty2(), empty2(), plan=plan, splits=3, workspace=ws)
        assert len(plan) == 2
        plans.append((plan, C))
        refs.append(a.astype(np.float64) @ b.T)
    w_shared, w_own = plans[0][0][0].args[-1], plans[2][0][0].args[-1]
    assert w_shared.shape[1:] == (4, 6) and w_own.shape[1:] == (5, 4)   # K parts of 16
    shared = importlib.import_module("fastbp.kernels.cuda.gemm")._shared_workspace
    assert own._buffers[0] is not shared._buffers[0]
    for _ in range(2):
        for (plan, C), ref in zip(plans, refs):
            C.copy_to_device(np.full(C.shape, np.nan, F))
            KC.run_plan(plan)
            assert rel_err(C.copy_to_host(), ref) <= TOL


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_kernels(activation):
    z = (RNG.standard_normal((5, 17)) * 3).astype(F)
    code = K.activation_code(activation)
    slope = 0.01 if activation == "leaky_relu" else 0.0
    A = cuda.device_array_like(z)
    grid = (1, 2)
    KC.activation_forward[grid, (16, 16)](dev(z), A, code, slope)
    assert rel_err(A.copy_to_host(), K.activation(z, activation)) <= TOL
    g = RNG.standard_normal(z.shape).astype(F)
    Gd = dev(g)
    KC.activation_backward[grid, (16, 16)](Gd, dev(z), A, code, slope)
    assert rel_err(Gd.copy_to_host(), K.activation_grad(g, z, activation)) <= TOL


def test_activations_at_extreme_values():
    """Saturated and tiny inputs, element by element against the CPU kernels (which compute
    float32 values in float32 too): no inf or NaN where the true value is finite (GELU's
    cube and square overflow float32 past |z| ~ 7e12 unless z is clamped first).  f'
    within 1e-6 absolute: GELU's near z = -3 is a difference of two terms ~100x larger."""
    z = np.array([[-1e30, -1e13, -100.0, -20.5, -1.0, -1e-30, -0.0, 0.0, 1e-30, 1.0, 20.5,
                   100.0, 1e13, 1e30, 3.0, -3.0]], F)
    g = np.ones_like(z)
    for activation in ACTIVATIONS:
        code = K.activation_code(activation)
        A = cuda.device_array_like(z)
        KC.activation_forward[(1, 1), (16, 16)](dev(z), A, code, 0.01)
        a = A.copy_to_host()
        Gd = dev(g)
        KC.activation_backward[(1, 1), (16, 16)](Gd, dev(z), A, code, 0.01)
        np.testing.assert_allclose(a, K.activation(z, activation, slope=0.01), rtol=2e-6,
                                   atol=1e-7, err_msg=activation)
        np.testing.assert_allclose(Gd.copy_to_host(),
                                   K.activation_grad(g, z, activation, slope=0.01),
                                   rtol=2e-6, atol=1e-6, err_msg=activation)


def test_losses_against_cpu():
    b, c = 9, 5
    z = (RNG.standard_normal((b, c)) * 3).astype(F)
    y = RNG.integers(0, c, size=b)
    T = RNG.dirichlet(np.ones(c), size=b).astype(F)
    R = RNG.standard_normal((b, c)).astype(F)
    B = RNG.integers(0, 2, size=(b, c)).astype(F)
    G = cuda.device_array((b, c), F)
    rl = cuda.device_array(b, np.float64)
    P = np.abs(R) * 2
    w = RNG.integers(0, 4, size=b).astype(np.float64)
    for sw in (None, w):
        total = b if sw is None else w.sum()
        wd = cuda.device_array(0, np.float64) if sw is None else dev(sw)
        cases = [
            (KC.cross_entropy_labels, dev(y), K.cross_entropy(z, y, sw), 1),
            (KC.cross_entropy_targets, dev(T), K.cross_entropy(z, T, sw), 1),
            (KC.mse, dev(R), K.mse(z, R, sw), c),
            (KC.binary_cross_entropy, dev(B), K.binary_cross_entropy(z, B, sw), c),
            (KC.poisson, dev(P), K.poisson(z, P, sw), c),
            (KC.huber, dev(R), K.huber(z, R, 0.7, sw), c),
        ]
        params = {KC.huber: 0.7}
        for kernel, target, (loss_ref, g_ref), count in cases:
            kernel(dev(z), target, G, rl, wd, 1.0 / (total * count), params.get(kernel, 0.0))
            acc = cuda.to_device(np.zeros(1))
            KC.accumulate(rl, 1.0 / (total * count), acc)
            assert abs(acc.copy_to_host()[0] - loss_ref) <= 1e-5 * max(1, abs(loss_ref)), kernel
            assert rel_err(G.copy_to_host(), g_ref) <= TOL, kernel
    for target, ref in ((dev(y), K.cross_entropy(z, y, w, label_smoothing=0.1)),
                        (dev(T), K.cross_entropy(z, T, w, label_smoothing=0.1))):
        kernel = KC.cross_entropy_labels if target.ndim == 1 else KC.cross_entropy_targets
        kernel(dev(z), target, G, rl, dev(w), 1.0 / w.sum(), 0.1)
        acc = cuda.to_device(np.zeros(1))
        KC.accumulate(rl, 1.0 / w.sum(), acc)
        assert abs(acc.copy_to_host()[0] - ref[0]) <= 1e-5 * max(1, abs(ref[0]))
        assert rel_err(G.copy_to_host(), ref[1]) <= TOL
    P = cuda.device_array_like(z)
    KC.softmax_rows(dev(z), P)
    assert rel_err(P.copy_to_host(), K.softmax(z)) <= TOL
    cnt = cuda.to_device(np.zeros(1, np.int64))
    KC.count_correct_labels(dev(z), dev(y), cnt)
    assert cnt.copy_to_host()[0] == L.count_correct_labels(z, y)


def test_gather_and_optimizers_against_cpu():
    X = RNG.standard_normal((11, 6)).astype(F)
    idx = np.array([3, 0, 10, 3, 7])
    out = cuda.device_array((5, 6), F)
    KC.gather_rows(dev(X), dev(idx), out)
    assert np.array_equal(out.copy_to_host(), X[idx])
    p = RNG.standard_normal(1001).astype(F)
    g = RNG.standard_normal(1001).astype(F)
    one = dev(np.array([1.0, 0.0]))           # the gradient's scale (no clipping)
    for kind in ("sgd", "adam", "adamw"):
        pc, pg = p.copy(), dev(p)
        s1, s2 = np.zeros_like(p), np.zeros_like(p)
        d1, d2 = dev(s1), dev(s2)
        for step in (1, 2, 3):
            if kind == "sgd":
                K.sgd_update(pc, g, s1, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
                KC.sgd_update(pg, dev(g), d1, 0.1, 0.9, 0.01, True, one)
            else:
                dec = kind == "adamw"
                K.adam_update(pc, g, s1, s2, step, lr=0.01, weight_decay=0.01, decoupled=dec)
                KC.adam_update(pg, dev(g), d1, d2, 0.01, 0.9, 0.999, 1e-8, 0.01, dec, step, one)
        assert rel_err(pg.copy_to_host(), pc) <= TOL, kind


def test_device_model_matches_cpu_model():
    """Training on the device as on the CPU, with per-layer activations, dropout (the
    CPU's masks) and gradient clipping (on the device, in the recorded SGD step too)."""
    X = RNG.standard_normal((23, 7)).astype(F)
    y = RNG.integers(0, 3, size=23)
    options = dict(activation=["tanh", "relu"], dropout=[0.25, 0.0], seed=0)
    cpu_m = fastbp.MLP([7, 9, 6, 3], **options)
    gpu_m = fastbp.MLP([7, 9, 6, 3], device="cuda", **options)
    assert type(gpu_m) is fastbp.MLP and gpu_m.device == "cuda"
    assert type(gpu_m.backend).__name__ == "CUDABackend"
    l_cpu = cpu_m.loss_and_grad(X, y, l2=1e-3)
    l_gpu = gpu_m.loss_and_grad(X, y, l2=1e-3)
    assert abs(l_cpu - l_gpu) <= 1e-5 * l_cpu
    assert rel_err(gpu_m.grads.copy_to_host(), cpu_m.grads) <= 1e-4
    h_cpu = fastbp.fit(cpu_m, X, y, optimizer=fastbp.Adam(cpu_m, 1e-2, clip_grad_norm=0.5),
                       batch_size=8, epochs=1, seed=1, verbose=0)
    h_gpu = fastbp.fit(gpu_m, X, y, optimizer=fastbp.Adam(gpu_m, 1e-2, clip_grad_norm=0.5),
                       batch_size=8, epochs=1, seed=1, verbose=0)
    assert np.allclose(h_cpu["loss"], h_gpu["loss"], rtol=1e-4)
    assert h_cpu["accuracy"] == h_gpu["accuracy"]
    assert rel_err(gpu_m.host_params(), cpu_m.params) <= 1e-4
    assert np.array_equal(gpu_m.predict(X), cpu_m.predict(X))
    # SGD (its launch is recorded and replayed) with a learning rate that changes
    for m in (cpu_m, gpu_m):
        opt = fastbp.SGD(m, 0.05, momentum=0.9, clip_grad_norm=0.3)
        fastbp.fit(m, X, y, optimizer=opt, batch_size=8, epochs=1, seed=2, verbose=0)
        opt.lr = 0.01
        fastbp.fit(m, X, y, optimizer=opt, batch_size=8, epochs=1, seed=3, verbose=0)
    assert rel_err(gpu_m.host_params(), cpu_m.params) <= 1e-4


def test_dropout_clipping_and_per_layer_activations_on_device_match_cpu():
    """The device draws the CPU's dropout masks (the kernel against the CPU's, bit for
    bit), with per-layer activations."""
    from fastbp.kernels.cpu import dropout as D
    A = RNG.standard_normal((5, 40)).astype(F)
    s = D.stream(3, 8, 1)
    out, want = cuda.device_array_like(A), np.empty_like(A)
    KC.dropout(dev(A), out, s, 7, 0.3)
    D.dropout_forward(A, want, s, 7, 0.3)
    assert np.array_equal(out.copy_to_host(), want)
    rng = np.random.default_rng(12)
    X = rng.standard_normal((26, 6)).astype(F)
    y = rng.integers(0, 3, size=26)
    models = [fastbp.MLP([6, 10, 8, 3], activation=["tanh", "relu"], dropout=[0.3, 0.2],
                         seed=0, device=d) for d in ("cpu", "cuda")]
    losses = [m.loss_and_grad(X, y, train_step=3) for m in models]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert rel_err(models[1].grads.copy_to_host(), models[0].grads) <= 1e-4
    # training with them: test_device_model_matches_cpu_model


@pytest.mark.parametrize("loss", ["poisson"])
def test_weighted_training_on_device_matches_cpu(loss):
    """Sample weights (gathered on the device, each batch's total from the host), the
    per-weight L2 of the estimators and weighted validation (every loss kernel's weights:
    test_losses_against_cpu)."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((30, 6)).astype(F)
    if loss == "cross_entropy":
        y = rng.integers(0, 3, size=30)
    else:
        y = rng.poisson(1.5, size=(30, 3)).astype(F)
    w = rng.uniform(0, 2, 30)
    w[:4] = 0.0
    models = [fastbp.MLP([6, 9, 3], loss=loss, seed=0, device=d) for d in ("cpu", "cuda")]
    losses = [m.loss_and_grad(X, y, l2=1e-3, sample_weight=w) for m in models]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert rel_err(models[1].grads.copy_to_host(), models[0].grads) <= 1e-4
    hs = []
    for m in models:
        hs.append(fastbp.fit(m, X, y, optimizer=fastbp.Adam(m, 1e-2), batch_size=8, epochs=1,
                             seed=1, verbose=0, sample_weight=w, l2=1e-2, _l2_per_weight=True,
                             validation_split=0.2))
    assert np.allclose(hs[0]["loss"], hs[1]["loss"], rtol=1e-4)
    assert np.allclose(hs[0]["val_loss"], hs[1]["val_loss"], rtol=1e-4)
    assert rel_err(models[1].host_params(), models[0].params) <= 1e-4


def test_estimator_on_device():
    """The estimator on the device, with sample weights times balanced class weights (the
    cross-entropy's weighted kernels and the per-weight L2; unweighted device training:
    test_device_model_matches_cpu_model)."""
    X = RNG.standard_normal((40, 4))
    y = (X[:, 0] > 0.3).astype(int)
    sw = np.linspace(0, 2, 40)
    clf = fastbp.MLPClassifier((8,), max_iter=3, device="cuda", random_state=0,
                               batch_size=20, class_weight="balanced").fit(X, y, sw)
    ref = fastbp.MLPClassifier((8,), max_iter=3, random_state=0, batch_size=20,
                               class_weight="balanced").fit(X, y, sw)
    assert np.allclose(clf.loss_curve_, ref.loss_curve_, rtol=1e-4)
    assert np.allclose(clf.coefs_[0], ref.coefs_[0], atol=1e-5)


def test_command_line_trains_on_the_device(tmp_path, capsys):
    """fastbp train --device cuda: trains, evaluates and saves a model the CPU side loads."""
    from fastbp.cli import main
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    out = tmp_path / "out"
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--device", "cuda", "--epochs", "1",
                 "--hidden", "8", "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "on the GPU" in text and "test accuracy" in text
    model = fastbp.load(str(out / "model.npz"))
    assert model.device == "cpu" and model.sizes == [5, 8, 3]

