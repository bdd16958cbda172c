"""Tests of model.dense against naive loops, onnxruntime and onnx.reference."""

import itertools

import numpy as np
import pytest
from onnx import helper

import model.conv
from model.dense import dense, relu
from model.quant import quantize_multiplier, real_scale, requantize
from model.testing import (assert_close_quantized, assert_equal_except_ties, exactly,
                           make_model, random_q, run_ort, run_reference, seeded)

INT8, UINT8 = np.dtype(np.int8), np.dtype(np.uint8)
DTYPES = [(INT8, INT8), (UINT8, UINT8), (UINT8, INT8), (INT8, UINT8)]


def naive_dense(x, w, bias, x_zero_point, w_zero_point):
    x2 = x.reshape(x.shape[0], -1)
    out_features = w.shape[0]
    wz = np.broadcast_to(np.asarray(w_zero_point), (out_features,))
    out = np.zeros((x2.shape[0], out_features), np.int64)
    for b, o in itertools.product(range(x2.shape[0]), range(out_features)):
        total = 0 if bias is None else int(bias[o])
        for f in range(x2.shape[1]):
            total += (int(x2[b, f]) - x_zero_point) * (int(w[o, f]) - int(wz[o]))
        out[b, o] = total
    return ((out + 2**31) % 2**32 - 2**31).astype(np.int32)


@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: f"{d[0]}-{d[1]}")
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("shape", [(3, 20), (2, 4, 3, 3), (1, 1)])
def test_dense_vs_naive(dtypes, per_channel, shape):
    x_type, w_type = dtypes
    rng = seeded(x_type.str, w_type.str, per_channel, shape)
    x = random_q(rng, x_type, shape)
    features = int(np.prod(shape[1:]))
    w = random_q(rng, w_type, (7, features))
    bias = rng.integers(-10**6, 10**6, 7)
    x_zp = int(random_q(rng, x_type, ()))
    w_zp = random_q(rng, w_type, (7,) if per_channel else ())
    got = dense(x, w, bias, x_zp, w_zp)
    assert got.dtype == np.int32 and got.shape == (shape[0], 7)
    np.testing.assert_array_equal(got, naive_dense(x, w, bias, x_zp, w_zp))


def matmul_integer_model(x, w, x_zp, w_zp):
    node = helper.make_node("MatMulInteger", ["x", "wt", "xz", "wz"], ["y"])
    return make_model([node], {"x": x}, {"wt": np.ascontiguousarray(w.T),
                                         "xz": np.array(x_zp, x.dtype), "wz": w_zp}, np.int32)


@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: f"{d[0]}-{d[1]}")
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_dense_vs_matmul_integer(dtypes, per_channel):
    x_type, w_type = dtypes
    rng = seeded(x_type.str, w_type.str, per_channel, "onnx")
    x = random_q(rng, x_type, (5, 300))
    w = random_q(rng, w_type, (10, 300))
    x_zp = int(random_q(rng, x_type, ()))
    w_zp = random_q(rng, w_type, (10,) if per_channel else ())
    got = dense(x, w, None, x_zp, w_zp)
    model = matmul_integer_model(x, w, x_zp, w_zp)
    np.testing.assert_array_equal(got, run_ort(model, {"x": x}))
    np.testing.assert_array_equal(got, run_reference(model, {"x": x}))


@pytest.mark.parametrize("dtypes", [(UINT8, UINT8), (UINT8, INT8), (INT8, INT8)],
                         ids=lambda d: f"{d[0]}-{d[1]}")
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_dense_requantize_vs_qlinear_matmul(dtypes, per_channel):
    """dense + requantize vs QLinearMatMul: the ONNX reference (equal except at exact ties)
    and onnxruntime (>= 99.9% identical, never 2 steps)."""
    x_type, w_type = dtypes
    rng = seeded(x_type.str, w_type.str, per_channel, "qlinear")
    features, outputs = 256, 64
    x = random_q(rng, x_type, (40, features))
    w = random_q(rng, w_type, (outputs, features))
    shape = (outputs,) if per_channel else ()
    middle = lambda t: (np.iinfo(t).min + np.iinfo(t).max + 1) // 2  # noqa: E731
    x_zp = middle(x_type) + int(rng.integers(-20, 21))
    w_zp = (middle(w_type) + rng.integers(-20, 21, shape)).astype(w_type)
    x_scale, y_scale = np.float32(0.05), np.float32(0.05 * 0.01 * 16 * 80 * 80 / 40)
    w_scale = rng.uniform(0.005, 0.015, shape).astype(np.float32)
    y_zp = middle(x_type) + 3
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "wt", "ws", "wz", "ys", "yz"], ["y"])
    onnx_model = make_model([node], {"x": x}, {
        "xs": x_scale, "xz": np.array(x_zp, x_type), "wt": np.ascontiguousarray(w.T),
        "ws": w_scale, "wz": w_zp, "ys": y_scale, "yz": np.array(y_zp, x_type)}, x_type)
    acc = dense(x, w, None, x_zp, w_zp)
    multiplier, shift = quantize_multiplier(real_scale(x_scale, w_scale, y_scale))
    got = requantize(acc, multiplier, shift, y_zp, x_type)
    assert_equal_except_ties(got, run_reference(onnx_model, {"x": x}), acc, multiplier, shift)
    assert_close_quantized(got, run_ort(onnx_model, {"x": x}))


def test_dense_flattens_nchw_and_accepts_single_samples():
    rng = np.random.default_rng(8)
    x = random_q(rng, INT8, (2, 3, 4, 5))
    w = random_q(rng, INT8, (6, 60))
    batched = dense(x, w, x_zero_point=-3)
    np.testing.assert_array_equal(batched, dense(x.reshape(2, 60), w, x_zero_point=-3))
    np.testing.assert_array_equal(dense(x[0], w, x_zero_point=-3), batched[0])
    np.testing.assert_array_equal(dense(x[0].ravel(), w, x_zero_point=-3), batched[0])


def test_dense_empty_batch():
    w = np.ones((3, 4), np.int8)
    assert dense(np.zeros((0, 4), np.int8), w).shape == (0, 3)
    assert dense(np.zeros((0, 1, 2, 2), np.int8), w).shape == (0, 3)


@pytest.mark.parametrize("limit", [2**17, 1000], ids=["chunks", "int64"])
def test_dense_exact_paths(monkeypatch, limit):
    monkeypatch.setattr(model.conv, "FLOAT32_EXACT", limit)
    rng = np.random.default_rng(9)
    x = random_q(rng, UINT8, (3, 40))
    w = random_q(rng, INT8, (5, 40))
    bias = rng.integers(-2**31, 2**31, 5)
    np.testing.assert_array_equal(dense(x, w, bias, 9, -2), naive_dense(x, w, bias, 9, -2))


def test_dense_wraps_like_a_32_bit_accumulator():
    features = 40000  # 40000 * 255 * 255 > 2**31
    x = np.full((1, features), 127, np.int8)
    w = np.zeros((1, features), np.uint8)
    got = dense(x, w, [5], x_zero_point=-128, w_zero_point=255)
    assert got.tolist() == [[(-features * 65025 + 5 + 2**31) % 2**32 - 2**31]]


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=np.zeros((2, 3), np.float32)), "x must be int8 or uint8, not float32"),
    (dict(x=np.zeros((1, 1, 1, 2, 3), np.int8)),
     "x must be (N, features), (features,), NCHW or CHW, not shape (1, 1, 1, 2, 3)"),
    (dict(w=np.zeros((4, 2, 3), np.int8)), "w must be 2-D (out, features), not shape (4, 2, 3)"),
    (dict(w=np.zeros((4, 6), np.int32)), "w must be int8 or uint8, not int32"),
    (dict(w=np.zeros((4, 5), np.int8)),
     "x of shape (2, 6) has 6 features per sample but w of shape (4, 5) expects 5"),
    (dict(bias=[1, 2, 3]), "bias must have shape (4,), one value per output channel, not (3,)"),
    (dict(x_zero_point=-1, x=np.zeros((2, 6), np.uint8)),
     "x_zero_point for uint8 data must lie in [0, 255], not -1"),
    (dict(w_zero_point=[0, 0]),
     "w_zero_point must be a scalar or 4 per-channel values, not shape (2,)"),
])
def test_dense_errors(kwargs, message):
    args = dict(x=np.zeros((2, 6), np.int8), w=np.zeros((4, 6), np.int8))
    args.update(kwargs)
    with pytest.raises(ValueError, match=exactly(message)):
        dense(**args)


def test_relu():
    x = np.array([-3.5, 0.0, 2.0], np.float32)
    got = relu(x)
    assert got.dtype == np.float32 and got.tolist() == [0.0, 0.0, 2.0]
    relu_model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": x}, {}, np.float32)
    np.testing.assert_array_equal(got, run_ort(relu_model, {"x": x}))
    q = np.array([-128, -5, 0, 7, 127], np.int8)
    assert relu(q).tolist() == [0, 0, 0, 7, 127]
    assert relu(q, zero_point=-5).tolist() == [-5, -5, 0, 7, 127]
    assert relu(np.array([10, 200], np.uint8), zero_point=128).tolist() == [128, 200]
    with pytest.raises(ValueError, match=exactly("zero_point must be an integer in [0, 255] "
                                                 "for uint8 data, not 300")):
        relu(np.array([1], np.uint8), zero_point=300)
    with pytest.raises(ValueError, match=exactly("x must be a numeric array, not <U1")):
        relu(np.array(["a"]))
