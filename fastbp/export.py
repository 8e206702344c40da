"""ONNX export: fastbp's networks as standard ONNX operators (default opset 17).

    fastbp.to_onnx(model)        an MLP: input "X" (n, n_features) of the model's dtype,
                                 output "probabilities" (cross-entropy: softmax; binary
                                 cross-entropy: sigmoid) or "output" (mse)
    fastbp.to_onnx(estimator)    MLPClassifier: outputs "label" (n,) and "probabilities";
                                 MLPRegressor: "variable" (n, n_outputs), as skl2onnx names
                                 them; skl2onnx.to_onnx(estimator, X) works too, through
                                 the estimators' onnx_converter hooks
    fastbp.to_onnx("model.npz")  a file from 'fastbp train': the stored preprocessing
                                 (imputation, standardisation, the target's scale and the
                                 class names) goes into the graph

Each layer is a Gemm (W kept as (out, in), transB=1); each activation's ONNX form lives
beside its formula in the registry (fastbp.kernels.codes).  `onnx` is an optional
dependency (pip install 'fastbp[onnx]'); nothing here runs ONNX.
"""
import numpy as np

from .kernels import codes

DEFAULT_OPSET = 17


class Graph:
    """Collects nodes and initializers.  fresh(hint) -> a name not used before: our own
    counter, or skl2onnx's scope when converting inside its topology."""

    def __init__(self, dtype, fresh=None):
        self.dtype = np.dtype(dtype)
        self.nodes = []              # (op_type, inputs, outputs, attributes)
        self.initializers = []       # (name, array)
        self._count = 0
        self.fresh = fresh or self._fresh

    def _fresh(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type, *inputs, out=None, **attributes):
        out = out or self.fresh(op_type.lower())
        self.nodes.append((op_type, list(inputs), [out], attributes))
        return out

    def tensor(self, value, hint="const", dtype=None):
        name = self.fresh(hint)
        self.initializers.append((name, np.asarray(value, dtype=dtype or self.dtype)))
        return name

    def const(self, value):
        return self.tensor(value, "c")


def network(g, x, weights, biases, activations):
    """Add the hidden layers and the output layer's affine map; returns the logits' name.
    weights[l]: (out, in); activations: one registry name per hidden layer."""
    h = x
    for l, (W, b) in enumerate(zip(weights, biases)):
        h = g.op("Gemm", h, g.tensor(W, f"W{l}"), g.tensor(b, f"b{l}"), transB=1)
        if l < len(weights) - 1:
            entry = codes.activation(activations[l])
            h = entry.onnx(g, h, entry.slope)
    return h


def output(g, logits, loss, out=None):
    """The loss's output activation: softmax over classes, sigmoid per output, exp (the
    Poisson loss's log link), or none."""
    if loss == "cross_entropy":
        return g.op("Softmax", logits, axis=-1, out=out)
    if loss == "binary_cross_entropy":
        return g.op("Sigmoid", logits, out=out)
    if loss == "poisson":
        return g.op("Exp", logits, out=out)
    return g.op("Identity", logits, out=out)


def classifier_outputs(g, logits, classes, multilabel, label, proba):
    """MLPClassifier's label and probabilities as scikit-learn computes them (the label
    from the logits, as predict does, so that it agrees with fastbp bit for bit)."""
    if multilabel:
        g.op("Sigmoid", logits, out=proba)
        g.op("Cast", g.op("Greater", logits, g.const(0.0)), to=_onnx().TensorProto.INT64,
             out=label)
        return
    if len(classes) == 2:                               # binary: one logistic output
        p = g.op("Sigmoid", logits)
        g.op("Concat", g.op("Sub", g.const(1.0), p), p, axis=1, out=proba)
        index = g.op("Cast", g.op("Greater", logits, g.const(0.0)),
                     to=_onnx().TensorProto.INT64)
        index = g.op("Reshape", index, g.tensor([-1], "shape", np.int64))
    else:
        g.op("Softmax", logits, axis=-1, out=proba)
        index = g.op("ArgMax", logits, axis=1, keepdims=0)
    g.op("Gather", class_tensor(g, classes), index, axis=0, out=label)


def class_tensor(g, classes):
    classes = np.asarray(classes)
    if classes.dtype.kind in "iub":
        return g.tensor(classes.astype(np.int64), "classes", np.int64)
    if classes.dtype.kind == "f":
        return g.tensor(classes, "classes", classes.dtype)
    return g.tensor(classes.astype(str).astype(object), "classes", object)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'fastbp[onnx]'") \
            from None
    return onnx


def _elem_type(dtype):
    onnx = _onnx()
    dtype = np.dtype(dtype)
    if dtype == object or dtype.kind in "US":
        return onnx.TensorProto.STRING
    return onnx.helper.np_dtype_to_tensor_dtype(dtype)


def to_proto(g, inputs, outputs, opset=DEFAULT_OPSET, doc="", metadata=None):
    """An onnx.ModelProto from a Graph; inputs/outputs: (name, dtype, shape) with None for
    a free dimension."""
    onnx = _onnx()
    helper = onnx.helper
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    nodes = [helper.make_node(op, ins, outs, name=f"{outs[0]}_node", **attrs)
             for op, ins, outs, attrs in g.nodes]
    inits = []
    for name, arr in g.initializers:
        if arr.dtype == object:
            t = helper.make_tensor(name, onnx.TensorProto.STRING, arr.shape,
                                   [s.encode() for s in arr.ravel()])
        else:
            t = onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name)
        inits.append(t)

    def value_info(name, dtype, shape):
        return helper.make_tensor_value_info(name, _elem_type(dtype),
                                             [d if d is not None else "N" for d in shape])
    graph = helper.make_graph(nodes, "fastbp_mlp", [value_info(*i) for i in inputs],
                              [value_info(*o) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="fastbp", doc_string=doc)
    from ._version import __version__
    model.producer_version = __version__
    model.ir_version = min(model.ir_version, 9)     # what ONNX Runtime releases all read
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=str(v))
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------------------- front doors
def to_onnx(obj, path=None, opset=DEFAULT_OPSET):
    """ONNX model (onnx.ModelProto) of a fastbp.MLP, a fitted fastbp.MLPClassifier /
    MLPRegressor, or a model file written by 'fastbp train'; written atomically to `path`
    too when given."""
    from .model import MLP
    if isinstance(obj, MLP):
        proto = _from_mlp(obj, opset)
    elif isinstance(obj, (str, bytes)) or hasattr(obj, "__fspath__"):
        proto = _from_file(obj, opset)
    elif hasattr(obj, "_model") and hasattr(obj, "coefs_"):
        proto = _from_estimator(obj, opset)
    else:
        raise TypeError("to_onnx takes a fastbp.MLP, a fitted fastbp.MLPClassifier or "
                        f"MLPRegressor, or a model file path; got {type(obj).__name__}")
    if path is not None:
        from .io import atomic_write
        with atomic_write(path) as f:
            f.write(proto.SerializeToString())
    return proto


def _from_mlp(model, opset):
    m = model.to_cpu()
    g = Graph(m.dtype)
    logits = network(g, "X", m.weights, m.biases, m.activations)
    name = "output" if m.loss in ("mse", "poisson", "huber") else "probabilities"
    output(g, logits, m.loss, out=name)
    return to_proto(g, [("X", m.dtype, (None, m.n_features))],
                    [(name, m.dtype, (None, m.n_outputs))], opset,
                    doc=f"fastbp MLP {m.sizes} ({m.activation}, {m.loss})")


def _from_estimator(est, opset):
    from sklearn.base import is_classifier
    m = est._model.to_cpu()
    g = Graph(m.dtype)
    logits = network(g, "X", m.weights, m.biases, m.activations)
    inputs = [("X", m.dtype, (None, m.n_features))]
    if is_classifier(est):
        classifier_outputs(g, logits, est.classes_, est._multilabel, "label", "probabilities")
        n_proba = m.n_outputs if est._multilabel or m.n_outputs > 1 else 2
        label_dtype = np.int64 if est._multilabel else _label_dtype(est.classes_)
        label_shape = (None, m.n_outputs) if est._multilabel else (None,)
        outputs = [("label", label_dtype, label_shape), ("probabilities", m.dtype,
                                                         (None, n_proba))]
    else:
        output(g, logits, m.loss, out="variable")
        outputs = [("variable", m.dtype, (None, m.n_outputs))]
    return to_proto(g, inputs, outputs, opset, doc=f"fastbp {type(est).__name__}")


def _label_dtype(classes):
    kind = np.asarray(classes).dtype.kind
    return np.int64 if kind in "iub" else (np.asarray(classes).dtype if kind == "f" else object)


def _from_file(path, opset):
    """A 'fastbp train' model with its preprocessing: numeric columns are imputed and
    standardised inside the graph; text columns arrive one-hot encoded (their layout is in
    the metadata, key 'inputs')."""
    from .data import load_model_file
    model, prep = load_model_file(path)
    g = Graph(model.dtype)
    numeric = all(f["kind"] == "numeric" for f in prep.features)
    x = "X"
    if numeric:
        fill = g.tensor([f["fill"] for f in prep.features], "fill")
        x = g.op("Where", g.op("IsNaN", x), fill, x)
        x = g.op("Div", g.op("Sub", x, g.tensor([f["mean"] for f in prep.features], "mean")),
                 g.tensor([f["scale"] for f in prep.features], "scale"))
    logits = network(g, x, model.weights, model.biases, model.activations)
    if prep.task == "regression":
        g.op("Add", g.op("Mul", logits, g.const(prep.y_scale)), g.const(prep.y_mean),
             out="variable")
        outputs = [("variable", model.dtype, (None, model.n_outputs))]
    elif prep.classes is None:
        output(g, logits, model.loss, out="probabilities")
        outputs = [("probabilities", model.dtype, (None, model.n_outputs))]
    else:
        g.op("Softmax", logits, axis=-1, out="probabilities")
        index = g.op("ArgMax", logits, axis=1, keepdims=0)
        g.op("Gather", g.tensor(np.array(prep.classes, dtype=object), "classes", object),
             index, axis=0, out="label")
        outputs = [("label", object, (None,)),
                   ("probabilities", model.dtype, (None, model.n_outputs))]
    names = [f["name"] for f in prep.features] if numeric else prep.input_names()
    return to_proto(g, [("X", model.dtype, (None, model.n_features))], outputs, opset,
                    doc=f"fastbp model {path}: inputs {', '.join(names)}",
                    metadata={"inputs": ",".join(names), "task": prep.task})


# ---------------------------------------------------------------------------- skl2onnx
def skl2onnx_shape_calculator(operator):
    """skl2onnx's shape calculator for fastbp's estimators (found through the estimators'
    onnx_shape_calculator method: no registration needed, hence no converter options)."""
    from sklearn.base import is_classifier
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )
    est = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    real = DoubleTensorType if isinstance(operator.inputs[0].type, DoubleTensorType) \
        else FloatTensorType
    width = est._model.n_outputs
    if not is_classifier(est):
        operator.outputs[0].type = real([n, width])
        return
    if est._multilabel:
        operator.outputs[0].type = Int64TensorType([n, width])
    else:
        kind = np.asarray(est.classes_).dtype.kind
        operator.outputs[0].type = (Int64TensorType([n]) if kind in "iub" else
                                    StringTensorType([n]) if kind in "USO" else real([n]))
        width = len(est.classes_)
    operator.outputs[1].type = real([n, width])


def skl2onnx_converter(scope, operator, container):
    """skl2onnx's converter: the same nodes as to_onnx, added to skl2onnx's container."""
    from sklearn.base import is_classifier
    from skl2onnx.common.data_types import DoubleTensorType
    est = operator.raw_operator
    m = est._model.to_cpu()
    dtype = np.float64 if isinstance(operator.inputs[0].type, DoubleTensorType) else np.float32
    g = Graph(dtype, fresh=scope.get_unique_variable_name)
    x = operator.inputs[0].full_name
    logits = network(g, x, [w.astype(dtype) for w in m.weights],
                     [b.astype(dtype) for b in m.biases], m.activations)
    if is_classifier(est):
        classifier_outputs(g, logits, est.classes_, est._multilabel,
                           operator.outputs[0].full_name, operator.outputs[1].full_name)
    else:
        output(g, logits, m.loss, out=operator.outputs[0].full_name)
    for name, arr in g.initializers:
        if arr.dtype == object:
            container.add_initializer(name, _onnx().TensorProto.STRING, list(arr.shape),
                                      [s.encode() for s in arr.ravel()])
        else:
            container.add_initializer(name, _elem_type(arr.dtype), list(arr.shape),
                                      arr.ravel().tolist())
    for op, ins, outs, attrs in g.nodes:
        container.add_node(op, ins, outs, name=scope.get_unique_operator_name(op), **attrs)
