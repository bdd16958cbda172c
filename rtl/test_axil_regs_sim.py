"""The register block in Amaranth's own simulator: constructor checks, the hardware-side
interface, and a 64-bit bus (the cocotb tests in tb/test_axil_regs.py cover a 32-bit bus on
Icarus and Verilator)."""

import gc
import re

import pytest
from amaranth.lib import wiring
from amaranth.sim import Simulator

from rtl.axil_regs import (OKAY, SLVERR, AXI4LiteRegisters, AXI4LiteSignature, FieldsSignature,
                           subordinate_signature)
from rtl.regmap import Field, Register, RegisterMap

CLOCK_PERIOD = 1e-8


def wide_map():
    return RegisterMap("wide", [
        Register("CTRL", 0x00, [Field("go", 1, "w1p"), Field("mode", 3, "rw", reset=5, lsb=40)]),
        Register("STAT", 0x08, [Field("count", 100, "ro"), Field("err", 2, "w1c", lsb=110)]),
        Register("DATA", 0x18, [Field("data", 64, "wo")]),
    ], data_width=64)


# Components built only to inspect or to fail are never elaborated.
unused_ok = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@unused_ok
def test_constructor_checks():
    regmap = wide_map()
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
    regs = AXI4LiteRegisters(wide_map(), addr_width=8)
    regs._MustUse__silence = True                               # inspected, not elaborated
    assert regs.bus.signature == AXI4LiteSignature(8, 64).flip()
    assert subordinate_signature(wide_map()) == AXI4LiteSignature(5, 64).flip()
    assert len(regs.bus.awaddr) == 8 and len(regs.bus.wstrb) == 8
    assert regs.fields["mode"] is regs.fields.mode and len(regs.fields["count"]) == 100
    assert list(regs.fields) == ["go", "mode", "count", "err", "data"]
    assert list(regs.written) == ["mode", "data"]
    members = FieldsSignature(wide_map()).members
    assert [(name, members[name].flow) for name in members] == [
        ("go", wiring.Out), ("mode", wiring.Out), ("count", wiring.In), ("err", wiring.In),
        ("data", wiring.Out)]
    assert members["mode"].init == 5
    with pytest.raises(KeyError, match="no field 'nope' here"):
        regs.fields["nope"]


async def axi_write(ctx, bus, address, data, strb):
    ctx.set(bus.awaddr, address)
    ctx.set(bus.wdata, data)
    ctx.set(bus.wstrb, strb)
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.wvalid, 1)
    ctx.set(bus.bready, 1)
    pending = {"aw", "w"}
    while True:
        _, _, awready, wready, bvalid, bresp = await ctx.tick().sample(
            bus.awready, bus.wready, bus.bvalid, bus.bresp)
        if awready:
            pending.discard("aw")
            ctx.set(bus.awvalid, 0)
        if wready:
            pending.discard("w")
            ctx.set(bus.wvalid, 0)
        if bvalid:
            assert not pending, "B before AW and W"
            ctx.set(bus.bready, 0)
            return bresp


async def axi_read(ctx, bus, address):
    ctx.set(bus.araddr, address)
    ctx.set(bus.arvalid, 1)
    ctx.set(bus.rready, 1)
    while True:
        _, _, arready, rvalid, rdata, rresp = await ctx.tick().sample(
            bus.arready, bus.rvalid, bus.rdata, bus.rresp)
        if arready:
            ctx.set(bus.arvalid, 0)
        if rvalid:
            ctx.set(bus.rready, 0)
            return rdata, rresp


def test_64_bit_bus():
    regs = AXI4LiteRegisters(wide_map(), addr_width=6)      # 0x20..0x3f unmapped
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
    sim.add_clock(CLOCK_PERIOD)
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
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(testbench)
    sim.run()
