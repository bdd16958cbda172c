"""A simple dual-port block RAM whose read data comes two cycles after the address.

The engine's large memories (the line buffer's banks, the weights and weight zero points, the
max-pool unit's vertical memory) are read through a register after the RAM: the address at
clock edge ``t``, the data after edge ``t + 1``. Built as an ``amaranth.lib.memory.Memory``
with a fabric register after it (``bram="generic"``, vendor-free), Yosys maps the RAM to
ECP5 ``DP16KD`` blocks without their output register (``REGMODE "NOREG"``): nextpnr times
such a read at about 5.8 ns from the clock to the data, most of a 150 MHz period before the
data even leaves the block, and a memory deeper than one block adds a multiplexer after it.

``bram="ecp5"`` instantiates the ``DP16KD`` primitives instead: port A writes, port B reads
with the block's output register (``REGMODE_B "OUTREG"``), so the two read cycles are inside
the block. A memory is built from *segments* of blocks in one aspect ratio each (16384 x 1,
8192 x 2, 4096 x 4, 2048 x 9 or 1024 x 18 per block; a segment of blocks side by side for the
width), chosen for the fewest blocks; the deepest segments come first, so that every segment
starts at a multiple of its own depth and is addressed by the address's low bits. With more
than one segment, the segment of the read address is delayed with the data and selects the
block outputs (one multiplexer level after registered outputs).

The ``DP16KD`` is a vendor primitive: only designs built for ECP5 may contain it. Simulation
uses the behavioural model in ``tb/models/DP16KD.v``, which covers the features used here.
"""

from functools import lru_cache

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["BRAMS", "ECP5_MODES", "RegisteredRam", "ecp5_segments"]

#: How a :class:`RegisteredRam` is built: ``"generic"`` (a Memory and a fabric register) or
#: ``"ecp5"`` (``DP16KD`` primitives with their output register).
BRAMS = ("generic", "ecp5")
#: ``DP16KD`` aspect ratios of one port: (words, bits per word).
ECP5_MODES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18))
#: Address pins of a ``DP16KD`` port.
ECP5_ADDR_BITS = 14


def _blocks(width, mode):
    return -(-width // mode[1])


def ecp5_segments(depth, width):
    """The segments of a ``depth`` x ``width`` memory in ``DP16KD`` blocks, deepest first:
    ``[(base, (words, bits))]``, for the fewest blocks in all."""
    @lru_cache(maxsize=None)
    def best(rest):
        """(blocks, segments) covering ``rest`` words with segments no deeper than the
        first's (so that each starts at a multiple of its depth)."""
        options = []
        for mode in ECP5_MODES:
            if mode[0] >= rest:
                options.append((_blocks(width, mode), (mode,)))
            else:
                blocks, tail = best(rest - mode[0])
                if tail[0][0] <= mode[0]:
                    options.append((_blocks(width, mode) + blocks, (mode, *tail)))
        return min(options, key=lambda o: (o[0], len(o[1])))
    segments, base = [], 0
    for mode in best(depth)[1]:
        segments.append((base, mode))
        base += mode[0]
    return segments


class RegisteredRam(wiring.Component):
    """``depth`` words of ``width`` bits; one write port, one read port with the data two
    cycles after the address (module docstring).

    A read of a word in the cycle it is written returns either its old or its new value:
    callers never do that (the line buffer reads a word a cycle after it is written at the
    earliest, the parameter memories are not written where a running layer reads, the
    max-pool unit forwards its own writes).

    Parameters
    ----------
    width, depth : int
    bram : str
        :data:`BRAMS`.

    Members
    -------
    w_addr : ``In(range(depth))``; w_data : ``In(width)``; w_en : ``In(1)``
        Written at the clock edge when ``w_en`` is high.
    r_addr : ``In(range(depth))``
    r_en : ``In(1)``
        Read enable: both read registers load only when it is high (a stalled pipeline holds
        its data).
    r_data : ``Out(width)``
        The word at ``r_addr`` two enabled clock edges earlier.
    """

    def __init__(self, *, width, depth, bram="generic"):
        for name, value in (("width", width), ("depth", depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if bram not in BRAMS:
            raise ValueError(f"bram must be one of {', '.join(map(repr, BRAMS))}, not {bram!r}")
        if bram == "ecp5" and depth > ECP5_MODES[0][0] * 64:
            raise ValueError(f"depth {depth} is above what RegisteredRam builds in DP16KD blocks "
                             f"({ECP5_MODES[0][0] * 64})")
        self.width, self.depth, self.bram = width, depth, bram
        self.segments = ecp5_segments(depth, width) if bram == "ecp5" else None
        super().__init__({
            "w_addr": In(range(depth)), "w_data": In(width), "w_en": In(1),
            "r_addr": In(range(depth)), "r_en": In(1, init=1), "r_data": Out(width),
        })

    @property
    def blocks(self):
        """``DP16KD`` blocks of the ``"ecp5"`` build (None for ``"generic"``)."""
        if self.segments is None:
            return None
        return sum(_blocks(self.width, mode) for _, mode in self.segments)

    def elaborate(self, platform):
        m = Module()
        if self.bram == "generic":
            m.submodules.mem = mem = Memory(shape=unsigned(self.width), depth=self.depth,
                                            init=[])
            wr, rd = mem.write_port(), mem.read_port()
            m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en),
                         rd.addr.eq(self.r_addr), rd.en.eq(self.r_en)]
            with m.If(self.r_en):
                m.d.sync += self.r_data.eq(rd.data)
            return m

        outputs = []
        for s, (base, (words, bits)) in enumerate(self.segments):
            abits = (words - 1).bit_length()
            lsb = ECP5_ADDR_BITS - abits            # the port's low address pins are unused
            in_w = self.w_addr[abits:] == base >> abits if base or words < self.depth else 1
            data = Signal(self.width, name=f"seg{s}_data")
            outputs.append(data)
            for k in range(_blocks(self.width, (words, bits))):
                lo, hi = k * bits, min((k + 1) * bits, self.width)
                ports = {
                    "p_DATA_WIDTH_A": bits, "p_DATA_WIDTH_B": bits,
                    "p_REGMODE_A": "NOREG", "p_REGMODE_B": "OUTREG",
                    "p_RESETMODE": "SYNC", "p_ASYNC_RESET_RELEASE": "SYNC",
                    "p_CSDECODE_A": "0b000", "p_CSDECODE_B": "0b000",
                    "p_WRITEMODE_A": "NORMAL", "p_WRITEMODE_B": "NORMAL", "p_GSR": "DISABLED",
                    "i_CLKA": ClockSignal(), "i_CLKB": ClockSignal(),
                    "i_CEA": Const(1), "i_OCEA": Const(1), "i_RSTA": Const(0),
                    "i_WEA": self.w_en & in_w,
                    "i_CEB": self.r_en, "i_OCEB": self.r_en, "i_RSTB": Const(0),
                    "i_WEB": Const(0),
                }
                for c in range(3):
                    ports[f"i_CSA{c}"] = Const(0)
                    ports[f"i_CSB{c}"] = Const(0)
                for a in range(ECP5_ADDR_BITS):
                    k_addr = a - lsb            # the address bit on pin a (local address)
                    if k_addr >= 0:
                        ports[f"i_ADA{a}"] = self.w_addr[k_addr] \
                            if k_addr < len(self.w_addr) else Const(0)
                        ports[f"i_ADB{a}"] = self.r_addr[k_addr] \
                            if k_addr < len(self.r_addr) else Const(0)
                    else:       # 18 bits wide: ADA1..0 are the byte write enables
                        ports[f"i_ADA{a}"] = Const(1 if bits == 18 and a < 2 else 0)
                        ports[f"i_ADB{a}"] = Const(0)
                for b in range(18):
                    ports[f"i_DIA{b}"] = self.w_data[lo + b] if lo + b < hi else Const(0)
                    ports[f"i_DIB{b}"] = Const(0)
                    if lo + b < hi:
                        ports[f"o_DOB{b}"] = data[lo + b]
                m.submodules[f"seg{s}_bram{k}"] = Instance("DP16KD", **ports)
        if len(outputs) == 1:
            m.d.comb += self.r_data.eq(outputs[0])
            return m
        # The read address's segment, delayed with the data (two enabled edges).
        seg = Signal(range(len(outputs)))
        for s, (base, _) in enumerate(self.segments):
            with m.If(self.r_addr >= base):
                m.d.comb += seg.eq(s)
        seg1, seg2 = Signal.like(seg, name="seg1"), Signal.like(seg, name="seg2")
        with m.If(self.r_en):
            m.d.sync += [seg1.eq(seg), seg2.eq(seg1)]
        out = outputs[0]
        for s in range(1, len(outputs)):
            out = Mux(seg2 == s, outputs[s], out)
        m.d.comb += self.r_data.eq(out)
        return m
