"""Host side of the conv engine: the single place that knows its data formats.

Pure functions pack a :class:`model.network.ConvLayer` (weights, constants, registers; its
``pool`` runs fused on the engine) or a :class:`model.network.PoolLayer` (registers only: the
engine's pool-alone mode) and an input feature map into what the engine takes, and unpack its
output; :class:`EngineDriver`
does the bus work in a cocotb simulation with cocotbext-axi (AXI4-Lite registers, parameter
stream, input and output streams). ``convcore run --backend icarus|verilator`` and the
testbench both use it.

Formats (see :mod:`rtl.engine`, :mod:`rtl.weights`, :mod:`rtl.engine_regs`):

- input: HWC bytes, each pixel's channels padded to ``ceil(Cin/SIMD) * SIMD`` bytes (the
  plain format: pool alone, and convs that packing would not speed up), or, for a *packed*
  conv (:func:`row_pitch`), pixels of ``Cin`` bytes back to back and each row padded to the
  row pitch (:mod:`rtl.linebuffer`);
- output: the kept bytes are HWC, int8/uint8 or little-endian int32 (after the pool, if any);
- parameters: a weight packet and a channel-constant packet of ``param_width``-bit beats
  (the engine's ``HW_PARAMS.hw_param_width``), at the words :class:`ParamMemory` places them.

Parameter placement: a layer reads its weights from ``WEIGHT_BASE`` and its channel constants
from ``CHAN_BASE``, and the engine accepts parameters while a layer runs, but does not check
that they spare the running layer's words. :class:`ParamMemory` (one per memory) keeps the
host's account: which parameter blocks are resident where, and where the next one goes
without touching the words of the layer that runs meanwhile. A block is known by its content
(the packed words), so a layer or compiler pass whose parameters are already in the memory and
not overwritten since is not reloaded: across the images of a batch, across repeated passes,
across layers that share their parameters.
"""

import hashlib

from dataclasses import dataclass

import numpy as np

from model.conv import conv_output_size
from model.network import ConvLayer, DenseLayer, PoolLayer
from rtl.engine_regs import REGMAP, EngineError, PoolMode, encode_zero_point
from rtl.limits import check_layer
from rtl.streams import DATA_WIDTH
from rtl.weights import (CHANNEL_BEATS, CHANNEL_VALUE_WIDTH, HEADER_KIND_SHIFT, KIND_CHANNELS,
                         KIND_WEIGHTS, SHIFT_WIDTH, WZP_SHIFT, word_beats)

__all__ = ["HardwareConfig", "EngineDriver", "EngineRefused", "LayerResult", "pack_input",
           "pack_weights", "pack_channels", "pack_acc", "row_pitch", "pixel_bytes",
           "window_ops", "input_words", "array_ceiling", "layer_fields", "register_fields",
           "pool_fields", "unpack_output",
           "output_shape", "conv_shape", "COUNTERS", "dense_as_conv", "engine_fits",
           "weight_words", "channel_words", "param_bytes", "ParamMemory", "ParamPlacer", "Placement"]

WZP_MASK = (1 << 9) - 1
#: Cycles between two reads of STATUS.queued while a start waits to be queued: short against
#: the layers it hides a setup behind, long against a register read (each read is Python
#: work: at 16 cycles the 360 digits took 28 s of wall time, at 64 17 s, same cycle counts).
QUEUE_POLL_CYCLES = 64
#: Performance counters read after every layer, by register name.
COUNTERS = ("CYCLES", "MAC_CYCLES", "STARVED_CYCLES", "STALLED_CYCLES")


@dataclass(frozen=True)
class HardwareConfig:
    """The engine parameters the host needs (read from the HW_* registers or the build)."""
    pe: int
    simd: int
    param_width: int
    weight_depth: int
    channel_depth: int
    #: Packed reductions built in (else every layer runs in the plain format).
    packing: bool = True
    #: A start while a layer runs is queued (else the host waits for the engine to be idle).
    queued_starts: bool = True


def _groups(n, size):
    return -(-n // size)


def _u8(arr):
    """Raw bit patterns of an int8/uint8 array."""
    arr = np.asarray(arr)
    if arr.dtype not in (np.int8, np.uint8):
        raise ValueError(f"expected an int8 or uint8 array, not {arr.dtype}")
    return arr.view(np.uint8)


def output_shape(layer):
    """(C, OH, OW) of what the engine outputs for ``layer``: the conv's (ONNX floor
    semantics), then the fused pool's if it has one; a PoolLayer's pooled map."""
    if isinstance(layer, PoolLayer):
        c, h, w = layer.in_shape
        return (c, *layer.pool.output_hw(h, w))
    cout, oh, ow = conv_shape(layer)
    if layer.pool is not None:
        return (cout, *layer.pool.output_hw(oh, ow))
    return (cout, oh, ow)


def conv_shape(layer):
    """(Cout, OH, OW) of a ConvLayer's convolution, before any fused pool."""
    c, h, w = layer.in_shape
    t, l, b, r = layer.pads
    kh, kw = layer.kernel
    oh = conv_output_size(h, kh, layer.stride[0], (t, b), layer.dilation[0], strict=False)
    ow = conv_output_size(w, kw, layer.stride[1], (l, r), layer.dilation[1], strict=False)
    return (int(layer.weight.shape[0]), oh, ow)


def row_pitch(layer, simd, packing=True):
    """The row pitch in bytes of ``layer``'s packed input stream, or None when it runs in the
    plain format: a conv is packed when that takes fewer MAC operations per window
    (``ceil(Kh * Kw * Cin / SIMD) < Kh * Kw * ceil(Cin / SIMD)``: Cin not a multiple of SIMD),
    its horizontal dilation is 1, and a pitch of ``W * Cin`` plus fewer than SIMD bytes meets
    the engine's bank rule ``dilation_h * pitch = Kw * Cin (mod SIMD)`` (the smallest such
    pitch). ``simd`` None, or ``packing`` False (an engine built without packing): the plain
    format."""
    if simd is None or not packing or not isinstance(layer, ConvLayer):
        return None
    c, _, w = layer.in_shape
    kh, kw = layer.kernel
    dh, dw = layer.dilation
    if dw != 1 or -(-kh * kw * c // simd) >= kh * kw * _groups(c, simd):
        return None
    pitch = next((pitch for pitch in range(w * c, w * c + simd)
                  if (dh * pitch - kw * c) % simd == 0), None)
    # Never more line buffer than the plain format, so that what fits plain fits packed.
    keh, kew = (kh - 1) * dh + 1, kw
    if pitch is None or (-(-((keh - 1) * pitch + kew * c) // simd) + 1
                         > ((keh - 1) * w + kew) * _groups(c, simd)):
        return None
    return pitch


def pixel_bytes(layer, simd, packing=True):
    """Bytes per input pixel in the engine's input stream: ``Cin`` packed, else
    ``ceil(Cin / SIMD) * SIMD`` (``packing``: the engine's, see :func:`row_pitch`)."""
    c = layer.in_shape[0]
    return c if row_pitch(layer, simd, packing) is not None else _groups(c, simd) * simd


def window_ops(layer, simd, packing=True):
    """MAC-array operations per output position and output-channel group of a ConvLayer:
    ``ceil(Kh * Kw * Cp / SIMD)`` (:func:`pixel_bytes`)."""
    kh, kw = layer.kernel
    return _groups(kh * kw * pixel_bytes(layer, simd, packing), simd)


def array_ceiling(layer, pe, simd):
    """The MAC utilization the PE x SIMD array's shape allows a ConvLayer or DenseLayer (None
    for a PoolLayer): its ``Kh * Kw * Cin`` products packed into SIMD lanes, times its output
    channels over PE rows, ``K / (SIMD * ceil(K / SIMD)) * Cout / (PE * ceil(Cout / PE))``."""
    if isinstance(layer, DenseLayer):
        layer = dense_as_conv(layer)
    if not isinstance(layer, ConvLayer):
        return None
    cout, cin, kh, kw = layer.weight.shape
    k = kh * kw * cin
    return k / (simd * _groups(k, simd)) * cout / (pe * _groups(cout, pe))


def input_words(layer, simd, packing=True):
    """Words of the input stream of one sample of ``layer`` (packed or plain)."""
    c, h, w = layer.in_shape
    pitch = row_pitch(layer, simd, packing)
    return h * w * _groups(c, simd) if pitch is None else _groups(h * pitch, simd)


def pack_input(x, simd, pitch=None):
    """Input stream bytes of a CHW int8/uint8 feature map: the plain format, or packed rows
    ``pitch`` bytes apart (:func:`row_pitch`), the last word zero-filled."""
    x = _u8(x)
    if x.ndim != 3:
        raise ValueError(f"input must be CHW, not shape {x.shape}")
    c, h, w = x.shape
    if pitch is None:
        padded = np.zeros((_groups(c, simd) * simd, h, w), np.uint8)
        padded[:c] = x
        return padded.transpose(1, 2, 0).tobytes()
    if pitch < w * c:
        raise ValueError(f"row pitch {pitch} is below W * Cin = {w * c}")
    rows = np.zeros((h, pitch), np.uint8)
    rows[:, :w * c] = x.transpose(1, 2, 0).reshape(h, w * c)
    data = rows.tobytes()
    return data + bytes(-len(data) % simd)


def _packet(kind, words, addr, param_width):
    """Header beat then ``words`` (rows of bytes, each zero-padded to whole beats) as
    ``param_width``-bit beats (Python ints)."""
    words = np.asarray(words, np.uint8)
    beat_bytes = param_width // DATA_WIDTH
    beats = word_beats(words.shape[1] * DATA_WIDTH, param_width)
    padded = np.zeros((words.shape[0], beats * beat_bytes), np.uint8)
    padded[:, :words.shape[1]] = words
    rows = padded.reshape(-1, beat_bytes)
    return [(kind << HEADER_KIND_SHIFT) | addr,
            *(int.from_bytes(row.tobytes(), "little") for row in rows)]


def param_bytes(beats, param_width) -> bytes:
    """The ``s_axis_param`` frame of a packet's beats (``param_width`` bits each)."""
    size = param_width // DATA_WIDTH
    return b"".join(int(beat).to_bytes(size, "little") for beat in beats)


def weight_words(layer, pe, simd, packed=None, packing=True):
    """Weight memory words of a ConvLayer, ``(words, pe * simd)`` bytes (rtl.weights): per
    output-channel group ``og``, the window's positions ``t = (ky * Kw + kx) * Cp + c`` in
    words of SIMD, byte ``p * SIMD + j`` of word ``k`` the weight of channel ``og * PE + p`` at
    position ``k * SIMD + j`` (0 past the window and for ``c >= Cin``); ``Cp`` is Cin when
    ``packed``, else ``ceil(Cin/SIMD) * SIMD`` (then word ``((og*Kh + ky)*Kw + kx)*G + ig``
    holds one tap's input-channel group). ``packed`` None: as :func:`row_pitch` decides (for
    an engine with ``packing`` or without)."""
    if packed is None:
        packed = row_pitch(layer, simd, packing) is not None
    w = _u8(layer.weight)
    cout, cin, kh, kw = w.shape
    og = _groups(cout, pe)
    cp = cin if packed else _groups(cin, simd) * simd
    padded = np.zeros((og * pe, kh, kw, cp), np.uint8)
    padded[:cout, :, :, :cin] = w.transpose(0, 2, 3, 1)
    positions = padded.reshape(og * pe, kh * kw * cp)
    ops = _groups(kh * kw * cp, simd)
    flat = np.zeros((og * pe, ops * simd), np.uint8)
    flat[:, :positions.shape[1]] = positions
    words = flat.reshape(og, pe, ops, simd).transpose(0, 2, 1, 3)
    return words.reshape(-1, pe * simd)


def pack_weights(layer, pe, simd, param_width, addr=0, packed=None):
    """Weight packet of :func:`weight_words`, its first word at ``addr``."""
    return _packet(KIND_WEIGHTS, weight_words(layer, pe, simd, packed), addr, param_width)


def pack_channels(layer, pe, param_width, addr=0):
    """Channel-constant packet of :func:`channel_words`, its first word at ``addr``."""
    return _packet(KIND_CHANNELS, channel_words(layer, pe), addr, param_width)


def channel_words(layer, pe):
    """Channel-constant words of a ConvLayer, ``(groups, 12 * pe)`` bytes: per channel bias,
    multiplier, shift | weight zero point << 8, 32 bits each, little-endian."""
    cout = int(layer.weight.shape[0])
    n = _groups(cout, pe) * pe
    beats = np.zeros((n, 3), np.int64)
    beats[:cout, 0] = np.asarray(layer.bias, np.int64) & 0xFFFFFFFF
    if not layer.raw:
        mult = np.broadcast_to(np.asarray(layer.multiplier, np.int64), (cout,))
        shift = np.broadcast_to(np.asarray(layer.shift, np.int64), (cout,))
        if mult.min() < 0 or mult.max() >= 1 << 31 or shift.min() < 0 \
                or shift.max() >= 1 << SHIFT_WIDTH:
            raise ValueError(f"layer '{layer.name}': multiplier/shift out of the engine's range")
        beats[:cout, 1] = mult
        beats[:cout, 2] = shift
    wz = np.broadcast_to(np.asarray(layer.w_zero_point, np.int64), (cout,)) \
        if np.size(layer.w_zero_point) else np.zeros(cout, np.int64)
    beats[:cout, 2] |= (wz & WZP_MASK) << WZP_SHIFT
    value_bytes = CHANNEL_VALUE_WIDTH // DATA_WIDTH
    return np.frombuffer(beats.astype("<u4").tobytes(), np.uint8).reshape(
        -1, CHANNEL_BEATS * value_bytes * pe)


def pack_acc(psum, pe):
    """``s_axis_acc`` bytes of int32 partial sums, CHW of the conv output: the raw output
    format (HWC, channels padded to ``ceil(Cout/PE) * PE`` lanes of 4 bytes)."""
    psum = np.asarray(psum)
    if psum.dtype != np.int32 or psum.ndim != 3:
        raise ValueError(f"partial sums must be a CHW int32 array, not {psum.dtype} "
                         f"{psum.shape}")
    c = psum.shape[0]
    padded = np.zeros((_groups(c, pe) * pe, *psum.shape[1:]), "<i4")
    padded[:c] = psum
    return padded.transpose(1, 2, 0).tobytes()


def pool_fields(pool, mode):
    """Register name -> {field: value} of the POOL_* registers for a MaxPool (or None: off)."""
    if pool is None:
        return {"POOL": dict(pool_mode=PoolMode.OFF.name)}
    t, l, b, r = pool.pads
    return {
        "POOL": dict(pool_mode=mode.name, pool_ceil_mode=int(pool.ceil_mode)),
        "POOL_KERNEL": dict(pool_kernel_h=pool.kernel[0], pool_kernel_w=pool.kernel[1]),
        "POOL_STRIDE": dict(pool_stride_h=pool.stride[0], pool_stride_w=pool.stride[1]),
        "POOL_DILATION": dict(pool_dilation_h=pool.dilation[0],
                              pool_dilation_w=pool.dilation[1]),
        "POOL_PADS": dict(pool_pad_top=t, pool_pad_left=l, pool_pad_bottom=b, pool_pad_right=r),
    }


def layer_fields(layer, acc_in=False, simd=None, packing=True):
    """Register name -> {field: value} for every register the layer uses; ``acc_in``: the
    engine adds partial sums from ``s_axis_acc``; ``simd``: the engine's SIMD, for packing
    (:func:`row_pitch`; None: the plain format), ``packing`` False for an engine built
    without it. A PoolLayer leaves the conv registers alone
    (the engine ignores them in pool-alone mode)."""
    if isinstance(layer, PoolLayer):
        c, h, w = layer.in_shape
        return {
            "IN_SIZE": dict(in_height=h, in_width=w),
            "CHANNELS": dict(in_channels=c, out_channels=c),
            "QUANT": dict(x_unsigned=int(layer.in_dtype == "uint8")),
            **pool_fields(layer.pool, PoolMode.ALONE),
        }
    if not isinstance(layer, ConvLayer):
        raise TypeError(f"the engine runs ConvLayer and PoolLayer, not {type(layer).__name__}")
    c, h, w = layer.in_shape
    kh, kw = layer.kernel
    t, l, b, r = layer.pads
    raw = layer.raw
    pitch = row_pitch(layer, simd, packing)
    return {
        "IN_SIZE": dict(in_height=h, in_width=w),
        "CHANNELS": dict(in_channels=c, out_channels=int(layer.weight.shape[0])),
        "KERNEL": dict(kernel_h=kh, kernel_w=kw),
        "STRIDE": dict(stride_h=layer.stride[0], stride_w=layer.stride[1]),
        "DILATION": dict(dilation_h=layer.dilation[0], dilation_w=layer.dilation[1]),
        "PADS": dict(pad_top=t, pad_left=l, pad_bottom=b, pad_right=r),
        "QUANT": dict(
            x_zero_point=encode_zero_point(int(layer.x_zero_point)),
            y_zero_point=encode_zero_point(0 if raw else int(layer.y_zero_point)),
            x_unsigned=int(layer.in_dtype == "uint8"),
            w_unsigned=int(layer.weight.dtype == np.uint8),
            y_unsigned=int(layer.out_dtype == "uint8"),
            relu=int(bool(layer.relu) and not raw),
            raw_output=int(raw),
            acc_in=int(bool(acc_in))),
        "PACKING": dict(pack=int(pitch is not None), in_row_bytes=pitch or 0),
        **pool_fields(layer.pool, PoolMode.FUSED),
    }


def register_fields(layer, acc_in=False, simd=None, packing=True) -> dict:
    """``{field: value}`` of every configuration field as the engine sees ``layer``: the
    layer's (:func:`layer_fields`), the others at their reset value. What
    :func:`rtl.limits.check_layer` checks."""
    fields = REGMAP.resets()
    for values in layer_fields(layer, acc_in, simd, packing).values():
        fields.update(values)
    return fields


def dense_as_conv(layer: DenseLayer) -> ConvLayer:
    """The conv whose kernel covers the whole input: weight (O, C*H*W) -> (O, C, H, W)."""
    shape = tuple(layer.in_shape)
    c, h, w = shape if len(shape) == 3 else (int(np.prod(shape)), 1, 1)
    out = int(layer.weight.shape[0])
    return ConvLayer(
        name=layer.name, nodes=tuple(layer.nodes), in_shape=(c, h, w), out_shape=(out, 1, 1),
        in_dtype=layer.in_dtype, weight=layer.weight.reshape(out, c, h, w), bias=layer.bias,
        x_zero_point=layer.x_zero_point, w_zero_point=layer.w_zero_point,
        multiplier=layer.multiplier, shift=layer.shift, y_zero_point=layer.y_zero_point,
        out_dtype=layer.out_dtype, relu=layer.relu, tensor=layer.tensor,
        has_bias=layer.has_bias)


def engine_fits(layer, hw: dict) -> str | None:
    """None when the engine of ``hw`` (:func:`rtl.limits.engine_params`) accepts ``layer``
    (a ConvLayer or PoolLayer), else the reason, ``"CODE: message"``: the checks of
    :mod:`rtl.limits`, which the hardware runs too."""
    found = check_layer(register_fields(layer, simd=hw["simd"], packing=hw["packing"]), hw)
    if found is None:
        return None
    refusal, values = found
    return f"{refusal.name}: {refusal.message.format(**values)}"


def unpack_output(data, layer):
    """CHW result from the output stream's kept bytes."""
    cout, oh, ow = output_shape(layer)
    dtype = np.dtype("<i4") if getattr(layer, "raw", False) else np.dtype(layer.out_dtype)
    arr = np.frombuffer(bytes(data), dtype)
    if arr.size != cout * oh * ow:
        raise ValueError(f"layer '{layer.name}': engine sent {arr.size} values, expected "
                         f"{cout}x{oh}x{ow} = {cout * oh * ow}")
    return arr.reshape(oh, ow, cout).transpose(2, 0, 1).astype(dtype.newbyteorder("="))


class ParamMemory:
    """The host's account of one parameter memory of ``depth`` words: which blocks (each a
    layer's weights or channel constants, known by a key of their content) are resident
    where.

    :meth:`place` finds a block's words: where it already is, else a free range (at an end
    of the memory if one is free), else over the least recently used blocks, never over the
    ``keep`` ranges (the running layer's). A block placed next to one at an end of the memory
    always fits when the two do; next to one kept resident in the middle it may not (then
    :meth:`place` says so, and the driver loads it after the running layer).

    >>> mem = ParamMemory(10)
    >>> mem.place("a", 6), mem.place("b", 4, keep=[(0, 6)]), mem.place("a", 6)
    ((0, True), (6, True), (0, False))
    >>> mem.place("c", 5, keep=[(6, 4)])
    (0, True)
    >>> mem.place("d", 6, keep=[(0, 5)]) is None
    True
    """

    def __init__(self, depth: int):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, not {depth!r}")
        self.depth = depth
        self.blocks = {}        # key -> [base, size, last use]
        self.uses = 0

    def forget(self):
        """Nothing is resident any more (the memory was written behind the account's back)."""
        self.blocks.clear()

    def where(self, key):
        """``(base, size)`` of a resident block, or None."""
        block = self.blocks.get(key)
        return None if block is None else (block[0], block[1])

    def put(self, key, base: int, size: int):
        """``(base, load)``: the block at ``base``, whatever was there (``load`` False when it
        is resident there already)."""
        self.uses += 1
        block = self.blocks.get(key)
        if block is not None and block[:2] == [base, size]:
            block[2] = self.uses
            return base, False
        self.blocks.pop(key, None)
        for k, (b, n, _) in list(self.blocks.items()):
            if base < b + n and b < base + size:
                del self.blocks[k]
        self.blocks[key] = [base, size, self.uses]
        return base, True

    def place(self, key, size: int, keep=()):
        """``(base, load)`` of a block of ``size`` words: ``load`` is False when it is resident
        there already. None when it cannot go anywhere outside the ``keep`` ranges
        (``(base, size)`` pairs). A block larger than the memory goes to 0 (the engine
        refuses its layer) and leaves nothing resident."""
        self.uses += 1
        block = self.blocks.get(key)
        if block is not None and block[1] == size:
            block[2] = self.uses
            return block[0], False
        if size > self.depth:
            if keep:
                return None
            self.blocks.clear()
            return 0, True

        def overlaps(base, other_base, other_size):
            return base < other_base + other_size and other_base < base + size
        ends = {0, self.depth - size}
        for b, n in [tuple(v[:2]) for v in self.blocks.values()] + list(keep):
            ends.update((b + n, b - size))
        best = None
        for base in sorted(e for e in ends if 0 <= e <= self.depth - size):
            if any(overlaps(base, b, n) for b, n in keep):
                continue
            hit = [k for k, (b, n, _) in self.blocks.items() if overlaps(base, b, n)]
            cost = (max((self.blocks[k][2] for k in hit), default=-1),
                    sum(self.blocks[k][1] for k in hit), base not in (0, self.depth - size),
                    base)
            if best is None or cost < best[0]:
                best = (cost, base, hit)
        if best is None:
            return None
        _, base, hit = best
        for k in hit:
            del self.blocks[k]
        self.blocks.pop(key, None)
        self.blocks[key] = [base, size, self.uses]
        return base, True


@dataclass
class Placement:
    """Where a layer's parameters go (``weight_base``, ``chan_base``) and the packets that
    still have to be sent to put them there (empty when they are resident)."""
    weight_base: int = 0
    chan_base: int = 0
    packets: tuple = ()
    #: The ``(base, size)`` ranges the layer reads, in the weight and channel memories.
    weight_range: tuple = (0, 0)
    chan_range: tuple = (0, 0)


def _key(kind, words):
    return kind, words.shape, hashlib.sha256(np.ascontiguousarray(words).tobytes()).digest()


class ParamPlacer:
    """Where each layer's parameters go in an engine's weight and channel memories
    (:class:`ParamMemory` each), for an engine ``hw`` (:class:`HardwareConfig`): the host's
    account that :class:`EngineDriver` keeps while it drives the engine, and that the layer
    queue's image (:mod:`sim.queue_image`) keeps while it writes descriptors. ``stats`` counts
    the words placed and the layers found resident."""

    def __init__(self, hw: HardwareConfig, stats: dict | None = None):
        self.hw = hw
        self.weights = ParamMemory(hw.weight_depth)
        self.channels = ParamMemory(hw.channel_depth)
        self._placed = {}           # layer keys -> the Placement last made for them
        self.stats = stats if stats is not None else \
            {"weight_words": 0, "chan_words": 0, "resident": 0}

    def _words(self, layer, packing=None):
        hw = self.hw
        packing = hw.packing if packing is None else packing and hw.packing
        w = weight_words(layer, hw.pe, hw.simd, packing=packing)
        c = channel_words(layer, hw.pe)
        return (_key(KIND_WEIGHTS, w), w), (_key(KIND_CHANNELS, c), c)

    def place(self, layer, keep=None, at=None, packing=None):
        """The :class:`Placement` of a ConvLayer's parameters (None for a PoolLayer, which has
        none), sparing the ranges of the Placement ``keep``; None if they cannot (then place
        them once ``keep``'s layer is done). ``at = (weight_base, chan_base)`` puts them there
        (tests of the base addresses); ``packing`` False: the weights of the plain format even
        where the engine would pack the layer."""
        if isinstance(layer, PoolLayer):
            return None
        hw = self.hw
        (wkey, w), (ckey, c) = self._words(layer, packing)
        if at is not None:
            wplace = self.weights.put(wkey, at[0], len(w))
            cplace = self.channels.put(ckey, at[1], len(c))
        else:
            wplace = self.weights.place(wkey, len(w), [keep.weight_range] if keep else [])
            cplace = None if wplace is None else \
                self.channels.place(ckey, len(c), [keep.chan_range] if keep else [])
            if cplace is None:
                if wplace is not None and wplace[1]:
                    self.weights.blocks.pop(wkey, None)     # not sent: not resident
                return None
        packets = []
        if wplace[1]:
            packets.append(_packet(KIND_WEIGHTS, w, wplace[0], hw.param_width))
            self.stats["weight_words"] += len(w)
        if cplace[1]:
            packets.append(_packet(KIND_CHANNELS, c, cplace[0], hw.param_width))
            self.stats["chan_words"] += len(c)
        if not packets:
            self.stats["resident"] += 1
        placement = Placement(wplace[0], cplace[0], tuple(packets), (wplace[0], len(w)),
                              (cplace[0], len(c)))
        self._placed[wkey, ckey] = placement
        return placement

    def placement_of(self, layer):
        """The Placement last made for ``layer``'s parameters, or None."""
        if isinstance(layer, PoolLayer):
            return None
        (wkey, _), (ckey, _) = self._words(layer)
        return self._placed.get((wkey, ckey))

    def forget(self):
        """Forget what is resident: the memories were written behind the account's back."""
        self.weights.forget()
        self.channels.forget()


class EngineRefused(RuntimeError):
    """The engine refused a layer; ``code`` is the EngineError."""

    def __init__(self, layer_name, code):
        self.code = EngineError(code)
        super().__init__(f"layer '{layer_name}': the engine refused it ({self.code.name})")


@dataclass
class LayerResult:
    """Output (CHW) and performance counters (lower-case register names) of one layer."""
    output: np.ndarray
    counters: dict


class EngineDriver:
    """Drives a simulated :class:`rtl.engine.ConvEngine` through cocotbext-axi.

    Parameters go where :meth:`place` puts them (:class:`ParamMemory`, one per memory):
    :meth:`load` sends those that are not resident, :meth:`preload` sends the next layer's
    while the current one runs (sparing the current one's words), :meth:`configure` writes
    the layer's base addresses with its registers.

    Parameters
    ----------
    dut : cocotb handle of the engine top level (ports named as in rtl.engine).
    """

    def __init__(self, dut):
        from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamSink,
                                   AxiStreamSource)
        from rtl.regmap import RegisterDriver
        import logging

        self.dut = dut
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.param = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_param"), dut.clk,
                                     dut.rst)
        self.acc = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_acc"), dut.clk,
                                   dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for agent in (self.source, self.param, self.acc, self.sink, self.axil.write_if,
                      self.axil.read_if):
            agent.log.setLevel(logging.WARNING)
        self.regs = RegisterDriver(REGMAP, write=self._write, read=self._read)
        self.hw = None
        self.placer = None          # the parameter memories' account (ParamPlacer)
        self._preloading = []       # tasks of preloads under way
        self._layer_name = "?"
        #: Counter values when a layer handed over to one queued behind it (sim.run_layers).
        self.counter_base = None
        #: Parameter words sent and packets skipped because resident (for tests and logs).
        self.stats = {"weight_words": 0, "chan_words": 0, "resident": 0}

    async def _write(self, addr, value):
        await self.axil.write_dword(addr, value)

    async def _read(self, addr):
        return await self.axil.read_dword(addr)

    async def hardware(self):
        """The engine's configuration, read once from its HW_* registers."""
        if self.hw is None:
            fields = {}
            for reg in ("HW_ARRAY", "HW_WEIGHT_DEPTH", "HW_PARAMS", "HW_CHANNEL_DEPTH"):
                fields.update(await self.regs.read_fields(reg))
            self.hw = HardwareConfig(pe=fields["hw_pe"], simd=fields["hw_simd"],
                                     param_width=fields["hw_param_width"],
                                     weight_depth=fields["hw_weight_depth"],
                                     channel_depth=fields["hw_channel_depth"],
                                     packing=bool(fields["hw_packing"]),
                                     queued_starts=bool(fields["hw_queued_starts"]))
            self.placer = ParamPlacer(self.hw, self.stats)
        return self.hw

    def place(self, layer, keep=None, at=None):
        """:meth:`ParamPlacer.place` on this engine's memories (call :meth:`hardware`
        first)."""
        return self.placer.place(layer, keep, at)

    def placement_of(self, layer):
        """The Placement last made for ``layer``'s parameters, or None."""
        if self.placer is None:
            return None
        return self.placer.placement_of(layer)

    def forget(self):
        """Forget what is resident: the memories were written behind the driver's back."""
        if self.placer is not None:
            self.placer.forget()

    async def send(self, placement):
        """Send a Placement's packets; returns when the engine took them."""
        if placement is None:
            return
        hw = await self.hardware()
        for beats in placement.packets:
            await self.param.send(param_bytes(beats, hw.param_width))
        await self.param.wait()

    async def load(self, layer, at=None):
        """Put the layer's weights and channel constants in the memories (a preload of them
        under way is awaited; resident ones are not sent again); returns their Placement
        (None for a PoolLayer, which has none) once the engine took them."""
        await self.hardware()
        await self.settle()
        placement = self.place(layer, at=at)
        await self.send(placement)
        return placement

    def preload(self, layer, running):
        """Start sending ``layer``'s parameters while the layer of Placement ``running`` runs,
        to words it does not read (a cocotb task; :meth:`load` and :meth:`settle` await it).
        Nothing happens when they cannot spare those words: :meth:`load` sends them later."""
        import cocotb

        if layer is None or isinstance(layer, PoolLayer) or self.hw is None:
            return None
        try:
            placement = self.place(layer, keep=running)
        except ValueError:          # constants out of range: load() reports it, naming the layer
            return None
        if placement is None:
            return None
        self._preloading.append(cocotb.start_soon(self.send(placement)))
        return placement

    async def settle(self):
        """Wait for the preloads under way."""
        while self._preloading:
            await self._preloading.pop(0)

    async def configure(self, layer, acc_in=False):
        """Write the layer's registers and its base addresses (those of its last placement;
        0 for a layer never placed, or a PoolLayer)."""
        hw = await self.hardware()
        placement = self.placement_of(layer) or Placement()
        for reg, fields in layer_fields(layer, acc_in, hw.simd, hw.packing).items():
            await self.regs.write_fields(reg, **fields)
        await self.regs.write_fields("WEIGHT_BASE", weight_base=placement.weight_base)
        await self.regs.write_fields("CHAN_BASE", chan_base=placement.chan_base)

    async def status(self):
        return await self.regs.read_fields("STATUS")

    async def start(self, name=None):
        """Pulse start; wait until the engine runs the layer or refuses it (EngineRefused
        naming layer ``name``, default the last layer given to :meth:`run_layer`)."""
        await self.regs.pulse("start")
        while True:
            st = await self.status()
            if st["running"] or st["done"]:
                break
        if st["error"] != EngineError.NONE:
            raise EngineRefused(name or self._layer_name, st["error"])
        return st

    async def started(self, name=None):
        """Wait until a layer whose start was queued runs or is refused (EngineRefused naming
        layer ``name``): it starts when the layer before it ends."""
        while True:
            st = await self.status()
            if st["done"] or (st["running"] and not st["queued"]):
                break
        if st["error"] != EngineError.NONE:
            raise EngineRefused(name or self._layer_name, st["error"])
        return st

    async def queue(self, interval=QUEUE_POLL_CYCLES):
        """Pulse start as soon as no started layer is waiting (``STATUS.queued`` low, read every
        ``interval`` cycles: the simulation is not slowed by a register read every few
        cycles): the layer starts at once from idle, or the cycle the running one ends, its
        setup done meanwhile. Errors show in STATUS once the running layer has ended. On an
        engine without queued starts, once it is idle (a start from idle: the counters
        clear)."""
        hw = await self.hardware()
        await self._until_low("queued" if hw.queued_starts else "busy", interval)
        await self.regs.pulse("start")

    async def idle(self, interval=QUEUE_POLL_CYCLES):
        """Wait until the engine is idle (``STATUS.busy`` low, read every ``interval``
        cycles)."""
        await self._until_low("busy", interval)

    async def _until_low(self, field, interval):
        from cocotb.triggers import ClockCycles

        while (await self.status())[field]:
            await ClockCycles(self.dut.clk, interval)

    async def counters(self):
        import cocotb

        # Read at once: the reads overlap on the bus (the engine answers one a cycle) rather
        # than waiting for each other.
        reads = {reg.lower(): cocotb.start_soon(self.regs.read(reg)) for reg in COUNTERS}
        return {name: await read for name, read in reads.items()}

    async def run_layer(self, layer, x, *, load=True, psum=None, after=None):
        """Run one layer on a CHW input; returns a LayerResult. ``psum``: int32 partial sums
        of the conv output (CHW) that the engine adds to its accumulators (``acc_in``);
        ``after``: the next layer, whose parameters are sent while this one runs;
        ``load=False``: the parameters are in the memories already, where they were last
        placed. Raises EngineRefused."""
        hw = await self.hardware()
        if load:
            await self.load(layer)
        await self.configure(layer, acc_in=psum is not None)
        self._layer_name = layer.name
        await self.start(layer.name)
        self.preload(after, self.placement_of(layer))
        if psum is not None:
            await self.acc.send(pack_acc(psum, hw.pe))
        await self.source.send(pack_input(x, hw.simd, row_pitch(layer, hw.simd, hw.packing)))
        frame = await self.sink.recv()
        while (await self.status())["busy"]:
            pass
        st = await self.status()
        if st["tlast_error"] or st["load_error"]:
            raise RuntimeError(f"layer '{layer.name}': engine status {st}")
        y = unpack_output(frame.tdata, layer)
        return LayerResult(y, await self.counters())
