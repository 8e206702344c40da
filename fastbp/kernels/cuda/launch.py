"""Kernel launches, and launches whose arguments are marshalled once (``Prepared``).

Every launch helper in this package ends in ``launch(kernel, grid, block, args, stream,
plan)``.  With ``plan=None`` that is Numba's ordinary ``kernel[grid, block, stream](*args)``.
With a list as ``plan`` nothing runs: a ``Prepared`` launch (on the same stream) is
appended instead, and ``run_plan(plan)`` replays the list.

Why: a training step launches the same dozen kernels on the same device buffers every
step, and Numba's launch path types, checks and converts every argument on every call.
Measured on an H100 host (tools/cuda_overhead.py, 2026-11-23): 70 us per launch of the
15-argument GEMM, against 18 us for a one-argument kernel and 17 us for torch.matmul; a
small network's step was 1 ms, almost all of it launch overhead.  ``Prepared`` does the
typing, compilation and argument conversion once, keeps the argument objects alive (the
converted device pointers stay valid) and then only asks the driver to launch.

It relies on numba-cuda internals (the compiled kernel's argument conversion and its
``cuda.core`` launch).  When they are not there (the CUDA simulator, another numba-cuda
version) ``Prepared`` falls back to the ordinary launch with the same arguments, so the
results are the same, only slower.
"""


def launch(kernel, grid, block, args, stream=0, plan=None):
    """kernel[grid, block, stream](*args), or append it to ``plan`` (a list) unlaunched."""
    if plan is None:
        kernel[grid, block, stream](*args)
    else:
        plan.append(Prepared(kernel, grid, block, args, stream))


def run_plan(plan):
    """Launch every Prepared entry of ``plan`` in order (asynchronous, each on its stream)."""
    for p in plan:
        p()


def _as3(dims):
    dims = tuple(dims) if isinstance(dims, tuple) else (dims,)
    return dims + (1,) * (3 - len(dims))


class Prepared:
    """One kernel launch with fixed arguments, converted for the driver once.

    ``set_scalar(i, value)`` changes the i-th argument when it is a number (an offset
    that moves every step, say) without converting the others again.
    """

    def __init__(self, kernel, grid, block, args, stream=0):
        self.kernel, self.grid, self.block, self.stream = kernel, grid, block, stream
        self.args = list(args)          # holds the device arrays: their pointers stay valid
        try:
            self._fast = self._convert()
        except Exception:  # noqa: BLE001 - simulator or other internals: plain launches
            self._fast = None

    def _convert(self):
        from cuda.core import LaunchConfig
        from cuda.core import launch as core_launch
        from numba.cuda.cudadrv import driver

        compiled = self.kernel.compile(tuple(self.kernel.typeof_pyval(a) for a in self.args))
        converted, keep, spans = [], [], []
        for ty, value in zip(compiled.argument_types, self.args):
            start = len(converted)
            compiled._prepare_args(ty, value, self.stream, keep, converted)
            spans.append((start, len(converted)))
        if keep:          # host arrays copied for the launch: not a fixed-argument launch
            raise TypeError("Prepared needs device arrays")
        try:
            config = LaunchConfig(grid=_as3(self.grid), block=_as3(self.block),
                                  shmem_size=0)
        except TypeError:
            config = LaunchConfig(grid=_as3(self.grid), block=_as3(self.block))
        func = compiled._codelibrary.get_cufunc().kernel
        stream = driver._to_core_stream(self.stream)
        self._spans = spans
        self._launch = core_launch
        return [stream, config, func] + converted

    def set_scalar(self, i, value):
        """Replace argument i (an int or float) for the next launches."""
        self.args[i] = value
        if self._fast is None:
            return
        start, stop = self._spans[i]
        slot = self._fast[3 + start]
        if stop - start != 1 or not hasattr(slot, "value"):
            raise TypeError(f"argument {i} is not a converted scalar")
        slot.value = value

    def __call__(self):
        if self._fast is not None:
            self._launch(*self._fast)
        else:
            self.kernel[self.grid, self.block, self.stream](*self.args)
