"""The oracles convcore is checked against, chosen so that no verdict depends on the CPU.

onnxruntime's default uint8 x int8 kernels on x86 CPUs without VNNI (AVX2 alone, AVX-512
without VNNI) multiply with VPMADDUBSW, whose 16-bit pair sums saturate: the same model gives
other answers there than on a CPU with VNNI or AMX. So:

* The oracle for every exactness claim is the ONNX formula itself, evaluated by ONNX's own
  reference evaluator (:func:`run_reference`): integer sums for ConvInteger, MatMulInteger,
  QLinearConv and QLinearMatMul, and for QDQ models the float Conv/Gemm/MatMul between
  DequantizeLinear and QuantizeLinear in float64 (every dequantized value exact, products and
  sums rounded at 2**-53 of their size, far below a quantization step). convcore stays within
  one step of it: it rounds half up where ONNX rounds half to even, and requantizes with the
  float32 scale product (``x_scale * w_scale / y_scale``) that onnxruntime uses.
* onnxruntime is a second oracle only with its uint8 x int8 products made exact on every x86
  CPU (:func:`onnxruntime_session`): constant int8 weights of operator-form nodes are given to
  it as uint8 (:func:`uint8_weights`), and ``session.x64quantprecision = 1`` makes it do the
  same for the nodes it fuses from QDQ models; its uint8 x uint8 kernels are exact. Measured
  under QEMU's AVX2-only Haswell CPU model: uint8 x int8 QLinearConv, QLinearMatMul and
  MatMulInteger differ from the exact result by up to 79 output steps (and 681,134 in an int32
  sum) in onnxruntime's default session, not at all in this one; int8 x int8 and uint8 x uint8
  are exact in both.

Members
-------
run_reference, reference_evaluator
    The model's output and chosen intermediate tensors from the reference evaluator; the
    evaluator itself.
onnxruntime_session, run_onnxruntime, uint8_weights
    An onnxruntime session with exact int8 kernels on every CPU; its outputs; the weight
    rewrite it relies on.
steps, agreement
    How two outputs compare: differences in quantization steps; share of identical values and
    the largest difference.
compare_with_oracles, format_agreement
    A model's output against each oracle, and one report line per oracle.
cpu_int8_note
    One line saying what onnxruntime's default int8 kernels do on this CPU.
"""

import platform
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

__all__ = ["run_reference", "reference_evaluator", "onnxruntime_session", "run_onnxruntime",
           "uint8_weights", "steps", "agreement",
           "compare_with_oracles", "format_agreement", "cpu_int8_note", "ORACLES",
           "ORT_EXACT_CONFIG", "REFERENCE_NAME", "ORT_NAME"]

#: onnxruntime session configuration that makes its int8 GEMMs exact on x86 CPUs without
#: VNNI (uint8 x int8 products summed in 32 bits instead of saturating 16-bit pairs).
ORT_EXACT_CONFIG = {"session.x64quantprecision": "1"}
#: How reports name the oracles.
REFERENCE_NAME = "ONNX reference (onnx.reference, float64)"
ORT_NAME = "onnxruntime (exact int8 sums)"
#: CPU flags with which onnxruntime's default uint8 x int8 kernels do not saturate.
_EXACT_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _load(model) -> onnx.ModelProto:
    return onnx.load(str(model)) if isinstance(model, (str, Path)) else model


def _with_outputs(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs the tensors ``names``."""
    names = [n for n in names if n not in {o.name for o in model.graph.output}]
    if not names:
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
    return model


def _input_name(model: onnx.ModelProto) -> str:
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits][0]


class DequantizeLinear(OpRun):
    """DequantizeLinear with a float64 result: ``(x - zero_point) * scale`` is exact there for
    8-bit data (a float32 scale times a 9-bit integer) and rounded at 2**-53 for int32 biases,
    so the float ops after it work on the dequantized values themselves."""

    def _run(self, x, x_scale, x_zero_point=None, axis=None, block_size=None,
             output_dtype=None):
        axis = 1 if axis is None else axis
        if block_size:
            raise NotImplementedError("blocked DequantizeLinear")
        shape = [1] * x.ndim
        scale = np.asarray(x_scale, np.float64)
        if scale.ndim == 1 and x.ndim:
            shape[axis % x.ndim] = scale.size
            scale = scale.reshape(shape)
        value = x.astype(np.float64)
        if x_zero_point is not None:
            zero = np.asarray(x_zero_point, np.float64)
            value = value - (zero.reshape(shape) if zero.ndim == 1 and x.ndim else zero)
        return (value * scale,)


class MaxPool(OpRun):
    """MaxPool as the ONNX specification defines it, for 2-D maps of any dtype.

    onnx.reference's own MaxPool cannot pad integer maps (it pads with NaN), reads 2-D pads in
    the wrong order on some paths, keeps a ``ceil_mode`` window that starts in the end padding,
    which the specification drops, and rounds ``VALID`` up with ``ceil_mode``, where the
    specification's ``ceil((N - F + 1) / S)`` does not. Padding never wins the maximum; a
    window with no input in it is a ValueError (ONNX gives it no value).
    """

    def _run(self, x, auto_pad=None, ceil_mode=None, dilations=None, kernel_shape=None,
             pads=None, storage_order=None, strides=None):
        if x.ndim != 4:
            raise NotImplementedError(f"MaxPool over {x.ndim - 2} axes")
        kernel = list(kernel_shape or self.kernel_shape)
        strides = list(strides or self.strides or [1, 1])
        dilations = list(dilations or self.dilations or [1, 1])
        auto_pad = auto_pad or self.auto_pad or "NOTSET"
        ceil_mode = bool(ceil_mode if ceil_mode is not None else self.ceil_mode)
        pads = list(pads or self.pads or [0, 0, 0, 0])
        sizes = []
        padded = x.astype(np.float64)
        inside = np.ones(x.shape, bool)        # where the padded map holds input
        for axis in range(2):
            n, k, s, d = x.shape[2 + axis], kernel[axis], strides[axis], dilations[axis]
            keff = d * (k - 1) + 1
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                out = -(-n // s)
                total = max(0, (out - 1) * s + keff - n)
                begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
                end = total - begin
            elif auto_pad == "VALID":
                begin = end = 0
                out = -(-(n - keff + 1) // s)
            else:
                begin, end = pads[axis], pads[2 + axis]
                span = n + begin + end - keff
                out = (-(-span // s) if ceil_mode else span // s) + 1
                if ceil_mode and (out - 1) * s >= n + begin:
                    out -= 1    # the last window would start in the end padding
            extra = max(0, (out - 1) * s + keff - (n + begin + end))
            width = [(0, 0)] * 4
            width[2 + axis] = (begin, end + extra)
            padded = np.pad(padded, width, constant_values=-np.inf)
            inside = np.pad(inside, width, constant_values=False)
            sizes.append(out)
        (oh, ow), (sh, sw), (dh, dw) = sizes, strides, dilations
        y = np.full((*x.shape[:2], oh, ow), -np.inf)
        covered = np.zeros(y.shape, bool)
        for ky in range(kernel[0]):
            for kx in range(kernel[1]):
                tap = (slice(None), slice(None), slice(ky * dh, ky * dh + (oh - 1) * sh + 1, sh),
                       slice(kx * dw, kx * dw + (ow - 1) * sw + 1, sw))
                y = np.maximum(y, padded[tap])
                covered |= inside[tap]
        if not covered.all():
            raise ValueError("MaxPool: a window covers no input, only padding")
        return (y.astype(x.dtype),)


def reference_evaluator(model: onnx.ModelProto) -> ReferenceEvaluator:
    """:class:`onnx.reference.ReferenceEvaluator` for ``model`` with this module's float64
    DequantizeLinear and its MaxPool. Float32 constants that meet the float64 values (a float
    bias, an Add's operand) become float64 too; Q/DQ scales stay as they are."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    scales = {name for node in model.graph.node
              if node.op_type in ("QuantizeLinear", "DequantizeLinear") for name in node.input}
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and init.name not in scales:
            value = onnx.numpy_helper.to_array(init).astype(np.float64)
            init.CopyFrom(onnx.numpy_helper.from_array(value, init.name))
    return ReferenceEvaluator(model, new_ops=[DequantizeLinear, MaxPool])


def run_reference(model, x: np.ndarray, tensors=()) -> list:
    """The output of ``model`` (a ModelProto or a path) for input ``x``, then the values of
    the intermediate ``tensors``, from :class:`onnx.reference.ReferenceEvaluator` with the
    float arithmetic of QDQ models in float64. A float32 graph output is returned as float32,
    rounded once from the float64 result; intermediate float tensors stay float64."""
    model = _load(model)
    evaluator = reference_evaluator(_with_outputs(model, tensors))
    out = evaluator.run([model.graph.output[0].name, *tensors], {_input_name(model): x})
    elem = model.graph.output[0].type.tensor_type.elem_type
    if elem == onnx.TensorProto.FLOAT:
        out[0] = np.asarray(out[0]).astype(np.float32)
    return out


#: Operator-form nodes with a weight operand: op -> (activation, weight, weight zero point)
#: input positions.
_WEIGHT_INPUTS = {"QLinearConv": (0, 3, 5), "QLinearMatMul": (0, 3, 5),
                  "ConvInteger": (0, 1, 3), "MatMulInteger": (0, 1, 3)}


def uint8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` in which every operator-form node that multiplies uint8 activations
    by constant int8 weights takes them as uint8 instead: ``w + 128`` with zero point
    ``zp + 128``, the same differences ``w - zp`` and so the same products, for onnxruntime's
    exact uint8 x uint8 kernels. (``session.x64quantprecision`` does this for the nodes its
    rewrite knows, but not for QLinearMatMul of opset 21.)"""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {vi.name: vi.type.tensor_type.elem_type
            for vi in [*inferred.graph.value_info, *inferred.graph.input]}
    elem.update({name: init.data_type for name, init in inits.items()})
    for index, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in _WEIGHT_INPUTS:
            continue
        x_at, w_at, zp_at = _WEIGHT_INPUTS[node.op_type]
        inputs = list(node.input) + [""] * (zp_at + 1 - len(node.input))
        weight, zero = inputs[w_at], inputs[zp_at]
        if (elem.get(inputs[x_at]) != onnx.TensorProto.UINT8 or weight not in inits
                or inits[weight].data_type != onnx.TensorProto.INT8
                or (zero and zero not in inits)):
            continue
        w = onnx.numpy_helper.to_array(inits[weight]).astype(np.int16)
        zp = onnx.numpy_helper.to_array(inits[zero]).astype(np.int16) if zero else np.int16(0)
        for name, value in ((f"{weight}_u8_{index}", w + 128), (f"{weight}_zp_u8_{index}",
                                                                zp + 128)):
            graph.initializer.append(onnx.numpy_helper.from_array(
                np.asarray(value).astype(np.uint8), name))
        inputs[w_at], inputs[zp_at] = f"{weight}_u8_{index}", f"{weight}_zp_u8_{index}"
        del node.input[:]
        node.input.extend(inputs)
    return model


def onnxruntime_session(model, threads=None, config=None):
    """An onnxruntime CPU session for ``model`` (a ModelProto or a path) whose int8 kernels
    are exact on every CPU; ``threads`` limits its intra- and inter-op threads, ``config``
    adds session configuration entries."""
    import onnxruntime as ort

    def session(config):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = options.inter_op_num_threads = threads
        for key, value in config.items():
            options.add_session_config_entry(key, value)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    source = uint8_weights(_load(model)).SerializeToString()
    config = dict(config or {})
    try:
        return session({**ORT_EXACT_CONFIG, **config})
    except ort.capi.onnxruntime_pybind11_state.NotImplemented:
        # The option rewrites int8 weights to uint8 for uint8-only kernels, which fails for
        # int8 activations; int8 x int8 kernels do not saturate (16-bit products summed in 32
        # bits: exact under an AVX2-only CPU model too), so those models need no option.
        return session(config)


def run_onnxruntime(model, x: np.ndarray, tensors=()) -> list:
    """Like :func:`run_reference`, from :func:`onnxruntime_session`."""
    model = _load(model)
    session = onnxruntime_session(_with_outputs(model, tensors))
    return session.run([model.graph.output[0].name, *tensors], {_input_name(model): x})


def steps(got, want, scale=None) -> np.ndarray:
    """Absolute differences in quantization steps: ``scale`` for float outputs, else integer
    units."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise ValueError(f"shapes differ: {got.shape} and {want.shape}")
    if scale is None:
        return np.abs(got.astype(np.int64) - want.astype(np.int64))
    return np.rint(np.abs(got.astype(np.float64) - want.astype(np.float64)) / float(scale))


def agreement(got, want, scale=None) -> dict:
    """``{"identical": share of equal values, "max_steps": largest difference}`` (see
    :func:`steps`)."""
    diff = steps(got, want, scale)
    return {"identical": float(np.mean(diff == 0)) if diff.size else 1.0,
            "max_steps": int(diff.max(initial=0))}


#: Oracle name -> (function, how reports name it).
ORACLES = {"reference": (run_reference, REFERENCE_NAME),
           "onnxruntime": (run_onnxruntime, ORT_NAME)}


def compare_with_oracles(model, x, got, scale=None, oracles=tuple(ORACLES)) -> list:
    """``got``, a model's output for input ``x``, against each oracle: a dict per oracle with
    ``oracle``, ``name``, ``identical``, ``max_steps`` (see :func:`agreement`) and for logits
    (2-D outputs) ``same_class``; or ``error`` (one line) where the oracle cannot run it."""
    records = []
    for key in oracles:
        run, name = ORACLES[key]
        record = {"oracle": key, "name": name}
        try:
            want = np.asarray(run(model, x)[0])
            record.update(agreement(got, want, scale))
            if want.ndim == 2:
                record["same_class"] = float(np.mean(np.argmax(got, 1) == np.argmax(want, 1)))
        except Exception as exc:    # an oracle without a kernel for this model: say so
            record["error"] = " ".join(str(exc).split())[:200] or type(exc).__name__
        records.append(record)
    return records


def format_agreement(record: dict) -> str:
    """``99.98% of values identical, largest difference 1 step[, 100.00% same class]``."""
    if "error" in record:
        return f"not compared: {record['name']} could not run the model ({record['error']})"
    steps = record["max_steps"]
    text = (f"{record['identical']:.2%} of values identical, largest difference {steps} "
            f"step{'' if steps == 1 else 's'}")
    if "same_class" in record:
        text += f", {record['same_class']:.2%} same class"
    return text


def _cpu_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_int8_note() -> str:
    """What onnxruntime's default uint8 x int8 kernels do on this CPU, in words."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"{platform.machine()} CPU: onnxruntime's int8 kernels do not saturate"
    flags = _cpu_flags()
    # numpy reads CPUID itself: where it sees no AVX-512 VNNI that /proc/cpuinfo lists, the
    # file describes another CPU than the one running this process (an emulator's host).
    # numpy knows no AVX-VNNI or AMX flag: those are read from /proc/cpuinfo alone.
    core = getattr(np, "_core", None) or np.core     # numpy 2, numpy 1
    seen = core._multiarray_umath.__cpu_features__
    if "avx512_vnni" in flags and not seen.get("AVX512VNNI", True):
        flags = set()
    if seen.get("AVX512VNNI"):
        flags.add("avx512_vnni")
    have = [f for f in _EXACT_INT8_FLAGS if f in flags]
    if have:
        return (f"this CPU has {', '.join(have)}: onnxruntime's default uint8 x int8 kernels "
                f"are exact here")
    return ("this CPU has no VNNI: onnxruntime's default uint8 x int8 kernels saturate here "
            "(convcore's oracle runs it with exact uint8 x uint8 sums instead)")
