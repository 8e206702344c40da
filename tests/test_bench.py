"""The comparison harness runs end to end on a tiny shape (a smoke test: no timings are
checked here; speed is shown by `fastbp bench` and the asv suite)."""
from pathlib import Path

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
    row["sizes"] = sizes
    assert bench.product_flops_per_sample(sizes) == 4 * (8 * 16 + 16 * 4) + 2 * 16 * 4
    rate, rows = bench.ceiling_rows([("tiny", 1.0, 2.0, 0.5)], [row])
    assert rate == 2.0
    (shape, ceiling, *shares), = rows
    assert ceiling == 2e9 / 896 and shares[0] == row["fastbp"] / ceiling
    assert "Ceiling" in bench.format_tables([("tiny", 1.0, 2.0, 0.5)], [row], "test machine")


def test_asv_can_import_every_benchmark_module():
    """asv discovers benchmarks by importing every module in benchmarks/ with its own argv;
    a module that did work at import time (the MPI script did) broke 'asv run' entirely."""
    import importlib
    import pkgutil
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    saved_path, saved_argv = list(sys.path), list(sys.argv)
    sys.path.insert(0, str(root))
    sys.argv = ["benchmark.py", "discover"]
    try:
        names = [m.name for m in pkgutil.iter_modules([str(root / "benchmarks")])]
        assert "bench_training" in names and "mpi_scaling" in names
        for name in names:
            importlib.import_module(f"benchmarks.{name}")
    finally:
        sys.path[:], sys.argv[:] = saved_path, saved_argv


def test_inference_bench_worker_and_table_smoke():
    """Each framework's worker on a tiny network (in this process: the benchmark runs each
    in its own), and the table."""
    from fastbp.bench import infer
    results = {}
    for fw in infer.FRAMEWORKS:
        if infer._available(fw):
            results[("8-16-4", fw)] = [infer.worker(fw, [8, 16, 4], quick=True)]
    assert results[("8-16-4", "fastbp")][0]["rows_per_s"] > 0
    table = infer.format_table(results, "test machine")
    assert "| 8-16-4 |" in table and "latency" in table


def test_toolkit_bench_workers_and_table_smoke(monkeypatch):
    """fastbp bench --toolkit's workers on a tiny network, in this process, and its table."""
    from fastbp.bench import toolkit
    monkeypatch.setattr(toolkit, "SIZES", [8, 16, 16, 4])
    monkeypatch.setattr(toolkit, "BATCH", 8)
    row = {"fastbp": toolkit.fastbp_worker(64, 1), "torch": toolkit.torch_worker(64, 1)}
    assert all(row["fastbp"][v] > 0 for v in toolkit.VARIANTS)
    table = toolkit.format_table([row, row], "test machine")
    assert "| dropout+clip |" in table and "+0.0%" not in table.splitlines()[6]


def test_asv_summary_draws_a_png_per_group(tmp_path):
    """tools/asv_summary.py on asv results (format 2) of two commits: one PNG per class."""
    import json
    import runpy
    res = tmp_path / "results" / "machine"
    res.mkdir(parents=True)
    (res / "machine.json").write_text("{}")
    cols = ["result", "params", "version", "started_at", "duration"]
    for i, scale in enumerate((1.0, 1.2)):
        run = {"version": 2, "commit_hash": f"{i}" * 40, "date": 1000 + i,
               "result_columns": cols,
               "results": {"bench_x.Predict.time_batch": [[0.01 * scale, 0.02 * scale],
                                                          [["'a'", "'b'"]], "v", 0, 1.0],
                           "bench_x.Memory.track_bytes": [[123.0 * scale], [], "v", 0, 1.0]}}
        (res / f"{i}-env.json").write_text(json.dumps(run))
    (tmp_path / "results" / "benchmarks.json").write_text(json.dumps(
        {"bench_x.Predict.time_batch": {"unit": "seconds"},
         "bench_x.Memory.track_bytes": {"unit": "bytes"}, "version": 2}))
    tool = Path(__file__).resolve().parents[1] / "tools" / "asv_summary.py"
    ns = runpy.run_path(str(tool))
    assert ns["main"](["--results", str(tmp_path / "results"),
                       "--out", str(tmp_path / "png")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert pngs == ["bench_x.Memory.png", "bench_x.Predict.png"]
    assert (tmp_path / "png" / "bench_x.Predict.png").read_bytes()[:4] == b"\x89PNG"


def _tool(name):
    import runpy
    return runpy.run_path(str(Path(__file__).resolve().parents[1] / "tools" / name))


def test_asv_offline_points_asvs_own_page_at_the_vendored_files(tmp_path):
    """tools/asv_offline.py on the index.html of the installed asv: every CDN script and
    stylesheet becomes a vendored file with the listed bytes, nothing remote is left, and a
    second run changes nothing. Fails here first when a newer asv asks for other files."""
    import re
    import shutil

    import asv
    tool = _tool("asv_offline.py")
    www = Path(asv.__file__).parent / "www"
    shutil.copytree(www, tmp_path / "html")
    counts = tool["make_offline"](tmp_path / "html")
    assert counts["index.html"] == 10
    page = (tmp_path / "html" / "index.html").read_text()
    assert not re.search(r'<(script|link)\b[^>]*"https?://', page)
    for src in re.findall(r'(?:src|href)="(vendor/[^"]+)"', page):
        assert (tmp_path / "html" / src).is_file(), src
    css = (tmp_path / "html" / "vendor" / "css" / "bootstrap-3.1.1.min.css").read_text()
    for font in set(re.findall(r"url\(\.\./(fonts/[^)?#]+)", css)):
        assert (tmp_path / "html" / "vendor" / font).is_file(), font
    assert tool["make_offline"](tmp_path / "html")["index.html"] == 0
    assert (tmp_path / "html" / "index.html").read_text() == page


def test_asv_offline_refuses_an_address_it_has_no_copy_of(tmp_path):
    """A page asking for a file with no vendored copy is an error naming it, and no page is
    changed; a vendored file with other bytes is an error too."""
    import pytest
    tool = _tool("asv_offline.py")
    page = ('<script src="https://code.jquery.com/jquery-3.3.1.min.js"></script>'
            '<script src="https://cdn.example/new-plot-lib.min.js"></script>')
    (tmp_path / "index.html").write_text(page)
    with pytest.raises(ValueError, match="new-plot-lib.min.js"):
        tool["make_offline"](tmp_path)
    assert (tmp_path / "index.html").read_text() == page
    assert not (tmp_path / "vendor").exists()
    (tmp_path / "v").mkdir()
    with pytest.raises(ValueError, match="missing"):
        tool["check_vendor"](tmp_path / "v")


def test_asv_premerge_names_a_missing_base():
    import subprocess
    script = Path(__file__).resolve().parents[1] / "tools" / "asv_premerge.sh"
    r = subprocess.run(["bash", str(script), "no-such-branch-xyz"], capture_output=True,
                       text=True, cwd=script.parents[1], check=False)
    assert r.returncode == 2 and "no commit named 'no-such-branch-xyz'" in r.stderr
