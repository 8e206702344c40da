"""Whole training steps compiled into one function (CPU, Numba).

For a small network most of a step's time is spent crossing from Python into compiled
code (a dozen kernel calls, each with its argument checks, plus the batch gather).  Here
a chunk of consecutive steps runs inside one compiled call:

    for each batch of the epoch's order:
        gather rows of X, y                     (same copies as np.take)
        forward, fused loss, backward           (the kernels MLP.loss_and_grad calls)
        optional L2 on the weights
        optimizer update over the flat buffer  (optimizer_update)

The kernels are the same ones, called in the same order with the same arguments, so a
chunk gives bit-identical results to the step-by-step Python path.  Per-layer arrays are
views carved out of flat buffers by offset (no lists of arrays cross the boundary).

A step too small for parallel products (each product's parallel region costs more than it
saves) is either run on one thread or, with threads to spare, split: the batch's rows are
shared among the threads for gather, forward, loss and data gradients (rows are
independent there), then the layers' output rows are shared out for the weight gradients
and updates, in runs of equal work (train.layer_row_split).  One parallel region per chunk
of steps instead of one per product, and the same bits (see run_steps).  Measured (2
threads, SGD, in-process A/B against one thread, medians per process): 40-100-100-10 and
64-128-64-10 batch 32 1.0-1.26x (the spread is the machine's: some processes see no gain),
100-200-200-200-10 batch 64 1.24-1.39x.  Shared out by whole layers, as first done, a
network whose weights sit in one layer lost (784-100-10: 0.89-0.96x) and was not split;
shared by rows it gains (20 rounds, medians: 784-100-10 b32 split against one thread
1.10x; 40-100-100-10 b32 against the split by whole layers 1.04x).

What limits the split is the data the threads hand each other: every thread reads all of
W, half of it just updated on the other core, and the weight gradients read all rows of
the activations, half of them written on the other core.  Timed with the cycle counter
(40-100-100-10 b32, 2 threads): a split step took 38-41 us with shared buffers and
28.6-29.5 us with each thread on private copies of everything (wrong results, right
work); software prefetching of the other core's lines did not help.

The GEMM and the optimizer update are passed in as compiled functions (``kernel_pointers``)
instead of being called by name.  A call by name links the callee's compiled code, and
everything it links in turn (micro-kernel, packing, epilogues, parallel regions), into
this function, and Numba re-optimises and re-emits all linked code for every function
that links it.  Called through a pointer, that code is compiled once, with the kernel.
Measured (cold cache, `fastbp train --epochs 1`, A/B/A/B): run_steps' own compile
4.8 -> 3.0-3.3 s; the call costs ~8 us per chunk of steps.
"""
import numpy as np
from numba import njit, prange, types
from numba.experimental.function_type import _get_wrapper_address

from ..codes import LOSS_BCE, LOSS_CE_LABELS, LOSS_CE_TARGETS, LOSS_MSE
from .gemm import (
    EPI_ACT_GRAD,
    EPI_BIAS_ACT,
    EPI_NONE,
    column_chunk_address,
    gemm,
    gemm_blas,
)
from .linking import reshape_c
from .losses import (
    add_l2,
    add_l2_grad,
    binary_cross_entropy_rows,
    count_correct_labels,
    count_correct_multilabel,
    cross_entropy_labels_rows,
    cross_entropy_targets_rows,
    l2_loss,
    mean_row_loss,
    mse_rows,
)
from .optim import (
    optimizer_update,
    optimizer_update_serial,
)
from .sync import claim_part, part_done, reset_phases, wait_for_phase



@njit(cache=True)
def layer_offset(sizes, l):
    """Start of layer l's [W (out x in), b (out)] in the flat parameter buffer."""
    off = 0
    for q in range(l):
        off += sizes[q + 1] * (sizes[q] + 1)
    return off


@njit(cache=True)
def activation_offset(sizes, l, m):
    """Start of layer l's (m, out) block in the flat activation buffers (zbuf, abuf, gbuf)."""
    off = 0
    for q in range(l):
        off += m * sizes[q + 1]
    return off


@njit(cache=True, inline="always")
def _rows(buf, off, m, width, r0, r1):
    """Rows r0:r1 of the (m, width) matrix stored from buf[off]."""
    return reshape_c(buf[off + r0 * width:off + r1 * width], (r1 - r0, width))


@njit(cache=True)
def loss_scale(loss_code, m, n_out):
    """1 / the count the loss averages over: rows (cross-entropy) or elements (mse, bce)."""
    if loss_code == LOSS_CE_LABELS or loss_code == LOSS_CE_TARGETS:
        return 1.0 / m
    return 1.0 / (m * n_out)


@njit(cache=True, _nrt=False, inline="always")
def _layer_weight_grad(l, o0, o1, m, sizes, act_code, params, grads, zbuf, abuf, gbuf, xbuf,
                       apack, bpack, parallel, gemm_fn, chunk_addr):
    """Rows o0:o1 of dW_l = G_l^T A_{l-1} (out, in) and of db_l = column sums of G_l,
    over all m rows of the batch.

    The product's op(A) is G_l^T restricted to rows o0:o1, i.e. columns o0:o1 of G_l
    (m, out).  The GEMM takes C-contiguous operands, so it gets G_l's buffer from column
    o0 on as an (m, out) matrix of the same row stride: its row k is G_l[k, o0:] followed
    by the first o0 values of row k + 1, and the GEMM only uses its first o1 - o0 columns
    (the packing of an edge panel may read past them into the panel's padding, which
    nothing stores).  For the last layer that view runs o0 values past the block, so gbuf
    has max(sizes) values of slack."""
    fan_in = sizes[l]
    fan_out = sizes[l + 1]
    w_off = layer_offset(sizes, l)
    dW = reshape_c(grads[w_off + o0 * fan_in:w_off + o1 * fan_in], (o1 - o0, fan_in))
    db = grads[w_off + fan_out * fan_in + o0:w_off + fan_out * fan_in + o1]
    off = activation_offset(sizes, l, m)
    G = _rows(gbuf, off + o0, m, fan_out, 0, m)
    if l == 0:
        a_prev = _rows(xbuf, 0, m, fan_in, 0, m)
    else:
        a_prev = _rows(abuf if act_code != 0 else zbuf, off - m * fan_in, m, fan_in, 0, m)
    none = params[:0]
    empty2 = reshape_c(params[:0], (0, 0))
    gemm_fn(G, np.bool_(True), a_prev, np.bool_(False), dW, np.int64(EPI_NONE), none,
            np.int64(0), 0.0, empty2, empty2, empty2, db, apack, bpack, parallel, chunk_addr)


@njit(cache=True, _nrt=False)
def _label_loss_rows(loss_code, ZL, ylab, Y, GL, rl, scale):
    """The loss rows rl (b,) and dL/dZ_L GL (b, k) of the loss with integer labels ylab
    (b,), the cross-entropy, for logits ZL (b, k); loss_code and Y are unused.  With
    _target_loss_rows, one of _batch_rows' loss_fn (kernel_pointers picks it)."""
    cross_entropy_labels_rows(ZL, ylab, GL, rl, scale)


@njit(cache=True, _nrt=False)
def _target_loss_rows(loss_code, ZL, ylab, Y, GL, rl, scale):
    """The same for the losses with float targets Y (b, k), by loss_code: cross-entropy,
    mean squared error or binary cross-entropy; ylab is unused."""
    if loss_code == LOSS_CE_TARGETS:
        cross_entropy_targets_rows(ZL, Y, GL, rl, scale)
    elif loss_code == LOSS_MSE:
        mse_rows(ZL, Y, GL, rl, scale)
    else:
        binary_cross_entropy_rows(ZL, Y, GL, rl, scale)


@njit(cache=True, _nrt=False)
def _batch_rows(X, ylab, ytgt, order, pos, m, part, n_parts, sizes, act_code, slope,
                loss_code, params, grads, zbuf, abuf, gbuf, row_loss, apack, bpack, xbuf,
                ylab_buf, ytgt_buf, weight_grads, parallel, l2, layer_loss, gemm_fn,
                chunk_addr, loss_fn):
    """Part `part` of n_parts of a batch of m rows (rows r0:r1, r0 = part * m // n_parts,
    of the batch, i.e. rows order[pos + r0:pos + r1] of X and the targets): gather them,
    forward, the loss's row terms and dL/dZ_L (scaled for all m rows), and backward through
    every layer's data gradient, packing into part `part` of apack and bpack.  The loss
    rows come from loss_fn, _label_loss_rows or _target_loss_rows, called through a
    pointer like gemm_fn: a network trains with one kind of loss, and compiles only its
    kind.  Measured, cold cache, `fastbp train --epochs 1`: this function 2.8-3.2 s with
    every loss in it, 1.5 s now plus 0.6 s for the cross-entropy's.  With
    weight_grads (n_parts = 1), each layer's dW and db as well, right after its G;
    otherwise the caller does those (they need all rows), and, with l2, this part puts
    the L2 loss of layers part, part + n_parts, ... into layer_loss: it must be summed
    before any thread updates a layer's weights, and the sum over a whole layer in one
    order gives the same bits as the one-thread step.

    Compiled without reference counting, like everything a split step's threads run: every
    array view or argument otherwise costs an atomic operation on the parent buffer's count,
    and two threads doing that on the same buffers made a split step slower than one thread."""
    L = sizes.shape[0] - 1
    d = X.shape[1]
    r0 = part * m // n_parts
    r1 = (part + 1) * m // n_parts
    mr = r1 - r0
    na = apack.shape[0] // n_parts
    nb = bpack.shape[0] // n_parts
    apack = apack[part * na:(part + 1) * na]
    bpack = bpack[part * nb:(part + 1) * nb]
    none = params[:0]
    empty2 = reshape_c(params[:0], (0, 0))
    # GEMM flags as runtime values, not constants: a constant argument is typed as a literal,
    # and Numba would compile (and LLVM optimise) another copy of the GEMM for every layout.
    no, yes = np.bool_(False), np.bool_(True)
    epi_bias_act, epi_act_grad = np.int64(EPI_BIAS_ACT), np.int64(EPI_ACT_GRAD)
    identity = np.int64(0)
    if not weight_grads and l2 != 0.0:
        for l in range(part, L, n_parts):
            w_off = layer_offset(sizes, l)
            layer_loss[l] = l2_loss(params[w_off:w_off + sizes[l + 1] * sizes[l]], l2)
    xb = _rows(xbuf, 0, m, d, r0, r1)
    for r in range(mr):
        src = order[pos + r0 + r]
        for j in range(d):
            xb[r, j] = X[src, j]
    n_out = sizes[L]
    if loss_code == LOSS_CE_LABELS:
        for r in range(r0, r1):
            ylab_buf[r] = ylab[order[pos + r]]
    else:
        k = ytgt.shape[1]
        for r in range(r0, r1):
            src = order[pos + r]
            for j in range(k):
                ytgt_buf[r * k + j] = ytgt[src, j]
    # forward
    off = 0
    a_prev = xb
    for l in range(L):
        fan_in = sizes[l]
        fan_out = sizes[l + 1]
        w_off = layer_offset(sizes, l)
        W = reshape_c(params[w_off:w_off + fan_out * fan_in], (fan_out, fan_in))
        b = params[w_off + fan_out * fan_in:w_off + fan_out * (fan_in + 1)]
        Z = _rows(zbuf, off, m, fan_out, r0, r1)
        code = identity if l == L - 1 else act_code
        A = Z if (code == 0) else _rows(abuf, off, m, fan_out, r0, r1)
        gemm_fn(a_prev, no, W, yes, Z, epi_bias_act, b, code, slope, A, empty2, empty2,
                none, apack, bpack, parallel, chunk_addr)
        a_prev = A
        off += m * fan_out
    # loss rows and dL/dZ_L
    off_last = off - m * n_out
    ZL = _rows(zbuf, off_last, m, n_out, r0, r1)
    GL = _rows(gbuf, off_last, m, n_out, r0, r1)
    rl = row_loss[r0:r1]
    scale = loss_scale(loss_code, m, n_out)
    loss_fn(loss_code, ZL, ylab_buf[r0:r1], _rows(ytgt_buf, 0, m, ytgt.shape[1], r0, r1), GL,
            rl, scale)
    # backward
    off = off_last
    for l in range(L - 1, -1, -1):
        fan_in = sizes[l]
        fan_out = sizes[l + 1]
        if weight_grads:
            _layer_weight_grad(l, 0, fan_out, m, sizes, act_code, params, grads, zbuf, abuf,
                               gbuf, xbuf, apack, bpack, parallel, gemm_fn, chunk_addr)
        if l > 0:
            w_off = layer_offset(sizes, l)
            W = reshape_c(params[w_off:w_off + fan_out * fan_in], (fan_out, fan_in))
            G = _rows(gbuf, off, m, fan_out, r0, r1)
            off_prev = off - m * fan_in
            Zp = _rows(zbuf, off_prev, m, fan_in, r0, r1)
            Ap = _rows(abuf, off_prev, m, fan_in, r0, r1) if act_code != 0 else Zp
            Gp = _rows(gbuf, off_prev, m, fan_in, r0, r1)
            gemm_fn(G, no, W, no, Gp, epi_act_grad, none, act_code, slope, empty2, Zp, Ap,
                    none, apack, bpack, parallel, chunk_addr)
            off = off_prev


@njit(cache=True, _nrt=False)
def _layer_rows_update(th, n_split, row_split, m, sizes, act_code, params, grads, zbuf,
                       abuf, gbuf, xbuf, apack, bpack, l2, opt_code, state1, state2, lr,
                       momentum, weight_decay, nesterov, beta1, beta2, eps, decoupled, step,
                       gemm_fn, chunk_addr, update_fn):
    """Thread th's share of a split step's second half: for each layer l, its output rows
    row_split[l, th]:row_split[l, th + 1] (often none, or all), and for those rows dW and
    db over all m rows, the L2 gradient and the optimizer update of W's rows and b's
    entries, all on this thread (parallel=False) with part th of the packing workspace.
    Elementwise updates and per-element sums over the batch: the same bits as one thread."""
    no = np.bool_(False)
    na = apack.shape[0] // n_split
    nb = bpack.shape[0] // n_split
    apack = apack[th * na:(th + 1) * na]
    bpack = bpack[th * nb:(th + 1) * nb]
    for l in range(sizes.shape[0] - 1):
        fan_in = sizes[l]
        fan_out = sizes[l + 1]
        o0 = row_split[l, th]
        o1 = row_split[l, th + 1]
        if o0 >= o1:
            continue
        _layer_weight_grad(l, o0, o1, m, sizes, act_code, params, grads, zbuf, abuf, gbuf,
                           xbuf, apack, bpack, no, gemm_fn, chunk_addr)
        w_off = layer_offset(sizes, l)
        w0 = w_off + o0 * fan_in                  # W's rows o0:o1
        w1 = w0 + (o1 - o0) * fan_in
        b0 = w_off + fan_out * fan_in + o0        # b[o0:o1]
        b1 = b0 + (o1 - o0)
        if l2 != 0.0:
            add_l2_grad(params[w0:w1], grads[w0:w1], l2)
        update_fn(opt_code, params[w0:w1], grads[w0:w1], state1[w0:w1], state2[w0:w1], lr,
                  momentum, weight_decay, nesterov, beta1, beta2, eps, decoupled, step, no)
        update_fn(opt_code, params[b0:b1], grads[b0:b1], state1[b0:b1], state2[b0:b1], lr,
                  momentum, weight_decay, nesterov, beta1, beta2, eps, decoupled, step, no)


@njit(cache=True, _nrt=False, inline="always")
def _record_step(out, loss, m, count_acc, loss_code, sizes, zbuf, ylab_buf, ytgt_buf):
    """Add a finished step's loss (times its m rows) to out[0] and, with count_acc, its
    correct predictions to out[1]."""
    out[0] += loss * m
    if count_acc:
        L = sizes.shape[0] - 1
        n_out = sizes[L]
        ZL = _rows(zbuf, activation_offset(sizes, L - 1, m), m, n_out, 0, m)
        if loss_code == LOSS_CE_LABELS:
            out[1] += count_correct_labels(ZL, ylab_buf[:m])
        elif loss_code == LOSS_BCE:
            out[1] += count_correct_multilabel(ZL, reshape_c(ytgt_buf[:m * n_out], (m, n_out)))


@njit(cache=True, _nrt=False)
def _split_steps(me, X, ylab, ytgt, order, pos, n_steps, bs, sizes, act_code, slope,
                 loss_code, params, grads, zbuf, abuf, gbuf, row_loss, apack, bpack, xbuf,
                 ylab_buf, ytgt_buf, l2, count_acc, opt_code, state1, state2, lr, momentum,
                 weight_decay, nesterov, beta1, beta2, eps, decoupled, step0, out, n_split,
                 row_split, layer_loss, sync, gemm_fn, chunk_addr, update_fn, rows_fn,
                 layers_fn, loss_fn):
    """Thread `me`'s loop over a chunk of split steps in run_steps' parallel region (its
    arguments are run_steps'; sync reset by reset_phases).  Phase 2s is step s's rows (the
    batch's rows shared out: _batch_rows), phase 2s + 1 its layers' rows (_layer_rows_update),
    each in n_split parts, the threads waiting for each other between phases (sync.py).
    Thread t runs part t where it can, so that it updates the same rows of W every step."""
    L = sizes.shape[0] - 1
    n = X.shape[0]
    n_out = sizes[L]
    no = np.bool_(False)
    for q in range(2 * n_steps):
        start = min(pos + (q // 2) * bs, n)
        m = min(start + bs, n) - start
        wait_for_phase(sync, q, n_split)
        for k in range(n_split):
            part = (me + k) % n_split
            if not claim_part(sync, q, part):
                continue
            if q % 2 == 0:
                rows_fn(X, ylab, ytgt, order, start, m, part, n_split, sizes, act_code, slope,
                        loss_code, params, grads, zbuf, abuf, gbuf, row_loss, apack, bpack,
                        xbuf, ylab_buf, ytgt_buf, no, no, l2, layer_loss, gemm_fn, chunk_addr,
                        loss_fn)
            else:
                if part == 0:   # the rows phase is finished and W not yet updated
                    loss = mean_row_loss(row_loss[:m], loss_scale(loss_code, m, n_out))
                    if l2 != 0.0:
                        for l in range(L):
                            loss += layer_loss[l]
                    _record_step(out, loss, m, count_acc, loss_code, sizes, zbuf, ylab_buf,
                                 ytgt_buf)
                layers_fn(part, n_split, row_split, m, sizes, act_code, params, grads, zbuf,
                          abuf, gbuf, xbuf, apack, bpack, l2, opt_code, state1, state2, lr,
                          momentum, weight_decay, nesterov, beta1, beta2, eps, decoupled,
                          step0 + q // 2 + 1, gemm_fn, chunk_addr, update_fn)
            part_done(sync)


@njit(cache=True, parallel=True)
def run_steps(X, ylab, ytgt, order, pos, n_steps, bs, sizes, act_code, slope, loss_code,
              params, grads, zbuf, abuf, gbuf, row_loss, apack, bpack, xbuf, ylab_buf,
              ytgt_buf, l2, count_acc,
              opt_code, state1, state2, lr, momentum, weight_decay, nesterov, beta1, beta2,
              eps, decoupled, step0, out, parallel, n_split, row_split, layer_loss, sync,
              gemm_fn, chunk_addr, update_fn, rows_fn, layers_fn, split_fn, loss_fn):
    """Train n_steps batches of bs rows, taking rows order[pos:...] of X (n, d) and of the
    targets: ylab (n,) int64 labels for LOSS_CE_LABELS, else ytgt (n, k) (the other one is
    an empty placeholder).

    sizes: int64 layer widths.  zbuf/abuf/gbuf: flat float workspace of bs * sum(widths[1:])
    each (abuf unused where A is Z).  xbuf (bs*d), ylab_buf (bs), ytgt_buf (bs*k): gather
    buffers.
    out (float64, 2): out[0] += sum of batch loss * rows, out[1] += correct predictions.
    parallel: whether the kernels may run parallel regions (False: the whole step on the
    calling thread).
    n_split: 1, or the number of threads a step is split over (see below); apack and bpack
    hold n_split equal workspaces, each a multiple of 64 bytes.  row_split (L, n_split + 1)
    int64: thread t computes the weight gradients and updates of layer l's output rows
    row_split[l, t]:row_split[l, t + 1].  layer_loss (L,) float64: workspace for the L2
    terms.  sync: sync.sync_buffer(n_split), the split steps' counters.
    gemm_fn, update_fn, rows_fn, layers_fn, split_fn, loss_fn: gemm.gemm,
    optim.optimizer_update (optimizer_update_serial where parallel is False), _batch_rows,
    _layer_rows_update, _split_steps and the loss (_label_loss_rows or _target_loss_rows)
    as ``kernel_pointers`` gives them;
    chunk_addr: gemm's (gemm.column_chunk_address).
    Returns the position after the last row trained.

    Split steps (n_split > 1, for networks too small for parallel products to pay): the
    batch's rows are shared among n_split threads, each running gather, forward, loss and
    the data gradients on its rows (rows are independent there), then each thread computes
    dW and db over all rows of the batch for its share of the layers' output rows
    (row_split) and updates those rows of W and b.  Every value is computed by the same
    kernel calls with the same summation order as one thread would, so results are
    bit-identical to n_split = 1.  The whole chunk of steps runs in one parallel region,
    whose threads wait for each other between the two halves of a step and between steps
    (sync.py), instead of a region for each half.  Measured (2 threads, 40-100-100-10 b32,
    training, geometric means of 4 processes each interleaving both versions): split
    steps 1.088x, with the SplitChooser as trained 1.068x.

    Large steps (parallel) with n_split > 1 keep the first half on the calling thread with
    parallel products, and share out the second half the same way: the weight gradients
    and updates of all layers in one parallel region instead of a parallel product per
    layer and a parallel update, each thread updating the rows of W it has just computed
    dW for, while they are in its cache.  Measured (2 threads, training, geometric means of
    4 processes each interleaving both ways): 784-512-512-10 b128 1.027x and 1.064x,
    784-2048-2048-10 b256 0.983x and 0.979x: the trainer does this up to a step size
    (train.ROW_SPLIT_MAX_FLOPS).
    """
    L = sizes.shape[0] - 1
    n = X.shape[0]
    n_out = sizes[L]
    # runtime values: a literal argument would compile another copy of each callee
    zero, one = np.int64(0), np.int64(1)
    if n_split > 1 and not parallel:
        # one parallel region for the chunk (split_fn: _split_steps)
        reset_phases(sync, n_split)
        for t in prange(n_split):   # kernels called with parallel=False in here
            split_fn(np.int64(t), X, ylab, ytgt, order, pos, n_steps, bs, sizes, act_code,
                     slope, loss_code, params, grads, zbuf, abuf, gbuf, row_loss, apack,
                     bpack, xbuf, ylab_buf, ytgt_buf, l2, count_acc, opt_code, state1,
                     state2, lr, momentum, weight_decay, nesterov, beta1, beta2, eps,
                     decoupled, step0, out, n_split, row_split, layer_loss, sync, gemm_fn,
                     chunk_addr, update_fn, rows_fn, layers_fn, loss_fn)
        return min(pos + n_steps * bs, n)
    for s in range(n_steps):
        stop = min(pos + bs, n)
        m = stop - pos
        # all rows on the calling thread; with n_split > 1 (a large step, parallel
        # products) the weight gradients and updates are shared out by rows below
        rows_fn(X, ylab, ytgt, order, pos, m, zero, one, sizes, act_code, slope, loss_code,
                params, grads, zbuf, abuf, gbuf, row_loss, apack, bpack, xbuf, ylab_buf,
                ytgt_buf, np.bool_(n_split == 1), parallel, l2, layer_loss, gemm_fn,
                chunk_addr, loss_fn)
        loss = mean_row_loss(row_loss[:m], loss_scale(loss_code, m, n_out))
        if n_split > 1:
            for t in prange(n_split):
                th = np.int64(t)
                layers_fn(th, n_split, row_split, m, sizes, act_code, params, grads, zbuf,
                          abuf, gbuf, xbuf, apack, bpack, l2, opt_code, state1, state2, lr,
                          momentum, weight_decay, nesterov, beta1, beta2, eps, decoupled,
                          step0 + s + 1, gemm_fn, chunk_addr, update_fn)
            if l2 != 0.0:
                for l in range(L):
                    loss += layer_loss[l]
        else:
            if l2 != 0.0:
                for l in range(L):
                    w_off = layer_offset(sizes, l)
                    nw = sizes[l + 1] * sizes[l]
                    loss += add_l2(params[w_off:w_off + nw], grads[w_off:w_off + nw], l2)
            update_fn(opt_code, params, grads, state1, state2, lr, momentum, weight_decay,
                      nesterov, beta1, beta2, eps, decoupled, step0 + s + 1, parallel)
        _record_step(out, loss, m, count_acc, loss_code, sizes, zbuf, ylab_buf, ytgt_buf)
        pos = stop
    return pos


class CompiledKernel:
    """A compiled kernel handed to run_steps as a function pointer: Numba types it as a
    first-class function of the given signature (``_numba_type_``) and asks it for the
    address of its compiled C-callable entry (``__wrapper_address__``), compiling the
    kernel for that signature on first use (or loading it from Numba's cache)."""

    def __init__(self, dispatcher, signature):
        self.dispatcher = dispatcher
        self.signature = signature
        self._numba_type_ = types.FunctionType(signature)
        self._address = None

    def __wrapper_address__(self):
        if self._address is None:
            self._address = _get_wrapper_address(self.dispatcher, self.signature)
        return self._address


_KERNELS = {}


def kernel_pointers(dtype, X_type=None, ylab_type=None, ytgt_type=None, matmul="own",
                    act_code=None, loss_code=LOSS_CE_LABELS, parallel=True):
    """(gemm, gemm's chunk_addr, optimizer_update, _batch_rows, _layer_rows_update,
    _split_steps, the loss rows) for
    run_steps with float arrays of dtype (float32 or float64): CompiledKernels for the
    argument types run_steps calls them with, and gemm.column_chunk_address(dtype, act_code).
    X_type, ylab_type, ytgt_type: the Numba types of the data arguments (``numba.typeof``:
    read-only data such as a memory map has its own); by default writable C-contiguous
    arrays of dtype (int64 labels).  matmul="blas": gemm.gemm_blas in place of the GEMM
    (same signature; its chunk_addr is 0 and unused).  act_code: the network's activation
    (gemm.column_chunk_address; None: the chunk for every activation).  loss_code: the
    loss run_steps will be given (_label_loss_rows or _target_loss_rows).  parallel: the
    one run_steps will be given; False gives optimizer_update_serial in place of
    optimizer_update (same signature), which compiles without a parallel loop.

    _batch_rows and _layer_rows_update go by pointer too because run_steps calls them from
    several places (parallel regions and the one-thread path), each of which would
    otherwise link and re-optimise them (measured, cold cache: run_steps' own compile 8.7 s
    with them linked by name, 3.4-4.0 s through pointers); _split_steps because a parallel
    loop's body is compiled into a function of its own and then linked again into its
    caller.  Compiled on their own (cold cache, the other modules' warm): _batch_rows
    1.8-2.0 s, _layer_rows_update 0.6-0.7 s, _split_steps 0.8-1.1 s."""
    dtype = np.dtype(dtype)
    f = types.float32 if dtype == np.float32 else types.float64
    vec, mat = types.Array(f, 1, "C"), types.Array(f, 2, "C")
    b, i, d = types.boolean, types.int64, types.float64
    vi, vd, mi = types.Array(i, 1, "C"), types.Array(d, 1, "C"), types.Array(i, 2, "C")
    X_type = X_type or mat
    ylab_type = ylab_type or vi
    ytgt_type = ytgt_type or mat
    labels = loss_code == LOSS_CE_LABELS
    key = (dtype, X_type, ylab_type, ytgt_type, matmul, act_code, labels, parallel)
    if key not in _KERNELS:
        #                 A    ta B    tb C    epi bias code slope Aout Zsrc Asrc rowsum apack bpack parallel chunk
        gemm_sig = types.none(mat, b, mat, b, mat, i, vec, i, d, mat, mat, mat, vec, vec, vec, b, i)
        #                   opt p    g    s1   s2   lr momentum wd nesterov beta1 beta2 eps decoupled step parallel
        update_sig = types.none(i, vec, vec, vec, vec, d, d, d, b, d, d, d, b, i, b)
        gemm_t, update_t = types.FunctionType(gemm_sig), types.FunctionType(update_sig)
        #                   loss ZL   ylab Y    GL   rl  scale
        loss_sig = types.none(i, mat, vi, mat, mat, vd, d)
        loss_t = types.FunctionType(loss_sig)
        #                     X       ylab       ytgt       order pos m part n_parts sizes act
        rows_sig = types.none(X_type, ylab_type, ytgt_type, vi, i, i, i, i, vi, i,
                              # slope loss params grads zbuf abuf gbuf row_loss apack bpack
                              d, i, vec, vec, vec, vec, vec, vd, vec, vec,
                              # xbuf ylab_buf ytgt_buf weight_grads parallel l2 layer_loss
                              vec, vi, vec, b, b, d, vd,
                              # gemm_fn chunk loss_fn
                              gemm_t, i, loss_t)
        #                     th n_split row_split m sizes act params grads zbuf abuf gbuf xbuf
        layers_sig = types.none(i, i, mi, i, vi, i, vec, vec, vec, vec, vec, vec,
                                # apack bpack l2 opt s1 s2 lr mom wd nesterov
                                vec, vec, d, i, vec, vec, d, d, d, b,
                                # beta1 beta2 eps decoupled step gemm_fn chunk update_fn
                                d, d, d, b, i, gemm_t, i, update_t)
        rows_t, layers_t = types.FunctionType(rows_sig), types.FunctionType(layers_sig)
        #                    me X       ylab       ytgt       order pos n_steps bs sizes act
        split_sig = types.none(i, X_type, ylab_type, ytgt_type, vi, i, i, i, vi, i,
                               # slope loss params grads zbuf abuf gbuf row_loss apack bpack
                               d, i, vec, vec, vec, vec, vec, vd, vec, vec,
                               # xbuf ylab_buf ytgt_buf l2 count_acc opt s1 s2
                               vec, vi, vec, d, b, i, vec, vec,
                               # lr mom wd nesterov beta1 beta2 eps decoupled step0 out
                               d, d, d, b, d, d, d, b, i, vd,
                               # n_split row_split layer_loss sync
                               i, mi, vd, vi,
                               # gemm_fn chunk update_fn rows_fn layers_fn loss_fn
                               gemm_t, i, update_t, rows_t, layers_t, loss_t)
        blas = matmul == "blas"
        _KERNELS[key] = (CompiledKernel(gemm_blas if blas else gemm, gemm_sig),
                         0 if blas else column_chunk_address(dtype, act_code),
                         CompiledKernel(optimizer_update if parallel else optimizer_update_serial,
                                        update_sig),
                         CompiledKernel(_batch_rows, rows_sig),
                         CompiledKernel(_layer_rows_update, layers_sig),
                         CompiledKernel(_split_steps, split_sig),
                         CompiledKernel(_label_loss_rows if labels else _target_loss_rows,
                                        loss_sig))
    return _KERNELS[key]
