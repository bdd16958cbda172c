"""Tests of model.conv against naive loops, onnxruntime and onnx.reference."""

import itertools

import numpy as np
import pytest
from onnx import helper

import model.conv
from model.conv import conv2d, conv_output_size, conv_params
from model.quant import quantize_multiplier, real_scale, requantize
from model.testing import (assert_close_quantized, assert_equal_except_ties, exactly,
                           make_model, random_q, run_ort, run_reference, seeded)

INT8, UINT8 = np.dtype(np.int8), np.dtype(np.uint8)


def near_middle(rng, dtype, shape, spread=20):
    info = np.iinfo(dtype)
    middle = (info.min + info.max + 1) // 2
    return (middle + rng.integers(-spread, spread + 1, shape)).astype(dtype)


def naive_conv2d(x, w, bias, stride, pads, dilation, x_zero_point, w_zero_point):
    """A loop per output pixel, summing Python ints over the taps that fall inside the input."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    top, left, bottom, right = pads
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    wz = np.broadcast_to(np.asarray(w_zero_point), (o,))
    out = np.zeros((n, o, oh, ow), dtype=np.int64)
    for b, oc, i, j in itertools.product(range(n), range(o), range(oh), range(ow)):
        total = 0 if bias is None else int(bias[oc])
        for ic, a, e in itertools.product(range(c), range(kh), range(kw)):
            r, q = i * sh - top + a * dh, j * sw - left + e * dw
            if 0 <= r < h and 0 <= q < wd:  # padding holds x_zero_point: contributes 0
                total += (int(x[b, ic, r, q]) - x_zero_point) * (int(w[oc, ic, a, e]) - int(wz[oc]))
        out[b, oc, i, j] = total
    return ((out + 2**31) % 2**32 - 2**31).astype(np.int32)


GEOMETRIES = [  # kernel, stride, pads (top, left, bottom, right), dilation
    ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 2), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((2, 2), (2, 2), (1, 0, 0, 1), (1, 1)),
    ((3, 2), (2, 1), (0, 1, 2, 0), (1, 1)),
    ((3, 3), (2, 2), (1, 1, 1, 1), (2, 2)),
    ((2, 3), (1, 3), (2, 0, 1, 2), (2, 1)),
    ((4, 4), (3, 2), (1, 2, 0, 3), (1, 1)),
    ((1, 3), (1, 1), (0, 1, 0, 1), (1, 3)),
    ((5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
]
DTYPES = [(INT8, INT8), (UINT8, UINT8), (UINT8, INT8), (INT8, UINT8)]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: f"{d[0]}-{d[1]}")
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_conv2d_vs_naive(geometry, dtypes, per_channel):
    kernel, stride, pads, dilation = geometry
    x_type, w_type = dtypes
    rng = seeded(geometry, x_type.str, w_type.str, per_channel)
    x = random_q(rng, x_type, (2, 3, 7, 8))
    w = random_q(rng, w_type, (4, 3, *kernel))
    bias = rng.integers(-50000, 50000, 4)
    x_zp = int(random_q(rng, x_type, ()))
    w_zp = random_q(rng, w_type, (4,) if per_channel else ())
    got = conv2d(x, w, bias, stride, pads, dilation, x_zp, w_zp)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(
        got, naive_conv2d(x, w, bias, stride, pads, dilation, x_zp, w_zp))


def conv_integer_model(x, w, x_zp, w_zp, stride, pads, dilation):
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], kernel_shape=w.shape[2:],
                            strides=stride, pads=pads, dilations=dilation)
    return make_model([node], {"x": x}, {"w": w, "xz": np.array(x_zp, x.dtype), "wz": w_zp},
                      np.int32)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: f"{d[0]}-{d[1]}")
def test_conv2d_vs_conv_integer(geometry, dtypes):
    """Exact against ConvInteger: onnxruntime (uint8 per-tensor, all it implements) and
    onnx.reference (every type pair, per-channel weight zero points)."""
    kernel, stride, pads, dilation = geometry
    x_type, w_type = dtypes
    rng = seeded(geometry, x_type.str, w_type.str)
    x = random_q(rng, x_type, (2, 5, 9, 10))
    w = random_q(rng, w_type, (6, 5, *kernel))
    x_zp = int(random_q(rng, x_type, ()))
    for w_zp in (random_q(rng, w_type, ()), random_q(rng, w_type, (6,))):
        got = conv2d(x, w, None, stride, pads, dilation, x_zp, w_zp)
        model = conv_integer_model(x, w, x_zp, w_zp, stride, pads, dilation)
        np.testing.assert_array_equal(got, run_reference(model, {"x": x}))
        if x_type == w_type == UINT8 and w_zp.ndim == 0:
            np.testing.assert_array_equal(got, run_ort(model, {"x": x}))


def qlinear_conv(x, w, bias, geometry, x_zp, w_zp, scales, y_type, y_zp):
    kernel, stride, pads, dilation = geometry
    x_scale, w_scale, y_scale = scales
    node = helper.make_node(
        "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
        kernel_shape=kernel, strides=stride, pads=pads, dilations=dilation)
    return make_model([node], {"x": x}, {
        "xs": np.float32(x_scale), "xz": np.array(x_zp, x.dtype), "w": w, "ws": w_scale,
        "wz": w_zp, "ys": np.float32(y_scale), "yz": np.array(y_zp, y_type),
        "b": bias.astype(np.int32)}, y_type)


def golden_qlinear_conv(x, w, bias, geometry, x_zp, w_zp, scales, y_type, y_zp):
    """conv2d + requantize with ONNX's float32 scale; returns the output and, for
    :func:`assert_equal_except_ties`, the accumulators, multipliers and shifts (NCHW)."""
    kernel, stride, pads, dilation = geometry
    acc = conv2d(x, w, bias, stride, pads, dilation, x_zp, w_zp)
    multiplier, shift = quantize_multiplier(real_scale(*scales))
    y = requantize(acc, multiplier, shift, y_zp, y_type)
    per_channel = lambda a: np.reshape(a, (-1, 1, 1)) if np.ndim(a) else a  # noqa: E731
    return y, acc, per_channel(multiplier), per_channel(shift)


def check_qlinear_conv(args, x, ort=True):
    """The golden model against both oracles: the ONNX reference equal except at exact ties,
    onnxruntime (exact int8 kernels) within one step on >= 99.9% of the outputs."""
    got, acc, multiplier, shift = golden_qlinear_conv(*args)
    model = qlinear_conv(*args)
    assert_equal_except_ties(got, run_reference(model, {"x": x}), acc, multiplier, shift)
    if ort:
        assert_close_quantized(got, run_ort(model, {"x": x}))
    return got


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtypes", [(INT8, INT8), (UINT8, UINT8), (UINT8, INT8)],
                         ids=lambda d: f"{d[0]}-{d[1]}")
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_conv2d_requantize_vs_qlinear_conv(geometry, dtypes, per_channel):
    """conv2d + requantize vs QLinearConv: the ONNX reference (equal except at exact ties) and
    onnxruntime (>= 99.9% identical, never 2 steps)."""
    x_type, w_type = dtypes
    rng = seeded(geometry, x_type.str, w_type.str, per_channel, 1)
    channels_in, channels_out = 8, 16
    x = random_q(rng, x_type, (2, channels_in, 12, 12))
    w = random_q(rng, w_type, (channels_out, channels_in, *geometry[0]))
    bias = rng.integers(-3000, 3000, channels_out)
    # Asymmetric zero points near the middle of the data, like real ones: far off-centre ones
    # would only saturate the outputs.
    shape = (channels_out,) if per_channel else ()
    x_zp = int(near_middle(rng, x_type, ()))
    w_zp = near_middle(rng, w_type, shape)
    w_scale = rng.uniform(0.002, 0.02, shape).astype(np.float32)
    # y_scale spreads outputs over the 8-bit range (std about 40 steps, some saturation):
    # |x - x_zp| and |w - w_zp| are about 80 on average, the typical w_scale is 0.01.
    taps = channels_in * np.prod(geometry[0])
    x_scale = 0.05
    y_scale = x_scale * 0.01 * np.sqrt(taps) * 80 * 80 / 40
    scales = (np.float32(x_scale), w_scale, np.float32(y_scale))
    y_zp = int(random_q(rng, x_type, ()))
    args = (x, w, bias, geometry, x_zp, w_zp, scales, x_type, y_zp)
    got = check_qlinear_conv(args, x)
    assert np.mean((got == np.iinfo(x_type).min) | (got == np.iinfo(x_type).max)) < 0.5


@pytest.mark.parametrize("dtypes", [(INT8, UINT8), (INT8, INT8), (UINT8, UINT8)],
                         ids=lambda d: f"{d[0]}-{d[1]}")
def test_conv2d_requantize_vs_reference_qlinear_conv(dtypes):
    """onnx.reference covers int8 activations with asymmetric uint8 weights, which onnxruntime
    does not implement."""
    x_type, w_type = dtypes
    rng = np.random.default_rng(11)
    geometry = ((3, 3), (2, 1), (1, 0, 1, 2), (1, 2))
    x = random_q(rng, x_type, (1, 4, 11, 11))
    w = random_q(rng, w_type, (8, 4, 3, 3))
    bias = rng.integers(-3000, 3000, 8)
    w_zp = random_q(rng, w_type, (8,))
    scales = (np.float32(0.04), rng.uniform(0.002, 0.02, 8).astype(np.float32), np.float32(0.9))
    args = (x, w, bias, geometry, 3, w_zp, scales, x_type, -5 if x_type == INT8 else 120)
    check_qlinear_conv(args, x, ort=False)


def test_qlinear_conv_ties_stay_within_one_step():
    """Power-of-two scales make exact ties common, where ONNX rounds half to even and the
    hardware half up: still at most one step apart."""
    rng = np.random.default_rng(5)
    geometry = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    x = rng.integers(-3, 4, (1, 4, 10, 10)).astype(np.int8)
    w = rng.integers(-3, 4, (8, 4, 3, 3)).astype(np.int8)
    scales = (np.float32(0.5), np.full((), 0.5, np.float32), np.float32(1.0))  # acc / 4
    args = (x, w, np.zeros(8, np.int64), geometry, 0, np.zeros((), np.int8), scales, INT8, 0)
    got, acc, multiplier, shift = golden_qlinear_conv(*args)
    model = qlinear_conv(*args)
    for want in (run_reference(model, {"x": x}), run_ort(model, {"x": x})):
        assert_equal_except_ties(got, want, acc, multiplier, shift)
        assert np.any(got != want), "the scales were chosen to produce ties"


def test_conv2d_unbatched_chw():
    rng = np.random.default_rng(2)
    x = random_q(rng, INT8, (3, 6, 6))
    w = random_q(rng, INT8, (2, 3, 3, 3))
    got = conv2d(x, w, padding=1, x_zero_point=4)
    assert got.shape == (2, 6, 6)
    np.testing.assert_array_equal(got, conv2d(x[np.newaxis], w, padding=1, x_zero_point=4)[0])


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_empty_batch(stride):
    out = conv2d(np.zeros((0, 2, 5, 5), np.int8), np.ones((3, 2, 3, 3), np.int8), [1, 2, 3],
                 stride=stride)
    assert out.shape == (0, 3, 3 if stride == 1 else 2, 3 if stride == 1 else 2)
    assert out.dtype == np.int32


def test_conv2d_padding_forms():
    rng = np.random.default_rng(3)
    x = random_q(rng, UINT8, (1, 2, 5, 5))
    w = random_q(rng, INT8, (2, 2, 3, 3))
    np.testing.assert_array_equal(conv2d(x, w, padding=1, x_zero_point=9),
                                  conv2d(x, w, padding=(1, 1, 1, 1), x_zero_point=9))
    np.testing.assert_array_equal(conv2d(x, w, padding=(2, 1), x_zero_point=9),
                                  conv2d(x, w, padding=[2, 1, 2, 1], x_zero_point=9))


def worst_case_operands(channels, kernel):
    """Every product is 255 * 255 = 65025 in magnitude, the largest 8-bit operands allow."""
    x = np.full((1, channels, kernel, kernel), 127, np.int8)
    w = np.full((2, channels, kernel, kernel), 255, np.uint8)
    w[1] = 0
    return x, w, -128, np.array([0, 255], np.uint8)


def test_conv2d_largest_products_stay_exact():
    x, w, x_zp, w_zp = worst_case_operands(64, 5)  # 1600 taps: sums of 104 million > 2**24
    got = conv2d(x, w, x_zero_point=x_zp, w_zero_point=w_zp)
    taps = 64 * 5 * 5
    assert got.ravel().tolist() == [taps * 255 * 255, -taps * 255 * 255]


def test_conv2d_wraps_like_a_32_bit_accumulator():
    taps = 34000  # 34000 * 65025 = 2.2e9 > 2**31 - 1
    x, w, x_zp, w_zp = worst_case_operands(taps, 1)
    bias = np.array([2**31 - 1, -2**31])
    got = conv2d(x, w, bias, x_zero_point=x_zp, w_zero_point=w_zp)
    want = [(taps * 65025 + 2**31 - 1 + 2**31) % 2**32 - 2**31,
            (-taps * 65025 - 2**31 + 2**31) % 2**32 - 2**31]
    assert got.ravel().tolist() == want


def test_conv2d_single_gemm_at_the_float32_limit():
    """Sums of |terms| up to 2**24 - 1 take one float32 GEMM (more products than 2**24 / 65025
    would allow by the per-term bound alone): still exact, including the odd last unit."""
    taps = [255] * 258 + [1] * 3                       # L1 norm 65793 = (2**24 - 1) / 255
    x = np.full((1, len(taps), 1, 1), 127, np.int8)    # x - x_zero_point = 255 everywhere
    w = np.array(taps, np.uint8).reshape(1, len(taps), 1, 1)
    got = conv2d(x, w, x_zero_point=-128)
    assert got.dtype == np.int32 and got.ravel().tolist() == [2**24 - 1]


def test_blas_float32_gemm_is_exact_here():
    assert model.conv.blas_is_exact(), "conv2d and dense fall back to slow int64 matmul"


@pytest.mark.parametrize("limit, blas_ok", [(2**17, True), (2**20, True), (1000, True),
                                            (2**24, False)],
                         ids=["chunks_of_2", "chunks", "int64", "inexact_blas"])
def test_conv2d_exact_paths(monkeypatch, limit, blas_ok):
    """Force the chunked float32 GEMMs and the int64 fallbacks: results stay exact."""
    monkeypatch.setattr(model.conv, "FLOAT32_EXACT", limit)
    monkeypatch.setattr(model.conv, "blas_is_exact", lambda: blas_ok)
    rng = np.random.default_rng(4)
    x = random_q(rng, UINT8, (2, 3, 6, 6))
    w = random_q(rng, INT8, (4, 3, 3, 3))
    w_zp = random_q(rng, INT8, (4,))
    bias = rng.integers(-2**31, 2**31, 4)
    for stride in (1, 2):
        got = conv2d(x, w, bias, stride, 1, 1, 7, w_zp)
        np.testing.assert_array_equal(
            got, naive_conv2d(x, w, bias, (stride, stride), (1, 1, 1, 1), (1, 1), 7, w_zp))


def test_conv2d_large_bias_near_int32_limits():
    rng = np.random.default_rng(6)
    x = random_q(rng, INT8, (1, 2, 4, 4))
    w = random_q(rng, INT8, (3, 2, 2, 2))
    bias = np.array([2**31 - 1, -2**31, 2**31 - 2**20])
    np.testing.assert_array_equal(conv2d(x, w, bias),
                                  naive_conv2d(x, w, bias, (1, 1), (0,) * 4, (1, 1), 0, 0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=np.zeros((1, 2, 5, 5), np.float32)), "x must be int8 or uint8, not float32"),
    (dict(x=np.zeros((2, 5, 5, 1, 1), np.int8)),
     "x must be NCHW or CHW, not shape (2, 5, 5, 1, 1)"),
    (dict(w=np.zeros((3, 2, 3), np.int8)), "w must be OIHW (4-D), not shape (3, 2, 3)"),
    (dict(w=np.zeros((3, 2, 3, 3), np.int16)), "w must be int8 or uint8, not int16"),
    (dict(w=np.zeros((3, 4, 3, 3), np.int8)),
     "x has 2 channels (shape (1, 2, 5, 5)) but w expects 4 (shape (3, 4, 3, 3))"),
    (dict(stride=0), "stride must be >= 1, not 0"),
    (dict(stride=(1, 2, 3)), "stride must be an int or a (height, width) pair, not (1, 2, 3)"),
    (dict(stride=1.5), "stride must be an int or a (height, width) pair, not 1.5"),
    (dict(dilation=(1, 0)), "dilation must be >= 1, not 0"),
    (dict(padding=-1), "padding must be >= 0, not -1"),
    (dict(padding=(1, 2, 3)), "padding must be an int, a (ph, pw) pair or ONNX (top, left, "
                              "bottom, right), not (1, 2, 3)"),
    (dict(w=np.zeros((3, 2, 6, 3), np.int8)),
     "the kernel 6x3 is larger than the padded input 5x5 (input 5x5, padding (0, 0, 0, 0))"),
    (dict(dilation=3), "the dilated kernel 7x7 is larger than the padded input 5x5 "
                       "(input 5x5, padding (0, 0, 0, 0))"),
    (dict(x_zero_point=200), "x_zero_point for int8 data must lie in [-128, 127], not 200"),
    (dict(x_zero_point=[1, 2]), "x_zero_point must be a scalar, not shape (2,)"),
    (dict(x_zero_point=0.5), "x_zero_point must be an integer, not 0.5 (float64)"),
    (dict(w_zero_point=[1, 2]),
     "w_zero_point must be a scalar or 3 per-channel values, not shape (2,)"),
    (dict(w_zero_point=-1, w=np.zeros((3, 2, 3, 3), np.uint8)),
     "w_zero_point for uint8 data must lie in [0, 255], not -1"),
    (dict(bias=[1, 2]), "bias must have shape (3,), one value per output channel, not (2,)"),
    (dict(bias=[0, 0, 2**31]), "bias must lie in [-2147483648, 2147483647], not 2147483648"),
    (dict(bias=[0.5, 0, 0]), "bias must be an integer, not [0.5, 0.0, 0.0] (float64)"),
])
def test_conv2d_errors(kwargs, message):
    args = dict(x=np.zeros((1, 2, 5, 5), np.int8), w=np.zeros((3, 2, 3, 3), np.int8))
    args.update(kwargs)
    with pytest.raises(ValueError, match=exactly(message)):
        conv2d(**args)


@pytest.mark.parametrize("n, k, stride, padding, dilation, want", [
    (7, 3, 1, 0, 1, 5), (7, 3, 2, 0, 1, 3), (7, 3, 1, 1, 1, 7), (32, 5, 1, 2, 1, 32),
    (7, 3, 1, (1, 1), 1, 7), (7, 3, 1, (2, 0), 1, 7), (7, 3, 1, (0, 1), 1, 6),
    (224, 2, 2, 0, 1, 112), (9, 3, 2, 0, 2, 3), (5, 5, 1, 0, 1, 1), (9, 3, 3, (1, 2), 1, 4),
])
def test_conv_output_size_strict(n, k, stride, padding, dilation, want):
    assert conv_output_size(n, k, stride, padding, dilation) == want
    assert conv_output_size(n, k, stride, padding, dilation, strict=False) == want
    assert conv_output_size(n, k, stride, padding, dilation, strict=False, ceil_mode=True) == want


@pytest.mark.parametrize("n, k, stride, padding, dilation, message", [
    (7, 3, 3, 0, 1, "(7 - 3 + 0)/3 + 1 = 2.33"),
    (32, 5, 2, 0, 1, "(32 - 5 + 0)/2 + 1 = 14.5"),
    (10, 3, 4, 1, 2, "(10 - 5 + 2)/4 + 1 = 2.75"),
    (2000, 1, 1000, 0, 1, "(2000 - 1 + 0)/1000 + 1 = 2.999"),
])
def test_conv_output_size_strict_error(n, k, stride, padding, dilation, message):
    with pytest.raises(ValueError) as error:
        conv_output_size(n, k, stride, padding, dilation)
    assert str(error.value) == (f"stride {stride} does not fit: (N - F + 2P)/S + 1 = {message} "
                                f"is not an integer")


@pytest.mark.parametrize("n, k, stride, padding, dilation, floor, ceil", [
    (7, 3, 3, 0, 1, 2, 3), (32, 5, 2, 0, 1, 14, 15), (5, 2, 2, 0, 1, 2, 3),
    (4, 2, 4, (0, 1), 1, 1, 1),   # ceil's extra window would start in the end padding: dropped
    (4, 2, 4, (1, 0), 1, 1, 2),   # ... but it starts inside the input here
    (5, 3, 3, (0, 2), 1, 2, 2),
    (10, 3, 4, 1, 2, 2, 3),
])
def test_conv_output_size_floor_and_ceil(n, k, stride, padding, dilation, floor, ceil):
    assert conv_output_size(n, k, stride, padding, dilation, strict=False) == floor
    assert conv_output_size(n, k, stride, padding, dilation, strict=False, ceil_mode=True) == ceil


@pytest.mark.parametrize("args, message", [
    ((3, 5), "kernel 5 is larger than the padded input 3 + 0 = 3"),
    ((3, 3, 1, 0, 2), "dilated kernel 5 (k=3, dilation=2) is larger than the padded input "
                      "3 + 0 = 3"),
    ((0, 1), "n must be >= 1, not 0"),
    ((5, 0), "k must be >= 1, not 0"),
    ((5, 3, 0), "stride must be >= 1, not 0"),
    ((5, 3, 1, -2), "padding must be >= 0, not -2"),
    ((5, 3, 1, (0, -1)), "padding must be >= 0, not -1"),
    ((5, 3, 1, 0, 0), "dilation must be >= 1, not 0"),
    ((5.0, 3), "n must be an integer, not 5.0"),
])
def test_conv_output_size_errors(args, message):
    with pytest.raises(ValueError, match=exactly(message)):
        conv_output_size(*args, strict=False)


def test_conv_params():
    assert conv_params(10, 3, 5, 5) == 760
    assert conv_params(10, 3, 5, 5, bias=False) == 750
    assert conv_params(32, 64, 1, 1) == 32 * 65
    with pytest.raises(ValueError, match=exactly("out_channels must be >= 1, not 0")):
        conv_params(0, 3, 5, 5)
