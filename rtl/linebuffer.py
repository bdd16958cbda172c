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

from functools import reduce

from amaranth.hdl import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.streams import DATA_WIDTH, payload_layout

__all__ = ["LineBuffer", "WindowGenerator", "geometry_layout", "line_buffer_span",
           "line_buffer_depth"]


def line_buffer_span(kh, kw, width, channels, simd, dilation=(1, 1)):
    """Words of line buffer a layer needs: ``((Keff_h - 1) * W + Keff_w) * ceil(C / SIMD)``."""
    keff_h = (kh - 1) * dilation[0] + 1
    keff_w = (kw - 1) * dilation[1] + 1
    return ((keff_h - 1) * width + keff_w) * -(-channels // simd)


def line_buffer_depth(max_kernel, max_width, max_channels, simd):
    """The default line-buffer depth: the largest layer's span rounded up to a power of two
    (at least 2 words: a one-word memory would have no address)."""
    span = line_buffer_span(max_kernel, max_kernel, max_width, max_channels, simd)
    return max(2, 1 << (span - 1).bit_length())


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
    read_register : bool
        Register the read data once more (data two cycles after the address): no logic after
        the block RAM's slow output in the reader's first stage.

    Members
    -------
    s : ``In(stream.Signature(data.StructLayout({"data": 8 * simd, "last": 1})))``
        Input words; ``last`` must be set on the final word of the feature map.
    enable : ``In(1)``
        A layer is running: accept words.
    restart : ``In(1)``
        Start a new layer: ``written`` and ``tlast_error`` go to zero.
    total : ``In(count_width)``
        Words in the feature map (sampled at ``restart``); no more are accepted.
    protect : ``In(signed(count_width + 1))``, ``protect_off`` : ``In(1)``
        Oldest word still to be read; ``protect_off`` once nothing more will be read. Used
        one cycle late (registered ``protect + depth``), which only holds the writer back.
    written : ``Out(count_width)``
        Words accepted so far in this layer. A word is written into the memory in the cycle
        after it is accepted: read it no earlier than one cycle after ``written`` counts it
        (:class:`WindowGenerator` does).
    tlast_error : ``Out(1)``
        ``last`` came on another word than the final one, or was missing on it.
    read_addr : ``In(range(depth))``, ``read_data`` : ``Out(8 * simd)``
        Read port; data one cycle after the address (two with ``read_register``).
    """

    def __init__(self, *, simd, depth, count_width, read_register=False):
        if not isinstance(depth, int) or depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two of at least 2, not {depth!r}")
        if not isinstance(read_register, bool):
            raise ValueError(f"read_register must be a bool, not {read_register!r}")
        self.read_register = read_register
        self.simd = simd
        self.depth = depth
        self.count_width = count_width
        width = DATA_WIDTH * simd
        super().__init__({
            "s": In(stream.Signature(payload_layout(width))),
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
        # Registered for the clock rate: the writer's limit, the words still to come, and the
        # memory write (one cycle after the handshake).
        limit = Signal(signed(self.count_width + 2))
        remaining = Signal(self.count_width)
        room = Signal()
        take = Signal()
        m.d.sync += limit.eq(self.protect + self.depth)
        read_domain = m.d.sync if self.read_register else m.d.comb
        read_domain += self.read_data.eq(rd.data)
        m.d.comb += [
            rd.addr.eq(self.read_addr),
            room.eq(self.protect_off | (self.written < limit)),
            self.s.ready.eq(self.enable & (remaining != 0) & room),
            take.eq(self.s.valid & self.s.ready),
        ]
        m.d.sync += [
            wr.addr.eq(self.written[:(self.depth - 1).bit_length()]),
            wr.data.eq(self.s.payload.data),
            wr.en.eq(take),
        ]
        with m.If(take):
            m.d.sync += [self.written.eq(self.written + 1), remaining.eq(remaining - 1)]
            with m.If(self.s.payload.last != (remaining == 1)):
                m.d.sync += self.tlast_error.eq(1)
        with m.If(self.restart):
            m.d.sync += [self.written.eq(0), self.tlast_error.eq(0), remaining.eq(self.total)]
        return m


class WindowGenerator(wiring.Component):
    """Visits every output position and, for each, every MAC operation of its window.

    Loop nest, innermost first: input-channel group ``ig``, kernel column ``kx``, kernel row
    ``ky``, output-channel group ``og``, output column, output row. Only output positions are
    visited (strided layers skip nothing but real positions); a tap in the padding is issued
    without reading (``in_image`` low). One operation per cycle whenever the tap's word has
    arrived (``written``) and, for the first operation of a group, ``credit`` is high.

    Pipelined for the clock rate: the loop counters run up to :data:`QUEUE_DEPTH` operations
    ahead of the issue and advance on registered state only; every queued operation carries
    its own word index, registered outputs and an "arrived" flag that is refreshed from
    ``written`` every cycle, so the issue decision is a few gates on registers. A word that
    arrives is seen one cycle after ``written`` counts it. A layer starts :data:`SETUP_CYCLES`
    after ``start`` (per-layer constants of the counters settle in registers), and a queued
    operation issues in the cycle after it was generated at the earliest.

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
        Per-layer constants, stable from ``start`` to the end of ``busy``.
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
        From the cycle after ``start`` until the last operation is issued.
    protect : ``Out(signed(index_width))``
        Oldest word that may still be read (see :class:`LineBuffer`), registered: the top-left
        word of the oldest queued operation's window.
    """

    #: Operations generated ahead of the issue.
    QUEUE_DEPTH = 2
    #: Cycles from ``start`` to the first generated operation.
    SETUP_CYCLES = 2

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

        def reg(name, expr):
            """A per-layer constant derived from the geometry, registered every cycle."""
            sig = Signal(Shape.cast(expr.shape()), name=name)
            m.d.sync += sig.eq(expr)
            return sig

        # --- per-layer constants: at most SETUP_CYCLES registers deep, settled at `init` ------
        loops = {"ig": g.cin_groups, "kx": g.kw, "ky": g.kh, "og": g.cout_groups}
        x_start, y_start = g.x_start, g.y_start
        x_start_words, y_start_words = g.x_start_words, g.y_start_words
        words0 = reg("words0", x_start_words + y_start_words)
        xs_sw = reg("xs_sw", x_start + g.stride_w)
        ys_sh = reg("ys_sh", y_start + g.stride_h)
        # The next column (row) after bx (by) is the last one iff bx > x_limit - 2 * stride_w.
        x_last = reg("x_last", g.x_limit - (g.stride_w << 1))
        y_last = reg("y_last", g.y_limit - (g.stride_h << 1))
        y_top = reg("y_top", -(g.stride_h << 1))
        first_col_end = reg("first_col_end", xs_sw > g.x_limit)
        first_row_end = reg("first_row_end", ys_sh > g.y_limit)
        first_row_flag = reg("first_row_flag", ys_sh > 0)

        setup = Signal(range(self.SETUP_CYCLES + 1))
        init = Signal()                     # registered: high while setup == 1
        m.d.sync += init.eq((setup == 2) & ~self.start)
        with m.If(setup != 0):
            m.d.sync += setup.eq(setup - 1)

        # --- loop counters: generate one operation per `adv` --------------------------------
        gen_busy = Signal()                 # operations remain to be generated
        occupancy = Signal(range(self.QUEUE_DEPTH + 1))
        adv = Signal()
        m.d.comb += adv.eq(gen_busy & (occupancy != self.QUEUE_DEPTH))

        rem = {n: Signal(count, name=f"{n}_rem") for n in loops}      # passes left, from n to 1
        end = {n: Signal(name=f"{n}_end") for n in loops}             # rem == 1, registered
        col_end, row_end = Signal(), Signal()
        row_flag = Signal()                 # by + stride_h > 0: protect moves along the row
        og = Signal.like(self.og)
        first = Signal()
        waddr = Signal.like(self.weight_addr)
        ix, iy, bx, by = (Signal(coord, name=n) for n in ("ix", "iy", "bx", "by"))
        # Word indices: the operation's, its tap's first word, the tap row's first tap, the
        # window's top-left tap, the window row's first window; bx_w, by_w as in the geometry.
        idx, tap, row, win, wrow, bx_w, by_w = (
            Signal(index, name=n) for n in ("idx", "tap", "row", "win", "wrow", "bx_w", "by_w"))
        prot_top, prot_left = Signal(index), Signal(index)

        clamp = lambda v: Mux(v < 0, 0, v)
        last = end["ig"] & end["kx"] & end["ky"]
        in_image = Signal()
        m.d.comb += in_image.eq((ix >= 0) & (ix < g.width) & (iy >= 0) & (iy < g.height))

        def count_down(n):
            m.d.sync += [rem[n].eq(rem[n] - 1), end[n].eq(rem[n] == 2)]

        def wrap(n):
            m.d.sync += [rem[n].eq(loops[n]), end[n].eq(loops[n] == 1)]

        with m.If(adv):
            m.d.sync += [waddr.eq(waddr + 1), first.eq(0)]
            with m.If(~end["ig"]):
                count_down("ig")
                m.d.sync += idx.eq(idx + 1)
            with m.Else():
                wrap("ig")
                with m.If(~end["kx"]):
                    count_down("kx")
                    m.d.sync += [tap.eq(tap + g.dil_w_words), idx.eq(tap + g.dil_w_words),
                                 ix.eq(ix + g.dil_w)]
                with m.Else():
                    wrap("kx")
                    with m.If(~end["ky"]):
                        count_down("ky")
                        nxt = row + g.dil_h_words
                        m.d.sync += [row.eq(nxt), tap.eq(nxt), idx.eq(nxt),
                                     ix.eq(bx), iy.eq(iy + g.dil_h)]
                    with m.Else():
                        wrap("ky")
                        m.d.sync += first.eq(1)
                        with m.If(~end["og"]):
                            count_down("og")
                            m.d.sync += [og.eq(og + 1), row.eq(win), tap.eq(win), idx.eq(win),
                                         ix.eq(bx), iy.eq(by)]
                        with m.Else():
                            wrap("og")
                            m.d.sync += [og.eq(0), waddr.eq(0)]
                            with m.If(~col_end):
                                nxt = win + g.stride_w_words
                                nxt_bx_w = bx_w + g.stride_w_words
                                m.d.sync += [
                                    win.eq(nxt), row.eq(nxt), tap.eq(nxt), idx.eq(nxt),
                                    bx.eq(bx + g.stride_w), ix.eq(bx + g.stride_w), iy.eq(by),
                                    bx_w.eq(nxt_bx_w), col_end.eq(bx > x_last),
                                    prot_left.eq(Mux(row_flag, clamp(nxt_bx_w), 0)),
                                ]
                            with m.Else():
                                m.d.sync += [bx.eq(x_start), ix.eq(x_start),
                                             bx_w.eq(x_start_words), col_end.eq(first_col_end),
                                             prot_left.eq(0)]
                                with m.If(~row_end):
                                    nxt = wrow + g.stride_h_words
                                    nxt_by_w = by_w + g.stride_h_words
                                    m.d.sync += [
                                        wrow.eq(nxt), win.eq(nxt), row.eq(nxt), tap.eq(nxt),
                                        idx.eq(nxt),
                                        by.eq(by + g.stride_h), iy.eq(by + g.stride_h),
                                        by_w.eq(nxt_by_w), row_end.eq(by > y_last),
                                        row_flag.eq(by > y_top), prot_top.eq(clamp(nxt_by_w)),
                                    ]
                                with m.Else():
                                    m.d.sync += gen_busy.eq(0)

        with m.If(init):
            m.d.sync += [
                og.eq(0), first.eq(1), waddr.eq(0), gen_busy.eq(1),
                bx.eq(x_start), ix.eq(x_start), by.eq(y_start), iy.eq(y_start),
                bx_w.eq(x_start_words), by_w.eq(y_start_words),
                idx.eq(words0), tap.eq(words0), row.eq(words0), win.eq(words0),
                wrow.eq(words0),
                col_end.eq(first_col_end), row_end.eq(first_row_end), row_flag.eq(first_row_flag),
                prot_top.eq(0), prot_left.eq(0),        # the start words are never positive
            ]
            for n in loops:
                wrap(n)

        # --- queue of generated operations ----------------------------------------------------
        op_layout = data.StructLayout({
            "index": index, "protect": index, "waddr": self.weight_addr.shape(),
            "og": og.shape(), "lanes": self.lanes.shape(),
            "first": 1, "last": 1, "final": 1, "in_image": 1,
        })
        slots = [Signal(op_layout, name=f"op{k}") for k in range(self.QUEUE_DEPTH)]
        arrived = [Signal(name=f"arrived{k}") for k in range(self.QUEUE_DEPTH)]
        wp = Signal(range(self.QUEUE_DEPTH))
        rp = Signal(range(self.QUEUE_DEPTH))
        head = Signal(op_layout)
        head_arrived = Signal()
        # Plain multiplexers, not a switch process: Icarus would leave its outputs undefined
        # until the first change of a process input.
        pick = lambda values: reduce(lambda acc, k: Mux(rp == k, values[k], acc),
                                     range(1, len(values)), values[0])
        m.d.comb += [head.eq(pick(slots)), head_arrived.eq(pick(arrived))]
        bump = lambda p: Mux(p == self.QUEUE_DEPTH - 1, 0, p + 1)

        new = Signal(op_layout)
        m.d.comb += [
            new.index.eq(idx), new.protect.eq(prot_top + prot_left), new.waddr.eq(waddr),
            new.og.eq(og), new.lanes.eq(Mux(end["ig"], g.last_lanes, self.simd)),
            new.first.eq(first), new.last.eq(last),
            new.final.eq(end["og"] & col_end & row_end), new.in_image.eq(in_image),
        ]
        for k in range(self.QUEUE_DEPTH):
            with m.If(adv & (wp == k)):
                m.d.sync += [slots[k].eq(new),
                             arrived[k].eq(~in_image | (idx < self.written))]
            with m.Else():
                m.d.sync += arrived[k].eq(arrived[k] | (slots[k].index < self.written))
        with m.If(adv):
            m.d.sync += wp.eq(bump(wp))

        # --- issue -------------------------------------------------------------------------
        queued = Signal()
        m.d.comb += [
            queued.eq(occupancy != 0),
            self.valid.eq(queued & head_arrived & (~head.first | self.credit)),
            self.waiting.eq(queued & ~head_arrived),
            self.first.eq(head.first), self.last.eq(head.last), self.final.eq(head.final),
            self.in_image.eq(head.in_image), self.lanes.eq(head.lanes),
            self.index.eq(head.index), self.weight_addr.eq(head.waddr), self.og.eq(head.og),
            self.busy.eq((setup != 0) | gen_busy | queued),
        ]
        with m.If(self.valid):
            m.d.sync += rp.eq(bump(rp))
        m.d.sync += occupancy.eq(occupancy + adv - self.valid)
        with m.If(queued):
            m.d.sync += self.protect.eq(head.protect)
        with m.Elif(gen_busy):
            m.d.sync += self.protect.eq(prot_top + prot_left)

        with m.If(self.start):
            m.d.sync += [setup.eq(self.SETUP_CYCLES), gen_busy.eq(0), occupancy.eq(0),
                         wp.eq(0), rp.eq(0), self.protect.eq(0)]
        return m
