"""Forward-only inference (CPU): every layer of a batch in one compiled call.

    for each tile of at most `tile` rows:
        A_0 = X[tile]
        A_l = f(A_{l-1} W_l^T + b_l)        gemm, bias and activation in its epilogue,
                                            written over Z_l (nothing keeps Z for a backward)
        Z_L = A_{L-1} W_L^T + b_L           the output layer
        out[tile] = Z_L, softmax(Z_L) or sigmoid(Z_L)
                                            the probabilities while the tile is in cache

The products are the training path's gemm calls on the same rows, so the outputs are the
training forward's bit for bit: gemm sums each element over k in order whatever the tile,
the packing or the threads (microkernel.py).  The scratch (two activation buffers of tile x
the widest hidden layer, the logits of a tile, gemm's packing buffers) is the caller's, made
per call: calls share nothing, so threads may predict at once, and nothing is kept.  One
call per batch: the per-layer Python dispatch of the training path (three to six argument
tuples typed per layer) is paid once.
"""
import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from . import gemm as gemm_mod
from .gemm import EPI_BIAS_ACT
from .linking import as_writable, function_at, function_at_typed, jit_address, reshape_c
from .activations import sigmoid_scalar
from .losses import softmax_rows

OUT_LOGITS, OUT_SOFTMAX, OUT_SIGMOID = 0, 1, 2
# Rows a tile holds: each product packs its weights once per tile (1/tile of its work),
# and its packed inputs (tile x n_in) should stay near L2.  Measured at batch 4096 on the
# four networks of docs/performance.md: 512 rows best except for 3072 inputs (256).
TILE = 512
TILE_ELEMENTS = 1 << 20


def tile_rows(n_rows, widest_input):
    """Rows per tile for a batch of n_rows: TILE, halved while a tile of the widest layer
    input would exceed TILE_ELEMENTS (down to 64), at most n_rows."""
    tile = TILE
    while tile > 64 and tile * widest_input > TILE_ELEMENTS:
        tile //= 2
    return min(n_rows, tile)


@intrinsic
def _gemm_at(typingctx, addr, like):
    """The compiled gemm for like's dtype at addr (gemm_address)."""
    return function_at_typed(gemm_mod.gemm_signature(like.dtype), addr, like)


_ADDRESSES = {}


def gemm_address(dtype, blas=False):
    """Entry address of gemm (or gemm_blas) compiled for dtype's arrays."""
    key = (np.dtype(dtype), blas)
    if key not in _ADDRESSES:
        f = types.float32 if key[0] == np.float32 else types.float64
        _ADDRESSES[key] = jit_address(gemm_mod.gemm_blas if blas else gemm_mod.gemm,
                                      gemm_mod.gemm_signature(f))
    return _ADDRESSES[key]


def segment_sizes(tile, sizes, probabilities, a_copies):
    """(s0, s1, sl, sa, sb): forward's scratch segments (see forward) for tiles of `tile`
    rows of the network `sizes`, each rounded up to 16 elements (64-byte boundaries)."""
    def up(n):
        return -(-n // 16) * 16
    widest = max(sizes[1:-1], default=0)
    packs = [gemm_mod.pack_sizes(tile, b, a, a_copies) for a, b in zip(sizes, sizes[1:])]
    return (up(tile * widest), up(tile * widest if len(sizes) > 3 else 0),
            up(tile * sizes[-1] if probabilities else 0), up(max(a for a, _ in packs)),
            up(max(b for _, b in packs)))


@njit(cache=True, _nrt=False, inline="always")
def _segments(scratch, offset, segments):
    """The five segments, from `offset` elements past scratch's first 64-byte boundary."""
    s0, s1, sl, sa, sb = segments
    a = offset + (-scratch.ctypes.data % 64) // scratch.itemsize
    z0 = scratch[a:a + s0]
    a += s0
    z1 = scratch[a:a + s1]
    a += s1
    zl = scratch[a:a + sl]
    a += sl
    apack = scratch[a:a + sa]
    a += sa
    return z0, z1, zl, apack, scratch[a:a + sb]


@njit(cache=True, _nrt=False)      # no reference counting: as_writable's view needs none
def forward(X, r_begin, r_end, net, work, out):
    """out[r_begin:r_end] = the network's output for X[r_begin:r_end] (X (M, n_in), out
    (M, n_out)), tile by tile on this thread, each product split over columns between
    the threads (work's parallel) when it is large.

    net = (params (P,), layers (L, 5) int64 rows of (weight offset, bias offset, n_in,
    n_out) as Layout gives them and the layer's activation code (the last layer's is
    ignored), slopes (L,) float64, out_kind, gemm_addr, chunk_addr).
    work = (scratch, offset, segments, tile, parallel): from `offset` elements past
    scratch's first 64-byte boundary, one after the other, segments = (s0, s1, sl, sa, sb)
    elements of z0, z1 (>= tile * widest hidden), zl (>= tile * n_out), apack, bpack (for
    pack_sizes(tile, n_out, n_in) of every layer), each a multiple of 16 elements
    (segment_sizes; scratch holds 16 elements more).  One allocation a call: the five
    arrays it replaced cost Python ~5 us of a 10 us small-network call.
    All arrays C-contiguous of one float dtype (X may be read-only); nothing is checked."""
    params, layers, slopes, out_kind, gemm_addr, chunk_addr = net
    scratch, offset, segments, tile, parallel = work
    z0, z1, zl, apack, bpack = _segments(scratch, offset, segments)
    gemm = _gemm_at(gemm_addr, z0)
    M, n_in0 = X.shape
    L = layers.shape[0]
    Xw = reshape_c(as_writable(X), (M * n_in0,))
    out_flat = reshape_c(out, (out.size,))
    none = z0[:0]
    empty2 = reshape_c(none, (0, 0))
    for r0 in range(r_begin, r_end, tile):
        m = min(tile, r_end - r0)
        A = reshape_c(Xw[r0 * n_in0:(r0 + m) * n_in0], (m, n_in0))
        for l in range(L):
            w_off, b_off, n_in, n_out = layers[l, 0], layers[l, 1], layers[l, 2], layers[l, 3]
            W = reshape_c(params[w_off:w_off + n_out * n_in], (n_out, n_in))
            bias = params[b_off:b_off + n_out]
            if l == L - 1:
                if out_kind == OUT_LOGITS:
                    C = reshape_c(out_flat[r0 * n_out:(r0 + m) * n_out], (m, n_out))
                else:
                    C = reshape_c(zl[:m * n_out], (m, n_out))
                act = 0
            else:
                C = reshape_c((z0 if l % 2 == 0 else z1)[:m * n_out], (m, n_out))
                act = layers[l, 4]
            gemm(A, False, W, True, C, (EPI_BIAS_ACT, bias, act, slopes[l], C, empty2, empty2),
                 none, apack, bpack, parallel, chunk_addr)
            A = C
        n_out = layers[L - 1, 3]
        P = reshape_c(out_flat[r0 * n_out:(r0 + m) * n_out], (m, n_out))
        if out_kind == OUT_SOFTMAX:
            softmax_rows(A, P)
        elif out_kind == OUT_SIGMOID:
            for i in range(m):
                a, p = A[i], P[i]
                for j in range(n_out):
                    p[j] = sigmoid_scalar(a[j])


@intrinsic
def _forward_at(typingctx, addr, X, net, work, out):
    """forward compiled for these argument types, at addr (forward_address)."""
    fnty = types.FunctionType(types.none(X, types.int64, types.int64, net, work, out))

    def codegen(context, builder, sig, args):
        return function_at(context, builder, fnty, args[0])
    return fnty(addr, X, net, work, out), codegen


def forward_address(X, net, work, out):
    """Entry address of forward compiled for the types of these arguments."""
    sig = (numba.typeof(X), types.int64, types.int64, numba.typeof(net),
           numba.typeof(work), numba.typeof(out))
    key = sig
    if key not in _ADDRESSES:
        _ADDRESSES[key] = jit_address(forward, types.none(*sig))
    return _ADDRESSES[key]


@njit(parallel=True, cache=True, _nrt=False)
def forward_parts(X, net, work, out, n_parts, forward_addr):
    """forward over all rows, split into n_parts contiguous runs of whole tiles, one per
    thread, every product on its thread (one parallel region a call, where forward opens
    one per product).  work's scratch holds n_parts consecutive copies of forward's
    segments, apack's of one packed A (segment_sizes(..., a_copies=1)); its parallel is
    ignored.  forward runs
    through its address (forward_address): compiled once, not again inside this loop."""
    rows = _forward_at(forward_addr, X, net, work, out)
    scratch, offset, segments, tile, parallel = work
    per_part = 0
    for s in segments:
        per_part += s
    M = X.shape[0]
    n_tiles = (M + tile - 1) // tile
    for t in prange(n_parts):
        p = np.int64(t)
        begin = min(M, (p * n_tiles // n_parts) * tile)
        end = min(M, ((p + 1) * n_tiles // n_parts) * tile)
        rows(X, begin, end, net, (scratch, offset + p * per_part, segments, tile, False), out)
