"""Verilog export: self-contained file, description, no simulation-only constructs, lint clean."""

import json
import re

import pytest
from amaranth.hdl import Assert, Module, Print
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from sim import configs, verilog_export
from sim.testing import DotProduct
from sim.toolchain import BUILD


class Scratchpad(wiring.Component):
    """A small memory with initial contents: the one legitimate use of ``initial``."""
    waddr: In(4)
    wdata: In(8)
    we: In(1)
    raddr: In(4)
    rdata: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=8, depth=16, init=range(16))
        w, r = mem.write_port(), mem.read_port()
        m.d.comb += [w.addr.eq(self.waddr), w.data.eq(self.wdata), w.en.eq(self.we),
                     r.addr.eq(self.raddr), self.rdata.eq(r.data)]
        return m


class Chatty(wiring.Component):
    """Uses Print and Assert, which Amaranth emits as $write and assert()."""
    a: In(8)
    y: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [self.y.eq(self.a), Print("a =", self.a), Assert(self.a != 3)]
        return m


#: Configurations whose export takes tens of seconds (large zero-initialized memories); their
#: RTL is the same code as a smaller configuration's, and `make verilog` lints them.
SLOW = {"default"}


def _buildable():
    out = []
    for name, cfg in configs.CONFIGS.items():
        if name in SLOW:
            continue
        try:
            cfg.component_class()
        except configs.ConfigError as exc:
            out.append(pytest.param(name, marks=pytest.mark.skip(reason=str(exc))))
        else:
            out.append(name)
    return out


@pytest.mark.parametrize("pe, simd", [(1, 1), (2, 3)])
def test_export_writes_a_described_lint_clean_file(pe, simd, tmp_path):
    dut = DotProduct(pe, simd)
    result = verilog_export.export(dut, config="dot", toplevel="dot_product", out_dir=tmp_path,
                                   params={"pe": pe, "simd": simd}, macs_per_cycle=pe * simd)
    assert result.lint == []
    text = result.verilog.read_text()
    assert re.findall(r"^module ([^\s(]+)", text, re.M) == ["dot_product"]
    assert result.filelist.read_text().split() == [str(result.verilog.resolve())]
    desc = json.loads(result.json.read_text())
    assert desc["parameters"] == {"pe": pe, "simd": simd} and desc["macs_per_cycle"] == pe * simd
    widths = {p["name"]: (p["direction"], p["width"]) for p in desc["ports"]}
    payload = 8 * simd * (pe + 1)
    assert widths == {"clk": ("input", 1), "rst": ("input", 1),
                      "i__payload": ("input", payload), "i__valid": ("input", 1),
                      "i__ready": ("output", 1), "o__payload": ("output", dut.acc_width * pe),
                      "o__valid": ("output", 1), "o__ready": ("input", 1)}
    md = result.markdown.read_text()
    assert f"| `i__payload` | input | {payload} |" in md and "## Register map" not in md
    for rule, _, reason in verilog_export.WAIVERS:
        assert f"lint_off -rule {rule}" in result.waivers.read_text() and reason in md


@pytest.mark.parametrize("name", _buildable())
def test_every_configuration_exports_lint_clean(name, tmp_path):
    result = verilog_export.export_config(name, out_dir=tmp_path)
    assert result.lint == []
    desc = json.loads(result.json.read_text())
    cfg = configs.get(name)
    assert all(desc["parameters"][k] == v for k, v in cfg.params.items())
    assert desc["toplevel"] == cfg.toplevel == result.verilog.stem


def test_register_map_is_documented_when_the_component_has_one(tmp_path):
    from rtl.regmap import Field, Register, RegisterMap

    dut = Scratchpad()
    dut.regmap = RegisterMap("scratch", [
        Register("CTRL", 0x0, [Field("start", 1, "w1p", doc="Start")], doc="Control")])
    result = verilog_export.export(dut, config="scratch", toplevel="scratch", out_dir=tmp_path)
    md = result.markdown.read_text()
    assert "## Register map" in md and "| | | `start` | [0] | w1p |" in md
    desc = json.loads(result.json.read_text())
    assert desc["regmap"]["registers"][0]["fields"][0]["name"] == "start"


def test_memory_initialization_is_allowed():
    text = verilog_export.verilog.convert(Scratchpad(), name="scratch", emit_src=False)
    assert re.search(r"^\s*initial begin", text, re.M), "expected a memory initial block"
    assert verilog_export.check_constructs(text) == []


def test_simulation_only_constructs_are_refused(tmp_path):
    with pytest.raises(verilog_export.ExportError,
                       match=r"^chatty: simulation-only construct in the Verilog, line \d+: "
                             r"a print statement"):
        verilog_export.export(Chatty(), config="chatty", toplevel="chatty", out_dir=tmp_path)


@pytest.mark.parametrize("snippet, what", [
    ("initial x = 1;", "an initial block that does more than initialize a memory"),
    ("initial begin\n    x = 1;\n    $finish;\n  end", "a simulation control task"),
    ("always @(posedge clk) #1 x <= 1;", "a delay"),
    ("initial $readmemh(\"w.hex\", mem);", "file access"),
])
def test_check_constructs_finds(snippet, what):
    text = f"module m(clk);\n  input clk;\n  reg x;\n  {snippet}\nendmodule\n"
    problems = verilog_export.check_constructs(text)
    assert problems and any(what in p for p in problems), problems


def test_lint_reports_real_problems_despite_the_waivers(tmp_path):
    path = tmp_path / "broken.v"
    path.write_text("module broken(input wire a, output wire y, output wire z);\n"
                    "  assign y = a;\nendmodule\n")  # z is never driven
    waivers = verilog_export.write_waivers(tmp_path / "w.vlt")
    messages = verilog_export.lint(path, "broken", waivers)
    assert any("UNDRIVEN" in m and "'z'" in m for m in messages), messages


def test_cli_writes_into_the_build_folder(capsys):
    assert verilog_export.main(["--config", "requantize"]) == 0
    out = capsys.readouterr().out
    folder = BUILD / "verilog" / "requantize"
    assert f"wrote {folder / 'convcore_requantize.v'}" in out and "lint clean" in out
    for suffix in (".v", ".f", ".json", ".md"):
        assert (folder / f"convcore_requantize{suffix}").exists()


def test_cli_errors_are_one_line(capsys):
    assert verilog_export.main(["--config", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown configuration 'nope'; known: default, ice40") \
        and err.count("\n") == 1
