"""Requantization unit: scales accumulators to 8-bit activations in a pipelined stream.

The arithmetic is exactly :func:`model.quant.requantize`, one sample at a time, with the
per-channel constants travelling beside each accumulator::

    prod = acc * multiplier
    y    = (prod + 2**(shift - 1)) >> shift      # arithmetic: round half toward +infinity
    out  = min(max(y + zero_point, lo), hi)      # lo = max(lo, zero_point) with relu

The rounding shift is computed as ``(((2 * prod) >> shift) + 1) >> 1``, which equals the line
above for every ``shift >= 1`` and needs no wide rounding constant. Outside the contract's
shifts ``1..62`` the unit stays defined: ``shift = 0`` gives the plain product (the formula with
the rounding term ``floor(2**-1) = 0``) and ``shift = 63`` follows the formula exactly.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Requantize", "RequantizeAxis", "input_layout", "output_layout", "axis_tdata_layout"]


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")


def input_layout(acc_width: int, mult_width: int, shift_width: int,
                 out_width: int) -> data.StructLayout:
    """Payload of the input stream: one accumulator and the constants of its channel.

    ``zero_point`` has ``out_width + 1`` bits so that it covers the zero points of both the
    signed and the unsigned output type (-128..255 for 8 bits).
    """
    return data.StructLayout({
        "acc":         signed(acc_width),
        "multiplier":  unsigned(mult_width),
        "shift":       unsigned(shift_width),
        "zero_point":  signed(out_width + 1),
        "relu":        1,
        "is_unsigned": 1,
        "last":        1,
    })


def output_layout(out_width: int) -> data.StructLayout:
    """Payload of the output stream: the int8 or uint8 bit pattern and the passed-through ``last``."""
    return data.StructLayout({"data": unsigned(out_width), "last": 1})


def axis_tdata_layout(acc_width: int, mult_width: int, shift_width: int,
                      out_width: int) -> data.StructLayout:
    """``s_axis_tdata`` of :class:`RequantizeAxis`: every input field except ``last``."""
    fields = input_layout(acc_width, mult_width, shift_width, out_width)
    return data.StructLayout({name: field.shape for name, field in fields if name != "last"})


class Requantize(wiring.Component):
    """Scales signed accumulators to ``out_width``-bit activations (see :func:`model.quant.requantize`).

    A five-stage pipeline with one sample per cycle throughput. Each stage register loads when
    it is empty or when the stage after it moves, so bubbles collapse and a stalled output
    holds up to :attr:`latency` samples without loss or duplication. ``i.ready`` depends on
    ``o.ready`` through one gate per stage, never on ``i.valid``; ``o.valid`` and ``o.payload``
    come straight from registers. The control state depends on nothing but ``i.valid`` and
    ``o.ready``, so parallel instances given the same handshakes stay in lockstep (one
    instance's ``i.ready`` and ``o.valid`` stand for all).

    ========  =============================================================================
    Stage     Registered result
    ========  =============================================================================
    1         two partial products ``acc * multiplier[:h]`` and ``acc * multiplier[h:]``
    2         the product ``acc * multiplier``
    3         ``(2 * prod) >> shift`` (arithmetic barrel shift)
    4         ``(2 * prod) >> shift`` saturated to ``out_width + 3`` bits (exact: beyond
              that range every zero point saturates the same way), then rounded to ``y``;
              the output bounds ``lo`` and ``hi``
    5         ``min(max(y + zero_point, lo), hi)`` as an ``out_width``-bit pattern
    ========  =============================================================================

    Parameters
    ----------
    acc_width : int
        Width of the signed accumulator.
    mult_width : int
        Width of the unsigned multiplier (31 holds the model's ``[2**30, 2**31)``).
    shift_width : int
        Width of the unsigned right shift; the contract's shifts are 1..62. At most the bit
        length of ``acc_width + mult_width``: a wider field would only add shifts beyond the
        product's width, which always give 0.
    out_width : int
        Width of the output; ``is_unsigned`` selects the range ``0..2**out_width-1`` or
        ``-2**(out_width-1)..2**(out_width-1)-1``.

    Attributes
    ----------
    latency : int
        Clock cycles from a sample's input transfer to its output transfer with ``o.ready``
        high: accepted at clock edge ``t``, it is on ``o`` after edge ``t + latency - 1``.
    input_layout, output_layout : data.StructLayout
        The payload layouts of ``i`` and ``o``.

    Members
    -------
    i : ``In(stream.Signature(input_layout(...)))``
        Accumulators with their per-channel constants and ``last``.
    o : ``Out(stream.Signature(output_layout(out_width)))``
        Activations with ``last``, in input order.
    """

    #: Number of pipeline stages; see the class docstring.
    latency = 5

    def __init__(self, acc_width=32, mult_width=31, shift_width=6, out_width=8):
        _check_int("acc_width", acc_width, 2)
        _check_int("mult_width", mult_width, 1)
        _check_int("shift_width", shift_width, 1)
        _check_int("out_width", out_width, 2)
        prod_width = acc_width + mult_width
        if shift_width > prod_width.bit_length():
            raise ValueError(f"shift_width must be at most {prod_width.bit_length()} for a "
                             f"{prod_width}-bit product, not {shift_width}")
        self.acc_width = acc_width
        self.mult_width = mult_width
        self.shift_width = shift_width
        self.out_width = out_width
        self.input_layout = input_layout(acc_width, mult_width, shift_width, out_width)
        self.output_layout = output_layout(out_width)
        super().__init__({
            "i": In(stream.Signature(self.input_layout)),
            "o": Out(stream.Signature(self.output_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        aw, mw, ow = self.acc_width, self.mult_width, self.out_width
        prod_width = aw + mw
        lo_half = (mw + 1) // 2          # multiplier bits in the low partial product
        hi_half = mw - lo_half
        # Stage 4 saturates (2 * prod) >> shift to this many bits: a y beyond the resulting
        # range saturates the output for every zero_point the field holds, and y + zero_point
        # fits in it too.
        narrow = ow + 3
        side = data.StructLayout({"zero_point": signed(ow + 1), "relu": 1, "is_unsigned": 1,
                                  "last": 1})

        # Handshake: stage k loads when it is empty or stage k + 1 takes its sample.
        valid = [Signal(name=f"s{k}_valid") for k in range(1, self.latency + 1)]
        load = [Signal(name=f"s{k}_load") for k in range(1, self.latency + 1)]
        downstream_ready = [*load[1:], self.o.ready]
        for k in range(self.latency):
            m.d.comb += load[k].eq(~valid[k] | downstream_ready[k])
            with m.If(load[k]):
                m.d.sync += valid[k].eq(self.i.valid if k == 0 else valid[k - 1])
        m.d.comb += [
            self.i.ready.eq(load[0]),
            self.o.valid.eq(valid[-1]),
        ]

        def stage_reg(name, shape):
            return Signal(shape, name=name, reset_less=True)

        # Stage 1: partial products.
        i = self.i.payload
        s1_pp_lo = stage_reg("s1_pp_lo", signed(aw + lo_half))
        s1_pp_hi = stage_reg("s1_pp_hi", signed(aw + hi_half)) if hi_half else None
        s1_shift = stage_reg("s1_shift", unsigned(self.shift_width))
        s1_side = stage_reg("s1_side", side)
        with m.If(load[0]):
            m.d.sync += [
                s1_pp_lo.eq(i.acc * i.multiplier[:lo_half]),
                s1_shift.eq(i.shift),
                s1_side.zero_point.eq(i.zero_point),
                s1_side.relu.eq(i.relu),
                s1_side.is_unsigned.eq(i.is_unsigned),
                s1_side.last.eq(i.last),
            ]
            if hi_half:
                m.d.sync += s1_pp_hi.eq(i.acc * i.multiplier[lo_half:])

        # Stage 2: the full product.
        s2_prod = stage_reg("s2_prod", signed(prod_width))
        s2_shift = stage_reg("s2_shift", unsigned(self.shift_width))
        s2_side = stage_reg("s2_side", side)
        product = s1_pp_lo if not hi_half else (s1_pp_hi << lo_half) + s1_pp_lo
        with m.If(load[1]):
            m.d.sync += [s2_prod.eq(product), s2_shift.eq(s1_shift), s2_side.eq(s1_side)]

        # Stage 3: the shift, one bit short of the final one; stage 4 rounds with the last bit.
        s3_half = stage_reg("s3_half", signed(prod_width + 1))
        s3_side = stage_reg("s3_side", side)
        doubled = Signal(signed(prod_width + 1))
        m.d.comb += doubled.eq(s2_prod << 1)
        with m.If(load[2]):
            m.d.sync += [s3_half.eq(doubled >> s2_shift), s3_side.eq(s2_side)]

        # Stage 4: saturate to `narrow` bits, round, and the output bounds.
        half_max = (1 << (narrow - 1)) - 1
        half_min = -(1 << (narrow - 1))
        half_sat = Signal(signed(narrow))
        m.d.comb += half_sat.eq(Mux(s3_half > half_max, half_max,
                                    Mux(s3_half < half_min, half_min, s3_half)))
        rounded = Signal(signed(narrow))
        m.d.comb += rounded.eq((half_sat + 1) >> 1)
        type_lo = Signal(signed(ow + 1))
        type_hi = Signal(signed(ow + 1))
        m.d.comb += [
            type_lo.eq(Mux(s3_side.is_unsigned, 0, -(1 << (ow - 1)))),
            type_hi.eq(Mux(s3_side.is_unsigned, (1 << ow) - 1, (1 << (ow - 1)) - 1)),
        ]
        s4_y = stage_reg("s4_y", signed(narrow))
        s4_lo = stage_reg("s4_lo", signed(ow + 1))
        s4_hi = stage_reg("s4_hi", signed(ow + 1))
        s4_zero_point = stage_reg("s4_zero_point", signed(ow + 1))
        s4_last = stage_reg("s4_last", 1)
        relu_lo = s3_side.relu & (s3_side.zero_point > type_lo)
        with m.If(load[3]):
            m.d.sync += [
                s4_y.eq(rounded),
                s4_lo.eq(Mux(relu_lo, s3_side.zero_point, type_lo)),
                s4_hi.eq(type_hi),
                s4_zero_point.eq(s3_side.zero_point),
                s4_last.eq(s3_side.last),
            ]

        # Stage 5: add the zero point and clamp; max with lo first, as numpy.clip does.
        shifted = Signal(signed(narrow))
        at_least_lo = Signal(signed(narrow))
        clamped = Signal(signed(narrow))
        m.d.comb += [
            shifted.eq(s4_y + s4_zero_point),
            at_least_lo.eq(Mux(shifted < s4_lo, s4_lo, shifted)),
            clamped.eq(Mux(at_least_lo > s4_hi, s4_hi, at_least_lo)),
        ]
        s5_out = stage_reg("s5_out", self.output_layout)
        with m.If(load[4]):
            m.d.sync += [s5_out.data.eq(clamped[:ow]), s5_out.last.eq(s4_last)]
        m.d.comb += self.o.payload.eq(s5_out)
        return m


class RequantizeAxis(wiring.Component):
    """:class:`Requantize` with flat AXI-Stream-style ports, as a top level for simulation.

    ``s_axis_tdata`` packs every input field except ``last`` (which is ``s_axis_tlast``) in
    the order of :func:`input_layout`, the first field in the least significant bits
    (:func:`axis_tdata_layout`).
    Parameters are those of :class:`Requantize`.

    Members
    -------
    s_axis_tdata : ``In(tdata_layout)``
    s_axis_tvalid, s_axis_tlast : ``In(1)``
    s_axis_tready : ``Out(1)``
    m_axis_tdata : ``Out(out_width)``
    m_axis_tvalid, m_axis_tlast : ``Out(1)``
    m_axis_tready : ``In(1)``
    """

    def __init__(self, **params):
        self.core = core = Requantize(**params)
        self.tdata_layout = axis_tdata_layout(core.acc_width, core.mult_width, core.shift_width,
                                              core.out_width)
        super().__init__({
            "s_axis_tdata": In(self.tdata_layout),
            "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1),
            "s_axis_tlast": In(1),
            "m_axis_tdata": Out(self.core.out_width),
            "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.d.comb += [
            *(getattr(core.i.payload, name).eq(getattr(self.s_axis_tdata, name))
              for name, _ in self.tdata_layout),
            core.i.payload.last.eq(self.s_axis_tlast),
            core.i.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(core.i.ready),
            self.m_axis_tdata.eq(core.o.payload.data),
            self.m_axis_tlast.eq(core.o.payload.last),
            self.m_axis_tvalid.eq(core.o.valid),
            core.o.ready.eq(self.m_axis_tready),
        ]
        return m
