"""The convcore conv engine: one layer at a time, configured at run time through registers.

Ports (flat, for the Verilog top; Amaranth's default domain gives ``clk`` and ``rst``):

``s_axis_t{data,valid,ready,last}``
    Input feature map, HWC, in words of ``SIMD`` bytes, ``tlast`` on the final word; int8 or
    uint8 bit patterns. Plain format (the max-pool alone, and convs with ``PACKING.pack``
    0): pixels in raster order, each as ``ceil(Cin / SIMD)`` words (channel ``g*SIMD + i``
    in byte ``i`` of word ``g``; bytes past ``Cin`` are ignored). Packed (``PACKING.pack``):
    the pixels' ``Cin`` bytes back to back, each row ``PACKING.in_row_bytes`` bytes from the
    next (the bytes past ``W * Cin`` ignored), the last word's bytes past the map ignored
    (:mod:`rtl.linebuffer`).
``m_axis_t{data,keep,valid,ready,last}``
    Output feature map, HWC: output pixels in raster order, each as ``ceil(Cout / PE)`` words
    of ``PE`` lanes. Requantized output: lane ``p`` in byte ``p`` (``tkeep`` marks the bytes
    of real channels, ``p < Cout - og*PE``); raw int32 output: lane ``p`` in bytes
    ``4p .. 4p+3``, little-endian (``tkeep`` likewise). So the kept bytes, in order, are
    exactly the NumPy array ``y.transpose(1, 2, 0).tobytes()`` of the CHW result.
    ``tlast`` on the final word. A max-pooled map (fused or alone) has the requantized
    format, with ``Cout`` the pooled map's channels (``Cin`` when the pool runs alone) and
    bytes past them 0.
``s_axis_acc_t{data,valid,ready,last}``
    Partial sums, used only when ``QUANT.acc_in`` is set: one word per output word of the
    conv, in the raw output format (``PE`` int32 lanes, lane ``p`` in bytes ``4p .. 4p+3``),
    added to the accumulators before the bias, the requantization, ReLU and a fused pool;
    ``tlast`` on the final word (otherwise ``STATUS.tlast_error``). The host feeds a pass's raw
    output back here to accumulate input-channel groups or sub-kernels of a layer larger than
    the engine; the last pass requantizes, so the output bytes are those of one pass.
``s_axis_param_t{data,valid,ready,last}``
    Parameter load stream of ``param_width`` bits (weights, bias, multiplier, shift, weight
    zero point); format in :mod:`rtl.weights`. Accepted at any time, one beat per cycle, also
    while a layer runs: the layer reads its weights from word ``WEIGHT_BASE`` on and its
    channel constants from word ``CHAN_BASE`` on, and the host loads the next layer's into
    other words meanwhile. The host must not overwrite the words the running layer reads
    (nothing checks it).
``s_axil_*``
    AXI4-Lite registers, map in :mod:`rtl.engine_regs`.

Memories (all block-RAM friendly, one read and one write port, registered reads):

- line buffer: ``line_buffer_depth`` words of ``8 * SIMD`` bits, in ``SIMD`` banks of one
  byte (each lane reads its own row). In the plain format a layer fits iff
  ``((Keff_h - 1) * W + Keff_w) * ceil(Cin / SIMD) <= line_buffer_depth`` with
  ``Keff = (K - 1) * dilation + 1`` (``Keff_h - 1`` rows plus one window width; padding is
  never stored); packed, the same span in bytes, ``ceil(((Keff_h - 1) * in_row_bytes +
  Keff_w * Cin) / SIMD) + 1`` words. Default: the largest layer without dilation rounded up
  to a power of two, ``(6 * 224 + 7) * 8 = 10808 -> 16384`` words (1 Mbit) for the default
  configuration;
- weights: ``weight_depth`` words of ``8 * PE * SIMD`` bits, a layer needs
  ``ceil(Cout / PE) * ceil(Kh * Kw * Cp / SIMD)`` words from ``weight_base`` on,
  ``Cp = ceil(Cin / SIMD) * SIMD`` (plain) or ``Cin`` (packed) (default 1024 x 512 bits:
  :data:`rtl.limits.DEFAULT_WEIGHT_DEPTH`, one DP16KD deep; the layer compiler splits a
  larger layer into passes over the output channels);
- per output-channel group: weight zero points (``9 * PE`` bits) and bias, multiplier, shift
  (``69 * PE`` bits), ``channel_depth`` words each (default ``2 * ceil(max_channels / PE)``:
  the largest layer's and the next one's), a layer needs ``ceil(Cout / PE)`` from
  ``chan_base`` on;
- max-pool unit (:mod:`rtl.maxpool`, ``lanes = PE``, ``S = pool_window_slots``,
  ``G = ceil(max_channels / PE)``): partial maxima, never input pixels. Vertical stage
  ``(max_width + max_kernel - 1) * G`` words of ``S * PE * 8`` bits (block RAM), horizontal
  stage ``G`` words of the same width (each at least 2 words). A pool is legal iff
  ``(K - 1) * dilation + 1 <= S * stride`` on both axes (``POOL_WINDOW_SLOTS`` otherwise).
  Default ``S = 2``: every 2x2 stride-2 pool (the lecture's 224x224x64 one, the digits CNN,
  the CIFAR-10 net), 3x3 stride 2 and 2x2 stride 1; ``(224 + 6) * 8 = 1840`` words of 128
  bits = 235,520 bits plus 1,024, about a quarter of the line buffer. 3x3 stride-1 pools need
  ``S = 3`` (353,280 bits), every kernel at any stride ``S = max_kernel``.
  :meth:`ConvEngine.memory_bits` gives every memory's size.

Performance: one MAC operation (PE x SIMD multiply-accumulates) per cycle whenever its input
words have arrived; a window takes ``ceil(Kh * Kw * Cp / SIMD)`` operations, so a packed layer
with few input channels fills the SIMD lanes across taps (3 channels x 5x5: 10 operations of
8 lanes, not 25); output groups follow each other without bubbles, the input stream is written
while the array computes. A start from idle costs the setup (one cycle per two bits of the smaller
operand of each derived product on a shift-and-add multiplier, then the registered checks); a start queued while a layer runs (``STATUS.queued``)
has its setup done meanwhile in a second set of configuration registers and launches the
cycle the running layer ends. Each launch then costs the window generator's setup (SIMD + 7
cycles with packing, its lane walker; 4 without; it starts a cycle after the launch) plus the
time to receive the first window. Strided layers only visit output positions. A fused
max-pool adds a divider computing the conv output size (``coord_width`` cycles, about 12) and
the pool unit's setup (about 7 cycles plus the larger begin pad) to the start, and stalls the
MAC array only when the pool unit flushes windows that end at the right or bottom edge
(padding or ``ceil_mode``); CONV-RELU-POOL costs no pass through the host.

Max pooling (``POOL.pool_mode``, see :mod:`rtl.engine_regs`): ``FUSED`` puts the
:class:`rtl.maxpool.MaxPool` unit between the requantized output words and ``m_axis``, its map
the conv output (height and width from the divider, ``Cout`` channels, the output type);
``ALONE`` feeds it the input words instead (an ONNX MaxPool: no MAC operation, ``MAC_CYCLES``
stays 0, ``STARVED_CYCLES`` counts cycles the engine waited for an input word). Pool lanes are
PE: alone, a :class:`rtl.regroup.Regroup` width converter turns words of SIMD channels into
beats of PE (any power-of-two ratio). Raw int32 output with a fused pool is refused
(``POOL_RAW``: ONNX has no such layer). The pool unit's own refusals (kernel, stride, pads,
dilation, map size, window slots, empty windows) appear as ``POOL_*`` codes in
``STATUS.error`` after the conv's checks passed; a refused layer takes no input and outputs
nothing.

Datapath: :class:`rtl.linebuffer.LineBuffer` (input words, circular, in byte banks) ->
:class:`rtl.linebuffer.WindowGenerator` (one MAC operation per cycle, each lane at its own
position of the window; padding and stride as address arithmetic, lane masks) -> :class:`rtl.mac_array.MacArray` (PE x SIMD) -> a small FIFO of
finished accumulators (the generator holds a credit for every group it starts, so the MAC
pipeline never stalls) -> bias and ``requant_lanes`` :class:`rtl.requantize.Requantize` units
(half the PE lanes at a time by default) gathered into an output word, or the raw accumulators ->
(fused pool) -> ``m_axis``.
"""

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from rtl.axil_regs import AXI4LiteRegisters, subordinate_signature
from rtl.engine_regs import REGMAP, narrow_storage
from rtl.limits import (ENGINE_REFUSALS, ERROR_WIDTH, POOL_ERROR_BASE, EngineError, PoolMode,
                        code_width, engine_params, engine_pool_params, max_row_bytes,
                        stage_checks)
from rtl.linebuffer import LineBuffer, WindowGenerator, geometry_layout, rotate
from rtl.mac_array import MacArray
from rtl.maxpool import MaxPool
from rtl.maxpool import memory_bits as pool_memory_bits
from rtl.regroup import Regroup, regroup_signature
from rtl.requantize import PIPELINE_STAGES, Requantize
from rtl.streams import (ACC_BYTES, ACC_WIDTH, DATA_WIDTH, ZP_WIDTH, axis_members,
                         connect_axis, connect_flat, flat_members, pack, payload_layout)
from rtl.weights import MULT_WIDTH, SHIFT_WIDTH, ParamStore, channel_layout

#: The type of Amaranth's bit slices (not exported by ``amaranth.hdl``): a slice of a signal is
#: a wire.
_SLICE = type(Signal(1)[:1])

__all__ = ["ConvEngine"]


class ConvEngine(wiring.Component):
    """A run-time configurable 2-D convolution engine with a PE x SIMD MAC array.

    Parameters
    ----------
    pe : int
        Output channels per cycle (power of two).
    simd : int
        Input channels per cycle (power of two).
    max_kernel : int
        Largest kernel height and width.
    max_width, max_height : int
        Largest input feature map.
    max_channels : int
        Largest input and output channel count.
    weight_depth : int, optional
        Weight memory words of ``pe * simd`` bytes; default: the largest layer,
        ``ceil(max_channels/pe) * max_kernel**2 * ceil(max_channels/simd)``, at most
        :data:`rtl.limits.DEFAULT_WEIGHT_DEPTH` (1024) words.
    channel_depth : int, optional
        Channel-constant memory words (one per output-channel group); default
        ``2 * ceil(max_channels/pe)``, the constants of two layers.
    param_width : int, optional
        Bits of ``s_axis_param_tdata``: a power of two from 32 to the weight word
        ``8 * pe * simd``; default the weight word, at most 512 (one word per beat on the
        default engine).
    line_buffer_depth : int, optional
        Line buffer words of ``simd`` bytes, a power of two; default
        :func:`rtl.linebuffer.line_buffer_depth` (the largest layer without dilation).
    max_stride, max_dilation : int
        Largest stride and dilation (1..15).
    fifo_depth : int
        Finished output groups buffered before the MAC array waits for ``m_axis``.
    requant_lanes : int, optional
        Requantization units (power of two dividing ``pe``; default ``pe / 2``,
        :data:`rtl.limits.DEFAULT_REQUANT_SHARING`, at least 1). With fewer than PE, the
        PE lanes of an output word are requantized in ``pe / requant_lanes`` passes: fewer
        multipliers, and the MAC array waits only when a group takes fewer cycles
        (``Kh * Kw * ceil(Cin / SIMD)``) than that.
    requant_iterative : bool
        Requantization units that multiply over several cycles on one 16 x 16 multiplier
        (``Requantize(iterative=True)``: one DSP block each instead of four, a lane every 10
        cycles; for small devices). Default False: one lane per cycle per unit.
    counter_width : int
        Bits of the performance counters (1..64; default 64). Narrower counters wrap at
        ``2**counter_width``; the 64-bit registers read their value with the upper bits 0.
    pool_window_slots : int
        Max-pool windows open at once per axis (1..max_kernel; default 2): the width of the
        pool memories in windows (see Memories above). 0: no max-pool unit (small devices);
        any pool setting is refused with ``POOL_NO_UNIT``.
    pool_max_stride : int, optional
        Largest max-pool stride (1..255; default ``max_kernel``). The pool's other limits
        are the engine's: kernel ``max_kernel``, dilation ``max_dilation``, map
        ``max_height`` x ``max_width`` (a fused pool's map is the conv output, which padding
        can make wider than the input: ``POOL_SIZE`` if it exceeds them), ``max_channels``.
    narrow_registers : bool
        Configuration registers keep only the bits of their largest legal value plus a
        sticky "too large" bit (:func:`rtl.engine_regs.narrow_storage`): an illegal value is
        still refused with the same ``STATUS.error``, but reads back changed (the low bits,
        upper bits all set). For small devices; default False (every bit kept).
    no_rw_check : bool
        The parameter memories leave a read of a word in the cycle it is written open
        (:class:`rtl.weights.ParamStore` ``no_rw_check``): less logic around iCE40 block
        RAMs, same behaviour (the host never writes the words a running layer reads).
        Default False.
    weight_slice_bits : int, optional
        The weight memory is built as memories of this many bits side by side (a power of
        two up to the weight word of ``8 * pe * simd`` bits; default the whole word:
        :class:`rtl.weights.ParamStore` ``weight_slice_bits``). For iCE40: 2, so that each
        slice is a 2048 x 2 block RAM and no multiplexer follows the blocks. Same behaviour.
    dsp : str
        How the MAC array multiplies (:data:`rtl.mac_array.DSPS`): ``"generic"`` (default:
        vendor-free Verilog, the synthesis tool picks the DSP blocks) or ``"ecp5"`` (ECP5
        ``MULT18X18D`` primitives with their registers, for ECP5 synthesis only); the same
        for the requantizers' partial products.
    bram : str
        How the line buffer's banks, the weight and zero-point memories and the max-pool
        unit's vertical memory are built (:data:`rtl.bram.BRAMS`): ``"generic"`` (default:
        an inferred memory and a fabric register) or ``"ecp5"`` (DP16KD primitives with
        their output register, for ECP5 synthesis only).

    Members
    -------
    s_axis_tdata : ``In(8 * simd)``; s_axis_tvalid, s_axis_tlast : ``In(1)``; s_axis_tready : ``Out(1)``
    m_axis_tdata : ``Out(32 * pe)``; m_axis_tkeep : ``Out(4 * pe)``;
    m_axis_tvalid, m_axis_tlast : ``Out(1)``; m_axis_tready : ``In(1)``
    s_axis_param_tdata : ``In(param_width)``; s_axis_param_tvalid, s_axis_param_tlast : ``In(1)``;
    s_axis_param_tready : ``Out(1)``
    s_axil_* : the AXI4-Lite subordinate of :data:`rtl.engine_regs.REGMAP`.
    """

    def __init__(self, **params):
        params = engine_params(**params)
        self.params = params
        for name, value in params.items():
            setattr(self, name, value)
        pe, simd, max_kernel = params["pe"], params["simd"], params["max_kernel"]
        max_width, max_height = params["max_width"], params["max_height"]
        max_stride, max_dilation = params["max_stride"], params["max_dilation"]
        self.cin_groups = cin_groups = -(-params["max_channels"] // simd)
        self.cout_groups = cout_groups = -(-params["max_channels"] // pe)

        max_pad = (max_kernel - 1) * max_dilation
        span = max(max_width, max_height) + 2 * max_pad + 2 * max_stride
        self.coord_width = span.bit_length() + 2
        # Byte indices of the input stream (rtl.linebuffer): rows of up to max_row_bytes,
        # windows that start up to a padded kernel above and left of the map.
        self.index_width = (span * max_row_bytes(SimpleNamespace(**params))).bit_length() + 2
        self.count_width = max(max_kernel, cin_groups, cout_groups).bit_length() + 1

        regs_sig = subordinate_signature(REGMAP)
        super().__init__({
            **axis_members("s_axis", payload_layout(DATA_WIDTH * simd), In),
            **axis_members("m_axis", payload_layout(ACC_WIDTH * pe), Out,
                           keep_width=ACC_BYTES * pe),
            **axis_members("s_axis_param", payload_layout(params["param_width"]), In),
            **axis_members("s_axis_acc", payload_layout(ACC_WIDTH * pe), In),
            **flat_members(regs_sig, "s_axil"),
        })

    @property
    def config(self):
        """The hardware configuration as a dict (for build keys and drivers): every parameter
        of :func:`rtl.limits.engine_params`, defaults and derived sizes filled in."""
        return dict(self.params)

    @property
    def pool_params(self):
        """Parameters of the :class:`rtl.maxpool.MaxPool` unit (lanes = PE, the engine's
        limits for kernel, map size, channels and dilation)."""
        return engine_pool_params(self.params)

    def geometry_layout(self):
        """The window generator's per-layer constants (:func:`rtl.linebuffer.geometry_layout`),
        each as wide as this engine's largest legal value."""
        return geometry_layout(
            coord_width=self.coord_width, index_width=self.index_width,
            count_width=self.count_width, simd=self.simd,
            channel_width=(self.cin_groups * self.simd).bit_length(),
            ops_width=(self.max_kernel ** 2 * self.cin_groups).bit_length())

    def memory_bits(self):
        """Bits of each memory (see the module docstring): ``line_buffer``, ``weights``,
        ``channel_constants``, ``pool_horizontal``, ``pool_vertical``."""
        pool = pool_memory_bits(**self.pool_params)
        return {
            "line_buffer": self.line_buffer_depth * DATA_WIDTH * self.simd,
            "weights": self.weight_depth * DATA_WIDTH * self.pe * self.simd,
            "channel_constants": self.channel_depth * (channel_layout(self.pe).size
                                                     + ZP_WIDTH * self.pe),
            "pool_horizontal": pool["horizontal"],
            "pool_vertical": pool["vertical"],
        }

    def elaborate(self, platform):
        m = Module()
        pe, simd = self.pe, self.simd

        storage = narrow_storage(
            max_kernel=self.max_kernel, max_width=self.max_width, max_height=self.max_height,
            max_channels=self.max_channels, max_stride=self.max_stride,
            max_dilation=self.max_dilation, pool_window_slots=self.pool_window_slots,
            pool_max_stride=self.pool_max_stride, weight_depth=self.weight_depth,
            channel_depth=self.channel_depth, packing=self.packing) \
            if self.narrow_registers else None
        m.submodules.regs = regs = AXI4LiteRegisters(REGMAP, storage=storage)
        connect_flat(m, self, regs.bus, "s_axil")
        f = regs.fields
        m.d.comb += [
            f.hw_pe.eq(pe), f.hw_simd.eq(simd), f.hw_max_kernel.eq(self.max_kernel),
            f.hw_max_stride.eq(self.max_stride), f.hw_max_dilation.eq(self.max_dilation),
            f.hw_max_height.eq(self.max_height), f.hw_max_width.eq(self.max_width),
            f.hw_max_channels.eq(self.max_channels), f.hw_weight_depth.eq(self.weight_depth),
            f.hw_line_buffer_depth.eq(self.line_buffer_depth),
            f.hw_pool_window_slots.eq(self.pool_window_slots),
            f.hw_pool_max_stride.eq(self.pool_max_stride),
            f.hw_param_width.eq(self.param_width), f.hw_channel_depth.eq(self.channel_depth),
            f.hw_packing.eq(self.packing), f.hw_queued_starts.eq(self.queued_starts),
        ]

        # --- configuration: latched at start, set up, then copied to the running layer -------
        # A start latches the registers into the *next* set, whose checks and derived constants
        # are computed while the previous layer may still run (STATUS.queued); when that layer
        # ends, the next set is copied into the *active* set that the datapath reads. Built
        # without queued starts there is one set: a start is taken only from idle.
        # A narrow field (narrow_registers) is latched as its kept bits and its sticky "too
        # large" bit above them (the field's top bit): the same value when it fits, one above
        # every legal value when not, so that every check refuses it as it refuses the
        # field's own value, with comparisons and sums as narrow as the legal range.
        cfg_names = [fl.name for fl in REGMAP.fields if fl.access == "rw"]
        kept = {name: Cat(f[name][:storage[name]], f[name][-1])
                if storage and name in storage else f[name] for name in cfg_names}
        cn = {name: Signal(len(kept[name]), name=f"next_{name}") for name in cfg_names}
        latch = Signal()
        with m.If(latch):
            m.d.sync += [cn[name].eq(kept[name]) for name in cfg_names]
        fused_n, alone_n = Signal(), Signal()
        m.d.comb += [fused_n.eq(cn["pool_mode"] == PoolMode.FUSED),
                     alone_n.eq(cn["pool_mode"] == PoolMode.ALONE)]
        dn, steps = self._derive(m, cn, alone_n)
        range_error, late_error = self._check(m, cn, dn, fused_n, alone_n)

        take = Signal()                 # the next set becomes the active one
        if self.queued_starts:
            c = {name: Signal(cn[name].shape(), name=f"cfg_{name}") for name in cfg_names}
            d = {}
            for name, value in dn.items():
                d[name] = Signal(Value.cast(value).shape(), name=f"act_{name}")
            with m.If(take):
                m.d.sync += [c[name].eq(cn[name]) for name in cfg_names]
                m.d.sync += [d[name].eq(dn[name]) for name in dn]
        else:
            c, d = cn, dn

        pool_mode = c["pool_mode"]
        fused, alone = Signal(), Signal()
        # Partial sums are read (QUANT.acc_in) unless the pool runs alone; without a pool
        # unit no pool runs alone.
        acc_in = Signal()
        acc_in_n = cn["acc_in"] & ~alone_n if self.pool_window_slots else cn["acc_in"]
        if self.queued_starts:
            # Decoded with the next set, copied with it: registers for the datapath's muxes.
            with m.If(take):
                m.d.sync += [fused.eq(fused_n), alone.eq(alone_n), acc_in.eq(acc_in_n)]
        else:
            m.d.comb += [fused.eq(pool_mode == PoolMode.FUSED),
                         alone.eq(pool_mode == PoolMode.ALONE), acc_in.eq(acc_in_n)]
        pool_on = fused | alone
        # Without a max-pool unit (pool_window_slots 0) a pool layer is refused before it runs:
        # the datapath below sees neither mode (the checks and the control still do).
        fused_dp, alone_dp = (fused, alone) if self.pool_window_slots else (Const(0), Const(0))
        pool_on_dp = fused_dp | alone_dp

        m.submodules.pool = pool = MaxPool(**self.pool_params, bram=self.bram)

        # --- control ---------------------------------------------------------------------
        busy, running, done = Signal(), Signal(), Signal()
        queued = Signal()               # a started layer is set up or waits: start is ignored
        tlast_error = Signal()
        tlast_sticky = Signal()
        step = Signal(len(steps))       # one-hot: the derived product being computed
        launch = Signal()
        arm = Signal()                  # the cycle after `take`: the active set is valid
        layer_end = Signal()
        error_q = Signal(ERROR_WIDTH)
        setup_error = Signal(ERROR_WIDTH)
        setup_idle, setup_ready = Signal(), Signal()
        run_idle = Signal()
        accept = Signal()               # a start is taken (one set: only from idle)
        m.d.comb += accept.eq(f.start & (run_idle if not self.queued_starts else 1))
        m.d.comb += [
            f.busy.eq(busy), f.running.eq(running), f.done.eq(done), f.error.eq(error_q),
            f.tlast_error.eq(tlast_sticky), f.queued.eq(queued),
            busy.eq(~setup_idle | ~run_idle),
            queued.eq(~setup_idle),
        ]
        # A start from idle clears the status and the counters; a queued start (while a layer
        # runs) keeps them, so a batch of layers run back to back is counted as a whole.
        fresh = latch & run_idle
        # The sources of tlast_error hold it until their layer's restart: the status keeps
        # their rising edges, so that a start from idle (a refused one too) clears it.
        tlast_seen = Signal()
        m.d.sync += tlast_seen.eq(tlast_error)
        with m.If(tlast_error & ~tlast_seen):
            m.d.sync += tlast_sticky.eq(1)
        with m.If(fresh):
            m.d.sync += tlast_sticky.eq(0)
        # One shift-and-add multiplier (no DSP block, two short carry chains) computes the
        # per-layer products one after the other, after the range checks have bounded their
        # operands (see _derive): `mul_a` shifts left and `mul_b` right, two bits a cycle,
        # until no bit is left.
        # A step's operands load in the cycle the step before it writes its result, so a step
        # may use the results of all earlier steps but that one (`operands` checks this). The
        # step is one-hot, and the next step's operands an AND-OR of the candidates.
        mul_width = max(len(dest) for dest, _, _, _ in steps)
        mul_a = Signal(mul_width)
        mul_b = Signal(max(b.shape().width for _, _, b, _ in steps))
        mul_acc = Signal(mul_width)
        mul_more = Signal()     # mul_b has bits above its lowest two: a register, set with it

        def operands(k):
            _, a, b, add = steps[k]
            add = Value.cast(add)
            used = [sig for v in (a, b, add) for sig in v._rhs_signals()]
            if k and any(sig is steps[k - 1][0] for sig in used):
                raise AssertionError(f"derived product {k} uses the one before it")
            if not k and any(not any(sig is field for field in cn.values()) for sig in used):
                raise AssertionError("the first derived product uses more than latched fields")
            return a, b, add

        # The next step's operands: each distinct candidate value (an expression registered
        # every cycle, so that its logic is off this path) ANDed with a select register, then
        # ORed. `sel` holds, for each distinct candidate, whether the step after the current
        # one reads it; it is set with `step` (from the step it replaces), so the selection is
        # the AND-OR of registers only.
        operand_regs = {}

        def registered(value, k):
            value = Value.cast(value)
            if isinstance(value, (Signal, Const)) or (isinstance(value, _SLICE)
                                                       and isinstance(value.value, Signal)):
                return value            # no logic to take off the path
            key = id(value)
            if key not in operand_regs:
                # A registered expression lags by a cycle: it may not read the results of the
                # two steps before the one that loads it.
                recent = [steps[j][0] for j in (k - 1, k - 2) if j >= 0]
                if any(sig is r for sig in value._rhs_signals() for r in recent):
                    raise AssertionError(f"derived product {k}'s operand {value!r} uses a "
                                         "result of the two steps before it")
                sig = Signal(value.shape(), name=f"mul_cand{len(operand_regs)}")
                m.d.sync += sig.eq(value)
                operand_regs[key] = (value, sig)
            return operand_regs[key][1]

        later = range(1, len(steps))
        cands = [[], [], []]            # per operand: [(value, steps that read it)]
        for k in later:
            for pos, v in enumerate(operands(k)):
                v = registered(v, k)
                for entry in cands[pos]:
                    if entry[0] is v:
                        entry[1].append(k)
                        break
                else:
                    cands[pos].append((v, [k]))
        sels = [[Signal(name=f"mul_sel{pos}_{i}") for i in range(len(c))]
                for pos, c in enumerate(cands)]

        def set_selects(step_next):
            """`sel` for the step after ``step_next`` (a one-hot value of `step`)."""
            m.d.sync += [sel.eq(Cat(*(step_next[k - 1] for k in ks)).any())
                         for pos in range(3) for sel, (_, ks) in zip(sels[pos], cands[pos])]

        def load_next():
            """The operands of the step after the current one."""
            values = []
            for pos in range(3):
                terms = [Mux(sel, v, 0) for sel, (v, _) in zip(sels[pos], cands[pos])]
                while len(terms) > 1:           # a balanced OR tree
                    terms = [terms[i] | terms[i + 1] if i + 1 < len(terms) else terms[i]
                             for i in range(0, len(terms), 2)]
                values.append(terms[0] if terms else Const(0))
            a, b, add = values
            # Whether `b` has bits above its lowest two, from each candidate's own test.
            more = Cat(*(sel & Value.cast(v)[2:].any()
                         for sel, (v, _) in zip(sels[1], cands[1])))
            m.d.sync += [mul_a.eq(a), mul_b.eq(b), mul_acc.eq(add), mul_more.eq(more.any())]

        # The fused pool's map is the conv output: (padded size - Keff) // stride + 1 on each
        # axis, by a restoring divider (the checks bound the numerators to `div_bits` bits),
        # computed with the next set and copied with it. Built without a max-pool unit (which
        # refuses every pool), there is no divider.
        div_bits = self.coord_width
        stride_bits = self.max_stride.bit_length()
        div_count = Signal(range(div_bits))
        div_load, div_step = Signal(), Signal()
        conv_out = {"h": Const(0), "w": Const(0)}
        for a, limit, pad_begin, stride in (("h", dn["y_limit"], cn["pad_top"], cn["stride_h"]),
                                            ("w", dn["x_limit"], cn["pad_left"], cn["stride_w"])
                                            ) if self.pool_window_slots else ():
            num = Signal(div_bits, name=f"div_num_{a}")
            rem = Signal(stride_bits, name=f"div_rem_{a}")
            quo = Signal(div_bits, name=f"div_quo_{a}")
            trial = Signal(stride_bits + 1, name=f"div_trial_{a}")
            fits = Signal(name=f"div_fits_{a}")
            divisor = stride[:stride_bits]
            m.d.comb += [trial.eq(Cat(num[-1], rem)), fits.eq(trial >= divisor)]
            with m.If(div_load):
                m.d.sync += [num.eq(limit + pad_begin), rem.eq(0), quo.eq(0)]
            with m.If(div_step):
                m.d.sync += [num.eq(num << 1), rem.eq(Mux(fits, trial - divisor, trial)),
                             quo.eq(Cat(fits, quo[:-1]))]
            out = Signal(div_bits + 1, name=f"conv_out_{a}")
            if self.queued_starts:
                with m.If(take):
                    m.d.sync += out.eq(quo + 1)
            else:
                m.d.comb += out.eq(quo + 1)
            conv_out[a] = out

        # Setup of the next layer: checks, derived constants, the fused pool's map.
        with m.FSM(name="setup") as setup_fsm:
            with m.State("IDLE"):
                with m.If(accept):
                    m.d.sync += [done.eq(0), error_q.eq(0)]
                    m.next = "LATCHED"
            with m.State("LATCHED"):
                # The products are computed while the range checks settle (they are read in
                # VERIFY): a refused layer's are never used. The first product's operands are
                # latched fields (`load` checks), the later ones' may be per-layer registers,
                # which see the latched configuration from now on.
                a, b, add = operands(0)
                m.d.sync += [mul_a.eq(a), mul_b.eq(b), mul_acc.eq(add), step.eq(1),
                             mul_more.eq(Value.cast(b)[2:] != 0)]
                set_selects(Const(1, len(steps)))
                m.next = "DERIVE"
            with m.State("DERIVE"):
                # Two bits of mul_b a cycle: adds mul_a and 2 * mul_a for its set bits; with the
                # last ones, writes the result and loads the next step's operands (which never
                # use the result just written).
                partial = mul_acc + Mux(mul_b[0], mul_a, 0) + Mux(mul_b[1], mul_a << 1, 0)
                with m.If(mul_more):
                    m.d.sync += [mul_acc.eq(partial), mul_a.eq(mul_a << 2),
                                 mul_b.eq(mul_b >> 2), mul_more.eq(mul_b[4:] != 0)]
                with m.Else():
                    m.d.sync += step.eq(step << 1)
                    set_selects((step << 1)[:len(steps)])
                    result = partial
                    for k, (dest, _, _, _) in enumerate(steps):
                        with m.If(step[k]):
                            m.d.sync += dest.eq(result)
                    load_next()
                    with m.If(step[-1]):
                        m.next = "DERIVED"
            with m.State("DERIVED"):
                m.next = "CHECKED"
            with m.State("CHECKED"):
                # The late checks' tests see the last product in DERIVED, their first failing
                # one is registered in CHECKED and read in VERIFY.
                m.next = "VERIFY"
            with m.State("VERIFY"):
                with m.If(range_error != EngineError.NONE):
                    m.d.sync += setup_error.eq(range_error)
                    m.next = "REFUSED"
                with m.Elif(late_error != EngineError.NONE):
                    m.d.sync += setup_error.eq(late_error)
                    m.next = "REFUSED"
                with m.Elif(fused_n if self.pool_window_slots else Const(0)):
                    m.d.comb += div_load.eq(1)
                    m.d.sync += div_count.eq(div_bits - 1)
                    m.next = "DIVIDE"
                with m.Else():
                    m.next = "READY"
            with m.State("DIVIDE"):
                # The conv output size, the fused pool's input map (one quotient bit a cycle).
                m.d.comb += div_step.eq(1)
                m.d.sync += div_count.eq(div_count - 1)
                with m.If(div_count == 0):
                    m.next = "READY"
            with m.State("READY"):
                with m.If(take):
                    m.next = "IDLE"
            with m.State("REFUSED"):
                # Reported once the running layer (if any) has ended.
                with m.If(run_idle):
                    m.d.sync += [error_q.eq(setup_error), done.eq(1)]
                    m.next = "IDLE"

        # The running layer; the next one is taken as soon as it is set up and this one ends.
        # (Status and hand-over signals are decoded from the states outside the FSMs: Icarus
        # would leave a process's outputs undefined until the first change of its inputs.)
        with m.FSM(name="run") as run_fsm:
            with m.State("IDLE"):
                with m.If(setup_ready):
                    m.next = "ARM"
            with m.State("ARM"):
                with m.If(pool_on):
                    m.next = "POOL_START"
                with m.Else():
                    m.d.comb += launch.eq(1)
                    m.d.sync += running.eq(1)
                    m.next = "RUN"
            with m.State("POOL_START"):
                m.d.comb += pool.start.eq(1)
                m.next = "POOL_WAIT"
            with m.State("POOL_WAIT"):
                with m.If(pool.running):
                    m.d.comb += launch.eq(1)
                    m.d.sync += running.eq(1)
                    m.next = "RUN"
                with m.Elif(pool.done):
                    m.d.sync += [error_q.eq(POOL_ERROR_BASE + pool.error), done.eq(1)]
                    m.next = "IDLE"
            with m.State("RUN"):
                with m.If(layer_end):
                    m.d.sync += running.eq(0)
                    with m.If(setup_ready):
                        m.next = "ARM"
                    with m.Else():
                        with m.If(setup_idle):
                            m.d.sync += done.eq(1)
                        m.next = "IDLE"
        m.d.comb += [
            setup_idle.eq(setup_fsm.ongoing("IDLE")), setup_ready.eq(setup_fsm.ongoing("READY")),
            run_idle.eq(run_fsm.ongoing("IDLE")),
            latch.eq(setup_idle & accept),
            take.eq(setup_ready & (run_idle | (run_fsm.ongoing("RUN") & layer_end))),
            arm.eq(run_fsm.ongoing("ARM")),
        ]

        # --- parameters --------------------------------------------------------------------
        # Loads are accepted at any time; the running layer reads from its base addresses on.
        m.submodules.params = params = ParamStore(
            pe=pe, simd=simd, weight_depth=self.weight_depth, channel_depth=self.channel_depth,
            param_width=self.param_width, read_register=True, no_rw_check=self.no_rw_check,
            bram=self.bram if not self.no_rw_check else "generic",
            weight_slice_bits=self.weight_slice_bits)
        connect_axis(m, self, "s_axis_param", params.param)
        m.d.comb += [
            params.clear.eq(fresh),
            f.load_error.eq(params.load_error),
        ]
        # The base addresses, narrowed to the memories' address bits (a layer runs only if
        # base + words fits its memory: WEIGHTS, CONSTANTS).
        weight_base = c["weight_base"][:len(params.weight_addr)]
        chan_base = c["chan_base"][:len(params.chan_addr)]

        # --- line buffer and window generator ----------------------------------------------
        count_width = self.index_width - 1
        # Built without packing, every lane reads the same row and the bytes need no
        # rotation: the line buffer's read address is delayed by two registers instead of its
        # data and the rotated word (log2(depth) flip-flops instead of 16 * SIMD), and the
        # array takes the banks' bytes as they come (see the MAC array below).
        delay_address = not self.packing
        m.submodules.lb = lb = LineBuffer(simd=simd, depth=self.line_buffer_depth,
                                          count_width=count_width,
                                          read_register=not delay_address, bram=self.bram)
        geometry = self.geometry_layout()
        gen_start = Signal()
        m.submodules.gen = gen = WindowGenerator(
            geometry=geometry, index_width=self.index_width, simd=simd,
            depth=self.line_buffer_depth, weight_depth=self.weight_depth,
            channel_groups=self.cout_groups, packing=self.packing)
        for name, _field in geometry:
            m.d.comb += getattr(gen.geometry, name).eq(d[name])
        m.d.comb += [
            lb.s.payload.data.eq(self.s_axis_tdata), lb.s.payload.last.eq(self.s_axis_tlast),
            lb.s.valid.eq(self.s_axis_tvalid & ~alone_dp),
            lb.enable.eq(running & ~alone_dp), lb.total.eq(d["total_in"]),
            lb.restart.eq(launch),
            lb.protect.eq(gen.protect), lb.protect_off.eq(~gen.busy),
            gen.start.eq(gen_start), gen.written.eq(lb.written),
        ]
        # The generator starts a cycle after the launch (its start resets registers all over
        # it: a register in front of that fan-out); it waits for the line buffer's rows anyway.
        m.d.sync += gen_start.eq(launch & ~alone_dp)
        read_addr = gen.rows
        for k in range(2 if delay_address else 0):
            late_addr = Signal.like(gen.rows, name=f"read_addr_late{k}")
            m.d.sync += late_addr.eq(read_addr)
            read_addr = late_addr
        m.d.comb += lb.read_addr.eq(read_addr)
        # The generator counts weight words from 0 and groups from 0; the bases are latched
        # configuration, constant while the layer runs. The sums are registered (one register
        # before the wide fan-out to the memories' blocks), as the line buffer's bytes are
        # after their rotation below, so weight and zero-point data keep their alignment with
        # the line buffer's.
        # With rotation the line buffer's bytes take one more register on their way to the
        # array (`banks_q` below), and the weight addresses one more to match.
        x_late = 0 if delay_address else 1
        w_addr = Signal.like(params.weight_addr, name="w_addr")
        wzp_addr = Signal.like(params.wzp_addr, name="wzp_addr")
        m.d.sync += [w_addr.eq(gen.weight_addr + weight_base), wzp_addr.eq(gen.og + chan_base)]
        for k in range(x_late):
            w_addr_late = Signal.like(w_addr, name=f"w_addr_late{k}")
            wzp_addr_late = Signal.like(wzp_addr, name=f"wzp_addr_late{k}")
            m.d.sync += [w_addr_late.eq(w_addr), wzp_addr_late.eq(wzp_addr)]
            w_addr, wzp_addr = w_addr_late, wzp_addr_late
        m.d.comb += [params.weight_addr.eq(w_addr), params.wzp_addr.eq(wzp_addr)]

        # --- MAC array -------------------------------------------------------------------------
        m.submodules.mac = mac = MacArray(pe, simd, dsp=self.dsp)
        # The line buffer's and the weights' read data come three cycles after the generator's
        # operation (the registered weight address or the registered rotation, then two for the
        # registered block RAM reads), four with `x_late`: the array sees each operation two
        # (three) cycles late.
        for name in ("valid", "first", "last", "final", "mask"):
            late = getattr(gen, name)
            for k in range(2 + x_late):
                late_k = Signal.like(late, name=f"mac_{name}{k}")
                m.d.sync += late_k.eq(late)
                late = late_k
            m.d.comb += getattr(mac, name).eq(late)
        # The banks' bytes back in lane order: lane j is bank (j + rot) mod SIMD. (With the
        # read address delayed, lane j is bank j and the bytes come in the array's cycle.)
        banks = [lb.read_data[i] for i in range(simd)]
        x_word = Signal(DATA_WIDTH * simd, name="x_word")      # the rotated bytes, registered
        if delay_address:
            m.d.comb += x_word.eq(Cat(*banks))
        else:
            # The block RAMs of the banks lie in rows across the device and the array by its
            # DSP blocks: a register between them (`banks_q`) halves the longest wires.
            banks_q = [Signal.like(b, name=f"banks_q{i}") for i, b in enumerate(banks)]
            m.d.sync += [q.eq(b) for q, b in zip(banks_q, banks)]
            banks = banks_q
            rot = gen.rot
            for k in range(2 + x_late):
                rot_late = Signal.like(gen.rot, name=f"rot_late{k}")
                m.d.sync += rot_late.eq(rot)
                rot = rot_late
            m.d.sync += x_word.eq(Cat(*rotate(banks, rot)) if simd > 1 else banks[0])
        m.d.comb += [
            mac.x_zp.eq(c["x_zero_point"].as_signed()), mac.x_unsigned.eq(c["x_unsigned"]),
            mac.w_unsigned.eq(c["w_unsigned"]),
            mac.x.eq(x_word),
            mac.w.eq(params.weight_data), mac.w_zp.eq(params.wzp_data),
        ]

        # --- accumulator FIFO with credits ------------------------------------------------------
        # An entry: the PE accumulators of a finished group and whether it ends the layer.
        entry = data.StructLayout({"acc": ACC_WIDTH * pe, "final": 1})
        # With the pipelined requantizers the FIFO's output is a register (SyncFIFOBuffered),
        # so that no path runs from its read pointer through its LUT RAM into the head's
        # adders. Its inner FIFO alone holds `fifo_depth` groups (depth + 1): its `w_rdy`
        # counts only the inner level, and the MAC array's writes never wait (the credits
        # admit at most `fifo_depth` groups).
        if self.requant_iterative:
            fifo = SyncFIFO(width=entry.size, depth=self.fifo_depth)
        else:
            fifo = SyncFIFOBuffered(width=entry.size, depth=self.fifo_depth + 1)
        m.submodules.fifo = fifo
        fifo_out = data.View(entry, fifo.r_data)
        inflight = Signal(range(self.fifo_depth + 1))
        credit = Signal(init=1)
        pop = Signal()
        issue_group = gen.valid & gen.first
        m.d.comb += [
            fifo.w_data.eq(pack(entry, acc=mac.acc, final=mac.acc_final)),
            fifo.w_en.eq(mac.acc_valid),
            fifo.r_en.eq(pop),
            gen.credit.eq(credit),
        ]
        m.d.sync += inflight.eq(inflight + issue_group - pop)
        # `credit` (inflight < fifo_depth) is a register, its next value chosen among the
        # three possible counts' tests, so that the issue decision reads no comparator.
        m.d.sync += credit.eq(Mux(issue_group == pop, inflight < self.fifo_depth,
                                  Mux(pop, inflight - 1 < self.fifo_depth,
                                      inflight + 1 < self.fifo_depth)))
        fifo_acc, fifo_final = fifo_out.acc, fifo_out.final
        # Partial sums (QUANT.acc_in): one s_axis_acc word per output word, in the raw output
        # format, added to the accumulators; the FIFO head waits for it and takes it with pop.
        head_valid = Signal()
        acc_last_error = Signal()
        chan_held = Signal()        # the head group's channel constants are read (below)
        m.d.comb += [head_valid.eq(fifo.r_rdy & chan_held
                                   & (~acc_in | self.s_axis_acc_tvalid)),
                     self.s_axis_acc_tready.eq(pop & acc_in)]
        with m.If(pop & acc_in & (self.s_axis_acc_tlast != fifo_final)):
            m.d.sync += acc_last_error.eq(1)
        with m.If(launch):
            m.d.sync += acc_last_error.eq(0)
        psum = Mux(acc_in, self.s_axis_acc_tdata, 0)

        def last_group(name, step):
            """Whether the output-channel group of a stream of words (0 from `launch` on, the
            next one on each `step`) is the layer's last: a register set a word ahead, so that
            no adder or compare with cout_groups lies after it. Counted down (`left`: groups
            after the current one), so that the next `last` is a compare of a register with a
            constant, not of a sum."""
            left = Signal(range(self.cout_groups), name=name)
            last = Signal(name=f"{name}_last")
            with m.If(step):
                with m.If(last):
                    m.d.sync += [left.eq(d["cout_groups"] - 1), last.eq(d["cout_groups"] == 1)]
                with m.Else():
                    m.d.sync += [left.eq(left - 1), last.eq(left == 1)]
            with m.If(launch):
                m.d.sync += [left.eq(d["cout_groups"] - 1), last.eq(d["cout_groups"] == 1)]
            return last

        # Channel constants of the group at the FIFO head: `params.chan_data`, loaded once
        # after the launch and then on every pop with the next group's. Its read address
        # `chan_rd` is a register, the group's word in the channel memory (from chan_base on,
        # one group ahead of the head), so that the pop decides only the read enable: no
        # logic lies between the address and the memory, whose address lines reach every
        # one of its LUT RAM cells. A layer's constants must be in the memory when it
        # launches (the host loads them before the start).
        chan_rd = Signal(range(self.channel_depth))
        chan_load = Signal()
        og_rd_last = last_group("og_rd", chan_load)
        m.d.comb += [chan_load.eq(pop | ~chan_held),
                     params.chan_addr.eq(chan_rd), params.chan_en.eq(chan_load)]
        with m.If(chan_load):
            m.d.sync += [chan_rd.eq(Mux(og_rd_last, chan_base, chan_rd + 1)), chan_held.eq(1)]
        with m.If(launch):
            m.d.sync += [chan_rd.eq(chan_base), chan_held.eq(0)]
        # The FIFO head, its bias and partial sum added, waits with its channel constants in
        # a register stage (loaded whenever it is empty or being taken: one word a cycle; a
        # register stage `pre` before it and a skid register behind it, below), so
        # that no path runs from the FIFO's memory through the adders to the requantizers'
        # multipliers or to m_axis. Iterative requantizers (small devices) read their
        # operands over several cycles and take them with the last (the head, its constants
        # and its partial sum hold until popped): there only the sums are registered, every
        # cycle, and valid the cycle after the head came and was not popped (a word at most
        # every other cycle, which those requantizers never reach).
        chan = params.chan_data
        head = data.StructLayout({"acc": data.ArrayLayout(signed(ACC_WIDTH), pe),
                                  "chan": chan.shape(), "final": 1})
        h = Signal(head, name="head")
        h_valid, h_taken = Signal(), Signal()
        if self.requant_iterative:
            head_sums = [Signal(signed(ACC_WIDTH), name=f"head_sum{p}") for p in range(pe)]
            m.d.sync += [h_valid.eq(head_valid & ~pop),
                         *(q.eq(fifo_acc.word_select(p, ACC_WIDTH).as_signed() + chan[p].bias
                                + psum.word_select(p, ACC_WIDTH).as_signed())
                           for p, q in enumerate(head_sums))]
            m.d.comb += [h.chan.eq(chan), h.final.eq(fifo_final), pop.eq(h_taken),
                         *(h.acc[p].eq(head_sums[p]) for p in range(pe))]
        else:
            # The popped word first enters `pre` with its bias added and its partial sum
            # (zero unless QUANT.acc_in) beside it: one adder, and the mode's one register
            # reaches only the partial sum's register inputs. From `pre` the partial sum is
            # added (one adder) into the head stage, behind which a skid register (`skid`)
            # waits: `pre` moves on whenever the skid is empty, and the FIFO pops whenever
            # `pre` is empty or moves on (registers), so that the pop, and the FIFO's
            # pointers, the credits and the constants' read address after it, read no
            # handshake of the requantizers or of m_axis. The head loads from the skid first;
            # one word a cycle throughout.
            pre_layout = data.StructLayout({"acc": data.ArrayLayout(signed(ACC_WIDTH), pe),
                                            "psum": data.ArrayLayout(signed(ACC_WIDTH), pe),
                                            "chan": chan.shape(), "final": 1})
            pre, pre_valid = Signal(pre_layout, name="pre"), Signal()
            fresh_pre = Signal(pre_layout, name="pre_next")
            m.d.comb += [fresh_pre.chan.eq(chan), fresh_pre.final.eq(fifo_final),
                         *(fresh_pre.acc[p].eq(fifo_acc.word_select(p, ACC_WIDTH).as_signed()
                                               + chan[p].bias) for p in range(pe)),
                         *(fresh_pre.psum[p].eq(psum.word_select(p, ACC_WIDTH))
                           for p in range(pe))]
            fresh_head = Signal(head, name="head_next")
            m.d.comb += [fresh_head.chan.eq(pre.chan), fresh_head.final.eq(pre.final),
                         *(fresh_head.acc[p].eq(pre.acc[p] + pre.psum[p]) for p in range(pe))]
            skid, skid_valid = Signal(head, name="skid"), Signal()
            pre_take = Signal()
            m.d.comb += [pre_take.eq(pre_valid & ~skid_valid),
                         pop.eq(head_valid & (~pre_valid | ~skid_valid))]
            with m.If(~pre_valid | pre_take):
                m.d.sync += [pre.eq(fresh_pre), pre_valid.eq(pop)]
            with m.If(~h_valid | h_taken):
                m.d.sync += [h.eq(Mux(skid_valid, skid, fresh_head)),
                             h_valid.eq(skid_valid | pre_take), skid_valid.eq(0)]
            with m.Elif(~skid_valid):
                m.d.sync += [skid.eq(fresh_head), skid_valid.eq(pre_take)]
        biased = [h.acc[p] for p in range(pe)]

        # --- output: requantized or raw ------------------------------------------------------
        # `requant_lanes` Requantize units take the PE lanes of a FIFO entry in `passes`
        # slices; their results are gathered into `q_word`, which m_axis then takes.
        raw = c["raw_output"]
        lanes_r = self.requant_lanes
        passes = pe // lanes_r
        slice_in = Signal(range(passes))        # slice of the FIFO head being requantized
        slice_out = Signal(range(passes))       # slice of the word being gathered
        gathered = Signal(DATA_WIDTH * pe)
        # The gathered words wait in a FIFO, so that no path runs from m_axis_tready or the
        # pool's input through the requantizers. Pipelined requantizers never stall: a word
        # enters them only with a place reserved in that FIFO (`q_space` counts the free
        # places, less the words in flight), and the FIFO holds enough words to cover the
        # round trip (the pipeline, the FIFO's write and the count's update), so that a word
        # can enter every cycle. No enable of the requantizers' pipelines then depends on a
        # handshake. The iterative requantizers (small devices) keep the handshake and a
        # two-word FIFO (its `w_rdy` a register).
        stall_free = not self.requant_iterative
        q_depth = PIPELINE_STAGES + 4 if stall_free else 2
        qw = data.StructLayout({"data": DATA_WIDTH * pe, "last": 1})
        # With the stall-free requantizers the FIFO's output is a register (its `r_rdy` too),
        # so that the pool's input decisions start from registers.
        q_fifo_type = SyncFIFOBuffered if stall_free else SyncFIFO
        m.submodules.q_fifo = q_fifo = q_fifo_type(width=qw.size, depth=q_depth)
        q_out = data.View(qw, q_fifo.r_data)
        q_word, q_last, q_valid = q_out.data, q_out.last, q_fifo.r_rdy
        q_admit = Signal()      # a place for the word in the requantizers is reserved or free
        rqs = []
        for r in range(lanes_r):
            rq = Requantize(acc_width=ACC_WIDTH, mult_width=MULT_WIDTH, shift_width=SHIFT_WIDTH,
                            out_width=DATA_WIDTH, iterative=self.requant_iterative,
                            dsp=self.dsp)
            m.submodules[f"rq{r}"] = rq
            rqs.append(rq)
            lanes = [j * lanes_r + r for j in range(passes)]
            pick = (lambda values: Array(values)[slice_in]) if passes > 1 else \
                (lambda values: values[0])
            m.d.comb += [
                rq.i.valid.eq(h_valid & ~raw & q_admit),
                rq.i.payload.acc.eq(pick([biased[p] for p in lanes])),
                rq.i.payload.multiplier.eq(pick([h.chan[p].multiplier for p in lanes])),
                rq.i.payload.shift.eq(pick([h.chan[p].shift for p in lanes])),
                rq.i.payload.zero_point.eq(c["y_zero_point"].as_signed()),
                rq.i.payload.relu.eq(c["relu"]),
                rq.i.payload.is_unsigned.eq(c["y_unsigned"]),
                rq.i.payload.last.eq(h.final & (slice_in == passes - 1)),
            ]
        rq_take = Signal()
        q_ready = Signal()          # the requantized word is taken (by m_axis or the pool)
        m.d.comb += q_ready.eq(Mux(fused_dp, pool.i.ready, self.m_axis_tready))
        last_slice_out = slice_out == passes - 1
        m.d.comb += q_fifo.r_en.eq(q_ready)
        if stall_free:
            q_space = Signal(range(q_depth + 1), init=q_depth)
            reserve = rqs[0].i.valid & (slice_in == 0)
            m.d.sync += q_space.eq(q_space - reserve + (q_ready & q_valid))
            # Admitted on the previous cycle's count (`q_room`, a register): at most one place
            # was reserved since, so one is still free; the FIFO holds one word more for it.
            q_room = Signal(init=1)
            m.d.sync += q_room.eq(q_space > 1)
            m.d.comb += [rq_take.eq(rqs[0].o.valid), q_admit.eq((slice_in != 0) | q_room)]
        else:
            m.d.comb += [rq_take.eq(rqs[0].o.valid & (~last_slice_out | q_fifo.w_rdy)),
                         q_admit.eq(1)]
        for rq in rqs:
            m.d.comb += rq.o.ready.eq(rq_take)
        word_next = Signal.like(gathered)
        m.d.comb += word_next.eq(gathered)
        for j in range(passes):
            with m.If(slice_out == j):
                for r, rq in enumerate(rqs):
                    m.d.comb += word_next.word_select(j * lanes_r + r, DATA_WIDTH).eq(
                        rq.o.payload.data)
        with m.If(rq_take):
            m.d.sync += [gathered.eq(word_next), slice_out.eq(slice_out + 1)]
            with m.If(last_slice_out):
                m.d.comb += [q_fifo.w_en.eq(1),
                             q_fifo.w_data.eq(pack(qw, data=word_next,
                                                   last=rqs[0].o.payload.last))]
                m.d.sync += slice_out.eq(0)
        rq_fed = rqs[0].i.valid & rqs[0].i.ready
        with m.If(rq_fed):
            m.d.sync += slice_in.eq(Mux(slice_in == passes - 1, 0, slice_in + 1))
        with m.If(launch):
            m.d.sync += [slice_in.eq(0), slice_out.eq(0)]
        m.d.comb += h_taken.eq(Mux(raw, h_valid & self.m_axis_tready,
                                   rq_fed & (slice_in == passes - 1)))

        # --- max-pool: after requantization (fused), or of the input words (alone) ----------
        # Alone, the input words of SIMD channels are regrouped into beats of PE lanes. Built
        # without a max-pool unit, no pool runs alone: the width converter is not elaborated,
        # its ports stay plain signals (its outputs 0).
        if self.pool_window_slots:
            m.submodules.regroup = rg = Regroup(simd, pe, self.max_channels)
        else:
            rg = regroup_signature(simd, pe, self.max_channels).create()
        alone_in = Signal()
        m.d.comb += alone_in.eq(alone_dp & running & pool.running)
        m.d.comb += [
            rg.i.payload.data.eq(self.s_axis_tdata), rg.i.payload.last.eq(self.s_axis_tlast),
            rg.i.valid.eq(self.s_axis_tvalid & alone_in),
            self.s_axis_tready.eq(Mux(alone_dp, rg.i.ready & alone_in, lb.s.ready)),
            rg.in_groups.eq(d["cin_groups"]), rg.out_groups.eq(d["cout_groups"]),
            rg.restart.eq(arm),
            # The width converter reports a last that its packing would hide.
            tlast_error.eq(lb.tlast_error | (pool_on_dp & pool.last_error)
                           | (alone_dp & rg.last_error) | acc_last_error),
            rg.o.ready.eq(pool.i.ready & alone_dp),
            pool.i.valid.eq(Mux(fused_dp, q_valid, rg.o.valid & alone_dp)),
            pool.i.payload.data.eq(Mux(fused_dp, q_word, rg.o.payload.data)),
            pool.i.payload.last.eq(Mux(fused_dp, q_last, rg.o.payload.last)),
            pool.o.ready.eq(self.m_axis_tready),
        ]
        pcfg = pool.config
        m.d.comb += [
            pcfg.height.eq(Mux(fused, conv_out["h"], c["in_height"])),
            pcfg.width.eq(Mux(fused, conv_out["w"], c["in_width"])),
            pcfg.channels.eq(Mux(fused, c["out_channels"], c["in_channels"])),
            pcfg.is_unsigned.eq(Mux(fused, c["y_unsigned"], c["x_unsigned"])),
            pcfg.ceil_mode.eq(c["pool_ceil_mode"]),
        ]
        for name in ("kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w",
                     "pad_top", "pad_left", "pad_bottom", "pad_right"):
            m.d.comb += getattr(pcfg, name).eq(c[f"pool_{name}"])

        out_handshake = self.m_axis_tvalid & self.m_axis_tready
        og_m_last = last_group("og_m", out_handshake)
        lanes_m = Signal(range(pe + 1))
        m.d.comb += lanes_m.eq(Mux(og_m_last, d["last_out_lanes"], pe))
        keep_raw = Cat((Const(p) < lanes_m).replicate(ACC_BYTES) for p in range(pe))
        keep_q = Cat(Const(p) < lanes_m for p in range(pe))
        # Plain multiplexers rather than an if/else process: Icarus would leave the outputs
        # undefined until the first change of a process input.
        pool_word = pool.o.payload.data.as_value()
        m.d.comb += [
            self.m_axis_tvalid.eq(Mux(pool_on_dp, pool.o.valid, Mux(raw, h_valid, q_valid))),
            self.m_axis_tdata.eq(Mux(pool_on_dp, pool_word, Mux(raw, Cat(*biased), q_word))),
            self.m_axis_tlast.eq(Mux(pool_on_dp, pool.o.payload.last,
                                     Mux(raw, h.final, q_last))),
            self.m_axis_tkeep.eq(Mux(raw & ~pool_on_dp, keep_raw, keep_q)),
        ]
        out_done = Signal()
        with m.If(out_handshake & self.m_axis_tlast):
            m.d.sync += out_done.eq(1)
        with m.If(launch):
            m.d.sync += out_done.eq(0)
        # A pooled layer ends when the pool unit is idle again (its last word sent), so that
        # the next start finds it ready.
        # (Whether every input word was written is registered: a cycle late, off the path from
        # the line buffer's counter to the configuration hand-over.)
        all_written = Signal()
        m.d.sync += all_written.eq(lb.written == d["total_in"])
        m.d.comb += layer_end.eq(out_done & (alone_dp | all_written)
                                 & ~(pool_on_dp & pool.busy))

        # --- performance counters ----------------------------------------------------------
        counters = {
            "cycles": busy,
            "mac_cycles": gen.valid,
            "starved_cycles": running & Mux(alone_dp, self.s_axis_tready & ~self.s_axis_tvalid,
                                            gen.waiting),
            "stalled_cycles": busy & self.m_axis_tvalid & ~self.m_axis_tready,
        }
        for name, event in counters.items():
            # The event is registered and counted a cycle later (its logic is off the
            # counter's enable); a layer's last event lands before any read that follows
            # `done`, and no event precedes a start from idle.
            count = Signal(self.counter_width, name=name)
            counted = Signal(name=f"{name}_event")
            m.d.comb += f[name].eq(count)
            m.d.sync += counted.eq(event)
            with m.If(counted):
                m.d.sync += count.eq(count + 1)
            with m.If(fresh):
                m.d.sync += count.eq(0)
        return m

    def _derive(self, m, c, alone):
        """Per-layer constants of the latched configuration: ``(d, steps)``.

        The output channel groups (``cout_groups``, ``last_out_lanes``) are those of the
        input channels when the pool runs ``alone`` (its output has the input's channels).

        ``d`` maps names to signals. Shifts, sums and differences are registers recomputed every
        cycle; products are the ``steps`` ``(destination, a, b, add)``, computed one after the
        other by a single shift-and-add multiplier (``destination <= a * b + add``, one cycle
        per two bits of ``b``, the operand with the smaller maximum) while the range checks
        settle (a refused layer's products are never used): a legal layer's operands are
        bounded by the hardware maxima, so the widths below are exact.
        """
        simd_bits = (self.simd - 1).bit_length()
        pe_bits = (self.pe - 1).bit_length()
        cin_groups, cout_groups = self.cin_groups, self.cout_groups
        keff_max = (self.max_kernel - 1) * self.max_dilation + 1
        pad_max = (1 << c["pad_top"].shape().width) - 1
        d, bound, steps = {}, {}, []

        def reg(name, expr):
            sig = Signal(expr.shape(), name=f"d_{name}")
            m.d.sync += sig.eq(expr)
            d[name] = sig
            return sig

        def cfg(name, maximum):
            """A configuration field, narrowed to the width of its checked maximum."""
            bound[name] = maximum
            return c[name][:maximum.bit_length()]

        def product(name, a, a_max, b, b_max, add=0, add_max=0):
            top = a_max * b_max + add_max
            sig = Signal(range(top + 1), name=f"d_{name}")
            if b_max > a_max:
                a, b = b, a
            steps.append((sig, a, b, add))
            d[name], bound[name] = sig, top
            return sig

        # Registered every cycle: settled one cycle after their inputs.
        cing = reg("cin_groups", (c["in_channels"] + self.simd - 1) >> simd_bits)
        out_channels = Mux(alone, c["in_channels"], c["out_channels"])
        coutg = reg("cout_groups", (out_channels + self.pe - 1) >> pe_bits)
        kh, kw = cfg("kernel_h", self.max_kernel), cfg("kernel_w", self.max_kernel)
        dh, dw = cfg("dilation_h", self.max_dilation), cfg("dilation_w", self.max_dilation)
        sh, sw = cfg("stride_h", self.max_stride), cfg("stride_w", self.max_stride)
        height, width = cfg("in_height", self.max_height), cfg("in_width", self.max_width)
        pt, pl = cfg("pad_top", pad_max), cfg("pad_left", pad_max)
        cin = cfg("in_channels", self.max_channels)
        # Built without packing, every layer that runs is plain (a packed one is refused).
        pack = c["pack"] if self.packing else Const(0, 1)
        # The pixel and row pitches of the input stream in bytes (rtl.linebuffer): the row
        # pitch is the product `w_cp` (W * Cp) unless packed, so no step may load it in the
        # cycle that product is written (`load` checks).
        cp_max = cin_groups << simd_bits
        cp = reg("pixel_bytes", Mux(pack, cin, cing << simd_bits))
        bound["pixel_bytes"] = cp_max
        row_max = max_row_bytes(SimpleNamespace(**self.params))
        row_in = cfg("in_row_bytes", row_max)

        keh = product("keff_h", kh - 1, self.max_kernel, dh, self.max_dilation, 1, 1)
        kew = product("keff_w", kw - 1, self.max_kernel, dw, self.max_dilation, 1, 1)
        khkw = product("kh_kw", kh, self.max_kernel, kw, self.max_kernel)
        w_cp = product("w_cp", width, self.max_width, cp, cp_max)
        col = product("col_step", dw, self.max_dilation, cp, cp_max)
        product("stride_w_bytes", sw, self.max_stride, cp, cp_max)
        product("pad_left_bytes", pl, pad_max, cp, cp_max)
        kew_cp = product("kew_cp", kew, keff_max, cp, cp_max)
        positions = product("positions", khkw, self.max_kernel ** 2, cp, cp_max)
        row = Mux(pack, row_in, w_cp)
        product("kw_col_step", kw, self.max_kernel, col, bound["col_step"])
        product("row_step", dh, self.max_dilation, row, row_max)
        product("stride_h_bytes", sh, self.max_stride, row, row_max)
        product("pad_top_bytes", pt, pad_max, row, row_max)
        total_bytes = product("total_bytes", height, self.max_height, row, row_max)
        span_bytes = product("span_bytes", keh - 1, keff_max, row, row_max, kew_cp,
                             bound["kew_cp"])
        ops = reg("ops", (positions + self.simd - 1) >> simd_bits)
        product("weight_words", coutg, cout_groups, ops, -(-bound["positions"] // self.simd))

        reg("total_in", (total_bytes + self.simd - 1) >> simd_bits)
        reg("span", ((span_bytes + self.simd - 1) >> simd_bits) + pack)
        reg("x_limit", c["in_width"] + c["pad_right"] - kew)
        reg("y_limit", c["in_height"] + c["pad_bottom"] - keh)
        reg("last_out_lanes", out_channels - ((coutg - 1) << pe_bits))
        d.update(height=c["in_height"], width=c["in_width"], kh=c["kernel_h"], kw=c["kernel_w"],
                 stride_h=c["stride_h"], stride_w=c["stride_w"], dil_h=c["dilation_h"],
                 dil_w=c["dilation_w"], x_start=-c["pad_left"], y_start=-c["pad_top"],
                 x_start_bytes=-d["pad_left_bytes"], y_start_bytes=-d["pad_top_bytes"],
                 in_channels=c["in_channels"])
        return d, steps

    def _check(self, m, c, d, fused, alone):
        """``(range_error, late_error)``: the first violated limit (EngineError) among the
        checks of the configuration alone, and among those of the derived constants, each
        valid two cycles after its inputs (each test registered, then the first failing one).
        When the pool runs ``alone`` the conv
        settings are ignored (the pool unit checks its own). The checks are those of
        :data:`rtl.limits.ENGINE_REFUSALS`."""
        v = SimpleNamespace(**{**self.params, **c, **d}, fused=fused, alone=alone,
                            max_pool_mode=max(PoolMode))
        conv = ~alone
        # Built without packing, a packed layer is refused (PACK_UNSUPPORTED) before any other
        # packing check could fire: those checks see the plain format, and no logic.
        plain = SimpleNamespace(**{**vars(v), "pack": Const(0, 1)})
        unsupported = EngineError.PACK_UNSUPPORTED

        def first(stage):
            checks = stage_checks(ENGINE_REFUSALS, stage, v, gate=conv)
            if not self.packing:
                checks = [(code, bad if code == unsupported else other)
                          for (code, bad), (_, other)
                          in zip(checks, stage_checks(ENGINE_REFUSALS, stage, plain, gate=conv))]
            code = Const(EngineError.NONE, ERROR_WIDTH)
            for value, bad in reversed(checks):
                flag = Signal(name=f"bad_{EngineError(value).name.lower()}")
                m.d.sync += flag.eq(bad)
                code = Mux(flag, value, code)
            sig = Signal(code_width(value for value, _ in checks))
            m.d.sync += sig.eq(code)
            return sig

        return first("range"), first("derived")
