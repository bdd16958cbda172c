"""Verilator ``--lint-only -Wall`` on the Verilog that every rtl component emits.

Add each new component (and any configuration that changes its structure) to ``COMPONENTS``.
A warning outside the project's waivers (:data:`sim.verilog_export.WAIVERS`, the same that
``make verilog`` ships beside the exported Verilog) fails the test; every waiver names the
construct of the generated Verilog that triggers it and why that construct is correct.
"""

import pytest

from rtl.maxpool import MaxPool, MaxPoolAxis
from rtl.requantize import Requantize, RequantizeAxis
from sim.runner import config_key, emit_verilog
from sim.verilog_export import lint, write_waivers

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

@pytest.mark.parametrize("toplevel, component, config", [
    pytest.param(toplevel, component, config, id=config_key(toplevel, config))
    for toplevel, component, config in COMPONENTS])
def test_verilator_lint(toplevel, component, config):
    source = emit_verilog(component(**config), toplevel=toplevel,
                          key=config_key(toplevel, config))
    messages = lint(source, toplevel, write_waivers(source.parent / "lint_waivers.vlt"))
    assert not messages, f"{source}:\n" + "\n".join(messages)
