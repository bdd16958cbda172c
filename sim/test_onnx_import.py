"""ONNX import: models quantized by onnxruntime and operator-form graphs, run on the golden model
and compared layer by layer with the ONNX reference evaluator (the CPU-independent oracle) and
with onnxruntime run with exact int8 kernels (where it has a kernel); and the one-line errors
for everything convcore cannot run."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from model.network import ConvLayer, DenseLayer, MaxPool, PoolLayer, run_layer, run_network
from model.oracle import run_onnxruntime, run_reference
from sim.onnx_import import UnsupportedModelError, import_model
from sim.testing import (FloatNet, QNet, layer_agreement, make_model, quantize_qdq,
                         random_input)

#: The requantization contract with the ONNX formula: at most this many outputs differ ...
MAX_MISMATCH_FRACTION = 1e-3
#: ... and never by more than one step per layer.
MAX_STEPS = 1
BATCH = 4


#: Both oracles, for models onnxruntime has kernels for.
BOTH = (run_reference, run_onnxruntime)


def check_agreement(net, model, x, oracles=BOTH):
    """Per oracle and layer (on the oracle's own input): <= 1 step, <= 0.1% differing outputs;
    the final output within one step per layer. Returns the first oracle's statistics."""
    results = []
    for oracle in oracles:
        per_layer, final = layer_agreement(net, model, x, oracle)
        for name, count, mismatches, worst in per_layer:
            assert worst <= MAX_STEPS, f"layer {name}: off by {worst} steps ({oracle.__name__})"
            assert mismatches <= max(1, MAX_MISMATCH_FRACTION * count), \
                f"layer {name}: {mismatches} of {count} outputs differ ({oracle.__name__})"
        assert final[3] <= MAX_STEPS * len(net.layers), \
            f"output off by {final[3]} steps ({oracle.__name__})"
        results.append((per_layer, final))
    return results[0]


def qdq_roundtrip(float_net, seed=3, batch=BATCH, **quant):
    model = quantize_qdq(float_net.model(), **quant)
    net = import_model(model)
    x = random_input(model, seed=seed, batch=batch)
    return net, model, x


# --- QDQ models from quantize_static -------------------------------------------------------

QUANT_CONFIGS = [
    dict(activation=a, weight=w, per_channel=pc, reduce_range=rr)
    for a, w in (("int8", "int8"), ("uint8", "int8"), ("uint8", "uint8"))
    for pc in (False, True) for rr in (False, True)
]


def small_cnn(symbolic_batch=True, seed=0):
    return (FloatNet((1, 3, 12, 12), seed=seed, symbolic_batch=symbolic_batch)
            .conv(8, 3, pads=1).relu().maxpool(2)
            .conv(8, 3, stride=2, pads=[0, 1, 1, 0]).relu()
            .flatten().gemm(10))


@pytest.mark.parametrize("quant", QUANT_CONFIGS, ids=lambda q: "-".join(
    f"{k}={v}" for k, v in q.items()))
def test_qdq_cnn_matches_onnxruntime(quant):
    net, model, x = qdq_roundtrip(small_cnn(), **quant)
    assert [type(layer) for layer in net.layers] == [ConvLayer, ConvLayer, DenseLayer]
    conv1 = net.layers[0]
    assert conv1.pool is not None and conv1.nodes == ("conv1", "maxpool1")
    assert conv1.in_dtype == conv1.out_dtype == quant["activation"]
    assert conv1.weight.dtype == np.dtype(quant["weight"])
    per_channel_values = len(set(conv1.multiplier.tolist())) > 1
    assert per_channel_values == quant["per_channel"]
    check_agreement(net, model, x)


def test_qdq_network_fields():
    net, model, x = qdq_roundtrip(small_cnn(), activation="uint8", per_channel=True)
    init = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    q_in = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    assert net.input_scale == pytest.approx(float(init[q_in.input[1]]), rel=1e-7)
    assert net.input_zero_point == int(init[q_in.input[2]])
    assert (net.input_dtype, net.input_qdtype, net.output_dtype) == ("float32", "uint8", "float32")
    assert net.input_shape == (None, 3, 12, 12) and net.output_shape == (None, 10)
    dq_out = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    assert dq_out.op_type == "DequantizeLinear"
    assert net.output_scale == pytest.approx(float(init[dq_out.input[1]]), rel=1e-7)
    y = run_network(net, x)
    assert y.dtype == np.float32 and y.shape == (BATCH, 10)
    # every layer names its own 8-bit output tensor and the layers form a chain
    for prev, layer in zip(net.layers, net.layers[1:]):
        assert layer.in_shape == prev.out_shape and layer.in_dtype == prev.out_dtype
    assert all(layer.tensor for layer in net.layers)


CONV_CASES = [
    dict(kernel=1),
    dict(kernel=2),
    dict(kernel=3, pads=1),
    dict(kernel=4, stride=2, pads=[1, 2, 2, 1]),
    dict(kernel=5, pads=2),
    dict(kernel=(2, 3), stride=(1, 2), pads=[0, 1, 1, 0]),
    dict(kernel=3, stride=3),
    dict(kernel=3, stride=2, auto_pad="SAME_UPPER"),
    dict(kernel=4, stride=1, auto_pad="SAME_UPPER"),
    dict(kernel=4, stride=3, auto_pad="SAME_LOWER"),
    dict(kernel=2, auto_pad="SAME_LOWER"),
    dict(kernel=3, stride=2, auto_pad="VALID"),
    dict(kernel=3, dilation=2, pads=2),
    dict(kernel=(3, 2), dilation=(2, 3), stride=(2, 1), pads=[1, 0, 2, 3]),
    dict(kernel=3, pads=1, bias=False),
]


def case_id(case: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in case.items())


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
@pytest.mark.parametrize("activation", ["int8", "uint8"])
def test_qdq_conv_attributes(case, activation):
    case = dict(case)
    kernel = case.pop("kernel")
    net, model, x = qdq_roundtrip(FloatNet((1, 3, 11, 10), symbolic_batch=True)
                                  .conv(6, kernel, **case).relu(),
                                  activation=activation, per_channel=True)
    (layer,) = net.layers
    ref = onnx.shape_inference.infer_shapes(model).graph.output[0].type.tensor_type.shape
    assert layer.out_shape == tuple(d.dim_value for d in ref.dim)[1:]
    assert layer.has_bias == case.get("bias", True)
    check_agreement(net, model, x)


@pytest.mark.parametrize("geometry", [
    dict(kernel=3, dilation=2, stride=2, auto_pad="SAME_LOWER"),
    dict(kernel=2, dilation=3, auto_pad="SAME_UPPER"),
])
def test_same_padding_with_dilation(geometry):
    """onnxruntime refuses dilation with SAME padding; onnx.reference follows the spec."""
    geometry = dict(geometry)
    kernel = geometry.pop("kernel")
    qnet = QNet((BATCH, 3, 11, 10), "uint8", symbolic_batch=True).qlinear_conv(4, kernel,
                                                                               **geometry)
    model = qnet.model()
    net = import_model(model)
    assert net.layers[0].out_shape[1:] == tuple(-(-n // geometry.get("stride", 1))
                                                for n in (11, 10))
    check_agreement(net, model, random_input(model, seed=4, batch=BATCH), (run_reference,))


POOL_CASES = [
    dict(kernel=2),
    dict(kernel=3, stride=1),
    dict(kernel=3, stride=2, pads=1),
    dict(kernel=2, stride=2, pads=[0, 1, 1, 0]),
    dict(kernel=3, stride=2, ceil_mode=1),
    dict(kernel=2, stride=3, ceil_mode=1, pads=[1, 0, 0, 1]),
    dict(kernel=(2, 3), stride=(1, 2)),
    dict(kernel=2, dilation=2, stride=1),
    dict(kernel=3, stride=2, auto_pad="SAME_UPPER"),
    dict(kernel=2, stride=1, auto_pad="SAME_LOWER"),
    dict(kernel=3, stride=2, auto_pad="VALID"),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_qdq_maxpool_fused_and_alone(case):
    case = dict(case)
    kernel = case.pop("kernel")
    fnet = (FloatNet((1, 3, 13, 11), symbolic_batch=True).conv(4, 3, pads=1).relu()
            .maxpool(kernel, **case).maxpool(kernel, **case))
    net, model, x = qdq_roundtrip(fnet, activation="int8")
    conv, pool = net.layers
    assert isinstance(pool, PoolLayer) and isinstance(conv, ConvLayer) and conv.pool is not None
    assert conv.nodes == ("conv1", "maxpool1") and pool.nodes == ("maxpool2",)
    check_agreement(net, model, x)


@pytest.mark.parametrize("head", ["gemm", "gemm_transb0", "matmul", "reshape_gemm", "gemm_nobias"])
def test_qdq_dense_heads(head):
    fnet = FloatNet((1, 4, 5, 5), symbolic_batch=head != "reshape_gemm").conv(6, 3).relu()
    fnet = fnet.reshape_flat() if head == "reshape_gemm" else fnet.flatten()
    if head == "matmul":
        fnet.matmul(7)
    else:
        fnet.gemm(7, trans_b=head != "gemm_transb0", bias=head != "gemm_nobias")
    net, model, x = qdq_roundtrip(fnet, activation="uint8", per_channel=True,
                                  batch=1 if head == "reshape_gemm" else BATCH)
    dense = net.layers[-1]
    assert isinstance(dense, DenseLayer) and dense.in_shape == (6, 3, 3)
    assert dense.weight.shape == (7, 54) and dense.has_bias == (head not in ("matmul",
                                                                             "gemm_nobias"))
    check_agreement(net, model, x)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_pool_only_and_flatten_output(dtype):
    qnet = QNet((BATCH, 2, 7, 6), dtype, symbolic_batch=True, float_input=True).maxpool(
        3, stride=2, pads=[1, 0, 1, 0]).flatten().dequantize()
    net, model, x = op_model(qnet)
    assert [type(layer) for layer in net.layers] == [PoolLayer]
    assert net.output_shape == (None, 16) and net.output_dtype == "float32"
    assert net.layers[0].in_dtype == dtype
    check_agreement(net, model, x)


def test_qdq_float_bias_is_quantized_to_accumulator_units():
    """A Conv whose bias is a float initializer (no DequantizeLinear) still imports."""
    model = quantize_qdq(FloatNet((1, 3, 8, 8), symbolic_batch=True).conv(5, 3).relu().model(),
                         activation="uint8", per_channel=True)
    graph = model.graph
    conv = next(n for n in graph.node if n.op_type == "Conv")
    dq = next(n for n in graph.node if n.output[0] == conv.input[2])
    init = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    bias = (init[dq.input[0]] * init[dq.input[1]]).astype(np.float32)
    graph.initializer.append(onnx.numpy_helper.from_array(bias, "float_bias"))
    conv.input[2] = "float_bias"
    graph.node.remove(dq)
    net = import_model(model)
    np.testing.assert_array_equal(net.layers[0].bias, init[dq.input[0]])
    check_agreement(net, model, random_input(model, seed=1, batch=BATCH))



@pytest.mark.parametrize("per_channel", [False, True])
def test_qdq_weights_quantized_in_the_graph(per_channel):
    """Float weights with their own QuantizeLinear are folded into int8 weights."""
    model = quantize_qdq(FloatNet((1, 3, 8, 8), symbolic_batch=True).conv(4, 3).relu().model(),
                         per_channel=per_channel)
    graph = model.graph
    conv = next(n for n in graph.node if n.op_type == "Conv")
    dq = next(n for n in graph.node if n.output[0] == conv.input[1])
    init = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    wq, ws, wz = (init[name] for name in dq.input)
    shape = (-1, 1, 1, 1) if per_channel else ()
    w_float = (wq.astype(np.float32) - wz.reshape(shape)) * ws.reshape(shape)
    graph.initializer.append(onnx.numpy_helper.from_array(w_float.astype(np.float32), "w_float"))
    axis = {a.name: a.i for a in dq.attribute}
    graph.node.insert(list(graph.node).index(dq), helper.make_node(
        "QuantizeLinear", ["w_float", dq.input[1], dq.input[2]], ["w_q"], name="w_q", **axis))
    dq.input[0] = "w_q"
    net = import_model(model)
    np.testing.assert_array_equal(net.layers[0].weight, wq)
    check_agreement(net, model, random_input(model, seed=1, batch=BATCH))

# --- operator form --------------------------------------------------------------------------

def op_model(qnet):
    model = qnet.model()
    return import_model(model), model, random_input(model, seed=5, batch=BATCH)


@pytest.mark.parametrize("x_dtype", ["uint8", "int8"])
@pytest.mark.parametrize("w_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("per_channel,per_channel_zp", [(False, False), (True, False),
                                                        (True, True)])
def test_qlinearconv(x_dtype, w_dtype, per_channel, per_channel_zp):
    qnet = QNet((BATCH, 5, 9, 8), x_dtype, symbolic_batch=True).qlinear_conv(
        6, 3, w_dtype=w_dtype, per_channel=per_channel, per_channel_zp=per_channel_zp,
        pads=[1, 0, 2, 1])
    net, model, x = op_model(qnet)
    (layer,) = net.layers
    init = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert layer.weight.dtype == np.dtype(w_dtype)
    assert layer.x_zero_point == int(init["qlinearconv1_xz"])
    assert layer.y_zero_point == qnet.zp    # the builder's zero point is now the output's
    assert net.input_scale is None and net.output_dtype == x_dtype
    # onnxruntime has no int8-activation / uint8-weight QLinearConv kernel
    oracles = (run_reference,) if (x_dtype, w_dtype) == ("int8", "uint8") else BOTH
    check_agreement(net, model, x, oracles)


@pytest.mark.parametrize("geometry", [
    dict(kernel=2, stride=2), dict(kernel=(1, 3), auto_pad="SAME_UPPER"),
    dict(kernel=3, dilation=2, pads=[2, 1, 0, 2]), dict(kernel=5, stride=3, auto_pad="SAME_LOWER"),
])
def test_qlinearconv_geometry_relu_pool_chain(geometry):
    geometry = dict(geometry)
    kernel = geometry.pop("kernel")
    # onnxruntime has Relu for int8 but not for uint8 tensors
    qnet = (QNet((BATCH, 3, 13, 12), "int8", symbolic_batch=True, float_input=True)
            .qlinear_conv(8, kernel, y_zero_point=0, **geometry).relu()
            .maxpool(2, stride=1, pads=[0, 0, 1, 1])
            .qlinear_conv(4, 3, per_channel=True, per_channel_zp=True).maxpool(2, ceil_mode=1)
            .flatten().qlinear_matmul(5, per_column=True).dequantize())
    net, model, x = op_model(qnet)
    conv1, conv2, dense = net.layers
    assert conv1.relu and conv1.nodes == ("qlinearconv1", "relu1", "maxpool1")
    assert not conv2.relu and conv2.pool.ceil_mode
    assert net.input_dtype == "float32" and net.output_dtype == "float32"
    check_agreement(net, model, x)


@pytest.mark.parametrize("x_dtype,w_dtype,per_channel_zp", [
    ("uint8", "int8", False), ("uint8", "uint8", False), ("int8", "int8", False),
    ("uint8", "uint8", True)])
def test_conv_integer_raw_output(x_dtype, w_dtype, per_channel_zp):
    qnet = QNet((BATCH, 3, 8, 8), x_dtype, symbolic_batch=True).conv_integer(
        5, 3, w_dtype=w_dtype, per_channel_zp=per_channel_zp, stride=2, pads=[1, 1, 0, 0])
    net, model, x = op_model(qnet)
    (layer,) = net.layers
    assert layer.raw and layer.out_dtype == "int32" and net.output_dtype == "int32"
    # Integer accumulators: exactly equal. onnxruntime's ConvInteger takes per-tensor weight
    # zero points only.
    for oracle in (run_reference,) if per_channel_zp else BOTH:
        per_layer, final = layer_agreement(net, model, x, oracle)
        assert final[2] == 0 and per_layer[0][2] == 0, oracle.__name__


@pytest.mark.parametrize("x_dtype", ["uint8", "int8"])
@pytest.mark.parametrize("per_column", [False, True])
def test_qlinearmatmul_and_matmulinteger(x_dtype, per_column):
    qnet = QNet((BATCH, 2, 3, 3), x_dtype, symbolic_batch=True).flatten().qlinear_matmul(
        9, per_column=per_column)
    net, model, x = op_model(qnet)
    check_agreement(net, model, x)
    qnet = QNet((BATCH, 18), x_dtype, symbolic_batch=True).matmul_integer(
        6, w_dtype="uint8" if x_dtype == "uint8" else "int8", per_column=per_column)
    net, model, x = op_model(qnet)
    assert net.output_dtype == "int32"
    for oracle in (run_reference,) if per_column else BOTH:
        per_layer, final = layer_agreement(net, model, x, oracle)
        assert final[2] == 0, oracle.__name__


def test_reshape_flatten_variants():
    qnet = (QNet((1, 2, 4, 4), "int8").maxpool(2).reshape([1, -1]).qlinear_matmul(3))
    net, model, x = op_model(qnet)
    assert isinstance(net.layers[0], PoolLayer) and net.layers[1].in_shape == (2, 2, 2)
    check_agreement(net, model, random_input(model, seed=2))


# --- requantization agreement on larger models -----------------------------------------------

def test_agreement_999_permille_on_larger_models():
    """Counts every output of several random models: >= 99.9% identical, never > 1 step."""
    total = mismatched = 0
    for seed, (act, pc) in enumerate([("int8", True), ("uint8", False), ("uint8", True)]):
        fnet = (FloatNet((1, 8, 24, 24), seed=seed, symbolic_batch=True)
                .conv(16, 3, pads=1).relu().conv(16, 3, pads=1).relu().maxpool(2)
                .conv(16, 5, stride=2, pads=2).relu().flatten().gemm(10))
        calib = [np.random.default_rng(100 + i).standard_normal((1, 8, 24, 24)).astype(np.float32)
                 for i in range(8)]
        net, model, x = qdq_roundtrip(fnet, seed=seed, batch=8, activation=act, per_channel=pc,
                                      calibration=calib)
        per_layer, _ = check_agreement(net, model, x)
        total += sum(p[1] for p in per_layer)
        mismatched += sum(p[2] for p in per_layer)
    assert total > 100_000
    assert mismatched <= MAX_MISMATCH_FRACTION * total, f"{mismatched} of {total} differ"


def test_agreement_check_can_fail():
    """A requantization off by 1% is caught: the comparison is not vacuous."""
    net, model, x = qdq_roundtrip(small_cnn(), activation="uint8")
    net.layers[0].multiplier = (net.layers[0].multiplier * 1.01).astype(np.int64)
    for oracle in BOTH:
        per_layer, _ = layer_agreement(net, model, x, oracle)
        assert per_layer[0][2] > 0, oracle.__name__


def test_run_layer_is_the_reference_per_layer():
    net, model, x = qdq_roundtrip(small_cnn(), activation="int8")
    from model.network import quantize_input
    y = quantize_input(net, x)
    for layer in net.layers:
        y = run_layer(layer, y)
        assert y.shape[1:] == tuple(layer.out_shape) and y.dtype == np.dtype(layer.out_dtype)
    np.testing.assert_array_equal(run_network(net, x), (y.astype(np.float32) - np.float32(
        net.output_zero_point)) * np.float32(net.output_scale))


def test_layers_are_plain_data():
    net, _, _ = qdq_roundtrip(small_cnn(), activation="uint8", per_channel=True)
    conv = net.layers[0]
    assert conv.weight.dtype == np.uint8 or conv.weight.dtype == np.int8
    assert conv.bias.dtype == np.int32 and conv.bias.shape == (8,)
    assert conv.multiplier.dtype == np.int64 and conv.shift.dtype == np.int64
    assert conv.w_zero_point.dtype == np.int32 and conv.w_zero_point.shape == (8,)
    assert isinstance(conv.x_zero_point, int) and isinstance(conv.y_zero_point, int)
    assert all(isinstance(v, int) for v in conv.stride + conv.pads + conv.dilation)
    assert isinstance(conv.pool, MaxPool) and conv.pool.kernel == (2, 2)
    assert np.all((conv.multiplier >= 2**30) & (conv.multiplier < 2**31))


# --- errors ------------------------------------------------------------------------------------

def qdq_with(op, **attrs):
    return quantize_qdq(FloatNet((1, 4, 8, 8)).conv(4, 3).node(op, **attrs).model())


def error_of(model) -> str:
    with pytest.raises(UnsupportedModelError) as info:
        import_model(model)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_error_float_only_model():
    message = error_of(FloatNet((1, 3, 8, 8)).conv(4, 3).relu().model())
    assert message.startswith("node 'conv1' (Conv): input 'x' is the float model input")
    assert "not quantized" in message


def test_error_float_output_feeds_a_conv():
    """A conv's float output that reaches the next conv without a QuantizeLinear is named."""
    s, w = numpy_helper.from_array(np.float32(0.1), "s"), np.ones((1, 1, 1, 1), np.int8)
    graph = helper.make_graph([
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "s"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["c1"], name="conv1", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["c1", "wd"], ["y"], name="conv2", kernel_shape=[1, 1]),
    ], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
        [s, numpy_helper.from_array(np.uint8(128), "z"), numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert error_of(model) == ("node 'conv2' (Conv): input 'c1' is the float output of 'conv1' "
                               "without a QuantizeLinear")


@pytest.mark.parametrize("op,attrs,node", [
    ("AveragePool", dict(kernel_shape=[2, 2]), "averagepool1"),
    ("Softmax", dict(axis=1), "softmax1"),
    ("Sigmoid", {}, "sigmoid1"),
])
def test_error_unsupported_op(op, attrs, node):
    message = error_of(qdq_with(op, **attrs))
    assert message.startswith(f"node '{node}' ({op}): operator {op} is not supported")


def test_error_add_and_concat_branches():
    fnet = FloatNet((1, 4, 8, 8)).conv(4, 3)
    fnet.node("Add", [fnet.tensor])
    assert error_of(quantize_qdq(fnet.model())).startswith("node 'add1' (Add): operator Add")
    fnet = FloatNet((1, 4, 8, 8)).conv(4, 3)
    fnet.node("Concat", [fnet.tensor], axis=1)
    assert error_of(quantize_qdq(fnet.model())).startswith("node 'concat1' (Concat)")


def test_error_group_and_3d_conv():
    message = error_of(quantize_qdq(FloatNet((1, 4, 8, 8)).conv(4, 3, group=2).model()))
    assert message == "node 'conv1' (Conv): group 2 is not supported (only group 1)"
    message = error_of(quantize_qdq(FloatNet((1, 2, 4, 6, 6)).conv(3, 3, ndim=3).model()))
    assert message.startswith("node 'conv1' (Conv): 3-D convolution")


def test_error_branch():
    qnet = QNet((1, 3, 8, 8), "uint8").qlinear_conv(4, 3, pads=1)
    first = qnet.tensor
    qnet.qlinear_conv(4, 3, pads=1)
    qnet.tensor, qnet.scale = first, qnet.scale  # a second consumer of the first conv's output
    qnet.nodes.append(helper.make_node("MaxPool", [first], ["branch"], name="side_pool",
                                       kernel_shape=[2, 2]))
    model = make_model(qnet.nodes, qnet.inputs, [("branch", "uint8", None)], qnet.inits,
                       check=False)
    message = error_of(model)
    assert message.startswith("node 'side_pool' (MaxPool): input 'qlinearconv1_out' is the "
                              "output of 'qlinearconv1'")
    assert "chain" in message


def test_error_inconsistent_requantization():
    qnet = QNet((1, 3, 8, 8), "int8", float_input=True).qlinear_conv(4, 3).dequantize()
    s = qnet._init("other_scale", np.float32(qnet.scale * 2))
    z = qnet._init("other_zp", np.array(qnet.zp, "int8"))
    qnet.nodes.append(helper.make_node("QuantizeLinear", [qnet.tensor, s, z], ["requant"],
                                       name="requant_q"))
    model = make_model(qnet.nodes, qnet.inputs, [("requant", "int8", None)], qnet.inits,
                       check=False)
    message = error_of(model)
    assert message.startswith("node 'requant_q' (QuantizeLinear): requantizes")
    assert "inconsistent requantization" in message
    # a QLinearConv whose input scale is not the previous layer's output scale
    qnet = QNet((1, 3, 8, 8), "uint8").qlinear_conv(4, 3)
    qnet.scale *= 1.5
    qnet.qlinear_conv(4, 3)
    message = error_of(qnet.model())
    assert message.startswith("node 'qlinearconv2' (QLinearConv): input scale")
    assert "inconsistent requantization" in message


def test_error_relu_with_nonzero_zero_point():
    qnet = QNet((1, 3, 8, 8), "int8").qlinear_conv(4, 3, y_zero_point=5).relu()
    assert error_of(qnet.model()).startswith("node 'relu1' (Relu): ReLU on the 8-bit tensor")


def test_error_raw_output_feeding_a_layer():
    qnet = QNet((1, 3, 8, 8), "uint8").conv_integer(4, 3)
    qnet.raw = False
    qnet.node("MaxPool", kernel_shape=[2, 2])
    message = error_of(qnet.model(check=False))
    assert message.startswith("node 'maxpool1' (MaxPool): input 'convinteger1_out' holds int32")


@pytest.mark.parametrize("attrs,expected", [
    (dict(alpha=2.0), "alpha 2.0 is not supported (only 1.0)"),
    # quantize_static folds beta into the bias scale, which is then not input * weight scale
    (dict(beta=0.5), "bias scale 2.94127567e-05 (channel 0) is not input scale * weight scale "
                     "5.88255134e-05"),
])
def test_error_gemm_attributes(attrs, expected):
    fnet = FloatNet((1, 2, 3, 3)).conv(2, 1).flatten()
    w = fnet._init("w", np.ones((18, 4), np.float32))
    b = fnet._init("b", np.ones(4, np.float32))
    fnet.node("Gemm", [w, b], **attrs)
    message = error_of(quantize_qdq(fnet.model()))
    assert message == f"node 'gemm1' (Gemm): {expected}"


def test_error_reshape_not_flatten():
    qnet = QNet((1, 2, 4, 4), "int8").qlinear_conv(4, 3, pads=1).reshape([1, 4, 2, 8])
    message = error_of(qnet.model())
    assert message.startswith("node 'reshape1' (Reshape): reshape of (N, 4, 4, 4) to [1, 4, 2, 8]")


def test_error_unknown_attribute_and_domain():
    qnet = QNet((1, 3, 8, 8), "uint8").qlinear_conv(4, 3)
    qnet.nodes[-1].attribute.append(helper.make_attribute("mystery", 1))
    assert error_of(qnet.model(check=False)) == \
        "node 'qlinearconv1' (QLinearConv): attribute mystery is not supported"
    qnet = QNet((1, 3, 8, 8), "uint8").qlinear_conv(4, 3)
    qnet.nodes[-1].domain = "com.microsoft"
    assert "domain 'com.microsoft' is not supported" in error_of(qnet.model(check=False))


def test_error_bias_scale_mismatch():
    model = quantize_qdq(FloatNet((1, 3, 6, 6)).conv(4, 3).model())
    for init in model.graph.initializer:
        if init.name.endswith("_b_quantized_scale"):
            arr = onnx.numpy_helper.to_array(init) * np.float32(1.5)
            init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
    message = error_of(model)
    assert message.startswith("node 'conv1' (Conv): bias scale")


def test_error_output_not_last_layer_and_no_layers():
    qnet = QNet((1, 3, 8, 8), "uint8")
    qnet.node("Identity")
    assert error_of(qnet.model(check=False)) == "model: has no conv, pool or dense layer"


def test_exact_ties_differ_by_at_most_one_step():
    """With x_scale * w_scale / y_scale = 1/256 (a power of two) many products are exact
    halves: ONNX rounds them to even, convcore up (README, "Requantization"); one step apart."""
    qnet = QNet((BATCH, 3, 13, 12), "int8", symbolic_batch=True)
    qnet.qlinear_conv(8, (1, 3), y_zero_point=0, auto_pad="SAME_UPPER")
    model = qnet.model()
    init = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    tie_scale = np.float32(init["qlinearconv1_xs"]) * init["qlinearconv1_ws"] * 256
    for init_proto in model.graph.initializer:
        if init_proto.name == "qlinearconv1_ys":
            init_proto.CopyFrom(onnx.numpy_helper.from_array(np.float32(tie_scale),
                                                             init_proto.name))
    net = import_model(model)
    x = random_input(model, seed=5, batch=BATCH)
    for oracle in BOTH:
        (_, count, mismatches, worst), = layer_agreement(net, model, x, oracle)[0]
        assert worst == 1 and 0 < mismatches < 0.01 * count, oracle.__name__


def test_error_names_unnamed_nodes_by_their_output():
    qnet = QNet((1, 3, 8, 8), "uint8").qlinear_conv(4, 3)
    qnet.nodes.append(helper.make_node("AveragePool", [qnet.tensor], ["avg_out"],
                                       kernel_shape=[2, 2]))
    qnet.tensor = "avg_out"
    assert error_of(qnet.model(check=False)).startswith(
        "node 'avg_out' (AveragePool): operator AveragePool is not supported")
