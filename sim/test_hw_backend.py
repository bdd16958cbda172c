"""``convcore run --backend icarus|verilator``: output identical (``==``) to ``--backend model``,
the per-layer report, ``--check``, and one-line errors for a refused layer and a hung one.

The simulations use a small hardware configuration (:data:`HW`, passed with ``--hw-config``)
that builds in seconds on Icarus and is cached per configuration on Verilator; dense layers
become convs whose kernel covers the input, max-pools run on the engine (fused after a conv,
or alone), and a pool beyond the engine's pool unit is a one-line error.
"""

import json

import numpy as np
import onnx
import pytest

from model.network import DenseLayer, run_layer
from sim import cli
from rtl.limits import engine_params
from sim.hw_backend import (HardwareBackend, dense_as_conv, engine_config, engine_fits,
                            resolve_config)
from sim.onnx_import import load_network
from sim.testing import FloatNet, QNet, quantize_qdq, random_input

#: A small engine: 4 x 4 MAC array, 16 x 16 inputs, 16 channels.
HW = dict(pe=4, simd=4, max_kernel=5, max_width=16, max_height=16, max_channels=16,
          weight_depth=256, max_stride=3, max_dilation=2)
HW_JSON = json.dumps(HW)
SIMS = ("icarus", "verilator")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hw")
    paths = {}

    def save(name, model, x):
        paths[name] = d / f"{name}.onnx"
        paths[name + "_x"] = d / f"{name}_x.npy"
        onnx.save(model, paths[name])
        np.save(paths[name + "_x"], x)

    # QDQ, uint8 activations, per-channel weights: conv+relu+pool, strided conv, dense.
    qdq = quantize_qdq(
        FloatNet((1, 3, 10, 10), symbolic_batch=True).conv(8, 3, pads=1).relu().maxpool(2)
        .conv(6, 3, stride=2, pads=[1, 0, 0, 1]).relu().flatten().gemm(10).model(),
        activation="uint8", per_channel=True)
    save("qdq", qdq, random_input(qdq, seed=3, batch=3))
    # Operator form, int8: a max-pool alone, conv with uint8 per-channel weights, then raw int32
    # accumulators.
    pool = (QNet((2, 5, 9, 9), "int8", seed=7).maxpool(3, stride=2, pads=1)
            .qlinear_conv(5, 3, w_dtype="uint8", per_channel=True, per_channel_zp=True)
            .conv_integer(3, 2).model())
    save("pool", pool, random_input(pool, seed=8))
    ops = (QNet((2, 5, 6, 7), "int8", seed=4).qlinear_conv(5, 3, w_dtype="uint8",
                                                           per_channel=True, per_channel_zp=True,
                                                           pads=[0, 1, 2, 1])
           .conv_integer(3, 2, stride=2).model())
    save("ops", ops, random_input(ops, seed=5))
    # Input wider than the engine's 16 columns.
    wide = quantize_qdq(FloatNet((1, 2, 4, 20)).conv(4, 3, pads=1).model())
    save("wide", wide, random_input(wide, seed=6))
    return paths


def run(args, capsys):
    """In-process ``convcore ARGS``: (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


def assert_one_line_error(err, status, want_status, *fragments):
    assert status == want_status, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convcore: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("sim", SIMS)
def test_run_equals_model_backend(files, tmp_path, capsys, sim):
    reports = {}
    for name in ("qdq", "pool"):
        for backend in ("model", sim):
            out, report = tmp_path / f"{name}-{backend}.npy", tmp_path / f"{name}-{backend}.json"
            extra = ["--hw-config", HW_JSON, "--check"] if backend == sim else []
            status, stdout, err = run(["run", files[name], "--input", files[name + "_x"],
                                       "--output", out, "--backend", backend,
                                       "--report", report, *extra], capsys)
            assert status == 0 and err == "", err
            reports[name, backend] = json.loads(report.read_text())
            if backend == sim:
                assert "check: every layer's output equals the golden model" in stdout
        want, got = (np.load(tmp_path / f"{name}-{b}.npy") for b in ("model", sim))
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want), f"{name}: {sim} output differs from the model's"

    # The report: which layer ran where, cycles, MACs and utilization per layer and in total.
    hw, model = reports["qdq", sim], reports["qdq", "model"]
    assert [r["name"] for r in hw["layers"]] == [r["name"] for r in model["layers"]] \
        == ["conv1", "conv2", "gemm1"]
    assert [r["ran_on"] for r in hw["layers"]] == [sim, sim, sim]
    assert [r["macs"] for r in hw["layers"]] == [r["macs"] for r in model["layers"]]
    pe_simd = HW["pe"] * HW["simd"]
    for r in hw["layers"]:
        assert {"name", "op", "cycles", "macs", "mac_utilization", "ran_on"} <= set(r)
        assert r["cycles"] >= r["macs"] / pe_simd == r["ideal_cycles"]
        assert r["mac_utilization"] == round(r["macs"] / (r["cycles"] * pe_simd), 4)
        assert len(r["cycles_per_sample"]) == 3 and sum(r["cycles_per_sample"]) == r["cycles"]
    assert hw["total"]["cycles"] == sum(r["cycles"] for r in hw["layers"])
    assert hw["total"]["macs"] == model["total"]["macs"]
    assert hw["total"]["sim_cycles"] > hw["total"]["cycles"]
    assert hw["hardware"]["pe"] == HW["pe"] and hw["hardware"]["max_width"] == HW["max_width"]
    assert all(r["ran_on"] == "model" and r["cycles"] is None for r in model["layers"])
    pool = reports["pool", sim]
    assert [r["op"] for r in pool["layers"]] == ["maxpool", "conv", "conv(int32)"]
    assert all(r["ran_on"] == sim for r in pool["layers"])
    assert pool["layers"][0]["mac_cycles"] == 0 and pool["layers"][0]["mac_utilization"] is None


@pytest.mark.parametrize("sim", SIMS)
def test_wide_layer_runs_as_tiles(files, tmp_path, capsys, sim):
    """A 4x20 input on an engine at most 16 wide: output tiles with their halo, bit-exact
    (--check), and the report says how the layer was split."""
    report = tmp_path / "wide.json"
    status, stdout, err = run(["run", files["wide"], "--input", files["wide_x"], "--backend",
                               sim, "--hw-config", HW_JSON, "--check", "--report", report],
                              capsys)
    assert status == 0 and err == "", err
    assert "check: every layer's output equals the golden model" in stdout
    (conv, *_) = json.loads(report.read_text())["layers"]
    assert conv["ran_on"] == sim and conv["passes"] == 2
    assert "2 engine passes" in conv["note"] and "1x2 tile(s)" in conv["note"]


def test_overlapping_pool_runs_decomposed(tmp_path, capsys):
    """A 3x3 stride-1 max-pool needs 3 window slots; HW's pool unit has 2: it runs as two
    2x2 stride-1 pools, bit-exact."""
    model = QNet((1, 3, 8, 8), "int8", seed=9).maxpool(3, stride=1).model()
    path, x = tmp_path / "pool3s1.onnx", tmp_path / "pool3s1_x.npy"
    onnx.save(model, path)
    np.save(x, random_input(model, seed=9))
    status, stdout, err = run(["run", path, "--input", x, "--backend", "icarus",
                               "--hw-config", HW_JSON, "--check"], capsys)
    assert status == 0 and err == "", err
    assert "check: every layer's output equals the golden model" in stdout


def test_layer_no_schedule_holds_is_one_line_error(tmp_path, capsys):
    """Overlapping pool windows on a pool unit of one window slot cannot be split: one line
    naming the layer and the limit, before any simulation."""
    model = QNet((1, 3, 12, 12), "int8", seed=9).maxpool(3, stride=2).model()
    path, x = tmp_path / "pool_3s2.onnx", tmp_path / "pool_3s2_x.npy"
    onnx.save(model, path)
    np.save(x, random_input(model, seed=9))
    status, _, err = run(["run", path, "--input", x, "--backend", "icarus",
                          "--hw-config", json.dumps(dict(HW, pool_window_slots=1))], capsys)
    assert_one_line_error(err, status, 2, "layer 'maxpool1': pool kernel 3x3 at stride 2x2 "
                          "overlaps windows, which needs 2 window slots")


def test_no_pool_unit_runs_pools_on_the_model(files, tmp_path, capsys):
    """A configuration without a max-pool unit (pool_window_slots 0): the convs run on the
    engine, a fused pool and a pool alone on the golden model in the same launch (said so in
    the note); the output is bit-exact."""
    hw = json.dumps(dict(HW, pool_window_slots=0))
    for name in ("qdq", "pool"):
        out, report = tmp_path / f"{name}.npy", tmp_path / f"{name}.json"
        status, stdout, err = run(["run", files[name], "--input", files[name + "_x"],
                                   "--output", out, "--backend", "icarus", "--report", report,
                                   "--hw-config", hw, "--check"], capsys)
        assert status == 0 and err == "", err
        assert "check: every layer's output equals the golden model" in stdout
        layers = json.loads(report.read_text())["layers"]
        if name == "qdq":
            assert [r["ran_on"] for r in layers] == ["icarus"] * 3
            assert "max-pool on the golden model" in layers[0]["note"]
            assert layers[0]["macs"] > 0 and layers[0]["cycles"] > 0
        else:
            assert [r["ran_on"] for r in layers] == ["model", "icarus", "icarus"]
            assert "no max-pool unit" in layers[0]["note"]


def test_watchdog_names_layer_and_what_was_pending(files, capsys, monkeypatch):
    monkeypatch.setitem(cli.BACKENDS, "icarus",
                        lambda **options: HardwareBackend("icarus", stall_output=True, **options))
    status, _, err = run(["run", files["ops"], "--input", files["ops_x"], "--backend", "icarus",
                          "--hw-config", HW_JSON], capsys)
    line = assert_one_line_error(err, status, 2, "layer 'qlinearconv1': watchdog: no result "
                                 # (the input packed: fewer words than output words)
                                 "within", "sample 0: input words sent 53 of 53, output words "
                                 "received 0 of 84", "busy 1", "running 1")
    assert "MAC operations" in line


def test_check_reports_first_mismatch(files, capsys, monkeypatch):
    class Corrupting(cli.ModelBackend):
        def run_layer(self, layer, x):
            y, info = super().run_layer(layer, x)
            if layer.name == "conv2":
                y = y.copy()
                y[1, 4, 1, 0] += 1
            return y, info

    monkeypatch.setitem(cli.BACKENDS, "model", Corrupting)
    status, _, err = run(["run", files["qdq"], "--input", files["qdq_x"], "--check"], capsys)
    assert_one_line_error(err, status, cli.EXIT_MISMATCH, "--check: layer 'conv2' (conv): "
                          "first mismatch at sample 1, channel 4, row 1, column 0: got ",
                          "(1 of 72 values differ)")


def test_dense_as_conv_is_the_same_layer(files):
    net = load_network(files["qdq"])
    dense = net.layers[-1]
    assert isinstance(dense, DenseLayer) and dense.in_shape == (6, 2, 2)
    x = np.random.default_rng(0).integers(0, 256, (4, 6, 2, 2)).astype(np.uint8)
    conv = dense_as_conv(dense)
    assert conv.kernel == (2, 2) and conv.out_shape == (10, 1, 1)
    assert np.array_equal(run_layer(conv, x).reshape(4, -1), run_layer(dense, x))


def test_dense_beyond_the_engine_runs_as_passes(files):
    """A dense layer with more outputs than the engine's channels: output-channel passes on
    the engine, bit-exact."""
    dense = load_network(files["qdq"]).layers[-1]
    backend = HardwareBackend("icarus", dict(HW, max_channels=8))
    try:
        x = np.random.default_rng(3).integers(0, 256, (2, 6, 2, 2)).astype(np.uint8)
        assert engine_fits(dense_as_conv(dense), backend.hw) is not None
        y, info = backend.run_layer(dense, x)
    finally:
        backend.close()
    assert info["ran_on"] == "icarus" and info["passes"] == 2
    assert np.array_equal(y, run_layer(dense, x))


@pytest.mark.parametrize("spec,fragment", [
    ("huge", "unknown hardware configuration 'huge'; choose one of default, ice40"),
    ("{pe: 4}", "is not valid JSON"),
    ("[4]", "must be a JSON object"),
])
def test_bad_hardware_configuration(spec, fragment):
    with pytest.raises(cli.CliError, match="hardware configuration") as info:
        resolve_config(spec)
    assert fragment in str(info.value)


def test_default_configuration_is_the_engines(monkeypatch):
    monkeypatch.delenv("CONVCORE_HW_CONFIG", raising=False)
    assert engine_config(resolve_config()) == engine_config({}) == engine_params()
    monkeypatch.setenv("CONVCORE_HW_CONFIG", HW_JSON)
    assert resolve_config() == HW
