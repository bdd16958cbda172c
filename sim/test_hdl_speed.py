"""The engine behind its DMA front end with its memory in HDL (:mod:`sim.hdl_sim`: tb/hdl/soc_top.v,
tb/hdl/tb_soc.v): whole queues simulated with no Python while they run, on Icarus and
Verilator; every output buffer is compared with ``==`` against the golden model.

Tests (``make test``): a chain of layers and a batch on a small engine (:data:`SMALL`) on both
simulators, the digits CNN on the default engine on Icarus, a corrupted image that must give a
mismatch, a refused descriptor and the watchdog; and :mod:`sim.memory_image` on its own.

Measurement (not a test; ``make bench`` has it as section ``hdl``): ``python -m
sim.test_hdl_speed`` runs the digits CNN on the default engine on Verilator and Icarus with
the HDL memory (:func:`sim.hdl_sim.measure`, checking every layer) and the same design under
cocotb with cocotbext-axi's AxiRam (tb/test_dma_engine.py's networks_through_queue), and
prints simulated cycles per second of each.
"""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from model.network import MaxPool, run_layer
from rtl.dma_engine import DmaEngine
from rtl.dma_regs import QueueError
from sim import toolchain
from sim.memory_image import MemoryImageError, read_memh, write_memh
from sim.queue_image import QueueImage, Region, network_image, read_output
from sim.hdl_sim import (BUS_WIDTH, HdlRunError, Result, build, digits, hw_of,
                         measure, run)
from sim.runner import config_key, emit_verilog
from sim.testing import Case, first_mismatch, make_layer

#: A small engine that builds quickly on Verilator (the tests' chain and batch fit it).
SMALL = dict(pe=4, simd=4, max_kernel=3, max_width=16, max_height=16, max_channels=16,
             weight_depth=512)


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




def chain_image(hw, rng):
    """Three layers reading each other's buffers (a packed first layer, a conv with a fused
    pool, a raw int32 one), a guard after the last buffer: (image, layers, x, outputs,
    guard address)."""
    l1, x = make_layer(Case(3, 8, 12, 12, k=(3, 3), pads=(1, 1, 1, 1), relu=True), rng, "c1")
    l2, _ = make_layer(Case(8, 8, 12, 12, pads=(1, 1, 1, 1), pool=MaxPool((2, 2), (2, 2))),
                       rng, "c2")
    l3, _ = make_layer(Case(8, 4, 6, 6, k=(3, 3), out="int32"), rng, "c3")
    image = QueueImage(hw)
    buf = image.put_input(l1, x)
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
        r = measure(sim, images, runs, folder / sim)
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
