"""The comparison harness runs end to end on a tiny shape (a smoke test: no timings are
checked here; speed is shown by `fastbp bench` and the asv suite)."""
import numpy as np

from fastbp import bench


def test_bench_training_and_tables_smoke():
    sizes, batch = [8, 16, 4], 8
    X, y = bench._data(sizes, batch * 6)
    row = {"shape": "8-16-4 b8", "torch": None, "sklearn": None}
    row.update(bench.bench_training(sizes, batch, X, y, rounds=1))
    for name in ("fastbp", "blas"):
        assert np.isfinite(row[name]) and row[name] > 0
    table = bench.format_tables([("tiny", 1.0, 2.0, 0.5)], [row], "test machine")
    assert "8-16-4 b8" in table and "0.50x" in table
