"""An AXI4-Lite address split: one subordinate port, two manager ports for the two halves of
its address space (the DMA front end's engine and queue windows, :mod:`rtl.dma_regs`).

Address bit ``addr_width - 1`` chooses the half (0: ``low``, 1: ``high``); each half sees the
bits below it. One write and one read are in flight at a time (each waits for its response
before the next address is taken), which is all a register port needs. While ``low_lock`` is
high, a transaction that addresses the low half is answered SLVERR here and never reaches
``low`` (the layer queue owns the engine's registers while it runs); ``low_idle`` is high when
no transaction is in flight on ``low``, so that the lock can be taken between transactions.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from rtl.axil_regs import SLVERR, AXI4LiteSignature

__all__ = ["AXI4LiteSplit"]


class _Target(enum.Enum, shape=2):
    IDLE = 0
    LOW = 1
    HIGH = 2
    ERROR = 3


class AXI4LiteSplit(wiring.Component):
    """Parameters: ``addr_width`` (of the subordinate port; each half has one bit less, at
    least 3), ``data_width`` (32 or 64)."""

    def __init__(self, addr_width, data_width=32):
        if not isinstance(addr_width, int) or isinstance(addr_width, bool) or addr_width < 4:
            raise ValueError(f"addr_width must be an integer >= 4, not {addr_width!r}")
        half = AXI4LiteSignature(addr_width - 1, data_width)
        super().__init__({
            "bus": In(AXI4LiteSignature(addr_width, data_width)),
            "low": Out(half), "high": Out(half),
            "low_lock": In(1), "low_idle": Out(1),
        })
        self.addr_width = addr_width

    def elaborate(self, platform):
        m = Module()
        bus, low, high = self.bus, self.low, self.high
        top = self.addr_width - 1

        for port in (low, high):
            m.d.comb += [port.awaddr.eq(bus.awaddr[:top]), port.awprot.eq(bus.awprot),
                         port.wdata.eq(bus.wdata), port.wstrb.eq(bus.wstrb),
                         port.araddr.eq(bus.araddr[:top]), port.arprot.eq(bus.arprot)]

        # --- writes: AW and W forwarded once each to the chosen half, then its B ---
        wtarget = Signal(_Target)
        aw_done, w_done = Signal(), Signal()
        with m.If(wtarget == _Target.IDLE):
            with m.If(bus.awvalid):
                with m.If(bus.awaddr[top]):
                    m.d.sync += wtarget.eq(_Target.HIGH)
                with m.Elif(self.low_lock):
                    m.d.sync += wtarget.eq(_Target.ERROR)
                with m.Else():
                    m.d.sync += wtarget.eq(_Target.LOW)
                m.d.sync += [aw_done.eq(0), w_done.eq(0)]
        for kind, port in ((_Target.LOW, low), (_Target.HIGH, high)):
            with m.If(wtarget == kind):
                m.d.comb += [port.awvalid.eq(bus.awvalid & ~aw_done),
                             bus.awready.eq(port.awready & ~aw_done),
                             port.wvalid.eq(bus.wvalid & ~w_done),
                             bus.wready.eq(port.wready & ~w_done),
                             bus.bvalid.eq(port.bvalid), bus.bresp.eq(port.bresp),
                             port.bready.eq(bus.bready)]
                with m.If(port.bvalid & bus.bready):
                    m.d.sync += wtarget.eq(_Target.IDLE)
        with m.If(wtarget == _Target.ERROR):
            m.d.comb += [bus.awready.eq(~aw_done), bus.wready.eq(~w_done),
                         bus.bvalid.eq(aw_done & w_done), bus.bresp.eq(SLVERR)]
            with m.If(aw_done & w_done & bus.bready):
                m.d.sync += wtarget.eq(_Target.IDLE)
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += aw_done.eq(1)
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += w_done.eq(1)

        # --- reads: AR forwarded once to the chosen half, then its R ---
        rtarget = Signal(_Target)
        ar_done = Signal()
        with m.If(rtarget == _Target.IDLE):
            with m.If(bus.arvalid):
                with m.If(bus.araddr[top]):
                    m.d.sync += rtarget.eq(_Target.HIGH)
                with m.Elif(self.low_lock):
                    m.d.sync += rtarget.eq(_Target.ERROR)
                with m.Else():
                    m.d.sync += rtarget.eq(_Target.LOW)
                m.d.sync += ar_done.eq(0)
        for kind, port in ((_Target.LOW, low), (_Target.HIGH, high)):
            with m.If(rtarget == kind):
                m.d.comb += [port.arvalid.eq(bus.arvalid & ~ar_done),
                             bus.arready.eq(port.arready & ~ar_done),
                             bus.rvalid.eq(port.rvalid), bus.rdata.eq(port.rdata),
                             bus.rresp.eq(port.rresp), port.rready.eq(bus.rready)]
                with m.If(port.rvalid & bus.rready):
                    m.d.sync += rtarget.eq(_Target.IDLE)
        with m.If(rtarget == _Target.ERROR):
            m.d.comb += [bus.arready.eq(~ar_done), bus.rvalid.eq(ar_done),
                         bus.rresp.eq(SLVERR)]
            with m.If(ar_done & bus.rready):
                m.d.sync += rtarget.eq(_Target.IDLE)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += ar_done.eq(1)

        m.d.comb += self.low_idle.eq((wtarget != _Target.LOW) & (rtarget != _Target.LOW))
        return m
