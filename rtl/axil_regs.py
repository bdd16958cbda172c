"""An AXI4-Lite register block generated from a :class:`rtl.regmap.RegisterMap`.

Usage inside a top-level component (the engine)::

    from rtl import axil_regs
    from rtl.engine_regs import REGMAP
    from rtl.streams import connect_flat, flat_members

    class Engine(wiring.Component):
        def __init__(self):
            super().__init__({
                **flat_members(axil_regs.subordinate_signature(REGMAP), "s_axil"),
                ...})

        def elaborate(self, platform):
            m = Module()
            m.submodules.regs = regs = axil_regs.AXI4LiteRegisters(REGMAP)
            connect_flat(m, self, regs.bus, "s_axil")   # ports s_axil_awaddr, ...
            m.d.comb += stride_h.eq(regs.fields["stride_h"])       # rw: configuration output
            m.d.comb += regs.fields["busy"].eq(busy)               # ro: status input
            with m.If(regs.fields["start"]): ...                   # w1p: one-cycle strobe
            with m.If(regs.written["weight_data"]): ...            # rw/wo: written this cycle

Bus behaviour:

- AW and W are accepted independently, in either order or together; the write happens once
  both are held, and its response is then offered on B. One write is in flight at a time, and
  two reads: RDATA comes two cycles after the address (the address is decoded into registered
  word flags, then the data selected by them). Back-to-back transactions run at one per cycle
  when the manager keeps B and R ready (``awready``/``wready`` depend combinationally on
  ``bready``, ``arready`` on ``rready``; no ready depends on a valid).
- ``wstrb`` selects the bytes written; bytes not strobed keep their value (``rw``, ``wo``),
  do not pulse (``w1p``) and do not clear (``w1c``).
- The response is OKAY for every mapped word, including writes to read-only bits (ignored),
  and SLVERR for an address where no register word lives (the whole address is decoded, so
  aliases answer SLVERR too); an unmapped write changes nothing and an unmapped read returns 0.
- ``awprot``/``arprot`` are accepted and ignored; the low address bits below the word size
  are ignored (AXI4-Lite transfers are word aligned).
- A read of the first word of a register wider than the bus, which holds ``ro``/``w1c`` bits,
  latches its upper words; reads of the upper words return the latched value.

Hardware side, per field (``regs.fields[name]``, all named as in the map):

- ``rw``: output, the current value (reset value after reset);
- ``ro``: input, sampled when the register is read;
- ``w1p``: output strobe, a bit is high for exactly one cycle after a write of 1 to it;
- ``w1c``: input set strobe per bit; the sticky flag (reset value after reset) is what reads
  return; a write of 1 clears it unless the same bit is set in that cycle (set wins);
- ``wo``: output, the last written value (reads return 0).

Narrow storage (``storage={name: bits}``, for small devices): an ``rw`` field keeps only its
``bits`` low bits and one sticky bit that is set when a written value does not fit them; the
field (and reads) then show the low bits with every upper bit equal to the sticky bit. A value
below ``2**bits`` is kept exactly; a larger one reads back as at least ``2**width - 2**bits``,
so that a field sized for the largest legal value still reads above it after an illegal write
(the engine refuses it with the same error). ``bits`` 0 keeps only "nonzero".

``regs.written[name]`` (``rw`` and ``wo`` fields) is high for the one cycle in which a value
written by the bus (any byte of the field strobed) first appears on ``regs.fields[name]``.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.regmap import BYTE, RegisterMap
from rtl.streams import connect_flat, flat_members

__all__ = ["OKAY", "SLVERR", "AXI4LiteSignature", "FieldsSignature", "WrittenSignature",
           "AXI4LiteRegisters", "subordinate_signature"]

#: AXI response codes (BRESP/RRESP).
OKAY = 0b00
SLVERR = 0b10
RESP_WIDTH = 2
PROT_WIDTH = 3

class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite, seen from the manager: ``Out`` members are driven by the manager.

    A subordinate (register block) has the member ``In(AXI4LiteSignature(...))``.

    Parameters
    ----------
    addr_width : int
        Byte address bits, at least enough to address one word.
    data_width : int
        32 or 64.
    """

    def __init__(self, addr_width, data_width=32):
        if data_width not in (32, 64):
            raise ValueError(f"AXI4-Lite data_width must be 32 or 64, not {data_width!r}")
        min_addr = (data_width // BYTE - 1).bit_length()
        if not isinstance(addr_width, int) or addr_width < max(1, min_addr):
            raise ValueError(f"addr_width must be an integer >= {max(1, min_addr)}, "
                             f"not {addr_width!r}")
        self.addr_width = addr_width
        self.data_width = data_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(PROT_WIDTH),
            "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // BYTE),
            "wvalid": Out(1), "wready": In(1),
            "bresp": In(RESP_WIDTH), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(PROT_WIDTH),
            "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(RESP_WIDTH),
            "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (isinstance(other, AXI4LiteSignature) and other.addr_width == self.addr_width
                and other.data_width == self.data_width)

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width))

    def __repr__(self):
        return f"AXI4LiteSignature({self.addr_width}, {self.data_width})"


class _NamedInterface(wiring.PureInterface):
    """An interface whose members are also reachable as ``interface["name"]``."""

    def __getitem__(self, name):
        if name not in self.signature.members:
            raise KeyError(f"no field {name!r} here (fields: "
                           f"{', '.join(self.signature.members)})")
        return getattr(self, name)

    def __iter__(self):
        return iter(self.signature.members)

    def __len__(self):
        return len(self.signature.members)

    def keys(self):
        return self.signature.members.keys()

    def items(self):
        return [(name, getattr(self, name)) for name in self.signature.members]


class _NamedSignature(wiring.Signature):
    def create(self, *, path=None, src_loc_at=0):
        return _NamedInterface(self, path=path, src_loc_at=1 + src_loc_at)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(self.members)})"


class FieldsSignature(_NamedSignature):
    """The hardware side of every field of ``regmap``, seen from the register block:
    ``rw``/``w1p``/``wo`` fields are outputs, ``ro``/``w1c`` fields inputs."""

    def __init__(self, regmap):
        members = {}
        for field in regmap.fields:
            if field.access in ("rw", "wo", "w1p"):
                members[field.name] = Out(field.width, init=field.reset)
            else:
                members[field.name] = In(field.width)
        super().__init__(members)


class WrittenSignature(_NamedSignature):
    """One write strobe per ``rw``/``wo`` field of ``regmap`` (outputs of the register block)."""

    def __init__(self, regmap):
        super().__init__({f.name: Out(1) for f in regmap.fields if f.access in ("rw", "wo")})


def subordinate_signature(regmap, addr_width=None):
    """The bus signature of the register block for ``regmap``, as seen by the block itself
    (flipped: ``awaddr`` is an input)."""
    return AXI4LiteSignature(_addr_width(regmap, addr_width), regmap.data_width).flip()


def _addr_width(regmap, addr_width):
    if not isinstance(regmap, RegisterMap):
        raise ValueError(f"regmap must be a RegisterMap, not {regmap!r}")
    if addr_width is None:
        return regmap.addr_width
    if not isinstance(addr_width, int) or addr_width < regmap.addr_width:
        last = regmap.registers[-1].word_offsets[-1]
        raise ValueError(f"addr_width must be an integer >= {regmap.addr_width} (map "
                         f"{regmap.name!r} has a register word at {last:#x}), "
                         f"not {addr_width!r}")
    return addr_width


class AXI4LiteRegisters(wiring.Component):
    """AXI4-Lite subordinate holding the registers of ``regmap`` (module documentation above).

    Parameters
    ----------
    regmap : RegisterMap
    addr_width : int, optional
        Byte address bits of the bus; default ``regmap.addr_width``, the fewest that reach every
        register. Wider buses decode the extra bits (addresses beyond the map answer SLVERR).
    storage : dict, optional
        ``{field name: bits}``: narrow storage of ``rw`` fields (module docstring); ``bits`` is
        0 up to the field's width minus 1 and must hold the field's reset value. Default: every
        field stored whole.

    Members
    -------
    bus : ``In(AXI4LiteSignature(addr_width, regmap.data_width))``
    fields : ``Out(FieldsSignature(regmap))``; ``regs.fields["name"]`` or ``regs.fields.name``.
    written : ``Out(WrittenSignature(regmap))``; write strobes of ``rw``/``wo`` fields.
    """

    def __init__(self, regmap, *, addr_width=None, storage=None):
        addr_width = _addr_width(regmap, addr_width)
        self.regmap = regmap
        self.storage = _check_storage(regmap, storage)
        super().__init__({
            "bus": In(AXI4LiteSignature(addr_width, regmap.data_width)),
            "fields": Out(FieldsSignature(regmap)),
            "written": Out(WrittenSignature(regmap)),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        regmap = self.regmap
        dw = regmap.data_width
        lanes = dw // BYTE
        word_shift = (lanes - 1).bit_length()

        # Hardware state behind each field, and what reads return for it.
        state, readback = {}, {}
        narrow = {}                                       # field name: (low bits, sticky bit)
        for field in regmap.fields:
            port = self.fields[field.name]
            if field.name in self.storage:
                # The next value of a narrow field (written bytes over the current value),
                # stored as its low bits and whether any upper bit is set.
                bits = self.storage[field.name]
                nxt = Signal(field.width, name=f"{field.name}_next")
                low = Signal(bits, init=field.reset, name=f"{field.name}_low")
                over = Signal(name=f"{field.name}_over")
                m.d.comb += [nxt.eq(port), port.eq(Cat(low, over.replicate(field.width - bits)))]
                m.d.sync += [low.eq(nxt[:bits]), over.eq(nxt[bits:].any())]
                state[field.name] = nxt
                narrow[field.name] = (low, over)
            elif field.access in ("rw", "wo", "w1p"):
                state[field.name] = port                  # driven by this block's sync domain
            elif field.access == "w1c":
                state[field.name] = Signal(field.width, init=field.reset, name=f"{field.name}_q")
            if field.access in ("rw", "ro"):
                readback[field.name] = port
            elif field.access == "w1c":
                readback[field.name] = state[field.name]
            if field.access == "w1p":
                m.d.sync += port.eq(0)                    # pulses last one cycle
            if field.name in self.written.signature.members:
                m.d.sync += self.written[field.name].eq(0)

        # --- write channel: hold AW and W independently, commit when both are held --------
        aw_full = Signal()
        aw_addr = Signal.like(bus.awaddr, name="aw_addr")
        w_full = Signal()
        w_data = Signal.like(bus.wdata, name="w_data")
        w_strb = Signal.like(bus.wstrb, name="w_strb")
        commit = Signal()
        m.d.comb += [
            commit.eq(aw_full & w_full & (~bus.bvalid | bus.bready)),
            bus.awready.eq(~aw_full | commit),
            bus.wready.eq(~w_full | commit),
        ]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        with m.If(commit):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bus.bvalid.eq(1)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]

        w_word = aw_addr[word_shift:]
        w_hit_any = Signal()
        clears = {f.name: Signal(f.width, name=f"{f.name}_clr")
                  for f in regmap.fields if f.access == "w1c"}
        hits = []
        for reg in regmap.registers:
            for index, offset in enumerate(reg.word_offsets):
                hit = Signal(name=f"w_hit_{reg.name}_{index}")
                m.d.comb += hit.eq(commit & (w_word == offset >> word_shift))
                hits.append(hit)
                lo_word = index * dw
                for field in reg.fields:
                    if field.access == "ro":
                        continue
                    touched = []
                    for lane in range(lanes):
                        lo = max(field.lsb, lo_word + lane * BYTE)
                        hi = min(field.msb + 1, lo_word + (lane + 1) * BYTE)
                        if lo >= hi:
                            continue
                        strobe = w_strb[lane]
                        touched.append(strobe)
                        dst = slice(lo - field.lsb, hi - field.lsb)
                        src = w_data[lo - lo_word:hi - lo_word]
                        if field.access == "w1c":
                            m.d.comb += clears[field.name][dst].eq(
                                Cat(*[strobe & hit] * (hi - lo)) & src)
                            continue
                        domain = m.d.comb if field.name in narrow else m.d.sync
                        with m.If(hit & strobe):
                            domain += state[field.name][dst].eq(src)
                    if touched and field.name in self.written.signature.members:
                        with m.If(hit & Cat(*touched).any()):
                            m.d.sync += self.written[field.name].eq(1)
        m.d.comb += w_hit_any.eq(Cat(*hits).any())
        with m.If(commit):
            m.d.sync += bus.bresp.eq(OKAY)
            with m.If(~w_hit_any):
                m.d.sync += bus.bresp.eq(SLVERR)
        for field in regmap.fields:
            if field.access == "w1c":
                q = state[field.name]
                m.d.sync += q.eq((q & ~clears[field.name]) | self.fields[field.name])

        # --- read channel: a two-stage pipeline. The address is decoded into one registered
        # flag per word, then the data selected by the flags and registered (no path from
        # ARADDR to RDATA, and no address decoding before the data's selection).
        accept = Signal()
        pending = Signal()                              # an address is held for stage 2
        r_free = Signal()                               # stage 2 takes the held address
        m.d.comb += [
            r_free.eq(~bus.rvalid | bus.rready),
            bus.arready.eq(~pending | r_free),
            accept.eq(bus.arvalid & bus.arready),
        ]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        a_word = bus.araddr[word_shift:]
        words, r_hits = [], []
        for reg in regmap.registers:
            value = _assemble(reg, readback)
            latch = None
            if reg.latched:
                latch = Signal((reg.words - 1) * dw, name=f"{reg.name}_latch")
            for index, offset in enumerate(reg.word_offsets):
                hit = Signal(name=f"r_hit_{reg.name}_{index}")
                with m.If(accept):
                    m.d.sync += hit.eq(a_word == offset >> word_shift)
                r_hits.append(hit)
                if value is None:
                    word = None
                elif latch is None:
                    word = value[index * dw:(index + 1) * dw]
                elif index == 0:
                    word = value[:dw]
                    with m.If(pending & r_free & hit):
                        m.d.sync += latch.eq(value[dw:])
                else:
                    word = latch[(index - 1) * dw:index * dw]
                if word is not None:
                    words.append(hit.replicate(dw) & word)
        with m.If(pending & r_free):
            m.d.sync += [
                pending.eq(0),
                bus.rvalid.eq(1),
                bus.rdata.eq(_or_all(words, dw)),
                bus.rresp.eq(OKAY),
            ]
            with m.If(~Cat(*r_hits).any()):
                m.d.sync += bus.rresp.eq(SLVERR)
        with m.If(accept):
            m.d.sync += pending.eq(1)
        return m


def _check_storage(regmap, storage) -> dict:
    """``storage`` checked against ``regmap`` (see :class:`AXI4LiteRegisters`)."""
    if storage is None:
        return {}
    if not isinstance(storage, dict):
        raise TypeError(f"storage must be a dict of field name: bits, not {storage!r}")
    fields = {f.name: f for f in regmap.fields}
    out = {}
    for name, bits in storage.items():
        field = fields.get(name)
        if field is None or field.access != "rw":
            raise ValueError(f"storage: {name!r} is not an rw field of {regmap.name}")
        if not isinstance(bits, int) or isinstance(bits, bool) or not 0 <= bits < field.width:
            raise ValueError(f"storage: field {name!r} keeps 0..{field.width - 1} bits, "
                             f"not {bits!r}")
        if field.reset >> bits:
            raise ValueError(f"storage: field {name!r} in {bits} bits cannot hold its reset "
                             f"value {field.reset}")
        out[name] = bits
    return out


def _assemble(reg, readback):
    """The value reads of ``reg`` return (unreadable bits 0), or None if it has no readable bit."""
    parts, position = [], 0
    for field in sorted(reg.fields, key=lambda f: f.lsb):
        if field.name not in readback:
            continue
        if field.lsb > position:
            parts.append(Const(0, field.lsb - position))
        parts.append(readback[field.name])
        position = field.msb + 1
    if not parts:
        return None
    total = reg.words * reg.data_width
    if position < total:
        parts.append(Const(0, total - position))
    return Cat(*parts)


def _or_all(values, width):
    result = Const(0, width)
    for value in values:
        result = result | value
    return result
