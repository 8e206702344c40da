"""GPU lab for the CUDA GEMM: tile shapes and K splits against the automatic choice and
cuBLAS, on every product of the benchmark networks' training steps.

Run on a GPU machine (one call does everything):
    python3 tools/cuda_gemm_lab.py

Prints the kernels' registers / local memory / shared memory, a correctness check of each
configuration against a float64 reference on fresh random inputs (output poisoned with
NaN first), SASS instruction counts, and device time per product
(median of CUDA-event batches queued behind fastbp.bench.cuda.hold_gpu, so host launch
costs are excluded) next to torch.matmul with TF32 off.  The history of what was tried
is in fastbp/kernels/cuda/gemm.py's docstring.
"""
import collections
import importlib
import re
import sys
import time

import numpy as np
from numba import cuda

sys.path.insert(0, ".")

from fastbp.bench.cuda import _event_time
from fastbp.kernels import cuda as KC

G = importlib.import_module("fastbp.kernels.cuda.gemm")   # the package re-exports gemm()

CONFIGS = [None, (128, 1), (64, 1), (128, 2), (128, 4), (128, 8), (64, 2), (64, 4),
           (64, 8), (64, 16)]   # (tile, splits); None: choose_tiling

SHAPES = [  # label, M, K, N, trans_a, trans_b
    ("4096^3", 4096, 4096, 4096, False, False),
    ("b1024 fwd1 1024x784 @ (512x784)^T", 1024, 784, 512, False, True),
    ("b1024 fwd2 1024x512 @ (512x512)^T", 1024, 512, 512, False, True),
    ("b1024 fwd3 1024x512 @ (10x512)^T", 1024, 512, 10, False, True),
    ("b1024 dW3 (1024x10)^T @ 1024x512", 10, 1024, 512, True, False),
    ("b1024 dA2 1024x10 @ 10x512", 1024, 10, 512, False, False),
    ("b1024 dW2 (1024x512)^T @ 1024x512", 512, 1024, 512, True, False),
    ("b1024 dA1 1024x512 @ 512x512", 1024, 512, 512, False, False),
    ("b1024 dW1 (1024x512)^T @ 1024x784", 512, 1024, 784, True, False),
    ("b256 fwd1 256x784 @ (2048x784)^T", 256, 784, 2048, False, True),
    ("b256 fwd2 256x2048 @ (2048x2048)^T", 256, 2048, 2048, False, True),
    ("b256 dW2 (256x2048)^T @ 256x2048", 2048, 256, 2048, True, False),
    ("b256 dA1 256x2048 @ 2048x2048", 256, 2048, 2048, False, False),
    ("b256 dW1 (256x2048)^T @ 256x784", 2048, 256, 784, True, False),
    ("b128 fwd1 128x784 @ (512x784)^T", 128, 784, 512, False, True),
    ("b128 dW1 (128x512)^T @ 128x784", 512, 128, 784, True, False),
]


def name(cfg):
    return "auto" if cfg is None else f"{cfg[0]}/s{cfg[1]}"


def product(da, ta, db, tb, C, cfg):
    """The recorded launches of C = op(A) op(B) under configuration cfg."""
    e, n = cuda.device_array((0, 0), np.float32), cuda.device_array(0, np.float32)
    plan = []
    tile, splits = (None, None) if cfg is None else cfg
    KC.gemm(da, ta, db, tb, C, KC.EPI_NONE, n, 0, 0.0, e, e, e, plan=plan, tile=tile,
            splits=splits)
    return plan


def median_time(fn, reps, batches=5):
    return float(np.median([_event_time(fn, reps) for _ in range(batches)]))


def check(cfg, rng):
    worst = 0.0
    for (M, Kd, N) in [(1, 1, 1), (3, 17, 5), (67, 300, 65), (130, 33, 129), (257, 1000, 3)]:
        for ta in (False, True):
            for tb in (False, True):
                a = rng.standard_normal((Kd, M) if ta else (M, Kd)).astype(np.float32)
                b = rng.standard_normal((N, Kd) if tb else (Kd, N)).astype(np.float32)
                ref = ((a.T if ta else a).astype(np.float64)
                       @ (b.T if tb else b).astype(np.float64))
                C = cuda.to_device(np.full((M, N), np.nan, np.float32))
                KC.run_plan(product(cuda.to_device(a), ta, cuda.to_device(b), tb, C, cfg))
                out = C.copy_to_host()
                err = np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)
                if not np.isfinite(err):
                    return float("nan")
                worst = max(worst, err)
    return worst


def report_kernels():
    for label, k in [("gemm 128", G._gemm_128), ("gemm 64", G._gemm_64),
                     ("split-k sum", G._split_k_sum), ("column sum", G._column_sum_kernel)]:
        for ov in k.overloads.values():
            print(f"{label:12s} regs {ov.regs_per_thread} local {ov.local_mem_per_thread} B "
                  f"shared {ov.shared_mem_per_block} B")
            try:
                sass = ov.inspect_sass()
            except Exception as exc:  # noqa: BLE001 - nvdisasm missing
                print("  no SASS:", exc)
                continue
            ops = collections.Counter(m.group(1) for m in re.finditer(
                r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)", sass))
            keys = [o for o in ops if o.split(".")[0] in
                    ("FFMA", "DFMA", "DMUL", "DADD", "LDS", "LDG", "STS", "BAR", "LDL", "STL")]
            print("  SASS", sum(ops.values()), "instr;",
                  ", ".join(f"{o} {ops[o]}" for o in sorted(keys)))


def main():
    import warnings

    import torch
    warnings.filterwarnings("ignore", message=".*Grid size")
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = cuda.get_current_device()
    sm = G._sm_count()
    print("device:", dev.name, "cc", dev.compute_capability, "SMs", sm)
    rng = np.random.default_rng(1)
    t0 = time.time()
    for cfg in CONFIGS:
        print(f"check {name(cfg):8s} max rel. err {check(cfg, rng):.1e}")
    print(f"checks+compile {time.time() - t0:.1f} s")
    report_kernels()
    print("\n| shape | auto choice | cuBLAS | " + " | ".join(name(c) for c in CONFIGS)
          + " |  (TFLOP/s, median; best of ours in *)")
    print("|---|---|" + "---:|" * (len(CONFIGS) + 1))
    for label, M, Kd, N, ta, tb in SHAPES:
        a = rng.standard_normal((Kd, M) if ta else (M, Kd)).astype(np.float32)
        b = rng.standard_normal((N, Kd) if tb else (Kd, N)).astype(np.float32)
        da, db_ = cuda.to_device(a), cuda.to_device(b)
        C = cuda.device_array((M, N), np.float32)
        flops = 2.0 * M * N * Kd
        reps = int(min(400, max(5, 3e11 / flops)))
        ta_t, tb_t = torch.as_tensor(da, device="cuda"), torch.as_tensor(db_, device="cuda")
        opa, opb = (ta_t.T if ta else ta_t), (tb_t.T if tb else tb_t)
        out = torch.empty((M, N), device="cuda")
        tc = median_time(lambda: torch.matmul(opa, opb, out=out), reps)  # noqa: B023
        rates = []
        for cfg in CONFIGS:
            plan = product(da, ta, db_, tb, C, cfg)
            rates.append(flops / median_time(lambda: KC.run_plan(plan), reps)  # noqa: B023
                         / 1e12)
        best = max(rates[1:])
        cells = [f"{r:.1f}" + ("*" if r == best else "") for r in rates]
        print(f"| {label} | {name(G.choose_tiling(M, N, Kd, sm))} | {flops / tc / 1e12:.1f} | "
              + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
