"""What a DMA channel moves: a *region* of memory, ``rows`` rows of ``row_bytes`` bytes, each
row ``stride`` bytes after the one before (a 2-D transfer; ``rows`` 1 is a plain block).

The readers (:mod:`rtl.dma_reader`) and the writer (:mod:`rtl.dma_writer`) take one region per
command; the layer queue (:mod:`rtl.dma_engine`) builds them from a layer descriptor, and
checks there what the channels assume:

- ``addr`` and ``stride`` are multiples of the bus bytes (every row starts on a beat);
- ``row_bytes`` is a whole number (at least one) of the channel's stream words, ``rows`` at
  least 1. A row that ends inside a beat uses that beat's low bytes: the reader drops the rest,
  the writer leaves them unwritten (``wstrb``).

A 2-D region is how a multi-pass layer reads or writes its slice of the channels of every
pixel (``row_bytes`` the slice, ``stride`` the whole pixel), the way NVDLA's and Gemmini's DMA
address a surface.
"""

from amaranth.lib import data

from rtl.axi4 import MAX_BURST_BEATS, check_bus

__all__ = ["ROW_BYTES_WIDTH", "ROWS_WIDTH", "STRIDE_WIDTH", "MAX_WORD_WIDTH", "region_layout",
           "check_channel"]

#: Bits of ``row_bytes``: rows up to 16 MiB (a 224 x 224 x 64 map is 3.2 MB).
ROW_BYTES_WIDTH = 24
#: Bits of ``rows``.
ROWS_WIDTH = 24
#: Bits of ``stride`` (bytes from the start of a row to the start of the next).
STRIDE_WIDTH = 32
#: Widest stream word a DMA channel moves (bits; a 64 x 64 engine's parameter word is 32768,
#: but the DMA front end's widest word is a raw output word, 4 PE bytes).
MAX_WORD_WIDTH = 4096


def region_layout(addr_width: int) -> data.StructLayout:
    """A DMA command: the region's first byte address, its row bytes, stride and rows."""
    return data.StructLayout({"addr": addr_width, "row_bytes": ROW_BYTES_WIDTH,
                              "stride": STRIDE_WIDTH, "rows": ROWS_WIDTH})


def check_channel(addr_width, data_width, id_width, id_name, id_value, word_width, max_burst):
    """Raise ValueError (naming the bad value) unless a DMA channel's arguments are legal: the
    bus (:func:`rtl.axi4.check_bus`), its AXI ID ``id_name`` = ``id_value``, its stream words
    of ``word_width`` bits and its bursts of at most ``max_burst`` beats."""
    def is_int(value):
        return isinstance(value, int) and not isinstance(value, bool)

    check_bus(addr_width, data_width, id_width)
    if not is_int(id_value) or not 0 <= id_value < 1 << id_width:
        raise ValueError(f"{id_name} must be an integer 0..{(1 << id_width) - 1} "
                         f"(id_width {id_width}), not {id_value!r}")
    if not is_int(word_width) or not 8 <= word_width <= MAX_WORD_WIDTH \
            or word_width & (word_width - 1):
        raise ValueError(f"word_width must be a power of two from 8 to {MAX_WORD_WIDTH}, "
                         f"not {word_width!r}")
    if not is_int(max_burst) or not 1 <= max_burst <= MAX_BURST_BEATS:
        raise ValueError(f"max_burst must be an integer 1..{MAX_BURST_BEATS}, "
                         f"not {max_burst!r}")
