"""asv benchmarks of the kernels: GEMM per layout and size (NumPy's matmul on the same
operands alongside), activations, softmax-CE, optimizer updates, the GEMM micro-kernel."""
import numpy as np

from fastbp import kernels as K

# asv's sampling, for every benchmark here that sets none: per round (process), 3 to 10
# samples, no more after 2 s; 2 rounds (asv's default).  Enough samples for asv's test of
# significance on a 2-core VM, and the whole suite in minutes (benchmarks/__init__.py).
repeat = (3, 10, 2.0)


class GEMM:
    """fastbp.kernels.matmul, and numpy.matmul on the same operands as the peer."""
    params = ["NT 128x784x512", "TN 512x128x784", "NN 128x512x784", "NN 32x100x100",
              "NN 1024x1024x1024"]
    param_names = ["layout MxKxN"]

    def setup(self, case):
        layout, shape = case.split()
        M, Kd, N = map(int, shape.split("x"))
        rng = np.random.default_rng(0)
        self.ta, self.tb = layout[0] == "T", layout[1] == "T"
        self.a = rng.standard_normal((Kd, M) if self.ta else (M, Kd)).astype(np.float32)
        self.b = rng.standard_normal((N, Kd) if self.tb else (Kd, N)).astype(np.float32)
        self.opa = self.a.T if self.ta else self.a
        self.opb = self.b.T if self.tb else self.b
        self.out = np.empty((M, N), np.float32)
        K.matmul(self.a, self.b, out=self.out, trans_a=self.ta, trans_b=self.tb)

    def time_fastbp_matmul(self, case):
        K.matmul(self.a, self.b, out=self.out, trans_a=self.ta, trans_b=self.tb)

    def time_numpy_matmul(self, case):
        np.matmul(self.opa, self.opb, out=self.out)


class Activations:
    params = ["relu", "sigmoid", "tanh", "gelu"]
    param_names = ["activation"]

    def setup(self, name):
        self.z = np.random.default_rng(0).standard_normal((128, 512)).astype(np.float32)
        self.g = np.ones_like(self.z)
        K.activation(self.z, name)
        K.activation_grad(self.g, self.z, name)

    def time_forward(self, name):
        K.activation(self.z, name)

    def time_backward(self, name):
        K.activation_grad(self.g, self.z, name)


class SoftmaxCrossEntropy:
    params = ["128x10", "1024x1000"]
    param_names = ["batch_x_classes"]

    def setup(self, bc):
        b, c = map(int, bc.split("x"))
        rng = np.random.default_rng(0)
        self.z = rng.standard_normal((b, c)).astype(np.float32)
        self.y = rng.integers(0, c, size=b)
        K.cross_entropy(self.z, self.y)

    def time_cross_entropy(self, bc):
        K.cross_entropy(self.z, self.y)


class OptimizerUpdate:
    """One SGD (momentum) or Adam step over a flat float32 buffer of 669,706 parameters
    (784-512-512-10's), on all threads (parallel=1) and on one (0); the time on one thread
    over 669,706 shows whether the loop is vectorised (Adam's was not, kept scalar by a
    division's zero test: 3.2 against 0.4 ns a parameter)."""
    params = (["sgd", "adam"], [1, 0])
    param_names = ["optimizer", "parallel"]
    N_PARAMS = 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10

    def setup(self, opt, parallel):
        rng = np.random.default_rng(0)
        self.p, self.g = (rng.standard_normal(self.N_PARAMS).astype(np.float32)
                          for _ in range(2))
        self.m = np.zeros_like(self.p)
        self.v = np.zeros_like(self.p)
        self.step(opt, parallel)

    def step(self, opt, parallel):
        if opt == "sgd":
            K.sgd_update(self.p, self.g, self.m, 0.01, momentum=0.9, parallel=bool(parallel))
        else:
            K.adam_update(self.p, self.g, self.m, self.v, 1, parallel=bool(parallel))

    def time_update(self, opt, parallel):
        self.step(opt, parallel)


class MicroKernel:
    """The GEMM micro-kernel alone (kernels/cpu/microkernel.py), on one thread: full tiles
    of MR x NR (8 x 16 with AVX-512, else 6 x 16) from packed panels, a B panel of K rows
    against 16 A panels, as the GEMM's inner loops run it (2 x 16 x MR x NR x K flops a call,
    to compare with the core's peak).  Rates are not tracked: asv reads every number as
    lower-is-better, and times carry the same information with samples for its test."""
    params = [32, 100, 384]
    param_names = ["K"]

    def setup(self, k):
        from numba import njit

        from fastbp.kernels.cpu.microkernel import MR, NR, micro_kernel

        @njit(nogil=True)
        def tiles(ap, bp, c, k, n_panels, reps):
            for _ in range(reps):
                for ip in range(n_panels):
                    micro_kernel(ap, ip * k * MR, MR, 1, bp, 0, NR, c, ip * MR * NR, NR, k,
                                 MR, NR, False)

        rng = np.random.default_rng(0)
        self.n_panels = 16
        self.ap = rng.standard_normal(self.n_panels * k * MR).astype(np.float32)
        self.bp = rng.standard_normal(k * NR).astype(np.float32)
        self.c = np.empty(self.n_panels * MR * NR, np.float32)
        self.tiles = tiles
        tiles(self.ap, self.bp, self.c, k, self.n_panels, 1)

    def time_tiles(self, k):
        self.tiles(self.ap, self.bp, self.c, k, self.n_panels, 1)
