"""GPU lab: per-launch host cost of Numba kernels against PyTorch, and one training step.

    python3 tools/cuda_overhead.py      (on a GPU machine)
"""
import sys
import time

import numpy as np
from numba import cuda

sys.path.insert(0, ".")


@cuda.jit
def _touch(x):
    i = cuda.grid(1)
    if i < x.shape[0]:
        x[i] += 1.0


def per_call(fn, n=2000):
    fn()
    cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


def main():
    import torch

    import fastbp
    from fastbp.kernels import cuda as KC
    x = cuda.to_device(np.zeros(32, np.float32))
    print(f"1-arg kernel launch: {per_call(lambda: _touch[1, 32](x)):.1f} us")
    a = cuda.to_device(np.ones((32, 100), np.float32))
    w = cuda.to_device(np.ones((100, 100), np.float32))
    c = cuda.device_array((32, 100), np.float32)
    e = cuda.device_array((0, 0), np.float32)
    n = cuda.device_array(0, np.float32)
    print(f"fastbp gemm 32x100x100 launch: "
          f"{per_call(lambda: KC.gemm(a, False, w, True, c, 0, n, 0, 0.0, e, e, e)):.1f} us")
    plan = []
    KC.gemm(a, False, w, True, c, 0, n, 0, 0.0, e, e, e, plan=plan)
    print(f"fastbp gemm 32x100x100 prepared launch (fast path {plan[0]._fast is not None}): "
          f"{per_call(plan[0]):.1f} us")
    ta, tw = torch.ones((32, 100), device="cuda"), torch.ones((100, 100), device="cuda")
    tc = torch.empty((32, 100), device="cuda")
    print(f"torch.matmul 32x100x100: {per_call(lambda: torch.matmul(ta, tw.T, out=tc)):.1f} us")
    for sizes, batch in [([40, 100, 100, 10], 32), ([784, 512, 512, 10], 1024)]:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((batch * 100, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], size=batch * 100)
        model = fastbp.MLP(sizes, seed=0, device="cuda")
        opt = fastbp.SGD(model, lr=0.01, momentum=0.9)
        fastbp.fit(model, X, y, optimizer=opt, batch_size=batch, epochs=1, verbose=0)
        cuda.synchronize()
        t = time.perf_counter()
        fastbp.fit(model, X, y, optimizer=opt, batch_size=batch, epochs=1, verbose=0)
        cuda.synchronize()
        dt = (time.perf_counter() - t) / 100
        print(f"{'-'.join(map(str, sizes))} b{batch}: {dt * 1e6:.0f} us per step "
              f"({batch / dt:,.0f} samples/s)")


if __name__ == "__main__":
    main()
