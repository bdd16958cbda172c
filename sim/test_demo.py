"""``convcore demo`` (``make sim``) as a user runs it: a subprocess, its summary, its pictures.

The simulated runs classify a few digits: Icarus on the default hardware configuration (what
``make sim`` builds; Icarus builds it in seconds), Verilator on the small configuration of
:mod:`sim.test_networks` (:data:`sim.testing.NETWORK_HW`; its build is shared; the default one
is the benchmark's, see ``python -m sim.bench digits``). The pictures go to a temporary folder
(``CONVCORE_DEMO_DIR``), never to the user's ``build/demo``.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from examples.digits import MODEL_PATH
from sim.demo import DEMO_DIR_ENV
from sim.onnx_import import load_network
from sim.testing import NETWORK_HW_JSON
from sim.toolchain import ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LIMIT = 4
#: Extra arguments per backend (module docstring).
OPTIONS = {"icarus": [], "verilator": ["--hw-config", NETWORK_HW_JSON], "model": []}
#: Generous: a stuck simulation must fail the test, not hang it (the harness has a watchdog).
TIMEOUT_SECONDS = 600
#: The console script ``make sim`` runs, beside this interpreter (else the module behind it).
CONVCORE = Path(sys.executable).with_name("convcore")
COMMAND = [str(CONVCORE)] if CONVCORE.exists() else [sys.executable, "-m", "sim.cli"]


def convcore_demo(backend, out_dir):
    """``convcore demo --backend BACKEND --limit LIMIT`` in a subprocess: (status, stdout,
    stderr)."""
    env = dict(os.environ, **{DEMO_DIR_ENV: str(out_dir)})
    proc = subprocess.run([*COMMAND, "demo", "--backend", backend, "--limit", str(LIMIT),
                           *OPTIONS[backend]],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_SECONDS)
    return proc.returncode, proc.stdout, proc.stderr


def percent(stdout, label):
    match = re.search(rf"^\s*{label}\s+([\d.]+)%", stdout, re.MULTILINE)
    assert match, f"no '{label}' line in:\n{stdout}"
    return float(match.group(1))


def assert_picture(path):
    """A PNG of a reasonable size with more than a few colours (not blank)."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    pixels = imread(path)[..., :3]
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 200, pixels.shape
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, f"{path} is nearly blank"


@pytest.mark.parametrize("sim", ("icarus", "verilator"))
def test_demo_on_simulated_hardware(tmp_path, sim):
    status, stdout, stderr = convcore_demo(sim, tmp_path)
    assert status == 0, stderr
    assert f"{LIMIT} held-out 8x8 digits" in stdout and f"on the '{sim}' backend" in stdout
    assert f"{LIMIT}/{LIMIT} images on {sim}" in stdout
    assert 0 <= percent(stdout, "accuracy") <= 100
    assert percent(stdout, "agreement, golden model") == 100.0
    for oracle in ("reference", "onnxruntime"):
        line = re.search(rf"agreement, {oracle}\s+([\d.]+)% of values identical, largest "
                         rf"difference (\d+) steps?, ([\d.]+)% same class \[.+\]", stdout)
        assert line, stdout
        # The digits CNN's logits are identical to both oracles on every CPU.
        assert float(line.group(1)) == 100.0 and line.group(2) == "0", line.group(0)
    assert re.search(r"int8 kernels\s+\S", stdout), stdout
    cycles = re.search(r"cycles per image\s+([\d,]+) \(MAC utilization ([\d.]+)%\)", stdout)
    assert cycles and int(cycles.group(1).replace(",", "")) > 0, stdout
    assert re.search(r"images per second\s+[\d,]+ at 100 MHz", stdout), stdout
    assert re.search(r"simulation\s+[\d,]+ cycles in [\d.]+ s \([\d,]+ cycles/s\)", stdout), stdout

    pictures = dict(re.findall(r"picture \(([\w ]+)\): (\S+)", stdout))
    assert set(pictures) == {"activation maps", "layer chart"}, stdout
    for path in pictures.values():
        assert Path(path).parent == tmp_path
        assert_picture(Path(path))

    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["backend"] == sim and summary["images"] == LIMIT
    assert summary["agreement_golden"] == 1.0
    assert [layer["name"] for layer in summary["layers"]] == \
        [layer.name for layer in load_network(MODEL_PATH).layers]
    assert all(layer["ran_on"] == sim for layer in summary["layers"])
    assert summary["cycles_per_image"] == pytest.approx(
        sum(layer["cycles"] for layer in summary["layers"]) / LIMIT)
    assert int(cycles.group(1).replace(",", "")) == round(summary["cycles_per_image"])


def test_demo_on_golden_model(tmp_path):
    status, stdout, stderr = convcore_demo("model", tmp_path)
    assert status == 0, stderr
    assert percent(stdout, "agreement, golden model") == 100.0
    assert "run time" in stdout and "cycles per image" not in stdout
    # No cycles on the golden model: the activation maps, but no layer chart.
    pictures = dict(re.findall(r"picture \(([\w ]+)\): (\S+)", stdout))
    assert set(pictures) == {"activation maps"}, stdout
    assert_picture(Path(pictures["activation maps"]))
    assert not (tmp_path / "layer_cycles.png").exists()


def test_demo_rejects_bad_limit(tmp_path):
    env = dict(os.environ, **{DEMO_DIR_ENV: str(tmp_path)})
    proc = subprocess.run([*COMMAND, "demo", "--backend", "model", "--limit", "0"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "convcore: error: --limit must be at least 1, not 0"
