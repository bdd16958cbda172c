"""The layer queue: runs a chain of layer descriptors (:mod:`rtl.dma_regs`) on the engine with
no host action between layers, overlapping each layer's set-up with the layer before.

Per descriptor, in order:

1. fetch it (the descriptor reader, 32-bit words) and check its regions (``ALIGN``, ``EMPTY``);
   with its ``wait`` flag, wait until the engine is idle and the output before is in memory;
2. play its register writes to the engine's AXI4-Lite port (``REGISTER`` on SLVERR or CTRL),
   then read ``QUANT`` back: the output words are raw (4 PE bytes) or requantized (PE bytes);
3. send its parameter packets (weights, then channel constants) and wait until they are in;
   ``STATUS.load_error`` stops the queue (``LOAD``);
4. once no start waits in the engine (``STATUS.queued`` low), start the layer: while the layer
   before runs, the engine queues it and launches it the cycle that one ends;
5. send its input and partial-sum regions as soon as their readers are free and (unless its
   ``ahead`` flag says they do not depend on it) the output before is in memory; read
   ``STATUS`` until the layer runs or is refused (``ENGINE``);
6. once the output before is in memory, check the faults of the transfers so far (``READ``,
   ``WRITE``, ``TLAST``) and send its output region; go on with the next descriptor while it
   runs. After the last, wait for the engine to be idle and its output to be in memory.

On a failure the layer that runs is let to end (output past its region discarded:
``drain_out``), then what the readers still hold is discarded (``drain_in``). The engine's
registers are the queue's while it runs (``lock``; the top answers host accesses to them
SLVERR); it takes them when the host has no transaction in flight there (``host_idle``). Its
own registers (:data:`rtl.dma_regs.QUEUE_REGMAP`) are on ``csr``.

An input region shorter than the layer's input leaves the engine waiting for words that never
come (the queue cannot tell a slow memory from a missing word): the host sizes regions from
the layer (:mod:`sim.queue_image`); a reset ends it.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.axil_regs import OKAY, AXI4LiteRegisters, AXI4LiteSignature
from rtl.dma_region import ROW_BYTES_WIDTH, ROWS_WIDTH, region_layout
from rtl.dma_writer import command_layout as writer_command_layout
from rtl.dma_regs import (ADDR_WIDTH, DESC_FIELD_WIDTH, DESC_WORDS, DESCRIPTOR, FLAGS,
                          QUEUE_REGMAP, QueueError)
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
        in_sent, acc_sent = Signal(), Signal()
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

        # Faults of the transfers: each block's flag is sticky until its next command (and may
        # still be high from the run before), so a fault is its rising edge, kept here until
        # the queue reports it.
        read_fault, write_fault, last_fault = Signal(), Signal(), Signal()
        seen = {name: Signal(name=f"{name}_seen") for name in
                ("read_error", "out_error", "out_last_error")}
        for name, fault in (("read_error", read_fault), ("out_error", write_fault),
                            ("out_last_error", last_fault)):
            flag_ = getattr(self, name)
            m.d.sync += seen[name].eq(flag_)
            with m.If(flag_ & ~seen[name]):
                m.d.sync += fault.eq(1)
        # An output region in flight: from its command to the writer's done.
        out_open = Signal()
        with m.If(self.out_cmd.valid & self.out_cmd.ready):
            m.d.sync += out_open.eq(1)
        with m.Elif(self.out_done):
            m.d.sync += [out_open.eq(0), completed.eq(completed + 1)]
        streaming = Signal(DESC_FIELD_WIDTH)    # the descriptor whose output is in flight
        flag = {name: desc["flags"][bit_] for name, bit_ in FLAGS.items()}
        no_acc = (desc["acc_rows"] == 0) | (desc["acc_row_bytes"] == 0)

        def check_faults(otherwise):
            """Stop on a fault of the descriptors whose streams completed, else go on."""
            with m.If(read_fault | write_fault | last_fault):
                m.d.sync += cur.eq(streaming)
                with m.If(read_fault):
                    fail(QueueError.READ)
                with m.Elif(write_fault):
                    fail(QueueError.WRITE)
                with m.Else():
                    fail(QueueError.TLAST)
            with m.Else():
                otherwise()

        def goto(state):
            def go():
                m.next = state
            return go

        with m.FSM():
            with m.State("IDLE"):
                with m.If(pending & self.host_idle):
                    m.d.sync += [pending.eq(0), busy.eq(1), done.eq(0), cur.eq(f["q_head"]),
                                 completed.eq(0), cycles.eq(0), error.eq(QueueError.NONE),
                                 engine_error.eq(0), read_fault.eq(0), write_fault.eq(0),
                                 last_fault.eq(0), drain_in.eq(0), drain_out.eq(0)]
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
                           & aligned(d["in_stride"], bb) & aligned(d["acc_addr"], bb)
                           & aligned(d["acc_stride"], bb)
                           & aligned(d["out_addr"], bb) & aligned(d["out_stride"], bb))
                size_ok = (aligned(d["weight_bytes"], self.param_word_bytes)
                           & aligned(d["channel_bytes"], self.param_word_bytes)
                           & aligned(d["in_row_bytes"], self.in_word_bytes)
                           & aligned(d["acc_row_bytes"], self.acc_word_bytes)
                           & aligned(d["out_row_bytes"], self.pe))
                fits = ~(too_big(d["reg_count"], ROW_BYTES_WIDTH - 3)
                         | too_big(d["weight_bytes"], ROW_BYTES_WIDTH)
                         | too_big(d["channel_bytes"], ROW_BYTES_WIDTH)
                         | too_big(d["in_row_bytes"], ROW_BYTES_WIDTH)
                         | too_big(d["in_rows"], ROWS_WIDTH)
                         | too_big(d["acc_row_bytes"], ROW_BYTES_WIDTH)
                         | too_big(d["acc_rows"], ROWS_WIDTH)
                         | too_big(d["out_row_bytes"], ROW_BYTES_WIDTH)
                         | too_big(d["out_rows"], ROWS_WIDTH)
                         | too_big(d["regs"], self.addr_width)
                         | too_big(d["weights"], self.addr_width)
                         | too_big(d["channels"], self.addr_width)
                         | too_big(d["in_addr"], self.addr_width)
                         | too_big(d["acc_addr"], self.addr_width)
                         | too_big(d["out_addr"], self.addr_width))
                empty = ((d["in_row_bytes"] == 0) | (d["in_rows"] == 0)
                         | (d["out_row_bytes"] == 0) | (d["out_rows"] == 0))
                with m.If(read_fault):
                    fail(QueueError.READ)
                with m.Elif(~addr_ok | ~size_ok | ~fits):
                    fail(QueueError.ALIGN)
                with m.Elif(empty):
                    fail(QueueError.EMPTY)
                with m.Elif(flag["wait"]):
                    m.next = "WAIT_IDLE"
                with m.Else():
                    m.next = "REGS"

            with m.State("WAIT_IDLE"):
                # the layer before has ended and its output is in memory
                with m.If(read(addr_of["STATUS"])):
                    with m.If(~bit(eng.rdata, "busy") & ~out_open):
                        m.next = "REGS"

            with m.State("REGS"):
                with m.If(desc["reg_count"] == 0):
                    m.next = "QUANT"
                with m.Else():
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
                with m.If(read_fault):
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
                # the parameters are in; a start is taken once no other one waits (queued)
                with m.If(read(addr_of["STATUS"])):
                    with m.If(read_fault):
                        fail(QueueError.READ)
                    with m.Elif(bit(eng.rdata, "load_error")):
                        fail(QueueError.LOAD)
                    with m.Elif(~bit(eng.rdata, "queued")):
                        m.next = "START"

            with m.State("START"):
                write("START_GAP", addr_of["CTRL"], 1 << st_field("start").lsb)

            with m.State("START_GAP"):
                m.d.sync += [in_sent.eq(0), acc_sent.eq(no_acc)]
                m.next = "LAUNCH"

            with m.State("LAUNCH"):
                # Send the input and partial sums as soon as their reader is free and, unless
                # the descriptor says they do not depend on it, the output before is in memory;
                # meanwhile read STATUS until the layer runs or is refused.
                ahead = flag["ahead"] | ~out_open
                region(self.in_cmd, desc["in_addr"], desc["in_row_bytes"], desc["in_stride"],
                       desc["in_rows"])
                region(self.acc_cmd, desc["acc_addr"], desc["acc_row_bytes"],
                       desc["acc_stride"], desc["acc_rows"])
                m.d.comb += [self.in_cmd.valid.eq(~in_sent & ahead),
                             self.acc_cmd.valid.eq(~acc_sent & ahead)]
                with m.If(self.in_cmd.ready & self.in_cmd.valid):
                    m.d.sync += in_sent.eq(1)
                with m.If(self.acc_cmd.ready & self.acc_cmd.valid):
                    m.d.sync += acc_sent.eq(1)
                with m.If(read(addr_of["STATUS"])):
                    m.d.sync += status.eq(eng.rdata)
                    launched = bit(eng.rdata, "done") | (bit(eng.rdata, "running")
                                                         & ~bit(eng.rdata, "queued"))
                    with m.If(launched & (bit(eng.rdata, "error") != 0)):
                        m.d.sync += engine_error.eq(bit(eng.rdata, "error"))
                        fail(QueueError.ENGINE)
                    with m.Elif(launched):
                        with m.If(bit(eng.rdata, "tlast_error")):
                            m.d.sync += last_fault.eq(1)
                        m.next = "OUTPUT"

            with m.State("OUTPUT"):
                # The layer runs: its input and partial sums go out once their reader is free
                # (and, unless the descriptor says they do not depend on it, the output before
                # is in memory); then its output region follows the one before. Faults are
                # acted on only once the input is on its way, so that a layer that runs
                # always gets its input and ends.
                ahead = flag["ahead"] | ~out_open
                m.d.comb += [self.in_cmd.valid.eq(~in_sent & ahead),
                             self.acc_cmd.valid.eq(~acc_sent & ahead)]
                region(self.in_cmd, desc["in_addr"], desc["in_row_bytes"], desc["in_stride"],
                       desc["in_rows"])
                region(self.acc_cmd, desc["acc_addr"], desc["acc_row_bytes"],
                       desc["acc_stride"], desc["acc_rows"])
                with m.If(self.in_cmd.ready & self.in_cmd.valid):
                    m.d.sync += in_sent.eq(1)
                with m.If(self.acc_cmd.ready & self.acc_cmd.valid):
                    m.d.sync += acc_sent.eq(1)
                o = self.out_cmd.payload
                m.d.comb += [
                    o.region.addr.eq(desc["out_addr"]),
                    o.region.row_bytes.eq(desc["out_row_bytes"]),
                    o.region.stride.eq(desc["out_stride"]), o.region.rows.eq(desc["out_rows"]),
                    o.word_bytes_log2.eq(out_word_log2),
                ]

                def issue():
                    m.d.comb += self.out_cmd.valid.eq(1)
                    with m.If(self.out_cmd.ready):
                        m.d.sync += streaming.eq(cur)
                        with m.If(desc["next"] == 0):
                            m.next = "FINISH"
                        with m.Else():
                            m.d.sync += cur.eq(desc["next"])
                            m.next = "FETCH"
                with m.If(in_sent & acc_sent & ~out_open & ~self.out_busy):
                    check_faults(issue)

            with m.State("FINISH"):
                # the last output in memory, the engine idle, the readers empty (output past
                # the last region is discarded: a TLAST fault)
                m.d.sync += drain_out.eq(~out_open & ~self.out_busy)
                with m.If(read(addr_of["STATUS"])):
                    m.d.sync += status.eq(eng.rdata)
                    with m.If(~bit(eng.rdata, "busy") & ~out_open & ~self.out_busy):
                        m.next = "FINISH_CHECK"

            with m.State("FINISH_CHECK"):
                def finished():
                    with m.If(bit(status, "tlast_error")):
                        m.d.sync += cur.eq(streaming)
                        fail(QueueError.TLAST)
                    with m.Else():
                        m.next = "FAIL_DRAIN"
                check_faults(finished)

            with m.State("FAIL"):
                # let the layer that runs end (its output past its region discarded), then
                # discard what the readers still hold
                m.d.comb += self.fetch_data.ready.eq(1)
                m.d.sync += drain_out.eq(~out_open & ~self.out_busy)
                with m.If(read(addr_of["STATUS"])):
                    with m.If(~bit(eng.rdata, "busy")):
                        m.d.sync += drain_in.eq(1)
                        m.next = "FAIL_DRAIN"

            with m.State("FAIL_DRAIN"):
                m.d.comb += self.fetch_data.ready.eq(1)
                with m.If(~self.fetch_data.valid & ~self.in_busy & ~self.acc_busy
                          & ~self.param_busy & ~self.out_busy & ~out_open):
                    m.next = "END"

            with m.State("END"):
                m.d.sync += [busy.eq(0), done.eq(1), drain_in.eq(0), drain_out.eq(0)]
                m.next = "IDLE"

        return m
