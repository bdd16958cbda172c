"""Pure-Python checks of rtl.requantize: arguments, signature, and amaranth.sim against the model."""

import random
import re

import numpy as np
import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import wiring
from amaranth.sim import Simulator

from model import quant
from rtl.requantize import (Requantize, RequantizeAxis, axis_tdata_layout, input_layout,
                             output_layout)
from tb.test_requantize import golden, random_samples, sample, tie_samples

# Several tests build components only to inspect them or to see their constructor fail.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

CLOCK_PERIOD_S = 1e-8
PAUSE_PROBABILITY = 0.3


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


def simulate(dut: Requantize, samples: list[dict], seed: int, pauses: bool = True):
    """Run ``samples`` through ``dut`` with random idles and stalls; return (data, last) pairs
    and the (input, output) transfer cycles."""
    rng = random.Random(seed)
    pause = PAUSE_PROBABILITY if pauses else 0.0
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
    (True, 24, 10, 1),        # 2 x 2 partial products of 16 x 16 bits, 4 limbs, 9 shift cycles
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
