"""``convcore run --waves``: an FST waveform under build/waves/ whose path the run prints, on
both hardware backends; a one-line error with the golden model, which has no waveform."""

import json

import numpy as np
import onnx
import pytest

from sim import cli, toolchain
from sim.testing import QNet, random_input

#: A small engine (the one sim/test_hw_backend.py uses): it builds in seconds.
HW_JSON = json.dumps(dict(pe=4, simd=4, max_kernel=5, max_width=16, max_height=16,
                          max_channels=16, weight_depth=256, max_stride=3, max_dilation=2))


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    """One int8 3x3 conv on a 2 x 6 x 6 input: (model path, input path)."""
    d = tmp_path_factory.mktemp("waves")
    model = QNet((1, 2, 6, 6), "int8", seed=11).qlinear_conv(4, 3).model()
    onnx.save(model, d / "conv.onnx")
    np.save(d / "x.npy", random_input(model, seed=12))
    return d / "conv.onnx", d / "x.npy"


def run(args, capsys):
    """In-process ``convcore ARGS``: (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize("sim", toolchain.SIMULATORS)
def test_run_waves(conv, sim, capsys, monkeypatch):
    monkeypatch.setenv(toolchain.WAVES_ENV, "0")    # --waves wins over the environment
    model, x = conv
    status, out, err = run(["run", model, "--input", x, "--backend", sim,
                            "--hw-config", HW_JSON, "--check", "--waves"], capsys)
    assert status == 0, err
    lines = [line for line in out.splitlines() if line.startswith("waves: ")]
    assert len(lines) == 1, out
    path = toolchain.ROOT / lines[0].removeprefix("waves: ")
    assert path.is_file() and path.suffix == ".fst", path
    assert path.is_relative_to(toolchain.WAVES_DIR), path
    header = toolchain.fst_header(path)         # ToolchainError unless it is an FST file
    assert header["end"] > header["start"] and header["variables"] > 0, header


def test_run_waves_needs_hardware(conv, capsys):
    model, x = conv
    status, out, err = run(["run", model, "--input", x, "--waves"], capsys)
    assert status == cli.EXIT_USAGE
    assert err == ("convcore: error: --waves needs a hardware backend (--backend icarus or "
                   "verilator)\n")
