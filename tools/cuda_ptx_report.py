"""Compile every CUDA kernel that training launches, without a GPU, and report what the
compiler made of it: registers, local memory (stack frame and spills), and instructions
that compute in float64.

    python tools/cuda_ptx_report.py [--cc 9.0] [--ptx DIR]

Needs NVRTC, libNVVM and ptxas, which come in pip wheels that install on a machine without
a GPU or a driver (``pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12``).  Two
steps:

1. A child process with NUMBA_ENABLE_CUDASIM=1 trains small networks on Numba's CUDA
   simulator (every activation, loss and optimizer, plus predict and evaluate) and records
   each launch's kernel and argument types (those of the NumPy arrays the simulator's
   arrays wrap: the types the matching device arrays get).
2. This process compiles each distinct (kernel, types) to PTX for the compute capability
   ``--cc`` with ``numba.cuda.compile_ptx``, counts the PTX instructions on f64 operands,
   and runs ``ptxas -v`` on it for the resource use.

The backend stores float32, and float64 arithmetic runs at a fraction of float32's rate
(1/64 on consumer GPUs) and costs conversions each way: the GEMM and the activations
should show none beyond converting their float64 `slope` argument once.  The losses (the
log-sum-exp, the row losses) and the optimizer updates (float64 scalars, as on the CPU)
keep float64 on purpose.  The count of registers and of local memory is what decided the
GEMM's shape on the H100 (gemm.py); here it can be checked before a GPU is at hand.  The
figures come from this machine's NVVM and ptxas, which need not be the versions a GPU
machine's driver uses: 2026-11-24, CUDA 12 wheels, the 128 x 128 GEMM showed 240
registers and a 256-byte stack (its accumulators, copied once for the epilogue's loop),
where Nsight Compute on the H100 had counted 216 registers.
"""
import argparse
import collections
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time

RECORD = "--record"


# ----------------------------------------------------------------------------- step 1
def _record(path):
    """(in the simulator) Train small networks, pickling {(module, name): {types}} to path."""
    import numba
    import numpy as np
    from numba import cuda

    sys.path.insert(0, os.getcwd())
    import fastbp
    from fastbp.kernels import cuda as kc
    # the modules (the package's names `gemm` and `launch` are functions)
    activations, gemm, launch, losses, optim = (
        sys.modules[f"fastbp.kernels.cuda.{name}"]
        for name in ("activations", "gemm", "launch", "losses", "optim"))

    modules = (activations, gemm, losses, optim)
    seen = collections.defaultdict(set)

    def name_of(kernel):
        for mod in modules:
            for name, value in vars(mod).items():
                if value is kernel:
                    return mod.__name__, name
        raise LookupError(f"kernel {kernel!r} is not a module-level name")

    def real_type(arg):
        # The simulator types an empty array 'A' (a zero stride reads as broadcast); a
        # real device array of the same shape is 'C', like the NumPy array it wraps.
        return numba.typeof(getattr(arg, "_ary", arg))

    def recording(kernel, grid, block, args, stream=0, plan=None):
        seen[name_of(kernel)].add(tuple(real_type(a) for a in args))
        return plain(kernel, grid, block, args, stream, plan)

    plain = launch.launch
    for mod in modules + (kc,):
        if getattr(mod, "launch", None) is plain:
            mod.launch = recording

    rng = np.random.default_rng(0)
    X = rng.standard_normal((24, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 24)
    onehot = np.eye(3, dtype=np.float32)[labels]
    runs = [("relu", "cross_entropy", labels, "sgd"),
            ("leaky_relu", "cross_entropy", onehot, "adam"),
            ("sigmoid", "mse", onehot, "sgd"),
            ("tanh", "binary_cross_entropy", onehot, "adam"),
            ("gelu", "cross_entropy", labels, "sgd")]
    for act, loss, y, opt in runs:
        model = fastbp.MLP([5, 7, 3], activation=act, loss=loss, seed=0, device="cuda")
        optimizer = (fastbp.SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-4) if opt == "sgd"
                     else fastbp.Adam(model, lr=1e-3, weight_decay=1e-4))
        fastbp.fit(model, X, y, optimizer=optimizer, batch_size=8, epochs=1, l2=1e-4,
                   verbose=0)
        model.predict(X)
        model.evaluate(X, y)
        z, code = cuda.to_device(X[:8]), fastbp.kernels.activation_code(act)
        recording(activations.activation_forward, (1, 1), (8, 8),
                  (z, cuda.device_array_like(z), code, 0.01))
        recording(activations.activation_backward, (1, 1), (8, 8),
                  (cuda.device_array_like(z), z, z, code, 0.01))
    # both GEMM tiles, unsplit and split, in every layout and epilogue (training's small
    # products pick one tile only)
    n = 2 * 8        # K of two 8-wide slices, so that splits=2 gives two parts
    a = cuda.to_device(rng.standard_normal((n, n)).astype(np.float32))
    c = cuda.device_array((n, n), np.float32)
    bias = cuda.to_device(np.zeros(n, np.float32))
    for ta in (False, True):
        for tb in (False, True):
            for epi in (kc.EPI_NONE, kc.EPI_BIAS_ACT, kc.EPI_ACT_GRAD):
                for tile, splits in ((64, 1), (128, 1), (64, 2)):
                    kc.gemm(a, ta, a, tb, c, epi, bias, 1, 0.01, c, c, c, tile=tile,
                            splits=splits)
    with open(path, "wb") as f:
        pickle.dump(dict(seen), f)


# ----------------------------------------------------------------------------- step 2
_F64 = re.compile(r"^\s*(?:@%p\d+\s+)?([a-z]+(?:\.[a-z0-9]+)*\.f64)\b", re.MULTILINE)
_CVT64 = re.compile(r"^\s*(?:@%p\d+\s+)?(cvt(?:\.[a-z]+)*\.f(?:32\.f64|64\.f32))\b", re.MULTILINE)
_PTXAS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                    r"loads.*?Used (\d+) registers", re.DOTALL)


def _ptxas(ptxas, ptx, cc):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        out = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", src, "-o",
                              os.path.join(tmp, "k.cubin")], capture_output=True, text=True,
                             check=True)
    m = _PTXAS.search(out.stdout + out.stderr)
    return tuple(int(x) for x in m.groups()) if m else None


def _find_ptxas():
    found = shutil.which("ptxas")
    if found:
        return found
    try:
        import nvidia.cuda_nvcc
        for base in nvidia.cuda_nvcc.__path__:
            path = os.path.join(base, "bin", "ptxas")
            if os.path.exists(path):
                return path
    except ImportError:
        pass
    return None


def report(cc, ptx_dir=None):
    """Print one row per compiled kernel; returns the rows (for tests)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "launches.pkl")
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        subprocess.run([sys.executable, os.path.abspath(__file__), RECORD, path], env=env,
                       check=True)
        with open(path, "rb") as f:
            seen = pickle.load(f)

    import importlib

    from numba import cuda
    ptxas = _find_ptxas()
    rows = []
    print("| kernel | argument types | registers | stack / spill bytes | f64 ops | "
          "f32<->f64 conversions | PTX + ptxas, s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (module, name), sigs in sorted(seen.items()):
        dispatcher = getattr(importlib.import_module(module), name)
        for sig in sorted(sigs, key=str):
            t0 = time.perf_counter()
            ptx, _ = cuda.compile_ptx(dispatcher.py_func, sig, cc=cc)
            f64 = collections.Counter(_F64.findall(ptx))
            cvt = collections.Counter(_CVT64.findall(ptx))
            res = _ptxas(ptxas, ptx, cc) if ptxas else None
            seconds = time.perf_counter() - t0
            regs = res[3] if res else "?"
            local = f"{res[0]} / {res[1]}" if res else "?"
            short = ", ".join(str(t).replace("array(", "(") for t in sig)
            print(f"| {name} | {short} | {regs} | {local} | "
                  f"{sum(f64.values())} {dict(f64) or ''} | {sum(cvt.values())} | "
                  f"{seconds:.2f} |")
            rows.append((module, name, sig, res, f64, cvt))
            if ptx_dir:
                os.makedirs(ptx_dir, exist_ok=True)
                with open(os.path.join(ptx_dir, f"{name}_{len(rows)}.ptx"), "w") as f:
                    f.write(ptx)
    if not ptxas:
        print("(ptxas not found: registers and local memory not reported)")
    return rows


def main():
    if len(sys.argv) == 3 and sys.argv[1] == RECORD:
        _record(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", default="9.0", help="compute capability (default 9.0, H100)")
    ap.add_argument("--ptx", help="also write each kernel's PTX into this folder")
    args = ap.parse_args()
    report(tuple(int(x) for x in args.cc.split(".")), args.ptx)


if __name__ == "__main__":
    main()
