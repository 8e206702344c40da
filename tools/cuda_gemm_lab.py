"""GPU lab for the CUDA GEMM: candidate tilings against the shipped kernel and cuBLAS.

Run on a GPU machine (one call does everything):
    python3 tools/cuda_gemm_lab.py

For each candidate: registers / local memory / shared memory per thread, a correctness
check against a float64 reference on fresh random inputs (output poisoned with NaN
first), SASS instruction counts (written to $OUT), and CUDA-event timings (median of
several batches) on the MLP shapes and 4096^3, next to torch.matmul with TF32 off.
Candidates are fastbp's kernel template (fastbp/kernels/cuda/gemm.py) at other tile
shapes; the history of what was tried (strided thread layout, no double buffering, K
loop not unrolled, a register cap) is in that module's docstring.
"""
import sys
import time

import numpy as np
from numba import cuda

sys.path.insert(0, ".")


def make_kernel(BM, BN):
    """A launcher for fastbp's GEMM kernel template at tile BM x BN (64 or 128 each)."""
    from fastbp.kernels.cuda.gemm import THREADS, _make_kernel
    kernel = _make_kernel(BM, BN)
    e = cuda.device_array((0, 0), np.float32)
    n = cuda.device_array(0, np.float32)

    def launch(A, ta, B, tb, C):
        M, N = C.shape
        Kd = A.shape[0] if ta else A.shape[1]
        grid = ((N + BN - 1) // BN, (M + BM - 1) // BM)
        kernel[grid, (THREADS, THREADS)](A, ta, B, tb, C, M, N, Kd, 0, n, 0, 0.0, e, e, e)

    launch.kernel = kernel
    return launch


def shipped():
    from fastbp.kernels import cuda as KC
    e = cuda.device_array((0, 0), np.float32)
    n = cuda.device_array(0, np.float32)

    def launch(A, ta, B, tb, C):
        KC.gemm(A, ta, B, tb, C, 0, n, 0, 0.0, e, e, e)
    from fastbp.kernels.cuda.gemm import _gemm_128
    launch.kernel = _gemm_128
    return launch


SHAPES = [  # label, M, K, N, trans_a, trans_b
    ("4096^3", 4096, 4096, 4096, False, False),
    ("fwd 1024x784 @ (512x784)^T", 1024, 784, 512, False, True),
    ("dW (1024x512)^T @ 1024x784", 512, 1024, 784, True, False),
    ("dX 1024x512 @ 512x784", 1024, 512, 784, False, False),
    ("fwd 256x2048 @ (2048x2048)^T", 256, 2048, 2048, False, True),
    ("fwd 8192x784 @ (512x784)^T", 8192, 784, 512, False, True),
]


def median_time(fn, reps, batches=5):
    """Median over batches of fastbp bench's CUDA-event timing (seconds per call)."""
    from fastbp.bench_cuda import _event_time
    return float(np.median([_event_time(fn, reps) for _ in range(batches)]))


def check(launch, rng):
    worst = 0.0
    for (M, Kd, N) in [(1, 1, 1), (3, 17, 5), (67, 20, 65), (130, 33, 129), (257, 1000, 3)]:
        for ta in (False, True):
            for tb in (False, True):
                a = rng.standard_normal((Kd, M) if ta else (M, Kd)).astype(np.float32)
                b = rng.standard_normal((N, Kd) if tb else (Kd, N)).astype(np.float32)
                ref = ((a.T if ta else a).astype(np.float64)
                       @ (b.T if tb else b).astype(np.float64))
                C = cuda.to_device(np.full((M, N), np.nan, np.float32))
                launch(cuda.to_device(a), ta, cuda.to_device(b), tb, C)
                out = C.copy_to_host()
                err = np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)
                if not np.isfinite(err):
                    return float("nan")
                worst = max(worst, err)
    return worst


def main():
    import warnings

    import torch
    warnings.filterwarnings("ignore", message=".*Grid size")
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = cuda.get_current_device()
    print("device:", dev.name, "cc", dev.compute_capability)
    cands = {"fastbp.gemm": shipped()}
    for bm, bn in [(128, 128), (64, 64), (128, 64), (64, 128)]:
        cands[f"tile {bm}x{bn}"] = make_kernel(bm, bn)
    rng = np.random.default_rng(1)
    t0 = time.time()
    errs = {name: check(fn, rng) for name, fn in cands.items()}
    print(f"checks+compile {time.time() - t0:.1f} s")
    for name, fn in cands.items():
        k = fn.kernel
        if not k.overloads:
            continue
        ov = list(k.overloads.values())[0]
        print(f"{name:22s} err {errs[name]:.1e} regs {ov.regs_per_thread} "
              f"local {ov.local_mem_per_thread} B shared {ov.shared_mem_per_block} B")
    import collections
    import os
    import re
    for name, fn in cands.items():
        if not fn.kernel.overloads:
            continue
        try:
            sass = list(fn.kernel.inspect_sass().values())[0]
        except Exception as exc:  # nvdisasm missing
            print("no SASS:", exc)
            break
        ops = collections.Counter(m.group(1) for m in
                                  re.finditer(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)",
                                              sass))
        top = ", ".join(f"{k} {v}" for k, v in ops.most_common(8))
        print(f"SASS {name}: {sum(ops.values())} instr; {top}")
        with open(os.path.join(os.environ.get("OUT", "/tmp"),
                               name.replace(" ", "_") + ".sass"), "w") as f:
            f.write(sass)
    rows = []
    for label, M, Kd, N, ta, tb in SHAPES:
        a = rng.standard_normal((Kd, M) if ta else (M, Kd)).astype(np.float32)
        b = rng.standard_normal((N, Kd) if tb else (Kd, N)).astype(np.float32)
        da, db_ = cuda.to_device(a), cuda.to_device(b)
        C = cuda.device_array((M, N), np.float32)
        flops = 2.0 * M * N * Kd
        reps = max(5, int(3e11 / flops))
        ta_t, tb_t = torch.as_tensor(da, device="cuda"), torch.as_tensor(db_, device="cuda")
        opa, opb = (ta_t.T if ta else ta_t), (tb_t.T if tb else tb_t)
        out = torch.empty((M, N), device="cuda")
        tc = median_time(lambda: torch.matmul(opa, opb, out=out), reps)
        line = [label, flops / tc / 1e12]
        for name, fn in cands.items():
            t = median_time(lambda: fn(da, ta, db_, tb, C), reps)
            line.append(flops / t / 1e12)
        rows.append(line)
    names = list(cands)
    print("\n| shape | cuBLAS | " + " | ".join(names) + " |  (TFLOP/s, median)")
    for line in rows:
        print(f"| {line[0]} | {line[1]:.1f} | " + " | ".join(f"{v:.1f}" for v in line[2:])
              + " |")


if __name__ == "__main__":
    main()
