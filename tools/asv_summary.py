"""A static summary of the asv history that needs no browser: one PNG per benchmark group
(an asv class or module), each benchmark a panel, each parameter combination a line over
the commits in date order.

    python tools/asv_summary.py [--results .asv/results] [--out asv_summary]

Reads asv's result files (format version 2: one JSON per commit and environment, with
"result_columns" and "results"; benchmarks.json for units).  Writes GROUP.png files and
prints their paths.
"""
import argparse
import glob
import itertools
import json
import math
import os
import sys


def load(results_dir):
    """({benchmark: [(date, commit, {param tuple: value})]}, units) from asv's files."""
    history, units = {}, {}
    meta_path = os.path.join(results_dir, "benchmarks.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            units = {k: v.get("unit", "") for k, v in json.load(f).items()
                     if isinstance(v, dict)}
    for path in sorted(glob.glob(os.path.join(results_dir, "*", "*.json"))):
        if os.path.basename(path) == "machine.json":
            continue
        with open(path) as f:
            run = json.load(f)
        if run.get("version") != 2 or "results" not in run:
            continue
        cols = run["result_columns"]
        for name, row in run["results"].items():
            entry = dict(zip(cols, row))
            values = entry.get("result")
            if values is None:
                continue
            params = entry.get("params") or []
            combos = list(itertools.product(*params)) if params else [()]
            if not isinstance(values, list):
                values = [values]
            points = {c: v for c, v in zip(combos, values)
                      if isinstance(v, (int, float)) and math.isfinite(v)}
            history.setdefault(name, []).append((run["date"], run["commit_hash"][:8], points))
    return history, units


def group_of(name):
    """asv's benchmark name without the method: module.Class, or the module."""
    return name.rsplit(".", 1)[0]


def draw(history, units, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    written = []
    groups = {}
    for name in sorted(history):
        groups.setdefault(group_of(name), []).append(name)
    for group, names in groups.items():
        fig, axes = plt.subplots(len(names), 1, figsize=(8, 3.2 * len(names)), squeeze=False)
        for ax, name in zip(axes[:, 0], names):
            runs = sorted(history[name])
            commits = [c for _, c, _ in runs]
            combos = sorted({k for _, _, pts in runs for k in pts})
            for combo in combos:
                xs = [i for i, (_, _, pts) in enumerate(runs) if combo in pts]
                ys = [runs[i][2][combo] for i in xs]
                ax.plot(xs, ys, marker="o", label=", ".join(map(str, combo)) or name)
            ax.set_xticks(range(len(commits)))
            ax.set_xticklabels(commits, rotation=45, ha="right", fontsize=7)
            unit = units.get(name, "")
            ax.set(title=name.rsplit(".", 1)[-1], ylabel=unit)
            if unit == "seconds":
                ax.set_yscale("log")
            if len(combos) > 1:
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.suptitle(group)
        fig.tight_layout()
        path = os.path.join(out_dir, group + ".png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=".asv/results", help="asv's results folder")
    p.add_argument("--out", default="asv_summary", help="folder for the PNG files")
    args = p.parse_args(argv)
    history, units = load(args.results)
    if not history:
        print(f"no asv results in {args.results!r} (run asv first)", file=sys.stderr)
        return 1
    for path in draw(history, units, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
