"""DMA read channel: an AXI4 manager that streams a 2-D region of memory (:mod:`rtl.dma_region`)
out as words.

One command, one region: its rows in order, each row's bytes in order, as ``word_width``-bit
words (the first byte in the low bits) with ``last`` on the region's final word.

- ``word_width`` narrower than the bus: a beat gives several words, low word first; a row that
  ends inside a beat takes that beat's low bytes and drops the rest.
- ``word_width`` wider than the bus: several beats make a word, the first beat in the low bits
  (rows are then whole words, hence whole beats).

Reads are INCR bursts of full-width beats, at most ``max_burst`` beats, split at every
:data:`~rtl.axi4.BOUNDARY_BYTES` boundary and at every row end; all carry ARID ``read_id``.
Several bursts may be outstanding, as many as the data FIFO has room for: a burst is issued
only when its beats fit into the places of the FIFO that are neither filled nor promised to
an earlier burst (credits). So the reader takes every R beat the cycle it comes (``rready``
stays high while a beat is due), whatever its consumer does: readers that share a bus through
:class:`rtl.axi_read_mux.AxiReadMux` never block one another's R beats.

Timing: the first AR goes out two cycles after the command is taken; a beat reaches ``data``
two cycles after its R handshake (the FIFO's output register). With the default FIFO (two
bursts) a long region moves one beat a cycle (one word a cycle where words are narrower than
the bus) as long as the memory answers within about a burst's time. Commands do not overlap:
the next one is taken the cycle after the current one's final word.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from rtl.axi4 import BOUNDARY_BYTES, BURST_INCR, CACHE, OKAY, PROT, AXI4ReadSignature
from rtl.dma_region import MAX_WORD_WIDTH, ROW_BYTES_WIDTH, check_channel, region_layout
from rtl.regmap import BYTE
from rtl.streams import payload_layout

__all__ = ["DmaReader", "MAX_WORD_WIDTH", "MIN_FIFO_BEATS", "default_fifo_beats"]

#: Fewest beats of the data FIFO: a SyncFIFOBuffered of 2 refuses a write in the cycle after it
#: fills from empty with a place free, which would break the credit count's promise.
MIN_FIFO_BEATS = 3


def default_fifo_beats(max_burst: int) -> int:
    """The FIFO size when none is given: two bursts (one arriving while one drains), at least 8
    beats (several short bursts in flight)."""
    return max(2 * max_burst, 8)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class DmaReader(wiring.Component):
    """Reads one region per command from an AXI4 bus and streams its bytes as words.

    Parameters
    ----------
    addr_width, data_width, id_width : int
        The bus (:func:`rtl.axi4.check_bus`).
    read_id : int
        ARID of every burst, ``0 .. 2**id_width - 1``.
    word_width : int
        Bits of a ``data`` word, a power of two from 8 to :data:`MAX_WORD_WIDTH`.
    max_burst : int
        Most beats of a burst, ``1 .. 256``.
    fifo_beats : int or None
        Beats of the data FIFO, at least ``max(max_burst, MIN_FIFO_BEATS)``; ``None`` for
        :func:`default_fifo_beats`. The beats in flight never exceed it.

    Members
    -------
    cmd : ``In(stream.Signature(region_layout(addr_width)))``
        A region (rules in :mod:`rtl.dma_region`, assumed, not checked). Taken only when the
        reader is idle (``ready`` is ``~busy``).
    data : ``Out(stream.Signature(payload_layout(word_width)))``
        The region's words, ``last`` on its final word.
    bus : ``Out(AXI4ReadSignature(addr_width, data_width, id_width))``
        AR and R; ``rid`` is not looked at (a mux routes by it).
    busy : ``Out(1)``
        A command was taken and its final word not yet delivered.
    error : ``Out(1)``
        An R beat of the current (or the last) command had an RRESP other than OKAY; its data
        is delivered all the same. Cleared when the next command is taken.
    """

    def __init__(self, addr_width=32, data_width=64, id_width=4, read_id=0, word_width=64,
                 max_burst=16, fifo_beats=None):
        check_channel(addr_width, data_width, id_width, "read_id", read_id, word_width,
                      max_burst)
        if fifo_beats is None:
            fifo_beats = default_fifo_beats(max_burst)
        least = max(max_burst, MIN_FIFO_BEATS)
        if not _is_int(fifo_beats) or fifo_beats < least:
            raise ValueError(f"fifo_beats must be an integer >= {least} (max_burst "
                             f"{max_burst}, and at least {MIN_FIFO_BEATS}), not {fifo_beats!r}")
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        self.read_id, self.word_width = read_id, word_width
        self.max_burst, self.fifo_beats = max_burst, fifo_beats
        super().__init__({
            "cmd": In(stream.Signature(region_layout(addr_width))),
            "data": Out(stream.Signature(payload_layout(word_width))),
            "bus": Out(AXI4ReadSignature(addr_width, data_width, id_width)),
            "busy": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus_bytes = self.data_width // BYTE
        beat_shift = exact_log2(bus_bytes)
        word_shift = exact_log2(self.word_width // BYTE)
        boundary_beats = BOUNDARY_BYTES // bus_bytes
        bus, cmd = self.bus, self.cmd

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.data_width, depth=self.fifo_beats)

        # --- command -----------------------------------------------------------------------
        stride = Signal.like(cmd.payload.stride)
        row_beats = Signal(ROW_BYTES_WIDTH + 1)
        row_words = Signal(ROW_BYTES_WIDTH)
        take = cmd.valid & cmd.ready
        m.d.comb += cmd.ready.eq(~self.busy)

        # --- AR: one burst at a time into the AR registers ---------------------------------
        ar_active = Signal()
        ar_addr = Signal(self.addr_width)           # next burst's first byte
        row_addr = Signal(self.addr_width)          # first byte of the row being requested
        ar_row_left = Signal(ROW_BYTES_WIDTH + 1)   # beats of that row not yet requested
        ar_rows_left = Signal.like(cmd.payload.rows)
        credits = Signal(range(self.fifo_beats + 1), init=self.fifo_beats)

        to_boundary = Signal(range(boundary_beats + 1))
        m.d.comb += to_boundary.eq(boundary_beats - ar_addr[beat_shift:exact_log2(BOUNDARY_BYTES)])
        limit = Mux(to_boundary < self.max_burst, to_boundary, self.max_burst)
        length = Signal(range(min(self.max_burst, boundary_beats) + 1))   # of the next burst
        m.d.comb += length.eq(Mux(ar_row_left < limit, ar_row_left, limit))

        m.d.comb += [
            bus.arid.eq(self.read_id),
            bus.arsize.eq(beat_shift),
            bus.arburst.eq(BURST_INCR),
            bus.arcache.eq(CACHE),
            bus.arprot.eq(PROT),
        ]
        issue = Signal()
        m.d.comb += issue.eq(ar_active & (credits >= length) & (~bus.arvalid | bus.arready))
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += bus.arvalid.eq(0)
        next_row = row_addr + stride
        with m.If(issue):
            m.d.sync += [
                bus.araddr.eq(ar_addr),
                bus.arlen.eq(length - 1),
                bus.arvalid.eq(1),
            ]
            with m.If(length == ar_row_left):
                m.d.sync += [
                    ar_rows_left.eq(ar_rows_left - 1),
                    row_addr.eq(next_row),
                    ar_addr.eq(next_row),
                    ar_row_left.eq(row_beats),
                ]
                with m.If(ar_rows_left == 1):
                    m.d.sync += ar_active.eq(0)
            with m.Else():
                m.d.sync += [
                    ar_addr.eq(ar_addr + (length << beat_shift)),
                    ar_row_left.eq(ar_row_left - length),
                ]
        with m.If(take):
            p = cmd.payload
            beats = (p.row_bytes + bus_bytes - 1) >> beat_shift
            m.d.sync += [
                stride.eq(p.stride),
                row_beats.eq(beats),
                row_words.eq(p.row_bytes >> word_shift),
                ar_active.eq(1),
                ar_addr.eq(p.addr),
                row_addr.eq(p.addr),
                ar_row_left.eq(beats),
                ar_rows_left.eq(p.rows),
            ]

        # --- R: every beat into the FIFO ---------------------------------------------------
        # The credits guarantee a place for each beat that comes, so rready is high whenever
        # one is due (it is the FIFO's w_rdy only so that a protocol fault stalls, not drops).
        m.d.comb += [
            fifo.w_data.eq(bus.rdata),
            fifo.w_en.eq(bus.rvalid),
            bus.rready.eq(fifo.w_rdy),
        ]
        with m.If(bus.rvalid & bus.rready & (bus.rresp != OKAY)):
            m.d.sync += self.error.eq(1)
        with m.If(take):
            m.d.sync += self.error.eq(0)

        # A place of the FIFO returns to the credits when its beat leaves (the AR register
        # puts at least two cycles between that and the earliest R beat it can bring).
        popped = fifo.r_en & fifo.r_rdy
        m.d.sync += credits.eq(credits + popped - Mux(issue, length, 0))

        # --- out: beats to words -----------------------------------------------------------
        out_row_left = Signal(ROW_BYTES_WIDTH)      # words of the current row not yet formed
        out_rows_left = Signal.like(cmd.payload.rows)
        row_end = out_row_left == 1
        final = row_end & (out_rows_left == 1)
        with m.If(take):
            m.d.sync += [
                out_row_left.eq(cmd.payload.row_bytes >> word_shift),
                out_rows_left.eq(cmd.payload.rows),
                self.busy.eq(1),
            ]

        def advance():
            """The word now formed is counted: the next one starts a row or continues it."""
            with m.If(row_end):
                m.d.sync += [out_row_left.eq(row_words), out_rows_left.eq(out_rows_left - 1)]
            with m.Else():
                m.d.sync += out_row_left.eq(out_row_left - 1)

        if self.word_width <= self.data_width:
            per_beat = self.data_width // self.word_width
            m.d.comb += [
                self.data.valid.eq(fifo.r_rdy),
                self.data.payload.last.eq(final),
            ]
            sent = self.data.valid & self.data.ready
            if per_beat == 1:
                m.d.comb += [self.data.payload.data.eq(fifo.r_data), fifo.r_en.eq(sent)]
            else:
                select = Signal(range(per_beat))      # the word of the beat on the output
                m.d.comb += [
                    self.data.payload.data.eq(fifo.r_data.word_select(select, self.word_width)),
                    fifo.r_en.eq(sent & (row_end | (select == per_beat - 1))),
                ]
                with m.If(sent):
                    m.d.sync += select.eq(Mux(row_end, 0, select + 1))
                with m.If(take):
                    m.d.sync += select.eq(0)
            with m.If(sent):
                advance()
                with m.If(final):
                    m.d.sync += self.busy.eq(0)
        else:
            per_word = self.word_width // self.data_width
            gathered = Signal(range(per_word))      # beats of the word in ``partial``
            partial = Signal(self.data_width * (per_word - 1))
            word_valid = Signal()
            word = Signal(self.word_width)
            word_last = Signal()
            m.d.comb += [
                self.data.valid.eq(word_valid),
                self.data.payload.data.eq(word),
                self.data.payload.last.eq(word_last),
            ]
            sent = self.data.valid & self.data.ready
            completes = gathered == per_word - 1
            m.d.comb += fifo.r_en.eq(~completes | ~word_valid | self.data.ready)
            with m.If(sent):
                m.d.sync += word_valid.eq(0)
                with m.If(word_last):
                    m.d.sync += self.busy.eq(0)
            with m.If(popped):
                m.d.sync += gathered.eq(Mux(completes, 0, gathered + 1))
                with m.If(completes):
                    m.d.sync += [
                        word.eq(Cat(partial, fifo.r_data)),
                        word_valid.eq(1),
                        word_last.eq(final),
                    ]
                    advance()
                with m.Else():
                    m.d.sync += partial.eq(Cat(partial, fifo.r_data)[self.data_width:])
            with m.If(take):
                m.d.sync += gathered.eq(0)
        return m
