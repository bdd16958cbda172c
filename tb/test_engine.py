"""Tests of the conv engine (rtl/engine.py, its register map rtl/engine_regs.py): cocotb
against the golden model, and their pytest entries; the constructor, the register map and a
pool-alone run in Amaranth's simulator.

One build of :class:`rtl.engine.ConvEngine` (the small test configuration :data:`TEST_CONFIG`)
runs a sweep of layers back to back without a reset: every layer is loaded, configured and
run through :class:`sim.engine_driver.EngineDriver` exactly as ``convcore`` does, and its output
is compared with :func:`model.network.run_layer` (``model.conv.conv2d`` then
``model.quant.requantize``, then ``model.pool.maxpool2d`` for a fused pool; the pool alone
for a :class:`model.network.PoolLayer`) using ``==``; a failure names the first mismatching
(channel, row, column). Illegal layers (conv or pool settings) must be refused with the
right error code, no input taken and no output, and the following legal layer must still be
correct. On stride-1 layers with full channel groups and no stalls the counters must show at
least 90 % MAC utilization; pool-alone layers must show no MAC cycle.

pytest runs a smaller sweep on Icarus and a larger one on Verilator (the Verilator build is
cached per hardware configuration by :mod:`sim.runner`), plus a smoke sweep on the default
configuration on Verilator. The two test configurations differ in SIMD (Icarus: PE = SIMD,
Verilator: SIMD = 2 PE), so pool-alone layers pass through the engine's width converter on
Verilator and straight to the pool on Icarus. The small sweep also runs with the ECP5
multipliers of the MAC array.

Without an HDL simulator: constructor checks, default memory sizes, the register map's error
codes, the pools of the example networks on the default configuration, and a pool-alone layer
in Amaranth's simulator for PE != SIMD ratios the HDL builds do not cover.
"""

import dataclasses
import os
import random
from types import SimpleNamespace

import cocotb
import numpy as np
import pytest
from amaranth.sim import Simulator
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from model.conv import conv_output_size
from model.network import MaxPool, PoolLayer, layer_macs, run_layer
from model.pool import maxpool2d
from rtl.engine import ConvEngine
from rtl.engine_regs import (ERROR_WIDTH, POOL_ERROR_BASE, REGMAP, EngineError,
                             encode_zero_point)
from rtl.limits import DEFAULT_WEIGHT_DEPTH
from rtl.maxpool import PoolError
from rtl.regmap import RegisterDriver
from sim.engine_driver import (EngineDriver, EngineRefused, conv_shape, layer_fields, pack_input,
                              row_pitch,
                              unpack_output)
from tb.axis import random_pause
from sim.testing import Case, first_mismatch, make_layer, make_psum
from tb.maxpool_cases import Case as MapCase
from tb.maxpool_cases import expected_error
from tb.testing import DP16KD_MODEL, MULT18X18D_MODEL, axi_read, axi_write

#: Constructors that are expected to fail leave half-built elaboratables behind.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")

CLOCK_PERIOD_NS = 10
#: Clock period of the Amaranth-simulator run.
CLOCK_PERIOD_S = 1e-8
RESET_CYCLES = 4
#: Hardware configuration of the sweeps (small, to keep CI fast).
#: Two requantization units for four lanes: the shared output path is exercised here, the
#: default one (a unit per lane) by the default configuration's smoke test. Three pool
#: window slots admit 3x3 stride-1 pools (the default configuration has two).
TEST_CONFIG = dict(pe=4, simd=4, max_kernel=7, max_width=16, max_height=16, max_channels=16,
                   weight_depth=512, max_stride=3, max_dilation=2, requant_lanes=2,
                   pool_window_slots=3)
#: Verilator's build: the same with SIMD = 2 PE (pool-alone input through the width converter),
#: a weight memory just below the largest sweep layer (16x16 channels, 7x7: 392 words) and a
#: parameter port narrower than its default (64 bits, not the 256-bit weight word: a weight
#: word in 4 beats, a channel word in 6).
TEST_CONFIG_WIDE = dict(TEST_CONFIG, simd=8, weight_depth=384, param_width=64)
#: Which configuration each simulator builds.
CONFIGS = {"icarus": TEST_CONFIG, "verilator": TEST_CONFIG_WIDE}
#: Utilization target: cycles <= PERF_FACTOR * MACs / (PE * SIMD).
PERF_FACTOR = 1.10
#: Probability of an idle input cycle / a stalled output cycle when a layer asks for stalls.
PAUSE_PROBABILITY = 0.3
#: Now and then the output stops for this many cycles when a layer asks for stalls: more than
#: the requantized-word FIFO, the requantizers' pipelines and the accumulator FIFO hold
#: together, so that the back-pressure reaches the MAC array's credits.
PAUSE_BURST = 64
#: Watchdog: cycles allowed per MAC of a layer, plus a base for loading and configuration.
WATCHDOG_CYCLES_PER_MAC = 2
WATCHDOG_BASE_CYCLES = 20000
#: Environment variables passing the sweep and its random seed to the simulation.
SWEEP_ENV = "CONVCORE_ENGINE_SWEEP"
SEED_ENV = "CONVCORE_ENGINE_SEED"


def pool_settings(kernel, stride, pads=(0, 0, 0, 0), dilation=(1, 1), ceil_mode=False):
    """MaxPool fields without the model's validation (for settings the engine must refuse)."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    return SimpleNamespace(kernel=pair(kernel), stride=pair(stride), pads=tuple(pads),
                           dilation=pair(dilation), ceil_mode=ceil_mode)


def random_pool(rng: random.Random, h, w, slots, fixed=None):
    """A legal MaxPool for an h x w map: kernels 2 or 3, strides 1 to 3, pads, dilation 1 or
    2 and ceil_mode at random, within ``slots`` window slots and the golden model's rules;
    ``fixed = (kernel, stride)`` sets those on the width axis."""
    while True:
        k = tuple(rng.choice((2, 3)) for _ in range(2))
        s = tuple(rng.choice((1, 2, 3)) for _ in range(2))
        if fixed is not None:
            k, s = (k[0], fixed[0]), (s[0], fixed[1])
        d = tuple(rng.choice((1, 1, 2)) for _ in range(2))
        pads = (rng.randint(0, k[0] - 1), rng.randint(0, k[1] - 1),
                rng.randint(0, k[0] - 1), rng.randint(0, k[1] - 1))
        if any((ki - 1) * di + 1 > slots * si for ki, si, di in zip(k, s, d)):
            continue
        pool = MaxPool(k, s, pads, d, ceil_mode=rng.random() < 0.3)
        try:
            maxpool2d(np.zeros((1, h, w), np.int8), pool.kernel, pool.stride, pool.pads,
                      pool.dilation, pool.ceil_mode)
        except ValueError:
            continue
        return pool


# --- sweeps -------------------------------------------------------------------------------

def small_sweep():
    """Icarus: every feature once, small shapes."""
    return [
        Case(4, 4, 4, 4, k=(1, 1), per_channel=False),
        Case(8, 8, 8, 8, pads=(1, 1, 1, 1), perf=True),
        Case(5, 6, 7, 9, pads=(1, 1, 1, 1), relu=True, stalls=True),
        Case(3, 5, 9, 11, k=(5, 5), stride=(2, 2), pads=(2, 1, 0, 2), x_dtype="uint8",
             w_dtype="uint8", out="uint8", stalls=True),
        Case(3, 3, 10, 8, k=(2, 2), stride=(3, 3), dilation=(2, 2), out="int32"),
        Case(3, 3, 5, 5, k=(9, 9), expect="KERNEL"),
        Case(2, 3, 8, 8, k=(7, 7), pads=(3, 3, 3, 3), stalls=True),
        Case(2, 3, 6, 1, k=(3, 1), pads=(1, 0, 1, 0)),
        Case(4, 4, 3, 3, k=(5, 5), expect="NO_OUTPUT"),
        Case(4, 8, 3, 16, k=(3, 3), stride=(1, 2), pads=(0, 1, 2, 0), out="uint8", relu=True,
             repeat=2),
    ] + packed_cases() + psum_cases()


def packed_cases():
    """Packed reductions (sim.engine_driver.row_pitch): one channel, channels above SIMD that
    are not a multiple of it, a vertical dilation with a stride, a window wider than the
    map, each with padding."""
    return [
        Case(1, 4, 9, 9, k=(3, 3), pads=(1, 1, 1, 1), relu=True),
        Case(11, 5, 6, 6, k=(3, 3), pads=(1, 1, 1, 1), stalls=True),
        Case(5, 4, 11, 7, k=(3, 2), dilation=(2, 1), stride=(2, 1), pads=(2, 1, 1, 0),
             out="int32", stalls=True),
        Case(3, 2, 4, 2, k=(5, 5), pads=(2, 2, 2, 2)),
    ]


def psum_cases():
    """Partial sums on s_axis_acc (the passes of a layer larger than the engine): requantized,
    raw (a middle pass), with stalls on every stream, and with a fused pool."""
    return [
        Case(5, 6, 7, 9, pads=(1, 1, 1, 1), relu=True, psum=True, stalls=True),
        Case(3, 5, 6, 6, out="int32", psum=True, stalls=True, repeat=2),
        Case(4, 3, 8, 8, k=(1, 1), out="uint8", psum=True),
        Case(4, 4, 8, 8, pads=(1, 1, 1, 1), relu=True, pool=MaxPool(2, 2), psum=True,
             stalls=True),
    ]


def illegal_cases():
    """One layer per refusal reason (TEST_CONFIG limits)."""
    return [
        Case(3, 3, 5, 5, k=(8, 3), expect="KERNEL"),
        Case(3, 3, 5, 5, dilation=(1, 3), expect="DILATION"),
        Case(3, 3, 5, 5, stride=(4, 1), expect="STRIDE"),
        Case(3, 3, 5, 5, stride=(1, 0), expect="STRIDE"),
        Case(3, 3, 17, 5, expect="SIZE"),
        Case(17, 3, 5, 5, expect="CHANNELS"),
        Case(3, 3, 5, 5, pads=(0, 3, 0, 0), expect="PAD"),
        Case(3, 3, 2, 5, k=(3, 3), expect="NO_OUTPUT"),
        Case(16, 16, 7, 7, k=(7, 7), expect="WEIGHTS"),
        Case(16, 4, 14, 16, k=(7, 7), dilation=(2, 1), expect="LINE_BUFFER"),
    ]


def pool_small_sweep():
    """Icarus: fused and alone max-pools, two refusals, then legal layers again."""
    return [
        Case(4, 4, 8, 8, pads=(1, 1, 1, 1), relu=True, pool=MaxPool(2, 2)),
        Case(3, 5, 9, 9, out="uint8", relu=True, stalls=True,
             pool=MaxPool(3, 2, pads=(1, 1, 1, 1), ceil_mode=True)),
        Case(5, 0, 7, 9, alone=True, pool=MaxPool(2, 2), stalls=True),
        Case(6, 0, 8, 7, alone=True, x_dtype="uint8",
             pool=MaxPool((3, 2), (3, 1), pads=(2, 0, 1, 1), dilation=(1, 2))),
        Case(5, 0, 6, 6, alone=True, pool=pool_settings(3, 1, dilation=2),
             expect="POOL_WINDOW_SLOTS"),
        Case(3, 4, 6, 6, out="int32", pool=MaxPool(2, 2), expect="POOL_RAW"),
        Case(4, 4, 6, 6, relu=True, pool=MaxPool(3, 1, pads=(1, 1, 1, 1)), repeat=2),
    ]


def pool_illegal_cases():
    """One pool setting per refusal reason (TEST_CONFIG limits: kernel 7, pool stride 7,
    dilation 2, maps 16x16x16, 3 window slots), alone and fused."""
    return [
        Case(3, 0, 5, 5, alone=True, pool=pool_settings((8, 2), 2), expect="POOL_KERNEL"),
        Case(3, 0, 5, 5, alone=True, pool=pool_settings((2, 0), 2), expect="POOL_KERNEL"),
        Case(3, 0, 5, 5, alone=True, pool=pool_settings(2, 2, dilation=(3, 1)),
             expect="POOL_DILATION"),
        Case(3, 0, 5, 5, alone=True, pool=pool_settings(2, (8, 2)), expect="POOL_STRIDE"),
        Case(3, 0, 5, 5, alone=True, pool=pool_settings(2, (1, 0)), expect="POOL_STRIDE"),
        Case(3, 0, 17, 5, alone=True, pool=MaxPool(2, 2), expect="POOL_SIZE"),
        Case(17, 0, 5, 5, alone=True, pool=MaxPool(2, 2), expect="POOL_CHANNELS"),
        Case(3, 0, 5, 5, alone=True, pool=pool_settings(2, 2, pads=(0, 0, 2, 0)),
             expect="POOL_PAD"),
        Case(3, 0, 2, 5, alone=True, pool=pool_settings(3, 3), expect="POOL_NO_OUTPUT"),
        Case(3, 0, 5, 5, alone=True, pool=pool_settings((2, 5), 1), expect="POOL_WINDOW_SLOTS"),
        Case(3, 0, 4, 1, alone=True, expect="POOL_EMPTY_WINDOW",
             pool=pool_settings((1, 2), (1, 2), pads=(0, 1, 0, 1), dilation=(1, 2))),
        Case(3, 4, 6, 6, out="int32", pool=MaxPool(2, 2), expect="POOL_RAW"),
        # The conv output (18 wide) exceeds the pool's maximum map.
        Case(3, 4, 16, 16, pads=(0, 2, 0, 2), pool=MaxPool(2, 2), expect="POOL_SIZE"),
        Case(3, 4, 6, 6, pads=(1, 1, 1, 1), pool=pool_settings(3, 1, dilation=2),
             expect="POOL_WINDOW_SLOTS"),
        Case(3, 4, 4, 4, pool=pool_settings(3, 3), expect="POOL_NO_OUTPUT"),
        # The conv's own checks come before the pool unit's.
        Case(3, 4, 4, 4, stride=(4, 1), pool=pool_settings(0, 0), expect="STRIDE"),
    ]


def conv_hw(case):
    """Output height and width of a case's convolution."""
    t, l, b, r = case.pads
    return tuple(conv_output_size(n, k, s, p, d, strict=False)
                 for n, k, s, p, d in zip((case.h, case.w), case.k, case.stride, ((t, b), (l, r)),
                                          case.dilation))


def pool_large_sweep(rng, slots):
    """Verilator: fused and alone pools with kernels 2 and 3 and strides 1 to 3 (random pads,
    dilation, ceil_mode, types, stalls), the largest maps, every refusal."""
    cases = []
    for k in (2, 3):
        for s in (1, 2, 3):
            fixed = (k, s)
            conv = Case(rng.randint(1, 9), rng.randint(1, 9), rng.randint(4, 12),
                        rng.randint(4, 12), k=(3, 3), pads=(1, 1, 1, 1),
                        x_dtype=rng.choice(("int8", "uint8")), out=rng.choice(("int8", "uint8")),
                        relu=rng.random() < 0.5, stalls=rng.random() < 0.5)
            conv.pool = random_pool(rng, *conv_hw(conv), slots, fixed)
            alone = Case(rng.randint(1, 16), 0, rng.randint(3, 16), rng.randint(3, 16),
                         alone=True, x_dtype=rng.choice(("int8", "uint8")),
                         stalls=rng.random() < 0.5)
            alone.pool = random_pool(rng, alone.h, alone.w, slots, fixed)
            cases += [conv, alone]
    for _ in range(6):
        k = rng.choice((1, 3, 5))
        conv = Case(rng.randint(1, 9), rng.randint(1, 9), rng.randint(5, 12),
                    rng.randint(5, 12), k=(k, k), stride=(rng.randint(1, 2),) * 2,
                    pads=(k // 2,) * 4,
                    x_dtype=rng.choice(("int8", "uint8")), out=rng.choice(("int8", "uint8")),
                    relu=rng.random() < 0.5, stalls=rng.random() < 0.5)
        conv.pool = random_pool(rng, *conv_hw(conv), slots)
        cases.append(conv)
    cases += [
        Case(16, 0, 16, 16, alone=True, pool=MaxPool(2, 2)),
        Case(16, 16, 16, 16, pads=(1, 1, 1, 1), relu=True, pool=MaxPool(2, 2)),
        Case(13, 0, 16, 16, alone=True, x_dtype="uint8", stalls=True,
             pool=MaxPool(3, 2, pads=(1, 1, 1, 1), ceil_mode=True)),
    ]
    cases += pool_illegal_cases()
    cases.append(Case(9, 0, 9, 9, alone=True, pool=MaxPool(2, 2), stalls=True))
    return cases


def large_sweep(seed=1):
    """Verilator: the feature grid plus random legal layers."""
    rng = random.Random(seed)
    cases = list(small_sweep()) + pool_small_sweep()
    for k in (1, 2, 3, 5, 7):
        for s in (1, 2, 3):
            cases.append(Case(rng.randint(1, 9), rng.randint(1, 9), rng.randint(k, 12),
                              rng.randint(k, 12), k=(k, k), stride=(s, s),
                              pads=tuple(rng.randint(0, k - 1) for _ in range(4)),
                              x_dtype=rng.choice(("int8", "uint8")),
                              w_dtype=rng.choice(("int8", "uint8")),
                              out=rng.choice(("int8", "uint8", "int32")),
                              relu=rng.random() < 0.5, per_channel=rng.random() < 0.7,
                              stalls=rng.random() < 0.5, psum=rng.random() < 0.3))
    for width in (1, 2, 5, 15, 16):
        cases.append(Case(rng.randint(1, 8), rng.randint(1, 8), rng.randint(3, 6), width,
                          k=(3, min(3, width)), pads=(1, 0, 1, 0), stalls=True))
    cases.append(Case(6, 5, 11, 13, k=(3, 3), dilation=(2, 2), pads=(2, 2, 2, 2)))
    cases.append(Case(4, 4, 12, 9, k=(5, 3), dilation=(2, 1), stride=(2, 1), pads=(4, 0, 1, 2)))
    cases.append(Case(16, 16, 16, 16, k=(3, 3), pads=(1, 1, 1, 1), perf=True))
    cases.append(Case(8, 16, 12, 12, k=(5, 5), pads=(2, 2, 2, 2), perf=True))
    cases.append(Case(16, 8, 14, 14, k=(1, 1), perf=True))
    # A window span of 206 of the 256 line-buffer words (SIMD 8), the input wrapping around it
    # about four times.
    cases.append(Case(16, 8, 16, 16, k=(7, 7), pads=(3, 3, 3, 3), stalls=True))
    cases.append(Case(16, 8, 16, 16, k=(7, 7), stride=(2, 3), pads=(0, 6, 1, 2)))
    cases += illegal_cases()
    cases.append(Case(7, 9, 9, 7, k=(3, 3), pads=(1, 1, 1, 1), stalls=True))
    cases += pool_large_sweep(rng, TEST_CONFIG_WIDE["pool_window_slots"])
    return cases


def ice40_sweep():
    """The iCE40 configuration (:data:`sim.configs.ENGINE_ICE40`: one iterative requantize
    unit for both PE lanes): 1x1 layers whose groups take fewer cycles than the unit needs
    (the MAC array waits on the accumulator FIFO), the digits CNN's CONV-RELU layers (no
    max-pool unit: their pools run on the golden model), strided, raw and refused layers (a
    fused pool and a pool alone: POOL_NO_UNIT), with and without stalls."""
    return [
        Case(2, 8, 5, 6, k=(1, 1), per_channel=False),
        Case(4, 7, 6, 5, k=(1, 1), out="uint8", relu=True, stalls=True),
        Case(1, 16, 8, 8, pads=(1, 1, 1, 1), relu=True),
        Case(16, 32, 4, 4, pads=(1, 1, 1, 1), relu=True, stalls=True),
        Case(1, 16, 8, 8, pads=(1, 1, 1, 1), relu=True, pool=MaxPool(2, 2),
             expect="POOL_NO_UNIT"),
        Case(3, 6, 12, 11, k=(5, 5), stride=(2, 2), pads=(2, 1, 0, 2), x_dtype="uint8",
             w_dtype="uint8", out="uint8", stalls=True),
        Case(3, 5, 6, 7, out="int32", stalls=True),
        Case(5, 0, 7, 9, alone=True, pool=MaxPool(2, 2), expect="POOL_NO_UNIT"),
        Case(33, 3, 5, 5, expect="CHANNELS"),
        Case(3, 3, 6, 6, k=(3, 3), pads=(1, 1, 1, 1), repeat=2),
    ]


#: Sweeps by name; each takes the random seed (shapes of the large sweep, data of all).
SWEEPS = {"small": lambda seed: small_sweep() + illegal_cases() + [Case(3, 3, 5, 5, stalls=True)]
          + pool_small_sweep(),
          "ice40": lambda seed: ice40_sweep(),
          "large": large_sweep,
          "smoke": lambda seed: [Case(16, 16, 12, 12, k=(3, 3), pads=(1, 1, 1, 1), perf=True),
                                 Case(3, 8, 9, 9, k=(7, 7), stride=(2, 2), pads=(3, 3, 3, 3),
                                      stalls=True),
                                 # CONV-RELU-POOL; a 64-channel 3x3/2 pool alone.
                                 Case(16, 16, 12, 12, k=(3, 3), pads=(1, 1, 1, 1), relu=True,
                                      pool=MaxPool(2, 2)),
                                 Case(64, 0, 9, 9, alone=True, pool=MaxPool(3, 2), stalls=True)],
          # The large configuration (SIMD 16 x PE 8, four requantize units for the eight PE
          # lanes): the smoke cases, a packed first layer, 20 output channels (a last group
          # of four), a 1x1 layer whose groups outrun the shared requantizers, a full-rate
          # 64 -> 64 layer.
          "large-config": lambda seed: SWEEPS["smoke"](seed) + [
              Case(3, 16, 32, 32, k=(5, 5), pads=(2, 2, 2, 2), relu=True),
              Case(16, 20, 16, 16, k=(5, 5), pads=(2, 2, 2, 2), relu=True, stalls=True),
              Case(16, 24, 9, 7, k=(1, 1), out="uint8", stalls=True),
              Case(64, 64, 16, 16, k=(3, 3), pads=(1, 1, 1, 1), perf=True)],
          # Not run by pytest: the lecture's layers and the ConvNetJS CIFAR-10 convs on the
          # default configuration (utilization figures; see the log).
          "lecture": lambda seed: [
              Case(3, 6, 32, 32, k=(5, 5)),                                # 32x32x3 -> 28x28x6
              Case(3, 10, 32, 32, k=(5, 5), pads=(2, 2, 2, 2)),            # ten 5x5, pad 2
              Case(64, 32, 56, 56, k=(1, 1), perf=True),                   # 1x1 conv
              Case(1, 1, 7, 7, k=(3, 3), stride=(2, 2)),                   # 7x7, 3x3, stride 2
              Case(3, 16, 32, 32, k=(5, 5), pads=(2, 2, 2, 2), relu=True),   # CIFAR-10 conv1
              Case(16, 20, 16, 16, k=(5, 5), pads=(2, 2, 2, 2), relu=True),  # conv2
              Case(20, 20, 8, 8, k=(5, 5), pads=(2, 2, 2, 2), relu=True),    # conv3
              Case(64, 64, 32, 32, k=(3, 3), pads=(1, 1, 1, 1), perf=True),  # 64->64 3x3
          ]}


# --- cocotb ---------------------------------------------------------------------------------

async def reset(dut):
    cocotb.start_soon(Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, RESET_CYCLES)
    dut.rst.value = 0
    await ClockCycles(dut.clk, RESET_CYCLES)


def watchdog_ns(case):
    """Generous simulated-time limit of one layer: a hang fails the test instead of stalling."""
    ops = case.h * case.w * max(case.cout, 1) * case.cin * case.k[0] * case.k[1]
    return (ops * WATCHDOG_CYCLES_PER_MAC + WATCHDOG_BASE_CYCLES) * CLOCK_PERIOD_NS


async def check_case(drv, case, index, rng, prng, log):
    layer, x = make_layer(case, rng, name=f"layer{index}")
    psum = make_psum(layer, rng) if case.psum else None
    pause = PAUSE_PROBABILITY if case.stalls else 0.0
    for agent in (drv.source, drv.sink, drv.acc):
        burst = PAUSE_BURST if agent is drv.sink else 0
        agent.set_pause_generator(random_pause(prng, pause, burst) if pause else None)
        agent.pause = False     # clearing the generator keeps the last pause value
    log.info("layer %d: %s", index, case.label())
    run = lambda: with_timeout(drv.run_layer(layer, x, psum=psum), watchdog_ns(case), "ns")
    if case.expect != "NONE":
        try:
            await run()
        except EngineRefused as refused:
            assert refused.code == EngineError[case.expect], \
                f"{case.label()}: refused with {refused.code.name}, expected {case.expect}"
            assert drv.sink.empty(), f"{case.label()}: output after a refused layer"
            assert not int(drv.dut.s_axis_tready.value), \
                f"{case.label()}: input ready after a refused layer"
            return None
        raise AssertionError(f"{case.label()}: accepted, expected error {case.expect}")
    result = await run()
    want = run_layer(layer, x[None], None if psum is None else psum[None])[0]
    got = result.output
    assert got.dtype == want.dtype and np.array_equal(got, want), \
        f"layer {index} ({case.label()}): {first_mismatch(got, want)}"
    assert drv.sink.empty(), f"layer {index}: extra output words"
    for repeat in range(1, case.repeat):
        # The same weights again, not reloaded: the parameter memories keep them.
        x2 = rng.integers(x.min(), int(x.max()) + 1, x.shape).astype(x.dtype)
        again = await with_timeout(drv.run_layer(layer, x2, load=False, psum=psum),
                                   watchdog_ns(case), "ns")
        want2 = run_layer(layer, x2[None], None if psum is None else psum[None])[0]
        assert np.array_equal(again.output, want2), \
            f"layer {index} repeat {repeat}: {first_mismatch(again.output, want2)}"
    hw = await drv.hardware()
    macs = layer_macs(layer)
    ideal = macs / (hw.pe * hw.simd)
    cycles = result.counters["cycles"]
    if case.alone:
        log.info("layer %d %s: %d cycles, %d input starved, %d output stalled", index,
                 case.label(), cycles, result.counters["starved_cycles"],
                 result.counters["stalled_cycles"])
        assert result.counters["mac_cycles"] == 0, f"layer {index}: MAC cycles for a pool"
        assert cycles >= result.counters["starved_cycles"], result.counters
        if not case.stalls:
            assert result.counters["stalled_cycles"] == 0, \
                f"layer {index}: backpressure without stalls"
        return None
    log.info("layer %d %s: %d cycles, %d MAC cycles, ideal %.0f, utilization %.3f", index,
             case.label(), cycles, result.counters["mac_cycles"], ideal, ideal / cycles)
    counters = result.counters
    assert counters["cycles"] >= counters["mac_cycles"] + counters["starved_cycles"], counters
    if not case.stalls:
        assert counters["stalled_cycles"] == 0, f"layer {index}: backpressure without stalls"
    if case.perf:
        assert case.cin % hw.simd == 0 and case.cout % hw.pe == 0 and case.stride == (1, 1)
        assert cycles <= PERF_FACTOR * ideal, \
            f"layer {index} ({case.label()}): {cycles} cycles > {PERF_FACTOR} x {ideal:.0f}"
    # Strided layers: MAC cycles are exactly the output positions' operations.
    kh, kw = layer.kernel
    cout, oh, ow = conv_shape(layer)
    # Packed layers take ceil(Kh * Kw * Cin / SIMD) operations per window, plain ones
    # Kh * Kw * ceil(Cin / SIMD).
    if row_pitch(layer, hw.simd, hw.packing) is not None:
        window_ops = -(-kh * kw * case.cin // hw.simd)
        assert window_ops < kh * kw * -(-case.cin // hw.simd)
    else:
        window_ops = kh * kw * -(-case.cin // hw.simd)
    expected_ops = oh * ow * -(-cout // hw.pe) * window_ops
    assert result.counters["mac_cycles"] == expected_ops, \
        f"layer {index}: {result.counters['mac_cycles']} MAC cycles, expected {expected_ops}"
    return ideal / cycles


def multi_pass_cases():
    """Layers larger than the sweep configurations, for the compiler's passes: channel groups
    both ways, sub-kernels, output tiles, a fused pool split off, pools decomposed, a dense
    layer; ``(Case, MaxPool or None for a pool alone)``."""
    return [
        Case(20, 24, 9, 9, pads=(1, 1, 1, 1), relu=True, out="uint8"),
        Case(4, 5, 12, 12, k=(9, 9), pads=(4, 4, 4, 4)),
        Case(5, 6, 20, 18, k=(3, 3), stride=(2, 1), pads=(1, 0, 1, 2), relu=True,
             pool=MaxPool(2, 2)),
        Case(6, 0, 20, 19, alone=True, pool=MaxPool(5, 1, pads=(2, 2, 2, 2))),
        Case(5, 0, 13, 13, alone=True, x_dtype="uint8",
             pool=MaxPool(3, 1, pads=(2, 2, 2, 2), dilation=(2, 2), ceil_mode=True)),
    ]


@cocotb.test()
async def multi_pass_sweep(dut):
    """Layers the engine does not hold, as the layer compiler's passes (sim.compiler), with
    random stalls on every stream (input, output, partial sums): bit-exact."""
    from sim.compiler import compile_layer, steps

    if os.environ.get(SWEEP_ENV, "small") not in ("small", "large"):
        dut._log.info("multi-pass layers run on the sweep configurations only")
        return
    seed = int(os.environ.get(SEED_ENV, "1"))
    rng, prng = np.random.default_rng(seed), random.Random(seed)
    await reset(dut)
    drv = EngineDriver(dut)
    hw = {name.removeprefix("hw_"): value for reg in (
        "HW_ARRAY", "HW_SIZE", "HW_CHANNELS", "HW_WEIGHT_DEPTH", "HW_LINE_BUFFER", "HW_POOL",
        "HW_PARAMS", "HW_CHANNEL_DEPTH")
        for name, value in (await drv.regs.read_fields(reg)).items()}
    for agent in (drv.source, drv.sink, drv.acc):
        agent.set_pause_generator(random_pause(prng, PAUSE_PROBABILITY))
    for index, case in enumerate(multi_pass_cases()):
        if case.pool is not None and hw["pool_window_slots"] == 0:
            continue
        layer, x = make_layer(case, rng, name=f"big{index}")
        schedule = compile_layer(layer, hw)
        assert len(schedule.passes) > 1, f"{case.label()}: one pass"
        gen = steps(schedule, x[None])
        # Each pass's successor is loaded while it runs.
        successors = [q.layer for q in schedule.passes[1:]] + [None]
        try:
            p, xin, psum = next(gen)
            for after in successors:
                result = await with_timeout(
                    drv.run_layer(p.layer, xin[0], psum=None if psum is None else psum[0],
                                  after=after),
                    WATCHDOG_BASE_CYCLES * 100 * CLOCK_PERIOD_NS, "ns")
                p, xin, psum = gen.send(result.output[None])
        except StopIteration as stop:
            got = stop.value[0]
        want = run_layer(layer, x[None])[0]
        assert got.dtype == want.dtype and np.array_equal(got, want), \
            f"{case.label()} ({len(schedule.passes)} passes): {first_mismatch(got, want)}"
        dut._log.info("%s: %d passes, bit-exact", case.label(), len(schedule.passes))


@cocotb.test()
async def engine_sweep(dut):
    """Runs the sweep named by CONVCORE_ENGINE_SWEEP back to back on one reset."""
    seed = int(os.environ.get(SEED_ENV, "1"))
    sweep = SWEEPS[os.environ.get(SWEEP_ENV, "small")](seed)
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    await reset(dut)
    drv = EngineDriver(dut)
    for index, case in enumerate(sweep):
        await check_case(drv, case, index, rng, prng, dut._log)


@cocotb.test()
async def engine_queued_layers(dut):
    """Layers started while another runs (STATUS.queued): set up meanwhile and started when it
    ends, bit-exact; a start while one is queued is ignored; the counters cover the layers run
    back to back; a refused queued layer reports its error once the running one has ended,
    and the running one still completes bit-exact."""
    rng = np.random.default_rng(5)
    a, xa = make_layer(Case(3, 6, 7, 8, pads=(1, 1, 1, 1), relu=True), rng, "a")
    # The same parameters on another map: nothing to load between the two.
    b = dataclasses.replace(a, name="b", in_shape=(3, 5, 9), out_shape=(6, 5, 9))
    xb = rng.integers(-128, 128, b.in_shape).astype(np.int8)
    await reset(dut)
    drv = EngineDriver(dut)
    hw = await drv.hardware()
    budget = watchdog_ns(Case(3, 6, 9, 9))

    def ops(layer):
        cout, oh, ow = conv_shape(layer)
        kh, kw = layer.kernel
        packed = row_pitch(layer, hw.simd, hw.packing) is not None
        cp = 3 if packed else -(-3 // hw.simd) * hw.simd
        return oh * ow * -(-cout // hw.pe) * -(-kh * kw * cp // hw.simd)

    async def both_done(got, twice):
        """The engine idle and done without error, nothing more output, both bit-exact."""
        await drv.idle()
        await ClockCycles(dut.clk, 200)
        st = await drv.status()
        assert st["done"] and not st["busy"] and st["error"] == EngineError.NONE, st
        assert drv.sink.empty(), twice
        for layer, x, y in ((a, xa, got[0]), (b, xb, got[1])):
            want = run_layer(layer, x[None])[0]
            assert np.array_equal(y, want), f"{layer.name}: {first_mismatch(y, want)}"

    await drv.load(a)
    await drv.configure(a)
    await drv.start("a")
    await drv.configure(b)                      # while `a` runs
    await drv.regs.pulse("start")               # queued
    st = await drv.status()
    if not hw.queued_starts:
        # One configuration set: the start was ignored; the host starts `b` once the engine
        # is idle (EngineDriver.queue), a start from idle that clears the counters.
        assert st["running"] and not st["queued"] and not st["done"], st
        got = []
        for layer, x in ((a, xa), (b, xb)):
            if layer is b:
                await drv.queue()
            await drv.source.send(pack_input(x, hw.simd, row_pitch(layer, hw.simd, hw.packing)))
            got.append(unpack_output((await with_timeout(drv.sink.recv(), budget, "ns")).tdata,
                                     layer))
        await both_done(got, "a layer ran twice: the ignored start was taken")
        assert (await drv.counters())["mac_cycles"] == ops(b)
        return
    assert st["running"] and st["queued"] and not st["done"], st
    await drv.regs.pulse("start")               # ignored: `b` is queued
    for layer, x in ((a, xa), (b, xb)):
        await drv.source.send(pack_input(x, hw.simd, row_pitch(layer, hw.simd, hw.packing)))
    got = [unpack_output((await with_timeout(drv.sink.recv(), budget, "ns")).tdata, layer)
           for layer in (a, b)]
    await both_done(got, "a third layer ran: the start while one was queued was taken")
    counters = await drv.counters()
    assert counters["mac_cycles"] == ops(a) + ops(b), counters

    # A refused layer queued behind `a`: `a` completes, then STATUS reports the refusal.
    await drv.configure(a)
    await drv.start("a")
    max_kernel = (await drv.regs.read_fields("HW_ARRAY"))["hw_max_kernel"]
    await drv.regs.write_fields("KERNEL", kernel_h=max_kernel + 1, kernel_w=3)
    await drv.regs.pulse("start")
    await drv.source.send(pack_input(xa, hw.simd, row_pitch(a, hw.simd, hw.packing)))
    y = unpack_output((await with_timeout(drv.sink.recv(), budget, "ns")).tdata, a)
    while (await drv.status())["busy"]:
        pass
    st = await drv.status()
    assert st["done"] and st["error"] == EngineError.KERNEL, st
    assert np.array_equal(y, run_layer(a, xa[None])[0]), "a: differs with a refused layer queued"


@cocotb.test()
async def engine_config_latched(dut):
    """Registers written while a layer runs configure the next layer, not the running one."""
    rng = np.random.default_rng(3)
    first, x1 = make_layer(Case(8, 8, 6, 6, pads=(1, 1, 1, 1)), rng, "first")
    second, x2 = make_layer(Case(4, 3, 5, 7, k=(1, 1), out="int32"), rng, "second")
    await reset(dut)
    drv = EngineDriver(dut)
    hw = await drv.hardware()
    outputs = []
    # Both loaded before the first starts (in different words of the parameter memories).
    await drv.load(first)
    await drv.load(second)
    for layer, x, configure in ((first, x1, True), (second, x2, False)):
        await drv.load(layer)       # resident: nothing is sent
        if configure:
            await drv.configure(layer)
        await drv.start(layer.name)
        await drv.source.send(pack_input(x, hw.simd, row_pitch(layer, hw.simd, hw.packing)))
        if configure:
            await drv.configure(second)          # while `first` runs
        frame = await with_timeout(drv.sink.recv(), watchdog_ns(Case(8, 8, 6, 6)), "ns")
        while (await drv.status())["busy"]:
            pass
        outputs.append(unpack_output(frame.tdata, layer))
    for layer, x, got in ((first, x1, outputs[0]), (second, x2, outputs[1])):
        want = run_layer(layer, x[None])[0]
        assert np.array_equal(got, want), f"{layer.name}: {first_mismatch(got, want)}"


@cocotb.test()
async def engine_loads_while_running(dut):
    """Layer B's parameters are sent to other words of the parameter memories while layer A
    runs (every beat of them taken between A's start and its end); both are bit-exact, and B
    then starts without a reload. Then A again, still resident, and B's successor loaded over
    A's words while B runs."""
    rng = np.random.default_rng(11)
    prng = random.Random(11)
    first, x1 = make_layer(Case(8, 8, 12, 12, k=(3, 3), pads=(1, 1, 1, 1), relu=True), rng, "A")
    second, x2 = make_layer(Case(6, 7, 5, 6, k=(3, 3), out="int32"), rng, "B")
    third, x3 = make_layer(Case(5, 12, 6, 5, k=(5, 5), pads=(2, 2, 2, 2)), rng, "C")
    await reset(dut)
    drv = EngineDriver(dut)
    hw = await drv.hardware()
    taken = {"during": 0, "outside": 0}
    running = {"on": False}

    async def monitor():
        while True:
            await RisingEdge(dut.clk)
            if int(dut.s_axis_param_tvalid.value) and int(dut.s_axis_param_tready.value):
                taken["during" if running["on"] else "outside"] += 1
    cocotb.start_soon(monitor())
    # Output stalls keep A running long enough for B's parameters.
    drv.sink.set_pause_generator(random_pause(prng, PAUSE_PROBABILITY))

    async def run(layer, x, after=None, expect_beats=None):
        placement = await drv.load(layer)
        await drv.configure(layer)
        taken.update(during=0, outside=0)
        await drv.start(layer.name)
        running["on"] = True
        pre = drv.preload(after, placement)
        await drv.source.send(pack_input(x, hw.simd, row_pitch(layer, hw.simd, hw.packing)))
        frame = await with_timeout(drv.sink.recv(), watchdog_ns(Case(8, 8, 12, 12)), "ns")
        while (await drv.status())["busy"]:
            pass
        running["on"] = False
        st = await drv.status()
        assert not st["load_error"] and not st["tlast_error"], st
        got, want = unpack_output(frame.tdata, layer), run_layer(layer, x[None])[0]
        assert got.dtype == want.dtype and np.array_equal(got, want), \
            f"{layer.name}: {first_mismatch(got, want)}"
        if expect_beats is not None:
            assert pre is not None, f"{after.name}: not preloaded while {layer.name} ran"
            beats = sum(len(packet) for packet in pre.packets)
            assert beats == expect_beats > 0
            assert taken == {"during": beats, "outside": 0}, \
                f"{after.name}'s {beats} beats: {taken} taken while {layer.name} ran / not"
            for a, b in ((placement.weight_range, pre.weight_range),
                         (placement.chan_range, pre.chan_range)):
                assert a[0] + a[1] <= b[0] or b[0] + b[1] <= a[0], \
                    f"{after.name} {b} overlaps {layer.name} {a}"
        return pre

    def beats_of(layer):
        from sim.engine_driver import pack_channels, pack_weights
        packed = row_pitch(layer, hw.simd, hw.packing) is not None
        return len(pack_weights(layer, hw.pe, hw.simd, hw.param_width, packed=packed)) \
            + len(pack_channels(layer, hw.pe, hw.param_width))

    await run(first, x1, after=second, expect_beats=beats_of(second))
    sent = dict(drv.stats)
    taken.update(during=0, outside=0)
    await run(second, x2)
    assert drv.stats["weight_words"] == sent["weight_words"], "B was reloaded"
    assert drv.stats["chan_words"] == sent["chan_words"], "B's constants were reloaded"
    await run(first, x1)
    assert drv.stats["weight_words"] == sent["weight_words"], "A was reloaded"
    # C is sent while A runs again (A still resident from its first run).
    await run(first, x1, after=third, expect_beats=beats_of(third))
    await run(third, x3)
    assert drv.sink.empty()


@cocotb.test()
async def engine_pool_mode_reserved(dut):
    """pool_mode 3 is refused (POOL_MODE) with no input taken; a pool-alone layer with stale
    illegal conv registers then runs, and so does a conv after it."""
    rng = np.random.default_rng(5)
    await reset(dut)
    drv = EngineDriver(dut)
    bad, _ = make_layer(Case(3, 3, 5, 5, k=(9, 9), expect="KERNEL"), rng, "bad_conv")
    await drv.configure(bad)
    await drv.regs.modify_fields("POOL", pool_mode=3)
    try:
        await drv.start("reserved")
    except EngineRefused as refused:
        assert refused.code == EngineError.POOL_MODE, refused.code.name
    else:
        raise AssertionError("pool_mode 3 was accepted")
    assert not int(dut.s_axis_tready.value), "input ready after a refused layer"
    # A vertical stride of 1 needs two pool window slots: with one the pool strides 2 on both
    # axes; with none (the iCE40 configuration) it is refused.
    slots = (await drv.regs.read_fields("HW_POOL"))["hw_pool_window_slots"]
    pool = MaxPool(2, (1, 2) if slots > 1 else (2, 2), pads=(0, 1, 1, 0))
    for case in (Case(5, 0, 6, 7, alone=True, pool=pool), Case(3, 4, 6, 6, pads=(1, 1, 1, 1))):
        layer, x = make_layer(case, rng, "after")
        if case.alone and not slots:        # no max-pool unit (the iCE40 configuration)
            try:
                await with_timeout(drv.run_layer(layer, x), watchdog_ns(case), "ns")
            except EngineRefused as refused:
                assert refused.code == EngineError.POOL_NO_UNIT, refused.code.name
            else:
                raise AssertionError("a pool ran without a max-pool unit")
            continue
        result = await with_timeout(drv.run_layer(layer, x), watchdog_ns(case), "ns")
        want = run_layer(layer, x[None])[0]
        assert np.array_equal(result.output, want), \
            f"{case.label()}: {first_mismatch(result.output, want)}"
        assert drv.sink.empty()


# --- pytest entries -----------------------------------------------------------------------

def test_pool_refusals_match_the_pool_unit():
    """The expected pool refusals of the sweeps are what rtl.maxpool's own testbench expects
    of the unit for the same map (the conv output when fused)."""
    engine = ConvEngine(**TEST_CONFIG_WIDE)
    engine._MustUse__silence = True        # built only to read its pool unit's parameters
    params = engine.pool_params
    cases = [c for c in pool_illegal_cases() + pool_small_sweep()
             if c.expect.startswith("POOL_") and c.expect not in ("POOL_RAW", "POOL_MODE")]
    assert cases
    for case in cases:
        h, w = (case.h, case.w) if case.alone else conv_hw(case)
        p = case.pool
        code = expected_error(MapCase(case.cin if case.alone else case.cout, h, w, p.kernel,
                                      p.stride, p.pads, p.dilation, p.ceil_mode), params)
        assert POOL_ERROR_BASE + code == EngineError[case.expect], \
            f"{case.label()}: the unit reports {code.name}, the sweep expects {case.expect}"


def _run(sim, config, sweep, models=()):
    """Build ``config`` and run the cocotb sweep ``sweep`` on ``sim``; ``models`` are extra
    Verilog sources (behavioural models of vendor primitives)."""
    from sim.runner import config_key, emit_verilog, run_cocotb

    key = config_key("engine", config)
    path = emit_verilog(ConvEngine(**config), toplevel="convcore_engine", key=key)
    # The tests touch only the top level's ports: Verilator may optimize the internals.
    run_cocotb(sim, sources=[path, *models], toplevel="convcore_engine", key=key,
               test_module="tb.test_engine", extra_env={SWEEP_ENV: sweep, SEED_ENV: "1"},
               ports_only=True)


def test_engine_icarus():
    _run("icarus", CONFIGS["icarus"], "small")


def test_engine_verilator():
    _run("verilator", CONFIGS["verilator"], "large")


def test_engine_ice40_config_icarus():
    """The iCE40 configuration of ``make synth`` (iterative requantization, one unit)."""
    from sim.configs import ENGINE_ICE40
    _run("icarus", ENGINE_ICE40, "ice40")


def test_engine_default_config_verilator():
    _run("verilator", {}, "smoke")


def test_engine_large_config_verilator():
    """The large ECP5 configuration of ``make synth`` (:data:`sim.configs.ENGINE_LARGE`)."""
    from sim.configs import ENGINE_LARGE
    _run("verilator", ENGINE_LARGE, "large-config")


def test_engine_with_ecp5_primitives():
    """The small sweep with what an ECP5 build instantiates (Icarus, with the primitives'
    behavioural models): the MAC array's and the requantizers' registered MULT18X18D (the
    engine absorbs the array's longer latency: its output FIFO is credited per group, not
    timed) and the DP16KD block RAMs of the line buffer, the parameter memories and the
    max-pool unit with their output registers."""
    _run("icarus", dict(TEST_CONFIG, dsp="ecp5", bram="ecp5"), "small",
         models=[MULT18X18D_MODEL, DP16KD_MODEL])


# --- constructor, memories and register map (no simulator) ---------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(pe=3), "pe must be a power of two up to 64, not 3"),
    (dict(simd=0), "simd must be a power of two up to 64, not 0"),
    (dict(max_kernel=0), "max_kernel must be an integer 1..255, not 0"),
    (dict(max_stride=16), "max_stride must be an integer 1..15, not 16"),
    (dict(line_buffer_depth=1000), "line_buffer_depth must be a power of two of at least 2, "
                                   "not 1000"),
    (dict(fifo_depth=1), "fifo_depth must be an integer at least 2, not 1"),
    (dict(pe=4, requant_lanes=8), "requant_lanes must be a power of two up to pe=4, not 8"),
    (dict(pe=4, requant_lanes=3), "requant_lanes must be a power of two up to pe=4, not 3"),
    (dict(counter_width=0), "counter_width must be an integer 1..64, not 0"),
    (dict(requant_iterative=1), "requant_iterative must be a bool, not 1"),
    (dict(narrow_registers=None), "narrow_registers must be a bool, not None"),
    (dict(no_rw_check="yes"), "no_rw_check must be a bool, not 'yes'"),
    (dict(dsp="ice40"), "dsp must be one of 'generic', 'ecp5', not 'ice40'"),
    (dict(bram="ice40"), "bram must be one of 'generic', 'ecp5', not 'ice40'"),
    (dict(pe=1, simd=4, weight_slice_bits=64),
     "weight_slice_bits must be a power of two up to the weight word of 32 bits, not 64"),
    (dict(weight_slice_bits=3),
     "weight_slice_bits must be a power of two up to the weight word of 512 bits, not 3"),
])
def test_engine_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvEngine(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(pool_window_slots=-1), "pool_window_slots must be an integer 0..7, not -1"),
    (dict(max_kernel=3, pool_window_slots=4), "pool_window_slots must be an integer 0..3, not 4"),
    (dict(pool_max_stride=256), "pool_max_stride must be an integer 1..255, not 256"),
])
def test_engine_rejects_bad_pool_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvEngine(**kwargs)


def test_default_configuration_sizes():
    engine = ConvEngine()
    engine._MustUse__silence = True
    assert 8 * 49 * 8 > DEFAULT_WEIGHT_DEPTH    # the largest layer is split into passes
    assert engine.config["weight_depth"] == DEFAULT_WEIGHT_DEPTH
    assert engine.config["line_buffer_depth"] == 16384


def test_default_configuration_pool_memory():
    """The default pool unit (2 window slots, PE = 8 lanes, 224 wide, 64 channels):
    (224 + 7 - 1) * 8 words of 2 * 8 bytes, and 8 such words for the horizontal stage."""
    engine = ConvEngine()
    engine._MustUse__silence = True
    bits = engine.memory_bits()
    assert bits["pool_vertical"] == 230 * 8 * 128 == 235520
    assert bits["pool_horizontal"] == 8 * 128
    assert bits["line_buffer"] == 16384 * 64


@pytest.mark.parametrize("channels,height,width,kernel,stride", [
    (64, 224, 224, 2, 2),       # the lecture's pool: 224x224x64 -> 112x112x64
    (16, 8, 8, 2, 2), (32, 4, 4, 2, 2),                         # digits CNN
    (16, 32, 32, 2, 2), (20, 16, 16, 2, 2), (20, 8, 8, 2, 2),   # ConvNetJS CIFAR-10 net
    (64, 112, 112, 3, 2),       # 3x3 stride 2
])
def test_default_configuration_takes_the_example_pools(channels, height, width, kernel, stride):
    """The default engine's pool unit accepts these pools, fused or alone (the checks of
    rtl.maxpool's own testbench on the default limits)."""
    engine = ConvEngine()
    engine._MustUse__silence = True
    case = MapCase(channels, height, width, (kernel, kernel), (stride, stride))
    assert expected_error(case, engine.pool_params) == PoolError.NONE
    wider = MapCase(channels, height, width, (3, 3), (1, 1))
    assert expected_error(wider, engine.pool_params) == PoolError.WINDOW_SLOTS


def test_register_map():
    assert REGMAP.field("error").width >= max(EngineError).bit_length()
    assert encode_zero_point(-1) == 0x1FF and encode_zero_point(255) == 255
    with pytest.raises(ValueError, match="zero point must be in -256..255, not 300"):
        encode_zero_point(300)


def test_pool_error_codes():
    """STATUS.error holds every code; the pool unit's code n is POOL_ERROR_BASE + n."""
    assert REGMAP.field("error").width == ERROR_WIDTH
    assert max(EngineError) < 1 << ERROR_WIDTH
    assert max(EngineError.__members__.values()) == POOL_ERROR_BASE + max(PoolError)
    for code in PoolError:
        if code != PoolError.NONE:
            assert EngineError[f"POOL_{code.name}"] == POOL_ERROR_BASE + code


# --- a pool-alone layer in Amaranth's simulator ---------------------------------------------

def _engine_bus(engine):
    """The engine's flat AXI4-Lite ports under the names tb.testing's transactions use."""
    names = ("awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bvalid",
             "bready", "bresp", "araddr", "arvalid", "arready", "rdata", "rresp", "rvalid",
             "rready")
    return SimpleNamespace(**{n: getattr(engine, f"s_axil_{n}") for n in names})


@pytest.mark.parametrize("pe,simd,channels,pool", [
    (4, 2, 7, MaxPool(2, 2, pads=(1, 0, 0, 1), ceil_mode=True)),
    (2, 8, 5, MaxPool((3, 2), 2, pads=(1, 1, 1, 0), dilation=(1, 2))),
])
def test_pool_alone_in_the_engine(pe, simd, channels, pool):
    """An ONNX MaxPool on the engine (Amaranth simulator) with PE != SIMD: the input words
    pass the width converter; output equals the golden model, no MAC cycle is counted."""
    rng = np.random.default_rng(pe * 10 + simd)
    engine = ConvEngine(pe=pe, simd=simd, max_kernel=3, max_width=8, max_height=8,
                        max_channels=8, max_stride=2, max_dilation=2)
    h, w = 5, 6
    layer = PoolLayer(name="pool", nodes=("pool",), in_shape=(channels, h, w),
                      out_shape=(channels, *pool.output_hw(h, w)), in_dtype="int8", pool=pool)
    x = rng.integers(-128, 128, (channels, h, w)).astype(np.int8)
    data = pack_input(x, simd)
    words = [data[i:i + simd] for i in range(0, len(data), simd)]
    bus = _engine_bus(engine)
    out, status = bytearray(), {}

    async def write(addr, value):
        assert await axi_write(ctx_box[0], bus, addr, value, 0xF) == 0

    async def read(addr):
        value, resp = await axi_read(ctx_box[0], bus, addr)
        assert resp == 0
        return value

    ctx_box = []
    regs = RegisterDriver(REGMAP, write=write, read=read)

    async def host(ctx):
        ctx_box.append(ctx)
        for reg, fields in layer_fields(layer).items():
            await regs.write_fields(reg, **fields)
        await regs.pulse("start")
        while not ((st := await regs.read_fields("STATUS"))["running"] or st["done"]):
            pass
        assert st["error"] == 0, f"refused: {EngineError(st['error']).name}"
        for n, word in enumerate(words):
            while rng.random() < 0.3:
                ctx.set(engine.s_axis_tvalid, 0)
                await ctx.tick()
            ctx.set(engine.s_axis_tdata, int.from_bytes(word, "little"))
            ctx.set(engine.s_axis_tlast, n == len(words) - 1)
            ctx.set(engine.s_axis_tvalid, 1)
            await ctx.tick().until(engine.s_axis_tready)
        ctx.set(engine.s_axis_tvalid, 0)
        while (await regs.read_fields("STATUS"))["busy"]:
            pass
        status.update(await regs.read_fields("STATUS"))
        status["mac_cycles"] = await regs.read("MAC_CYCLES")
        status["cycles"] = await regs.read("CYCLES")

    async def sink(ctx):
        while True:
            ctx.set(engine.m_axis_tready, int(rng.random() < 0.7))
            _, _, valid, ready, tdata, tkeep, last = await ctx.tick().sample(
                engine.m_axis_tvalid, engine.m_axis_tready, engine.m_axis_tdata,
                engine.m_axis_tkeep, engine.m_axis_tlast)
            if valid and ready:
                raw = int(tdata).to_bytes(len(engine.m_axis_tdata) // 8, "little")
                out.extend(raw[i] for i in range(pe) if tkeep >> i & 1)
                if last:
                    return

    sim = Simulator(engine)
    sim.add_clock(CLOCK_PERIOD_S)
    sim.add_testbench(host)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert status["error"] == 0 and not status["tlast_error"], status
    assert status["mac_cycles"] == 0 and status["cycles"] > 0, status
    got = unpack_output(bytes(out), layer)
    want = run_layer(layer, x[None])[0]
    assert np.array_equal(got, want), (got, want)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_sweeps_run_packed_and_plain_layers(config):
    """The sweeps exercise both input formats on each test build (so a packing bug cannot
    hide behind the plain format, nor the reverse)."""
    simd = CONFIGS[config]["simd"]
    layers = [make_layer(case, np.random.default_rng(0))[0] for case in small_sweep()
              if not case.alone and case.expect == "NONE"]
    packed = [layer.name for layer in layers if row_pitch(layer, simd) is not None]
    assert 4 <= len(packed) < len(layers), packed
