"""The engine with its DMA front end: a memory-mapped accelerator for a SoC.

One AXI4-Lite subordinate port for registers, one AXI4 manager port to memory, one interrupt:

``s_axil_*``
    The engine's registers (:data:`rtl.engine_regs.REGMAP`) at :data:`rtl.dma_regs.ENGINE_BASE`
    and the layer queue's (:data:`rtl.dma_regs.QUEUE_REGMAP`) at
    :data:`rtl.dma_regs.QUEUE_BASE`; 32-bit, :data:`rtl.dma_regs.ADDR_WIDTH` address bits.
``m_axi_*``
    AXI4 manager (:class:`rtl.axi4.AXI4Signature`), ``bus_width`` data bits, ``addr_width``
    address bits, :data:`ID_WIDTH` ID bits. Reads carry the ID of their channel
    (:data:`READ_IDS`: descriptors and register lists, parameters, input, partial sums;
    several in flight at once), writes ID 0 (the output).
``irq``
    High while the queue has ended and ``Q_IRQ_ENABLE`` is set; the next run clears it.

The host writes a chain of layer descriptors into memory (:mod:`rtl.dma_regs`), the head's
address into ``Q_HEAD`` and 1 into ``Q_CTRL.run``; the queue (:class:`rtl.layer_queue.LayerQueue`)
then runs every layer, reading its registers, parameters, input and partial sums and writing
its output with the DMA channels (:class:`rtl.dma_reader.DmaReader`,
:class:`rtl.dma_writer.DmaWriter`), with no host action between layers. The engine's counters
stay readable at ENGINE_BASE once the queue has ended (those of the last layer).

Parameters: ``bus_width`` (32..512 bits), ``addr_width`` (13..32), ``max_burst`` (beats of a
burst), and every engine parameter (:func:`rtl.limits.engine_params`).
"""

from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from rtl.axi4 import AXI4ReadSignature, AXI4Signature, AXI4WriteSignature, check_bus
from rtl.axi_read_mux import AxiReadMux
from rtl.axil_regs import AXI4LiteSignature
from rtl.axil_split import AXI4LiteSplit
from rtl.dma_reader import DmaReader
from rtl.dma_regs import ADDR_WIDTH, DESC_FIELD_WIDTH
from rtl.dma_writer import DmaWriter
from rtl.engine import ConvEngine
from rtl.engine_regs import REGMAP as ENGINE_REGMAP
from rtl.layer_queue import LayerQueue
from rtl.limits import engine_params
from rtl.streams import ACC_WIDTH, DATA_WIDTH, connect_flat, flat_members

__all__ = ["DmaEngine", "ID_WIDTH", "READ_IDS", "WRITE_ID"]

#: AXI ID bits of the memory port, and the ID of each read channel and of the writer.
ID_WIDTH = 2
READ_IDS = {"fetch": 0, "param": 1, "input": 2, "acc": 3}
WRITE_ID = 0


class DmaEngine(wiring.Component):
    """The convcore engine behind a layer queue and its DMA channels (module docstring)."""

    def __init__(self, bus_width=64, addr_width=32, max_burst=16, **engine):
        check_bus(addr_width, bus_width, ID_WIDTH)
        if addr_width > DESC_FIELD_WIDTH:
            raise ValueError(f"addr_width must be at most {DESC_FIELD_WIDTH} (descriptor "
                             f"addresses are 32-bit words), not {addr_width!r}")
        params = engine_params(**engine)
        pw = params["param_width"]
        if pw < DATA_WIDTH or pw & (pw - 1):
            raise ValueError(f"param_width must be a power of two of at least {DATA_WIDTH} bits "
                             f"behind the DMA front end, not {pw!r}")
        self.params = params
        self.bus_width, self.addr_width, self.max_burst = bus_width, addr_width, max_burst
        super().__init__({
            **flat_members(AXI4LiteSignature(ADDR_WIDTH, ENGINE_REGMAP.data_width).flip(),
                           "s_axil"),
            **flat_members(AXI4Signature(addr_width, bus_width, ID_WIDTH), "m_axi"),
            "irq": Out(1),
        })

    @property
    def hw(self):
        """The engine's parameters and the front end's, as a dict."""
        return {**self.params, "bus_width": self.bus_width, "addr_width": self.addr_width,
                "max_burst": self.max_burst}

    def elaborate(self, platform):
        m = Module()
        p = self.params
        pe, simd = p["pe"], p["simd"]
        bus = dict(addr_width=self.addr_width, data_width=self.bus_width, id_width=ID_WIDTH)

        m.submodules.engine = engine = ConvEngine(**p)
        m.submodules.split = split = AXI4LiteSplit(ADDR_WIDTH, ENGINE_REGMAP.data_width)
        m.submodules.queue = queue = LayerQueue(
            bus_bytes=self.bus_width // 8, in_word_bytes=simd,
            param_word_bytes=p["param_width"] // 8, pe=pe, addr_width=self.addr_width)
        connect_flat(m, self, split.bus, "s_axil")
        wiring.connect(m, split.high, queue.csr)
        m.d.comb += [split.low_lock.eq(queue.lock), queue.host_idle.eq(split.low_idle),
                     self.irq.eq(queue.irq)]

        # the engine's registers: the host's (through the split) or, while it runs, the queue's
        lock = queue.lock
        for name, member in split.low.signature.members.items():
            port = getattr(engine, f"s_axil_{name}")
            host, own = getattr(split.low, name), getattr(queue.engine, name)
            if member.flow == Out:
                m.d.comb += port.eq(Mux(lock, own, host))
            elif name.endswith(("ready", "valid")):
                m.d.comb += [host.eq(port & ~lock), own.eq(port & lock)]
            else:
                m.d.comb += [host.eq(port), own.eq(port)]

        # DMA channels
        words = {"fetch": DESC_FIELD_WIDTH, "param": p["param_width"],
                 "input": DATA_WIDTH * simd, "acc": ACC_WIDTH * pe}
        readers = {}
        for name, read_id in READ_IDS.items():
            readers[name] = DmaReader(**bus, read_id=read_id, word_width=words[name],
                                      max_burst=self.max_burst)
            m.submodules[f"read_{name}"] = readers[name]
        m.submodules.read_mux = mux = AxiReadMux(len(READ_IDS), **bus)
        for name, read_id in READ_IDS.items():
            wiring.connect(m, readers[name].bus, mux.readers[read_id])
        m.submodules.write = writer = DmaWriter(**bus, write_id=WRITE_ID,
                                                word_width=ACC_WIDTH * pe,
                                                max_burst=self.max_burst)
        m_axi = {**AXI4ReadSignature(**bus).members}
        for name in m_axi:
            connect_one(m, self, mux.bus, name)
        for name in AXI4WriteSignature(**bus).members:
            connect_one(m, self, writer.bus, name)

        # commands and status
        fetch, param, inp, acc = (readers[n] for n in READ_IDS)
        wiring.connect(m, queue.fetch_cmd, fetch.cmd)
        wiring.connect(m, fetch.data, queue.fetch_data)
        wiring.connect(m, queue.param_cmd, param.cmd)
        wiring.connect(m, queue.in_cmd, inp.cmd)
        wiring.connect(m, queue.acc_cmd, acc.cmd)
        wiring.connect(m, queue.out_cmd, writer.cmd)
        m.d.comb += [
            queue.param_busy.eq(param.busy), queue.in_busy.eq(inp.busy),
            queue.acc_busy.eq(acc.busy),
            queue.out_done.eq(writer.done), queue.out_busy.eq(writer.busy),
            queue.out_error.eq(writer.error), queue.out_last_error.eq(writer.last_error),
            queue.read_error.eq(fetch.error | param.error | inp.error | acc.error),
        ]

        # streams into the engine (words the engine left behind are discarded: drain_in)
        for reader, prefix in ((param, "s_axis_param"), (inp, "s_axis"), (acc, "s_axis_acc")):
            m.d.comb += [
                getattr(engine, f"{prefix}_tdata").eq(reader.data.payload.data),
                getattr(engine, f"{prefix}_tlast").eq(reader.data.payload.last),
                getattr(engine, f"{prefix}_tvalid").eq(reader.data.valid & ~queue.drain_in),
                reader.data.ready.eq(getattr(engine, f"{prefix}_tready") | queue.drain_in),
            ]
        # the output (words past the output region are discarded: drain_out)
        m.d.comb += [
            writer.data.payload.data.eq(engine.m_axis_tdata),
            writer.data.payload.last.eq(engine.m_axis_tlast),
            writer.data.valid.eq(engine.m_axis_tvalid & ~queue.drain_out),
            engine.m_axis_tready.eq(writer.data.ready | queue.drain_out),
        ]
        return m


def connect_one(m, outer, inner, name, prefix="m_axi"):
    """Join the flat port ``outer.{prefix}_{name}`` to the member ``name`` of ``inner`` (an
    interface whose flows are the port's)."""
    port, member = getattr(outer, f"{prefix}_{name}"), getattr(inner, name)
    if inner.signature.members[name].flow == Out:
        m.d.comb += port.eq(member)
    else:
        m.d.comb += member.eq(port)
