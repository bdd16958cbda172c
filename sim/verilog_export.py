"""Export a configuration as Verilog for other people's tools (Vivado, Quartus, Yosys, Verilator).

``python -m sim.verilog_export --config NAME [--out DIR]`` writes into ``build/verilog/NAME/``:

- ``TOP.v``: one self-contained Verilog-2005 file (every submodule inside, memories initialized
  in the file, no include or ``$readmem`` file), top module ``TOP`` with the component's flat
  port names, clock ``clk`` and synchronous active-high reset ``rst``;
- ``TOP.f``: a file list for simulators and synthesis tools;
- ``TOP.json`` and ``TOP.md``: the parameters, the ports and, when the component has one, the
  register map (generated from :mod:`rtl.regmap`);
- ``lint_waivers.vlt``: the Verilator lint waivers (:data:`WAIVERS`) with their reasons.

The emitted text is checked for simulation-only constructs (:func:`check_constructs`) and
linted with ``verilator --lint-only -Wall`` (:func:`lint`); both must be clean.
"""

import argparse
import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import amaranth
from amaranth.back import verilog

from sim import toolchain
from sim.configs import ConfigError, get, names

__all__ = ["ExportError", "Port", "Export", "WAIVERS", "FORBIDDEN", "export", "export_config",
           "ports", "check_constructs", "lint", "main"]


class ExportError(RuntimeError):
    """The Verilog is unusable (simulation-only construct, lint warning); one-line message."""


#: Verilator -Wall warnings that Amaranth's Verilog back end produces by design:
#: (rule, message pattern or None for every message of the rule, reason).
WAIVERS = (
    ("PROCASSINIT", None,
     "Amaranth declares each register with its reset value as initializer (the FPGA power-up "
     "value, equal to the reset value) and assigns it in an always block; this is intended"),
    ("WIDTHEXPAND", None,
     "Amaranth checks operand shapes itself and relies on Verilog's context-determined widths "
     "(sign/zero extension of operands), which implement exactly its arithmetic"),
    ("WIDTHTRUNC", None,
     "Amaranth truncates results on assignment to the declared shape, as its semantics define"),
    ("UNUSEDSIGNAL", None,
     "Amaranth keeps a named wire for every signal it was given a name for: aliases of "
     "connected ports (a submodule's 'i__ready' beside the parent's 's_axis_tready'), views of "
     "struct and array fields ('i__payload.acc'), and intermediate values that feed a wider "
     "expression only in part; they exist for waveform viewers and synthesis removes them"),
    ("CASEINCOMPLETE", None,
     "Amaranth assigns every combinational signal its default before a case statement (a "
     "Switch or FSM without a matching case keeps that default), so a case without a default "
     "branch cannot infer a latch; Verilator's LATCH check stays on"),
    ("ASCRANGE", "*left < right of bit range: [-1:0]",
     "Amaranth declares a named zero-width signal (for example a counter over range(1) when "
     "a parameter leaves one value) as [-1:0]; it carries no bits and nothing reads it"),
    ("DECLFILENAME", None,
     "the file is self-contained: besides the top module (named like the file) it holds every "
     "submodule, which Amaranth names 'TOP.path'"),
)

#: Constructs that must not appear in the exported Verilog: pattern -> what it is.
FORBIDDEN = {
    r"\$(display|write|strobe|monitor)\b": "a print statement ($display/$write)",
    r"\$(finish|stop|fatal|error|warning|info)\b": "a simulation control task",
    r"\$(readmemh|readmemb|fopen|fwrite|fscanf)\b": "file access (the file must be self-contained)",
    r"\$(random|urandom|time|realtime|stime)\b": "a simulation-only system function",
    r"\bassert\s*\(|\bassume\s*\(|\bcover\s*\(": "a formal assertion (Assert/Assume/Cover)",
    r"#\s*\d": "a delay",
    r"`include\b": "an include of another file",
}

#: Registers that Amaranth's back end adds so that every simulator evaluates combinational
#: processes at time zero; constant, removed by every synthesis tool.
_AUTO_TRIGGER = re.compile(r"\\\$auto\$verilog_backend\S*")


@dataclass
class Port:
    name: str
    direction: str  # "input" or "output"
    width: int
    escaped: bool = False  # an escaped identifier in the Verilog (e.g. a SystemVerilog keyword)

    @property
    def ref(self) -> str:
        """How Verilog refers to the port."""
        return f"\\{self.name} " if self.escaped else self.name


@dataclass
class Export:
    """Paths and facts of one export (see the module documentation)."""
    config: str
    toplevel: str
    folder: Path
    verilog: Path
    filelist: Path
    json: Path
    markdown: Path
    waivers: Path
    ports: list = field(default_factory=list)
    lint: list = field(default_factory=list)


def ports(text: str, toplevel: str) -> list[Port]:
    """Ports of module ``toplevel`` in Amaranth-emitted Verilog, in declaration order."""
    match = re.search(rf"^module {re.escape(toplevel)}\((.*?)\);\n(.*?)^endmodule", text,
                      re.S | re.M)
    if not match:
        raise ExportError(f"module {toplevel!r} not found in the emitted Verilog")
    body = match.group(2)
    found = []
    for m in re.finditer(r"^\s*(input|output|inout)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s+)?(\\?)(\S+)\s*;",
                         body, re.M):
        direction, hi, lo, escaped, name = m.groups()
        if direction == "inout":
            raise ExportError(f"port {name!r} of {toplevel!r} is bidirectional; "
                              "only inputs and outputs are supported")
        width = int(hi) - int(lo) + 1 if hi is not None else 1
        found.append(Port(name, direction, width, bool(escaped)))
    return found


def check_constructs(text: str) -> list[str]:
    """Simulation-only constructs in ``text``, one description per occurrence.

    Allowed: declaration initializers of registers (power-up values equal to reset values),
    ``initial`` blocks that only initialize memories, and Amaranth's constant trigger register.
    """
    problems = []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        code = _strip_comment(line)
        for pattern, what in FORBIDDEN.items():
            if re.search(pattern, code):
                problems.append(f"line {number}: {what}: {code.strip()[:80]}")
    for number, block in _initial_blocks(lines):
        for stmt in block:
            if not re.fullmatch(r"\\?\S+\s*\[\d+\]\s*=\s*[\d']+[hbdo]?[0-9a-fA-FxXzZ_]*\s*;", stmt):
                problems.append(f"line {number}: an initial block that does more than "
                                f"initialize a memory: {stmt[:80]}")
                break
    return problems


def _strip_comment(line: str) -> str:
    return line.split("//", 1)[0]


def _initial_blocks(lines):
    """(line number, statements) of every ``initial`` block."""
    i = 0
    while i < len(lines):
        code = _strip_comment(lines[i]).strip()
        if re.match(r"initial\b", code):
            start = i + 1
            rest = code[len("initial"):].strip()
            if rest.startswith("begin"):
                stmts = []
                i += 1
                while i < len(lines) and _strip_comment(lines[i]).strip() != "end":
                    stmt = _strip_comment(lines[i]).strip()
                    if stmt:
                        stmts.append(stmt)
                    i += 1
                yield start, stmts
            else:
                yield start, [rest]
        i += 1


def write_waivers(path: Path) -> Path:
    """The Verilator configuration file holding :data:`WAIVERS`, each with its reason."""
    lines = ["`verilator_config", "// Lint waivers for Amaranth-emitted Verilog; generated by "
             "sim/verilog_export.py (WAIVERS)."]
    for rule, match, reason in WAIVERS:
        lines.append(f"// {rule}: {reason}")
        lines.append(f"lint_off -rule {rule}" + (f' -file "*" -match "{match}"' if match else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def lint(verilog_path: Path, toplevel: str, waivers: Path | None = None) -> list[str]:
    """``verilator --lint-only -Wall`` on one file: the warnings and errors left after ``waivers``."""
    toolchain.activate("verilator")
    cmd = ["verilator", "--lint-only", "-Wall", "--top-module", toplevel]
    if waivers is not None:
        cmd.append(str(waivers))
    cmd.append(str(verilog_path))
    result = subprocess.run(cmd, capture_output=True, text=True)
    messages = [line for line in (result.stdout + result.stderr).splitlines()
                if line.startswith("%") and not line.startswith("%Error: Exiting due to")]
    if result.returncode and not messages:
        messages = [f"%Error: verilator exited with {result.returncode}: "
                    f"{result.stderr.strip()[:200]}"]
    return messages


def _regmap(component):
    """The component's register map (an :class:`rtl.regmap.RegisterMap`), if it has one: its
    ``regmap`` attribute, else ``REGMAP`` of the module that defines its class."""
    try:
        from rtl.regmap import RegisterMap
    except ImportError:
        return None
    value = getattr(component, "regmap", None)
    if not isinstance(value, RegisterMap):
        module = sys.modules.get(type(component).__module__)
        value = getattr(module, "REGMAP", None)
    return value if isinstance(value, RegisterMap) else None


def _regmap_json(regmap) -> dict:
    return {
        "name": regmap.name, "data_width": regmap.data_width, "addr_width": regmap.addr_width,
        "registers": [{
            "name": reg.name, "offset": reg.offset, "words": reg.words, "doc": reg.doc,
            "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width, "access": f.access,
                        "reset": f.reset, "doc": f.doc, "enum": dict(f.enum or {})}
                       for f in reg.fields],
        } for reg in regmap.registers],
    }


def _markdown(desc: dict, regmap) -> str:
    out = [f"# {desc['toplevel']}: configuration `{desc['config']}`", "",
           desc["summary"], "",
           f"Generated from `{desc['component']}` by Amaranth {desc['amaranth']}. One "
           f"self-contained Verilog-2005 file: `{desc['files']['verilog']}` (file list "
           f"`{desc['files']['filelist']}`). Clock `clk` (rising edge), reset `rst` "
           "(synchronous, active high).", "", "## Parameters", "",
           "| Parameter | Value |", "|---|---|"]
    out += [f"| `{k}` | {v} |" for k, v in desc["parameters"].items()]
    if desc.get("macs_per_cycle"):
        out += [f"| (MACs per cycle) | {desc['macs_per_cycle']} |"]
    out += ["", "## Ports", "", "| Port | Direction | Width |", "|---|---|---|"]
    out += [f"| `{p['name']}` | {p['direction']} | {p['width']} |" for p in desc["ports"]]
    if regmap is not None:
        from rtl.regmap import markdown_legend, markdown_table
        out += ["", "## Register map", "", markdown_table(regmap).rstrip(), "",
                "Access kinds:", "", markdown_legend().rstrip()]
    out += ["", "## Lint", "", "`verilator --lint-only -Wall` is clean with these waivers "
            "(`lint_waivers.vlt`):", ""]
    out += [f"- {rule}" + (f" matching `{match}`" if match else "") + f": {reason}"
            for rule, match, reason in WAIVERS]
    return "\n".join(out) + "\n"


def export(component, *, config: str, toplevel: str, out_dir: Path | None = None,
           params: dict | None = None, summary: str = "", macs_per_cycle: int | None = None,
           component_name: str | None = None, run_lint: bool = True) -> Export:
    """Write the Verilog, file list, description and waivers of ``component``.

    Raises :class:`ExportError` when the Verilog has a simulation-only construct or lint
    warnings beyond :data:`WAIVERS`.
    """
    folder = Path(out_dir) if out_dir is not None else toolchain.BUILD / "verilog" / config
    folder.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(component, name=toplevel, emit_src=False)
    problems = check_constructs(text)
    if problems:
        raise ExportError(f"{config}: simulation-only construct in the Verilog, {problems[0]}"
                          + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    result = Export(config=config, toplevel=toplevel, folder=folder,
                    verilog=folder / f"{toplevel}.v", filelist=folder / f"{toplevel}.f",
                    json=folder / f"{toplevel}.json", markdown=folder / f"{toplevel}.md",
                    waivers=folder / "lint_waivers.vlt", ports=ports(text, toplevel))
    result.verilog.write_text(text)
    result.filelist.write_text(f"{result.verilog.resolve()}\n")
    write_waivers(result.waivers)
    regmap = _regmap(component)
    cls = type(component)
    desc = {
        "config": config, "toplevel": toplevel, "summary": summary,
        "component": component_name or f"{cls.__module__}.{cls.__qualname__}",
        "amaranth": amaranth.__version__,
        "parameters": {k: v for k, v in (params or {}).items()},
        "macs_per_cycle": macs_per_cycle,
        "clock": "clk", "reset": "rst (synchronous, active high)",
        "ports": [asdict(p) for p in result.ports],
        "files": {"verilog": result.verilog.name, "filelist": result.filelist.name,
                  "lint_waivers": result.waivers.name},
        "regmap": _regmap_json(regmap) if regmap is not None else None,
        "lint_waivers": [{"rule": r, "match": m, "reason": why} for r, m, why in WAIVERS],
    }
    result.json.write_text(json.dumps(desc, indent=2, default=str) + "\n")
    result.markdown.write_text(_markdown(desc, regmap))
    if run_lint:
        result.lint = lint(result.verilog, toplevel, result.waivers)
        if result.lint:
            raise ExportError(f"{config}: verilator --lint-only -Wall reports "
                              f"{len(result.lint)} message(s), first: {result.lint[0]}")
    return result


def export_config(name: str, out_dir: Path | None = None, run_lint: bool = True) -> Export:
    """:func:`export` for the configuration ``name`` of :mod:`sim.configs`."""
    cfg = get(name)
    component = cfg.build()
    return export(component, config=cfg.name, toplevel=cfg.toplevel, out_dir=out_dir,
                  params=cfg.resolved_params(component), summary=cfg.summary,
                  macs_per_cycle=cfg.macs(component),
                  component_name=f"{cfg.module}.{cfg.cls}", run_lint=run_lint)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.verilog_export",
                                     description="Write a configuration as self-contained Verilog "
                                                 "with a file list and a description.")
    parser.add_argument("--config", default="default",
                        help=f"configuration name (one of: {', '.join(names())})")
    parser.add_argument("--out", type=Path, help="output folder (default build/verilog/CONFIG)")
    parser.add_argument("--no-lint", action="store_true", help="skip verilator --lint-only")
    args = parser.parse_args(argv)
    try:
        result = export_config(args.config, args.out, run_lint=not args.no_lint)
    except (ConfigError, ExportError, toolchain.ToolchainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lint_state = "not run" if args.no_lint else "clean (waivers in lint_waivers.vlt)"
    print(f"{result.config}: wrote {result.verilog} ({len(result.ports)} ports), "
          f"{result.filelist.name}, {result.json.name}, {result.markdown.name}; lint {lint_state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
