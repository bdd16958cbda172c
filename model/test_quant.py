"""Tests of model.quant against exact rational references, onnxruntime and onnx.reference."""

import math
from fractions import Fraction

import numpy as np
import pytest
from onnx import helper

from model.quant import (SHIFT_MAX, dequantize, quantize, quantize_multiplier, requantize)
from model.testing import exactly, make_model, run_ort, run_reference, seeded


# --- quantize_multiplier -------------------------------------------------------------------

def reference_multiplier(scale: float) -> tuple[int, int]:
    """The contract, in exact rational arithmetic."""
    m, e = math.frexp(scale)
    multiplier = math.floor(Fraction(m) * 2**31 + Fraction(1, 2))
    if multiplier == 2**31:
        multiplier, e = 2**30, e + 1
    shift = 31 - e
    if shift > SHIFT_MAX:
        multiplier = math.floor(Fraction(multiplier, 2 ** (shift - SHIFT_MAX)) + Fraction(1, 2))
        shift = SHIFT_MAX
    return multiplier, shift


EDGE_SCALES = [1.0, 0.5, 0.75, 2.0**-31, 2.0**-32, 2.0**-40, 2.0**-62, 3 * 2.0**-64, 1e-20,
               5e-324, 2.0**30 * (1 - 2.0**-30), 1 - 2.0**-40, (2**30 + 0.5) / 2**31,
               0.1, 1 / 3, 123456.789, 2.0**29]


@pytest.mark.parametrize("scale", EDGE_SCALES)
def test_quantize_multiplier_edges(scale):
    multiplier, shift = quantize_multiplier(scale)
    assert isinstance(multiplier, np.int64) and isinstance(shift, np.int64)
    assert (int(multiplier), int(shift)) == reference_multiplier(scale)


def test_quantize_multiplier_random_array():
    rng = np.random.default_rng(1)
    scales = np.exp(rng.uniform(math.log(1e-25), math.log(1e8), size=2000))
    multiplier, shift = quantize_multiplier(scales.reshape(40, 50))
    assert multiplier.shape == shift.shape == (40, 50)
    assert multiplier.dtype == shift.dtype == np.int64
    want = [reference_multiplier(float(s)) for s in scales]
    assert [(int(m), int(s)) for m, s in zip(multiplier.ravel(), shift.ravel())] == want
    normal = shift.ravel() < SHIFT_MAX
    assert np.all((multiplier.ravel()[normal] >= 2**30) & (multiplier.ravel()[normal] < 2**31))
    approx = multiplier.ravel()[normal] * 2.0 ** -shift.ravel()[normal].astype(np.float64)
    assert np.allclose(approx, scales[normal], rtol=2.0**-30, atol=0)


def test_quantize_multiplier_carry():
    # m * 2**31 rounds up to 2**31: the multiplier wraps to 2**30 and the exponent grows.
    assert quantize_multiplier(1 - 2.0**-40) == (2**30, 30)


@pytest.mark.parametrize("scale, message", [
    (0.0, "real_scale must be finite and > 0, not 0.0"),
    (-0.25, "real_scale must be finite and > 0, not -0.25"),
    (float("nan"), "real_scale must be finite and > 0, not nan"),
    (float("inf"), "real_scale must be finite and > 0, not inf"),
    (2.0**30, "real_scale 1073741824.0 is too large: it rounds to 2**30 or more, which needs "
              "a shift below 1"),
    (2.0**30 * (1 - 2.0**-53), "real_scale 1073741823.9999999 is too large: it rounds to "
                               "2**30 or more, which needs a shift below 1"),
    ([0.5, -2.0], "real_scale must be finite and > 0, not -2.0"),
    ("x", "real_scale must be a finite number > 0, not 'x'"),
])
def test_quantize_multiplier_errors(scale, message):
    with pytest.raises(ValueError, match=exactly(message)):
        quantize_multiplier(scale)


# --- requantize ----------------------------------------------------------------------------

def reference_requantize(acc, multiplier, shift, zero_point, dtype, relu=False):
    """Per element, in exact rationals: round half up of acc * multiplier / 2**shift."""
    info = np.iinfo(dtype)
    lo = max(info.min, zero_point) if relu else info.min
    value = math.floor(Fraction(int(acc) * int(multiplier), 2 ** int(shift)) + Fraction(1, 2))
    return min(max(value + int(zero_point), lo), info.max)


def reference_requantize_array(acc, multiplier, shift, zero_point, dtype, relu=False):
    """Per-channel parameters along axis 1 (or scalars), looping over every element."""
    acc = np.asarray(acc)
    params = [np.broadcast_to(np.asarray(p), (acc.shape[1],)) for p in
              (multiplier, shift, zero_point)]
    out = np.empty(acc.shape, dtype=dtype)
    for index in np.ndindex(acc.shape):
        ch = index[1]
        out[index] = reference_requantize(acc[index], params[0][ch], params[1][ch],
                                          params[2][ch], dtype, relu)
    return out


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("shifts", [(1, 53), (54, SHIFT_MAX), (1, SHIFT_MAX)])
def test_requantize_random_vs_exact(dtype, relu, per_channel, shifts):
    rng = seeded(np.dtype(dtype).str, relu, per_channel, shifts)
    channels = 5
    acc = np.concatenate([rng.integers(-2**31, 2**31, 400), rng.integers(-2**16, 2**16, 400),
                          rng.integers(-300, 300, 200)]).astype(np.int32)
    acc = acc.reshape(2, channels, 10, 10)
    info = np.iinfo(dtype)
    shape = (channels,) if per_channel else ()
    multiplier = rng.integers(0, 2**31, shape)
    shift = rng.integers(shifts[0], shifts[1] + 1, shape)
    zero_point = rng.integers(info.min, info.max + 1, shape)
    got = requantize(acc, multiplier, shift, zero_point, dtype, relu=relu)
    assert got.dtype == dtype and got.shape == acc.shape
    np.testing.assert_array_equal(
        got, reference_requantize_array(acc, multiplier, shift, zero_point, dtype, relu))


def test_requantize_realistic_scales_vs_exact():
    rng = np.random.default_rng(7)
    acc = rng.integers(-2**20, 2**20, (1, 8, 6, 6)).astype(np.int32)
    scales = np.exp(rng.uniform(math.log(1e-6), math.log(1e-3), 8))
    multiplier, shift = quantize_multiplier(scales)
    got = requantize(acc, multiplier, shift, 3, np.int8)
    np.testing.assert_array_equal(
        got, reference_requantize_array(acc, multiplier, shift, 3, np.int8))
    # The fixed-point scale is within 2**-31 relative of the real one: at most a rounding step.
    real = np.clip(np.round(acc * scales.reshape(1, -1, 1, 1)) + 3, -128, 127)
    assert np.max(np.abs(got - real)) <= 1


@pytest.mark.parametrize("acc_bits", [8, 20, 26, 31])
@pytest.mark.parametrize("shifts", [(30, 33), (20, 45), (40, 62), (1, 62)])
@pytest.mark.parametrize("per_channel_multiplier", [False, True])
def test_requantize_per_channel_shifts_vs_exact(acc_bits, shifts, per_channel_multiplier):
    # Per-channel shifts take one common shift when the widened products fit int64 (small
    # accumulators, close shifts) and the per-channel passes otherwise; both must be exact.
    rng = seeded(acc_bits, shifts, per_channel_multiplier)
    channels = 6
    acc = rng.integers(-2**acc_bits, 2**acc_bits, (2, channels, 7, 5))
    acc[0, :, 0, 0], acc[0, :, 0, 1] = 2**acc_bits - 1, -2**acc_bits  # the extremes
    acc = np.clip(acc, -2**31, 2**31 - 1).astype(np.int32)
    multiplier = (rng.integers(2**30, 2**31, channels) if per_channel_multiplier
                  else np.int64(2**31 - 1))
    shift = rng.integers(shifts[0], shifts[1] + 1, channels)
    shift[:2] = shifts                                  # the spread of shifts is the widest
    got = requantize(acc, multiplier, shift, 7, np.int8)
    np.testing.assert_array_equal(
        got, reference_requantize_array(acc, multiplier, shift, 7, np.int8))


@pytest.mark.parametrize("acc, want", [
    # multiplier 2**30, shift 31: y = acc / 2, ties round toward +infinity
    (1, 1), (-1, 0), (3, 2), (-3, -1), (5, 3), (-5, -2), (0, 0), (2, 1), (-2, -1),
])
def test_requantize_ties_round_half_up(acc, want):
    got = requantize(np.array([acc], np.int32), 2**30, 31, 0, np.int8)
    assert got.tolist() == [want]


@pytest.mark.parametrize("dtype, zero_point, acc, relu, want", [
    (np.int8, 0, [10**9, -10**9], False, [127, -128]),
    (np.uint8, 0, [10**9, -10**9], False, [255, 0]),
    (np.int8, -5, [-100, 100, -2], True, [-5, 45, -5]),
    (np.uint8, 128, [-100, 100, -300], True, [128, 178, 128]),
    (np.uint8, 128, [-100, 100, -300], False, [78, 178, 0]),
    (np.int8, 127, [10, -10], True, [127, 127]),
])
def test_requantize_saturation_and_relu(dtype, zero_point, acc, relu, want):
    got = requantize(np.array(acc, np.int32), 2**30, 31, zero_point, dtype, relu=relu)
    assert got.tolist() == want


def test_requantize_extremes_fit_int64():
    acc = np.array([-2**31, 2**31 - 1, -2**31, 2**31 - 1], np.int32)
    got = requantize(acc, 2**31 - 1, SHIFT_MAX, 0, np.int8)
    want = [reference_requantize(a, 2**31 - 1, SHIFT_MAX, 0, np.int8) for a in acc]
    assert got.tolist() == want
    got = requantize(acc, 2**31 - 1, 1, 0, np.uint8)
    assert got.tolist() == [0, 255, 0, 255]


def test_requantize_axes():
    rng = np.random.default_rng(3)
    acc = rng.integers(-5000, 5000, (4, 3)).astype(np.int32)  # (N, C): channels last
    multiplier = np.array([2**30, 2**30 + 12345, 2**31 - 1])
    shift = np.array([38, 40, 42])
    zero_point = np.array([-3, 0, 7])
    got = requantize(acc, multiplier, shift, zero_point, np.int8)
    np.testing.assert_array_equal(
        got, reference_requantize_array(acc.T[np.newaxis], multiplier, shift, zero_point,
                                        np.int8)[0].T)
    chw = acc.T.reshape(3, 2, 2).copy()  # CHW without N: channels on axis -3 by default
    np.testing.assert_array_equal(requantize(chw, multiplier, shift, zero_point, np.int8),
                                  requantize(chw[np.newaxis], multiplier, shift, zero_point,
                                             np.int8)[0])
    explicit = requantize(acc.T, multiplier, shift, zero_point, np.int8, axis=0)
    np.testing.assert_array_equal(explicit, got.T)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dtype=np.int16), "dtype must be int8 or uint8, not int16"),
    (dict(dtype="float32"), "dtype must be int8 or uint8, not float32"),
    (dict(acc=np.zeros(3, np.float32)),
     "acc must be an integer array (int32 accumulators), not float32"),
    (dict(acc=np.array([2**31], np.int64)),
     "acc must lie in [-2147483648, 2147483647], not 2147483648"),
    (dict(multiplier=2**31), "multiplier must lie in [0, 2147483647], not 2147483648"),
    (dict(multiplier=-1), "multiplier must lie in [0, 2147483647], not -1"),
    (dict(multiplier=0.5), "multiplier must be an integer, not 0.5 (float64)"),
    (dict(shift=0), "shift must lie in [1, 62], not 0"),
    (dict(shift=63), "shift must lie in [1, 62], not 63"),
    (dict(zero_point=128), "zero_point must lie in [-128, 127], not 128"),
    (dict(zero_point=[1, 2]), "zero_point has 2 channels but the data of shape (1, 3, 2, 2) "
                              "has 3 along axis 1"),
    (dict(multiplier=np.ones((3, 1), np.int64)),
     "multiplier must be a scalar or 1-D per-channel array, not shape (3, 1)"),
    (dict(relu="yes"), "relu must be True or False, not 'yes'"),
    (dict(axis=4, shift=[30, 31, 32]), "axis 4 is out of range for an array with 4 dimensions"),
])
def test_requantize_errors(kwargs, message):
    args = dict(acc=np.zeros((1, 3, 2, 2), np.int32), multiplier=2**30, shift=31, zero_point=0,
                dtype=np.int8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=exactly(message)):
        requantize(**args)


# --- quantize / dequantize against onnxruntime and onnx.reference --------------------------

def quantize_linear_model(x, scale, zero_point, axis):
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)
    return make_model([node], {"x": x}, {"s": scale, "z": zero_point}, zero_point.dtype)


def dequantize_linear_model(q, scale, zero_point, axis):
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)
    return make_model([node], {"q": q}, {"s": scale, "z": zero_point}, np.float32)


def float_samples(rng, shape, scale):
    """Random floats plus exact ties (k + 0.5) * scale, saturating values and infinities."""
    x = rng.normal(0, 150 * np.max(scale), shape).astype(np.float32)
    flat = x.reshape(-1)
    ties = (rng.integers(-300, 300, flat.size // 4) + np.float32(0.5))
    flat[:ties.size] = ties * np.float32(np.max(scale))
    flat[-3:] = [np.inf, -np.inf, 1e30]
    return x


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_vs_onnx(dtype, per_axis):
    rng = np.random.default_rng([np.dtype(dtype).num, per_axis])
    info = np.iinfo(dtype)
    channels = 4
    if per_axis:
        scale = np.array([0.5, 0.03125, 0.1, 0.0173], np.float32)
        zero_point = rng.integers(info.min, info.max + 1, channels).astype(dtype)
    else:
        scale = np.float32(0.0625)
        zero_point = np.array(rng.integers(info.min, info.max + 1), dtype)
    x = float_samples(rng, (2, channels, 5, 6), scale)
    if per_axis:  # ties of each channel's own scale
        x[:, :, 0, :] = (rng.integers(-200, 200, (2, channels, 6)) + np.float32(0.5)) \
            * scale.reshape(1, -1, 1)
    model = quantize_linear_model(x, scale, zero_point, 1 if per_axis else None)
    got = quantize(x, scale, zero_point, dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, run_ort(model, {"x": x}))
    # onnx.reference casts x / scale to int32 before saturating: compare where that is defined.
    moderate = np.abs(x) < 1e6
    with np.errstate(invalid="ignore"):
        reference = run_reference(model, {"x": x})
    np.testing.assert_array_equal(got[moderate], reference[moderate])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_axis", [False, True])
def test_dequantize_vs_onnx(dtype, per_axis):
    rng = np.random.default_rng([np.dtype(dtype).num, per_axis, 1])
    info = np.iinfo(dtype)
    q = rng.integers(info.min, info.max + 1, (2, 3, 4, 4)).astype(dtype)
    if per_axis:
        scale = np.array([0.5, 0.013, 7.25], np.float32)
        zero_point = rng.integers(info.min, info.max + 1, 3).astype(dtype)
    else:
        scale = np.float32(0.0173)
        zero_point = np.array(rng.integers(info.min, info.max + 1), dtype)
    model = dequantize_linear_model(q, scale, zero_point, 1 if per_axis else None)
    got = dequantize(q, scale, zero_point)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, run_ort(model, {"q": q}))
    np.testing.assert_array_equal(got, run_reference(model, {"q": q}))


def test_quant_parameters_shaped_to_broadcast():
    rng = np.random.default_rng(12)
    x = rng.normal(0, 3, (2, 3, 4, 4)).astype(np.float32)
    scale = np.array([0.1, 0.2, 0.05], np.float32)
    zero_point = np.array([-3, 0, 5])
    flat = quantize(x, scale, zero_point, np.int8)
    shaped = quantize(x, scale.reshape(1, 3, 1, 1), zero_point.reshape(1, 3, 1, 1), np.int8)
    np.testing.assert_array_equal(shaped, flat)
    np.testing.assert_array_equal(
        dequantize(flat, scale.reshape(1, 3, 1, 1), zero_point.reshape(1, 3, 1, 1)),
        dequantize(flat, scale, zero_point))
    with pytest.raises(ValueError, match=exactly(
            "scale of shape (1, 2, 1, 1) does not broadcast to the data's shape (2, 3, 4, 4)")):
        quantize(x, np.ones((1, 2, 1, 1)), 0, np.int8)


def test_quantize_round_trip():
    q = np.arange(-128, 128, dtype=np.int8)
    np.testing.assert_array_equal(quantize(dequantize(q, 0.37, -4), 0.37, -4, np.int8), q)


@pytest.mark.parametrize("call, message", [
    (lambda: quantize([1.0], 0.0, 0, np.int8), "scale must be finite and > 0, not 0.0"),
    (lambda: quantize([1.0], 1.0, 300, np.uint8), "zero_point must lie in [0, 255], not 300"),
    (lambda: quantize([float("nan")], 1.0, 0, np.int8),
     "x_float contains NaN, which has no quantized value"),
    (lambda: quantize(["a"], 1.0, 0, np.int8), "x_float must be a real array, not <U1"),
    (lambda: quantize([1.0], 1.0, 0, np.float32), "dtype must be int8 or uint8, not float32"),
    (lambda: dequantize([1.5], 1.0, 0), "q must be an integer array, not float64"),
    (lambda: dequantize(np.zeros((2, 3), np.int8), [1.0, 2.0], 0),
     "scale has 2 channels but the data of shape (2, 3) has 3 along axis 1"),
])
def test_quantize_errors(call, message):
    with pytest.raises(ValueError, match=exactly(message)):
        call()
