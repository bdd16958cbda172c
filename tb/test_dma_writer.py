"""The DMA write channel (rtl/dma_writer.py) on Icarus (one configuration also on Verilator),
against cocotbext-axi's AXI4 RAM model.

pytest builds a harness (the writer with flat ``m_axi_*``, ``cmd_*`` and ``s_axis_*`` ports)
per configuration and runs the cocotb tests of this module on it: random 2-D regions through
random pauses on AW, W, B and the input, each checked by comparing the whole RAM with the
expected image (the rows written, everything else as pre-filled); the throughput with nothing
pausing; early and missing ``last``; SLVERR responses. A monitor checks every AW (size, burst,
id, length, the 4 KiB rule) and that no W beat comes before its AW. Verilator lints every
configuration's writer; Amaranth checks the constructor's limits.
"""

import json
import logging
import os
import random

import cocotb
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiRamWrite, AxiStreamBus, AxiStreamFrame, AxiStreamSource, AxiWriteBus

from rtl.axi4 import BOUNDARY_BYTES, BURST_INCR, CACHE, MAX_BURST_BEATS, PROT
from rtl.dma_writer import MAX_WORD_WIDTH, DmaWriter
from rtl.streams import axis_members, connect_axis, connect_flat, flat_members
from sim import runner
from sim.verilog_export import lint, write_waivers

TOPLEVEL = "dma_writer_harness"
BUS_PREFIX = "m_axi"
DATA_PREFIX = "s_axis"
CMD_PREFIX = "cmd"
STATUS = ("done", "busy", "error", "last_error")
CONFIG_ENV = "DMA_WRITER_CONFIG"
CLOCK_NS = 10
#: Any test taking longer is hung.
TIMEOUT_US = 2000
#: Most cycles from a command to its done (a hang check per command).
COMMAND_CYCLES = 20000
#: RAM of the model: regions cross several 4 KiB boundaries.
RAM_BYTES = 32 * 1024
BYTE = 8

#: Hardware configurations (the writer's constructor arguments), by name.
CONFIGS = {
    # words wider than the bus (up to 4 beats), as wide, narrower (real bytes 1..32)
    "bus64_word256": dict(data_width=64, word_width=256),
    # words as wide as the bus; short bursts; a nonzero AWID
    "bus64_word64": dict(data_width=64, word_width=64, max_burst=4, id_width=3, write_id=5),
    # 32-bit bus, words of up to 8 beats, bursts up to AXI4's 256 beats
    "bus32_word256": dict(data_width=32, word_width=256, max_burst=MAX_BURST_BEATS),
    # words narrower than the bus only (up to 16 a beat); a burst length not a power of two
    "bus128_word64": dict(data_width=128, word_width=64, max_burst=7, addr_width=20),
}
#: The configuration that also runs on Verilator (a C++ build per configuration costs more
#: than all the Icarus runs).
VERILATOR_CONFIG = "bus64_word256"


class Harness(wiring.Component):
    """The writer with flat ports: ``m_axi_*`` (the AXI4 write channels), ``cmd_*`` (the
    command's fields, ``cmd_valid``, ``cmd_ready``), ``s_axis_t*`` (the words) and the status
    outputs."""

    def __init__(self, config):
        self.writer = DmaWriter(**config)
        members = flat_members(self.writer.bus.signature, BUS_PREFIX)
        for name, field in self.writer.cmd.payload.shape().members.items():
            if name == "region":
                for sub, shape in field.members.items():
                    members[f"{CMD_PREFIX}_{sub}"] = In(shape)
            else:
                members[f"{CMD_PREFIX}_{name}"] = In(field)
        members[f"{CMD_PREFIX}_valid"] = In(1)
        members[f"{CMD_PREFIX}_ready"] = Out(1)
        members.update(axis_members(DATA_PREFIX, self.writer.data.payload.shape(), In))
        members.update({name: Out(1) for name in STATUS})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.writer = writer = self.writer
        connect_flat(m, self, writer.bus, BUS_PREFIX)
        connect_axis(m, self, DATA_PREFIX, writer.data)
        payload = writer.cmd.payload
        for name, field in payload.shape().members.items():
            if name == "region":
                m.d.comb += [getattr(payload.region, sub).eq(getattr(self, f"{CMD_PREFIX}_{sub}"))
                             for sub in field.members]
            else:
                m.d.comb += getattr(payload, name).eq(getattr(self, f"{CMD_PREFIX}_{name}"))
        m.d.comb += [writer.cmd.valid.eq(getattr(self, f"{CMD_PREFIX}_valid")),
                     getattr(self, f"{CMD_PREFIX}_ready").eq(writer.cmd.ready)]
        m.d.comb += [getattr(self, name).eq(getattr(writer, name)) for name in STATUS]
        return m


# --- the model ------------------------------------------------------------------------------

def expected_image(image: bytearray, region: dict, words: list[bytes], word_bytes: int):
    """Write into ``image`` what the writer writes of ``words`` (whole input words, of which
    the low ``word_bytes`` are real) into ``region``: the real bytes in order, row after row,
    as far as they go (fewer words than the region holds after an early ``last``)."""
    real = b"".join(w[:word_bytes] for w in words)
    for r in range(region["rows"]):
        row = real[r * region["row_bytes"]:(r + 1) * region["row_bytes"]]
        start = region["addr"] + r * region["stride"]
        image[start:start + len(row)] = row


def region_words(region: dict, word_bytes: int) -> int:
    return region["rows"] * region["row_bytes"] // word_bytes


def random_region(rng: random.Random, bus_bytes: int, word_bytes: int, max_burst: int) -> dict:
    """Rows of 1 word up to a few bursts (ending inside a beat when words are narrower),
    gaps of 0..3 beats between rows, often starting just before a 4 KiB boundary."""
    limit = rng.choice([bus_bytes, 3 * bus_bytes, min(1024, 3 * max_burst * bus_bytes)])
    row_bytes = word_bytes * rng.randint(1, max(1, limit // word_bytes))
    rows = rng.randint(1, 4)
    stride = -(-row_bytes // bus_bytes) * bus_bytes + bus_bytes * rng.randint(0, 3)
    span = (rows - 1) * stride + row_bytes
    if rng.random() < 0.6:          # just before a boundary
        boundary = BOUNDARY_BYTES * rng.randint(1, RAM_BYTES // BOUNDARY_BYTES - 1)
        addr = boundary - bus_bytes * rng.randint(0, 2 * max(1, min(max_burst, 16)))
    else:
        addr = bus_bytes * rng.randrange(RAM_BYTES // bus_bytes)
    addr = max(0, min(addr, (RAM_BYTES - span) // bus_bytes * bus_bytes))
    return dict(addr=addr, row_bytes=row_bytes, stride=stride, rows=rows)


def random_pauses(rng: random.Random, probability: float):
    while True:
        yield rng.random() < probability


# --- the testbench --------------------------------------------------------------------------

class PoisonedRam(AxiRamWrite):
    """The RAM model, answering SLVERR for a burst with a write into ``poisoned`` (a range of
    addresses), whose bytes it leaves unwritten."""
    poisoned = range(0)

    async def _write(self, address, data):
        if address < self.poisoned.stop and address + len(data) > self.poisoned.start:
            raise OSError(f"poisoned write at {address:#x}")
        await super()._write(address, data)


class TB:
    def __init__(self, dut, seed=0):
        self.dut = dut
        self.config = json.loads(os.environ[CONFIG_ENV])
        self.rng = random.Random(seed)
        self.bus_bytes = len(dut.m_axi_wdata) // BYTE
        self.word_bytes = len(dut.s_axis_tdata) // BYTE     # whole input word
        self.max_burst = self.config.get("max_burst", 16)
        self.write_id = self.config.get("write_id", 0)
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        self.ram = PoisonedRam(AxiWriteBus.from_prefix(dut, BUS_PREFIX), dut.clk, dut.rst,
                               size=RAM_BYTES)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, DATA_PREFIX), dut.clk,
                                      dut.rst)
        for log in (self.ram.log, self.source.log):
            log.setLevel(logging.WARNING)
        self.image = bytearray(self.rng.randbytes(RAM_BYTES))
        self.ram.write(0, bytes(self.image))
        self.violations = []
        self.dones = 0
        self.aw_beats = self.w_beats = self.bursts = self.responses = 0
        self.w_cycles, self.word_cycles = [], []
        self.cycle = 0

    def set_pauses(self, probability):
        gens = [self.ram.aw_channel, self.ram.w_channel, self.ram.b_channel, self.source]
        for gen in gens:
            gen.set_pause_generator(random_pauses(self.rng, probability) if probability
                                    else None)

    async def reset(self):
        dut = self.dut
        dut.rst.value = 1
        dut.cmd_valid.value = 0
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        """Every cycle: the AW checks, W never ahead of AW, done pulses."""
        dut, bad = self.dut, self.violations.append
        size = (self.bus_bytes - 1).bit_length()
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            self.cycle += 1
            if dut.m_axi_awvalid.value and dut.m_axi_awready.value:
                addr, beats = int(dut.m_axi_awaddr.value), int(dut.m_axi_awlen.value) + 1
                got = (int(dut.m_axi_awsize.value), int(dut.m_axi_awburst.value),
                       int(dut.m_axi_awid.value), int(dut.m_axi_awcache.value),
                       int(dut.m_axi_awprot.value))
                if got != (size, BURST_INCR, self.write_id, CACHE, PROT):
                    bad(f"AW {addr:#x}: size, burst, id, cache, prot {got}")
                if beats > self.max_burst:
                    bad(f"AW {addr:#x}: {beats} beats > max_burst {self.max_burst}")
                end = addr + beats * self.bus_bytes - 1
                if addr % self.bus_bytes or addr // BOUNDARY_BYTES != end // BOUNDARY_BYTES:
                    bad(f"AW {addr:#x} of {beats} beats is unaligned or crosses 4 KiB")
                self.aw_beats += beats
                self.bursts += 1
            if dut.m_axi_wvalid.value and dut.m_axi_wready.value:
                self.w_beats += 1
                self.w_cycles.append(self.cycle)
                if self.w_beats > self.aw_beats:
                    bad(f"W beat {self.w_beats} before its AW (AW beats {self.aw_beats})")
            if dut.s_axis_tvalid.value and dut.s_axis_tready.value:
                self.word_cycles.append(self.cycle)
            if not dut.m_axi_bready.value:
                bad("bready low")
            elif dut.m_axi_bvalid.value:
                self.responses += 1
            if dut.done.value:
                self.dones += 1
                if not dut.busy.value:
                    bad("done while not busy")
                if self.responses != self.bursts:
                    bad(f"done with {self.responses} B responses of {self.bursts} bursts")

    def words(self, count):
        """``count`` random whole input words."""
        return [self.rng.randbytes(self.word_bytes) for _ in range(count)]

    async def send(self, words):
        """One frame: the words, ``last`` on the final one."""
        await self.source.send(AxiStreamFrame(b"".join(words)))

    async def command(self, region, word_bytes_log2):
        """Hand the writer a command (returns once it is taken)."""
        dut = self.dut
        for name, value in region.items():
            getattr(dut, f"cmd_{name}").value = value
        dut.cmd_word_bytes_log2.value = word_bytes_log2
        dut.cmd_valid.value = 1
        while True:
            await ReadOnly()
            ready = bool(dut.cmd_ready.value)
            await RisingEdge(dut.clk)
            if ready:
                break
        dut.cmd_valid.value = 0

    async def wait_done(self, count):
        """Until ``count`` done pulses in all."""
        for _ in range(COMMAND_CYCLES):
            if self.dones >= count:
                await RisingEdge(self.dut.clk)      # out of the read-only phase
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"no done {count} after {COMMAND_CYCLES} cycles")

    async def write(self, region, word_bytes_log2, words, *, send=True):
        """Command, words, wait for done; the model updated."""
        if send:
            await self.send(words)
        before = self.dones
        await self.command(region, word_bytes_log2)
        await self.wait_done(before + 1)
        expected_image(self.image, region, words, 1 << word_bytes_log2)

    def check_memory(self, what):
        got = self.ram.read(0, RAM_BYTES)
        if got != bytes(self.image):
            bad = [i for i in range(RAM_BYTES) if got[i] != self.image[i]]
            raise AssertionError(f"{what}: {len(bad)} bytes differ, first at {bad[0]:#x} "
                                 f"(got {got[bad[0]]:#04x}, want {self.image[bad[0]]:#04x})")

    def check_end(self, commands):
        assert not self.violations, "\n".join(self.violations[:10])
        assert self.dones == commands, f"{self.dones} done pulses for {commands} commands"
        assert self.source.empty(), "words left in the source"

    def shifts(self):
        """The legal word_bytes_log2 values."""
        return range((self.word_bytes - 1).bit_length() + 1)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
@cocotb.parametrize(pauses=[0.0, 0.3])
async def random_regions(dut, pauses):
    """Random regions and real word bytes, all frames queued ahead (the writer must take only
    its own command's words); the whole RAM compared after every command."""
    tb = TB(dut, seed=int(pauses * 10) + 1)
    await tb.reset()
    tb.set_pauses(pauses)
    jobs = []
    for _ in range(14):
        shift = tb.rng.choice(tb.shifts())
        region = random_region(tb.rng, tb.bus_bytes, 1 << shift, tb.max_burst)
        jobs.append((region, shift, tb.words(region_words(region, 1 << shift))))
    crossing = [r for r, _, _ in jobs if any(
        (r["addr"] + i * r["stride"]) // BOUNDARY_BYTES
        != (r["addr"] + i * r["stride"] + r["row_bytes"] - 1) // BOUNDARY_BYTES
        for i in range(r["rows"]))]
    mid_beat = [r for r, _, _ in jobs if r["row_bytes"] % tb.bus_bytes]
    assert crossing, "no row crosses a 4 KiB boundary"
    assert mid_beat, "no row ends inside a beat"
    for region, shift, words in jobs:
        await tb.send(words)
    for n, (region, shift, words) in enumerate(jobs):
        await tb.write(region, shift, words, send=False)
        tb.check_memory(f"command {n} {region} word bytes {1 << shift}")
        assert (dut.error.value, dut.last_error.value) == (0, 0), f"command {n}: flags"
        assert not dut.busy.value
    tb.check_end(len(jobs))


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def throughput(dut):
    """Nothing pauses: a 2-D region of rows crossing 4 KiB boundaries is written at one beat
    a cycle when words fill whole beats, at one word a cycle when they are narrower."""
    tb = TB(dut, seed=7)
    await tb.reset()
    shift = (tb.word_bytes - 1).bit_length()          # every byte of the word real
    row_bytes = 40 * max(tb.bus_bytes, tb.word_bytes)
    region = dict(addr=BOUNDARY_BYTES - 3 * tb.bus_bytes, row_bytes=row_bytes,
                  stride=row_bytes + BOUNDARY_BYTES // 2, rows=3)
    words = tb.words(region_words(region, tb.word_bytes))
    await tb.write(region, shift, words)
    tb.check_memory("throughput region")
    beats = len(tb.w_cycles)
    w_span = tb.w_cycles[-1] - tb.w_cycles[0] + 1
    word_span = tb.word_cycles[-1] - tb.word_cycles[0] + 1
    dut._log.info(f"THROUGHPUT {beats} W beats in {w_span} cycles, {len(words)} words in "
                  f"{word_span} cycles (bus {tb.bus_bytes} B, words {tb.word_bytes} B, "
                  f"max_burst {tb.max_burst})")
    if tb.word_bytes >= tb.bus_bytes:
        assert w_span == beats, f"{beats} W beats took {w_span} cycles"
    else:
        assert word_span == len(words), f"{len(words)} words took {word_span} cycles"
    tb.check_end(1)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
@cocotb.parametrize(where=["first", "mid_row", "row_end"], pauses=[0.0, 0.3])
async def early_last(dut, where, pauses):
    """``last`` before the command's final word: the words up to it written, nothing after
    (the rest of the region keeps its bytes), last_error set, one done; the next command
    runs normally and clears the flag."""
    tb = TB(dut, seed=len(where) + int(pauses * 10))
    await tb.reset()
    tb.set_pauses(pauses)
    commands = 0
    for shift in tb.shifts():
        word_bytes = 1 << shift
        words_per_row = max(1, (3 * tb.max_burst * tb.bus_bytes) // word_bytes + 1)
        words_per_row = min(words_per_row, 200)
        row_bytes = words_per_row * word_bytes
        region = dict(addr=BOUNDARY_BYTES - 2 * tb.bus_bytes, row_bytes=row_bytes,
                      stride=(-(-row_bytes // tb.bus_bytes) + 3) * tb.bus_bytes, rows=3)
        sent = {"first": 1, "mid_row": words_per_row + words_per_row // 2 + 1,
                "row_end": 2 * words_per_row}[where]
        words = tb.words(sent)
        await tb.write(region, shift, words)
        commands += 1
        tb.check_memory(f"early last after {sent} words of {word_bytes} bytes")
        assert dut.last_error.value == 1 and dut.error.value == 0
        region = dict(addr=tb.bus_bytes * 5, row_bytes=3 * word_bytes, stride=tb.bus_bytes * 4,
                      rows=2)
        await tb.write(region, shift, tb.words(region_words(region, word_bytes)))
        commands += 1
        tb.check_memory(f"the command after an early last, word bytes {word_bytes}")
        assert dut.last_error.value == 0
    tb.check_end(commands)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def missing_last(dut):
    """The final word without ``last`` (one frame spans two commands): the first command
    completes with last_error, the second takes the rest of the frame and ends clean."""
    tb = TB(dut, seed=11)
    await tb.reset()
    tb.set_pauses(0.2)
    commands = 0
    for shift in tb.shifts():
        word_bytes = 1 << shift
        first = dict(addr=BOUNDARY_BYTES * 2 - tb.bus_bytes, row_bytes=5 * word_bytes,
                     stride=8 * max(word_bytes, tb.bus_bytes), rows=2)
        second = dict(addr=BOUNDARY_BYTES * 5, row_bytes=3 * word_bytes,
                      stride=3 * max(word_bytes, tb.bus_bytes), rows=1)
        a, b = tb.words(region_words(first, word_bytes)), tb.words(region_words(second,
                                                                                 word_bytes))
        await tb.send(a + b)
        await tb.write(first, shift, a, send=False)
        tb.check_memory(f"missing last, word bytes {word_bytes}")
        assert dut.last_error.value == 1
        await tb.write(second, shift, b, send=False)
        tb.check_memory(f"after a missing last, word bytes {word_bytes}")
        assert dut.last_error.value == 0
        commands += 2
    tb.check_end(commands)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def slverr(dut):
    """SLVERR on one beat of a region: error set (the other bytes written all the same), one
    done; the next command clears it."""
    tb = TB(dut, seed=13)
    await tb.reset()
    tb.set_pauses(0.2)
    shift = (tb.word_bytes - 1).bit_length()
    region = dict(addr=BOUNDARY_BYTES - 4 * tb.bus_bytes, row_bytes=4 * tb.word_bytes,
                  stride=8 * max(tb.word_bytes, tb.bus_bytes), rows=3)
    poisoned_at = region["addr"] + region["stride"] + tb.bus_bytes    # row 1, beat 1
    tb.ram.poisoned = range(poisoned_at, poisoned_at + tb.bus_bytes)
    kept = bytes(tb.image[poisoned_at:poisoned_at + tb.bus_bytes])
    await tb.write(region, shift, tb.words(region_words(region, tb.word_bytes)))
    tb.image[poisoned_at:poisoned_at + tb.bus_bytes] = kept
    tb.check_memory("SLVERR region")
    assert dut.error.value == 1 and dut.last_error.value == 0
    tb.ram.poisoned = range(0)
    region = dict(addr=3 * tb.bus_bytes, row_bytes=tb.word_bytes, stride=tb.bus_bytes, rows=1)
    await tb.write(region, shift, tb.words(1))
    tb.check_memory("after SLVERR")
    assert dut.error.value == 0
    tb.check_end(2)


# --- pytest: build per configuration, run the cocotb tests above ---------------------------

def _cocotb_params():
    for name in CONFIGS:
        yield pytest.param(name, "icarus", id=f"{name}-icarus")
    yield pytest.param(VERILATOR_CONFIG, "verilator", id=f"{VERILATOR_CONFIG}-verilator")


@pytest.mark.parametrize("name, sim", list(_cocotb_params()))
def test_dma_writer(name, sim):
    config = CONFIGS[name]
    key = runner.config_key(TOPLEVEL, {**config, "sim": sim})
    source = runner.emit_verilog(Harness(config), toplevel=TOPLEVEL, key=key)
    tests, _ = runner.run_cocotb(sim, sources=[source], toplevel=TOPLEVEL, key=key,
                                 test_module="tb.test_dma_writer", ports_only=True,
                                 extra_env={CONFIG_ENV: json.dumps(config)})
    assert tests == 11


@pytest.mark.parametrize("name", list(CONFIGS))
def test_lint(name):
    """``verilator --lint-only -Wall`` on the writer alone is clean under the project's
    waivers."""
    toplevel = "dma_writer"
    source = runner.emit_verilog(DmaWriter(**CONFIGS[name]), toplevel=toplevel,
                                 key=runner.config_key(toplevel, CONFIGS[name]))
    messages = lint(source, toplevel, write_waivers(source.parent / "lint_waivers.vlt"))
    assert not messages, "\n".join(messages)


# --- Amaranth: the constructor -------------------------------------------------------------

# Components built only to fail are never elaborated.
unused_ok = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@unused_ok
@pytest.mark.parametrize("args, message", [
    (dict(write_id=16), r"^write_id must be an integer 0\.\.15 \(id_width 4\), not 16$"),
    (dict(write_id=-1), r"^write_id must be an integer 0\.\.15 \(id_width 4\), not -1$"),
    (dict(id_width=1, write_id=2), r"^write_id must be an integer 0\.\.1 \(id_width 1\), not 2$"),
    (dict(write_id=True), r"^write_id must be an integer 0\.\.15 \(id_width 4\), not True$"),
    (dict(word_width=4), r"^word_width must be a power of two from 8 to 4096, not 4$"),
    (dict(word_width=2 * MAX_WORD_WIDTH),
     r"^word_width must be a power of two from 8 to 4096, not 8192$"),
    (dict(word_width=96), r"^word_width must be a power of two from 8 to 4096, not 96$"),
    (dict(max_burst=0), r"^max_burst must be an integer 1\.\.256, not 0$"),
    (dict(max_burst=MAX_BURST_BEATS + 1), r"^max_burst must be an integer 1\.\.256, not 257$"),
    (dict(max_burst=4.0), r"^max_burst must be an integer 1\.\.256, not 4\.0$"),
    (dict(data_width=48), r"^data_width must be one of \(32, 64, 128, 256, 512\), not 48$"),
    (dict(addr_width=12), r"^addr_width must be an integer 13\.\.64"),
    (dict(id_width=0), r"^id_width must be an integer 1\.\.16, not 0$"),
])
def test_constructor_refuses(args, message):
    with pytest.raises(ValueError, match=message):
        DmaWriter(**args)


@pytest.mark.parametrize("args", [
    dict(write_id=15), dict(id_width=1, write_id=1), dict(word_width=8),
    dict(word_width=MAX_WORD_WIDTH), dict(max_burst=1), dict(max_burst=MAX_BURST_BEATS),
    dict(addr_width=13, data_width=512, word_width=8),
])
def test_constructor_accepts_limits(args):
    """The last legal values build (and elaborate)."""
    from amaranth.back import rtlil
    writer = DmaWriter(**args)
    rtlil.convert(writer)
    most = exact_log2(writer.word_width // BYTE)
    assert 1 << len(writer.cmd.payload.word_bytes_log2) > most
