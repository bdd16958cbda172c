"""Layers of real networks that the default engine does not hold in one pass, through
``convcore run --backend verilator --check`` (every layer bit-exact with the golden model,
the output checked against the ONNX reference): the layer compiler's passes on the simulated
engine, partial sums accumulated by the engine itself."""

import json

import numpy as np
import onnx
import pytest

from sim import cli
from sim.testing import FloatNet, QNet, onnx_maxpool_cases, quantize_qdq, random_input


def qconv(shape, cout, k, seed=0, **attrs):
    """A QLinearConv (uint8, per-channel weights) whose output zero point is 0, so that a Relu
    may follow (operator form clips at the zero point)."""
    return QNet(shape, "uint8", seed=seed).qlinear_conv(cout, k, per_channel=True,
                                                        y_zero_point=0, **attrs)


#: name -> a function building the model (each a layer of a real network).
MODELS = {
    # VGG/ResNet channel counts: input- and output-channel groups, partial sums on the engine
    "128to128_3x3": lambda: qconv((1, 128, 12, 12), 128, 3, pads=[1] * 4).relu().model(),
    # maps larger than the engine's 224x224: output tiles with their halo
    "300x300": lambda: qconv((1, 3, 300, 300), 8, 3, pads=[1] * 4).model(),
    "260x20": lambda: qconv((1, 8, 260, 20), 8, 3, pads=[1] * 4).model(),
    # AlexNet's conv1 geometry: 11x11 stride 4 on 227x227x3 (sub-kernels, 96 outputs)
    "alexnet_conv1": lambda: qconv((1, 3, 227, 227), 96, 11, stride=[4, 4]).relu().model(),
    # a 9x9 kernel: sub-kernels
    "9x9": lambda: qconv((1, 8, 20, 20), 8, 9, pads=[4] * 4).model(),
    # GoogLeNet's fused 3x3 stride-1 pool; YOLO SPP's 5x5 stride-1 pool alone
    "fused_3x3s1_pool": lambda: qconv((1, 8, 14, 14), 16, 3, pads=[1] * 4).relu()
    .maxpool(3, stride=1, pads=1).model(),
    "pool_5x5s1": lambda: QNet((1, 16, 13, 13), "int8").maxpool(5, stride=1, pads=2).model(),
    # dilated pools
    "pool_3x3s1_d2": lambda: QNet((1, 8, 12, 12), "int8").maxpool(3, stride=1, dilation=2,
                                                                 pads=2).model(),
    "pool_3x3s2_d2_ceil": lambda: QNet((1, 4, 12, 12), "uint8").maxpool(
        3, stride=2, dilation=2, ceil_mode=1).model(),
}


def run_check(tmp_path, name, model, capsys):
    path, x = tmp_path / f"{name}.onnx", tmp_path / f"{name}_x.npy"
    onnx.save(model, path)
    np.save(x, random_input(model, seed=1))
    report = tmp_path / f"{name}.json"
    status = cli.main(["run", str(path), "--input", str(x), "--backend", "verilator",
                       "--check", "--report", str(report)])
    out = capsys.readouterr()
    assert status == 0 and out.err == "", out.err
    assert "check: every layer's output equals the golden model" in out.out
    return json.loads(report.read_text())["layers"], out.out


@pytest.mark.parametrize("name", list(MODELS))
def test_layer_of_a_real_network(tmp_path, capsys, name, monkeypatch):
    monkeypatch.delenv("CONVCORE_HW_CONFIG", raising=False)
    layers, _ = run_check(tmp_path, name, MODELS[name](), capsys)
    assert all(r["ran_on"] == "verilator" for r in layers)
    assert sum(r.get("passes", 1) for r in layers) > len(layers)


def onnx_maxpool_models():
    """Each 2-D case of ONNX's MaxPool node tests (onnx.backend.test.case), as a model on 8-bit
    data with the same attributes and input shape."""
    from onnx import helper


    models = {}
    for name, node, x in onnx_maxpool_cases():
        dtype = np.uint8 if x.dtype == np.uint8 else np.int8
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        graph = helper.make_graph(
            [helper.make_node("MaxPool", ["x"], ["y"], name="pool", **attrs)], name,
            [helper.make_tensor_value_info("x", elem, list(x.shape))],
            [helper.make_tensor_value_info("y", elem, None)])
        models[name] = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return models


@pytest.mark.parametrize("name", list(onnx_maxpool_models()))
def test_onnx_maxpool_node_test(tmp_path, capsys, name, monkeypatch):
    monkeypatch.delenv("CONVCORE_HW_CONFIG", raising=False)
    layers, out = run_check(tmp_path, name, onnx_maxpool_models()[name], capsys)
    assert [r["ran_on"] for r in layers] == ["verilator"]
    assert "reference" in out


def test_vgg_style_net_end_to_end(tmp_path, capsys, monkeypatch):
    """A VGG-style QDQ network with 128 and 256 channels, pools and a dense head."""
    monkeypatch.delenv("CONVCORE_HW_CONFIG", raising=False)
    fnet = (FloatNet((1, 3, 16, 16), seed=4).conv(32, 3, pads=1).relu().maxpool(2)
            .conv(128, 3, pads=1).relu().maxpool(2)
            .conv(256, 3, pads=1).relu().maxpool(2)
            .flatten().gemm(10))
    model = quantize_qdq(fnet.model())
    layers, out = run_check(tmp_path, "vgg", model, capsys)
    assert [r["ran_on"] for r in layers] == ["verilator"] * 4
    # the dense head (256 x 2 x 2 inputs) folds into one pass of 7x7 kernel taps
    assert [r.get("passes", 1) for r in layers][1:3] != [1, 1]
    assert layers[3].get("passes", 1) == 1 and "1 engine pass" in layers[3]["note"]
