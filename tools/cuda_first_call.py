"""Seconds from a new process to the end of the first device="cuda" training epoch
(import, kernel compilation, one small epoch): run with an empty NUMBA_CACHE_DIR for the
cold figure, then again for the warm one.   python3 tools/cuda_first_call.py"""
import sys
import time

t0 = time.perf_counter()
import numpy as np  # noqa: E402

sys.path.insert(0, ".")
import fastbp  # noqa: E402

t_import = time.perf_counter() - t0
rng = np.random.default_rng(0)
X = rng.standard_normal((256, 64)).astype(np.float32)
y = rng.integers(0, 10, size=256)
model = fastbp.MLP([64, 128, 64, 10], seed=0, device="cuda")
fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.01, momentum=0.9), batch_size=32,
           epochs=1, verbose=0)
print(f"import {t_import:.2f} s, import + first CUDA epoch {time.perf_counter() - t0:.2f} s")
