"""The fastbp command line.

    fastbp train                 train on the bundled digits data (the main job)
    fastbp train --data F.csv    train on your own data (.npz with X, y; or .csv)
    fastbp predict MODEL FILE    write predictions for the rows of FILE
    fastbp info                  versions, threading, CUDA
    fastbp bench                 the side-by-side speed comparison (benchmarks/compare.py)
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


def build_parser():
    p = _Parser(prog="fastbp", description="Train multi-layer perceptrons with fastbp.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser("train", help="train an MLP (digits by default)", prog="fastbp train")
    t.add_argument("--data", help=".npz (arrays X, y) or .csv file; default: scikit-learn's digits")
    t.add_argument("--target", help="CSV column holding the target (default: the last)")
    t.add_argument("--task", choices=["auto", "classification", "regression"], default="auto")
    t.add_argument("--hidden", type=_hidden, default=[128, 64], help="hidden widths, e.g. 128,64")
    t.add_argument("--activation", default="relu",
                   choices=sorted(codes.ACTIVATION_BY_NAME))
    t.add_argument("--optimizer", choices=codes.OPTIMIZERS, default="adam")
    t.add_argument("--lr", type=_positive(float), default=None,
                   help="learning rate (default 1e-3 for adam/adamw, 0.05 for sgd)")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                   help="weight decay (decoupled for adamw; default 0)")
    t.add_argument("--lr-schedule", choices=["constant", "step", "cosine", "invscaling",
                                             "plateau"], default="constant")
    t.add_argument("--epochs", type=_positive(int), default=40)
    t.add_argument("--early-stopping", action="store_true",
                   help="stop when the validation loss has not improved for --patience "
                        "epochs, keeping the best weights")
    t.add_argument("--patience", type=_positive(int), default=10)
    t.add_argument("--batch-size", type=_positive(int), default=32)
    t.add_argument("--test-size", type=float, default=0.2, help="held-out test fraction")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32")
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
    pr = sub.add_parser("predict", help="predict with a saved model", prog="fastbp predict")
    pr.add_argument("model", help="model file written by 'fastbp train' (model.npz)")
    pr.add_argument("file", help=".npz (array X) or .csv of feature rows")
    pr.add_argument("--output", "-o", help="CSV to write (default: standard output)")
    pr.add_argument("--proba", action="store_true", help="write class probabilities")
    sub.add_parser("info", help="versions, threading layer, CUDA", prog="fastbp info")
    b = sub.add_parser("bench", help="compare speed with NumPy, PyTorch, scikit-learn",
                       prog="fastbp bench")
    b.add_argument("--quick", action="store_true", help="fewer repetitions")
    b.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    return p


# ---------------------------------------------------------------------------- train
def _split(X, y, test_size, seed, stratify):
    from sklearn.model_selection import train_test_split
    if not 0 < test_size < 1:
        raise ValueError(f"--test-size must be between 0 and 1, got {test_size}")
    strat = y if stratify and np.min(np.bincount(y)) >= 2 else None
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=strat)


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


def cmd_train(args):
    import fastbp
    from .data import encode_labels, load_digits, looks_like_regression, read_table
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
    comm = None
    if args.distributed:
        from .distributed import world
        comm = world()
    rank0 = comm is None or comm.Get_rank() == 0
    say = print if rank0 else (lambda *a, **k: None)

    if args.data:
        X, y, _ = read_table(args.data, target=args.target)
        name = os.path.basename(args.data)
    else:
        if args.target:
            raise ValueError("--target applies only with --data")
        X, y = load_digits()
        name = "digits"
    if X.shape[0] < 5:
        raise ValueError(f"{name} has {X.shape[0]} rows; at least 5 are needed to train and test")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} has NaN or infinite feature values; clean them first")
    task = args.task
    if task == "auto":
        task = "regression" if looks_like_regression(y) else "classification"
    if task == "classification":
        classes, codes = encode_labels(y)
        if len(classes) < 2:
            raise ValueError(f"{name} has a single class ({classes[0]!r}); need at least 2")
        if len(classes) > max(100, X.shape[0] // 2):
            raise ValueError(f"{name} has {len(classes)} distinct targets for {X.shape[0]} rows; "
                             "use --task regression for a continuous target")
        target, n_out, loss = codes, len(classes), "cross_entropy"
    else:
        y = np.asarray(y, dtype=np.float64)
        classes, target, n_out, loss = None, y.reshape(-1, 1), 1, "mse"
    X_tr, X_te, y_tr, y_te = _split(X, target, args.test_size, args.seed,
                                    stratify=task == "classification")
    mean = X_tr.mean(axis=0)
    scale = X_tr.std(axis=0)
    scale[scale == 0] = 1.0
    X_tr = (X_tr - mean) / scale
    X_te = (X_te - mean) / scale

    sizes = [X.shape[1]] + args.hidden + [n_out]
    model = fastbp.MLP(sizes, activation=args.activation, loss=loss, dtype=args.dtype,
                       seed=args.seed, device=args.device)
    lr = args.lr or (0.05 if args.optimizer == "sgd" else 1e-3)
    if args.optimizer == "sgd":
        opt = fastbp.SGD(model, lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    else:
        opt = (fastbp.AdamW if args.optimizer == "adamw" else fastbp.Adam)(
            model, lr=lr, weight_decay=args.weight_decay)
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
                      checkpoint_dir=checkpoint_dir, resume=args.resume)
    train_time = time.perf_counter() - t0
    if hist.interrupted:
        say("interrupted: keeping the model as trained so far"
            + (" (--resume continues from the checkpoint)" if checkpoint_dir else ""))
    if hist.stopped_early:
        say(f"early stopping after epoch {hist.epochs}: keeping epoch "
            f"{hist.best_epoch + 1}'s weights (best validation loss)")
    summary = {"data": name, "sizes": sizes, "activation": args.activation,
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
        pred = model.predict(X_te)[:, 0].astype(np.float64)
        mse = float(np.mean((pred - y_te[:, 0]) ** 2))
        r2 = 1 - mse / float(np.var(y_te[:, 0])) if np.var(y_te[:, 0]) > 0 else float("nan")
        summary.update(test_mse=round(mse, 6), test_r2=round(r2, 4))
        result = f"test R^2 {r2:.4f} (MSE {mse:.4g})"
    if rank0:
        os.makedirs(args.out, exist_ok=True)
        extra = {"x_mean": mean, "x_scale": scale}
        if classes is not None:
            extra["classes"] = classes
        model_path = os.path.join(args.out, "model.npz")
        png_path = os.path.join(args.out, "curves.png")
        model.save(model_path, **extra)
        _plot(hist, png_path, f"fastbp MLP {sizes} on {name}: {result.split(' (')[0]}")
        with atomic_write(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    say(f"{result}; {hist.epochs} epochs in {train_time:.2f} s, "
        f"{summary['samples_per_s']} samples/s (median epoch)")
    if rank0:
        say(f"wrote {model_path}, {png_path} and {os.path.join(args.out, 'summary.json')}")
    return 0


# ---------------------------------------------------------------------------- predict
def cmd_predict(args):
    from .data import read_table
    from .io import atomic_write
    from .model import load
    model, extra = load(args.model, return_extra=True)
    X, _, _ = read_table(args.file, require_target=False)
    if X.shape[1] == model.n_features + 1:
        print(f"fastbp: note: {args.file} has one column more than the model's "
              f"{model.n_features} features; ignoring the last column (the target)",
              file=sys.stderr)
        X = X[:, :-1]
    if "x_mean" in extra:
        X = (X - extra["x_mean"]) / extra["x_scale"]
    classes = extra.get("classes")
    if args.proba:
        P = model.predict_proba(X)
        header = [f"p_{c}" for c in (classes if classes is not None else range(P.shape[1]))]
        lines = [",".join(map(str, header))] + [",".join(f"{v:.6g}" for v in row) for row in P]
    else:
        pred = model.predict(X)
        if model.loss == "cross_entropy":
            pred = classes[pred] if classes is not None else pred
            lines = ["prediction"] + [str(v) for v in pred]
        else:
            lines = ["prediction"] + [",".join(f"{v:.6g}" for v in np.atleast_1d(r)) for r in pred]
    text = "\n".join(lines) + "\n"
    if args.output:
        with atomic_write(args.output, "w") as f:
            f.write(text)
        print(f"wrote {len(lines) - 1} predictions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
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


def cmd_bench(args):
    from .bench import main as bench_main
    return bench_main(quick=args.quick, device=args.device)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {"train": cmd_train, "predict": cmd_predict, "info": cmd_info, "bench": cmd_bench}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("fastbp: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, KeyError, FloatingPointError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"fastbp: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
