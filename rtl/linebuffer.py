"""Line buffer and window generator of the conv engine.

The input feature map arrives in HWC order: pixels in raster order (row by row, left to
right), each pixel as ``G = ceil(Cin / SIMD)`` consecutive *words* of SIMD channels (word
``g`` holds channels ``g*SIMD .. g*SIMD+SIMD-1``; lanes past ``Cin`` are ignored). Word ``n``
of the layer (``n = (y * W + x) * G + g``) is stored at address ``n mod depth`` of a
power-of-two-deep block RAM: a circular buffer that holds a sliding band of the image, never
the padding.

Memory formula. A window of a layer with effective kernel ``Keff = (K - 1) * dilation + 1``
spans, from its top-left to its bottom-right in-image pixel, at most
``(Keff_h - 1) * W + Keff_w`` pixels, so the layer is legal iff

    span = ((Keff_h - 1) * W + Keff_w) * ceil(Cin / SIMD)  <=  depth

i.e. ``Keff_h - 1`` full rows plus ``Keff_w`` pixels. The default depth is this span for the
largest kernel, width and channel count (dilation 1), rounded up to a power of two:
:func:`line_buffer_depth`. Everything beyond the span is slack that lets the input stream run
ahead of the MAC array.

Flow control. The writer accepts word ``n`` only if ``n < protect + depth``, where ``protect``
is the oldest word the window generator may still read (the top-left in-image word of the
current window; the start of that row while the next output row's window is clamped to the
same top row by padding). The generator issues a tap only once its word has been written
(``index < written``). Padded taps need no word and are issued at once with ``in_image`` low.
Together these guarantee that nothing is overwritten before it is read and that nothing is
read before it is written, with any input and output stalls.
"""

from amaranth.hdl import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.mac_array import DATA_WIDTH

__all__ = ["LineBuffer", "WindowGenerator", "geometry_layout", "line_buffer_span",
           "line_buffer_depth"]


def line_buffer_span(kh, kw, width, channels, simd, dilation=(1, 1)):
    """Words of line buffer a layer needs: ``((Keff_h - 1) * W + Keff_w) * ceil(C / SIMD)``."""
    keff_h = (kh - 1) * dilation[0] + 1
    keff_w = (kw - 1) * dilation[1] + 1
    return ((keff_h - 1) * width + keff_w) * -(-channels // simd)


def line_buffer_depth(max_kernel, max_width, max_channels, simd):
    """The default line-buffer depth: the largest layer's span rounded up to a power of two."""
    span = line_buffer_span(max_kernel, max_kernel, max_width, max_channels, simd)
    return 1 << (span - 1).bit_length()


def geometry_layout(*, coord_width, index_width, count_width, simd):
    """Per-layer constants of the window generator, computed by the engine at start.

    Coordinates are in pixels, ``*_words`` values in line-buffer words (``G`` words per
    pixel, ``W * G`` per row).
    """
    coord = signed(coord_width)
    index = signed(index_width)
    count = unsigned(count_width)
    return data.StructLayout({
        "height": coord, "width": coord,
        "cin_groups": count, "cout_groups": count, "kh": count, "kw": count,
        "last_lanes": Shape.cast(range(simd + 1)),
        "stride_h": coord, "stride_w": coord, "dil_h": coord, "dil_w": coord,
        "x_start": coord, "y_start": coord,       # -pad_left, -pad_top
        "x_limit": coord, "y_limit": coord,       # last window origin: W + pad_r - Keff_w, ...
        "x_start_words": index, "y_start_words": index,
        "dil_w_words": index, "dil_h_words": index,
        "stride_w_words": index, "stride_h_words": index,
    })


class LineBuffer(wiring.Component):
    """Circular buffer of input words with the writer's flow control (module docstring).

    Parameters
    ----------
    simd : int
        Channels per word.
    depth : int
        Words; a power of two.
    count_width : int
        Width of the word counters (enough for the largest feature map).

    Members
    -------
    s : ``In(stream.Signature(data.StructLayout({"data": 8 * simd, "last": 1})))``
        Input words; ``last`` must be set on the final word of the feature map.
    enable : ``In(1)``
        A layer is running: accept words.
    restart : ``In(1)``
        Start a new layer: ``written`` and ``tlast_error`` go to zero.
    total : ``In(count_width)``
        Words in the feature map; no more are accepted.
    protect : ``In(signed(count_width + 1))``, ``protect_off`` : ``In(1)``
        Oldest word still to be read; ``protect_off`` once nothing more will be read.
    written : ``Out(count_width)``
        Words accepted so far in this layer.
    tlast_error : ``Out(1)``
        ``last`` came on another word than the final one, or was missing on it.
    read_addr : ``In(range(depth))``, ``read_data`` : ``Out(8 * simd)``
        Read port; data one cycle after the address.
    """

    def __init__(self, *, simd, depth, count_width):
        if not isinstance(depth, int) or depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two of at least 2, not {depth!r}")
        self.simd = simd
        self.depth = depth
        self.count_width = count_width
        width = DATA_WIDTH * simd
        super().__init__({
            "s": In(stream.Signature(data.StructLayout({"data": width, "last": 1}))),
            "enable": In(1), "restart": In(1),
            "total": In(count_width),
            "protect": In(signed(count_width + 1)), "protect_off": In(1),
            "written": Out(count_width), "tlast_error": Out(1),
            "read_addr": In(range(depth)), "read_data": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(DATA_WIDTH * self.simd), depth=self.depth,
                                        init=[])
        rd = mem.read_port()
        wr = mem.write_port()
        room = Signal()
        m.d.comb += [
            rd.addr.eq(self.read_addr), self.read_data.eq(rd.data),
            room.eq(self.protect_off | (self.written < self.protect + self.depth)),
            self.s.ready.eq(self.enable & (self.written < self.total) & room),
            wr.addr.eq(self.written[:(self.depth - 1).bit_length()]),
            wr.data.eq(self.s.payload.data),
            wr.en.eq(self.s.valid & self.s.ready),
        ]
        with m.If(self.s.valid & self.s.ready):
            m.d.sync += self.written.eq(self.written + 1)
            final = self.written == self.total - 1
            with m.If(self.s.payload.last != final):
                m.d.sync += self.tlast_error.eq(1)
        with m.If(self.restart):
            m.d.sync += [self.written.eq(0), self.tlast_error.eq(0)]
        return m


class WindowGenerator(wiring.Component):
    """Visits every output position and, for each, every MAC operation of its window.

    Loop nest, innermost first: input-channel group ``ig``, kernel column ``kx``, kernel row
    ``ky``, output-channel group ``og``, output column, output row. Only output positions are
    visited (strided layers skip nothing but real positions); a tap in the padding is issued
    without reading (``in_image`` low). One operation per cycle whenever the tap's word has
    arrived (``written``) and, for the first operation of a group, ``credit`` is high.

    Parameters
    ----------
    geometry : data.StructLayout
        :func:`geometry_layout`.
    index_width : int
        Width of signed word indices.
    weight_depth, channel_groups : int
        Sizes of the weight memory and of the channel-constant memories.

    Members
    -------
    geometry : ``In(geometry)``
        Per-layer constants, stable from ``start`` to ``done``.
    start : ``In(1)``
        Start a layer (counters to the first operation of the first window).
    written : ``In(unsigned(index_width))``
        Input words in the line buffer so far.
    credit : ``In(1)``
        Room for one more output group downstream.
    valid, first, last, final, in_image : ``Out(1)``
        An operation is issued this cycle; first/last of its output group; last group of the
        layer; the tap lies in the image.
    lanes : ``Out(range(simd + 1))``
        Valid lanes of the operation's input word.
    index : ``Out(signed(index_width))``
        Word index of the tap (valid when ``in_image``).
    weight_addr : ``Out(range(weight_depth))``, ``og`` : ``Out(range(channel_groups))``
    waiting : ``Out(1)``
        The next operation waits for an input word (input-starved).
    busy : ``Out(1)``
        Operations remain to be issued.
    protect : ``Out(signed(index_width))``
        Oldest word that may still be read (see :class:`LineBuffer`), registered.
    """

    def __init__(self, *, geometry, index_width, simd, weight_depth, channel_groups):
        self.layout = geometry
        self.index_width = index_width
        super().__init__({
            "geometry": In(geometry), "start": In(1),
            "written": In(unsigned(index_width)), "credit": In(1),
            "valid": Out(1), "first": Out(1), "last": Out(1), "final": Out(1),
            "in_image": Out(1), "lanes": Out(range(simd + 1)),
            "index": Out(signed(index_width)),
            "weight_addr": Out(range(weight_depth)), "og": Out(range(channel_groups)),
            "waiting": Out(1), "busy": Out(1),
            "protect": Out(signed(index_width)),
        })
        self.simd = simd

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        coord = g.x_start.shape()
        index = signed(self.index_width)
        count = g.kh.shape()

        ig, kx, ky, og = (Signal(count, name=n) for n in ("ig", "kx", "ky", "og"))
        ix, iy, bx, by = (Signal(coord, name=n) for n in ("ix", "iy", "bx", "by"))
        ix_w, iy_w, bx_w, by_w = (Signal(index, name=n) for n in ("ix_w", "iy_w", "bx_w", "by_w"))
        waddr = Signal.like(self.weight_addr)

        ig_end = Signal()
        kx_end = Signal()
        ky_end = Signal()
        og_end = Signal()
        row_end = Signal()
        col_end = Signal()
        m.d.comb += [
            ig_end.eq(ig == g.cin_groups - 1),
            kx_end.eq(kx == g.kw - 1),
            ky_end.eq(ky == g.kh - 1),
            og_end.eq(og == g.cout_groups - 1),
            col_end.eq(bx + g.stride_w > g.x_limit),
            row_end.eq(by + g.stride_h > g.y_limit),
        ]

        arrived = Signal()
        m.d.comb += [
            self.first.eq((ig == 0) & (kx == 0) & (ky == 0)),
            self.last.eq(ig_end & kx_end & ky_end),
            self.final.eq(og_end & col_end & row_end),
            self.in_image.eq((ix >= 0) & (ix < g.width) & (iy >= 0) & (iy < g.height)),
            self.lanes.eq(Mux(ig_end, g.last_lanes, self.simd)),
            self.index.eq(iy_w + ix_w + ig),
            self.weight_addr.eq(waddr),
            self.og.eq(og),
            arrived.eq(~self.in_image | (self.index < self.written)),
            self.waiting.eq(self.busy & ~arrived),
            self.valid.eq(self.busy & arrived & (~self.first | self.credit)),
        ]

        clamp = lambda v: Mux(v < 0, 0, v)
        m.d.sync += self.protect.eq(
            clamp(by_w) + Mux(by + g.stride_h > 0, clamp(bx_w), 0))

        with m.If(self.valid):
            m.d.sync += [ig.eq(ig + 1), waddr.eq(waddr + 1)]
            with m.If(ig_end):
                m.d.sync += [ig.eq(0), kx.eq(kx + 1), ix.eq(ix + g.dil_w),
                             ix_w.eq(ix_w + g.dil_w_words)]
                with m.If(kx_end):
                    m.d.sync += [kx.eq(0), ix.eq(bx), ix_w.eq(bx_w),
                                 ky.eq(ky + 1), iy.eq(iy + g.dil_h), iy_w.eq(iy_w + g.dil_h_words)]
                    with m.If(ky_end):
                        m.d.sync += [ky.eq(0), iy.eq(by), iy_w.eq(by_w), og.eq(og + 1)]
                        with m.If(og_end):
                            m.d.sync += [og.eq(0), waddr.eq(0)]
                            with m.If(~col_end):
                                m.d.sync += [bx.eq(bx + g.stride_w), ix.eq(bx + g.stride_w),
                                             bx_w.eq(bx_w + g.stride_w_words),
                                             ix_w.eq(bx_w + g.stride_w_words)]
                            with m.Else():
                                m.d.sync += [bx.eq(g.x_start), ix.eq(g.x_start),
                                             bx_w.eq(g.x_start_words), ix_w.eq(g.x_start_words)]
                                with m.If(~row_end):
                                    m.d.sync += [by.eq(by + g.stride_h), iy.eq(by + g.stride_h),
                                                 by_w.eq(by_w + g.stride_h_words),
                                                 iy_w.eq(by_w + g.stride_h_words)]
                                with m.Else():
                                    m.d.sync += self.busy.eq(0)

        with m.If(self.start):
            m.d.sync += [
                ig.eq(0), kx.eq(0), ky.eq(0), og.eq(0), waddr.eq(0),
                bx.eq(g.x_start), ix.eq(g.x_start), by.eq(g.y_start), iy.eq(g.y_start),
                bx_w.eq(g.x_start_words), ix_w.eq(g.x_start_words),
                by_w.eq(g.y_start_words), iy_w.eq(g.y_start_words),
                self.busy.eq(1), self.protect.eq(0),
            ]
        return m
