"""The host-side packing of sim/engine_driver.py on its own: input and output byte order,
register fields and output shapes of conv and pool layers. The driver runs the engine in
tb/test_engine.py; the parameter packets it builds are checked against the engine's parameter
memories in tb/test_weights.py."""

import numpy as np
import pytest

from model.network import MaxPool, PoolLayer
from sim.engine_driver import (ParamMemory, conv_shape, layer_fields, output_shape, pack_channels,
                               pack_input, pack_weights, param_bytes, unpack_output, weight_words)
from sim.testing import random_conv_layer


def test_input_and_output_packing():
    x = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    data = pack_input(x, 4)
    assert len(data) == 3 * 5 * 4
    assert data[:8] == bytes([x[0, 0, 0], x[1, 0, 0], 0, 0, x[0, 0, 1], x[1, 0, 1], 0, 0])
    layer = random_conv_layer(raw=True)
    layer.in_shape = (3, 4, 5)
    y = np.arange(5 * 3 * 3, dtype=np.int32).reshape(5, 3, 3) - 20
    back = unpack_output(y.transpose(1, 2, 0).astype("<i4").tobytes(), layer)
    assert back.dtype == np.int32 and np.array_equal(back, y)
    with pytest.raises(ValueError, match="engine sent 44 values, expected 5x3x3 = 45"):
        unpack_output(y.transpose(1, 2, 0).astype("<i4").tobytes()[:-4], layer)


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
    conv = random_conv_layer()
    assert layer_fields(conv)["POOL"] == dict(pool_mode="OFF")
    conv.pool = MaxPool(2, 2)
    assert layer_fields(conv)["POOL"]["pool_mode"] == "FUSED"
    assert conv_shape(conv) == (5, 3, 3) and output_shape(conv) == (5, 1, 1)
    y = np.arange(6 * 5 * 5, dtype=np.uint8).reshape(6, 5, 5)
    back = unpack_output(y.transpose(1, 2, 0).tobytes(), alone)
    assert back.dtype == np.uint8 and np.array_equal(back, y)


def test_param_memory_places_blocks_apart_and_keeps_them():
    """ParamMemory: a block goes where it is resident (no load), else into free words, else
    over the least recently used blocks, never over the words to keep; in a random sequence of
    layers, each placed beside the one before, a layer that fits beside its predecessor
    finds no place only when the predecessor was resident in the middle of the memory."""
    mem = ParamMemory(10)
    assert mem.place("a", 4) == (0, True)
    assert mem.place("b", 3, keep=[(0, 4)]) == (7, True)       # at an end
    assert mem.place("a", 4, keep=[(7, 3)]) == (0, False)      # resident
    assert mem.place("c", 3, keep=[(0, 4)]) == (4, True)       # free words between
    assert mem.place("d", 3, keep=[(4, 3)]) == (7, True)       # over b, used longest ago
    assert mem.where("b") is None and mem.where("a") == (0, 4) and mem.where("c") == (4, 3)
    assert mem.place("e", 6, keep=[(2, 5)]) is None             # neither side has 6 words
    assert mem.place("f", 11) == (0, True) and mem.blocks == {}  # refused by the engine
    assert mem.place("g", 11, keep=[(0, 1)]) is None
    assert mem.put("h", 3, 4) == (3, True) and mem.put("h", 3, 4) == (3, False)
    with pytest.raises(ValueError, match="depth must be a positive integer, not 0"):
        ParamMemory(0)
    rng = np.random.default_rng(1)
    mem, running, sizes, outcomes = ParamMemory(100), None, {}, set()
    for n in range(300):
        key = int(rng.integers(0, 12))
        size = sizes.setdefault(key, int(rng.integers(1, 60)))
        keep = [running] if running is not None and running[1] + size <= 100 else []
        resident = mem.where(key)
        placed, later = mem.place(key, size, keep), False
        if placed is None:          # loaded once the running layer is done
            assert running[0] not in (0, 100 - running[1]), (n, running, size)
            outcomes.add("later")
            placed, later = mem.place(key, size), True
        base, load = placed
        assert load == (resident is None or placed[0] != resident[0]), (n, resident, placed)
        outcomes.add("load" if load else "resident")
        assert 0 <= base <= 100 - size
        if keep and load and not later:
            assert base + size <= running[0] or running[0] + running[1] <= base
        running = (base, size)
    assert outcomes == {"load", "resident", "later"}


def test_param_packets_at_each_width():
    """Weight and channel packets: the header's address, whole words in ceil(word /
    param_width) little-endian beats, the last zero-padded; the stream bytes of the beats."""
    layer = random_conv_layer()
    pe, simd = 4, 2                                     # 64-bit weight words
    words = weight_words(layer, pe, simd)
    for width, beats in ((32, 2), (64, 1), (128, 1)):
        packet = pack_weights(layer, pe, simd, width, 7)
        assert packet[0] == (1 << 28) | 7
        assert len(packet) == 1 + beats * len(words)
        data = param_bytes(packet[1:], width)
        padded = np.zeros((len(words), beats * width // 8), np.uint8)
        padded[:, :pe * simd] = words
        assert data == padded.tobytes()
    chan = pack_channels(layer, pe, 512)
    assert len(chan) == 1 + -(-layer.weight.shape[0] // pe)
    assert chan[1] >> (96 * pe) == 0, "padding above the 3 * pe values"
