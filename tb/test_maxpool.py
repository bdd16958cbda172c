"""cocotb tests of the max-pool unit against model.pool.maxpool2d, and their pytest entries.

The top level is :class:`rtl.maxpool.MaxPoolAxis` (one build of :data:`TEST_CONFIG`), driven
with cocotbext-axi: a frame is one feature map in the HWC beat format of :mod:`rtl.maxpool`
(``lanes`` bytes per beat, ``ceil(C / lanes)`` beats per pixel, lanes past ``C`` filled with
random bytes that must be ignored). A sweep of maps runs back to back without a reset; every
output map is compared with :func:`model.pool.maxpool2d` using ``==`` (a failure names the
first differing channel, row and column), its beat count and ``last`` are checked by the
frame boundaries, and nothing may follow. Illegal settings must be refused with the expected
:class:`rtl.maxpool.PoolError` while the next map's input is already waiting on the stream:
not one beat may be taken and nothing output, and the next legal map must still be right.

pytest runs the specification sweep on Icarus and, on Verilator, the same sweep plus random
maps, each with and without random idle cycles and backpressure; plus throughput and
``last``-error checks, and Verilator lint of the emitted Verilog.
"""

import json
import logging
import os
import random
from dataclasses import asdict, dataclass

import cocotb
import numpy as np
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from model.pool import maxpool2d
from rtl.maxpool import DATA_WIDTH, MaxPool, MaxPoolAxis, PoolError, hardware_params
from sim import toolchain
from tb.axis import HandshakeMonitor, random_pause

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
#: Environment variables passing the configuration and the sweep to the simulation.
CONFIG_ENV = "CONVCORE_MAXPOOL_CONFIG"
SWEEP_ENV = "CONVCORE_MAXPOOL_SWEEP"
SEED = 20261127
DTYPES = {0: np.dtype(np.int8), 1: np.dtype(np.uint8)}


# --- maps, expected results and stream formats (pure Python, also used by tb/test_maxpool_elab.py)

@dataclass(frozen=True)
class Case:
    """One pooling map: geometry, element type and the error the unit must report."""
    channels: int
    height: int
    width: int
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)
    pads: tuple = (0, 0, 0, 0)          # ONNX order: top, left, bottom, right
    dilation: tuple = (1, 1)
    ceil_mode: bool = False
    is_unsigned: bool = False

    @property
    def dtype(self) -> np.dtype:
        return DTYPES[int(self.is_unsigned)]

    def fields(self) -> dict:
        """The unit's ``config`` fields."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        top, left, bottom, right = self.pads
        return dict(height=self.height, width=self.width, channels=self.channels,
                    kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_top=top,
                    pad_left=left, pad_bottom=bottom, pad_right=right, dilation_h=dh,
                    dilation_w=dw, ceil_mode=int(self.ceil_mode),
                    is_unsigned=int(self.is_unsigned))

    def label(self) -> str:
        return (f"{self.channels}x{self.height}x{self.width} k{self.kernel} s{self.stride} "
                f"p{self.pads} d{self.dilation}{' ceil' if self.ceil_mode else ''} "
                f"{self.dtype.name}")


def expected_error(case: Case, params: dict) -> PoolError:
    """The error the unit must report for ``case`` on hardware ``params`` (first check wins).

    The hardware limits come from ``params``; the geometric checks are ONNX's, and each of
    them is confirmed by the golden model raising for exactly those maps.
    """
    limits = hardware_params(**params)
    kernel_max, slots = limits["max_kernel"], limits["window_slots"]

    def outside(values, hi):
        return any(v == 0 or v > hi for v in values)
    (kh, kw), (sh, sw), (dh, dw) = case.kernel, case.stride, case.dilation
    top, left, bottom, right = case.pads
    keff_h, keff_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    checks = [
        (PoolError.KERNEL, outside(case.kernel, kernel_max)),
        (PoolError.DILATION, outside(case.dilation, limits["max_dilation"])),
        (PoolError.STRIDE, outside(case.stride, limits["max_stride"])),
        (PoolError.SIZE, outside([case.height], limits["max_height"])
         or outside([case.width], limits["max_width"])),
        (PoolError.CHANNELS, outside([case.channels], limits["max_channels"])),
        (PoolError.PAD, max(top, bottom) >= kh or max(left, right) >= kw),
        (PoolError.NO_OUTPUT, keff_h > case.height + top + bottom
         or keff_w > case.width + left + right),
        (PoolError.WINDOW_SLOTS, keff_h > slots * sh or keff_w > slots * sw),
    ]
    for code, bad in checks:
        if bad:
            return code
    try:
        maxpool2d(np.zeros((1, case.height, case.width), np.int8), case.kernel, case.stride,
                  case.pads, case.dilation, case.ceil_mode)
    except ValueError as exc:
        assert "covers only padding" in str(exc), f"{case.label()}: unexpected model error {exc}"
        return PoolError.EMPTY_WINDOW
    return PoolError.NONE


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
    pauses: ``G`` per extra horizontal window that ends on the last column, on every row but
    the last (see :mod:`rtl.maxpool`)."""
    (_, kw), (_, sw), (_, dw) = case.kernel, case.stride, case.dilation
    _, left, _, right = case.pads
    out_w = golden(case, np.zeros((1, case.height, case.width), case.dtype)).shape[-1]
    keff = (kw - 1) * dw + 1
    ending = sum(1 for o in range(out_w) if o * sw - left + keff - 1 >= case.width - 1)
    return (case.height - 1) * max(ending - 1, 0) * groups(case.channels, lanes)


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
