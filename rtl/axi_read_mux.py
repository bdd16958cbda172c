"""Joins the read channels of several AXI4 managers into one manager port.

AR requests are granted round-robin; a request that was shown on the shared port stays there
until ``arready`` (AXI4 forbids taking back a valid address). R beats go back by RID to the
manager that issued that ID. The mux keeps no ID table of its own: it learns each port's ID
from the port's AR handshakes, so each port must use one ARID, distinct from every other
port's (:class:`rtl.dma_reader.DmaReader` does: ``read_id``). An R beat whose RID no port has
issued is not taken (``rready`` low).

The shared ``rready`` is that of the addressed manager, so a manager that holds ``rready`` low
blocks every R beat behind its own; the DMA readers never do (their credit count keeps a place
for every beat they requested).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.axi4 import AXI4ReadSignature, check_bus

__all__ = ["AxiReadMux"]

#: The AR members that travel with the request (everything but the handshake).
_AR_FIELDS = ("arid", "araddr", "arlen", "arsize", "arburst", "arcache", "arprot")
#: The R members every port sees (only the addressed one sees ``rvalid``).
_R_FIELDS = ("rid", "rdata", "rresp", "rlast")


class AxiReadMux(wiring.Component):
    """``n`` AXI4 read managers on one AXI4 read port.

    Parameters
    ----------
    n : int
        Ports, ``1 .. 2**id_width`` (each needs an ID of its own).
    addr_width, data_width, id_width : int
        The bus, the same on every port (:func:`rtl.axi4.check_bus`).

    Members
    -------
    readers : ``In(AXI4ReadSignature(addr_width, data_width, id_width)).array(n)``
        The managers' ports (connect a manager's ``bus`` to ``readers[i]``).
    bus : ``Out(AXI4ReadSignature(addr_width, data_width, id_width))``
        The shared port. The AR path is combinational from the granted port (a register
        holds the grant), and so is R back to the ports.
    """

    def __init__(self, n, addr_width=32, data_width=64, id_width=4):
        check_bus(addr_width, data_width, id_width)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1 << id_width:
            raise ValueError(f"n must be an integer 1..{1 << id_width} (distinct IDs of "
                             f"{id_width} bits), not {n!r}")
        self.n = n
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        signature = AXI4ReadSignature(addr_width, data_width, id_width)
        super().__init__({"readers": In(signature).array(n), "bus": Out(signature)})

    def elaborate(self, platform):
        m = Module()
        n, bus, readers = self.n, self.bus, self.readers

        # Plain expressions rather than m.If/m.Switch: they become continuous assignments in
        # the Verilog, defined from time 0 in an event-driven simulator.
        def select(values, index):
            """``values[index]`` as a chain of Mux."""
            chosen = values[0]
            for i in range(1, len(values)):
                chosen = Mux(index == i, values[i], chosen)
            return chosen

        # --- AR: round-robin, a shown request held until arready ----------------------------
        held = Signal()                 # bus.arvalid was high without arready: keep ``grant``
        grant = Signal(range(n))        # the port held, else the one granted last
        choice = Signal(range(n))       # the port on the bus this cycle
        after = []                      # after[last]: the first requesting port after ``last``
        for last in range(n):
            port = last                 # no one requests: any port (its arvalid is low)
            for step in reversed(range(1, n + 1)):
                port = Mux(readers[(last + step) % n].arvalid, (last + step) % n, port)
            after.append(port)
        m.d.comb += choice.eq(Mux(held, grant, select(after, grant)))
        for field in _AR_FIELDS:
            m.d.comb += getattr(bus, field).eq(
                select([getattr(readers[i], field) for i in range(n)], choice))
        m.d.comb += bus.arvalid.eq(select([readers[i].arvalid for i in range(n)], choice))
        for i in range(n):
            m.d.comb += readers[i].arready.eq(bus.arready & (choice == i))
        m.d.sync += held.eq(bus.arvalid & ~bus.arready)
        with m.If(bus.arvalid):
            m.d.sync += grant.eq(choice)

        # --- R: by RID, to the port that issued it ----------------------------------------
        takes = []
        for i in range(n):
            known = Signal(name=f"known_{i}")           # port i has issued an AR
            port_id = Signal(self.id_width, name=f"id_{i}")
            with m.If(readers[i].arvalid & readers[i].arready):
                m.d.sync += [known.eq(1), port_id.eq(readers[i].arid)]
            addressed = Signal(name=f"addressed_{i}")
            m.d.comb += addressed.eq(known & (port_id == bus.rid))
            m.d.comb += [getattr(readers[i], f).eq(getattr(bus, f)) for f in _R_FIELDS]
            m.d.comb += readers[i].rvalid.eq(bus.rvalid & addressed)
            takes.append(addressed & readers[i].rready)
        # One port at most is addressed. Low without rvalid (AXI allows it): then RID, which
        # may be anything, does not reach rready.
        m.d.comb += bus.rready.eq(bus.rvalid & Cat(*takes).any())
        return m
