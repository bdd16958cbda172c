"""cocotb tests of the requantize unit against model.quant.requantize, and their pytest entry.

The top level is :class:`rtl.requantize.RequantizeAxis`, driven with cocotbext-axi: one
transfer carries one accumulator with its per-channel constants packed in ``s_axis_tdata``
(one "byte" of the full width), a frame is a run of samples ending with ``last``. Every output
is compared with the golden model with ``==``, in order, frame by frame.
"""

import json
import logging
import os
import random
from collections import defaultdict

import cocotb
import numpy as np
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from model import quant
from rtl.requantize import Requantize, RequantizeAxis, axis_tdata_layout
from sim import toolchain
from tb.axis import HandshakeMonitor, random_pause, split_frames

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
CONFIGS = {"pipelined": DEFAULT_CONFIG, "iterative": {**DEFAULT_CONFIG, "iterative": True}}
DTYPES = {0: np.dtype(np.int8), 1: np.dtype(np.uint8)}


# --- stimulus and expected results (pure Python, also used by tb/test_requantize_elab.py) -----

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
    run_cocotb(sim, sources=[source], toplevel=toplevel, key=key, test_module=__name__,
               extra_env={CONFIG_ENV: json.dumps(config)})
