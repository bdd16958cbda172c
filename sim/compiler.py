"""The layer compiler: every layer the golden model accepts as a schedule of engine passes.

A layer that the engine holds (:func:`rtl.limits.check_layer` accepts it) is one pass. A larger
one is split into passes that each fit, the way NVDLA's compiler, Gemmini and VTA split layers:

- **output channels** beyond the engine's (or the weight memory's) reach: passes over groups of
  output channels, each with its slice of the weights and per-channel constants;
- **input channels**: passes over groups of input channels whose int32 partial sums the
  engine accumulates itself (``s_axis_acc``, ``QUANT.acc_in``): every pass but the last outputs
  raw sums, the next one adds them, and only the last applies requantization, ReLU and the
  fused pool, so the output bytes are those of one pass. The bias goes into the first pass;
- **kernels** larger than the engine's: sub-kernels, accumulated like input-channel groups;
- **maps** wider or taller than the engine (or its line buffer) holds: tiles of output rows and
  columns, each with its ``(K - 1) * dilation`` halo; padding becomes explicit (the host fills
  it with the input zero point, which adds nothing to a sum), so strides that do not divide a
  tile and tiles at the border need no special case;
- **dense layers** as a conv whose kernel covers the input, or, when that kernel is too large,
  as a 1x1 conv over all ``C*H*W`` inputs, split like any conv;
- **max-pools** the pool unit cannot hold (more windows open than it has slots, kernels, strides
  or dilations above its limits): padding made explicit with the type's minimum (which never
  wins against a real value), a dilated pool as ``d x d`` interleaved undilated pools, a wide
  kernel as a chain of stride-1 pools ending in a legal strided one, a stride above the unit's
  as the stride-1 pool read every ``s``-th value; the conv's fused pool stays fused wherever
  the conv runs in one tile. Overlapping windows need two window slots and kernels of 2:
  an engine with one slot (or ``max_kernel`` 1) refuses them.

The host only moves data between passes: crops, explicit padding, channel slices, interleaving
and stitching. Every multiply, sum, requantization and max is the engine's.

A :class:`Schedule` runs with :func:`execute`, given a function that runs one pass (on the
simulated engine in :mod:`sim.run_layers`, or on the golden model, which is the engine's exact
model, in the tests). :func:`compile_layer` raises :class:`CompileError` (one line naming the
layer and the limit) for what no schedule can hold.
"""

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from model.conv import conv_output_size
from model.network import ConvLayer, DenseLayer, MaxPool, PoolLayer
from rtl.limits import check_layer
from sim.engine_driver import (conv_shape, dense_as_conv, input_words, register_fields,
                               window_ops)

__all__ = ["CompileError", "Region", "Pass", "Schedule", "Folded", "compile_layer", "execute", "steps",
           "run_on_model", "pass_cycles", "param_beats", "schedule_cycles"]

#: Cycles a pass (one image) costs beyond its data, the layer before it still running when
#: its setup ran (a queued start): the window generator's setup, the MAC, requantization and
#: pool pipelines' fill and drain, the host's hand-over (the output frame turned into the next
#: input) and its status and counter reads (each register read takes two cycles on the bus;
#: the four counters are read at once, their reads overlapping). Measured on Verilator (default
#: configuration): both nets' fully connected layers, whose data take the fewest cycles, spend
#: 51 cycles beyond them (46 before the window generator's walker started two cycles later
#: and the accumulator FIFO's head took a register stage more; 64 while the counters were
#: read one after the other).
PASS_OVERHEAD_CYCLES = 51
#: What a pass that nothing ran before costs on top of its parameter beats: the register
#: writes, the checks and derived constants (the setup) and the host's start; measured on the
#: first layers of the two nets.
COLD_START_CYCLES = 140


@dataclass(frozen=True)
class Folded:
    """A conv whose kernel covers its whole input (a dense layer) run on ``samples`` samples at
    once: their maps one under the other, ``(C, samples * H, W)``, the kernel stepping ``H``
    down (so each window's input arrives in one piece of the stream),
    so one pass computes ``samples`` outputs and each weight word is read once for all of them
    (batch reuse) instead of once per sample. ``layer`` is that pass, ``original`` the layer
    for one sample; the host pads the last group of samples with zeros."""
    layer: ConvLayer
    original: ConvLayer
    samples: int

    @classmethod
    def of(cls, layer, batch, hw: dict):
        """The folded form of ``layer`` for a batch of ``batch`` samples on the engine of
        ``hw``, or None: not a whole-input conv, a batch of one, a map width above the
        engine's maximum stride, or a folded pass the engine would refuse."""
        if not isinstance(layer, ConvLayer) or batch < 2 or layer.pool is not None:
            return None
        c, h, w = layer.in_shape
        if tuple(layer.kernel) != (h, w) or any(layer.pads) or tuple(layer.dilation) != (1, 1) \
                or h > hw["max_stride"]:
            return None
        per = min(batch, hw["max_height"] // h)
        if per < 2:
            return None
        per = -(-batch // -(-batch // per))         # groups of equal size
        cout = int(layer.weight.shape[0])
        folded = dataclasses.replace(layer, in_shape=(c, per * h, w), stride=(h, 1),
                                     out_shape=(cout, per, 1))
        if check_layer(register_fields(folded, simd=hw["simd"], packing=hw["packing"]),
                       hw) is not None:
            return None
        return cls(folded, layer, per)

    def fold(self, x):
        """``(groups, C, samples * H, W)`` of a batch ``(N, C, H, W)``, zero-padded."""
        n, (c, h, w), per = x.shape[0], self.original.in_shape, self.samples
        groups = -(-n // per)
        padded = np.zeros((groups * per, c, h, w), x.dtype)
        padded[:n] = x
        return padded.reshape(groups, per, c, h, w).transpose(0, 2, 1, 3, 4) \
            .reshape(groups, c, per * h, w)

    def unfold(self, y, n):
        """The ``n`` samples' outputs ``(N, Cout, 1, 1)`` of the passes' ``(groups, Cout,
        samples, 1)``."""
        groups, cout = y.shape[:2]
        return y.reshape(groups, cout, self.samples).transpose(0, 2, 1) \
            .reshape(groups * self.samples, cout, 1, 1)[:n]


class CompileError(ValueError):
    """A layer no schedule of engine passes can hold; the message is one line."""


@dataclass(frozen=True)
class Region:
    """A box of a batch of CHW buffers: ``buffer`` name, channel range ``(start, stop)``, and
    rows and columns ``(start, stop, step)`` in the map's coordinates, which may reach outside
    the map: those positions read as ``fill`` (explicit padding)."""
    buffer: str
    channels: tuple
    rows: tuple
    cols: tuple
    fill: int = 0

    @staticmethod
    def _axis(span, n):
        start, stop, step = span
        count = max(0, -(-(stop - start) // step))
        last = start + (count - 1) * step
        before, after = max(0, -start), max(0, last + 1 - n)
        return before, after, slice(start + before, start + before + (count - 1) * step + 1,
                                    step) if count else slice(0, 0)

    def take(self, buffers):
        c0, c1 = self.channels
        x = buffers[self.buffer][:, c0:c1]
        t, b, rows = self._axis(self.rows, x.shape[2])
        l, r, cols = self._axis(self.cols, x.shape[3])
        if t or b or l or r:
            x = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=self.fill)
        return np.ascontiguousarray(x[:, :, rows, cols])

    def put(self, buffers, value):
        c0, c1 = self.channels
        buffers[self.buffer][:, c0:c1, slice(*self.rows), slice(*self.cols)] = value


@dataclass
class Pass:
    """One run of the engine: ``layer`` (within the engine's limits) on ``source``, adding the
    partial sums ``psum`` (a Region of raw int32 sums, or None), its output written to
    ``target``."""
    layer: object
    source: Region
    target: Region
    psum: Region | None = None
    what: str = ""

    @property
    def kind(self):
        return "pool" if isinstance(self.layer, PoolLayer) else \
            "conv+psum" if self.psum is not None else "conv"


@dataclass
class Schedule:
    """The passes of one model layer; ``buffers`` maps names to (per-sample shape, dtype) of
    the host buffers they use; ``"x"`` is the input (seen as ``input_shape``), ``"y"`` the
    output."""
    layer: object
    input_shape: tuple
    passes: list = field(default_factory=list)
    buffers: dict = field(default_factory=dict)
    split: str = ""
    #: ``(size, fill)``: the flattened input padded to ``size`` values with ``fill`` before it
    #: takes ``input_shape`` (a dense layer folded into kernel taps), or None.
    input_fill: tuple | None = None

    def buffer(self, name, shape, dtype):
        self.buffers[name] = (tuple(int(n) for n in shape), np.dtype(dtype))
        return name


def steps(schedule: Schedule, x):
    """The host's side of a schedule as a generator: yields ``(pass, input batch, partial-sum
    batch or None)`` for each pass and takes the pass's output batch back (``send``); returns
    the layer's output batch. :func:`execute` drives it; so does the cocotb module, which
    awaits the engine between passes."""
    x = np.asarray(x)
    n = x.shape[0]
    if schedule.input_fill is not None:
        size, fill = schedule.input_fill
        x = x.reshape(n, -1)
        x = np.pad(x, ((0, 0), (0, size - x.shape[1])), constant_values=fill)
    buffers = {"x": x.reshape(n, *schedule.input_shape)}
    for name, (shape, dtype) in schedule.buffers.items():
        buffers[name] = np.zeros((n, *shape), dtype)
    for p in schedule.passes:
        psum = p.psum.take(buffers) if p.psum is not None else None
        y = yield p, p.source.take(buffers), psum
        p.target.put(buffers, y)
    return buffers["y"].reshape(n, *schedule.layer.out_shape)


def execute(schedule: Schedule, x, run_pass):
    """The schedule's output for the batch ``x`` (N, *layer.in_shape); ``run_pass(layer, x,
    psum)`` runs one pass on a batch and returns its output batch."""
    gen = steps(schedule, x)
    try:
        p, xin, psum = next(gen)
        while True:
            p, xin, psum = gen.send(run_pass(p.layer, xin, psum))
    except StopIteration as stop:
        return stop.value


def run_on_model(layer, x, psum):
    """``run_pass`` on the golden model (the engine's bit-exact model)."""
    from model.network import run_layer
    return run_layer(layer, x, psum)


def param_beats(layer, hw: dict) -> int:
    """Beats of ``s_axis_param`` that load a ConvLayer's parameters (0 for a PoolLayer): its
    weight words and channel-constant words at ``param_width`` bits a beat, and two headers."""
    if isinstance(layer, PoolLayer):
        return 0
    pe, simd, width = hw["pe"], hw["simd"], hw["param_width"]
    cout, oh, ow = conv_shape(layer)
    groups = -(-cout // pe)
    weight_beats = -(-8 * pe * simd // width)
    channel_beats = -(-96 * pe // width)
    return groups * (window_ops(layer, simd, hw["packing"]) * weight_beats + channel_beats) + 2


def pass_cycles(p: Pass, hw: dict, cold=False, before=None) -> int:
    """Estimated cycles of one pass on one sample, as ``convcore run`` counts them (every
    cycle, loading and setup included): the largest of its MAC operations, input words and
    output words (the engine overlaps them) plus :data:`PASS_OVERHEAD_CYCLES`. ``cold``:
    nothing ran before it, so its parameters, register writes and setup are all exposed
    (:data:`COLD_START_CYCLES`); else its parameters load while the pass ``before`` runs (its
    estimate, if given), and only what does not fit in that time is added."""
    pe, simd = hw["pe"], hw["simd"]
    layer = p.layer
    in_words = input_words(layer, simd, hw["packing"])
    beats = param_beats(layer, hw)
    if isinstance(layer, PoolLayer):
        c, oh, ow = layer.out_shape
        work = max(in_words, oh * ow * -(-c // pe))
    else:
        cout, oh, ow = conv_shape(layer)
        ops = oh * ow * -(-cout // pe) * window_ops(layer, simd, hw["packing"])
        work = max(ops, in_words, oh * ow * -(-cout // pe))
    if cold:
        exposed = beats + COLD_START_CYCLES
    else:
        exposed = max(0, beats - before) if before is not None else 0
    return work + PASS_OVERHEAD_CYCLES + exposed


def schedule_cycles(passes, hw: dict) -> int:
    """Estimated cycles of a layer's passes run one after the other on one sample, the first
    from a cold start, each next one's parameters loaded while the one before runs."""
    total, before = 0, None
    for p in passes:
        before = pass_cycles(p, hw, cold=before is None, before=before)
        total += before
    return total


# --- helpers ------------------------------------------------------------------------------------

def _chunks(n, size):
    """``[(start, stop), ...]`` covering ``range(n)`` in pieces of at most ``size``."""
    if size < 1:
        raise AssertionError(f"pieces of {size}")
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _refusal(layer, hw, acc_in=False):
    """None when the engine runs ``layer`` in one pass, else ``(code, message)``."""
    found = check_layer(register_fields(layer, acc_in, hw["simd"], hw["packing"]), hw)
    if found is None:
        return None
    refusal, values = found
    return refusal.name, refusal.message.format(**values)


def _fail(layer, text):
    raise CompileError(f"layer '{layer.name}': {text}")


def _whole(buffer, shape):
    c, h, w = shape
    return Region(buffer, (0, c), (0, h, 1), (0, w, 1))


def _span(o0, o1, stride, keff, offset):
    """The input rows ``(start, stop, 1)`` (map coordinates, reaching into the padding) that
    output rows ``[o0, o1)`` of a window of ``keff`` at ``stride`` read, the window of output
    0 starting at ``offset``."""
    return (o0 * stride + offset, (o1 - 1) * stride + offset + keff, 1)


# --- convolutions -------------------------------------------------------------------------------

def _conv_part(layer, co, ci, ky, kx, *, first, last, name):
    """The ConvLayer of one pass: output channels ``co``, input channels ``ci``, kernel rows
    ``ky`` and columns ``kx`` (ranges), no padding (the host supplies it); the bias only in
    the ``first`` pass, requantization (and the pool, set by the caller) only in the
    ``last``."""
    w = layer.weight[co[0]:co[1], ci[0]:ci[1], ky[0]:ky[1], kx[0]:kx[1]]
    cout = co[1] - co[0]
    bias = np.asarray(layer.bias, np.int32)[co[0]:co[1]] if first else \
        np.zeros(cout, np.int32)
    wzp = np.broadcast_to(np.asarray(layer.w_zero_point if layer.w_zero_point is not None
                                     else 0, np.int32), (layer.weight.shape[0],))
    if last and not layer.raw:
        quant = dict(multiplier=np.broadcast_to(layer.multiplier, (layer.weight.shape[0],))
                     [co[0]:co[1]],
                     shift=np.broadcast_to(layer.shift, (layer.weight.shape[0],))[co[0]:co[1]],
                     y_zero_point=layer.y_zero_point, out_dtype=layer.out_dtype,
                     relu=layer.relu)
    else:
        quant = dict(multiplier=None, shift=None, y_zero_point=0, out_dtype="int32",
                     relu=False)
    return dataclasses.replace(
        layer, name=name, weight=np.ascontiguousarray(w), bias=bias,
        w_zero_point=wzp[co[0]:co[1]].copy(), in_shape=(ci[1] - ci[0], 0, 0),
        out_shape=(cout, 0, 0), pads=(0, 0, 0, 0), pool=None, **quant)


def _sized(layer, in_hw):
    """``layer`` with its input map ``in_hw`` and the output shape that follows."""
    c = layer.in_shape[0]
    layer.in_shape = (c, *in_hw)
    shape = conv_shape(layer)
    layer.out_shape = shape if layer.pool is None else (shape[0],
                                                         *layer.pool.output_hw(*shape[1:]))
    return layer


def _compile_conv(layer: ConvLayer, hw, schedule, source="x", target="y"):
    """Passes of a ConvLayer (module docstring)."""
    cin, h, w = layer.in_shape
    cout, oh, ow = conv_shape(layer)
    kh, kw = layer.kernel
    pool = layer.pool
    if _refusal(layer, hw) is None:
        schedule.passes.append(Pass(layer, _whole(source, layer.in_shape),
                                    _whole(target, layer.out_shape), what="whole layer"))
        return
    if pool is not None:
        # The conv alone fits but the pool unit cannot hold the pool: run it separately.
        bare = dataclasses.replace(layer, pool=None, out_shape=(cout, oh, ow))
        found = _refusal(bare, hw)
        if found is None:
            mid = schedule.buffer(f"{target}.conv", (cout, oh, ow), layer.out_dtype)
            _compile_conv(bare, hw, schedule, source, mid)
            _compile_pool(_pool_layer(layer, (cout, oh, ow)), hw, schedule, mid, target)
            return
    axis_h = _ConvAxis(kh, *layer.stride[:1], layer.dilation[0], layer.pads[0], h,
                       hw["max_kernel"], hw["max_stride"], hw["max_dilation"])
    axis_w = _ConvAxis(kw, layer.stride[1], layer.dilation[1], layer.pads[1], w,
                       hw["max_kernel"], hw["max_stride"], hw["max_dilation"])
    co_n = min(cout, hw["max_channels"])
    ci_n = min(cin, hw["max_channels"])

    def words():
        return -(-co_n // hw["pe"]) * axis_h.tile * axis_w.tile * -(-ci_n // hw["simd"])

    def tiles():
        return (axis_h.out_tile(hw["max_height"]),
                axis_w.out_tile(hw["max_width"], lb_rows=axis_h.keff_tile,
                                lb_words=hw["line_buffer_depth"] // -(-ci_n // hw["simd"])))
    # Shrink what must shrink, the cheapest first: output groups, input groups, kernel tiles.
    while words() > hw["weight_depth"] and co_n > hw["pe"]:
        co_n -= hw["pe"]
    while words() > hw["weight_depth"] and ci_n > hw["simd"]:
        ci_n -= hw["simd"]
    while words() > hw["weight_depth"] and (axis_h.tile > 1 or axis_w.tile > 1):
        axis = axis_h if axis_h.tile >= axis_w.tile else axis_w
        axis.tile -= 1
    if words() > hw["weight_depth"]:
        _fail(layer, f"not even one weight group ({hw['pe']}x{hw['simd']} of a 1x1 kernel) "
                     f"fits the weight memory of {hw['weight_depth']} words")
    while min(tiles()) < 1 and ci_n > hw["simd"]:
        ci_n -= hw["simd"]
    while min(tiles()) < 1 and (axis_h.tile > 1 or axis_w.tile > 1):
        axis = axis_h if axis_h.tile >= axis_w.tile else axis_w
        axis.tile -= 1
    th, tw = tiles()
    if min(th, tw) < 1:
        _fail(layer, f"no tile of its output fits the engine (input {h}x{w}, kernel "
                     f"{kh}x{kw}, line buffer {hw['line_buffer_depth']} words)")
    row_tiles, col_tiles = _chunks(oh, th), _chunks(ow, tw)
    spatial = len(row_tiles) * len(col_tiles) > 1
    if pool is not None and (spatial or not _pool_unit_holds(pool, hw)):
        # A tiled conv writes its whole output, then the pool runs as a layer of its own.
        bare = dataclasses.replace(layer, pool=None, out_shape=(cout, oh, ow))
        mid = schedule.buffer(f"{target}.conv", (cout, oh, ow), layer.out_dtype)
        _compile_conv(bare, hw, schedule, source, mid)
        _compile_pool(_pool_layer(layer, (cout, oh, ow)), hw, schedule, mid, target)
        return
    co_groups, ci_groups = _chunks(cout, co_n), _chunks(cin, ci_n)
    ky_groups, kx_groups = axis_h.kernel_tiles(), axis_w.kernel_tiles()
    steps = [(ci, ky, kx) for ky in ky_groups for kx in kx_groups for ci in ci_groups]
    acc = None
    if len(steps) > 1:
        acc = schedule.buffer(f"{target}.acc", (cout, oh, ow), np.int32)
    schedule.split = (f"{len(co_groups)} output-channel group(s) x {len(ci_groups)} "
                      f"input-channel group(s) x {len(ky_groups) * len(kx_groups)} sub-kernel(s)"
                      f" x {len(row_tiles)}x{len(col_tiles)} tile(s)")
    first_pass = len(schedule.passes)
    for co in co_groups:
        for r0, r1 in row_tiles:
            for c0, c1 in col_tiles:
                for index, (ci, ky, kx) in enumerate(steps):
                    first, last = index == 0, index == len(steps) - 1
                    part = _conv_part(layer, co, ci, ky, kx, first=first, last=last,
                                      name=f"{layer.name}#{len(schedule.passes)}")
                    rows, n_rows = axis_h.source(r0, r1, ky)
                    cols, n_cols = axis_w.source(c0, c1, kx)
                    src = Region(source, ci, rows, cols, fill=int(layer.x_zero_point))
                    part.stride = (axis_h.part_stride, axis_w.part_stride)
                    part.dilation = (axis_h.part_dilation, axis_w.part_dilation)
                    part = _sized(part, (n_rows, n_cols))
                    if last and pool is not None:
                        part.pool = pool
                        part = _sized(part, (n_rows, n_cols))
                    out_rows, out_cols = (r0, r1, 1), (c0, c1, 1)
                    if last:
                        tgt = Region(target, co, (0, part.out_shape[1], 1),
                                     (0, part.out_shape[2], 1)) if pool is not None else \
                            Region(target, co, out_rows, out_cols)
                    else:
                        tgt = Region(acc, co, out_rows, out_cols)
                    psum = None if first else Region(acc, co, out_rows, out_cols)
                    found = _refusal(part, hw, acc_in=psum is not None)
                    if found is not None and found[0].startswith("POOL_"):
                        # The pool unit cannot take this fused pool: the pool on its own.
                        del schedule.passes[first_pass:]
                        bare = dataclasses.replace(layer, pool=None, out_shape=(cout, oh, ow))
                        mid = schedule.buffer(f"{target}.conv", (cout, oh, ow),
                                              layer.out_dtype)
                        _compile_conv(bare, hw, schedule, source, mid)
                        _compile_pool(_pool_layer(layer, (cout, oh, ow)), hw, schedule, mid,
                                      target)
                        return
                    if found is not None:
                        _fail(layer, f"a pass still exceeds the engine: {found[0]}: "
                                     f"{found[1]}")
                    schedule.passes.append(Pass(part, src, tgt, psum,
                                                what=f"out {co} in {ci} kernel {ky}x{kx} "
                                                     f"rows {r0}:{r1} cols {c0}:{c1}"))


class _ConvAxis:
    """How one axis of a conv splits: kernel tiles of ``tile`` taps at the layer's stride and
    dilation, or, for a stride or dilation above the engine's, one tap at a time (a stride
    done by reading every ``stride``-th input row, a dilation by the tap's offset)."""

    def __init__(self, k, stride, dilation, pad, n, max_kernel, max_stride, max_dilation):
        self.k, self.stride, self.dilation, self.pad, self.n = k, stride, dilation, pad, n
        self.one_tap = stride > max_stride or dilation > max_dilation
        self.tile = 1 if self.one_tap else min(k, max_kernel)
        self.decimate = stride > max_stride

    @property
    def part_stride(self):
        return 1 if self.decimate else self.stride

    @property
    def part_dilation(self):
        return 1 if self.tile == 1 else self.dilation

    @property
    def keff_tile(self):
        return (self.tile - 1) * self.part_dilation + 1

    def kernel_tiles(self):
        return _chunks(self.k, self.tile)

    def out_tile(self, max_in, lb_rows=None, lb_words=None):
        """Output positions per tile so that its input fits ``max_in`` (and, for the width,
        the line buffer: ``(lb_rows - 1) * W + keff <= lb_words``)."""
        s, keff = self.part_stride, self.keff_tile
        limit = max_in
        if lb_rows is not None:
            limit = min(limit, (lb_words - keff) // (lb_rows - 1) if lb_rows > 1 else
                        (max_in if keff <= lb_words else 0))
        return (limit - keff) // s + 1 if limit >= keff else 0

    def source(self, o0, o1, taps):
        """(input rows as a Region span, their count) of output positions ``[o0, o1)`` and
        kernel taps ``taps``."""
        offset = taps[0] * self.dilation - self.pad
        count = o1 - o0
        if self.decimate:
            start = o0 * self.stride + offset
            return (start, start + (count - 1) * self.stride + 1, self.stride), count
        keff = (taps[1] - taps[0] - 1) * self.part_dilation + 1
        span = _span(o0, o1, self.stride, keff, offset)
        return span, span[1] - span[0]


def _pool_layer(layer: ConvLayer, conv_out):
    c, oh, ow = conv_out
    out = (c, *layer.pool.output_hw(oh, ow))
    return PoolLayer(name=f"{layer.name}.pool", nodes=layer.nodes, in_shape=conv_out,
                     out_shape=out, in_dtype=layer.out_dtype, pool=layer.pool)


# --- max-pools ------------------------------------------------------------------------------------

def _type_min(dtype):
    return int(np.iinfo(np.dtype(dtype)).min)


def _pool_unit_holds(pool: MaxPool, hw):
    """The pool unit takes this geometry (kernel, stride, dilation, window slots, pads) on some
    map: the engine's own checks (rtl.limits) on a map just as large as the window, where
    only the map's size may be refused."""
    keff = [(k - 1) * d + 1 for k, d in zip(pool.kernel, pool.dilation)]
    probe = PoolLayer("probe", (), (1, *keff), (1, 0, 0), "int8",
                      dataclasses.replace(pool, ceil_mode=False))
    found = _refusal(probe, hw)
    return found is None or found[0] == "POOL_SIZE"


def _compile_pool(layer: PoolLayer, hw, schedule, source="x", target="y"):
    """Passes of a PoolLayer (module docstring)."""
    c, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    pool = layer.pool
    if _refusal(layer, hw) is None:
        schedule.passes.append(Pass(layer, _whole(source, layer.in_shape),
                                    _whole(target, layer.out_shape), what="whole layer"))
        return
    if hw["pool_window_slots"] == 0:
        _fail(layer, "the engine has no max-pool unit (pool_window_slots 0)")
    (kh, kw), (sh, sw), (dh, dw) = pool.kernel, pool.stride, pool.dilation
    keh, kew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    t, l = pool.pads[0], pool.pads[1]
    fill = _type_min(layer.in_dtype)
    if _pool_unit_holds(dataclasses.replace(pool, pads=(0, 0, 0, 0)), hw):
        # Tiles of the output, the padding explicit (the type's minimum never wins).
        th = (hw["max_height"] - keh) // sh + 1
        tw = (hw["max_width"] - kew) // sw + 1
        if th < 1 or tw < 1:
            _fail(layer, f"pool window {keh}x{kew} exceeds the engine's map "
                         f"{hw['max_height']}x{hw['max_width']}")
        plain = MaxPool(pool.kernel, pool.stride, dilation=pool.dilation)
        for ch in _chunks(c, hw["max_channels"]):
            for r0, r1 in _chunks(oh, th):
                for c0, c1 in _chunks(ow, tw):
                    rows, cols = _span(r0, r1, sh, keh, -t), _span(c0, c1, sw, kew, -l)
                    n_rows, n_cols = (r1 - r0 - 1) * sh + keh, (c1 - c0 - 1) * sw + kew
                    part = PoolLayer(name=f"{layer.name}#{len(schedule.passes)}",
                                     nodes=layer.nodes, in_shape=(ch[1] - ch[0], n_rows, n_cols),
                                     out_shape=(ch[1] - ch[0], r1 - r0, c1 - c0),
                                     in_dtype=layer.in_dtype, pool=plain)
                    found = _refusal(part, hw)
                    if found is not None:
                        _fail(layer, f"a pass still exceeds the engine: {found[0]}: {found[1]}")
                    schedule.passes.append(Pass(
                        part, Region(source, ch, rows, cols, fill),
                        Region(target, ch, (r0, r1, 1), (c0, c1, 1)),
                        what=f"channels {ch} rows {r0}:{r1} cols {c0}:{c1}"))
        return
    # Decompose: the padded map, cut to what the windows read, is a pool without padding.
    hp, wp = (oh - 1) * sh + keh, (ow - 1) * sw + kew
    padded = Region(source, (0, c), _span(0, oh, sh, keh, -t), _span(0, ow, sw, kew, -l), fill)
    _compile_plain_pool(layer, hw, schedule, padded, (c, hp, wp), _whole(target, (c, oh, ow)))


def _compile_pool_tiles(layer, hw, schedule, source_region, target: Region):
    """A pool without padding that the unit holds, from a source Region (its padded
    coordinates) to a target Region, tiled."""
    c, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    pool = layer.pool
    (kh, kw), (sh, sw), (dh, dw) = pool.kernel, pool.stride, pool.dilation
    keh, kew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    th = (hw["max_height"] - keh) // sh + 1
    tw = (hw["max_width"] - kew) // sw + 1
    if th < 1 or tw < 1:
        _fail(layer, f"pool window {keh}x{kew} exceeds the engine's map "
                     f"{hw['max_height']}x{hw['max_width']}")
    src = source_region
    for ch in _chunks(c, hw["max_channels"]):
        for r0, r1 in _chunks(oh, th):
            for c0, c1 in _chunks(ow, tw):
                n_rows, n_cols = (r1 - r0 - 1) * sh + keh, (c1 - c0 - 1) * sw + kew
                part = PoolLayer(name=f"{layer.name}#{len(schedule.passes)}", nodes=layer.nodes,
                                 in_shape=(ch[1] - ch[0], n_rows, n_cols),
                                 out_shape=(ch[1] - ch[0], r1 - r0, c1 - c0),
                                 in_dtype=layer.in_dtype, pool=pool)
                found = _refusal(part, hw)
                if found is not None:
                    _fail(layer, f"a pass still exceeds the engine: {found[0]}: {found[1]}")
                schedule.passes.append(Pass(part, _sub(src, ch, r0 * sh, r0 * sh + n_rows,
                                                       c0 * sw, c0 * sw + n_cols),
                                            _sub(target, ch, r0, r1, c0, c1),
                                            what=f"{pool.kernel}/{pool.stride} d{pool.dilation} "
                                                 f"channels {ch} rows {r0}:{r1} cols {c0}:{c1}"))


def _sub(region: Region, ch, r0, r1, c0, c1):
    """Elements ``[r0, r1) x [c0, c1)`` of channels ``ch`` (all relative to what ``region``
    takes) as a Region of the same buffer."""
    (a0, _), (ra, _, rs), (ca, _, cs) = region.channels, region.rows, region.cols
    return Region(region.buffer, (a0 + ch[0], a0 + ch[1]), (ra + r0 * rs, ra + r1 * rs, rs),
                  (ca + c0 * cs, ca + c1 * cs, cs), region.fill)


def _stages(k, s, slots, max_kernel):
    """Kernels of a chain of stride-1 pools, then the final kernel at stride ``s``, whose
    maxima equal one ``k`` pool at stride ``s``, each legal for ``slots`` window slots and
    kernels up to ``max_kernel``; None when no chain exists (a stride-1 stage needs two
    slots and kernels of 2)."""
    final = min(k, slots * s, max_kernel)
    pre = []
    left = k - final + 1        # the stride-1 pools must cover a window of `left`
    if left > 1 and min(slots, max_kernel) < 2:
        return None
    while left > 1:
        step = min(slots, left, max_kernel)
        pre.append(step)
        left -= step - 1
    return pre, final


def _compile_plain_pool(layer, hw, schedule, source: Region, shape, target: Region):
    """A pool without padding over ``source`` (a Region of ``shape``) into ``target``:
    dilation through interleaved phases, then chains of legal pools."""
    pool = layer.pool
    c, hp, wp = shape
    (kh, kw), (sh, sw), (dh, dw) = pool.kernel, pool.stride, pool.dilation
    if (dh, dw) == (1, 1) and max(sh, sw) > hw["pool_max_stride"]:
        # A stride above the pool unit's: the stride-1 pool, then every s-th value.
        zh, zw = hp - kh + 1, wp - kw + 1
        z = schedule.buffer(f"{target.buffer}.stride1", (c, zh, zw), layer.in_dtype)
        dense = PoolLayer(name=layer.name, nodes=layer.nodes, in_shape=shape,
                          out_shape=(c, zh, zw), in_dtype=layer.in_dtype,
                          pool=MaxPool((kh, kw), 1))
        _chain(dense, hw, schedule, source, _whole(z, (c, zh, zw)))
        _subsample(layer, hw, schedule, z, (c, zh, zw), (sh, sw), target)
        return
    if (dh, dw) != (1, 1):
        # z[i] = max_j p[i + j*d]: the phases a::d of p are undilated stride-1 pools.
        zh, zw = hp - (kh - 1) * dh, wp - (kw - 1) * dw
        z = target.buffer if (sh, sw) == (1, 1) else \
            schedule.buffer(f"{target.buffer}.dilated", (c, zh, zw), layer.in_dtype)
        for a in range(dh):
            for b in range(dw):
                lh, lw = len(range(a, hp, dh)), len(range(b, wp, dw))
                if lh < kh or lw < kw:
                    continue
                phase = PoolLayer(name=f"{layer.name}.phase{a}{b}", nodes=layer.nodes,
                                  in_shape=(c, lh, lw), out_shape=(c, lh - kh + 1, lw - kw + 1),
                                  in_dtype=layer.in_dtype, pool=MaxPool((kh, kw), 1))
                src = dataclasses.replace(
                    source, rows=(source.rows[0] + a, source.rows[0] + a + lh * dh, dh),
                    cols=(source.cols[0] + b, source.cols[0] + b + lw * dw, dw))
                out = Region(z, (0, c), (a, zh, dh), (b, zw, dw))
                _chain(phase, hw, schedule, src, out)
        if (sh, sw) != (1, 1):
            _subsample(layer, hw, schedule, z, (c, zh, zw), (sh, sw), target)
        return
    out_shape = (c, (hp - kh) // sh + 1, (wp - kw) // sw + 1)
    whole = PoolLayer(name=layer.name, nodes=layer.nodes, in_shape=shape, out_shape=out_shape,
                      in_dtype=layer.in_dtype, pool=MaxPool((kh, kw), (sh, sw)))
    _chain(whole, hw, schedule, source, target)


def _chain(layer, hw, schedule, src: Region, out: Region):
    """An undilated pool without padding (any kernel and stride the unit can end with) as
    stride-1 stages and a final legal pool, each tiled."""
    c, h, w = layer.in_shape
    (kh, kw), (sh, sw) = layer.pool.kernel, layer.pool.stride
    slots = hw["pool_window_slots"]
    chains = [_stages(kh, sh, slots, hw["max_kernel"]), _stages(kw, sw, slots, hw["max_kernel"])]
    if None in chains:
        _fail(layer, f"pool kernel {kh}x{kw} at stride {sh}x{sw} overlaps windows, which "
                     f"needs 2 window slots and kernels of 2; the engine has "
                     f"{slots} slot(s) and a maximum kernel of {hw['max_kernel']}")
    (pre_h, fin_h), (pre_w, fin_w) = chains
    stages = [((pre_h[i] if i < len(pre_h) else 1, pre_w[i] if i < len(pre_w) else 1), (1, 1))
              for i in range(max(len(pre_h), len(pre_w)))] + [((fin_h, fin_w), (sh, sw))]
    shape, source = (c, h, w), src
    for index, (k, s) in enumerate(stages):
        oh, ow = (shape[1] - k[0]) // s[0] + 1, (shape[2] - k[1]) // s[1] + 1
        stage = PoolLayer(name=f"{layer.name}.stage{index}", nodes=layer.nodes, in_shape=shape,
                          out_shape=(c, oh, ow), in_dtype=layer.in_dtype, pool=MaxPool(k, s))
        if index == len(stages) - 1:
            target = out
        else:
            name = schedule.buffer(f"{out.buffer}.{layer.name}.s{index}.{len(schedule.passes)}",
                                   (c, oh, ow), layer.in_dtype)
            target = _whole(name, (c, oh, ow))
        _compile_pool_tiles(stage, hw, schedule, source, target)
        shape, source = (c, oh, ow), target


def _subsample(layer, hw, schedule, source, shape, stride, target):
    """Every ``stride``-th row and column of ``source``, read so by the host and passed
    through the pool unit as a 1x1 pool (any stride, whatever the unit's maximum)."""
    c, h, w = shape
    out = (c, (h - 1) // stride[0] + 1, (w - 1) // stride[1] + 1)
    sub = PoolLayer(name=f"{layer.name}.stride", nodes=layer.nodes, in_shape=out,
                    out_shape=out, in_dtype=layer.in_dtype, pool=MaxPool(1, 1))
    _compile_pool_tiles(sub, hw, schedule, Region(source, (0, c), (0, h, stride[0]),
                                                  (0, w, stride[1])), target)


# --- layers ---------------------------------------------------------------------------------------

def compile_layer(layer, hw: dict) -> Schedule:
    """The schedule of engine passes of one model layer on the engine of ``hw``
    (:func:`rtl.limits.engine_params`). CompileError names the layer and the limit when no
    schedule exists."""
    schedule = Schedule(layer, tuple(layer.in_shape))
    if isinstance(layer, DenseLayer):
        conv = dense_as_conv(layer)
        if _refusal(conv, hw) is not None:
            # Too large for one pass: the C*H*W inputs folded into (C', K, K), K the largest
            # kernel, so that each pass fills the weight memory; the inputs past C*H*W hold
            # the zero point, which adds nothing whatever their weights.
            c, h, w = conv.in_shape
            k = hw["max_kernel"]
            n, channels = c * h * w, -(-(c * h * w) // (k * k))
            out = conv.weight.shape[0]
            weight = np.zeros((out, channels * k * k), conv.weight.dtype)
            weight[:, :n] = conv.weight.reshape(out, n)
            conv = dataclasses.replace(
                conv, in_shape=(channels, k, k), out_shape=(out, 1, 1),
                weight=weight.reshape(out, channels, k, k))
            schedule.input_fill = (channels * k * k, int(layer.x_zero_point))
        schedule.input_shape = conv.in_shape
        schedule.buffer("y", conv.out_shape, layer.out_dtype)
        _compile_conv(conv, hw, schedule)
    elif isinstance(layer, ConvLayer):
        schedule.buffer("y", layer.out_shape, layer.out_dtype)
        _compile_conv(layer, hw, schedule)
    elif isinstance(layer, PoolLayer):
        schedule.buffer("y", layer.out_shape, layer.in_dtype)
        _compile_pool(layer, hw, schedule)
    else:
        raise TypeError(f"not a layer: {layer!r}")
    return schedule
