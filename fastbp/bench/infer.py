"""Inference speed: fastbp's predict_proba against PyTorch's forward + softmax and ONNX
Runtime, each framework in its own process (their thread pools would disturb each other in
one), on the same weights.

    fastbp bench --inference [--quick]
    python -m fastbp.bench.infer WORKER FRAMEWORK SIZES   (one process's measurement)

Throughput: rows/s at batch 4096 (best of several rounds).  Latency: the median time of
one call with one row.  Every framework runs with the process's default thread count
(fastbp: Numba's, PyTorch: its intra-op threads, ONNX Runtime: intra_op_num_threads = the
core count).
"""
import json
import os
import statistics
import sys
import time

import numpy as np

from . import in_own_process

NETWORKS = ([784, 512, 512, 10], [20, 64, 64, 64, 64, 2], [100, 256, 256, 1],
            [3072, 1024, 512, 10])
BATCH = 4096
FRAMEWORKS = ("fastbp", "torch", "onnxruntime")


def _weights(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [((rng.standard_normal((b, a)) / np.sqrt(a)).astype(np.float32),
             (0.1 * rng.standard_normal(b)).astype(np.float32))
            for a, b in zip(sizes[:-1], sizes[1:])]


def _loss(sizes):
    return "binary_cross_entropy" if sizes[-1] == 1 else "cross_entropy"


def _predictor(framework, sizes):
    """f(X) -> probabilities, for one framework, on the shared weights."""
    layers = _weights(sizes)
    if framework == "fastbp":
        import fastbp
        m = fastbp.MLP(sizes, loss=_loss(sizes), seed=0)
        for l, (W, b) in enumerate(layers):
            m.weights[l][...] = W
            m.biases[l][...] = b
        return m.predict_proba
    if framework == "torch":
        import torch
        mods = []
        for l, (W, b) in enumerate(layers):
            lin = torch.nn.Linear(W.shape[1], W.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
            mods.append(lin)
            if l < len(layers) - 1:
                mods.append(torch.nn.ReLU())
        net = torch.nn.Sequential(*mods).eval()
        out = torch.sigmoid if sizes[-1] == 1 else (lambda z: torch.softmax(z, dim=1))

        def predict(X):
            with torch.no_grad():
                return out(net(torch.from_numpy(X))).numpy()
        return predict
    if framework == "onnxruntime":
        import onnxruntime as ort

        import fastbp
        m = fastbp.MLP(sizes, loss=_loss(sizes), seed=0)
        for l, (W, b) in enumerate(layers):
            m.weights[l][...] = W
            m.biases[l][...] = b
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count()
        s = ort.InferenceSession(fastbp.to_onnx(m).SerializeToString(), opts,
                                 providers=["CPUExecutionProvider"])
        return lambda X: s.run(None, {"X": X})[0]
    raise ValueError(f"unknown framework {framework!r}")


def worker(framework, sizes, quick=False):
    """Measure one framework in this process: {"rows_per_s", "latency_us"}."""
    f = _predictor(framework, sizes)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((BATCH, sizes[0])).astype(np.float32)
    x1 = X[:1].copy()
    f(X), f(x1)                                   # compile / warm up
    reps = max(2, int(2e9 / (2 * BATCH * sum(a * b for a, b in zip(sizes, sizes[1:])))))
    best = float("inf")
    for _ in range(3 if quick else 7):
        t = time.perf_counter()
        for _ in range(reps):
            f(X)
        best = min(best, (time.perf_counter() - t) / reps)
    lat = []
    for _ in range(5 if quick else 15):
        t = time.perf_counter()
        for _ in range(200):
            f(x1)
        lat.append((time.perf_counter() - t) / 200)
    return {"rows_per_s": BATCH / best, "latency_us": 1e6 * statistics.median(lat)}


def _available(framework):
    mod = {"fastbp": "numba", "torch": "torch", "onnxruntime": "onnxruntime"}[framework]
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


def run(quick=False, rounds=2):
    """{(network, framework): [result per round]}, each measurement a fresh process."""
    results = {}
    for r in range(rounds):
        for sizes in NETWORKS:
            for fw in FRAMEWORKS:
                if not _available(fw):
                    continue
                key = ("-".join(map(str, sizes)), fw)
                results.setdefault(key, []).append(in_own_process(
                    "fastbp.bench.infer", fw, ",".join(map(str, sizes)),
                    *(["--quick"] if quick else []), timeout=600))
    return results


def format_table(results, header):
    nets = list(dict.fromkeys(k[0] for k in results))

    def cell(net, fw, key):
        rs = results.get((net, fw))
        if not rs:
            return None
        return max(r[key] for r in rs) if key == "rows_per_s" else min(r[key] for r in rs)

    out = [f"fastbp inference benchmark: {header}", "",
           f"| network | rows/s at batch {BATCH}: fastbp / PyTorch / ORT | vs PyTorch | vs ORT "
           "| batch-1 latency (us): fastbp / PyTorch / ORT |",
           "|---|---|---:|---:|---|"]
    for net in nets:
        thr = [cell(net, fw, "rows_per_s") for fw in FRAMEWORKS]
        lat = [cell(net, fw, "latency_us") for fw in FRAMEWORKS]

        def ratio(i):
            return f"{thr[0] / thr[i]:.2f}x" if thr[0] and thr[i] else "n/a"
        out.append(f"| {net} | " + " / ".join(f"{v:,.0f}" if v else "n/a" for v in thr)
                   + f" | {ratio(1)} | {ratio(2)} | "
                   + " / ".join(f"{v:.0f}" if v else "n/a" for v in lat) + " |")
    rounds = max(len(v) for v in results.values())
    out += ["", f"Best of {rounds} processes per cell (throughput: highest; latency: lowest "
            "median)."]
    return "\n".join(out)


def main(quick=False):
    from . import print_report
    return print_report(format_table, run(quick), "float32")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "WORKER":
        sizes = [int(s) for s in sys.argv[3].split(",")]
        print(json.dumps(worker(sys.argv[2], sizes, quick="--quick" in sys.argv)))
    else:
        sys.exit(main(quick="--quick" in sys.argv))
