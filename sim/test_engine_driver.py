"""The host-side packing of sim/engine_driver.py on its own: input and output byte order,
register fields and output shapes of conv and pool layers. The driver runs the engine in
tb/test_engine.py; the parameter packets it builds are checked against the engine's parameter
memories in tb/test_weights.py."""

import numpy as np
import pytest

from model.network import MaxPool, PoolLayer
from sim.engine_driver import conv_shape, layer_fields, output_shape, pack_input, unpack_output
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
