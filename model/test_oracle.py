"""Tests of model.oracle: the reference evaluator's float64 QDQ arithmetic and max-pool, the
agreement figures, and onnxruntime's exact int8 kernels on a CPU without VNNI (QEMU's AVX2-only
Haswell model, where QEMU is installed)."""

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from model import oracle
from model.test_quant import make_model, random_q, seeded

ROOT = Path(__file__).resolve().parent.parent
INT8, UINT8 = np.dtype(np.int8), np.dtype(np.uint8)


def qdq_conv_model(x_type, w, w_zp, scales, y_type, y_zp, shape):
    """DequantizeLinear -> Conv (float) -> QuantizeLinear, as quantize_static writes a layer."""
    x_scale, w_scale, y_scale = scales
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("Conv", ["xf", "wf"], ["yf"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"])]
    return make_model(nodes, {"x": np.zeros(shape, x_type)}, {
        "xs": np.float32(x_scale), "xz": np.array(3, x_type), "w": w, "ws": w_scale,
        "wz": w_zp, "ys": np.float32(y_scale), "yz": np.array(y_zp, y_type)}, y_type)


@pytest.mark.parametrize("x_type", [INT8, UINT8], ids=str)
def test_qdq_conv_is_the_exact_formula(x_type):
    """The float64 reference of a QDQ conv is the exact integer sum times the exact product of
    the scales, rounded half to even: checked against Python integers and fractions on every
    output that is not within 1e-9 of a tie."""
    from fractions import Fraction

    from model.conv import conv2d

    rng = seeded("qdq", x_type.str)
    x = random_q(rng, x_type, (2, 4, 6, 6))
    w = random_q(rng, INT8, (5, 4, 3, 3))
    w_zp = np.zeros(5, np.int8)
    scales = (0.031, rng.uniform(0.002, 0.02, 5).astype(np.float32), 0.37)
    model = qdq_conv_model(x_type, w, w_zp, scales, x_type, 7, x.shape)
    got = oracle.run_reference(model, x)[0]
    acc = conv2d(x, w, None, padding=1, x_zero_point=3)
    info = np.iinfo(x_type)
    checked = 0
    for index in np.ndindex(acc.shape):
        real = (Fraction(float(np.float32(scales[0]))) * Fraction(float(scales[1][index[1]]))
                / Fraction(float(np.float32(scales[2]))))
        value = int(acc[index]) * real
        if abs(value - (value.numerator // value.denominator) - Fraction(1, 2)) < 1e-9:
            continue
        want = min(max(round(value) + 7, info.min), info.max)   # round(): half to even
        assert got[index] == want, (index, got[index], want, float(value))
        checked += 1
    assert checked > 0.99 * acc.size


def test_dequantized_values_are_float64_and_outputs_float32():
    model = make_model([helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])],
                       {"x": np.zeros(4, np.int8)},
                       {"s": np.float32(0.1), "z": np.int8(-3)}, np.float32)
    x = np.array([-128, -3, 0, 127], np.int8)
    y = oracle.run_reference(model, x)[0]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, ((x.astype(np.float32) + 3) * np.float32(0.1)))
    (inner,) = oracle.reference_evaluator(model).run(None, {"x": x})
    assert inner.dtype == np.float64


def naive_maxpool(x, kernel, stride, pads, dilation, out_hw):
    """A loop per output element over the window's taps inside the input."""
    n, c, h, w = x.shape
    y = np.empty((n, c, *out_hw), x.dtype)
    for b, ch, i, j in np.ndindex(y.shape):
        taps = [x[b, ch, r, q]
                for r in (i * stride[0] - pads[0] + a * dilation[0] for a in range(kernel[0]))
                for q in (j * stride[1] - pads[1] + e * dilation[1] for e in range(kernel[1]))
                if 0 <= r < h and 0 <= q < w]
        y[b, ch, i, j] = max(taps)
    return y


@pytest.mark.parametrize("kernel,stride,pads,dilation,ceil_mode,out_hw", [
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0, (3, 3)),
    ((2, 2), (1, 1), (0, 0, 1, 1), (1, 1), 0, (7, 7)),     # pads in ONNX order: top, left, ...
    ((3, 2), (2, 3), (1, 0, 2, 1), (1, 2), 0, (4, 2)),
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1, (4, 4)),     # 7 -> ceil(5/2) + 1
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, (4, 4)),     # last window starts in the pad: gone
])
def test_maxpool_follows_the_specification(kernel, stride, pads, dilation, ceil_mode, out_hw):
    x = random_q(seeded(kernel, stride, pads), INT8, (2, 3, 7, 7))
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=kernel, strides=stride,
                            pads=pads, dilations=dilation, ceil_mode=ceil_mode)
    y = oracle.run_reference(make_model([node], {"x": x}, {}, INT8), x)[0]
    assert y.dtype == INT8 and y.shape == (2, 3, *out_hw)
    np.testing.assert_array_equal(y, naive_maxpool(x, kernel, stride, pads, dilation, out_hw))


def test_agreement_and_report_lines():
    got, want = np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 2.5, 2.5]])
    assert oracle.agreement(got, want, scale=0.5) == {"identical": 1 / 3, "max_steps": 1}
    assert oracle.agreement(np.int8([1, 2]), np.int8([1, 2])) == {"identical": 1.0,
                                                                  "max_steps": 0}
    record = {"oracle": "reference", "name": oracle.REFERENCE_NAME, "identical": 0.5,
              "max_steps": 2, "same_class": 1.0}
    assert oracle.format_agreement(record) == \
        "50.00% of values identical, largest difference 2 steps, 100.00% same class"
    assert oracle.format_agreement({"name": "x", "error": "no kernel"}) == \
        "not compared: x could not run the model (no kernel)"


def test_oracle_without_a_kernel_is_reported_not_raised():
    """onnxruntime has no int8-activation x uint8-weight QLinearConv: the record says so."""
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    x = np.zeros((1, 2, 3, 3), np.int8)
    model = make_model([node], {"x": x}, {
        "xs": np.float32(1), "xz": np.int8(0), "w": np.ones((2, 2, 1, 1), np.uint8),
        "ws": np.float32(1), "wz": np.uint8(1), "ys": np.float32(1), "yz": np.int8(0)}, INT8)
    ref, ort = oracle.compare_with_oracles(model, x, np.zeros((1, 2, 3, 3), np.int8))
    assert ref["identical"] == 1.0 and "error" not in ref
    assert "error" in ort and "could not run the model" in oracle.format_agreement(ort)


#: Run under QEMU's Haswell model (AVX2 without VNNI): uint8 x int8 data that saturates
#: VPMADDUBSW's 16-bit pair sums. Prints how far onnxruntime's default session and
#: model.oracle's session are from the exact integer result.
SATURATION_PROBE = """
import numpy as np
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort
from model.oracle import cpu_int8_note, onnxruntime_session
rng = np.random.default_rng(0)
x = rng.integers(200, 256, (16, 64)).astype(np.uint8)
w = rng.integers(100, 128, (64, 32)).astype(np.int8)
graph = helper.make_graph([helper.make_node("MatMulInteger", ["x", "w"], ["y"])], "probe",
    [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)],
    [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
    initializer=[numpy_helper.from_array(w, "w")])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 9
exact = x.astype(np.int64) @ w.astype(np.int64)
default = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
for name, session in (("default", default), ("oracle", onnxruntime_session(model))):
    print(name, int(np.abs(session.run(None, {"x": x})[0] - exact).max()))
print("note", "saturate" in cpu_int8_note())
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the saturating VPMADDUBSW kernels are x86's")
def test_onnxruntime_is_exact_on_a_cpu_without_vnni():
    """Under QEMU's AVX2-only CPU model onnxruntime's default uint8 x int8 kernel saturates
    (the probe must see it, or it proves nothing), model.oracle's session does not, and
    cpu_int8_note() says so."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (Debian: qemu-user): the AVX2-only CPU "
                    "model is not available; the oracle's option is documented in "
                    "model/oracle.py")
    proc = subprocess.run([qemu, "-cpu", "Haswell", sys.executable, "-c", SATURATION_PROBE],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    apart = dict(line.split() for line in proc.stdout.splitlines())
    assert int(apart["default"]) > 0, "no saturation seen: the probe did not reach VPMADDUBSW"
    assert int(apart["oracle"]) == 0, f"model.oracle's session is {apart['oracle']} apart"
    assert apart["note"] == "True", "cpu_int8_note() did not say that the kernels saturate"
