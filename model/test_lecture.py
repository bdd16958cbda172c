"""The worked examples of CS231n's convolution lecture, run through the golden model."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from model import conv2d, conv_output_size, conv_params, maxpool2d
from model.testing import random_q, seeded



@pytest.fixture
def rng(request):
    """Each example draws its data from its own fixed seed."""
    return seeded(request.node.name)


def random_int8(rng, shape):
    return random_q(rng, np.int8, shape)


def direct_conv(x, w, stride=1, pad=0):
    """Every output as an explicit dot product of a window with a filter (CHW, zero padding)."""
    xp = np.pad(x.astype(np.int64), ((0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(xp, w.shape[2:], axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("chwij,ocij->ohw", windows, w.astype(np.int64))


def test_32x32x3_input_six_5x5x3_filters_give_28x28x6(rng):
    x = random_int8(rng, (3, 32, 32))
    w = random_int8(rng, (6, 3, 5, 5))
    out = conv2d(x, w)
    assert out.shape == (6, 28, 28)  # six activation maps, each 28x28
    np.testing.assert_array_equal(out, direct_conv(x, w))
    assert conv_output_size(32, 5) == 28


@pytest.mark.parametrize("stride, size", [(1, 5), (2, 3)])
def test_7x7_input_3x3_filter(rng, stride, size):
    x = random_int8(rng, (1, 7, 7))
    w = random_int8(rng, (1, 1, 3, 3))
    out = conv2d(x, w, stride=stride)
    assert out.shape == (1, size, size)
    np.testing.assert_array_equal(out, direct_conv(x, w, stride))
    assert conv_output_size(7, 3, stride) == size


def test_7x7_input_3x3_filter_stride_3_does_not_fit(rng):
    with pytest.raises(ValueError) as error:
        conv_output_size(7, 3, 3)
    assert str(error.value) == ("stride 3 does not fit: (N - F + 2P)/S + 1 = "
                                "(7 - 3 + 0)/3 + 1 = 2.33 is not an integer")
    # Frameworks floor instead (the last column and row of the input are never used).
    assert conv_output_size(7, 3, 3, strict=False) == 2
    x = random_int8(rng, (1, 7, 7))
    w = random_int8(rng, (1, 1, 3, 3))
    out = conv2d(x, w, stride=3)
    np.testing.assert_array_equal(out, direct_conv(x[:, :6, :6], w, 3))


def test_7x7_input_pad_1_stride_1_keeps_7x7(rng):
    x = random_int8(rng, (1, 7, 7))
    w = random_int8(rng, (1, 1, 3, 3))
    out = conv2d(x, w, stride=1, padding=1)
    assert out.shape == (1, 7, 7)
    np.testing.assert_array_equal(out, direct_conv(x, w, 1, 1))
    # The corner sees only the 2x2 of the input that the filter's lower-right 2x2 covers.
    assert out[0, 0, 0] == int(np.sum(x[0, :2, :2].astype(np.int64) * w[0, 0, 1:, 1:]))
    assert conv_output_size(7, 3, 1, 1) == 7         # P = 1 on each side
    assert conv_output_size(7, 3, 1, (1, 1)) == 7


def test_zero_padding_is_the_zero_point(rng):
    x = rng.integers(0, 256, (1, 7, 7)).astype(np.uint8)
    w = random_int8(rng, (1, 1, 3, 3))
    out = conv2d(x, w, padding=1, x_zero_point=128)
    centred = (x.astype(np.int64) - 128)
    np.testing.assert_array_equal(out, direct_conv(centred, w, 1, 1))


def test_32x32x3_ten_5x5_filters_stride_1_pad_2(rng):
    x = random_int8(rng, (3, 32, 32))
    w = random_int8(rng, (10, 3, 5, 5))
    bias = rng.integers(-1000, 1000, 10)
    out = conv2d(x, w, bias, stride=1, padding=2)
    assert out.shape == (10, 32, 32)
    np.testing.assert_array_equal(out, direct_conv(x, w, 1, 2) + bias.reshape(10, 1, 1))
    assert conv_params(10, 3, 5, 5) == 760 == w.size + bias.size  # 5*5*3 + 1 each


def test_1x1_conv_56x56x64_with_32_filters(rng):
    x = random_int8(rng, (64, 56, 56))
    w = random_int8(rng, (32, 64, 1, 1))
    out = conv2d(x, w)
    assert out.shape == (32, 56, 56)
    # A 1x1 conv is a 64-dimensional dot product at every pixel.
    want = np.einsum("chw,oc->ohw", x.astype(np.int64), w[:, :, 0, 0].astype(np.int64))
    np.testing.assert_array_equal(out, want)


def test_2x2_stride_2_pooling_of_224x224x64(rng):
    x = random_int8(rng, (64, 224, 224))
    out = maxpool2d(x, 2, 2)
    assert out.shape == (64, 112, 112)
    np.testing.assert_array_equal(out, x.reshape(64, 112, 2, 112, 2).max(axis=(2, 4)))
    assert conv_output_size(224, 2, 2) == 112


def test_max_pooling_example():
    x = np.array([[1, 1, 2, 4],
                  [5, 6, 7, 8],
                  [3, 2, 1, 0],
                  [1, 2, 3, 4]], dtype=np.int8)
    out = maxpool2d(x[np.newaxis], 2, 2)
    assert out[0].tolist() == [[6, 8], [3, 4]]
