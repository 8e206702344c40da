"""asv benchmarks of sparse input and sample weights: one epoch on a TF-IDF-like CSR matrix
(fastbp.bench.sparse's, 6,000 rows; scikit-learn and the densified rows: `fastbp bench
--sparse`), its peak memory, and one epoch with and without sample weights."""
import numpy as np

import fastbp
from fastbp.bench.sparse import HIDDEN, tfidf_like

# asv's sampling, for every benchmark here that sets none: per round (process), 3 to 10
# samples, no more after 2 s; 2 rounds (asv's default).  Enough samples for asv's test of
# significance on a 2-core VM, and the whole suite in minutes.
repeat = (3, 10, 2.0)


class SparseEpoch:
    timeout = 600
    number = 1
    repeat = (2, 6, 2.0)

    def setup(self):
        self.X, self.y = tfidf_like(6_000)
        self.sizes = [self.X.shape[1], HIDDEN, int(self.y.max()) + 1]
        self._epoch(400)                                  # compile outside the timing

    def _epoch(self, rows=None):
        model = fastbp.MLP(self.sizes, seed=0)
        X, y = (self.X, self.y) if rows is None else (self.X[:rows], self.y[:rows])
        fastbp.fit(model, X, y, optimizer=fastbp.Adam(model, 1e-3), batch_size=200,
                   epochs=1, seed=0, verbose=0)

    def time_epoch(self):
        self._epoch()

    def peakmem_epoch(self):
        self._epoch()


class WeightedEpoch:
    params = [False, True]
    param_names = ["sample_weight"]
    number = 1

    def setup(self, weighted):
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((8192, 784)).astype(np.float32)
        self.y = rng.integers(0, 10, 8192)
        self.w = rng.uniform(0, 2, 8192) if weighted else None
        self.model = fastbp.MLP([784, 512, 512, 10], seed=0)
        self.opt = fastbp.Adam(self.model, 1e-3)
        self.time_epoch(weighted)                          # compile outside the timing

    def time_epoch(self, weighted):
        fastbp.fit(self.model, self.X, self.y, optimizer=self.opt, batch_size=128, epochs=1,
                   seed=0, verbose=0, sample_weight=self.w)
