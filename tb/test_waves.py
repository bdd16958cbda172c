"""Waveforms on request: ``WAVES=1`` makes :func:`sim.runner.run_cocotb` write an FST file.

A counter (:class:`Counter`) counts for :data:`COUNT_CYCLES` cycles under a cocotb test; pytest
runs it with tracing on both simulators and checks that ``build/waves/.../counter-SIM.fst``
exists and is an FST file whose header spans the simulated time, and that a tracing build is
cached apart from a build without tracing.
"""


import cocotb
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from sim import toolchain

TOPLEVEL = "counter"
COUNT_WIDTH = 8
COUNT_CYCLES = 20
CLOCK_PERIOD_NS = 10

class Counter(wiring.Component):
    """Counts the cycles in which ``en`` is high."""

    def __init__(self, width=COUNT_WIDTH):
        super().__init__({"en": In(1), "count": Out(width)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        return m


@cocotb.test()
async def counter_counts(dut):
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
    dut.en.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    dut.en.value = 1
    await ClockCycles(dut.clk, COUNT_CYCLES)
    dut.en.value = 0
    await RisingEdge(dut.clk)
    assert int(dut.count.value) == COUNT_CYCLES, \
        f"count {int(dut.count.value)} after {COUNT_CYCLES} enabled cycles"


def _run(sim, waves):
    from sim.runner import config_key, emit_verilog, run_cocotb

    key = config_key(TOPLEVEL, {"width": COUNT_WIDTH})
    source = emit_verilog(Counter(), toplevel=TOPLEVEL, key=key)
    run_cocotb(sim, sources=[source], toplevel=TOPLEVEL, key=key, test_module=__name__,
               waves=waves)
    return key


@pytest.mark.parametrize("sim", toolchain.SIMULATORS)
def test_waves(sim, monkeypatch):
    from sim.runner import waves_file

    monkeypatch.setenv(toolchain.WAVES_ENV, "1")
    path = waves_file(sim, TOPLEVEL, __name__)
    assert path.is_relative_to(toolchain.WAVES_DIR), path
    path.unlink(missing_ok=True)
    key = _run(sim, waves=None)                     # $WAVES decides
    assert path.is_file(), f"no waveform at {path}"
    header = toolchain.fst_header(path)
    assert header["variables"] >= 4, header         # clk, rst, en, count
    assert header["end"] >= COUNT_CYCLES * CLOCK_PERIOD_NS, header

    tracing = toolchain.sim_build_dir(key, sim, waves=True)
    plain = toolchain.sim_build_dir(key, sim, waves=False)
    written = path.stat().st_mtime_ns
    monkeypatch.setenv(toolchain.WAVES_ENV, "0")
    _run(sim, waves=None)
    assert path.stat().st_mtime_ns == written, "a run without waves rewrote the waveform"
    if sim == "icarus":     # cocotb's $dumpfile module is compiled into the tracing build only
        assert b"cocotb_iverilog_dump" in (tracing / "sim.vvp").read_bytes()
        assert b"cocotb_iverilog_dump" not in (plain / "sim.vvp").read_bytes()
    else:                   # Verilator's make flags say whether FST tracing is compiled in
        assert "VM_TRACE_FST = 1" in (tracing / "Vtop_classes.mk").read_text()
        assert "VM_TRACE_FST = 0" in (plain / "Vtop_classes.mk").read_text()


def test_waves_argument_wins_over_environment(monkeypatch):
    """``waves=True`` (``convcore run --waves``) traces even under ``WAVES=0``: cocotb's
    runner would otherwise let the variable override the argument."""
    from sim.runner import waves_file

    monkeypatch.setenv(toolchain.WAVES_ENV, "0")
    path = waves_file("icarus", TOPLEVEL, __name__)
    path.unlink(missing_ok=True)
    _run("icarus", waves=True)
    assert toolchain.fst_header(path)["variables"] >= 4


def test_waves_bad_value(monkeypatch):
    monkeypatch.setenv(toolchain.WAVES_ENV, "maybe")
    with pytest.raises(toolchain.ToolchainError,
                       match=r"^WAVES='maybe' is neither on \(1, yes, true, on\) nor off "
                             r"\(0, no, false, off\)$"):
        toolchain.waves_requested()
