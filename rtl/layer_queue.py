"""The layer queue: runs a chain of layer descriptors (:mod:`rtl.dma_regs`) on the engine with
no host action between layers.

Per descriptor, in order:

1. fetch it (the descriptor reader, 32-bit words) and check its regions (``ALIGN``, ``EMPTY``);
2. play its register writes to the engine's AXI4-Lite port (``REGISTER`` on SLVERR or CTRL),
   then read ``QUANT`` back: the output words are raw (4 PE bytes) or requantized (PE bytes);
3. send its parameter packets (weights, then channel constants) and wait until they are in;
   ``STATUS.load_error`` stops the queue (``LOAD``);
4. start the layer and read ``STATUS`` until it runs or is refused (``ENGINE``);
5. start the input, partial-sum and output channels together, wait for the output region to be
   in memory, then for the engine to finish; output words past the region are discarded
   (``drain_out``), input words the engine left are discarded (``drain_in``);
6. read errors, write errors, a wrong ``tlast`` (``TLAST``) stop the queue; else the next.

The queue owns the engine's registers while it runs (``lock``; the top answers host accesses
to them SLVERR); it takes them when the host has no transaction in flight there
(``host_idle``). Its own registers (:data:`rtl.dma_regs.QUEUE_REGMAP`) are on ``csr``.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.axil_regs import OKAY, AXI4LiteRegisters, AXI4LiteSignature
from rtl.dma_region import ROW_BYTES_WIDTH, ROWS_WIDTH, region_layout
from rtl.dma_writer import command_layout as writer_command_layout
from rtl.dma_regs import (ADDR_WIDTH, DESC_FIELD_WIDTH, DESC_WORDS, DESCRIPTOR, QUEUE_REGMAP,
                          QueueError)
from rtl.engine_regs import REGMAP as ENGINE_REGMAP
from rtl.streams import payload_layout

__all__ = ["LayerQueue", "CSR_ADDR_WIDTH"]

#: Address bits of the queue's register port (its half of the front end's window).
CSR_ADDR_WIDTH = ADDR_WIDTH - 1


def _log2(n):
    return n.bit_length() - 1


class LayerQueue(wiring.Component):
    """Parameters: ``bus_bytes`` (memory beat), ``in_word_bytes`` (SIMD), ``param_word_bytes``,
    ``pe`` (output lanes), ``addr_width`` (memory addresses, at most 32)."""

    def __init__(self, *, bus_bytes, in_word_bytes, param_word_bytes, pe, addr_width=32):
        for name, value in (("bus_bytes", bus_bytes), ("in_word_bytes", in_word_bytes),
                            ("param_word_bytes", param_word_bytes), ("pe", pe)):
            if not isinstance(value, int) or value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, not {value!r}")
        if not isinstance(addr_width, int) or not 13 <= addr_width <= DESC_FIELD_WIDTH:
            raise ValueError(f"addr_width must be an integer 13..{DESC_FIELD_WIDTH}, "
                             f"not {addr_width!r}")
        self.bus_bytes, self.in_word_bytes = bus_bytes, in_word_bytes
        self.param_word_bytes, self.pe, self.addr_width = param_word_bytes, pe, addr_width
        self.acc_word_bytes = 4 * pe
        region = stream.Signature(region_layout(addr_width))
        super().__init__({
            "csr": In(AXI4LiteSignature(CSR_ADDR_WIDTH, QUEUE_REGMAP.data_width)),
            "engine": Out(AXI4LiteSignature(ENGINE_REGMAP.addr_width, ENGINE_REGMAP.data_width)),
            "lock": Out(1), "host_idle": In(1), "irq": Out(1),
            "fetch_cmd": Out(region),
            "fetch_data": In(stream.Signature(payload_layout(DESC_FIELD_WIDTH))),
            "param_cmd": Out(region), "param_busy": In(1),
            "in_cmd": Out(region), "in_busy": In(1),
            "acc_cmd": Out(region), "acc_busy": In(1),
            "out_cmd": Out(stream.Signature(
                writer_command_layout(addr_width, 8 * self.acc_word_bytes))),
            "out_done": In(1), "out_busy": In(1), "out_error": In(1), "out_last_error": In(1),
            "read_error": In(1),
            "drain_in": Out(1), "drain_out": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.regs = regs = AXI4LiteRegisters(QUEUE_REGMAP, addr_width=CSR_ADDR_WIDTH)
        wiring.connect(m, wiring.flipped(self.csr), regs.bus)
        f = regs.fields
        eng = self.engine

        desc = {name: Signal(DESC_FIELD_WIDTH, name=f"desc_{name}") for name in DESCRIPTOR}
        cur = Signal(DESC_FIELD_WIDTH)
        completed = Signal(DESC_FIELD_WIDTH)
        cycles = Signal(64)
        busy, done = Signal(), Signal()
        error = Signal(QueueError)
        engine_error = Signal.like(f["q_engine_error"])
        pending = Signal()
        idx = Signal(range(DESC_WORDS + 1))
        raw = Signal()
        off, val, pair_last = Signal(32), Signal(32), Signal()
        status = Signal(32)
        in_sent, acc_sent, out_sent, wrote = Signal(), Signal(), Signal(), Signal()
        drain_in, drain_out = Signal(), Signal()

        m.d.comb += [
            f["q_busy"].eq(busy), f["q_done"].eq(done), f["q_error"].eq(error),
            f["q_engine_error"].eq(engine_error), f["q_current"].eq(cur),
            f["q_completed"].eq(completed), f["q_cycles"].eq(cycles),
            f["q_bus_bytes"].eq(self.bus_bytes), f["q_desc_words"].eq(DESC_WORDS),
            self.irq.eq(done & f["q_irq_enable"]),
            self.lock.eq(busy | pending),
            self.drain_in.eq(drain_in), self.drain_out.eq(drain_out),
        ]
        with m.If(f["run"] & ~busy):
            m.d.sync += pending.eq(1)
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(self.out_done):
            m.d.sync += wrote.eq(1)

        # --- engine register port: one write or read at a time ---
        st_field = ENGINE_REGMAP.field
        addr_of = {name: ENGINE_REGMAP[name].offset for name in ("CTRL", "STATUS", "QUANT")}

        def bit(value, name):
            fld = st_field(name)
            return value[fld.lsb:fld.lsb + fld.width]

        m.d.comb += [eng.wstrb.eq(-1), eng.bready.eq(1), eng.rready.eq(1)]
        aw_ok, w_ok = Signal(), Signal()

        def write(next_state, addr, value, fail_state=None):
            """Drive one engine register write; go to ``next_state`` on an OKAY response."""
            m.d.comb += [eng.awaddr.eq(addr), eng.wdata.eq(value),
                         eng.awvalid.eq(~aw_ok), eng.wvalid.eq(~w_ok)]
            with m.If(eng.awready):
                m.d.sync += aw_ok.eq(1)
            with m.If(eng.wready):
                m.d.sync += w_ok.eq(1)
            with m.If(eng.bvalid):
                m.d.sync += [aw_ok.eq(0), w_ok.eq(0)]
                m.next = next_state
                if fail_state is not None:
                    with m.If(eng.bresp != OKAY):
                        m.d.sync += error.eq(QueueError.REGISTER)
                        m.next = fail_state

        ar_ok = Signal()

        def read(addr):
            """Drive one engine register read; True (a Value) in the cycle RDATA arrives."""
            m.d.comb += [eng.araddr.eq(addr), eng.arvalid.eq(~ar_ok)]
            with m.If(eng.arready):
                m.d.sync += ar_ok.eq(1)
            with m.If(eng.rvalid):
                m.d.sync += ar_ok.eq(0)
            return eng.rvalid

        def aligned(value, size):
            return value[:_log2(size)] == 0 if size > 1 else 1

        def region(cmd, addr, row_bytes, stride, rows):
            m.d.comb += [cmd.payload.addr.eq(addr), cmd.payload.row_bytes.eq(row_bytes),
                         cmd.payload.stride.eq(stride), cmd.payload.rows.eq(rows)]

        def fail(code):
            m.d.sync += error.eq(code)
            m.next = "FAIL"

        bb = self.bus_bytes
        too_big = lambda value, width: value[width:] != 0   # noqa: E731
        out_word_log2 = Signal(range(8))
        m.d.comb += out_word_log2.eq(_log2(self.pe) + 2 * raw)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(pending & self.host_idle):
                    m.d.sync += [pending.eq(0), busy.eq(1), done.eq(0), cur.eq(f["q_head"]),
                                 completed.eq(0), cycles.eq(0), error.eq(QueueError.NONE),
                                 engine_error.eq(0)]
                    m.next = "FETCH"

            with m.State("FETCH"):
                with m.If(~aligned(cur, bb) | too_big(cur, self.addr_width)):
                    fail(QueueError.ALIGN)
                with m.Else():
                    region(self.fetch_cmd, cur, DESC_WORDS * 4, 0, 1)
                    m.d.comb += self.fetch_cmd.valid.eq(1)
                    with m.If(self.fetch_cmd.ready):
                        m.d.sync += idx.eq(0)
                        m.next = "FETCH_DATA"

            with m.State("FETCH_DATA"):
                m.d.comb += self.fetch_data.ready.eq(1)
                with m.If(self.fetch_data.valid):
                    with m.Switch(idx):
                        for k, name in enumerate(DESCRIPTOR):
                            with m.Case(k):
                                m.d.sync += desc[name].eq(self.fetch_data.payload.data)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(self.fetch_data.payload.last):
                        m.next = "CHECK"

            with m.State("CHECK"):
                d = desc
                addr_ok = (aligned(d["regs"], bb) & aligned(d["weights"], bb)
                           & aligned(d["channels"], bb) & aligned(d["in_addr"], bb)
                           & aligned(d["in_stride"], bb) & aligned(d["acc"], bb)
                           & aligned(d["out_addr"], bb) & aligned(d["out_stride"], bb))
                size_ok = (aligned(d["weight_bytes"], self.param_word_bytes)
                           & aligned(d["channel_bytes"], self.param_word_bytes)
                           & aligned(d["in_row_bytes"], self.in_word_bytes)
                           & aligned(d["acc_bytes"], self.acc_word_bytes)
                           & aligned(d["out_row_bytes"], self.pe))
                fits = ~(too_big(d["reg_count"], ROW_BYTES_WIDTH - 3)
                         | too_big(d["weight_bytes"], ROW_BYTES_WIDTH)
                         | too_big(d["channel_bytes"], ROW_BYTES_WIDTH)
                         | too_big(d["in_row_bytes"], ROW_BYTES_WIDTH)
                         | too_big(d["in_rows"], ROWS_WIDTH)
                         | too_big(d["acc_bytes"], ROW_BYTES_WIDTH)
                         | too_big(d["out_row_bytes"], ROW_BYTES_WIDTH)
                         | too_big(d["out_rows"], ROWS_WIDTH)
                         | too_big(d["regs"], self.addr_width)
                         | too_big(d["weights"], self.addr_width)
                         | too_big(d["channels"], self.addr_width)
                         | too_big(d["in_addr"], self.addr_width)
                         | too_big(d["acc"], self.addr_width)
                         | too_big(d["out_addr"], self.addr_width))
                empty = ((d["in_row_bytes"] == 0) | (d["in_rows"] == 0)
                         | (d["out_row_bytes"] == 0) | (d["out_rows"] == 0))
                with m.If(self.read_error):
                    fail(QueueError.READ)
                with m.Elif(~addr_ok | ~size_ok | ~fits):
                    fail(QueueError.ALIGN)
                with m.Elif(empty):
                    fail(QueueError.EMPTY)
                with m.Elif(d["reg_count"] != 0):
                    m.next = "REGS"
                with m.Else():
                    m.next = "QUANT"

            with m.State("REGS"):
                region(self.fetch_cmd, desc["regs"], desc["reg_count"] * 8, 0, 1)
                m.d.comb += self.fetch_cmd.valid.eq(1)
                with m.If(self.fetch_cmd.ready):
                    m.next = "REG_OFFSET"

            with m.State("REG_OFFSET"):
                m.d.comb += self.fetch_data.ready.eq(1)
                with m.If(self.fetch_data.valid):
                    m.d.sync += off.eq(self.fetch_data.payload.data)
                    m.next = "REG_VALUE"

            with m.State("REG_VALUE"):
                m.d.comb += self.fetch_data.ready.eq(1)
                with m.If(self.fetch_data.valid):
                    m.d.sync += [val.eq(self.fetch_data.payload.data),
                                 pair_last.eq(self.fetch_data.payload.last)]
                    m.next = "REG_CHECK"

            with m.State("REG_CHECK"):
                with m.If(too_big(off, ENGINE_REGMAP.addr_width) | (off == addr_of["CTRL"])):
                    fail(QueueError.REGISTER)
                with m.Else():
                    m.next = "REG_WRITE"

            with m.State("REG_WRITE"):
                with m.If(pair_last):
                    write("QUANT", off, val, fail_state="FAIL")
                with m.Else():
                    write("REG_OFFSET", off, val, fail_state="FAIL")

            with m.State("QUANT"):
                with m.If(read(addr_of["QUANT"])):
                    m.d.sync += raw.eq(bit(eng.rdata, "raw_output"))
                    m.next = "QUANT_CHECK"

            with m.State("QUANT_CHECK"):
                with m.If(self.read_error):
                    fail(QueueError.READ)
                with m.Elif(raw & ~aligned(desc["out_row_bytes"], self.acc_word_bytes)):
                    fail(QueueError.ALIGN)
                with m.Else():
                    m.next = "WEIGHTS"

            for name, size, after in (("weights", "weight_bytes", "CHANNELS"),
                                      ("channels", "channel_bytes", "LOAD_CHECK")):
                state = name.upper()
                with m.State(state):
                    with m.If(desc[size] == 0):
                        m.next = after
                    with m.Else():
                        region(self.param_cmd, desc[name], desc[size], 0, 1)
                        m.d.comb += self.param_cmd.valid.eq(1)
                        with m.If(self.param_cmd.ready):
                            m.next = f"{state}_GAP"
                with m.State(f"{state}_GAP"):
                    m.next = f"{state}_WAIT"
                with m.State(f"{state}_WAIT"):
                    with m.If(~self.param_busy):
                        m.next = after

            with m.State("LOAD_CHECK"):
                with m.If(read(addr_of["STATUS"])):
                    with m.If(self.read_error):
                        fail(QueueError.READ)
                    with m.Elif(bit(eng.rdata, "load_error")):
                        fail(QueueError.LOAD)
                    with m.Else():
                        m.next = "START"

            with m.State("START"):
                write("POLL", addr_of["CTRL"], 1 << st_field("start").lsb)

            with m.State("POLL"):
                with m.If(read(addr_of["STATUS"])):
                    m.d.sync += status.eq(eng.rdata)
                    with m.If(bit(eng.rdata, "done") | bit(eng.rdata, "running")):
                        with m.If(bit(eng.rdata, "error") != 0):
                            m.d.sync += engine_error.eq(bit(eng.rdata, "error"))
                            fail(QueueError.ENGINE)
                        with m.Else():
                            m.d.sync += [in_sent.eq(0), acc_sent.eq(0), out_sent.eq(0),
                                         wrote.eq(0), drain_in.eq(0), drain_out.eq(0)]
                            m.next = "STREAM"

            with m.State("STREAM"):
                region(self.in_cmd, desc["in_addr"], desc["in_row_bytes"], desc["in_stride"],
                       desc["in_rows"])
                region(self.acc_cmd, desc["acc"], desc["acc_bytes"], 0, 1)
                o = self.out_cmd.payload
                m.d.comb += [
                    o.region.addr.eq(desc["out_addr"]), o.region.row_bytes.eq(desc["out_row_bytes"]),
                    o.region.stride.eq(desc["out_stride"]), o.region.rows.eq(desc["out_rows"]),
                    o.word_bytes_log2.eq(out_word_log2),
                    self.in_cmd.valid.eq(~in_sent),
                    self.acc_cmd.valid.eq(~acc_sent & (desc["acc_bytes"] != 0)),
                    self.out_cmd.valid.eq(~out_sent),
                ]
                in_now = in_sent | self.in_cmd.ready
                acc_now = acc_sent | self.acc_cmd.ready | (desc["acc_bytes"] == 0)
                out_now = out_sent | self.out_cmd.ready
                m.d.sync += [in_sent.eq(in_now), acc_sent.eq(acc_now), out_sent.eq(out_now)]
                with m.If(in_now & acc_now & out_now):
                    m.next = "WAIT_OUT"

            with m.State("WAIT_OUT"):
                with m.If(wrote):
                    m.d.sync += drain_out.eq(1)
                    m.next = "WAIT_ENGINE"

            with m.State("WAIT_ENGINE"):
                with m.If(read(addr_of["STATUS"])):
                    m.d.sync += status.eq(eng.rdata)
                    with m.If(~bit(eng.rdata, "busy")):
                        m.d.sync += drain_in.eq(1)
                        m.next = "WAIT_DRAIN"

            with m.State("WAIT_DRAIN"):
                with m.If(~self.in_busy & ~self.acc_busy & ~self.out_busy):
                    m.d.sync += [drain_in.eq(0), drain_out.eq(0)]
                    with m.If(self.read_error):
                        fail(QueueError.READ)
                    with m.Elif(self.out_error):
                        fail(QueueError.WRITE)
                    with m.Elif(self.out_last_error | bit(status, "tlast_error")):
                        fail(QueueError.TLAST)
                    with m.Elif(bit(status, "error") != 0):
                        m.d.sync += engine_error.eq(bit(status, "error"))
                        fail(QueueError.ENGINE)
                    with m.Else():
                        m.d.sync += completed.eq(completed + 1)
                        with m.If(desc["next"] == 0):
                            m.next = "END"
                        with m.Else():
                            m.d.sync += cur.eq(desc["next"])
                            m.next = "FETCH"

            with m.State("FAIL"):
                # discard what the descriptor reader still holds (a register list cut short)
                m.d.comb += self.fetch_data.ready.eq(1)
                with m.If(~self.fetch_data.valid):
                    m.next = "FAIL_SETTLE"

            with m.State("FAIL_SETTLE"):
                m.d.comb += self.fetch_data.ready.eq(1)
                with m.If(~self.fetch_data.valid):
                    m.next = "END"
                with m.Else():
                    m.next = "FAIL"

            with m.State("END"):
                m.d.sync += [busy.eq(0), done.eq(1)]
                m.next = "IDLE"

        return m
