"""The AXI4-Lite register block (rtl/axil_regs.py) on Icarus and Verilator, and in Amaranth's
simulator.

pytest builds a harness around an example register map and runs the cocotb tests of this
module on both simulators; cocotbext-axi's AxiLiteMaster and RegisterDriver talk to it, and a
bit-level model (:class:`Model`) predicts every read. A second part drives the bus pins directly
for what the master cannot do: arbitrary ``wstrb`` and AW/W in either order. Verilator lints
the block alone.

In Amaranth's own simulator: constructor checks, the hardware-side interface, a 64-bit bus
(the cocotb tests cover a 32-bit bus) and narrowed register storage.
"""

import gc
import random
import re

import cocotb
import pytest
from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from rtl import axil_regs
from rtl.axil_regs import (OKAY, SLVERR, AXI4LiteRegisters, AXI4LiteSignature, FieldsSignature,
                           subordinate_signature)
from rtl.regmap import Field, Register, RegisterDriver, RegisterMap
from rtl.streams import connect_flat, flat_members
from sim import runner, toolchain
from sim.verilog_export import lint, write_waivers
from tb.testing import axi_read, axi_write

CLOCK_NS = 10
#: Clock period of the Amaranth-simulator tests.
CLOCK_PERIOD_S = 1e-8
#: Any test taking longer is hung (each needs a few microseconds of simulated time).
TIMEOUT_US = 200
TOPLEVEL = "axil_regs_harness"
PREFIX = "s_axil"
ID_VALUE = 0xC0C0_0001
#: The free-running 64-bit counter starts just below 2**32 so its low word wraps during a test.
CYCLES_INIT = (1 << 32) - 100
#: The harness bus decodes one address bit more than the map needs: that half is unmapped.
EXTRA_ADDR_BITS = 1


def example_map():
    """A register map exercising every access kind, gaps, enums and multi-word registers."""
    return RegisterMap("example", [
        Register("ID", 0x00, [Field("ident", 32, "ro", reset=ID_VALUE, doc="Constant")]),
        Register("CTRL", 0x04, [
            Field("start", 1, "w1p", doc="Start"),
            Field("flush", 1, "w1p", doc="Flush"),
            Field("kick", 4, "pulse", lsb=12, doc="Pulses across a byte boundary"),
        ]),
        Register("CONFIG", 0x08, [
            Field("stride_h", 4, "rw", reset=1),
            Field("stride_w", 4, "rw", reset=1),
            Field("mode", 2, "rw", enum={"INT8": 0, "UINT8": 1, "RAW": 2}),
            Field("relu", 1, "rw", lsb=11),
            Field("zero_point", 8, "rw", reset=0x80, lsb=14, doc="Straddles two bytes"),
            Field("top", 2, "rw", reset=2, lsb=30),
        ], doc="Layer configuration"),
        Register("STATUS", 0x0C, [
            Field("busy", 1, "ro", doc="Driven by the testbench"),
            Field("error", 4, "ro", lsb=4, doc="Driven by the testbench"),
            Field("echo", 8, "ro", lsb=8, doc="~zero_point"),
            Field("start_cycles", 16, "ro", lsb=16, doc="Cycles with start high"),
        ]),
        Register("FLAGS", 0x10, [Field("done", 1, "w1c"), Field("overflow", 3, "w1c", lsb=8)]),
        Register("PUSH", 0x14, [Field("push_data", 32, "wo", doc="FIFO push")]),
        Register("BASE", 0x20, [Field("base", 40, "rw", reset=0x12_3456_789A, doc="Two words")]),
        Register("CYCLES", 0x28, [Field("cycles", 64, "ro", doc="Free-running counter")]),
    ], doc="Example map of the register block's testbench")


EXAMPLE = example_map()


class Harness(wiring.Component):
    """The register block with flat ``s_axil_*`` ports; ``rw``/``wo``/``w1p`` fields and write
    strobes (``written_NAME``) on output ports, ``busy``/``error`` and the ``w1c`` set strobes
    (``set_NAME``) on inputs, and ``ident``, ``echo``, ``start_cycles`` and ``cycles`` driven by
    hardware so that reads are checkable."""

    def __init__(self, regmap):
        self.regmap = regmap
        self.addr_width = regmap.addr_width + EXTRA_ADDR_BITS
        bus = axil_regs.subordinate_signature(regmap, self.addr_width)
        members = flat_members(bus, PREFIX)
        for field in regmap.fields:
            if field.access in ("rw", "wo", "w1p"):
                members[field.name] = Out(field.width)
            if field.access in ("rw", "wo"):
                members[f"written_{field.name}"] = Out(1)
            if field.access == "w1c":
                members[f"set_{field.name}"] = In(field.width)
        members["busy"] = In(1)
        members["error"] = In(4)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.regs = regs = axil_regs.AXI4LiteRegisters(self.regmap,
                                                               addr_width=self.addr_width)
        connect_flat(m, self, regs.bus, PREFIX)
        for field in self.regmap.fields:
            if field.access in ("rw", "wo", "w1p"):
                m.d.comb += getattr(self, field.name).eq(regs.fields[field.name])
            if field.access in ("rw", "wo"):
                m.d.comb += getattr(self, f"written_{field.name}").eq(regs.written[field.name])
            if field.access == "w1c":
                m.d.comb += regs.fields[field.name].eq(getattr(self, f"set_{field.name}"))
        cycles = Signal(64, init=CYCLES_INIT)
        start_cycles = Signal(16)
        m.d.sync += cycles.eq(cycles + 1)
        with m.If(regs.fields["start"]):
            m.d.sync += start_cycles.eq(start_cycles + 1)
        m.d.comb += [
            regs.fields["ident"].eq(Const(ID_VALUE, 32)),
            regs.fields["busy"].eq(self.busy),
            regs.fields["error"].eq(self.error),
            regs.fields["echo"].eq(~regs.fields["zero_point"]),
            regs.fields["start_cycles"].eq(start_cycles),
            regs.fields["cycles"].eq(cycles),
        ]
        return m


# --- the model: what every register reads, given what was written -----------------------

class Model:
    """Software image of the harness registers (``ro`` fields come from the DUT's pins)."""

    def __init__(self, regmap):
        self.regmap = regmap
        self.values = {f.name: f.reset for f in regmap.fields if f.access in ("rw", "w1c")}

    def write(self, address, data, strb):
        """Apply a word write with byte strobes ``strb``; False if the address is unmapped."""
        found = self.regmap.register_at(address & ~(self.regmap.word_bytes - 1))
        if found is None:
            return False
        reg, index = found
        dw = self.regmap.data_width
        lanes = range(dw // 8)
        bits = sum(0xFF << (8 * lane) for lane in lanes if strb >> lane & 1) << (index * dw)
        data <<= index * dw
        for field in reg.fields:
            fbits = (bits & field.mask) >> field.lsb
            fdata = (data & field.mask) >> field.lsb
            if field.access == "rw":
                self.values[field.name] = (self.values[field.name] & ~fbits) | (fdata & fbits)
            elif field.access == "w1c":
                self.values[field.name] &= ~(fbits & fdata)
        return True

    def expect(self, reg, hw):
        """The register value of ``reg``, with ``ro`` fields from the dict ``hw``."""
        value = 0
        for field in reg.fields:
            if field.access in ("rw", "w1c"):
                value |= self.values[field.name] << field.lsb
            elif field.access == "ro":
                value |= hw[field.name] << field.lsb
        return value


#: Probability that a master channel pauses (valid or ready low) in a cycle, when pausing.
PAUSE_PROBABILITY = 0.4


def random_pauses(seed):
    rng = random.Random(seed)
    while True:
        yield rng.random() < PAUSE_PROBABILITY


class TB:
    def __init__(self, dut, *, pauses=False, master=True):
        self.dut = dut
        self.regmap = EXAMPLE
        self.model = Model(EXAMPLE)
        self.word_bytes = EXAMPLE.word_bytes
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        dut.busy.value = 0
        dut.error.value = 0
        for field in EXAMPLE.fields:
            if field.access == "w1c":
                getattr(dut, f"set_{field.name}").value = 0
        if not master:             # the test drives the bus pins itself
            return
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, PREFIX), dut.clk, dut.rst)
        self.drv = RegisterDriver(EXAMPLE, self.write_word, self.read_word)
        if pauses:
            for seed, channel in enumerate((
                    self.axil.write_if.aw_channel, self.axil.write_if.w_channel,
                    self.axil.write_if.b_channel, self.axil.read_if.ar_channel,
                    self.axil.read_if.r_channel)):
                channel.set_pause_generator(random_pauses(seed))

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def write_word(self, address, word):
        resp = await self.axil.write(address, word.to_bytes(self.word_bytes, "little"))
        assert resp.resp == AxiResp.OKAY, f"write {word:#x} to {address:#x}: {resp.resp!r}"

    async def read_word(self, address):
        resp = await self.axil.read(address, self.word_bytes)
        assert resp.resp == AxiResp.OKAY, f"read at {address:#x}: {resp.resp!r}"
        return int.from_bytes(resp.data, "little")

    def hw(self):
        """Current values of the ``ro`` fields the harness drives from pins or constants."""
        zero_point = self.model.values["zero_point"]
        return {"ident": ID_VALUE, "busy": int(self.dut.busy.value),
                "error": int(self.dut.error.value),
                "echo": ~zero_point & 0xFF, "start_cycles": 0, "cycles": 0}

    async def check_all(self, *, skip=("STATUS", "CYCLES")):
        """Every register reads as the model says, and every rw field pin shows its value."""
        hw = self.hw()
        for reg in self.regmap.registers:
            if reg.name in skip:
                continue
            got = await self.drv.read(reg)
            want = self.model.expect(reg, hw)
            assert got == want, f"{reg.name}: read {got:#x}, model {want:#x}"
        self.check_pins()

    def check_pins(self):
        """Every rw field's pin shows the model's value."""
        for name, value in self.model.values.items():
            if self.regmap.field(name).access == "rw":
                pin = int(getattr(self.dut, name).value)
                assert pin == value, f"pin {name} = {pin:#x}, model {value:#x}"


class PulseMonitor:
    """Counts cycles in which each strobe pin is high, and records values at write strobes."""

    def __init__(self, dut, names):
        self.dut = dut
        self.high = {name: 0 for name in names}
        self.stretched = []
        self.pushed = []
        cocotb.start_soon(self._run())

    async def _run(self):
        previous = dict.fromkeys(self.high, 0)
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            for name in self.high:
                value = int(getattr(self.dut, name).value)
                self.high[name] += bin(value).count("1")
                if value & previous[name]:
                    self.stretched.append(name)
                previous[name] = value
            if int(self.dut.written_push_data.value):
                self.pushed.append(int(self.dut.push_data.value))


# --- tests through AxiLiteMaster ---------------------------------------------------------

@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def reset_values(dut):
    """After reset every field holds its reset value, on the bus and on the pins."""
    tb = TB(dut)
    await tb.reset()
    for name in ("start", "flush", "kick", "push_data") + tuple(
            f"written_{f.name}" for f in EXAMPLE.fields if f.access in ("rw", "wo")):
        assert int(getattr(dut, name).value) == 0, f"{name} is active after reset"
    first = await tb.drv.read("CYCLES")
    assert CYCLES_INIT < first < CYCLES_INIT + 50, f"cycles {first:#x} after reset"
    await tb.check_all(skip=("CYCLES",))  # STATUS.start_cycles is 0 until a start
    assert await tb.drv.read_field("CONFIG", "stride_h") == 1
    assert await tb.drv.read_fields("CONFIG", names=True) == {
        "stride_h": 1, "stride_w": 1, "mode": "INT8", "relu": 0, "zero_point": 0x80, "top": 2}


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
@cocotb.parametrize(pauses=[False, True])
async def random_writes(dut, pauses):
    """Random words with random contiguous byte strobes; every register still reads as the
    model says (with random stalls on all five channels when ``pauses``)."""
    tb = TB(dut, pauses=pauses)
    await tb.reset()
    rng = random.Random(7 + pauses)
    writable = [(reg, i) for reg in EXAMPLE.registers for i in range(reg.words)
                if any(f.access in ("rw", "w1c") for f in reg.fields)]
    for step in range(60):
        reg, index = rng.choice(writable)
        address = reg.word_offsets[index]
        first = rng.randrange(tb.word_bytes)
        length = rng.randint(1, tb.word_bytes - first)
        data = rng.randbytes(length)
        resp = await tb.axil.write(address + first, data)
        assert resp.resp == AxiResp.OKAY, f"step {step}: {resp.resp!r}"
        word = int.from_bytes(bytes(first) + data + bytes(tb.word_bytes - first - length),
                              "little")
        strb = ((1 << length) - 1) << first
        tb.model.write(address, word, strb)
        dut.busy.value = rng.getrandbits(1)
        dut.error.value = rng.getrandbits(4)
        got = await tb.drv.read(reg)
        want = tb.model.expect(reg, tb.hw())
        assert got == want, f"step {step}: {reg.name} reads {got:#x}, model {want:#x}"
    await tb.check_all()
    status = await tb.drv.read_fields("STATUS")
    assert status["busy"] == int(dut.busy.value) and status["error"] == int(dut.error.value)
    assert status["echo"] == ~tb.model.values["zero_point"] & 0xFF


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def driver_fields(dut):
    """RegisterDriver: write_fields resets the fields not given, modify_fields keeps them,
    enum names work, and the rw pins follow."""
    tb = TB(dut)
    await tb.reset()
    await tb.drv.write_fields("CONFIG", stride_h=3, mode="UINT8", zero_point=0x12)
    assert await tb.drv.read_fields("CONFIG", names=True) == {
        "stride_h": 3, "stride_w": 1, "mode": "UINT8", "relu": 0, "zero_point": 0x12, "top": 2}
    await tb.drv.modify_fields("CONFIG", stride_w=5, relu=1)
    assert await tb.drv.read_fields("CONFIG") == {
        "stride_h": 3, "stride_w": 5, "mode": 1, "relu": 1, "zero_point": 0x12, "top": 2}
    assert (int(dut.stride_h.value), int(dut.stride_w.value), int(dut.mode.value),
            int(dut.relu.value), int(dut.zero_point.value)) == (3, 5, 1, 1, 0x12)
    assert await tb.drv.read_field("STATUS", "echo") == 0xED
    await tb.drv.write_fields("BASE", base=0xAB_CDEF_0123)
    assert int(dut.base.value) == 0xAB_CDEF_0123
    assert await tb.drv.read_field("BASE", "base") == 0xAB_CDEF_0123


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def pulses_last_one_cycle(dut):
    """w1p bits pulse for exactly one cycle per write of 1, never for 0 or unstrobed bytes."""
    tb = TB(dut)
    await tb.reset()
    mon = PulseMonitor(dut, ("start", "flush", "kick"))
    starts = 5
    for _ in range(starts):
        await tb.drv.pulse("start")
    await tb.drv.write_fields("CTRL", flush=1, kick=0b1010)
    await tb.drv.write_fields("CTRL")                            # all zero: nothing pulses
    await tb.axil.write(0x04, bytes([0b11]))                     # byte 0 only: start, flush
    await tb.axil.write(0x05, bytes([0xFF]))                     # byte 1: kick[3:0] = bits 15:12
    await tb.axil.write(0x06, bytes([0xFF, 0xFF]))               # bytes 2, 3: nothing there
    await ClockCycles(dut.clk, 2)
    assert mon.stretched == [], f"pulses longer than one cycle: {mon.stretched}"
    assert mon.high == {"start": starts + 1, "flush": 2, "kick": 2 + 4}, mon.high
    assert await tb.drv.read("CTRL") == 0, "w1p fields must read 0"
    assert await tb.drv.read_field("STATUS", "start_cycles") == starts + 1


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def write_strobes_and_wo(dut):
    """Back-to-back writes to a wo field each appear once, in order, with their strobe."""
    tb = TB(dut)
    await tb.reset()
    mon = PulseMonitor(dut, ("written_stride_h",))
    values = [random.Random(3).getrandbits(32) for _ in range(8)]
    values = [v ^ i for i, v in enumerate(values)]
    tasks = [cocotb.start_soon(tb.axil.write(EXAMPLE["PUSH"].offset, v.to_bytes(4, "little")))
             for v in values]
    for task in tasks:
        assert (await task).resp == AxiResp.OKAY
    await ClockCycles(dut.clk, 2)
    assert mon.pushed == values, f"pushed {mon.pushed}, wrote {values}"
    assert await tb.drv.read("PUSH") == 0, "wo fields must read 0"
    await tb.drv.write_fields("CONFIG", stride_h=4)
    await tb.axil.write(EXAMPLE["CONFIG"].offset + 3, bytes([0]))   # byte 3: not stride_h
    await ClockCycles(dut.clk, 2)
    assert mon.high["written_stride_h"] == 1, mon.high
    assert mon.stretched == [], mon.stretched


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def sticky_flags(dut):
    """w1c: set by hardware, kept until written 1, and a set in the clearing cycle wins."""
    tb = TB(dut)
    await tb.reset()
    dut.set_done.value = 1
    dut.set_overflow.value = 0b101
    await RisingEdge(dut.clk)
    dut.set_done.value = 0
    dut.set_overflow.value = 0
    await ClockCycles(dut.clk, 3)
    assert await tb.drv.read_fields("FLAGS") == {"done": 1, "overflow": 0b101}
    await tb.drv.write_fields("FLAGS", overflow=0b100)
    assert await tb.drv.read_fields("FLAGS") == {"done": 1, "overflow": 0b001}
    await tb.drv.write_fields("FLAGS", overflow=0b010)            # not set: no effect
    assert await tb.drv.read_fields("FLAGS") == {"done": 1, "overflow": 0b001}
    dut.set_done.value = 1                                        # held through the clear
    await tb.drv.write_fields("FLAGS", done=1, overflow=0b111)
    dut.set_done.value = 0
    assert await tb.drv.read_fields("FLAGS") == {"done": 1, "overflow": 0}
    await tb.drv.write_fields("FLAGS", done=1)
    assert await tb.drv.read_fields("FLAGS") == {"done": 0, "overflow": 0}


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def unmapped_addresses(dut):
    """Unmapped words answer SLVERR, read 0 and change nothing."""
    tb = TB(dut)
    await tb.reset()
    await tb.drv.write_fields("CONFIG", stride_h=7, zero_point=0x33)
    tb.model.values.update(stride_h=7, stride_w=1, zero_point=0x33, mode=0, relu=0, top=2)
    mapped = {o for reg in EXAMPLE.registers for o in reg.word_offsets}
    top = 1 << (EXAMPLE.addr_width + EXTRA_ADDR_BITS)
    holes = [a for a in range(0, top, tb.word_bytes) if a not in mapped]
    assert 0x18 in holes and top - tb.word_bytes in holes
    for address in holes:
        resp = await tb.axil.write(address, bytes([0xFF] * tb.word_bytes))
        assert resp.resp == AxiResp.SLVERR, f"write {address:#x}: {resp.resp!r}"
        resp = await tb.axil.read(address, tb.word_bytes)
        assert resp.resp == AxiResp.SLVERR, f"read {address:#x}: {resp.resp!r}"
        assert resp.data == bytes(tb.word_bytes), f"read {address:#x}: {resp.data!r}"
    await tb.check_all()


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def wide_counter_latches(dut):
    """Reading CYCLES LO latches HI: HI reads the latched word even after LO wraps, and
    driver reads (LO then HI) stay consistent and increasing across the wrap."""
    tb = TB(dut)
    await tb.reset()
    lo_address, hi_address = EXAMPLE["CYCLES"].word_offsets
    lo = await tb.read_word(lo_address)
    assert CYCLES_INIT <= lo < 1 << 32, f"LO {lo:#x} soon after reset"
    await ClockCycles(dut.clk, (1 << 32) - lo + 10)            # the counter passes 2**32
    assert await tb.read_word(hi_address) == 0, "HI must be the word latched with LO"
    assert await tb.read_word(hi_address) == 0, "HI must stay latched until LO is read"
    lo = await tb.read_word(lo_address)
    assert lo < 100, f"LO {lo:#x} after the wrap"
    assert await tb.read_word(hi_address) == 1, "HI latched after the wrap"
    previous = await tb.drv.read("CYCLES")
    for _ in range(10):
        value = await tb.drv.read("CYCLES")
        assert previous < value < previous + 50, f"cycles {value:#x} after {previous:#x}"
        previous = value


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def back_to_back(dut):
    """Queued writes, then queued reads, complete at about one per cycle, all correct."""
    tb = TB(dut)
    await tb.reset()
    count = 32
    reg = EXAMPLE["CONFIG"]
    start = cocotb.utils.get_sim_time(unit="ns")
    words = [random.Random(5 + i).getrandbits(32) for i in range(count)]
    writes = [cocotb.start_soon(tb.axil.write(reg.offset, word.to_bytes(4, "little")))
              for word in words]
    for task in writes:                      # reads may overtake writes: AXI orders neither
        assert (await task).resp == AxiResp.OKAY
    reads = [cocotb.start_soon(tb.axil.read(reg.offset, 4)) for _ in range(count)]
    results = [await task for task in reads]
    cycles = (cocotb.utils.get_sim_time(unit="ns") - start) / CLOCK_NS
    for word in words:
        tb.model.write(reg.offset, word, 0xF)
    want = tb.model.expect(reg, tb.hw())
    for resp in results:
        assert resp.resp == AxiResp.OKAY
        assert int.from_bytes(resp.data, "little") == want
    assert cycles <= 2 * count + 10, f"{2 * count} transactions took {cycles} cycles"
    await tb.check_all()


# --- tests on the bare pins: arbitrary wstrb, AW and W in either order ---------------------

class PinBus:
    """Drives the AXI4-Lite pins directly, one transaction at a time."""

    def __init__(self, dut):
        self.dut = dut
        for name in ("awvalid", "wvalid", "arvalid", "bready", "rready", "awprot", "arprot",
                     "awaddr", "araddr", "wdata", "wstrb"):
            self.pin(name).value = 0

    def pin(self, name):
        return getattr(self.dut, f"{PREFIX}_{name}")

    async def _handshake(self, channel, values, delay):
        await ClockCycles(self.dut.clk, delay)
        await FallingEdge(self.dut.clk)
        for name, value in values.items():
            self.pin(name).value = value
        self.pin(f"{channel}valid").value = 1
        while True:
            await ReadOnly()
            ready = int(self.pin(f"{channel}ready").value)
            await RisingEdge(self.dut.clk)
            if ready:
                break
        await FallingEdge(self.dut.clk)
        self.pin(f"{channel}valid").value = 0

    async def _response(self, channel):
        self.pin(f"{channel}ready").value = 1
        while True:
            await ReadOnly()
            valid = int(self.pin(f"{channel}valid").value)
            if valid:
                resp = int(self.pin(f"{channel}resp").value)
                data = int(self.pin("rdata").value) if channel == "r" else None
            await RisingEdge(self.dut.clk)
            if valid:
                break
        await FallingEdge(self.dut.clk)
        self.pin(f"{channel}ready").value = 0
        return resp, data

    async def write(self, address, data, strb, aw_delay=0, w_delay=0):
        aw = cocotb.start_soon(self._handshake("aw", {"awaddr": address}, aw_delay))
        w = cocotb.start_soon(self._handshake("w", {"wdata": data, "wstrb": strb}, w_delay))
        resp, _ = await self._response("b")
        assert aw.done() and w.done(), "a write response came before both AW and W"
        return resp

    async def read(self, address):
        await self._handshake("ar", {"araddr": address}, 0)
        return await self._response("r")


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
@cocotb.parametrize(order=["aw_first", "w_first", "together"])
async def pins_any_order_any_strobe(dut, order):
    """Every wstrb pattern (holes included) with AW before, after or with W."""
    tb = TB(dut, master=False)
    pins = PinBus(dut)
    await tb.reset()
    delays = {"aw_first": (0, 3), "w_first": (3, 0), "together": (0, 0)}[order]
    rng = random.Random(order)
    reg = EXAMPLE["CONFIG"]
    for strb in range(1 << tb.word_bytes):
        word = rng.getrandbits(32)
        resp = await pins.write(reg.offset, word, strb, *delays)
        assert resp == axil_regs.OKAY, f"wstrb {strb:#06b}: resp {resp}"
        tb.model.write(reg.offset, word, strb)
        resp, data = await pins.read(reg.offset)
        want = tb.model.expect(reg, tb.hw())
        assert (resp, data) == (axil_regs.OKAY, want), \
            f"wstrb {strb:#06b}: read {data:#x} resp {resp}, model {want:#x}"
    resp = await pins.write(0x18, 0, 0xF, *delays)
    assert resp == axil_regs.SLVERR, f"unmapped write: resp {resp}"
    tb.check_pins()


# --- pytest: build once per simulator, run the cocotb tests above ---------------------------

@pytest.mark.parametrize("sim", toolchain.SIMULATORS)
def test_axil_regs(sim):
    # One Verilog folder per simulator: parallel workers never rewrite each other's source.
    key = runner.config_key(TOPLEVEL, {"extra_addr_bits": EXTRA_ADDR_BITS, "sim": sim})
    source = runner.emit_verilog(Harness(EXAMPLE), toplevel=TOPLEVEL, key=key)
    runner.run_cocotb(sim, sources=[source], toplevel=TOPLEVEL, key=key,
                      test_module="tb.test_axil_regs")


def wide_bus_map():
    """A map on a 64-bit bus (registers of up to 128 bits)."""
    return RegisterMap("wide", [
        Register("CTRL", 0x00, [Field("go", 1, "w1p"), Field("mode", 3, "rw", reset=5, lsb=40)]),
        Register("STAT", 0x08, [Field("count", 100, "ro"), Field("err", 2, "w1c", lsb=110)]),
        Register("DATA", 0x18, [Field("data", 64, "wo")]),
    ], data_width=64)


@pytest.mark.parametrize("make_map", [example_map, wide_bus_map])
def test_lint(make_map):
    """``verilator --lint-only -Wall`` on the register block alone is clean under the
    project's waivers for Amaranth's Verilog (:data:`sim.verilog_export.WAIVERS`)."""
    regmap = make_map()
    toplevel = f"axil_regs_{regmap.name}"
    source = runner.emit_verilog(axil_regs.AXI4LiteRegisters(regmap), toplevel=toplevel,
                                 key=runner.config_key(toplevel, {}))
    messages = lint(source, toplevel, write_waivers(source.parent / "lint_waivers.vlt"))
    assert not messages, "\n".join(messages)


# --- Amaranth's simulator ------------------------------------------------------------------

# Components built only to inspect or to fail are never elaborated.
unused_ok = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@unused_ok
def test_constructor_checks():
    regmap = wide_bus_map()
    with pytest.raises(ValueError, match=re.escape(
            "addr_width must be an integer >= 5 (map 'wide' has a register word at 0x18), "
            "not 4")):
        AXI4LiteRegisters(regmap, addr_width=4)
    with pytest.raises(ValueError, match="^regmap must be a RegisterMap, not 3$"):
        AXI4LiteRegisters(3)
    with pytest.raises(ValueError, match="^AXI4-Lite data_width must be 32 or 64, not 16$"):
        AXI4LiteSignature(8, 16)
    with pytest.raises(ValueError, match="^addr_width must be an integer >= 3, not 2$"):
        AXI4LiteSignature(2, 64)
    gc.collect()            # the half-built components warn now, under this test's filter


def test_interface():
    regs = AXI4LiteRegisters(wide_bus_map(), addr_width=8)
    regs._MustUse__silence = True                               # inspected, not elaborated
    assert regs.bus.signature == AXI4LiteSignature(8, 64).flip()
    assert subordinate_signature(wide_bus_map()) == AXI4LiteSignature(5, 64).flip()
    assert len(regs.bus.awaddr) == 8 and len(regs.bus.wstrb) == 8
    assert regs.fields["mode"] is regs.fields.mode and len(regs.fields["count"]) == 100
    assert list(regs.fields) == ["go", "mode", "count", "err", "data"]
    assert list(regs.written) == ["mode", "data"]
    members = FieldsSignature(wide_bus_map()).members
    assert [(name, members[name].flow) for name in members] == [
        ("go", wiring.Out), ("mode", wiring.Out), ("count", wiring.In), ("err", wiring.In),
        ("data", wiring.Out)]
    assert members["mode"].init == 5
    with pytest.raises(KeyError, match="no field 'nope' here"):
        regs.fields["nope"]


def test_64_bit_bus():
    regs = AXI4LiteRegisters(wide_bus_map(), addr_width=6)      # 0x20..0x3f unmapped
    bus = regs.bus
    seen = {"go": 0, "data": []}

    async def testbench(ctx):
        assert ctx.get(regs.fields.mode) == 5
        assert await axi_read(ctx, bus, 0x00) == (5 << 40, OKAY)
        # a byte strobe that reaches mode (byte 5) but not go (byte 0)
        assert await axi_write(ctx, bus, 0x00, (2 << 40) | 1, 0b0010_0000) == OKAY
        assert ctx.get(regs.fields.mode) == 2 and seen["go"] == 0
        assert await axi_write(ctx, bus, 0x00, 1, 0b0000_0001) == OKAY
        await ctx.tick()
        assert seen["go"] == 1
        # 100-bit ro register: reading word 0 latches word 1
        value = (0xABCDE << 64) | 0x1234_5678_9ABC_DEF0
        ctx.set(regs.fields.count, value)
        low, resp = await axi_read(ctx, bus, 0x08)
        assert (low, resp) == (value & (2**64 - 1), OKAY)
        ctx.set(regs.fields.count, 0)
        ctx.set(regs.fields.err, 0b10)
        await ctx.tick()
        ctx.set(regs.fields.err, 0)
        high, resp = await axi_read(ctx, bus, 0x10)
        assert (high, resp) == (value >> 64, OKAY), "the high word was latched with the low"
        low, _ = await axi_read(ctx, bus, 0x08)
        high, _ = await axi_read(ctx, bus, 0x10)
        assert (low, high) == (0, 0b10 << (110 - 64)), "err is a sticky flag at bit 110"
        assert await axi_write(ctx, bus, 0x10, 0b10 << 46, 0xFF) == OKAY
        assert await axi_read(ctx, bus, 0x08) == (0, OKAY)
        assert await axi_read(ctx, bus, 0x10) == (0, OKAY), "err cleared by writing 1"
        assert await axi_write(ctx, bus, 0x18, 0x0123_4567_89AB_CDEF, 0xFF) == OKAY
        assert await axi_read(ctx, bus, 0x18) == (0, OKAY), "wo reads 0"
        assert await axi_write(ctx, bus, 0x20, 1, 0xFF) == SLVERR
        assert await axi_read(ctx, bus, 0x38) == (0, SLVERR)
        await ctx.tick()
        assert seen["data"] == [0x0123_4567_89AB_CDEF]

    async def monitor(ctx):
        async for _, _, go, written, data in ctx.tick().sample(
                regs.fields.go, regs.written.data, regs.fields.data):
            seen["go"] += go
            if written:
                seen["data"].append(data)

    sim = Simulator(regs)
    sim.add_clock(CLOCK_PERIOD_S)
    sim.add_testbench(testbench)
    sim.add_process(monitor)
    sim.run()


def narrow_map():
    return RegisterMap("narrow", [
        Register("SIZE", 0x00, [Field("height", 16, "rw", reset=1),
                                Field("width", 16, "rw", reset=1)]),
        Register("MODE", 0x04, [Field("mode", 8, "rw")]),
    ])


@unused_ok
def test_narrow_storage_checks():
    with pytest.raises(ValueError, match="^storage: 'nope' is not an rw field of narrow$"):
        AXI4LiteRegisters(narrow_map(), storage={"nope": 3})
    with pytest.raises(ValueError, match="^storage: field 'mode' keeps 0..7 bits, not 8$"):
        AXI4LiteRegisters(narrow_map(), storage={"mode": 8})
    with pytest.raises(ValueError, match="cannot hold its reset value 1"):
        AXI4LiteRegisters(narrow_map(), storage={"height": 0})
    with pytest.raises(ValueError, match="^storage: field 'mode' keeps 0..7 bits, not True$"):
        AXI4LiteRegisters(narrow_map(), storage={"mode": True})
    with pytest.raises(TypeError, match=r"^storage must be a dict of field name: bits, not \[\]$"):
        AXI4LiteRegisters(narrow_map(), storage=[])
    gc.collect()


def test_narrow_storage():
    """A value that fits is kept exactly; a larger one reads back above the stored range,
    byte writes merge with the value shown; bits 0 keeps "nonzero"."""
    regs = AXI4LiteRegisters(narrow_map(), storage={"height": 6, "width": 6, "mode": 0})
    bus = regs.bus

    async def testbench(ctx):
        assert await axi_read(ctx, bus, 0x00) == ((1 << 16) | 1, OKAY)
        assert await axi_write(ctx, bus, 0x00, (32 << 16) | 63, 0xF) == OKAY
        assert (ctx.get(regs.fields.height), ctx.get(regs.fields.width)) == (63, 32)
        assert await axi_write(ctx, bus, 0x00, (0x0123 << 16) | 64, 0xF) == OKAY
        assert ctx.get(regs.fields.height) == 0xFFC0            # 64: low bits 0, sticky
        assert ctx.get(regs.fields.width) == 0xFFE3             # 0x123: low bits 0x23
        assert await axi_read(ctx, bus, 0x00) == ((0xFFE3 << 16) | 0xFFC0, OKAY)
        assert await axi_write(ctx, bus, 0x00, 5, 0b0001) == OKAY   # low byte only
        assert ctx.get(regs.fields.height) == 0xFFC5, "the upper byte still shows the sticky bit"
        assert await axi_write(ctx, bus, 0x00, 7, 0b0011) == OKAY
        assert ctx.get(regs.fields.height) == 7, "a value that fits clears it"
        assert await axi_write(ctx, bus, 0x04, 9, 0xF) == OKAY
        assert ctx.get(regs.fields.mode) == 0xFF
        assert await axi_write(ctx, bus, 0x04, 0, 0xF) == OKAY
        assert ctx.get(regs.fields.mode) == 0

    sim = Simulator(regs)
    sim.add_clock(CLOCK_PERIOD_S)
    sim.add_testbench(testbench)
    sim.run()
