"""asv benchmarks of the training options: one epoch of 784-512-512-10 at batch 128 with
dropout, gradient clipping, both or neither (PyTorch alongside: `fastbp bench --toolkit`),
and the mask kernel on its own."""
import numpy as np

import fastbp
from fastbp.bench.toolkit import BATCH, CLIP, P, SIZES, VARIANTS

# asv's sampling, for every benchmark here that sets none: per round (process), 3 to 10
# samples, no more after 2 s; 2 rounds (asv's default).  Enough samples for asv's test of
# significance on a 2-core VM, and the whole suite in minutes.
repeat = (3, 10, 2.0)


class ToolkitEpoch:
    params = list(VARIANTS)
    param_names = ["variant"]
    number = 1

    def setup(self, variant):
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((8192, SIZES[0])).astype(np.float32)
        self.y = rng.integers(0, SIZES[-1], 8192)
        self.model = fastbp.MLP(SIZES, seed=0, dropout=P if "dropout" in variant else 0.0)
        self.opt = fastbp.SGD(self.model, 0.01, momentum=0.9,
                              clip_grad_norm=CLIP if "clip" in variant else None)
        self.time_epoch(variant)                           # compile outside the timing

    def time_epoch(self, variant):
        fastbp.fit(self.model, self.X, self.y, optimizer=self.opt, batch_size=BATCH,
                   epochs=1, seed=0, verbose=0)


class DropoutKernel:
    """D = A * mask / (1 - p) and its backward, on a (128, 512) float32 block."""

    def setup(self):
        from fastbp.kernels.cpu import dropout as D
        self.D = D
        self.A = np.random.default_rng(0).standard_normal((128, 512)).astype(np.float32)
        self.out = np.empty_like(self.A)
        self.s = D.stream(1, 1, 0)
        self.time_forward()
        self.time_backward()

    def time_forward(self):
        self.D.dropout_forward(self.A, self.out, self.s, 0, P)

    def time_backward(self):
        self.D.dropout_backward(self.out, self.s, 0, P)
