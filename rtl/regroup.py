"""Width converter between two HWC word formats of the same feature map.

Both sides carry pixels in raster order, each pixel as consecutive words of 8-bit channels:
``ceil(C / in_lanes)`` words of ``in_lanes`` bytes on the input, ``ceil(C / out_lanes)`` beats
of ``out_lanes`` bytes on the output, channel ``g * lanes + i`` in byte ``i`` of word ``g``.
Lanes past ``C`` carry don't-care bytes on both sides. The engine uses it to feed input words
of SIMD channels to the max-pool unit, whose beats have PE lanes (pool alone).

Ratios are powers of two:

- ``in_lanes == out_lanes``: wires.
- ``in_lanes > out_lanes`` (split, ``r = in_lanes / out_lanes``): each input word is sent as
  up to ``r`` beats, slice ``j`` of the word in beat ``j``; beats past the pixel's last channel
  group are not sent. One beat per cycle; ``i.ready`` is ``o.ready`` on a word's final beat.
- ``in_lanes < out_lanes`` (pack, ``r = out_lanes / in_lanes``): up to ``r`` input words are
  gathered into one beat, word ``k`` of the beat in slice ``k``; a pixel's last beat closes
  early when its words run out. One input word per cycle; the beat leaves from a register.

An input word's ``last`` goes out on the beat that carries the word's final slice (split),
or on the beat that carries the word (pack: the OR over its words), so an early or missing
input ``last`` shows as one at the consumer, except a ``last`` on a word that does not close
its beat (pack): the OR would hide it on the map's final beat, so it sets ``last_error``
instead (a map's final word always closes its beat). Per map, the pixel's group counts are
inputs and ``restart`` returns to the first word of a pixel.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.limits import MAX_ARRAY
from rtl.streams import DATA_WIDTH, payload_layout

__all__ = ["Regroup", "regroup_signature", "word_layout"]


def word_layout(lanes: int) -> data.StructLayout:
    """Payload of either side: ``lanes`` bytes and ``last``."""
    return payload_layout(DATA_WIDTH * lanes)


def _check_lanes(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ARRAY \
            or value & (value - 1):
        raise ValueError(f"{name} must be a power of two up to {MAX_ARRAY}, not {value!r}")


class Regroup(wiring.Component):
    """Regroups the channel words of HWC pixels from ``in_lanes`` to ``out_lanes`` bytes.

    Parameters
    ----------
    in_lanes, out_lanes : int
        Channels per input word and per output beat (powers of two up to 64).
    max_channels : int
        Largest channel count (sizes the group counters).

    Members
    -------
    i : ``In(stream.Signature(word_layout(in_lanes)))``
    o : ``Out(stream.Signature(word_layout(out_lanes)))``
    in_groups : ``In(range(ceil(max_channels / in_lanes) + 1))``
        ``ceil(C / in_lanes)`` of the current map, at least 1.
    out_groups : ``In(range(ceil(max_channels / out_lanes) + 1))``
        ``ceil(C / out_lanes)`` of the current map, at least 1.
    restart : ``In(1)``
        Forget a partial pixel and any beat not yet sent (before a new map); clears
        ``last_error``.
    last_error : ``Out(1)``
        An input ``last`` came on a word that does not close its output beat (pack only).
    """

    def __init__(self, in_lanes, out_lanes, max_channels):
        _check_lanes("in_lanes", in_lanes)
        _check_lanes("out_lanes", out_lanes)
        if not isinstance(max_channels, int) or isinstance(max_channels, bool) \
                or max_channels < 1:
            raise ValueError(f"max_channels must be a positive integer, not {max_channels!r}")
        self.in_lanes, self.out_lanes, self.max_channels = in_lanes, out_lanes, max_channels
        self.max_in_groups = -(-max_channels // in_lanes)
        self.max_out_groups = -(-max_channels // out_lanes)
        super().__init__(regroup_signature(in_lanes, out_lanes, max_channels))

    def elaborate(self, platform):
        m = Module()
        if self.in_lanes == self.out_lanes:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
        elif self.in_lanes > self.out_lanes:
            self._split(m)
        else:
            self._pack(m)
        return m

    def _split(self, m):
        ratio = self.in_lanes // self.out_lanes
        width = DATA_WIDTH * self.out_lanes
        beat = Signal(range(max(self.max_out_groups, 2)))      # beat of the pixel
        slice_ = beat[:(ratio - 1).bit_length()]               # beat mod ratio
        pixel_end = Signal()
        word_end = Signal()
        m.d.comb += [
            pixel_end.eq(beat == self.out_groups - 1),
            word_end.eq((slice_ == ratio - 1) | pixel_end),
            self.o.valid.eq(self.i.valid),
            self.o.payload.data.eq(self.i.payload.data.word_select(slice_, width)),
            self.o.payload.last.eq(self.i.payload.last & word_end),
            self.i.ready.eq(self.o.ready & word_end),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += beat.eq(Mux(pixel_end, 0, beat + 1))
        with m.If(self.restart):
            m.d.sync += beat.eq(0)

    def _pack(self, m):
        ratio = self.out_lanes // self.in_lanes
        width = DATA_WIDTH * self.in_lanes
        word = Signal(range(max(self.max_in_groups, 2)))       # word of the pixel
        slice_ = word[:(ratio - 1).bit_length()]               # word mod ratio
        gathered = Signal(DATA_WIDTH * self.out_lanes)
        gathered_last = Signal()
        merged = Signal.like(gathered)
        out_data = Signal.like(gathered)
        out_valid, out_last = Signal(), Signal()
        pixel_end = Signal()
        closing = Signal()
        m.d.comb += [
            pixel_end.eq(word == self.in_groups - 1),
            closing.eq((slice_ == ratio - 1) | pixel_end),
            merged.eq(gathered),
            merged.word_select(slice_, width).eq(self.i.payload.data),
            self.i.ready.eq(~closing | ~out_valid | self.o.ready),
            self.o.valid.eq(out_valid),
            self.o.payload.data.eq(out_data),
            self.o.payload.last.eq(out_last),
        ]
        with m.If(self.o.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += word.eq(Mux(pixel_end, 0, word + 1))
            with m.If(closing):
                m.d.sync += [out_data.eq(merged), out_valid.eq(1),
                             out_last.eq(gathered_last | self.i.payload.last),
                             gathered_last.eq(0)]
            with m.Else():
                m.d.sync += [gathered.eq(merged),
                             gathered_last.eq(gathered_last | self.i.payload.last)]
                with m.If(self.i.payload.last):
                    m.d.sync += self.last_error.eq(1)
        with m.If(self.restart):
            m.d.sync += [word.eq(0), out_valid.eq(0), gathered_last.eq(0),
                         self.last_error.eq(0)]


def regroup_signature(in_lanes, out_lanes, max_channels) -> wiring.Signature:
    """The signature of :class:`Regroup` (arguments unchecked): for an owner that builds its
    ports without the converter (``signature.create()``)."""
    return wiring.Signature({
        "i": In(stream.Signature(word_layout(in_lanes))),
        "o": Out(stream.Signature(word_layout(out_lanes))),
        "in_groups": In(range(-(-max_channels // in_lanes) + 1)),
        "out_groups": In(range(-(-max_channels // out_lanes) + 1)),
        "restart": In(1), "last_error": Out(1),
    })
