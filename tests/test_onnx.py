"""ONNX export against ONNX Runtime: every activation x loss, the estimators (fastbp.to_onnx
and skl2onnx with no set-up), and 'fastbp export' with the stored preprocessing."""
import numpy as np
import pytest

import fastbp
from fastbp.cli import main
from fastbp.kernels import codes

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def run(proto, X):
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: X})


def probabilities(out, classes):
    p = out[1]
    if isinstance(p, list):                  # skl2onnx's default ZipMap: one dict a row
        p = np.array([[row[c] for c in classes] for row in p])
    return np.asarray(p)


@pytest.mark.parametrize("loss", codes.LOSSES)
@pytest.mark.parametrize("activation", codes.ACTIVATION_NAMES)
def test_every_activation_and_loss_matches_onnx_runtime(activation, loss):
    rng = np.random.default_rng(codes.activation(activation).code)
    model = fastbp.MLP([7, 12, 9, 4], activation=activation, loss=loss, seed=1)
    X = (4 * rng.standard_normal((64, 7))).astype(np.float32)
    X[0, :] = 40.0                           # past softplus's threshold, sigmoid's saturation
    (got,) = run(fastbp.to_onnx(model), X)
    want = {"mse": model.forward, "huber": model.forward,
            "poisson": model.predict}.get(loss, model.predict_proba)(X)
    assert got.dtype == np.float32 and got.shape == want.shape
    scale = 1 if loss not in ("mse", "poisson", "huber") else max(1, np.abs(want).max())
    assert np.max(np.abs(got - want)) <= 1e-5 * scale


def test_float64_model_and_opset():
    model = fastbp.MLP([3, 5, 2], activation="gelu", dtype=np.float64, seed=0)
    X = np.random.default_rng(0).standard_normal((10, 3))
    proto = fastbp.to_onnx(model, opset=18)
    assert proto.opset_import[0].version == 18
    (got,) = run(proto, X)
    assert got.dtype == np.float64 and np.allclose(got, model.predict_proba(X), rtol=1e-12)
    with pytest.raises(ValueError, match="opset"):
        fastbp.to_onnx(model, opset=13)
    with pytest.raises(TypeError, match="to_onnx takes"):
        fastbp.to_onnx([1, 2])


def _iris():
    from sklearn.datasets import load_iris
    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("labels", ["ints", "strings", "binary", "binary_strings", "multilabel"])
def test_classifier_to_onnx_and_skl2onnx(labels):
    skl2onnx = pytest.importorskip("skl2onnx")
    X, y = _iris()
    y = {"ints": y, "strings": np.array(["setosa", "versicolor", "virginica"])[y],
         "binary": (y == 1).astype(int), "binary_strings": np.array(["no", "yes"])[(y == 1) * 1],
         "multilabel": np.c_[y == 1, y == 2, X[:, 0] > 5].astype(int)}[labels]
    clf = fastbp.MLPClassifier((16,), activation="tanh", max_iter=40, random_state=0).fit(X, y)
    classes = range(3) if labels == "multilabel" else clf.classes_
    for proto in (fastbp.to_onnx(clf), skl2onnx.to_onnx(clf, X[:1])):
        out = run(proto, X)
        assert np.array_equal(out[0], clf.predict(X))
        assert np.max(np.abs(probabilities(out, classes) - clf.predict_proba(X))) <= 1e-5


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_regressor_and_pipeline_through_skl2onnx():
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, _ = _iris()
    y = np.c_[X[:, 0] * 2 - X[:, 1], X[:, 2]]
    reg = fastbp.MLPRegressor((16,), activation="softplus", max_iter=40,
                              random_state=0).fit(X, y)
    for proto in (fastbp.to_onnx(reg), skl2onnx.to_onnx(reg, X[:1])):
        (got,) = run(proto, X)
        assert np.max(np.abs(got - reg.predict(X))) <= 1e-5 * np.abs(y).max()
    pipe = make_pipeline(StandardScaler(), fastbp.MLPClassifier((8,), max_iter=40,
                                                                random_state=0))
    X, labels = _iris()
    pipe.fit(X, labels)
    out = run(skl2onnx.to_onnx(pipe, X[:1]), X)
    assert np.mean(out[0] == pipe.predict(X)) >= 0.99        # the scaler is skl2onnx's


def test_fastbp_export_keeps_the_preprocessing(tmp_path, capsys):
    """'fastbp export' of a CSV-trained model: raw columns in (blanks as NaN), the labels as
    read and the probabilities out, equal to 'fastbp predict'."""
    rng = np.random.default_rng(0)
    X = rng.normal(50, 10, (300, 3)).round(2)
    y = np.where(X[:, 0] - X[:, 1] + 0.5 * X[:, 2] > 25, "high", "low")
    lines = ["a,b,c,grade"] + [f"{a},{b},{c},{t}" for (a, b, c), t in zip(X, y)]
    lines[5] = "48.0,,51.5,low"                      # a blank cell: imputed in both
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    assert main(["train", "--data", str(tmp_path / "t.csv"), "--epochs", "20", "--hidden", "8",
                 "--quiet", "--out", str(tmp_path / "o")]) == 0
    model, onnx_path = str(tmp_path / "o" / "model.npz"), str(tmp_path / "m.onnx")
    assert main(["export", model, onnx_path]) == 0
    capsys.readouterr()
    assert main(["predict", model, str(tmp_path / "t.csv")]) == 0
    want_labels = capsys.readouterr().out.split()[1:]
    assert main(["predict", model, str(tmp_path / "t.csv"), "--proba"]) == 0
    text = capsys.readouterr().out.splitlines()
    want_p = np.array([r.split(",") for r in text[1:]], dtype=np.float32)
    raw = np.array([[float(v) if v else np.nan for v in r.split(",")[:3]] for r in lines[1:]],
                   dtype=np.float32)
    import onnx
    label, proba = run(onnx.load(onnx_path), raw)
    assert list(label) == want_labels and text[0] == "p_high,p_low"
    assert np.max(np.abs(proba - want_p)) <= 1e-5


def test_fastbp_export_of_a_regression_model(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (300, 2))
    y = 5e4 * (1 + 0.3 * X[:, 0] - 0.2 * X[:, 1] ** 2)
    (tmp_path / "r.csv").write_text("u,v,price\n" + "".join(
        f"{a:.5f},{b:.5f},{t:.2f}\n" for (a, b), t in zip(X, y)))
    assert main(["train", "--data", str(tmp_path / "r.csv"), "--epochs", "20", "--hidden", "8",
                 "--quiet", "--out", str(tmp_path / "o")]) == 0
    model = str(tmp_path / "o" / "model.npz")
    assert main(["export", model, str(tmp_path / "r.onnx")]) == 0
    capsys.readouterr()
    assert main(["predict", model, str(tmp_path / "r.csv")]) == 0
    want = np.array(capsys.readouterr().out.split()[1:], dtype=np.float64)
    import onnx
    (got,) = run(onnx.load(str(tmp_path / "r.onnx")), X.round(5).astype(np.float32))
    assert np.max(np.abs(got[:, 0] - want)) <= 1e-5 * 5e4
