"""The engine behind its DMA front end with its memory in HDL (tb/hdl/soc_top.v: convcore_dma and
tb/hdl/axi_ram.v; tb/hdl/tb_soc.v: clock, host and watchdog in Verilog): whole queues simulated
with no Python while they run, on Icarus and Verilator.

Python writes the queue's memory image as a ``$readmemh`` file (:mod:`sim.memory_image`),
starts the simulator with the first descriptor's address (:func:`run`), and reads the memory
the bench dumps at the end. :func:`measure` runs the digits CNN this way and checks every
layer against the golden model: the ``hdl`` section of ``make bench``. The tests are in
``sim/test_hdl_speed.py``.
"""

import fcntl
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtl.dma_engine import DmaEngine
from rtl.dma_regs import QueueError
from sim import toolchain
from sim.memory_image import read_memh, write_memh
from sim.runner import config_key, emit_verilog

__all__ = ["HdlRunError", "Bench", "Result", "hw_of", "build", "run", "measure", "digits",
           "BUS_WIDTH", "MEMORY_BYTES", "SOURCES", "TOPLEVEL"]

HDL = toolchain.ROOT / "tb" / "hdl"
#: The bench's own files, in compile order (the exported convcore_dma.v comes last).
SOURCES = [HDL / "axi_ram.v", HDL / "soc_top.v", HDL / "tb_soc.v"]
TOPLEVEL = "tb_soc"
#: soc_top's memory: 64-bit words (its DATA_WIDTH), 2**20 bytes from 0 (its RAM_ADDR_WIDTH).
BUS_WIDTH = 64
MEMORY_BYTES = 1 << 20
#: Watchdog of a run (cycles); a whole process must end within RUN_TIMEOUT_S.
TIMEOUT_CYCLES = 5_000_000
RUN_TIMEOUT_S = 600

_QUEUE_LINE = re.compile(r"QUEUE run=(\d+) status=([0-9a-f]+) error=(\d+) cycles=(\d+)")
_DONE_LINE = re.compile(r"DONE runs=(\d+) cycles=(\d+)")


class HdlRunError(RuntimeError):
    """The bench did not end with its DONE line (a timeout, a failed transfer)."""


@dataclass
class Bench:
    """A built tb_soc: the command that runs it (plusargs follow)."""
    sim: str
    command: list
    key: str


@dataclass
class Result:
    """What a run printed and the memory it dumped."""
    queue: list             # per run: {"status", "error", "cycles"} (Q_STATUS, its error, Q_CYCLES)
    cycles: int             # bench cycles from the end of reset to the dump
    seconds: float          # wall time of the simulator process
    memory: object          # sim.memory_image.Memory of the dump
    output: str

    @property
    def rate(self) -> float:
        """Simulated cycles per second of wall time (loading and dumping included)."""
        return self.cycles / self.seconds


def hw_of(config) -> dict:
    """The engine's and the front end's parameters (:attr:`DmaEngine.hw`) of ``config``."""
    engine = DmaEngine(bus_width=BUS_WIDTH, **config)
    engine._MustUse__silence = True         # built only to read its parameters
    return engine.hw


def build(sim: str, config: dict) -> Bench:
    """tb_soc around the DMA front end of the engine ``config`` on ``sim``, in
    build/sim/soc-KEY-SIM (reused when its sources have not changed)."""
    key = config_key("dma_engine", dict(config, bus_width=BUS_WIDTH))
    dma = emit_verilog(DmaEngine(bus_width=BUS_WIDTH, **config), toplevel="convcore_dma",
                       key=key)
    toolchain.activate(sim)
    folder = toolchain.BUILD / "sim" / f"soc-{key}-{sim}"
    folder.mkdir(parents=True, exist_ok=True)
    sources = [str(p) for p in [*SOURCES, dma]]
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # pytest-xdist workers may share a build
        if sim == "icarus":
            out = folder / f"{TOPLEVEL}.vvp"
            _check([shutil.which("iverilog") or "iverilog", "-g2005", "-s", TOPLEVEL, "-o",
                    str(out), *sources], folder)
            return Bench(sim, ["vvp", "-n", str(out)], key)
        if sim == "verilator":
            _check(["verilator", "--binary", "-j", "0", "--top-module", TOPLEVEL, "-Mdir",
                    str(folder / "obj"), *toolchain.build_args("verilator", timing=True),
                    *sources], folder)
            return Bench(sim, [str(folder / "obj" / f"V{TOPLEVEL}")], key)
    raise toolchain.ToolchainError(f"unknown simulator {sim!r}")


def _check(cmd, cwd):
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed ({done.returncode}):\n"
                           f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def run(bench: Bench, image: dict, head: int, folder: Path, *, runs=1,
        timeout=TIMEOUT_CYCLES, edit=None) -> Result:
    """Run the queue from ``head`` on ``image`` ({address: bytes}) ``runs`` times in
    ``folder``; ``edit(path)`` may change the hex file before the run."""
    folder = Path(folder).resolve()         # the simulator runs in it
    folder.mkdir(parents=True, exist_ok=True)
    mem, dump = folder / "mem.hex", folder / "dump.hex"
    write_memh(image, mem, data_width=BUS_WIDTH, size=MEMORY_BYTES)
    if edit is not None:
        edit(mem)
    dump.unlink(missing_ok=True)                 # never read a dump an earlier run left
    cmd = [*bench.command, f"+mem={mem}", f"+dump={dump}", f"+head={head:x}",
           f"+runs={runs}", f"+timeout={timeout}"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    finish = _DONE_LINE.search(output)
    if done.returncode or finish is None:
        lines = [line for line in output.splitlines() if "TIMEOUT" in line or "FAIL" in line]
        raise HdlRunError(f"tb_soc on {bench.sim} ended with exit {done.returncode}: "
                          f"{lines[0] if lines else output[-500:]}")
    queue = [{"status": int(s, 16), "error": int(e), "cycles": int(c)}
             for _, s, e, c in _QUEUE_LINE.findall(output)]
    return Result(queue, int(finish.group(2)), seconds,
                  read_memh(dump, data_width=BUS_WIDTH, size=MEMORY_BYTES), output)



def digits(n):
    """The digits CNN and the first ``n`` test images, quantized: (net, x)."""
    from examples.digits import MODEL_PATH, load_test_set
    from model.network import quantize_input
    from sim.onnx_import import load_network
    net = load_network(MODEL_PATH)
    return net, quantize_input(net, load_test_set()[0][:n])


def measure(sim, images, runs, folder) -> dict:
    """The digits CNN on ``images`` images, the queue run ``runs`` times, on the default
    engine with the HDL memory; every run must end without an error and every layer's outputs
    equal the golden model's (HdlRunError otherwise). {images, runs, queue_cycles, cycles,
    seconds, rate}."""
    from model.network import run_layer
    from sim.queue_image import network_image

    bench = build(sim, {})
    net, x = digits(images)
    image = network_image(net.layers, x, hw_of({}))
    result = run(bench, image.image.image(), image.image.head, folder, runs=runs,
                 timeout=200_000_000)
    for q in result.queue:
        if q["error"] != QueueError.NONE:
            raise HdlRunError(f"digits on {sim}: the queue stopped with "
                              f"{QueueError(q['error']).name}")
    y = x
    for index, layer in enumerate(net.layers):
        want = run_layer(layer, y)
        got = image.read(result.memory.read, index).reshape(want.shape)
        if not np.array_equal(got, want):
            raise HdlRunError(f"digits on {sim}: layer '{layer.name}' differs from the golden "
                              f"model")
        y = want
    return {"images": images, "runs": runs, "queue_cycles": result.queue[0]["cycles"],
            "cycles": result.cycles, "seconds": result.seconds, "rate": result.rate}
