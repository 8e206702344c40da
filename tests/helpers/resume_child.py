"""Child for the Ctrl-C-then-resume test: argv = checkpoint dir, output .npy, mode
(plain: no checkpoints; interrupt: print 'ready' after warming up, then train with a
checkpoint every 7 steps; resume: continue from the checkpoint).  Prints 'interrupted'
or 'done' at the end."""
import sys

import numpy as np

import fastbp

ck, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
rng = np.random.default_rng(0)
X = rng.standard_normal((30000, 20)).astype(np.float32)
y = rng.integers(0, 4, 30000)
m = fastbp.MLP([20, 64, 64, 4], seed=0)
opt = fastbp.Adam(m, lr=1e-3)
if mode == "interrupt":
    warm = fastbp.MLP([20, 8, 4], seed=0)
    fastbp.fit(warm, X[:64], y[:64], optimizer=fastbp.SGD(warm, 0.1), epochs=1,
               batch_size=32, verbose=0)
    print("ready", flush=True)
h = fastbp.fit(m, X, y, optimizer=opt, batch_size=32, epochs=4, seed=0, verbose=0,
               checkpoint_dir=None if mode == "plain" else ck,
               checkpoint_every=None if mode == "plain" else 7, resume=mode == "resume")
np.save(out, m.params)
print("interrupted" if h.interrupted else "done", flush=True)
