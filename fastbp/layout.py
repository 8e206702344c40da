"""The layout of the flat parameter buffer, the one place that knows it.

A network with widths sizes = [n_0, n_1, ..., n_L] keeps all its parameters in one flat
buffer (and its gradients in another of the same layout), layer after layer:

    [W_1 (n_1 x n_0, row-major, as torch.nn.Linear.weight), b_1 (n_1), W_2, b_2, ...]

so an optimizer step is one kernel over one array, a checkpoint is one array and a
data-parallel all-reduce is one call.  The compiled training steps compute the same
offsets in compiled code (kernels/cpu/steps.layer_offset); tests/test_house.py checks
that the two agree.
"""


class Layout:
    """Offsets of each layer's weight and bias in a flat buffer for layer widths sizes."""

    def __init__(self, sizes):
        self.sizes = tuple(int(s) for s in sizes)
        starts = [0]
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            starts.append(starts[-1] + fan_out * (fan_in + 1))
        self._starts = starts

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    @property
    def size(self):
        """Total number of parameters (the flat buffer's length)."""
        return self._starts[-1]

    def weight_range(self, l):
        """(start, stop) of layer l's weight, (fan_out x fan_in) values row by row."""
        start = self._starts[l]
        return start, start + self.sizes[l + 1] * self.sizes[l]

    def bias_range(self, l):
        """(start, stop) of layer l's bias (fan_out values)."""
        w_stop = self.weight_range(l)[1]
        return w_stop, w_stop + self.sizes[l + 1]

    def views(self, buf):
        """([W_l views (fan_out, fan_in)], [b_l views (fan_out,)]) into buf, a NumPy or a
        Numba device array of length size."""
        if buf.shape != (self.size,):
            raise ValueError(f"a flat buffer of {self.size} values is needed, got shape "
                             f"{buf.shape}")
        weights, biases = [], []
        for l in range(self.n_layers):
            w0, w1 = self.weight_range(l)
            b0, b1 = self.bias_range(l)
            weights.append(buf[w0:w1].reshape(self.sizes[l + 1], self.sizes[l]))
            biases.append(buf[b0:b1])
        return weights, biases

    def __repr__(self):
        return f"Layout(sizes={list(self.sizes)}, size={self.size})"
