"""DMA write channel: an AXI4 manager that writes a stream of words into a 2-D region of memory
(:mod:`rtl.dma_region`).

One command, one region: its rows in order, each row's bytes in order, taken from the ``data``
words row after row. Of each ``word_width``-bit word only the low ``2**word_bytes_log2`` bytes
are real (a command field: a requantized engine layer fills the low ``PE`` bytes of its
``ACC_WIDTH * PE``-bit words, a raw int32 layer all of them); the rest are ignored.

- real bytes narrower than the bus: several words make a beat, the first word in the low
  bytes; a row that ends inside a beat writes that beat's low bytes only (``wstrb``), the bytes
  after the row end are left as they were;
- real bytes as wide as the bus or wider: each word is one beat or several, its low bytes first
  (rows are then whole words, hence whole beats).

Writes are INCR bursts of full-width beats, at most ``max_burst`` beats, split at every
:data:`~rtl.axi4.BOUNDARY_BYTES` boundary and at every row end; all carry AWID ``write_id``.
``wstrb`` is all ones except on a row's final beat when the row ends inside it. ``bready`` is
always high.

Timing. The first AW comes the cycle after the command is taken, then at most one a cycle,
from registers, ahead of the data: up to :data:`MAX_OUTSTANDING` bursts may have their AW
issued and their B response not yet received. The W channel is one register: a burst's first
beat is valid at the earliest two cycles after its AW handshake (words are taken from the
cycle after it); then, while the input and ``wready`` keep up, one beat a cycle when the real
bytes of a word fill a beat or more, one word a cycle when they are narrower. ``data.ready``
depends combinationally on ``wready``. A command is done (``done``) the cycle after the B
response of the last burst it issued: the region is then in memory. The next command can be
taken the cycle after ``done``.

The input's ``last`` is expected on the command's final word (the word that fills the final
beat of the final row):

- an early ``last`` ends the command: the words up to and including it are written, no
  further burst is issued, and the beats of bursts already issued are sent with ``wstrb`` 0
  (the bus stays legal); ``last_error`` is set and ``done`` comes when those bursts' responses
  are in. The words after it are left in the input for the next command.
- a final word without ``last`` sets ``last_error`` and nothing else: the command completes
  normally, and the words that follow belong to the next command.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from rtl.axi4 import BOUNDARY_BYTES, BURST_INCR, CACHE, OKAY, PROT, AXI4WriteSignature
from rtl.dma_region import MAX_WORD_WIDTH, ROW_BYTES_WIDTH, check_channel, region_layout
from rtl.regmap import BYTE
from rtl.streams import payload_layout

__all__ = ["DmaWriter", "command_layout", "MAX_WORD_WIDTH", "MAX_OUTSTANDING"]

#: Most bursts with their AW issued and their B response not yet received (also the depth of
#: the queue of issued bursts waiting for their W beats).
MAX_OUTSTANDING = 8


def command_layout(addr_width: int, word_width: int) -> data.StructLayout:
    """A write command: the ``region`` to fill (:func:`rtl.dma_region.region_layout`) and
    ``word_bytes_log2``, log2 of the real (low) bytes of each input word, wide enough for
    ``0 .. log2(word_width / 8)``."""
    most = exact_log2(word_width // BYTE)
    return data.StructLayout({"region": region_layout(addr_width),
                              "word_bytes_log2": unsigned(max(1, most.bit_length()))})


class DmaWriter(wiring.Component):
    """Writes one region per command to an AXI4 bus from a stream of words.

    Parameters
    ----------
    addr_width, data_width, id_width : int
        The bus (:func:`rtl.axi4.check_bus`).
    write_id : int
        AWID of every burst, ``0 .. 2**id_width - 1``.
    word_width : int
        Bits of a ``data`` word, a power of two from 8 to :data:`MAX_WORD_WIDTH`.
    max_burst : int
        Most beats of a burst, ``1 .. 256``.

    Members
    -------
    cmd : ``In(stream.Signature(command_layout(addr_width, word_width)))``
        A region (rules in :mod:`rtl.dma_region`, assumed, not checked: ``addr`` and ``stride``
        multiples of the bus bytes, ``row_bytes`` a whole number >= 1 of real word bytes,
        ``rows`` >= 1) and ``word_bytes_log2`` (``2**word_bytes_log2 <= word_width / 8``,
        assumed). Taken only when the writer is idle (``ready`` is ``~busy``).
    data : ``In(stream.Signature(payload_layout(word_width)))``
        The words to write, in order, ``last`` on the command's final word. Taken only while
        a command runs; at most one word a cycle.
    bus : ``Out(AXI4WriteSignature(addr_width, data_width, id_width))``
        AW, W and B. ``bid`` is not looked at.
    done : ``Out(1)``
        One-cycle strobe: every B response of the command has arrived (``busy`` is still
        high in that cycle and low after).
    busy : ``Out(1)``
        From the cycle after a command is taken to its ``done``, inclusive.
    error : ``Out(1)``
        A B response of the command had a BRESP other than OKAY. Cleared when the next
        command is taken.
    last_error : ``Out(1)``
        The input's ``last`` came before the command's final word (see the module docstring
        for what is written then), or the final word came without it. Cleared when the next
        command is taken.
    """

    def __init__(self, addr_width=32, data_width=64, id_width=4, write_id=0, word_width=256,
                 max_burst=16):
        check_channel(addr_width, data_width, id_width, "write_id", write_id, word_width,
                      max_burst)
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        self.write_id, self.word_width, self.max_burst = write_id, word_width, max_burst
        super().__init__({
            "cmd": In(stream.Signature(command_layout(addr_width, word_width))),
            "data": In(stream.Signature(payload_layout(word_width))),
            "bus": Out(AXI4WriteSignature(addr_width, data_width, id_width)),
            "done": Out(1),
            "busy": Out(1),
            "error": Out(1),
            "last_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus_bytes = self.data_width // BYTE
        beat_shift = exact_log2(bus_bytes)
        most_shift = exact_log2(self.word_width // BYTE)   # largest word_bytes_log2
        boundary_beats = BOUNDARY_BYTES // bus_bytes
        bus, cmd, word = self.bus, self.cmd, self.data
        region = cmd.payload.region

        burst_layout = data.StructLayout({"len": range(self.max_burst), "row_end": 1,
                                          "cmd_end": 1})
        m.submodules.bursts = bursts = SyncFIFO(width=burst_layout.size, depth=MAX_OUTSTANDING)
        head = data.View(burst_layout, bursts.r_data)

        # --- command -----------------------------------------------------------------------
        take = cmd.valid & cmd.ready
        stride = Signal.like(region.stride)
        row_beats = Signal(ROW_BYTES_WIDTH + 1)
        word_shift = Signal.like(cmd.payload.word_bytes_log2)
        split = Signal()                                # a word spans several beats
        full_slot = Signal(range(bus_bytes))            # slot of a beat's final word
        row_end_slot = Signal(range(bus_bytes))         # slot of a row's final word
        final_part = Signal(range(max(1, (self.word_width // self.data_width))))
        m.d.comb += cmd.ready.eq(~self.busy)

        # --- AW: one burst a cycle at most, from registers ---------------------------------
        aw_active = Signal()
        aw_addr = Signal(self.addr_width)               # the burst's first byte
        row_addr = Signal(self.addr_width)              # the first byte of its row
        row_left = Signal(ROW_BYTES_WIDTH + 1)          # beats of the row not yet issued
        rows_left = Signal.like(region.rows)
        outstanding = Signal(range(MAX_OUTSTANDING + 1))
        stop = Signal()                                 # early last: issue no further burst

        to_boundary = Signal(range(boundary_beats + 1))
        cap = Signal(range(max(self.max_burst, boundary_beats) + 1))
        beats = Signal(range(self.max_burst + 1))
        row_done = Signal()
        m.d.comb += [
            to_boundary.eq(boundary_beats - aw_addr[beat_shift:exact_log2(BOUNDARY_BYTES)]),
            cap.eq(Mux(to_boundary < self.max_burst, to_boundary, self.max_burst)),
            beats.eq(Mux(row_left < cap, row_left, cap)),
            row_done.eq(row_left == beats),
            bus.awid.eq(self.write_id),
            bus.awaddr.eq(aw_addr),
            bus.awlen.eq(beats - 1),
            bus.awsize.eq(beat_shift),
            bus.awburst.eq(BURST_INCR),
            bus.awcache.eq(CACHE),
            bus.awprot.eq(PROT),
            # Once high, stays high until the handshake: outstanding only falls meanwhile.
            bus.awvalid.eq(aw_active & (outstanding != MAX_OUTSTANDING)),
        ]
        aw_take = bus.awvalid & bus.awready
        cmd_end = row_done & (rows_left == 1)
        issued = data.View(burst_layout, bursts.w_data)
        m.d.comb += [bursts.w_en.eq(aw_take), issued.len.eq(beats - 1),
                     issued.row_end.eq(row_done), issued.cmd_end.eq(cmd_end)]
        with m.If(aw_take):
            m.d.sync += [aw_addr.eq(aw_addr + (beats << beat_shift)),
                         row_left.eq(row_left - beats)]
            with m.If(row_done):
                m.d.sync += [rows_left.eq(rows_left - 1), row_addr.eq(row_addr + stride),
                             aw_addr.eq(row_addr + stride), row_left.eq(row_beats)]
            with m.If(cmd_end | stop):
                m.d.sync += aw_active.eq(0)
        with m.Elif(stop & ~bus.awvalid):
            m.d.sync += aw_active.eq(0)

        b_take = bus.bvalid & bus.bready
        m.d.comb += bus.bready.eq(1)
        with m.If(aw_take & ~b_take):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(b_take & ~aw_take):
            m.d.sync += outstanding.eq(outstanding - 1)
        with m.If(b_take & (bus.bresp != OKAY)):
            m.d.sync += self.error.eq(1)

        # --- W: beats into the W registers -------------------------------------------------
        w_valid = Signal()
        w_data = Signal(self.data_width)
        w_strb = Signal(bus_bytes)
        w_last = Signal()
        m.d.comb += [bus.wvalid.eq(w_valid), bus.wdata.eq(w_data), bus.wstrb.eq(w_strb),
                     bus.wlast.eq(w_last)]
        room = ~w_valid | bus.wready                    # the W registers take a beat
        with m.If(bus.wready):
            m.d.sync += w_valid.eq(0)

        beat = Signal(range(self.max_burst))            # beat of the head burst
        burst_end = Signal()
        final_beat = Signal()                           # the command's final beat
        row_final = Signal()                            # a row's final beat
        m.d.comb += [burst_end.eq(beat == head.len),
                     final_beat.eq(bursts.r_rdy & head.cmd_end & burst_end),
                     row_final.eq(head.row_end & burst_end)]
        send = Signal()                                 # a beat goes into the W registers
        send_data = Signal(self.data_width)
        send_strb = Signal(bus_bytes)
        with m.If(send):
            m.d.sync += [w_valid.eq(1), w_data.eq(send_data), w_strb.eq(send_strb),
                         w_last.eq(burst_end), beat.eq(Mux(burst_end, 0, beat + 1))]
        m.d.comb += bursts.r_en.eq(send & burst_end)

        word_take = word.valid & word.ready
        last_word = Signal()                            # the taken word is the final one
        with m.If(word_take & word.payload.last & ~last_word):
            m.d.sync += [self.last_error.eq(1), stop.eq(1)]
        with m.If(word_take & ~word.payload.last & last_word):
            m.d.sync += self.last_error.eq(1)

        # Every combinational output below is a plain expression, no If: Icarus runs an
        # ``always @*`` block only when one of its inputs changes, so a block whose inputs
        # keep their reset values would leave its outputs X.

        # Packing (real bytes <= bus bytes): word k of a beat in bytes k*wb .. k*wb+wb-1.
        slot = Signal(range(bus_bytes))
        gathered = Signal(self.data_width)
        gathered_strb = Signal(bus_bytes)
        spread = Signal(self.data_width)                # the word's real bytes in every slot
        lanes = Signal(bus_bytes)                       # the bytes of slot ``slot``
        merged = Signal(self.data_width)
        closes = Signal()                               # the word closes its beat
        spread_value, lanes_value = Const(0, self.data_width), Const(0, bus_bytes)
        for shift in range(min(beat_shift, most_shift) + 1):
            real = word.payload.data[:BYTE << shift]
            spread_value = Mux(word_shift == shift, Cat(*[real] * (bus_bytes >> shift)),
                               spread_value)
            lanes_value = Mux(word_shift == shift,
                              Cat(*[slot == (i >> shift) for i in range(bus_bytes)]),
                              lanes_value)
        m.d.comb += [
            spread.eq(spread_value),
            lanes.eq(lanes_value),
            merged.eq(Cat(*[Mux(lanes[i], spread.word_select(i, BYTE),
                                gathered.word_select(i, BYTE)) for i in range(bus_bytes)])),
            closes.eq(slot == Mux(row_final, row_end_slot, full_slot)),
        ]

        # Splitting (real bytes > bus bytes): part j of a word in beat j.
        part = Signal.like(final_part)
        part_end = Signal()
        if self.word_width > self.data_width:
            part_data = word.payload.data.word_select(part, self.data_width)
        else:
            part_data = word.payload.data[:self.data_width]
        m.d.comb += part_end.eq(part == final_part)

        active = Signal()                               # a burst's beats are due, words taken
        padding = Signal()                              # after an early last: wstrb 0 beats
        early = Signal()                                # the taken word's last is early
        m.d.comb += [
            active.eq(self.busy & bursts.r_rdy & ~stop),
            padding.eq(self.busy & bursts.r_rdy & stop),
            word.ready.eq(active & Mux(split, room & part_end,
                                       room | ~(closes | word.payload.last))),
            last_word.eq(final_beat & (split | closes)),
            early.eq(word.payload.last & ~last_word),
            send.eq((padding & room) | (active & split & room & word.valid)
                    | (~split & word_take & (closes | early))),
            send_data.eq(Mux(split, part_data, merged)),
            send_strb.eq(Mux(stop, 0, Mux(split, Const(-1, bus_bytes), gathered_strb | lanes))),
        ]
        with m.If(active & split & send):
            m.d.sync += part.eq(Mux(part_end, 0, part + 1))
        with m.If(~split & word_take):
            with m.If(send):
                m.d.sync += [slot.eq(0), gathered_strb.eq(0)]
            with m.Else():
                m.d.sync += [slot.eq(slot + 1), gathered.eq(merged),
                             gathered_strb.eq(gathered_strb | lanes)]

        # --- start and end of a command -----------------------------------------------------
        m.d.comb += self.done.eq(self.busy & ~aw_active & ~bursts.r_rdy & ~w_valid
                                 & (outstanding == 0))
        with m.If(self.done):
            m.d.sync += [self.busy.eq(0), stop.eq(0)]
        shift = cmd.payload.word_bytes_log2
        rem = region.row_bytes[:beat_shift]
        full = Signal(range(bus_bytes + 1))             # words of a full beat (packing)
        m.d.comb += full.eq(Mux(shift < beat_shift, bus_bytes >> shift, 1))
        if self.word_width > self.data_width:
            with m.If(take):
                m.d.sync += [split.eq(shift > beat_shift),
                             final_part.eq(Mux(shift > beat_shift,
                                               ((1 << shift) >> beat_shift) - 1, 0))]
        with m.If(take):
            m.d.sync += [
                self.busy.eq(1), self.error.eq(0), self.last_error.eq(0), stop.eq(0),
                aw_active.eq(1), aw_addr.eq(region.addr), row_addr.eq(region.addr),
                stride.eq(region.stride), rows_left.eq(region.rows),
                row_beats.eq((region.row_bytes + bus_bytes - 1) >> beat_shift),
                row_left.eq((region.row_bytes + bus_bytes - 1) >> beat_shift),
                word_shift.eq(shift),
                full_slot.eq(full - 1),
                row_end_slot.eq(Mux(rem == 0, full, rem >> shift) - 1),
                slot.eq(0), gathered_strb.eq(0), part.eq(0), beat.eq(0),
            ]
        return m
