"""Import a quantized ONNX model as a :class:`model.network.Network`.

Two forms are understood:

* QDQ, as ``onnxruntime.quantization.quantize_static`` writes it: float Conv, Gemm, MatMul,
  Relu, MaxPool, Reshape and Flatten between DequantizeLinear and QuantizeLinear nodes, weights
  (per tensor or per output channel) and int32 biases stored as DequantizeLinear initializers.
* Operator form: QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger, and MaxPool, Relu,
  Reshape, Flatten on 8-bit tensors.

The result is one chain of layers (conv with fused requantize / ReLU / max-pool, max-pool,
dense) that the golden model and the hardware backends both execute. Anything outside that
(an unsupported op or attribute, a float-only model, branches, a requantization between layers
that the hardware cannot express) raises :class:`UnsupportedModelError` with the one-line message
``node 'NAME' (OpType): what is unsupported``.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from model.network import ConvLayer, DenseLayer, MaxPool, Network, PoolLayer
from model.quant import ACC_MAX, ACC_MIN, quantize, quantize_multiplier, real_scale

__all__ = ["UnsupportedModelError", "ModelFileError", "load_network", "import_model",
           "SUPPORTED_OPS"]

#: ONNX operators the importer understands (default domain only).
SUPPORTED_OPS = ("QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "MatMul", "QLinearConv",
                 "ConvInteger", "QLinearMatMul", "MatMulInteger", "MaxPool", "Relu", "Reshape",
                 "Flatten", "Identity", "Constant")

#: Relative tolerance when two scales in the model must be the same number (float32 rounding).
SCALE_RTOL = 1e-6

_QTYPES = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8"}
_CONV_ATTRS = {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}
_POOL_ATTRS = {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order",
               "strides"}


class UnsupportedModelError(ValueError):
    """The model uses something convcore cannot run; the message is one line naming the node.

    Members
    -------
    node_name, op_type : str or None
        The offending node (None for problems of the whole graph).
    """

    def __init__(self, what: str, node_name: str | None = None, op_type: str | None = None):
        self.node_name = node_name
        self.op_type = op_type
        what = " ".join(str(what).split())
        if node_name is None:
            super().__init__(f"model: {what}")
        else:
            super().__init__(f"node '{node_name}' ({op_type}): {what}")


class ModelFileError(ValueError):
    """The model file is missing or is not a readable ONNX model."""


def load_network(path) -> Network:
    """Read an ONNX file and import it (:func:`import_model`)."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file '{path}' does not exist")
    if not path.is_file():
        raise ModelFileError(f"model file '{path}' is not a file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for damaged files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"'{path}' is not a valid ONNX model ({first})") from None
    if not model.graph.node:
        raise ModelFileError(f"'{path}' is not a valid ONNX model (its graph has no nodes)")
    return import_model(model, source=str(path))


def import_model(model: onnx.ModelProto, source: str = "") -> Network:
    """Turn a quantized ONNX model into a :class:`Network` (see the module docstring)."""
    return _Importer(model, source).run()


# --- values flowing through the graph -----------------------------------------------------

@dataclass
class _Q:
    """An 8-bit activation: the output of layer ``layer`` (-1: the network input)."""
    name: str
    layer: int
    shape: tuple
    dtype: str
    scale: float | None
    zp: int | None
    chain: tuple  # tensor names since the layer's output: all must be used once to fuse


@dataclass
class _Raw:
    """Int32 accumulators of a ConvInteger / MatMulInteger layer."""
    name: str
    layer: int
    shape: tuple


@dataclass
class _DQ:
    """Float view ``(q - zp) * scale`` of an 8-bit activation."""
    q: _Q
    scale: float
    zp: int
    chain: tuple


@dataclass
class _FloatIn:
    """The float network input before its QuantizeLinear."""
    name: str


@dataclass
class _Const:
    """An initializer or Constant."""
    name: str
    array: np.ndarray


@dataclass
class _DQConst:
    """A dequantized initializer: weights or bias, per tensor or per axis."""
    name: str
    q: np.ndarray
    scale: np.ndarray
    zp: np.ndarray
    axis: int


@dataclass
class _Pending:
    """A float conv / dense result waiting for its QuantizeLinear."""
    node: onnx.NodeProto
    layer: ConvLayer | DenseLayer  # built without requantization yet
    x: _DQ
    w: _DQConst
    bias: _DQConst | _Const | None
    relu: bool
    pool: MaxPool | None
    nodes: tuple
    shape: tuple


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _scalar(arr: np.ndarray):
    return arr.reshape(-1)[0].item()


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


class _Importer:
    def __init__(self, model: onnx.ModelProto, source: str):
        self.model = model
        self.graph = model.graph
        self.source = source
        self.values: dict = {}
        self.layers: list = []
        self.input_quant = None  # (scale, zp, dtype)
        self.node = None
        self.uses: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.uses[name] = self.uses.get(name, 0) + 1
        for out in self.graph.output:
            self.uses[out.name] = self.uses.get(out.name, 0) + 1

    # --- errors ---------------------------------------------------------------------------
    @staticmethod
    def _name(node) -> str:
        """The node's name, or its first output's name for unnamed nodes."""
        return node.name or (node.output[0] if node.output else "?")

    def fail(self, what: str, node=None):
        node = node if node is not None else self.node
        if node is None:
            raise UnsupportedModelError(what)
        raise UnsupportedModelError(what, self._name(node), node.op_type)

    # --- graph ----------------------------------------------------------------------------
    def run(self) -> Network:
        for init in self.graph.initializer:
            self.values[init.name] = _Const(init.name, numpy_helper.to_array(init))
        inputs = [i for i in self.graph.input if i.name not in self.values]
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs) or "none"
            self.fail(f"has {len(inputs)} inputs ({names}); convcore runs models with one input")
        self.input_info = inputs[0]
        self.input_shape, self.input_dtype = self._input_signature(inputs[0])
        if self.input_dtype == "float32":
            self.values[inputs[0].name] = _FloatIn(inputs[0].name)
        elif self.input_dtype in ("int8", "uint8"):
            self.values[inputs[0].name] = _Q(inputs[0].name, -1, self.input_shape[1:],
                                             self.input_dtype, None, None, (inputs[0].name,))
        else:
            self.fail(f"input '{inputs[0].name}' has type {self.input_dtype}; convcore takes "
                      f"float32 (QDQ models) or int8/uint8 inputs")

        handlers = {op: getattr(self, "_op_" + op) for op in SUPPORTED_OPS}
        for node in self.graph.node:
            self.node = node
            if node.domain not in ("", "ai.onnx"):
                self.fail(f"operator domain '{node.domain}' is not supported; convcore supports "
                          f"the default ONNX domain only")
            handler = handlers.get(node.op_type)
            if handler is None:
                self.fail(f"operator {node.op_type} is not supported (supported: "
                          f"{', '.join(SUPPORTED_OPS[:-2])})")
            for name in node.input:
                if name and name not in self.values:
                    self.fail(f"input '{name}' is not produced by any earlier node")
                value = self.values.get(name)
                if isinstance(value, _Pending) and self.uses.get(name, 0) != 1:
                    self.fail(f"float output '{name}' of '{self._name(value.node)}' is used "
                              f"{self.uses[name]} times; it must go to one QuantizeLinear",
                              value.node)
            handler(node, _attrs(node))
        self.node = None
        return self._network()

    def _input_signature(self, info):
        ttype = info.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name \
            if ttype.elem_type else "undefined"
        if not ttype.HasField("shape"):
            self.fail(f"input '{info.name}' has no shape")
        dims = []
        for i, d in enumerate(ttype.shape.dim):
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif i == 0:
                dims.append(None)
            else:
                self.fail(f"input '{info.name}' has a symbolic dimension {i} "
                          f"('{d.dim_param}'); only the batch may be symbolic")
        if len(dims) < 2:
            self.fail(f"input '{info.name}' has shape {_fmt(dims)}; convcore takes (N, C, H, W) "
                      f"or (N, F)")
        return tuple(dims), dtype

    def _network(self) -> Network:
        outputs = list(self.graph.output)
        if len(outputs) != 1:
            self.fail(f"has {len(outputs)} outputs; convcore runs models with one output")
        name = outputs[0].name
        value = self.values.get(name)
        if not self.layers:
            self.fail("has no conv, pool or dense layer")
        scale, zp = None, 0
        if isinstance(value, _DQ):
            scale, zp, value = value.scale, value.zp, value.q
        if not isinstance(value, (_Q, _Raw)):
            producer = self._producer(name)
            self.fail(f"output '{name}' is not quantized (no QuantizeLinear after it)", producer)
        last = len(self.layers) - 1
        if value.layer != last:
            self.fail(f"output '{name}' does not come from the last layer "
                      f"'{self.layers[last].name}'; convcore runs chains of layers",
                      self._producer(name))
        if isinstance(value, _Q):
            out_dtype = "float32" if scale is not None else value.dtype
        else:
            out_dtype = "int32"
        if self.input_quant is None:
            in_scale, in_zp, in_qdtype = None, 0, self.input_dtype
        else:
            in_scale, in_zp, in_qdtype = self.input_quant
        return Network(layers=self.layers, input_name=self.input_info.name,
                       input_shape=self.input_shape, input_dtype=self.input_dtype,
                       input_scale=in_scale, input_zero_point=in_zp, input_qdtype=in_qdtype,
                       output_name=name, output_shape=(self.input_shape[0], *value.shape),
                       output_scale=scale, output_zero_point=zp, output_dtype=out_dtype,
                       source=self.source)

    def _producer(self, tensor):
        for node in self.graph.node:
            if tensor in node.output:
                return node
        return None

    # --- helpers --------------------------------------------------------------------------
    def _get(self, node, index, kinds, what):
        """The value of input ``index`` (must be one of ``kinds``), or None if absent."""
        if index >= len(node.input) or not node.input[index]:
            return None
        value = self.values[node.input[index]]
        if not isinstance(value, kinds):
            self.fail(f"{what} '{node.input[index]}' {self._describe(value)}")
        return value

    def _describe(self, value) -> str:
        if isinstance(value, _FloatIn):
            return ("is the float model input, not dequantized from int8/uint8: the model is not "
                    "quantized (quantize it, e.g. with onnxruntime.quantization.quantize_static)")
        if isinstance(value, _Const):
            if value.array.dtype.kind == "f":
                return "is a float initializer, not quantized (no DequantizeLinear)"
            return f"is an {value.array.dtype} initializer where an activation is expected"
        if isinstance(value, _DQConst):
            return "is a dequantized initializer where an activation is expected"
        if isinstance(value, _Pending):
            return f"is the float output of '{self._name(value.node)}' without a QuantizeLinear"
        if isinstance(value, _Raw):
            return "holds int32 accumulators, which only a graph output may take"
        if isinstance(value, _DQ):
            return "is a float (dequantized) tensor where an 8-bit tensor is expected"
        if isinstance(value, _Q):
            return "is an 8-bit tensor where a float (dequantized) tensor is expected"
        return "has an unsupported kind"

    def _const(self, node, index, what, required=True, kinds="iuf"):
        value = self._get(node, index, (_Const,), what)
        if value is None:
            if required:
                self.fail(f"{what} is missing")
            return None
        if value.array.dtype.kind not in kinds:
            self.fail(f"{what} '{value.name}' has type {value.array.dtype}")
        return value.array

    def _act_scale_zp(self, node, si, zi, what):
        """Per-tensor (scale, zero point, dtype) of an activation from inputs si, zi."""
        scale = self._const(node, si, f"{what} scale", kinds="f")
        zp = self._const(node, zi, f"{what} zero point", required=False)
        if scale.size != 1 or (zp is not None and zp.size != 1):
            self.fail(f"{what} is quantized per axis; activations must be quantized per tensor")
        scale = float(_scalar(scale))
        if not (np.isfinite(scale) and scale > 0):
            self.fail(f"{what} scale {scale} is not finite and > 0")
        if zp is None:
            return scale, 0, None
        dtype = zp.dtype.name
        if dtype not in ("int8", "uint8"):
            self.fail(f"{what} zero point has type {dtype}; convcore supports int8 and uint8")
        return scale, int(_scalar(zp)), dtype

    def _check_q_params(self, node, q: _Q, scale, zp, dtype, what):
        if dtype is not None and dtype != q.dtype:
            self.fail(f"{what} zero point is {dtype} but '{q.name}' is {q.dtype}")
        if q.zp is not None and zp != q.zp:
            self.fail(f"{what} zero point {zp} differs from {q.zp} that '{q.name}' was "
                      f"quantized with (inconsistent requantization)")
        if q.scale is not None and not np.isclose(scale, q.scale, rtol=SCALE_RTOL, atol=0):
            self.fail(f"{what} scale {scale:.9g} differs from {q.scale:.9g} that '{q.name}' was "
                      f"quantized with (inconsistent requantization)")

    def _check_chain(self, node, q, what="input"):
        last = len(self.layers) - 1
        if q.layer != last:
            self.fail(f"{what} '{q.name}' is the output of "
                      f"{'the network input' if q.layer < 0 else repr(self.layers[q.layer].name)}"
                      f", but layer '{self.layers[last].name}' came after it; convcore runs a "
                      f"chain of layers (no branches)")

    def _exclusive(self, chain) -> bool:
        return all(self.uses.get(n, 0) == 1 for n in chain)

    def _set_q(self, name, q: _Q, register=True, **changes):
        """A copy of ``q`` renamed; registered as the value of ``name`` (an 8-bit tensor)."""
        new = replace(q, name=name, **changes)
        if register:
            self.values[name] = new
            if new.layer >= 0 and tuple(new.shape) == tuple(self.layers[new.layer].out_shape):
                self.layers[new.layer].tensor = name
        return new

    def _weights(self, node, index, what="weight") -> _DQConst:
        """The dequantized weight initializer at input ``index`` (float weights are refused)."""
        value = self._get(node, index, (_DQConst, _Const), what)
        if value is None:
            self.fail(f"{what} is missing")
        if isinstance(value, _Const):
            self.fail(f"{what} '{value.name}' {self._describe(value)}")
        return value

    @staticmethod
    def _per_out(arr: np.ndarray, n: int):
        arr = np.asarray(arr).reshape(-1)
        return np.broadcast_to(arr, (n,)).copy() if arr.size == 1 else arr.copy()

    def _check_per_axis(self, node, dq: _DQConst, axis, n, what):
        for part, arr in (("scale", dq.scale), ("zero point", dq.zp)):
            if arr.size not in (1, n):
                self.fail(f"{what} {part} has {arr.size} values for {n} output channels")
        if max(dq.scale.size, dq.zp.size) > 1 and dq.axis % dq.q.ndim != axis % dq.q.ndim:
            self.fail(f"{what} is quantized along axis {dq.axis}; per-channel weights must be "
                      f"quantized along the output-channel axis {axis % dq.q.ndim}")

    def _weight_dtype(self, node, w: np.ndarray, what="weight"):
        if w.dtype.name not in ("int8", "uint8"):
            self.fail(f"{what} has type {w.dtype}; convcore supports int8 and uint8 weights")

    # --- geometry -------------------------------------------------------------------------
    def _geometry(self, node, attrs, allowed, hw, kernel):
        extra = set(attrs) - allowed
        if extra:
            self.fail(f"attribute {sorted(extra)[0]} is not supported")
        if len(kernel) != 2:
            self.fail(f"{len(kernel)}-D kernel {_fmt(kernel)} is not supported; convcore runs "
                      f"2-D layers")
        if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != tuple(kernel):
            self.fail(f"kernel_shape {_fmt(attrs['kernel_shape'])} does not match the weight "
                      f"kernel {_fmt(kernel)}")
        stride = tuple(attrs.get("strides", (1, 1)))
        dilation = tuple(attrs.get("dilations", (1, 1)))
        for name, val in (("strides", stride), ("dilations", dilation)):
            if len(val) != 2 or min(val) < 1:
                self.fail(f"{name} {list(val)} must be two values >= 1")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad == "NOTSET":
            pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
            if len(pads) != 4 or min(pads) < 0:
                self.fail(f"pads {list(pads)} must be four values >= 0")
            pads = (pads[0], pads[1], pads[2], pads[3])  # ONNX: top, left, bottom, right
        elif auto_pad == "VALID":
            pads = (0, 0, 0, 0)
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            begin, end = [], []
            for n, k, s, d in zip(hw, kernel, stride, dilation):
                out = -(-n // s)
                total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
                small, big = total // 2, total - total // 2
                begin.append(small if auto_pad == "SAME_UPPER" else big)
                end.append(big if auto_pad == "SAME_UPPER" else small)
            pads = (begin[0], begin[1], end[0], end[1])
        else:
            self.fail(f"auto_pad {auto_pad} is not supported")
        for n, k, p, d, axis in zip(hw, kernel, (pads[0] + pads[2], pads[1] + pads[3]), dilation,
                                    ("height", "width")):
            if n + p < (k - 1) * d + 1:
                self.fail(f"kernel {_fmt(kernel)} with dilation {_fmt(dilation)} is larger than "
                          f"the padded input {axis} {n} + {p}; no output")
        return stride, pads, dilation, auto_pad

    def _maxpool_params(self, node, attrs, shape) -> MaxPool:
        if len(shape) != 3:
            self.fail(f"input has shape {_fmt(shape)}; max-pool needs (C, H, W)")
        if "kernel_shape" not in attrs:
            self.fail("attribute kernel_shape is missing")
        kernel = tuple(attrs["kernel_shape"])
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1], 0):
            self.fail("the Indices output is not supported")
        if attrs.get("storage_order", 0) not in (0,):
            self.fail("storage_order 1 is not supported")
        stride, pads, dilation, auto_pad = self._geometry(node, attrs, _POOL_ATTRS, shape[1:],
                                                          kernel)
        ceil_mode = bool(attrs.get("ceil_mode", 0)) and auto_pad == "NOTSET"
        return MaxPool(kernel, stride, pads, dilation, ceil_mode)

    def _pool_shape(self, pool: MaxPool, shape):
        ho, wo = pool.output_hw(*shape[1:])
        if ho < 1 or wo < 1:
            self.fail(f"max-pool output would be {ho}x{wo}")
        return (shape[0], int(ho), int(wo))

    def _conv_shape(self, node, attrs, shape, weight):
        if weight.ndim != 4:
            self.fail(f"{weight.ndim - 2}-D convolution (weight shape {_fmt(weight.shape)}) is not "
                      f"supported; convcore runs 2-D convolutions")
        if len(shape) != 3:
            self.fail(f"input has shape {_fmt(shape)}; a 2-D convolution needs (C, H, W) "
                      f"(is it flattened?)")
        if attrs.get("group", 1) != 1:
            self.fail(f"group {attrs['group']} is not supported (only group 1)")
        if weight.shape[1] != shape[0]:
            self.fail(f"weight has {weight.shape[1]} input channels but the input has {shape[0]}")
        stride, pads, dilation, _ = self._geometry(node, attrs, _CONV_ATTRS, shape[1:],
                                                   weight.shape[2:])
        out = [weight.shape[0]]
        for n, k, s, p, d in zip(shape[1:], weight.shape[2:], stride,
                                 (pads[0] + pads[2], pads[1] + pads[3]), dilation):
            out.append((n + p - (k - 1) * d - 1) // s + 1)
        return stride, pads, dilation, tuple(int(v) for v in out)

    def _layer_input_shape(self, q: _Q) -> tuple:
        """Shape of the tensor a layer really reads: the producer's output before any flatten."""
        return tuple(self.layers[q.layer].out_shape) if q.layer >= 0 else self.input_shape[1:]

    def _dense_input(self, node, q_shape):
        if len(q_shape) != 1:
            self.fail(f"input has shape {_fmt(q_shape)}; a fully connected layer needs a "
                      f"flattened (N, F) input (add a Flatten)")
        return q_shape[0]

    # --- quantize / dequantize ------------------------------------------------------------
    def _op_QuantizeLinear(self, node, attrs):
        value = self.values[node.input[0]]
        if "block_size" in attrs and attrs["block_size"]:
            self.fail("blocked quantization is not supported")
        if isinstance(value, _Const):  # weights quantized in the graph: fold it
            if value.array.dtype.kind != "f":
                self.fail(f"input '{value.name}' has type {value.array.dtype}")
            scale = self._const(node, 1, "scale", kinds="f")
            zp = self._const(node, 2, "zero point", required=False, kinds="iu")
            dtype = zp.dtype.name if zp is not None else "uint8"
            if dtype not in ("int8", "uint8"):
                self.fail(f"quantization to {dtype} is not supported")
            zp = zp if zp is not None else np.zeros((), np.uint8)
            flat = (lambda a: a.reshape(-1) if a.size > 1 else a.reshape(()))
            try:
                q = quantize(value.array, flat(scale), flat(zp), dtype, axis=attrs.get("axis", 1))
            except ValueError as exc:
                self.fail(f"cannot quantize '{value.name}': {exc}")
            self.values[node.output[0]] = _Const(node.output[0], q)
            return
        scale, zp, dtype = self._act_scale_zp(node, 1, 2, "output")
        if dtype is None:
            out_dtype = attrs.get("output_dtype", 0)
            if out_dtype not in (0,) + tuple(_QTYPES):
                self.fail("output_dtype must be int8 or uint8")
            dtype = _QTYPES.get(out_dtype, "uint8")
        out = node.output[0]
        if isinstance(value, _FloatIn):
            if self.input_quant is not None:
                self.fail(f"the model input '{value.name}' is quantized twice")
            self.input_quant = (scale, zp, dtype)
            self.values[out] = _Q(out, -1, self.input_shape[1:], dtype, scale, zp, (out,))
        elif isinstance(value, _Pending):
            self._finish_pending(node, value, scale, zp, dtype)
        elif isinstance(value, _DQ):
            q = value.q
            if dtype != q.dtype or zp != value.zp or \
                    not np.isclose(scale, value.scale, rtol=SCALE_RTOL, atol=0):
                self.fail(f"requantizes '{node.input[0]}' from scale {value.scale:.9g}, zero point "
                          f"{value.zp} ({q.dtype}) to scale {scale:.9g}, zero point {zp} ({dtype}) "
                          f"without a conv or dense layer (inconsistent requantization)")
            self._set_q(out, q, chain=value.chain + (out,))
        else:
            self.fail(f"input '{node.input[0]}' {self._describe(value)}")

    def _op_DequantizeLinear(self, node, attrs):
        value = self.values[node.input[0]]
        out = node.output[0]
        if attrs.get("block_size", 0):
            self.fail("blocked quantization is not supported")
        if isinstance(value, _Const):
            scale = self._const(node, 1, "scale", kinds="f")
            zp = self._const(node, 2, "zero point", required=False)
            if zp is None:
                zp = np.zeros(1, dtype=value.array.dtype)
            if value.array.dtype.kind not in "iu":
                self.fail(f"initializer '{value.name}' has type {value.array.dtype}")
            axis = attrs.get("axis", 1)
            if scale.size > 1 and not -value.array.ndim <= axis < value.array.ndim:
                self.fail(f"axis {axis} is out of range for '{value.name}'")
            self.values[out] = _DQConst(value.name, value.array, scale.astype(np.float32),
                                        zp, axis)
            return
        if isinstance(value, _Q):
            scale, zp, dtype = self._act_scale_zp(node, 1, 2, "input")
            self._check_q_params(node, value, scale, zp, dtype, "input")
            q = value if value.scale is not None else replace(value, scale=scale, zp=zp)
            self.values[out] = _DQ(q, scale, zp, value.chain + (out,))
            return
        self.fail(f"input '{node.input[0]}' {self._describe(value)}")

    # --- float compute between DequantizeLinear and QuantizeLinear ------------------------
    def _dq_input_and_weights(self, node):
        """The dequantized input and the quantized weights of a float Conv/Gemm/MatMul, checked."""
        x = self._get(node, 0, (_DQ,), "input")
        if x is None:
            self.fail("input is missing")
        w = self._weights(node, 1)
        self._weight_dtype(node, w.q)
        self._check_chain(node, x.q)
        return x, w

    def _op_Conv(self, node, attrs):
        x, w = self._dq_input_and_weights(node)
        stride, pads, dilation, out_shape = self._conv_shape(node, attrs, x.q.shape, w.q)
        self._check_per_axis(node, w, 0, w.q.shape[0], "weight")
        layer = ConvLayer(name=self._name(node), nodes=(self._name(node),),
                          in_shape=tuple(x.q.shape),
                          out_shape=out_shape, in_dtype=x.q.dtype, weight=w.q.copy(),
                          bias=np.zeros(w.q.shape[0], np.int32), stride=stride, pads=pads,
                          dilation=dilation, x_zero_point=x.zp,
                          w_zero_point=self._per_out(w.zp, w.q.shape[0]).astype(np.int32),
                          has_bias=len(node.input) > 2 and bool(node.input[2]))
        bias = self._get(node, 2, (_DQConst, _Const), "bias")
        self.values[node.output[0]] = _Pending(node, layer, x, w, bias,
                                               False, None, (self._name(node),), out_shape)

    def _op_Gemm(self, node, attrs):
        extra = set(attrs) - {"alpha", "beta", "transA", "transB"}
        if extra:
            self.fail(f"attribute {sorted(extra)[0]} is not supported")
        for key, want in (("alpha", 1.0), ("beta", 1.0), ("transA", 0)):
            if attrs.get(key, want) != want:
                self.fail(f"{key} {attrs[key]} is not supported (only {want})")
        trans_b = attrs.get("transB", 0)
        self._dense_pending(node, trans_b)

    def _op_MatMul(self, node, attrs):
        self._dense_pending(node, 0)

    def _dense_pending(self, node, trans_b):
        x, w = self._dq_input_and_weights(node)
        features = self._dense_input(node, x.q.shape)
        if w.q.ndim != 2:
            self.fail(f"weight has shape {_fmt(w.q.shape)}; a fully connected layer needs 2-D")
        out_axis = 0 if trans_b else 1
        weight = w.q if trans_b else w.q.T
        if weight.shape[1] != features:
            self.fail(f"weight {_fmt(w.q.shape)} does not fit {features} input features")
        self._check_per_axis(node, w, out_axis, weight.shape[0], "weight")
        n_out = weight.shape[0]
        layer = DenseLayer(name=self._name(node), nodes=(self._name(node),),
                           in_shape=self._layer_input_shape(x.q),
                           out_shape=(n_out,), in_dtype=x.q.dtype,
                           weight=np.ascontiguousarray(weight), bias=np.zeros(n_out, np.int32),
                           x_zero_point=x.zp,
                           w_zero_point=self._per_out(w.zp, n_out).astype(np.int32),
                           has_bias=len(node.input) > 2 and bool(node.input[2]))
        bias = self._get(node, 2, (_DQConst, _Const), "bias")
        self.values[node.output[0]] = _Pending(node, layer, x, w, bias,
                                               False, None, (self._name(node),), (n_out,))

    def _finish_pending(self, qnode, p: _Pending, y_scale, y_zp, y_dtype):
        layer, node = p.layer, p.node
        n_out = layer.weight.shape[0]
        w_scale = self._per_out(p.w.scale, n_out).astype(np.float32)
        acc_scale = np.float32(p.x.scale) * w_scale  # float32, as onnxruntime computes it
        if p.bias is not None:
            if isinstance(p.bias, _DQConst):
                b = p.bias
                if b.q.dtype != np.int32 or np.any(b.zp != 0):
                    self.fail(f"bias '{b.name}' must be int32 with zero point 0, not {b.q.dtype}",
                              node)
                b_scale = self._per_out(b.scale, n_out).astype(np.float32)
                if not np.allclose(b_scale, acc_scale, rtol=SCALE_RTOL, atol=0):
                    bad = int(np.argmax(np.abs(b_scale - acc_scale) > SCALE_RTOL * acc_scale))
                    self.fail(f"bias scale {b_scale[bad]:.9g} (channel {bad}) is not input scale * "
                              f"weight scale {acc_scale[bad]:.9g}", node)
                bias = b.q.reshape(-1)
            else:
                if p.bias.array.dtype.kind != "f":
                    self.fail(f"bias '{p.bias.name}' has type {p.bias.array.dtype}", node)
                bias = np.rint(p.bias.array.reshape(-1).astype(np.float64) / acc_scale)
                if np.any(bias < ACC_MIN) or np.any(bias > ACC_MAX):
                    self.fail(f"float bias '{p.bias.name}' does not fit int32 accumulator units",
                              node)
            if bias.size != n_out:
                self.fail(f"bias has {bias.size} values for {n_out} outputs", node)
            layer.bias = bias.astype(np.int32)
        self._requant(node, layer, p.x.scale, w_scale, y_scale, y_zp, y_dtype)
        layer.relu = p.relu
        layer.nodes = p.nodes
        if p.pool is not None:
            layer.pool = p.pool
        layer.out_shape = tuple(p.shape)
        self.layers.append(layer)
        out = qnode.output[0]
        layer.tensor = out
        self.values[out] = _Q(out, len(self.layers) - 1, tuple(p.shape), y_dtype, y_scale, y_zp,
                              (out,))

    def _requant(self, node, layer, x_scale, w_scale, y_scale, y_zp, y_dtype):
        try:
            layer.multiplier, layer.shift = (
                np.asarray(v, np.int64).reshape(-1).copy()
                for v in quantize_multiplier(real_scale(x_scale, w_scale, y_scale)))
        except ValueError as exc:
            self.fail(f"requantization scale input * weight / output cannot be expressed: {exc}",
                      node)
        layer.y_zero_point = int(y_zp)
        layer.out_dtype = y_dtype

    # --- operator form --------------------------------------------------------------------
    def _q_input(self, node, index=0):
        x = self._get(node, index, (_Q,), "input")
        if x is None:
            self.fail("input is missing")
        self._check_chain(node, x)
        return x

    def _int_weights(self, node, index, what="weight"):
        w = self._const(node, index, what, kinds="iu")
        self._weight_dtype(node, w, what)
        return w

    def _per_channel_param(self, node, index, n, what, kinds, default=None):
        arr = self._const(node, index, what, required=default is None, kinds=kinds)
        if arr is None:
            arr = np.asarray([default])
        if arr.size not in (1, n):
            self.fail(f"{what} has {arr.size} values for {n} output channels")
        return self._per_out(arr, n)

    def _x_zero_point(self, node, x: _Q, index):
        zp = self._const(node, index, "input zero point", required=False, kinds="iu")
        if zp is None:
            return 0
        if zp.size != 1:
            self.fail("input zero point must be per tensor")
        if zp.dtype.name != x.dtype:
            self.fail(f"input zero point is {zp.dtype} but '{x.name}' is {x.dtype}")
        return int(_scalar(zp))

    def _op_QLinearConv(self, node, attrs):
        x = self._q_input(node)
        x_scale, x_zp, x_dtype = self._act_scale_zp(node, 1, 2, "input")
        self._check_q_params(node, x, x_scale, x_zp, x_dtype, "input")
        w = self._int_weights(node, 3)
        stride, pads, dilation, out_shape = self._conv_shape(node, attrs, x.shape, w)
        n_out = w.shape[0]
        w_scale = self._per_channel_param(node, 4, n_out, "weight scale", "f").astype(np.float32)
        w_zp = self._per_channel_param(node, 5, n_out, "weight zero point", "iu", default=0)
        y_scale, y_zp, y_dtype = self._act_scale_zp(node, 6, 7, "output")
        y_dtype = y_dtype or "uint8"
        bias = self._const(node, 8, "bias", required=False, kinds="i")
        if bias is not None and (bias.dtype != np.int32 or bias.size != n_out):
            self.fail(f"bias must be {n_out} int32 values, not {bias.size} {bias.dtype}")
        layer = ConvLayer(name=self._name(node), nodes=(self._name(node),),
                          in_shape=tuple(x.shape),
                          out_shape=out_shape, in_dtype=x.dtype, weight=w.copy(),
                          bias=(bias.reshape(-1) if bias is not None
                                else np.zeros(n_out)).astype(np.int32),
                          stride=stride, pads=pads, dilation=dilation, x_zero_point=x_zp,
                          w_zero_point=w_zp.astype(np.int32), has_bias=bias is not None)
        self._requant(node, layer, x_scale, w_scale, y_scale, y_zp, y_dtype)
        self._append_q(node, layer, y_scale, y_zp, y_dtype)

    def _append_q(self, node, layer, y_scale, y_zp, y_dtype):
        self.layers.append(layer)
        out = node.output[0]
        layer.tensor = out
        self.values[out] = _Q(out, len(self.layers) - 1, tuple(layer.out_shape), y_dtype,
                              y_scale, y_zp, (out,))

    def _append_raw(self, node, layer):
        self.layers.append(layer)
        out = node.output[0]
        layer.tensor = out
        self.values[out] = _Raw(out, len(self.layers) - 1, tuple(layer.out_shape))

    def _op_ConvInteger(self, node, attrs):
        x = self._q_input(node)
        w = self._int_weights(node, 1)
        stride, pads, dilation, out_shape = self._conv_shape(node, attrs, x.shape, w)
        x_zp = self._x_zero_point(node, x, 2)
        w_zp = self._per_channel_param(node, 3, w.shape[0], "weight zero point", "iu", default=0)
        layer = ConvLayer(name=self._name(node), nodes=(self._name(node),),
                          in_shape=tuple(x.shape),
                          out_shape=out_shape, in_dtype=x.dtype, weight=w.copy(),
                          bias=np.zeros(w.shape[0], np.int32), stride=stride, pads=pads,
                          dilation=dilation, x_zero_point=x_zp,
                          w_zero_point=w_zp.astype(np.int32), has_bias=False)
        self._append_raw(node, layer)

    def _matmul_weights(self, node, x, index):
        features = self._dense_input(node, x.shape)
        b = self._int_weights(node, index)
        if b.ndim != 2 or b.shape[0] != features:
            self.fail(f"weight {_fmt(b.shape)} does not fit {features} input features")
        return np.ascontiguousarray(b.T)

    def _op_QLinearMatMul(self, node, attrs):
        x = self._q_input(node)
        x_scale, x_zp, x_dtype = self._act_scale_zp(node, 1, 2, "input")
        self._check_q_params(node, x, x_scale, x_zp, x_dtype, "input")
        w = self._matmul_weights(node, x, 3)
        n_out = w.shape[0]
        w_scale = self._per_channel_param(node, 4, n_out, "weight scale", "f").astype(np.float32)
        w_zp = self._per_channel_param(node, 5, n_out, "weight zero point", "iu", default=0)
        y_scale, y_zp, y_dtype = self._act_scale_zp(node, 6, 7, "output")
        layer = DenseLayer(name=self._name(node), nodes=(self._name(node),),
                           in_shape=self._layer_input_shape(x),
                           out_shape=(n_out,), in_dtype=x.dtype, weight=w,
                           bias=np.zeros(n_out, np.int32), x_zero_point=x_zp,
                           w_zero_point=w_zp.astype(np.int32), has_bias=False)
        self._requant(node, layer, x_scale, w_scale, y_scale, y_zp, y_dtype or "uint8")
        self._append_q(node, layer, y_scale, y_zp, y_dtype or "uint8")

    def _op_MatMulInteger(self, node, attrs):
        x = self._q_input(node)
        w = self._matmul_weights(node, x, 1)
        n_out = w.shape[0]
        x_zp = self._x_zero_point(node, x, 2)
        w_zp = self._per_channel_param(node, 3, n_out, "weight zero point", "iu", default=0)
        layer = DenseLayer(name=self._name(node), nodes=(self._name(node),),
                           in_shape=self._layer_input_shape(x),
                           out_shape=(n_out,), in_dtype=x.dtype, weight=w,
                           bias=np.zeros(n_out, np.int32), x_zero_point=x_zp,
                           w_zero_point=w_zp.astype(np.int32), has_bias=False)
        self._append_raw(node, layer)

    # --- ops on 8-bit (or their float views) ----------------------------------------------
    def _fusable(self, value, chain) -> bool:
        """True when ``value``'s producer is the last layer and nothing else reads it."""
        return (value.layer == len(self.layers) - 1 and value.layer >= 0
                and self._exclusive(chain))

    def _op_MaxPool(self, node, attrs):
        value = self.values[node.input[0]]
        out = node.output[0]
        if isinstance(value, _Pending):
            if value.pool is not None:
                self.fail("a second max-pool after one conv before its QuantizeLinear is not "
                          "supported")
            if isinstance(value.layer, DenseLayer):
                self.fail("max-pool after a fully connected layer is not supported")
            pool = self._maxpool_params(node, attrs, value.shape)
            shape = self._pool_shape(pool, value.shape)
            self.values[out] = replace(value, pool=pool, nodes=value.nodes + (self._name(node),),
                                       shape=shape)
            return
        if not isinstance(value, (_Q, _DQ)):
            self.fail(f"input '{node.input[0]}' {self._describe(value)}")
        q = value.q if isinstance(value, _DQ) else value
        chain = value.chain
        self._check_chain(node, q)
        pool = self._maxpool_params(node, attrs, q.shape)
        shape = self._pool_shape(pool, q.shape)
        last = self.layers[-1] if self.layers else None
        if (self._fusable(q, chain) and isinstance(last, ConvLayer) and not last.raw
                and last.pool is None):
            last.pool = pool
            last.out_shape = shape
            last.nodes = last.nodes + (self._name(node),)
            new_q = self._set_q(out, q, register=isinstance(value, _Q), shape=shape, chain=(out,))
        else:
            layer = PoolLayer(name=self._name(node), nodes=(self._name(node),),
                              in_shape=tuple(q.shape),
                              out_shape=shape, in_dtype=q.dtype, pool=pool,
                              tensor=out if isinstance(value, _Q) else "")
            self.layers.append(layer)
            new_q = replace(q, name=out, layer=len(self.layers) - 1, shape=shape, chain=(out,))
            self.values[out] = new_q
        if isinstance(value, _DQ):
            self.values[out] = _DQ(new_q, value.scale, value.zp, (out,))

    def _op_Relu(self, node, attrs):
        value = self.values[node.input[0]]
        out = node.output[0]
        if isinstance(value, _Pending):
            self.values[out] = replace(value, relu=True, nodes=value.nodes + (self._name(node),))
            return
        if not isinstance(value, (_Q, _DQ)):
            self.fail(f"input '{node.input[0]}' {self._describe(value)}")
        q = value.q if isinstance(value, _DQ) else value
        last = self.layers[-1] if self.layers else None
        if not (self._fusable(q, value.chain) and isinstance(last, (ConvLayer, DenseLayer))
                and not last.raw):
            self.fail(f"ReLU must directly follow a requantized conv or dense layer whose output "
                      f"nothing else reads ('{node.input[0]}')")
        if isinstance(value, _Q) and last.y_zero_point != 0:
            self.fail(f"ReLU on the 8-bit tensor '{node.input[0]}' with zero point "
                      f"{last.y_zero_point} clips at 0, not at the real zero; only zero point 0 "
                      f"is supported")
        last.relu = True
        last.nodes = last.nodes + (self._name(node),)
        new_q = self._set_q(out, q, register=isinstance(value, _Q), chain=(out,))
        if isinstance(value, _DQ):
            self.values[out] = _DQ(new_q, value.scale, value.zp, (out,))

    def _reshape_to(self, node, value, target):
        """Apply a flatten / no-op reshape (per-sample ``target``) to a Q, DQ or Raw value."""
        out = node.output[0]
        if isinstance(value, _Pending) or not isinstance(value, (_Q, _DQ, _Raw)):
            self.fail(f"input '{node.input[0]}' {self._describe(value)}")
        if isinstance(value, _Raw):
            self.values[out] = replace(value, name=out, shape=target)
        elif isinstance(value, _DQ):
            self.values[out] = _DQ(replace(value.q, name=out, shape=target), value.scale,
                                   value.zp, value.chain + (out,))
        else:
            self.values[out] = replace(value, name=out, shape=target, chain=value.chain + (out,))

    def _value_shape(self, node, value):
        if isinstance(value, _DQ):
            return value.q.shape
        if isinstance(value, (_Q, _Raw)):
            return value.shape
        self.fail(f"input '{node.input[0]}' {self._describe(value)}")

    def _op_Flatten(self, node, attrs):
        value = self.values[node.input[0]]
        shape = self._value_shape(node, value)
        axis = attrs.get("axis", 1)
        if axis % (len(shape) + 1) != 1:
            self.fail(f"axis {axis} is not supported; only Flatten(axis=1), which keeps the batch")
        self._reshape_to(node, value, (int(np.prod(shape)),))

    def _op_Reshape(self, node, attrs):
        value = self.values[node.input[0]]
        shape = self._value_shape(node, value)
        target = self._const(node, 1, "shape", kinds="i")
        if attrs.get("allowzero", 0):
            self.fail("allowzero 1 is not supported")
        target = [int(v) for v in target.reshape(-1)]
        features = int(np.prod(shape))
        batch = self.input_shape[0]
        per_sample = None
        if len(target) == 2 and target[0] in (0, -1, 1 if batch in (None, 1) else batch) \
                and target[1] in (-1, features) and not (target[0] == -1 and target[1] == -1):
            per_sample = (features,)
        elif len(target) == len(shape) + 1 and target[0] in (0, -1, batch) and \
                [t if t != 0 else s for t, s in zip(target[1:], shape)] == list(shape):
            per_sample = tuple(shape)
        if per_sample is None:
            self.fail(f"reshape of {_fmt(('N',) + tuple(shape))} to {target} is not supported; "
                      f"only a flatten to (N, {features}) or a no-op")
        self._reshape_to(node, value, per_sample)

    def _op_Identity(self, node, attrs):
        value = self.values[node.input[0]]
        if hasattr(value, "chain"):
            value = replace(value, chain=value.chain + (node.output[0],))
        self.values[node.output[0]] = value

    def _op_Constant(self, node, attrs):
        if "value" not in attrs:
            self.fail(f"only the 'value' attribute is supported, not {sorted(attrs)}")
        self.values[node.output[0]] = _Const(node.output[0], numpy_helper.to_array(attrs["value"]))
