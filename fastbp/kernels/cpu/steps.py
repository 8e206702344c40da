"""Whole training steps compiled into one function (CPU, Numba).

A chunk of consecutive steps runs inside one compiled call (run_steps):

    for each batch of the epoch's order:
        gather rows of X, y (and sample weights) (same copies as np.take)
        forward, fused loss, backward           (the kernels MLP.loss_and_grad calls)
        optional L2 on the weights
        optimizer update over the flat buffer  (optim.optimizer_update)

The kernels are the same ones, called in the same order with the same arguments, so a
chunk gives bit-identical results to the step-by-step Python path.  Per-layer arrays are
views carved out of flat buffers by offset (fastbp.layout's order).  Why: for a small
network most of a step's time was spent crossing from Python into compiled code.

A step too small for parallel products runs on one thread or, with threads to spare, is
split: the batch's rows shared among the threads for gather, forward, loss and data
gradients, then the layers' output rows (train/split.layer_row_split) for the weight
gradients and updates, with the same bits (run_steps).  The kernels are called through
entry addresses (kernel_pointers), so each compiles once instead of in every caller.
Measurements behind these choices: docs/performance.md.
"""
import warnings
from collections import namedtuple

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.errors import NumbaExperimentalFeatureWarning
from numba.extending import intrinsic

from ..codes import LOSS_BCE, LOSS_CE_LABELS, LOSS_CE_TARGETS, LOSS_HUBER, LOSS_MSE
from . import gemm as gemm_mod
from .gemm import (
    EPI_ACT_GRAD,
    EPI_BIAS_ACT,
    EPI_NONE,
    column_chunk_address,
    gemm,
    gemm_blas,
)
from .dropout import dropout_backward, dropout_forward, stream
from .linking import function_at, jit_address, reshape_c
from .losses import (
    add_l2,
    add_l2_grad,
    binary_cross_entropy_rows,
    count_correct_labels,
    count_correct_multilabel,
    cross_entropy_labels_rows,
    cross_entropy_targets_rows,
    huber_rows,
    l2_loss,
    mean_row_loss,
    mean_scale,
    mse_rows,
    poisson_rows,
    weight_total,
)
from .optim import (
    clip_coefficient,
    optimizer_update,
    optimizer_update_serial,
    unit_square_sums,
    with_grad_scale,
)
from .sync import claim_part, part_done, reset_phases, wait_for_phase

# The compiled steps take kernels as first-class functions (typed, cached, tested here);
# Numba flags the feature as experimental each time it types one.
warnings.filterwarnings("ignore", message="First-class function type feature is experimental",
                        category=NumbaExperimentalFeatureWarning)



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


@njit(cache=True)
def unit_offset(sizes, l):
    """Index of layer l's first output unit among all layers' units (Buffers.unit_sq)."""
    off = 0
    for q in range(l):
        off += sizes[q + 1]
    return off


@njit(cache=True, inline="always")
def _rows(buf, off, m, width, r0, r1):
    """Rows r0:r1 of the (m, width) matrix stored from buf[off]."""
    return reshape_c(buf[off + r0 * width:off + r1 * width], (r1 - r0, width))


@njit(cache=True)
def loss_scale(loss_code, total, n_out):
    """1 / what the loss averages over: the batch's weight total (its rows, unweighted)
    for cross-entropy, times n_out for the others (a mean over every output)."""
    if loss_code == LOSS_CE_LABELS or loss_code == LOSS_CE_TARGETS:
        return mean_scale(total, 1)
    return mean_scale(total, n_out)


@njit(cache=True, _nrt=False)
def batch_total(data, bufs, pos, m):
    """The weight total of the batch order[pos:pos + m]: m without weights (bufs.w_buf
    empty), else the sum of its rows' weights in batch order, read from the data set (so
    that every part of a split step has it before any part has gathered)."""
    if bufs.w_buf.shape[0] == 0:
        return np.float64(m)
    w, order = data.w, data.order
    total = 0.0
    for r in range(m):
        total += w[order[pos + r]]
    return total


@njit(cache=True, _nrt=False)
def l2_factor(cfg, total):
    """The step's L2 factor: cfg.l2, or with cfg.l2_per_weight cfg.l2 / the batch's weight
    total (scikit-learn's alpha / sum of sample weights; 0 for a batch of weight 0)."""
    if not cfg.l2_per_weight:
        return cfg.l2
    return 0.0 if total == 0.0 else cfg.l2 / total


@njit(cache=True, _nrt=False, inline="always")
def _layer_weight_grad(l, o0, o1, m, cfg, bufs, apack, bpack, parallel, kern):
    """Rows o0:o1 of dW_l = G_l^T A_{l-1} (out, in) and of db_l = column sums of G_l,
    over all m rows of the batch, packing into apack and bpack.

    The product's op(A) is G_l^T restricted to rows o0:o1, i.e. columns o0:o1 of G_l
    (m, out).  The GEMM takes C-contiguous operands, so it gets G_l's buffer from column
    o0 on as an (m, out) matrix of the same row stride: its row k is G_l[k, o0:] followed
    by the first o0 values of row k + 1, and the GEMM only uses its first o1 - o0 columns
    (the packing of an edge panel may read past them into the panel's padding, which
    nothing stores).  For the last layer that view runs o0 values past the block, so gbuf
    has max(sizes) values of slack."""
    sizes, acts = cfg.sizes, cfg.acts
    params, grads, zbuf, abuf, gbuf, xbuf = (bufs.params, bufs.grads, bufs.zbuf, bufs.abuf,
                                             bufs.gbuf, bufs.xbuf)
    drops = cfg.drops
    gemm_fn, chunk_addr = kern[0], kern[1]
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
        src = bufs.dbuf if drops[l - 1] != 0.0 else (abuf if acts[l - 1] != 0 else zbuf)
        a_prev = _rows(src, off - m * fan_in, m, fan_in, 0, m)
    none = params[:0]
    empty2 = reshape_c(params[:0], (0, 0))
    gemm_fn(G, np.bool_(True), a_prev, np.bool_(False), dW,
            (np.int64(EPI_NONE), none, np.int64(0), 0.0, empty2, empty2, empty2), db, apack, bpack,
            parallel, chunk_addr)


@njit(cache=True, _nrt=False)
def _label_loss_rows(loss_code, ZL, ylab, Y, GL, rl, scale, w, param):
    """The loss rows rl (b,) and dL/dZ_L GL (b, k) of the loss with integer labels ylab
    (b,), the cross-entropy (label smoothing: param), for logits ZL (b, k), with the rows'
    weights w (b,) or none (empty); loss_code and Y are unused.  With _target_loss_rows,
    one of _batch_rows' loss_fn (kernel_pointers picks it)."""
    cross_entropy_labels_rows(ZL, ylab, GL, rl, scale, w, param)


@njit(cache=True, _nrt=False)
def _target_loss_rows(loss_code, ZL, ylab, Y, GL, rl, scale, w, param):
    """The same for the losses with float targets Y (b, k), by loss_code: cross-entropy
    (label smoothing: param), mean squared error, binary cross-entropy, Poisson or Huber
    (delta: param); ylab is unused."""
    if loss_code == LOSS_CE_TARGETS:
        cross_entropy_targets_rows(ZL, Y, GL, rl, scale, w, param)
    elif loss_code == LOSS_MSE:
        mse_rows(ZL, Y, GL, rl, scale, w)
    elif loss_code == LOSS_BCE:
        binary_cross_entropy_rows(ZL, Y, GL, rl, scale, w)
    elif loss_code == LOSS_HUBER:
        huber_rows(ZL, Y, GL, rl, scale, w, param)
    else:
        poisson_rows(ZL, Y, GL, rl, scale, w)


# ----------------------------------------------------------------------------- arguments
# A compiled step's arguments travel in a few named groups (typed once, in
# kernel_pointers), so that no function takes more than about a dozen and none can be
# swapped with another of the same type unnoticed.
Data = namedtuple("Data", "X ylab ytgt w order")
"""The data set: X (n, d); ylab (n,) int64 labels for LOSS_CE_LABELS, else ytgt (n, k)
(the other one an empty placeholder); w (n,) float64 sample weights (empty: none);
order (n,) int64, the epoch's order of rows."""
Config = namedtuple("Config", "sizes acts slopes loss_code loss_param l2 l2_per_weight "
                               "count_acc clip drops drop_seed")
"""The network and what a step computes: sizes (L + 1,) int64 widths, each layer's
activation code acts (L,) int64 and slope slopes (L,) float64 (MLP.act_codes, the last
layer's the identity), the loss code and its parameter (codes.py), the L2 factor (divided by the
batch's weight total with l2_per_weight: see l2_factor), whether to count correct
predictions, the gradient's largest norm (clipping, after the L2 term, before the
update, as torch.nn.utils.clip_grad_norm_; 0: none), and each layer's dropout rate drops
(L,) float64 (MLP.drop_rates) with the masks' seed (MLP.dropout_seed)."""
Buffers = namedtuple("Buffers", "params grads state1 state2 zbuf abuf gbuf dbuf row_loss "
                                "apack bpack xbuf ylab_buf ytgt_buf w_buf unit_sq out")
"""The arrays a step reads and writes.  params, grads, state1, state2: the flat buffers
(P,) (state: the optimizer's, see optim.optimizer_update).  zbuf/abuf/gbuf/dbuf: flat
float workspace of bs * sum(widths[1:]) each (abuf unused where A is Z; gbuf with
max(sizes) of zeroed slack; dbuf, the dropped-out A, empty without dropout).  row_loss (bs,) float64.  apack, bpack: the GEMM's packing buffers, n_split
equal parts, each a multiple of 64 bytes.  xbuf (bs*d), ylab_buf (bs), ytgt_buf (bs*k),
w_buf (bs) float64 (empty without weights): gather buffers.  unit_sq (sum(sizes[1:]),)
float64: each output unit's squared gradient (clipping; optim.unit_square_sums).
out (2,) float64: out[0] +=
sum of batch loss * batch weight total (rows, unweighted), out[1] += correct."""
Split = namedtuple("Split", "n_split row_split layer_loss sync")
"""Split steps: n_split threads (1: none); row_split (L, n_split + 1) int64, thread t
computes the weight gradients and updates of layer l's rows row_split[l, t]:row_split[l,
t + 1]; layer_loss (L,) float64 workspace; sync: sync.sync_buffer(n_split)."""
Kernels = namedtuple("Kernels", "gemm chunk_addr update loss")
"""The kernels a step calls through pointers (kernel_pointers): gemm.gemm (or gemm_blas)
and its chunk_addr, optim.optimizer_update (or _serial), the loss rows."""
Inner = namedtuple("Inner", "rows layers")
"""_batch_rows and _layer_rows_update, by pointer (what _split_steps runs)."""


@njit(cache=True, _nrt=False)
def _batch_rows(data, pos, m, part, n_parts, cfg, bufs, weight_grads, parallel, layer_loss,
                kern, step):
    """Part `part` of n_parts of a batch of m rows (rows r0:r1, r0 = part * m // n_parts,
    of the batch, i.e. rows order[pos + r0:pos + r1] of X and the targets): gather them,
    forward, the loss's row terms and dL/dZ_L (scaled for all m rows), and backward through
    every layer's data gradient, packing into part `part` of apack and bpack.  The loss
    rows come from kern.loss (_label_loss_rows or _target_loss_rows): a network trains
    with one kind of loss, and compiles only its kind.  With weight_grads (n_parts = 1),
    each layer's dW and db as well, right after its G; otherwise the caller does those
    (they need all rows), and, with L2, this part puts the L2 loss of layers part,
    part + n_parts, ... into layer_loss: it must be summed before any thread updates a
    layer's weights, and the sum over a whole layer in one order gives the same bits as
    the one-thread step.  step: the optimizer step being taken (dropout's masks are
    hashed from it).

    Compiled without reference counting, like everything a split step's threads run: every
    array view or argument otherwise costs an atomic operation on the parent buffer's count,
    and two threads doing that on the same buffers made a split step slower than one thread."""
    X, ylab, ytgt, order = data.X, data.ylab, data.ytgt, data.order
    sizes, acts, slopes, loss_code = cfg.sizes, cfg.acts, cfg.slopes, cfg.loss_code
    params, zbuf, abuf, gbuf = bufs.params, bufs.zbuf, bufs.abuf, bufs.gbuf
    xbuf, ylab_buf, ytgt_buf = bufs.xbuf, bufs.ylab_buf, bufs.ytgt_buf
    gemm_fn, chunk_addr = kern.gemm, kern.chunk_addr
    L = sizes.shape[0] - 1
    d = X.shape[1]
    r0 = part * m // n_parts
    r1 = (part + 1) * m // n_parts
    mr = r1 - r0
    na = bufs.apack.shape[0] // n_parts
    nb = bufs.bpack.shape[0] // n_parts
    apack = bufs.apack[part * na:(part + 1) * na]
    bpack = bufs.bpack[part * nb:(part + 1) * nb]
    none = params[:0]
    empty2 = reshape_c(params[:0], (0, 0))
    # GEMM flags as runtime values, not constants: a constant argument is typed as a literal,
    # and Numba would compile (and LLVM optimise) another copy of the GEMM for every layout.
    no, yes = np.bool_(False), np.bool_(True)
    epi_bias_act, epi_act_grad = np.int64(EPI_BIAS_ACT), np.int64(EPI_ACT_GRAD)
    total = batch_total(data, bufs, pos, m)
    l2 = l2_factor(cfg, total)
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
    w_buf = bufs.w_buf
    if w_buf.shape[0] > 0:
        for r in range(r0, r1):
            w_buf[r] = data.w[order[pos + r]]
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
        code = acts[l]
        A = Z if (code == 0) else _rows(abuf, off, m, fan_out, r0, r1)
        gemm_fn(a_prev, no, W, yes, Z, (epi_bias_act, b, code, slopes[l], A, empty2, empty2),
                none, apack, bpack, parallel, chunk_addr)
        a_prev = A
        if cfg.drops[l] != 0.0:
            a_prev = _rows(bufs.dbuf, off, m, fan_out, r0, r1)
            dropout_forward(A, a_prev, stream(cfg.drop_seed, step, l), r0, cfg.drops[l])
        off += m * fan_out
    # loss rows and dL/dZ_L
    off_last = off - m * n_out
    ZL = _rows(zbuf, off_last, m, n_out, r0, r1)
    GL = _rows(gbuf, off_last, m, n_out, r0, r1)
    rl = bufs.row_loss[r0:r1]
    scale = loss_scale(loss_code, total, n_out)
    kern.loss(loss_code, ZL, ylab_buf[r0:r1], _rows(ytgt_buf, 0, m, ytgt.shape[1], r0, r1),
              GL, rl, scale, w_buf[r0:r1], cfg.loss_param)
    # backward
    off = off_last
    for l in range(L - 1, -1, -1):
        fan_in = sizes[l]
        fan_out = sizes[l + 1]
        if weight_grads:
            _layer_weight_grad(l, 0, fan_out, m, cfg, bufs, apack, bpack, parallel, kern)
        if l > 0:
            w_off = layer_offset(sizes, l)
            W = reshape_c(params[w_off:w_off + fan_out * fan_in], (fan_out, fan_in))
            G = _rows(gbuf, off, m, fan_out, r0, r1)
            off_prev = off - m * fan_in
            Zp = _rows(zbuf, off_prev, m, fan_in, r0, r1)
            Ap = _rows(abuf, off_prev, m, fan_in, r0, r1) if acts[l - 1] != 0 else Zp
            Gp = _rows(gbuf, off_prev, m, fan_in, r0, r1)
            gemm_fn(G, no, W, no, Gp, (epi_act_grad, none, acts[l - 1], slopes[l - 1], empty2,
                                       Zp, Ap), none, apack, bpack, parallel, chunk_addr)
            if cfg.drops[l - 1] != 0.0:
                dropout_backward(Gp, stream(cfg.drop_seed, step, l - 1), r0, cfg.drops[l - 1])
            off = off_prev


GRADS_AND_UPDATE, GRADS, UPDATE = 0, 1, 2   # _layer_rows_update's stages


@njit(cache=True, _nrt=False)
def _layer_rows_update(th, split, m, cfg, bufs, hyper, step, kern, stage):
    """Thread th's share of a split step's second half: for each layer l, its output rows
    split.row_split[l, th]:row_split[l, th + 1] (often none, or all), and for those rows
    dW and db over all m rows, the L2 gradient and the optimizer update of W's rows and b's
    entries, all on this thread (parallel=False) with part th of the packing workspace.
    Elementwise updates and per-element sums over the batch: the same bits as one thread.

    stage: GRADS_AND_UPDATE; or, with clipping (cfg.clip), GRADS (dW, db, the L2 gradient
    and the rows' squared sums into bufs.unit_sq) then, once every thread has done that,
    UPDATE, with hyper from _clip_hyper."""
    sizes = cfg.sizes
    l2 = l2_factor(cfg, weight_total(bufs.w_buf[:m], m))
    params, grads, state1, state2 = bufs.params, bufs.grads, bufs.state1, bufs.state2
    n_split, row_split = split.n_split, split.row_split
    no = np.bool_(False)
    na = bufs.apack.shape[0] // n_split
    nb = bufs.bpack.shape[0] // n_split
    apack = bufs.apack[th * na:(th + 1) * na]
    bpack = bufs.bpack[th * nb:(th + 1) * nb]
    for l in range(sizes.shape[0] - 1):
        fan_in = sizes[l]
        fan_out = sizes[l + 1]
        o0 = row_split[l, th]
        o1 = row_split[l, th + 1]
        if o0 >= o1:
            continue
        w_off = layer_offset(sizes, l)
        w0 = w_off + o0 * fan_in                  # W's rows o0:o1
        w1 = w0 + (o1 - o0) * fan_in
        b0 = w_off + fan_out * fan_in + o0        # b[o0:o1]
        b1 = b0 + (o1 - o0)
        if stage != UPDATE:
            _layer_weight_grad(l, o0, o1, m, cfg, bufs, apack, bpack, no, kern)
            if l2 != 0.0:
                add_l2_grad(params[w0:w1], grads[w0:w1], l2)
            if stage == GRADS:
                u0 = unit_offset(sizes, l)
                unit_square_sums(reshape_c(grads[w0:w1], (o1 - o0, fan_in)), grads[b0:b1],
                                 bufs.unit_sq[u0 + o0:u0 + o1])
                continue
        kern.update(hyper, params[w0:w1], grads[w0:w1], state1[w0:w1], state2[w0:w1], step,
                    no)
        kern.update(hyper, params[b0:b1], grads[b0:b1], state1[b0:b1], state2[b0:b1], step,
                    no)


@njit(cache=True, _nrt=False)
def _clip_hyper(cfg, bufs, hyper):
    """hyper with the clipping coefficient of the units' squared sums bufs.unit_sq (all
    filled) as its grad_scale."""
    return with_grad_scale(hyper, clip_coefficient(bufs.unit_sq, cfg.clip)[0])


@njit(cache=True, _nrt=False)
def _clipped(cfg, bufs, hyper):
    """hyper with the clipping coefficient of the whole gradient (bufs.grads, L2 term
    included) as its grad_scale; hyper itself without clipping."""
    if cfg.clip == 0.0:
        return hyper
    sizes = cfg.sizes
    for l in range(sizes.shape[0] - 1):
        fan_in, fan_out = sizes[l], sizes[l + 1]
        w_off = layer_offset(sizes, l)
        u0 = unit_offset(sizes, l)
        unit_square_sums(reshape_c(bufs.grads[w_off:w_off + fan_out * fan_in],
                                   (fan_out, fan_in)),
                         bufs.grads[w_off + fan_out * fan_in:w_off + fan_out * (fan_in + 1)],
                         bufs.unit_sq[u0:u0 + fan_out])
    return _clip_hyper(cfg, bufs, hyper)


@njit(cache=True, _nrt=False, inline="always")
def _record_step(loss, m, total, cfg, bufs):
    """Add a finished step's loss (times its weight total: its m rows, unweighted) to
    out[0] and, with count_acc, its correct predictions to out[1]."""
    out = bufs.out
    out[0] += loss * total
    if cfg.count_acc:
        sizes = cfg.sizes
        L = sizes.shape[0] - 1
        n_out = sizes[L]
        ZL = _rows(bufs.zbuf, activation_offset(sizes, L - 1, m), m, n_out, 0, m)
        if cfg.loss_code == LOSS_CE_LABELS:
            out[1] += count_correct_labels(ZL, bufs.ylab_buf[:m])
        elif cfg.loss_code == LOSS_BCE:
            out[1] += count_correct_multilabel(
                ZL, reshape_c(bufs.ytgt_buf[:m * n_out], (m, n_out)))


@njit(cache=True, _nrt=False)
def _split_steps(me, data, pos, n_steps, bs, cfg, bufs, hyper, step0, split, kern, inner):
    """Thread `me`'s loop over a chunk of split steps in run_steps' parallel region (its
    arguments are run_steps'; split.sync reset by reset_phases).  Phase 2s is step s's rows
    (the batch's rows shared out: _batch_rows), phase 2s + 1 its layers' rows
    (_layer_rows_update), each in n_split parts, the threads waiting for each other between
    phases (sync.py).  With clipping, three phases a step: rows, the layers' gradient rows,
    their updates (every gradient is in the norm before any update).  Thread t runs part t where it can, so that it updates the same rows
    of W every step."""
    sizes, loss_code = cfg.sizes, cfg.loss_code
    n_split, layer_loss, sync = split.n_split, split.layer_loss, split.sync
    L = sizes.shape[0] - 1
    n = data.order.shape[0]   # the epoch's rows (a subset of X with a validation split)
    n_out = sizes[L]
    no = np.bool_(False)
    # phases of a step: rows, then layers (GRADS_AND_UPDATE), or with clipping layers'
    # GRADS and then their UPDATE
    phases = 3 if cfg.clip != 0.0 else 2
    for q in range(phases * n_steps):
        s, phase = q // phases, q % phases
        start = min(pos + s * bs, n)
        m = min(start + bs, n) - start
        wait_for_phase(sync, q, n_split)
        for k in range(n_split):
            part = (me + k) % n_split
            if not claim_part(sync, q, part):
                continue
            if phase == 0:
                inner.rows(data, start, m, part, n_split, cfg, bufs, no, no, layer_loss, kern,
                           step0 + s + 1)
            else:
                if phase == 1 and part == 0:   # the rows phase is finished, W not updated
                    total = weight_total(bufs.w_buf[:m], m)
                    loss = mean_row_loss(bufs.row_loss[:m], loss_scale(loss_code, total, n_out))
                    if l2_factor(cfg, total) != 0.0:
                        for l in range(L):
                            loss += layer_loss[l]
                    _record_step(loss, m, total, cfg, bufs)
                if phase == UPDATE:    # every thread's rows of the gradient are summed
                    inner.layers(part, split, m, cfg, bufs, _clip_hyper(cfg, bufs, hyper),
                                 step0 + s + 1, kern, np.int64(UPDATE))
                else:
                    inner.layers(part, split, m, cfg, bufs, hyper, step0 + s + 1, kern,
                                 np.int64(GRADS_AND_UPDATE if phases == 2 else GRADS))
            part_done(sync)


@njit(cache=True, parallel=True)
def run_steps(data_t, pos, n_steps, bs, cfg_t, bufs_t, hyper, step0, parallel, split_t, kern_t,
              steps):
    """Train n_steps batches of bs rows, taking rows data.order[pos:...] of the data set;
    returns the position after the last row trained.

    data_t, cfg_t, bufs_t, split_t, kern_t: the groups above (Data, Config, Buffers, Split,
    Kernels), as plain tuples of their fields in order.
    kern_t and steps: the kernels' entry addresses, from kernel_pointers.  hyper:
    optim.optimizer_update's; step0: the optimizer steps taken before this call.
    parallel: whether the kernels may run parallel regions (False: the whole step on the
    calling thread).

    Split steps (split.n_split > 1, for networks too small for parallel products to pay):
    the batch's rows are shared among n_split threads, each running gather, forward, loss
    and the data gradients on its rows (rows are independent there), then each thread
    computes dW and db over all rows of the batch for its share of the layers' output rows
    (split.row_split) and updates those rows of W and b.  Every value is computed by the
    same kernel calls with the same summation order as one thread would, so results are
    bit-identical to n_split = 1.  The whole chunk of steps runs in one parallel region,
    whose threads wait for each other between the two halves of a step and between steps
    (sync.py).  Clipping (cfg.clip) scales the update's gradient by the norm of the whole
    gradient, summed unit by unit in one order (optim.unit_square_sums), so split steps
    keep the same bits.  Large steps (parallel) with n_split > 1 keep the first half on the calling
    thread with parallel products, and share out the second half the same way, each
    thread updating the rows of W it has just computed dW for (train/split.py decides up
    to which size; docs/performance.md has the measurements)."""
    # The groups arrive as plain tuples, and the kernels as entry addresses (Numba types
    # those from Python in C; namedtuples and function objects in Python, at ~40 us a
    # call), and get their names and types here.
    kern = Kernels(*_kernels_at(kern_t, data_t, bufs_t))
    rows_fn, layers_fn, split_fn = _steps_at(steps, data_t, bufs_t)
    inner = Inner(rows_fn, layers_fn)
    data, cfg, bufs = Data(*data_t), Config(*cfg_t), Buffers(*bufs_t)
    split = Split(*split_t)
    sizes, loss_code = cfg.sizes, cfg.loss_code
    n_split, layer_loss = split.n_split, split.layer_loss
    params, grads = bufs.params, bufs.grads
    L = sizes.shape[0] - 1
    n = data.order.shape[0]   # the epoch's rows (a subset of X with a validation split)
    n_out = sizes[L]
    # runtime values: a literal argument would compile another copy of each callee
    zero, one = np.int64(0), np.int64(1)
    if n_split > 1 and not parallel:
        # one parallel region for the chunk (split_fn: _split_steps)
        reset_phases(split.sync, n_split)
        for t in prange(n_split):   # kernels called with parallel=False in here
            split_fn(np.int64(t), data, pos, n_steps, bs, cfg, bufs, hyper, step0, split,
                     kern, inner)
        return min(pos + n_steps * bs, n)
    for s in range(n_steps):
        stop = min(pos + bs, n)
        m = stop - pos
        # all rows on the calling thread; with n_split > 1 (a large step, parallel
        # products) the weight gradients and updates are shared out by rows below
        rows_fn(data, pos, m, zero, one, cfg, bufs, np.bool_(n_split == 1), parallel,
                layer_loss, kern, step0 + s + 1)
        total = weight_total(bufs.w_buf[:m], m)
        loss = mean_row_loss(bufs.row_loss[:m], loss_scale(loss_code, total, n_out))
        l2 = l2_factor(cfg, total)
        if n_split > 1:
            # one parallel loop, run once (GRADS_AND_UPDATE) or, with clipping, twice
            # (GRADS, then UPDATE with the coefficient of all of them).  One loop in the
            # code: each parallel loop costs about 2 s of a cold compile; and two adjacent
            # ones were fused by Numba (it cannot see that UPDATE reads what GRADS writes
            # through the kernels' pointers; parallel={"fusion": False} held for the first
            # specialisation only: Numba pops the options out of the decorator's dict).
            stage = np.int64(GRADS_AND_UPDATE if cfg.clip == 0.0 else GRADS)
            h = hyper
            while True:
                for t in prange(n_split):
                    layers_fn(np.int64(t), split, m, cfg, bufs, h, step0 + s + 1, kern, stage)
                if stage != GRADS:
                    break
                stage = np.int64(UPDATE)
                h = _clip_hyper(cfg, bufs, hyper)
            if l2 != 0.0:
                for l in range(L):
                    loss += layer_loss[l]
        else:
            if l2 != 0.0:
                for l in range(L):
                    w_off = layer_offset(sizes, l)
                    nw = sizes[l + 1] * sizes[l]
                    loss += add_l2(params[w_off:w_off + nw], grads[w_off:w_off + nw], l2)
            kern.update(_clipped(cfg, bufs, hyper), params, grads, bufs.state1, bufs.state2,
                        step0 + s + 1, parallel)
        _record_step(loss, m, total, cfg, bufs)
        pos = stop
    return pos


def step_signatures(f, X_type, ylab_type, ytgt_type):
    """The one declaration of the compiled step's types, for float type f and the data's
    Numba types: a dict of the argument groups' types ("data", "cfg", "bufs", "split",
    "hyper", "kern", "inner") and of the kernels' signatures ("gemm", "update", "loss",
    "rows", "layers", "split_steps")."""
    vec, mat = types.Array(f, 1, "C"), types.Array(f, 2, "C")
    b, i, d = types.boolean, types.int64, types.float64
    vi, vd, mi = types.Array(i, 1, "C"), types.Array(d, 1, "C"), types.Array(i, 2, "C")
    t = {}
    t["gemm"] = gemm_mod.gemm_signature(f)
    t["hyper"] = types.Tuple((i, d, d, d, b, d, d, d, b, d))    # optim.optimizer_update's
    t["update"] = types.none(t["hyper"], vec, vec, vec, vec, i, b)
    #                      loss ZL   ylab Y    GL   rl  scale w   param
    t["loss"] = types.none(i, mat, vi, mat, mat, vd, d, vd, d)
    t["kern"] = types.NamedTuple((types.FunctionType(t["gemm"]), i,
                                  types.FunctionType(t["update"]),
                                  types.FunctionType(t["loss"])), Kernels)
    t["data"] = types.NamedTuple((X_type, ylab_type, ytgt_type, vd, vi), Data)
    t["cfg"] = types.NamedTuple((vi, vi, vd, i, d, d, b, b, d, vd, i), Config)
    t["bufs"] = types.NamedTuple((vec, vec, vec, vec, vec, vec, vec, vec, vd, vec, vec, vec, vi,
                                  vec, vd, vd, vd), Buffers)
    t["split"] = types.NamedTuple((i, mi, vd, vi), Split)
    t["rows"] = types.none(t["data"], i, i, i, i, t["cfg"], t["bufs"], b, b, vd, t["kern"], i)
    t["layers"] = types.none(i, t["split"], i, t["cfg"], t["bufs"], t["hyper"], i, t["kern"],
                             i)
    t["inner"] = types.NamedTuple((types.FunctionType(t["rows"]),
                                   types.FunctionType(t["layers"])), Inner)
    t["split_steps"] = types.none(i, t["data"], i, i, i, t["cfg"], t["bufs"], t["hyper"], i,
                                  t["split"], t["kern"], t["inner"])
    return t


def _signatures_of(data_t, bufs_t):
    """step_signatures for run_steps' plain-tuple arguments data_t and bufs_t (types)."""
    return step_signatures(bufs_t.types[0].dtype, *data_t.types[:3])


def _functions_at(members, addrs, data_t, bufs_t):
    """An intrinsic's (typing, codegen): the tuple of types `members` from the tuple of
    int64 addresses addrs, each FunctionType member made from its address
    (linking.function_at), each other member (an int) passed through."""
    retty = types.Tuple(members)

    def codegen(context, builder, sig, args):
        a = cgutils.unpack_tuple(builder, args[0], len(members))
        return context.make_tuple(builder, retty, [
            function_at(context, builder, m, v) if isinstance(m, types.FunctionType) else v
            for m, v in zip(members, a)])
    return retty(addrs, data_t, bufs_t), codegen


@intrinsic
def _kernels_at(typingctx, addrs, data_t, bufs_t):
    """(gemm, chunk_addr, update, loss) as first-class functions from addrs, the entry
    addresses kernel_pointers gives, typed for the data and buffers run_steps got (a plain
    tuple: run_steps names it, and a parallel loop's body finds the class by name)."""
    members = _signatures_of(data_t, bufs_t)["kern"].types
    return _functions_at(members, addrs, data_t, bufs_t)


@intrinsic
def _steps_at(typingctx, addrs, data_t, bufs_t):
    """(rows, layers, split_steps) as first-class functions from addrs, the entry
    addresses of _batch_rows, _layer_rows_update and _split_steps."""
    t = _signatures_of(data_t, bufs_t)
    members = t["inner"].types + (types.FunctionType(t["split_steps"]),)
    return _functions_at(members, addrs, data_t, bufs_t)


_KERNELS = {}


def kernel_pointers(dtype, X_type=None, ylab_type=None, ytgt_type=None, matmul="own",
                    act_code=None, loss_code=LOSS_CE_LABELS, parallel=True):
    """(kern, steps) for run_steps with float arrays of dtype (float32 or float64): the
    entry addresses (ints) of the kernels it calls, compiled (or loaded from Numba's cache)
    for the types step_signatures declares.  kern: Kernels(gemm, chunk_addr, update, loss);
    steps: (_batch_rows, _layer_rows_update, _split_steps).  X_type, ylab_type, ytgt_type:
    the Numba types of the data arguments (``numba.typeof``: read-only data such as a
    memory map has its own); by default writable C-contiguous arrays of dtype (int64
    labels).  matmul="blas": gemm.gemm_blas in place of the GEMM (same signature; its
    chunk_addr is 0 and unused).  act_code: codes.epilogue_code of the network's
    activations (gemm.column_chunk_address; None: the chunk for every activation).  loss_code: the
    loss run_steps will be given (_label_loss_rows or _target_loss_rows).  parallel: the
    one run_steps will be given; False gives optimizer_update_serial (same signature),
    which compiles without a parallel loop.

    Why addresses: each kernel compiles once, on its own, instead of again in every
    function that would link it by name (linking.py); and run_steps is given ints, which
    Python types in nanoseconds, where tuples of function objects took ~40 us a call."""
    dtype = np.dtype(dtype)
    f = types.float32 if dtype == np.float32 else types.float64
    mat, vi = types.Array(f, 2, "C"), types.Array(types.int64, 1, "C")
    X_type = X_type or mat
    ylab_type = ylab_type or vi
    ytgt_type = ytgt_type or mat
    labels = loss_code == LOSS_CE_LABELS
    key = (dtype, X_type, ylab_type, ytgt_type, matmul, act_code, labels, parallel)
    if key not in _KERNELS:
        t = step_signatures(f, X_type, ylab_type, ytgt_type)
        blas = matmul == "blas"
        kern = Kernels(jit_address(gemm_blas if blas else gemm, t["gemm"]),
                       0 if blas else column_chunk_address(dtype, act_code),
                       jit_address(optimizer_update if parallel else optimizer_update_serial,
                                   t["update"]),
                       jit_address(_label_loss_rows if labels else _target_loss_rows,
                                   t["loss"]))
        steps = (jit_address(_batch_rows, t["rows"]),
                 jit_address(_layer_rows_update, t["layers"]),
                 jit_address(_split_steps, t["split_steps"]))
        _KERNELS[key] = (kern, steps)
    return _KERNELS[key]
