"""GPU lab for the CUDA GEMM: candidate tilings against the shipped kernel and cuBLAS.

Run on a GPU machine (one call does everything):
    python3 tools/cuda_gemm_lab.py

For each candidate: registers / local memory / shared memory per thread, a correctness
check against a float64 reference on fresh random inputs (output poisoned with NaN
first), and CUDA-event timings (median of several batches) on the MLP shapes and 4096^3,
next to torch.matmul with TF32 off.  Candidates are built by make_kernel(BM, BN, BK, TM,
TN): a block of (BN/TN) x (BM/TM) threads computes a BM x BN tile of C, each thread a
TM x TN sub-tile with rows ty + (BM/TM) r and columns tx + (BN/TN) c (strided: the
shared-memory reads of a warp are broadcasts or consecutive words, the stores coalesced);
tiles of op(A) and op(B) are double-buffered in shared memory with the next K-slice
prefetched into registers while the current one is multiplied, so one barrier per slice.
"""
import sys
import time

import numpy as np
from numba import cuda, float32

sys.path.insert(0, ".")


def make_kernel(BM, BN, BK, TM, TN, vec=False, unroll=False, maxreg=None):
    TX = BN // TN
    TY = BM // TM
    # vec: each thread owns runs of 4 consecutive rows / columns (TM/4 runs BM/(TM/4)
    # apart), so that its shared-memory reads can be 16-byte loads
    RUN_A = BM // (TM // 4) if vec else 0
    RUN_B = BN // (TN // 4) if vec else 0
    NT = TX * TY
    LA = BM * BK // NT          # elements of the A tile each thread loads
    LB = BN * BK // NT
    SA_W = BM + 4               # padded rows: the transposed stores hit distinct banks
    SB_W = BN + 4

    @cuda.jit(device=True, inline=True)
    def slice_fma(sA, sB, buf, kk, tx, ty, acc, fa, fb):
        for r in range(TM):
            fa[r] = sA[buf, kk, (r // 4) * RUN_A + ty * 4 + (r % 4)]
        for c in range(TN):
            fb[c] = sB[buf, kk, (c // 4) * RUN_B + tx * 4 + (c % 4)]
        for r in range(TM):
            for c in range(TN):
                acc[r, c] += fa[r] * fb[c]

    jit = cuda.jit(max_registers=maxreg) if maxreg else cuda.jit

    @jit
    def kernel(A, trans_a, B, trans_b, C, M, N, K):
        sA = cuda.shared.array((2, BK, SA_W), float32)
        sB = cuda.shared.array((2, BK, SB_W), float32)
        acc = cuda.local.array((TM, TN), float32)
        ra = cuda.local.array(LA, float32)
        rb = cuda.local.array(LB, float32)
        fa = cuda.local.array(TM, float32)
        fb = cuda.local.array(TN, float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        row0 = cuda.blockIdx.y * BM
        col0 = cuda.blockIdx.x * BN
        for r in range(TM):
            for c in range(TN):
                acc[r, c] = 0.0
        # load K-slice 0 into registers, then shared buffer 0
        for e in range(LA):
            idx = tid + e * NT
            if trans_a:
                kk = idx // BM
                ii = idx - kk * BM
            else:
                ii = idx // BK
                kk = idx - ii * BK
            gi = row0 + ii
            v = float32(0.0)
            if gi < M and kk < K:
                v = A[kk, gi] if trans_a else A[gi, kk]
            sA[0, kk, ii] = v
        for e in range(LB):
            idx = tid + e * NT
            if trans_b:
                jj = idx // BK
                kk = idx - jj * BK
            else:
                kk = idx // BN
                jj = idx - kk * BN
            gj = col0 + jj
            w = float32(0.0)
            if gj < N and kk < K:
                w = B[gj, kk] if trans_b else B[kk, gj]
            sB[0, kk, jj] = w
        cuda.syncthreads()
        buf = 0
        for k0 in range(0, K, BK):
            nk = k0 + BK
            more = nk < K
            if more:
                for e in range(LA):
                    idx = tid + e * NT
                    if trans_a:
                        kk = idx // BM
                        ii = idx - kk * BM
                    else:
                        ii = idx // BK
                        kk = idx - ii * BK
                    gi = row0 + ii
                    gk = nk + kk
                    v = float32(0.0)
                    if gi < M and gk < K:
                        v = A[gk, gi] if trans_a else A[gi, gk]
                    ra[e] = v
                for e in range(LB):
                    idx = tid + e * NT
                    if trans_b:
                        jj = idx // BK
                        kk = idx - jj * BK
                    else:
                        kk = idx // BN
                        jj = idx - kk * BN
                    gj = col0 + jj
                    gk = nk + kk
                    w = float32(0.0)
                    if gj < N and gk < K:
                        w = B[gj, gk] if trans_b else B[gk, gj]
                    rb[e] = w
            if unroll:      # BK == 8, vec layout
                slice_fma(sA, sB, buf, 0, tx, ty, acc, fa, fb)
                slice_fma(sA, sB, buf, 1, tx, ty, acc, fa, fb)
                slice_fma(sA, sB, buf, 2, tx, ty, acc, fa, fb)
                slice_fma(sA, sB, buf, 3, tx, ty, acc, fa, fb)
                slice_fma(sA, sB, buf, 4, tx, ty, acc, fa, fb)
                slice_fma(sA, sB, buf, 5, tx, ty, acc, fa, fb)
                slice_fma(sA, sB, buf, 6, tx, ty, acc, fa, fb)
                slice_fma(sA, sB, buf, 7, tx, ty, acc, fa, fb)
            for kk in range(0 if unroll else BK):
                if vec:
                    for r in range(TM):
                        fa[r] = sA[buf, kk, (r // 4) * RUN_A + ty * 4 + (r % 4)]
                    for c in range(TN):
                        fb[c] = sB[buf, kk, (c // 4) * RUN_B + tx * 4 + (c % 4)]
                else:
                    for r in range(TM):
                        fa[r] = sA[buf, kk, ty + TY * r]
                    for c in range(TN):
                        fb[c] = sB[buf, kk, tx + TX * c]
                for r in range(TM):
                    for c in range(TN):
                        acc[r, c] += fa[r] * fb[c]
            if more:
                nb = 1 - buf
                for e in range(LA):
                    idx = tid + e * NT
                    if trans_a:
                        kk = idx // BM
                        ii = idx - kk * BM
                    else:
                        ii = idx // BK
                        kk = idx - ii * BK
                    sA[nb, kk, ii] = ra[e]
                for e in range(LB):
                    idx = tid + e * NT
                    if trans_b:
                        jj = idx // BK
                        kk = idx - jj * BK
                    else:
                        kk = idx // BN
                        jj = idx - kk * BN
                    sB[nb, kk, jj] = rb[e]
            cuda.syncthreads()
            buf = 1 - buf
        for r in range(TM):
            i = row0 + ((r // 4) * RUN_A + ty * 4 + (r % 4) if vec else ty + TY * r)
            for c in range(TN):
                j = col0 + ((c // 4) * RUN_B + tx * 4 + (c % 4) if vec else tx + TX * c)
                if i < M and j < N:
                    C[i, j] = acc[r, c]

    def launch(A, ta, B, tb, C):
        M, N = C.shape
        Kd = A.shape[0] if ta else A.shape[1]
        grid = ((N + BN - 1) // BN, (M + BM - 1) // BM)
        kernel[grid, (TX, TY)](A, ta, B, tb, C, M, N, Kd)

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
    fn()
    cuda.synchronize()
    times = []
    for _ in range(batches):
        s, t = cuda.event(), cuda.event()
        s.record()
        for _ in range(reps):
            fn()
        t.record()
        t.synchronize()
        times.append(cuda.event_elapsed_time(s, t) / 1e3 / reps)
    return float(np.median(times)), float(np.min(times)), float(np.max(times))


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
    for cfg in [(128, 128, 8, 8, 8), (64, 64, 8, 4, 4)]:
        cands["unroll %dx%d" % cfg[:2]] = make_kernel(*cfg, vec=True, unroll=True)
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
        tc = median_time(lambda: torch.matmul(opa, opb, out=out), reps)[0]
        line = [label, flops / tc / 1e12]
        for name, fn in cands.items():
            t = median_time(lambda: fn(da, ta, db_, tb, C), reps)
            line.append(flops / t[0] / 1e12)
        rows.append(line)
    names = list(cands)
    print("\n| shape | cuBLAS | " + " | ".join(names) + " |  (TFLOP/s, median)")
    for line in rows:
        print(f"| {line[0]} | {line[1]:.1f} | " + " | ".join(f"{v:.1f}" for v in line[2:])
              + " |")


if __name__ == "__main__":
    main()
