"""Sparse input (CSR rows) for the first layer (CPU, Numba).

A sparse X (n, d) stays in CSR form from validation to the last epoch: batches are
gathered as CSR rows (csr_take), the first layer's product and weight gradient run over
the stored values only, and the data gradient of the first layer is never needed:

    forward   Z_0[r, o] = sum_k v_k W_0[o, j_k] + b_0[o]      (row r's values v_k at j_k)
    backward  dW_0[o, j] = sum_r G_0[r, o] X[r, j],  db_0[o] = sum_r G_0[r, o]

CSR arrays: indptr (n + 1,) int64, indices (nnz,) int64, sorted and unique within a row,
values (nnz,) of the model's dtype (fastbp._validation.as_csr makes them).  Each sum runs
over the row's (or the batch's) entries in order, accumulated with a fused multiply-add
like the GEMM's, whose sum over a dense row adds the zeros in between exactly: outputs and
gradients match the dense path's.  Output units are shared among threads; each value is
computed by one thread in a fixed order, so the results do not depend on the thread count.
"""
import numpy as np
from numba import njit, prange

from .linking import num_threads


@njit(cache=True, _nrt=False)
def csr_take(indptr, indices, values, rows, out_ptr, out_idx, out_val):
    """Rows `rows` (m,) of a CSR matrix into the CSR buffers out_ptr (m + 1,), out_idx and
    out_val (each at least the rows' stored entries long); returns their entry count."""
    pos = 0
    out_ptr[0] = 0
    for r in range(rows.shape[0]):
        src = rows[r]
        for k in range(indptr[src], indptr[src + 1]):
            out_idx[pos] = indices[k]
            out_val[pos] = values[k]
            pos += 1
        out_ptr[r + 1] = pos
    return pos


@njit(cache=True, fastmath={"contract"}, _nrt=False)
def _linear_units(indptr, indices, values, W, b, Z, o0, o1):
    """Units o0:o1, four at a time: four independent sums per stored value (one chain of
    dependent additions each would leave the core waiting on the previous one)."""
    m = Z.shape[0]
    o = o0
    while o + 4 <= o1:
        w0, w1, w2, w3 = W[o], W[o + 1], W[o + 2], W[o + 3]
        for r in range(m):
            a0 = a1 = a2 = a3 = Z.dtype.type(0)
            for k in range(indptr[r], indptr[r + 1]):
                v, j = values[k], indices[k]
                a0 += v * w0[j]
                a1 += v * w1[j]
                a2 += v * w2[j]
                a3 += v * w3[j]
            Z[r, o] = a0 + b[o]
            Z[r, o + 1] = a1 + b[o + 1]
            Z[r, o + 2] = a2 + b[o + 2]
            Z[r, o + 3] = a3 + b[o + 3]
        o += 4
    for o in range(o, o1):
        w = W[o]
        for r in range(m):
            acc = Z.dtype.type(0)
            for k in range(indptr[r], indptr[r + 1]):
                acc += values[k] * w[indices[k]]
            Z[r, o] = acc + b[o]


@njit(cache=True, parallel=True)
def csr_linear(indptr, indices, values, W, b, Z):
    """Z (m, out) = X W^T + b for CSR rows X (m, d) and W (out, d), b (out,); output units
    in blocks of 4 shared among the threads.  Unit by unit, so that a row of W (d values)
    stays in cache while every row of the batch reads it: row by row, each stored value
    read a cache line of W per unit (12 ms against 3 ms for 200 rows of 50 values, 256
    units of 50,000 inputs).  (The activation is a separate pass,
    activations.activation_forward: fused in here it compiled the whole activation
    chain again.)"""
    n_out = Z.shape[1]
    if num_threads() < 2:
        _linear_units(indptr, indices, values, W, b, Z, 0, n_out)
        return
    n_blocks = (n_out + 3) // 4
    for blk in prange(n_blocks):
        _linear_units(indptr, indices, values, W, b, Z, blk * 4, min(n_out, blk * 4 + 4))


@njit(cache=True, fastmath={"contract"}, _nrt=False)
def _weight_grad_units(indptr, indices, values, G, dW, db, o0, o1):
    m = G.shape[0]
    for o in range(o0, o1):
        d = dW[o]
        d[:] = 0
        s = db.dtype.type(0)    # summed in the storage dtype, in row order, as the GEMM's
        for r in range(m):
            g = G[r, o]
            s += g
            if g == 0:
                continue
            for k in range(indptr[r], indptr[r + 1]):
                d[indices[k]] += g * values[k]
        db[o] = s


@njit(cache=True, parallel=True)
def csr_weight_grad(indptr, indices, values, G, dW, db):
    """dW (out, d) = G^T X and db (out,) = column sums of G (m, out), for CSR rows X
    (m, d); dW is overwritten (zeroed, then the entries of X's columns added), output
    units in blocks of 4 shared among the threads."""
    n_out = G.shape[1]
    if num_threads() < 2:
        _weight_grad_units(indptr, indices, values, G, dW, db, 0, n_out)
        return
    n_blocks = (n_out + 3) // 4
    for blk in prange(n_blocks):
        _weight_grad_units(indptr, indices, values, G, dW, db, blk * 4,
                           min(n_out, blk * 4 + 4))


@njit(cache=True)
def most_entries(indptr, m):
    """The most stored entries any m rows hold together (the batch buffers' length)."""
    counts = np.diff(indptr)
    counts = np.sort(counts)[::-1]
    total = 0
    for i in range(min(m, counts.shape[0])):
        total += counts[i]
    return total
