"""Pure-Python checks of the conv engine's parts (Amaranth simulator, no HDL simulator).

The whole engine is checked against the golden model in tb/test_engine.py; here the MAC array,
the parameter loader and the pool's width converter are checked on their own, with the
host-side packing of sim/engine_driver.py; the pool-alone mode runs in the whole engine for
PE != SIMD ratios the HDL builds do not cover; constructors must refuse bad arguments with
clear messages.
"""

from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.sim import Simulator

from model.network import ConvLayer, MaxPool, PoolLayer, run_layer
from rtl.engine import ConvEngine
from rtl.engine_regs import (ERROR_WIDTH, POOL_ERROR_BASE, REGMAP, EngineError,
                             encode_zero_point)
from rtl.linebuffer import LineBuffer, line_buffer_depth, line_buffer_span
from rtl.mac_array import MacArray
from rtl.maxpool import PoolError
from rtl.regmap import RegisterDriver
from rtl.regroup import Regroup
from rtl.weights import ParamStore
from sim.engine_driver import (conv_shape, layer_fields, output_shape, pack_channels, pack_input,
                              pack_weights, unpack_output)

CLOCK_PERIOD = 1e-8
#: Constructors that are expected to fail leave half-built elaboratables behind.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")


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
                ctx.set(dut.in_image, int(in_image[g, o]))
                ctx.set(dut.lanes, int(lanes[g, o]))
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
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    unpacked = [[int(np.int32(np.uint32((v >> (32 * p)) & 0xFFFFFFFF))) for p in range(pe)]
                for v in got]
    assert unpacked == want
    assert [v - c for c, v in zip(last_cycles, valid_cycles)] == [dut.latency] * groups


def _layer(cout=5, cin=3, k=(2, 3), raw=False, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (cout, cin, *k)).astype(np.int8)
    quant = {} if raw else dict(out_dtype="int8", multiplier=rng.integers(1 << 30, 1 << 31, cout),
                                shift=rng.integers(1, 63, cout))
    return ConvLayer(name="l", nodes=("l",), in_shape=(cin, 4, 5), out_shape=(cout, 3, 3),
                     in_dtype="int8", weight=w, bias=rng.integers(-1000, 1000, cout),
                     w_zero_point=rng.integers(-128, 128, cout), **quant)


@pytest.mark.parametrize("pe,simd,read_register,no_rw_check", [
    (2, 2, False, False), (4, 4, False, False), (1, 2, False, False), (2, 2, True, True)])
def test_param_store_loads_driver_packets(pe, simd, read_register, no_rw_check):
    """Memory words after loading the driver's packets hold what the docstring says, read
    with the documented latency (``chan_data`` one cycle, the others two with
    ``read_register``)."""
    layer = _layer()
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
    (dict(counter_width=0), "counter_width must be an integer 1..64, not 0"),
    (dict(requant_iterative=1), "requant_iterative must be a bool, not 1"),
    (dict(narrow_registers=None), "narrow_registers must be a bool, not None"),
    (dict(no_rw_check="yes"), "no_rw_check must be a bool, not 'yes'"),
    (dict(dsp="ice40"), "dsp must be one of 'generic', 'ecp5', not 'ice40'"),
])
def test_engine_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvEngine(**kwargs)


def test_part_constructors_reject_bad_parameters():
    with pytest.raises(ValueError, match="pe must be a positive integer, not 0"):
        MacArray(0, 4)
    with pytest.raises(ValueError, match="depth must be a power of two of at least 2, not 12"):
        LineBuffer(simd=4, depth=12, count_width=8)
    with pytest.raises(ValueError, match="read_register must be a bool, not 1"):
        LineBuffer(simd=4, depth=16, count_width=8, read_register=1)
    with pytest.raises(ValueError, match="no_rw_check must be a bool, not 1"):
        ParamStore(pe=2, simd=2, weight_depth=4, channel_groups=1, no_rw_check=1)
    with pytest.raises(ValueError, match="weight_depth must be a positive integer, not 0"):
        ParamStore(pe=2, simd=2, weight_depth=0, channel_groups=1)


def test_default_configuration_sizes():
    engine = ConvEngine()
    engine._MustUse__silence = True
    assert engine.config["weight_depth"] == 8 * 49 * 8
    assert engine.config["line_buffer_depth"] == 16384


# --- max pooling: width converter, pool-alone mode, register map --------------------------

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
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    real = [(min(out_lanes, channels - (i % -(-channels // out_lanes)) * out_lanes))
            for i in range(len(want))]
    assert [g[:n] for g, n in zip(got, real)] == want
    assert got_lasts == want_lasts


def _engine_bus(engine):
    """The engine's flat AXI4-Lite ports under the names rtl.test_axil_regs_sim uses."""
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
    from rtl.test_axil_regs_sim import axi_read, axi_write

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
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(host)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert status["error"] == 0 and not status["tlast_error"], status
    assert status["mac_cycles"] == 0 and status["cycles"] > 0, status
    got = unpack_output(bytes(out), layer)
    want = run_layer(layer, x[None])[0]
    assert np.array_equal(got, want), (got, want)


def test_pool_error_codes():
    """STATUS.error holds every code; the pool unit's code n is POOL_ERROR_BASE + n."""
    assert REGMAP.field("error").width == ERROR_WIDTH
    assert max(EngineError) < 1 << ERROR_WIDTH
    assert max(EngineError.__members__.values()) == POOL_ERROR_BASE + max(PoolError)
    for code in PoolError:
        if code != PoolError.NONE:
            assert EngineError[f"POOL_{code.name}"] == POOL_ERROR_BASE + code


def test_driver_pool_fields_and_shapes():
    pool = MaxPool(3, 2, pads=(1, 0, 1, 1), dilation=(1, 2), ceil_mode=True)
    alone = PoolLayer(name="p", nodes=("p",), in_shape=(6, 9, 11), out_shape=(6, 5, 5),
                      in_dtype="uint8", pool=pool)
    fields = layer_fields(alone)
    assert "KERNEL" not in fields and "PADS" not in fields       # conv registers untouched
    assert fields["POOL"] == dict(pool_mode="ALONE", pool_ceil_mode=1)
    assert fields["POOL_PADS"] == dict(pool_pad_top=1, pool_pad_left=0, pool_pad_bottom=1,
                                       pool_pad_right=1)
    assert fields["POOL_DILATION"] == dict(pool_dilation_h=1, pool_dilation_w=2)
    assert fields["QUANT"] == dict(x_unsigned=1)
    assert output_shape(alone) == (6, *pool.output_hw(9, 11))
    conv = _layer()
    assert layer_fields(conv)["POOL"] == dict(pool_mode="OFF")
    conv.pool = MaxPool(2, 2)
    assert layer_fields(conv)["POOL"]["pool_mode"] == "FUSED"
    assert conv_shape(conv) == (5, 3, 3) and output_shape(conv) == (5, 1, 1)
    y = np.arange(6 * 5 * 5, dtype=np.uint8).reshape(6, 5, 5)
    back = unpack_output(y.transpose(1, 2, 0).tobytes(), alone)
    assert back.dtype == np.uint8 and np.array_equal(back, y)


@pytest.mark.parametrize("kwargs,message", [
    (dict(pool_window_slots=-1), "pool_window_slots must be an integer 0..7, not -1"),
    (dict(max_kernel=3, pool_window_slots=4), "pool_window_slots must be an integer 0..3, not 4"),
    (dict(pool_max_stride=256), "pool_max_stride must be an integer 1..255, not 256"),
])
def test_engine_rejects_bad_pool_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvEngine(**kwargs)


def test_regroup_rejects_bad_parameters():
    with pytest.raises(ValueError, match="in_lanes must be a power of two up to 64, not 3"):
        Regroup(3, 4, 8)
    with pytest.raises(ValueError, match="out_lanes must be a power of two up to 64, not 128"):
        Regroup(4, 128, 8)
    with pytest.raises(ValueError, match="max_channels must be a positive integer, not 0"):
        Regroup(4, 4, 0)


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
    from tb.test_maxpool import Case as MapCase
    from tb.test_maxpool import expected_error

    engine = ConvEngine()
    engine._MustUse__silence = True
    case = MapCase(channels, height, width, (kernel, kernel), (stride, stride))
    assert expected_error(case, engine.pool_params) == PoolError.NONE
    wider = MapCase(channels, height, width, (3, 3), (1, 1))
    assert expected_error(wider, engine.pool_params) == PoolError.WINDOW_SLOTS
