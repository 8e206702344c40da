"""Data-parallel training over MPI (mpi4py).

Every rank holds the whole data set and the same model.  For each global batch (the same
sequence on every rank: the shuffling seed is shared), rank r trains on its contiguous
shard of the batch; the flat gradient buffer, scaled by shard/batch size, is summed with
one in-place Allreduce, so every rank ends the step with the batch-mean gradient and takes
the same optimizer step.  Parameters are broadcast from rank 0 at the start.  A rank that
raises aborts the communicator so that the other ranks do not wait forever.
"""
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


class DataParallel:
    def __init__(self, comm, model):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.model = model
        comm.Bcast(model.params, root=0)

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
