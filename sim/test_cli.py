"""The ``convcore`` command line: ``run`` and ``plan`` on the model backend, the JSON report, and
one-line errors with exit status 2 (run as a real subprocess, as a user would)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from model.oracle import ORT_NAME, REFERENCE_NAME, run_onnxruntime, run_reference, steps
from sim import cli
from sim.onnx_import import import_model
from sim.testing import FloatNet, QNet, quantize_qdq, random_input

ROOT = Path(__file__).resolve().parent.parent


def convcore(*args, cwd=ROOT):
    """Run ``python -m sim.cli ARGS`` and return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "sim.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("convcore: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Models and inputs shared by the tests of this module."""
    d = tmp_path_factory.mktemp("cli")
    fnet = (FloatNet((1, 3, 7, 7), symbolic_batch=True).conv(4, 3, stride=3).relu()
            .maxpool(2, ceil_mode=1).flatten().gemm(10))
    qdq = quantize_qdq(fnet.model(), activation="uint8", per_channel=True)
    paths = {"qdq": d / "qdq.onnx", "x": d / "x.npy", "x64": d / "x64.npy",
             "xshape": d / "xshape.npy", "int8": d / "int8.onnx", "xint8": d / "xint8.npy",
             "raw": d / "raw.onnx", "float": d / "float.onnx", "avgpool": d / "avgpool.onnx",
             "garbage": d / "garbage.onnx", "garbage_npy": d / "garbage.npy"}
    onnx.save(qdq, paths["qdq"])
    x = random_input(qdq, seed=1, batch=3)
    np.save(paths["x"], x)
    np.save(paths["x64"], x.astype(np.float64))
    np.save(paths["xshape"], x[:, :, :6])
    int8 = QNet((2, 3, 8, 8), "int8").qlinear_conv(4, 3).maxpool(2).model()
    onnx.save(int8, paths["int8"])
    np.save(paths["xint8"], random_input(int8, seed=2))
    onnx.save(QNet((2, 3, 8, 8), "int8").conv_integer(4, 3).model(), paths["raw"])
    onnx.save(FloatNet((1, 3, 7, 7)).conv(4, 3).relu().model(), paths["float"])
    onnx.save(quantize_qdq(FloatNet((1, 3, 7, 7)).conv(4, 3).node("AveragePool",
                                                                  kernel_shape=[2, 2]).model()),
              paths["avgpool"])
    paths["garbage"].write_bytes(b"this is not an onnx model")
    paths["garbage_npy"].write_bytes(b"not numpy")
    return paths


def test_run_model_backend_matches_the_oracles(files, tmp_path):
    out, report = tmp_path / "y.npy", tmp_path / "report.json"
    proc = convcore("run", files["qdq"], "--input", files["x"], "--output", out,
                    "--backend", "model", "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    model = onnx.load(files["qdq"])
    x = np.load(files["x"])
    got = np.load(out)
    net = import_model(model)
    for oracle in (run_reference, run_onnxruntime):
        want = oracle(model, x)[0]
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape == (3, 10)
        assert steps(got, want, net.output_scale).max() <= len(net.layers), oracle.__name__
    data = json.loads(report.read_text())
    assert [layer["name"] for layer in data["layers"]] == ["conv1", "gemm1"]
    assert [layer["op"] for layer in data["layers"]] == ["conv+maxpool", "dense"]
    assert data["layers"][0]["macs"] == 3 * (4 * 2 * 2 * 3 * 9)  # batch 3
    assert all(layer["ran_on"] == "model" for layer in data["layers"])
    assert data["total"] == {"layers": 2, "macs": sum(layer["macs"] for layer in data["layers"]),
                             "batch": 3}
    assert "conv1" in proc.stdout and f"written to {out}" in proc.stdout


def test_check_reports_agreement_with_the_oracles(files):
    proc = convcore("run", files["qdq"], "--input", files["x"], "--check")
    assert proc.returncode == 0, proc.stderr
    for name in (REFERENCE_NAME, ORT_NAME):
        line = re.search(rf"^check: output vs {re.escape(name)}: ([\d.]+)% of values identical, "
                         rf"largest difference (\d+) steps?, [\d.]+% same class$", proc.stdout,
                         re.MULTILINE)
        assert line, proc.stdout
        assert int(line.group(2)) <= 1, line.group(0)


@pytest.mark.parametrize("model,x,dtype,shape", [
    ("int8", "xint8", np.int8, (2, 4, 3, 3)),
    ("raw", "xint8", np.int32, (2, 4, 6, 6)),
])
def test_run_integer_outputs_in_process(files, tmp_path, capsys, model, x, dtype, shape):
    out = tmp_path / "y.npy"
    assert cli.main(["run", str(files[model]), "--input", str(files[x]),
                     "--output", str(out)]) == 0
    got = np.load(out)
    for oracle in (run_reference, run_onnxruntime):
        want = oracle(onnx.load(files[model]), np.load(files[x]))[0]
        assert got.dtype == want.dtype == dtype and got.shape == want.shape == shape
        if dtype == np.int32:
            np.testing.assert_array_equal(got, want)
        else:
            assert steps(got, want).max() <= 1, oracle.__name__
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args", [("plan",), ("plan", "--json"), ("run", "--input")])
def test_closed_pipe_is_quiet(files, args):
    """``convcore plan MODEL | head -1``: a reader that goes away early gets no error line and
    no traceback. The pipe's read end is closed before convcore writes, so every write fails."""
    argv = [args[0], files["qdq"], *args[1:]]
    if args[0] == "run":
        argv.append(files["x"])
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "sim.cli", *map(str, argv)], cwd=ROOT,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == cli.EXIT_BROKEN_PIPE


def test_plan_table_and_json(files):
    proc = convcore("plan", files["qdq"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split()[:4] == ["layer", "op", "input", "output"]
    assert any(line.startswith("conv1 ") and "3x7x7" in line and "4x1x1" in line
               for line in lines)
    assert sum(line.startswith("warning: layer 'conv1' conv") for line in lines) == 2
    proc = convcore("plan", files["qdq"], "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [row["name"] for row in data["layers"]] == ["conv1", "gemm1"]
    assert data["layers"][0]["params"] == 4 * 28 and data["layers"][1]["params"] == 50
    assert data["total"]["params"] == 4 * 28 + 50
    assert len(data["warnings"]) == 2 and "2.33 is not an integer" in data["warnings"][0]


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "convcore"
    assert script.exists(), "run 'pip install -e .[dev]' to install the convcore console script"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "run" in proc.stdout and "plan" in proc.stdout


@pytest.mark.parametrize("case", [
    "missing_model", "garbage_model", "unsupported_op", "float_model", "input_shape",
    "input_dtype", "missing_input", "garbage_input", "hw_config_on_model", "hw_config_unknown",
    "hw_config_json", "output_folder",
])
def test_errors_are_one_line_exit_2(files, tmp_path, case):
    run = ("run", files["qdq"], "--input", files["x"], "--output", tmp_path / "y.npy")
    args, fragments = {
        "missing_model": (("plan", tmp_path / "nope.onnx"), ["nope.onnx", "does not exist"]),
        "garbage_model": (("plan", files["garbage"]),
                          ["garbage.onnx", "is not a valid ONNX model"]),
        "unsupported_op": (("run", files["avgpool"], "--input", files["x"]),
                           ["node 'averagepool1' (AveragePool): operator AveragePool is not "
                            "supported"]),
        "float_model": (("plan", files["float"]),
                        ["node 'conv1' (Conv):", "not quantized"]),
        "input_shape": (("run", files["qdq"], "--input", files["xshape"]),
                        ["input 'x': expected shape (N, 3, 7, 7) float32, got (3, 3, 6, 7) "
                         "float32"]),
        "input_dtype": (("run", files["qdq"], "--input", files["x64"]),
                        ["input 'x': expected shape (N, 3, 7, 7) float32, got (3, 3, 7, 7) "
                         "float64"]),
        "missing_input": (("run", files["qdq"], "--input", tmp_path / "none.npy"),
                          ["input file", "none.npy", "does not exist"]),
        "garbage_input": (("run", files["qdq"], "--input", files["garbage_npy"]),
                          ["garbage.npy", "is not a valid .npy file"]),
        "hw_config_on_model": ((*run, "--hw-config", "ice40"),
                               ["--hw-config needs a hardware backend"]),
        "hw_config_unknown": ((*run, "--backend", "icarus", "--hw-config", "huge"),
                              ["unknown hardware configuration 'huge'", "default"]),
        "hw_config_json": ((*run, "--backend", "verilator", "--hw-config", '{"pe": 3}'),
                           ["hardware configuration", "pe must be a power of two", "not 3"]),
        "output_folder": (("run", files["qdq"], "--input", files["x"], "--output",
                           tmp_path / "no" / "y.npy"), ["cannot write", "does not exist"]),
    }[case]
    assert_one_line_error(convcore(*args), *fragments)


def test_backends_are_looked_up_by_name():
    assert set(cli.BACKENDS) == {"model", "icarus", "verilator"}
    backend = cli.BACKENDS["model"]()
    net = import_model(QNet((1, 3, 6, 6), "uint8").qlinear_conv(2, 3).model())
    x = np.zeros((1, 3, 6, 6), np.uint8)
    y, info = backend.run_layer(net.layers[0], x)
    assert y.shape == (1, 2, 4, 4) and info == {"ran_on": "model"}


def test_plan_with_hardware_configuration(files):
    proc = convcore("plan", files["qdq"], "--hw-config", "ice40")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].split()[-3:] == ["engine", "est.", "cycles"]
    data = json.loads(convcore("plan", files["qdq"], "--json", "--hw-config", "default").stdout)
    assert [row["runs_on"] for row in data["layers"]] == ["engine", "engine"]
    assert all(len(row["passes"]) == 1 and row["est_cycles"] > 0 for row in data["layers"])
    proc = convcore("plan", files["qdq"], "--hw-config", "nope")
    assert proc.returncode == 2 and proc.stderr.startswith(
        "convcore: error: unknown hardware configuration 'nope'")
