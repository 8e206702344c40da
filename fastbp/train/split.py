"""How a compiled training step is shared among threads, and whether that pays.

A step too small for parallel products runs on one thread or, with threads to spare, is
split: the batch's rows shared among the threads for the forward pass, loss and data
gradients, then the layers' output rows for the weight gradients and updates
(kernels/cpu/steps.run_steps).  Larger steps run parallel products, and up to
ROW_SPLIT_MAX_FLOPS share out their weight gradients and updates by rows.  Measurements
behind the thresholds: docs/performance.md.
"""
import itertools
import weakref

import numpy as np

# Steps of up to this many flops run on one thread (or split by rows: run_steps), larger
# ones with parallel products.
SERIAL_STEP_FLOPS = 3e7
# Steps of up to this many flops (and more than SERIAL_STEP_FLOPS) compute their weight
# gradients and updates shared out by rows (see steps.run_steps).  Measured (2 threads,
# geometric means of 4 processes, each interleaving both ways): 784-512-512-10 b128
# (0.5 GFLOP a step) 1.027x and, in another set, 1.064x; 784-2048-2048-10 b256 (8 GFLOP)
# 0.983x and 0.979x.  SplitChooser could not tell a gain this size from the noise of
# single steps (with it, 1.00x), so this is a fixed threshold.
ROW_SPLIT_MAX_FLOPS = 2e9
SPLIT_MIN_ROWS = 16           # rows per thread below which a split step is not worth it


def layer_weights(sizes):
    """Weights (fan_in * fan_out) of each layer: its share of a step's multiply-adds."""
    return [a * b for a, b in itertools.pairwise(sizes)]


def split_threads(sizes, bs):
    """Threads to split a small step over (1: do not split; see steps.run_steps).

    Needs a thread-safe threading layer (omp or tbb) and at least SPLIT_MIN_ROWS rows per
    thread.  Measured (2 threads, in-process A/B against one thread): 40-100-100-10 b32
    1.0-1.26x, 64-128-64-10 b32 1.0-1.26x, 100-200-200-200-10 b64 1.24-1.39x; 784-100-10
    b32 0.89-0.96x while the weight gradients were shared out by whole layers, 1.10x
    (median of 20 rounds) since a layer's rows can be shared (``layer_row_split``).  On
    this VM the gain comes and goes with the machine's state, so the trainer still
    measures, chunk by chunk, whether the split pays (``SplitChooser``)."""
    import numba

    from ..runtime import threadsafe
    if not threadsafe():
        return 1
    return max(1, min(numba.get_num_threads(), bs // SPLIT_MIN_ROWS))


def layer_row_split(sizes, n_split):
    """(L, n_split + 1) int64: thread t computes the weight gradients and updates of layer
    l's output rows [split[l, t], split[l, t + 1]) in a split step.

    The layers' output rows, in order, are cut into n_split runs of about equal work (a row
    of layer l is fan_in multiply-adds per example), each cut rounded to a whole panel of
    the GEMM (MR rows) within its layer.  So at most n_split - 1 layers are shared between
    threads (each shared layer packs its other operand once per thread) and the rest are
    whole; a network whose weights sit in one layer still keeps every thread busy."""
    from ..kernels.cpu.microkernel import MR
    fan_in, fan_out = sizes[:-1], sizes[1:]
    total = sum(layer_weights(sizes))
    split = np.zeros((len(fan_out), n_split + 1), np.int64)
    split[:, n_split] = fan_out
    done = 0                                  # work of the layers before l
    for l, (k, n) in enumerate(zip(fan_in, fan_out)):
        for t in range(1, n_split):
            rows = (t * total / n_split - done) / k       # the cut, in rows of layer l
            split[l, t] = min(max(round(rows / MR) * MR, 0), n)
        done += k * n
    return split


class SplitChooser:
    """Chooses, while training, whether each chunk of steps runs split over n_split
    threads (see steps.run_steps: a small step's rows, a large step's weight gradients)
    or not (a small step on one thread, a large one with parallel products throughout).

    Both give the same bits, so only speed decides, and on these 2-core VMs which one is
    faster changes with the machine's state from one second to the next (split against
    one thread, in-process A/B, 40-100-100-10 b32: 0.55-1.25x per round; medians 0.78x
    and 0.85x in one session, 1.0-1.26x in earlier ones).  So the trainer measures: every
    PERIOD chunks it runs PROBE chunks each way, alternating, and keeps the faster (per
    step, the best of its probes: the first chunk of a fit may include loading the
    compiled code) for the rest of the period.  A probe's slower half costs at most a
    few percent of the period.  A chunk that runs REPROBE times slower per step than its
    way did in the last probes (the machine's state changed; in one benchmark run a split
    step went from 45 to 104 us for a whole epoch while one thread took 62 us) starts the
    next probes at once instead of at the end of the period."""

    PROBE = 2
    PERIOD = 50
    REPROBE = 1.5

    def __init__(self, n_split, probe=True):
        """Options: n_split threads or one, or (probe False, or n_split 1) n_split only."""
        self.options = (n_split, 1) if n_split > 1 and probe else (n_split,)
        self.current = self.options[0]
        self.calls = 0
        self.times = {n: [] for n in self.options}
        self.reference = None     # seconds per step of the current way in the last probes

    def pick(self):
        """Threads for the next chunk of steps."""
        phase = self.calls % self.PERIOD
        if len(self.options) > 1 and phase < 2 * self.PROBE:
            return self.options[phase % 2]
        return self.current

    def record(self, n, seconds, steps):
        """The chunk just run with n threads took seconds for steps steps."""
        phase = self.calls % self.PERIOD
        self.calls += 1
        if len(self.options) == 1:
            return
        per_step = seconds / steps
        if phase >= 2 * self.PROBE:
            if self.reference is not None and per_step > self.REPROBE * self.reference:
                self.calls += (-self.calls) % self.PERIOD    # the next chunk starts a period
            return
        self.times[n].append(per_step)
        if phase == 2 * self.PROBE - 1:
            self.current = min(self.options, key=lambda k: min(self.times[k]))
            self.reference = min(self.times[self.current])
            for k in self.options:
                self.times[k].clear()


# Each model's choosers, one per (batch size, threads): kept across fit calls, so that a
# run of short fits (partial_fit, an epoch per call) goes on with the period and the
# choice it had, instead of probing again at every start (where the first chunk also
# includes loading the compiled code).
_CHOOSERS = weakref.WeakKeyDictionary()


def chooser(model, bs, n_split, probe=True):
    """The SplitChooser for model's steps of bs rows split over n_split threads (probe:
    whether it measures split against not split, or always splits)."""
    per_model = _CHOOSERS.setdefault(model, {})
    key = (bs, n_split, probe)
    if key not in per_model:
        per_model[key] = SplitChooser(n_split, probe)
    return per_model[key]
