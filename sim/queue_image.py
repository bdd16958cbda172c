"""Host side of the layer queue (:mod:`rtl.dma_engine`): a memory image of layer descriptors,
register lists, parameter packets and feature-map buffers.

:class:`QueueImage` lays out the buffers from a base address, each aligned to the memory bus,
and writes the descriptors (:data:`rtl.dma_regs.DESCRIPTOR`) in the order the layers are added,
each pointing at the next. The formats are the engine's own (:mod:`sim.engine_driver`): the
input buffer holds the input stream's words, the output buffer the output words (PE bytes
requantized, 4 PE bytes raw), so a layer's output buffer is the next layer's input buffer when
the two formats agree (:func:`chains`).

>>> img = QueueImage(hw)                                 # doctest: +SKIP
>>> src = img.put_input(layer, x)                        # doctest: +SKIP
>>> out = img.add_layer(layer, src)                      # doctest: +SKIP
>>> memory = img.chunks                                   # {address: bytes}  # doctest: +SKIP
"""

from dataclasses import dataclass, field

import numpy as np

from model.network import ConvLayer, PoolLayer
from rtl.dma_regs import DESC_FIELD_WIDTH, DESC_WORDS, DESCRIPTOR, FLAGS
from rtl.engine_regs import REGMAP
from rtl.weights import HEADER_KIND_SHIFT, KIND_WEIGHTS
from sim.engine_driver import (HardwareConfig, ParamPlacer, Placement, conv_shape, input_words,
                               layer_fields, output_shape, pack_input, param_bytes, row_pitch)

__all__ = ["QueueImage", "Region", "LayerEntry", "output_bytes", "chains", "QueueImageError",
           "NetworkImage", "network_image", "read_output"]

#: Byte alignment of every buffer (at least the bus; a cache line, so that a CPU's cache
#: maintenance covers whole buffers).
BUFFER_ALIGN = 64


def _packing(hw, packing=None) -> bool:
    """Whether a layer may run packed: the engine's ``packing``, unless ``packing`` says no."""
    return hw.get("packing", True) and (packing is None or bool(packing))


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

    def overlaps(self, other: "Region") -> bool:
        """The two regions' spans (first to last byte) share a byte."""
        return self.addr < other.addr + other.size and other.addr < self.addr + self.size


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


def chains(before, after, hw, packing=None) -> bool:
    """True when ``before``'s output buffer is ``after``'s input buffer as it stands: the
    output is requantized and ``after`` takes the plain format with pixels as long
    (``packing`` False: ``after`` run in the plain format even where the engine would pack
    it)."""
    if getattr(before, "raw", False):
        return False
    if row_pitch(after, hw["simd"], _packing(hw, packing)) is not None:
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
        self.placer = ParamPlacer(HardwareConfig(
            pe=hw["pe"], simd=hw["simd"], param_width=hw["param_width"],
            weight_depth=hw["weight_depth"], channel_depth=hw["channel_depth"],
            packing=hw.get("packing", True), queued_starts=hw.get("queued_starts", True)))
        self._running = None        # the Placement of the layer before (it may still run)

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

    def registers(self, layer, acc_in=False, placement=None, packing=None) \
            -> list[tuple[int, int]]:
        """(offset, value) of every register write the layer needs; its parameters' bases
        those of ``placement`` (default 0); ``packing`` False: the plain format."""
        hw = self.hw
        pairs = [(REGMAP[reg].offset, REGMAP[reg].pack(fields)) for reg, fields in
                 layer_fields(layer, acc_in, hw["simd"], _packing(hw, packing)).items()]
        bases = placement or Placement()
        pairs += [(REGMAP["WEIGHT_BASE"].offset, bases.weight_base),
                  (REGMAP["CHAN_BASE"].offset, bases.chan_base)]
        return pairs

    def put_input(self, layer, x, packing=None) -> int:
        """Place the CHW input ``x`` of ``layer`` in the engine's input format (packed where
        the engine packs the layer, unless ``packing`` is False); returns its address."""
        simd = self.hw["simd"]
        return self.put(pack_input(x, simd, row_pitch(layer, simd, _packing(self.hw, packing))))

    def input_region(self, layer, addr, packing=None) -> Region:
        """The contiguous input buffer of ``layer`` at ``addr``."""
        return Region(addr, input_words(layer, self.hw["simd"], _packing(self.hw, packing))
                      * self.hw["simd"])

    def add_layer(self, layer, source, *, psum=None, output=None, packing=None) -> Region:
        """Append a descriptor running ``layer`` on the input buffer at ``source`` (an address
        or a :class:`Region`); ``psum``: its partial sums (raw output words, ``acc_in``), an
        address (a contiguous buffer) or a :class:`Region`;
        ``output``: where the output goes (default a new buffer); ``packing`` False: run it
        in the plain format even where the engine would pack it. Returns the output region.

        Its parameters go where they spare the words of the layer before (which may still run
        when they load); where they cannot, the descriptor waits for that layer to end
        (``wait``). Parameters resident from an earlier descriptor are not sent again. Its
        input is read ahead (``ahead``) unless it overlaps the output of the descriptor
        before."""
        hw = self.hw
        if not isinstance(layer, (ConvLayer, PoolLayer)):
            raise QueueImageError(f"layer '{getattr(layer, 'name', layer)}': the queue runs "
                                  f"ConvLayer and PoolLayer, not {type(layer).__name__}")
        src = source if isinstance(source, Region) else \
            self.input_region(layer, source, packing)
        out = output or Region(self.alloc(output_bytes(layer, hw["pe"])),
                               output_bytes(layer, hw["pe"]))
        words = dict.fromkeys(DESCRIPTOR, 0)
        flags = 0
        placement = None
        if isinstance(layer, ConvLayer):
            try:
                placement = self.placer.place(layer, keep=self._running, packing=packing)
                if placement is None:
                    flags |= 1 << FLAGS["wait"]
                    placement = self.placer.place(layer, packing=packing)
            except ValueError as exc:       # constants out of the engine's range
                raise QueueImageError(str(exc)) from None
            for beats in placement.packets:
                kind = "weights" if beats[0] >> HEADER_KIND_SHIFT == KIND_WEIGHTS \
                    else "channels"
                data = param_bytes(beats, hw["param_width"])
                words[kind] = self.put(data)
                words[{"weights": "weight_bytes", "channels": "channel_bytes"}[kind]] = \
                    len(data)
        self._running = placement
        regs = self.registers(layer, acc_in=psum is not None, placement=placement,
                              packing=packing)
        words["reg_count"] = len(regs)
        words["regs"] = self.put(b"".join(o.to_bytes(4, "little") + v.to_bytes(4, "little")
                                          for o, v in regs))
        acc = psum
        if psum is not None and not isinstance(psum, Region):
            cout, oh, ow = conv_shape(layer)
            acc = Region(psum, oh * ow * _groups(cout, hw["pe"]) * hw["pe"] * 4)
        if acc is not None:
            words.update(acc_addr=acc.addr, acc_row_bytes=acc.row_bytes, acc_stride=acc.stride,
                         acc_rows=acc.rows)
        before = self.entries[-1].output if self.entries else None
        if before is None or not any(r is not None and r.overlaps(before) for r in (src, acc)):
            flags |= 1 << FLAGS["ahead"]
        words["flags"] = flags
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


@dataclass
class NetworkImage:
    """A batch through a chain of layers as one queue: the image, and where each layer's
    outputs are (``outputs[layer index][sample]``: a :class:`Buffer`; for a folded dense
    layer, ``outputs[layer index][group]`` a Region whose pixels are the group's samples, see
    :meth:`read`)."""
    image: QueueImage
    layers: list
    outputs: list
    folds: dict = field(default_factory=dict)

    def read(self, memory_read, index) -> np.ndarray:
        """The batch's outputs of layer ``index``, ``(N, C, H, W)``."""
        hw = self.image.hw
        fold = self.folds.get(index)
        layer = self.layers[index]
        if fold is None:
            dtype = np.int32 if getattr(layer, "raw", False) else np.dtype(layer.out_dtype)
            return np.stack([buf.read(memory_read, dtype) for buf in self.outputs[index]])
        folded, n = fold
        groups = [read_output(memory_read, region, folded.layer, hw["pe"])
                  for region in self.outputs[index]]
        return folded.unfold(np.stack(groups), n)


def _multi_pass(layer, hw) -> bool:
    from sim.compiler import CompileError, compile_layer
    try:
        return len(compile_layer(layer, hw).passes) > 1
    except CompileError:
        return False


@dataclass(frozen=True)
class Buffer:
    """A batch sample's CHW buffer in memory, in the engine's HWC layout: ``pixel_bytes`` per
    pixel (the channels padded to whole words), ``elem`` bytes a value (1, or 4 for int32),
    and a border of ``top``/``bottom`` rows and ``left``/``right`` columns around the map,
    filled before the queue runs (explicit padding that a later pass reads)."""
    base: int
    channels: int
    height: int
    width: int
    elem: int
    pixel_bytes: int
    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @property
    def rows_total(self):
        return self.top + self.height + self.bottom

    @property
    def cols_total(self):
        return self.left + self.width + self.right

    @property
    def size(self):
        return self.rows_total * self.cols_total * self.pixel_bytes

    def whole(self):
        """The compiler's Region of the whole map (the border excluded)."""
        from sim.compiler import Region as Box
        return Box("", (0, self.channels), (0, self.height, 1), (0, self.width, 1))

    def region(self, box, slice_bytes, bus_bytes) -> Region | None:
        """The DMA region of the compiler's Region ``box`` (:class:`sim.compiler.Region`, in
        the map's coordinates; positions outside the map fall in the border) when it is one:
        whole pixels in a window of rows and columns, or a channel slice of ``slice_bytes``
        per pixel over all rows and columns of the buffer; None otherwise (steps, positions
        past the border, a slice that starts off a bus word, a slice and a window at once)."""
        c0, c1 = box.channels
        (r0, r1, rs), (q0, q1, qs) = box.rows, box.cols
        r0, r1, q0, q1 = r0 + self.top, r1 + self.top, q0 + self.left, q1 + self.left
        rows, cols = self.rows_total, self.cols_total
        if rs != 1 or qs != 1 or r0 < 0 or q0 < 0 or r1 > rows or q1 > cols \
                or r1 <= r0 or q1 <= q0:
            return None
        pb = self.pixel_bytes
        if c0 == 0 and slice_bytes == pb:
            if (q0, q1) == (0, cols):
                return Region(self.base + r0 * cols * pb, (r1 - r0) * cols * pb)
            if (cols * pb) % bus_bytes or (q0 * pb) % bus_bytes:
                return None
            return Region(self.base + (r0 * cols + q0) * pb, (q1 - q0) * pb, cols * pb, r1 - r0)
        offset = c0 * self.elem
        if (r0, r1, q0, q1) != (0, rows, 0, cols) or offset % bus_bytes \
                or pb % bus_bytes or offset + slice_bytes > pb:
            return None
        return Region(self.base + offset, slice_bytes, pb, rows * cols)

    def read(self, memory_read, dtype) -> np.ndarray:
        """The CHW map (the border cut off) from memory, ``memory_read(addr, n) -> bytes``."""
        dtype = np.dtype(dtype).newbyteorder("<")
        raw = np.frombuffer(memory_read(self.base, self.size), dtype)
        pixels = raw.reshape(self.rows_total, self.cols_total, -1)
        y = pixels[self.top:self.top + self.height, self.left:self.left + self.width,
                   :self.channels]
        return y.transpose(2, 0, 1).astype(dtype.newbyteorder("="))


def _buffer(img, shape, dtype, lanes, border=None) -> Buffer:
    """A new buffer; ``border`` ``(top, bottom, left, right, fill)`` around the map, every
    byte of it ``fill``."""
    c, h, w = shape
    elem = np.dtype(dtype).itemsize
    pixel = _groups(c, lanes) * lanes * elem
    if border is None or not any(border[:4]):
        return Buffer(img.alloc(h * w * pixel), c, h, w, elem, pixel)
    t, b, l, r, fill = border
    size = (t + h + b) * (l + w + r) * pixel
    return Buffer(img.put(bytes([fill & 0xFF]) * size), c, h, w, elem, pixel, t, b, l, r)


def _border(schedule):
    """``(top, bottom, left, right, fill)`` of the explicit padding the schedule's passes
    read around their input ``x`` (zeros when they read none)."""
    c, h, w = schedule.input_shape
    t = b = l = r = 0
    fill = 0
    for p in schedule.passes:
        box = p.source
        if box.buffer != "x":
            continue
        (r0, r1, rs), (q0, q1, qs) = box.rows, box.cols
        last_r = r0 + (max(1, -(-(r1 - r0) // rs)) - 1) * rs
        last_q = q0 + (max(1, -(-(q1 - q0) // qs)) - 1) * qs
        t, b = max(t, -r0), max(b, last_r + 1 - h)
        l, r = max(l, -q0), max(r, last_q + 1 - w)
        if min(r0, q0) < 0 or last_r >= h or last_q >= w:
            fill = box.fill
    return t, b, l, r, fill


def _schedule_passes(img, layer, schedule, srcs, first_input, y_border):
    """Descriptors of a multi-pass layer for every sample, pass after pass (each pass's
    parameters sent once for the batch); ``srcs`` the samples' input Buffers (None for the
    network's input ``first_input``: the host prepares each pass's input); ``y_border`` the
    border the next layer reads around the output. Returns the output Buffers."""
    hw = img.hw
    pe, simd = hw["pe"], hw["simd"]
    bus = img.bus_bytes
    lanes = max(pe, simd)
    n = len(srcs) if srcs is not None else first_input.shape[0]
    if first_input is not None and schedule.input_fill is not None:
        size, fill = schedule.input_fill
        flat = first_input.reshape(n, -1)
        first_input = np.pad(flat, ((0, 0), (0, size - flat.shape[1])), constant_values=fill)
    elif schedule.input_fill is not None:
        raise QueueImageError(f"layer '{layer.name}': its input is flattened and padded "
                              f"(a dense layer as kernel taps); the host must do that")
    buffers = []
    for i in range(n):
        bufs = {}
        for name, (shape, dtype) in schedule.buffers.items():
            if name == "y":
                bufs[name] = _buffer(img, layer.out_shape, dtype, pe, y_border)
            else:
                bufs[name] = _buffer(img, shape, dtype, pe if np.dtype(dtype).itemsize == 4
                                     else lanes)
        if first_input is None:
            bufs["x"] = srcs[i]
        buffers.append(bufs)

    def fail(p, what):
        raise QueueImageError(f"layer '{layer.name}': its pass {p.what or p.layer.name!r} "
                              f"{what}; the queue's DMA regions cannot express it")

    for p in schedule.passes:
        cin = p.layer.in_shape[0]
        cout = output_shape(p.layer)[0]
        for i, bufs in enumerate(buffers):
            if p.source.buffer == "x" and first_input is not None:
                # the network's input: the host prepares each pass's input in the image
                xin = p.source.take({"x": first_input[i:i + 1].reshape(
                    1, *schedule.input_shape)})[0]
                src = img.input_region(p.layer, img.put_input(p.layer, xin))
                plain = None
            else:
                plain = False       # the buffer before holds whole pixels: the plain format
                src = bufs[p.source.buffer].region(p.source, _groups(cin, simd) * simd, bus)
                if src is None:
                    fail(p, f"reads {p.source}")
            acc = None
            if p.psum is not None:
                acc = bufs[p.psum.buffer].region(p.psum, _groups(cout, pe) * pe * 4, bus)
                if acc is None:
                    fail(p, f"adds {p.psum}")
            target = bufs[p.target.buffer]
            out = target.region(p.target, _groups(cout, pe) * pe * target.elem, bus)
            if out is None:
                fail(p, f"writes {p.target}")
            img.add_layer(p.layer, src, psum=acc, output=out, packing=plain)
    return [b["y"] for b in buffers]


def network_image(layers, x, hw, base=0x1000) -> NetworkImage:
    """The descriptors running the batch ``x`` (N, C, H, W) through ``layers`` layer after
    layer, every sample of a layer before the next layer (its parameters sent once), each
    layer's outputs the next layer's inputs in memory; a dense layer (a conv over its whole
    input) runs its samples folded into passes of many (:class:`sim.compiler.Folded`), as the
    stream-driven backend runs it. A layer the compiler splits into passes
    (:func:`sim.compiler.compile_layer`) runs pass after pass for the whole batch, its
    intermediate buffers (partial sums) in memory, each pass's slice of channels or window of
    rows a DMA region (:meth:`Buffer.region`); the explicit padding its passes read lies in a
    border around the layer before's output, filled with the input zero point in the image
    (that layer writes the inside); for the network's first layer the host prepares each
    pass's input (crops, padding) in the image. QueueImageError names a layer the queue cannot
    run this way (a pass whose region is not a DMA region, an input format that differs from
    the output before it)."""
    from sim.compiler import CompileError, Folded, compile_layer

    x = np.asarray(x)
    n = x.shape[0]
    img = QueueImage(hw, base)
    pe = hw["pe"]
    bus = img.bus_bytes
    schedules = []
    for layer in layers:
        try:
            schedules.append(compile_layer(layer, hw))
        except CompileError as exc:
            raise QueueImageError(str(exc)) from None

    def multi(schedule):
        return len(schedule.passes) != 1 or schedule.input_fill is not None \
            or any(name != "y" for name in schedule.buffers)

    borders = [_border(sch) if multi(sch) else None for sch in schedules[1:]] + [None]
    first = layers[0]
    srcs = None                 # the samples' input Buffers (None: the network's input)
    net = NetworkImage(img, list(layers), [])
    before = None
    for index, (layer, schedule) in enumerate(zip(layers, schedules)):
        plain = None
        if before is not None and not multi(schedule) and not chains(before, layer, hw):
            # the engine would pack it: run it in the plain format, which the output before is
            if not chains(before, layer, hw, packing=False):
                raise QueueImageError(f"layer '{layer.name}': its input format differs from "
                                      f"the output of '{before.name}' (the host must convert "
                                      f"it)")
            plain = False
        if multi(schedule):
            outs = _schedule_passes(img, layer, schedule, srcs, x if srcs is None else None,
                                    borders[index])
            net.outputs.append(outs)
            srcs, before = outs, layer
            continue
        run = schedule.passes[0].layer
        if srcs is None:
            inputs = [img.input_region(first, img.put_input(first, xi)) for xi in x]
        else:
            inputs = [buf.region(buf.whole(), buf.pixel_bytes, bus) for buf in srcs]
            if any(r is None for r in inputs):
                raise QueueImageError(f"layer '{layer.name}': its input is not a DMA region")
        fold = Folded.of(run, n, hw) if srcs is not None else None
        if fold is not None and not chains(before, fold.layer, hw):
            plain = False               # as above: the folded layer in the plain format
        if fold is not None:
            # the samples' inputs are one block: each group of `per` of them is one map
            per = fold.samples
            groups = -(-n // per)
            size = inputs[0].row_bytes
            if any(r.addr != inputs[0].addr + i * size or r.rows != 1
                   for i, r in enumerate(inputs)):
                raise QueueImageError(f"layer '{layer.name}': its samples' inputs are not "
                                      f"one block")
            if groups * per > n:                  # zero samples complete the last group
                pad = img.put(bytes(size * (groups * per - n)))
                if pad != inputs[0].addr + n * size:
                    raise QueueImageError(f"layer '{layer.name}': no room to pad its batch")
            outs = [img.add_layer(fold.layer, Region(inputs[0].addr + g * per * size,
                                                     per * size), packing=plain)
                    for g in range(groups)]
            net.folds[index] = (fold, n)
            net.outputs.append(outs)
            if index + 1 < len(layers):
                raise QueueImageError(f"layer '{layers[index + 1].name}': it follows the "
                                      f"dense layer '{layer.name}', whose samples run folded; "
                                      f"the queue image ends with it")
            continue
        cout, oh, ow = output_shape(run)
        lane = 4 if getattr(run, "raw", False) else 1
        dtype = np.int32 if lane == 4 else np.int8
        size = output_bytes(run, pe)
        border = borders[index]
        if border is None or not any(border[:4]):
            # one block: the next layer may fold the samples together
            block = img.alloc(n * size) if size % bus == 0 else None
            outs = [Buffer(block + i * size, cout, oh, ow, lane, size // (oh * ow))
                    if block is not None else _buffer(img, (cout, oh, ow), dtype, pe)
                    for i in range(n)]
        else:
            outs = [_buffer(img, (cout, oh, ow), dtype, pe, border) for _ in range(n)]
        for src, out in zip(inputs, outs):
            region = out.region(out.whole(), out.pixel_bytes, bus)
            if region is None:
                raise QueueImageError(f"layer '{layer.name}': its output cannot go inside the "
                                      f"padding the next layer reads")
            img.add_layer(run, src, output=region, packing=plain)
        net.outputs.append(outs)
        srcs, before = outs, run
    return net
