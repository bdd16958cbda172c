"""Tests of the max-pool unit (rtl/maxpool.py) against model.pool.maxpool2d: cocotb on Icarus
and Verilator, and Amaranth's simulator.

The cocotb top level is :class:`rtl.maxpool.MaxPoolAxis` (one build of :data:`TEST_CONFIG`),
driven with cocotbext-axi: a frame is one feature map in the HWC beat format of
:mod:`rtl.maxpool` (``lanes`` bytes per beat, ``ceil(C / lanes)`` beats per pixel, lanes past
``C`` filled with random bytes that must be ignored). A sweep of maps runs back to back without
a reset; every output map is compared with :func:`model.pool.maxpool2d` using ``==`` (a
failure names the first differing channel, row and column), its beat count and ``last`` are
checked by the frame boundaries, and nothing may follow. Illegal settings must be refused with
the expected :class:`rtl.maxpool.PoolError` while the next map's input is already waiting on the
stream: not one beat may be taken and nothing output, and the next legal map must still be
right. pytest runs the specification sweep on Icarus and, on Verilator, the same sweep plus
random maps, each with and without random idle cycles and backpressure; plus throughput and
``last``-error checks (tb/test_lint.py lints the emitted Verilog).

Without an HDL simulator: the constructor's arguments, the signature, the memories and the
top level's ports; and amaranth.sim runs of :class:`rtl.maxpool.MaxPool` against the golden
model on hardware configurations the cocotb build does not cover.
"""

import json
import logging
import os
import random
from dataclasses import asdict

import cocotb
import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Shape, unsigned
from amaranth.lib import wiring
from amaranth.sim import Simulator
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from model.pool import maxpool2d
from rtl.engine_regs import DIM_WIDTH, SMALL_WIDTH
from rtl.limits import POOL_ERROR_WIDTH, PoolError, pool_params
from rtl.maxpool import (DATA_WIDTH, MaxPool, MaxPoolAxis, beat_layout, config_layout,
                         memory_bits, memory_depths)
from sim import toolchain
from tb.axis import HandshakeMonitor, random_pause
from tb.maxpool_cases import Case, expected_error

# Several tests build components only to inspect them or to see their constructor fail.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

CLOCK_PERIOD_NS = 10
RESET_CYCLES = 4
#: Probability that the source idles or the sink stalls in a cycle, when enabled.
PAUSE_PROBABILITY = 0.35
#: Hardware configuration of the cocotb build: small, so that the limits are reachable.
TEST_CONFIG = dict(lanes=4, max_kernel=7, max_width=16, max_height=16, max_channels=16,
                   max_stride=3, max_dilation=2)
#: Per simulator: full-size maps (else small ones) and random maps added to the sweep.
SWEEP = {"icarus": dict(large=False, random_maps=0),
         "verilator": dict(large=True, random_maps=300)}
#: Small maps have at most this many rows and columns and beats per pixel.
SMALL_SIDE = 7
SMALL_GROUPS = 2
#: Cycles a map may take per input or output beat, under any pause pattern, before the
#: testbench calls it a hang.
CYCLES_PER_BEAT = 20
SETUP_CYCLES = 64
#: Clock period and idle/stall probability of the Amaranth-simulator runs.
CLOCK_PERIOD_S = 1e-8
SIM_PAUSE_PROBABILITY = 0.3
#: Environment variables passing the configuration and the sweep to the simulation.
CONFIG_ENV = "CONVCORE_MAXPOOL_CONFIG"
SWEEP_ENV = "CONVCORE_MAXPOOL_SWEEP"
SEED = 20261127


# --- maps, expected results and stream formats (pure Python) -------------------------------

def random_map(case: Case, rng: np.random.Generator) -> np.ndarray:
    """A CHW input; half the maps hold only values near the type's minimum, where a padding
    value of 0 (or of the minimum) would win or tie if padding took part in the max."""
    info = np.iinfo(case.dtype)
    shape = (case.channels, case.height, case.width)
    if rng.random() < 0.5:
        return rng.integers(info.min, info.min + 16, shape).astype(case.dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(case.dtype)


def golden(case: Case, x: np.ndarray) -> np.ndarray:
    return maxpool2d(x, case.kernel, case.stride, case.pads, case.dilation, case.ceil_mode)


def groups(channels: int, lanes: int) -> int:
    return -(-channels // lanes)


def pack_map(x: np.ndarray, lanes: int, rng: np.random.Generator) -> bytes:
    """HWC stream bytes of a CHW map; lanes past C hold random bytes (the unit ignores them)."""
    c, h, w = x.shape
    padded = rng.integers(0, 1 << DATA_WIDTH, (groups(c, lanes) * lanes, h, w)).astype(np.uint8)
    padded[:c] = x.view(np.uint8)
    return padded.transpose(1, 2, 0).tobytes()


def unpack_map(data: bytes, channels: int, lanes: int, height: int, width: int,
               dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(CHW map, the bytes of lanes past C) from output stream bytes."""
    padded = np.frombuffer(bytes(data), np.uint8).reshape(height, width, -1).transpose(2, 0, 1)
    return padded[:channels].view(dtype), padded[channels:]


def first_mismatch(got: np.ndarray, want: np.ndarray) -> str:
    if got.shape != want.shape:
        return f"output shape {got.shape}, expected {want.shape}"
    c, r, q = np.argwhere(got != want)[0]
    return f"(channel {c}, row {r}, column {q}): got {got[c, r, q]}, expected {want[c, r, q]}"


def input_stall_cycles(case: Case, lanes: int) -> int:
    """Cycles the unit holds the input between the first and last beat of a map without
    pauses, on every row but the last (see :mod:`rtl.maxpool`): one to decide how the row
    ends, and where more than one horizontal window ends on the last column, ``G`` per extra
    window and one more decision."""
    (_, kw), (_, sw), (_, dw) = case.kernel, case.stride, case.dilation
    _, left, _, right = case.pads
    out_w = golden(case, np.zeros((1, case.height, case.width), case.dtype)).shape[-1]
    keff = (kw - 1) * dw + 1
    ending = sum(1 for o in range(out_w) if o * sw - left + keff - 1 >= case.width - 1)
    flush = (ending - 1) * groups(case.channels, lanes) + 1 if ending > 1 else 0
    return (case.height - 1) * (1 + flush)


#: (kernel, stride, pads, dilation, ceil_mode) of the specification sweep.
GEOMETRIES = [
    ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1), False),
    ((1, 1), (3, 3), (0, 0, 0, 0), (1, 1), True),
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((2, 2), (2, 2), (1, 0, 0, 1), (1, 1), True),
    ((2, 2), (1, 1), (0, 0, 0, 0), (2, 2), True),
    ((2, 2), (2, 3), (1, 1, 1, 1), (2, 1), True),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),
    ((3, 3), (3, 3), (0, 0, 0, 0), (1, 1), True),
    ((3, 3), (1, 1), (1, 1, 1, 1), (2, 2), False),
    ((3, 3), (2, 1), (0, 2, 2, 0), (2, 2), True),
    ((3, 2), (1, 2), (2, 1, 0, 0), (1, 1), False),
    ((2, 3), (3, 3), (0, 2, 1, 0), (1, 1), True),
    ((5, 5), (2, 2), (2, 1, 0, 4), (1, 1), False),
    ((5, 5), (3, 3), (4, 4, 4, 4), (1, 1), True),
    ((5, 1), (1, 1), (2, 0, 2, 0), (1, 1), False),
    ((7, 7), (1, 1), (3, 3, 3, 3), (1, 1), False),
    ((7, 7), (3, 3), (6, 0, 2, 5), (1, 1), True),
    ((7, 3), (2, 3), (0, 1, 6, 2), (1, 2), True),
]


def _legal_sizes(rng: random.Random, geometry, params, large, channels=None) -> Case:
    """A legal case of ``geometry`` with random channels, height and width: up to the maxima
    if ``large``, else at most SMALL_SIDE x SMALL_SIDE pixels of SMALL_GROUPS beats."""
    kernel, stride, pads, dilation, ceil_mode = geometry
    side_h = params["max_height"] if large else min(SMALL_SIDE, params["max_height"])
    side_w = params["max_width"] if large else min(SMALL_SIDE, params["max_width"])
    channels_max = params["max_channels"] if large else \
        min(SMALL_GROUPS * params["lanes"] - 1, params["max_channels"])
    for _ in range(1000):
        case = Case(channels=channels or rng.randint(1, channels_max),
                    height=rng.randint(1, side_h), width=rng.randint(1, side_w),
                    kernel=kernel, stride=stride, pads=pads, dilation=dilation,
                    ceil_mode=ceil_mode, is_unsigned=bool(rng.getrandbits(1)))
        if expected_error(case, params) == PoolError.NONE:
            return case
    raise AssertionError(f"no legal size for {geometry}")


def illegal_cases(params: dict) -> list[Case]:
    """One map per refusal reason, each just beyond the limit of ``params``."""
    kmax, wmax, hmax = params["max_kernel"], params["max_width"], params["max_height"]
    smax, dmax, cmax = params["max_stride"], params["max_dilation"], params["max_channels"]
    base = dict(channels=3, height=6, width=6)
    return [
        Case(**base, kernel=(0, 2)),
        Case(**base, kernel=(2, kmax + 1), stride=(2, 2)),
        Case(**base, kernel=(2, 2), stride=(2, 0)),
        Case(**base, kernel=(2, 2), stride=(smax + 1, 1)),
        Case(**base, kernel=(2, 2), dilation=(0, 1)),
        Case(**base, kernel=(2, 2), dilation=(1, dmax + 1)),
        Case(channels=3, height=6, width=wmax + 1),
        Case(channels=3, height=0, width=6),
        Case(channels=3, height=hmax + 1, width=6),
        Case(channels=0, height=6, width=6),
        Case(channels=cmax + 1, height=6, width=6),
        Case(**base, kernel=(3, 3), stride=(1, 1), pads=(0, 3, 0, 0)),
        Case(**base, kernel=(3, 3), stride=(1, 1), pads=(0, 0, 5, 0)),
        Case(channels=3, height=3, width=3, kernel=(5, 5), stride=(1, 1)),
        Case(channels=3, height=3, width=3, kernel=(3, 3), stride=(1, 1), pads=(0, 0, 0, 0),
             dilation=(2, 1)),
        Case(channels=3, height=16, width=16, kernel=(kmax, kmax), stride=(1, 1),
             dilation=(2, 2)),
        Case(channels=2, height=4, width=1, kernel=(2, 2), stride=(1, 1), pads=(0, 1, 0, 1),
             dilation=(1, 2)),
    ]


def sweep(params: dict, seed: int, large: bool = False, random_maps: int = 0) -> list[Case]:
    """The specification sweep, back to back: every geometry of :data:`GEOMETRIES` in int8
    and uint8, every width from 1 to the maximum, channel counts that are and are not
    multiples of the lanes, each refusal reason followed by a legal map, then
    ``random_maps`` random maps (legal or not). Maps are small unless ``large``."""
    rng = random.Random(seed)
    lanes = params["lanes"]
    cases = []
    for geometry in GEOMETRIES:
        for is_unsigned in (False, True):
            case = _legal_sizes(rng, geometry, params, large)
            cases.append(Case(**{**asdict(case), "is_unsigned": is_unsigned}))
    for width in range(1, params["max_width"] + 1):
        geometry = rng.choice([g for g in GEOMETRIES if g[0][1] <= width + sum(g[2][1::2])])
        for _ in range(100):
            case = _legal_sizes(rng, geometry, params, large)
            case = Case(**{**asdict(case), "width": width, "height": min(case.height, 3)})
            if expected_error(case, params) == PoolError.NONE:
                break
        else:
            case = Case(channels=rng.randint(1, 5), height=3, width=width, kernel=(1, 1),
                        stride=(1, 1))
        cases.append(case)
    for channels in (1, lanes - 1, lanes, lanes + 1, 2 * lanes + 1, params["max_channels"]):
        if channels >= 1:
            cases.append(_legal_sizes(rng, rng.choice(GEOMETRIES), params, large,
                                      channels=channels))
    for bad in illegal_cases(params):
        assert expected_error(bad, params) != PoolError.NONE, bad.label()
        cases += [bad, _legal_sizes(rng, rng.choice(GEOMETRIES), params, large)]
    for _ in range(random_maps):
        cases.append(random_case(rng, params))
    return cases


def random_case(rng: random.Random, params: dict) -> Case:
    """A random map, mostly legal; a few have one setting out of range."""
    kmax = params["max_kernel"]
    kernel = tuple(rng.choice([rng.randint(1, kmax), rng.randint(1, 3)]) for _ in range(2))
    small = rng.random() < 0.3
    case = Case(
        channels=rng.randint(1, params["max_channels"]),
        height=rng.randint(1, 4 if small else params["max_height"]),
        width=rng.randint(1, 4 if small else params["max_width"]),
        kernel=kernel,
        stride=tuple(rng.randint(1, params["max_stride"]) for _ in range(2)),
        pads=tuple(rng.randint(0, kernel[i % 2] - 1) for i in range(4)),
        dilation=tuple(rng.randint(1, params["max_dilation"]) for _ in range(2)),
        ceil_mode=bool(rng.getrandbits(1)), is_unsigned=bool(rng.getrandbits(1)))
    if rng.random() < 0.1:
        fields = asdict(case)
        name = rng.choice(["channels", "height", "width", "kernel", "stride", "dilation"])
        value = rng.choice([0, rng.randint(1, 255)])
        fields[name] = value if name in ("channels", "height", "width") else (value, value)
        case = Case(**fields)
    return case


# --- the cocotb testbench ----------------------------------------------------------------------

class TB:
    """Clock, reset, the configuration ports, an AXI-Stream source of maps and a sink."""

    def __init__(self, dut):
        self.dut = dut
        self.params = json.loads(os.environ.get(CONFIG_ENV, json.dumps(TEST_CONFIG)))
        self.lanes = self.params["lanes"]
        assert len(dut.s_axis_tdata) == len(dut.m_axis_tdata) == DATA_WIDTH * self.lanes, \
            f"tdata has {len(dut.s_axis_tdata)} bits, the configuration {self.lanes} lanes"
        self.np_rng = np.random.default_rng(SEED)
        Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
        for prefix in ("s_axis", "m_axis"):     # no per-frame log lines
            logging.getLogger(f"cocotb.{dut._name}.{prefix}").setLevel(logging.WARNING)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
        self.inputs = HandshakeMonitor(dut.clk, dut.s_axis_tvalid, dut.s_axis_tready)
        self.outputs = HandshakeMonitor(dut.clk, dut.m_axis_tvalid, dut.m_axis_tready)
        cocotb.start_soon(self.monitor())

    async def monitor(self) -> None:
        """Both handshake monitors in one coroutine (one Python wake-up per cycle)."""
        while True:
            await RisingEdge(self.dut.clk)
            for side in (self.inputs, self.outputs):
                side.cycle += 1
                if side.tvalid.value == 1 and side.tready.value == 1:
                    side.transfers.append(side.cycle)

    async def reset(self) -> None:
        self.dut.start.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, RESET_CYCLES)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def set_pauses(self, rng: random.Random, stalls: bool) -> None:
        probability = PAUSE_PROBABILITY if stalls else 0.0
        self.source.set_pause_generator(random_pause(rng, probability))
        self.sink.set_pause_generator(random_pause(rng, probability))

    async def start(self, case: Case) -> None:
        for name, value in case.fields().items():
            getattr(self.dut, f"cfg_{name}").value = value
        self.dut.start.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.start.value = 0

    async def wait_done(self, case: Case, cycles: int) -> None:
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
            if self.dut.done.value == 1 and self.dut.busy.value == 0:
                return
        raise AssertionError(f"{case.label()}: not done after {cycles} cycles "
                             f"(busy={self.dut.busy.value}, running={self.dut.running.value})")

    def make_input(self, case: Case) -> tuple[np.ndarray, bytes]:
        x = random_map(case, self.np_rng)
        return x, pack_map(x, self.lanes, self.np_rng)

    async def run(self, cases: list[Case]) -> None:
        """Every case back to back; an illegal case runs while the next legal map's input
        already waits on the stream."""
        pending = None              # (case, x) whose input frame is queued in the source
        for index, case in enumerate(cases):
            code = expected_error(case, self.params)
            if code == PoolError.NONE:
                if pending is None:
                    x, frame = self.make_input(case)
                    await self.source.send(AxiStreamFrame(frame))
                else:
                    assert pending[0] is case
                    x = pending[1]
                pending = None
                await self.check_legal(case, x)
                continue
            following = next((c for c in cases[index + 1:]
                              if expected_error(c, self.params) == PoolError.NONE), None)
            if following is not None and pending is None:
                x, frame = self.make_input(following)
                await self.source.send(AxiStreamFrame(frame))
                pending = (following, x)
            await self.check_refused(case, code)

    async def check_legal(self, case: Case, x: np.ndarray) -> None:
        want = golden(case, x)
        out_h, out_w = want.shape[1:]
        beats_in = case.height * case.width * groups(case.channels, self.lanes)
        beats_out = out_h * out_w * groups(case.channels, self.lanes)
        inputs, outputs = len(self.inputs.transfers), len(self.outputs.transfers)
        await self.start(case)
        limit = SETUP_CYCLES + CYCLES_PER_BEAT * (beats_in + beats_out)
        frame = await with_timeout(self.sink.recv(), limit * CLOCK_PERIOD_NS, "ns")
        assert len(frame.tdata) == beats_out * self.lanes, \
            f"{case.label()}: {len(frame.tdata) // self.lanes} output beats up to last, " \
            f"expected {beats_out}"
        got, extra = unpack_map(frame.tdata, case.channels, self.lanes, out_h, out_w, case.dtype)
        assert np.array_equal(got, want), f"{case.label()}: {first_mismatch(got, want)}"
        assert not extra.any(), f"{case.label()}: lanes past the channels are not 0"
        await self.wait_done(case, limit)
        assert self.dut.error.value == PoolError.NONE, \
            f"{case.label()}: error {PoolError(int(self.dut.error.value)).name}"
        assert self.dut.last_error.value == 0, f"{case.label()}: last_error"
        await ClockCycles(self.dut.clk, 2)
        assert len(self.inputs.transfers) - inputs == beats_in, f"{case.label()}: input count"
        assert len(self.outputs.transfers) - outputs == beats_out, f"{case.label()}: output count"
        assert self.sink.empty() and not self.sink.active, \
            f"{case.label()}: output after the last beat"

    async def check_refused(self, case: Case, code: PoolError) -> None:
        inputs, outputs = len(self.inputs.transfers), len(self.outputs.transfers)
        await self.start(case)
        await self.wait_done(case, SETUP_CYCLES)
        got = PoolError(int(self.dut.error.value))
        assert got == code, f"{case.label()}: error {got.name}, expected {code.name}"
        await ClockCycles(self.dut.clk, 4)
        assert len(self.inputs.transfers) == inputs, f"{case.label()}: refused map took input"
        assert len(self.outputs.transfers) == outputs and self.sink.empty(), \
            f"{case.label()}: refused map produced output"


@cocotb.test()
@cocotb.parametrize(stalls=[False, True])
async def maps_back_to_back(dut, stalls: bool):
    """The sweep without a reset in between, with or without source idles and sink stalls."""
    tb = TB(dut)
    tb.set_pauses(random.Random(f"pauses-{stalls}-{SEED}"), stalls)
    await tb.reset()
    await tb.run(sweep(tb.params, SEED + stalls, **json.loads(os.environ.get(SWEEP_ENV, "{}"))))


@cocotb.test()
async def one_beat_per_cycle(dut):
    """Without pauses the input moves every cycle, but for the documented row-end flushes."""
    tb = TB(dut)
    await tb.reset()
    p = tb.params
    cases = [
        Case(channels=p["lanes"], height=6, width=p["max_width"]),
        Case(channels=2 * p["lanes"] + 1, height=4, width=9, kernel=(3, 3), stride=(1, 1)),
        Case(channels=3, height=5, width=11, kernel=(3, 3), stride=(2, 2)),
        Case(channels=3, height=5, width=11, kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1)),
        Case(channels=5, height=5, width=10, kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1),
             ceil_mode=True),
        Case(channels=2, height=4, width=8, kernel=(5, 5), stride=(1, 1), pads=(2, 2, 4, 4)),
    ]
    for case in cases:
        first = len(tb.inputs.transfers)
        await tb.run([case])
        transfers = tb.inputs.transfers[first:]
        span = transfers[-1] - transfers[0] + 1
        expected = len(transfers) + input_stall_cycles(case, tb.lanes)
        assert span == expected, f"{case.label()}: {len(transfers)} beats took {span} cycles, " \
                                 f"not {expected}"


@cocotb.test()
async def early_last(dut):
    """An input `last` before the final beat sets last_error; the beat count ends the map."""
    tb = TB(dut)
    await tb.reset()
    case = Case(channels=5, height=5, width=6, kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1))
    x, data = tb.make_input(case)
    beat = DATA_WIDTH * tb.lanes // 8
    split = beat * groups(case.channels, tb.lanes) * 7
    await tb.source.send(AxiStreamFrame(data[:split]))
    await tb.source.send(AxiStreamFrame(data[split:]))
    await tb.start(case)
    frame = await with_timeout(tb.sink.recv(), 20_000, "ns")
    want = golden(case, x)
    got, _ = unpack_map(frame.tdata, case.channels, tb.lanes, *want.shape[1:], case.dtype)
    assert np.array_equal(got, want), first_mismatch(got, want)
    await tb.wait_done(case, 100)
    assert tb.dut.last_error.value == 1, "early last not reported"
    # The next map starts with a clear flag.
    await tb.run([Case(channels=2, height=4, width=4)])
    assert tb.dut.last_error.value == 0


# --- pytest entries ----------------------------------------------------------------------------

def _build(component, config, toplevel):
    from sim.runner import config_key, emit_verilog
    key = config_key(toplevel, config)
    return emit_verilog(component(**config), toplevel=toplevel, key=key), key


@pytest.mark.parametrize("sim", toolchain.SIMULATORS)
def test_maxpool(sim):
    from sim.runner import run_cocotb

    toplevel = "maxpool_axis"
    source, key = _build(MaxPoolAxis, TEST_CONFIG, toplevel)
    run_cocotb(sim, sources=[source], toplevel=toplevel, key=key, test_module=__name__,
               extra_env={CONFIG_ENV: json.dumps(TEST_CONFIG),
                          SWEEP_ENV: json.dumps(SWEEP[sim])})


# --- arguments, signature, memories and ports (no simulator) --------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    ({"lanes": 3}, ValueError, "lanes must be a power of two up to 64, not 3"),
    ({"lanes": 128}, ValueError, "lanes must be a power of two up to 64, not 128"),
    ({"lanes": 0}, ValueError, "lanes must be a power of two up to 64, not 0"),
    ({"lanes": 4.0}, ValueError, "lanes must be a power of two up to 64, not 4.0"),
    ({"max_kernel": 0}, ValueError, "max_kernel must be an integer 1..255, not 0"),
    ({"max_kernel": 256}, ValueError, "max_kernel must be an integer 1..255, not 256"),
    ({"max_kernel": "7"}, ValueError, "max_kernel must be an integer 1..255, not '7'"),
    ({"max_width": 0}, ValueError, "max_width must be an integer 1..65535, not 0"),
    ({"max_width": 65536}, ValueError, "max_width must be an integer 1..65535, not 65536"),
    ({"max_height": 0}, ValueError, "max_height must be an integer 1..65535, not 0"),
    ({"max_channels": 0}, ValueError, "max_channels must be an integer 1..65535, not 0"),
    ({"max_channels": True}, ValueError, "max_channels must be an integer 1..65535, not True"),
    ({"max_stride": 0}, ValueError, "max_stride must be an integer 1..255, not 0"),
    ({"max_dilation": 300}, ValueError, "max_dilation must be an integer 1..255, not 300"),
    ({"window_slots": -1}, ValueError, "window_slots must be an integer 0..7, not -1"),
    ({"max_kernel": 3, "window_slots": 4}, ValueError,
     "window_slots must be an integer 0..3, not 4"),
])
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error) as info:
        MaxPool(**kwargs)
    assert str(info.value) == message
    with pytest.raises(error):
        MaxPoolAxis(**kwargs)


def test_defaults():
    dut = MaxPool(8, 7, 224, 64)
    assert dut.params == pool_params() == dict(
        lanes=8, max_kernel=7, max_width=224, max_channels=64, max_height=224, max_stride=7,
        max_dilation=7, window_slots=7)
    assert (dut.lanes, dut.window_slots, dut.groups, dut.out_width_max) == (8, 7, 8, 230)


def test_signature():
    dut = MaxPool(lanes=4, max_kernel=3, max_width=10, max_channels=9)
    members = dut.signature.members
    assert members["i"].flow == wiring.In and members["o"].flow == wiring.Out
    assert members["config"].flow == wiring.In and members["start"].flow == wiring.In
    for name in ("busy", "running", "done", "last_error", "error"):
        assert members[name].flow == wiring.Out
    assert Shape.cast(members["error"].shape) == unsigned(POOL_ERROR_WIDTH)
    assert max(PoolError) < 1 << POOL_ERROR_WIDTH
    assert dut.i.payload.shape() == dut.o.payload.shape() == beat_layout(4)
    assert Shape.cast(beat_layout(4)["data"].shape).width == 4 * DATA_WIDTH
    fields = {name: Shape.cast(field.shape) for name, field in config_layout()}
    assert fields == {
        **{n: unsigned(DIM_WIDTH) for n in ("height", "width", "channels")},
        **{n: unsigned(SMALL_WIDTH) for n in (
            "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_top", "pad_left",
            "pad_bottom", "pad_right", "dilation_h", "dilation_w")},
        "ceil_mode": unsigned(1), "is_unsigned": unsigned(1)}


def test_memory_formula():
    params = dict(lanes=8, max_kernel=7, max_width=224, max_channels=64)
    word = 7 * 8 * DATA_WIDTH
    assert memory_depths(8, 7, 224, 64) == {"horizontal": 8, "vertical": 230 * 8}
    assert memory_bits(**params) == {"horizontal": 8 * word, "vertical": 230 * 8 * word}
    assert memory_bits(**params, window_slots=2)["vertical"] == 230 * 8 * 2 * 8 * DATA_WIDTH
    assert memory_depths(1, 1, 1, 1) == {"horizontal": 2, "vertical": 2}   # no 0-bit address


@pytest.mark.parametrize("params", [
    dict(lanes=4, max_kernel=7, max_width=16, max_channels=16),
    dict(lanes=2, max_kernel=3, max_width=5, max_channels=3, window_slots=2),
])
def test_memories_in_verilog(params):
    """Both partial-maximum stores are memories (block RAM), not registers, of the formula."""
    dut = MaxPool(**params)
    text = verilog.convert(dut, name="maxpool", emit_src=False)
    width = dut.window_slots * dut.lanes * DATA_WIDTH
    for name, depth in memory_depths(dut.lanes, dut.max_kernel, dut.max_width,
                                     dut.max_channels).items():
        # The vertical store is a RegisteredRam (rtl.bram): its memory is `mem` in `vmem`.
        memory = {"horizontal": "hmem", "vertical": "mem"}[name]
        assert f"reg [{width - 1}:0] {memory} [{depth - 1}:0];" in text


def test_axis_top_ports():
    top = MaxPoolAxis(lanes=4, max_kernel=3, max_width=8, max_channels=8)
    text = verilog.convert(top, name="maxpool_axis", emit_src=False)
    header = text[text.index("module maxpool_axis("):].split(";")[0]
    ports = {port.strip() for port in header.split("(")[1].rstrip(")").split(",")}
    assert ports == {"clk", "rst", "s_axis_tdata", "s_axis_tvalid", "s_axis_tready",
                     "s_axis_tlast", "m_axis_tdata", "m_axis_tvalid", "m_axis_tready",
                     "m_axis_tlast", "start", "busy", "running", "done", "error", "last_error",
                     *(f"cfg_{name}" for name, _ in config_layout())}
    assert "input [31:0] s_axis_tdata;" in text and "output [31:0] m_axis_tdata;" in text
    assert f"output [{POOL_ERROR_WIDTH - 1}:0] error;" in text


# --- Amaranth simulator against the golden model ----------------------------------------------

def beats_of(data: bytes, lanes: int) -> list[list[int]]:
    return [list(data[k:k + lanes]) for k in range(0, len(data), lanes)]


def simulate(dut: MaxPool, jobs: list[tuple], seed: int,
             pause: float = SIM_PAUSE_PROBABILITY) -> list[dict]:
    """Run ``jobs`` of (Case, input beats, last flags) back to back through ``dut`` with random
    idles and stalls (each with probability ``pause`` a cycle). Per job: output beats and
    lasts, error, last_error, beats taken and the cycles of the input transfers."""
    rng = random.Random(seed)
    results = []

    async def testbench(ctx):
        for case, beats, lasts in jobs:
            for name, value in case.fields().items():
                ctx.set(getattr(dut.config, name), value)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            out, out_last, taken, in_cycles = [], [], 0, []
            limit = SETUP_CYCLES + CYCLES_PER_BEAT * (len(beats) + 1) * 2
            for cycle in range(limit):
                offer = taken < len(beats) and rng.random() >= pause
                ctx.set(dut.i.valid, offer)
                if offer:
                    ctx.set(dut.i.payload, {"data": beats[taken], "last": lasts[taken]})
                ready = rng.random() >= pause
                ctx.set(dut.o.ready, ready)
                _, _, i_ready, o_valid, o_payload, busy = await ctx.tick().sample(
                    dut.i.ready, dut.o.valid, dut.o.payload, dut.busy)
                if offer and i_ready:
                    taken += 1
                    in_cycles.append(cycle)
                if ready and o_valid:
                    out.append([int(v) for v in o_payload.data])
                    out_last.append(int(o_payload.last))
                if not busy:
                    break
            else:
                raise AssertionError(f"{case.label()}: still busy after {limit} cycles")
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 1)
            for _ in range(4):                       # nothing may follow
                _, _, o_valid = await ctx.tick().sample(dut.o.valid)
                assert not o_valid, f"{case.label()}: output after the map"
            results.append(dict(out=out, last=out_last, error=PoolError(ctx.get(dut.error)),
                                last_error=ctx.get(dut.last_error), done=ctx.get(dut.done),
                                taken=taken, in_cycles=in_cycles))

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD_S)
    sim.add_testbench(testbench)
    sim.run()
    return results


def check_jobs(dut, cases, seed, pause=SIM_PAUSE_PROBABILITY):
    """Simulate ``cases`` and compare every output with the golden model using ``==``."""
    nprng = np.random.default_rng(seed)
    jobs, maps = [], []
    for case in cases:
        if expected_error(case, dut.params) == PoolError.NONE:
            x = random_map(case, nprng)
            beats = beats_of(pack_map(x, dut.lanes, nprng), dut.lanes)
            maps.append(x)
        else:
            beats = [[1] * dut.lanes] * 3          # offered, must not be taken
            maps.append(None)
        jobs.append((case, beats, [0] * (len(beats) - 1) + [1]))
    for (case, beats, _), x, got in zip(jobs, maps, simulate(dut, jobs, seed, pause)):
        code = expected_error(case, dut.params)
        assert got["error"] == code and got["done"], f"{case.label()}: {got['error'].name}"
        if code != PoolError.NONE:
            assert got["taken"] == 0 and not got["out"], f"{case.label()}: refused map ran"
            continue
        want = golden(case, x)
        data = bytes(v for beat in got["out"] for v in beat)
        out_beats = want.shape[1] * want.shape[2] * groups(case.channels, dut.lanes)
        assert len(got["out"]) == out_beats, f"{case.label()}: {len(got['out'])} output beats"
        assert got["last"] == [0] * (out_beats - 1) + [1], f"{case.label()}: last flags"
        result, extra = unpack_map(data, case.channels, dut.lanes, *want.shape[1:], case.dtype)
        assert np.array_equal(result, want), case.label()
        assert not extra.any() and got["taken"] == len(beats) and not got["last_error"]
    return jobs


@pytest.mark.parametrize("params", [
    dict(lanes=1, max_kernel=3, max_width=6, max_channels=3, max_stride=2, max_dilation=3,
         window_slots=2),
    dict(lanes=8, max_kernel=4, max_width=7, max_height=5, max_channels=9, max_stride=4,
         max_dilation=2),
    dict(lanes=2, max_kernel=1, max_width=3, max_channels=2),
])
def test_against_model(params):
    """Random maps, the limits, illegal settings between them; idles and stalls."""
    dut = MaxPool(**params)
    rng = random.Random(str(params))
    cases = [random_case(rng, dut.params) for _ in range(14)]
    cases += [c for c in illegal_cases(dut.params)[::3]]
    cases += [Case(channels=1, height=4, width=dut.max_width, kernel=(dut.max_kernel,) * 2,
                   stride=(1, 1), ceil_mode=True)]            # ceil_mode with stride 1 = floor
    cases += [Case(channels=dut.max_channels, height=dut.max_height, width=dut.max_width,
                   kernel=(dut.max_kernel,) * 2, stride=(1, 1),
                   pads=(dut.max_kernel - 1,) * 4, is_unsigned=True)]
    rng.shuffle(cases)
    check_jobs(dut, cases, seed=len(str(params)))


def test_one_column_rows_under_stalls():
    """Rows of a single output word (one column, one channel group) write the same word of
    the vertical memory one row after the other, the nearest pair a pipeline place apart:
    the case the vertical update's forwarding is sized for (``rtl.maxpool``, P3b), here
    with the sink stalled often, so that rows end while the pipeline stands still."""
    dut = MaxPool(lanes=2, max_kernel=4, max_width=6, max_height=12, max_channels=4,
                  max_stride=3, max_dilation=2)
    cases = [Case(channels=channels, height=12, width=1, kernel=(kh, 1), stride=(sh, 1),
                  pads=(pt, 0, pb, 0), is_unsigned=bool(k % 2))
             for k, (channels, kh, sh, pt, pb) in enumerate([
                 (1, 2, 1, 0, 0), (2, 3, 1, 1, 1), (2, 4, 1, 0, 3), (1, 3, 2, 2, 0),
                 (2, 2, 1, 1, 0), (1, 4, 3, 3, 3), (2, 3, 1, 0, 0), (1, 2, 1, 1, 1)])]
    for seed in range(3):
        check_jobs(dut, cases, seed=seed, pause=0.6)


def test_sweep_subset_without_pauses():
    dut = MaxPool(lanes=4, max_kernel=7, max_width=16, max_height=16, max_channels=16,
                  max_stride=3, max_dilation=2)
    cases = sweep(dut.params, seed=5)[::6]
    check_jobs(dut, cases, seed=5, pause=0.0)


def test_missing_and_early_last():
    """`last` missing on the final beat, or set early, sets last_error; the count decides."""
    dut = MaxPool(lanes=2, max_kernel=3, max_width=6, max_channels=4)
    case = Case(channels=3, height=3, width=4, kernel=(2, 2), stride=(1, 2), pads=(1, 0, 0, 1))
    nprng = np.random.default_rng(0)
    x = random_map(case, nprng)
    beats = beats_of(pack_map(x, dut.lanes, nprng), dut.lanes)
    n = len(beats)
    jobs = [(case, beats, [0] * n), (case, beats, [1] + [0] * (n - 2) + [1]),
            (case, beats, [0] * (n - 1) + [1])]
    want = golden(case, x)
    for number, got in enumerate(simulate(dut, jobs, seed=1)):
        data = bytes(v for beat in got["out"] for v in beat)
        result, _ = unpack_map(data, case.channels, dut.lanes, *want.shape[1:], case.dtype)
        assert np.array_equal(result, want) and got["taken"] == n
        assert got["last_error"] == (number < 2), f"job {number}"


def test_no_unit():
    """``window_slots = 0``: no memory, every start refused with NO_UNIT, nothing taken."""
    params = dict(lanes=2, max_kernel=3, max_width=8, max_channels=4, window_slots=0)
    assert memory_bits(**params) == {"horizontal": 0, "vertical": 0}
    dut = MaxPool(**params)
    assert "reg " in verilog.convert(MaxPool(**params), name="p")      # it builds

    async def testbench(ctx):
        ctx.set(dut.i.valid, 1)
        assert (ctx.get(dut.done), ctx.get(dut.busy), ctx.get(dut.running)) == (0, 0, 0)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(3):
            assert (ctx.get(dut.done), ctx.get(dut.error)) == (1, PoolError.NO_UNIT)
            assert (ctx.get(dut.busy), ctx.get(dut.running), ctx.get(dut.i.ready),
                    ctx.get(dut.o.valid), ctx.get(dut.last_error)) == (0, 0, 0, 0, 0)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
