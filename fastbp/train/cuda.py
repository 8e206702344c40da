"""The CUDA epoch: batches gathered by index on the device, losses and correct counts
summed there, one synchronisation per epoch."""
import numpy as np


def epoch_cuda(model, optimizer, Xd, yd, order, bs, has_acc, bar, dev, l2):
    """One epoch on the device: batches gathered by index on the GPU, loss and accuracy
    summed there; returns (sum of losses, correct) with one synchronisation.

    ``dev`` holds, per batch length m, the gather buffers, the index buffer and the
    recorded gather launches (kernels/cuda/launch.py), whose only changing argument is the
    batch's offset into the epoch's order."""
    from numba import cuda

    from ..kernels import cuda as K
    backend = model.backend
    n = order.shape[0]          # the rows trained on (a subset with validation_split)
    if "idx" not in dev:
        dev["idx"] = cuda.device_array(n, np.int64)
    idx_d = dev["idx"]
    idx_d.copy_to_device(np.ascontiguousarray(order, dtype=np.int64))
    backend.read_counters()
    for start in range(0, n, bs):
        stop = min(start + bs, n)
        m = stop - start
        if m not in dev:
            xb = cuda.device_array((m,) + Xd.shape[1:], Xd.dtype)
            ybb = cuda.device_array((m,) + yd.shape[1:], yd.dtype)
            gathers = []
            K.gather_rows(Xd, idx_d, xb, plan=gathers)
            if yd.ndim == 1:
                K.gather_rows(yd.reshape(yd.shape[0], 1), idx_d, ybb.reshape(m, 1), plan=gathers)
            else:
                K.gather_rows(yd, idx_d, ybb, plan=gathers)
            dev[m] = [xb, ybb, gathers, None]
        xb, ybb, gathers, count = dev[m]
        for g in gathers:
            g.set_scalar(2, start)
            g()
        backend.step(xb, ybb, l2)
        optimizer.step()
        if has_acc:
            if count is None or count[0] is not backend.last_output:
                count = dev[m][3] = (backend.last_output, [])
                backend.count_correct_device(ybb, plan=count[1])
            K.run_plan(count[1])
        if bar is not None:
            bar.update(m)
    return backend.read_counters()
