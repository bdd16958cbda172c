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

from types import SimpleNamespace

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.dsp import DSPS, Ecp5Multiplier
from rtl.streams import axis_members, connect_axis, payload_layout, tdata_layout

__all__ = ["Requantize", "RequantizeAxis", "input_layout", "output_layout", "axis_tdata_layout"]

#: Bits of the shift amount applied in the second of the two shift stages.
FINE_SHIFT_BITS = 3
#: Operand width of the one multiplier of the iterative variant: an iCE40 SB_MAC16 multiplies
#: 16 x 16 bits (an ECP5 MULT18X18D takes it too).
ITERATIVE_CHUNK = 16
#: Stages of the pipelined variant (see :class:`Requantize`).
PIPELINE_STAGES = 11
#: Stages after the shift (8 to 11 in the class docstring), shared by both variants.
CLAMP_STAGES = 4
#: The iterative variant's shifter applies the shift one radix-4 digit at a time, shifting
#: by ``4**k`` up to 3 times for digit ``k`` (no barrel shifter: each register bit chooses
#: between four inputs).
SHIFT_RADIX_BITS = 2
#: Shifts by ``4**k`` per digit at most (a radix-4 digit is 0..3).
SHIFT_DIGIT_MAX = (1 << SHIFT_RADIX_BITS) - 1
#: Cycles of the iterative variant besides one per partial product and one per product limb
#: (see :class:`Requantize`): the operand and product registers of the multiplier.
ITERATIVE_OVERHEAD = 2
#: Bits of the shift that the iterative variant's shifter applies one radix-4 digit at a time
#: (a shift below one limb of :data:`ITERATIVE_CHUNK` bits); the bits above select whole limbs
#: as the shifter takes the product.
LIMB_SHIFT_BITS = (ITERATIVE_CHUNK - 1).bit_length()


def _narrow(out_width: int) -> int:
    """Bits to which stage 8 saturates ``(2 * prod) >> shift``: a value beyond them
    saturates the output for every zero point the field holds, and ``y + zero_point`` fits
    in them too."""
    return out_width + 3


def _chunks(width: int) -> int:
    """Operand pieces of :data:`ITERATIVE_CHUNK` bits in a ``width``-bit operand."""
    return -(-width // ITERATIVE_CHUNK)


def _equals(value, constant: int):
    """``value == constant``, as a reduction for 0 (Yosys writes ``value == 0`` as a logical
    NOT of a vector, which Verilator's lint flags)."""
    return ~value.any() if constant == 0 else value == constant


def _side_bits(payload):
    """The input fields that travel beside the arithmetic, as the bits of the ``side`` layout
    of :meth:`Requantize.elaborate`."""
    return Cat(payload.zero_point, payload.relu, payload.is_unsigned, payload.last)


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
    return payload_layout(unsigned(out_width))


def axis_tdata_layout(acc_width: int, mult_width: int, shift_width: int,
                      out_width: int) -> data.StructLayout:
    """``s_axis_tdata`` of :class:`RequantizeAxis`: every input field except ``last``."""
    return tdata_layout(input_layout(acc_width, mult_width, shift_width, out_width))


class Requantize(wiring.Component):
    """Scales signed accumulators to ``out_width``-bit activations (see :func:`model.quant.requantize`).

    An eleven-stage pipeline with one sample per cycle throughput. The whole pipeline advances
    in every cycle except when its last stage holds a sample that ``o`` does not take, so a
    stalled output holds up to :attr:`latency` samples (exactly :attr:`latency` when the input
    kept coming) without loss or duplication; bubbles inside a stalled pipeline stay.
    ``i.ready`` is ``o.ready`` or an empty last stage, never dependent on ``i.valid``;
    ``o.valid`` and ``o.payload`` come straight from registers. The control state depends on
    nothing but ``i.valid`` and ``o.ready``, so parallel instances given the same handshakes
    stay in lockstep (one instance's ``i.ready`` and ``o.valid`` stand for all).

    Every multiplier reads registers and feeds a register; no other stage holds more than one
    carry chain or a few LUT levels.

    ========  =============================================================================
    Stage     Registered result
    ========  =============================================================================
    1         the input sample (so that the multipliers read registers placed beside them)
    2         four unsigned partial products of the accumulator's bit pattern, halves
              ``acc[:a]``, ``acc[a:]`` by ``multiplier[:h]``, ``multiplier[h:]`` (each fits
              an 18 x 18 or 16 x 16 DSP multiplier)
    3         the low and high sums ``acc[:a] * multiplier`` and ``acc[a:] * multiplier``
              (unsigned)
    4         the high sum as signed: minus ``multiplier << (acc_width - a)`` when ``acc < 0``
    5         the product ``acc * multiplier``
    6         ``(2 * prod) >> (shift & ~7)`` (arithmetic barrel shift, coarse step)
    7         ``(2 * prod) >> shift`` (fine step, ``shift & 7``)
    8         its ``out_width + 3`` low bits and whether it lies above or below that signed
              range (exact: beyond it every zero point saturates the same way)
    9         the saturated value rounded to ``y``; the output bounds ``lo`` and ``hi``
    10        ``y + zero_point``; the lower bound ``min(lo, hi)`` that ``clip`` applies
    11        ``min(max(y + zero_point, lo), hi)`` as an ``out_width``-bit pattern
    ========  =============================================================================

    With ``iterative=True`` stages 1 to 5 are replaced by one unsigned ``16 x 16`` multiplier
    (a single DSP block) that adds the ``ceil(acc_width / 16) * ceil(mult_width / 16)``
    partial products of one sample into the product register, one per cycle (the register
    starts at ``-(multiplier << acc_width)`` for a negative accumulator, which makes the
    unsigned bit pattern's product signed). A sample starts when it is valid and the product
    register is free: its accumulator and multiplier are read from ``i`` while they are
    multiplied, and the sample is taken (``i.ready``) in the cycle its last operand chunks
    are read, so ``i.payload`` must hold until then, as a stream's does (only the shift and
    the fields beside the arithmetic are kept). The register is kept as 16-bit limbs with
    registered carries between them, so that no carry chain is longer than 17 bits; the
    carries settle in one cycle per limb after the last partial product. Stages 6 and 7 are
    replaced too, by a shifter that takes the finished product (one cycle), shifting
    ``2 * prod`` by the shift's bits above its lowest 4 (whole limbs) as it takes it and
    keeping only the bits that can reach stage 8's ``out_width + 3`` and whether any bit above
    them differs from the sign; then it shifts right one radix-4 digit of the 4 lower bits at
    a time: by ``4**k``, for each digit ``k`` in turn, in the first ``digit`` of 3 cycles (6
    cycles, while the next sample is multiplied). The unit takes a sample every
    :attr:`interval` cycles (10 for 32 x 31 bits) and the clamp stages 8 to 11 follow as
    above; ``i.ready`` is low but in the cycle a sample is taken. Same results, bit for bit;
    far fewer multipliers, registers and logic cells, for small devices.

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
    iterative : bool
        Multiply over several cycles on one ``16 x 16`` multiplier (see above) instead of
        the pipelined partial products (default False: one sample per cycle).
    dsp : str
        How the pipelined variant's partial products are built (:data:`rtl.dsp.DSPS`):
        ``"generic"`` multiplies between the stage-1 and stage-2 fabric registers; ``"ecp5"``
        in MULT18X18D primitives whose input and output registers are those stages (enabled
        with the pipeline; a vendor primitive, for ECP5 synthesis). The iterative variant
        ignores it.

    Attributes
    ----------
    latency : int
        Clock cycles from a sample's input transfer to its output transfer with ``o.ready``
        high: accepted at clock edge ``t``, it is on ``o`` after edge ``t + latency - 1``
        (11 pipelined; iterative: the product's cycles but the partial products' (before the
        sample is taken), then ``1 + shift cycles + 4``, 17 for 32 x 31 bits).
    interval : int
        Clock cycles between input transfers when the input keeps coming and ``o.ready``
        stays high (1 pipelined; iterative: the larger of ``2 + partial products +
        ceil((acc_width + mult_width) / 16)`` product limbs and ``2 + shift cycles``, 10 for
        32 x 31 bits).
    capacity : int
        Samples that an empty unit lets in while its output stalls and its input keeps
        coming: ``latency`` pipelined; 3 iterative (its samples are ``interval`` cycles
        apart, so the first one reaches stage 11 and stops every stage, bubbles included,
        the second one waits in the shifter and the third in the product register).
    multipliers : int
        Multipliers of at most ``16 x 16`` bits the unit instantiates (4 pipelined for 32 x 31
        bits, 1 iterative).
    input_layout, output_layout : data.StructLayout
        The payload layouts of ``i`` and ``o``.

    Members
    -------
    i : ``In(stream.Signature(input_layout(...)))``
        Accumulators with their per-channel constants and ``last``.
    o : ``Out(stream.Signature(output_layout(out_width)))``
        Activations with ``last``, in input order.
    """

    #: Latency of the pipelined variant, its number of stages; see the class docstring.
    latency = PIPELINE_STAGES

    def __init__(self, acc_width=32, mult_width=31, shift_width=6, out_width=8, iterative=False,
                 dsp="generic"):
        if not isinstance(iterative, bool):
            raise TypeError(f"iterative must be a bool, not {iterative!r}")
        if dsp not in DSPS:
            raise ValueError(f"dsp must be one of {', '.join(map(repr, DSPS))}, "
                             f"not {dsp!r}")
        self.dsp = dsp
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
        self.iterative = iterative
        if iterative:
            self.products = _chunks(acc_width) * _chunks(mult_width)
            fine_bits = min(shift_width, LIMB_SHIFT_BITS)
            self.shift_cycles = SHIFT_DIGIT_MAX * -(-fine_bits // SHIFT_RADIX_BITS)
            product_cycles = ITERATIVE_OVERHEAD + self.products + _chunks(prod_width)
            self.interval = max(product_cycles, 2 + self.shift_cycles)
            # The sample is taken with its last operand chunks, `products` cycles after its
            # multiplication starts.
            self.latency = (product_cycles - self.products + 1 + self.shift_cycles
                            + CLAMP_STAGES)
            self.capacity = 3           # see the attribute
            self.multipliers = 1
        else:
            self.interval = 1
            self.capacity = self.latency
            self.multipliers = 2 if mult_width == 1 else 4     # stage 2's partial products
        self.input_layout = input_layout(acc_width, mult_width, shift_width, out_width)
        self.output_layout = output_layout(out_width)
        super().__init__({
            "i": In(stream.Signature(self.input_layout)),
            "o": Out(stream.Signature(self.output_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        ow = self.out_width
        side = data.StructLayout({"zero_point": signed(ow + 1), "relu": 1, "is_unsigned": 1,
                                  "last": 1})

        # Handshake: the whole pipeline advances unless its last stage holds a sample that
        # the output does not take (one gate from registers to every enable; a per-stage
        # "load when empty" rule would chain a gate through every stage). The iterative
        # variant's pipeline starts at stage 8, fed by its shifter.
        stages = CLAMP_STAGES if self.iterative else PIPELINE_STAGES
        valid = [Signal(name=f"s{k}_valid")
                 for k in range(PIPELINE_STAGES - stages + 1, PIPELINE_STAGES + 1)]
        advance = Signal()
        feed = Signal()         # stage 1's input (stage 8's when iterative) is valid
        m.d.comb += advance.eq(self.o.ready | ~valid[-1])
        with m.If(advance):
            m.d.sync += [valid[k].eq(feed if k == 0 else valid[k - 1])
                         for k in range(stages)]
        m.d.comb += self.o.valid.eq(valid[-1])

        def stage(k, **values):
            """Registers ``s{k}_{name}`` loading ``values`` (name: value or (shape, value))."""
            regs = {}
            for name, value in values.items():
                shape, value = value if isinstance(value, tuple) else (value.shape(), value)
                reg = Signal(shape, name=f"s{k}_{name}", reset_less=True)
                with m.If(advance):
                    m.d.sync += reg.eq(value)
                regs[name] = reg
            return SimpleNamespace(**regs)

        if self.iterative:
            s7 = self._iterative_product(m, advance, feed, side)
        else:
            m.d.comb += [self.i.ready.eq(advance), feed.eq(self.i.valid)]
            s7 = self._shift(m, stage, self._pipelined_product(m, stage, side, advance))
        self._clamp(m, stage, s7)
        return m

    def _pipelined_product(self, m, stage, side, advance):
        """Stages 1 to 5: the product of four partial products in a pipeline."""
        aw, mw = self.acc_width, self.mult_width
        prod_width = aw + mw
        a_lo = aw // 2                  # unsigned low accumulator bits
        a_hi = aw - a_lo                # high accumulator bits (the sign among them)
        m_lo = (mw + 1) // 2            # multiplier bits in the low partial products
        m_hi = mw - m_lo

        # Stage 1: the input sample, registered beside the multipliers.
        s1 = stage(1, payload=(self.input_layout, self.i.payload))

        # Stage 2: unsigned partial products of the accumulator halves and multiplier halves
        # (each fits an 18 x 18 or 16 x 16 DSP multiplier and lands in its output register).
        def halves(payload):
            """The partial products' operands of an input sample, by name."""
            acc, mult = payload.acc.as_unsigned(), payload.multiplier
            pairs = {"ll": (acc[:a_lo], mult[:m_lo]), "hl": (acc[a_lo:], mult[:m_lo])}
            if m_hi:
                pairs.update(lh=(acc[:a_lo], mult[m_lo:]), hh=(acc[a_lo:], mult[m_lo:]))
            return pairs

        i = s1.payload
        s2 = stage(2, sign=i.acc[-1], multiplier=i.multiplier, shift=i.shift,
                   side=(side, _side_bits(i)))
        for name, (a, b) in halves(i).items():
            if self.dsp == "ecp5":
                # In a MULT18X18D whose input registers load what stage 1 loads (the new
                # sample's operand bits) and whose output register is stage 2, both enabled
                # by `advance`: the multiply runs between DSP registers.
                dsp = Ecp5Multiplier(len(a) + 1, len(b) + 1, stages=("input", "output"),
                                     enable=True)
                m.submodules[f"mul_{name}"] = dsp
                new_a, new_b = halves(self.i.payload)[name]
                m.d.comb += [dsp.a.eq(new_a), dsp.b.eq(new_b), dsp.en.eq(advance)]
                setattr(s2, name, dsp.p[:len(a) + len(b)])
            else:
                setattr(s2, name, getattr(stage(2, **{name: a * b}), name))

        # Stage 3: the low and the high half of the unsigned product |acc| * multiplier pattern.
        if m_hi:
            sum_lo = s2.ll + (s2.lh << m_lo)
            sum_hi = s2.hl + (s2.hh << m_lo)
        else:
            sum_lo, sum_hi = s2.ll, s2.hl
        s3 = stage(3, lo=sum_lo, hi=sum_hi, sign=s2.sign, multiplier=s2.multiplier,
                   shift=s2.shift, side=s2.side)

        # Stage 4: the high half as a signed value: acc[a_lo:] weighs -2**a_hi when negative.
        hi_signed = Signal(signed(a_hi + mw + 1))
        m.d.comb += hi_signed.eq(s3.hi - Mux(s3.sign, s3.multiplier << a_hi, 0))
        s4 = stage(4, lo=s3.lo, hi=hi_signed, shift=s3.shift, side=s3.side)

        # Stage 5: the product acc * multiplier.
        product = Signal(signed(prod_width))
        m.d.comb += product.eq(s4.lo + (s4.hi << a_lo))
        return stage(5, prod=product, shift=s4.shift, side=s4.side)

    def _iterative_product(self, m, advance, feed, side):
        """The product register, filled by one multiplier over several cycles, and the
        shifter: the stage-7 registers ``half``, ``side`` of the pipelined variant (``half``
        narrowed, see below), valid on ``feed``."""
        aw, mw = self.acc_width, self.mult_width
        prod_width = aw + mw
        chunk = ITERATIVE_CHUNK
        steps = [(ia, im) for im in range(_chunks(mw)) for ia in range(_chunks(aw))]
        n = len(steps)

        # The sample's accumulator and multiplier are read from `i` while they are multiplied
        # (a stream's payload holds while it is valid and not taken); the sample is taken
        # with its last operand chunks, and then only its shift and side fields are kept.
        limbs = _chunks(prod_width)
        i = self.i.payload
        held_shift = Signal(self.shift_width, name="held_shift", reset_less=True)
        held_side = Signal(side, name="held_side", reset_less=True)
        busy = Signal()                 # multiplying
        full = Signal()                 # the product waits for the shifter
        count = Signal(range(n + limbs + 1))    # cycles since the start
        begin = Signal()                # a valid sample starts being multiplied
        starting = Signal()             # the first cycle of a multiplication (`count` 0)
        take = Signal()                 # the shifter takes the product
        # `ready` is a register: high in the cycle with `count == n - 1`.
        ready = Signal(name="ready")
        m.d.comb += [
            begin.eq(self.i.valid & ~busy & (~full | take)),
            self.i.ready.eq(ready),
        ]
        m.d.sync += ready.eq(begin if n == 1 else busy & (count == n - 2))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [held_shift.eq(i.shift), held_side.eq(_side_bits(i))]

        # The accumulator as its unsigned bit pattern, which weighs -2**aw more than the
        # signed value when negative: the product register starts at -(multiplier << aw)
        # (modulo 2**prod_width, where the product fits), loaded in the first cycle of the
        # multiplication (no partial product lands before the third). It is kept as limbs of
        # `chunk`
        # bits with a registered carry between neighbours (short carry chains): a partial
        # product lands on two limbs, and `limbs - 1` cycles after the last one take in the
        # carries left.
        widths = [min(chunk, prod_width - k * chunk) for k in range(limbs)]
        limb = [Signal(w, name=f"prod{k}", reset_less=True) for k, w in enumerate(widths)]
        carry = [Signal(name=f"carry{k}", reset_less=True) for k in range(limbs - 1)]
        a_op = Signal(chunk, name="a_op", reset_less=True)
        m_op = Signal(chunk, name="m_op", reset_less=True)
        partial = Signal(2 * chunk, name="partial", reset_less=True)
        # Where `partial` lands, one flag per limb (no decoding on the adders' path): `low_at`
        # for the limb that takes its low chunk, `high_at` for the one that takes its high
        # chunk (none when no partial product is added).
        low_at = Signal(limbs, name="low_at")
        high_at = Signal(limbs, name="high_at")
        acc_bits = i.acc.as_unsigned()
        m.d.sync += [partial.eq(a_op * m_op), low_at.eq(0), high_at.eq(0)]
        for j, (ia, im) in enumerate(steps):
            with m.If(_equals(count, j)):
                m.d.sync += [a_op.eq(acc_bits[ia * chunk:(ia + 1) * chunk]),
                             m_op.eq(i.multiplier[im * chunk:(im + 1) * chunk])]
            with m.If(busy & (count == j + 1)):
                m.d.sync += [low_at.eq(1 << (ia + im)),
                             high_at.eq((2 << (ia + im)) % (1 << limbs))]
        with m.If(busy):
            m.d.sync += count.eq(count + 1)
            for k in range(limbs):
                addend = ((partial[:chunk] & low_at[k].replicate(chunk))
                          | (partial[chunk:] & high_at[k].replicate(chunk)))[:widths[k]]
                if k == 0:
                    total = Cat(limb[k], C(0, 1)) + addend
                    m.d.sync += [limb[k].eq(total[:widths[k]])]
                else:
                    # limb + addend + carry in one adder: the carry enters as bit 0 of both.
                    total = (Cat(carry[k - 1], limb[k]) + Cat(C(1, 1), addend))[1:]
                    m.d.sync += limb[k].eq(total[:widths[k]])
                if k < limbs - 1:
                    m.d.sync += carry[k].eq(total[widths[k]])
            with m.If(starting):
                start = Signal(prod_width)
                if aw % chunk == 0:
                    # -(multiplier << aw) as ~multiplier << aw (no carry chain) and the + 1
                    # as the carry into limb aw / chunk, added in the next cycle.
                    upper = Signal(prod_width - aw)
                    m.d.comb += [upper.eq(~i.multiplier.as_unsigned()),
                                 start.eq(Mux(i.acc[-1], upper << aw, 0))]
                    m.d.sync += [c.eq(i.acc[-1] if k == aw // chunk - 1 else 0)
                                 for k, c in enumerate(carry)]
                else:
                    m.d.comb += start.eq(Mux(i.acc[-1], (-i.multiplier) << aw, 0))
                    m.d.sync += [c.eq(0) for c in carry]
                m.d.sync += [limb[k].eq(start[k * chunk:k * chunk + widths[k]])
                             for k in range(limbs)]
            with m.If(count == n + limbs):
                m.d.sync += [busy.eq(0), full.eq(1)]
        with m.Elif(take):
            m.d.sync += full.eq(0)
        m.d.sync += starting.eq(begin)
        with m.If(begin):
            m.d.sync += [busy.eq(1), count.eq(0)]

        # The shifter. `doubled` (2 * prod) is shifted right by the shift's coarse part
        # (whole limbs, `coarse_bits` upper bits) as the shifter takes it: of the result
        # `window` keeps the bits that the fine shift (its `fine_bits` lower bits, below a
        # limb) can bring into stage 8's `narrow` bits, `beyond` whether any bit above them
        # differs from the sign. The fine shift then moves `window` right one radix-4 digit
        # at a time, by 4**k for each digit k in turn, in the first `digit` of 3 cycles,
        # filling with the sign. Stage 8 sees the window's bits, then a bit that differs
        # from the sign iff `beyond`, then the sign: what it needs of the whole shifted value
        # (its `narrow` low bits, its sign, whether the bits above them all equal the sign).
        fine_bits = min(self.shift_width, LIMB_SHIFT_BITS)
        coarse_bits = self.shift_width - fine_bits
        keep = _narrow(self.out_width) + (1 << fine_bits) - 1
        doubled = Cat(C(0, 1), *limb).as_signed()
        sign = doubled[-1]

        def bits_from(lo, count):
            """``count`` bits of ``doubled`` from bit ``lo`` on, sign-extended."""
            have = max(0, min(count, len(doubled) - lo))
            return Cat(doubled[lo:lo + have], sign.replicate(count - have))

        def differs_from(lo):
            """Whether a bit of ``doubled`` from bit ``lo`` on differs from the sign."""
            return (doubled[lo:] != sign.replicate(len(doubled) - lo)) \
                if lo < len(doubled) else C(0, 1)

        window = Signal(keep, name="sh_window", reset_less=True)
        beyond = Signal(name="sh_beyond", reset_less=True)
        sh_sign = Signal(name="sh_sign", reset_less=True)
        digits = -(-fine_bits // SHIFT_RADIX_BITS)
        fine = Signal(SHIFT_RADIX_BITS * digits, name="sh_fine", reset_less=True)
        sh_side = Signal(side, name="sh_side", reset_less=True)
        sh_busy, sh_done = Signal(name="sh_busy"), Signal(name="sh_done")
        digit = Signal(range(max(digits, 2)), name="sh_digit")
        rep = Signal(range(SHIFT_DIGIT_MAX + 1), name="sh_rep")
        coarse = held_shift[fine_bits:]
        windows = [bits_from(c * chunk, keep) for c in range(1 << coarse_bits)]
        beyonds = [differs_from(c * chunk + keep) for c in range(1 << coarse_bits)]
        # The shifter takes a product once its previous result has left (not in the cycle it
        # leaves: no path from the output's handshake to the multiplier's; the shifter's
        # cycles leave room for that one, see `interval`).
        m.d.comb += [take.eq(full & ~sh_busy & ~sh_done), feed.eq(sh_done)]
        with m.If(sh_done & advance):
            m.d.sync += sh_done.eq(0)
        with m.If(take):
            m.d.sync += [window.eq(Array(windows)[coarse] if coarse_bits else windows[0]),
                         beyond.eq(Array(beyonds)[coarse] if coarse_bits else beyonds[0]),
                         sh_sign.eq(sign), fine.eq(held_shift[:fine_bits]), sh_busy.eq(1),
                         digit.eq(0), rep.eq(0), sh_side.eq(held_side)]
        with m.Elif(sh_busy):
            # Digit k's value and shifted `window`, as multiplexer chains (a `case` on `digit`
            # would lack a default when the digits are not a power of two).
            current, shifted = None, None
            for k in reversed(range(digits)):
                value = fine[SHIFT_RADIX_BITS * k:SHIFT_RADIX_BITS * (k + 1)]
                by = min(1 << (SHIFT_RADIX_BITS * k), keep)
                step = Cat(window[by:], sh_sign.replicate(by))
                current = value if current is None else Mux(_equals(digit, k), value, current)
                shifted = step if shifted is None else Mux(_equals(digit, k), step, shifted)
            with m.If(rep < current):
                m.d.sync += window.eq(shifted)
            m.d.sync += rep.eq(rep + 1)
            with m.If(rep == SHIFT_DIGIT_MAX - 1):
                m.d.sync += [rep.eq(0), digit.eq(digit + 1)]
                with m.If(_equals(digit, digits - 1)):
                    m.d.sync += [sh_busy.eq(0), sh_done.eq(1)]
        half = Cat(window, Mux(beyond, ~sh_sign, sh_sign), sh_sign).as_signed()
        return SimpleNamespace(half=half, side=sh_side)

    def _shift(self, m, stage, s5):
        """Stages 6 and 7 of the pipelined variant: ``(2 * prod) >> shift``."""
        prod_width = self.acc_width + self.mult_width
        fine_bits = min(FINE_SHIFT_BITS, self.shift_width)

        # Stages 6 and 7: the arithmetic shift, one bit short of the final one (stage 9 rounds
        # with the last bit), in a coarse step by multiples of 2**fine_bits and a fine step.
        doubled = Signal(signed(prod_width + 1))
        m.d.comb += doubled.eq(s5.prod << 1)
        coarse = s5.shift[fine_bits:]
        coarse_shifted = (doubled >> Cat(C(0, fine_bits), coarse)) if len(coarse) else doubled
        s6 = stage(6, half=(signed(prod_width + 1), coarse_shifted),
                   fine=s5.shift[:fine_bits], side=s5.side)
        return stage(7, half=(signed(prod_width + 1), s6.half >> s6.fine), side=s6.side)

    def _clamp(self, m, stage, s7):
        """Stages 8 to 11: saturate, round, add the zero point and clamp."""
        ow = self.out_width
        # Stage 8 saturates (2 * prod) >> shift to this many bits (see _narrow).
        narrow = _narrow(ow)

        # Stage 8: whether the shifted value lies beyond `narrow` signed bits, and which way.
        upper = s7.half[narrow - 1:]
        negative = s7.half[-1]
        s8 = stage(8, low=(signed(narrow), s7.half[:narrow]),
                   over=(1, ~negative & upper.any()), under=(1, negative & ~upper.all()),
                   side=s7.side)

        # Stage 9: saturate, round, and the output bounds.
        half_max = (1 << (narrow - 1)) - 1
        half_min = -(1 << (narrow - 1))
        half_sat = Signal(signed(narrow))
        m.d.comb += half_sat.eq(Mux(s8.over, half_max, Mux(s8.under, half_min, s8.low)))
        rounded = Signal(signed(narrow))
        m.d.comb += rounded.eq((half_sat + 1) >> 1)
        type_lo = Signal(signed(ow + 1))
        type_hi = Signal(signed(ow + 1))
        m.d.comb += [
            type_lo.eq(Mux(s8.side.is_unsigned, 0, -(1 << (ow - 1)))),
            type_hi.eq(Mux(s8.side.is_unsigned, (1 << ow) - 1, (1 << (ow - 1)) - 1)),
        ]
        relu_lo = s8.side.relu & (s8.side.zero_point > type_lo)
        s9 = stage(9, y=rounded, lo=(signed(ow + 1), Mux(relu_lo, s8.side.zero_point, type_lo)),
                   hi=type_hi, zero_point=s8.side.zero_point, last=s8.side.last)

        # Stage 10: add the zero point; the lower bound as clip(., lo, hi) applies it (lo
        # first, as numpy.clip does: a lower bound above hi yields hi).
        s10 = stage(10, shifted=(signed(narrow), s9.y + s9.zero_point),
                    lo=(signed(ow + 1), Mux(s9.lo > s9.hi, s9.hi, s9.lo)), hi=s9.hi,
                    bottom=(signed(ow + 1), s9.lo), last=s9.last)

        # Stage 11: clamp.
        clamped = Signal(signed(narrow))
        m.d.comb += clamped.eq(Mux(s10.shifted < s10.bottom, s10.lo,
                                   Mux(s10.shifted > s10.hi, s10.hi, s10.shifted)))
        s11 = stage(11, out=(self.output_layout, Cat(clamped[:ow], s10.last)))
        m.d.comb += self.o.payload.eq(s11.out)


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
        super().__init__({**axis_members("s_axis", core.input_layout, In),
                          **axis_members("m_axis", core.output_layout, Out)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        connect_axis(m, self, "s_axis", core.i)
        connect_axis(m, self, "m_axis", core.o)
        return m
