"""RegisteredRam (rtl/bram.py): the ``"ecp5"`` build (DP16KD primitives, simulated with their
behavioural model) against the ``"generic"`` one and a dictionary, on both simulators: random
writes and reads, read enables held low (the data holds), one and several segments."""

import json
import os
import random

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from rtl.bram import ECP5_MODES, RegisteredRam, ecp5_segments
from sim import toolchain
from tb.testing import DP16KD_MODEL

CONFIG_ENV = "BRAM_CONFIG"
#: (width, depth): one 1024 x 18 segment, one 16384 x 1, and 2048 x 9 then 1024 x 18 (the
#: read data from two segments).
SHAPES = [(20, 1000), (3, 16384), (72, 2100)]
OPERATIONS = 3000


@cocotb.test()
async def bram_random(dut):
    config = json.loads(os.environ[CONFIG_ENV])
    depth, width = config["depth"], config["width"]
    rng = random.Random(depth * 31 + width)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.w_en.value = 0
    dut.r_en.value = 1
    dut.r_addr.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    memory = {}
    # Reads in flight: (address, enabled edges left before the data is out).
    pending = []
    hot = [rng.randrange(depth) for _ in range(8)]      # revisited addresses
    checked = 0
    for _ in range(OPERATIONS):
        w_addr = rng.choice(hot) if rng.random() < 0.5 else rng.randrange(depth)
        r_addr = rng.choice(hot) if rng.random() < 0.5 else rng.randrange(depth)
        w_en = rng.random() < 0.5 and w_addr != r_addr     # no read of a word being written
        r_en = rng.random() < 0.8
        w_data = rng.getrandbits(width)
        await FallingEdge(dut.clk)
        dut.w_addr.value, dut.w_data.value, dut.w_en.value = w_addr, w_data, int(w_en)
        dut.r_addr.value, dut.r_en.value = r_addr, int(r_en)
        await RisingEdge(dut.clk)
        await ReadOnly()
        if r_en:
            # Each enabled edge moves the reads on: the word read two enabled edges ago is out.
            pending = [(a, v, n - 1) for a, v, n in pending]
            pending.append((r_addr, memory.get(r_addr, 0), 1))
            out = [p for p in pending if p[2] == 0]
            pending = [p for p in pending if p[2] > 0]
            if out:
                addr, want, _ = out[-1]
                got = dut.r_data.value.to_unsigned()
                assert got == want, f"read of word {addr}: {got:#x}, want {want:#x}"
                checked += 1
        if w_en:
            memory[w_addr] = w_data
    # Every enabled edge after the second brings a read out (about 80% of the operations).
    assert checked > OPERATIONS // 2, f"only {checked} reads checked"


# --- pytest entry ---------------------------------------------------------------------------

@pytest.mark.parametrize("bram", ["generic", "ecp5"])
@pytest.mark.parametrize("width,depth", SHAPES)
@pytest.mark.parametrize("sim", toolchain.SIMULATORS)
def test_registered_ram(sim, width, depth, bram):
    from sim.runner import config_key, emit_verilog, run_cocotb

    config = {"width": width, "depth": depth, "bram": bram}
    toplevel = "registered_ram"
    key = config_key(toplevel, config)
    source = emit_verilog(RegisteredRam(**config), toplevel=toplevel, key=key)
    models = [DP16KD_MODEL] if bram == "ecp5" else []
    run_cocotb(sim, sources=[source, *models], toplevel=toplevel, key=key,
               test_module=__name__, extra_env={CONFIG_ENV: json.dumps(config)},
               ports_only=True)


# --- segments (no simulator) ----------------------------------------------------------------

@pytest.mark.parametrize("depth,width,blocks", [
    (1000, 20, 2),          # 1024 x 18: two blocks side by side
    (1024, 512, 29),        # the default weight memory: one 1024 x 18 row
    (2048, 8, 1),           # 2048 x 9
    (16384, 8, 8),          # 16384 x 1, eight wide
    (2100, 72, 8 + 4),      # 2048 x 9, then 1024 x 18 for the last 52 words
    (3136, 512, 57 + 57),   # a 7x7 64 -> 64 layer's weights: two 2048 x 9 segments
    (1568, 1024, 114),      # the same in the large configuration
])
def test_segments_use_the_fewest_blocks(depth, width, blocks):
    segments = ecp5_segments(depth, width)
    assert sum(-(-width // bits) for _, (_, bits) in segments) == blocks
    ram = RegisteredRam(width=width, depth=depth, bram="ecp5")
    ram._MustUse__silence = True            # built for its block count only
    assert ram.blocks == blocks
    # Deepest first, each at a multiple of its depth, covering the memory.
    base = 0
    for start, (words, _) in segments:
        assert start == base and start % words == 0
        base += words
    assert base >= depth
    assert [w for _, (w, _) in segments] == sorted((w for _, (w, _) in segments), reverse=True)
    assert all(mode in ECP5_MODES for _, mode in segments)


@pytest.mark.parametrize("kwargs,message", [
    (dict(width=0, depth=4), "width must be a positive integer, not 0"),
    (dict(width=8, depth=4, bram="ice40"), "bram must be one of 'generic', 'ecp5', not 'ice40'"),
    (dict(width=8, depth=16384 * 64 + 1, bram="ecp5"), "depth 1048577 is above"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RegisteredRam(**kwargs)
