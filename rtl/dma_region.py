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

__all__ = ["ROW_BYTES_WIDTH", "ROWS_WIDTH", "STRIDE_WIDTH", "MAX_WORD_WIDTH", "region_layout"]

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
