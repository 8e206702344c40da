"""What dropout and gradient clipping cost: 784-512-512-10 at batch 128 (ReLU, softmax
cross-entropy, SGD with momentum), fastbp against PyTorch with nn.Dropout.

    fastbp bench --toolkit [--quick]

Each framework runs in its own process (the worker below), after a warm-up that excludes
compilation.  Inside a process the variants (plain, dropout=0.2 after each hidden layer,
clip_grad_norm=1.0, both) take turns epoch by epoch, so that the machine's drift reaches
them alike; each figure is the best epoch's samples/s.  The whole run is repeated `rounds`
times (new processes) and every round's figures are reported, as the range over rounds.
"""
import json
import os
import sys
import time

import numpy as np

from . import in_own_process

SIZES, BATCH, P, CLIP = [784, 512, 512, 10], 128, 0.2, 1.0
VARIANTS = ("plain", "dropout", "clip", "dropout+clip")


def _data(n):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, SIZES[0])).astype(np.float32),
            rng.integers(0, SIZES[-1], n).astype(np.int64))


def fastbp_worker(n, epochs):
    import fastbp
    X, y = _data(n)
    runs = {}
    for v in VARIANTS:
        model = fastbp.MLP(SIZES, seed=0, dropout=P if "dropout" in v else 0.0)
        opt = fastbp.SGD(model, 0.01, momentum=0.9, clip_grad_norm=CLIP if "clip" in v else None)
        fastbp.fit(model, X[:BATCH * 4], y[:BATCH * 4], optimizer=opt, batch_size=BATCH,
                   epochs=1, verbose=0)                       # compile and warm up
        runs[v] = (model, opt)
    best = dict.fromkeys(VARIANTS, 0.0)
    for r in range(epochs):
        for v, (model, opt) in runs.items():
            h = fastbp.fit(model, X, y, optimizer=opt, batch_size=BATCH, epochs=1, seed=r,
                           verbose=0)
            best[v] = max(best[v], n / h["time"][0])
    return best


def torch_worker(n, epochs):
    import torch
    torch.set_num_threads(int(os.environ.get("FASTBP_BENCH_THREADS", os.cpu_count())))
    torch.manual_seed(0)
    X, y = _data(n)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    runs = {}
    for v in VARIANTS:
        layers = []
        for i in range(len(SIZES) - 1):
            layers.append(torch.nn.Linear(SIZES[i], SIZES[i + 1]))
            if i < len(SIZES) - 2:
                layers.append(torch.nn.ReLU())
                if "dropout" in v:
                    layers.append(torch.nn.Dropout(P))
        model = torch.nn.Sequential(*layers)
        runs[v] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), "clip" in v)
    lossf = torch.nn.CrossEntropyLoss()

    def epoch(model, opt, clip, seed, rows):
        perm = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
        for i in range(0, rows, BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            lossf(model(Xt[idx]), yt[idx]).backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()

    for model, opt, clip in runs.values():
        epoch(model, opt, clip, 0, BATCH * 4)
    best = dict.fromkeys(VARIANTS, 0.0)
    for r in range(epochs):
        for v, (model, opt, clip) in runs.items():
            t = time.perf_counter()
            epoch(model, opt, clip, r, n)
            best[v] = max(best[v], n / (time.perf_counter() - t))
    return best


def run(quick=False, rounds=3):
    n, epochs = (6_400, 3) if quick else (25_600, 5)
    results = []
    for _ in range(1 if quick else rounds):
        row = {}
        for kind in ("fastbp", "torch"):
            row[kind] = in_own_process("fastbp.bench.toolkit", kind, n, epochs)
        results.append(row)
    return results


def format_table(results, header):
    def span(values, fmt):
        lo, hi = min(values), max(values)
        return fmt.format(lo) if len(values) == 1 else f"{fmt.format(lo)}-{fmt.format(hi)}"
    out = [f"fastbp dropout / clipping benchmark: {header}", "",
           f"{'-'.join(map(str, SIZES))} b{BATCH}, ReLU, SGD momentum 0.9, dropout {P} after "
           f"each hidden layer, clip_grad_norm {CLIP}; samples/s, best epoch, range over "
           f"{len(results)} round(s) of one process per framework", "",
           "| variant | fastbp | PyTorch | fastbp / PyTorch | fastbp's cost over plain |",
           "|---|---:|---:|---:|---:|"]
    for v in VARIANTS:
        f = [r["fastbp"][v] for r in results]
        t = [r["torch"][v] for r in results]
        ratio = [r["fastbp"][v] / r["torch"][v] for r in results]
        cost = [r["fastbp"]["plain"] / r["fastbp"][v] - 1 for r in results]
        out.append(f"| {v} | {span(f, '{:,.0f}')} | {span(t, '{:,.0f}')} | "
                   f"{span(ratio, '{:.2f}x')} | "
                   f"{'-' if v == 'plain' else span([100 * c for c in cost], '{:+.1f}%')} |")
    return "\n".join(out)


def main(quick=False):
    from . import print_report
    return print_report(format_table, run(quick))


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "WORKER":
        worker = fastbp_worker if sys.argv[2] == "fastbp" else torch_worker
        print(json.dumps(worker(int(sys.argv[3]), int(sys.argv[4]))))
    else:
        sys.exit(main(quick="--quick" in sys.argv))
