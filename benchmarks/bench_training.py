"""asv benchmarks of training: one step and one epoch for the three reference shapes,
predict, peak memory of training, and import / first-call compile time (fresh process)."""
import numpy as np

import fastbp

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

    def time_step(self, shape):
        self.model.loss_and_grad(self.X[:self.batch], self.y[:self.batch])
        self.opt.step()

    def time_step_blas(self, shape):
        self.blas.loss_and_grad(self.X[:self.batch], self.y[:self.batch])
        self.opt_blas.step()

    def time_epoch(self, shape):
        fastbp.fit(self.model, self.X, self.y, optimizer=self.opt, batch_size=self.batch,
                   epochs=1, verbose=0, seed=0)

    def time_predict(self, shape):
        self.model.predict(self.X)


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


def timeraw_first_loss_and_grad():
    """Import plus the first loss_and_grad in a new process (Numba's cache as it is)."""
    return """
import numpy as np, fastbp
m = fastbp.MLP([64, 128, 64, 10], seed=0)
m.loss_and_grad(np.zeros((32, 64), np.float32), np.zeros(32, np.int64))
"""
