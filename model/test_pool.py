"""Tests of model.pool against naive loops, onnxruntime and onnx.reference."""

import numpy as np
import pytest
from onnx import helper

from model.pool import maxpool2d
from model.testing import exactly, make_model, naive_maxpool2d, run_ort, run_reference, seeded

DTYPES = [np.int8, np.uint8, np.float32]

GEOMETRIES = [  # kernel, stride, pads (top, left, bottom, right), dilation, ceil_mode
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    ((2, 2), (2, 2), (1, 0, 0, 1), (1, 1), True),
    ((3, 2), (1, 2), (2, 1, 0, 0), (1, 1), False),
    ((2, 3), (3, 3), (0, 2, 1, 0), (1, 1), True),
    ((3, 3), (1, 1), (1, 1, 1, 1), (2, 2), False),
    ((2, 2), (2, 3), (1, 1, 1, 1), (2, 1), True),
    ((1, 1), (2, 2), (0, 0, 0, 0), (1, 1), True),
    ((4, 4), (3, 3), (3, 0, 2, 3), (1, 1), True),
    ((5, 1), (1, 1), (2, 0, 2, 0), (1, 1), False),
    ((2, 2), (1, 1), (0, 0, 0, 0), (3, 3), True),
]
#: onnx.reference (1.23) pads the wrong axes for this one: its output has the wrong shape.
REFERENCE_MISPADS = {((5, 1), (1, 1), (2, 0, 2, 0), (1, 1), False)}


def random_data(rng, dtype, shape):
    """Mostly negative values so that a zero (or 0-valued padding) would win if it could."""
    if np.dtype(dtype).kind == "f":
        return rng.uniform(-100, -1, shape).astype(dtype)
    info = np.iinfo(dtype)
    low = info.min
    high = info.min + 20 if info.min < 0 else info.max + 1
    return rng.integers(low, high, shape).astype(dtype)


def maxpool_model(x, kernel, stride, pads, dilation, ceil_mode):
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=kernel, strides=stride,
                            pads=pads, dilations=dilation, ceil_mode=int(ceil_mode))
    return make_model([node], {"x": x}, {}, x.dtype)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_vs_naive_and_onnx(geometry, dtype):
    kernel, stride, pads, dilation, ceil_mode = geometry
    rng = seeded(geometry, np.dtype(dtype).str)
    x = random_data(rng, dtype, (2, 3, 9, 10))
    got = maxpool2d(x, kernel, stride, pads, dilation, ceil_mode)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(
        got, naive_maxpool2d(x, kernel, stride, pads, dilation, ceil_mode))
    model = maxpool_model(x, kernel, stride, pads, dilation, ceil_mode)
    np.testing.assert_array_equal(got, run_ort(model, {"x": x}))
    if geometry not in REFERENCE_MISPADS:
        np.testing.assert_array_equal(got, run_reference(model, {"x": x}))


def test_maxpool2d_padding_never_wins():
    x = np.full((1, 1, 3, 3), -128, np.int8)
    x[0, 0, 1, 1] = -100
    got = maxpool2d(x, 3, 1, 1)
    assert np.all(got == -100)
    xf = np.full((1, 1, 2, 2), -np.inf, np.float32)
    assert np.all(maxpool2d(xf, 2, 1, 1) == -np.inf)


def test_maxpool2d_defaults_and_unbatched():
    x = np.arange(36, dtype=np.float64).reshape(1, 6, 6)
    got = maxpool2d(x, 2)  # stride defaults to the kernel
    np.testing.assert_array_equal(got, x.reshape(1, 3, 2, 3, 2).max(axis=(2, 4)))
    assert maxpool2d(x, (3, 2), stride=1).shape == (1, 4, 5)


def test_maxpool2d_ceil_mode_drops_a_window_in_the_end_padding():
    x = np.array([[[[1, 2, 3, 4]]]], np.int8)
    got = maxpool2d(x, (1, 2), (1, 4), (0, 0, 0, 1), ceil_mode=True)
    np.testing.assert_array_equal(got, [[[[2]]]])
    model = maxpool_model(x, (1, 2), (1, 4), (0, 0, 0, 1), (1, 1), True)
    np.testing.assert_array_equal(got, run_ort(model, {"x": x}))


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=np.zeros((4, 4), np.int8)), "x must be NCHW or CHW, not shape (4, 4)"),
    (dict(x=np.zeros((1, 4, 4), np.int32)), "x must be int8 or uint8 or float16 or float32 or "
                                            "float64, not int32"),
    (dict(kernel=0), "kernel must be >= 1, not 0"),
    (dict(stride=(2, 0)), "stride must be >= 1, not 0"),
    (dict(dilation=-1), "dilation must be >= 1, not -1"),
    (dict(padding=2), "padding (2, 2, 2, 2) must be smaller than the kernel 2x2 on every side"),
    (dict(padding=(0, 0, 0, -1)), "padding must be >= 0, not -1"),
    (dict(ceil_mode="yes"), "ceil_mode must be True or False, not 'yes'"),
    (dict(kernel=5), "the pooling window 5x5 is larger than the padded input 4x4 (input 4x4, "
                     "padding (0, 0, 0, 0))"),
    (dict(kernel=(1, 2), stride=1, padding=(0, 1, 0, 1), dilation=(1, 3),
          x=np.zeros((1, 1, 1, 2), np.int8)),
     "maxpool window 0 along the width covers only padding (input 2, kernel 2, stride 1, "
     "dilation 3, padding begin 1)"),
])
def test_maxpool2d_errors(kwargs, message):
    args = dict(x=np.zeros((1, 1, 4, 4), np.int8), kernel=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=exactly(message)):
        maxpool2d(**args)
