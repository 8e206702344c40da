"""The CPU backend: a model's flat buffers as NumPy arrays, its steps on fastbp's Numba
kernels (kernels/cpu).

    forward   Z_l = A_{l-1} W_l^T + b_l,  A_l = f(Z_l)      one GEMM + epilogue per layer
              (the last layer has no activation: Z_L are the logits / outputs)
    loss      L, G_L = dL/dZ_L                               one fused pass per row
    backward  dW_l = G_l^T A_{l-1},  db_l = sum_rows G_l     one GEMM, db from the same loads
              G_{l-1} = (G_l W_l) * f'(Z_{l-1})              one GEMM + epilogue

Training keeps a Workspace per batch size (the last partial batch of an epoch gets its own,
at most MAX_WORKSPACES), so its steady state allocates nothing.  Inference (forward,
predict, predict_proba) runs kernels/cpu/infer.py with scratch made per call: it keeps
nothing and shares nothing, so threads may predict at once.
"""
import numba
import numpy as np

from ..kernels import codes
from ..kernels.cpu import activations as _act
from ..kernels.cpu import dropout as _drop
from ..kernels.cpu import gemm as _gemm
from ..kernels.cpu import infer as _infer
from ..kernels.cpu import losses as _losses
from ..kernels.cpu import sparse as _sparse
from .._validation import CSRRows, count_nonfinite
from ..runtime import ensure_threads

MAX_WORKSPACES = 4


def cached_workspace(cache, batch, make):
    """cache[batch], made by make() on first use; the oldest entry goes once the cache
    holds MAX_WORKSPACES (an epoch needs two: full batches and the last partial one)."""
    ws = cache.get(batch)
    if ws is None:
        if len(cache) >= MAX_WORKSPACES:
            cache.pop(next(iter(cache)))
        ws = cache[batch] = make()
    return ws


def host_probabilities(Z, loss):
    """Probabilities from output pre-activations Z (b, n) on the host, in float64: softmax
    over the row for cross_entropy (row maximum subtracted), the sigmoid of each output for
    binary_cross_entropy."""
    Z = np.asarray(Z, dtype=np.float64)
    if loss == "cross_entropy":
        P = Z - Z.max(axis=1, keepdims=True)
        np.exp(P, out=P)
        P /= P.sum(axis=1, keepdims=True)
        return P
    return 0.5 * (1.0 + np.tanh(0.5 * Z))


def row_slice(X, r0, r1):
    """Rows r0:r1 of X, dense or CSRRows, as a view (a CSRRows slice keeps the whole
    indices and values: its indptr points into them)."""
    if not isinstance(X, CSRRows):
        return X[r0:r1]
    return CSRRows(X.indptr[r0:r1 + 1], X.indices, X.values, (r1 - r0, X.shape[1]))


def take_rows(X, rows):
    """Rows `rows` (index array) of X, dense or CSRRows, as a new array / CSRRows."""
    if not isinstance(X, CSRRows):
        return np.take(X, rows, axis=0)
    return SparseBatch(X, rows.shape[0], entries=int(
        np.sum(X.indptr[rows + 1] - X.indptr[rows]))).take(X, rows)


class SparseBatch:
    """Gather buffers for batches of up to m rows of a sparse X (CSRRows): a batch is
    gathered as CSR rows, never densified."""

    def __init__(self, X, m, entries=None):
        cap = _sparse.most_entries(X.indptr, m) if entries is None else entries
        self.ptr = np.empty(m + 1, np.int64)
        self.idx = np.empty(cap, np.int64)
        self.val = np.empty(cap, X.values.dtype)
        self.d = X.shape[1]

    def take(self, X, rows):
        nnz = _sparse.csr_take(X.indptr, X.indices, X.values, rows, self.ptr, self.idx,
                               self.val)
        m = rows.shape[0]
        return CSRRows(self.ptr[:m + 1], self.idx[:nnz], self.val[:nnz], (m, self.d))


_NO_WEIGHTS = np.empty(0)     # the loss kernels' "every row weighs 1"
_LOSS_KERNELS = {"mse": _losses.mse, "binary_cross_entropy": _losses.binary_cross_entropy,
                 "poisson": _losses.poisson}


class Workspace:
    """Activations Z, A and deltas G (one (batch, width) array per layer), the row losses,
    and the GEMM's packing buffers, for one batch size."""

    def __init__(self, sizes, batch, dtype, act_codes, sparse=False, drop_rates=None):
        """act_codes: each layer's activation code (MLP.act_codes).  sparse: the first layer
        takes sparse rows (its products are not the GEMM's, so nothing is packed for them).
        drop_rates: each layer's dropout rate (MLP.drop_rates): D_l, the dropped-out A_l,
        for the layers that have one (None elsewhere)."""
        L = len(sizes) - 1
        self.batch = batch
        self.Z = [np.empty((batch, sizes[l + 1]), dtype) for l in range(L)]
        # A_l is Z_l itself where f is the identity (and for the output layer).
        self.A = [self.Z[l] if act_codes[l] == 0 else np.empty_like(self.Z[l])
                  for l in range(L)]
        self.G = [np.empty((batch, sizes[l + 1]), dtype) for l in range(L)]
        self.D = [np.empty_like(self.Z[l]) if drop_rates is not None and drop_rates[l] else None
                  for l in range(L)]
        self.row_loss = np.empty(batch)
        # Packing buffers for the largest of the layer products (forward, dW, dX): a_part
        # elements hold one packed A, apack a copy for each thread (see gemm.pack_copies).
        na = nb = 0
        for l in range(1 if sparse else 0, L):
            n_in, n_out = sizes[l], sizes[l + 1]
            for m, n, k in ((batch, n_out, n_in), (n_out, n_in, batch), (batch, n_in, n_out)):
                a, b = _gemm.pack_sizes(m, n, k, a_copies=1)
                na, nb = max(na, a), max(nb, b)
        self.a_part = na
        self.apack = _gemm.pack_buffer(na * _gemm.pack_copies(), dtype)
        self.bpack = _gemm.pack_buffer(nb, dtype)


class CPUBackend:
    """See fastbp.backends for the protocol.  Holds params/grads (NumPy, the model's dtype)
    and the per-batch-size workspaces."""

    device = "cpu"

    def __init__(self, model, host_params):
        self.model = model
        self.params = host_params
        self.grads = np.zeros_like(host_params)
        self._gemm = _gemm.gemm if model.matmul == "own" else _gemm.gemm_blas
        self.weights, self.biases = model.layout.views(self.params)
        self.weight_grads, self.bias_grads = model.layout.views(self.grads)
        self._flat_w = [w.reshape(-1) for w in self.weights]
        self._flat_dw = [g.reshape(-1) for g in self.weight_grads]
        self._last_output = None
        self._workspaces = {}
        self._none = np.empty(0, model.dtype)
        self._empty2 = np.empty((0, 0), model.dtype)
        self._no_epilogue = (_gemm.EPI_NONE, self._none, 0, 0.0, self._empty2, self._empty2,
                             self._empty2)
        self._infer_net = {}         # first layer -> infer.forward's net (see _infer_dense)
        self._infer_segments = {}    # (tile, split, probabilities) -> infer's scratch
        self._infer_addr = {}        # X writable -> infer.forward's entry address

    # ------------------------------------------------------------------ inputs
    def prepare(self, X, y=None):
        """X (and y) checked against the model: fastbp.MLP.check_X / check_y."""
        X = self.model.check_X(X)
        if y is None:
            return X
        return X, self.model.check_y(y, X.shape[0])

    def workspace(self, batch, sparse=False):
        """The Workspace for batch rows (created on first use); sparse: for CSRRows input."""
        m = self.model

        def make():
            ensure_threads()
            return Workspace(m.sizes, batch, m.dtype, m.act_codes, sparse, m.drop_rates)
        return cached_workspace(self._workspaces, (batch, sparse), make)

    # ------------------------------------------------------------------ compute
    def _chunk_address(self):
        """gemm's chunk_addr for this model's dtype and activations (0 for the BLAS variant,
        which has none)."""
        m = self.model
        if m.matmul != "own":
            return 0
        return _gemm.column_chunk_address(m.dtype, codes.epilogue_code(m.act_codes))

    def _sparse_first_layer(self, X, Z, A):
        """Z = X W_0^T + b_0 and A = f_0(Z) (A is Z for the identity) for CSRRows X."""
        m = self.model
        _sparse.csr_linear(X.indptr, X.indices, X.values, self.weights[0], self.biases[0], Z)
        if m.act_codes[0] != 0:
            _act.activation_forward(Z, A, m.act_codes[0], m.slopes[0])

    def _dropping(self, dropout):
        """Each layer's mask keys (kernels/cpu/dropout.stream) for a pass with dropout =
        (step, row0), None for a layer without dropout (all None without dropout)."""
        m = self.model
        if dropout is None or not m.has_dropout:
            return [None] * m.n_layers
        step = dropout[0]
        return [_drop.stream(m.dropout_seed, step, l) if m.drop_rates[l] else None
                for l in range(m.n_layers)]

    def _forward(self, X, ws, dropout=None):
        """Fused forward pass into the workspace; returns the output pre-activation Z_L.
        X dense, or CSRRows (the first layer's product: kernels/cpu/sparse.py).  dropout:
        (optimizer step, the batch's first row's index in the whole batch) in training, to
        drop out the hidden layers' outputs (ws.D), or None."""
        m = self.model
        A_prev = X
        last = m.n_layers - 1
        chunk = self._chunk_address()
        streams = self._dropping(dropout)
        for l in range(m.n_layers):
            if l == 0 and isinstance(X, CSRRows):
                self._sparse_first_layer(X, ws.Z[0], ws.A[0])
            else:
                epi = (_gemm.EPI_BIAS_ACT, self.biases[l], m.act_codes[l], m.slopes[l],
                       ws.A[l], self._empty2, self._empty2)
                self._gemm(A_prev, False, self.weights[l], True, ws.Z[l], epi, self._none,
                           ws.apack, ws.bpack, True, chunk)
            A_prev = ws.A[l]
            if streams[l] is not None:
                _drop.dropout_forward(ws.A[l], ws.D[l], streams[l], dropout[1], m.drop_rates[l])
                A_prev = ws.D[l]
        self._streams = streams
        return ws.Z[last]

    def _loss(self, Z, y, G, row_loss, w=None):
        """The (weighted) mean loss of Z against y; G = dL/dZ.  w: (b,) float64 or None."""
        m = self.model
        w = _NO_WEIGHTS if w is None else w
        if m.loss == "cross_entropy":
            kernel = _losses.cross_entropy_labels if y.ndim == 1 else \
                _losses.cross_entropy_targets
            return kernel(Z, y, G, row_loss, w, m.loss_param)
        if m.loss == "huber":
            return _losses.huber(Z, y, G, row_loss, w, m.loss_param)
        return _LOSS_KERNELS[m.loss](Z, y, G, row_loss, w)

    def _backward(self, X, ws, dropout=None):
        """Backward pass from ws.G[last] = dL/dZ_L; fills the flat gradient buffer.
        dropout: the forward pass's."""
        m = self.model
        chunk = self._chunk_address()
        streams = self._streams
        for l in range(m.n_layers - 1, -1, -1):
            A_prev = X if l == 0 else (ws.A[l - 1] if streams[l - 1] is None else ws.D[l - 1])
            # dW_l = G_l^T A_{l-1}, and db_l = column sums of G_l from the same pass
            if l == 0 and isinstance(X, CSRRows):
                _sparse.csr_weight_grad(X.indptr, X.indices, X.values, ws.G[0],
                                        self.weight_grads[0], self.bias_grads[0])
                continue
            self._gemm(ws.G[l], True, A_prev, False, self.weight_grads[l], self._no_epilogue,
                       self.bias_grads[l], ws.apack, ws.bpack, True, chunk)
            if l > 0:
                # G_{l-1} = (G_l W_l) * f'(Z_{l-1})
                epi = (_gemm.EPI_ACT_GRAD, self._none, m.act_codes[l - 1], m.slopes[l - 1],
                       self._empty2, ws.Z[l - 1], ws.A[l - 1])
                self._gemm(ws.G[l], False, self.weights[l], False, ws.G[l - 1], epi,
                           self._none, ws.apack, ws.bpack, True, chunk)
                if streams[l - 1] is not None:
                    _drop.dropout_backward(ws.G[l - 1], streams[l - 1], dropout[1],
                                           m.drop_rates[l - 1])

    def loss_and_grad(self, X, y, l2=0.0, w=None, dropout=None):
        ws = self.workspace(X.shape[0], isinstance(X, CSRRows))
        Z = self._forward(X, ws, dropout)
        loss = self._loss(Z, y, ws.G[-1], ws.row_loss, w)
        self._backward(X, ws, dropout)
        self._last_output = Z
        if l2:
            for w, dw in zip(self._flat_w, self._flat_dw):
                loss += _losses.add_l2(w, dw, l2)
        return float(loss)

    def compute_loss(self, X, y, w=None):
        ws = self.workspace(X.shape[0], isinstance(X, CSRRows))
        Z = self._forward(X, ws)
        # The loss kernels write a gradient; use the output delta buffer as scratch.
        return float(self._loss(Z, y, ws.G[-1], ws.row_loss, w))

    def forward(self, X):
        """Output of the last layer for X (checked), a new array (kernels/cpu/infer.py)."""
        return self.infer(X, probabilities=False)

    def infer(self, X, probabilities):
        """Logits / outputs (n, n_outputs) of X (checked), or with probabilities their
        softmax (cross_entropy) or sigmoid (binary_cross_entropy), as a new array; the
        scratch lives for this call only."""
        if isinstance(X, CSRRows):
            return self._infer_sparse(X, probabilities)
        return self._infer_dense(X, probabilities, 0)

    def _infer_sparse(self, X, probabilities, chunk=4096):
        """infer for CSRRows X: the first layer by kernels/cpu/sparse.py, chunk rows at a
        time, the others by the dense inference pass."""
        m = self.model
        n = X.shape[0]
        out = np.empty((n, m.n_outputs), m.dtype)
        last = m.n_layers == 1
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            Z = np.empty((r1 - r0, m.sizes[1]), m.dtype)
            self._sparse_first_layer(row_slice(X, r0, r1), Z, Z)
            if not last:
                out[r0:r1] = self._infer_dense(Z, probabilities, 1)
            elif not probabilities:
                out[r0:r1] = Z
            elif m.loss == "cross_entropy":
                _losses.softmax_rows(Z, out[r0:r1])
            else:
                out[r0:r1] = host_probabilities(Z, m.loss)
        return out

    def _infer_dense(self, X, probabilities, first):
        """infer for dense X through layers first.. of the network (first > 0: X holds
        layer first - 1's activations)."""
        m = self.model
        net = self._infer_net.get(first)
        if net is None:
            ensure_threads()
            lay = m.layout
            layers = np.array([(lay.weight_range(l)[0], lay.bias_range(l)[0], m.sizes[l],
                                m.sizes[l + 1], m.act_codes[l])
                               for l in range(first, m.n_layers)], np.int64)
            net = (self.params, layers, np.array(m.slopes[first:]), 0,
                   _infer.gemm_address(m.dtype, blas=m.matmul == "blas"),
                   self._chunk_address())
            self._infer_net[first] = net
        sizes = m.sizes[first:]
        n = X.shape[0]
        tile = _infer.tile_rows(n, max(sizes[:-1]))
        # Several tiles: one run of tiles per thread, every product on its thread (one
        # parallel region a call; measured 1.04-1.45x splitting each product's columns)
        parts = min(-(-n // tile), numba.get_num_threads())
        key = (tile, parts > 1, probabilities, first)
        segments = self._infer_segments.get(key)
        if segments is None:
            segments = self._infer_segments[key] = _infer.segment_sizes(
                tile, sizes, probabilities, 1 if parts > 1 else _gemm.pack_copies())
        dt = m.dtype
        scratch = np.empty(parts * sum(segments) + 16, dt)
        work = (scratch, 0, segments, tile, True)
        out = np.empty((n, m.n_outputs), dt)
        if probabilities:
            kind = _infer.OUT_SOFTMAX if m.loss == "cross_entropy" else _infer.OUT_SIGMOID
            net = net[:3] + (kind,) + net[4:]
        if parts > 1:
            addr = self._infer_addr.get(X.flags.writeable)
            if addr is None:
                addr = self._infer_addr[X.flags.writeable] = _infer.forward_address(
                    X, net, work, out)
            _infer.forward_parts(X, net, work, out, parts, addr)
        else:
            _infer.forward(X, 0, n, net, work, out)
        return out

    def count_correct(self, y):
        """Correct predictions in the last batch given to loss_and_grad (classification)."""
        loss = self.model.loss
        if loss == "cross_entropy" and y.ndim == 1:
            return _losses.count_correct_labels(self._last_output, y)
        if loss == "binary_cross_entropy":
            return _losses.count_correct_multilabel(self._last_output, y)
        return 0

    def evaluate(self, X, y, batch_size=4096, rows=None, w=None):
        """(mean loss, accuracy or None) over X, or over its rows `rows` (index array; a
        validation split), batch_size rows at a time (those gathered: X is never copied).
        w: (len(X),) float64 sample weights or None; the loss is then their weighted mean,
        the accuracy is not weighted (as Keras' metrics)."""
        n = X.shape[0] if rows is None else rows.shape[0]
        total, weight, correct = 0.0, 0.0, 0
        for i in range(0, n, batch_size):
            if rows is None:
                Xb, yb = row_slice(X, i, min(n, i + batch_size)), y[i:i + batch_size]
                wb = None if w is None else w[i:i + batch_size]
            else:
                idx = rows[i:i + batch_size]
                Xb, yb = take_rows(X, idx), np.take(y, idx, axis=0)
                wb = None if w is None else np.take(w, idx)
            Z = self.infer(Xb, probabilities=False)   # no workspace: nothing kept per size
            del Xb      # a gathered chunk goes now, not when the next one is gathered
            # the loss kernels also write a gradient: scratch for it
            chunk = Z.shape[0] if wb is None else _losses.weight_total(wb, 0)
            total += self._loss(Z, yb, np.empty_like(Z), np.empty(Z.shape[0]), wb) * chunk
            weight += chunk
            self._last_output = Z
            correct += self.count_correct(yb)
        loss = total / weight if weight > 0 else 0.0
        return loss, (correct / n if self.model.has_accuracy(y) else None)

    def predict_proba(self, X):
        """Probabilities for X (checked): softmax rows for cross_entropy, sigmoid of each
        output for binary_cross_entropy, fused into the inference pass."""
        return self.infer(X, probabilities=True)

    # ------------------------------------------------------------------ buffers
    def to_host(self, buf):
        return buf

    def copy_into(self, dst, src):
        dst[...] = src

    def restore(self, snap):
        """Put back the parameters of a snapshot."""
        self.params[...] = snap

    def snapshot(self, into=None):
        """A copy of the flat parameters (reusing into, if given)."""
        if into is None:
            return self.params.copy()
        into[...] = self.params
        return into

    def fill_grads(self, value):
        self.grads[...] = value

    def params_finite(self):
        """Whether every parameter is finite (a compiled pass that allocates nothing)."""
        return count_nonfinite(self.params) == 0
