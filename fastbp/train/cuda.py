"""The CUDA epoch: batches gathered by index on the device, losses and correct counts
summed there, one synchronisation per epoch."""
import numpy as np


def epoch_cuda(model, optimizer, Xd, yd, w, order, bs, has_acc, bar, dev, l2,
               l2_per_weight=False):
    """One epoch on the device: batches gathered by index on the GPU, loss and accuracy
    summed there; returns (sum of losses times batch weight totals, correct) with one
    synchronisation.  w: host sample weights (n,) float64 or None (each batch's weight
    total is summed on the host, in batch order, as the CPU does); l2, l2_per_weight as
    kernels/cpu/steps.l2_factor.

    ``dev`` holds, per batch length m, the gather buffers, the index buffer and the
    recorded gather launches (kernels/cuda/launch.py), whose only changing argument is the
    batch's offset into the epoch's order."""
    from numba import cuda

    from ..kernels import cuda as K
    from ..kernels.cpu.losses import weight_total
    from .state import batch_l2
    backend = model.backend
    n = order.shape[0]          # the rows trained on (a subset with validation_split)
    if "idx" not in dev:
        dev["idx"] = cuda.device_array(n, np.int64)
    idx_d = dev["idx"]
    idx_d.copy_to_device(np.ascontiguousarray(order, dtype=np.int64))
    if w is not None and "w" not in dev:
        dev["w"] = cuda.to_device(w.reshape(-1, 1))
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
            wb = None
            if w is not None:
                wb2 = cuda.device_array((m, 1), np.float64)
                K.gather_rows(dev["w"], idx_d, wb2, plan=gathers)
                wb = wb2.reshape(m)
            dev[m] = [xb, ybb, wb, gathers, None]
        xb, ybb, wb, gathers, count = dev[m]
        for g in gathers:
            g.set_scalar(2, start)
            g()
        total = float(m) if w is None else weight_total(w[order[start:stop]], 0)
        backend.step(xb, ybb, batch_l2(l2, l2_per_weight, total), wb, total,
                     dropout=(optimizer.step_count + 1, 0) if model.has_dropout else None)
        optimizer.step()
        if has_acc:
            if count is None or count[0] is not backend.last_output:
                count = dev[m][4] = (backend.last_output, [])
                backend.count_correct_device(ybb, plan=count[1])
            K.run_plan(count[1])
        if bar is not None:
            bar.update(m)
    return backend.read_counters()
