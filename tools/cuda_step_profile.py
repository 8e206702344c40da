"""Where a device="cuda" training step's time goes, against PyTorch CUDA eager.

    python3 tools/cuda_step_profile.py          (on a GPU machine)

For each benchmark network of fastbp bench --device cuda: every recorded launch of one
step (batch gather, forward, loss, backward, optimizer update, accuracy count) with its
device time (CUDA events around repeated launches queued behind
fastbp.bench.cuda.hold_gpu, so the host's launch cost is excluded); then one whole step's
device time, the host's time to issue it, and its wall time in fit; the same three for
PyTorch's eager step.  Wall time near device time: the GPU is the limit; near issue time:
the host is.
"""
import sys
import time

import numpy as np
from numba import cuda

sys.path.insert(0, ".")

import fastbp
from fastbp.bench.peers import torch_mlp
from fastbp.bench.cuda import TRAIN_SHAPES, _event_time, hold_gpu
from fastbp.kernels import cuda as KC


def device_and_issue_time(fn, reps):
    """(device seconds, host issue seconds) per call of fn."""
    fn()
    cuda.synchronize()
    start, stop = cuda.event(), cuda.event()
    hold_gpu(2.0 * reps + 20.0)                # 2 ms of host time per call at most
    start.record()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    issue = (time.perf_counter() - t) / reps
    stop.record()
    stop.synchronize()
    return cuda.event_elapsed_time(start, stop) / 1e3 / reps, issue


def profile(sizes, batch):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(0)
    n = batch * 100
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=n)
    model = fastbp.MLP(sizes, seed=0, device="cuda")
    opt = fastbp.SGD(model, lr=0.01, momentum=0.9)
    fastbp.fit(model, X, y, optimizer=opt, batch_size=batch, epochs=1, verbose=0)
    ends = []
    fastbp.fit(model, X, y, optimizer=opt, batch_size=batch, epochs=2, verbose=0,
               callbacks=[lambda epoch, logs: ends.append(time.perf_counter())])
    wall = (ends[1] - ends[0]) / (n // batch)        # the second epoch, per step

    # one step's launches, recorded as fit records them
    Xd, yd = cuda.to_device(X), cuda.to_device(y)
    idx = cuda.to_device(rng.permutation(n).astype(np.int64))
    xb = cuda.device_array((batch, sizes[0]), np.float32)
    yb = cuda.device_array(batch, np.int64)
    plan = []
    KC.gather_rows(Xd, idx, xb, plan=plan)
    KC.gather_rows(yd.reshape(n, 1), idx, yb.reshape(batch, 1), plan=plan)
    KC.run_plan(plan)                 # the batch must hold real labels before the step
    model.backend.step(xb, yb)
    plan += model.backend.workspace(batch).step_plan[2]
    opt.step()
    plan += opt._plan[1]
    model.backend.count_correct_device(yb, plan=plan)
    print(f"\n## {'-'.join(map(str, sizes))} batch {batch}: {len(plan)} launches per step")
    print("| launch | grid | block | device us |")
    print("|---|---|---|---:|")
    total = 0.0
    for p in plan:
        t_dev = _event_time(p, 100)
        total += t_dev
        print(f"| {p.kernel.py_func.__name__} | {p.grid} | {p.block} | {t_dev * 1e6:.1f} |")

    def step():
        KC.run_plan(plan)
    dev_t, issue_t = device_and_issue_time(step, 20)
    print(f"fastbp step: launches summed {total * 1e6:.0f} us, device {dev_t * 1e6:.0f} us, "
          f"host issue {issue_t * 1e6:.0f} us, wall in fit {wall * 1e6:.0f} us")

    tm, topt, lossf = torch_mlp(sizes, "cuda")
    Xt, yt = torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda()
    perm = torch.randperm(n, device="cuda")
    pos = [0]

    def tstep():
        i = pos[0]
        pos[0] = (i + batch) % n
        ix = perm[i:i + batch]
        topt.zero_grad(set_to_none=True)
        lossf(tm(Xt[ix]), yt[ix]).backward()
        topt.step()
    for _ in range(5):
        tstep()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(40):
        tstep()
    torch.cuda.synchronize()
    twall = (time.perf_counter() - t) / 40
    tdev, tissue = device_and_issue_time(tstep, 20)
    print(f"PyTorch step: device {tdev * 1e6:.0f} us, host issue {tissue * 1e6:.0f} us, "
          f"wall {twall * 1e6:.0f} us; wall ratio PyTorch / fastbp {twall / wall:.2f}")


def main():
    print("device:", cuda.get_current_device().name)
    for sizes, batch in TRAIN_SHAPES:
        profile(sizes, batch)


if __name__ == "__main__":
    main()
