"""The engine's parameter memories and their loader (rtl/weights.py) on their own, in Amaranth's
simulator: the memory words after loading the host driver's parameter packets
(sim/engine_driver.py) at parameter-port widths of 32, 64, 128 and 512 bits, at base addresses
other than 0, with idle cycles between beats and ignored header bits; their read latency; reads
of one word while others are written; the load-error flag of partial words, unknown kinds and
words past the end of a memory; and the constructor's checks."""

import random
import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.streams import BEAT_WIDTH
from rtl.weights import (HEADER_ADDR_BITS, HEADER_KIND_SHIFT, KIND_CHANNELS,
                         KIND_WEIGHTS, ParamStore)
from sim.engine_driver import channel_words, pack_channels, pack_weights
from sim.testing import random_conv_layer

CLOCK_PERIOD_S = 1e-8
#: Constructors that are expected to fail leave half-built elaboratables behind.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD_S)
    sim.add_testbench(bench)
    sim.run()


async def send(ctx, dut, beats, rng=None):
    """One packet (``tlast`` on its last beat), with idle cycles at random when ``rng``."""
    for n, beat in enumerate(beats):
        while rng is not None and rng.random() < 0.3:
            ctx.set(dut.param.valid, 0)
            await ctx.tick()
        ctx.set(dut.param.payload, {"data": beat, "last": n == len(beats) - 1})
        ctx.set(dut.param.valid, 1)
        assert ctx.get(dut.param.ready), "the loader must always be ready"
        await ctx.tick()
    ctx.set(dut.param.valid, 0)


def header_junk(beats, param_width, rng):
    """The packet with random bits above the header's 32 (the loader ignores them)."""
    if param_width == BEAT_WIDTH:
        return beats
    junk = rng.getrandbits(param_width - BEAT_WIDTH) << BEAT_WIDTH
    return [beats[0] | junk, *beats[1:]]


async def read_weight(ctx, dut, addr, latency):
    ctx.set(dut.weight_addr, addr)
    await ctx.tick().repeat(latency)
    return ctx.get(dut.weight_data)


@pytest.mark.parametrize("pe,simd,param_width,read_register,no_rw_check,bases,slice_bits", [
    (2, 2, 32, False, False, (0, 0), None), (4, 4, 32, False, False, (3, 1), None),
    (1, 2, 32, False, False, (0, 2), None), (2, 2, 32, True, True, (5, 0), None),
    (4, 4, 64, False, False, (2, 3), None), (2, 4, 64, True, True, (0, 0), None),
    (4, 4, 128, True, False, (1, 1), None), (8, 8, 512, False, False, (7, 2), None),
    (8, 8, 512, True, True, (0, 1), None),
    # The weight memory in slices (the iCE40 configuration's 2 bits; 1 and half a word).
    (1, 4, 32, True, True, (3, 1), 2), (2, 2, 32, False, False, (0, 0), 1),
    (2, 4, 64, True, False, (1, 0), 32)])
def test_param_store_loads_driver_packets(pe, simd, param_width, read_register, no_rw_check,
                                          bases, slice_bits):
    """Memory words after loading the driver's packets at the base addresses ``bases``
    (weights, channel constants) hold what the docstring says, read with the documented
    latency (``chan_data`` one cycle, the others two with ``read_register``), also with the
    weight memory in slices of ``slice_bits``."""
    rng = random.Random(pe * 1000 + simd * 10 + param_width)
    layer = random_conv_layer()
    cout, cin, kh, kw = layer.weight.shape
    cing, coutg = -(-cin // simd), -(-cout // pe)
    wbase, cbase = bases
    dut = ParamStore(pe=pe, simd=simd, weight_depth=wbase + coutg * kh * kw * cing,
                     channel_depth=cbase + coutg, param_width=param_width,
                     read_register=read_register, no_rw_check=no_rw_check,
                     weight_slice_bits=slice_bits)
    assert dut.weight_slice_bits == (slice_bits or 8 * pe * simd)
    latency = 2 if read_register else 1
    packets = [pack_weights(layer, pe, simd, param_width, wbase, packed=False),
               pack_channels(layer, pe, param_width, cbase)]
    weights, channels = {}, {}

    async def bench(ctx):
        for packet in packets:
            await send(ctx, dut, header_junk(packet, param_width, rng), rng)
        await ctx.tick()
        assert not ctx.get(dut.load_error)
        for og in range(coutg):
            for ky in range(kh):
                for kx in range(kw):
                    for ig in range(cing):
                        addr = wbase + ((og * kh + ky) * kw + kx) * cing + ig
                        weights[og, ky, kx, ig] = await read_weight(ctx, dut, addr, latency)
            ctx.set(dut.chan_addr, cbase + og)
            ctx.set(dut.wzp_addr, cbase + og)
            await ctx.tick()
            chan = ctx.get(dut.chan_data)
            if read_register:
                await ctx.tick()
            channels[og] = (chan, ctx.get(dut.wzp_data))

    run(dut, bench)
    w = layer.weight.view(np.uint8)
    assert len(weights) == coutg * kh * kw * cing
    for (og, ky, kx, ig), word in weights.items():
        for p in range(pe):
            for i in range(simd):
                o, c = og * pe + p, ig * simd + i
                want = int(w[o, c, ky, kx]) if o < cout and c < cin else 0
                assert (word >> (8 * (p * simd + i))) & 0xFF == want, (og, ky, kx, ig, p, i)
    assert len(channels) == coutg
    for og, (chan, wzp) in channels.items():
        for p in range(pe):
            o = og * pe + p
            if o >= cout:
                continue
            assert chan[p]["bias"] == layer.bias[o]
            assert chan[p]["multiplier"] == layer.multiplier[o]
            assert chan[p]["shift"] == layer.shift[o]
            field = (wzp >> (9 * p)) & 0x1FF
            assert field - (field >> 8 << 9) == layer.w_zero_point[o]     # 9-bit two's complement


@pytest.mark.parametrize("pe,simd,param_width", [(2, 2, 32), (4, 4, 64), (8, 8, 512),
                                                 (4, 2, 32), (2, 8, 64)])
def test_param_store_load_errors(pe, simd, param_width):
    """``load_error`` for a packet ending after every possible number of beats inside a
    weight word and inside a channel word, for unknown kinds and for a word one past the end
    of each memory; the whole words before are written, the refused ones are not; the last
    word of each memory is accepted; ``clear`` clears the flag."""
    rng = random.Random(param_width + pe)
    depth, groups = 4, 2        # address `depth` would alias word 0 if it were written
    dut = ParamStore(pe=pe, simd=simd, weight_depth=depth, channel_depth=groups,
                     param_width=param_width)
    weight_beats, channel_beats = dut.weight_beats, dut.channel_beats
    assert weight_beats == -(-8 * pe * simd // param_width)
    assert channel_beats == -(-96 * pe // param_width)

    def header(kind, addr):
        return (kind << HEADER_KIND_SHIFT) | addr

    def words(n, beats):
        return [rng.getrandbits(param_width) for _ in range(n * beats)]

    weight_mask = (1 << dut.weight_width) - 1

    def word_value(beats):
        return sum(b << (param_width * k) for k, b in enumerate(beats))

    async def flagged(ctx, beats, expect):
        await send(ctx, dut, beats)
        await ctx.tick()
        assert ctx.get(dut.load_error) == expect, (beats[0], len(beats), expect)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert not ctx.get(dut.load_error)

    async def bench(ctx):
        good = words(depth, weight_beats)
        await flagged(ctx, [header(KIND_WEIGHTS, 0), *good], 0)
        stored = [word_value(good[k * weight_beats:(k + 1) * weight_beats]) & weight_mask
                  for k in range(depth)]
        for k in range(depth):
            assert await read_weight(ctx, dut, k, 1) == stored[k]
        # A packet ending k beats into its second word: the first word is written.
        for k in range(1, weight_beats):
            first = words(1, weight_beats)
            await flagged(ctx, [header(KIND_WEIGHTS, 1), *first, *words(1, k)], 1)
            stored[1] = word_value(first) & weight_mask
            assert await read_weight(ctx, dut, 1, 1) == stored[1]
            assert await read_weight(ctx, dut, 2, 1) == stored[2], "a partial word was written"
        # The last word is accepted; one past it is refused and not written anywhere.
        last = words(1, weight_beats)
        await flagged(ctx, [header(KIND_WEIGHTS, depth - 1), *last], 0)
        stored[depth - 1] = word_value(last) & weight_mask
        two = words(2, weight_beats)
        await flagged(ctx, [header(KIND_WEIGHTS, depth - 1), *two], 1)
        stored[depth - 1] = word_value(two[:weight_beats]) & weight_mask
        await flagged(ctx, [header(KIND_WEIGHTS, depth), *words(1, weight_beats)], 1)
        # Addresses at the top of the loader's address bits (depth 4: 3 bits) and of the
        # header's: words that would wrap to word 0 and on are refused too.
        for top in (7, 8, (1 << HEADER_ADDR_BITS) - 1):
            await flagged(ctx, [header(KIND_WEIGHTS, top), *words(3, weight_beats)], 1)
        for k in range(depth):
            assert await read_weight(ctx, dut, k, 1) == stored[k], f"word {k}"
        # Channel words: whole ones at the last address, partial ones, one past the end.
        await flagged(ctx, [header(KIND_CHANNELS, groups - 1), *words(1, channel_beats)], 0)
        for k in range(1, channel_beats):
            await flagged(ctx, [header(KIND_CHANNELS, 0), *words(1, k)], 1)
        await flagged(ctx, [header(KIND_CHANNELS, groups), *words(1, channel_beats)], 1)
        # Kinds next to the two legal ones and the largest, with a whole word of either size.
        for kind in (0, KIND_CHANNELS + 1, (1 << (BEAT_WIDTH - HEADER_KIND_SHIFT)) - 1):
            for beats in sorted({weight_beats, channel_beats}):
                await flagged(ctx, [header(kind, 0), *words(1, beats)], 1)
        for k in range(depth):
            assert await read_weight(ctx, dut, k, 1) == stored[k], "an unknown kind wrote"

    run(dut, bench)


@pytest.mark.parametrize("param_width,no_rw_check", [(32, False), (64, True), (512, False)])
def test_param_store_reads_while_loading(param_width, no_rw_check):
    """A word read in every cycle keeps its value while packets write the other words, a beat
    per cycle (the engine loads the next layer while one runs)."""
    pe, simd, depth = 8, 8, 6
    rng = random.Random(param_width)
    dut = ParamStore(pe=pe, simd=simd, weight_depth=depth, channel_depth=4,
                     param_width=param_width, no_rw_check=no_rw_check)

    def packet(addr, values):
        beats = [(KIND_WEIGHTS << HEADER_KIND_SHIFT) | addr]
        for word in values:
            beats += [(word >> (param_width * k)) & ((1 << param_width) - 1)
                      for k in range(dut.weight_beats)]
        return beats

    async def bench(ctx):
        held = rng.getrandbits(dut.weight_width)
        await send(ctx, dut, packet(0, [held]))
        await ctx.tick()
        assert await read_weight(ctx, dut, 0, 1) == held
        other = [rng.getrandbits(dut.weight_width) for _ in range(depth - 1)]
        beats = packet(1, other)
        for n, beat in enumerate(beats):
            ctx.set(dut.param.payload, {"data": beat, "last": n == len(beats) - 1})
            ctx.set(dut.param.valid, 1)
            await ctx.tick()
            assert ctx.get(dut.weight_data) == held, f"read of word 0 changed at beat {n}"
        ctx.set(dut.param.valid, 0)
        await ctx.tick().repeat(2)
        assert ctx.get(dut.weight_data) == held
        for k, word in enumerate(other):
            assert await read_weight(ctx, dut, k + 1, 1) == word

    run(dut, bench)


def test_channel_words_match_the_packet_format():
    """A channel word is 3 * pe 32-bit values; at 32 bits a packet is the header and those
    values in order, at 512 bits each word in whole beats, zero-padded."""
    layer = random_conv_layer()
    pe = 2
    words = channel_words(layer, pe)
    assert words.shape[1] == 12 * pe
    narrow = pack_channels(layer, pe, 32, 5)
    assert narrow[0] == (KIND_CHANNELS << HEADER_KIND_SHIFT) | 5
    values = np.frombuffer(words.tobytes(), "<u4")
    assert narrow[1:] == [int(v) for v in values]
    wide = pack_channels(layer, pe, 512)
    assert len(wide) == 1 + len(words)
    for row, beat in zip(words, wide[1:]):
        assert beat == int.from_bytes(row.tobytes(), "little")


@pytest.mark.parametrize("slice_bits", [0, 3, 12, 64, True, 2.0])
def test_param_store_rejects_bad_weight_slices(slice_bits):
    """A slice is a power of two of bits up to the 32-bit weight word of PE 1 x SIMD 4 (the
    word itself and 1 are accepted, see above)."""
    with pytest.raises(ValueError, match=re.escape(
            "weight_slice_bits must be a power of two up to the weight word of 32 bits, not "
            f"{slice_bits!r}")):
        ParamStore(pe=1, simd=4, weight_depth=4, channel_depth=1, weight_slice_bits=slice_bits)


def test_param_store_rejects_bad_parameters():
    with pytest.raises(ValueError, match="no_rw_check must be a bool, not 1"):
        ParamStore(pe=2, simd=2, weight_depth=4, channel_depth=1, no_rw_check=1)
    with pytest.raises(ValueError, match="weight_depth must be a positive integer, not 0"):
        ParamStore(pe=2, simd=2, weight_depth=0, channel_depth=1)
    with pytest.raises(ValueError, match="channel_depth must be a positive integer, not 0"):
        ParamStore(pe=2, simd=2, weight_depth=4, channel_depth=0)
    with pytest.raises(ValueError, match="param_width must be a power of two of at least 32, "
                                         "not 48"):
        ParamStore(pe=2, simd=2, weight_depth=4, channel_depth=1, param_width=48)
    with pytest.raises(ValueError, match="param_width must be a power of two of at least 32, "
                                         "not 16"):
        ParamStore(pe=2, simd=2, weight_depth=4, channel_depth=1, param_width=16)
