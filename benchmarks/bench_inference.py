"""asv benchmarks of inference: predict_proba at batch 4096 and at batch 1 on the four
networks of fastbp.bench.infer (PyTorch and ONNX Runtime: `fastbp bench --inference`, each
in its own process), and the memory a series of predictions keeps."""
import numpy as np

import fastbp
from fastbp.bench.infer import BATCH, NETWORKS, _loss

# asv's sampling, for every benchmark here that sets none: per round (process), 3 to 10
# samples, no more after 2 s; 2 rounds (asv's default).  Enough samples for asv's test of
# significance on a 2-core VM, and the whole suite in minutes.
repeat = (3, 10, 2.0)

NAMES = {"-".join(map(str, s)): s for s in NETWORKS}


class Predict:
    params = list(NAMES)
    param_names = ["network"]
    timeout = 300

    def setup(self, network):
        sizes = NAMES[network]
        self.model = fastbp.MLP(sizes, loss=_loss(sizes), seed=0)
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((BATCH, sizes[0])).astype(np.float32)
        self.x1 = self.X[:1].copy()
        self.model.predict_proba(self.X)       # compile outside the timing
        self.model.predict_proba(self.x1)

    def time_predict_proba_batch(self, network):
        self.model.predict_proba(self.X)

    def time_predict_proba_one_row(self, network):
        self.model.predict_proba(self.x1)


class PredictMemory:
    def setup(self):
        self.model = fastbp.MLP([784, 4000, 10], seed=0)
        rng = np.random.default_rng(0)
        self.batches = [rng.standard_normal((n, 784)).astype(np.float32)
                        for n in (2000, 1500, 1000, 500)]
        self.model.predict(self.batches[-1][:2])

    def track_kept_bytes(self):
        """Bytes still held (traced by NumPy's allocator) after predicting on four batch
        sizes: the inference path keeps none."""
        import tracemalloc
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for X in self.batches:
            self.model.predict(X)
        kept = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return kept

    track_kept_bytes.unit = "bytes"
