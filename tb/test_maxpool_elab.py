"""Pure-Python checks of rtl.maxpool: arguments, signature, memories, and amaranth.sim runs
against model.pool.maxpool2d on hardware configurations the cocotb build does not cover."""

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Shape, unsigned
from amaranth.lib import wiring
from amaranth.sim import Simulator

from rtl.engine_regs import DIM_WIDTH, SMALL_WIDTH
from rtl.maxpool import (DATA_WIDTH, ERROR_WIDTH, MaxPool, MaxPoolAxis, PoolError, beat_layout,
                         config_layout, hardware_params, memory_bits, memory_depths)
from tb.test_maxpool import (Case, expected_error, golden, groups, illegal_cases, pack_map,
                             random_case, random_map, sweep, unpack_map)

# Several tests build components only to inspect them or to see their constructor fail.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

CLOCK_PERIOD_S = 1e-8
PAUSE_PROBABILITY = 0.3
#: Cycles a map may take per beat, under any pause pattern.
CYCLES_PER_BEAT = 20
SETUP_CYCLES = 64


@pytest.mark.parametrize("kwargs, error, message", [
    ({"lanes": 3}, ValueError, "lanes must be a power of two up to 64, not 3"),
    ({"lanes": 128}, ValueError, "lanes must be a power of two up to 64, not 128"),
    ({"lanes": 0}, ValueError, "lanes must be a power of two up to 64, not 0"),
    ({"lanes": 4.0}, ValueError, "lanes must be a power of two up to 64, not 4.0"),
    ({"max_kernel": 0}, ValueError, "max_kernel must be in 1..255, not 0"),
    ({"max_kernel": 256}, ValueError, "max_kernel must be in 1..255, not 256"),
    ({"max_kernel": "7"}, TypeError, "max_kernel must be an integer, not '7'"),
    ({"max_width": 0}, ValueError, "max_width must be in 1..65535, not 0"),
    ({"max_width": 65536}, ValueError, "max_width must be in 1..65535, not 65536"),
    ({"max_height": 0}, ValueError, "max_height must be in 1..65535, not 0"),
    ({"max_channels": 0}, ValueError, "max_channels must be in 1..65535, not 0"),
    ({"max_channels": True}, TypeError, "max_channels must be an integer, not True"),
    ({"max_stride": 0}, ValueError, "max_stride must be in 1..255, not 0"),
    ({"max_dilation": 300}, ValueError, "max_dilation must be in 1..255, not 300"),
    ({"window_slots": -1}, ValueError, "window_slots must be in 0..7, not -1"),
    ({"max_kernel": 3, "window_slots": 4}, ValueError, "window_slots must be in 0..3, not 4"),
])
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error) as info:
        MaxPool(**kwargs)
    assert str(info.value) == message
    with pytest.raises(error):
        MaxPoolAxis(**kwargs)


def test_defaults():
    dut = MaxPool(8, 7, 224, 64)
    assert dut.params == hardware_params() == dict(
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
    assert Shape.cast(members["error"].shape) == unsigned(ERROR_WIDTH)
    assert max(PoolError) < 1 << ERROR_WIDTH
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
        memory = {"horizontal": "hmem", "vertical": "vmem"}[name]
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
    assert f"output [{ERROR_WIDTH - 1}:0] error;" in text


def beats_of(data: bytes, lanes: int) -> list[list[int]]:
    return [list(data[k:k + lanes]) for k in range(0, len(data), lanes)]


def simulate(dut: MaxPool, jobs: list[tuple], seed: int, pauses: bool = True) -> list[dict]:
    """Run ``jobs`` of (Case, input beats, last flags) back to back through ``dut`` with random
    idles and stalls. Per job: output beats and lasts, error, last_error, beats taken and the
    cycles of the input transfers."""
    rng = random.Random(seed)
    pause = PAUSE_PROBABILITY if pauses else 0.0
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


def check_jobs(dut, cases, seed, pauses=True):
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
    for (case, beats, _), x, got in zip(jobs, maps, simulate(dut, jobs, seed, pauses)):
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


def test_sweep_subset_without_pauses():
    dut = MaxPool(lanes=4, max_kernel=7, max_width=16, max_height=16, max_channels=16,
                  max_stride=3, max_dilation=2)
    cases = sweep(dut.params, seed=5)[::6]
    check_jobs(dut, cases, seed=5, pauses=False)


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
