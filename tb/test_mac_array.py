"""Tests of the MAC array (rtl/mac_array.py) on its own, both multiplier variants: cocotb on
Icarus, Amaranth's simulator, and what the netlists contain.

The cocotb top level is :class:`rtl.mac_array.MacArray`. The ``"ecp5"`` variant instantiates the
ECP5 ``MULT18X18D`` DSP primitive, simulated with the behavioural model in
``tb/models/MULT18X18D.v``; the ``"generic"`` variant is plain Verilog. Both must produce
exactly the sums of the golden computation (:func:`expected_sums`, the arithmetic of
:func:`model.conv.conv2d`), each group's ``acc_valid`` exactly ``latency`` cycles after its
operation with ``last``. The engine runs with the ECP5 variant in tb/test_engine.py.

Without an HDL simulator: the generic variant in Amaranth's simulator against numpy; the
latencies, what the netlists contain, which configuration gets which variant, and the
constructors' messages (also of the ECP5 DSP wrapper, rtl/dsp.py).
"""

import json
import os
import random
import re

import cocotb
import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from rtl.dsp import Ecp5Multiplier
from rtl.mac_array import ACC_WIDTH, DATA_WIDTH, ECP5_STAGES, ZP_WIDTH, MacArray, tree_depth
from sim.configs import get
from tb.testing import MULT18X18D_MODEL

#: Constructors that are expected to fail leave half-built elaboratables behind.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")

CLOCK_PERIOD_NS = 10
RESET_CYCLES = 4
#: The array's hardware configuration; pytest passes it to the simulation in this variable.
CONFIG_ENV = "CONVCORE_MAC_ARRAY_CONFIG"
#: Probability that the source leaves a cycle without an operation.
IDLE_PROBABILITY = 0.3
RANDOM_GROUPS = 60
MAX_GROUP_OPS = 6
#: Hardware configurations: the default engine's PE x SIMD, a partial tree, a single lane.
CONFIGS = {
    "ecp5-8x8": {"pe": 8, "simd": 8, "dsp": "ecp5"},
    "ecp5-3x3": {"pe": 3, "simd": 3, "dsp": "ecp5"},
    "ecp5-2x1": {"pe": 2, "simd": 1, "dsp": "ecp5"},
    "generic-3x3": {"pe": 3, "simd": 3, "dsp": "generic"},
}
DTYPE_RANGES = {0: (-128, 127), 1: (0, 255)}   # by the unsigned flag
#: Clock period of the Amaranth-simulator runs.
CLOCK_PERIOD_S = 1e-8


# --- stimulus and expected results (pure Python) -------------------------------------------

def random_layer(rng: random.Random) -> dict:
    """Layer constants: activation and weight types, their zero points (edges included)."""
    x_unsigned, w_unsigned = rng.getrandbits(1), rng.getrandbits(1)
    lo, hi = DTYPE_RANGES[x_unsigned]
    return {"x_unsigned": x_unsigned, "w_unsigned": w_unsigned,
            "x_zp": rng.choice([lo, hi, 0, rng.randint(lo, hi)])}


def random_groups(rng: random.Random, pe: int, simd: int, layer: dict, count: int) -> list:
    """``count`` output groups of 1 to MAX_GROUP_OPS operations; operands are random or at the
    ends of their types, lane masks full, partial, random or empty."""
    x_lo, x_hi = DTYPE_RANGES[layer["x_unsigned"]]
    w_lo, w_hi = DTYPE_RANGES[layer["w_unsigned"]]

    def values(lo, hi, n):
        if rng.random() < 0.2:
            return [rng.choice([lo, hi]) for _ in range(n)]
        return [rng.randint(lo, hi) for _ in range(n)]

    full = (1 << simd) - 1
    groups = []
    for _ in range(count):
        ops = []
        for _ in range(rng.randint(1, MAX_GROUP_OPS)):
            ops.append({"x": values(x_lo, x_hi, simd), "w": values(w_lo, w_hi, pe * simd),
                        "mask": rng.choice([full, full, rng.getrandbits(simd),
                                            (1 << rng.randint(0, simd)) - 1, 0])})
        groups.append({"ops": ops, "final": int(rng.random() < 0.2),
                       "w_zp": values(w_lo, w_hi, pe)})
    return groups


def expected_sums(groups: list, pe: int, simd: int, layer: dict) -> list[list[int]]:
    """Each group's PE dot products of zero-point-corrected operands, wrapped to int32."""
    sums = []
    for group in groups:
        acc = np.zeros(pe, np.int64)
        w_zp = np.array(group["w_zp"], np.int64)
        for op in group["ops"]:
            keep = (op["mask"] >> np.arange(simd)) & 1 == 1
            xs = np.where(keep, np.array(op["x"], np.int64) - layer["x_zp"], 0)
            ws = np.array(op["w"], np.int64).reshape(pe, simd) - w_zp[:, None]
            acc += (ws * xs).sum(axis=1)
        sums.append(acc.astype(np.int32).tolist())
    return sums


def pack(values, width: int) -> int:
    """Little-endian concatenation of ``values`` as ``width``-bit two's complement fields."""
    mask = (1 << width) - 1
    return sum((int(v) & mask) << (width * k) for k, v in enumerate(values))


def unpack_acc(word: int, pe: int) -> list[int]:
    mask = (1 << ACC_WIDTH) - 1
    return [int(np.int32(np.uint32((word >> (ACC_WIDTH * p)) & mask))) for p in range(pe)]


# --- testbench ---------------------------------------------------------------------------------

class TB:
    """Drives operations with the data one cycle after the control, as the engine's memories
    deliver it, and records every finished group with its cycle."""

    def __init__(self, dut):
        self.dut = dut
        config = json.loads(os.environ[CONFIG_ENV])
        self.pe, self.simd = config["pe"], config["simd"]
        self.latency = MacArray(**config).latency
        assert len(dut.x.value) == DATA_WIDTH * self.simd
        assert len(dut.w_zp.value) == ZP_WIDTH * self.pe
        cocotb.start_soon(Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start())

    async def reset(self):
        dut = self.dut
        for name in ("valid", "first", "last", "final", "mask", "x_zp",
                     "x_unsigned", "w_unsigned", "x", "w", "w_zp"):
            getattr(dut, name).value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, RESET_CYCLES)
        dut.rst.value = 0

    async def run(self, rng: random.Random, layer: dict, groups: list, idle: bool):
        """Present every operation of ``groups``; returns ``(sums, finals, delays)``: the
        finished accumulators, their ``acc_final`` and, per group, the cycles from its
        operation with ``last`` to its ``acc_valid``."""
        dut = self.dut
        dut.x_unsigned.value = layer["x_unsigned"]
        dut.w_unsigned.value = layer["w_unsigned"]
        dut.x_zp.value = layer["x_zp"] & ((1 << ZP_WIDTH) - 1)
        schedule = []            # (group, op index) or None for an idle cycle
        for g, group in enumerate(groups):
            for k in range(len(group["ops"])):
                while idle and rng.random() < IDLE_PROBABILITY:
                    schedule.append(None)
                schedule.append((g, k))
        schedule += [None] * (self.latency + 2)
        sums, finals, valid_cycles, last_cycles = [], [], [], []
        pending = None           # data of the previous cycle's operation
        for cycle, item in enumerate(schedule):
            await FallingEdge(dut.clk)
            if dut.acc_valid.value:
                sums.append(unpack_acc(int(dut.acc.value), self.pe))
                finals.append(int(dut.acc_final.value))
                valid_cycles.append(cycle)
            if pending is not None:
                dut.x.value, dut.w.value, dut.w_zp.value = pending
            pending = None
            dut.valid.value = int(item is not None)
            if item is None:
                continue
            g, k = item
            group = groups[g]
            op = group["ops"][k]
            last = k == len(group["ops"]) - 1
            dut.first.value = int(k == 0)
            dut.last.value = int(last)
            dut.final.value = group["final"]
            dut.mask.value = op["mask"]
            pending = (pack(op["x"], DATA_WIDTH), pack(op["w"], DATA_WIDTH),
                       pack(group["w_zp"], ZP_WIDTH))
            if last:
                last_cycles.append(cycle)
        delays = [v - c for c, v in zip(last_cycles, valid_cycles)]
        return sums, finals, delays

    async def check(self, rng, layer, groups, idle):
        sums, finals, delays = await self.run(rng, layer, groups, idle)
        want = expected_sums(groups, self.pe, self.simd, layer)
        assert len(sums) == len(want), f"{len(sums)} finished groups, expected {len(want)}"
        for n, (got, expect) in enumerate(zip(sums, want)):
            assert got == expect, f"group {n} of layer {layer}: got {got}, expected {expect}"
        assert finals == [g["final"] for g in groups], "acc_final differs from the groups' final"
        assert set(delays) == {self.latency}, \
            f"last-to-acc_valid delays {sorted(set(delays))}, not the latency {self.latency}"


@cocotb.test()
@cocotb.parametrize(idle=[False, True])
async def random_groups_match_golden(dut, idle: bool):
    """Random layers and groups, back to back or with idle cycles between operations."""
    rng = random.Random(f"random_groups-{idle}-{cocotb.RANDOM_SEED}")
    tb = TB(dut)
    await tb.reset()
    for _ in range(3):
        layer = random_layer(rng)
        await tb.check(rng, layer, random_groups(rng, tb.pe, tb.simd, layer, RANDOM_GROUPS), idle)


@cocotb.test()
async def extreme_operands_wrap_at_32_bits(dut):
    """The largest products, many times over: the sum passes 2**31 and wraps like int32."""
    rng = random.Random(f"extreme-{cocotb.RANDOM_SEED}")
    tb = TB(dut)
    await tb.reset()
    layer = {"x_unsigned": 1, "w_unsigned": 0, "x_zp": 0}    # x - 0 = 255, w - 127 = -255
    biggest = 255 * 255 * tb.simd
    ops = [{"x": [255] * tb.simd, "w": [-128] * (tb.pe * tb.simd), "mask": (1 << tb.simd) - 1} for _ in range((1 << (ACC_WIDTH - 1)) // biggest + 2)]
    groups = [{"ops": ops, "final": 1, "w_zp": [127] * tb.pe}]
    await tb.check(rng, layer, groups, idle=False)
    assert expected_sums(groups, tb.pe, tb.simd, layer)[0][0] > 0, "the sum did not wrap"


# --- pytest entry ----------------------------------------------------------------------------

#: Icarus only: Verilator's C++ model of a top level with a port called ``final`` does not
#: compile (the name clashes with the model's ``final()`` method), and tb/test_engine.py
#: already runs the generic variant inside the engine on both simulators.
SIMULATOR = "icarus"


@pytest.mark.parametrize("variant", CONFIGS)
def test_mac_array(variant, sim=SIMULATOR):
    from sim.runner import config_key, emit_verilog, run_cocotb

    config = CONFIGS[variant]
    toplevel = "mac_array"
    key = config_key(toplevel, config)
    source = emit_verilog(MacArray(**config), toplevel=toplevel, key=key)
    sources = [source] + ([MULT18X18D_MODEL] if config["dsp"] == "ecp5" else [])
    run_cocotb(sim, sources=sources, toplevel=toplevel, key=key, test_module=__name__,
               extra_env={CONFIG_ENV: json.dumps(config)}, ports_only=True)


# --- the generic variant in Amaranth's simulator -------------------------------------------

def _bytes_to_int(values):
    return int.from_bytes(np.asarray(values, np.int64).astype(np.uint8).tobytes(), "little")


@pytest.mark.parametrize("pe,simd", [(1, 1), (2, 4), (4, 2), (2, 8), (3, 3)])
def test_mac_array_matches_numpy(pe, simd):
    """Sums as numpy computes them, each group's ``acc_valid`` exactly ``latency`` cycles
    after its operation with ``last``."""
    rng = np.random.default_rng(pe * 10 + simd)
    dut = MacArray(pe, simd)
    groups, ops_per_group = 4, 3
    x_zp, x_unsigned, w_unsigned = 17, 1, 0
    x = rng.integers(0, 256, (groups, ops_per_group, simd))
    w = rng.integers(-128, 128, (groups, ops_per_group, pe, simd))
    w_zp = rng.integers(-128, 128, pe)
    mask = rng.integers(0, 1 << simd, (groups, ops_per_group))
    want = []
    for g in range(groups):
        acc = np.zeros(pe, np.int64)
        for o in range(ops_per_group):
            xs = np.where((mask[g, o] >> np.arange(simd)) & 1 == 1, x[g, o] - x_zp, 0)
            acc += ((w[g, o] - w_zp[:, None]) * xs).sum(axis=1)
        want.append(acc.astype(np.int32).tolist())
    got, last_cycles, valid_cycles = [], [], []

    async def bench(ctx):
        cycle = 0
        ctx.set(dut.x_zp, x_zp)
        ctx.set(dut.x_unsigned, x_unsigned)
        ctx.set(dut.w_unsigned, w_unsigned)
        ctx.set(dut.w_zp, sum((int(z) & 0x1FF) << (9 * p) for p, z in enumerate(w_zp)))
        pending = None          # data of the previous cycle's operation (memory latency)
        for g in range(groups):
            for o in range(ops_per_group):
                ctx.set(dut.valid, 1)
                ctx.set(dut.first, o == 0)
                ctx.set(dut.last, o == ops_per_group - 1)
                ctx.set(dut.mask, int(mask[g, o]))
                if pending:
                    ctx.set(dut.x, pending[0])
                    ctx.set(dut.w, pending[1])
                pending = (_bytes_to_int(x[g, o]), _bytes_to_int(w[g, o].reshape(-1)))
                if o == ops_per_group - 1:
                    last_cycles.append(cycle)
                await ctx.tick()
                cycle += 1
                if ctx.get(dut.acc_valid):
                    got.append(ctx.get(dut.acc))
                    valid_cycles.append(cycle)
        ctx.set(dut.valid, 0)
        ctx.set(dut.x, pending[0])
        ctx.set(dut.w, pending[1])
        for _ in range(dut.latency + 1):
            await ctx.tick()
            cycle += 1
            if ctx.get(dut.acc_valid):
                got.append(ctx.get(dut.acc))
                valid_cycles.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD_S)
    sim.add_testbench(bench)
    sim.run()
    unpacked = [[int(np.int32(np.uint32((v >> (32 * p)) & 0xFFFFFFFF))) for p in range(pe)]
                for v in got]
    assert unpacked == want
    assert [v - c for c, v in zip(last_cycles, valid_cycles)] == [dut.latency] * groups


# --- latencies, netlists and constructors (no simulator) -----------------------------------

def _unused(component):
    """``component`` itself, marked as intentionally never elaborated."""
    component._MustUse__silence = True
    return component


def _cells(component, cell_type):
    text = rtlil.convert(component, name="top", emit_src=False)
    return re.findall(rf"^  cell \\{cell_type} .*?^  end$", text, re.M | re.S)


@pytest.mark.parametrize("pe, simd", [(1, 1), (2, 4), (8, 8)])
def test_latency_counts_the_dsp_registers(pe, simd):
    assert _unused(MacArray(pe, simd)).latency == 5 + tree_depth(simd)
    assert _unused(MacArray(pe, simd, dsp="ecp5")).latency == \
        4 + len(ECP5_STAGES) + tree_depth(simd)


def test_generic_variant_is_vendor_free():
    assert _cells(MacArray(2, 3), "MULT18X18D") == []


def test_ecp5_variant_has_one_registered_dsp_per_multiply():
    cells = _cells(MacArray(2, 3, dsp="ecp5"), "MULT18X18D")
    assert len(cells) == 2 * 3
    for cell in cells:
        for register in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT"):
            assert f'parameter \\REG_{register}_CLK "CLK0"' in cell
        assert 'parameter \\SOURCEB_MODE "B_INPUT"' in cell
        assert re.search(r"connect \\CLK0 \\clk\b", cell)


def test_multiplier_latency_follows_its_registers():
    assert _unused(Ecp5Multiplier(9, 9)).latency == 3
    assert _unused(Ecp5Multiplier(9, 9, ("output", "input"))).stages == ("input", "output")
    cell, = _cells(Ecp5Multiplier(18, 4, ("input",)), "MULT18X18D")
    assert 'parameter \\REG_PIPELINE_CLK "NONE"' in cell
    assert 'parameter \\REG_OUTPUT_CLK "NONE"' in cell


def test_only_ecp5_synthesis_of_mac_default_gets_the_primitive():
    config = get("mac-default")
    assert _unused(config.build()).dsp == "generic"       # make verilog, lint, simulation
    assert _unused(config.build("ice40")).dsp == "generic"
    ecp5 = _unused(config.build("ecp5"))
    assert ecp5.dsp == "ecp5" and config.resolved_params(ecp5)["dsp"] == "ecp5"


@pytest.mark.parametrize("make, message", [
    (lambda: MacArray(0, 4), "pe must be a positive integer, not 0"),
    (lambda: MacArray(2, 2, dsp="xilinx"), "dsp must be one of 'generic', 'ecp5', not 'xilinx'"),
    (lambda: Ecp5Multiplier(19, 9), "a_width must be an integer from 1 to 18, not 19"),
    (lambda: Ecp5Multiplier(9, 0), "b_width must be an integer from 1 to 18, not 0"),
    (lambda: Ecp5Multiplier(9, 9, ("output",)),
     r"stages must hold 'input' and any of 'pipeline' and 'output', each once, "
     r"not \('output',\)"),
    (lambda: Ecp5Multiplier(9, 9, ("input", "input")),
     r"stages must hold .*, not \('input', 'input'\)"),
])
def test_constructors_reject_bad_parameters(make, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        make()
