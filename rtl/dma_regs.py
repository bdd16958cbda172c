"""The layer queue's registers, its error codes and the layer descriptor: the facts of the DMA
front end (:mod:`rtl.dma_engine`) that software sees, defined once.

Address map of the DMA front end's AXI4-Lite port: the engine's registers
(:data:`rtl.engine_regs.REGMAP`) at :data:`ENGINE_BASE`, the queue's (:data:`QUEUE_REGMAP`) at
:data:`QUEUE_BASE`. While the queue runs, the engine's registers are the queue's: a host access
to them is answered SLVERR and changes nothing (read the queue's registers meanwhile).

A **descriptor** is :data:`DESC_WORDS` little-endian 32-bit words in memory (:data:`DESCRIPTOR`,
word ``i`` at byte ``4 i``), at an address that is a multiple of the bus bytes:

- ``next``: the next descriptor's address; 0 ends the queue;
- ``flags`` (:data:`FLAGS`): ``wait`` (bit 0): load this layer's parameters only once the
  layer before has ended (they share its memory words); ``ahead`` (bit 1): the input does not
  depend on the output before it (read it while that output is still being written);
- ``reg_count``, ``regs``: ``reg_count`` engine register writes, as word pairs (byte offset in
  the engine's map, value) from ``regs`` on, written in order (``CTRL`` is the queue's: it
  starts the layer after the parameters are in);
- ``weights``/``weight_bytes``, ``channels``/``channel_bytes``: the parameter packets
  (:mod:`rtl.weights`), each sent with ``tlast`` on its final beat; 0 bytes sends none (the
  parameters are still resident);
- ``in_*``: the input feature map as a region (:mod:`rtl.dma_region`: address, row bytes,
  stride, rows) in the engine's input words;
- ``acc_*``: the partial sums (``QUANT.acc_in``) as a region in the engine's raw output words;
  0 rows or 0 row bytes: none;
- ``out_*``: where the output goes, a region: requantized words of PE bytes, or raw words of
  4 PE bytes when ``QUANT.raw_output`` is set (read back from the engine after the register
  writes).

The queue runs the descriptors one after the other and overlaps them: while a layer runs, the
next descriptor is fetched, its registers written, its parameters loaded and its start queued
(the engine launches it the cycle the running layer ends), and its input is read as soon as it
can be. It stops at the first descriptor that fails, with its address in ``Q_CURRENT`` (for
``READ``, ``WRITE`` and ``TLAST``, which show when transfers complete, the descriptor whose
output region was sent last), the reason in ``Q_STATUS.error`` (:data:`QueueError`) and, for a
refusal, the engine's code in ``Q_STATUS.engine_error``.
"""

import enum

from rtl.engine_regs import REGMAP as ENGINE_REGMAP
from rtl.limits import ERROR_WIDTH
from rtl.regmap import Field, Register, RegisterMap

__all__ = ["ENGINE_BASE", "QUEUE_BASE", "ADDR_WIDTH", "QueueError", "DESCRIPTOR", "DESC_WORDS",
           "FLAGS",
           "DESC_FIELD_WIDTH", "QUEUE_REGMAP", "QUEUE_ERROR_WIDTH"]

#: Byte address of the engine's registers and of the queue's on the front end's AXI4-Lite port.
ENGINE_BASE = 0x000
QUEUE_BASE = 0x100
#: Address bits of the front end's AXI4-Lite port (both windows).
ADDR_WIDTH = 9
assert ENGINE_REGMAP.addr_width <= 8 and QUEUE_BASE == 1 << (ADDR_WIDTH - 1)

#: Bits of a descriptor word.
DESC_FIELD_WIDTH = 32
#: The descriptor's words, in address order.
DESCRIPTOR = ("next", "flags", "reg_count", "regs", "weights", "weight_bytes", "channels",
              "channel_bytes", "in_addr", "in_row_bytes", "in_stride", "in_rows", "acc_addr",
              "acc_row_bytes", "acc_stride", "acc_rows", "out_addr", "out_row_bytes",
              "out_stride", "out_rows")
DESC_WORDS = len(DESCRIPTOR)
#: Bits of the descriptor's ``flags`` word.
FLAGS = {
    # wait until the engine is idle and the output before is in memory before this
    # descriptor's parameters load (they share words with the layer that runs)
    "wait": 0,
    # the input and partial sums do not depend on the output before: read them as soon as
    # their reader is free (a batch's next image), not once that output is in memory
    "ahead": 1,
}


class QueueError(enum.IntEnum):
    """Why the queue stopped (``Q_STATUS.error``)."""
    NONE = 0        #: every descriptor ran
    ALIGN = 1       #: an address or stride not a multiple of the bus bytes, or a size not of words
    EMPTY = 2       #: the input or output region has no rows or no bytes
    READ = 3        #: memory answered a read with an error response
    WRITE = 4       #: memory answered a write with an error response
    REGISTER = 5    #: a register write addressed no engine register (or CTRL)
    ENGINE = 6      #: the engine refused the layer (its code in ``engine_error``)
    TLAST = 7       #: the output did not end with the output region, or the input's tlast was wrong
    LOAD = 8        #: the engine refused a parameter packet (its STATUS.load_error)


QueueError.docs = {
    "NONE": "every descriptor ran",
    "ALIGN": "an address or stride is not a multiple of the bus bytes, or a size not a whole "
             "number of the stream's words",
    "EMPTY": "the input or output region has no rows or no bytes",
    "READ": "memory answered a read with an error response",
    "WRITE": "memory answered a write with an error response",
    "REGISTER": "a register write addressed no engine register, or CTRL",
    "ENGINE": "the engine refused the layer (its code in engine_error)",
    "TLAST": "the output ended before or after the output region, or the input's tlast was "
             "wrong (STATUS.tlast_error)",
    "LOAD": "the engine refused a parameter packet (STATUS.load_error)",
}
assert set(QueueError.docs) == set(QueueError.__members__), "a QueueError without its text"
QUEUE_ERROR_WIDTH = 4

QUEUE_REGMAP = RegisterMap("convcore_queue", [
    Register("Q_CTRL", 0x00, [
        Field("run", 1, "w1p", doc="Run the queue from the descriptor at Q_HEAD"),
    ], doc="Queue control"),
    Register("Q_STATUS", 0x04, [
        Field("q_busy", 1, "ro", doc="The queue runs"),
        Field("q_done", 1, "ro", doc="The queue ended (every descriptor ran, or one failed); "
                                     "cleared by run"),
        Field("q_error", QUEUE_ERROR_WIDTH, "ro", lsb=8, enum=QueueError,
              doc="Why the queue stopped (0: every descriptor ran)"),
        Field("q_engine_error", ERROR_WIDTH, "ro", lsb=16,
              doc="The engine's STATUS.error when q_error is ENGINE"),
    ], doc="Queue status"),
    Register("Q_HEAD", 0x08, [
        Field("q_head", DESC_FIELD_WIDTH, "rw", doc="Address of the first descriptor"),
    ], doc="First descriptor"),
    Register("Q_CURRENT", 0x0C, [
        Field("q_current", DESC_FIELD_WIDTH, "ro",
              doc="Address of the descriptor that runs, or that failed, or the last that ran"),
    ], doc="Current descriptor"),
    Register("Q_COMPLETED", 0x10, [
        Field("q_completed", DESC_FIELD_WIDTH, "ro",
              doc="Descriptors whose output is in memory, since run"),
    ], doc="Descriptors completed"),
    Register("Q_IRQ_ENABLE", 0x14, [
        Field("q_irq_enable", 1, "rw",
              doc="irq is high while Q_STATUS.q_done is (the queue ended; run clears it)"),
    ], doc="Interrupt enable"),
    Register("Q_CYCLES", 0x20, [
        Field("q_cycles", 64, "ro", doc="Cycles from run to the queue's end"),
    ], doc="Cycles of the last queue run"),
    Register("Q_HW", 0x28, [
        Field("q_bus_bytes", 8, "ro", doc="Bytes of a memory bus beat"),
        Field("q_desc_words", 8, "ro", lsb=8, doc="Words of a descriptor"),
    ], doc="Front end parameters"),
], doc="convcore layer queue (DMA front end), at QUEUE_BASE")
