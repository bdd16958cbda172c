"""Streaming max-pool unit with ONNX MaxPool semantics (see :func:`model.pool.maxpool2d`).

Stream format (the conv engine's, HWC): pixels in raster order, each as ``G = ceil(C / lanes)``
consecutive beats of ``lanes`` bytes (beat ``g`` carries channels ``g*lanes .. g*lanes+lanes-1``,
channel ``g*lanes + i`` in lane ``i``; input lanes past ``C`` are ignored), ``last`` on the
final beat of the map. The output has the same format for the pooled map; its lanes past ``C``
are 0.

How it works. Max pooling is separable: the maximum over a window is the maximum over its
rows of the maximum over its columns, where only taps inside the input count (padding never
wins). Two read-modify-write stages keep *partial maxima*, never input pixels:

- the horizontal stage holds, for every open output column (a window along the row that has
  started but not ended), the maximum of its taps so far, for each channel group;
- the vertical stage holds, for every open output row and every output column and group, the
  maximum of the finished horizontal maxima of its tap rows so far.

Each input beat updates every open window it is a tap of in one cycle (all slots sit side by
side in one memory word), and a window's maximum leaves the stage when its last in-image tap
has been seen. An axis sequencer per direction knows the open windows from counters alone
(stride, dilation, pads and ``ceil_mode`` are comparisons, no division): windows start every
``stride`` positions from ``-pad_begin``, while the start position ``p`` satisfies
``p <= W + pad_end - Keff`` (floor) or ``p <= min(W - 1, W + pad_end - Keff + stride - 1)``
(``ceil_mode``: the last window starts inside the input or the begin padding).

Memory formula. With ``S = window_slots``, ``G_max = ceil(max_channels / lanes)`` and the
widest output row ``OW_max = max_width + max_kernel - 1`` (stride 1, dilation 1, pads
``max_kernel - 1`` on both sides)::

    horizontal: G_max words            of S * lanes * 8 bits
    vertical:   OW_max * G_max words   of S * lanes * 8 bits   (block RAM)

(each at least 2 words), i.e. ``S`` rows of partial maxima of the *output* width, where a
line buffer holds ``Keff_h - 1`` rows of the *input* width. A map is legal iff
``Keff <= S * stride`` on both axes (at most ``S`` windows are open at once). The default
``S = max_kernel`` admits every kernel up to the maximum without dilation, at any stride:
for lanes 8, kernels up to 7, width 224 and 64 channels that is 1840 x 448 bits = 824,320
bits, a little more than the 688,128 bits of a 6-row line buffer; ``S = 2`` (every 2x2/2 and
3x3/2 pooling, the usual ones) needs 235,520. :func:`memory_bits` gives the totals.
``S = 0`` builds no unit at all (no memory, a few gates): every map is refused with
:attr:`rtl.limits.PoolError.NO_UNIT`, for configurations of small devices without max-pooling.

Handshakes. ``i.ready`` depends on ``o.ready`` through a few gates (the pipeline stalls only
when a result meets a full output register), never on ``i.valid``; ``o.valid`` and
``o.payload`` come straight from registers. Nothing is lost or duplicated under any pattern
of idles and stalls.

Throughput. One input beat per cycle, except at the end of each row but the last: one cycle
in which the sequencer decides from registers how the row ends, and where several windows
end on the last column (right padding or ``ceil_mode``) ``G`` extra cycles per extra window
and one more decision cycle; on the last row of the map ``OW * G`` extra cycles per extra
window that ends there; and a few setup cycles per map.

Control. ``start`` latches ``config``; the unit checks it (:data:`rtl.limits.POOL_REFUSALS`, codes :class:`rtl.limits.PoolError`), and either
refuses it (``error`` set, ``done``, no input accepted and nothing output) or runs it
(``running`` while it accepts the ``H * W * G`` input beats; ``busy`` until the final output
beat has been sent; then ``done``). ``start`` is ignored while ``busy``. An input ``last``
that is missing on the final beat or set early sets ``last_error``; the beat count decides
where the map ends.
"""

import enum
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.bram import BRAMS, RegisteredRam
from rtl.limits import (DIM_WIDTH, POOL_ERROR_WIDTH, POOL_REFUSALS, SMALL_WIDTH, PoolError,
                        is_zero, pool_params, stage_checks)
from rtl.streams import DATA_WIDTH, axis_members, connect_axis, lanes_layout, payload_layout

__all__ = ["MaxPool", "MaxPoolAxis", "DATA_WIDTH", "config_layout", "beat_layout", "memory_bits",
           "memory_depths", "max_output_width"]

#: Smallest memory depth (a one-word memory would have a zero-width address).
MIN_DEPTH = 2
#: Register levels between the latched configuration and the settled setup: the checks' result
#: (the derived constants, each check's test, then the first failing check) and the
#: sequencer's constants (six levels of registered sums, each one subtraction or choice).
SETUP_LEVELS = 6


class _State(enum.IntEnum):
    """Control states; none is 0, so that no state compare becomes a vector ``!``.

    A state register of its own rather than ``m.FSM`` (which the engine uses): with ``m.FSM``
    the Verilog sets ``i.ready`` in a ``case`` of the state alone, and Icarus leaves such a
    process unevaluated from time zero until the state changes (``s_axis_tready`` stayed X
    through the whole cocotb test); ``m.FSM`` also compares its state 0 as ``!fsm_state``."""
    IDLE = 1
    SETUP = 2
    PREROLL = 3
    IN = 4          # input beats (and the horizontal windows that end on them)
    HFLUSH = 5      # further horizontal windows ending on the last column of a row
    VFLUSH = 6      # further vertical windows ending on the last row of the map
    DRAIN = 7       # wait for the pipeline to empty
    ROW_END = 8     # a row's input is in: flush its windows or go to the next row


def config_layout() -> data.StructLayout:
    """The run-time configuration: field widths of the engine's registers, so that values
    above the hardware maxima arrive intact and are refused rather than truncated."""
    dim, small = unsigned(DIM_WIDTH), unsigned(SMALL_WIDTH)
    return data.StructLayout({
        "height": dim, "width": dim, "channels": dim,
        "kernel_h": small, "kernel_w": small,
        "stride_h": small, "stride_w": small,
        "pad_top": small, "pad_left": small, "pad_bottom": small, "pad_right": small,
        "dilation_h": small, "dilation_w": small,
        "ceil_mode": 1,
        "is_unsigned": 1,
    })


def beat_layout(lanes: int) -> data.StructLayout:
    """Stream payload: ``lanes`` activation bit patterns (lane ``i`` in bits ``8i..8i+7``)."""
    return payload_layout(lanes_layout(lanes))


def max_output_width(max_width: int, max_kernel: int) -> int:
    """The widest output row of a legal map: ``max_width + max_kernel - 1``."""
    return max_width + max_kernel - 1


def memory_depths(lanes, max_kernel, max_width, max_channels) -> dict:
    """Words of the horizontal and vertical partial-maximum memories (at least 2 each)."""
    groups = -(-max_channels // lanes)
    return {"horizontal": max(groups, MIN_DEPTH),
            "vertical": max(max_output_width(max_width, max_kernel) * groups, MIN_DEPTH)}


def memory_bits(**params) -> dict:
    """Bits of the horizontal and vertical partial-maximum memories of ``MaxPool(**params)``
    (see the module docstring)."""
    p = pool_params(**params)
    word = p["window_slots"] * p["lanes"] * DATA_WIDTH
    depths = memory_depths(p["lanes"], p["max_kernel"], p["max_width"], p["max_channels"])
    return {name: depth * word for name, depth in depths.items()}


def _equals(value, constant):
    """``value == constant``, through :func:`is_zero` for 0."""
    return is_zero(value) if constant == 0 else value == constant


def _select(index, values):
    """``values[index]`` as a chain of multiplexers (an Amaranth ``Array`` becomes a ``case``
    without a default when ``len(values)`` is not a power of two)."""
    result = values[-1]
    for j in reversed(range(len(values) - 1)):
        result = Mux(_equals(index, j), values[j], result)
    return result


class _Axis:
    """Open-window bookkeeping along one axis (row or column positions).

    Window ``o`` has its first tap at ``o * stride - pad_begin`` and lives in slot
    ``o mod slots`` while open; ``rel`` is the current position relative to its first tap and
    ``dphase = rel mod dilation`` (a tap when 0). Actions, one per cycle, are comb strobes:
    ``init`` (position ``-pad_begin``), ``step`` (next position, never from the last one),
    ``retire`` (close the oldest window), ``save``/``restore`` (snapshot of the state).
    ``seen`` marks a window that has had an in-image tap (its next tap overwrites rather than
    maxes), ``final`` the last window of the axis; open windows occupy consecutive slots from
    ``head``.

    For timing, no decision reads an adder of the position: ``at_end`` (the last position) is a
    register set one step ahead, by comparing the position with ``last_pos - 1``, and so is
    ``below`` (a new window may start at the next position), and so is ``final_next`` (a
    window starting at the next position is the last: a new window's ``final``); the per-layer
    constants are registers of the owner.
    """

    def __init__(self, m, name, slots, pos_shape, rel_shape, dil_shape, stride_shape, snapshot):
        self.m, self.slots = m, slots
        self.pos = Signal(pos_shape, name=f"{name}_pos")
        self.sphase = Signal(stride_shape, name=f"{name}_sphase")
        index = range(max(slots, 2))                    # no zero-width signals
        self.head = Signal(index, name=f"{name}_head")
        self.alloc = Signal(index, name=f"{name}_alloc")
        self.active = [Signal(name=f"{name}_active{j}") for j in range(slots)]
        self.rel = [Signal(rel_shape, name=f"{name}_rel{j}") for j in range(slots)]
        self.dphase = [Signal(dil_shape, name=f"{name}_dphase{j}") for j in range(slots)]
        self.seen = [Signal(name=f"{name}_seen{j}") for j in range(slots)]
        self.final = [Signal(name=f"{name}_final{j}") for j in range(slots)]
        self.at_end = Signal(name=f"{name}_at_end")       # pos == last_pos, a register
        self.below = Signal(name=f"{name}_below")         # pos < start_max, a register
        # pos >= start_max - s (a window starting at the next position is the last), a register
        self.final_next = Signal(name=f"{name}_final_next")
        self.state = [self.pos, self.sphase, self.head, self.alloc, self.at_end, self.below,
                      self.final_next,
                      *self.active, *self.rel, *self.dphase, *self.seen, *self.final]
        self.snap = ([Signal.like(s, name=f"{s.name}_snap") for s in self.state]
                     if snapshot else None)
        # Action strobes.
        self.init = Signal(name=f"{name}_init")
        self.step = Signal(name=f"{name}_step")
        self.retire = Signal(name=f"{name}_retire")
        self.save = Signal(name=f"{name}_save")
        self.restore = Signal(name=f"{name}_restore")
        # Per-layer constants, driven by the owner.
        self.last_pos_m1 = Signal(pos_shape, name=f"{name}_last_pos_m1")  # n - 2
        self.init_at_end = Signal(name=f"{name}_init_at_end")             # -pad_begin == n - 1
        self.rel_last = Signal(rel_shape, name=f"{name}_rel_last")        # Keff - 1
        self.start_max_m1 = Signal(pos_shape, name=f"{name}_start_max_m1")  # last start - 1
        self.init_below = Signal(name=f"{name}_init_below")     # -pad_begin < start_max
        self.init_final = Signal(name=f"{name}_init_final")    # -pad_begin >= start_max - s + 1
        self.init_final_next = Signal(name=f"{name}_init_final_next")  # -pad_begin >= start_max - s
        self.final_min_m2 = Signal(pos_shape, name=f"{name}_final_min_m2")  # start_max - s - 1
        self.stride_m1 = Signal(stride_shape, name=f"{name}_stride_m1")
        self.dilation = Signal(dil_shape, name=f"{name}_dilation")
        self.dilation_m1 = Signal(dil_shape, name=f"{name}_dilation_m1")
        self.pad_begin = Signal(pos_shape, name=f"{name}_pad_begin")
        # Decoded state.
        self.tap = [Signal(name=f"{name}_tap{j}") for j in range(slots)]
        self.fresh = [Signal(name=f"{name}_fresh{j}") for j in range(slots)]
        self.head_active = Signal(name=f"{name}_head_active")
        self.head_finish = Signal(name=f"{name}_head_finish")
        self.head_final = Signal(name=f"{name}_head_final")
        self.more = Signal(name=f"{name}_more")

    def _next(self, index):
        return Mux(index == self.slots - 1, 0, index + 1)

    def elaborate(self):
        m = self.m
        slots = self.slots
        for j in range(slots):
            m.d.comb += [
                self.tap[j].eq(self.active[j] & is_zero(self.dphase[j])),
                self.fresh[j].eq(self.tap[j] & ~self.seen[j]),
            ]
        m.d.comb += [
            self.head_active.eq(_select(self.head, self.active)),
            self.head_finish.eq(self.head_active & (
                self.at_end | (_select(self.head, self.rel) == self.rel_last))),
            self.head_final.eq(_select(self.head, self.final)),
            self.more.eq(_select(self._next(self.head), self.active) if slots > 1 else 0),
        ]

        with m.If(self.init):
            m.d.sync += [
                self.pos.eq(-self.pad_begin), self.sphase.eq(0), self.head.eq(0),
                self.at_end.eq(self.init_at_end), self.below.eq(self.init_below),
                self.final_next.eq(self.init_final_next),
                self.alloc.eq(self._next(Const(0, self.alloc.shape()))),
            ]
            for j in range(slots):
                m.d.sync += [self.active[j].eq(j == 0), self.rel[j].eq(0), self.dphase[j].eq(0),
                             self.seen[j].eq(0)]
            m.d.sync += self.final[0].eq(self.init_final)
        with m.Elif(self.step):
            new_pos = Signal.like(self.pos, name=f"{self.pos.name}_next")
            sphase = Signal.like(self.sphase, name=f"{self.sphase.name}_next")
            start = Signal(name=f"{self.pos.name}_start")
            wrap = self.sphase == self.stride_m1
            m.d.comb += [
                new_pos.eq(self.pos + 1),
                sphase.eq(Mux(wrap, 0, self.sphase + 1)),
                start.eq(wrap & self.below),                           # new_pos <= start_max
            ]
            m.d.sync += [self.pos.eq(new_pos), self.sphase.eq(sphase),
                         self.at_end.eq(self.pos == self.last_pos_m1),
                         self.below.eq(self.pos < self.start_max_m1),
                         self.final_next.eq(self.pos >= self.final_min_m2)]
            for j in range(slots):
                with m.If(self.active[j]):
                    m.d.sync += [
                        self.rel[j].eq(self.rel[j] + 1),
                        self.dphase[j].eq(Mux(self.dphase[j] == self.dilation_m1, 0,
                                              self.dphase[j] + 1)),
                        self.seen[j].eq(self.seen[j] | (self.tap[j] & (self.pos >= 0))),
                    ]
                    with m.If(self.rel[j] == self.rel_last):
                        m.d.sync += self.active[j].eq(0)
                with m.If(start & _equals(self.alloc, j)):       # after the close: a slot is reused
                    m.d.sync += [self.active[j].eq(1), self.rel[j].eq(0), self.dphase[j].eq(0),
                                 self.seen[j].eq(0), self.final[j].eq(self.final_next)]
            with m.If(self.head_finish):
                m.d.sync += self.head.eq(self._next(self.head))
            with m.If(start):
                m.d.sync += self.alloc.eq(self._next(self.alloc))
        with m.Elif(self.retire):
            m.d.sync += self.head.eq(self._next(self.head))
            for j in range(slots):
                with m.If(_equals(self.head, j)):
                    m.d.sync += self.active[j].eq(0)
        if self.snap is not None:
            with m.Elif(self.restore):
                m.d.sync += [s.eq(snap) for s, snap in zip(self.state, self.snap)]
            with m.If(self.save):
                m.d.sync += [snap.eq(s) for s, snap in zip(self.state, self.snap)]

    def empty_window(self, extent):
        """High if an open window's next tap is at or past ``extent`` (valid at position 0)."""
        bad = Const(0)
        for j in range(self.slots):
            bad = bad | (self.active[j] & (self.dphase[j] != 0)
                         & (self.dilation - self.dphase[j] >= extent))
        return bad


class MaxPool(wiring.Component):
    """Max pooling of an HWC stream of 8-bit maps, configured at run time (see the module).

    Bit-exact with :func:`model.pool.maxpool2d` for every legal configuration: any kernel,
    stride, pads (each smaller than the kernel), dilation and ``ceil_mode`` up to the limits
    below, int8 or uint8 (signed values are compared with their sign bit flipped).

    Pipeline: the sequencer issues one operation per cycle (an input beat, or a flush of a
    window that ended on the last column or row); stage 1 reads, updates and writes the
    horizontal memory word of the beat's channel group, stages 2 to 4 the vertical word of
    the output column and group when a horizontal window ends (read, registered twice, then
    updated and registered, and written from that register in the next cycle), then the
    output register. A horizontal word written in one cycle is read by the next operation
    through a transparent read port; a vertical word is read before the four operations
    ahead have written theirs, and their words are forwarded when the address is the same. So back-to-back updates of the same word (one group, one output
    column) are exact. Setup after ``start``: ``SETUP_LEVELS + 2`` cycles plus the larger
    begin pad.

    Parameters
    ----------
    lanes : int
        Channels per beat (a power of two up to 64).
    max_kernel : int
        Largest kernel height and width.
    max_width, max_height : int
        Largest input map; ``max_height`` defaults to ``max_width``.
    max_channels : int
        Largest channel count.
    max_stride, max_dilation : int
        Largest stride and dilation; default ``max_kernel``.
    window_slots : int
        Windows open at once per axis, the width of the partial-maximum memories in windows;
        default ``max_kernel``. A map is legal iff ``(K - 1) * dilation + 1 <= window_slots *
        stride`` on both axes. 0: no unit at all (a configuration for small devices without
        max-pooling): every ``start`` is refused with :attr:`rtl.limits.PoolError.NO_UNIT`.
    bram : str
        How the vertical memory is built (:class:`rtl.bram.RegisteredRam`; keyword only).

    Attributes
    ----------
    params : dict
        Every parameter, defaults filled in (:func:`pool_params`); each is also an
        attribute of the same name.
    hmem_depth, vmem_depth : int
        Words of the horizontal and vertical memories (:func:`memory_depths`).
    groups : int
        ``ceil(max_channels / lanes)``, beats per pixel at most.
    out_width_max : int
        :func:`max_output_width`.

    Members
    -------
    config : ``In(config_layout())``
        Latched at ``start``.
    start : ``In(1)``
        Latch ``config`` and run (ignored while ``busy``).
    busy, running, done : ``Out(1)``
        See the module docstring; ``done`` and ``error`` hold until the next ``start``.
    error : ``Out(POOL_ERROR_WIDTH)``
        A :class:`PoolError`.
    last_error : ``Out(1)``
        Input ``last`` missing on the final beat or set early.
    i : ``In(stream.Signature(beat_layout(lanes)))``
    o : ``Out(stream.Signature(beat_layout(lanes)))``
    """

    def __init__(self, *args, bram="generic", **kwargs):
        if bram not in BRAMS:
            raise ValueError(f"bram must be one of {', '.join(map(repr, BRAMS))}, not {bram!r}")
        self.bram = bram
        self.params = pool_params(*args, **kwargs)
        for name, value in self.params.items():
            setattr(self, name, value)
        lanes, max_kernel, max_width, max_channels = (self.params[n] for n in (
            "lanes", "max_kernel", "max_width", "max_channels"))
        self.groups = -(-max_channels // lanes)
        self.out_width_max = max_output_width(max_width, max_kernel)
        depths = memory_depths(lanes, max_kernel, max_width, max_channels)
        self.hmem_depth, self.vmem_depth = depths["horizontal"], depths["vertical"]
        self.beat_layout = beat_layout(lanes)
        super().__init__({
            "config": In(config_layout()),
            "start": In(1),
            "busy": Out(1),
            "running": Out(1),
            "done": Out(1),
            "error": Out(POOL_ERROR_WIDTH),
            "last_error": Out(1),
            "i": In(stream.Signature(self.beat_layout)),
            "o": Out(stream.Signature(self.beat_layout)),
        })

    def elaborate(self, platform):
        if self.window_slots == 0:
            return self._elaborate_absent()
        m = Module()
        lanes, slots = self.lanes, self.window_slots
        lane_bits = (lanes - 1).bit_length()
        sign_bit = 1 << (DATA_WIDTH - 1)

        # --- configuration latched at start, derived constants, checks -----------------------
        cfg = Signal(config_layout(), name="cfg")
        latch = Signal()
        with m.If(latch):
            m.d.sync += cfg.eq(self.config)

        def reg(name, expr):
            sig = Signal(expr.shape(), name=f"d_{name}")
            m.d.sync += sig.eq(expr)
            return sig

        def narrow(value, maximum):
            """A field cut to the width of its checked maximum: the derived constants below
            are used (and the checks that read them decide) only when the range checks,
            which come first, passed. Keeps the arithmetic small (no DSP for keff)."""
            return value[:maximum.bit_length()]

        pad_max = self.max_kernel - 1           # a legal pad is smaller than the kernel
        axes_cfg = {
            "h": (narrow(cfg.height, self.max_height), narrow(cfg.kernel_h, self.max_kernel),
                  narrow(cfg.stride_h, self.max_stride), narrow(cfg.dilation_h, self.max_dilation),
                  narrow(cfg.pad_top, pad_max), narrow(cfg.pad_bottom, pad_max)),
            "w": (narrow(cfg.width, self.max_width), narrow(cfg.kernel_w, self.max_kernel),
                  narrow(cfg.stride_w, self.max_stride), narrow(cfg.dilation_w, self.max_dilation),
                  narrow(cfg.pad_left, pad_max), narrow(cfg.pad_right, pad_max)),
        }
        d = {}
        for a, (n, k, s, dil, pb, pe) in axes_cfg.items():
            # (k - 1) * dilation + 1 as registered shifted copies, then their sum.
            partial = [reg(f"keff_{a}_{j}", Mux(dil[j], (k - 1) << j, 0))        # level 1
                       for j in range(len(dil))]
            keff = reg(f"keff_{a}", sum(partial) + 1)                              # level 2
            # The fields' sums first, so that each level-3 constant is one subtraction.
            padded = reg(f"padded_{a}", n + pe)                                   # level 1
            padded_s = reg(f"padded_s_{a}", n + pe + s - 1)                       # level 1
            limit = reg(f"limit_{a}", padded - keff)                              # level 3
            d[f"keff_{a}"], d[f"limit_{a}"] = keff, limit
            ceil_end = reg(f"ceil_end_{a}", padded_s - keff)                      # level 3
            n_m1 = reg(f"n_m1_{a}", n - 1)                                        # level 1
            ceil_max = reg(f"ceil_max_{a}", Mux(ceil_end < n_m1, ceil_end, n_m1))  # level 4
            start_max = reg(f"start_max_{a}", Mux(cfg.ceil_mode, ceil_max, limit))  # level 5
            d[f"start_max_m1_{a}"] = reg(f"start_max_m1_{a}", start_max - 1)      # level 6
            neg_pb = reg(f"neg_pb_{a}", -pb)                                      # level 1
            s_pb = reg(f"s_pb_{a}", s - pb)                                       # level 1
            s_pb1 = reg(f"s_pb1_{a}", s - pb + 1)                                 # level 1
            s_1 = reg(f"s_1_{a}", s + 1)                                          # level 1
            d[f"init_below_{a}"] = reg(f"init_below_{a}", neg_pb < start_max)     # level 6
            # The sequencer's constants (see _Axis).
            d[f"last_pos_m1_{a}"] = reg(f"last_pos_m1_{a}", n - 2)               # level 1
            d[f"init_at_end_{a}"] = reg(f"init_at_end_{a}", -pb == n - 1)         # level 1
            d[f"rel_last_{a}"] = reg(f"rel_last_{a}", keff - 1)                   # level 3
            # -pad_begin > start_max - s, with s - pad_begin of the latched fields.
            d[f"init_final_{a}"] = reg(f"init_final_{a}", start_max < s_pb)       # level 6
            # -pad_begin >= start_max - s, and start_max - s - 1 (final_next of _Axis).
            d[f"init_final_next_{a}"] = reg(f"init_final_next_{a}", start_max < s_pb1)  # level 6
            d[f"final_min_m2_{a}"] = reg(f"final_min_m2_{a}", start_max - s_1)   # level 6
            d[f"stride_m1_{a}"] = reg(f"stride_m1_{a}", s - 1)                    # level 1
            d[f"dilation_m1_{a}"] = reg(f"dilation_m1_{a}", dil - 1)              # level 1
        channels = narrow(cfg.channels, self.max_channels)
        groups = reg("groups", (channels + lanes - 1) >> lane_bits)
        last_lanes = reg("last_lanes", channels - ((groups - 1) << lane_bits))
        last_keep = reg("last_keep", Cat(lane < last_lanes for lane in range(lanes)))
        # The last group's index is compared one step ahead (g_last below).
        one_group = reg("one_group", is_zero((channels - 1) >> lane_bits))
        last_group_m1 = reg("last_group_m1", ((channels - 1) >> lane_bits) - 1)

        v = SimpleNamespace(**{**self.params, **{name: cfg[name] for name in cfg.shape().members},
                               **d})
        # Each test registered, then the first failing one.
        code = Const(PoolError.NONE, POOL_ERROR_WIDTH)
        for value, bad in reversed(stage_checks(POOL_REFUSALS, "range", v)):
            code = Mux(reg(f"bad_{PoolError(value).name.lower()}", bad), value, code)
        check_code = Signal(POOL_ERROR_WIDTH)
        m.d.sync += check_code.eq(code)

        # --- axis sequencers ----------------------------------------------------------------
        max_n = max(self.max_width, self.max_height)
        pos_shape = signed(max(max_n, self.max_kernel + self.max_stride).bit_length() + 2)
        rel_shape = unsigned(((self.max_kernel - 1) * self.max_dilation).bit_length() or 1)
        dil_shape = unsigned(self.max_dilation.bit_length())
        stride_shape = unsigned(self.max_stride.bit_length())
        ha = _Axis(m, "ax_w", slots, pos_shape, rel_shape, dil_shape, stride_shape, snapshot=True)
        va = _Axis(m, "ax_h", slots, pos_shape, rel_shape, dil_shape, stride_shape, snapshot=False)
        for axis, a, pb, dil in ((ha, "w", cfg.pad_left, cfg.dilation_w),
                                 (va, "h", cfg.pad_top, cfg.dilation_h)):
            m.d.comb += [
                axis.dilation.eq(dil), axis.pad_begin.eq(pb),
                *(getattr(axis, name).eq(d[f"{name}_{a}"]) for name in (
                    "last_pos_m1", "init_at_end", "rel_last", "start_max_m1", "init_below",
                    "final_min_m2", "init_final_next",
                    "init_final", "stride_m1", "dilation_m1")),
            ]
            axis.elaborate()
        # Whether a window covers only padding, and whether both axes reached position 0:
        # registered, so PREROLL decides on the state of its previous cycle (the axes no
        # longer step then; `settled` is 0 in PREROLL's first cycle).
        empty, settled = Signal(), Signal()
        m.d.sync += [
            empty.eq(ha.empty_window(axes_cfg["w"][0]) | va.empty_window(axes_cfg["h"][0])),
            settled.eq(0),
        ]

        # --- memories -----------------------------------------------------------------------
        lane_vec = data.ArrayLayout(unsigned(DATA_WIDTH), lanes)
        word = data.ArrayLayout(lane_vec, slots)
        m.submodules.hmem = hmem = Memory(shape=word, depth=self.hmem_depth, init=[])
        m.submodules.vmem = vmem = RegisteredRam(width=word.size, depth=self.vmem_depth,
                                                  bram=self.bram)
        hw_port = hmem.write_port()
        hr_port = hmem.read_port(transparent_for=(hw_port,))
        # Read in P1, the word in P3 (two cycles: the RAM and its output register), not
        # transparent: the five writes that can be in flight meanwhile are forwarded (below).
        v_rd = data.View(word, vmem.r_data)

        # --- control ---------------------------------------------------------------------
        busy, running, done, last_error = (Signal(name=n) for n in (
            "busy_q", "running_q", "done_q", "last_error_q"))
        error_q = Signal(POOL_ERROR_WIDTH, name="error_q")
        m.d.comb += [self.busy.eq(busy), self.running.eq(running), self.done.eq(done),
                     self.error.eq(error_q), self.last_error.eq(last_error)]
        setup_count = Signal(range(SETUP_LEVELS + 1))

        g = Signal(range(max(self.groups, 2)))
        g_last = Signal()                   # g == last_group, a register set a step ahead
        hcount = Signal(range(self.out_width_max * self.groups + 1))   # H-window outputs in the row
        hcount_m1 = Signal.like(hcount, name="hcount_m1")              # hcount - 1, wrapping
        fcount = Signal.like(hcount, name="fcount")                    # vertical flush address
        hcount_m2 = Signal.like(hcount, name="hcount_m2")              # hcount - 2, wrapping
        # fcount == hcount - 1 (the row's last word), a register set a step ahead.
        f_last = Signal(name="f_last")

        def g_clear():
            m.d.sync += [g.eq(0), g_last.eq(one_group)]

        def g_step():
            m.d.sync += [g.eq(Mux(g_last, 0, g + 1)),
                         g_last.eq(Mux(g_last, one_group, g == last_group_m1))]

        def h_clear():
            m.d.sync += [hcount.eq(0), hcount_m1.eq(-1), hcount_m2.eq(-2)]

        def h_step():
            m.d.sync += [hcount.eq(hcount + 1), hcount_m1.eq(hcount), hcount_m2.eq(hcount_m1)]

        def f_clear():
            m.d.sync += [fcount.eq(0), f_last.eq(is_zero(hcount_m1))]

        # Pipeline: P0 = the operation the sequencer issues, P1 = horizontal read-modify-write,
        # P2 = vertical read, P3 = the word out of the block RAM, registered (`v_raw`), P3b =
        # the word forwarded and registered (`v_q`), P4 = vertical modify (written from its
        # register in the next cycle), then the output register. Everything moves on `adv`.
        adv = Signal()
        fire = Signal()
        OP_IN, OP_HFLUSH, OP_VFLUSH = 1, 2, 3        # nonzero, see is_zero
        op_kind = Signal(2)
        ctrl = data.StructLayout({
            "kind": 2, "g": g.shape(), "g_last": 1,
            "h_tap": slots, "h_fresh": slots, "h_emit": 1, "h_slot": ha.head.shape(), "h_final": 1,
            "v_tap": slots, "v_fresh": slots, "v_emit": 1, "v_slot": va.head.shape(), "v_final": 1,
            "vaddr": hcount.shape(), "vlast": 1, "keep": lanes,
        })
        p0 = Signal(ctrl)
        p1, p2, p3 = Signal(ctrl, name="p1"), Signal(ctrl, name="p2"), Signal(ctrl, name="p3")
        p3b = Signal(ctrl, name="p3b")
        p1_valid, p2_valid, p3_valid, p3b_valid = Signal(), Signal(), Signal(), Signal()
        p1_data = Signal(lane_vec)
        p2_hv, p3_hv = Signal(lane_vec), Signal(lane_vec, name="p3_hv")
        p3b_hv = Signal(lane_vec, name="p3b_hv")
        out_valid = Signal()

        flip = Mux(cfg.is_unsigned, 0, sign_bit)          # signed compare as unsigned
        m.d.comb += [
            p0.kind.eq(op_kind), p0.g.eq(g), p0.g_last.eq(g_last),
            p0.keep.eq(Mux(g_last, last_keep, (1 << lanes) - 1)),   # the lanes of channels
            p0.h_tap.eq(Mux(op_kind == OP_IN, Cat(ha.tap), 0)),
            p0.h_fresh.eq(Mux(op_kind == OP_IN, Cat(ha.fresh), 0)),
            p0.h_emit.eq(Mux(op_kind == OP_IN, ha.head_finish, op_kind == OP_HFLUSH)),
            p0.h_slot.eq(ha.head), p0.h_final.eq(ha.head_final),
            p0.v_tap.eq(Mux(op_kind == OP_VFLUSH, 0, Cat(va.tap))),
            p0.v_fresh.eq(Mux(op_kind == OP_VFLUSH, 0, Cat(va.fresh))),
            p0.v_emit.eq(Mux(op_kind == OP_VFLUSH, 1, va.head_finish)),
            p0.v_slot.eq(va.head), p0.v_final.eq(va.head_final),
            p0.vaddr.eq(Mux(op_kind == OP_VFLUSH, fcount, hcount)),
            p0.vlast.eq(Mux(op_kind == OP_VFLUSH, f_last, ha.head_final & g_last)),
        ]

        # P1: horizontal update.
        m.d.comb += [hr_port.addr.eq(g), hr_port.en.eq(adv)]
        h_old = hr_port.data
        h_new = Signal(word)
        for j in range(slots):
            for lane in range(lanes):
                old, new = h_old[j][lane], p1_data[lane]
                m.d.comb += h_new[j][lane].eq(Mux(
                    p1.h_tap[j] & (p1.h_fresh[j] | (new > old)), new, old))
        m.d.comb += [
            hw_port.addr.eq(p1.g), hw_port.data.eq(h_new),
            hw_port.en.eq(adv & p1_valid & (p1.kind == OP_IN)),
            vmem.r_addr.eq(p1.vaddr), vmem.r_en.eq(adv),
        ]
        with m.If(adv):
            m.d.sync += [
                p2_valid.eq(p1_valid & ((p1.kind == OP_VFLUSH) | p1.h_emit)),
                p2.eq(p1), p2_hv.eq(_select(p1.h_slot, [h_new[j] for j in range(slots)])),
            ]

        # P2: the vertical word being read (in P3 with the operation).
        with m.If(adv):
            m.d.sync += [p3_valid.eq(p2_valid), p3.eq(p2), p3_hv.eq(p2_hv)]

        # P3: the vertical word arrives from the block RAM's output register and is registered
        # as it is (`v_raw`): the block's output wires reach a register and nothing else, so
        # that the placer may put the memory far from the logic. P3b: the forwarded word
        # (`v_q`). P4: vertical update, output. The updated word is registered (`w1`) and
        # written from there in the next cycle (registers on both sides of the block RAM's
        # wires). A word was read when its operation left P1, before the writes of the five
        # pipeline places ahead of it. The nearest one, in P4 while the operation is in P3b,
        # never writes the same word: a row's operations write distinct words (`hcount`), and
        # rows are a place apart (ROW_END lets a bubble into P1 before the next row or the
        # vertical flush, whose operations write nothing). The four before it are in `w1` to
        # `w4` while the operation is in P3b (their writes in P3b's cycle, P3's, P2's and the
        # read's) and are forwarded into `v_q`, the nearest first, with flags registered a step
        # ahead: P3b holds one choice after registers, P4 compares registers.
        p4, p4_valid = Signal(ctrl, name="p4"), Signal()
        p4_hv = Signal(lane_vec, name="p4_hv")
        v_raw = Signal(word, name="v_raw")
        with m.If(adv):
            m.d.sync += [p3b_valid.eq(p3_valid), p3b.eq(p3), p3b_hv.eq(p3_hv), v_raw.eq(v_rd)]
            m.d.sync += [p4_valid.eq(p3b_valid), p4.eq(p3b), p4_hv.eq(p3b_hv)]
        p4_writes = p4_valid & (p4.kind != OP_VFLUSH)
        v_new = Signal(word)
        n_w = 4
        w = [Signal(word, name=f"w{k + 1}") for k in range(n_w)]       # the last four updates
        w_en = [Signal(name=f"w{k + 1}_en") for k in range(n_w)]
        w_addr = [Signal.like(p4.vaddr, name=f"w{k + 1}_addr") for k in range(n_w)]
        w1, w1_en, w1_addr = w[0], w_en[0], w_addr[0]
        w1_new = Signal()                                              # w1 is to be written
        hits = [Signal(name=f"fwd_w{k + 1}") for k in range(n_w)]      # P3b's word is w1..w4
        v_q, v_q_next = Signal(word, name="v_q"), Signal(word, name="v_q_next")
        forwarded = v_raw
        for hit, w_k in reversed(list(zip(hits, w))):
            forwarded = Mux(hit, w_k, forwarded)
        m.d.comb += v_q_next.eq(forwarded)
        m.d.sync += w1_new.eq(adv)
        with m.If(adv):
            m.d.sync += [w1.eq(v_new), w1_en.eq(p4_writes), w1_addr.eq(p4.vaddr)]
            m.d.sync += [x.eq(y) for x, y in zip(w[1:], w[:-1])]
            m.d.sync += [x.eq(y) for x, y in zip(w_en[1:], w_en[:-1])]
            m.d.sync += [x.eq(y) for x, y in zip(w_addr[1:], w_addr[:-1])]
            # After this step, P3b holds P3's operation, and w1..w4 the updates of P4's and of
            # w1's to w3's operations.
            m.d.sync += hits[0].eq(p4_writes & (p4.vaddr == p3.vaddr))
            m.d.sync += [hits[k + 1].eq(w_en[k] & (w_addr[k] == p3.vaddr))
                         for k in range(n_w - 1)]
            m.d.sync += v_q.eq(v_q_next)
        with m.If(latch):
            m.d.sync += [en.eq(0) for en in w_en]
        def update(tap, fresh, new, old):
            """The partial maximum after ``new``."""
            return Mux(tap & (fresh | (new > old)), new, old)

        for j in range(slots):
            for lane in range(lanes):
                m.d.comb += v_new[j][lane].eq(update(p4.v_tap[j], p4.v_fresh[j], p4_hv[lane],
                                                     v_q[j][lane]))
        m.d.comb += [
            vmem.w_addr.eq(w1_addr), vmem.w_data.eq(w1),
            vmem.w_en.eq(w1_new & w1_en),
        ]
        p4_emit = Signal()
        m.d.comb += p4_emit.eq(p4_valid & p4.v_emit)
        # The emitted window's result: the same value as v_new's slot, from its slot's old
        # word and flags chosen a step ahead, as P4 is loaded (the slot multiplexer off the
        # compares' paths, and no select line fanning out before them).
        result = Signal(lane_vec)
        slot_q = Signal(lane_vec)
        slot_tap, slot_fresh = Signal(), Signal()
        with m.If(adv):
            m.d.sync += [
                slot_q.eq(_select(p3b.v_slot, [v_q_next[j] for j in range(slots)])),
                slot_tap.eq(_select(p3b.v_slot, [p3b.v_tap[j] for j in range(slots)])),
                slot_fresh.eq(_select(p3b.v_slot, [p3b.v_fresh[j] for j in range(slots)])),
            ]
        for lane in range(lanes):
            m.d.comb += result[lane].eq(update(slot_tap, slot_fresh, p4_hv[lane],
                                               slot_q[lane]))
        # The output: two registers written and read in turn. The pipeline advances while
        # they are not both full (`adv` a register: the output's ready reaches no enable), and
        # a result goes into its register with no multiplexer in front.
        outs = [Signal(self.beat_layout, name=f"out{k}") for k in range(2)]
        out_w, out_r, out_full = Signal(), Signal(), Signal()
        out_count = Signal(range(3))
        push, pop = Signal(), Signal()
        m.d.comb += [push.eq(adv & p4_emit), pop.eq(out_valid & self.o.ready)]
        with m.If(push):
            m.d.sync += out_w.eq(~out_w)
            for k in range(2):
                with m.If(out_w == k):
                    m.d.sync += outs[k].last.eq(p4.v_final & p4.vlast)
                    m.d.sync += [outs[k].data[lane].eq(Mux(p4.keep[lane], result[lane] ^ flip, 0))
                                 for lane in range(lanes)]
        with m.If(pop):
            m.d.sync += out_r.eq(~out_r)
        count_next = out_count + push - pop
        m.d.sync += [out_count.eq(count_next), out_valid.eq(count_next != 0),
                     out_full.eq(count_next == 2)]
        m.d.comb += [adv.eq(~out_full), self.o.valid.eq(out_valid),
                     self.o.payload.eq(Mux(out_r, outs[1], outs[0]))]

        # P0 -> P1.
        with m.If(adv):
            m.d.sync += [p1_valid.eq(fire), p1.eq(p0)]
            for lane in range(lanes):
                m.d.sync += p1_data[lane].eq(self.i.payload.data[lane] ^ flip)

        # --- sequencer ----------------------------------------------------------------------
        final_in = Signal()
        m.d.comb += final_in.eq(ha.at_end & va.at_end & g_last)
        pipe_empty = ~p1_valid & ~p2_valid & ~p3_valid & ~p3b_valid & ~p4_valid & ~out_valid

        # Whether an axis has an open window after the head one, registered (the axes hold
        # still in the cycle before ROW_END reads them; the vertical one through a row).
        h_more, v_more = Signal(name="h_more"), Signal(name="v_more")
        m.d.sync += [h_more.eq(ha.head_active & ha.more), v_more.eq(va.head_active & va.more)]

        def row_done():
            with m.If(va.at_end):
                with m.If(v_more):
                    m.d.comb += va.retire.eq(1)
                    f_clear()
                    g_clear()
                    goto(_State.VFLUSH)
                with m.Else():
                    goto(_State.DRAIN)
            with m.Else():
                m.d.comb += [va.step.eq(1), ha.restore.eq(1)]
                h_clear()

        state = Signal(range(max(_State) + 1), init=_State.IDLE)
        in_state = Signal(name="in_state")              # state == IN, a register

        def goto(next_state):
            m.d.sync += [state.eq(next_state), in_state.eq(next_state == _State.IN)]

        # IN first, on a register of its own: the input's handshake (`fire`) is a gate on
        # registers, and it reaches the axes' enables through no state decoding. (The input's
        # ready is assigned outside any condition: Icarus would leave a conditional one X
        # until the condition's inputs change, see _State.)
        m.d.comb += self.i.ready.eq(in_state & adv)
        with m.If(in_state):
            m.d.comb += [op_kind.eq(OP_IN), fire.eq(adv & self.i.valid)]
            with m.If(fire):
                with m.If(self.i.payload.last != final_in):
                    m.d.sync += last_error.eq(1)
                with m.If(ha.head_finish):
                    h_step()
                g_step()
                with m.If(g_last):
                    with m.If(ha.at_end):
                        with m.If(final_in):
                            m.d.sync += running.eq(0)
                        goto(_State.ROW_END)
                    with m.Else():
                        m.d.comb += ha.step.eq(1)
        with m.Elif(state == _State.IDLE):
            with m.If(self.start):
                m.d.comb += latch.eq(1)
                m.d.sync += [busy.eq(1), done.eq(0), error_q.eq(0), last_error.eq(0),
                             setup_count.eq(SETUP_LEVELS)]
                goto(_State.SETUP)
        with m.Elif(state == _State.SETUP):
            m.d.sync += setup_count.eq(setup_count - 1)
            with m.If(is_zero(setup_count)):
                with m.If(check_code != PoolError.NONE):
                    m.d.sync += [error_q.eq(check_code), busy.eq(0), done.eq(1)]
                    goto(_State.IDLE)
                with m.Else():
                    m.d.comb += [ha.init.eq(1), va.init.eq(1)]
                    goto(_State.PREROLL)
        with m.Elif(state == _State.PREROLL):
            # Step both axes from -pad_begin to position 0, then check the open windows.
            m.d.comb += [ha.step.eq(ha.pos < 0), va.step.eq(va.pos < 0)]
            m.d.sync += settled.eq((ha.pos >= 0) & (va.pos >= 0))
            with m.If(settled):
                m.d.sync += settled.eq(0)
                with m.If(empty):
                    m.d.sync += [error_q.eq(PoolError.EMPTY_WINDOW), busy.eq(0),
                                 done.eq(1)]
                    goto(_State.IDLE)
                with m.Else():
                    m.d.comb += ha.save.eq(1)
                    m.d.sync += running.eq(1)
                    f_clear()
                    g_clear()
                    h_clear()
                    goto(_State.IN)
        with m.Elif(state == _State.HFLUSH):
            # Windows that end on the last column after the oldest one: one op per group.
            m.d.comb += [op_kind.eq(OP_HFLUSH), fire.eq(adv)]
            with m.If(fire):
                h_step()
                g_step()
                with m.If(g_last):
                    with m.If(ha.more):
                        m.d.comb += ha.retire.eq(1)
                    with m.Else():
                        goto(_State.ROW_END)
        with m.Elif(state == _State.ROW_END):
            # A cycle between a row's last operation and the decisions that end it, which
            # read only registers here (`h_more`, `v_more`, `va.at_end`): not the input's
            # handshake, not the slot multiplexers of the axes. It ends only as the pipeline
            # moves, so that a bubble enters P1 between the rows' operations (the vertical
            # update needs its word's last writer at least two places ahead, see P3b).
            with m.If(adv):
                with m.If(h_more):
                    m.d.comb += ha.retire.eq(1)
                    goto(_State.HFLUSH)
                with m.Else():
                    goto(_State.IN)
                    row_done()
        with m.Elif(state == _State.VFLUSH):
            # Rows that end on the last input row after the oldest one: one op per word.
            m.d.comb += [op_kind.eq(OP_VFLUSH), fire.eq(adv)]
            with m.If(fire):
                m.d.sync += [fcount.eq(fcount + 1), f_last.eq(fcount == hcount_m2)]
                g_step()
                with m.If(f_last):
                    f_clear()
                    g_clear()
                    with m.If(va.more):
                        m.d.comb += va.retire.eq(1)
                    with m.Else():
                        goto(_State.DRAIN)
        with m.Elif(state == _State.DRAIN):
            with m.If(pipe_empty):
                m.d.sync += [busy.eq(0), done.eq(1)]
                goto(_State.IDLE)
        return m

    def _elaborate_absent(self):
        """``window_slots = 0``, no max-pool unit (small devices): every ``start`` is refused
        with :attr:`rtl.limits.PoolError.NO_UNIT` (``done`` the cycle after), no memory, no input taken
        and nothing output."""
        m = Module()
        done = Signal()
        with m.If(self.start):
            m.d.sync += done.eq(1)
        m.d.comb += [self.done.eq(done), self.error.eq(PoolError.NO_UNIT)]
        return m


class MaxPoolAxis(wiring.Component):
    """:class:`MaxPool` with flat AXI-Stream-style ports, as a top level for simulation.

    Every ``config`` field ``NAME`` is the input port ``cfg_NAME``; ``s_axis_tdata`` and
    ``m_axis_tdata`` hold ``lanes`` bytes, channel ``g*lanes + i`` in byte ``i``.
    Parameters are those of :class:`MaxPool`.

    Members
    -------
    s_axis_tdata : ``In(8 * lanes)``
    s_axis_tvalid, s_axis_tlast, m_axis_tready : ``In(1)``
    m_axis_tdata : ``Out(8 * lanes)``
    m_axis_tvalid, m_axis_tlast, s_axis_tready : ``Out(1)``
    cfg_* : ``In`` of each :func:`config_layout` field's width
    start : ``In(1)``; busy, running, done, last_error : ``Out(1)``; error : ``Out(POOL_ERROR_WIDTH)``
    """

    def __init__(self, **params):
        self.core = core = MaxPool(**params)
        super().__init__({
            **axis_members("s_axis", core.beat_layout, In),
            **axis_members("m_axis", core.beat_layout, Out),
            **{f"cfg_{name}": In(field.shape) for name, field in config_layout()},
            "start": In(1), "busy": Out(1), "running": Out(1), "done": Out(1),
            "error": Out(POOL_ERROR_WIDTH), "last_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        connect_axis(m, self, "s_axis", core.i)
        connect_axis(m, self, "m_axis", core.o)
        m.d.comb += [
            *(getattr(core.config, name).eq(getattr(self, f"cfg_{name}"))
              for name, _ in config_layout()),
            core.start.eq(self.start), self.busy.eq(core.busy), self.running.eq(core.running),
            self.done.eq(core.done), self.error.eq(core.error),
            self.last_error.eq(core.last_error),
        ]
        return m
