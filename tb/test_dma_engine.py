"""The engine behind its DMA front end and layer queue (rtl/dma_engine.py), on Verilator.

Memory is cocotbext-axi's AxiRam on the ``m_axi`` port, with random pauses on every channel
(latency and backpressure); the host writes the queue's image (sim/queue_image.py) into it,
``Q_HEAD`` and ``Q_CTRL.run`` through ``s_axil``, and waits for ``irq``. Every output buffer is
compared with ``==`` against the golden model (model/network.py): single layers of every kind
(fused pool, raw int32 output, partial sums, uint8, a packed first layer), a chain of layers
run by one queue with no host action between them, and each refusal of the queue at its
boundary (the last legal value runs, the first illegal one stops the queue with its code and
the failing descriptor's address).
"""

import logging
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from model.network import MaxPool, run_layer
from rtl.dma_engine import DmaEngine
from rtl.dma_regs import ENGINE_BASE, QUEUE_BASE, QUEUE_REGMAP, QueueError
from rtl.engine_regs import REGMAP, EngineError
from rtl.regmap import RegisterDriver
from sim.queue_image import QueueImage, Region, chains, read_output
from sim.testing import Case, first_mismatch, make_layer, make_psum
from tb.axis import random_pause

#: The engine of the Icarus sweep (tb/test_engine.py) behind a 64-bit memory bus.
CONFIG = dict(pe=4, simd=4, max_kernel=7, max_width=16, max_height=16, max_channels=16,
              weight_depth=512, max_stride=3, max_dilation=2, requant_lanes=2,
              pool_window_slots=3)
BUS_WIDTH = 64
MEMORY_BYTES = 1 << 20
CLOCK_NS = 10
PAUSE = 0.3
TIMEOUT_CYCLES = 400_000


def _hw():
    return DmaEngine(bus_width=BUS_WIDTH, **CONFIG).hw


class Host:
    """The memory, the register port and the queue's registers."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=MEMORY_BYTES)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for agent in (self.ram.write_if, self.ram.read_if, self.axil.write_if,
                      self.axil.read_if):
            agent.log.setLevel(logging.WARNING)
        prng = random.Random(seed)
        for channel in (self.ram.read_if.ar_channel, self.ram.read_if.r_channel,
                        self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                        self.ram.write_if.b_channel):
            channel.set_pause_generator(random_pause(prng, PAUSE))
        self.queue = RegisterDriver(QUEUE_REGMAP, write=self._at(QUEUE_BASE, "write"),
                                    read=self._at(QUEUE_BASE, "read"))
        self.engine = RegisterDriver(REGMAP, write=self._at(ENGINE_BASE, "write"),
                                     read=self._at(ENGINE_BASE, "read"))

    def _at(self, base, kind):
        async def write(addr, value):
            await self.axil.write_dword(base + addr, value)

        async def read(addr):
            return await self.axil.read_dword(base + addr)
        return write if kind == "write" else read

    def load(self, image: QueueImage):
        for addr, data in image.image().items():
            self.ram.write(addr, data)

    def read(self, addr, n):
        return self.ram.read(addr, n)

    async def run(self, head, irq=True):
        """Run the queue from ``head``; returns Q_STATUS as a dict once it ended."""
        await self.queue.write_fields("Q_IRQ_ENABLE", q_irq_enable=int(irq))
        await self.queue.write_fields("Q_HEAD", q_head=head)
        await self.queue.pulse("run")
        if irq:
            await with_timeout(RisingEdge(self.dut.irq), TIMEOUT_CYCLES * CLOCK_NS, "ns")
        else:
            for _ in range(TIMEOUT_CYCLES // 64):
                if (await self.queue.read_fields("Q_STATUS"))["q_done"]:
                    break
                await ClockCycles(self.dut.clk, 64)
        return await self.queue.read_fields("Q_STATUS")


async def start(dut, seed=1):
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    host = Host(dut, seed)
    await ClockCycles(dut.clk, 2)
    return host


#: Single layers: each kind of output and input the queue must move.
SINGLE = [
    Case(4, 8, 8, 8, pads=(1, 1, 1, 1)),
    Case(3, 5, 9, 7, k=(5, 5), stride=(2, 2), pads=(2, 2, 2, 2), x_dtype="uint8",
         out="uint8", relu=True),                             # packed first layer, 5 channels
    Case(8, 8, 10, 10, out="int32"),                          # raw output: 4 PE bytes a word
    Case(8, 6, 8, 8, psum=True),                              # partial sums on the acc channel
    Case(6, 7, 12, 12, pool=MaxPool((2, 2), (2, 2))),          # fused max-pool
    Case(8, 8, 9, 9, alone=True, pool=MaxPool((3, 3), (2, 2))),  # the pool alone
]


@cocotb.test()
async def single_layers(dut):
    """Each layer as a queue of one descriptor; output buffers == golden model, and the
    bytes past each output buffer untouched."""
    host = await start(dut)
    hw = _hw()
    rng = np.random.default_rng(7)
    for index, case in enumerate(SINGLE):
        layer, x = make_layer(case, rng, f"single{index}")
        image = QueueImage(hw, base=0x1000 + index * 0x20000)
        src = image.put_input(layer, x)
        psum = make_psum(layer, rng) if case.psum else None
        psum_addr = image.put(_acc_bytes(psum, hw)) if psum is not None else None
        out = image.add_layer(layer, src, psum=psum_addr)
        guard = image.put(b"\xa5" * 64)
        host.load(image)
        status = await host.run(image.head)
        assert status["q_error"] == QueueError.NONE, f"{case.label()}: queue status {status}"
        got = read_output(host.read, out, layer, hw["pe"])
        want = run_layer(layer, x[None], None if psum is None else psum[None])[0]
        assert np.array_equal(got, want), f"{case.label()}: {first_mismatch(got, want)}"
        assert host.read(guard, 64) == b"\xa5" * 64, f"{case.label()}: wrote past its buffer"
        done = (await host.queue.read_fields("Q_COMPLETED"))["q_completed"]
        assert done == 1, f"{case.label()}: Q_COMPLETED {done}"


@cocotb.test()
async def chain_of_layers(dut):
    """Three layers in one queue (a packed first layer, a conv with a fused pool, a raw int32
    one), each reading the buffer the one before wrote, no host action between them; every
    buffer == golden model, and the engine's counters readable afterwards."""
    host = await start(dut, seed=2)
    hw = _hw()
    rng = np.random.default_rng(11)
    l1, x = make_layer(Case(3, 8, 12, 12, k=(3, 3), pads=(1, 1, 1, 1), relu=True), rng, "c1")
    l2, _ = make_layer(Case(8, 8, 12, 12, pads=(1, 1, 1, 1), pool=MaxPool((2, 2), (2, 2))),
                       rng, "c2")
    l3, _ = make_layer(Case(8, 4, 6, 6, k=(3, 3), out="int32"), rng, "c3")
    layers = [l1, l2, l3]
    for before, after in zip(layers, layers[1:]):
        assert chains(before, after, hw), f"{before.name} -> {after.name} do not chain"
    image = QueueImage(hw)
    buf = image.put_input(l1, x)
    outs = []
    for layer in layers:
        out = image.add_layer(layer, buf if not outs else Region(outs[-1].addr,
                                                                  outs[-1].row_bytes))
        outs.append(out)
    host.load(image)
    status = await host.run(image.head)
    assert status["q_error"] == QueueError.NONE, f"chain: queue status {status}"
    y = x
    for layer, out in zip(layers, outs):
        want = run_layer(layer, y[None])[0]
        got = read_output(host.read, out, layer, hw["pe"])
        assert np.array_equal(got, want), f"{layer.name}: {first_mismatch(got, want)}"
        y = want
    assert (await host.queue.read_fields("Q_COMPLETED"))["q_completed"] == 3
    cycles = (await host.engine.read_fields("CYCLES"))["cycles"]
    assert cycles > 0, "the engine's counters are kept after the queue"


@cocotb.test()
async def batch_layer_major(dut):
    """A batch the way the compiler runs one: every image through a layer, then every image
    through the next. The images after the first of a layer send no parameters (resident)
    and read their input ahead; the second layer's parameters load beside the first's while
    it runs. Every output == golden model; the queue keeps the engine busy: the cycles of the
    whole run stay within a few percent of the engine's own count."""
    host = await start(dut, seed=6)
    hw = _hw()
    rng = np.random.default_rng(21)
    a, _ = make_layer(Case(8, 8, 8, 8, pads=(1, 1, 1, 1)), rng, "a")
    b, _ = make_layer(Case(8, 4, 8, 8, k=(3, 3), pool=MaxPool((2, 2), (2, 2))), rng, "b")
    images = [make_layer(Case(8, 8, 8, 8, pads=(1, 1, 1, 1)), rng)[1] for _ in range(3)]
    image = QueueImage(hw)
    srcs = [image.put_input(a, x) for x in images]
    mids = [image.add_layer(a, src) for src in srcs]
    outs = [image.add_layer(b, Region(mid.addr, mid.row_bytes)) for mid in mids]
    words = [e.words for e in image.entries]
    assert [w["weight_bytes"] > 0 for w in words] == [True, False, False, True, False, False]
    assert all(w["flags"] & 2 for w in words[1:3] + words[4:]), "images after the first: ahead"
    host.load(image)
    status = await host.run(image.head)
    assert status["q_error"] == QueueError.NONE, f"batch: queue status {status}"
    for x, mid, out in zip(images, mids, outs):
        ya = run_layer(a, x[None])[0]
        got = read_output(host.read, mid, a, hw["pe"])
        assert np.array_equal(got, ya), f"a: {first_mismatch(got, ya)}"
        yb = run_layer(b, ya[None])[0]
        got = read_output(host.read, out, b, hw["pe"])
        assert np.array_equal(got, yb), f"b: {first_mismatch(got, yb)}"
    assert (await host.queue.read_fields("Q_COMPLETED"))["q_completed"] == 6


@cocotb.test()
async def multi_pass_layers(dut):
    """Layers larger than the engine, as the compiler splits them, through one queue: one over
    output-channel groups (3 -> 40 channels, each pass writing its slice of every pixel: a
    2-D region), one over input-channel groups (40 -> 6 channels, each pass reading its slice
    of the first's output and adding the partial sums of the pass before); then a chain whose
    second layer's passes read explicit padding (a border filled with the zero point around
    the first layer's output); all == golden model on batches of 2."""
    from sim.queue_image import network_image
    host = await start(dut, seed=7)
    hw = _hw()
    rng = np.random.default_rng(31)
    l1, _ = make_layer(Case(3, 40, 8, 8, pads=(1, 1, 1, 1), relu=True), rng, "wide")
    l2, _ = make_layer(Case(40, 6, 8, 8), rng, "deep")
    x = np.stack([make_layer(Case(3, 40, 8, 8, pads=(1, 1, 1, 1)), rng)[1] for _ in range(2)])
    image = network_image([l1, l2], x, hw)
    assert len(image.image.entries) > 4, "the layers must take several passes"
    host.load(image.image)
    status = await host.run(image.image.head)
    assert status["q_error"] == QueueError.NONE, f"multi-pass: queue status {status}"
    y = x
    for index, layer in enumerate([l1, l2]):
        want = run_layer(layer, y)
        got = image.read(host.read, index)
        assert np.array_equal(got, want), f"{layer.name}: {first_mismatch(got, want)}"
        y = want
    # A one-pass layer, then a padded one split over output channels (its explicit padding a
    # border around the first's output, filled in the image), then one split over input
    # channels reading slices of it.
    c1, x = make_layer(Case(3, 16, 8, 8, pads=(1, 1, 1, 1), relu=True), rng, "one")
    c2, _ = make_layer(Case(16, 24, 8, 8, pads=(1, 1, 1, 1)), rng, "padded")
    c3, _ = make_layer(Case(24, 6, 8, 8), rng, "sliced")
    x = np.stack([x, make_layer(Case(3, 16, 8, 8), rng)[1]])
    image = network_image([c1, c2, c3], x, hw)
    assert any(any(b.top for b in outs) for outs in image.outputs), "no padded buffer"
    host.load(image.image)
    status = await host.run(image.image.head)
    assert status["q_error"] == QueueError.NONE, f"padded: queue status {status}"
    y = x
    for index, layer in enumerate([c1, c2, c3]):
        want = run_layer(layer, y)
        got = image.read(host.read, index)
        assert np.array_equal(got, want), f"{layer.name}: {first_mismatch(got, want)}"
        y = want


@cocotb.test()
async def refusals(dut):
    """Each of the queue's refusals at its boundary: the last legal value runs, the first
    illegal one stops the queue with its code and Q_CURRENT at the failing descriptor."""
    host = await start(dut, seed=3)
    hw = _hw()
    rng = np.random.default_rng(5)
    layer, x = make_layer(Case(4, 4, 6, 6), rng, "r")
    want = run_layer(layer, x[None])[0]
    bus = hw["bus_width"] // 8

    async def run_one(edit, expect, base):
        dut._log.info(f"refusals: {edit.__name__}, expecting {expect.name}")
        image = QueueImage(hw, base=base)
        src = image.put_input(layer, x)
        out = image.add_layer(layer, src)
        edit(image.entries[-1].words, image)
        host.load(image)
        status = await host.run(image.head, irq=bool(base & 0x10000))
        assert status["q_error"] == expect, \
            f"{edit.__name__}: error {QueueError(status['q_error']).name}, want {expect.name}"
        current = (await host.queue.read_fields("Q_CURRENT"))["q_current"]
        assert current == image.head, f"{edit.__name__}: Q_CURRENT {current:#x}"
        if expect == QueueError.NONE:
            words = image.entries[-1].words
            got = read_output(host.read, Region(words["out_addr"], out.row_bytes), layer,
                              hw["pe"])
            assert np.array_equal(got, want), f"{edit.__name__}: {first_mismatch(got, want)}"
        return status

    def nothing(words, image):
        pass

    def out_misaligned(words, image):
        words["out_addr"] += bus // 2

    def out_aligned_next(words, image):          # the next beat: legal
        words["out_addr"] += bus

    def in_rows_zero(words, image):
        words["in_rows"] = 0

    def in_row_bytes_part_word(words, image):
        words["in_row_bytes"] -= 1

    def register_ctrl(words, image):
        words["regs"] = image.put((0).to_bytes(4, "little") + (1).to_bytes(4, "little"))
        words["reg_count"] = 1

    def register_unmapped(words, image):
        words["regs"] = image.put((0xFC).to_bytes(4, "little") + (0).to_bytes(4, "little"))
        words["reg_count"] = 1

    def register_last_mapped(words, image):      # PACKING: the highest mapped word
        off = REGMAP["PACKING"].offset
        pairs = image.registers(layer)
        words["regs"] = image.put(b"".join(o.to_bytes(4, "little") + v.to_bytes(4, "little")
                                           for o, v in pairs + [(off, dict(pairs)[off])]))
        words["reg_count"] = len(pairs) + 1

    def kernel_too_big(words, image):            # the engine refuses: its code comes through
        pairs = [(o, v) for o, v in image.registers(layer)]
        k = REGMAP["KERNEL"]
        pairs = [(o, k.pack(dict(kernel_h=CONFIG["max_kernel"] + 1, kernel_w=3)))
                 if o == k.offset else (o, v) for o, v in pairs]
        words["regs"] = image.put(b"".join(o.to_bytes(4, "little") + v.to_bytes(4, "little")
                                           for o, v in pairs))

    pe, simd = hw["pe"], hw["simd"]

    def out_one_word_short(words, image):       # the output does not fit its region
        words["out_row_bytes"] -= pe

    def out_one_word_long(words, image):        # the region is not filled
        words["out_row_bytes"] += pe

    def in_one_word_long(words, image):         # the input's tlast comes a word late
        words["in_row_bytes"] += simd

    base = 0x1000
    for edit, expect in ((nothing, QueueError.NONE), (out_aligned_next, QueueError.NONE),
                         (out_one_word_short, QueueError.TLAST),
                         (out_one_word_long, QueueError.TLAST),
                         (in_one_word_long, QueueError.TLAST),
                         (out_misaligned, QueueError.ALIGN), (in_rows_zero, QueueError.EMPTY),
                         (in_row_bytes_part_word, QueueError.ALIGN),
                         (register_last_mapped, QueueError.NONE),
                         (register_ctrl, QueueError.REGISTER),
                         (register_unmapped, QueueError.REGISTER),
                         (kernel_too_big, QueueError.ENGINE),
                         (nothing, QueueError.NONE)):          # and the queue still works
        status = await run_one(edit, expect, base)
        if expect == QueueError.ENGINE:
            assert status["q_engine_error"] == EngineError.KERNEL, status
        base += 0x8000


@cocotb.test()
async def host_locked_out_while_running(dut):
    """While the queue runs, the engine's registers answer SLVERR to the host (and change
    nothing); the queue's own registers stay readable; afterwards the host has them back."""
    from cocotbext.axi import AxiResp
    host = await start(dut, seed=4)
    hw = _hw()
    rng = np.random.default_rng(9)
    layer, x = make_layer(Case(8, 8, 16, 16, k=(5, 5), pads=(2, 2, 2, 2)), rng, "big")
    image = QueueImage(hw)
    out = image.add_layer(layer, image.put_input(layer, x))
    host.load(image)
    await host.queue.write_fields("Q_HEAD", q_head=image.head)
    await host.queue.pulse("run")
    await ClockCycles(dut.clk, 200)
    assert (await host.queue.read_fields("Q_STATUS"))["q_busy"] == 1
    write = await host.axil.write(ENGINE_BASE + REGMAP["STRIDE"].offset,
                                  (2).to_bytes(4, "little"))
    assert write.resp == AxiResp.SLVERR, f"engine write while the queue runs: {write.resp}"
    read = await host.axil.read(ENGINE_BASE + REGMAP["STATUS"].offset, 4)
    assert read.resp == AxiResp.SLVERR, f"engine read while the queue runs: {read.resp}"
    while not (await host.queue.read_fields("Q_STATUS"))["q_done"]:
        await ClockCycles(dut.clk, 100)
    got = read_output(host.read, out, layer, hw["pe"])
    want = run_layer(layer, x[None])[0]
    assert np.array_equal(got, want), first_mismatch(got, want)
    stride = await host.engine.read_fields("STRIDE")
    assert stride["stride_h"] == 1, f"the refused write changed STRIDE: {stride}"


#: Environment: the networks through the queue (networks_through_queue) as "name:images,...",
#: and a file to write their figures to.
NETS_ENV = "CONVCORE_DMA_NETS"
REPORT_ENV = "CONVCORE_DMA_REPORT"


@cocotb.test(skip=NETS_ENV not in os.environ)
async def networks_through_queue(dut):
    """Networks on a batch, each as one queue (sim/queue_image.network_image):
    $CONVCORE_DMA_NETS lists ``name:images`` of the digits CNN (conv1 for every image, conv2
    for every image, the dense layer folded) and the CIFAR-10 net (random inputs; conv3 and
    the folded dense layer in the plain format, their inputs being the outputs before as
    they stand); every layer's outputs == golden model. Writes the cycles (Q_CYCLES) of each
    to $CONVCORE_DMA_REPORT if set."""
    import json
    from model.network import quantize_input
    from sim.onnx_import import load_network
    from sim.queue_image import network_image

    host = await start(dut, seed=8)
    hw = DmaEngine(bus_width=int(os.environ.get("CONVCORE_DMA_BUS", BUS_WIDTH))).hw
    report = {}
    for item in os.environ[NETS_ENV].split(","):
        which, n = item.split(":")
        n = int(n)
        if which == "digits":
            from examples.digits import MODEL_PATH, load_test_set
            net = load_network(MODEL_PATH)
            images = load_test_set()[0][:n]
        else:
            from sim.bench import cifar_net
            net = load_network(cifar_net(0))
            images = np.random.default_rng(3).uniform(
                -0.5, 0.5, (n, *net.input_shape[1:])).astype(np.float32)
        x = quantize_input(net, images)
        image = network_image(net.layers, x, hw)
        host.load(image.image)
        status = await host.run(image.image.head)
        if status["q_error"] != QueueError.NONE:
            current = (await host.queue.read_fields("Q_CURRENT"))["q_current"]
            names = {e.desc: f"{e.layer.name} (descriptor {i})"
                     for i, e in enumerate(image.image.entries)}
            raise AssertionError(f"{which}: queue stopped with "
                                 f"{QueueError(status['q_error']).name} at "
                                 f"{names.get(current, hex(current))}")
        y = x
        for index, layer in enumerate(net.layers):
            want = run_layer(layer, y)
            got = image.read(host.read, index).reshape(want.shape)
            assert np.array_equal(got, want), \
                f"{which} {layer.name}: {first_mismatch(got, want)}"
            y = want
        cycles = (await host.queue.read_fields("Q_CYCLES"))["q_cycles"]
        dut._log.info(f"{which} through the queue: {n} images, {cycles} cycles, "
                      f"{cycles / n:.1f} per image, {len(image.image.entries)} descriptors")
        report[which] = {"images": n, "cycles": cycles,
                         "descriptors": len(image.image.entries)}
    if os.environ.get(REPORT_ENV):
        with open(os.environ[REPORT_ENV], "w") as f:
            json.dump(report, f)




def _acc_bytes(psum, hw):
    from sim.engine_driver import pack_acc
    return pack_acc(psum, hw["pe"])


def run(config, bus_width=BUS_WIDTH, env=None, testcase=None):
    """Build the DMA front end around the engine ``config`` on Verilator and run this module's
    cocotb tests (``env``: extra environment, e.g. :data:`DIGITS_ENV`)."""
    from sim.runner import config_key, emit_verilog, run_cocotb
    key = config_key("dma_engine", dict(config, bus_width=bus_width))
    path = emit_verilog(DmaEngine(bus_width=bus_width, **config), toplevel="convcore_dma",
                        key=key)
    return run_cocotb("verilator", sources=[path], toplevel="convcore_dma", key=key,
                      test_module="tb.test_dma_engine", ports_only=True, testcase=testcase,
                      extra_env={"CONVCORE_DMA_BUS": str(bus_width), **(env or {})})


def test_dma_engine_verilator():
    run(CONFIG)


def test_dma_networks_verilator():
    """The digits CNN on 4 images and the CIFAR-10 net on 2 through the default engine's
    queue (one build, one launch)."""
    run({}, env={NETS_ENV: "digits:4,cifar:2"}, testcase="networks_through_queue")
