"""Elaboration checks of the MAC array's multiplier variants and of the ECP5 DSP wrapper.

The arithmetic of both variants is simulated against the golden sums in tb/test_mac_array.py
(Icarus, with a behavioural model of the ECP5 primitive) and, for the generic variant, in
tb/test_engine_parts.py (Amaranth simulator); here: latencies, what the netlists contain,
which configuration gets which variant, and the constructors' messages.
"""

import re

import pytest
from amaranth.back import rtlil

from rtl.dsp import Ecp5Multiplier
from rtl.mac_array import ECP5_STAGES, MacArray, tree_depth
from sim.configs import get

#: Constructors that are expected to fail leave half-built elaboratables behind.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")


def _unused(component):
    """``component`` itself, marked as intentionally never elaborated."""
    component._MustUse__silence = True
    return component


def _cells(component, cell_type):
    text = rtlil.convert(component, name="top", emit_src=False)
    return re.findall(rf"^  cell \\{cell_type} .*?^  end$", text, re.M | re.S)


@pytest.mark.parametrize("pe, simd", [(1, 1), (2, 4), (8, 8)])
def test_latency_counts_the_dsp_registers(pe, simd):
    assert _unused(MacArray(pe, simd)).latency == 4 + tree_depth(simd)
    assert _unused(MacArray(pe, simd, dsp="ecp5")).latency == \
        3 + len(ECP5_STAGES) + tree_depth(simd)


def test_generic_variant_is_vendor_free():
    assert _cells(MacArray(2, 3), "MULT18X18D") == []


def test_ecp5_variant_has_one_registered_dsp_per_multiply():
    cells = _cells(MacArray(2, 3, dsp="ecp5"), "MULT18X18D")
    assert len(cells) == 2 * 3
    for cell in cells:
        for register in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT"):
            assert f'parameter \\REG_{register}_CLK "CLK0"' in cell
        assert 'parameter \\SOURCEB_MODE "B_INPUT"' in cell
        assert re.search(r"connect \\CLK0 \\clk\b", cell)


def test_multiplier_latency_follows_its_registers():
    assert _unused(Ecp5Multiplier(9, 9)).latency == 3
    assert _unused(Ecp5Multiplier(9, 9, ("output", "input"))).stages == ("input", "output")
    cell, = _cells(Ecp5Multiplier(18, 4, ("input",)), "MULT18X18D")
    assert 'parameter \\REG_PIPELINE_CLK "NONE"' in cell
    assert 'parameter \\REG_OUTPUT_CLK "NONE"' in cell


def test_only_ecp5_synthesis_of_mac_default_gets_the_primitive():
    config = get("mac-default")
    assert _unused(config.build()).dsp == "generic"       # make verilog, lint, simulation
    assert _unused(config.build("ice40")).dsp == "generic"
    ecp5 = _unused(config.build("ecp5"))
    assert ecp5.dsp == "ecp5" and config.resolved_params(ecp5)["dsp"] == "ecp5"


@pytest.mark.parametrize("make, message", [
    (lambda: MacArray(2, 2, dsp="xilinx"), "dsp must be one of 'generic', 'ecp5', not 'xilinx'"),
    (lambda: Ecp5Multiplier(19, 9), "a_width must be an integer from 1 to 18, not 19"),
    (lambda: Ecp5Multiplier(9, 0), "b_width must be an integer from 1 to 18, not 0"),
    (lambda: Ecp5Multiplier(9, 9, ("output",)),
     r"stages must hold 'input' and any of 'pipeline' and 'output', each once, "
     r"not \('output',\)"),
    (lambda: Ecp5Multiplier(9, 9, ("input", "input")),
     r"stages must hold .*, not \('input', 'input'\)"),
])
def test_constructors_reject_bad_parameters(make, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        make()
