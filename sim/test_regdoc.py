"""``python -m sim.regdoc``: generated outputs, the README check and one-line errors."""

import subprocess
import sys

import pytest

from rtl.regmap import Field, Register, RegisterMap, markdown_table
from sim import regdoc
from sim.toolchain import ROOT

MAP_SPEC = "sim.test_regdoc:MAP"
MAP = RegisterMap("cli_demo", [
    Register("CTRL", 0x00, [Field("go", 1, "w1p", doc="Go")], doc="Control"),
    Register("SIZE", 0x04, [Field("width", 12, "rw", reset=8, doc="Width")]),
], doc="CLI test map")


def make_map():
    return MAP


def run(*args):
    return subprocess.run([sys.executable, "-m", "sim.regdoc", *args], capture_output=True,
                          text=True, cwd=ROOT)


@pytest.mark.parametrize("kind, render", [("--markdown", "markdown"), ("--readme", "readme"),
                                          ("--python", "python"), ("--c-header", "c-header")])
def test_outputs(kind, render, tmp_path):
    result = run(kind, "--map", MAP_SPEC)
    assert result.returncode == 0, result.stderr
    assert result.stdout == regdoc.render(MAP, render)
    out = tmp_path / "sub" / "regs.txt"
    assert run(kind, "--map", MAP_SPEC, "-o", str(out)).returncode == 0
    assert out.read_text() == result.stdout


def test_map_may_be_a_function():
    assert regdoc.load_map("sim.test_regdoc:make_map") is MAP


def test_update_then_check(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{regdoc.BEGIN}\nold table\n{regdoc.END}\n\nAfter.\n")
    stale = run("--check", str(readme), "--map", MAP_SPEC)
    assert stale.returncode == 1
    assert stale.stderr == (f"error: the register table in {readme} is stale: run "
                            f"'python -m sim.regdoc --update {readme}'\n")
    assert run("--update", str(readme), "--map", MAP_SPEC).returncode == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n") and text.endswith("\n\nAfter.\n")
    assert markdown_table(MAP) in text and "- `w1p`: write 1" in text
    assert run("--check", str(readme), "--map", MAP_SPEC).returncode == 0
    pasted = tmp_path / "PASTED.md"
    pasted.write_text("# Title\n\n" + run("--readme", "--map", MAP_SPEC).stdout + "\nAfter.\n")
    assert pasted.read_text() == text, "--readme output is what --update writes"
    assert run("--update", str(readme), "--map", MAP_SPEC).returncode == 0
    assert readme.read_text() == text, "updating a current table changes nothing"


@pytest.mark.parametrize("args, message", [
    (["--markdown", "--map", "rtl.regmap"], "--map must look like MODULE:NAME, not 'rtl.regmap'"),
    (["--markdown", "--map", "no_such_module:X"],
     "cannot import 'no_such_module' for the register map: No module named 'no_such_module'"),
    (["--markdown", "--map", "rtl.regmap:NOPE"], "module 'rtl.regmap' has no 'NOPE'"),
    (["--markdown", "--map", "rtl.regmap:ACCESS"],
     "rtl.regmap:ACCESS is a dict, not a RegisterMap"),
    (["--check", "no/such/README.md", "--map", MAP_SPEC],
     "cannot read no/such/README.md: No such file or directory"),
])
def test_errors_are_one_line(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr == f"error: {message}\n"


def test_file_without_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# No table\n")
    result = run("--update", str(readme), "--map", MAP_SPEC)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {readme} has no register table: add the two lines")
    assert result.stderr.count("\n") == 1
    assert readme.read_text() == "# No table\n"


def test_readme_register_table_is_current():
    """README.md documents the engine's register map exactly as rtl/engine_regs.py defines it."""
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("no README.md yet")
    regmap = regdoc.load_map()
    assert regdoc.is_current(readme.read_text(), regmap, readme), \
        "README.md's register table is stale: run 'python -m sim.regdoc --update README.md'"
