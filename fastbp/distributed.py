"""Data-parallel training over MPI (mpi4py).

Every rank holds the whole data set and the same model.  For each global batch (the same
sequence on every rank: the shuffling seed is shared), rank r trains on its contiguous
shard of the batch; the flat gradient buffer, scaled by shard/batch size, is summed with
one in-place Allreduce, so every rank ends the step with the batch-mean gradient and takes
the same optimizer step.  Parameters are broadcast from rank 0 at the start.  A rank that
raises aborts the communicator so that the other ranks do not wait forever.

Before the first collective of a run, the ranks agree (``agree``): one allgather of each
rank's validation outcome and a fingerprint of its run (model, optimizer, data shapes and
a sample hash, options, seed).  A rank whose input failed validation, or a disagreement,
makes every rank raise the same error instead of leaving the others waiting; a seed of
None becomes rank 0's draw, so every rank shuffles alike.
"""
import hashlib
import sys
import time

import numpy as np


def world():
    """MPI.COMM_WORLD, with a clear error when mpi4py is missing."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("distributed training needs mpi4py and an MPI library: "
                          f"pip install 'fastbp[mpi]' mpich ({exc})") from None
    return MPI.COMM_WORLD


def data_digest(X, y, rows=1024):
    """A short hash of up to `rows` evenly spaced rows of X and of all of y: different data
    on two ranks shows as different digests (without reading all of a large X)."""
    h = hashlib.blake2b(digest_size=12)
    step = max(1, X.shape[0] // rows)
    if hasattr(X, "indptr"):            # sparse rows (CSRRows): its arrays, sampled
        h.update(repr(X.shape).encode())
        for a in (X.indptr[::step], X.indices[::step], X.values[::step]):
            h.update(np.ascontiguousarray(a).tobytes())
    else:
        h.update(np.ascontiguousarray(X[::step]).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def agree(comm, failure, fields):
    """Every rank's first collective of a run.  failure: the exception this rank's
    validation raised, or None; fields: a dict of what must be equal on every rank, whose
    "seed" entry, if None, is replaced by rank 0's fresh draw.  Raises on every rank when
    any rank failed (that rank re-raises its own error) or when the fields differ; returns
    the fields (with the shared seed)."""
    mine = dict(fields or {})
    proposal = int(np.random.SeedSequence().entropy % (2**31))
    everyone = comm.allgather(
        (None if failure is None else f"{type(failure).__name__}: {failure}", mine, proposal))
    if failure is not None:
        raise failure
    for r, (err, _, _) in enumerate(everyone):
        if err is not None:
            raise ValueError(f"MPI rank {r} failed before training: {err}")
    ref = everyone[0][1]
    for r, (_, theirs, _) in enumerate(everyone[1:], 1):
        diff = sorted(k for k in set(ref) | set(theirs) if ref.get(k) != theirs.get(k))
        if diff:
            raise ValueError(
                f"MPI ranks disagree on {', '.join(diff)} (rank 0: "
                f"{[ref.get(k) for k in diff]}, rank {r}: {[theirs.get(k) for k in diff]}); "
                "every rank must call fit with the same model, data and options")
    if mine.get("seed", 0) is None:
        mine["seed"] = everyone[0][2]
    return mine


class DataParallel:
    def __init__(self, comm, model):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.model = model
        comm.Bcast(model.params, root=0)
        model.set_dropout_seed(comm.bcast(model.dropout_seed, root=0))   # the same masks

    def shard(self, start, stop):
        """This rank's rows [lo, hi) of the global batch [start, stop)."""
        base, extra = divmod(stop - start, self.size)
        lo = start + self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def average_grads(self, local_n, global_n):
        """grads <- sum over ranks of (local_n / global_n) * local mean gradient."""
        grads = self.model.grads
        if local_n != global_n:
            grads *= grads.dtype.type(local_n / global_n)
        self.comm.Allreduce(self.MPI.IN_PLACE, grads, op=self.MPI.SUM)

    def sum(self, values):
        buf = np.asarray(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def abort(self, exc):
        print(f"fastbp: MPI rank {self.rank} of {self.size} failed: {type(exc).__name__}: "
              f"{exc}; aborting all ranks", file=sys.stderr, flush=True)
        # The launcher forwards each rank's stderr through a pipe and stops reading it when
        # a rank aborts: without a pause the message (and MPICH's own) was lost now and then
        # (seen once in CI, a loaded machine).  The other ranks wait in a collective anyway.
        time.sleep(0.5)
        self.comm.Abort(1)
