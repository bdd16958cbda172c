"""The conv engine's register map: the one description behind the AXI4-Lite block, the Python
driver and the README table (see :mod:`rtl.regmap`).

A layer is programmed by writing the ``rw`` registers, then ``CTRL.start``. The engine copies
the configuration at start (later writes affect only the next layer), checks it, and either
refuses it (``STATUS.error`` names the first violated limit, ``done`` is set, no input is
accepted and nothing is output) or runs it (``busy`` and ``running`` until the last output
word has been sent and the whole input consumed, then ``done``).

Layers back to back: a start while a layer runs is *queued* (``STATUS.queued``): the next
layer's checks and derived constants are computed while the running one finishes, and it
starts the cycle after that one ends, so a layer switch costs no setup. A start while a layer
is queued is ignored: write the next layer's registers, wait for ``queued`` to fall, then
start it. A queued layer that is refused reports its error (and ``done``) once the running
layer has ended. A start from idle clears ``done``, ``error``, ``tlast_error`` and the
performance counters; a queued start clears ``done`` and ``error`` only, so the counters and
``tlast_error`` cover every layer run back to back since the last start from idle.

Parameters load (``s_axis_param``, :mod:`rtl.weights`) at any time, also while a layer runs:
a layer reads its weights from word ``weight_base`` of the weight memory and its channel
constants from word ``chan_base`` of the channel-constant memories, so the host loads the next
layer's parameters into other words while one runs. It must not overwrite the words the
running layer reads (``weight_base`` up to ``weight_base + weight words - 1``, ``chan_base``
up to ``chan_base + ceil(Cout / PE) - 1``): the engine does not check it.

Max pooling (``POOL.pool_mode``, :class:`PoolMode`): ``FUSED`` sends the requantized (and
ReLU-clamped) conv output through the max-pool unit (the lecture's CONV-RELU-POOL in one pass;
the unit's map is the conv output, ``out_channels`` channels); ``ALONE`` sends the input
feature map straight to it (an ONNX MaxPool: ``in_height``, ``in_width``, ``in_channels`` and
``x_unsigned`` describe the map, the conv registers, weights and ``QUANT`` zero points are
ignored, and no MAC operation runs). The ``POOL_*`` registers give kernel, stride, pads,
dilation and ``ceil_mode`` with ONNX MaxPool semantics (padding never wins). Errors of the
max-pool unit's checks (:class:`rtl.limits.PoolError` ``n``) are ``POOL_ERROR_BASE + n``. The
codes, their checks and messages are defined in :mod:`rtl.limits`.

Zero points are 9-bit two's complement numbers (``-128..127`` for int8, ``0..255`` for uint8);
:func:`encode_zero_point` gives the field value.
"""

from rtl.limits import (BASE_WIDTH, COUNTER_WIDTH, DIM_WIDTH, ERROR_WIDTH, MAX_ARRAY,
                        MAX_CONV_STEP, POOL_ERROR_BASE, SMALL_WIDTH, EngineError, PoolMode)
from rtl.streams import DATA_WIDTH
from rtl.regmap import Field, Register, RegisterMap
from rtl.streams import ZP_WIDTH as ZERO_POINT_WIDTH

__all__ = ["REGMAP", "EngineError", "PoolMode", "POOL_ERROR_BASE", "ERROR_WIDTH", "ZERO_POINT_WIDTH", "encode_zero_point", "DIM_WIDTH",
           "SMALL_WIDTH", "COUNTER_WIDTH", "narrow_storage"]



def encode_zero_point(value: int) -> int:
    """The 9-bit two's complement field value of a zero point in -256..255."""
    if not -(1 << (ZERO_POINT_WIDTH - 1)) <= value < 1 << (ZERO_POINT_WIDTH - 1):
        raise ValueError(f"zero point must be in -256..255, not {value}")
    return value & ((1 << ZERO_POINT_WIDTH) - 1)


def _dims(name, offset, a, b, doc, reset=1):
    return Register(name, offset, [
        Field(a[0], DIM_WIDTH, "rw", reset=reset, doc=a[1]),
        Field(b[0], DIM_WIDTH, "rw", reset=reset, doc=b[1])], doc=doc)


def _small(name, offset, fields, doc, reset=1):
    return Register(name, offset, [Field(n, SMALL_WIDTH, "rw", reset=reset, doc=d)
                                   for n, d in fields], doc=doc)


def _counter(name, offset, doc):
    return Register(name, offset, [Field(name.lower(), COUNTER_WIDTH, "ro", doc=doc)], doc=doc)


REGMAP = RegisterMap("convcore_engine", [
    Register("CTRL", 0x00, [Field("start", 1, "w1p", doc="Start the configured layer")],
             doc="Control"),
    Register("STATUS", 0x04, [
        Field("busy", 1, "ro", doc="Between start and done of a layer"),
        Field("running", 1, "ro", doc="The layer passed its checks and accepts input"),
        Field("done", 1, "ro", doc="The last layer finished or was refused; cleared by start"),
        Field("tlast_error", 1, "ro",
              doc="Input (or partial-sum) tlast was missing on the last word of the feature "
                  "map or set early; cleared by start"),
        Field("load_error", 1, "ro",
              doc="A parameter packet had an unknown kind, ended inside a word or addressed "
                  "past a memory; cleared by start"),
        Field("queued", 1, "ro",
              doc="A started layer is being checked and set up, or waits for the running "
                  "one to end; a start now is ignored"),
        Field("error", ERROR_WIDTH, "ro", lsb=8, enum=EngineError,
              doc="Why the last layer was refused (0: accepted)"),
    ], doc="Status"),
    _dims("IN_SIZE", 0x08, ("in_height", "Input height H"), ("in_width", "Input width W"),
          "Input feature map size"),
    _dims("CHANNELS", 0x0C, ("in_channels", "Input channels Cin"),
          ("out_channels", "Output channels Cout"), "Channel counts"),
    _small("KERNEL", 0x10, [("kernel_h", "Kernel height Kh"), ("kernel_w", "Kernel width Kw")],
           "Kernel size"),
    _small("STRIDE", 0x14, [("stride_h", "Vertical stride"), ("stride_w", "Horizontal stride")],
           "Stride"),
    _small("DILATION", 0x18, [("dilation_h", "Vertical dilation"),
                              ("dilation_w", "Horizontal dilation")], "Dilation"),
    _small("PADS", 0x1C, [("pad_top", "Rows of padding above"),
                          ("pad_left", "Columns of padding on the left"),
                          ("pad_bottom", "Rows of padding below"),
                          ("pad_right", "Columns of padding on the right")],
           "Zero padding (holds the input zero point; never stored)", reset=0),
    Register("QUANT", 0x20, [
        Field("x_zero_point", ZERO_POINT_WIDTH, "rw", doc="Input zero point (9-bit two's complement)"),
        Field("y_zero_point", ZERO_POINT_WIDTH, "rw", lsb=12,
              doc="Output zero point (9-bit two's complement)"),
        Field("x_unsigned", 1, "rw", lsb=24, doc="Input activations are uint8 (else int8)"),
        Field("w_unsigned", 1, "rw", doc="Weights are uint8 (else int8)"),
        Field("y_unsigned", 1, "rw", doc="Requantized output is uint8 (else int8)"),
        Field("relu", 1, "rw", doc="Clamp requantized outputs at the output zero point"),
        Field("raw_output", 1, "rw", doc="Output the int32 accumulators (+ bias) unrequantized"),
        Field("acc_in", 1, "rw",
              doc="Add the partial sums of s_axis_acc (int32 per lane, the raw output format) "
                  "to the accumulators: input-channel and sub-kernel passes"),
    ], doc="Quantization"),
    Register("POOL", 0x24, [
        Field("pool_mode", 2, "rw", enum=PoolMode,
              doc="Max-pool: OFF, FUSED after the conv, or ALONE (input map, no conv)"),
        Field("pool_ceil_mode", 1, "rw", doc="Pool output size rounded up (ONNX ceil_mode)"),
    ], doc="Max-pool mode"),
    _small("POOL_KERNEL", 0x28, [("pool_kernel_h", "Pool kernel height"),
                                 ("pool_kernel_w", "Pool kernel width")], "Max-pool kernel size"),
    _small("POOL_STRIDE", 0x2C, [("pool_stride_h", "Pool vertical stride"),
                                 ("pool_stride_w", "Pool horizontal stride")], "Max-pool stride"),
    _counter("CYCLES", 0x30, "Cycles from start to done"),
    _counter("MAC_CYCLES", 0x38, "Cycles in which the MAC array took an operation"),
    _counter("STARVED_CYCLES", 0x40, "Cycles in which the next operation waited for an input word"),
    _counter("STALLED_CYCLES", 0x48, "Cycles with output valid but not ready (backpressure)"),
    _small("POOL_DILATION", 0x50, [("pool_dilation_h", "Pool vertical dilation"),
                                   ("pool_dilation_w", "Pool horizontal dilation")],
           "Max-pool dilation"),
    _small("POOL_PADS", 0x54, [("pool_pad_top", "Pool rows of padding above"),
                               ("pool_pad_left", "Pool columns of padding on the left"),
                               ("pool_pad_bottom", "Pool rows of padding below"),
                               ("pool_pad_right", "Pool columns of padding on the right")],
           "Max-pool padding (never wins the maximum)", reset=0),
    Register("WEIGHT_BASE", 0x58, [
        Field("weight_base", BASE_WIDTH, "rw",
              doc="First weight memory word of the layer (its weights at weight_base and on)"),
    ], doc="Weight memory base address"),
    Register("CHAN_BASE", 0x5C, [
        Field("chan_base", BASE_WIDTH, "rw",
              doc="First channel-constant word of the layer (one word per output-channel group)"),
    ], doc="Channel-constant memory base address"),
    Register("HW_ARRAY", 0x60, [
        Field("hw_pe", 8, "ro", doc="PE: output channels per cycle"),
        Field("hw_simd", 8, "ro", doc="SIMD: input channels per cycle"),
        Field("hw_max_kernel", SMALL_WIDTH, "ro", doc="Largest kernel height and width"),
        Field("hw_max_stride", MAX_CONV_STEP.bit_length(), "ro", doc="Largest stride"),
        Field("hw_max_dilation", MAX_CONV_STEP.bit_length(), "ro", doc="Largest dilation"),
    ], doc="Hardware configuration: MAC array and kernel limits"),
    Register("HW_SIZE", 0x64, [
        Field("hw_max_height", DIM_WIDTH, "ro", doc="Largest input height"),
        Field("hw_max_width", DIM_WIDTH, "ro", doc="Largest input width"),
    ], doc="Hardware configuration: feature map limits"),
    Register("HW_CHANNELS", 0x68, [
        Field("hw_max_channels", DIM_WIDTH, "ro", doc="Largest channel count"),
    ], doc="Hardware configuration: channel limit"),
    Register("HW_WEIGHT_DEPTH", 0x6C, [
        Field("hw_weight_depth", 32, "ro", doc="Weight memory words (PE x SIMD bytes each)"),
    ], doc="Hardware configuration: weight memory"),
    Register("HW_LINE_BUFFER", 0x70, [
        Field("hw_line_buffer_depth", 32, "ro", doc="Line buffer words (SIMD bytes each)"),
    ], doc="Hardware configuration: line buffer"),
    Register("HW_POOL", 0x74, [
        Field("hw_pool_window_slots", 8, "ro",
              doc="Max-pool windows open at once per axis: a pool is legal iff "
                  "(K - 1) * dilation + 1 <= slots * stride (0: no max-pool unit)"),
        Field("hw_pool_max_stride", SMALL_WIDTH, "ro", doc="Largest max-pool stride"),
    ], doc="Hardware configuration: max-pool unit"),
    Register("HW_PARAMS", 0x78, [
        Field("hw_param_width", (DATA_WIDTH * MAX_ARRAY * MAX_ARRAY).bit_length(), "ro",
              doc="Bits of s_axis_param_tdata (a memory word is sent as ceil(word bits / "
                  "param_width) beats)"),
        Field("hw_packing", 1, "ro", lsb=16,
              doc="Packed reductions built in (PACKING.pack; else refused: PACK_UNSUPPORTED)"),
        Field("hw_queued_starts", 1, "ro",
              doc="A start while a layer runs is queued (STATUS.queued); else it is ignored "
                  "and the host starts the next layer once the engine is idle"),
    ], doc="Hardware configuration: parameter port and build options"),
    Register("HW_CHANNEL_DEPTH", 0x7C, [
        Field("hw_channel_depth", 32, "ro",
              doc="Channel-constant memory words (one per output-channel group)"),
    ], doc="Hardware configuration: channel-constant memory"),
    Register("PACKING", 0x80, [
        Field("pack", 1, "rw",
              doc="Packed reduction: the input stream holds pixels of Cin bytes back to back "
                  "(rows in_row_bytes apart) and each MAC operation takes SIMD products across "
                  "taps (rtl.linebuffer); else pixels of ceil(Cin/SIMD) whole words. Ignored "
                  "when the max-pool runs alone"),
        Field("in_row_bytes", DIM_WIDTH + 8, "rw", lsb=8,
              doc="Packed: bytes from one input row to the next (W * Cin plus fewer than SIMD "
                  "bytes never read, so that dilation_h * in_row_bytes = Kw * Cin mod SIMD)"),
    ], doc="Packing of the input stream and of the reduction"),
], doc="convcore conv engine")


def narrow_storage(*, max_kernel, max_width, max_height, max_channels, max_stride,
                   max_dilation, pool_window_slots, pool_max_stride, weight_depth,
                   channel_depth, packing=True) -> dict:
    """Bits each size, kernel, stride, dilation and pad field keeps for an engine with these
    maxima (``rtl.axil_regs.AXI4LiteRegisters(storage=...)``, for small devices): the bits of
    its largest legal value; a larger value keeps a sticky bit and reads above the maximum, so
    the engine refuses it with the same ``STATUS.error``. Without a max-pool unit
    (``pool_window_slots`` 0) the ``POOL_*`` geometry fields keep only their reset value's
    bits (any pool is refused). The base addresses keep the bits of the last word of their
    memory. Without ``packing`` the row pitch keeps no bits (a packed layer is refused).
    Fields that would keep their whole width are left out."""
    def bits(value):
        return max(int(value), 0).bit_length()
    conv_pad = (max_kernel - 1) * max_dilation          # a legal pad is below the kernel
    limits = {"in_height": max_height, "in_width": max_width, "in_channels": max_channels,
              "out_channels": max_channels, "kernel_h": max_kernel, "kernel_w": max_kernel,
              "stride_h": max_stride, "stride_w": max_stride, "dilation_h": max_dilation,
              "dilation_w": max_dilation,
              **{f"pad_{side}": conv_pad for side in ("top", "left", "bottom", "right")},
              "weight_base": weight_depth - 1, "chan_base": channel_depth - 1}
    if not packing:
        limits["in_row_bytes"] = 0
    pool = {"kernel": max_kernel, "stride": pool_max_stride, "dilation": max_dilation}
    if pool_window_slots == 0:
        pool = dict.fromkeys(pool, 1)                   # reset value 1, never used
        pool_pad = 0
    else:
        pool_pad = max_kernel - 1
    limits.update({f"pool_{name}_{axis}": value for name, value in pool.items()
                   for axis in ("h", "w")})
    limits.update({f"pool_pad_{side}": pool_pad for side in ("top", "left", "bottom", "right")})
    fields = {f.name: f for f in REGMAP.fields}
    return {name: bits(value) for name, value in limits.items()
            if bits(value) < fields[name].width}
