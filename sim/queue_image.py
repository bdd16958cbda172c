"""Host side of the layer queue (:mod:`rtl.dma_engine`): a memory image of layer descriptors,
register lists, parameter packets and feature-map buffers.

:class:`QueueImage` lays out the buffers from a base address, each aligned to the memory bus,
and writes the descriptors (:data:`rtl.dma_regs.DESCRIPTOR`) in the order the layers are added,
each pointing at the next. The formats are the engine's own (:mod:`sim.engine_driver`): the
input buffer holds the input stream's words, the output buffer the output words (PE bytes
requantized, 4 PE bytes raw), so a layer's output buffer is the next layer's input buffer when
the two formats agree (:func:`chains`).

>>> img = QueueImage(hw)                                 # doctest: +SKIP
>>> src = img.put(pack_input(x, hw["simd"], pitch))      # doctest: +SKIP
>>> out = img.add_layer(layer, src)                      # doctest: +SKIP
>>> memory = img.chunks                                   # {address: bytes}  # doctest: +SKIP
"""

from dataclasses import dataclass, field

import numpy as np

from model.network import ConvLayer, PoolLayer
from rtl.dma_regs import DESC_FIELD_WIDTH, DESC_WORDS, DESCRIPTOR
from rtl.engine_regs import REGMAP
from sim.engine_driver import (conv_shape, input_words, layer_fields, output_shape, pack_channels,
                               pack_weights, param_bytes, row_pitch)

__all__ = ["QueueImage", "Region", "LayerEntry", "output_bytes", "chains", "QueueImageError"]

#: Byte alignment of every buffer (at least the bus; a cache line, so that a CPU's cache
#: maintenance covers whole buffers).
BUFFER_ALIGN = 64


class QueueImageError(ValueError):
    """A layer cannot be put in the queue as asked; the message names it."""


@dataclass(frozen=True)
class Region:
    """A DMA region (:mod:`rtl.dma_region`)."""
    addr: int
    row_bytes: int
    stride: int = 0
    rows: int = 1

    @property
    def size(self):
        return self.row_bytes if self.rows == 1 else (self.rows - 1) * self.stride \
            + self.row_bytes


@dataclass
class LayerEntry:
    """One descriptor: its address, the layer and its regions."""
    desc: int
    layer: object
    input: Region
    output: Region
    acc: Region | None = None
    words: dict = field(default_factory=dict)


def _groups(n, size):
    return -(-n // size)


def output_bytes(layer, pe) -> int:
    """Bytes of the engine's output words of ``layer`` (PE lanes of 1 or 4 bytes each)."""
    cout, oh, ow = output_shape(layer)
    lane = 4 if getattr(layer, "raw", False) else 1
    return oh * ow * _groups(cout, pe) * pe * lane


def chains(before, after, hw) -> bool:
    """True when ``before``'s output buffer is ``after``'s input buffer as it stands: the
    output is requantized and ``after`` takes the plain format with pixels as long."""
    if getattr(before, "raw", False):
        return False
    if row_pitch(after, hw["simd"], hw.get("packing", True)) is not None:
        return False
    c = output_shape(before)[0]
    return _groups(c, hw["pe"]) * hw["pe"] == _groups(c, hw["simd"]) * hw["simd"]


class QueueImage:
    """Descriptors and buffers for the layer queue of an engine with parameters ``hw`` (the
    dict of :attr:`rtl.dma_engine.DmaEngine.hw`), laid out from ``base`` on."""

    def __init__(self, hw: dict, base: int = 0x1000):
        self.hw = hw
        self.bus_bytes = hw["bus_width"] // 8
        self.align = max(BUFFER_ALIGN, self.bus_bytes)
        self.base = base
        self._next = base
        self.chunks = {}
        self.entries: list[LayerEntry] = []

    def alloc(self, size: int) -> int:
        """Reserve ``size`` bytes (at least 1); returns their aligned address."""
        addr = -(-self._next // self.align) * self.align
        self._next = addr + max(1, size)
        if self._next > 1 << self.hw["addr_width"]:
            raise QueueImageError(f"the image needs {self._next:#x} bytes, beyond the "
                                  f"{self.hw['addr_width']}-bit address space")
        return addr

    def put(self, data: bytes) -> int:
        """Place ``data`` in the image; returns its address."""
        addr = self.alloc(len(data))
        self.chunks[addr] = bytes(data)
        return addr

    def registers(self, layer, acc_in=False) -> list[tuple[int, int]]:
        """(offset, value) of every register write the layer needs, bases at word 0."""
        hw = self.hw
        pairs = [(REGMAP[reg].offset, REGMAP[reg].pack(fields)) for reg, fields in
                 layer_fields(layer, acc_in, hw["simd"], hw.get("packing", True)).items()]
        pairs += [(REGMAP["WEIGHT_BASE"].offset, 0), (REGMAP["CHAN_BASE"].offset, 0)]
        return pairs

    def input_region(self, layer, addr) -> Region:
        """The contiguous input buffer of ``layer`` at ``addr``."""
        return Region(addr, input_words(layer, self.hw["simd"], self.hw.get("packing", True))
                      * self.hw["simd"])

    def add_layer(self, layer, source, *, psum_addr=None, load=True, output=None) -> Region:
        """Append a descriptor running ``layer`` on the input buffer at ``source`` (an address
        or a :class:`Region`); ``psum_addr``: its partial sums (raw output words, ``acc_in``);
        ``load``: send its parameters (else they are resident from the layer before);
        ``output``: where the output goes (default a new buffer). Returns the output region."""
        hw = self.hw
        if not isinstance(layer, (ConvLayer, PoolLayer)):
            raise QueueImageError(f"layer '{getattr(layer, 'name', layer)}': the queue runs "
                                  f"ConvLayer and PoolLayer, not {type(layer).__name__}")
        src = source if isinstance(source, Region) else self.input_region(layer, source)
        out = output or Region(self.alloc(output_bytes(layer, hw["pe"])),
                               output_bytes(layer, hw["pe"]))
        words = dict.fromkeys(DESCRIPTOR, 0)
        regs = self.registers(layer, acc_in=psum_addr is not None)
        words["reg_count"] = len(regs)
        words["regs"] = self.put(b"".join(o.to_bytes(4, "little") + v.to_bytes(4, "little")
                                          for o, v in regs))
        if load and isinstance(layer, ConvLayer):
            pw = hw["param_width"]
            for name, beats in (("weights", pack_weights(layer, hw["pe"], hw["simd"], pw)),
                                ("channels", pack_channels(layer, hw["pe"], pw))):
                data = param_bytes(beats, pw)
                words[name] = self.put(data)
                words[{"weights": "weight_bytes", "channels": "channel_bytes"}[name]] = len(data)
        acc = None
        if psum_addr is not None:
            cout, oh, ow = conv_shape(layer)
            acc = Region(psum_addr, oh * ow * _groups(cout, hw["pe"]) * hw["pe"] * 4)
            words["acc"], words["acc_bytes"] = acc.addr, acc.row_bytes
        words.update(in_addr=src.addr, in_row_bytes=src.row_bytes, in_stride=src.stride,
                     in_rows=src.rows, out_addr=out.addr, out_row_bytes=out.row_bytes,
                     out_stride=out.stride, out_rows=out.rows)
        desc = self.alloc(DESC_WORDS * DESC_FIELD_WIDTH // 8)
        if self.entries:
            self.entries[-1].words["next"] = desc
        self.entries.append(LayerEntry(desc, layer, src, out, acc, words))
        return out

    @property
    def head(self) -> int:
        """Address of the first descriptor."""
        if not self.entries:
            raise QueueImageError("the queue has no layer")
        return self.entries[0].desc

    def descriptors(self) -> dict:
        """{address: bytes} of every descriptor (their links as they stand now)."""
        return {e.desc: b"".join(int(e.words[n]).to_bytes(4, "little") for n in DESCRIPTOR)
                for e in self.entries}

    def image(self) -> dict:
        """{address: bytes} of everything: buffers with data, descriptors."""
        return {**self.chunks, **self.descriptors()}

    @property
    def size(self) -> int:
        """Bytes from ``base`` to the end of the last buffer."""
        return self._next - self.base


def read_output(memory_read, region: Region, layer, pe) -> np.ndarray:
    """CHW output of ``layer`` from its output region, ``memory_read(addr, n) -> bytes``."""
    from sim.engine_driver import unpack_output
    cout, oh, ow = output_shape(layer)
    lane = 4 if getattr(layer, "raw", False) else 1
    raw = np.frombuffer(memory_read(region.addr, output_bytes(layer, pe)), np.uint8)
    kept = raw.reshape(oh * ow, _groups(cout, pe) * pe, lane)[:, :cout].reshape(-1)
    return unpack_output(kept.tobytes(), layer)
