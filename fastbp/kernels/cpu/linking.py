"""Calling a compiled kernel by address instead of by name (CPU, Numba), to save compile time.

Why: when a jitted function calls another by name, Numba links the callee's compiled code
(and everything it links) into the caller and LLVM re-optimises and re-emits all of it for
the caller.  Called through its address, a kernel is compiled once.

How: the caller receives the callee's entry address as a plain int64 (cheap for Python to
type), and turns it into a Numba first-class function value of the callee's exact
signature with an intrinsic (``function_at``); Numba then calls it with its own calling
convention.  Nothing address-specific is compiled into the caller, so it stays cacheable;
the address is looked up in the running process (``jit_address``), from Numba's cache when
warm.  Helpers with one or two callers are inlined at Numba's level instead
(``inline="always"``).

Caution: the address must be of a function compiled for exactly that signature;
``jit_address`` is the only source of them, and each kernel pairs it with its signature.
Measurements: docs/performance.md.
"""
import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.experimental.function_type import _get_jit_address
from numba.extending import intrinsic


def jit_address(dispatcher, signature):
    """Entry address (int) of `dispatcher` compiled for `signature` (compiled, or loaded
    from Numba's cache, on first use), in Numba's calling convention."""
    addr = _get_jit_address(dispatcher, signature)
    if addr <= 0:
        raise RuntimeError(f"no compiled entry for {dispatcher} {signature}")
    return addr


def function_at(context, builder, fnty, addr):
    """Codegen: the first-class function value of type fnty (a numba FunctionType) whose
    entry is at addr (an int64 IR value from ``jit_address``)."""
    f = cgutils.create_struct_proxy(fnty)(context, builder)
    null = cgutils.voidptr_t(None)
    f.c_addr = null    # no C wrapper and no Python object: Numba calls jit_addr directly
    f.py_addr = null
    f.jit_addr = builder.inttoptr(addr, cgutils.voidptr_t)
    return f._getvalue()


def function_at_typed(signature, addr, C):
    """An intrinsic's (typing, codegen): the first-class function of `signature` whose
    entry is at addr (C only carries the dtype)."""
    fnty = types.FunctionType(signature)

    def codegen(context, builder, sig, args):
        return function_at(context, builder, fnty, args[0])
    return fnty(addr, C), codegen


@intrinsic
def as_writable(typingctx, arr):
    """arr itself, typed as a writable array.  Read-only is a compile-time flag of Numba's
    array type, so a read-only input (a memory-mapped X, say) would not match a callee
    signature of writable arrays; callers pass arrays they only read through this."""
    def codegen(context, builder, sig, args):
        return args[0]
    return arr.copy(readonly=False)(arr), codegen


@intrinsic
def assume_c(typingctx, arr):
    """arr itself, typed as a writable C-contiguous array: for an array of any layout whose
    strides the caller has checked to be C-contiguous (see gemm.matmul_checked)."""
    if not isinstance(arr, types.Array):
        return None

    retty = arr.copy(layout="C", readonly=False)

    def codegen(context, builder, sig, args):
        out = args[0]      # the same data model for every layout: only the type changes
        if context.enable_nrt:
            context.nrt.incref(builder, retty, out)   # a new reference, as a view would be
        return out
    return retty(arr), codegen


@intrinsic
def reshape_c(typingctx, arr, shape):
    """arr (C-contiguous) viewed with the given shape (a tuple of ints), without Numba's
    reshape: that calls a C helper (numba_attempt_nocopy_reshape) on every reshape, ~12 ns
    here, and a small network's training step makes about a hundred of them (workspace
    views, packed panels).  Measured (in-process A/B, 40-100-100-10 batch 32, one thread,
    15 rounds of 1500 steps each way round): 1.04-1.05x a step.  The caller guarantees that
    the shape holds arr.size elements; nothing is checked."""
    if not (isinstance(arr, types.Array) and arr.layout == "C"
            and isinstance(shape, types.UniTuple) and isinstance(shape.dtype, types.Integer)):
        return None
    ndim = shape.count
    retty = arr.copy(ndim=ndim, layout="C")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        dst = context.make_array(retty)(context, builder)
        intp = context.get_value_type(types.intp)
        dims = [builder.sext(d, intp) if d.type.width < intp.width else d
                for d in cgutils.unpack_tuple(builder, args[1], ndim)]
        strides = [src.itemsize] * ndim
        for q in range(ndim - 2, -1, -1):
            strides[q] = builder.mul(strides[q + 1], dims[q + 1])
        context.populate_array(dst, data=src.data, shape=dims, strides=strides,
                               itemsize=src.itemsize, meminfo=src.meminfo, parent=src.parent)
        out = dst._getvalue()
        if context.enable_nrt:
            context.nrt.incref(builder, retty, out)
        return out
    return retty(arr, shape), codegen


@intrinsic
def num_threads(typingctx):
    """numba.get_num_threads() (the threads a parallel region started here would run on),
    by the threading layer's symbol, as Numba's own parallel loops ask for it.  Numba's
    overload of get_num_threads calls it through a ctypes pointer instead, and a function
    holding one cannot be cached."""
    numba.get_num_threads()     # starts the threading layer, which defines the symbol

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(cgutils.intp_t, [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "get_num_threads")
        return builder.call(fn, [])
    return types.intp(), codegen
