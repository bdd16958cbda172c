"""The PE x SIMD multiply-accumulate array of the conv engine.

Every cycle with ``valid`` high the array takes one input word (SIMD 8-bit activations of one
pixel) and one weight word (PE x SIMD 8-bit weights) and adds, for each of the PE output
channels, the dot product of the zero-point-corrected operands to that channel's int32
accumulator::

    acc[pe] += sum(lane) (x[lane] - x_zp) * (w[pe][lane] - w_zp[pe])

Both operands become 9-bit signed values after the zero-point subtraction (int8 and uint8,
with any zero point of the same type), their products fit 17 bits, and the accumulator wraps
at 32 bits exactly as :func:`model.conv.conv2d` does.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.dsp import DSPS, STAGES, Ecp5Multiplier
from rtl.streams import ACC_WIDTH, DATA_WIDTH, ZP_WIDTH

__all__ = ["MacArray", "tree_depth", "ACC_SPLIT", "DSPS", "ECP5_STAGES", "OPERAND_WIDTH", "ACC_WIDTH",
           "DATA_WIDTH", "ZP_WIDTH"]

#: Width of an operand after the zero-point subtraction: -255..255.
OPERAND_WIDTH = DATA_WIDTH + 1
#: Bits of the accumulators' low half: the accumulators are added as two halves with a
#: registered carry between them (short carry chains; one cycle of latency).
ACC_SPLIT = ACC_WIDTH // 2
#: Registers of the ECP5 DSP blocks that the ``"ecp5"`` multipliers use.
ECP5_STAGES = STAGES


def tree_depth(simd):
    """Registered levels of the adder tree that sums ``simd`` products: ``ceil(log2(simd))``."""
    return (simd - 1).bit_length()


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


class MacArray(wiring.Component):
    """PE output channels x SIMD input channels of multiply-accumulate, one word pair per cycle.

    A pipeline that never stalls: operands, 9 x 9 signed products (a multiplier between two
    registers, nothing else in that stage; or, with ``dsp="ecp5"``, a ``MULT18X18D`` with its
    input, pipeline and output registers: three stages), ``ceil(log2(simd))``
    registered levels of pairwise sums (:func:`tree_depth`), accumulate (in two halves,
    :data:`ACC_SPLIT`, the high half a cycle after the low). An operation presented
    with ``valid`` in cycle ``t`` lands in the accumulators at the end of cycle
    ``t + latency - 1``; when it carries ``last``, the finished accumulators appear on ``acc``
    with ``acc_valid`` in cycle ``t + latency`` (:attr:`latency`).
    An operation with ``first`` starts a new sum instead of adding to the previous one, so
    consecutive output groups need no idle cycle between them.

    The ``x``, ``w`` and ``w_zp`` inputs are expected one cycle after the control inputs
    (``valid``, ``first``, ``last``, ``final``, ``mask``), which is when a block
    RAM addressed together with the control delivers its data.

    Parameters
    ----------
    pe : int
        Output channels computed in parallel.
    simd : int
        Input channels consumed in parallel.
    dsp : str
        How the products are built (:data:`DSPS`): ``"generic"`` (default) multiplies with
        ``*`` between fabric registers and leaves the choice of DSP block to the synthesis tool
        (vendor-free Verilog); ``"ecp5"`` instantiates one :class:`rtl.dsp.Ecp5Multiplier`
        per product, registered inside the DSP block, which Yosys's ``synth_ecp5`` does not
        do by itself (for ECP5 synthesis only: the primitive is not in the simulators' or
        Verilator's libraries). Both compute the same sums; one product per DSP block either way.

    Attributes
    ----------
    latency : int
        Cycles from an operation with ``last`` to its ``acc_valid``: ``5 + tree_depth(simd)``,
        plus ``len(ECP5_STAGES) - 1`` with ``dsp="ecp5"``.

    Members
    -------
    valid, first, last, final : ``In(1)``
        An operation, the first and the last of an output group, and the last group of the
        feature map (``final`` is passed to ``acc_final``).
    mask : ``In(simd)``
        Lanes that take part: a lane whose bit is 0 (its tap in the padding, past the input
        channels or past the window) contributes zero (its activation operand is forced to
        zero).
    x_zp : ``In(signed(9))``, x_unsigned, w_unsigned : ``In(1)``
        Layer constants: input zero point, signedness of activations and weights.
    x : ``In(unsigned(8 * simd))``
        Activations, lane ``i`` in bits ``8*i .. 8*i+7`` (one cycle after ``valid``).
    w : ``In(unsigned(8 * pe * simd))``
        Weights, output channel ``p`` and lane ``i`` in byte ``p*simd + i``.
    w_zp : ``In(unsigned(9 * pe))``
        Weight zero point of each output channel, 9-bit two's complement each.
    acc_valid, acc_final : ``Out(1)``
    acc : ``Out(unsigned(32 * pe))``
        The finished accumulators, lane ``p`` in bits ``32*p .. 32*p+31`` (two's complement).
    """

    def __init__(self, pe, simd, dsp="generic"):
        _check_positive("pe", pe)
        _check_positive("simd", simd)
        if dsp not in DSPS:
            raise ValueError(f"dsp must be one of {', '.join(map(repr, DSPS))}, not {dsp!r}")
        self.pe = pe
        self.simd = simd
        self.dsp = dsp
        self._product_stages = len(ECP5_STAGES) if dsp == "ecp5" else 1
        self.latency = 4 + self._product_stages + tree_depth(simd)
        super().__init__({
            "valid": In(1), "first": In(1), "last": In(1), "final": In(1),
            "mask": In(simd),
            "x_zp": In(signed(ZP_WIDTH)), "x_unsigned": In(1), "w_unsigned": In(1),
            "x": In(unsigned(DATA_WIDTH * simd)),
            "w": In(unsigned(DATA_WIDTH * pe * simd)),
            "w_zp": In(unsigned(ZP_WIDTH * pe)),
            "acc_valid": Out(1), "acc_final": Out(1),
            "acc": Out(unsigned(ACC_WIDTH * pe)),
        })

    def elaborate(self, platform):
        m = Module()
        pe, simd = self.pe, self.simd
        ctrl = data.StructLayout({"valid": 1, "first": 1, "last": 1, "final": 1})

        # Stage 1 (the cycle the memories deliver): control of the operation being read.
        s1 = Signal(ctrl)
        s1_mask = Signal(simd)
        m.d.sync += [
            s1.valid.eq(self.valid), s1.first.eq(self.first), s1.last.eq(self.last),
            s1.final.eq(self.final), s1_mask.eq(self.mask),
        ]

        def extend(byte, is_unsigned):
            return Mux(is_unsigned, byte.as_unsigned(), byte.as_signed())

        def reg(shape, name, **kwargs):
            return Signal(shape, name=name, reset_less=True, **kwargs)

        # Stage 2: zero-point-corrected 9-bit operands.
        s2 = Signal(ctrl)
        xs = [reg(signed(OPERAND_WIDTH), f"xs{i}") for i in range(simd)]
        ws = [[reg(signed(OPERAND_WIDTH), f"ws{p}_{i}") for i in range(simd)] for p in range(pe)]
        m.d.sync += s2.eq(s1)
        for i in range(simd):
            x = extend(self.x.word_select(i, DATA_WIDTH), self.x_unsigned)
            m.d.sync += xs[i].eq(Mux(s1_mask[i], x - self.x_zp, 0))
        for p in range(pe):
            wz = self.w_zp.word_select(p, ZP_WIDTH).as_signed()
            for i in range(simd):
                w = extend(self.w.word_select(p * simd + i, DATA_WIDTH), self.w_unsigned)
                m.d.sync += ws[p][i].eq(w - wz)

        # Stage 3: 9 x 9 signed products, registered right at the multipliers (generic), or
        # registered inside the DSP blocks (ecp5: the DSP's registers, `_product_stages` of them).
        ctl = s2
        for k in range(self._product_stages):
            nxt = Signal(ctrl, name="s3" if k == self._product_stages - 1 else f"s2_{k + 1}")
            m.d.sync += nxt.eq(ctl)
            ctl = nxt
        s3 = ctl
        prods = [[Signal(signed(2 * OPERAND_WIDTH - 1), name=f"prod{p}_{i}") for i in range(simd)]
                 for p in range(pe)]
        for p in range(pe):
            for i in range(simd):
                if self.dsp == "ecp5":
                    mult = Ecp5Multiplier(OPERAND_WIDTH, OPERAND_WIDTH, ECP5_STAGES)
                    m.submodules[f"mult{p}_{i}"] = mult
                    m.d.comb += [mult.a.eq(xs[i]), mult.b.eq(ws[p][i]), prods[p][i].eq(mult.p)]
                else:
                    # (With a reset, unlike the other data registers: Yosys 0.70's ice40_dsp
                    # otherwise packs one product register as the C/D input of another
                    # multiplier's SB_MAC16 and the mapped design has half as many SB_MAC16 as
                    # multipliers; not understood yet.)
                    m.d.sync += prods[p][i].eq(xs[i] * ws[p][i])

        # Adder tree: one registered level of pairwise sums per stage.
        ctl, terms_of = s3, [list(prods[p]) for p in range(pe)]
        for level in range(tree_depth(simd)):
            nxt = Signal(ctrl, name=f"t{level}")
            m.d.sync += nxt.eq(ctl)
            for p in range(pe):
                terms = terms_of[p]
                sums = []
                for k in range(0, len(terms), 2):
                    pair = terms[k:k + 2]
                    value = pair[0] + pair[1] if len(pair) == 2 else pair[0]
                    total = reg(signed(len(value)), f"sum{level}_{p}_{k // 2}")
                    m.d.sync += total.eq(value)
                    sums.append(total)
                terms_of[p] = sums
            ctl = nxt

        # Accumulate into the 32-bit accumulators, kept as two halves with a registered carry
        # between them so that no carry chain is longer than ACC_SPLIT bits: the low half adds
        # the dot product's low bits in stage A, the high half its high bits and the low
        # half's carry one cycle later (stage B), when the low half is copied to `acc_lo`.
        lo_w, hi_w = ACC_SPLIT, ACC_WIDTH - ACC_SPLIT
        lows = [Signal(lo_w, name=f"acc_lo_a{p}") for p in range(pe)]
        carries = [Signal(name=f"acc_carry{p}", reset_less=True) for p in range(pe)]
        dot_his = [reg(hi_w, f"dot_hi{p}") for p in range(pe)]
        outs_lo = [reg(lo_w, f"acc_lo{p}") for p in range(pe)]
        highs = [Signal(hi_w, name=f"acc_hi{p}") for p in range(pe)]
        ctl_b = Signal(ctrl, name="acc_b")
        m.d.sync += ctl_b.eq(ctl)
        for p in range(pe):
            dot = terms_of[p][0].as_signed()
            wide = Signal(signed(ACC_WIDTH), name=f"dot{p}")
            m.d.comb += wide.eq(dot)
            with m.If(ctl.valid):
                # The choice after the adder: `first` fans out to every accumulator bit and
                # would otherwise start the carry chain's path late.
                low = Cat(lows[p], C(0, 1)) + wide[:lo_w]
                m.d.sync += [
                    lows[p].eq(Mux(ctl.first, wide[:lo_w], low[:lo_w])),
                    carries[p].eq(~ctl.first & low[lo_w]),
                    dot_his[p].eq(wide[lo_w:]),
                ]
            with m.If(ctl_b.valid):
                # The carry enters as bit 0 of both operands (one adder, no second chain).
                high = (Cat(carries[p], highs[p]) + Cat(C(1, 1), dot_his[p]))[1:]
                m.d.sync += [
                    highs[p].eq(Mux(ctl_b.first, dot_his[p], high[:hi_w])),
                    outs_lo[p].eq(lows[p]),
                ]
        m.d.sync += [
            self.acc_valid.eq(ctl_b.valid & ctl_b.last),
            self.acc_final.eq(ctl_b.valid & ctl_b.last & ctl_b.final),
        ]
        for p in range(pe):
            m.d.comb += self.acc.word_select(p, ACC_WIDTH).eq(Cat(outs_lo[p], highs[p]))
        return m
