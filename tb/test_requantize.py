"""Tests of the requantize unit (rtl/requantize.py) against model.quant.requantize: cocotb on
Icarus and Verilator, and Amaranth's simulator.

The cocotb top level is :class:`rtl.requantize.RequantizeAxis`, driven with cocotbext-axi: one
transfer carries one accumulator with its per-channel constants packed in ``s_axis_tdata``
(one "byte" of the full width), a frame is a run of samples ending with ``last``. Every output
is compared with the golden model with ``==``, in order, frame by frame.

Without an HDL simulator: the constructor's arguments, the signature and the top level's ports,
the netlist of the iterative variant; and amaranth.sim runs of :class:`rtl.requantize.Requantize`
against the model, its latency and throughput.
"""

import json
import logging
import os
import random
import re
from collections import defaultdict

import cocotb
import numpy as np
import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import wiring
from amaranth.sim import Simulator
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from model import quant
from rtl.requantize import (Requantize, RequantizeAxis, axis_tdata_layout, input_layout,
                             output_layout)
from sim import toolchain
from tb.axis import HandshakeMonitor, random_pause, split_frames
from tb.testing import MULT18X18D_MODEL

# Several tests build components only to inspect them or to see their constructor fail.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

CLOCK_PERIOD_NS = 10
RESET_CYCLES = 4
#: Probability that the source idles or the sink stalls in a cycle, when enabled.
PAUSE_PROBABILITY = 0.4
#: Probability that a random sample ends its frame.
LAST_PROBABILITY = 0.1
RANDOM_SAMPLES = 1500
TIE_SAMPLES = 300
#: Ties mostly use odd factors up to this, so that their rounded value is not saturated.
SMALL_ODD_MAX = 15
#: Realistic scales bring an accumulator to at most 2**SCALE_OCTAVES, a little beyond 8 bits.
SCALE_OCTAVES = 9
#: The unit's hardware configuration; pytest passes it to the simulation in this variable.
CONFIG_ENV = "CONVCORE_REQUANTIZE_CONFIG"
DEFAULT_CONFIG = {"acc_width": 32, "mult_width": 31, "shift_width": 6, "out_width": 8}
#: The configurations the simulators run: both variants of the unit.
#: The variants: pipelined, iterative, and pipelined with its partial products in ECP5
#: MULT18X18D primitives (simulated with their behavioural model).
CONFIGS = {"pipelined": DEFAULT_CONFIG, "iterative": {**DEFAULT_CONFIG, "iterative": True},
           "ecp5": {**DEFAULT_CONFIG, "dsp": "ecp5"}}
DTYPES = {0: np.dtype(np.int8), 1: np.dtype(np.uint8)}
#: Clock period and idle/stall probability of the Amaranth-simulator runs.
CLOCK_PERIOD_S = 1e-8
SIM_PAUSE_PROBABILITY = 0.3


# --- stimulus and expected results (pure Python) ---------------------------------------------

def sample(acc, multiplier, shift, zero_point, relu, is_unsigned, last=0) -> dict:
    return {"acc": int(acc), "multiplier": int(multiplier), "shift": int(shift),
            "zero_point": int(zero_point), "relu": int(relu), "is_unsigned": int(is_unsigned),
            "last": int(last)}


def _random_type(rng: random.Random) -> tuple[int, int]:
    """(is_unsigned, zero_point) with the zero point inside the type's range, edges included."""
    is_unsigned = rng.getrandbits(1)
    lo, hi = quant.dtype_range(DTYPES[is_unsigned])
    zero_point = rng.choice([lo, hi, rng.randint(lo, hi), rng.randint(lo, hi)])
    return is_unsigned, zero_point


def random_samples(rng: random.Random, count: int, acc_bits: int = quant.ACC_BITS,
                   mult_bits: int = quant.MULTIPLIER_BITS) -> list[dict]:
    """Random samples mixing realistic scales (from quantize_multiplier) with arbitrary fields.

    Accumulators are full-range, of random magnitude or at the signed edges; multipliers come
    from real scales fitted to the accumulator's magnitude, uniform over the field or at its
    edges. ``acc_bits`` and
    ``mult_bits`` narrow the fields for smaller hardware configurations.
    """
    acc_min, acc_max = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    mult_max = (1 << mult_bits) - 1
    acc_edges = [acc_min, acc_min + 1, -1, 0, 1, acc_max - 1, acc_max]
    samples = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.4:
            acc = rng.randint(acc_min, acc_max)
        elif kind < 0.9:
            magnitude = 1 << rng.randint(0, acc_bits - 1)
            acc = max(acc_min, min(acc_max, rng.randint(-magnitude, magnitude)))
        else:
            acc = rng.choice(acc_edges)
        kind = rng.random()
        if kind < 0.6:
            # A scale that maps |acc| to about 2**-1 .. 2**SCALE_OCTAVES: mostly inside the
            # output range, often just beyond it.
            octave = rng.uniform(-1, SCALE_OCTAVES) - abs(acc).bit_length()
            multiplier, shift = quant.quantize_multiplier(2.0 ** octave)
            multiplier >>= max(0, quant.MULTIPLIER_BITS - mult_bits)
        elif kind < 0.9:
            multiplier = rng.randint(0, mult_max)
            shift = rng.randint(quant.SHIFT_MIN, quant.SHIFT_MAX)
        else:
            multiplier = rng.choice([0, 1, (mult_max + 1) // 2, mult_max])
            shift = rng.choice([quant.SHIFT_MIN, quant.SHIFT_MIN + 1, quant.SHIFT_MAX - 1,
                                quant.SHIFT_MAX, rng.randint(quant.SHIFT_MIN, quant.SHIFT_MAX)])
        is_unsigned, zero_point = _random_type(rng)
        samples.append(sample(acc, multiplier, shift, zero_point, rng.getrandbits(1), is_unsigned,
                              rng.random() < LAST_PROBABILITY))
    return samples


def _odd(rng: random.Random, odd_max: int) -> int:
    """A random odd number up to ``odd_max``, usually a small one."""
    small = rng.random() < 0.8
    return rng.randrange(1, min(odd_max, SMALL_ODD_MAX if small else odd_max) + 1, 2)


def tie_samples(rng: random.Random, count: int) -> list[dict]:
    """Exact ties: ``acc * multiplier`` is an odd multiple of ``2**(shift - 1)``.

    The odd factors are mostly small so that the rounded value lands inside the output range
    instead of saturating; both signs, every shift from SHIFT_MIN to SHIFT_MAX.
    """
    acc_pow_max = quant.ACC_BITS - 1             # -2**31 is the only accumulator with 31 twos
    mult_pow_max = quant.MULTIPLIER_BITS - 1
    samples = []
    for _ in range(count):
        shift = rng.randint(quant.SHIFT_MIN, quant.SHIFT_MAX)
        twos = shift - 1                         # acc * multiplier = odd * 2**twos
        acc_pow = rng.randint(max(0, twos - mult_pow_max), min(twos, acc_pow_max))
        mult_pow = twos - acc_pow
        if acc_pow == acc_pow_max:
            acc = -(1 << acc_pow)
        else:
            acc = rng.choice([-1, 1]) * _odd(rng, ((1 << acc_pow_max) - 1) >> acc_pow) << acc_pow
        multiplier = _odd(rng, ((1 << quant.MULTIPLIER_BITS) - 1) >> mult_pow) << mult_pow
        is_unsigned, zero_point = _random_type(rng)
        samples.append(sample(acc, multiplier, shift, zero_point, rng.getrandbits(1), is_unsigned,
                              rng.random() < LAST_PROBABILITY))
    return samples


def edge_samples() -> list[dict]:
    """Every combination of edge accumulators, multipliers, shifts, types, zero points and ReLU."""
    acc_min, acc_max = quant.ACC_MIN, quant.ACC_MAX
    accs = [acc_min, acc_min + 1, acc_min // 2, -1, 0, 1, acc_max // 2 + 1, acc_max]
    mult_max = (1 << quant.MULTIPLIER_BITS) - 1
    multipliers = [0, 1, (mult_max + 1) // 2, mult_max]
    shifts = [quant.SHIFT_MIN, quant.SHIFT_MIN + 1, 31, 32, quant.SHIFT_MAX - 1, quant.SHIFT_MAX]
    samples = []
    for is_unsigned, dtype in DTYPES.items():
        lo, hi = quant.dtype_range(dtype)
        for zero_point in (lo, (lo + hi + 1) // 2, hi):
            for relu in (0, 1):
                for shift in shifts:
                    for multiplier in multipliers:
                        for acc in accs:
                            samples.append(sample(acc, multiplier, shift, zero_point, relu,
                                                  is_unsigned))
    samples[-1]["last"] = 1
    return samples


def golden(samples: list[dict]) -> list[int]:
    """Expected output bit patterns, one per sample, from model.quant.requantize.

    Samples of one (type, relu) pair go through the model in one call, their constants as
    per-channel arrays with one channel per sample.
    """
    groups = defaultdict(list)
    for index, s in enumerate(samples):
        groups[s["is_unsigned"], s["relu"]].append(index)
    expected = [0] * len(samples)
    for (is_unsigned, relu), indices in groups.items():
        column = {key: np.array([samples[j][key] for j in indices], dtype=np.int64)
                  for key in ("acc", "multiplier", "shift", "zero_point")}
        out = quant.requantize(column["acc"], column["multiplier"], column["shift"],
                               column["zero_point"], DTYPES[is_unsigned], relu=bool(relu), axis=-1)
        for j, value in zip(indices, out.view(np.uint8)):
            expected[j] = int(value)
    return expected


# --- the cocotb testbench ----------------------------------------------------------------------

class TB:
    """Clock, reset, an AXI-Stream source of samples and a sink of activations."""

    def __init__(self, dut):
        self.dut = dut
        config = json.loads(os.environ.get(CONFIG_ENV, json.dumps(DEFAULT_CONFIG)))
        core = Requantize(**config)
        self.latency, self.interval, self.capacity = core.latency, core.interval, core.capacity
        self.tdata_layout = axis_tdata_layout(core.acc_width, core.mult_width, core.shift_width,
                                              core.out_width)
        assert len(dut.s_axis_tdata) == self.tdata_layout.size, \
            f"s_axis_tdata has {len(dut.s_axis_tdata)} bits, the layout {self.tdata_layout.size}"
        assert len(dut.m_axis_tdata) == core.out_width
        Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
        for prefix in ("s_axis", "m_axis"):     # no per-frame log lines
            logging.getLogger(f"cocotb.{dut._name}.{prefix}").setLevel(logging.WARNING)
        # One transfer is one sample: a single "byte" as wide as the bus.
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst,
                                      byte_lanes=1)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst,
                                  byte_lanes=1)

    async def reset(self) -> None:
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, RESET_CYCLES)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def set_pauses(self, rng: random.Random, idle: bool, backpressure: bool) -> None:
        if idle:
            self.source.set_pause_generator(random_pause(rng, PAUSE_PROBABILITY))
        if backpressure:
            self.sink.set_pause_generator(random_pause(rng, PAUSE_PROBABILITY))

    def pack(self, s: dict) -> int:
        return self.tdata_layout.const({name: s[name] for name, _ in self.tdata_layout}).as_bits()

    def timeout_ns(self, transfers: int) -> int:
        """Generous bound on the time ``transfers`` samples need under any pause pattern."""
        return (self.latency + (self.interval + 20) * (transfers + RESET_CYCLES)) * CLOCK_PERIOD_NS

    async def check(self, samples: list[dict]) -> None:
        """Send ``samples``, compare every output with the golden model, expect nothing more."""
        expected = split_frames(golden(samples), [s["last"] for s in samples])
        sent = split_frames([self.pack(s) for s in samples], [s["last"] for s in samples])
        for frame in sent:
            await self.source.send(AxiStreamFrame(frame))
        first = 0
        for number, want in enumerate(expected):
            frame = await with_timeout(self.sink.recv(), self.timeout_ns(len(samples)), "ns")
            got = list(frame.tdata)
            assert got == want, mismatch(number, got, want, samples[first:first + len(want)])
            first += len(want)
        # Nothing may follow: no duplicate, no stray transfer, no half frame.
        await ClockCycles(self.dut.clk, 4 * self.latency)
        assert self.sink.empty(), f"{self.sink.count()} unexpected frames after the last one"
        assert not self.sink.active, "a partial frame follows the last expected one"
        assert self.source.empty() and not self.source.active


def mismatch(number: int, got: list[int], want: list[int], frame_samples: list[dict]) -> str:
    if len(got) != len(want):
        return f"frame {number}: {len(got)} outputs, expected {len(want)}"
    k = next(k for k in range(len(got)) if got[k] != want[k])
    return f"frame {number}, output {k}: got {got[k]}, expected {want[k]} for {frame_samples[k]}"


@cocotb.test()
@cocotb.parametrize(idle=[False, True], backpressure=[False, True])
async def random_stream(dut, idle: bool, backpressure: bool):
    """Random samples and exact ties, with or without source idles and sink stalls."""
    rng = random.Random(f"random_stream-{idle}-{backpressure}-{cocotb.RANDOM_SEED}")
    tb = TB(dut)
    tb.set_pauses(rng, idle, backpressure)
    await tb.reset()
    samples = random_samples(rng, RANDOM_SAMPLES) + tie_samples(rng, TIE_SAMPLES)
    rng.shuffle(samples)
    samples[-1]["last"] = 1
    await tb.check(samples)


@cocotb.test()
async def edge_cases(dut):
    """Every edge combination, through random idles and stalls."""
    rng = random.Random(f"edge_cases-{cocotb.RANDOM_SEED}")
    tb = TB(dut)
    tb.set_pauses(rng, idle=True, backpressure=True)
    await tb.reset()
    await tb.check(edge_samples())


@cocotb.test()
async def latency_and_throughput(dut):
    """Documented latency, a sample every `interval` cycles, and a stalled output holding
    `capacity` samples."""
    rng = random.Random(f"latency_and_throughput-{cocotb.RANDOM_SEED}")
    tb = TB(dut)
    inputs = HandshakeMonitor(dut.clk, dut.s_axis_tvalid, dut.s_axis_tready)
    outputs = HandshakeMonitor(dut.clk, dut.m_axis_tvalid, dut.m_axis_tready)
    await tb.reset()
    cocotb.start_soon(inputs.run())
    cocotb.start_soon(outputs.run())

    # Free-flowing: the k-th output appears `latency` cycles after the k-th input, and the
    # inputs follow each other every `interval` cycles (back to back when pipelined).
    samples = random_samples(rng, 64)
    samples[-1]["last"] = 1
    await tb.check(samples)
    assert len(inputs.transfers) == len(outputs.transfers) == len(samples)
    delays = {o - i for i, o in zip(inputs.transfers, outputs.transfers)}
    assert delays == {tb.latency}, f"input-to-output delays {sorted(delays)}, not {tb.latency}"
    gaps = {b - a for a, b in zip(inputs.transfers, inputs.transfers[1:])}
    assert gaps == {tb.interval}, f"inputs {sorted(gaps)} cycles apart, not {tb.interval}"

    # Stalled output: the unit takes exactly `capacity` samples, then holds them.
    inputs.transfers.clear()
    outputs.transfers.clear()
    tb.sink.pause = True
    samples = random_samples(rng, 4 * tb.latency)
    samples[-1]["last"] = 1
    check = cocotb.start_soon(tb.check(samples))
    await ClockCycles(dut.clk, 8 * tb.latency + tb.capacity * tb.interval)
    assert len(inputs.transfers) == tb.capacity, \
        f"a stalled output let {len(inputs.transfers)} inputs in, not {tb.capacity}"
    assert not outputs.transfers
    tb.sink.pause = False
    await check


# --- pytest entry ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", CONFIGS)
@pytest.mark.parametrize("sim", toolchain.SIMULATORS)
def test_requantize(sim, variant):
    from sim.runner import config_key, emit_verilog, run_cocotb

    config = CONFIGS[variant]
    toplevel = "requantize_axis"
    key = config_key(toplevel, config)
    source = emit_verilog(RequantizeAxis(**config), toplevel=toplevel, key=key)
    models = [MULT18X18D_MODEL] if config.get("dsp") == "ecp5" else []
    run_cocotb(sim, sources=[source, *models], toplevel=toplevel, key=key, test_module=__name__,
               extra_env={CONFIG_ENV: json.dumps(config)})


# --- arguments, signature and ports (no simulator) -------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    ({"acc_width": 1}, ValueError, "acc_width must be at least 2, not 1"),
    ({"acc_width": 32.0}, TypeError, "acc_width must be an integer, not 32.0"),
    ({"mult_width": 0}, ValueError, "mult_width must be at least 1, not 0"),
    ({"mult_width": True}, TypeError, "mult_width must be an integer, not True"),
    ({"shift_width": 0}, ValueError, "shift_width must be at least 1, not 0"),
    ({"shift_width": 7}, ValueError, "shift_width must be at most 6 for a 63-bit product, not 7"),
    ({"acc_width": 16, "mult_width": 15, "shift_width": 6}, ValueError,
     "shift_width must be at most 5 for a 31-bit product, not 6"),
    ({"out_width": 1}, ValueError, "out_width must be at least 2, not 1"),
    ({"out_width": "8"}, TypeError, "out_width must be an integer, not '8'"),
    ({"iterative": 1}, TypeError, "iterative must be a bool, not 1"),
    ({"dsp": "ice40"}, ValueError, "dsp must be one of 'generic', 'ecp5', not 'ice40'"),
])
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error) as info:
        Requantize(**kwargs)
    assert str(info.value) == message
    with pytest.raises(error):
        RequantizeAxis(**kwargs)


def test_defaults_follow_the_model():
    dut = Requantize()
    assert dut.acc_width == quant.ACC_BITS
    assert dut.mult_width == quant.MULTIPLIER_BITS
    assert (1 << dut.shift_width) - 1 >= quant.SHIFT_MAX
    for dtype in (np.int8, np.uint8):
        assert dut.out_width == np.iinfo(dtype).bits
        lo, hi = quant.dtype_range(dtype)
        assert -(1 << dut.out_width) <= lo and hi < (1 << dut.out_width)   # zero_point fits


def test_signature():
    dut = Requantize(acc_width=24, mult_width=16, shift_width=6, out_width=8)
    layout = input_layout(24, 16, 6, 8)
    assert {name: Shape.cast(field.shape) for name, field in layout} == {
        "acc": signed(24), "multiplier": unsigned(16), "shift": unsigned(6),
        "zero_point": signed(9), "relu": unsigned(1), "is_unsigned": unsigned(1),
        "last": unsigned(1)}
    assert dut.signature.members["i"].flow == wiring.In
    assert dut.signature.members["o"].flow == wiring.Out
    assert dut.i.payload.shape() == layout
    assert dut.o.payload.shape() == output_layout(8)
    assert {name: Shape.cast(field.shape) for name, field in output_layout(8)} == {
        "data": unsigned(8), "last": unsigned(1)}


def test_axis_top_ports():
    top = RequantizeAxis()
    fields = [name for name, _ in top.core.input_layout if name != "last"]
    assert [name for name, _ in top.tdata_layout] == fields
    assert top.tdata_layout == axis_tdata_layout(32, 31, 6, 8)
    assert top.tdata_layout.size == top.core.input_layout.size - 1
    text = verilog.convert(top, name="requantize_axis", emit_src=False)
    header = text[text.index("module requantize_axis("):].split(";")[0]
    ports = {port.strip() for port in header.split("(")[1].rstrip(")").split(",")}
    assert ports == {"clk", "rst", "s_axis_tdata", "s_axis_tvalid", "s_axis_tready",
                     "s_axis_tlast", "m_axis_tdata", "m_axis_tvalid", "m_axis_tready",
                     "m_axis_tlast"}
    assert f"input [{top.tdata_layout.size - 1}:0] s_axis_tdata;" in text
    assert f"output [{top.core.out_width - 1}:0] m_axis_tdata;" in text


# --- Amaranth simulator against the golden model ----------------------------------------------

def simulate(dut: Requantize, samples: list[dict], seed: int, pauses: bool = True):
    """Run ``samples`` through ``dut`` with random idles and stalls; return (data, last) pairs
    and the (input, output) transfer cycles."""
    rng = random.Random(seed)
    pause = SIM_PAUSE_PROBABILITY if pauses else 0.0
    outputs, in_cycles, out_cycles = [], [], []
    cycle = [0]

    async def count(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def put(ctx):
        for s in samples:
            while rng.random() < pause:
                await ctx.tick()
            ctx.set(dut.i.payload, s)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            in_cycles.append(cycle[0])
            ctx.set(dut.i.valid, 0)

    async def get(ctx):
        while len(outputs) < len(samples):
            ready = rng.random() >= pause
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                outputs.append((payload.data, payload.last))
                out_cycles.append(cycle[0])
        ctx.set(dut.o.ready, 1)
        for _ in range(4 * dut.latency):         # nothing may follow
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid, "output after the last expected one"

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD_S)
    sim.add_process(count)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.run()
    return outputs, in_cycles, out_cycles


@pytest.mark.parametrize("iterative", [False, True])
@pytest.mark.parametrize("acc_width, mult_width", [
    (quant.ACC_BITS, quant.MULTIPLIER_BITS),
    (24, 16),                 # narrower fields, even multiplier split
    (quant.ACC_BITS, 1),      # a single partial product
])
def test_against_model(acc_width, mult_width, iterative):
    rng = random.Random(f"{acc_width}-{mult_width}")
    dut = Requantize(acc_width=acc_width, mult_width=mult_width, iterative=iterative)
    samples = random_samples(rng, 300, acc_bits=acc_width, mult_bits=mult_width)
    if (acc_width, mult_width) == (quant.ACC_BITS, quant.MULTIPLIER_BITS):
        samples += tie_samples(rng, 100)
    outputs, _, _ = simulate(dut, samples, seed=acc_width * mult_width)
    assert [data for data, _ in outputs] == golden(samples)
    assert [last for _, last in outputs] == [s["last"] for s in samples]


@pytest.mark.parametrize("iterative, latency, interval, multipliers", [
    (False, 11, 1, 4),
    # 2 x 2 partial products of 16 x 16 bits (the sample taken with the last), 4 limbs,
    # 6 shift cycles (the shift's 4 bits below a limb)
    (True, 17, 10, 1),
])
def test_latency_and_throughput(iterative, latency, interval, multipliers):
    dut = Requantize(iterative=iterative)
    assert (dut.latency, dut.interval, dut.multipliers) == (latency, interval, multipliers)
    samples = random_samples(random.Random(0), 40)
    outputs, in_cycles, out_cycles = simulate(dut, samples, seed=0, pauses=False)
    assert [data for data, _ in outputs] == golden(samples)
    assert {o - i for i, o in zip(in_cycles, out_cycles)} == {dut.latency}
    assert in_cycles == list(range(in_cycles[0], in_cycles[0] + interval * len(samples), interval))


def test_iterative_uses_one_multiplier():
    """The iterative variant's netlist has a single multiplication of 16 x 16 bits."""
    text = rtlil.convert(Requantize(iterative=True), name="rq", emit_src=False)
    assert text.count("cell $mul ") == 1
    cell = re.search(r"cell \$mul .*?\n  end", text, re.S).group(0)
    assert re.findall(r"parameter \\([AB])_WIDTH (\d+)", cell) == [("A", "16"), ("B", "16")]


@pytest.mark.parametrize("iterative", [False, True])
def test_shift_outside_the_contract(iterative):
    """Shift 0 gives the unrounded product and shift 63 follows the formula, per the docstring.

    Both expressed through the model: ``(p + 0) >> 0 == (2p + 1) >> 1`` and, for an even
    multiplier ``2m'``, ``(acc * 2m' + 2**62) >> 63 == (acc * m' + 2**61) >> 62``.
    """
    rng = random.Random(63)
    dut = Requantize(iterative=iterative)
    samples, reference = [], []
    for s in random_samples(rng, 100):
        zero = dict(s, shift=0, multiplier=s["multiplier"] >> 1)
        samples.append(zero)
        reference.append(dict(zero, shift=1, multiplier=zero["multiplier"] * 2))
        top = dict(s, shift=63, multiplier=s["multiplier"] & ~1)
        samples.append(top)
        reference.append(dict(top, shift=62, multiplier=top["multiplier"] // 2))
    samples.append(sample(quant.ACC_MIN, (1 << quant.MULTIPLIER_BITS) - 2, 63, 0, 0, 0, last=1))
    reference.append(dict(samples[-1], multiplier=samples[-1]["multiplier"] // 2, shift=62))
    outputs, _, _ = simulate(dut, samples, seed=63, pauses=False)
    assert [data for data, _ in outputs] == golden(reference)
