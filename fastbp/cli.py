"""The fastbp command line.

    fastbp train                 train on the bundled digits data (the main job)
    fastbp train --data F.csv    train on your own data (.npz with X, y; or .csv)
    fastbp predict MODEL FILE    write predictions for the rows of FILE
    fastbp export MODEL OUT.onnx the model as ONNX, its preprocessing included
    fastbp info                  versions, threading, CUDA
    fastbp bench                 the side-by-side speed comparison (benchmarks/compare.py)
    fastbp bench --inference     predict_proba against PyTorch and ONNX Runtime
    fastbp bench --sparse        training on sparse input against scikit-learn
    fastbp bench --toolkit       dropout and gradient clipping against PyTorch
"""
import argparse
import io
import json
import os
import sys
import time
import warnings

import numpy as np

from .kernels import codes


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"fastbp: error: {message} (see 'fastbp {self.prog.split()[-1]} --help')\n"
                  if " " in self.prog else f"fastbp: error: {message} (see 'fastbp --help')\n")


def _hidden(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 128,64, got {text!r}")
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden widths must be positive, got {text!r}")
    return sizes


def _activations(text):
    """One activation name, or comma-separated names, one per hidden layer."""
    names = [s.strip() for s in text.split(",")]
    for n in names:
        if n not in codes.ACTIVATION_BY_NAME:
            raise argparse.ArgumentTypeError(
                f"unknown activation {n!r}; expected one of {sorted(codes.ACTIVATION_BY_NAME)}")
    return names[0] if len(names) == 1 else names


def _dropout(text):
    """A dropout rate, or comma-separated rates, one per hidden layer."""
    try:
        rates = [float(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate like 0.2 or rates like 0.2,0.1, "
                                         f"got {text!r}") from None
    if any(not 0.0 <= r < 1.0 for r in rates):
        raise argparse.ArgumentTypeError(f"dropout rates must be in [0, 1), got {text!r}")
    return rates[0] if len(rates) == 1 else rates


def _names(allowed):
    def parse(text):
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in allowed]
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                f"expected names from {', '.join(allowed)}, got {text!r}")
        return ",".join(dict.fromkeys(names))
    return parse


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        if v <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return v
    return parse


def _non_negative_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: ...)' to an option's help unless its text already says the default
    or the option is a flag (off unless given)."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    from . import __version__
    fmt = _DefaultsHelp
    p = _Parser(prog="fastbp", description="Train multi-layer perceptrons with fastbp.")
    p.add_argument("--version", action="version", version=f"fastbp {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser("train", help="train an MLP (digits by default)", prog="fastbp train",
                       formatter_class=fmt)
    t.add_argument("--data", help=".npz (arrays X, y) or .csv file (a header row names the "
                                  "columns; text columns are one-hot encoded, blank or NA "
                                  "cells imputed); default: scikit-learn's digits")
    t.add_argument("--target", help="CSV column holding the target (default: the last)")
    t.add_argument("--task", choices=["auto", "classification", "regression"], default="auto",
                   help="auto: text or few distinct integer labels are classes, other numbers "
                        "a regression target (standardised for training)")
    t.add_argument("--hidden", type=_hidden, default=[128, 64], help="hidden widths, e.g. 128,64")
    t.add_argument("--activation", type=_activations, default="relu",
                   help="hidden activation, or one per hidden layer (e.g. relu,tanh): "
                        + ", ".join(codes.ACTIVATION_NAMES))
    t.add_argument("--optimizer", choices=codes.OPTIMIZERS, default="adam", help="optimizer")
    t.add_argument("--lr", type=_positive(float), default=argparse.SUPPRESS,
                   help="learning rate (default: 1e-3 for adam/adamw, 0.05 for sgd)")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                   help="weight decay (decoupled for adamw; default: 0)")
    t.add_argument("--dropout", type=_dropout, default=0.0,
                   help="dropout rate after each hidden layer, or one per layer (e.g. 0.2,0.1)")
    t.add_argument("--clip-grad-norm", type=_positive(float), default=None,
                   help="clip each step's gradient to this global L2 norm (default: none)")
    t.add_argument("--lr-schedule", choices=["constant", "step", "cosine", "invscaling",
                                             "plateau"], default="constant",
                   help="learning-rate schedule")
    t.add_argument("--epochs", type=_positive(int), default=40, help="passes over the data")
    t.add_argument("--early-stopping", action="store_true",
                   help="stop when the validation loss has not improved for --patience "
                        "epochs, keeping the best weights")
    t.add_argument("--patience", type=_positive(int), default=10,
                   help="epochs without improvement before --early-stopping stops")
    t.add_argument("--batch-size", type=_positive(int), default=32, help="rows per step")
    t.add_argument("--test-size", type=float, default=0.2, help="held-out test fraction")
    t.add_argument("--seed", type=int, default=0,
                   help="seeds the split, the initial weights and the shuffling")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="the network's floating-point type")
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: train on an NVIDIA GPU (float32; needs numba-cuda)")
    t.add_argument("--out", default="fastbp_out", help="output folder (created)")
    t.add_argument("--checkpoint", action="store_true",
                   help="write a checkpoint to OUT/checkpoint after every epoch")
    t.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint where there is one (implies "
                        "--checkpoint; same data and options)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI ranks (run under mpiexec)")
    pr = sub.add_parser("predict", help="predict with a saved model", prog="fastbp predict",
                        formatter_class=fmt)
    pr.add_argument("model", help="model file written by 'fastbp train' (model.npz)")
    pr.add_argument("file", help=".npz (array X) or .csv of feature rows; with a header row "
                                 "the columns are matched by name, in any order")
    pr.add_argument("--output", "-o", help="CSV to write (default: standard output)")
    pr.add_argument("--proba", action="store_true", help="write class probabilities")
    ex = sub.add_parser("export", help="write a saved model as ONNX", prog="fastbp export",
                        formatter_class=fmt)
    ex.add_argument("model", help="model file written by 'fastbp train' or MLP.save")
    ex.add_argument("output", help="the .onnx file to write")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or later)")
    sub.add_parser("info", help="versions, threading layer, CUDA", prog="fastbp info")
    w = sub.add_parser("warmup", help="compile ahead of use (a Docker image or CI cache)",
                       prog="fastbp warmup", formatter_class=fmt,
                       description="Fill Numba's on-disk cache with the training and "
                                   "prediction code of each combination of the lists, so that "
                                   "a new process's first run does not compile.")
    w.add_argument("--activation", type=_names(tuple(codes.ACTIVATION_BY_NAME)), default="relu",
                   help="hidden activations, comma-separated")
    w.add_argument("--dtype", type=_names(("float32", "float64")), default="float32",
                   help="dtypes, comma-separated")
    w.add_argument("--loss", type=_names(codes.LOSSES), default="cross_entropy",
                   help="losses, comma-separated")
    w.add_argument("--optimizer", type=_names(codes.OPTIMIZERS), default="adam",
                   help="optimizers, comma-separated")
    b = sub.add_parser("bench", help="compare speed with NumPy, PyTorch, scikit-learn",
                       prog="fastbp bench", formatter_class=fmt)
    b.add_argument("--quick", action="store_true", help="fewer repetitions")
    b.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run")
    b.add_argument("--inference", action="store_true",
                   help="predict_proba against PyTorch and ONNX Runtime, each in its own "
                        "process (fastbp.bench.infer)")
    b.add_argument("--toolkit", action="store_true",
                   help="dropout and gradient clipping on 784-512-512-10 against PyTorch, each "
                        "in its own process (fastbp.bench.toolkit)")
    b.add_argument("--sparse", action="store_true",
                   help="training on a sparse TF-IDF-like matrix against scikit-learn, each "
                        "in its own process (fastbp.bench.sparse)")
    return p


# ---------------------------------------------------------------------------- train
def _plot(history, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_write
    epochs = np.arange(1, history.epochs + 1)
    has_acc = history["accuracy"] and history["accuracy"][0] is not None
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5.5, 4))
    axes = np.atleast_1d(axes)
    axes[0].plot(epochs, history["loss"], label="train")
    if history["val_loss"] and history["val_loss"][0] is not None:
        axes[0].plot(epochs, history["val_loss"], label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss", yscale="log")
    axes[0].legend()
    if has_acc:
        axes[1].plot(epochs, history["accuracy"], label="train")
        if history["val_accuracy"] and history["val_accuracy"][0] is not None:
            axes[1].plot(epochs, history["val_accuracy"], label="validation")
        axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
        axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def _prepare_out(path):
    """Create the output folder (or accept an existing one) and check that it is writable,
    before any training: a bad --out costs nothing."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out {path}: exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        import tempfile
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ValueError(f"--out {path}: cannot write there ({exc.strerror or exc})") from None


def _digits_table():
    from .data import Table, load_digits
    X, y = load_digits()
    return Table("digits", [f"x{j}" for j in range(X.shape[1])] + ["y"],
                 [X[:, j] for j in range(X.shape[1])] + [y], list(range(1, len(y) + 1)), None)


def _note(text):
    print(f"fastbp: note: {text}", file=sys.stderr)


def cmd_train(args):
    import fastbp
    from .data import Preprocessing, read_table
    from .io import atomic_write

    if args.device == "cuda":
        if args.dtype != "float32":
            raise ValueError("--device cuda trains in float32; leave out --dtype float64")
        if args.distributed:
            raise ValueError("--distributed trains on the CPU; leave out --device cuda")
        if args.checkpoint or args.resume:
            raise ValueError("--checkpoint and --resume are CPU-only; leave out --device cuda")
        from .backends import cuda_status
        status = cuda_status()
        if not status.startswith("usable"):
            raise ValueError(f"--device cuda: CUDA is {status}")
        # a small network's kernels are small grids on purpose: no warning per launch
        warnings.filterwarnings("ignore", message=".*will likely result in GPU under-utiliz")
    if not 0 < args.test_size < 1:
        raise ValueError(f"--test-size must be between 0 and 1, got {args.test_size}")
    comm = None
    if args.distributed:
        from .distributed import world
        comm = world()
    rank0 = comm is None or comm.Get_rank() == 0
    say = print if rank0 else (lambda *a, **k: None)
    if rank0:
        _prepare_out(args.out)

    if args.data:
        table = read_table(args.data)
        name = os.path.basename(args.data)
        target = args.target or table.names[-1]
        if target not in table.names:
            raise ValueError(f"no column {target!r} in {args.data!r}; columns: {table.names}")
    else:
        if args.target:
            raise ValueError("--target applies only with --data")
        table, name, target = _digits_table(), "digits", "y"
    for text in table.notes:
        say(f"note: {text}")
    n = table.n_rows
    if n < 5:
        raise ValueError(f"{name} has {n} rows; at least 5 are needed to train and test")
    task, why = Preprocessing.choose_task(table, target, args.task)
    if args.data:
        say(f"task: {task} ({why})")
    from sklearn.model_selection import train_test_split
    strat = None
    if task == "classification":
        from .data import check_labels
        _, codes_all = np.unique(check_labels(table, target), return_inverse=True)
        counts = np.bincount(codes_all)
        if len(counts) < 2:
            raise ValueError(f"{name} has a single class; need at least 2")
        if len(counts) > max(100, n // 2):
            raise ValueError(f"{name} has {len(counts)} distinct targets for {n} rows; "
                             "use --task regression for a continuous target")
        strat = codes_all if counts.min() >= 2 else None
    try:
        train, test = train_test_split(np.arange(n), test_size=args.test_size,
                                       random_state=args.seed, stratify=strat)
    except ValueError:      # too few rows to hold every class on both sides
        train, test = train_test_split(np.arange(n), test_size=args.test_size,
                                       random_state=args.seed)
    prep, notes = Preprocessing.fit(table, target, task, train)
    for text in notes:
        say(f"note: {text}")
    X, _ = prep.transform(table)
    Y = prep.targets(table)
    X_tr, X_te, y_tr, y_te = X[train], X[test], Y[train], Y[test]
    n_out = len(prep.classes) if task == "classification" else 1
    loss = "cross_entropy" if task == "classification" else "mse"

    sizes = [X.shape[1]] + args.hidden + [n_out]
    model = fastbp.MLP(sizes, activation=args.activation, loss=loss, dtype=args.dtype,
                       seed=args.seed, device=args.device, dropout=args.dropout)
    lr = getattr(args, "lr", None) or (0.05 if args.optimizer == "sgd" else 1e-3)
    if args.optimizer == "sgd":
        opt = fastbp.SGD(model, lr=lr, momentum=args.momentum, weight_decay=args.weight_decay,
                         clip_grad_norm=args.clip_grad_norm)
    else:
        opt = (fastbp.AdamW if args.optimizer == "adamw" else fastbp.Adam)(
            model, lr=lr, weight_decay=args.weight_decay, clip_grad_norm=args.clip_grad_norm)
    from .checkpoint import path_in
    checkpoint_dir = (os.path.join(args.out, "checkpoint") if args.checkpoint or args.resume
                      else None)
    say(f"fastbp {fastbp.__version__}: training MLP {sizes} ({args.activation}, {loss}, "
        f"{args.optimizer} lr={lr:g}, batch {args.batch_size}, {args.dtype}"
        + (", on the GPU" if args.device == "cuda" else "") + f") on {name}: "
        f"{len(X_tr)} train / {len(X_te)} test rows"
        + (f", {comm.Get_size()} MPI ranks" if comm is not None else ""))
    from .runtime import kernels_cached
    if args.device == "cuda" and not kernels_cached("cuda"):
        say("compiling fastbp's CUDA kernels (once: about 10 s); they are cached for every "
            "run after it")
    elif args.device == "cpu" and not kernels_cached():
        say("compiling fastbp's kernels for this machine (once: 10-30 s on 2 cores, more for "
            "other activations, losses or dtypes); they are cached for every run after it")
    if args.resume and os.path.exists(path_in(checkpoint_dir)):
        say(f"resuming from {path_in(checkpoint_dir)}")
    t0 = time.perf_counter()
    hist = fastbp.fit(model, X_tr, y_tr, optimizer=opt, batch_size=args.batch_size,
                      epochs=args.epochs, seed=args.seed, validation_split=0.1,
                      early_stopping=args.early_stopping, patience=args.patience,
                      lr_schedule=args.lr_schedule,
                      verbose=0 if (args.quiet or not rank0) else 1, comm=comm,
                      checkpoint_dir=checkpoint_dir, resume=args.resume,
                      log_csv=os.path.join(args.out, "history.csv"))
    train_time = time.perf_counter() - t0
    if hist.interrupted:
        say("interrupted: keeping the model as trained so far"
            + (" (--resume continues from the checkpoint)" if checkpoint_dir else ""))
    if hist.stopped_early:
        say(f"early stopping after epoch {hist.epochs}: keeping epoch "
            f"{hist.best_epoch + 1}'s weights (best validation loss)")
    summary = {"data": name, "task": task, "target": target, "sizes": sizes,
               "activation": args.activation, "dropout": args.dropout,
               "optimizer": args.optimizer, "lr": lr, "weight_decay": args.weight_decay,
               "lr_schedule": args.lr_schedule, "batch_size": args.batch_size,
               "epochs_run": hist.epochs, "train_seconds": round(train_time, 3),
               "samples_per_s": round(float(np.median(hist["samples_per_s"])), 1)
               if hist.epochs else None}
    if task == "classification":
        test_loss, test_acc = model.evaluate(X_te, y_te)
        summary.update(test_accuracy=round(test_acc, 4), test_loss=round(test_loss, 4))
        result = f"test accuracy {test_acc:.4f} (loss {test_loss:.4f})"
    else:
        pred = prep.decode(model.predict(X_te)[:, 0])
        truth = prep.decode(y_te[:, 0])
        mse = float(np.mean((pred - truth) ** 2))
        r2 = 1 - mse / float(np.var(truth)) if np.var(truth) > 0 else float("nan")
        summary.update(test_mse=float(f"{mse:.6g}"), test_r2=round(r2, 4))
        result = f"test R^2 {r2:.4f} (MSE {mse:.4g})"
    if rank0:
        model_path = os.path.join(args.out, "model.npz")
        png_path = os.path.join(args.out, "curves.png")
        model.save(model_path, preprocessing=np.array(json.dumps(prep.to_json())))
        _plot(hist, png_path, f"fastbp MLP {sizes} on {name}: {result.split(' (')[0]}")
        with atomic_write(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    say(f"{result}; {hist.epochs} epochs in {train_time:.2f} s, "
        f"{summary['samples_per_s']} samples/s (median epoch)")
    if rank0:
        say(f"wrote {model_path}, {png_path}, {os.path.join(args.out, 'history.csv')} and "
            f"{os.path.join(args.out, 'summary.json')}")
    return 0


# ---------------------------------------------------------------------------- predict
def cmd_predict(args):
    from .data import load_model_file, read_table
    from .io import atomic_write
    if args.output:
        folder = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(folder):
            raise ValueError(f"--output {args.output}: folder {folder!r} does not exist")
    model, prep = load_model_file(args.model)
    table = read_table(args.file, known_names=[f["name"] for f in prep.features])
    X, notes = prep.transform(table)
    for text in table.notes + notes:
        _note(text)
    if args.proba:
        P = model.predict_proba(X)
        names = prep.classes if prep.classes is not None else range(P.shape[1])
        lines = [",".join(f"p_{c}" for c in names)] + [",".join(map(str, row)) for row in P]
    else:
        out = model.predict(X)
        if model.loss == "cross_entropy":
            lines = ["prediction"] + [str(v) for v in prep.decode(out)]
        else:
            values = prep.decode(out) if prep.task == "regression" else out
            digits = 8 if model.dtype == np.float32 else 17   # what the network's type holds
            lines = ["prediction"] + [",".join(f"{v:.{digits}g}" for v in np.atleast_1d(r))
                                      for r in values]
    text = "\n".join(lines) + "\n"
    if args.output:
        with atomic_write(args.output, "w") as f:
            f.write(text)
        print(f"wrote {len(lines) - 1} predictions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


# ---------------------------------------------------------------------------- export
def cmd_export(args):
    from .export import to_onnx
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise ValueError(f"{args.output}: folder {folder!r} does not exist")
    proto = to_onnx(args.model, args.output, opset=args.opset)
    meta = {p.key: p.value for p in proto.metadata_props}
    print(f"wrote {args.output} (opset {args.opset}; input X: {meta.get('inputs', '')}; "
          f"outputs {', '.join(o.name for o in proto.graph.output)})", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- info
def cmd_info(args):
    import platform

    import numba

    import fastbp
    from .runtime import threading_summary
    print(f"fastbp {fastbp.__version__}")
    print(f"python {platform.python_version()} ({platform.machine()})")
    print(f"numpy {np.__version__}, numba {numba.__version__}")
    print(threading_summary())
    from .backends import cuda_status
    print(f"cuda: {cuda_status()}")
    return 0


def cmd_warmup(args):
    from .warmup import combinations, warmup
    combos = combinations(*(v.split(",") for v in (args.activation, args.dtype, args.loss,
                                                    args.optimizer)))
    t = time.perf_counter()
    warmup(combos)
    print(f"{len(combos)} combination(s) in {time.perf_counter() - t:.1f} s; Numba's cache: "
          f"{os.environ.get('NUMBA_CACHE_DIR') or 'beside the installed fastbp package'}")
    return 0


def cmd_bench(args):
    if args.toolkit:
        if args.device != "cpu":
            raise ValueError("--toolkit measures the CPU; leave out --device cuda")
        from .bench.toolkit import main as toolkit_main
        return toolkit_main(quick=args.quick)
    if args.sparse:
        if args.device != "cpu":
            raise ValueError("--sparse measures the CPU; leave out --device cuda")
        from .bench.sparse import main as sparse_main
        return sparse_main(quick=args.quick)
    if args.inference:
        if args.device != "cpu":
            raise ValueError("--inference measures the CPU; leave out --device cuda")
        from .bench.infer import main as infer_main
        return infer_main(quick=args.quick)
    from .bench import main as bench_main
    return bench_main(quick=args.quick, device=args.device)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {"train": cmd_train, "predict": cmd_predict, "export": cmd_export,
                "info": cmd_info, "bench": cmd_bench, "warmup": cmd_warmup}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("fastbp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (fastbp predict ... | head): stop quietly, as shell tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except MemoryError:
        print("fastbp: error: out of memory", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, ImportError, KeyError, FloatingPointError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"fastbp: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
