"""Test support of the host side's tests (like numpy.testing): small ONNX models (float CNNs
quantized by onnxruntime, operator-form graphs), a random conv layer, the hardware configuration
of the whole-network simulations, and the stand-in design of the synthesis and export tests.

Members
-------
FloatNet
    Builds a float CNN layer by layer with random (seeded) weights; :meth:`FloatNet.model`.
quantize_qdq
    ``onnxruntime.quantization.quantize_static`` in QDQ form with seeded calibration data.
QNet
    Builds an operator-form quantized graph (QLinearConv, ConvInteger, QLinearMatMul,
    MatMulInteger, MaxPool, Relu, Flatten, Reshape, QuantizeLinear / DequantizeLinear).
make_model
    Wraps nodes and initializers into a checked ModelProto.
random_input
    Seeded input matching a model's input (float or 8-bit).
layer_agreement
    Per-layer and final agreement (outputs, mismatches, largest difference in steps) of the
    golden model with an oracle of :mod:`model.oracle`.
random_conv_layer
    A small :class:`model.network.ConvLayer` with seeded random contents.
NETWORK_HW, NETWORK_HW_JSON
    The smallest engine that runs the example networks (sim/test_networks.py, sim/test_demo.py).
DotProduct
    A pipelined PE x SIMD int8 dot product, the MAC array's stand-in for synthesis and export.
onnx_maxpool_cases
    The 2-D cases of ONNX's own MaxPool node tests (attributes and input).
Case, make_layer, make_psum, first_mismatch
    The engine's test layers (tb/test_engine.py, tb/test_engine_limits.py, the compiler's
    tests): a Case describes a layer and how to drive it, make_layer builds it with random
    contents, make_psum random partial sums, first_mismatch names the first wrong output.
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from onnx import TensorProto, helper, numpy_helper

from model.conv import conv2d, conv_output_size
from model.network import ConvLayer, PoolLayer
from model.quant import quantize_multiplier
from sim.engine_driver import output_shape

__all__ = ["OPSET", "FloatNet", "QNet", "quantize_qdq", "make_model", "random_input",
           "input_signature", "layer_agreement", "random_conv_layer", "NETWORK_HW",
           "NETWORK_HW_JSON", "DotProduct", "Case", "make_layer", "make_psum",
           "first_mismatch", "onnx_maxpool_cases"]

#: Opset of the generated models (per-channel Q/DQ needs 13; onnxruntime supports it fully).
OPSET = 17

_ELEM = {"float32": TensorProto.FLOAT, "int8": TensorProto.INT8, "uint8": TensorProto.UINT8,
         "int32": TensorProto.INT32}


def make_model(nodes, inputs, outputs, initializers=(), opset=OPSET, name="convcore_test",
               check=True) -> onnx.ModelProto:
    """A model from nodes; ``inputs`` / ``outputs`` are ``(name, dtype, shape)`` triples."""
    graph = helper.make_graph(
        list(nodes), name,
        [helper.make_tensor_value_info(n, _ELEM[d], s) for n, d, s in inputs],
        [helper.make_tensor_value_info(n, _ELEM[d], s) for n, d, s in outputs],
        initializer=[numpy_helper.from_array(np.asarray(a), n)
                     for n, a in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    if check:
        onnx.checker.check_model(model)
    return model


def input_signature(model: onnx.ModelProto):
    """``(name, dtype name, shape)`` of the model's single input (symbolic dims -> 1)."""
    inits = {i.name for i in model.graph.initializer}
    info = [i for i in model.graph.input if i.name not in inits][0]
    ttype = info.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in ttype.shape.dim)
    return info.name, helper.tensor_dtype_to_np_dtype(ttype.elem_type).name, shape


def random_input(model: onnx.ModelProto, seed=0, batch=None) -> np.ndarray:
    """Seeded input for ``model``: normal floats, or uniform 8-bit integers."""
    _, dtype, shape = input_signature(model)
    if batch is not None:
        shape = (batch, *shape[1:])
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.standard_normal(shape).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)


def _infer_shape(nodes, inputs, inits, tensor, elem=TensorProto.FLOAT):
    model = make_model(nodes, inputs, [(tensor, "float32", None)], inits, check=False)
    model.graph.output[0].type.tensor_type.elem_type = elem
    model.graph.output[0].type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + \
            list(inferred.graph.input):
        if vi.name == tensor and vi.type.tensor_type.HasField("shape"):
            return tuple(d.dim_value if d.HasField("dim_value") else None
                         for d in vi.type.tensor_type.shape.dim)
    raise ValueError(f"shape inference gave no shape for '{tensor}'")


def maxpool_attrs(kernel, stride, pads, dilation, ceil_mode, auto_pad) -> dict:
    """MaxPool attributes from ints or pairs; the stride defaults to the kernel (PyTorch's
    convention), None leaves an attribute out."""
    kernel = [kernel] * 2 if isinstance(kernel, int) else list(kernel)
    stride = kernel if stride is None else ([stride] * 2 if isinstance(stride, int) else stride)
    if isinstance(pads, int):
        pads = [pads] * 4
    dilation = [dilation] * 2 if isinstance(dilation, int) else dilation
    return dict(kernel_shape=kernel, strides=list(stride), pads=pads, dilations=dilation,
                ceil_mode=ceil_mode, auto_pad=auto_pad)


class FloatNet:
    """A float CNN built op by op with seeded random weights (to be quantized by onnxruntime).

    ``FloatNet((1, 3, 8, 8)).conv(4, 3, pads=1).relu().maxpool(2).flatten().gemm(10).model()``
    Every method returns ``self``; attributes not given are left out of the node (ONNX defaults).
    """

    def __init__(self, input_shape=(1, 3, 8, 8), seed=0, symbolic_batch=False):
        self.rng = np.random.default_rng(seed)
        shape = list(input_shape)
        if symbolic_batch:
            shape[0] = "N"
        self.inputs = [("x", "float32", shape)]
        self.nodes, self.inits = [], {}
        self.tensor = "x"
        self.shape = tuple(input_shape)
        self.count = {}

    def _name(self, op):
        self.count[op] = self.count.get(op, 0) + 1
        return f"{op.lower()}{self.count[op]}"

    def node(self, op, extra_inputs=(), **attrs):
        """Append any op on the current tensor (also unsupported ones, for error tests)."""
        name = self._name(op)
        out = name + "_out"
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op, [self.tensor, *extra_inputs], [out], name=name,
                                           **attrs))
        self.tensor = out
        self.shape = _infer_shape(self.nodes, self.inputs, self.inits, out)
        return self

    def _init(self, name, array):
        self.inits[name] = np.asarray(array)
        return name

    def conv(self, out_channels, kernel=3, stride=None, pads=None, dilation=None, auto_pad=None,
             bias=True, group=None, ndim=2):
        kernel = (kernel,) * ndim if isinstance(kernel, int) else tuple(kernel)
        cin = self.shape[1] // (group or 1)
        fan_in = cin * int(np.prod(kernel))
        w = self.rng.standard_normal((out_channels, cin, *kernel)) / np.sqrt(fan_in)
        name = f"conv{self.count.get('Conv', 0) + 1}"
        extra = [self._init(name + "_w", w.astype(np.float32))]
        if bias:
            extra.append(self._init(name + "_b", (0.1 * self.rng.standard_normal(out_channels))
                                    .astype(np.float32)))
        pair = (lambda v: None if v is None else ([v] * ndim if isinstance(v, int) else list(v)))
        if isinstance(pads, int):
            pads = [pads] * (2 * ndim)
        return self.node("Conv", extra, strides=pair(stride), pads=pads, dilations=pair(dilation),
                         auto_pad=auto_pad, group=group, kernel_shape=list(kernel))

    def relu(self):
        return self.node("Relu")

    def maxpool(self, kernel=2, stride=None, pads=None, dilation=None, ceil_mode=None,
                auto_pad=None):
        return self.node("MaxPool", **maxpool_attrs(kernel, stride, pads, dilation, ceil_mode,
                                                    auto_pad))

    def flatten(self):
        return self.node("Flatten", axis=1)

    def reshape_flat(self):
        shape = self._init(f"shape{len(self.inits)}", np.array([-1, int(np.prod(self.shape[1:]))],
                                                              np.int64))
        return self.node("Reshape", [shape])

    def gemm(self, out_features, trans_b=True, bias=True):
        fin = self.shape[1]
        w = (self.rng.standard_normal((out_features, fin)) / np.sqrt(fin)).astype(np.float32)
        name = f"gemm{self.count.get('Gemm', 0) + 1}"
        extra = [self._init(name + "_w", w if trans_b else w.T.copy())]
        if bias:
            extra.append(self._init(name + "_b", (0.1 * self.rng.standard_normal(out_features))
                                    .astype(np.float32)))
        return self.node("Gemm", extra, transB=1 if trans_b else None)

    def matmul(self, out_features):
        fin = self.shape[1]
        w = (self.rng.standard_normal((fin, out_features)) / np.sqrt(fin)).astype(np.float32)
        name = f"matmul{self.count.get('MatMul', 0) + 1}"
        return self.node("MatMul", [self._init(name + "_w", w)])

    def model(self) -> onnx.ModelProto:
        out_shape = list(self.shape)
        if self.inputs[0][2][0] == "N":
            out_shape[0] = "N"
        nodes = self.nodes + [helper.make_node("Identity", [self.tensor], ["y"], name="output")] \
            if self.tensor == "x" else self.nodes
        outputs = [(self.tensor if self.tensor != "x" else "y", "float32", out_shape)]
        return make_model(nodes, self.inputs, outputs, self.inits)

    def calibration(self, count=8, seed=1):
        """Seeded float calibration inputs."""
        rng = np.random.default_rng(seed)
        shape = (1, *self.shape_in[1:])
        return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]

    @property
    def shape_in(self):
        return tuple(1 if d == "N" else d for d in self.inputs[0][2])


class _Reader:
    def __init__(self, name, data):
        self.items = iter([{name: d} for d in data])

    def get_next(self):
        return next(self.items, None)


def quantize_qdq(model: onnx.ModelProto, calibration=None, activation="int8", weight="int8",
                 per_channel=False, reduce_range=False, seed=1, count=8,
                 extra_options=None) -> onnx.ModelProto:
    """The float ``model`` quantized by ``quantize_static`` in QDQ form.

    ``activation`` / ``weight`` are "int8" or "uint8"; ``calibration`` is a list of input arrays
    (default: ``count`` seeded normal arrays of the input's shape with batch 1).
    """
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    name, _, shape = input_signature(model)
    if calibration is None:
        rng = np.random.default_rng(seed)
        calibration = [rng.standard_normal((1, *shape[1:])).astype(np.float32)
                       for _ in range(count)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static warns about pre-processing on every call
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(model, src)
        try:
            quantize_static(str(src), str(dst), _Reader(name, calibration),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=reduce_range, activation_type=types[activation],
                            weight_type=types[weight], calibrate_method=CalibrationMethod.MinMax,
                            extra_options=extra_options or {})
        finally:
            root.setLevel(level)
        return onnx.load(str(dst))


class QNet:
    """An operator-form quantized graph built op by op, with seeded random parameters.

    The input is ``dtype`` (8-bit) or, with ``float_input=True``, float32 followed by a
    QuantizeLinear. :meth:`dequantize` appends a DequantizeLinear to make a float output.
    Attributes not given are left out of the nodes (ONNX defaults).
    """

    def __init__(self, input_shape=(1, 3, 8, 8), dtype="uint8", seed=0, float_input=False,
                 scale=0.05, zero_point=None, symbolic_batch=False):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], {}
        self.count = {}
        self.dtype = dtype
        self.scale = float(scale)
        self.zp = int(zero_point) if zero_point is not None else self._random_zero_point(dtype)
        self.shape = tuple(input_shape)
        self.raw = False
        self.float_output = False
        shape = ["N" if symbolic_batch else input_shape[0], *input_shape[1:]]
        self.tensor = "x"
        if float_input:
            self.inputs = [("x", "float32", shape)]
            s = self._init("x_scale", np.float32(scale))
            z = self._init("x_zp", np.array(self.zp, dtype))
            self._add("QuantizeLinear", ["x", s, z], "quantize_input")
        else:
            self.inputs = [("x", dtype, shape)]

    def _name(self, op):
        self.count[op] = self.count.get(op, 0) + 1
        return f"{op.lower()}{self.count[op]}"

    def _random_zero_point(self, dtype) -> int:
        """A zero point near the middle of the range (uint8) or near 0 (int8)."""
        return int(self.rng.integers(100, 156) if dtype == "uint8" else self.rng.integers(-20, 21))

    def _init(self, name, array):
        self.inits[name] = np.asarray(array)
        return name

    def _add(self, op, inputs, name=None, **attrs):
        name = name or self._name(op)
        out = name + "_out"
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        self.tensor = out
        return name

    def _elem(self):
        return TensorProto.INT32 if self.raw else _ELEM[self.dtype]

    def _update_shape(self):
        self.shape = _infer_shape(self.nodes, self.inputs, self.inits, self.tensor,
                                  TensorProto.FLOAT if self.float_output else self._elem())

    def _weights(self, shape, w_dtype, per_channel_zp, axis):
        info = np.iinfo(w_dtype)
        w = self.rng.integers(info.min, info.max + 1, size=shape).astype(w_dtype)
        n = shape[axis]
        if w_dtype == "int8":
            zp = np.zeros(n, np.int8) if not per_channel_zp else \
                self.rng.integers(-10, 11, n).astype(np.int8)
        else:
            zp = (self.rng.integers(100, 156, n) if per_channel_zp
                  else np.full(n, self.rng.integers(100, 156))).astype(np.uint8)
        return w, zp

    def _out_scale(self, w_scale, fan_in, w_dtype):
        # about three standard deviations of the accumulator span the 8-bit range
        w_std = 128 / np.sqrt(3)
        x_std = 128 / np.sqrt(3)
        acc_std = np.sqrt(fan_in) * w_std * x_std
        # a random factor keeps x_scale * w_scale / y_scale away from short binary fractions,
        # whose exact ties round differently (half to even in ONNX, half up in convcore)
        jitter = self.rng.uniform(0.8, 1.25)
        return np.float32(self.scale * float(np.mean(w_scale)) * acc_std * 3 / 128 * jitter)

    def _conv_attrs(self, kernel, stride, pads, dilation, auto_pad, group):
        pair = (lambda v: None if v is None else ([v] * 2 if isinstance(v, int) else list(v)))
        if isinstance(pads, int):
            pads = [pads] * 4
        return dict(kernel_shape=list(kernel), strides=pair(stride), pads=pads,
                    dilations=pair(dilation), auto_pad=auto_pad, group=group)

    def qlinear_conv(self, out_channels, kernel=3, w_dtype="int8", per_channel=False,
                     per_channel_zp=False, bias=True, y_dtype=None, y_zero_point=None, stride=None,
                     pads=None, dilation=None, auto_pad=None, group=None):
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        cin = self.shape[1]
        name = self._name("QLinearConv")
        w, w_zp = self._weights((out_channels, cin, *kernel), w_dtype, per_channel_zp, 0)
        w_scale = (self.rng.uniform(0.5, 2.0, out_channels) if per_channel
                   else np.full(out_channels, self.rng.uniform(0.5, 2.0))).astype(np.float32) * 0.01
        y_dtype = y_dtype or self.dtype
        y_scale = self._out_scale(w_scale, cin * kernel[0] * kernel[1], w_dtype)
        y_zp = self._random_zero_point(y_dtype)
        y_zp = y_zp if y_zero_point is None else int(y_zero_point)
        vector = per_channel or per_channel_zp
        ins = [self.tensor, self._init(name + "_xs", np.float32(self.scale)),
               self._init(name + "_xz", np.array(self.zp, self.dtype)),
               self._init(name + "_w", w),
               self._init(name + "_ws", w_scale if vector else w_scale[:1].reshape(())),
               self._init(name + "_wz", w_zp if vector else w_zp[:1].reshape(())),
               self._init(name + "_ys", y_scale), self._init(name + "_yz", np.array(y_zp, y_dtype))]
        if bias:
            acc = np.sqrt(cin * kernel[0] * kernel[1]) * 128 * 128 / 3
            ins.append(self._init(name + "_b", self.rng.integers(-acc, acc, out_channels)
                                  .astype(np.int32)))
        self._add("QLinearConv", ins, name,
                  **self._conv_attrs(kernel, stride, pads, dilation, auto_pad, group))
        self.scale, self.zp, self.dtype = float(y_scale), y_zp, y_dtype
        self._update_shape()
        return self

    def conv_integer(self, out_channels, kernel=3, w_dtype="int8", per_channel_zp=False,
                     stride=None, pads=None, dilation=None, auto_pad=None):
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        name = self._name("ConvInteger")
        w, w_zp = self._weights((out_channels, self.shape[1], *kernel), w_dtype, per_channel_zp, 0)
        ins = [self.tensor, self._init(name + "_w", w),
               self._init(name + "_xz", np.array(self.zp, self.dtype)),
               self._init(name + "_wz", w_zp if per_channel_zp else w_zp[:1].reshape(()))]
        self._add("ConvInteger", ins, name,
                  **self._conv_attrs(kernel, stride, pads, dilation, auto_pad, None))
        self.raw = True
        self._update_shape()
        return self

    def maxpool(self, kernel=2, stride=None, pads=None, dilation=None, ceil_mode=None,
                auto_pad=None):
        self._add("MaxPool", [self.tensor], **maxpool_attrs(kernel, stride, pads, dilation,
                                                            ceil_mode, auto_pad))
        self._update_shape()
        return self

    def relu(self):
        self._add("Relu", [self.tensor])
        self._update_shape()
        return self

    def flatten(self):
        self._add("Flatten", [self.tensor], axis=1)
        self._update_shape()
        return self

    def reshape(self, shape):
        s = self._init(f"reshape_shape{len(self.inits)}", np.array(shape, np.int64))
        self._add("Reshape", [self.tensor, s])
        self._update_shape()
        return self

    def _matmul_weights(self, out_features, w_dtype, per_column):
        return self._weights((self.shape[1], out_features), w_dtype, per_column, 1)

    def qlinear_matmul(self, out_features, w_dtype="int8", per_column=False, y_dtype=None):
        name = self._name("QLinearMatMul")
        fin = self.shape[1]
        w, w_zp = self._matmul_weights(out_features, w_dtype, per_column)
        w_scale = (self.rng.uniform(0.5, 2.0, out_features) if per_column
                   else np.full(out_features, self.rng.uniform(0.5, 2.0))).astype(np.float32) * 0.01
        y_dtype = y_dtype or self.dtype
        y_scale = self._out_scale(w_scale, fin, w_dtype)
        y_zp = self._random_zero_point(y_dtype)
        ins = [self.tensor, self._init(name + "_xs", np.float32(self.scale)),
               self._init(name + "_xz", np.array(self.zp, self.dtype)),
               self._init(name + "_w", w),
               self._init(name + "_ws", w_scale if per_column else w_scale[:1].reshape(())),
               self._init(name + "_wz", w_zp if per_column else w_zp[:1].reshape(())),
               self._init(name + "_ys", y_scale), self._init(name + "_yz", np.array(y_zp, y_dtype))]
        self._add("QLinearMatMul", ins, name)
        self.scale, self.zp, self.dtype = float(y_scale), y_zp, y_dtype
        self._update_shape()
        return self

    def matmul_integer(self, out_features, w_dtype="int8", per_column=False):
        name = self._name("MatMulInteger")
        w, w_zp = self._matmul_weights(out_features, w_dtype, per_column)
        ins = [self.tensor, self._init(name + "_w", w),
               self._init(name + "_xz", np.array(self.zp, self.dtype)),
               self._init(name + "_wz", w_zp if per_column else w_zp[:1].reshape(()))]
        self._add("MatMulInteger", ins, name)
        self.raw = True
        self._update_shape()
        return self

    def dequantize(self):
        s = self._init("y_scale", np.float32(self.scale))
        z = self._init("y_zp", np.array(self.zp, self.dtype))
        self._add("DequantizeLinear", [self.tensor, s, z], "dequantize_output")
        self.float_output = True
        return self

    def node(self, op, extra_inputs=(), **attrs):
        """Append any op on the current tensor (also unsupported ones, for error tests)."""
        self._add(op, [self.tensor, *extra_inputs], **attrs)
        try:
            self._update_shape()
        except Exception:  # an op onnx cannot infer: keep the last known shape
            pass
        return self

    def model(self, check=True) -> onnx.ModelProto:
        dtype = "float32" if self.float_output else ("int32" if self.raw else self.dtype)
        shape = [d if d is not None else "N" for d in self.shape]
        return make_model(self.nodes, self.inputs, [(self.tensor, dtype, shape)], self.inits,
                          check=check)


# --- oracles ------------------------------------------------------------------------------

def layer_agreement(net, model: onnx.ModelProto, x: np.ndarray, oracle):
    """Per-layer agreement of the golden model with an oracle (``oracle(model, x, tensors)``,
    :func:`model.oracle.run_reference` or :func:`model.oracle.run_onnxruntime`).

    Each layer runs on the oracle's input to that layer, so errors do not accumulate. Returns
    ``(per_layer, final)``: a list of ``(name, outputs, mismatches, max_steps)`` and the same
    tuple for the whole network's output against the oracle's output.
    """
    from model.network import quantize_input, run_layer, run_network
    from model.oracle import steps

    tensors = [layer.tensor for layer in net.layers]
    want_final, *want = oracle(model, x, tensors)
    per_layer = []
    layer_in = quantize_input(net, x)
    for layer, ref in zip(net.layers, want):
        got = run_layer(layer, layer_in)
        ref = np.asarray(ref).reshape(got.shape)
        assert got.dtype == ref.dtype, (layer.name, got.dtype, ref.dtype)
        d = steps(got, ref)
        per_layer.append((layer.name, d.size, int(np.count_nonzero(d)), int(d.max(initial=0))))
        layer_in = ref
    got = run_network(net, x)
    assert got.dtype == want_final.dtype and got.shape == want_final.shape, \
        (got.dtype, got.shape, want_final.dtype, want_final.shape)
    d = steps(got, want_final, net.output_scale)
    final = ("output", d.size, int(np.count_nonzero(d)), int(d.max(initial=0)))
    return per_layer, final


# --- engine layers and configurations ---------------------------------------------------

def random_conv_layer(cout=5, cin=3, k=(2, 3), raw=False, seed=0) -> ConvLayer:
    """A small int8 ConvLayer (4 x 5 input) with seeded random weights, bias and weight zero
    points, and requantization constants to int8 unless ``raw`` (int32 output)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (cout, cin, *k)).astype(np.int8)
    quant = {} if raw else dict(out_dtype="int8", multiplier=rng.integers(1 << 30, 1 << 31, cout),
                                shift=rng.integers(1, 63, cout))
    return ConvLayer(name="l", nodes=("l",), in_shape=(cin, 4, 5), out_shape=(cout, 3, 3),
                     in_dtype="int8", weight=w, bias=rng.integers(-1000, 1000, cout),
                     w_zero_point=rng.integers(-128, 128, cout), **quant)


#: The smallest engine that runs both example networks (sim/test_networks.py; sim/test_demo.py
#: shares its Verilator build): a 4 x 4 MAC array for inputs up to 32 x 32 with up to 32
#: channels and 5 x 5 kernels.
NETWORK_HW = dict(pe=4, simd=4, max_kernel=5, max_width=32, max_height=32, max_channels=32)
NETWORK_HW_JSON = json.dumps(NETWORK_HW)


# --- a stand-in design for the synthesis and export flows ---------------------------------

OPERAND_WIDTH = 8


class DotProduct(wiring.Component):
    """PE dot products of SIMD signed 8-bit lanes per transfer, three register stages.

    Members
    -------
    i : ``In(stream.Signature(StructLayout({"x": SIMD lanes, "w": PE x SIMD lanes})))``
    o : ``Out(stream.Signature(ArrayLayout(signed(acc_width), pe)))``
    """

    latency = 3

    def __init__(self, pe, simd):
        for name, value in (("pe", pe), ("simd", simd)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.pe, self.simd = pe, simd
        self.acc_width = 2 * OPERAND_WIDTH + (simd - 1).bit_length()
        lanes = data.ArrayLayout(signed(OPERAND_WIDTH), simd)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"x": lanes,
                                                        "w": data.ArrayLayout(lanes, pe)}))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(self.acc_width), self.pe))),
        })

    def elaborate(self, platform):
        m = Module()
        move = Signal()  # the whole pipeline advances when the output is free or taken
        m.d.comb += [move.eq(~self.o.valid | self.o.ready), self.i.ready.eq(move)]
        operands = Signal.like(self.i.payload)
        products = [[Signal(signed(2 * OPERAND_WIDTH), name=f"prod{p}_{s}")
                     for s in range(self.simd)] for p in range(self.pe)]
        valid = [Signal(name=f"s{k}_valid") for k in (1, 2)]
        with m.If(move):
            m.d.sync += [operands.eq(self.i.payload), valid[0].eq(self.i.valid),
                         valid[1].eq(valid[0]), self.o.valid.eq(valid[1])]
            for p in range(self.pe):
                for s in range(self.simd):
                    m.d.sync += products[p][s].eq(operands.x[s] * operands.w[p][s])
                m.d.sync += self.o.payload[p].eq(sum(products[p]))
        return m


# --- layers of the engine's tests: a Case, built with random contents ---------------------


@dataclass
class Case:
    """One layer of a sweep (see :func:`make_layer`) and how to drive it."""
    cin: int
    cout: int
    h: int
    w: int
    k: tuple = (3, 3)
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    dilation: tuple = (1, 1)
    x_dtype: str = "int8"
    w_dtype: str = "int8"
    out: str = "int8"           # "int8", "uint8" or "int32" (raw)
    relu: bool = False
    per_channel: bool = True
    stalls: bool = False        # random idle input cycles and output backpressure
    perf: bool = False          # check the utilization target
    expect: str = "NONE"        # EngineError name for layers that must be refused
    repeat: int = 1             # runs with new inputs and the weights already loaded
    pool: object = None         # MaxPool (or the same fields, for illegal settings)
    alone: bool = False         # the pool alone (PoolLayer, cin channels; conv fields unused)
    psum: bool = False          # random int32 partial sums on s_axis_acc (QUANT.acc_in)

    def label(self):
        pool = "" if self.pool is None else (
            f" pool(k{self.pool.kernel} s{self.pool.stride} p{self.pool.pads} "
            f"d{self.pool.dilation}{' ceil' if self.pool.ceil_mode else ''})")
        if self.alone:
            return f"{self.cin} ch {self.h}x{self.w} {self.x_dtype}{pool}"
        return (f"{self.cin}->{self.cout} {self.h}x{self.w} k{self.k} s{self.stride} "
                f"p{self.pads} d{self.dilation} {self.x_dtype}/{self.w_dtype}->{self.out}{pool}"
                + (" +psum" if self.psum else ""))


def make_layer(case: Case, rng: np.random.Generator, name="layer"):
    """A random ConvLayer (or PoolLayer) for ``case`` and a CHW input for it."""
    info = {d: np.iinfo(d) for d in ("int8", "uint8")}
    xi, wi = info[case.x_dtype], info[case.w_dtype]
    kh, kw = case.k
    if case.alone:
        # Half the maps near the type's minimum: padding must never win there.
        top = xi.min + 16 if rng.random() < 0.5 else xi.max + 1
        x = rng.integers(xi.min, top, (case.cin, case.h, case.w)).astype(case.x_dtype)
        layer = PoolLayer(name=name, nodes=(name,), in_shape=(case.cin, case.h, case.w),
                          out_shape=(case.cin, 0, 0), in_dtype=case.x_dtype, pool=case.pool)
        if case.expect == "NONE":
            layer.out_shape = output_shape(layer)
        return layer, x
    x = rng.integers(xi.min, xi.max + 1, (case.cin, case.h, case.w)).astype(case.x_dtype)
    w = rng.integers(wi.min, wi.max + 1, (case.cout, case.cin, kh, kw)).astype(case.w_dtype)
    x_zp = int(rng.integers(xi.min, xi.max + 1)) if case.x_dtype == "uint8" else \
        int(rng.integers(-8, 9))
    if case.per_channel:
        w_zp = rng.integers(wi.min, wi.max + 1, case.cout) if case.w_dtype == "uint8" else \
            np.zeros(case.cout, np.int64)
    else:
        w_zp = np.full(case.cout, int(rng.integers(wi.min, wi.max + 1))
                       if case.w_dtype == "uint8" else 0)
    bias = rng.integers(-(1 << 15), 1 << 15, case.cout).astype(np.int32)
    w_zp = np.asarray(w_zp, np.int32)
    # The golden model cannot describe some layers the engine must refuse (stride 0, no
    # output): those are built with stride 1 and raw output, then given their real stride.
    geometry_ok = min(case.stride) >= 1
    if geometry_ok:
        try:
            conv_output_size(case.h, kh, case.stride[0], case.pads[0::2],
                             case.dilation[0], strict=False)
            conv_output_size(case.w, kw, case.stride[1], case.pads[1::2],
                             case.dilation[1], strict=False)
        except ValueError:
            geometry_ok = False
    quant = {"out_dtype": "int32"}
    if case.out != "int32" and geometry_ok:
        acc = conv2d(x, w, bias, case.stride, case.pads, case.dilation, x_zp, w_zp)
        spread = np.maximum(acc.reshape(case.cout, -1).std(axis=1), 1.0)
        scale = rng.uniform(30, 90, case.cout) / spread
        if not case.per_channel:
            scale = np.full(case.cout, scale.mean())
        multiplier, shift = quantize_multiplier(scale)
        yi = np.iinfo(case.out)
        y_zp = int(rng.integers(yi.min, yi.max + 1)) if case.out == "uint8" \
            else int(rng.integers(-10, 11))
        quant = dict(out_dtype=case.out, multiplier=multiplier, shift=shift, y_zero_point=y_zp,
                     relu=case.relu)
    layer = ConvLayer(name=name, nodes=(name,), in_shape=(case.cin, case.h, case.w),
                      out_shape=(case.cout, 0, 0), in_dtype=case.x_dtype, weight=w, bias=bias,
                      stride=tuple(case.stride) if geometry_ok else (1, 1), pads=tuple(case.pads),
                      dilation=tuple(case.dilation), x_zero_point=x_zp, w_zero_point=w_zp,
                      **quant)
    # Set after construction: the model refuses a pool after raw output (so does the engine).
    layer.pool = case.pool
    if geometry_ok and case.expect == "NONE":
        layer.out_shape = output_shape(layer)
    elif not geometry_ok:
        layer.stride = tuple(case.stride)
    return layer, x


def make_psum(layer, rng: np.random.Generator):
    """Random int32 partial sums for a ConvLayer's conv output (CHW), spread like the
    accumulators of another input-channel group; some near the int32 limits, which wrap."""
    from sim.engine_driver import conv_shape

    shape = conv_shape(layer)
    psum = rng.integers(-(1 << 12), 1 << 12, shape).astype(np.int32)
    edge = rng.random(shape) < 0.02
    psum[edge] = rng.choice(np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max],
                                     np.int32), int(edge.sum()))
    return psum


def first_mismatch(got, want):
    """'(channel, row, col): got G, want W' for the first differing element."""
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    c, r, q = bad[0]
    return (f"{len(bad)} mismatches; first at (channel {c}, row {r}, col {q}): "
            f"got {got[c, r, q]}, want {want[c, r, q]}")


def onnx_maxpool_cases():
    """The 2-D cases of the ONNX project's MaxPool node tests (onnx.backend.test.case), with
    their attributes and input shapes (the Indices output of MaxPool-with-argmax aside)."""
    from onnx.backend.test.case.node import maxpool

    cases = []
    saved = maxpool.expect
    maxpool.expect = lambda node, inputs, outputs, name, **kw: cases.append(
        (name, node, inputs[0]))
    try:
        for name in dir(maxpool.MaxPool):
            if name.startswith("export"):
                getattr(maxpool.MaxPool, name)()
    finally:
        maxpool.expect = saved
    return [c for c in cases if c[2].ndim == 4 and "argmax" not in c[0]]
