"""Layer execution of the golden model against naive loops written from the definitions, and the
network's input / output handling."""

import itertools

import numpy as np
import pytest

from model.network import (ConvLayer, DenseLayer, InputError, MaxPool, Network, PoolLayer,
                           layer_macs, layer_op, layer_params, run_layer, run_network)
from model.quant import quantize_multiplier


def naive_conv(x, w, bias, stride, pads, dilation, xz, wz):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    t, l, b, r = pads
    xp = np.full((n, c, h + t + b, wd + l + r), xz, np.int64)
    xp[:, :, t:t + h, l:l + wd] = x
    ho = (h + t + b - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + l + r - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, ho, wo), np.int64)
    for i, oc, y, xx in itertools.product(range(n), range(o), range(ho), range(wo)):
        acc = int(bias[oc])
        for ic, ky, kx in itertools.product(range(c), range(kh), range(kw)):
            pixel = int(xp[i, ic, y * stride[0] + ky * dilation[0],
                           xx * stride[1] + kx * dilation[1]])
            acc += (pixel - xz) * (int(w[oc, ic, ky, kx]) - int(wz[oc]))
        out[i, oc, y, xx] = acc
    return out


def naive_requant(acc, mult, shift, zp, dtype, relu):
    info = np.iinfo(dtype)
    lo = max(info.min, zp) if relu else info.min
    out = np.zeros(acc.shape, dtype)
    for idx in np.ndindex(acc.shape):
        ch = idx[1]
        v = (int(acc[idx]) * int(mult[ch]) + (1 << (int(shift[ch]) - 1))) >> int(shift[ch])
        out[idx] = min(max(v + zp, lo), info.max)
    return out


def naive_maxpool(x, pool: MaxPool):
    n, c, h, w = x.shape
    t, l, b, r = pool.pads
    ho, wo = pool.output_hw(h, w)
    out = np.zeros((n, c, ho, wo), x.dtype)
    for i, ch, y, xx in itertools.product(range(n), range(c), range(ho), range(wo)):
        best = None
        for ky, kx in itertools.product(range(pool.kernel[0]), range(pool.kernel[1])):
            iy = y * pool.stride[0] + ky * pool.dilation[0] - t
            ix = xx * pool.stride[1] + kx * pool.dilation[1] - l
            if 0 <= iy < h and 0 <= ix < w:
                v = x[i, ch, iy, ix]
                best = v if best is None else max(best, v)
        out[i, ch, y, xx] = best
    return out


def random_conv_layer(rng, in_dtype, w_dtype, out_dtype, pool=None, relu=False, **geometry):
    c, h, w, o, kh, kw = 3, 9, 8, 4, 3, 2
    winfo = np.iinfo(w_dtype)
    weight = rng.integers(winfo.min, winfo.max + 1, (o, c, kh, kw)).astype(w_dtype)
    wz = rng.integers(0, 30, o).astype(np.int32) if w_dtype == "uint8" else np.zeros(o, np.int32)
    requant = {}
    if out_dtype != "int32":
        mult, shift = quantize_multiplier(rng.uniform(0.5, 2.0, o) / 4000)
        y_zp = int(rng.integers(-10, 10)) + (128 if out_dtype == "uint8" else 0)
        requant = dict(multiplier=mult, shift=shift, y_zero_point=y_zp, out_dtype=out_dtype)
    layer = ConvLayer(name="conv", nodes=("conv",), in_shape=(c, h, w), out_shape=(0, 0, 0),
                      in_dtype=in_dtype, weight=weight, bias=rng.integers(-5000, 5000, o)
                      .astype(np.int32), x_zero_point=int(rng.integers(0, 20)), w_zero_point=wz,
                      relu=relu, pool=pool, **requant, **geometry)
    shape = layer.conv_shape
    if pool is not None:
        shape = (shape[0], *pool.output_hw(*shape[1:]))
    layer.out_shape = shape
    return layer


@pytest.mark.parametrize("in_dtype,w_dtype,out_dtype,relu,pool,geometry", [
    ("uint8", "int8", "uint8", False, None, {}),
    ("int8", "int8", "int8", True, None, dict(stride=(2, 1), pads=(1, 0, 2, 1))),
    ("uint8", "uint8", "int8", True, MaxPool((2, 2), (2, 2)), dict(pads=(1, 1, 1, 1))),
    ("int8", "int8", "uint8", True, MaxPool((3, 2), (1, 2), (1, 0, 1, 1), (1, 1), True),
     dict(dilation=(2, 1))),
    ("uint8", "int8", "int32", False, None, dict(stride=(1, 2), pads=(0, 1, 0, 1))),
])
def test_conv_layer_against_naive_loops(in_dtype, w_dtype, out_dtype, relu, pool, geometry):
    rng = np.random.default_rng(7)
    layer = random_conv_layer(rng, in_dtype, w_dtype, out_dtype, pool=pool, relu=relu, **geometry)
    info = np.iinfo(in_dtype)
    x = rng.integers(info.min, info.max + 1, (2, *layer.in_shape)).astype(in_dtype)
    acc = naive_conv(x, layer.weight, layer.bias, layer.stride, layer.pads, layer.dilation,
                     layer.x_zero_point, layer.w_zero_point)
    if out_dtype == "int32":
        want = acc.astype(np.int32)
    else:
        want = naive_requant(acc, layer.multiplier, layer.shift, layer.y_zero_point, out_dtype,
                             relu)
        if pool is not None:
            want = naive_maxpool(want, pool)
    got = run_layer(layer, x)
    assert got.dtype == want.dtype and got.shape == (2, *layer.out_shape)
    np.testing.assert_array_equal(got, want)


def test_pool_layer_against_naive_loops():
    rng = np.random.default_rng(3)
    pool = MaxPool((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False)
    layer = PoolLayer("pool", ("pool",), (2, 7, 6), (2, *pool.output_hw(7, 6)), "int8", pool)
    x = rng.integers(-128, 128, (3, 2, 7, 6)).astype(np.int8)
    np.testing.assert_array_equal(run_layer(layer, x), naive_maxpool(x, pool))
    assert layer.out_dtype == "int8" and layer_macs(layer) == 0 and layer_params(layer) == 0


@pytest.mark.parametrize("out_dtype", ["int8", "int32"])
def test_dense_layer_against_naive_loops(out_dtype):
    rng = np.random.default_rng(5)
    w = rng.integers(0, 256, (5, 12)).astype(np.uint8)
    wz = rng.integers(100, 150, 5).astype(np.int32)
    layer = DenseLayer("fc", ("fc",), (3, 2, 2), (5,), "uint8", w,
                       rng.integers(-100, 100, 5).astype(np.int32), x_zero_point=128,
                       w_zero_point=wz, relu=out_dtype == "int8")
    x = rng.integers(0, 256, (4, 3, 2, 2)).astype(np.uint8)
    acc = np.array([[int(layer.bias[o]) + sum((int(v) - 128) * (int(w[o, i]) - int(wz[o]))
                                              for i, v in enumerate(sample.reshape(-1)))
                     for o in range(5)] for sample in x])
    if out_dtype == "int32":
        want = acc.astype(np.int32)
    else:
        layer.multiplier, layer.shift = quantize_multiplier(np.full(5, 1 / 3000))
        layer.y_zero_point, layer.out_dtype = -3, "int8"
        want = naive_requant(acc, layer.multiplier, layer.shift, -3, "int8", True)
    np.testing.assert_array_equal(run_layer(layer, x), want)
    assert layer_macs(layer) == 60 and layer_params(layer) == 65
    assert layer_op(layer) == ("dense+relu" if out_dtype == "int8" else "dense(int32)")


def tiny_network():
    pool = MaxPool(2, 2)
    conv = ConvLayer("c", ("c", "p"), (1, 4, 4), (2, 1, 1), "uint8",
                     np.ones((2, 1, 3, 3), np.int8), np.zeros(2, np.int32),
                     x_zero_point=10, w_zero_point=np.zeros(2, np.int32),
                     multiplier=np.full(2, 2**30, np.int64),
                     shift=np.full(2, 31, np.int64), y_zero_point=3, out_dtype="uint8",
                     pool=pool)
    return Network([conv], "img", (None, 1, 4, 4), "float32", 0.5, 10, "uint8", "out",
                   (None, 2), 0.25, 3, "float32")


def test_network_quantizes_input_and_dequantizes_output():
    net = tiny_network()
    x = np.zeros((2, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = 1.25  # 1.25 / 0.5 = 2.5 rounds half to even: 2, + zp 10 = 12
    x[1] = 0.75           # 1.5 rounds to 2 -> 12 everywhere
    y = run_network(net, x)
    # conv of (q - 10) with ones: sample 0 has one 2 in the first window, sample 1 is 9 * 2 = 18
    # requantized by 0.5 (half up): 1 and 9, + zp 3 -> 4 and 12; dequantized (q - 3) * 0.25
    assert y.dtype == np.float32 and y.shape == (2, 2)
    np.testing.assert_array_equal(y, np.array([[0.25, 0.25], [2.25, 2.25]], np.float32))
    seen = []
    run_network(net, x, on_layer=lambda i, layer, a, b: seen.append((i, layer.name, a.dtype,
                                                                      b.shape)))
    assert seen == [(0, "c", np.dtype(np.uint8), (2, 2, 1, 1))]


@pytest.mark.parametrize("x,message", [
    (np.zeros((1, 1, 4, 5), np.float32),
     "input 'img': expected shape (N, 1, 4, 4) float32, got (1, 1, 4, 5) float32"),
    (np.zeros((1, 1, 4, 4), np.float64),
     "input 'img': expected shape (N, 1, 4, 4) float32, got (1, 1, 4, 4) float64"),
    (np.zeros((1, 4, 4), np.float32),
     "input 'img': expected shape (N, 1, 4, 4) float32, got (1, 4, 4) float32"),
])
def test_network_input_errors_name_the_input(x, message):
    with pytest.raises(InputError) as info:
        run_network(tiny_network(), x)
    assert str(info.value) == message


def test_layer_constructors_validate():
    w = np.zeros((2, 1, 3, 3), np.int8)
    with pytest.raises(ValueError, match=r"layer 'c': weight must be a 4-D int8 or uint8 array, "
                                         r"not float32 of shape \(2, 1, 3, 3\)"):
        ConvLayer("c", ("c",), (1, 4, 4), (2, 2, 2), "uint8", w.astype(np.float32), None)
    with pytest.raises(ValueError, match=r"layer 'c': bias must have shape \(2,\), not \(3,\)"):
        ConvLayer("c", ("c",), (1, 4, 4), (2, 2, 2), "uint8", w, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"multiplier and shift must both be given"):
        ConvLayer("c", ("c",), (1, 4, 4), (2, 2, 2), "uint8", w, None,
                  multiplier=np.ones(2, np.int64))
    with pytest.raises(ValueError, match=r"out_dtype 'int8' does not fit raw output"):
        DenseLayer("d", ("d",), (9,), (2,), "int8", np.zeros((2, 9), np.int8), None,
                   out_dtype="int8")
    with pytest.raises(ValueError, match=r"stride \(0, 1\) and dilation \(1, 1\) must be >= 1"):
        ConvLayer("c", ("c",), (1, 4, 4), (2, 2, 2), "uint8", w, None, stride=(0, 1))
    layer = DenseLayer("d", ("d",), (9,), (2,), "int8", np.zeros((2, 9), np.int8), None,
                       w_zero_point=3)
    assert layer.bias.dtype == np.int32 and layer.w_zero_point.tolist() == [3, 3]


def test_layer_input_error_and_pool_validation():
    net = tiny_network()
    with pytest.raises(InputError, match=r"layer 'c': expected \(N, 1, 4, 4\) uint8, got "
                                         r"\(1, 1, 4, 4\) int8"):
        run_layer(net.layers[0], np.zeros((1, 1, 4, 4), np.int8))
    with pytest.raises(ValueError, match=r"max-pool kernel must be >= 1, not \(0, 2\)"):
        MaxPool((0, 2), 1)
    with pytest.raises(ValueError, match=r"pads must be four non-negative ints"):
        MaxPool(2, 2, (1, 1))
    conv = net.layers[0]
    assert layer_op(conv) == "conv+maxpool" and layer_macs(conv) == 2 * 2 * 2 * 9
    assert layer_params(conv) == 2 * 9 + 2 and conv.kernel == (3, 3)
    assert conv.conv_shape == (2, 2, 2)
