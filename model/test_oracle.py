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
from model.testing import make_model, naive_maxpool2d, random_q, seeded

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
    np.testing.assert_array_equal(y, naive_maxpool2d(x, kernel, stride, pads, dilation,
                                                     ceil_mode))


@pytest.mark.parametrize("auto_pad,kernel,stride,dilation,ceil_mode,pads,out_hw", [
    # SAME: ceil(N / S) outputs, the total padding split with the odd one at the end (UPPER)
    # or the beginning (LOWER), whatever ceil_mode says.
    ("SAME_UPPER", 2, 2, 1, 0, (0, 0, 1, 1), (3, 3)),
    ("SAME_LOWER", 2, 2, 1, 1, (1, 1, 0, 0), (3, 3)),
    ("SAME_UPPER", 3, 1, 2, 0, (2, 2, 2, 2), (5, 5)),       # dilated: 5 wide, 4 pads
    ("SAME_LOWER", 2, 1, 1, 0, (1, 1, 0, 0), (5, 5)),
    # VALID: ceil((N - F + 1) / S), ceil_mode or not.
    ("VALID", 2, 2, 1, 0, (0, 0, 0, 0), (2, 2)),
    ("VALID", 2, 2, 1, 1, (0, 0, 0, 0), (2, 2)),
])
def test_maxpool_auto_pad(auto_pad, kernel, stride, dilation, ceil_mode, pads, out_hw):
    """auto_pad gives the same result as the explicit pads the specification derives."""
    x = random_q(seeded(auto_pad, kernel, stride, dilation), INT8, (1, 2, 5, 5))
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[kernel] * 2,
                            strides=[stride] * 2, dilations=[dilation] * 2,
                            ceil_mode=ceil_mode, auto_pad=auto_pad)
    y = oracle.run_reference(make_model([node], {"x": x}, {}, INT8), x)[0]
    assert y.shape == (1, 2, *out_hw)
    np.testing.assert_array_equal(y, naive_maxpool2d(x, (kernel,) * 2, (stride,) * 2, pads,
                                                     (dilation,) * 2, False))


def test_maxpool_window_without_input_is_an_error():
    x = np.zeros((1, 1, 2, 2), np.int8)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[3, 3],
                            pads=[1, 1, 1, 1])
    with pytest.raises(ValueError, match="covers no input"):
        oracle.run_reference(make_model([node], {"x": x}, {}, INT8), x)


@pytest.mark.parametrize("op,zero_point", [
    (op, zp) for op in ("QLinearConv", "ConvInteger", "MatMulInteger")
    for zp in ("per_tensor", "per_channel", "none")
    if (op, zp) != ("QLinearConv", "none")])       # QLinearConv's zero point is not optional
def test_uint8_weights_are_the_same_products(op, zero_point):
    """uint8 activations x int8 weight constants become uint8 x uint8 (w + 128, zp + 128): the
    reference gives the same output for both models; int8 activations are left alone."""
    rng = seeded(op, zero_point)
    conv = op != "MatMulInteger"
    w = random_q(rng, INT8, (4, 3, 2, 2) if conv else (6, 4))
    # Per output channel: the first axis of conv weights, the columns of a MatMul's B.
    zp = {"per_tensor": np.int8(-7), "none": None,
          "per_channel": random_q(rng, INT8, (w.shape[0] if conv else w.shape[1],))}[zero_point]
    x = random_q(rng, UINT8, (1, 3, 5, 5) if conv else (2, 6))
    inits = {"w": w, "xz": np.uint8(9)}
    if op == "QLinearConv":
        names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
        inits.update(xs=np.float32(0.05), ws=np.float32(0.01), wz=zp, ys=np.float32(0.02),
                     yz=np.uint8(100))
        out = UINT8
    else:
        names = ["x", "w", "xz"] + (["wz"] if zp is not None else [])
        if zp is not None:
            inits["wz"] = zp
        out = np.int32
    model = make_model([helper.make_node(op, names, ["y"])], {"x": x}, inits, out)
    rewritten = oracle.uint8_weights(model)
    consts = {i.name: numpy_helper.to_array(i) for i in rewritten.graph.initializer}
    node = rewritten.graph.node[0]
    w_name, zp_name = node.input[3 if op == "QLinearConv" else 1],         node.input[5 if op == "QLinearConv" else 3]
    assert consts[w_name].dtype == UINT8
    np.testing.assert_array_equal(consts[w_name].astype(int), w.astype(int) + 128)
    want_zp = (0 if zp is None else np.asarray(zp, int)) + 128
    np.testing.assert_array_equal(consts[zp_name].astype(int), want_zp)
    np.testing.assert_array_equal(oracle.run_reference(rewritten, x)[0],
                                  oracle.run_reference(model, x)[0])
    # int8 activations: nothing to do (int8 x int8 kernels are exact).
    signed = dict(inits, xz=np.int8(9 - 128))
    if op == "QLinearConv":
        signed["yz"] = np.int8(-28)
    model = make_model([helper.make_node(op, names, ["y"])],
                       {"x": (x.astype(np.int16) - 128).astype(np.int8)}, signed,
                       INT8 if op == "QLinearConv" else np.int32)
    assert oracle.uint8_weights(model).SerializeToString() == model.SerializeToString()


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


#: Run under QEMU's Haswell model (AVX2 without VNNI) with uint8 x int8 data that saturates
#: VPMADDUBSW's 16-bit pair sums, for the three ways models reach onnxruntime's uint8 x int8
#: kernels: MatMulInteger (opset 17), QLinearMatMul of opset 21 (which the session option does
#: not rewrite) and a QDQ conv (which onnxruntime fuses to QLinearConv). Prints, per model, the
#: largest difference from the ONNX reference of onnxruntime's default session and of
#: model.oracle's, then whether cpu_int8_note() says the default kernels saturate.
SATURATION_PROBE = """
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from model.oracle import cpu_int8_note, onnxruntime_session, run_reference, steps

def model(nodes, x, consts, out, opset):
    graph = helper.make_graph(nodes, "probe",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)],
        [helper.make_tensor_value_info("y", out, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m

rng = np.random.default_rng(0)
x = rng.integers(200, 256, (16, 64)).astype(np.uint8)
w = rng.integers(100, 128, (64, 32)).astype(np.int8)
xc = rng.integers(200, 256, (1, 16, 6, 6)).astype(np.uint8)
wc = rng.integers(100, 128, (8, 16, 3, 3)).astype(np.int8)
scale = np.float32(1 / 4096)
probes = {
    "matmulinteger": (model([helper.make_node("MatMulInteger", ["x", "w"], ["y"])], x,
                            {"w": w}, TensorProto.INT32, 17), x),
    "qlinearmatmul21": (model([helper.make_node(
        "QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])], x,
        {"xs": np.float32(1), "xz": np.uint8(0), "w": w, "ws": np.float32(1),
         "wz": np.int8(0), "ys": np.float32(16384), "yz": np.uint8(0)}, TensorProto.UINT8, 21),
        x),
    "qdqconv": (model([
        helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "s", "wz"], ["wf"]),
        helper.make_node("Conv", ["xf", "wf"], ["yf"]),
        helper.make_node("QuantizeLinear", ["yf", "ys", "z"], ["y"])], xc,
        {"s": scale, "z": np.uint8(0), "w": wc, "wz": np.int8(0), "ys": np.float32(1 / 512)},
        TensorProto.UINT8, 17), xc),
}
for name, (m, data) in probes.items():
    want = run_reference(m, data)[0]
    default = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    apart = [int(steps(s.run(None, {"x": data})[0], want).max())
             for s in (default, onnxruntime_session(m))]
    print(name, *apart)
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
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(maxsplit=1) for line in proc.stdout.splitlines())
    assert lines.pop("note") == "True", "cpu_int8_note() did not say the kernels saturate"
    assert set(lines) == {"matmulinteger", "qlinearmatmul21", "qdqconv"}, proc.stdout
    for name, result in lines.items():
        default, exact = map(int, result.split())
        assert default > 1, f"{name}: no saturation seen: the probe did not reach VPMADDUBSW"
        assert exact <= 1, f"{name}: model.oracle's session is {exact} steps apart"
