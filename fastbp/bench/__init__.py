"""Side-by-side speed of fastbp against NumPy/BLAS, PyTorch CPU and scikit-learn.

    fastbp bench [--quick]          (or: python benchmarks/compare.py)

Everything is measured in one run on the same data and shapes, and reported as ratios
against the peer measured in that run (machines drift; ratios within a run are what
count).  Each figure is the best of several repetitions after a warm-up that excludes
Numba's compilation.  PyTorch and scikit-learn are used when installed.

GEMM: fastbp.kernels.matmul against numpy.matmul (OpenBLAS) on the products of one
training step of the MLP shapes below, GFLOP/s.  Each timed round runs about 4 GFLOP of
calls (20-30 ms on the MLP shapes).  With 1 GFLOP rounds our GEMM's figure on the large
shapes was mostly its first calls after the pause between rounds, which run slower while
its worker thread gets going again (called from Python, in one process: dW 0.78x numpy
in rounds of 9 calls, 0.89x in rounds of 38, 1.05x in rounds of 155).
Training: samples/s of SGD (lr 0.01, momentum 0.9), ReLU, softmax cross-entropy, one
epoch with shuffling, for fastbp (own GEMM), fastbp with matmul="blas" (np.dot inside the
same compiled code), PyTorch (nn.Sequential of Linear/ReLU, CrossEntropyLoss, optim.SGD,
eager) and scikit-learn's MLPClassifier(solver="sgd") via partial_fit.
"""
import itertools
import os
import platform
import time

import numpy as np

from .peers import torch_mlp

TRAIN_SHAPES = [  # (sizes, batch)
    ([784, 512, 512, 10], 128),
    ([40, 100, 100, 10], 32),
    ([784, 2048, 2048, 10], 256),
]

GEMM_SHAPES = [  # (label, M, K, N, trans_a, trans_b)
    ("fwd 128x784 @ (512x784)^T", 128, 784, 512, False, True),
    ("dW (128x512)^T @ 128x784", 512, 128, 784, True, False),
    ("dX 128x512 @ 512x784", 128, 512, 784, False, False),
    ("1024^3", 1024, 1024, 1024, False, False),
    ("fwd 32x40 @ (100x40)^T", 32, 40, 100, False, True),
    ("fwd 32x100 @ (100x100)^T", 32, 100, 100, False, True),
    ("fwd 32x100 @ (10x100)^T", 32, 100, 10, False, True),
    ("dW (32x100)^T @ 32x100", 100, 32, 100, True, False),
]


def _settle():
    """Let the other library's thread pool go idle: OpenBLAS and OpenMP workers spin for a
    while after a call and would otherwise compete for the cores being measured."""
    time.sleep(0.25)


def _per_call(fn, reps):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def _best(fn, reps, rounds=5):
    _settle()
    fn()
    return min(_per_call(fn, reps) for _ in range(rounds))


def _best_pair(f, g, reps, rounds=7):
    """Best time per call of f and of g, their rounds interleaved so that the machine's
    drift during the measurement hits both alike."""
    f()
    g()
    best_f = best_g = float("inf")
    for _ in range(rounds):
        _settle()
        best_f = min(best_f, _per_call(f, reps))
        _settle()
        best_g = min(best_g, _per_call(g, reps))
    return best_f, best_g


def bench_gemm(quick=False):
    from .. import kernels as K
    rows = []
    rng = np.random.default_rng(0)
    for label, M, Kd, N, ta, tb in GEMM_SHAPES:
        a = rng.standard_normal((Kd, M) if ta else (M, Kd)).astype(np.float32)
        b = rng.standard_normal((N, Kd) if tb else (Kd, N)).astype(np.float32)
        out = np.empty((M, N), np.float32)
        opa, opb = (a.T if ta else a), (b.T if tb else b)
        flops = 2.0 * M * N * Kd
        reps = max(3, int((8e8 if quick else 4e9) / flops))
        t_f, t_n = _best_pair(lambda: K.matmul(a, b, out=out, trans_a=ta, trans_b=tb),
                              lambda: np.matmul(opa, opb, out=out), reps,
                              rounds=3 if quick else 7)
        rows.append((label, flops / t_f / 1e9, flops / t_n / 1e9, t_n / t_f))
    return rows


def _data(sizes, n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=n).astype(np.int64)
    return X, y


def _samples(sizes, batch, quick):
    # enough rows for an epoch of ~0.3-1 s in fastbp
    flops_per_sample = 6 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    target = (2e9 if quick else 8e9) / flops_per_sample
    return int(max(batch * 20, min(200_000, target)) // batch * batch)


def fastbp_epochs(sizes, batch, X, y, matmul="own"):
    """Set up and warm up fastbp on this shape; returns epoch(r) -> samples/s of one
    shuffled epoch (seed r)."""
    import fastbp
    model = fastbp.MLP(sizes, seed=0, matmul=matmul)
    opt = fastbp.SGD(model, lr=0.01, momentum=0.9)
    fastbp.fit(model, X[:batch * 4], y[:batch * 4], optimizer=opt, batch_size=batch,
               epochs=1, verbose=0)   # compile and warm up

    def epoch(r):
        h = fastbp.fit(model, X, y, optimizer=opt, batch_size=batch, epochs=1, seed=r,
                       verbose=0)
        return X.shape[0] / h["time"][0]
    return epoch


def torch_epochs(sizes, batch, X, y):
    """The same network, optimizer and loss in PyTorch (CPU); returns epoch(r) -> samples/s."""
    import torch
    torch.set_num_threads(int(os.environ.get("FASTBP_BENCH_THREADS", os.cpu_count())))
    torch.manual_seed(0)
    model, opt, lossf = torch_mlp(sizes)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n = X.shape[0]

    def run_epoch(seed, rows):
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(rows, generator=g)
        for i in range(0, rows, batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()

    run_epoch(0, batch * 4)  # warm up

    def epoch(r):
        t = time.perf_counter()
        run_epoch(r, n)
        return n / (time.perf_counter() - t)
    return epoch


def sklearn_epochs(sizes, batch, X, y):
    """scikit-learn's MLPClassifier (SGD, momentum) on a slice of the rows (it is slow);
    returns epoch(r) -> samples/s of one partial_fit over the slice."""
    import warnings

    from sklearn.neural_network import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), solver="sgd",
                        learning_rate_init=0.01, momentum=0.9, batch_size=batch,
                        random_state=0)
    n = min(X.shape[0], max(batch * 10, X.shape[0] // 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.partial_fit(X[:batch * 2], y[:batch * 2], classes=np.arange(sizes[-1]))

    def epoch(r):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            clf.partial_fit(X[:n], y[:n])
            return n / (time.perf_counter() - t)
    return epoch


def bench_training(sizes, batch, X, y, rounds=5):
    """Samples/s of every trainer on one shape, best of `rounds` epochs.  The trainers take
    turns epoch by epoch (fastbp, fastbp with BLAS, PyTorch, scikit-learn, then again), so that
    drift in the machine's speed during the run reaches all of them alike.  It does not make
    runs agree: on these VMs the ratios still moved by 25-40% from one run to the next."""
    trainers = {"fastbp": fastbp_epochs(sizes, batch, X, y),
                "blas": fastbp_epochs(sizes, batch, X, y, matmul="blas")}
    if _have("torch"):
        trainers["torch"] = torch_epochs(sizes, batch, X, y)
    if _have("sklearn"):
        trainers["sklearn"] = sklearn_epochs(sizes, batch, X, y)
    best = {name: 0.0 for name in trainers}
    for r in range(rounds):
        for name, epoch in trainers.items():
            _settle()
            best[name] = max(best[name], epoch(r))
    return best


def _have(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def in_own_process(module, *args, timeout=3600):
    """Run ``python -m module WORKER *args`` (a benchmark's worker, each measurement in a
    fresh process) and return the JSON its last line of output holds."""
    import json
    import subprocess
    import sys
    cmd = [sys.executable, "-m", module, "WORKER", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(map(str, args))}: "
                           f"{out.stderr.strip()[-800:]}")
    return json.loads(out.stdout.splitlines()[-1])


def print_report(format_table, results, *details):
    """Print format_table(results, header): the header is the date, the machine (machine())
    and the details given."""
    header = ", ".join([time.strftime("%Y-%m-%d"), machine(), *details])
    print(format_table(results, header), flush=True)
    return 0


def machine():
    import numba
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name")), platform.processor())
    except OSError:
        cpu = platform.processor()
    from ..kernels.cpu.microkernel import AVX512, MR, NR
    tile = f"GEMM tile {MR}x{NR} {'AVX-512' if AVX512 else 'AVX2'}"
    return (f"{cpu}, {os.cpu_count()} cores, numba {numba.__version__} "
            f"({numba.get_num_threads()} threads), {tile}")


def run(quick=False):
    """All measurements; returns (gemm_rows, train_rows, header)."""
    header = f"{time.strftime('%Y-%m-%d')}, {machine()}, float32"
    gemm_rows = bench_gemm(quick)
    train_rows = []
    for sizes, batch in TRAIN_SHAPES:
        X, y = _data(sizes, _samples(sizes, batch, quick))
        row = {"shape": "-".join(map(str, sizes)) + f" b{batch}", "sizes": sizes,
               "torch": None, "sklearn": None}
        row.update(bench_training(sizes, batch, X, y, rounds=3 if quick else 5))
        train_rows.append(row)
    return gemm_rows, train_rows, header


def product_flops_per_sample(sizes):
    """FLOP of one training sample's matrix products: forward (2 in*out a layer), weight
    gradient (the same) and data gradient (the same, for every layer but the first)."""
    layers = [a * b for a, b in itertools.pairwise(sizes)]
    return 4.0 * sum(layers) + 2.0 * sum(layers[1:])


def ceiling_rows(gemm_rows, train_rows):
    """(rate, rows): the best GEMM rate measured (GFLOP/s, fastbp or numpy, any shape) and,
    for each training shape with its sizes, (shape, ceiling samples/s, fraction of it that
    fastbp, PyTorch and scikit-learn reached).  The ceiling is the step's products alone
    at that rate: no trainer reaches it, so a target of r x a peer is out of reach on the
    machine wherever r x the peer's fraction is above 1."""
    rate = max((max(f, n) for _, f, n, _ in gemm_rows), default=0.0)
    rows = []
    for row in train_rows:
        if "sizes" not in row or rate <= 0:
            continue
        ceiling = rate * 1e9 / product_flops_per_sample(row["sizes"])
        rows.append((row["shape"], ceiling,
                     *[(row[k] / ceiling if row.get(k) else None)
                       for k in ("fastbp", "torch", "sklearn")]))
    return rate, rows


def format_tables(gemm_rows, train_rows, header):
    out = [f"fastbp benchmark: {header}", "",
           "| GEMM (float32) | fastbp GFLOP/s | numpy GFLOP/s | fastbp / numpy |",
           "|---|---:|---:|---:|"]
    for label, f, n, r in gemm_rows:
        out.append(f"| {label} | {f:.1f} | {n:.1f} | {r:.2f}x |")
    out += ["", "| training, samples/s | fastbp | fastbp matmul=blas | PyTorch | scikit-learn "
            "| vs PyTorch | vs scikit-learn | own / blas |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in train_rows:
        def ratio(peer):
            return f"{row['fastbp'] / row[peer]:.2f}x" if row.get(peer) else "n/a"

        def fmt(v):
            return f"{v:,.0f}" if v else "n/a"
        out.append(f"| {row['shape']} | {fmt(row['fastbp'])} | {fmt(row['blas'])} | "
                   f"{fmt(row['torch'])} | {fmt(row['sklearn'])} | {ratio('torch')} | "
                   f"{ratio('sklearn')} | {ratio('blas')} |")
    rate, rows = ceiling_rows(gemm_rows, train_rows)
    if rows:
        out += ["", f"Ceiling: the step's matrix products alone at the best GEMM rate above "
                f"({rate:.0f} GFLOP/s), as samples/s, and the share of it each trainer "
                "reached (a target of r x a peer is beyond this machine where r x the "
                "peer's share exceeds 1).", "",
                "| training | ceiling, samples/s | fastbp | PyTorch | scikit-learn |",
                "|---|---:|---:|---:|---:|"]
        for shape, ceiling, *shares in rows:
            cells = " | ".join(f"{v:.0%}" if v else "n/a" for v in shares)
            out.append(f"| {shape} | {ceiling:,.0f} | {cells} |")
    return "\n".join(out)


def main(quick=False, device="cpu"):
    if device == "cuda":
        from .cuda import main as cuda_main
        return cuda_main(quick=quick)
    print(format_tables(*run(quick)), flush=True)
    return 0
