"""Pure-Python checks of the conv engine's parts (Amaranth simulator, no HDL simulator).

The whole engine is checked against the golden model in tb/test_engine.py; here the MAC array
and the parameter loader are checked on their own, with the host-side packing of
tb/engine_driver.py, and constructors must refuse bad arguments with clear messages.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from model.network import ConvLayer
from rtl.engine import ConvEngine
from rtl.engine_regs import REGMAP, EngineError, encode_zero_point
from rtl.linebuffer import LineBuffer, line_buffer_depth, line_buffer_span
from rtl.mac_array import MacArray
from rtl.weights import ParamStore
from tb.engine_driver import pack_channels, pack_input, pack_weights, unpack_output

CLOCK_PERIOD = 1e-8
#: Constructors that are expected to fail leave half-built elaboratables behind.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")


def _bytes_to_int(values):
    return int.from_bytes(np.asarray(values, np.int64).astype(np.uint8).tobytes(), "little")


@pytest.mark.parametrize("pe,simd", [(1, 1), (2, 4), (4, 2)])
def test_mac_array_matches_numpy(pe, simd):
    rng = np.random.default_rng(pe * 10 + simd)
    dut = MacArray(pe, simd)
    groups, ops_per_group = 4, 3
    x_zp, x_unsigned, w_unsigned = 17, 1, 0
    x = rng.integers(0, 256, (groups, ops_per_group, simd))
    w = rng.integers(-128, 128, (groups, ops_per_group, pe, simd))
    w_zp = rng.integers(-128, 128, pe)
    lanes = rng.integers(0, simd + 1, (groups, ops_per_group))
    in_image = rng.integers(0, 2, (groups, ops_per_group))
    want = []
    for g in range(groups):
        acc = np.zeros(pe, np.int64)
        for o in range(ops_per_group):
            xs = np.where((np.arange(simd) < lanes[g, o]) & (in_image[g, o] == 1),
                          x[g, o] - x_zp, 0)
            acc += ((w[g, o] - w_zp[:, None]) * xs).sum(axis=1)
        want.append(acc.astype(np.int32).tolist())
    got = []

    async def bench(ctx):
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
                ctx.set(dut.in_image, int(in_image[g, o]))
                ctx.set(dut.lanes, int(lanes[g, o]))
                if pending:
                    ctx.set(dut.x, pending[0])
                    ctx.set(dut.w, pending[1])
                pending = (_bytes_to_int(x[g, o]), _bytes_to_int(w[g, o].reshape(-1)))
                await ctx.tick()
                if ctx.get(dut.acc_valid):
                    got.append(ctx.get(dut.acc))
        ctx.set(dut.valid, 0)
        ctx.set(dut.x, pending[0])
        ctx.set(dut.w, pending[1])
        for _ in range(MacArray.latency + 1):
            await ctx.tick()
            if ctx.get(dut.acc_valid):
                got.append(ctx.get(dut.acc))

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    unpacked = [[int(np.int32(np.uint32((v >> (32 * p)) & 0xFFFFFFFF))) for p in range(pe)]
                for v in got]
    assert unpacked == want


def _layer(cout=5, cin=3, k=(2, 3), raw=False, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (cout, cin, *k)).astype(np.int8)
    quant = {} if raw else dict(out_dtype="int8", multiplier=rng.integers(1 << 30, 1 << 31, cout),
                                shift=rng.integers(1, 63, cout))
    return ConvLayer(name="l", nodes=("l",), in_shape=(cin, 4, 5), out_shape=(cout, 3, 3),
                     in_dtype="int8", weight=w, bias=rng.integers(-1000, 1000, cout),
                     w_zero_point=rng.integers(-128, 128, cout), **quant)


@pytest.mark.parametrize("pe,simd", [(2, 2), (4, 4), (1, 2)])
def test_param_store_loads_driver_packets(pe, simd):
    """Memory words after loading the driver's packets hold what the docstring says."""
    layer = _layer()
    cout, cin, kh, kw = layer.weight.shape
    cing, coutg = -(-cin // simd), -(-cout // pe)
    dut = ParamStore(pe=pe, simd=simd, weight_depth=coutg * kh * kw * cing, channel_groups=coutg)
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
                        await ctx.tick()
                        weights[og, ky, kx, ig] = ctx.get(dut.weight_data)
            ctx.set(dut.chan_addr, og)
            ctx.set(dut.wzp_addr, og)
            await ctx.tick()
            channels[og] = (ctx.get(dut.chan_data), ctx.get(dut.wzp_data))

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
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
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()


def test_input_and_output_packing():
    x = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    data = pack_input(x, 4)
    assert len(data) == 3 * 5 * 4
    assert data[:8] == bytes([x[0, 0, 0], x[1, 0, 0], 0, 0, x[0, 0, 1], x[1, 0, 1], 0, 0])
    layer = _layer(raw=True)
    layer.in_shape = (3, 4, 5)
    y = np.arange(5 * 3 * 3, dtype=np.int32).reshape(5, 3, 3) - 20
    back = unpack_output(y.transpose(1, 2, 0).astype("<i4").tobytes(), layer)
    assert back.dtype == np.int32 and np.array_equal(back, y)
    with pytest.raises(ValueError, match="engine sent 44 values, expected 5x3x3 = 45"):
        unpack_output(y.transpose(1, 2, 0).astype("<i4").tobytes()[:-4], layer)


def test_line_buffer_formula():
    # Keff_h - 1 rows plus Keff_w pixels, ceil(C / SIMD) words each.
    assert line_buffer_span(3, 3, 32, 16, 8) == (2 * 32 + 3) * 2
    assert line_buffer_span(3, 3, 32, 16, 8, dilation=(2, 2)) == (4 * 32 + 5) * 2
    assert line_buffer_depth(7, 224, 64, 8) == 16384          # (6*224 + 7) * 8 = 10808
    assert line_buffer_depth(7, 16, 16, 4) == 512              # (6*16 + 7) * 4 = 412


def test_register_map():
    assert REGMAP.field("error").width >= max(EngineError).bit_length()
    assert encode_zero_point(-1) == 0x1FF and encode_zero_point(255) == 255
    with pytest.raises(ValueError, match="zero point must be in -256..255, not 300"):
        encode_zero_point(300)


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
])
def test_engine_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvEngine(**kwargs)


def test_part_constructors_reject_bad_parameters():
    with pytest.raises(ValueError, match="pe must be a positive integer, not 0"):
        MacArray(0, 4)
    with pytest.raises(ValueError, match="depth must be a power of two of at least 2, not 12"):
        LineBuffer(simd=4, depth=12, count_width=8)
    with pytest.raises(ValueError, match="weight_depth must be a positive integer, not 0"):
        ParamStore(pe=2, simd=2, weight_depth=0, channel_groups=1)


def test_default_configuration_sizes():
    engine = ConvEngine()
    engine._MustUse__silence = True
    assert engine.config["weight_depth"] == 8 * 49 * 8
    assert engine.config["line_buffer_depth"] == 16384
