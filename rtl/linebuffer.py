"""Line buffer and window generator of the conv engine.

Storage. The input feature map arrives in HWC order as a stream of *words* of SIMD bytes.
Byte ``b`` of the layer's byte stream (byte ``b mod SIMD`` of word ``b // SIMD``) holds
channel ``c`` of pixel ``(y, x)`` at ``b = y * P + x * Cp + c``, where

- ``Cp``, the *pixel pitch*: ``ceil(Cin / SIMD) * SIMD`` bytes (one pixel in whole words, bytes
  past ``Cin`` ignored: the plain format), or ``Cin`` when the layer is *packed* (pixels back
  to back, no gap);
- ``P``, the *row pitch*: ``W * Cp`` in the plain format; when packed, the ``in_row_bytes``
  register (``W * Cin`` bytes of the row, then bytes that are never read).

Word ``n`` is stored at row ``n mod depth`` of ``SIMD`` one-byte-wide block RAMs (*banks*,
bank ``i`` holds byte ``i`` of every word): a circular buffer that holds a sliding band of the
image, never the padding.

Reduction order and packing. The products of one output are visited in the order of the
positions ``t = (ky * Kw + kx) * Cp + c`` of the window, ``SIMD`` positions per MAC-array
operation (lane ``j`` of operation ``k`` takes position ``k * SIMD + j``), so a window takes
``ceil(Kh * Kw * Cp / SIMD)`` operations. In the plain format an operation is one input-channel
group of one tap, as in a textbook loop nest; packed, the ``Kh * Kw * Cin`` products fill whole
words across taps (3 channels x 25 taps: 10 operations instead of 25). Position ``t`` reads the
byte at ``A + ky * dil_h * P + kx * dil_w * Cp + c`` (``A``: the window's top-left byte, which
may lie in the padding), or nothing when its pixel lies in the padding, ``c >= Cin`` or
``t`` is past the window: such lanes are masked (the activation is the zero point).

Bank conflicts. Every lane must read a different bank. The byte of position ``t`` lies in bank
``(A + t) mod SIMD`` when ``dil_w * Cp`` steps by one pixel of ``Cp`` bytes (``dil_w = 1``
packed, always in the plain format, where ``Cp`` is a whole number of words) and
``dil_h * P = Kw * dil_w * Cp (mod SIMD)``: then lane ``j`` reads bank ``(A + j) mod SIMD``,
a rotation. A packed layer needs ``dil_w = 1`` and a row pitch with this property (the host
pads each row by fewer than SIMD bytes; the engine refuses other settings: ``PACK_*`` in
:mod:`rtl.limits`).

Memory formula. A window spans, from its top-left to its bottom-right in-image byte, at most
``(Keff_h - 1) * P + Keff_w * Cp`` bytes with ``Keff = (K - 1) * dilation + 1``, so the layer
is legal iff those bytes, in words (plus one word when packed: the window need not start on a
word), fit the ``depth``. In the plain format that is ``((Keff_h - 1) * W + Keff_w) *
ceil(Cin / SIMD)`` words (:func:`line_buffer_span`). The default depth is this span for the
largest kernel, width and channel count (dilation 1), rounded up to a power of two:
:func:`line_buffer_depth`. Everything beyond the span is slack that lets the input stream run
ahead of the MAC array.

Flow control. The writer accepts word ``n`` only if ``n < protect + depth``, where ``protect``
is the word of the oldest byte the window generator may still read (the top-left in-image byte
of the current window; the start of that row while the next output row's window is clamped to
the same top row by padding). The generator issues an operation only once the word of its
last unmasked byte has been written (``written``). Operations entirely in the padding need no
word and are issued at once. Together these guarantee that nothing is overwritten before it is
read and that nothing is read before it is written, with any input and output stalls.
"""


from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.bram import BRAMS, RegisteredRam
from rtl.streams import DATA_WIDTH, payload_layout

__all__ = ["LineBuffer", "WindowGenerator", "geometry_layout", "line_buffer_span",
           "line_buffer_depth", "rotate"]


def rotate(values, amount):
    """``values`` (a list) rotated so that element ``i`` of the result is
    ``values[(i + amount) % len(values)]``: a barrel rotator, one multiplexer level per bit of
    ``amount`` (a Value; ``len(values)`` a power of two)."""
    n = len(values)
    out = list(values)
    for bit in range((n - 1).bit_length()):
        step = 1 << bit
        out = [Mux(amount[bit], out[(i + step) % n], out[i]) for i in range(n)]
    return out


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


def geometry_layout(*, coord_width, index_width, count_width, simd, channel_width=None,
                    ops_width=None):
    """Per-layer constants of the window generator, computed by the engine at start.

    Coordinates are in pixels, ``*_bytes`` values and ``pixel_bytes`` (``Cp``),
    ``col_step`` (``dil_w * Cp``), ``row_step`` (``dil_h * P``) and ``kw_col_step``
    (``Kw * dil_w * Cp``) in bytes of the input stream (module docstring). ``ops``: operations
    per window, ``ceil(Kh * Kw * Cp / SIMD)``. ``channel_width`` and ``ops_width`` (default
    ``index_width``): bits of the largest ``Cp`` and ``ops``.
    """
    coord = signed(coord_width)
    index = signed(index_width)
    count = unsigned(count_width)
    channels = channel_width if channel_width is not None else index_width
    ops = ops_width if ops_width is not None else index_width
    return data.StructLayout({
        "height": coord, "width": coord,
        "cout_groups": count, "kh": count, "kw": count, "ops": unsigned(ops),
        "in_channels": unsigned(channels), "pixel_bytes": unsigned(channels),
        "stride_h": coord, "stride_w": coord, "dil_h": coord, "dil_w": coord,
        "keff_w": coord,
        "x_start": coord, "y_start": coord,       # -pad_left, -pad_top
        "x_limit": coord, "y_limit": coord,       # last window origin: W + pad_r - Keff_w, ...
        "x_start_bytes": index, "y_start_bytes": index,
        "stride_w_bytes": index, "stride_h_bytes": index,
        "col_step": index, "row_step": index, "kw_col_step": index,
    })


class LineBuffer(wiring.Component):
    """Circular buffer of input words in SIMD one-byte banks, with the writer's flow control
    (module docstring).

    Parameters
    ----------
    simd : int
        Bytes per word (and banks).
    depth : int
        Words; a power of two.
    count_width : int
        Width of the word counters (enough for the largest feature map).
    read_register : bool
        Register the read data once more (data two cycles after the address): no logic after
        the block RAM's slow output in the reader's first stage.
    bram : str
        With ``read_register``, how the banks are built (:class:`rtl.bram.RegisteredRam`:
        ``"ecp5"`` registers the data in the DP16KD's output register).

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
        two cycles late (registered ``protect + depth``, then the registered room), which
        only holds the writer back.
    written : ``Out(count_width)``
        Words accepted so far in this layer. A word is written into the memory in the cycle
        after it is accepted: read it no earlier than one cycle after ``written`` counts it
        (:class:`WindowGenerator` does).
    tlast_error : ``Out(1)``
        ``last`` came on another word than the final one, or was missing on it.
    read_addr : ``In(data.ArrayLayout(range(depth), simd))``
        The row each bank reads.
    read_data : ``Out(data.ArrayLayout(8, simd))``
        Each bank's byte, one cycle after the address (two with ``read_register``).
    """

    def __init__(self, *, simd, depth, count_width, read_register=False, bram="generic"):
        if not isinstance(depth, int) or depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two of at least 2, not {depth!r}")
        if not isinstance(read_register, bool):
            raise ValueError(f"read_register must be a bool, not {read_register!r}")
        self.read_register = read_register
        if bram not in BRAMS:
            raise ValueError(f"bram must be one of {', '.join(map(repr, BRAMS))}, not {bram!r}")
        self.bram = bram
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
            "read_addr": In(data.ArrayLayout(range(depth), simd)),
            "read_data": Out(data.ArrayLayout(DATA_WIDTH, simd)),
        })

    def elaborate(self, platform):
        m = Module()
        # Registered for the clock rate: the writer's limit, the words still to come, and the
        # memory write (one cycle after the handshake).
        limit = Signal(signed(self.count_width + 2))
        remaining = Signal(self.count_width)
        room = Signal()
        take = Signal()
        wr_addr = Signal(range(self.depth))
        wr_data = Signal(DATA_WIDTH * self.simd)
        wr_en = Signal()
        m.d.sync += [wr_addr.eq(self.written[:(self.depth - 1).bit_length()]),
                     wr_data.eq(self.s.payload.data), wr_en.eq(take)]
        for i in range(self.simd):
            if self.read_register:
                bank = RegisteredRam(width=DATA_WIDTH, depth=self.depth, bram=self.bram)
                m.submodules[f"bank{i}"] = bank
                m.d.comb += [bank.r_addr.eq(self.read_addr[i]), bank.w_addr.eq(wr_addr),
                             bank.w_data.eq(wr_data.word_select(i, DATA_WIDTH)),
                             bank.w_en.eq(wr_en), self.read_data[i].eq(bank.r_data)]
                continue
            bank = Memory(shape=unsigned(DATA_WIDTH), depth=self.depth, init=[])
            m.submodules[f"bank{i}"] = bank
            rd, wr = bank.read_port(), bank.write_port()
            m.d.comb += [rd.addr.eq(self.read_addr[i]), wr.addr.eq(wr_addr),
                         wr.data.eq(wr_data.word_select(i, DATA_WIDTH)), wr.en.eq(wr_en),
                         self.read_data[i].eq(rd.data)]
        # `ready` is an AND of registers: `room` is computed a cycle ahead with room for the
        # word this cycle may take (`written + 1`; `limit` only grows while a layer runs, so
        # this holds the writer back by at most a word), `more` from the next `remaining`.
        more = Signal()
        m.d.sync += [limit.eq(self.protect + self.depth),
                     room.eq(self.protect_off | (self.written + 1 < limit)),
                     more.eq(Mux(take, remaining != 1, remaining != 0))]
        m.d.comb += [
            self.s.ready.eq(self.enable & more & room),
            take.eq(self.s.valid & self.s.ready),
        ]
        with m.If(take):
            m.d.sync += [self.written.eq(self.written + 1), remaining.eq(remaining - 1)]
            with m.If(self.s.payload.last != (remaining == 1)):
                m.d.sync += self.tlast_error.eq(1)
        with m.If(self.restart):
            m.d.sync += [self.written.eq(0), self.tlast_error.eq(0), remaining.eq(self.total),
                         more.eq(self.total != 0), room.eq(0)]
        return m


class WindowGenerator(wiring.Component):
    """Visits every output position and, for each, every MAC operation of its window.

    Loop nest, innermost first: the ``ops`` operations of a window (``SIMD`` positions of the
    reduction each, module docstring), output-channel group ``og``, output column, output row.
    Only output positions are visited (strided layers skip nothing but real positions). One
    operation per cycle whenever the word of its last unmasked byte has arrived (``written``)
    and, for the first operation of a group, ``credit`` is high.

    Lanes. Each lane ``j`` keeps its position in the window as ``(ky, kx, c)``, its byte
    offset from the window's top-left byte and its pixel offset; an operation moves every
    lane ``SIMD`` positions on (one add with at most two carries), a new window puts the lanes
    back to their first positions. Those first positions and the step come from a walker that
    counts through the first ``SIMD`` positions at the start of a layer (:attr:`SETUP_CYCLES`).

    Pipelined for the clock rate: the counters run up to :data:`QUEUE_DEPTH` operations ahead
    of the issue. A generated operation's lane addresses, image positions and in-window tests
    are registered first (stage 1); from those, the queue slot takes its banks' rows, the
    rotation of its lanes, its lane mask and the word it waits for (the last unmasked lane's,
    a priority tree). Each slot's "arrived" flag is refreshed from ``written`` every cycle, so
    the issue decision is a few gates on registers. A word that arrives is seen one cycle
    after ``written`` counts it.

    Without packing (``packing=False``, for small devices) only the plain format is
    generated: an operation is ``SIMD`` channels of one tap, so lane ``j`` is lane 0 one
    channel on, every lane reads the same word (``rot`` is 0) and only lane 0's position is
    kept; there is no walker. The engine refuses packed layers on such a build.

    Parameters
    ----------
    geometry : data.StructLayout
        :func:`geometry_layout`.
    index_width : int
        Width of signed byte indices.
    simd : int
        Lanes.
    depth : int
        Rows of the line buffer.
    weight_depth, channel_groups : int
        Sizes of the weight memory and of the channel-constant memories.
    packing : bool
        Generate packed reductions (else the plain format only).

    Members
    -------
    geometry : ``In(geometry)``
        Per-layer constants, stable from ``start`` to the end of ``busy``.
    start : ``In(1)``
        Start a layer.
    written : ``In(unsigned(index_width))``
        Input words in the line buffer so far.
    credit : ``In(1)``
        Room for one more output group downstream.
    valid, first, last, final : ``Out(1)``
        An operation is issued this cycle; first/last of its output group; last group of the
        layer.
    mask : ``Out(simd)``
        Lanes that take part (the others' activation is the zero point).
    rows : ``Out(data.ArrayLayout(range(depth), simd))``
        The line-buffer row each bank reads for the operation.
    rot : ``Out(range(simd))``
        Lane ``j`` of the operation is bank ``(j + rot) mod SIMD``'s byte.
    weight_addr : ``Out(range(weight_depth))``, ``og`` : ``Out(range(channel_groups))``
        The operation's weight word (counted from 0 at each output position) and output
        group: registers, counted by the issue.
    waiting : ``Out(1)``
        The next operation waits for an input word (input-starved).
    busy : ``Out(1)``
        From the cycle after ``start`` until the last operation is issued.
    protect : ``Out(signed(index_width))``
        Word of the oldest byte that may still be read (see :class:`LineBuffer`), registered.
    """


    def __init__(self, *, geometry, index_width, simd, depth, weight_depth, channel_groups,
                 packing=True):
        if not isinstance(packing, bool):
            raise TypeError(f"packing must be a bool, not {packing!r}")
        self.layout = geometry
        self.index_width = index_width
        self.simd = simd
        self.depth = depth
        self.packing = packing
        #: Operations generated ahead of the issue: the loop from a generated operation to
        #: its issue (the stage-1 registers, with packing the stage-2 registers, the queue
        #: slot, the refreshed ``arrived`` flag, the occupancy count) is four cycles long
        #: (five with packing), so as many slots keep one operation a cycle.
        self.QUEUE_DEPTH = 5 if packing else 4
        #: Cycles from ``start`` to the first generated operation: the walker's SIMD + 1
        #: steps from the second cycle after ``start``, then the lane increments and carries in
        #: registers (without packing: no walker, the per-layer registers only).
        self.SETUP_CYCLES = simd + 6 if packing else 3
        super().__init__({
            "geometry": In(geometry), "start": In(1),
            "written": In(unsigned(index_width)), "credit": In(1),
            "valid": Out(1), "first": Out(1), "last": Out(1), "final": Out(1),
            "mask": Out(simd),
            "rows": Out(data.ArrayLayout(range(depth), simd)),
            "rot": Out(range(simd)),
            "weight_addr": Out(range(weight_depth)), "og": Out(range(channel_groups)),
            "waiting": Out(1), "busy": Out(1),
            "protect": Out(signed(index_width)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        simd = self.simd
        sbits = (simd - 1).bit_length()
        coord = g.x_start.shape()
        index = signed(self.index_width)
        count = g.kh.shape()
        row_bits = (self.depth - 1).bit_length()

        def reg(name, expr, shape=None):
            """A per-layer constant derived from the geometry, registered every cycle."""
            sig = Signal(shape if shape is not None else Shape.cast(expr.shape()), name=name)
            m.d.sync += sig.eq(expr)
            return sig

        # --- per-layer constants, settled in registers during the setup --------------------
        x_start, y_start = g.x_start, g.y_start
        x_start_bytes, y_start_bytes = g.x_start_bytes, g.y_start_bytes
        bytes0 = reg("bytes0", x_start_bytes + y_start_bytes, index)
        xs_sw = reg("xs_sw", x_start + g.stride_w)
        ys_sh = reg("ys_sh", y_start + g.stride_h)
        # The next column (row) after bx (by) is the last one iff bx > x_limit - 2 * stride_w.
        x_last = reg("x_last", g.x_limit - (g.stride_w << 1))
        y_last = reg("y_last", g.y_limit - (g.stride_h << 1))
        y_top = reg("y_top", -(g.stride_h << 1))
        first_col_end = reg("first_col_end", xs_sw > g.x_limit)
        first_row_end = reg("first_row_end", ys_sh > g.y_limit)
        first_row_flag = reg("first_row_flag", ys_sh > 0)
        # Lane step corrections: a carry out of the channel (column) position.
        carry_c = g.col_step - g.pixel_bytes
        carry_k = g.row_step - g.kw_col_step
        if self.packing:
            adj_c = reg("adj_c", carry_c, index)
            adj_k = reg("adj_k", carry_k, index)
            kw_dw = reg("kw_dw", g.keff_w - 1 + g.dil_w, coord)
        else:
            # Plain format: the last word of a pixel, the last tap of a row, and the byte
            # offset's increments to the next word, the next tap and the next row of taps.
            c_last = reg("c_last", g.pixel_bytes - simd, g.pixel_bytes.shape())
            kw_last = reg("kw_last", g.kw - 1, count)
            inc_tap = reg("inc_tap", carry_c + simd, index)
            # (Two levels, as `first_col_end`: one adder after a register.)
            inc_tap_row = reg("inc_tap_row", inc_tap + reg("carry_k", carry_k, index), index)

        # --- the walker: the first SIMD positions of a window, one a cycle -----------------
        # A lane past the window's last position has ky up to Kh + SIMD.
        lane_layout = data.StructLayout({"c": g.pixel_bytes.shape(), "kx": count,
                                         "ky": unsigned(count.width + sbits + 1),
                                         "off": index, "yo": coord, "xo": coord})
        nlanes = simd if self.packing else 1
        setup = Signal(range(self.SETUP_CYCLES + 1))
        with m.If(setup != 0):
            m.d.sync += setup.eq(setup - 1)
        if self.packing:
            init = [Signal(lane_layout, name=f"lane_init{j}") for j in range(simd)]
            step = Signal(lane_layout)       # the walker after SIMD positions: a lane's step
            walk = Signal(lane_layout)
            walk_sel = Signal(simd + 1)     # one-hot: the lane (or, last, the step) it writes
            # Its wraps are registers, set a step ahead from comparisons with per-layer
            # registers (the last channel and column less one), and its offset increments are
            # registers too: each walker field is an adder or a constant under a registered
            # choice. It starts two cycles after `start`, when those registers have settled.
            c_wrap, k_wrap = Signal(name="c_wrap"), Signal(name="k_wrap")
            c_last_m1 = reg("c_last_m1", g.pixel_bytes - 2,
                            signed(g.pixel_bytes.shape().width + 1))
            kx_last_m1 = reg("kx_last_m1", g.kw - 2, signed(count.width + 1))
            c_one = reg("c_one", g.pixel_bytes == 1)
            kx_one = reg("kx_one", g.kw == 1)
            inc_col = reg("inc_col", adj_c + 1, index)
            inc_row = reg("inc_row", adj_c + adj_k + 1, index)
            with m.If(setup == self.SETUP_CYCLES):
                m.d.sync += [c_wrap.eq(c_one), k_wrap.eq(kx_one)]
            walking = (setup > 4) & (setup < self.SETUP_CYCLES)     # SIMD + 1 steps
            with m.If(walking):
                for j in range(simd):
                    with m.If(walk_sel[j]):
                        m.d.sync += init[j].eq(walk)
                with m.If(walk_sel[simd]):
                    m.d.sync += step.eq(walk)
                m.d.sync += walk_sel.eq(walk_sel << 1)
                with m.If(~c_wrap):
                    m.d.sync += [walk.c.eq(walk.c + 1), walk.off.eq(walk.off + 1),
                                 c_wrap.eq(walk.c == c_last_m1)]
                with m.Elif(~k_wrap):
                    m.d.sync += [walk.c.eq(0), walk.kx.eq(walk.kx + 1),
                                 walk.off.eq(walk.off + inc_col),
                                 walk.xo.eq(walk.xo + g.dil_w),
                                 c_wrap.eq(c_one), k_wrap.eq(walk.kx == kx_last_m1)]
                with m.Else():
                    m.d.sync += [walk.c.eq(0), walk.kx.eq(0), walk.ky.eq(walk.ky + 1),
                                 walk.off.eq(walk.off + inc_row), walk.xo.eq(0),
                                 walk.yo.eq(walk.yo + g.dil_h),
                                 c_wrap.eq(c_one), k_wrap.eq(kx_one)]
        if self.packing:
            # From the walker's step, registered (settled one cycle after the step): where a
            # lane's channel (column) position carries, and each field's increment for each
            # pair of carries (index cc * 2 + kc; cc: out of the channel, kc: out of the row
            # of taps). A lane keeps the carries of its next step in registers (look-ahead):
            # after a step with carries k, its next carries are comparisons of its present
            # channel and column with thresholds that take k's increments into account. The
            # channel carry is looked ahead two steps (`cc2`, the carry of the step after the
            # next), so that the column carry's threshold is chosen by registers only.
            cbits, kbits = g.pixel_bytes.shape(), count
            c_thr = reg("c_thr", g.pixel_bytes - step.c, cbits)
            kx_thr0 = reg("kx_thr0", g.kw - step.kx, kbits)
            kx_thr1 = reg("kx_thr1", g.kw - step.kx - 1, kbits)
            c_inc = [reg(f"c_inc{cc}", step.c - (g.pixel_bytes if cc else 0),
                         signed(cbits.width + 1)) for cc in (0, 1)]
            kx_inc = [reg(f"kx_inc{k}", step.kx + (k >> 1) - (g.kw if k & 1 else 0),
                          signed(kbits.width + 1)) for k in range(4)]
            ky_inc = [reg(f"ky_inc{kc}", step.ky + kc, step.ky.shape()) for kc in (0, 1)]
            off_inc = [reg(f"off_inc{k}", step.off + (adj_c if k >> 1 else 0)
                           + (adj_k if k & 1 else 0), index) for k in range(4)]
            yo_inc = [reg(f"yo_inc{kc}", step.yo + (g.dil_h if kc else 0), coord)
                      for kc in (0, 1)]
            xo_inc = [reg(f"xo_inc{k}", step.xo + (g.dil_w if k >> 1 else 0)
                          - (kw_dw if k & 1 else 0), coord) for k in range(4)]
            def clamped(name, value, width):
                """A threshold for ``x >= value`` with ``0 <= x < 2**width``, clamped to
                ``0 .. 2**width`` in a register of its own: the lanes compare unsigned
                numbers of ``width + 1`` bits, one short carry chain each."""
                top = 1 << width
                return reg(name, Mux(value < 0, 0, Mux(value > top, top, value)),
                           unsigned(width + 1))
            # cc2' = c + c_inc[cc] + c_inc[cc2] >= c_thr; kc' = kx + kx_inc[k] >= (kx_thr1
            # if cc' else kx_thr0), where cc' is cc2.
            c_next2_thr = [[clamped(f"c_next2_thr{cc}_{cc2}",
                                    reg(f"c_sum_thr{cc}_{cc2}", c_thr - c_inc[cc] - c_inc[cc2],
                                        signed(cbits.width + 3)), cbits.width)
                            for cc2 in (0, 1)] for cc in (0, 1)]
            kx_next_thr = [[clamped(f"kx_next_thr{k}_{n}",
                                    reg(f"kx_sum_thr{k}_{n}", (kx_thr1 if n else kx_thr0)
                                        - kx_inc[k], signed(kbits.width + 2)), kbits.width)
                            for n in (0, 1)] for k in range(4)]
            # The carries of each lane's first step in a window.
            init_cc = [reg(f"init_cc{j}", init[j].c + step.c >= g.pixel_bytes)
                       for j in range(simd)]
            init_kc = [reg(f"init_kc{j}", Mux(init_cc[j], init[j].kx >= kx_thr1,
                                              init[j].kx >= kx_thr0)) for j in range(simd)]
            # (The channel after the first step registered first: one adder, then one
            # comparison, a level each.)
            init_c1 = [reg(f"init_c1_{j}", init[j].c + Mux(init_cc[j], c_inc[1], c_inc[0]),
                           signed(cbits.width + 2)) for j in range(simd)]
            init_cc2 = [reg(f"init_cc2{j}", init_c1[j] >= c_thr) for j in range(simd)]
        init_now = Signal()                 # registered: the last setup cycle
        m.d.sync += init_now.eq((setup == 2) & ~self.start)

        # --- loop counters: generate one operation per `adv` --------------------------------
        gen_busy = Signal()                 # operations remain to be generated
        occupancy = Signal(range(self.QUEUE_DEPTH + 1))    # generated, not yet issued
        filled = Signal(range(self.QUEUE_DEPTH + 1))       # of those, in the queue
        # `adv`: generate an operation this cycle, a register (it enables most of the
        # generator's registers), computed a cycle ahead from the next `gen_busy` and
        # `occupancy`.
        adv = Signal()
        layer_done = Signal()               # `adv` on the layer's last operation

        lanes = [Signal(lane_layout, name=f"lane{j}") for j in range(nlanes)]
        if self.packing:        # the carries of each lane's next step (see above)
            lane_cc = [Signal(name=f"lane{j}_cc") for j in range(simd)]
            lane_cc2 = [Signal(name=f"lane{j}_cc2") for j in range(simd)]
            lane_kc = [Signal(name=f"lane{j}_kc") for j in range(simd)]
        op_rem = Signal(g.ops.shape())
        op_end = Signal()
        og_rem = Signal(count)
        og_end = Signal()
        col_end, row_end = Signal(), Signal()
        row_flag = Signal()                 # by + stride_h > 0: protect moves along the row
        first = Signal()
        bx, by = Signal(coord, name="bx"), Signal(coord, name="by")
        # Byte addresses: the window's top-left byte, the window row's first window; bx_b and
        # by_b the window's column and row offsets (x * Cp, y * P).
        win, wrow, bx_b, by_b = (Signal(index, name=n) for n in ("win", "wrow", "bx_b", "by_b"))
        prot_top, prot_left = Signal(index), Signal(index)
        clamp = lambda v: Mux(v < 0, 0, v)

        def reset_lanes():
            if self.packing:
                m.d.sync += [lane.eq(lane_init) for lane, lane_init in zip(lanes, init)]
                m.d.sync += [lane_cc[j].eq(init_cc[j]) for j in range(simd)]
                m.d.sync += [lane_cc2[j].eq(init_cc2[j]) for j in range(simd)]
                m.d.sync += [lane_kc[j].eq(init_kc[j]) for j in range(simd)]
            else:       # plain format: lane 0 at the window's first position, all zero
                m.d.sync += lanes[0].eq(0)

        # The loop levels that move on with this operation, each one AND of registers (flat
        # enables, not a chain of nested conditions).
        step_op = adv & ~op_end                             # the next operation of a window
        new_window = adv & op_end                           # the window's last: a new group
        next_og = new_window & ~og_end
        new_pixel = new_window & og_end                     # its last group: a new position
        next_col = new_pixel & ~col_end
        new_row = new_pixel & col_end
        next_row = new_row & ~row_end
        m.d.comb += layer_done.eq(new_row & row_end)
        with m.If(adv):
            m.d.sync += first.eq(0)
        with m.If(step_op):
            m.d.sync += [op_rem.eq(op_rem - 1), op_end.eq(op_rem == 2)]
            if self.packing:
                # A lane's carries out of the channel and the column position, as
                # comparisons of its own registers with per-layer thresholds, and its
                # fields' increments, precomputed for each pair of carries: a comparison,
                # a multiplexer and one adder deep.
                for lane, cc, cc2, kc in zip(lanes, lane_cc, lane_cc2, lane_kc):
                    sel = Cat(kc, cc)
                    choose = lambda incs: Mux(sel[1], Mux(sel[0], incs[3], incs[2]),
                                              Mux(sel[0], incs[1], incs[0]))
                    cc2_next = Mux(cc, Mux(cc2, lane.c >= c_next2_thr[1][1],
                                           lane.c >= c_next2_thr[1][0]),
                                   Mux(cc2, lane.c >= c_next2_thr[0][1],
                                       lane.c >= c_next2_thr[0][0]))
                    kc_next = Mux(cc2, choose([lane.kx >= t[1] for t in kx_next_thr]),
                                  choose([lane.kx >= t[0] for t in kx_next_thr]))
                    m.d.sync += [cc.eq(cc2), cc2.eq(cc2_next), kc.eq(kc_next),
                        lane.c.eq(lane.c + Mux(cc, c_inc[1], c_inc[0])),
                        lane.kx.eq(lane.kx + choose(kx_inc)),
                        lane.ky.eq(lane.ky + Mux(kc, ky_inc[1], ky_inc[0])),
                        lane.off.eq(lane.off + choose(off_inc)),
                        lane.yo.eq(lane.yo + Mux(kc, yo_inc[1], yo_inc[0])),
                        lane.xo.eq(lane.xo + choose(xo_inc)),
                    ]
            else:
                # Plain format: the same steps with the carries as equalities on
                # registers (the last word of a pixel, the last tap of a row) and the
                # byte offset's three possible increments precomputed: one adder deep.
                lane = lanes[0]
                cc = lane.c == c_last
                kc = cc & (lane.kx == kw_last)
                m.d.sync += [
                    lane.c.eq(Mux(cc, 0, lane.c + simd)),
                    lane.kx.eq(Mux(kc, 0, lane.kx + cc)),
                    lane.ky.eq(lane.ky + kc),
                    lane.off.eq(lane.off + Mux(kc, inc_tap_row, Mux(cc, inc_tap, simd))),
                    lane.yo.eq(lane.yo + Mux(kc, g.dil_h, 0)),
                    lane.xo.eq(Mux(kc, 0, lane.xo + Mux(cc, g.dil_w, 0))),
                ]
        with m.If(new_window):
            m.d.sync += [op_rem.eq(g.ops), op_end.eq(g.ops == 1), first.eq(1)]
            reset_lanes()
        with m.If(next_og):
            m.d.sync += [og_rem.eq(og_rem - 1), og_end.eq(og_rem == 2)]
        with m.If(new_pixel):
            m.d.sync += [og_rem.eq(g.cout_groups), og_end.eq(g.cout_groups == 1)]
        with m.If(next_col):
            nxt = win + g.stride_w_bytes
            nxt_bx_b = bx_b + g.stride_w_bytes
            m.d.sync += [
                win.eq(nxt), bx.eq(bx + g.stride_w),
                bx_b.eq(nxt_bx_b), col_end.eq(bx > x_last),
                prot_left.eq(Mux(row_flag, clamp(nxt_bx_b), 0)),
            ]
        with m.If(new_row):
            m.d.sync += [bx.eq(x_start), bx_b.eq(x_start_bytes),
                         col_end.eq(first_col_end), prot_left.eq(0)]
        with m.If(next_row):
            nxt = wrow + g.stride_h_bytes
            nxt_by_b = by_b + g.stride_h_bytes
            m.d.sync += [
                wrow.eq(nxt), win.eq(nxt),
                by.eq(by + g.stride_h), by_b.eq(nxt_by_b),
                row_end.eq(by > y_last), row_flag.eq(by > y_top),
                prot_top.eq(clamp(nxt_by_b)),
            ]

        with m.If(init_now):
            m.d.sync += [
                first.eq(1),
                op_rem.eq(g.ops), op_end.eq(g.ops == 1),
                og_rem.eq(g.cout_groups), og_end.eq(g.cout_groups == 1),
                bx.eq(x_start), by.eq(y_start), bx_b.eq(x_start_bytes), by_b.eq(y_start_bytes),
                win.eq(bytes0), wrow.eq(bytes0),
                col_end.eq(first_col_end), row_end.eq(first_row_end), row_flag.eq(first_row_flag),
                prot_top.eq(0), prot_left.eq(0),        # the start bytes are never positive
            ]
            reset_lanes()

        # --- stage 1: the operation the counters point at, registered -----------------------
        # Each lane's byte address, image position and in-window test, and the operation's
        # fields, one cycle after `adv`: the queue's inputs start from registers. The weight
        # word and the output-channel group are not queued: the issue counts them (below),
        # from `pixel_end`, the operation that ends its output position's last group.
        op_layout = data.StructLayout({
            "rows": data.ArrayLayout(unsigned(max(row_bits, 1)), simd), "rot": range(simd),
            "mask": simd, "need": index, "protect": index,
            "first": 1, "last": 1, "pixel_end": 1, "final": 1,
        })
        s1_valid = Signal()
        s1 = Signal(op_layout, name="s1")   # the fields below; rows, rot, mask, need later
        m.d.sync += [
            s1_valid.eq(adv),
            s1.protect.eq((prot_top + prot_left) >> sbits),
            s1.first.eq(first), s1.last.eq(op_end), s1.pixel_end.eq(op_end & og_end),
            s1.final.eq(og_end & col_end & row_end),
        ]
        a1 = [Signal(index, name=f"addr{j}") for j in range(nlanes)]
        if self.packing:
            # The lanes' image positions, registered; stage 2 registers their tests.
            iy1 = [Signal(coord, name=f"iy{j}") for j in range(nlanes)]
            ix1 = [Signal(coord, name=f"ix{j}") for j in range(nlanes)]
            kin1 = Signal(nlanes)           # the lane's tap and channel are in the window
            for j, lane in enumerate(lanes):
                m.d.sync += [a1[j].eq(win + lane.off), iy1[j].eq(by + lane.yo),
                             ix1[j].eq(bx + lane.xo),
                             kin1[j].eq((lane.ky < g.kh) & (lane.c < g.in_channels))]
            lane_in = [kin1[j] & (iy1[j] >= 0) & (iy1[j] < g.height) & (ix1[j] >= 0)
                       & (ix1[j] < g.width) for j in range(nlanes)]
        else:
            # Without a stage 2, the lane's whole test is registered (its position's sum and
            # comparisons before the register, not between stage 1 and the queue).
            lane, in1 = lanes[0], Signal(name="in1")
            iy, ix = by + lane.yo, bx + lane.xo
            m.d.sync += [a1[0].eq(win + lane.off),
                         in1.eq((lane.ky < g.kh) & (iy >= 0) & (iy < g.height) & (ix >= 0)
                                & (ix < g.width))]
            lane_in = [in1]

        inside = Signal(simd)
        if self.packing:
            # Stage 2: the lanes' in-window tests, registered with the addresses.
            q_valid, q_op = Signal(), Signal(op_layout, name="s2")
            a2 = [Signal(index, name=f"addr2_{j}") for j in range(simd)]
            m.d.sync += [q_valid.eq(s1_valid), q_op.eq(s1), inside.eq(Cat(*lane_in))]
            m.d.sync += [a2[j].eq(a1[j]) for j in range(simd)]
            # The word the operation waits for: that of its last unmasked byte (the bytes of
            # the unmasked lanes grow with the lane), a balanced priority tree.
            def last_inside(lo, hi):
                if hi - lo == 1:
                    return inside[lo], a2[lo]
                mid = (lo + hi) // 2
                any_lo, a_lo = last_inside(lo, mid)
                any_hi, a_hi = last_inside(mid, hi)
                return any_lo | any_hi, Mux(any_hi, a_hi, a_lo)
            need = last_inside(0, simd)[1]
            # Lane j reads bank (rot + j) mod SIMD, so bank b serves lane (b - rot) mod SIMD.
            lane_rows = [a[sbits:sbits + row_bits] for a in a2]
            if sbits:
                rot = a2[0][:sbits]
                bank_rows = rotate(lane_rows, (-rot)[:sbits])
            else:
                rot, bank_rows = Const(0, 1), lane_rows
        else:
            q_valid, q_op = s1_valid, s1
            # One word per operation, channels c .. c + SIMD - 1 of one tap: lane j is inside
            # if its tap is and c + j < Cin, j below the channels left from c (registered).
            chans = Signal(simd, name="chans1")
            m.d.sync += [chans[j].eq(g.in_channels - lanes[0].c > j) for j in range(simd)]
            m.d.comb += inside.eq(Mux(lane_in[0], chans, 0))
            need = a1[0]
            rot = Const(0, 1)
            bank_rows = [a1[0][sbits:sbits + row_bits]] * simd

        # --- queue of generated operations ----------------------------------------------------
        # A shift queue: the oldest operation is always in slot 0, so the issue reads
        # registers (no multiplexer on a read pointer, whose select nets fanned out to every
        # bit of the line buffer's bank addresses), and each slot chooses between keeping its
        # operation, taking the next slot's and taking a new one.
        slots = [Signal(op_layout, name=f"op{k}") for k in range(self.QUEUE_DEPTH)]
        arrived = [Signal(name=f"arrived{k}") for k in range(self.QUEUE_DEPTH)]
        head, head_arrived = slots[0], arrived[0]

        new = Signal(op_layout)
        m.d.comb += [
            new.eq(q_op), new.rot.eq(rot), new.mask.eq(inside), new.need.eq(need >> sbits),
        ]
        for b in range(simd):
            m.d.comb += new.rows[b].eq(bank_rows[b])
        # An operation that reads a word enters the queue not arrived; `arrived` is then
        # refreshed from `written` every cycle (one comparison on registers).
        # A new operation lands behind the last one, one slot lower when the head issues.
        for k in range(self.QUEUE_DEPTH):
            lands = Mux(self.valid, filled == k + 1, filled == k)
            with m.If(q_valid & lands):
                m.d.sync += [slots[k].eq(new), arrived[k].eq(~inside.any())]
            with m.Elif(self.valid):
                if k + 1 < self.QUEUE_DEPTH:
                    m.d.sync += [slots[k].eq(slots[k + 1]),
                                 arrived[k].eq(arrived[k + 1]
                                               | (slots[k + 1].need < self.written))]
            with m.Else():
                m.d.sync += arrived[k].eq(arrived[k] | (slots[k].need < self.written))

        # --- issue -------------------------------------------------------------------------
        queued = Signal()                   # operations in the queue: filled != 0, a register
        m.d.comb += [
            self.valid.eq(queued & head_arrived & (~head.first | self.credit)),
            self.waiting.eq(queued & ~head_arrived),
            self.first.eq(head.first), self.last.eq(head.last), self.final.eq(head.final),
            self.mask.eq(head.mask), self.rot.eq(head.rot),
            self.busy.eq((setup != 0) | gen_busy | (occupancy != 0)),
        ]
        for b in range(simd):
            m.d.comb += self.rows[b].eq(head.rows[b])
        # The issued operation's weight word (from 0 at each output position) and group,
        # counted in registers: the next word, or 0 after a position's last operation; the
        # next group after a group's last operation, or 0 after the position's.
        with m.If(self.valid):
            m.d.sync += self.weight_addr.eq(Mux(head.pixel_end, 0, self.weight_addr + 1))
            with m.If(head.last):
                m.d.sync += self.og.eq(Mux(head.pixel_end, 0, self.og + 1))
        busy_next = Mux(self.start, 0, init_now | (gen_busy & ~layer_done))
        # Room next cycle: an issue makes room (`adv` implies occupancy < QUEUE_DEPTH), else
        # comparisons of the register with constants; `valid` enters last.
        room_next = self.valid | Mux(adv, occupancy != self.QUEUE_DEPTH - 1,
                                     occupancy != self.QUEUE_DEPTH)
        m.d.sync += [gen_busy.eq(busy_next), adv.eq(busy_next & room_next),
                     occupancy.eq(occupancy + adv - self.valid),
                     filled.eq(filled + q_valid - self.valid),
                     queued.eq(Mux(q_valid, 1, filled != Mux(self.valid, 1, 0)))]
        # The oldest operation not issued yet: in the queue, in stage 2, in stage 1, or the
        # counters' next.
        with m.If(queued):
            m.d.sync += self.protect.eq(head.protect)
        if self.packing:
            with m.Elif(q_valid):
                m.d.sync += self.protect.eq(q_op.protect)
        with m.Elif(s1_valid):
            m.d.sync += self.protect.eq(s1.protect)
        with m.Elif(gen_busy):
            m.d.sync += self.protect.eq((prot_top + prot_left) >> sbits)

        with m.If(self.start):
            m.d.sync += [setup.eq(self.SETUP_CYCLES), occupancy.eq(0), filled.eq(0), queued.eq(0),
                         s1_valid.eq(0), self.protect.eq(0), self.weight_addr.eq(0),
                         self.og.eq(0)]
            if self.packing:
                m.d.sync += [walk.eq(0), walk_sel.eq(1), q_valid.eq(0)]
        return m
