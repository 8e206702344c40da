"""MNIST-1D with and without dropout: test accuracy of the same fastbp.MLP over seeds.

    pip install mnist1d
    python examples/mnist1d_dropout.py [--seeds 5] [--epochs 150] [--dropout 0.5]

The data set is generated on the spot by mnist1d.data.make_dataset with its default
arguments (4,000 training and 1,000 test sequences of 40 values, 10 classes, seed 42):
nothing is downloaded.  Each seed trains both models from the same initial weights and
batch order; the test accuracy is the last epoch's (no early stopping, so overfitting
shows).
"""
import argparse
import time

import numpy as np

import fastbp


def mnist1d():
    from mnist1d.data import get_dataset_args, make_dataset
    data = make_dataset(get_dataset_args())
    return (data["x"].astype(np.float32), data["y"].astype(np.int64),
            data["x_test"].astype(np.float32), data["y_test"].astype(np.int64))


def train(X, y, X_test, y_test, seed, dropout, epochs, hidden=(512, 512)):
    model = fastbp.MLP([X.shape[1], *hidden, 10], seed=seed, dropout=dropout)
    opt = fastbp.Adam(model, lr=1e-3)
    fastbp.fit(model, X, y, optimizer=opt, batch_size=100, epochs=epochs, seed=seed,
               verbose=0)
    return float((model.predict(X_test) == y_test).mean()), float((model.predict(X) == y).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--dropout", type=float, default=0.5)
    args = ap.parse_args(argv)
    X, y, X_test, y_test = mnist1d()
    print(f"MNIST-1D: {len(X)} training / {len(X_test)} test rows of {X.shape[1]} values; "
          f"MLP {X.shape[1]}-512-512-10 ReLU, Adam 1e-3, batch 100, {args.epochs} epochs")
    results = {0.0: [], args.dropout: []}
    for seed in range(args.seeds):
        for p in results:
            t = time.perf_counter()
            test, tr = train(X, y, X_test, y_test, seed, p, args.epochs)
            results[p].append(test)
            print(f"seed {seed}  dropout {p:<4}  train accuracy {tr:.4f}  test accuracy "
                  f"{test:.4f}  ({time.perf_counter() - t:.1f} s)", flush=True)
    for p, accs in results.items():
        print(f"dropout {p:<4}: test accuracy {np.mean(accs):.4f} +- {np.std(accs):.4f} "
              f"(seeds 0-{args.seeds - 1}: {', '.join(f'{a:.3f}' for a in accs)})")
    wins = sum(a > b for a, b in zip(results[args.dropout], results[0.0]))
    print(f"dropout better on {wins} of {args.seeds} seeds")


if __name__ == "__main__":
    main()
