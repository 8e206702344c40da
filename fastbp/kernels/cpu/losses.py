"""Losses fused with their gradient w.r.t. the last layer's pre-activation Z (CPU, Numba).

Each kernel makes one pass per row, writes dL/dZ into G (same shape as Z) and returns the
loss as a float64 (accumulated in float64 whatever the storage dtype, so that a large
batch does not drift).  Each row's loss goes to ``row_loss`` (b,) float64, caller-owned
workspace, and the rows are then added in order, so the kernel allocates nothing.  The
``*_rows`` kernels do the per-row part for any block of a batch's rows, with the batch's
scale passed in, so a batch can be shared among threads (steps.run_steps) and still give
the same bits as the whole-batch kernel.

The losses run on one thread: they touch b x C values, nothing next to the products, and a
parallel region (with its Numba compile, several seconds per kernel) would cost more than
it saves.

cross_entropy (softmax fused, log-sum-exp; never log(softmax)):
    lse_i  = m_i + log sum_c exp(z_ic - m_i),   m_i = max_c z_ic
    labels:  L = (1/b) sum_i (lse_i - z_{i,y_i});   G = (softmax(Z) - onehot(y)) / b
    targets: L = (1/b) sum_i sum_c t_ic (lse_i - z_ic);
             G = (softmax(Z) * sum_c t_ic - T) / b     (= (softmax(Z) - T)/b for rows summing to 1)
mse (mean over all b*n elements, as torch.nn.functional.mse_loss):
    L = (1/bn) sum (z - t)^2;   G = 2 (z - t) / (bn)
binary_cross_entropy (sigmoid fused, as torch's BCEWithLogitsLoss, mean over all elements):
    L = (1/bn) sum max(z, 0) - z t + log(1 + exp(-|z|));   G = (sigmoid(z) - t) / (bn)
poisson (log link: z is the log of the mean, as torch's PoissonNLLLoss(log_input=True)):
    L = (1/bn) sum exp(z) - t z;   G = (exp(z) - t) / (bn)
huber (delta > 0, as torch's HuberLoss, mean over all elements), d = z - t:
    L = (1/bn) sum (0.5 d^2 if |d| <= delta else delta (|d| - delta / 2))
    G = (d if |d| <= delta else delta sign(d)) / (bn)
label smoothing eps (cross-entropy, as torch's label_smoothing): the targets become
(1 - eps) onehot(y) + eps / C (labels) or (1 - eps) T + eps / C (targets); eps = 0 is the
unsmoothed kernel, bit for bit.

Sample weights w (b,) (float64; an empty array: every row weighs 1) make each mean a
weighted one, as scikit-learn's MLP: row i's terms are multiplied by w_i and the divisor b
becomes sum_i w_i (W), so L = (1/W) sum_i w_i l_i and integer weights act as repeated rows.
The ``*_rows`` kernels take the row's factor as w_i * scale with scale = 1 / (W [* n]),
which for unit weights is exactly the unweighted scale (the same bits).  A batch whose
weights sum to 0 has scale 0: no loss, no gradient.
"""
import math

import numpy as np
from numba import njit

from .. import codes
from .activations import exp_scalar

# the element-wise losses' terms (codes.py: one formula for both devices)
_mse_term = njit(cache=True, inline="always")(codes.mse_term)
_poisson_term = njit(cache=True, inline="always")(codes.poisson_term)
_huber_term = njit(cache=True, inline="always")(codes.huber_term)


@njit(cache=True, inline="always")
def _row_exp(Z, i, E):
    """E[i, c] = exp(Z[i, c] - m) for row i, m = max_c Z[i, c]; returns (m, sum_c E[i, c]).

    The exponentials are computed in Z's dtype (float32: exp_scalar's vectorised float32
    exp, 16 classes at a time; float64: libm) and stored in E, whose values the sum adds
    in float64 and the gradient pass scales (no second exp).  The sum runs in 8 interleaved
    partial sums, a fixed order, so that it vectorises too.  Measured against the earlier
    kernel (exp in float64 through libm, one value at a time), one thread, float32:
    cross_entropy_labels_rows 32 x 10 1.8 -> 1.4 us, 256 x 100 129 -> 39 us, 1024 x 1000
    5.2 -> 1.5 ms; row losses within 2.3e-8 of it.  (The maximum in 8 partial maxima as
    well: 1.5 -> 1.3 ms, but 0.9 s more compile of the training step; not kept.)
    E (b, C) is the caller's output array, overwritten afterwards, never Z itself."""
    n = Z.shape[1]
    z = Z[i]
    e = E[i]
    m = z[0]
    for c in range(1, n):
        if z[c] > m:
            m = z[c]
    for c in range(n):
        e[c] = exp_scalar(z[c] - m)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    n8 = n - n % 8
    for c in range(0, n8, 8):
        s0 += e[c]
        s1 += e[c + 1]
        s2 += e[c + 2]
        s3 += e[c + 3]
        s4 += e[c + 4]
        s5 += e[c + 5]
        s6 += e[c + 6]
        s7 += e[c + 7]
    for c in range(n8, n):
        s0 += e[c]
    return m, ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True, _nrt=False, inline="always")
def _row_factor(scale, w, i):
    """Row i's gradient factor: scale, times w[i] when there are weights."""
    return scale if w.shape[0] == 0 else scale * w[i]


@njit(cache=True, _nrt=False, inline="always")
def _row_weighted(loss, w, i):
    """Row i's loss, times w[i] when there are weights."""
    return loss if w.shape[0] == 0 else loss * w[i]


@njit(cache=True, _nrt=False)
def weight_total(w, m):
    """sum(w) in order (float64), or m where w is empty (no weights)."""
    if w.shape[0] == 0:
        return np.float64(m)
    total = 0.0
    for i in range(w.shape[0]):
        total += w[i]
    return total


@njit(cache=True, _nrt=False)
def mean_scale(total, count):
    """1 / (total * count): the factor of a mean over total rows' weight and count values
    a row (0 where total is 0: a batch of zero weight contributes nothing)."""
    if total == 0.0:
        return 0.0
    return 1.0 / (total * count)


@njit(cache=True, _nrt=False)
def cross_entropy_labels_rows(Z, y, G, row_loss, scale, w, smoothing):
    """Rows of a batch: Z (r, C) logits, y (r,) int64 labels in [0, C), G (r, C) out,
    row_loss (r,) out, w (r,) weights or empty, label smoothing eps in [0, 1).
    G = (softmax(Z) - target) * w_i * scale, row_loss[i] = w_i sum_c target_c (lse_i - z_ic)
    with target = onehot(y) (eps = 0) or its smoothed form; scale is 1 / (weight of the
    whole batch), so that a batch can be done in parts."""
    b, n = Z.shape
    keep = 1.0 - smoothing
    spread = smoothing / n
    for i in range(b):
        m, s = _row_exp(Z, i, G)
        lse = m + math.log(s)
        label = y[i]
        inv_s = 1.0 / s
        f = _row_factor(scale, w, i)
        if smoothing == 0.0:
            for c in range(n):
                # (p - onehot) * factor in float64, rounded to the storage type once
                p = np.float64(G[i, c]) * inv_s
                if c == label:
                    p -= 1.0
                G[i, c] = p * f
            row_loss[i] = _row_weighted(lse - Z[i, label], w, i)
        else:
            zsum = 0.0
            for c in range(n):
                zsum += Z[i, c]
                p = np.float64(G[i, c]) * inv_s - spread
                if c == label:
                    p -= keep
                G[i, c] = p * f
            loss = keep * (lse - Z[i, label]) + smoothing * (lse - zsum / n)
            row_loss[i] = _row_weighted(loss, w, i)


@njit(cache=True, _nrt=False, inline="always")
def _smoothed(t, keep, spread, smoothing):
    """A target value after label smoothing (itself where smoothing is 0)."""
    return t if smoothing == 0.0 else keep * t + spread


@njit(cache=True, _nrt=False)
def cross_entropy_targets_rows(Z, T, G, row_loss, scale, w, smoothing):
    """Rows of a batch: Z (r, C) logits, T (r, C) probability / one-hot targets, G (r, C)
    out, row_loss (r,) out; scale, w and smoothing as in cross_entropy_labels_rows (the
    targets smoothed: (1 - eps) T + eps / C)."""
    b, n = Z.shape
    keep = 1.0 - smoothing
    spread = smoothing / n
    for i in range(b):
        acc = 0.0
        m, s = _row_exp(Z, i, G)
        lse = m + math.log(s)
        tsum = 0.0
        for c in range(n):
            t = _smoothed(np.float64(T[i, c]), keep, spread, smoothing)
            tsum += t
            acc += t * (lse - Z[i, c])
        inv_s = 1.0 / s
        f = _row_factor(scale, w, i)
        for c in range(n):
            p = np.float64(G[i, c]) * inv_s
            G[i, c] = (p * tsum - _smoothed(T[i, c], keep, spread, smoothing)) * f
        row_loss[i] = _row_weighted(acc, w, i)


@njit(cache=True, _nrt=False)
def mse_rows(Z, T, G, row_loss, scale, w):
    """Rows of a batch: Z (r, n) predictions, T (r, n) targets, G (r, n) out, row_loss (r,)
    out (sum of squared errors of the row, times w_i); scale is 1 / (n * weight of the
    whole batch)."""
    b, n = Z.shape
    for i in range(b):
        acc = 0.0
        f = _row_factor(scale, w, i)
        for c in range(n):
            loss, g = _mse_term(np.float64(Z[i, c]), np.float64(T[i, c]))
            acc += loss
            G[i, c] = g * f
        row_loss[i] = _row_weighted(acc, w, i)


@njit(cache=True, _nrt=False)
def binary_cross_entropy_rows(Z, T, G, row_loss, scale, w):
    """Rows of a batch: Z (r, n) logits, T (r, n) targets in [0, 1], G (r, n) out,
    row_loss (r,) out; scale and w as in mse_rows."""
    b, n = Z.shape
    for i in range(b):
        acc = 0.0
        f = _row_factor(scale, w, i)
        for c in range(n):
            z = np.float64(Z[i, c])
            t = np.float64(T[i, c])
            e = math.exp(-abs(z))            # one exp for the loss and sigmoid(z)
            acc += max(z, 0.0) - z * t + math.log1p(e)
            sig = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
            G[i, c] = (sig - t) * f
        row_loss[i] = _row_weighted(acc, w, i)


@njit(cache=True, _nrt=False)
def poisson_rows(Z, T, G, row_loss, scale, w):
    """Rows of a batch: Z (r, n) log-means, T (r, n) non-negative counts, G (r, n) out,
    row_loss (r,) out (sum over the row of exp(z) - t z, times w_i); scale and w as in
    mse_rows."""
    b, n = Z.shape
    for i in range(b):
        acc = 0.0
        f = _row_factor(scale, w, i)
        for c in range(n):
            loss, g = _poisson_term(np.float64(Z[i, c]), np.float64(T[i, c]))
            acc += loss
            G[i, c] = g * f
        row_loss[i] = _row_weighted(acc, w, i)


@njit(cache=True, _nrt=False)
def huber_rows(Z, T, G, row_loss, scale, w, delta):
    """Rows of a batch: Z (r, n) predictions, T (r, n) targets, G (r, n) out, row_loss (r,)
    out (the row's sum of Huber terms, times w_i); scale and w as in mse_rows; delta > 0."""
    b, n = Z.shape
    for i in range(b):
        acc = 0.0
        f = _row_factor(scale, w, i)
        for c in range(n):
            loss, g = _huber_term(np.float64(Z[i, c]), np.float64(T[i, c]), delta)
            acc += loss
            G[i, c] = g * f
        row_loss[i] = _row_weighted(acc, w, i)


@njit(cache=True)
def mean_row_loss(row_loss, scale):
    """The batch loss from the row losses: their sum, in row order, times scale."""
    total = 0.0
    for i in range(row_loss.shape[0]):
        total += row_loss[i]
    return total * scale


@njit(cache=True)
def cross_entropy_labels(Z, y, G, row_loss, w, smoothing):
    """Z (b, C) logits, y (b,) int64 labels in [0, C), G (b, C) out, row_loss (b,), w (b,)
    weights or empty, label smoothing.  Returns the (weighted) mean loss."""
    scale = mean_scale(weight_total(w, Z.shape[0]), 1)
    cross_entropy_labels_rows(Z, y, G, row_loss, scale, w, smoothing)
    return mean_row_loss(row_loss[:Z.shape[0]], scale)


@njit(cache=True)
def cross_entropy_targets(Z, T, G, row_loss, w, smoothing):
    """Z (b, C) logits, T (b, C) probability / one-hot targets, G (b, C) out. Returns mean loss."""
    scale = mean_scale(weight_total(w, Z.shape[0]), 1)
    cross_entropy_targets_rows(Z, T, G, row_loss, scale, w, smoothing)
    return mean_row_loss(row_loss[:Z.shape[0]], scale)


@njit(cache=True)
def mse(Z, T, G, row_loss, w):
    """Z (b, n) predictions, T (b, n) targets, G (b, n) out. Returns the mean squared error."""
    scale = mean_scale(weight_total(w, Z.shape[0]), Z.shape[1])
    mse_rows(Z, T, G, row_loss, scale, w)
    return mean_row_loss(row_loss[:Z.shape[0]], scale)


@njit(cache=True)
def binary_cross_entropy(Z, T, G, row_loss, w):
    """Z (b, n) logits, T (b, n) targets in [0, 1], G (b, n) out. Returns the mean loss."""
    scale = mean_scale(weight_total(w, Z.shape[0]), Z.shape[1])
    binary_cross_entropy_rows(Z, T, G, row_loss, scale, w)
    return mean_row_loss(row_loss[:Z.shape[0]], scale)


@njit(cache=True)
def huber(Z, T, G, row_loss, w, delta):
    """Z (b, n) predictions, T (b, n) targets, G (b, n) out. Returns the mean Huber loss."""
    scale = mean_scale(weight_total(w, Z.shape[0]), Z.shape[1])
    huber_rows(Z, T, G, row_loss, scale, w, delta)
    return mean_row_loss(row_loss[:Z.shape[0]], scale)


@njit(cache=True)
def poisson(Z, T, G, row_loss, w):
    """Z (b, n) log-means, T (b, n) counts, G (b, n) out. Returns the mean Poisson loss."""
    scale = mean_scale(weight_total(w, Z.shape[0]), Z.shape[1])
    poisson_rows(Z, T, G, row_loss, scale, w)
    return mean_row_loss(row_loss[:Z.shape[0]], scale)


@njit(cache=True)
def softmax_rows(Z, P):
    """P (b, C) = softmax(Z) row by row, computed with the row maximum subtracted."""
    b, n = Z.shape
    for i in range(b):
        m, s = _row_exp(Z, i, P)
        inv_s = 1.0 / s
        for c in range(n):
            P[i, c] = np.float64(P[i, c]) * inv_s


@njit(cache=True)
def count_correct_labels(Z, y):
    """Number of rows of Z (b, C) whose argmax equals the label y (b,)."""
    b, n = Z.shape
    correct = 0
    for i in range(b):
        best = 0
        for c in range(1, n):
            if Z[i, c] > Z[i, best]:
                best = c
        if best == y[i]:
            correct += 1
    return correct


@njit(cache=True)
def count_correct_multilabel(Z, T):
    """Number of rows where every output's decision (Z > 0) matches the 0/1 target T."""
    b, n = Z.shape
    correct = 0
    for i in range(b):
        ok = True
        for c in range(n):
            if (Z[i, c] > 0) != (T[i, c] > 0.5):
                ok = False
                break
        if ok:
            correct += 1
    return correct


@njit(cache=True, _nrt=False, inline="always")
def _square_sum(W):
    """sum(W^2) in float64 as 8 interleaved partial sums in a fixed order, which
    vectorises (one chain of dependent additions ran at ~1 ns a value: 13 ms for 12.8M
    weights, against 2 ms)."""
    n = W.shape[0]
    n8 = n - n % 8
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for i in range(0, n8, 8):
        s0 += np.float64(W[i]) * W[i]
        s1 += np.float64(W[i + 1]) * W[i + 1]
        s2 += np.float64(W[i + 2]) * W[i + 2]
        s3 += np.float64(W[i + 3]) * W[i + 3]
        s4 += np.float64(W[i + 4]) * W[i + 4]
        s5 += np.float64(W[i + 5]) * W[i + 5]
        s6 += np.float64(W[i + 6]) * W[i + 6]
        s7 += np.float64(W[i + 7]) * W[i + 7]
    for i in range(n8, n):
        s0 += np.float64(W[i]) * W[i]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True, fastmath={"contract"}, _nrt=False)
def l2_loss(W, l2):
    """0.5 * l2 * sum(W^2) over a flat weight view, summed in float64 (_square_sum)."""
    return 0.5 * l2 * _square_sum(W)


@njit(cache=True, fastmath={"contract"}, _nrt=False)
def add_l2_grad(W, dW, l2):
    """dW += l2 * W over flat views of the same length (any part of a layer's weights)."""
    for i in range(W.shape[0]):
        dW[i] += l2 * W[i]


@njit(cache=True, _nrt=False)
def add_l2(W, dW, l2):
    """dW += l2 * W over a flat weight view and return 0.5 * l2 * sum(W^2) (float64).
    Two passes, each vectorised (one fused pass measured slower: 6.9 against 5.5 ms for
    12.8M float32 weights)."""
    loss = l2_loss(W, l2)
    add_l2_grad(W, dW, l2)
    return loss
