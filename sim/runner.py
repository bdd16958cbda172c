"""Build an Amaranth component into Verilog and run cocotb tests on it.

One build folder per (component, hardware configuration, simulator) under ``build/sim``:
the Verilog is rewritten only when its text changes, so Verilator's own up-to-date check
skips the C++ build on a second run of the same configuration.

Waveforms: with ``WAVES=1`` in the environment (or ``waves=True``) every run writes an FST
file, ``build/waves/TEST/TOPLEVEL-SIM.fst`` (:func:`waves_file`; TEST is the pytest test, or
the cocotb module outside pytest), from a build of its own (``build/sim/KEY-SIM-waves``).
"""

import fcntl
import hashlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from amaranth.back import verilog

from sim import toolchain


def config_key(name: str, config: dict) -> str:
    """A short, stable folder name for one hardware configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return f"{name}-{hashlib.sha1(blob).hexdigest()[:10]}"


def write_if_changed(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` unless it already holds it (keeps the mtime for up-to-date checks).

    The write is atomic (a temporary file renamed over ``path``), so a parallel pytest worker
    compiling the same file never reads it half written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def emit_verilog(component, *, toplevel: str, key: str) -> Path:
    """Convert ``component`` to Verilog as module ``toplevel`` under build/verilog/KEY/."""
    text = verilog.convert(component, name=toplevel, emit_src=False)
    return write_if_changed(toolchain.BUILD / "verilog" / key / f"{toplevel}.v", text)


def count_results(results_xml: Path) -> tuple[int, int]:
    """(tests, failures) in a cocotb results file."""
    root = ET.parse(results_xml).getroot()
    cases = root.findall(".//testcase")
    failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    return len(cases), len(failed)


def waves_file(sim: str, toplevel: str, test_module: str) -> Path:
    """Where :func:`run_cocotb` writes the waveform of ``toplevel`` on ``sim``: under
    ``build/waves/``, in a folder named after the running pytest test (``tb/test_x.py::test_y[p]``
    becomes ``tb.test_x.test_y-p``) or, outside pytest, after ``test_module``."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    test = test.replace(".py::", ".").replace("::", ".").replace("/", ".") or test_module
    return toolchain.waves_path(test, f"{toplevel}-{sim}")


def run_cocotb(sim: str, *, sources: list[Path], toplevel: str, key: str, test_module: str,
               testcase: str | list[str] | None = None, extra_env: dict | None = None,
               timing: bool = False, seed: int | None = None,
               ports_only: bool = False, waves: bool | None = None) -> tuple[int, int]:
    """Compile ``sources`` for ``sim`` and run the cocotb tests in ``test_module``.

    ``ports_only``: the tests touch only top-level ports (see
    :func:`sim.toolchain.build_args`; Verilator builds and runs faster). ``waves``: write an
    FST waveform to :func:`waves_file` (default: ``$WAVES``). Fails (under pytest)
    when any test failed, and raises when no test ran at all.
    """
    from cocotb_tools.runner import get_runner

    waves = toolchain.waves_requested() if waves is None else waves
    toolchain.activate(sim, waves=waves)
    build_dir = toolchain.sim_build_dir(key, sim, waves=waves)
    runner = get_runner(sim)
    build_dir.mkdir(parents=True, exist_ok=True)
    extra_env = dict(extra_env or {})
    trace = {}
    if waves:
        path = waves_file(sim, toplevel, test_module)
        trace = toolchain.waves_test_options(sim, path)
        extra_env.setdefault("COCOTB_RESULTS_ATTACHMENTS", str(path))
    # pytest-xdist workers may share a configuration: one builds, the others wait and reuse it.
    with toolchain.waves_env(waves):
        with open(build_dir / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir,
                         build_args=toolchain.build_args(sim, timing=timing,
                                                         ports_only=ports_only, waves=waves),
                         timescale=("1ns", "1ps"), waves=waves)
        results = runner.test(test_module=test_module, hdl_toplevel=toplevel,
                              build_dir=build_dir, test_dir=build_dir, testcase=testcase,
                              extra_env=extra_env, seed=seed, timescale=("1ns", "1ps"),
                              waves=waves, **trace)
    tests, failed = count_results(results)
    if tests == 0:
        raise AssertionError(f"no cocotb test ran from {test_module} on {sim}")
    if failed:
        raise AssertionError(f"{failed} of {tests} cocotb tests failed in {test_module} on {sim}")
    return tests, failed
