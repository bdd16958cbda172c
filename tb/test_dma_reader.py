"""The DMA read channel (rtl/dma_reader.py) and the read mux (rtl/axi_read_mux.py).

pytest builds a harness of several readers behind one mux for each bus configuration and runs
the cocotb tests of this module on it (every configuration on Icarus, one on Verilator):
cocotbext-axi's AXI4 RAM (read half) answers the shared ``m_axi_*`` port with random pauses on
AR and R, and each reader's words are taken by an AXI-Stream sink with random backpressure.
Every region's bytes are compared with the RAM's, frame by frame (``last`` closes a frame), and
monitors check every burst (size, length, 4 KiB, ID, held until taken), the beats in flight
per ID against the reader's FIFO, and that R is never blocked. Also: one reader's consumer
stalled while the others finish, the rate of a long region, SLVERR.

In Amaranth's simulator: the mux's round-robin and R routing alone. Verilator lints both blocks
alone; the constructors' limits are checked at the boundary.
"""

import json
import logging
import os
import random

import cocotb
import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiReadBus, AxiRamRead, AxiStreamBus, AxiStreamSink

from rtl.axi4 import BOUNDARY_BYTES, BURST_INCR, AXI4ReadSignature
from rtl.axi_read_mux import AxiReadMux
from rtl.dma_reader import MIN_FIFO_BEATS, DmaReader, default_fifo_beats
from rtl.dma_region import region_layout
from rtl.streams import axis_members, connect_axis, connect_flat, flat_members, payload_layout
from sim import runner
from sim.verilog_export import lint, write_waivers
from tb.axis import HandshakeMonitor, random_pause

CLOCK_NS = 10
TOPLEVEL = "dma_reader_harness"
#: Environment variable that tells the cocotb tests the harness configuration (JSON).
CONFIG_ENV = "DMA_READER_CONFIG"
ADDR_WIDTH = 32
ID_WIDTH = 4
#: Reader ``i`` uses ARID ``(ID_BASE + ID_STEP * i) % 2**ID_WIDTH``: IDs that are not the port
#: numbers, so that the mux must route by the IDs it learned.
ID_BASE, ID_STEP = 3, 5
#: Bytes of the RAM model: room for regions across several 4 KiB boundaries.
RAM_BYTES = 1 << 16
#: Probability of a pause in a cycle on AR, R and each reader's output, when pausing.
PAUSE = 0.3
#: Cycles of the long stall of one reader's consumer.
STALL_CYCLES = 3000
#: Cycles allowed above one transfer a cycle for a long region (AR, RAM, FIFO latency).
RATE_SLACK_CYCLES = 24

#: The AR members that must hold still while ``arvalid`` waits for ``arready``.
AR_FIELDS = ("arid", "araddr", "arlen", "arsize", "arburst", "arcache", "arprot")

#: Harness configurations: the bus, one reader per word width.
CONFIGS = {
    # narrower, equal and wider words on a 64-bit bus
    "bus64": dict(data_width=64, word_widths=[32, 64, 256], max_burst=16, fifo_beats=None),
    # words of a byte and of eight beats
    "bus64-wide": dict(data_width=64, word_widths=[512, 8], max_burst=16, fifo_beats=None),
    # a 32-bit bus; short bursts of an odd length into the smallest FIFO
    "bus32": dict(data_width=32, word_widths=[32, 64], max_burst=16, fifo_beats=None),
    "bus32-tight": dict(data_width=32, word_widths=[64, 32, 128], max_burst=3,
                        fifo_beats=MIN_FIFO_BEATS),
    # a 512-bit bus: one beat is a whole 4 KiB boundary's 64th
    "bus512": dict(data_width=512, word_widths=[64, 1024], max_burst=8, fifo_beats=None),
}


def reader_id(i):
    return (ID_BASE + ID_STEP * i) % (1 << ID_WIDTH)


class Harness(wiring.Component):
    """Readers (one per word width) behind an :class:`AxiReadMux`, with flat ports:
    ``m_axi_*`` (the shared AXI4 read port), and per reader ``i``: ``cmd{i}_payload``/
    ``_valid``/``_ready`` (the region), ``m{i}_axis_t*`` (the words), ``busy{i}``,
    ``error{i}``."""

    def __init__(self, *, data_width, word_widths, max_burst, fifo_beats):
        self.readers = [DmaReader(ADDR_WIDTH, data_width, ID_WIDTH, reader_id(i), word_width,
                                  max_burst, fifo_beats)
                        for i, word_width in enumerate(word_widths)]
        self.mux = AxiReadMux(len(word_widths), ADDR_WIDTH, data_width, ID_WIDTH)
        members = flat_members(AXI4ReadSignature(ADDR_WIDTH, data_width, ID_WIDTH), "m_axi")
        for i, reader in enumerate(self.readers):
            members |= flat_members(reader.cmd.signature, f"cmd{i}")
            members |= axis_members(f"m{i}_axis", payload_layout(reader.word_width), Out)
            members |= {f"busy{i}": Out(1), f"error{i}": Out(1)}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mux = self.mux
        connect_flat(m, self, self.mux.bus, "m_axi")
        for i, reader in enumerate(self.readers):
            m.submodules[f"reader{i}"] = reader
            wiring.connect(m, reader.bus, self.mux.readers[i])
            connect_flat(m, self, reader.cmd, f"cmd{i}")
            connect_axis(m, self, f"m{i}_axis", reader.data)
            m.d.comb += [getattr(self, f"busy{i}").eq(reader.busy),
                         getattr(self, f"error{i}").eq(reader.error)]
        return m


# --- the model: what a region reads ---------------------------------------------------------

def region_bytes(mem: bytes, region: dict) -> bytes:
    """The bytes a reader delivers for ``region``: each row's ``row_bytes``, row after row."""
    return b"".join(mem[region["addr"] + r * region["stride"]:][:region["row_bytes"]]
                    for r in range(region["rows"]))


def pack_region(region: dict) -> int:
    """The ``cmd`` payload bits of ``region`` (fields placed as :func:`region_layout` says)."""
    layout = region_layout(ADDR_WIDTH)
    value = 0
    for name, field in layout:
        assert 0 <= region[name] < 1 << field.width, f"{name} {region[name]} does not fit"
        value |= region[name] << field.offset
    return value


def random_region(rng: random.Random, word_bytes: int, bus_bytes: int, max_bytes: int) -> dict:
    """A legal region of at most about ``max_bytes``: rows ending mid-beat (words narrower than
    the bus), gaps, overlapping rows, a stride of 0, starts just below a 4 KiB boundary."""
    unit = max(word_bytes, bus_bytes)
    kind = rng.choice(["block", "rows", "rows", "boundary", "overlap"])
    rows = 1 if kind == "block" else rng.randint(1, 12)
    row_words = rng.randint(1, max(1, max_bytes // rows // word_bytes))
    row_bytes = row_words * word_bytes
    span = -(-row_bytes // bus_bytes) * bus_bytes          # a row's whole beats
    if kind == "overlap":
        stride = rng.choice([0, bus_bytes * rng.randint(0, max(0, span // bus_bytes - 1))])
    else:
        stride = span + bus_bytes * rng.choice([0, 0, rng.randint(1, 40)])
    extent = (rows - 1) * stride + span
    assert extent + BOUNDARY_BYTES < RAM_BYTES, f"region of {extent} bytes"
    if kind == "boundary" or rng.random() < 0.3:
        boundary = BOUNDARY_BYTES * rng.randint(1, (RAM_BYTES - extent) // BOUNDARY_BYTES - 1)
        addr = boundary - bus_bytes * rng.randint(1, max(1, 4 * unit // bus_bytes))
    else:
        addr = bus_bytes * rng.randint(0, (RAM_BYTES - extent) // bus_bytes - 1)
    return {"addr": addr, "row_bytes": row_bytes, "stride": stride, "rows": rows}


def first_mismatch(got: bytes, want: bytes) -> str:
    where = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got),
                                                                               len(want)))
    return (f"{len(got)} bytes read, {len(want)} expected; first difference at byte {where}: "
            f"{got[where:where + 8].hex()} vs {want[where:where + 8].hex()}")


# --- the testbench ---------------------------------------------------------------------------

class FaultyRam(AxiRamRead):
    """The RAM model, answering SLVERR (and zeros) for the beats that start in ``faulty``."""

    faulty = range(0)

    async def _read(self, address, length):
        if address % self.size in self.faulty:
            raise ValueError(f"beat at {address:#x} is faulty")
        return await super()._read(address, length)


class TB:
    """The harness with its models; :meth:`reset` resets it and starts them."""

    def __init__(self, dut, *, pauses: bool, seed: int):
        self.dut = dut
        self.cfg = json.loads(os.environ[CONFIG_ENV])
        self.rng = random.Random(seed)
        self.pauses = pauses
        self.bus_bytes = self.cfg["data_width"] // 8
        self.word_bytes = [w // 8 for w in self.cfg["word_widths"]]
        self.n = len(self.word_bytes)
        self.fifo_beats = self.cfg["fifo_beats"] or default_fifo_beats(self.cfg["max_burst"])
        assert len(dut.m_axi_rdata) == self.cfg["data_width"]
        self.mem = self.rng.randbytes(RAM_BYTES)
        self.ram, self.sinks = None, []
        self.cycle = 0
        self.bursts = []                # (cycle, arid, araddr, beats) of every AR handshake
        self.in_flight = {reader_id(i): 0 for i in range(self.n)}
        self.most_bursts = {reader_id(i): 0 for i in range(self.n)}
        self.open_bursts = {reader_id(i): 0 for i in range(self.n)}
        self.outputs = [HandshakeMonitor(dut.clk, getattr(dut, f"m{i}_axis_tvalid"),
                                         getattr(dut, f"m{i}_axis_tready"))
                        for i in range(self.n)]
        dut.rst.value = 0
        for i in range(self.n):             # inputs defined until the models drive them
            getattr(dut, f"cmd{i}_valid").value = 0
            getattr(dut, f"m{i}_axis_tready").value = 0
        for name in ("arready", "rvalid", "rid", "rdata", "rresp", "rlast"):
            getattr(dut, f"m_axi_{name}").value = 0
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())

    async def reset(self):
        """Reset the harness, then start the models and monitors (the models come after the
        reset: cocotbext-axi's would take the ports' X before it for a running bus). The
        reset rises after time 0, so that Icarus wakes the Verilog's combinational blocks."""
        dut = self.dut
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        self.ram = FaultyRam(AxiReadBus.from_prefix(dut, "m_axi"), dut.clk, size=RAM_BYTES)
        self.ram.log.setLevel(logging.WARNING)
        self.ram.write(0, self.mem)
        for i in range(self.n):
            sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, f"m{i}_axis"), dut.clk)
            sink.log.setLevel(logging.WARNING)
            assert len(sink.bus.tdata) == 8 * self.word_bytes[i]
            self.sinks.append(sink)
        if self.pauses:
            self.ram.ar_channel.set_pause_generator(random_pause(self.rng, PAUSE))
            self.ram.r_channel.set_pause_generator(random_pause(self.rng, PAUSE))
            for sink in self.sinks:
                sink.set_pause_generator(random_pause(self.rng, PAUSE))
        cocotb.start_soon(self._monitor())
        for monitor in self.outputs:
            cocotb.start_soon(monitor.run())

    async def _monitor(self):
        """Every AR handshake a legal burst of one of the readers; an AR shown stays until
        taken; beats in flight per ID never above a reader's FIFO; R never waiting for
        rready."""
        dut = self.dut
        ids = {reader_id(i) for i in range(self.n)}
        ar_fields = [getattr(dut, f"m_axi_{name}") for name in AR_FIELDS]
        waiting = None                  # the AR shown and not taken in the cycle before
        while True:
            await RisingEdge(dut.clk)
            self.cycle += 1
            shown = [int(signal.value) for signal in ar_fields] if dut.m_axi_arvalid.value \
                else None
            assert waiting is None or shown == waiting, \
                f"cycle {self.cycle}: AR {waiting} withdrawn or changed to {shown} before arready"
            waiting = shown if shown and not dut.m_axi_arready.value else None
            if dut.m_axi_arvalid.value and dut.m_axi_arready.value:
                arid, addr = int(dut.m_axi_arid.value), int(dut.m_axi_araddr.value)
                beats = int(dut.m_axi_arlen.value) + 1
                assert arid in ids, f"ARID {arid} is no reader's"
                assert int(dut.m_axi_arsize.value) == (self.bus_bytes - 1).bit_length()
                assert int(dut.m_axi_arburst.value) == BURST_INCR
                assert addr % self.bus_bytes == 0, f"burst at {addr:#x} not on a beat"
                assert beats <= self.cfg["max_burst"], f"burst of {beats} beats at {addr:#x}"
                end = addr + beats * self.bus_bytes - 1
                assert addr // BOUNDARY_BYTES == end // BOUNDARY_BYTES, \
                    f"burst {addr:#x}..{end:#x} crosses a 4 KiB boundary"
                self.bursts.append((self.cycle, arid, addr, beats))
                self.in_flight[arid] += beats
                self.open_bursts[arid] += 1
                self.most_bursts[arid] = max(self.most_bursts[arid], self.open_bursts[arid])
                assert self.in_flight[arid] <= self.fifo_beats, \
                    f"ID {arid}: {self.in_flight[arid]} beats requested, FIFO {self.fifo_beats}"
            if dut.m_axi_rvalid.value:
                rid = int(dut.m_axi_rid.value)
                assert dut.m_axi_rready.value, f"cycle {self.cycle}: R beat of ID {rid} blocked"
                self.in_flight[rid] -= 1
                self.open_bursts[rid] -= int(dut.m_axi_rlast.value)

    async def command(self, i: int, region: dict):
        """Hand ``region`` to reader ``i`` (waits until the reader takes it)."""
        getattr(self.dut, f"cmd{i}_payload").value = pack_region(region)
        getattr(self.dut, f"cmd{i}_valid").value = 1
        while True:
            await RisingEdge(self.dut.clk)
            if getattr(self.dut, f"cmd{i}_ready").value:
                break
        getattr(self.dut, f"cmd{i}_valid").value = 0

    async def read(self, i: int, region: dict, *, want_error: int = 0) -> None:
        """Reader ``i`` reads ``region``: one frame, equal to the RAM's bytes (zeros where the
        RAM faulted), then idle with ``error`` as expected."""
        mem = bytearray(self.mem)
        for address in self.ram.faulty:
            mem[address:address + self.bus_bytes] = bytes(self.bus_bytes)
        want = region_bytes(bytes(mem), region)
        await self.command(i, region)
        await RisingEdge(self.dut.clk)
        assert getattr(self.dut, f"error{i}").value == 0, "error not cleared by the command"
        frame = await self.sinks[i].recv()
        got = bytes(frame.tdata)
        assert got == want, f"reader {i}, {region}: {first_mismatch(got, want)}"
        await RisingEdge(self.dut.clk)
        assert self.sinks[i].empty(), f"reader {i}: words after the final one of {region}"
        assert getattr(self.dut, f"busy{i}").value == 0, f"reader {i} busy after {region}"
        assert getattr(self.dut, f"error{i}").value == want_error, f"reader {i} error flag"

    def region(self, i: int, max_bytes: int) -> dict:
        return random_region(self.rng, self.word_bytes[i], self.bus_bytes, max_bytes)

    def check_idle(self):
        for i in range(self.n):
            assert self.sinks[i].empty(), f"reader {i}: words nobody asked for"
            assert getattr(self.dut, f"busy{i}").value == 0, f"reader {i} still busy"
        assert all(beats == 0 for beats in self.in_flight.values()), \
            f"beats still in flight: {self.in_flight}"


# --- cocotb tests ----------------------------------------------------------------------------

@cocotb.test(timeout_time=20, timeout_unit="ms")
@cocotb.parametrize(pauses=[False, True])
async def random_regions(dut, pauses):
    """Every reader at once, each a series of random regions, compared byte for byte."""
    tb = TB(dut, pauses=pauses, seed=1 + pauses)
    await tb.reset()

    async def series(i, count):
        for _ in range(count):
            await tb.read(i, tb.region(i, max_bytes=512 if pauses else 1024))

    tasks = [cocotb.start_soon(series(i, 12)) for i in range(tb.n)]
    for task in tasks:
        await task
    await ClockCycles(dut.clk, 4)
    tb.check_idle()
    assert len(tb.bursts) >= 12 * tb.n


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def stalled_consumer(dut):
    """Reader 0's consumer stops for a long time with its FIFO full: the other readers go on
    and finish, reader 0 waits, then delivers its region whole."""
    tb = TB(dut, pauses=True, seed=3)
    await tb.reset()
    tb.sinks[0].set_pause_generator(None)
    tb.sinks[0].pause = True
    unit = max(tb.bus_bytes, tb.word_bytes[0])
    big = -(-4 * tb.fifo_beats * tb.bus_bytes // unit) * unit      # the FIFO's fill, 4 times
    stalled = cocotb.start_soon(tb.read(0, {"addr": BOUNDARY_BYTES - 2 * tb.bus_bytes,
                                            "row_bytes": big, "stride": 0, "rows": 1}))
    await ClockCycles(dut.clk, 50)
    for i in range(1, tb.n):
        for _ in range(3):
            await with_timeout(tb.read(i, tb.region(i, max_bytes=2048)), STALL_CYCLES * CLOCK_NS,
                               "ns")
    await ClockCycles(dut.clk, STALL_CYCLES // 10)
    assert not stalled.done() and dut.busy0.value == 1, "reader 0 finished with its sink stopped"
    assert tb.in_flight[reader_id(0)] == 0, "reader 0 requested beats it had no place for"
    tb.sinks[0].pause = False
    await stalled
    await ClockCycles(dut.clk, 4)
    tb.check_idle()


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def throughput(dut):
    """Each reader alone, no pauses: a long region (across 4 KiB boundaries) takes one cycle a
    transfer (a beat in, or a word out where words are narrower) plus a fixed latency."""
    tb = TB(dut, pauses=False, seed=4)
    await tb.reset()
    full_rate = tb.fifo_beats >= default_fifo_beats(tb.cfg["max_burst"])
    for i in range(tb.n):
        unit = max(tb.bus_bytes, tb.word_bytes[i])
        mid_beat = tb.word_bytes[i] if tb.word_bytes[i] < tb.bus_bytes else 0
        for region in ({"addr": BOUNDARY_BYTES - 4 * tb.bus_bytes,
                        "row_bytes": max(2 * BOUNDARY_BYTES, 256 * tb.word_bytes[i]),
                        "stride": 0, "rows": 1},
                       {"addr": 2 * BOUNDARY_BYTES + tb.bus_bytes,
                        "row_bytes": 4 * unit + mid_beat, "stride": 8 * unit, "rows": 32}):
            total = region["row_bytes"] * region["rows"]
            beats = region["rows"] * -(-region["row_bytes"] // tb.bus_bytes)
            transfers = max(beats, total // tb.word_bytes[i])
            start, bursts = tb.cycle, len(tb.bursts)
            await tb.read(i, region)
            words = tb.outputs[i].transfers
            first, last = words[-(total // tb.word_bytes[i])], words[-1]
            cycles = last - start
            first_ar = tb.bursts[bursts][0] - start
            most = tb.most_bursts[reader_id(i)]
            dut._log.info(f"reader {i} (word {8 * tb.word_bytes[i]} bits, bus "
                          f"{8 * tb.bus_bytes}): {region['rows']} x {region['row_bytes']} B, "
                          f"{beats} beats, {transfers} transfers in {cycles} cycles "
                          f"(command to first AR {first_ar}, to first word {first - start}; "
                          f"up to {most} bursts in flight)")
            if full_rate:
                assert cycles <= transfers + RATE_SLACK_CYCLES, \
                    f"{cycles} cycles for {transfers} transfers"
        if full_rate:
            assert tb.most_bursts[reader_id(i)] >= 2, "never two bursts in flight"
    tb.check_idle()


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def error_response(dut):
    """A beat answered with SLVERR sets the reader's ``error`` until its next command (the
    data still comes, as the RAM sent it); the other readers' flags stay clear."""
    tb = TB(dut, pauses=True, seed=5)
    await tb.reset()
    bad = 3 * BOUNDARY_BYTES + 5 * tb.bus_bytes
    tb.ram.faulty = range(bad, bad + 1)
    unit = max(tb.bus_bytes, tb.word_bytes[0])
    faulty = {"addr": bad - 2 * unit, "row_bytes": 2 * unit, "stride": 2 * unit, "rows": 3}
    clean = {"addr": bad + 4 * unit, "row_bytes": unit, "stride": unit, "rows": 4}
    others = [cocotb.start_soon(tb.read(i, {**clean, "row_bytes": tb.word_bytes[i]}))
              for i in range(1, tb.n)]
    await tb.read(0, faulty, want_error=1)
    await ClockCycles(dut.clk, 20)
    assert dut.error0.value == 1, "error not sticky"
    await tb.read(0, clean, want_error=0)
    await tb.read(0, faulty, want_error=1)
    for task in others:
        await task
    await ClockCycles(dut.clk, 4)
    tb.check_idle()


# --- pytest: build each configuration, run the cocotb tests above --------------------------

#: (simulator, configuration) pairs: every configuration on Icarus, one on Verilator too (a
#: Verilator build costs about 20 s, as much as all the Icarus runs together).
RUNS = [("icarus", name) for name in CONFIGS] + [("verilator", "bus64")]


@pytest.mark.parametrize("sim, name", RUNS)
def test_dma_reader(sim, name):
    config = CONFIGS[name]
    # One Verilog folder per simulator: parallel workers never rewrite each other's source.
    key = runner.config_key(TOPLEVEL, {**config, "sim": sim})
    source = runner.emit_verilog(Harness(**config), toplevel=TOPLEVEL, key=key)
    runner.run_cocotb(sim, sources=[source], toplevel=TOPLEVEL, key=key, ports_only=True,
                      test_module="tb.test_dma_reader", extra_env={CONFIG_ENV: json.dumps(config)})


@pytest.mark.parametrize("toplevel, component, config", [
    ("dma_reader", DmaReader, {}),
    ("dma_reader", DmaReader, dict(data_width=32, word_width=8, max_burst=3, fifo_beats=3)),
    ("dma_reader", DmaReader, dict(data_width=512, word_width=2048, addr_width=64,
                                   max_burst=256)),
    ("axi_read_mux", AxiReadMux, dict(n=3)),
    ("axi_read_mux", AxiReadMux, dict(n=1, id_width=1)),
], ids=lambda value: value if isinstance(value, str) else None)
def test_lint(toplevel, component, config):
    """``verilator --lint-only -Wall`` on the block alone is clean under the project's waivers
    for Amaranth's Verilog."""
    source = runner.emit_verilog(component(**config), toplevel=toplevel,
                                 key=runner.config_key(toplevel, config))
    messages = lint(source, toplevel, write_waivers(source.parent / "lint_waivers.vlt"))
    assert not messages, f"{source}:\n" + "\n".join(messages)


# --- the mux alone, in Amaranth's simulator --------------------------------------------------

def test_mux_round_robin_and_routing():
    """Ports that keep requesting are granted in turn, a port that stops is skipped, an AR
    waits unchanged for arready; R goes to the port that issued its RID, and to none (rready
    low) for a RID no port has issued yet."""
    n, ids = 3, [9, 2, 14]
    dut = AxiReadMux(n, ADDR_WIDTH, 64, ID_WIDTH)
    rng = random.Random(7)
    grants = []

    async def bench(ctx):
        ctx.set(dut.bus.rvalid, 1)
        ctx.set(dut.bus.rid, ids[0])
        assert ctx.get(dut.bus.rready) == 0 and ctx.get(dut.readers[0].rvalid) == 0, \
            "R routed to a port that has issued no AR"
        ctx.set(dut.bus.rvalid, 0)
        issued = [0] * n
        for i in range(n):
            ctx.set(dut.readers[i].arid, ids[i])
        waiting = None
        for cycle in range(300):
            requesting = [i != 1 or cycle < 150 for i in range(n)]    # port 1 stops at 150
            for i in range(n):
                ctx.set(dut.readers[i].arvalid, requesting[i])
                ctx.set(dut.readers[i].araddr, i << 16 | issued[i])
            ctx.set(dut.bus.arready, rng.random() < 0.5)
            shown = (ctx.get(dut.bus.arid), ctx.get(dut.bus.araddr))
            assert ctx.get(dut.bus.arvalid) == 1
            assert waiting is None or shown == waiting, f"AR {waiting} changed to {shown}"
            taken = [ctx.get(dut.readers[i].arready) for i in range(n)]
            assert sum(taken) == ctx.get(dut.bus.arready)
            if ctx.get(dut.bus.arready):
                port = taken.index(1)
                assert shown == (ids[port], port << 16 | issued[port])
                grants.append((cycle, port))
                issued[port] += 1
                waiting = None
            else:
                waiting = shown
            await ctx.tick()
        for i in range(n):
            ctx.set(dut.readers[i].arvalid, 0)
        for rid, port in [(ids[0], 0), (ids[1], 1), (ids[2], 2), (5, None)]:
            for ready in (0, 1):
                ctx.set(dut.bus.rvalid, 1)
                ctx.set(dut.bus.rid, rid)
                ctx.set(dut.bus.rdata, 0x1234 + rid)
                for i in range(n):
                    ctx.set(dut.readers[i].rready, ready if i == port else 1 - ready)
                valid = [ctx.get(dut.readers[i].rvalid) for i in range(n)]
                assert valid == [int(i == port) for i in range(n)], f"RID {rid}: {valid}"
                assert ctx.get(dut.bus.rready) == (ready if port is not None else 0)
                assert all(ctx.get(dut.readers[i].rdata) == 0x1234 + rid for i in range(n))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    early = [port for cycle, port in grants if cycle < 150]
    late = [port for cycle, port in grants if cycle > 152]
    assert len(early) > 30 and len(late) > 30
    assert all(b == (a + 1) % n for a, b in zip(early, early[1:])), f"not in turn: {early}"
    assert all(a != b for a, b in zip(late, late[1:])) and set(late) == {0, 2}, \
        f"not alternating between the ports left: {late}"


# --- constructor checks ---------------------------------------------------------------------

unused_ok = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def _accepted(factory, **kwargs):
    component = factory(**kwargs)
    component._MustUse__silence = True          # built to be inspected, not elaborated
    return component


@unused_ok
@pytest.mark.parametrize("kwargs, message", [
    (dict(read_id=16), r"^read_id must be an integer 0\.\.15 \(id_width 4\), not 16$"),
    (dict(read_id=-1), r"^read_id must be an integer 0\.\.15 \(id_width 4\), not -1$"),
    (dict(word_width=4), r"^word_width must be a power of two from 8 to 4096, not 4$"),
    (dict(word_width=8192), r"^word_width must be a power of two from 8 to 4096, not 8192$"),
    (dict(word_width=96), r"^word_width must be a power of two from 8 to 4096, not 96$"),
    (dict(max_burst=0), r"^max_burst must be an integer 1\.\.256, not 0$"),
    (dict(max_burst=257), r"^max_burst must be an integer 1\.\.256, not 257$"),
    (dict(max_burst=16, fifo_beats=15),
     r"^fifo_beats must be an integer >= 16 \(max_burst 16, and at least 3\), not 15$"),
    (dict(max_burst=1, fifo_beats=2),
     r"^fifo_beats must be an integer >= 3 \(max_burst 1, and at least 3\), not 2$"),
    (dict(data_width=16), r"^data_width must be one of \(32, 64, 128, 256, 512\), not 16$"),
    (dict(id_width=0), r"^id_width must be an integer 1\.\.16, not 0$"),
    (dict(addr_width=12), r"^addr_width must be an integer 13\.\.64"),
])
def test_reader_refuses(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DmaReader(**kwargs)


@unused_ok
def test_reader_accepts_the_limits():
    for kwargs in (dict(read_id=15), dict(read_id=0), dict(word_width=8),
                   dict(word_width=4096), dict(max_burst=1), dict(max_burst=256),
                   dict(max_burst=16, fifo_beats=16), dict(max_burst=1, fifo_beats=3)):
        reader = _accepted(DmaReader, **kwargs)
        assert reader.bus.signature == AXI4ReadSignature(32, 64, 4)
    assert _accepted(DmaReader, max_burst=2).fifo_beats == 8
    assert _accepted(DmaReader, max_burst=16).fifo_beats == 32
    reader = _accepted(DmaReader, addr_width=40, word_width=32)
    assert reader.cmd.signature == stream.Signature(region_layout(40)).flip()
    assert reader.data.signature == stream.Signature(payload_layout(32))


@unused_ok
def test_mux_limits():
    assert len(_accepted(AxiReadMux, n=16, id_width=4).readers) == 16
    assert len(_accepted(AxiReadMux, n=1).readers) == 1
    with pytest.raises(ValueError, match=r"^n must be an integer 1\.\.16 \(distinct IDs of 4 "
                                         r"bits\), not 17$"):
        AxiReadMux(17, id_width=4)
    with pytest.raises(ValueError, match=r"^n must be an integer 1\.\.2 \(distinct IDs of 1 "
                                         r"bits\), not 3$"):
        AxiReadMux(3, id_width=1)
    with pytest.raises(ValueError, match=r"^n must be an integer 1\.\.16 .*, not 0$"):
        AxiReadMux(0)
    with pytest.raises(ValueError, match=r"^data_width must be one of .*, not 48$"):
        AxiReadMux(2, data_width=48)
