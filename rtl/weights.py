"""Weight, bias and requantization-constant memories of the conv engine, and their loader.

Parameters arrive at run time on an AXI4-Stream of ``param_width`` bits (``s_axis_param_*`` on
the engine; a power of two of at least :data:`BEAT_WIDTH` = 32), in packets that each start
with a header beat and end with ``tlast``:

======================  ===================================================================
Beat                    Meaning
======================  ===================================================================
header                  bits 31..28: kind (:data:`KIND_WEIGHTS` or :data:`KIND_CHANNELS`);
                        bits 23..0: first word address written by the packet; bits above
                        31 are ignored (send 0)
payload                 whole memory words, each as consecutive beats (below)
======================  ===================================================================

A memory word of ``B`` bits is sent little-endian as ``ceil(B / param_width)`` beats (its
bits ``k * param_width`` and up in beat ``k``); the last beat of a word is zero-padded.

``KIND_WEIGHTS``: one weight word is ``pe * simd`` bytes (``B = 8 * pe * simd``), counted from
the layer's ``weight_base``. A layer's words: for each output-channel group ``og``, its
window's ``ceil(kh * kw * Cp / simd)`` operations in turn (:mod:`rtl.linebuffer`); byte
``p * simd + j`` of operation ``k`` is the weight of output channel ``og * pe + p`` at window
position ``t = k * simd + j = (ky * kw + kx) * Cp + c`` (input channel ``c``; zero for
``c >= cin`` and past the window). In the plain format (``Cp = ceil(cin / simd) * simd``) the
word of (og, ky, kx, ig) is ``((og * kh + ky) * kw + kx) * ceil(cin / simd) + ig``; packed,
``Cp = cin`` and words hold products of several taps. Raw int8 or uint8 bit patterns;
the zero point is subtracted in the MAC array.

``KIND_CHANNELS``: one word per output-channel group ``og`` (address ``chan_base + og``),
``3 * pe`` values of 32 bits (``B = 96 * pe``): for each channel ``og * pe + p`` in turn, (1)
the int32 bias, (2) the requantization multiplier (bits 30..0), (3) the right shift in bits
5..0 and the weight zero point as a 9-bit two's complement number in bits 16..8.

A word past the end of its memory, the partial word of a packet that ends inside a word, and
a packet of unknown kind are dropped and raise ``load_error`` (sticky until ``clear``); the
packet's whole words before them are written.

Packets are accepted at any time, also while a layer runs: the memories have separate read and
write ports. The loader does not know which words the running layer reads; the host must not
overwrite them (it loads the next layer into other words, see ``weight_base`` and
``chan_base`` in :mod:`rtl.engine_regs`).
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.bram import BRAMS, RegisteredRam
from rtl.streams import ACC_WIDTH, BEAT_WIDTH, DATA_WIDTH, ZP_WIDTH, payload_layout

__all__ = ["ParamStore", "channel_layout", "KIND_WEIGHTS", "KIND_CHANNELS", "BEAT_WIDTH",
           "MULT_WIDTH", "SHIFT_WIDTH", "HEADER_KIND_SHIFT", "HEADER_ADDR_BITS",
           "CHANNEL_BEATS", "HEADER_KIND_BITS", "CHANNEL_VALUE_WIDTH", "word_beats"]

#: Header fields.
HEADER_KIND_SHIFT = 28
HEADER_KIND_BITS = BEAT_WIDTH - HEADER_KIND_SHIFT
HEADER_ADDR_BITS = 24
#: Packet kinds.
KIND_WEIGHTS = 1
KIND_CHANNELS = 2
#: Values per output channel in a KIND_CHANNELS word: bias, multiplier, shift + zero point.
CHANNEL_BEATS = 3
#: Bits of each of those values.
CHANNEL_VALUE_WIDTH = BEAT_WIDTH
#: Requantization constant widths (model.quant: multiplier < 2**31, shift <= 62).
MULT_WIDTH = 31
SHIFT_WIDTH = 6
#: Synthesis attribute of memories whose read-during-write result does not matter (Yosys).
NO_RW_CHECK = "no_rw_check"
#: Bit position of the weight zero point in the third channel beat.
WZP_SHIFT = 8


def word_beats(word_width, param_width):
    """Beats of a ``param_width``-bit parameter stream that carry one memory word of
    ``word_width`` bits."""
    return -(-word_width // param_width)


def channel_layout(pe):
    """Per output-channel-group constants read by the output stage: bias and requantization."""
    return data.ArrayLayout(data.StructLayout({
        "bias": signed(ACC_WIDTH), "multiplier": unsigned(MULT_WIDTH),
        "shift": unsigned(SHIFT_WIDTH)}), pe)


class ParamStore(wiring.Component):
    """The engine's parameter memories and the stream loader that fills them.

    Three block RAMs, each with one synchronous read port (data one cycle after the address)
    and a separate write port: weights (``weight_depth`` words of ``pe * simd`` bytes), weight
    zero points and channel constants (``channel_depth`` words each). See the module docstring
    for the load format. A word is in its memory from the second cycle after its last beat.
    The loader takes a beat every cycle (``param.ready`` is always high), also while the
    memories are read: a whole word per cycle when ``param_width`` covers it.

    Parameters
    ----------
    pe, simd : int
        MAC array size.
    weight_depth : int
        Weight words (each one tap of one input-channel group for ``pe`` output channels).
    channel_depth : int
        Channel-constant words (each the constants of one output-channel group).
    param_width : int
        Bits of the load stream: a power of two, at least :data:`BEAT_WIDTH`.
    read_register : bool
        Register ``weight_data`` and ``wzp_data`` once more (two cycles after the address,
        ``chan_data`` still one): no logic after the block RAMs' slow outputs in the MAC
        array's first stage.
    no_rw_check : bool
        Tell synthesis that a read of a word in the cycle it is written may return anything
        (Yosys ``no_rw_check``, on an asynchronous read port followed by a register, which
        Yosys merges into the block RAM): writes may happen while a layer runs, but the host
        never writes the words the running layer reads (module docstring), so a read never
        meets a write of its own word. Saves the logic that emulates the old-data read on
        block RAMs without it (on iCE40 two registers per bit of the channel memories). Same
        behaviour in simulation. Default False.
    bram : str
        How the weight and zero-point memories are built with ``read_register`` and without
        ``no_rw_check`` (:class:`rtl.bram.RegisteredRam`: ``"ecp5"`` registers the data in the
        DP16KD output registers).
    weight_slice_bits : int, optional
        The weight memory is built as memories of this many bits side by side, each holding
        those bits of every word (a power of two dividing the word, ``8 * pe * simd``;
        default the whole word: one memory). Narrow slices let synthesis pick deep, narrow
        block RAMs: on an iCE40 a slice of 2 bits and up to 2048 words is one 2048 x 2
        block, with no multiplexer after the blocks (1152 words of 32 bits otherwise take
        256 x 16 blocks five deep and a 5-to-1 multiplexer per bit). Same behaviour.

    Members
    -------
    param : ``In(stream.Signature(data.StructLayout({"data": param_width, "last": 1})))``
        The load stream.
    clear : ``In(1)``
        Clears ``load_error``.
    load_error : ``Out(1)``
    weight_addr : ``In(range(weight_depth))``
    wzp_addr, chan_addr : ``In(range(channel_depth))``
    chan_en : ``In(1)``
        ``chan_data`` loads the word at ``chan_addr`` only in cycles with ``chan_en`` high
        (a read-enable; it holds its word otherwise), so that the engine can read from a
        registered address and decide only the enable late.
    weight_data : ``Out(unsigned(8 * pe * simd))``
    wzp_data : ``Out(unsigned(9 * pe))``
    chan_data : ``Out(channel_layout(pe))``
    """

    def __init__(self, *, pe, simd, weight_depth, channel_depth, param_width=BEAT_WIDTH,
                 read_register=False, no_rw_check=False, bram="generic",
                 weight_slice_bits=None):
        for name, value in (("pe", pe), ("simd", simd), ("weight_depth", weight_depth),
                            ("channel_depth", channel_depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name, value in (("weight_depth", weight_depth), ("channel_depth", channel_depth)):
            if value > 1 << HEADER_ADDR_BITS:
                raise ValueError(f"{name} must be at most {1 << HEADER_ADDR_BITS}, not {value}")
        if not isinstance(param_width, int) or isinstance(param_width, bool) \
                or param_width < BEAT_WIDTH or param_width & (param_width - 1):
            raise ValueError(f"param_width must be a power of two of at least {BEAT_WIDTH}, "
                             f"not {param_width!r}")
        self.pe, self.simd = pe, simd
        self.weight_depth, self.channel_depth = weight_depth, channel_depth
        self.param_width = param_width
        for name, value in (("read_register", read_register), ("no_rw_check", no_rw_check)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool, not {value!r}")
        self.read_register, self.no_rw_check = read_register, no_rw_check
        if bram not in BRAMS:
            raise ValueError(f"bram must be one of {', '.join(map(repr, BRAMS))}, not {bram!r}")
        self.bram = bram
        self.weight_width = DATA_WIDTH * pe * simd
        if weight_slice_bits is None:
            weight_slice_bits = self.weight_width
        if not isinstance(weight_slice_bits, int) or isinstance(weight_slice_bits, bool) \
                or weight_slice_bits < 1 or weight_slice_bits & (weight_slice_bits - 1) \
                or weight_slice_bits > self.weight_width:
            raise ValueError(f"weight_slice_bits must be a power of two up to the weight word "
                             f"of {self.weight_width} bits, not {weight_slice_bits!r}")
        self.weight_slice_bits = weight_slice_bits
        self.channel_width = CHANNEL_BEATS * CHANNEL_VALUE_WIDTH * pe
        self.weight_beats = word_beats(self.weight_width, param_width)
        self.channel_beats = word_beats(self.channel_width, param_width)
        super().__init__({
            "param": In(stream.Signature(payload_layout(param_width))),
            "clear": In(1), "load_error": Out(1),
            "weight_addr": In(range(weight_depth)),
            "weight_data": Out(unsigned(self.weight_width)),
            "wzp_addr": In(range(channel_depth)),
            "wzp_data": Out(unsigned(ZP_WIDTH * pe)),
            "chan_addr": In(range(channel_depth)), "chan_en": In(1, init=1),
            "chan_data": Out(channel_layout(pe)),
        })

    def elaborate(self, platform):
        m = Module()
        pe, width = self.pe, self.param_width
        attrs = {NO_RW_CHECK: 1} if self.no_rw_check else None
        # The weights and their zero points two cycles after the address (read_register,
        # without no_rw_check): RegisteredRam (on ECP5 the data in the DP16KD output
        # registers); else Memory read ports (below).
        registered = self.read_register and not self.no_rw_check
        # The weight memory in `weight_slice_bits` slices side by side (one when whole), all
        # written and read at the same address.
        slice_bits = self.weight_slice_bits
        slices = self.weight_width // slice_bits
        weight_wr = SimpleNamespace(addr=Signal(range(self.weight_depth), name="weight_wr_addr"),
                                    data=Signal(self.weight_width, name="weight_wr_data"),
                                    en=Signal(name="weight_wr_en"))
        weight_mems = []
        for k in range(slices):
            if registered:
                mem = RegisteredRam(width=slice_bits, depth=self.weight_depth, bram=self.bram)
                wr = SimpleNamespace(addr=mem.w_addr, data=mem.w_data, en=mem.w_en)
            else:
                mem = Memory(shape=unsigned(slice_bits), depth=self.weight_depth, init=[],
                             attrs=attrs)
                wr = mem.write_port()
            m.submodules["weight_mem" if slices == 1 else f"weight_mem{k}"] = mem
            m.d.comb += [wr.addr.eq(weight_wr.addr), wr.en.eq(weight_wr.en),
                         wr.data.eq(weight_wr.data.word_select(k, slice_bits))]
            weight_mems.append(mem)
        if registered:
            m.submodules.wzp_mem = wzp_mem = RegisteredRam(
                width=ZP_WIDTH * pe, depth=self.channel_depth, bram=self.bram)
            wzp_wr = SimpleNamespace(addr=wzp_mem.w_addr, data=wzp_mem.w_data, en=wzp_mem.w_en)
            m.d.comb += [wzp_mem.r_addr.eq(self.wzp_addr), self.wzp_data.eq(wzp_mem.r_data)]
            for mem in weight_mems:
                m.d.comb += mem.r_addr.eq(self.weight_addr)
            m.d.comb += self.weight_data.eq(Cat(*(mem.r_data for mem in weight_mems)))
        else:
            m.submodules.wzp_mem = wzp_mem = Memory(
                shape=unsigned(ZP_WIDTH * pe), depth=self.channel_depth, init=[], attrs=attrs)
            wzp_wr = wzp_mem.write_port()
        m.submodules.chan_mem = chan_mem = Memory(
            shape=channel_layout(pe), depth=self.channel_depth, init=[], attrs=attrs)
        chan_wr = chan_mem.write_port()

        def read_port(mem, addr, name, en=1):
            """The data one cycle after ``addr`` (in cycles with ``en``): a synchronous read
            port, or with ``no_rw_check`` an asynchronous one and a register, which Yosys
            merges into the block RAM as a port whose read-during-write result is left
            open."""
            if not self.no_rw_check:
                port = mem.read_port()
                m.d.comb += [port.addr.eq(addr), port.en.eq(en)]
                return port.data
            port = mem.read_port(domain="comb")
            data = Signal(mem.shape, name=f"{name}_q")
            m.d.comb += port.addr.eq(addr)
            with m.If(en):
                m.d.sync += data.eq(port.data)
            return data
        m.d.comb += self.chan_data.eq(read_port(chan_mem, self.chan_addr, "chan_rd",
                                                self.chan_en))
        if not registered:
            weight_rd = Cat(*(read_port(mem, self.weight_addr,
                                        "weight_rd" if slices == 1 else f"weight_rd{k}")
                              for k, mem in enumerate(weight_mems)))
            wzp_rd = read_port(wzp_mem, self.wzp_addr, "wzp_rd")
            read_domain = m.d.sync if self.read_register else m.d.comb
            read_domain += [self.weight_data.eq(weight_rd), self.wzp_data.eq(wzp_rd)]

        # Loader: header, then words assembled beat by beat into `word`.
        beats = max(self.weight_beats, self.channel_beats)
        word = Signal(unsigned(width * beats))
        word_next = Signal.like(word)
        in_packet = Signal()
        kind = Signal(HEADER_KIND_BITS)
        # The word address: the bits that reach past the larger memory, and a sticky bit set
        # when a header or an increment goes beyond them (such a word is past both memories).
        addr_bits = min(max(self.weight_depth, self.channel_depth).bit_length(),
                        HEADER_ADDR_BITS)
        addr = Signal(addr_bits)
        addr_over = Signal()
        beat = Signal(range(beats))
        beat_last = Signal()
        header = self.param.payload.data[:BEAT_WIDTH]
        header_kind = header[HEADER_KIND_SHIFT:]
        m.d.comb += [
            self.param.ready.eq(1),
            word_next.eq(word),
            word_next.word_select(beat, width).eq(self.param.payload.data),
            beat_last.eq(beat == Mux(kind == KIND_WEIGHTS, self.weight_beats - 1,
                                     self.channel_beats - 1)),
        ]
        with m.If(self.clear):
            m.d.sync += self.load_error.eq(0)

        # The memories are written in the cycle after a word's last beat, from `word` and
        # registered enables and address (for the clock rate: no decoding before the large
        # weight memory's write port).
        write_addr = Signal.like(addr)
        weight_we, channel_we = Signal(), Signal()
        lanes = data.View(data.ArrayLayout(data.StructLayout({
            "bias": signed(ACC_WIDTH), "multiplier": unsigned(CHANNEL_VALUE_WIDTH),
            "misc": unsigned(CHANNEL_VALUE_WIDTH)}), pe), word[:self.channel_width])
        m.d.sync += [weight_we.eq(0), channel_we.eq(0)]
        m.d.comb += [
            weight_wr.addr.eq(write_addr), weight_wr.data.eq(word[:self.weight_width]),
            wzp_wr.addr.eq(write_addr), chan_wr.addr.eq(write_addr),
            weight_wr.en.eq(weight_we), wzp_wr.en.eq(channel_we), chan_wr.en.eq(channel_we),
            wzp_wr.data.eq(Cat(lanes[p].misc[WZP_SHIFT:WZP_SHIFT + ZP_WIDTH] for p in range(pe))),
        ]
        for p in range(pe):
            m.d.comb += [
                chan_wr.data[p].bias.eq(lanes[p].bias),
                chan_wr.data[p].multiplier.eq(lanes[p].multiplier),
                chan_wr.data[p].shift.eq(lanes[p].misc[:SHIFT_WIDTH]),
            ]

        with m.If(self.param.valid):
            with m.If(~in_packet):
                m.d.sync += [
                    kind.eq(header_kind),
                    addr.eq(header[:addr_bits]),
                    addr_over.eq(header[addr_bits:HEADER_ADDR_BITS].any()),
                    beat.eq(0),
                    in_packet.eq(~self.param.payload.last),
                ]
                with m.If(~header_kind.matches(KIND_WEIGHTS, KIND_CHANNELS)):
                    m.d.sync += self.load_error.eq(1)
            with m.Else():
                m.d.sync += [word.eq(word_next), beat.eq(beat + 1)]
                with m.If(beat_last):
                    m.d.sync += [beat.eq(0), Cat(addr, addr_over).eq(Cat(addr, addr_over) + 1),
                                 write_addr.eq(addr)]
                    with m.If(addr_over):
                        m.d.sync += addr_over.eq(1)
                    with m.Switch(kind):
                        with m.Case(KIND_WEIGHTS):
                            with m.If(~addr_over & (addr < self.weight_depth)):
                                m.d.sync += weight_we.eq(1)
                            with m.Else():
                                m.d.sync += self.load_error.eq(1)
                        with m.Case(KIND_CHANNELS):
                            with m.If(~addr_over & (addr < self.channel_depth)):
                                m.d.sync += channel_we.eq(1)
                            with m.Else():
                                m.d.sync += self.load_error.eq(1)
                        with m.Default():
                            pass
                with m.If(self.param.payload.last):
                    m.d.sync += in_packet.eq(0)
                    with m.If(~beat_last):
                        m.d.sync += self.load_error.eq(1)
        return m
