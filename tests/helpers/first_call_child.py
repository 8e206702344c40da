"""A fresh process whose first parallel code is fastbp.fit's compiled training steps on a
network large enough to run the parallel GEMM (regression: this crashed when loaded from
Numba's cache before the thread pool was started)."""
import numpy as np

import fastbp

rng = np.random.default_rng(0)
X = rng.standard_normal((256, 784)).astype(np.float32)
y = rng.integers(0, 10, size=256)
model = fastbp.MLP([784, 256, 10], seed=0)
fastbp.fit(model, X, y, optimizer=fastbp.SGD(model, 0.01, momentum=0.9), batch_size=128,
           epochs=1, verbose=0)
print("ok")
