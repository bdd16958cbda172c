"""Synthesis smoke test: a small multiplier design through the real Yosys + nextpnr flow.

The design is a stand-in for the engine's MAC array: a pipelined PE x SIMD int8 dot product
(:class:`sim.testing.DotProduct`), so that an unsynthesizable construct or a broken flow fails
`make test` without waiting for the full engine.
"""

import json

import pytest
from amaranth.sim import Simulator

from rtl.mac_array import MacArray
from sim import configs, synth
from sim.testing import DotProduct
from sim.verilog_export import Port


def test_stand_in_computes_dot_products():
    dut = DotProduct(pe=2, simd=3)
    vectors = [([1, -2, 3], [[4, 5, -6], [-128, 127, 0]]), ([-128, -128, -128], [[-128] * 3, [127] * 3])]
    want = [[sum(a * b for a, b in zip(x, w_row)) for w_row in w] for x, w in vectors]
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for x, w in vectors:
            ctx.set(dut.i.payload, {"x": x, "w": w})
            ctx.set(dut.i.valid, 1)
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for _ in range(dut.latency + 1):
            if ctx.get(dut.o.valid):
                got.append([ctx.get(dut.o.payload[p]) for p in range(dut.pe)])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == want


@pytest.mark.parametrize("device, source", [("ice40", "rtlil"), ("ecp5", "verilog")])
def test_flow_maps_multipliers_to_dsps(device, source, tmp_path):
    pe, simd = 1, 2
    report = synth.synthesize(DotProduct(pe, simd), config=f"dot{pe}x{simd}", device=device,
                              toplevel="dot_product", freq_mhz=20,
                              macs_per_cycle=pe * simd, out_dir=tmp_path, source=source)
    assert report["source"] == source
    res = report["resources"]
    assert res["dsps"]["used"] == pe * simd, f"{pe * simd} multipliers, {res['dsps']} DSPs"
    assert report["macs_per_dsp"] == 1
    assert res["dsps"]["available"] == {"ice40": 8, "ecp5": 156}[device]
    assert res["luts"]["used"] > 0 and res["ffs"]["used"] >= report["harness"]["input_bits"]
    assert all(v["used"] <= v["available"] for v in res.values())
    assert set(report["clocks"]) == {"clk"}
    clk = report["clocks"]["clk"]
    assert clk["achieved_mhz"] > 0 and clk["target_mhz"] == 20
    assert report["fmax_mhz"] == clk["achieved_mhz"]
    assert report["peak_gops"] == pytest.approx(2 * pe * simd * clk["achieved_mhz"] / 1000, rel=1e-3)
    assert report["critical_path"]["delay_ns"] > 0
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert synth.summary_row(report) in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("crash", synth.ABC9_CRASHES)
def test_abc9_crash_falls_back_to_the_classic_abc(tmp_path, monkeypatch, crash):
    """Yosys 0.70's ABC9 fails on some netlists with an assertion: the flow maps the LUTs with
    the classic ABC instead and says so. The first Yosys run is replaced by that failure."""
    real_run, calls = synth._run, []

    def run(cmd, log):
        calls.append(cmd[0])
        if "yosys" in cmd[0] and len(calls) == 1:
            (log.parent / "yosys.log").write_text(f"ERROR: Assert `{crash}' failed\n")
            return 1, ""
        return real_run(cmd, log)

    monkeypatch.setattr(synth, "_run", run)
    report = synth.synthesize(DotProduct(1, 2), config="dot1x2", device="ecp5",
                              toplevel="dot_product", freq_mhz=20, macs_per_cycle=2,
                              out_dir=tmp_path)
    assert report["flow"]["yosys"].endswith("(ABC9 fallback)")
    assert "abc -lut" in (tmp_path / "synth.ys").read_text()
    assert report["resources"]["dsps"]["used"] == 2 and report["fmax_mhz"] > 0


def test_other_yosys_failures_are_not_retried(tmp_path, monkeypatch):
    def run(cmd, log):
        (log.parent / "yosys.log").write_text("ERROR: something else\n")
        return 1, ""

    monkeypatch.setattr(synth, "_run", run)
    with pytest.raises(synth.SynthError, match="yosys failed: ERROR: something else"):
        synth.synthesize(DotProduct(1, 2), config="dot1x2", device="ecp5",
                         toplevel="dot_product", freq_mhz=20, out_dir=tmp_path)


def test_design_that_does_not_fit_fails_naming_the_resource(tmp_path):
    # 3 x 3 = 9 multipliers; the UP5K has 8 SB_MAC16
    with pytest.raises(synth.SynthError,
                       match=r"^dot3x3 does not fit iCE40UP5K-SG48: too many ICESTORM_DSP"):
        synth.synthesize(DotProduct(3, 3), config="dot3x3", device="ice40",
                         toplevel="dot_product", freq_mhz=20, macs_per_cycle=9,
                         out_dir=tmp_path)


@pytest.mark.parametrize("make", [lambda: DotProduct(2, 3), lambda: MacArray(2, 2)])
def test_rtlil_and_verilog_agree_on_the_ports(make):
    from amaranth.back import rtlil, verilog

    from sim.verilog_export import ports

    from_verilog = ports(verilog.convert(make(), name="top", emit_src=False), "top")
    from_rtlil = synth.rtlil_ports(rtlil.convert(make(), name="top", emit_src=False), "top")
    assert sorted((p.name, p.direction, p.width) for p in from_rtlil) == \
        sorted((p.name, p.direction, p.width) for p in from_verilog)
    assert {p.name for p in from_rtlil if p.escaped} == {p.name for p in from_verilog if p.escaped}


def test_harness_connects_every_port_bit():
    ports = [Port("clk", "input", 1), Port("rst", "input", 1), Port("a", "input", 3),
             Port("b", "input", 2), Port("y", "output", 9), Port("z", "output", 1)]
    text = synth.harness_verilog("core_top", ports)
    assert "core_top core (.clk(clk), .rst(rst), .a(in_chain[2:0]), .b(in_chain[4:3]), " \
           ".y(core_out[8:0]), .z(core_out[9:9]));" in text
    assert "in_chain <= {in_chain[3:0], sin};" in text
    # 10 output bits -> 3 -> 1 through 4-input XORs
    assert "x1[2] <= ^x0[9:8];" in text and "x2[0] <= ^x1[2:0];" in text
    assert synth.harness_cost(ports) == {"input_bits": 5, "output_bits": 10,
                                         "ffs": 5 + 3 + 1, "luts": 3 + 1}


def test_harness_escapes_what_the_core_escapes():
    ports = [Port("clk", "input", 1), Port("final", "input", 1, escaped=True),
             Port("y", "output", 1)]
    assert ".\\final (in_chain[0:0])" in synth.harness_verilog("core_top", ports)


def test_harness_refuses_a_core_without_outputs():
    with pytest.raises(synth.SynthError, match="has no output ports"):
        synth.harness_verilog("sink", [Port("clk", "input", 1), Port("a", "input", 4)])


@pytest.mark.parametrize("net, name", [("$glbnet$clk$TRELLIS_IO_IN", "clk"),
                                       ("posedge clk$SB_IO_IN_$glb_clk", "clk"),
                                       ("pix_clk$TRELLIS_IO_IN", "pix_clk")])
def test_clock_names(net, name):
    assert synth._clock_name(net) == name


def test_over_utilization_is_read_from_the_log():
    log = ("Info: Device utilisation:\nInfo: \t           ICESTORM_LC:   120/  5280     2%\n"
           "Info: \t          ICESTORM_DSP:     9/     8   112%\n")
    assert synth._over_utilized(log) == [("ICESTORM_DSP", 9, 8)]


def test_cli_reports_unknown_configuration_in_one_line(capsys):
    assert synth.main(["--config", "no-such-config", "--device", "ice40"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown configuration 'no-such-config'" in err


def test_cli_reports_missing_rtl_module_in_one_line(capsys, monkeypatch):
    monkeypatch.setitem(configs.CONFIGS, "later", configs.Config(
        name="later", summary="not written yet", module="rtl.not_written_yet", cls="Later"))
    assert synth.main(["--config", "later", "--device", "ecp5"]) == 1
    err = capsys.readouterr().err
    assert err == ("error: configuration 'later' needs rtl.not_written_yet.Later, but module "
                   "rtl.not_written_yet does not exist yet\n")


def test_cli_refuses_a_bad_frequency(capsys, monkeypatch, tmp_path):
    assert synth.main(["--config", "requantize", "--device", "ice40", "--freq", "-5",
                       "--out", str(tmp_path)]) == 1
    assert "target frequency must be a positive number of MHz, not -5.0" in capsys.readouterr().err


def test_all_runs_continue_past_a_failure_and_exit_non_zero(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(synth.toolchain, "BUILD", tmp_path)
    monkeypatch.setitem(configs.CONFIGS, "later", configs.Config(
        name="later", summary="not written yet", module="rtl.not_written_yet", cls="Later"))
    monkeypatch.setattr(synth, "STANDARD_RUNS", (("later", "ice40"), ("later", "ecp5")))
    assert synth.main(["--all"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "error: synthesis failed for later/ice40, later/ecp5"
    assert (tmp_path / "synth" / "summary.md").read_text() == synth.summary_table([])


def test_mapped_cells_are_counted_by_submodule(tmp_path):
    cells = {"core.mac.p_SB_MAC16": "SB_MAC16", "core.mac.x_SB_LUT4_O": "SB_LUT4",
             "core.rq0.s6_SB_DFFE_Q": "SB_DFFE", "core.rq0.m_SB_MAC16": "SB_MAC16",
             "core.s7_side.relu_SB_LUT4_O": "SB_LUT4",     # a struct member of the top level
             "core.lb.mem_SB_RAM40_4K": "SB_RAM40_4K", "x0_SB_DFF_Q": "SB_DFF",
             "core.mac.c_SB_CARRY_CO": "SB_CARRY"}
    netlist = tmp_path / "netlist.json"
    netlist.write_text(json.dumps({"modules": {synth.HARNESS_TOP: {"cells": {
        name: {"type": kind} for name, kind in cells.items()}}}}))
    rtl_stat = tmp_path / "rtl_stat.json"
    rtl_stat.write_text(json.dumps({"modules": {f"\\convcore.{m}": {} for m in ("mac", "rq0", "lb")}}))
    device = synth.DEVICES["ice40"]
    found = synth._mapped_by_module(netlist, rtl_stat, device, "convcore")
    zero = {"luts": 0, "ffs": 0, "dsps": 0, "brams": 0}
    assert found == {"mac": dict(zero, luts=1, dsps=1), "rq0": dict(zero, ffs=1, dsps=1),
                     "convcore": dict(zero, luts=1), "harness": dict(zero, ffs=1),
                     "lb": dict(zero, brams=1)}
    over = [("ICESTORM_DSP", 9, 8), ("ICESTORM_LC", 6000, 5280)]
    assert synth._culprits(over, found, {}, device) == (
        "; SB_MAC16 by module: mac 1, rq0 1; largest modules (LUTs/FFs): mac 1/0, rq0 0/1, "
        "convcore 1/0, lb 0/0")


def test_seeds_report_the_worst(tmp_path):
    """Several placement seeds: each one's Fmax is kept and the report is the slowest's."""
    report = synth.synthesize(DotProduct(1, 2), config="dot1x2", device="ice40",
                              toplevel="dot_product", freq_mhz=20, macs_per_cycle=2,
                              out_dir=tmp_path, seed=4, seeds=2)
    assert set(report["seeds"]) == {"4", "5"}
    assert report["fmax_mhz"] == min(report["seeds"].values())
    assert report["seeds"][str(report["seed"])] == report["fmax_mhz"]
    assert all((tmp_path / f"nextpnr_report-seed{s}.json").exists() for s in (4, 5))
    assert "worst of 2 seeds" in (tmp_path / "report.md").read_text()
    with pytest.raises(synth.SynthError, match=r"^seeds must be a positive integer, not 0$"):
        synth.synthesize(DotProduct(1, 2), config="dot1x2", device="ice40",
                         toplevel="dot_product", freq_mhz=20, out_dir=tmp_path, seeds=0)


def test_cli_refuses_zero_seeds(capsys):
    with pytest.raises(SystemExit) as exc:
        synth.main(["--config", "mac-ice40", "--device", "ice40", "--seeds", "0"])
    assert exc.value.code == 2
    assert "--seeds must be at least 1, not 0" in capsys.readouterr().err


@pytest.mark.parametrize("config, device", synth.BLOCK_RUNS)
def test_every_block_builds_and_converts(config, device):
    """``make synth-blocks``: each block is a registered configuration that elaborates."""
    from amaranth.back import rtlil

    cfg = configs.get(config)
    text = rtlil.convert(cfg.build(device), name=cfg.toplevel, emit_src=False)
    assert synth.rtlil_ports(text, cfg.toplevel)


def test_window_block_sizes_like_its_engine():
    from rtl.engine import ConvEngine
    from sim.blocks import WindowBlock

    for params in (configs.ENGINE_DEFAULT, configs.ENGINE_ICE40):
        engine = ConvEngine(**params)
        engine._MustUse__silence = True
        block = WindowBlock(**params)
        block._MustUse__silence = True
        assert block.layout == engine.geometry_layout()
        assert (block.depth, block.weight_depth, block.packing) == \
            (engine.line_buffer_depth, engine.weight_depth, engine.packing)


def test_blocks_run_continue_past_a_failure_and_exit_non_zero(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(synth.toolchain, "BUILD", tmp_path)
    monkeypatch.setitem(configs.CONFIGS, "later", configs.Config(
        name="later", summary="not written yet", module="rtl.not_written_yet", cls="Later"))
    monkeypatch.setattr(synth, "BLOCK_RUNS", (("later", "ice40"),))
    assert synth.main(["--blocks"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "error: synthesis failed for later/ice40"
    assert (tmp_path / "synth" / "blocks.md").read_text() == synth.summary_table([])


def test_harness_drives_the_reset_through_the_devices_buffer():
    ports = [Port("clk", "input", 1), Port("rst", "input", 1), Port("a", "input", 2),
             Port("y", "output", 3)]
    text = synth.harness_verilog("core_top", ports, synth.DEVICES["ecp5"].reset_buffer)
    assert "DCCA reset_dcca (.CLKI(rst), .CE(1'b1), .CLKO(reset_global0));" in text
    assert ".rst(reset_global0)" in text
    assert ".rst(rst)" in synth.harness_verilog("core_top", ports)      # iCE40: a wire
