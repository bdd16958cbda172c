"""Test support of the golden model's tests (like numpy.testing): small ONNX models, the
oracles of :mod:`model.oracle` on them, seeded random tensors, exact-message patterns, the
comparisons of the golden model with ONNX's rounding, and a naive max-pool.
"""

import itertools
import re
import zlib
from fractions import Fraction

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model import oracle
from model.oracle import onnxruntime_session

OPSET = 21
ONNX_IR_VERSION = 10


def tensor_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def make_model(nodes, inputs: dict, initializers: dict, output_dtype) -> onnx.ModelProto:
    """A one-output ONNX model: ``inputs`` are fed at run time, ``initializers`` are constants."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(name, tensor_type(a.dtype), a.shape)
         for name, a in inputs.items()],
        [helper.make_tensor_value_info("y", tensor_type(output_dtype), None)],
        initializer=[numpy_helper.from_array(np.asarray(a), name)
                     for name, a in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = ONNX_IR_VERSION
    return model


def run_ort(model: onnx.ModelProto, inputs: dict) -> np.ndarray:
    """onnxruntime with int8 kernels that are exact on every CPU (model.oracle)."""
    return onnxruntime_session(model).run(None, inputs)[0]


def run_reference(model: onnx.ModelProto, inputs: dict) -> np.ndarray:
    """The ONNX reference evaluator of model.oracle (one input)."""
    (x,) = inputs.values()
    return oracle.run_reference(model, x)[0]


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern accepting exactly ``message``."""
    return f"^{re.escape(message)}$"


def seeded(*parts) -> np.random.Generator:
    """A generator seeded from the test parameters, the same in every run."""
    return np.random.default_rng(zlib.crc32(repr(parts).encode()))


def random_q(rng, dtype, shape) -> np.ndarray:
    """Uniform random values over the whole range of an integer type."""
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def assert_equal_except_ties(got, want, acc, multiplier, shift):
    """The golden model against the ONNX formula evaluated with the same real scale (exactly
    ``multiplier * 2**-shift``, a float32): equal everywhere except at exact ties
    ``acc * scale = k + 1/2`` (a tie stays one after adding the integer zero point), where
    ONNX rounds half to even and the golden model half up, so there the golden value is one
    above. ``multiplier`` and ``shift`` broadcast against ``acc``."""
    assert got.dtype == want.dtype and got.shape == want.shape
    bad = np.argwhere(got != want)
    multiplier, shift = (np.broadcast_to(np.asarray(a, np.int64), acc.shape)
                         for a in (multiplier, shift))
    for index in map(tuple, bad):
        a, m, e = int(acc[index]), int(multiplier[index]), int(shift[index])
        tie = (a * m) % (1 << e) == 1 << (e - 1)
        assert tie, (f"at {index}: golden {got[index]}, ONNX {want[index]}, but "
                     f"{a} * {m} / 2**{e} = {Fraction(a * m, 1 << e)} is not a tie")
        assert int(got[index]) == int(want[index]) + 1, \
            f"at {index}: golden {got[index]}, ONNX {want[index]} at a tie"


def assert_close_quantized(got: np.ndarray, want: np.ndarray, min_identical=0.999):
    """Integer-multiplier requantization vs ONNX's float rounding: never 2 steps apart, and
    identical on at least ``min_identical`` of the outputs."""
    assert got.dtype == want.dtype and got.shape == want.shape
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max(initial=0) <= 1, f"{int(diff.max())} steps apart at {np.argmax(diff)}"
    identical = np.mean(diff == 0)
    assert identical >= min_identical, f"only {identical:.4%} identical"


def naive_maxpool2d(x, kernel, stride, pads, dilation, ceil_mode):
    """A loop per output pixel over the taps inside the input (padding is simply skipped)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    top, left, bottom, right = pads

    def size(length, k, s, d, begin, end):
        span = length + begin + end - d * (k - 1) - 1
        out = (-(-span // s) if ceil_mode else span // s) + 1
        return out - 1 if ceil_mode and (out - 1) * s >= length + begin else out

    oh, ow = size(h, kh, sh, dh, top, bottom), size(w, kw, sw, dw, left, right)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    for b, ch, i, j in itertools.product(range(n), range(c), range(oh), range(ow)):
        values = [x[b, ch, r, q]
                  for r in (i * sh - top + a * dh for a in range(kh)) if 0 <= r < h
                  for q in (j * sw - left + e * dw for e in range(kw)) if 0 <= q < w]
        out[b, ch, i, j] = max(values)
    return out
