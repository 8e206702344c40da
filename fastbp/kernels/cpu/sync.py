"""Threads of one parallel region taking turns through phases of work (CPU, Numba).

A split training step (steps.run_steps) is two phases, each shared among n_parts threads:
the batch's rows, then the layers' rows, and every phase needs all parts of the one before
it.  Started as a parallel region per phase, that costs two region launches per step
(~1.0-1.4 us each before a thread starts, ~0.2-0.5 us to join, measured with the cycle
counter on 2 threads): ~7% of a 40-100-100-10 batch-32 step of ~40 us.  Instead one region
runs a whole chunk of steps and its threads wait for each other between phases on a
counter in shared memory.

The protocol, over an int64 buffer from ``sync_buffer(n_parts)`` (one counter per 128
bytes, so that no two share a cache line):

    done    = sync[0]: parts finished, over all phases so far
    claimed = sync[(part + 1) * LINE]: the last phase whose part `part` was claimed

Phase q's parts may start once done >= q * n_parts (every part of phases < q finished).
A thread claims part j of phase q by moving claimed[j] from q - 1 to q (compare and
swap), so each part of each phase runs exactly once.  Each thread claims its own part
first, then any part still unclaimed after it finished its own: a thread that the
runtime started late (or never, where it runs the region's iterations one after the
other on fewer threads) has its parts done by the others.  A thread only ever waits for
parts that are claimed, that is, being run by a thread that is running, so the waiting
ends whatever the runtime does with the region's iterations.

Waiting spins (the x86 ``pause`` hint between reads) and gives up the core to the
scheduler (``sched_yield``) every YIELD_SPINS spins, in case the thread it waits for is
waiting for this core.
"""
import platform
import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LINE = 16            # int64 slots between counters: 128 bytes
YIELD_SPINS = 1000   # pause hints between yields while waiting (a pause is ~30 ns here)


def sync_buffer(n_parts):
    """A zeroed int64 buffer for n_parts threads' counters (see the module docstring)."""
    return np.zeros((n_parts + 1) * LINE, np.int64)


def _slot(context, builder, aryty, ary, idx):
    """Pointer to element idx of a 1-D array (no bounds or negative-index handling)."""
    a = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, a, [idx], wraparound=False)


def _int64_vector(arr):
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.int64


@intrinsic
def atomic_add(typingctx, arr, idx, val):
    """arr[idx] += val as one atomic operation (sequentially consistent); returns the old
    value.  arr: 1-D int64 array."""
    if not _int64_vector(arr):
        return None

    def codegen(context, builder, sig, args):
        ptr = _slot(context, builder, sig.args[0], args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, val, "seq_cst")
    return types.int64(arr, idx, val), codegen


@intrinsic
def atomic_load(typingctx, arr, idx):
    """arr[idx], read atomically (acquire: no later read is done before it), and read
    again on every call: the compiler may not keep it in a register."""
    if not _int64_vector(arr):
        return None

    def codegen(context, builder, sig, args):
        ptr = _slot(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(arr, idx), codegen


@intrinsic
def compare_and_swap(typingctx, arr, idx, expected, new):
    """If arr[idx] == expected, set it to new, atomically; returns whether it did."""
    if not _int64_vector(arr):
        return None

    def codegen(context, builder, sig, args):
        ptr = _slot(context, builder, sig.args[0], args[0], args[1])
        exp = context.cast(builder, args[2], sig.args[2], types.int64)
        new_ = context.cast(builder, args[3], sig.args[3], types.int64)
        res = builder.cmpxchg(ptr, exp, new_, "seq_cst", "seq_cst")
        return builder.extract_value(res, 1)
    return types.boolean(arr, idx, expected, new), codegen


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def spin_pause(typingctx):
    """The x86 ``pause`` hint for a spin-wait loop (nothing elsewhere)."""
    def codegen(context, builder, sig, args):
        if _X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty,
                                                        "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def yield_core(typingctx):
    """sched_yield(): let the scheduler run another thread on this core (POSIX; nothing on
    Windows)."""
    def codegen(context, builder, sig, args):
        if sys.platform != "win32":
            fnty = ir.FunctionType(ir.IntType(32), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "sched_yield"),
                         [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(cache=True, _nrt=False, inline="always")
def reset_phases(sync, n_parts):
    """Before a region: no part of any phase claimed or finished."""
    sync[0] = 0
    for j in range(n_parts):
        sync[(j + 1) * LINE] = -1


@njit(cache=True, _nrt=False)
def wait_for_phase(sync, q, n_parts):
    """Wait until every part of the phases before phase q is finished."""
    target = q * n_parts
    spins = 0
    while atomic_load(sync, 0) < target:
        spin_pause()
        spins += 1
        if spins == YIELD_SPINS:
            yield_core()
            spins = 0


@njit(cache=True, _nrt=False, inline="always")
def claim_part(sync, q, part):
    """Claim part `part` of phase q (phase q - 1's part was claimed before); returns
    whether this thread got it."""
    return compare_and_swap(sync, (part + 1) * LINE, q - 1, q)


@njit(cache=True, _nrt=False, inline="always")
def part_done(sync):
    """Count one part of the current phase as finished (after all its writes)."""
    atomic_add(sync, 0, 1)
