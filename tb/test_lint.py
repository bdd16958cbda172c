"""Verilator ``--lint-only -Wall`` on the Verilog that every rtl component emits.

Add each new component (and any configuration that changes its structure) to ``COMPONENTS``.
A warning outside ``WAIVERS`` fails the test; every waiver names the construct of the
generated Verilog that triggers it and why that construct is correct.
"""

import subprocess

import pytest

from rtl.maxpool import MaxPool, MaxPoolAxis
from rtl.requantize import Requantize, RequantizeAxis
from sim import toolchain
from sim.runner import config_key, emit_verilog

#: (top-level module name, component class, constructor arguments).
COMPONENTS = [
    ("requantize", Requantize, {}),
    ("requantize", Requantize, {"acc_width": 24, "mult_width": 16, "out_width": 8}),
    ("requantize", Requantize, {"mult_width": 1}),
    ("requantize_axis", RequantizeAxis, {}),
    ("requantize", Requantize, {"iterative": True}),
    ("requantize", Requantize, {"acc_width": 24, "mult_width": 16, "iterative": True}),
    ("maxpool", MaxPool, {}),
    ("maxpool_axis", MaxPoolAxis, dict(lanes=4, max_kernel=7, max_width=16, max_height=16,
                                       max_channels=16, max_stride=3, max_dilation=2)),
    ("maxpool", MaxPool, dict(lanes=1, max_kernel=1, max_width=1, max_channels=1)),
    ("maxpool", MaxPool, dict(lanes=2, max_kernel=3, max_width=5, max_channels=3,
                              window_slots=2)),
]

#: Verilator warnings that Amaranth's Verilog backend (Yosys ``write_verilog``) produces by
#: design. Flag -> reason.
WAIVERS = {
    "-Wno-UNUSEDSIGNAL":
        "Amaranth keeps every named signal and every struct field of a View as a debug alias "
        "wire that nothing reads (e.g. 's1_side.relu', 'i__payload.acc'), and Yosys leaves the "
        "high bits of its intermediate results unread where Amaranth truncates (e.g. "
        "\"'$20'[78:63]\"). Ignored inputs are caught by the cocotb tests, not by lint.",
    "-Wno-PROCASSINIT":
        "Amaranth gives every register its reset value as a declaration initializer "
        "('reg s1_valid = 1'h0;'), the power-on value FPGAs load, and assigns it in an "
        "always block.",
    "-Wno-WIDTHEXPAND":
        "Yosys writes signed adds and compares with operands of their own widths "
        "(\"$signed(s3_half) > $signed(11'h3ff)\") and relies on Verilog's sign extension; "
        "Amaranth has already sized every result exactly.",
    "-Wno-DECLFILENAME":
        "Amaranth writes the whole hierarchy into one file named after the top module, so "
        "submodules ('requantize_axis.core') do not match the file name.",
}


@pytest.mark.parametrize("toplevel, component, config", [
    pytest.param(toplevel, component, config, id=config_key(toplevel, config))
    for toplevel, component, config in COMPONENTS])
def test_verilator_lint(toplevel, component, config):
    source = emit_verilog(component(**config), toplevel=toplevel,
                          key=config_key(toplevel, config))
    toolchain.activate("verilator")
    result = subprocess.run(
        ["verilator", "--lint-only", "-Wall", *WAIVERS, "--top-module", toplevel, str(source)],
        capture_output=True, text=True, check=False)
    report = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and "%Warning" not in report, f"{source}:\n{report}"
