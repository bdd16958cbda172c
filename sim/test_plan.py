"""``convcore plan``: the lecture's worked examples, parameter counts with bias, MACs, memory and
the stride warning."""

import pytest

from sim.onnx_import import import_model
from sim.plan import format_plan, line_buffer_bytes, plan_dict, plan_layers
from sim.testing import FloatNet, QNet, quantize_qdq


def conv_plan(shape, filters, kernel, **geometry):
    """Plan row of one QLinearConv (with bias) on an input of ``shape`` (N, C, H, W)."""
    net = import_model(QNet(shape, "uint8").qlinear_conv(filters, kernel, **geometry).model())
    (row,) = plan_layers(net)
    return row, net


@pytest.mark.parametrize("shape,filters,kernel,geometry,out,params", [
    # 32x32x3 with six 5x5x3 filters -> 28x28x6
    ((1, 3, 32, 32), 6, 5, {}, (6, 28, 28), 6 * (5 * 5 * 3 + 1)),
    # 7x7 with a 3x3 filter at stride 1 and 2; pad 1 at stride 1 keeps 7x7
    ((1, 1, 7, 7), 1, 3, dict(stride=1), (1, 5, 5), 10),
    ((1, 1, 7, 7), 1, 3, dict(stride=2), (1, 3, 3), 10),
    ((1, 1, 7, 7), 1, 3, dict(stride=1, pads=1), (1, 7, 7), 10),
    # 32x32x3, ten 5x5 filters, stride 1, pad 2 -> 32x32x10 and 760 parameters
    ((1, 3, 32, 32), 10, 5, dict(stride=1, pads=2), (10, 32, 32), 760),
    # 1x1 conv of 56x56x64 with 32 filters -> 56x56x32
    ((1, 64, 56, 56), 32, 1, {}, (32, 56, 56), 32 * 65),
])
def test_lecture_conv_examples(shape, filters, kernel, geometry, out, params):
    row, _ = conv_plan(shape, filters, kernel, **geometry)
    assert row.in_shape == shape[1:] and row.out_shape == out
    assert row.params == params
    c_in = shape[1]
    assert row.macs == out[0] * out[1] * out[2] * c_in * kernel * kernel
    assert row.weight_bytes == filters * c_in * kernel * kernel
    assert row.line_buffer_bytes == (kernel - 1) * shape[3] * c_in
    assert row.warnings == []


def test_stride_that_does_not_fit_warns_and_floors():
    row, net = conv_plan((1, 1, 7, 7), 1, 3, stride=3)
    assert row.out_shape == (1, 2, 2)  # ONNX floors (7 - 3)/3 + 1 = 2.33
    assert len(row.warnings) == 2  # height and width
    assert row.warnings[0] == (
        "warning: layer 'qlinearconv1' conv height: stride 3 does not fit: (N - F + 2P)/S + 1 = "
        "(7 - 3 + 0)/3 + 1 = 2.33 is not an integer; execution follows ONNX (floor) and gives 2")
    text = format_plan(net)
    assert text.splitlines()[-2:] == row.warnings
    assert plan_dict(net)["warnings"] == row.warnings


def test_lecture_pooling_example():
    """2x2 stride-2 pooling of 224x224x64 -> 112x112x64, no parameters, one row buffered."""
    net = import_model(QNet((1, 64, 224, 224), "int8").maxpool(2, stride=2).model())
    (row,) = plan_layers(net)
    assert (row.op, row.in_shape, row.out_shape) == ("maxpool", (64, 224, 224), (64, 112, 112))
    assert (row.params, row.macs, row.weight_bytes) == (0, 0, 0)
    assert row.line_buffer_bytes == 1 * 224 * 64
    assert row.kernel == (2, 2) and row.stride == (2, 2) and row.warnings == []


def test_fused_pool_dense_and_totals():
    fnet = (FloatNet((1, 3, 32, 32)).conv(16, 5, pads=2).relu().maxpool(2)
            .conv(20, 5, pads=2).relu().maxpool(2).flatten().gemm(10))
    net = import_model(quantize_qdq(fnet.model(), activation="uint8"))
    rows = plan_layers(net)
    assert [r.op for r in rows] == ["conv+maxpool", "conv+maxpool", "dense"]
    assert [r.out_shape for r in rows] == [(16, 16, 16), (20, 8, 8), (10,)]
    assert [r.params for r in rows] == [16 * 76, 20 * (16 * 25 + 1), 10 * (20 * 8 * 8 + 1)]
    assert rows[0].macs == 16 * 32 * 32 * 3 * 25 and rows[2].macs == 10 * 1280
    # conv window (5 rows) over the 32-wide input + pool window (2 rows) over the conv output
    assert rows[0].line_buffer_bytes == 4 * 32 * 3 + 1 * 32 * 16
    assert rows[2].line_buffer_bytes == 0 and rows[2].kernel is None
    assert rows[0].pool == {"kernel": (2, 2), "stride": (2, 2), "pads": (0, 0, 0, 0),
                            "dilation": (1, 1), "ceil_mode": False}
    total = plan_dict(net)["total"]
    assert total == {"layers": 3, "params": sum(r.params for r in rows),
                     "macs": sum(r.macs for r in rows),
                     "line_buffer_bytes_max": 4 * 16 * 16 + 1 * 16 * 20,
                     "weight_bytes": 16 * 75 + 20 * 400 + 10 * 1280}
    lines = format_plan(net).splitlines()
    assert lines[1].split()[:4] == ["layer", "op", "input", "output"]
    assert lines[-1].split()[:3] == ["total", "3", "layers"]
    assert f"{total['params']:,}" in lines[-1] and f"{total['macs']:,}" in lines[-1]


def test_no_bias_is_not_counted_and_dilation():
    net = import_model(QNet((1, 4, 9, 9), "uint8").conv_integer(3, 3, dilation=2).model())
    (row,) = plan_layers(net)
    assert row.params == 3 * 4 * 9 and row.op == "conv(int32)"
    assert row.out_shape == (3, 5, 5)
    assert row.line_buffer_bytes == line_buffer_bytes(3, 2, 9, 4) == 4 * 9 * 4


def test_pool_stride_warning_follows_ceil_mode():
    net = import_model(QNet((1, 2, 7, 7), "int8").maxpool(2, stride=2, ceil_mode=1).model())
    (row,) = plan_layers(net)
    assert row.out_shape == (2, 4, 4)
    assert row.warnings[0].endswith("execution follows ONNX (ceil) and gives 4")


def test_engine_column_and_passes():
    """With a hardware configuration each layer says where it runs, in how many engine
    passes, their estimated cycles and memory (the compiler's schedule, checked against
    rtl.limits)."""
    from sim.hw_backend import engine_config

    fnet = (FloatNet((1, 3, 16, 16)).conv(8, 3, pads=1).relu().maxpool(2)
            .conv(16, 3, pads=1).relu().flatten().gemm(10))
    net = import_model(quantize_qdq(fnet.model(), activation="uint8"))
    # 16 channels are the largest legal count: one pass each; the dense head (16*8*8
    # inputs) as a conv over its 8x8 input needs an 8x8 kernel, above the 7x7 maximum
    hw = engine_config({"max_channels": 16})
    rows = plan_layers(net, hw)
    assert [len(r.passes) for r in rows[:2]] == [1, 1]
    assert [r.runs_on for r in rows] == ["engine"] * 3
    assert len(rows[2].passes) > 1 and rows[2].est_cycles == sum(
        p["est_cycles"] for p in rows[2].passes)
    # 15 channels: the second conv's 16 outputs need two output-channel passes
    rows = plan_layers(net, engine_config({"max_channels": 15}))
    assert len(rows[1].passes) == 2 and rows[1].note.startswith("2 engine passes")
    assert [p["out_shape"][0] for p in rows[1].passes] == [15, 1]
    # without a max-pool unit the fused pool runs on the golden model
    rows = plan_layers(net, engine_config({"max_channels": 16, "pool_window_slots": 0}))
    assert rows[0].runs_on == "engine+model" and "no max-pool unit" in rows[0].note
    text = format_plan(net, engine_config({"max_channels": 15}), "small").splitlines()
    assert text[1].split()[-3:] == ["engine", "est.", "cycles"]
    assert any(line.startswith("layer 'conv2': 2 engine passes") for line in text)
    assert plan_dict(net)["layers"][0]["runs_on"] is None


def test_a_layer_no_schedule_holds_is_shown_refused():
    from sim.hw_backend import engine_config

    net = import_model(QNet((1, 3, 12, 12), "int8").maxpool(3, stride=2).model())
    (row,) = plan_layers(net, engine_config({"pool_window_slots": 1}))
    assert row.runs_on == "refused"
    assert "overlaps windows, which needs 2 window slots" in row.refusal
