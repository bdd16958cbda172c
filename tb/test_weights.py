"""The engine's parameter memories and their loader (rtl/weights.py) on their own, in Amaranth's
simulator: the memory words after loading the host driver's parameter packets
(sim/engine_driver.py), their read latency, the load-error flag of a partial word, and the
constructor's checks."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.weights import ParamStore
from sim.engine_driver import pack_channels, pack_weights
from sim.testing import random_conv_layer

CLOCK_PERIOD_S = 1e-8
#: Constructors that are expected to fail leave half-built elaboratables behind.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")


@pytest.mark.parametrize("pe,simd,read_register,no_rw_check", [
    (2, 2, False, False), (4, 4, False, False), (1, 2, False, False), (2, 2, True, True)])
def test_param_store_loads_driver_packets(pe, simd, read_register, no_rw_check):
    """Memory words after loading the driver's packets hold what the docstring says, read
    with the documented latency (``chan_data`` one cycle, the others two with
    ``read_register``)."""
    layer = random_conv_layer()
    cout, cin, kh, kw = layer.weight.shape
    cing, coutg = -(-cin // simd), -(-cout // pe)
    dut = ParamStore(pe=pe, simd=simd, weight_depth=coutg * kh * kw * cing, channel_groups=coutg,
                     read_register=read_register, no_rw_check=no_rw_check)
    latency = 2 if read_register else 1
    beats = pack_weights(layer, pe, simd) + pack_channels(layer, pe)
    lasts = [0] * len(beats)
    lasts[len(pack_weights(layer, pe, simd)) - 1] = 1
    lasts[-1] = 1
    weights, channels = {}, {}

    async def bench(ctx):
        ctx.set(dut.load_enable, 1)
        for beat, last in zip(beats, lasts):
            ctx.set(dut.param.payload, {"data": beat, "last": last})
            ctx.set(dut.param.valid, 1)
            await ctx.tick()
        ctx.set(dut.param.valid, 0)
        assert not ctx.get(dut.load_error)
        for og in range(coutg):
            for ky in range(kh):
                for kx in range(kw):
                    for ig in range(cing):
                        addr = ((og * kh + ky) * kw + kx) * cing + ig
                        ctx.set(dut.weight_addr, addr)
                        await ctx.tick().repeat(latency)
                        weights[og, ky, kx, ig] = ctx.get(dut.weight_data)
            ctx.set(dut.chan_addr, og)
            ctx.set(dut.wzp_addr, og)
            await ctx.tick()
            chan = ctx.get(dut.chan_data)
            if read_register:
                await ctx.tick()
            channels[og] = (chan, ctx.get(dut.wzp_data))

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD_S)
    sim.add_testbench(bench)
    sim.run()
    w = layer.weight.view(np.uint8)
    for (og, ky, kx, ig), word in weights.items():
        for p in range(pe):
            for i in range(simd):
                o, c = og * pe + p, ig * simd + i
                want = int(w[o, c, ky, kx]) if o < cout and c < cin else 0
                assert (word >> (8 * (p * simd + i))) & 0xFF == want, (og, ky, kx, ig, p, i)
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


def test_param_store_flags_partial_word():
    dut = ParamStore(pe=2, simd=2, weight_depth=4, channel_groups=1)

    async def bench(ctx):
        ctx.set(dut.load_enable, 1)
        for beat, last in ((1 << 28, 0), (0x01020304, 1)):      # a 1-beat word is 4 bytes: ok
            ctx.set(dut.param.payload, {"data": beat, "last": last})
            ctx.set(dut.param.valid, 1)
            await ctx.tick()
        assert not ctx.get(dut.load_error)
        for beat, last in ((2 << 28, 0), (5, 1)):               # channel word needs 6 beats
            ctx.set(dut.param.payload, {"data": beat, "last": last})
            await ctx.tick()
        ctx.set(dut.param.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.load_error)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        assert not ctx.get(dut.load_error)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD_S)
    sim.add_testbench(bench)
    sim.run()


def test_param_store_rejects_bad_parameters():
    with pytest.raises(ValueError, match="no_rw_check must be a bool, not 1"):
        ParamStore(pe=2, simd=2, weight_depth=4, channel_groups=1, no_rw_check=1)
    with pytest.raises(ValueError, match="weight_depth must be a positive integer, not 0"):
        ParamStore(pe=2, simd=2, weight_depth=0, channel_groups=1)
