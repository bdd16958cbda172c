"""AXI4 (full) manager signatures: the memory port of the DMA front end (:mod:`rtl.dma_engine`).

Seen from the manager (``Out`` members are driven by the manager), with AXI4's own member
names, so that a top level that exposes them with :func:`rtl.streams.flat_members` under the
prefix ``m_axi`` gives the port names cocotbext-axi's ``AxiBus.from_prefix(dut, "m_axi")`` and
every vendor's interconnect expect (``m_axi_araddr``, ``m_axi_rdata``...). Optional AXI4
signals that a plain memory manager would tie off (``*lock``, ``*qos``, ``*region``, ``*user``)
are left out; ``*cache`` and ``*prot`` are driven with :data:`CACHE` and :data:`PROT`.

- :class:`AXI4ReadSignature`: the AR and R channels;
- :class:`AXI4WriteSignature`: the AW, W and B channels;
- :class:`AXI4Signature`: both, one port.

Bursts are INCR (:data:`BURST_INCR`), at most :data:`MAX_BURST_BEATS` beats (AXI4's limit), and
never cross a :data:`BOUNDARY_BYTES` boundary (AXI4's rule); the managers here send full-width
beats (``*size`` = log2 of the bus bytes).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.axil_regs import OKAY, RESP_WIDTH, SLVERR
from rtl.regmap import BYTE

__all__ = ["AXI4ReadSignature", "AXI4WriteSignature", "AXI4Signature", "LEN_WIDTH", "SIZE_WIDTH",
           "BURST_WIDTH", "BURST_INCR", "CACHE", "PROT", "MAX_BURST_BEATS", "BOUNDARY_BYTES",
           "OKAY", "SLVERR", "RESP_WIDTH", "DATA_WIDTHS", "check_bus"]

#: Widths of AxLEN, AxSIZE, AxBURST.
LEN_WIDTH = 8
SIZE_WIDTH = 3
BURST_WIDTH = 2
CACHE_WIDTH = 4
PROT_WIDTH = 3
#: AxBURST of an incrementing burst.
BURST_INCR = 0b01
#: AxCACHE: normal non-cacheable bufferable (what DMA engines such as taxi's send).
CACHE = 0b0011
#: AxPROT: unprivileged, secure, data.
PROT = 0b000
#: Most beats of an INCR burst (AxLEN + 1).
MAX_BURST_BEATS = 256
#: A burst never crosses an address that is a multiple of this.
BOUNDARY_BYTES = 4096
#: Data widths the managers here support (bits).
DATA_WIDTHS = (32, 64, 128, 256, 512)


def check_bus(addr_width, data_width, id_width):
    """Raise ValueError (naming the bad value) unless the bus parameters are legal."""
    if not isinstance(addr_width, int) or isinstance(addr_width, bool) \
            or not 13 <= addr_width <= 64:
        raise ValueError(f"addr_width must be an integer 13..64 (a burst may span 4 KiB), "
                         f"not {addr_width!r}")
    if data_width not in DATA_WIDTHS:
        raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
    if not isinstance(id_width, int) or isinstance(id_width, bool) or not 1 <= id_width <= 16:
        raise ValueError(f"id_width must be an integer 1..16, not {id_width!r}")


def _read_members(addr_width, data_width, id_width):
    return {
        "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(LEN_WIDTH),
        "arsize": Out(SIZE_WIDTH), "arburst": Out(BURST_WIDTH), "arcache": Out(CACHE_WIDTH),
        "arprot": Out(PROT_WIDTH), "arvalid": Out(1), "arready": In(1),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(RESP_WIDTH),
        "rlast": In(1), "rvalid": In(1), "rready": Out(1),
    }


def _write_members(addr_width, data_width, id_width):
    return {
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(LEN_WIDTH),
        "awsize": Out(SIZE_WIDTH), "awburst": Out(BURST_WIDTH), "awcache": Out(CACHE_WIDTH),
        "awprot": Out(PROT_WIDTH), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // BYTE), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(RESP_WIDTH), "bvalid": In(1), "bready": Out(1),
    }


class _AXI4Base(wiring.Signature):
    _members = None

    def __init__(self, addr_width=32, data_width=64, id_width=4):
        check_bus(addr_width, data_width, id_width)
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        super().__init__(type(self)._members(addr_width, data_width, id_width))

    def __eq__(self, other):
        return (type(other) is type(self) and other.addr_width == self.addr_width
                and other.data_width == self.data_width and other.id_width == self.id_width)

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width, self.id_width))

    def __repr__(self):
        return (f"{type(self).__name__}({self.addr_width}, {self.data_width}, "
                f"{self.id_width})")


class AXI4ReadSignature(_AXI4Base):
    """AR and R channels of an AXI4 manager."""
    _members = staticmethod(_read_members)


class AXI4WriteSignature(_AXI4Base):
    """AW, W and B channels of an AXI4 manager."""
    _members = staticmethod(_write_members)


class AXI4Signature(_AXI4Base):
    """A whole AXI4 manager port (read and write channels)."""
    _members = staticmethod(
        lambda a, d, i: {**_read_members(a, d, i), **_write_members(a, d, i)})
