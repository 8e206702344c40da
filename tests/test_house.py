"""The shape of the code itself: what a newcomer relies on (docs/architecture.md)."""
import ast
import inspect
import os

import numpy as np

import fastbp

PACKAGE = os.path.dirname(fastbp.__file__)


def _module_imports():
    """{module: {fastbp modules it imports, at any depth of the file}}.  `from .. import x`
    imports the module x where x is one, else the package it names."""
    mods = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path[:-3], os.path.dirname(PACKAGE)).replace(os.sep, ".")
                mods[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    graph = {}
    for mod, path in mods.items():
        package = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in mods else base)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
        graph[mod] = {t for t in edges if t in mods and t != mod}
    return graph


def test_no_import_cycle_inside_fastbp():
    graph = _module_imports()
    state = {}          # 1: on the current path, 2: done

    def visit(mod, path):
        state[mod] = 1
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])


def test_mlp_signature_lists_its_real_parameters():
    params = list(inspect.signature(fastbp.MLP).parameters)
    assert params == ["sizes", "activation", "loss", "dtype", "seed", "init", "matmul",
                      "device", "label_smoothing", "delta", "dropout", "dropout_seed"]
    assert type(fastbp.MLP([3, 2])) is fastbp.MLP


def test_layout_matches_the_compiled_steps_offsets():
    from fastbp.kernels.cpu.steps import layer_offset
    from fastbp.layout import Layout
    sizes = [7, 5, 3, 11, 2]
    layout = Layout(sizes)
    for l in range(len(sizes) - 1):
        assert layout.weight_range(l)[0] == layer_offset(np.array(sizes, np.int64), l)
    assert layout.size == sum(b * (a + 1) for a, b in zip(sizes[:-1], sizes[1:]))
    m = fastbp.MLP(sizes, seed=0)
    for l, (w, b) in enumerate(zip(m.weights, m.biases)):
        w0, w1 = layout.weight_range(l)
        b0, b1 = layout.bias_range(l)
        assert np.shares_memory(w, m.params) and np.array_equal(w.ravel(), m.params[w0:w1])
        assert np.array_equal(b, m.params[b0:b1])


def test_model_buffers_belong_to_the_backend():
    """params and grads cannot be rebound (a rebound buffer would train arrays that predict
    never sees); they are filled in place."""
    m = fastbp.MLP([3, 4, 2], seed=0)
    for name in ("params", "grads", "weights", "biases"):
        try:
            setattr(m, name, None)
        except AttributeError:
            pass
        else:
            raise AssertionError(f"MLP.{name} could be rebound")
    m.params[...] = 0.5
    assert np.all(m.weights[0] == 0.5)


# The compiled functions allowed more than a dozen parameters, and why: the micro-kernel
# is the innermost loop (its operands' offsets and strides are scalars in registers), and
# the CUDA GEMM's launch arguments are marshalled one by one for recorded launches
# (kernels/cuda/launch.py), which take no tuples.
PARAMETER_LIMIT = 12
MORE_PARAMETERS = {("kernels/cpu/microkernel.py", "micro_kernel"): 14,
                   ("kernels/cuda/gemm.py", "kernel"): 17,
                   ("kernels/cuda/gemm.py", "load_slice"): 13}


def test_compiled_functions_take_about_a_dozen_parameters():
    """Compiled functions take their many arrays in named groups (kernels/cpu/steps.py's
    Data, Config, Buffers, ...; the GEMM's epilogue tuple), so none takes more than a
    dozen parameters, where two of the same type could be swapped unnoticed."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(folder, f)
            rel = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.FunctionDef) and any(
                        "jit" in ast.unparse(d) for d in node.decorator_list):
                    n = len(node.args.args) + len(node.args.kwonlyargs)
                    if n > MORE_PARAMETERS.get((rel, node.name), PARAMETER_LIMIT):
                        found[(rel, node.name)] = n
    assert not found, found
