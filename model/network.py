"""A quantized network as one list of plain-data layers, and its golden execution.

The ONNX importer (:mod:`sim.onnx_import`) turns a model into a :class:`Network`; the model
backend runs it with :func:`run_layer`, the hardware backends run the same layers on the
simulated engine. Every field is a Python int, a tuple of ints, a dtype name or a NumPy array,
so a backend needs nothing but this module to configure the hardware for a layer.

Arrays are NCHW with a leading batch axis, weights OIHW (conv) or (out, in) (dense). Shapes
stored in the layers (``in_shape``, ``out_shape``) are per sample: ``(C, H, W)`` or ``(F,)``.

Members
-------
MaxPool
    Max-pool geometry, alone (:class:`PoolLayer`) or fused after a conv.
ConvLayer
    2-D convolution with int32 accumulation, then either requantization (and optional ReLU and
    max-pool) or the raw int32 accumulators (ONNX ConvInteger).
PoolLayer
    Max-pooling of an 8-bit feature map.
DenseLayer
    Fully connected layer on the NCHW-flattened input, requantized or raw int32.
Network
    Input quantization, the layers, output shape and dequantization.
"""

from dataclasses import dataclass

import numpy as np

from model.conv import conv2d, conv_output_size
from model.dense import dense
from model.pool import maxpool2d
from model.quant import dequantize, quantize, requantize

__all__ = [
    "MaxPool", "ConvLayer", "PoolLayer", "DenseLayer", "Layer", "Network", "InputError",
    "run_layer", "run_network", "check_input", "quantize_input", "finish_output", "layer_macs",
    "layer_params",
    "layer_op",
]

#: Names of the 8-bit activation types, and of the raw accumulator type.
QUANT_DTYPES = ("int8", "uint8")
RAW_DTYPE = "int32"


class InputError(ValueError):
    """An input array does not match what the network expects (shape or dtype)."""


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair, not {value}")
    return value


def _check_pads(pads) -> tuple[int, int, int, int]:
    pads = tuple(int(p) for p in pads)
    if len(pads) != 4 or min(pads) < 0:
        raise ValueError(f"pads must be four non-negative ints (top, left, bottom, right), "
                         f"not {pads}")
    return pads


def _check_weighted(layer, weight_ndim: int) -> None:
    """Normalize and validate the arrays of a conv or dense layer (messages show bad values)."""
    w = np.asarray(layer.weight)
    if w.ndim != weight_ndim or w.dtype.name not in QUANT_DTYPES:
        raise ValueError(f"layer '{layer.name}': weight must be a {weight_ndim}-D int8 or uint8 "
                         f"array, not {w.dtype} of shape {w.shape}")
    n_out = w.shape[0]
    if layer.in_dtype not in QUANT_DTYPES:
        raise ValueError(f"layer '{layer.name}': in_dtype must be int8 or uint8, "
                         f"not {layer.in_dtype!r}")
    layer.bias = np.asarray(layer.bias if layer.bias is not None else np.zeros(n_out), np.int32)
    if layer.w_zero_point is None:
        layer.w_zero_point = np.zeros(n_out, np.int32)
    layer.w_zero_point = np.broadcast_to(np.asarray(layer.w_zero_point, np.int32).reshape(-1),
                                         (n_out,)).copy()
    for name in ("bias", "multiplier", "shift"):
        value = getattr(layer, name)
        if value is not None and np.shape(value) != (n_out,):
            raise ValueError(f"layer '{layer.name}': {name} must have shape ({n_out},), "
                             f"not {np.shape(value)}")
    if (layer.multiplier is None) != (layer.shift is None):
        raise ValueError(f"layer '{layer.name}': multiplier and shift must both be given "
                         f"(requantized) or both be None (raw int32)")
    want = RAW_DTYPE if layer.multiplier is None else QUANT_DTYPES
    if layer.out_dtype not in want:
        raise ValueError(f"layer '{layer.name}': out_dtype {layer.out_dtype!r} does not fit "
                         f"{'raw' if layer.multiplier is None else 'requantized'} output")


@dataclass(eq=False)
class MaxPool:
    """Max-pool geometry with ONNX semantics (padding never wins the max).

    Members
    -------
    kernel, stride, dilation : (int, int)
        Height and width.
    pads : (int, int, int, int)
        ONNX order: top, left, bottom, right (auto_pad is already resolved).
    ceil_mode : bool
        Output size rounded up instead of down.
    """
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False

    def __post_init__(self):
        self.kernel = _pair(self.kernel, "kernel")
        self.stride = _pair(self.stride, "stride")
        self.dilation = _pair(self.dilation, "dilation")
        self.pads = _check_pads(self.pads)
        self.ceil_mode = bool(self.ceil_mode)
        for name in ("kernel", "stride", "dilation"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"max-pool {name} must be >= 1, not {getattr(self, name)}")

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        """Output height and width for an ``h`` x ``w`` input (ONNX floor or ceil semantics)."""
        t, l, b, r = self.pads
        return tuple(conv_output_size(n, k, s, p, d, strict=False, ceil_mode=self.ceil_mode)
                     for n, k, s, p, d in zip((h, w), self.kernel, self.stride, ((t, b), (l, r)),
                                              self.dilation))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return maxpool2d(x, self.kernel, self.stride, self.pads, self.dilation, self.ceil_mode)


@dataclass(eq=False)
class ConvLayer:
    """2-D convolution, then requantization (+ ReLU, + max-pool) or raw int32 output.

    Members
    -------
    name : str
        ONNX name of the conv node (used in messages and reports).
    nodes : tuple of str
        Every ONNX compute node folded into this layer (conv, Relu, MaxPool).
    in_shape, out_shape : (C, H, W)
        Per-sample input shape and final output shape (after the fused pool, if any).
    in_dtype : "int8" or "uint8"
    weight : ndarray, int8 or uint8, (O, I, KH, KW)
    bias : ndarray, int32, (O,)
        In accumulator units (scale x_scale * w_scale); None gives zeros.
    stride, dilation : (int, int)
    pads : (int, int, int, int)
        top, left, bottom, right; padded positions hold ``x_zero_point``.
    x_zero_point : int
    w_zero_point : ndarray, int32, (O,)
        Per output channel; a scalar is broadcast, None gives zeros.
    multiplier, shift : ndarray, int64, (O,), or None
        Per-channel requantization (:func:`model.quant.quantize_multiplier` of
        x_scale * w_scale / y_scale); None for raw int32 output (ConvInteger).
    y_zero_point : int
    out_dtype : "int8", "uint8" or "int32" (raw)
    relu : bool
        Clip at ``y_zero_point`` (real zero).
    pool : MaxPool or None
        Max-pool fused after requantization.
    tensor : str
        ONNX name of the tensor holding this layer's output (for per-layer comparisons).
    has_bias : bool
        False when the ONNX op has no bias (ConvInteger, ...); ``bias`` is then zeros.
    """
    name: str
    nodes: tuple[str, ...]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    in_dtype: str
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    x_zero_point: int = 0
    w_zero_point: np.ndarray | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    y_zero_point: int = 0
    out_dtype: str = RAW_DTYPE
    relu: bool = False
    pool: MaxPool | None = None
    tensor: str = ""
    has_bias: bool = True

    def __post_init__(self):
        _check_weighted(self, 4)
        self.stride = _pair(self.stride, "stride")
        self.dilation = _pair(self.dilation, "dilation")
        self.pads = _check_pads(self.pads)
        if min(self.stride + self.dilation) < 1:
            raise ValueError(f"layer '{self.name}': stride {self.stride} and dilation "
                             f"{self.dilation} must be >= 1")
        if self.pool is not None and self.multiplier is None:
            raise ValueError(f"layer '{self.name}': a fused max-pool needs requantized output")

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(int(k) for k in self.weight.shape[2:])

    @property
    def raw(self) -> bool:
        """True when the layer outputs int32 accumulators (no requantization)."""
        return self.multiplier is None

    @property
    def conv_shape(self) -> tuple[int, int, int]:
        """Per-sample shape after the convolution, before the fused pool."""
        c, h, w = self.in_shape
        t, l, b, r = self.pads
        ho, wo = (conv_output_size(n, k, s, p, d, strict=False)
                  for n, k, s, p, d in zip((h, w), self.kernel, self.stride, ((t, b), (l, r)),
                                           self.dilation))
        return (int(self.weight.shape[0]), ho, wo)


@dataclass(eq=False)
class PoolLayer:
    """Max-pooling of an 8-bit feature map (an ONNX MaxPool not fused into a conv).

    Members
    -------
    name : str
    nodes : tuple of str
    in_shape, out_shape : (C, H, W)
    in_dtype : "int8" or "uint8"
        Also the output type.
    pool : MaxPool
    tensor : str
    """
    name: str
    nodes: tuple[str, ...]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    in_dtype: str
    pool: MaxPool
    tensor: str = ""

    @property
    def out_dtype(self) -> str:
        return self.in_dtype


@dataclass(eq=False)
class DenseLayer:
    """Fully connected layer on the NCHW-flattened input (Gemm, MatMul, QLinearMatMul, ...).

    Members
    -------
    name, nodes, in_dtype, x_zero_point, w_zero_point, multiplier, shift, y_zero_point,
    out_dtype, relu, tensor
        As in :class:`ConvLayer`.
    in_shape : tuple of int
        Per-sample input shape before flattening ((C, H, W) or (F,)).
    out_shape : (O,)
    weight : ndarray, int8 or uint8, (O, F)
        Like Gemm with transB=1 or PyTorch's Linear.
    bias : ndarray, int32, (O,)
    has_bias : bool
    """
    name: str
    nodes: tuple[str, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int]
    in_dtype: str
    weight: np.ndarray
    bias: np.ndarray
    x_zero_point: int = 0
    w_zero_point: np.ndarray | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    y_zero_point: int = 0
    out_dtype: str = RAW_DTYPE
    relu: bool = False
    tensor: str = ""
    has_bias: bool = True

    def __post_init__(self):
        _check_weighted(self, 2)

    @property
    def raw(self) -> bool:
        return self.multiplier is None


Layer = ConvLayer | PoolLayer | DenseLayer


@dataclass(eq=False)
class Network:
    """A quantized network: input quantization, a chain of layers, output dequantization.

    Members
    -------
    layers : list of Layer
        Executed in order, each consuming the previous one's output.
    input_name : str
    input_shape : tuple of (int or None)
        Full ONNX input shape; None for a symbolic dimension (usually the batch).
    input_dtype : str
        Type of the ONNX input: "float32" for QDQ models, else "int8" / "uint8".
    input_scale : float or None
        QuantizeLinear scale applied to a float input; None when the input is already 8-bit.
    input_zero_point : int
    input_qdtype : "int8" or "uint8"
        Type of the first layer's input.
    output_name : str
    output_shape : tuple of (int or None)
        Full ONNX output shape (batch first); the last layer's output is reshaped to it.
    output_scale : float or None
        DequantizeLinear scale of a float output; None when the output stays integer.
    output_zero_point : int
    output_dtype : str
        Type of the ONNX output ("float32", "int8", "uint8" or "int32").
    source : str
        Where the network came from (model path), for messages.
    """
    layers: list
    input_name: str
    input_shape: tuple
    input_dtype: str
    input_scale: float | None
    input_zero_point: int
    input_qdtype: str
    output_name: str
    output_shape: tuple
    output_scale: float | None
    output_zero_point: int
    output_dtype: str
    source: str = ""


# --- execution ----------------------------------------------------------------------------

def run_layer(layer: Layer, x: np.ndarray, psum: np.ndarray | None = None) -> np.ndarray:
    """Golden output of one layer for a batched input ``x`` (N, *in_shape) of ``in_dtype``.

    ``psum`` (ConvLayer only): int32 partial sums of the conv output, (N, Cout, OH, OW), added
    to the accumulators (after the bias, before requantization), wrapping like the engine's
    32-bit adders: one pass of a layer split into input-channel groups or sub-kernels."""
    x = np.asarray(x)
    if x.dtype != np.dtype(layer.in_dtype) or tuple(x.shape[1:]) != tuple(layer.in_shape):
        want = ", ".join(map(str, layer.in_shape))
        raise InputError(f"layer '{layer.name}': expected (N, {want}) {layer.in_dtype}, "
                         f"got {x.shape} {x.dtype}")
    if isinstance(layer, PoolLayer):
        return layer.pool.apply(x)
    if isinstance(layer, ConvLayer):
        acc = conv2d(x, layer.weight, layer.bias, stride=layer.stride, padding=layer.pads,
                     dilation=layer.dilation, x_zero_point=layer.x_zero_point,
                     w_zero_point=layer.w_zero_point)
    elif isinstance(layer, DenseLayer):
        acc = dense(x.reshape(x.shape[0], -1), layer.weight, layer.bias,
                    x_zero_point=layer.x_zero_point, w_zero_point=layer.w_zero_point)
    else:
        raise TypeError(f"not a layer: {layer!r}")
    if psum is not None:
        psum = np.asarray(psum)
        if not isinstance(layer, ConvLayer) or psum.dtype != np.int32 \
                or psum.shape != acc.shape:
            raise InputError(f"layer '{layer.name}': partial sums must be int32 of shape "
                             f"{acc.shape}, not {psum.dtype} {psum.shape}")
        acc = (acc.astype(np.int64) + psum).astype(np.uint32).view(np.int32)
    if layer.raw:
        return acc
    y = requantize(acc, layer.multiplier, layer.shift, layer.y_zero_point, layer.out_dtype,
                   relu=layer.relu)
    if isinstance(layer, ConvLayer) and layer.pool is not None:
        y = layer.pool.apply(y)
    return y


def _shape_text(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def check_input(net: Network, x: np.ndarray) -> None:
    """InputError naming the input when ``x`` does not have the model's shape and dtype."""
    x = np.asarray(x)
    want = net.input_shape
    ok_shape = len(x.shape) == len(want) and all(w is None or w == g for w, g in zip(want, x.shape))
    if not ok_shape or x.dtype != np.dtype(net.input_dtype):
        raise InputError(f"input '{net.input_name}': expected shape {_shape_text(want)} "
                         f"{net.input_dtype}, got {tuple(x.shape)} {x.dtype}")


def quantize_input(net: Network, x: np.ndarray) -> np.ndarray:
    """Checked network input, quantized with the model's input scale when it is float."""
    check_input(net, x)
    x = np.asarray(x)
    if net.input_scale is not None:
        x = quantize(x, np.float32(net.input_scale), net.input_zero_point, net.input_qdtype)
    return x.reshape(x.shape[0], *net.layers[0].in_shape)


def finish_output(net: Network, y: np.ndarray) -> np.ndarray:
    """Last layer's output reshaped to the ONNX output shape and dequantized if the model does."""
    y = y.reshape(y.shape[0], *net.output_shape[1:])
    if net.output_scale is not None:
        y = dequantize(y, np.float32(net.output_scale), net.output_zero_point)
    return y


def run_network(net: Network, x: np.ndarray, backend=None, on_layer=None) -> np.ndarray:
    """Run ``net`` on ``x``; the result has the dtype and shape onnxruntime gives.

    Parameters
    ----------
    backend : callable ``(layer, x) -> y`` or None
        Executes one layer; None uses the golden :func:`run_layer`.
    on_layer : callable ``(index, layer, x, y)`` or None
        Called after each layer (reports, per-layer checks).
    """
    run = run_layer if backend is None else backend
    y = quantize_input(net, x)
    for index, layer in enumerate(net.layers):
        x_layer, y = y, run(layer, y)
        if on_layer is not None:
            on_layer(index, layer, x_layer, y)
    return finish_output(net, y)


# --- figures for plans and reports --------------------------------------------------------

def layer_op(layer: Layer) -> str:
    """Short description of a layer's operation: "conv", "conv+relu+maxpool", "maxpool", ..."""
    if isinstance(layer, PoolLayer):
        return "maxpool"
    op = "conv" if isinstance(layer, ConvLayer) else "dense"
    if layer.raw:
        return op + "(int32)"
    if layer.relu:
        op += "+relu"
    if isinstance(layer, ConvLayer) and layer.pool is not None:
        op += "+maxpool"
    return op


def layer_macs(layer: Layer) -> int:
    """Multiply-accumulates per sample (0 for pooling)."""
    if isinstance(layer, ConvLayer):
        o, ho, wo = layer.conv_shape
        return int(o * ho * wo * np.prod(layer.weight.shape[1:]))
    if isinstance(layer, DenseLayer):
        return int(layer.weight.size)
    return 0


def layer_params(layer: Layer) -> int:
    """Parameters including the bias (weights + one bias per output)."""
    if isinstance(layer, PoolLayer):
        return 0
    return int(layer.weight.size + (layer.weight.shape[0] if layer.has_bias else 0))
