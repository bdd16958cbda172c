"""The engine behind its DMA front end with its memory in HDL (tb/hdl/soc_top.v, tb/hdl/tb_soc.v):
whole queues simulated with no Python while they run, on Icarus and Verilator.

Python writes the queue's memory image as a ``$readmemh`` file (:mod:`sim.memory_image`),
starts the simulator with the first descriptor's address, and reads the memory the bench
dumps at the end; every output buffer is compared with ``==`` against the golden model.

Tests (``make test``): a chain of layers and a batch on a small engine (:data:`SMALL`) on both
simulators, the digits CNN on the default engine on Icarus, a corrupted image that must give a
mismatch, a refused descriptor and the watchdog; and :mod:`sim.memory_image` on its own.

Measurement (not a test): ``python -m sim.test_hdl_speed`` runs the digits CNN on the default
engine on Verilator and Icarus with the HDL memory (checking every layer) and the same design
under cocotb with cocotbext-axi's AxiRam (tb/test_dma_engine.py's networks_through_queue), and
prints simulated cycles per second of each.
"""

import fcntl
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from model.network import MaxPool, run_layer
from rtl.dma_engine import DmaEngine
from rtl.dma_regs import QueueError
from sim import toolchain
from sim.engine_driver import pack_input, row_pitch
from sim.memory_image import MemoryImageError, read_memh, write_memh
from sim.queue_image import QueueImage, Region, network_image, read_output
from sim.runner import config_key, emit_verilog
from sim.testing import Case, first_mismatch, make_layer

HDL = toolchain.ROOT / "tb" / "hdl"
#: The bench's own files, in compile order (the exported convcore_dma.v comes last).
SOURCES = [HDL / "axi_ram.v", HDL / "soc_top.v", HDL / "tb_soc.v"]
TOPLEVEL = "tb_soc"
#: soc_top's memory: 64-bit words (its DATA_WIDTH), 2**20 bytes from 0 (its RAM_ADDR_WIDTH).
BUS_WIDTH = 64
MEMORY_BYTES = 1 << 20
#: A small engine that builds quickly on Verilator (the tests' chain and batch fit it).
SMALL = dict(pe=4, simd=4, max_kernel=3, max_width=16, max_height=16, max_channels=16,
             weight_depth=512)
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


def check_queue(result: Result, what: str):
    """Every run ended with no error (named otherwise)."""
    assert result.queue, f"{what}: no QUEUE line\n{result.output[-1000:]}"
    for q in result.queue:
        assert q["error"] == QueueError.NONE, \
            f"{what}: the queue stopped with {QueueError(q['error']).name} ({q})"


def check_network(net, x, layers, memory, what: str):
    """Every layer's outputs in ``memory`` == the golden model's, layer after layer."""
    y = x
    for index, layer in enumerate(layers):
        want = run_layer(layer, y)
        got = net.read(memory.read, index).reshape(want.shape)
        assert np.array_equal(got, want), f"{what} {layer.name}: {first_mismatch(got, want)}"
        y = want


def pack(layer, x, hw):
    return pack_input(x, hw["simd"], row_pitch(layer, hw["simd"], hw.get("packing", True)))


def chain_image(hw, rng):
    """Three layers reading each other's buffers (a packed first layer, a conv with a fused
    pool, a raw int32 one), a guard after the last buffer: (image, layers, x, outputs,
    guard address)."""
    l1, x = make_layer(Case(3, 8, 12, 12, k=(3, 3), pads=(1, 1, 1, 1), relu=True), rng, "c1")
    l2, _ = make_layer(Case(8, 8, 12, 12, pads=(1, 1, 1, 1), pool=MaxPool((2, 2), (2, 2))),
                       rng, "c2")
    l3, _ = make_layer(Case(8, 4, 6, 6, k=(3, 3), out="int32"), rng, "c3")
    image = QueueImage(hw)
    buf = image.put(pack(l1, x, hw))
    outs = []
    for layer in (l1, l2, l3):
        src = buf if not outs else Region(outs[-1].addr, outs[-1].row_bytes)
        outs.append(image.add_layer(layer, src))
    guard = image.put(GUARD)
    return image, [l1, l2, l3], x, outs, guard


GUARD = b"\xa5" * 64


def check_chain(memory, hw, layers, x, outs, guard, what):
    y = x
    for layer, out in zip(layers, outs):
        want = run_layer(layer, y[None])[0]
        got = read_output(memory.read, out, layer, hw["pe"])
        assert np.array_equal(got, want), f"{what} {layer.name}: {first_mismatch(got, want)}"
        y = want
    assert memory.read(guard, len(GUARD)) == GUARD, f"{what}: wrote past its buffers"


def digits(n):
    """The digits CNN and the first ``n`` test images, quantized: (net, x)."""
    from examples.digits import MODEL_PATH, load_test_set
    from model.network import quantize_input
    from sim.onnx_import import load_network
    net = load_network(MODEL_PATH)
    return net, quantize_input(net, load_test_set()[0][:n])


# --- tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sim", toolchain.SIMULATORS)
def test_chain_and_batch(sim, tmp_path):
    """A chain of three layers run twice by one bench (the same cycles both times), then a
    batch of three images layer-major through two layers (every output, the guard after the
    buffers untouched), on the small engine."""
    bench = build(sim, SMALL)
    hw = hw_of(SMALL)
    rng = np.random.default_rng(11)
    image, layers, x, outs, guard = chain_image(hw, rng)
    result = run(bench, image.image(), image.head, tmp_path / "chain", runs=2)
    check_queue(result, "chain")
    assert len(result.queue) == 2 and result.queue[0]["cycles"] == result.queue[1]["cycles"] \
        > 0, f"chain: {result.queue}"
    assert result.cycles > 2 * result.queue[0]["cycles"], result.cycles
    check_chain(result.memory, hw, layers, x, outs, guard, "chain")

    a, _ = make_layer(Case(8, 8, 8, 8, pads=(1, 1, 1, 1)), rng, "a")
    b, _ = make_layer(Case(8, 4, 8, 8, k=(3, 3), pool=MaxPool((2, 2), (2, 2))), rng, "b")
    xs = np.stack([make_layer(Case(8, 8, 8, 8), rng)[1] for _ in range(3)])
    net = network_image([a, b], xs, hw)
    result = run(bench, net.image.image(), net.image.head, tmp_path / "batch")
    check_queue(result, "batch")
    check_network(net, xs, [a, b], result.memory, "batch")


def test_digits_icarus(tmp_path):
    """The digits CNN on two images through the default engine's queue on Icarus: every
    layer's outputs == golden model."""
    bench = build("icarus", {})
    net, x = digits(2)
    image = network_image(net.layers, x, hw_of({}))
    result = run(bench, image.image.image(), image.image.head, tmp_path)
    check_queue(result, "digits")
    check_network(image, x, net.layers, result.memory, "digits")


def test_corrupted_image_mismatches(tmp_path):
    """The bench can fail: one input byte changed in the hex file gives an output that
    differs from the golden model's."""
    bench = build("icarus", SMALL)
    hw = hw_of(SMALL)
    image, layers, x, outs, guard = chain_image(hw, np.random.default_rng(11))
    src = image.entries[0].input.addr
    word = src // (BUS_WIDTH // 8)

    def corrupt(path):
        lines = path.read_text().splitlines()
        at = lines.index(f"@{word:x}") + 1          # the first input word: change its low byte
        lines[at] = lines[at][:-2] + f"{int(lines[at][-2:], 16) ^ 0x5a:02x}"
        path.write_text("\n".join(lines) + "\n")

    result = run(bench, image.image(), image.head, tmp_path, edit=corrupt)
    check_queue(result, "corrupted")
    with pytest.raises(AssertionError, match=r"corrupted c1: "):
        check_chain(result.memory, hw, layers, x, outs, guard, "corrupted")


def test_refusal_and_watchdog(tmp_path):
    """A descriptor the queue refuses (an output address off the bus words) ends the run
    with ALIGN in Q_STATUS; a watchdog shorter than the run ends the simulation with its
    TIMEOUT line."""
    bench = build("icarus", SMALL)
    hw = hw_of(SMALL)
    image, *_ = chain_image(hw, np.random.default_rng(3))
    with pytest.raises(HdlRunError, match=r"TIMEOUT: tb_soc: 200 cycles while running the "
                                          r"queue"):
        run(bench, image.image(), image.head, tmp_path / "timeout", timeout=200)
    image.entries[0].words["out_addr"] += BUS_WIDTH // 16
    result = run(bench, image.image(), image.head, tmp_path / "align", runs=2)
    assert [q["error"] for q in result.queue] == [QueueError.ALIGN], result.queue


def test_memory_image_round_trip(tmp_path):
    """Chunks of any length at any byte address come back from the file; the words between
    chunks are zero; runs of words start with an @ line."""
    image = {0x0: b"\x01", 0x9: bytes(range(1, 12)), 0x40: b"\xff" * 8, 0xfff8: b"\x80"}
    path = write_memh(image, tmp_path / "m.hex", data_width=64, size=1 << 16)
    lines = path.read_text().splitlines()
    assert lines[:4] == ["@0", "0000000000000001", "0706050403020100", "000000000b0a0908"]
    assert lines[4:] == ["@8", "ffffffffffffffff", "@1fff", "0000000000000080"]
    memory = read_memh(path, data_width=64, size=1 << 16)
    for addr, data in image.items():
        assert memory.read(addr, len(data)) == data, hex(addr)
    assert memory.read(0x1, 8) == bytes(8) and memory.read(0x20, 0x20) == bytes(0x20)
    wide = read_memh(write_memh(image, tmp_path / "w.hex", data_width=256, size=1 << 16),
                     data_width=256)
    assert wide.read(0x9, 11) == bytes(range(1, 12)) and wide.size == 1 << 16


@pytest.mark.parametrize("image, size, message", [
    ({0x10: b"ab", 0x11: b"c"}, 64, "chunk at 0x11 overlaps the chunk at 0x10 (which ends at "
                                    "0x12)"),
    ({0x3c: bytes(8)}, 64, "chunk at 0x3c of 0x8 bytes ends at 0x44, beyond the memory of "
                           "0x40 bytes"),
    ({-8: b"a"}, 64, "chunk address -8 is not a byte address"),
    ({0: "text"}, 64, "chunk at 0x0 is str, not bytes"),
    ({0: b"a"}, 60, "size must be a positive multiple of 8 bytes, not 60"),
])
def test_memory_image_errors(tmp_path, image, size, message):
    with pytest.raises(MemoryImageError) as info:
        write_memh(image, tmp_path / "m.hex", data_width=64, size=size)
    assert str(info.value) == message


def test_memory_dump_errors(tmp_path):
    path = tmp_path / "d.hex"
    path.write_text("// 0x00000000\n0000000000000001\n@4\n00000000000000x1\n")
    with pytest.raises(MemoryImageError, match=r"d.hex:4: word 0x4 \(byte 0x20\) is "
                                               r"'00000000000000x1', not hex$"):
        read_memh(path, data_width=64)
    path.write_text("@7\n0000000000000001\n")
    with pytest.raises(MemoryImageError, match=r"word 0x7 \(byte 0x38\) is beyond the memory "
                                               r"of 0x20 bytes$"):
        read_memh(path, data_width=64, size=0x20)
    path.write_text("100000000000000000\n")
    with pytest.raises(MemoryImageError, match="is wider than 64 bits"):
        read_memh(path, data_width=64)
    path.write_text("0000000000000001\n")
    memory = read_memh(path, data_width=64)
    assert memory.read(0, 8) == b"\x01" + bytes(7)
    with pytest.raises(MemoryImageError, match=r"^read of 4 bytes at 0x6 is outside the memory "
                                               r"of 0x8 bytes$"):
        memory.read(6, 4)
    with pytest.raises(MemoryImageError, match=r"^data_width must be one of \(32, 64, 128, 256, "
                                               r"512\), not 48$"):
        read_memh(path, data_width=48)


# --- measurement ---------------------------------------------------------------------------

#: Images of the digits batch and runs of the queue per simulator in the measurement.
MEASURE = {"verilator": (90, 10), "icarus": (8, 1)}
COCOTB_IMAGES = {"verilator": 90, "icarus": 2}
#: The clock period of tb/test_dma_engine.py's cocotb tests.
COCOTB_CLOCK_NS = 10


def measure_hdl(sim, images, runs, folder):
    """The digits CNN on ``images`` images, the queue run ``runs`` times, on the default
    engine with the HDL memory; every layer checked. {cycles, seconds, rate, ...}."""
    bench = build(sim, {})
    net, x = digits(images)
    image = network_image(net.layers, x, hw_of({}))
    result = run(bench, image.image.image(), image.image.head, folder, runs=runs,
                 timeout=200_000_000)
    check_queue(result, f"digits on {sim}")
    check_network(image, x, net.layers, result.memory, f"digits on {sim}")
    return {"images": images, "runs": runs, "queue_cycles": result.queue[0]["cycles"],
            "cycles": result.cycles, "seconds": result.seconds, "rate": result.rate}


def measure_cocotb(sim, images):
    """The same design and batch under cocotb with cocotbext-axi's AxiRam
    (tb/test_dma_engine.py networks_through_queue): simulated cycles over the test's wall
    time (cocotb's results file)."""
    from sim.runner import run_cocotb
    key = config_key("dma_engine", {"bus_width": BUS_WIDTH})
    path = emit_verilog(DmaEngine(bus_width=BUS_WIDTH), toplevel="convcore_dma", key=key)
    run_cocotb(sim, sources=[path], toplevel="convcore_dma", key=key,
               test_module="tb.test_dma_engine", ports_only=True,
               testcase="networks_through_queue",
               extra_env={"CONVCORE_DMA_BUS": str(BUS_WIDTH),
                          "CONVCORE_DMA_NETS": f"digits:{images}"})
    results = toolchain.sim_build_dir(key, sim, waves=False) / "results.xml"
    case = ET.parse(results).getroot().find(".//testcase")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["sim_time_unit"] == "ns", props
    cycles = float(props["sim_time_duration"]) / COCOTB_CLOCK_NS
    seconds = float(case.get("time"))
    return {"images": images, "cycles": int(cycles), "seconds": seconds,
            "rate": cycles / seconds}


def main():
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sim", choices=toolchain.SIMULATORS, action="append",
                        help="simulators to measure (default both)")
    parser.add_argument("--no-cocotb", action="store_true",
                        help="skip the cocotb + AxiRam comparison")
    args = parser.parse_args()
    folder = toolchain.BUILD / "hdl_speed"
    for sim in args.sim or ("verilator", "icarus"):
        images, runs = MEASURE[sim]
        r = measure_hdl(sim, images, runs, folder / sim)
        print(f"{sim}: HDL memory: digits CNN, {images} images x {runs} runs "
              f"({r['queue_cycles']:,} cycles a run), {r['cycles']:,} cycles in "
              f"{r['seconds']:.2f} s: {r['rate']:,.0f} cycles/s (every layer == golden model)",
              flush=True)
        if not args.no_cocotb:
            c = measure_cocotb(sim, COCOTB_IMAGES[sim])
            print(f"{sim}: cocotb + AxiRam: digits CNN, {c['images']} images, "
                  f"{c['cycles']:,} cycles in {c['seconds']:.2f} s: {c['rate']:,.0f} "
                  f"cycles/s; HDL memory / cocotb = {r['rate'] / c['rate']:.1f}", flush=True)


if __name__ == "__main__":
    main()
