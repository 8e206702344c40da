"""GPU comparison: fastbp's CUDA kernels against cuBLAS (torch.matmul) and PyTorch CUDA.

    fastbp bench --device cuda          (or: python benchmarks/compare_cuda.py)

float32 with TF32 off on the PyTorch side (torch.backends.cuda.matmul.allow_tf32 = False),
eager PyTorch.  GEMM times are device times from CUDA events around many repetitions
queued behind hold_gpu, after a warm-up (compilation and cuBLAS heuristics excluded).
Training rates are one epoch's wall time with the data set already on the device (for
fastbp the second epoch of a fit), each side shuffling and gathering its batches there
and synchronising once at the end.  Ratios are within this one run.
"""
import functools
import time

import numpy as np

from .peers import torch_mlp

GEMM_SHAPES = [("4096^3", 4096, 4096, 4096, False, False),
               ("1024x784 @ (512x784)^T", 1024, 784, 512, False, True)]
TRAIN_SHAPES = [([784, 512, 512, 10], 1024), ([784, 512, 512, 10], 128),
                ([40, 100, 100, 10], 32), ([784, 2048, 2048, 10], 256)]


@functools.cache
def _spin_kernel():
    from numba import cuda

    @cuda.jit
    def spin(micro_seconds):
        for _ in range(micro_seconds):
            cuda.nanosleep(1000)
    return spin


def hold_gpu(ms):
    """Keep the GPU's default stream busy for about ``ms`` milliseconds (one thread
    sleeping), so that the launches queued behind it run back to back: device time then
    excludes the host's launch cost, whatever the kernel's length."""
    _spin_kernel()[1, 1](int(ms * 1000))


def _event_time(fn, reps):
    """Device seconds per call of ``fn`` (CUDA events around ``reps`` calls queued behind
    hold_gpu; one call first as warm-up)."""
    from numba import cuda
    fn()
    cuda.synchronize()
    start, stop = cuda.event(), cuda.event()
    hold_gpu(min(500.0, 0.1 * reps + 2.0))     # > 100 us of host time per queued call
    start.record()
    for _ in range(reps):
        fn()
    stop.record()
    stop.synchronize()
    return cuda.event_elapsed_time(start, stop) / 1e3 / reps


def bench_gemm():
    import torch
    from numba import cuda

    from ..kernels import cuda as KC
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for label, M, K, N, ta, tb in GEMM_SHAPES:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        da, db = cuda.to_device(a), cuda.to_device(b)
        C = cuda.device_array((M, N), np.float32)
        e, n = cuda.device_array((0, 0), np.float32), cuda.device_array(0, np.float32)
        flops = 2.0 * M * N * K
        reps = max(3, int(2e12 / flops))
        plan = []                          # launches with their arguments converted once
        KC.gemm(da, ta, db, tb, C, 0, n, 0, 0.0, e, e, e, plan=plan)
        t_f = _event_time(lambda: KC.run_plan(plan), reps)  # noqa: B023
        ta_t, tb_t = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        opa, opb = (ta_t.T if ta else ta_t), (tb_t.T if tb else tb_t)
        out = torch.empty((M, N), device="cuda")
        torch.cuda.synchronize()
        # torch's current stream is the default stream that _event_time holds and times
        assert torch.cuda.current_stream().cuda_stream == 0
        t_c = _event_time(lambda: torch.matmul(opa, opb, out=out), reps)  # noqa: B023
        err = float((torch.from_numpy(C.copy_to_host()).cuda() - out).abs().max()
                    / out.abs().max())
        rows.append((label, flops / t_f / 1e12, flops / t_c / 1e12, t_c / t_f, err))
    return rows


def bench_train(sizes, batch, steps=200):
    import torch
    from numba import cuda

    import fastbp
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(0)
    n = batch * steps
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=n)
    model = fastbp.MLP(sizes, seed=0, device="cuda")
    opt = fastbp.SGD(model, lr=0.01, momentum=0.9)
    fastbp.fit(model, X[:batch * 4], y[:batch * 4], optimizer=opt, batch_size=batch,
               epochs=1, verbose=0)
    # the second of two epochs, timed between epoch ends: fit's one-off work (copying and
    # checking the data set) stays out, as the data set's copy stays out of PyTorch's time
    ends = []
    t = time.perf_counter()
    fastbp.fit(model, X, y, optimizer=opt, batch_size=batch, epochs=2, verbose=0, seed=1,
               callbacks=[lambda epoch, logs: ends.append(time.perf_counter())])
    cuda.synchronize()
    epoch_s = ends[1] - ends[0]
    ours = n / epoch_s
    setup_s = ends[0] - t - epoch_s       # the first epoch's time beyond the second's
    tm, topt, lossf = torch_mlp(sizes, "cuda")
    Xt, yt = torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda()

    def epoch(rows):
        perm = torch.randperm(rows, device="cuda")
        for i in range(0, rows, batch):
            idx = perm[i:i + batch]
            topt.zero_grad(set_to_none=True)
            lossf(tm(Xt[idx]), yt[idx]).backward()
            topt.step()

    epoch(batch * 4)
    torch.cuda.synchronize()
    t = time.perf_counter()
    epoch(n)
    torch.cuda.synchronize()      # as fit reads the epoch's loss from the device
    theirs = n / (time.perf_counter() - t)
    return ours, theirs, setup_s


def main(quick=False):
    from ..backends import cuda_status
    status = cuda_status()
    if not status.startswith("usable") or "simulator" in status:
        print(f"fastbp bench --device cuda needs a GPU; CUDA is {status}")
        return 1
    print(f"fastbp CUDA benchmark: {time.strftime('%Y-%m-%d')}, {status}, float32, TF32 off\n")
    print("| GEMM | fastbp TFLOP/s | cuBLAS TFLOP/s | fastbp / cuBLAS | max rel. diff |")
    print("|---|---:|---:|---:|---:|")
    for label, f, c, r, err in bench_gemm():
        print(f"| {label} | {f:.2f} | {c:.2f} | {r:.2f}x | {err:.1e} |")
    print("\n| training, samples/s | fastbp | PyTorch CUDA eager | ratio | fit set-up, ms |")
    print("|---|---:|---:|---:|---:|")
    for sizes, batch in TRAIN_SHAPES:
        ours, theirs, setup_s = bench_train(sizes, batch, steps=50 if quick else 200)
        print(f"| {'-'.join(map(str, sizes))} b{batch} | {ours:,.0f} | {theirs:,.0f} | "
              f"{ours / theirs:.2f}x | {setup_s * 1e3:.0f} |")
    print("\nSamples/s: one epoch with the data set on the device.  fit set-up: what fastbp.fit "
          "spends once per call beyond an epoch (checking the data set on the host, "
          "copying it to the device), left out of the rate as PyTorch's copy is.")
    return 0
