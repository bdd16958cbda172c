"""The width converter (rtl/regroup.py) on its own, in Amaranth's simulator: words regrouped
from ``in_lanes`` to ``out_lanes`` against a reference, through random idles and backpressure,
``last`` and ``last_error``; and the constructor's checks. The engine feeds the max-pool unit
through it when PE != SIMD (tb/test_engine.py)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.regroup import Regroup

CLOCK_PERIOD_S = 1e-8
#: Constructors that are expected to fail leave half-built elaboratables behind.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")


def _regroup_reference(words, lasts, channels, in_lanes, out_lanes):
    """Expected (beats, lasts) of Regroup: the real channels of each pixel regrouped; a
    word's last on the beat that carries the word's final channels."""
    gin, gout = -(-channels // in_lanes), -(-channels // out_lanes)
    beats, beat_lasts = [], []
    for p in range(len(words) // gin):
        pixel = b"".join(words[p * gin:(p + 1) * gin])[:channels]
        pixel_lasts = lasts[p * gin:(p + 1) * gin]
        final_beat = [min(((k + 1) * in_lanes - 1) // out_lanes, gout - 1) for k in range(gin)]
        for b in range(gout):
            beats.append(pixel[b * out_lanes:(b + 1) * out_lanes])
            beat_lasts.append(int(any(last for last, f in zip(pixel_lasts, final_beat)
                                      if f == b)))
    return beats, beat_lasts


@pytest.mark.parametrize("in_lanes,out_lanes,channels", [
    (8, 4, 13), (8, 2, 3), (8, 2, 16), (2, 8, 13), (4, 8, 3), (2, 8, 16)])
def test_regroup_matches_reference(in_lanes, out_lanes, channels):
    """Random idles and backpressure; an early last (pixel 1) must reach the output too, and
    when packing (in_lanes < out_lanes) on a word that does not close its beat it sets
    last_error, which restart clears."""
    rng = np.random.default_rng(in_lanes * 100 + out_lanes * 10 + channels)
    dut = Regroup(in_lanes, out_lanes, max_channels=16)
    pixels = 4
    gin = -(-channels // in_lanes)
    words = [bytes(rng.integers(0, 256, in_lanes, dtype=np.uint8)) for _ in range(pixels * gin)]
    lasts = [0] * len(words)
    lasts[gin] = 1                  # early, on pixel 1's first word
    lasts[-1] = 1
    want, want_lasts = _regroup_reference(words, lasts, channels, in_lanes, out_lanes)
    ratio = max(1, out_lanes // in_lanes)      # input words per output beat when packing
    closes = [k % gin == gin - 1 or (k % gin) % ratio == ratio - 1 for k in range(len(words))]
    want_error = int(ratio > 1 and any(last and not c for last, c in zip(lasts, closes)))
    assert want_error == (ratio > 1 and gin > 1), "the early last is meant to test the flag"
    got, got_lasts = [], []

    async def source(ctx):
        ctx.set(dut.in_groups, gin)
        ctx.set(dut.out_groups, -(-channels // out_lanes))
        for word, last in zip(words, lasts):
            while rng.random() < 0.3:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.payload, {"data": int.from_bytes(word, "little"), "last": last})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        while len(got) < len(want):
            ctx.set(dut.o.ready, int(rng.random() < 0.7))
            _, _, valid, ready, payload = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                got.append(int(payload.data).to_bytes(out_lanes, "little"))
                got_lasts.append(int(payload.last))
        assert ctx.get(dut.last_error) == want_error
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        assert ctx.get(dut.last_error) == 0

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD_S)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    real = [(min(out_lanes, channels - (i % -(-channels // out_lanes)) * out_lanes))
            for i in range(len(want))]
    assert [g[:n] for g, n in zip(got, real)] == want
    assert got_lasts == want_lasts


def test_regroup_rejects_bad_parameters():
    with pytest.raises(ValueError, match="in_lanes must be a power of two up to 64, not 3"):
        Regroup(3, 4, 8)
    with pytest.raises(ValueError, match="out_lanes must be a power of two up to 64, not 128"):
        Regroup(4, 128, 8)
    with pytest.raises(ValueError, match="max_channels must be a positive integer, not 0"):
        Regroup(4, 4, 0)
