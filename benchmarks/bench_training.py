"""asv benchmarks of training: one step and one epoch for the three reference shapes,
peak memory of training, and the import time (fresh process; the first run's
compile time: bench_users.FirstRun)."""
import numpy as np

import fastbp

# asv's sampling, for every benchmark here that sets none: per round (process), 3 to 10
# samples, no more after 2 s; 2 rounds (asv's default).  Enough samples for asv's test of
# significance on a 2-core VM, and the whole suite in minutes.
repeat = (3, 10, 2.0)

SHAPES = {"784-512-512-10 b128": ([784, 512, 512, 10], 128),
          "40-100-100-10 b32": ([40, 100, 100, 10], 32),
          "784-2048-2048-10 b256": ([784, 2048, 2048, 10], 256)}


def _problem(sizes, n):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, sizes[0])).astype(np.float32),
            rng.integers(0, sizes[-1], size=n))


class TrainStep:
    params = list(SHAPES)
    param_names = ["shape"]
    timeout = 300

    def setup(self, shape):
        sizes, self.batch = SHAPES[shape]
        self.model = fastbp.MLP(sizes, seed=0)
        self.blas = fastbp.MLP(sizes, seed=0, matmul="blas")
        self.opt = fastbp.SGD(self.model, lr=0.01, momentum=0.9)
        self.opt_blas = fastbp.SGD(self.blas, lr=0.01, momentum=0.9)
        self.X, self.y = _problem(sizes, self.batch * 16)
        for m, o in ((self.model, self.opt), (self.blas, self.opt_blas)):
            m.loss_and_grad(self.X[:self.batch], self.y[:self.batch])
            o.step()
        self.time_epoch(shape)                  # compile the epoch's step outside the timing

    def time_step(self, shape):
        self.model.loss_and_grad(self.X[:self.batch], self.y[:self.batch])
        self.opt.step()

    def time_step_blas(self, shape):
        self.blas.loss_and_grad(self.X[:self.batch], self.y[:self.batch])
        self.opt_blas.step()

    def time_epoch(self, shape):
        fastbp.fit(self.model, self.X, self.y, optimizer=self.opt, batch_size=self.batch,
                   epochs=1, verbose=0, seed=0)


class TrainMemory:
    params = list(SHAPES)
    param_names = ["shape"]

    def setup(self, shape):
        sizes, self.batch = SHAPES[shape]
        self.sizes = sizes
        self.X, self.y = _problem(sizes, self.batch * 8)

    def peakmem_train(self, shape):
        model = fastbp.MLP(self.sizes, seed=0)
        fastbp.fit(model, self.X, self.y, optimizer=fastbp.SGD(model, 0.01, momentum=0.9),
                   batch_size=self.batch, epochs=1, verbose=0)


def timeraw_import():
    return "import fastbp"

