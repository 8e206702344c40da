"""Child process for the reliability tests: trains a small model and prints a digest.

    python train_child.py OUT.npy [--checkpoint DIR] [--resume] [--kill-at-step K]

--kill-at-step K sends SIGKILL to this process right after optimizer step K (test-side
code, not a library hook): a crash mid-epoch with no chance to clean up.
"""
import argparse
import os
import signal
import sys

import numpy as np

import fastbp

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--checkpoint")
p.add_argument("--resume", action="store_true")
p.add_argument("--kill-at-step", type=int)
p.add_argument("--every", type=int, default=3)
args = p.parse_args()

rng = np.random.default_rng(0)
X = rng.standard_normal((500, 20)).astype(np.float32)
y = (X[:, :3].sum(1) > 0).astype(np.int64) + (X[:, 3] > 1)
model = fastbp.MLP([20, 64, 32, 3], seed=0)
opt = fastbp.Adam(model, lr=3e-3)
if args.kill_at_step:
    real_step, count = opt.step, [0]

    def step():
        real_step()
        count[0] += 1
        if count[0] == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
    opt.step = step
h = fastbp.fit(model, X, y, optimizer=opt, batch_size=32, epochs=4, seed=7, verbose=0,
               validation_split=0.2, lr_schedule="cosine", early_stopping=True, patience=3,
               checkpoint_dir=args.checkpoint, checkpoint_every=args.every if args.checkpoint else None,
               resume=args.resume)
np.save(args.out, model.params)
print("loss", h["loss"], flush=True)
sys.exit(0)
