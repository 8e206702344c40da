"""The command line: the main job, predict, info, and one-line errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from fastbp.cli import main


def test_train_main_job_reaches_097_on_digits(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and "samples/s" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.97
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss,accuracy,val_loss") and len(rows) >= 2
    # predict with the saved model, on an .npz of raw (unscaled) digits
    from sklearn.datasets import load_digits
    d = load_digits()
    np.savez(tmp_path / "x.npz", X=d.data[:50])
    preds = tmp_path / "p.csv"
    assert main(["predict", str(out / "model.npz"), str(tmp_path / "x.npz"), "-o", str(preds)]) == 0
    got = np.array(preds.read_text().split()[1:], dtype=int)
    assert np.mean(got == d.target[:50]) >= 0.9
    assert main(["predict", str(out / "model.npz"), str(tmp_path / "x.npz"), "--proba"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("p_0,") and len(lines) == 51


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_train_on_user_csv_regression(tmp_path, capsys, activation):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.01 * rng.standard_normal(200)
    path = tmp_path / "data.csv"
    np.savetxt(path, np.c_[X, y], delimiter=",", header="a,b,c,target", comments="")
    assert main(["train", "--data", str(path), "--target", "target", "--epochs", "60",
                 "--activation", activation, "--quiet", "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["test_r2"] > 0.9


@pytest.mark.parametrize("argv,code,message", [
    (["train", "--hidden", "0,3"], 2, "hidden widths must be positive"),
    (["train", "--epochs", "-2"], 2, "positive int"),
    (["train", "--data", "/no/such.csv"], 1, "no such file"),
    (["train", "--target", "x"], 1, "--target applies only with --data"),
    (["predict", "/no/model.npz", "/no/x.csv"], 1, "no model file"),
    (["frobnicate"], 2, "invalid choice"),
    (["train", "--device", "cuda", "--dtype", "float64"], 1, "--device cuda trains in float32"),
    (["train", "--device", "tpu"], 2, "invalid choice"),
    (["train", "--weight-decay", "-1"], 2, "expected a finite number >= 0"),
    (["train", "--weight-decay", "nan"], 2, "expected a finite number >= 0"),
    (["train", "--device", "cuda", "--resume"], 1, "--checkpoint and --resume are CPU-only"),
])
def test_bad_arguments_give_one_line_errors(argv, code, message, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_train_resumes_from_its_checkpoint(tmp_path, capsys):
    """3 epochs with --checkpoint, then --resume to 5 epochs: the same model, bit for bit,
    as 5 epochs in one run; options that reach fit (weight decay, schedule) included."""
    common = ["train", "--hidden", "16", "--quiet", "--optimizer", "adamw",
              "--weight-decay", "1e-3", "--lr-schedule", "step"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(common + ["--epochs", "3", "--checkpoint", "--out", a]) == 0
    assert (tmp_path / "a" / "checkpoint" / "checkpoint.npz").exists()
    assert main(common + ["--epochs", "5", "--resume", "--out", a]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert main(common + ["--epochs", "5", "--out", b]) == 0
    with np.load(tmp_path / "a" / "model.npz") as ra, np.load(tmp_path / "b" / "model.npz") as rb:
        assert np.array_equal(ra["params"], rb["params"])
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["epochs_run"] == 5 and summary["weight_decay"] == 1e-3


def test_train_early_stopping(tmp_path, capsys):
    assert main(["train", "--hidden", "16", "--quiet", "--epochs", "200", "--early-stopping",
                 "--patience", "2", "--out", str(tmp_path)]) == 0
    assert "early stopping after epoch" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["epochs_run"] < 200


def test_train_on_cuda_without_a_gpu_is_a_one_line_error(capsys):
    from fastbp.backends import cuda_status
    if cuda_status().startswith("usable"):
        pytest.skip("CUDA is usable here (tests/cuda trains on it)")
    assert main(["train", "--device", "cuda", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is" in err and len(err.strip().splitlines()) == 1


def test_bad_csv_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,2,0\n3,oops,1\n4,5,0\n6,7,1\n8,9,0\n")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "line 3, column 'b': 'oops' is not a number" in err


def test_info_and_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "fastbp", "info"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "threading layer:" in r.stdout and "cuda:" in r.stdout
