"""cocotb tests of the conv engine's refusals and error flags at their boundaries, and their
pytest entries.

Every limit the engine checks (:meth:`rtl.engine.ConvEngine._check` and the max-pool unit's
checks, :class:`rtl.maxpool.PoolError`) is tested at its edge, for every comparison it makes
(each axis, each side, input and output channels, 0 where 0 is illegal): the largest legal
value is accepted and runs bit-exact against :func:`model.network.run_layer`, and the first
illegal value is refused with exactly its ``STATUS.error`` code, while the input stream's
``tready`` and the output's ``tvalid`` stay low throughout; a legal layer then runs again.
Every boundary is derived from the engine's parameters, read from its ``HW_*`` registers
(:func:`conv_boundaries`, :func:`pool_boundaries`), so the same tests fit any configuration
that is large enough (:func:`test_boundaries_cover_every_code` checks the test builds).

The error flags are raised in each way they can be: ``STATUS.tlast_error`` by an input
``tlast`` one word or one pixel early (moved, or an extra one) and by none at all, for a conv
and for the max-pool alone (the output is still bit-exact: the beat count ends the map), and
not by a correct one; ``STATUS.load_error`` by a parameter packet of an unknown kind, a weight
packet and a channel-constant packet that end inside a word, and a word addressed one past the
end of the weight memory or of the channel-constant memory, while the last word of each memory
is accepted. A refused word is never written (the loaded layer reruns bit-exact without a
reload), the flag stays set through later packets and clears at the next start.

pytest runs everything on Icarus (:data:`LIMITS_CONFIG`, SIMD = 2 PE) and on Verilator
(:data:`LIMITS_CONFIG_NARROW`, PE = 2 SIMD and ``narrow_registers``: illegal values are kept
as a sticky bit and must still be refused), and the pool-mode refusals on the iCE40
configuration, which has no max-pool unit (``POOL_NO_UNIT``).
"""

from dataclasses import asdict, dataclass, field

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from model.network import MaxPool, run_layer
from rtl.engine_regs import POOL_ERROR_BASE, REGMAP, EngineError, PoolMode
from rtl.weights import (BEAT_WIDTH, CHANNEL_BEATS, CHANNEL_VALUE_WIDTH, HEADER_KIND_SHIFT,
                         KIND_CHANNELS, KIND_WEIGHTS, word_beats)
from rtl.limits import first_refusal
from sim.engine_driver import (EngineDriver, EngineRefused, pack_channels, pack_input,
                              pack_weights, param_bytes, register_fields, row_pitch,
                              unpack_output)
from sim.testing import Case, first_mismatch, make_layer
from tb.maxpool_cases import Case as MapCase
from tb.maxpool_cases import expected_error

CLOCK_PERIOD_NS = 10
RESET_CYCLES = 4
#: Icarus's build: small maxima that differ from each other (a check that reads the wrong
#: limit fails), and memories for which a layer needing exactly their size and one needing a
#: word more exist (weights: 24 = a 3x4 kernel over two input groups, 25 = 5x5; line buffer:
#: 32 and 33 words of window span); a 32-bit parameter port, so that a weight word takes two
#: beats (Verilator's build has the default, one beat per weight word).
LIMITS_CONFIG = dict(pe=2, simd=4, max_kernel=5, max_width=8, max_height=7, max_channels=6,
                     weight_depth=24, line_buffer_depth=32, max_stride=3, max_dilation=2,
                     pool_window_slots=2, pool_max_stride=4, param_width=32)
#: Verilator's build: PE = 2 SIMD (the pool-alone input is packed by the width converter),
#: other maxima and memories, and configuration registers that keep only the bits of their
#: legal values.
LIMITS_CONFIG_NARROW = dict(pe=4, simd=2, max_kernel=6, max_width=9, max_height=6,
                            max_channels=7, weight_depth=24, line_buffer_depth=64, max_stride=2,
                            max_dilation=2, pool_window_slots=2, pool_max_stride=3,
                            narrow_registers=True)
#: Cycles the input and output must stay idle after a refusal was seen.
QUIET_CYCLES = 40
#: Watchdog of one layer, from loading to done: these layers take a few thousand cycles.
LAYER_TIMEOUT_NS = 400_000 * CLOCK_PERIOD_NS
SEED = 20250611


# --- limits and boundaries (pure Python) --------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """The engine parameters the boundaries derive from (its ``HW_*`` registers)."""
    pe: int
    simd: int
    max_kernel: int
    max_stride: int
    max_dilation: int
    max_height: int
    max_width: int
    max_channels: int
    weight_depth: int
    line_buffer_depth: int
    pool_window_slots: int
    pool_max_stride: int
    param_width: int
    channel_depth: int
    packing: int = 1
    queued_starts: int = 1

    @property
    def cin_groups(self):
        return -(-self.max_channels // self.simd)

    @property
    def cout_groups(self):
        return -(-self.max_channels // self.pe)

    @classmethod
    def of_engine(cls, engine):
        """The limits of a (not elaborated) :class:`rtl.engine.ConvEngine`."""
        return cls(**{name: getattr(engine, name) for name in cls.__dataclass_fields__})

    @classmethod
    async def read(cls, drv):
        """The limits of the simulated engine, from its ``HW_*`` registers."""
        values = {}
        for reg in ("HW_ARRAY", "HW_SIZE", "HW_CHANNELS", "HW_WEIGHT_DEPTH", "HW_LINE_BUFFER",
                    "HW_POOL", "HW_PARAMS", "HW_CHANNEL_DEPTH"):
            values.update((name.removeprefix("hw_"), value)
                          for name, value in (await drv.regs.read_fields(reg)).items())
        return cls(**values)


@dataclass
class Refusal:
    """The first illegal value of a check: register fields written over the legal layer's
    registers (or over those of ``case``, a layer of its own), and the expected code."""
    code: str
    fields: dict = field(default_factory=dict)
    case: Case | None = None

    def label(self):
        what = self.case.label() if self.case is not None else ""
        return f"{self.code} {what}{self.fields or ''}"


@dataclass
class Boundary:
    """One check's edge: a legal layer at its last legal value (run with ``fields`` written
    over its registers) and the refusals just past it."""
    name: str
    legal: Case
    refusals: list
    fields: dict = field(default_factory=dict)


def _fit(needed, maximum):
    """(length, begin pad) covering ``needed`` positions with at most ``maximum`` of input."""
    length = min(needed, maximum)
    return length, needed - length


def _keff(k, d):
    return (k - 1) * d + 1


def weight_words(case, lim):
    """Weight memory words of a conv case: ceil(Cout/PE) * ceil(Kh * Kw * Cp / SIMD), ``Cp``
    Cin packed (:func:`packing`), else ceil(Cin/SIMD) * SIMD."""
    cp = case.cin if packing(case, lim.simd)["pack"] else -(-case.cin // lim.simd) * lim.simd
    return -(-case.cout // lim.pe) * -(-case.k[0] * case.k[1] * cp // lim.simd)


def span_words(case, lim):
    """Line-buffer words of a conv case: ((Keff_h - 1) * W + Keff_w) * ceil(Cin/SIMD), or
    packed (:func:`packing`) ceil(((Keff_h - 1) * pitch + Keff_w * Cin) / SIMD) + 1."""
    keh, kew = (_keff(k, d) for k, d in zip(case.k, case.dilation))
    fields = packing(case, lim.simd)
    if fields["pack"]:
        return -(-((keh - 1) * fields["in_row_bytes"] + kew * case.cin) // lim.simd) + 1
    return ((keh - 1) * case.w + kew) * -(-case.cin // lim.simd)


def _weights_case(lim, words):
    """A conv needing exactly ``words`` weight words whose window fits the line buffer, on a
    map of one window (None if there is none)."""
    for og in range(1, lim.cout_groups + 1):
        for ig in range(1, lim.cin_groups + 1):
            for kh in range(1, lim.max_kernel + 1):
                for kw in range(1, lim.max_kernel + 1):
                    h, top = _fit(kh, lim.max_height)
                    w, left = _fit(kw, lim.max_width)
                    case = Case(min(ig * lim.simd, lim.max_channels),
                                min(og * lim.pe, lim.max_channels), h, w, k=(kh, kw),
                                pads=(top, left, 0, 0))
                    if weight_words(case, lim) != words:
                        continue
                    if span_words(case, lim) <= lim.line_buffer_depth:
                        return case
    return None


def _line_buffer_case(lim, span):
    """The conv with the fewest MAC operations whose window span is exactly ``span`` words
    and whose weights fit (None if there is none)."""
    best = None
    for g in range(1, lim.cin_groups + 1):
        for kh in range(1, lim.max_kernel + 1):
            for dh in range(1, lim.max_dilation + 1):
                for kw in range(1, lim.max_kernel + 1):
                    for dw in range(1, lim.max_dilation + 1):
                        keh, kew = _keff(kh, dh), _keff(kw, dw)
                        for w in range(1, lim.max_width + 1):
                            if kh * kw * g > lim.weight_depth:
                                continue
                            h, top = _fit(keh, lim.max_height)
                            left = max(kew - w, 0)
                            case = Case(min(g * lim.simd, lim.max_channels), 1, h, w,
                                        k=(kh, kw), dilation=(dh, dw), pads=(top, left, 0, 0))
                            if span_words(case, lim) != span:
                                continue
                            cost = (w + left - kew + 1) * kh * kw * g
                            if best is None or cost < best[0]:
                                best = (cost, case)
    return None if best is None else best[1]


def conv_boundaries(lim):
    """Every conv refusal at its edge (:meth:`rtl.engine.ConvEngine._check`), for ``lim``."""
    k, d, s = lim.max_kernel, lim.max_dilation, lim.max_stride
    if k < 3 or d < 2:
        raise ValueError(f"the boundaries need max_kernel >= 3 and max_dilation >= 2, "
                         f"not {k} and {d}")
    out = []
    for axis, (kname, dname, sname, nname) in enumerate(
            (("kernel_h", "dilation_h", "stride_h", "in_height"),
             ("kernel_w", "dilation_w", "stride_w", "in_width"))):
        def pair(a, b=1):
            return (a, b) if axis == 0 else (b, a)

        def shape(needed):
            """(h, w, pads) for a map covering `needed` positions along this axis."""
            n, pad = _fit(needed, lim.max_height if axis == 0 else lim.max_width)
            h, w = pair(n)
            return h, w, (pad, 0, 0, 0) if axis == 0 else (0, pad, 0, 0)
        h, w, pads = shape(k)
        out.append(Boundary(f"KERNEL {kname}", Case(1, 1, h, w, k=pair(k), pads=pads), [
            Refusal("KERNEL", {kname: k + 1}), Refusal("KERNEL", {kname: 0})]))
        h, w, pads = shape(d + 1)
        out.append(Boundary(f"DILATION {dname}",
                            Case(1, 1, h, w, k=pair(2), dilation=pair(d), pads=pads), [
                                Refusal("DILATION", {dname: d + 1}),
                                Refusal("DILATION", {dname: 0})]))
        h, w, pads = shape(s + 1)
        out.append(Boundary(f"STRIDE {sname}", Case(1, 1, h, w, k=(1, 1), stride=pair(s),
                                                    pads=pads), [
            Refusal("STRIDE", {sname: s + 1}), Refusal("STRIDE", {sname: 0})]))
        n_max = lim.max_height if axis == 0 else lim.max_width
        h, w = pair(n_max)
        out.append(Boundary(f"SIZE {nname}", Case(1, 1, h, w, k=(1, 1)), [
            Refusal("SIZE", {nname: n_max + 1}), Refusal("SIZE", {nname: 0})]))
    c = lim.max_channels
    out.append(Boundary("CHANNELS in_channels", Case(c, 1, 1, 2, k=(1, 1)), [
        Refusal("CHANNELS", {"in_channels": c + 1}), Refusal("CHANNELS", {"in_channels": 0})]))
    out.append(Boundary("CHANNELS out_channels", Case(1, c, 2, 1, k=(1, 1), out="int32"), [
        Refusal("CHANNELS", {"out_channels": c + 1}), Refusal("CHANNELS", {"out_channels": 0})]))
    # Pads of Keff - 1 on every side, with a dilated height (Keff_h = d + 1, above the kernel's
    # 2) and Keff_w = 2: a pad checked against the undilated kernel or the other axis fails.
    keh, kew = _keff(2, d), 2
    out.append(Boundary("PAD every side", Case(2, 3, 2, 2, k=(2, 2), dilation=(d, 1),
                                               pads=(keh - 1, kew - 1, keh - 1, kew - 1)), [
        Refusal("PAD", {f"pad_{side}": keff}) for side, keff in
        (("top", keh), ("left", kew), ("bottom", keh), ("right", kew))]))
    # A 1x1 map padded to exactly Keff on both axes (Keff 3 and 2d + 1), each pad below Keff.
    keh, kew = _keff(3, 1), _keff(3, d)
    pads = ((keh - 1) // 2, (kew - 1) // 2, keh - 1 - (keh - 1) // 2, kew - 1 - (kew - 1) // 2)
    legal = Case(3, 2, 1, 1, k=(3, 3), dilation=(1, d), pads=pads)
    out.append(Boundary("NO_OUTPUT both axes", legal, [
        Refusal("NO_OUTPUT", {f"pad_{side}": pad - 1})
        for side, pad in zip(("top", "left", "bottom", "right"), pads) if pad > 0]))
    # The base addresses: a layer of two groups each way reads the last words of both
    # memories; one word further is refused, and so is the largest base.
    case = Case(min(lim.simd + 1, lim.max_channels), min(lim.pe + 1, lim.max_channels), 3, 3,
                k=(2, 2), pads=(0, 0, 1, 1))
    words, groups = weight_words(case, lim), -(-case.cout // lim.pe)
    out.append(Boundary("WEIGHTS CONSTANTS bases", case, [
        Refusal("WEIGHTS", {"weight_base": lim.weight_depth - words + 1}),
        Refusal("WEIGHTS", {"weight_base": (1 << 32) - 1}),
        Refusal("CONSTANTS", {"chan_base": lim.channel_depth - groups + 1}),
        Refusal("CONSTANTS", {"chan_base": (1 << 32) - 1})],
        fields={"weight_base": lim.weight_depth - words,
                "chan_base": lim.channel_depth - groups}))
    for code, find, size in (("WEIGHTS", _weights_case, lim.weight_depth),
                             ("LINE_BUFFER", _line_buffer_case, lim.line_buffer_depth)):
        legal, over = find(lim, size), find(lim, size + 1)
        if legal is None or over is None:
            raise ValueError(f"no layer needs exactly {size} and {size + 1} words for {code}")
        out.append(Boundary(code, legal, [Refusal(code, case=over)]))
    out += pack_boundaries(lim)
    return out


def pack_boundaries(lim):
    """The packing refusals at their edges: horizontal dilation 1 (2 refused), the widest row
    pitch (one more refused), a pitch of exactly ``W * Cin`` (one less refused) and an aligned
    pitch (the next one refused), on layers with fewer channels than SIMD."""
    simd = lim.simd
    c = simd - 1
    out = []
    legal = Case(c, 2, 5, 4, k=(3, 3), pads=(1, 1, 1, 1))
    fields = packing(legal, simd)
    assert fields["pack"], legal.label()
    out.append(Boundary("PACK_DILATION", legal, [
        Refusal("PACK_DILATION", {**fields, "dilation_w": 2})], fields=fields))
    # A 1 x 1 kernel on one row: the widest pitch is -1 mod SIMD, so Kw * Cin = SIMD - 1 is
    # aligned with it.
    widest = lim.max_width * lim.cin_groups * simd + simd - 1
    legal = Case(c, 1, 1, 3, k=(1, 1))
    fields = dict(pack=1, in_row_bytes=widest)
    out.append(Boundary("PACK_PITCH", legal, [
        Refusal("PACK_PITCH", {**fields, "in_row_bytes": widest + 1})], fields=fields))
    # Kw * Cin = 3 * (SIMD - 1) = -3 (mod SIMD), so a pitch of W * Cin with W * Cin = -3
    # (mod SIMD): W = 3 (mod SIMD); the next aligned pitch is SIMD bytes on.
    w = 3 if simd > 3 else simd + 3
    legal = Case(c, 2, 4, w, k=(3, 3), pads=(1, 1, 1, 1))
    fields = dict(pack=1, in_row_bytes=w * c)
    assert (w * c - 3 * c) % simd == 0
    out.append(Boundary("PACK_ALIGN", legal, [
        Refusal("PACK_ALIGN", {**fields, "in_row_bytes": w * c - 1}),
        *([Refusal("PACK_ALIGN", {**fields, "in_row_bytes": w * c + 1})] if simd > 1 else [])],
        fields=fields))
    return out


def pool_boundaries(lim):
    """Every max-pool refusal at its edge (the pool unit's checks, ``POOL_MODE`` and
    ``POOL_RAW``), alone and fused where the pool's map differs, for ``lim``."""
    slots, k, d, ps = lim.pool_window_slots, lim.max_kernel, lim.max_dilation, lim.pool_max_stride

    def stride(keff):
        """The smallest legal stride for a dilated kernel of ``keff`` (Keff <= slots * s)."""
        s = -(-keff // slots)
        if s > ps:
            raise ValueError(f"a pool kernel of {keff} needs stride {s} > {ps}")
        return s
    if k < 3 or d < 2 or slots + 1 > k:
        raise ValueError(f"the pool boundaries need max_kernel >= 3, max_kernel > slots and "
                         f"max_dilation >= 2, not {k}, {slots} and {d}")
    out = []
    alone = lambda c, h, w, pool: Case(c, 0, h, w, alone=True, pool=pool)
    for axis, (a, n_max) in enumerate((("h", lim.max_height), ("w", lim.max_width))):
        def pair(first, other=1):
            return (first, other) if axis == 0 else (other, first)

        def pads(begin, end=0):
            return (begin, 0, end, 0) if axis == 0 else (0, begin, 0, end)
        n_name = "in_height" if axis == 0 else "in_width"
        n, pad = _fit(k, n_max)
        out.append(Boundary(f"POOL_KERNEL pool_kernel_{a}",
                            alone(1, *pair(n), MaxPool(pair(k), pair(stride(k)), pads(pad))), [
            Refusal("POOL_KERNEL", {f"pool_kernel_{a}": k + 1}),
            Refusal("POOL_KERNEL", {f"pool_kernel_{a}": 0})]))
        keff = _keff(2, d)
        out.append(Boundary(f"POOL_DILATION pool_dilation_{a}",
                            alone(2, *pair(min(keff, n_max)),
                                  MaxPool(pair(2), pair(stride(keff)),
                                          pads(max(keff - n_max, 0)), pair(d))), [
            Refusal("POOL_DILATION", {f"pool_dilation_{a}": d + 1}),
            Refusal("POOL_DILATION", {f"pool_dilation_{a}": 0})]))
        out.append(Boundary(f"POOL_STRIDE pool_stride_{a}",
                            alone(1, *pair(min(ps + 2, n_max)), MaxPool(pair(2), pair(ps))), [
            Refusal("POOL_STRIDE", {f"pool_stride_{a}": ps + 1}),
            Refusal("POOL_STRIDE", {f"pool_stride_{a}": 0})]))
        # Alone the pool's map is the input map; fused, the conv output (padding widens it).
        out.append(Boundary(f"POOL_SIZE alone {n_name}",
                            alone(3, *pair(n_max), MaxPool(pair(2), pair(2))), [
            Refusal("POOL_SIZE", {n_name: n_max + 1}), Refusal("POOL_SIZE", {n_name: 0})]))
        out.append(Boundary(f"POOL_SIZE fused conv output {a}",
                            Case(2, 3, *pair(n_max), k=pair(2), pads=pads(1), relu=True,
                                 pool=MaxPool(pair(2), pair(2))), [
            Refusal("POOL_SIZE", {"pad_bottom" if axis == 0 else "pad_right": 1})]))
        # Keff = slots * stride is the most windows open at once; one more tap is too many.
        for s in (1, 2):
            if slots * s + 1 <= k and s <= ps:
                refusals = [Refusal("POOL_WINDOW_SLOTS", {f"pool_kernel_{a}": slots * s + 1})]
                if s > 1:
                    refusals.append(Refusal("POOL_WINDOW_SLOTS", {f"pool_stride_{a}": s - 1}))
                n = min(slots * s + 2, n_max)
                out.append(Boundary(f"POOL_WINDOW_SLOTS {a} stride {s}",
                                    alone(3, *pair(n), MaxPool(pair(slots * s), pair(s))),
                                    refusals))
        # Kernel 2, dilation d, begin pad 1: the first window's taps are -1 and d - 1, so a map
        # of d positions has a tap inside and one of d - 1 none.
        pool = MaxPool(pair(2), pair(stride(keff)), pads(1, 1), pair(d))
        out.append(Boundary(f"POOL_EMPTY_WINDOW alone {a}", alone(2, *pair(d), pool),
                            [Refusal("POOL_EMPTY_WINDOW", {n_name: d - 1})]))
        out.append(Boundary(f"POOL_EMPTY_WINDOW fused {a}",
                            Case(2, 2, *pair(d), k=(1, 1), pool=pool),
                            [Refusal("POOL_EMPTY_WINDOW", {n_name: d - 1})]))
    c = lim.max_channels
    out.append(Boundary("POOL_CHANNELS alone", alone(c, 2, 2, MaxPool(2, 2)), [
        Refusal("POOL_CHANNELS", {"in_channels": c + 1}),
        Refusal("POOL_CHANNELS", {"in_channels": 0})]))
    # Pads of kernel - 1 on every side, with kernels 3 and 2 and a dilated height: a pad
    # checked against the dilated kernel or the other axis fails.
    keh = _keff(3, d)
    out.append(Boundary("POOL_PAD every side",
                        alone(3, keh, 3, MaxPool((3, 2), (stride(keh), stride(2)),
                                                 (2, 1, 2, 1), (d, 1))), [
        Refusal("POOL_PAD", {f"pool_pad_{side}": kernel}) for side, kernel in
        (("top", 3), ("left", 2), ("bottom", 3), ("right", 2))]))
    # A 1x1 map padded to exactly Keff (3 and 2d + 1), each pad below the kernel.
    kew = _keff(3, d)
    pads = (1, (kew - 1) // 2, 1, kew - 1 - (kew - 1) // 2)
    out.append(Boundary("POOL_NO_OUTPUT alone",
                        alone(2, 1, 1, MaxPool(3, (stride(3), stride(kew)), pads, (1, d))), [
        Refusal("POOL_NO_OUTPUT", {f"pool_pad_{side}": pad - 1})
        for side, pad in zip(("top", "left", "bottom", "right"), pads)]))
    out.append(Boundary("POOL_NO_OUTPUT fused",
                        Case(2, 2, 2, 2, k=(1, 1), pool=MaxPool(3, stride(3), (1, 1, 0, 0))), [
        Refusal("POOL_NO_OUTPUT", {"pool_pad_top": 0}),
        Refusal("POOL_NO_OUTPUT", {"pool_pad_left": 0})]))
    # ALONE (2) is the largest mode; FUSED with raw int32 output is refused, ALONE with the
    # raw_output bit set is not (the bit belongs to the conv).
    out.append(Boundary("POOL_MODE", alone(3, 4, 4, MaxPool(2, 2)),
                        [Refusal("POOL_MODE", {"pool_mode": PoolMode.ALONE + 1})],
                        fields={"raw_output": 1}))
    out.append(Boundary("POOL_RAW", Case(2, 3, 4, 4, pool=MaxPool(2, 2), relu=True),
                        [Refusal("POOL_RAW", {"raw_output": 1})]))
    return out


def no_unit_boundaries(lim):
    """Without a max-pool unit: a conv runs, any pool setting is refused (POOL_NO_UNIT), the
    reserved mode and a fused pool after raw output keep their own codes."""
    case = Case(2, 2, 4, 4, pads=(1, 1, 1, 1))
    return [Boundary("POOL_NO_UNIT", case, [
        Refusal("POOL_NO_UNIT", {"pool_mode": PoolMode.FUSED}),
        Refusal("POOL_NO_UNIT", {"pool_mode": PoolMode.ALONE}),
        Refusal("POOL_MODE", {"pool_mode": PoolMode.ALONE + 1}),
        Refusal("POOL_RAW", {"pool_mode": PoolMode.FUSED, "raw_output": 1})])]


def option_boundaries(lim):
    """The build options' refusals: on an engine built without packing a layer that another
    engine would pack runs plain (``pack`` 0) and is refused packed (``PACK_UNSUPPORTED``, with
    a pitch a packing engine would take); none on an engine with packing."""
    if lim.packing:
        return []
    legal = Case(lim.simd - 1, 2, 5, 4, k=(3, 3), pads=(1, 1, 1, 1))
    packed = packing(legal, lim.simd)
    assert packed["pack"], legal.label()
    return [Boundary("PACK_UNSUPPORTED", legal, [Refusal("PACK_UNSUPPORTED", packed)],
                     fields=dict(pack=0, in_row_bytes=0))]


def host_code(layer, fields, lim):
    """The code the host's pre-check (:func:`rtl.limits.check_layer`, the definition the
    hardware's checks are built from) gives ``layer`` with ``fields`` written over its
    registers on an engine with the limits ``lim``."""
    found = first_refusal({**register_fields(layer, simd=lim.simd, packing=bool(lim.packing)),
                           **fields}, asdict(lim))
    return "NONE" if found is None else found.name


def packing(case, simd, built=True):
    """The PACKING fields the host gives a conv case: packed when the engine is ``built`` with
    packing, that takes fewer operations per window, the horizontal dilation is 1 and a row
    pitch of ``W * Cin`` plus fewer than SIMD bytes has ``dilation_h * pitch = Kw * Cin (mod
    SIMD)`` (the smallest one), and the packed window needs no more line-buffer words than the
    plain one."""
    (kh, kw), (dh, dw), c = case.k, case.dilation, case.cin
    if not built or case.alone or dw != 1 or -(-kh * kw * c // simd) >= kh * kw * -(-c // simd):
        return dict(pack=0, in_row_bytes=0)
    for pitch in range(case.w * c, case.w * c + simd):
        if (dh * pitch - kw * c) % simd == 0:
            keh = (kh - 1) * dh + 1
            if -(-((keh - 1) * pitch + kw * c) // simd) + 1 <= ((keh - 1) * case.w + kw) \
                    * -(-c // simd):
                return dict(pack=1, in_row_bytes=pitch)
            break
    return dict(pack=0, in_row_bytes=0)


def expected_code(case, lim, fields=None):
    """The ``STATUS.error`` name the engine gives ``case`` with ``fields`` written over its
    registers: the conv checks of :meth:`rtl.engine.ConvEngine._check` (skipped for the pool
    alone), then the pool unit's on its map (the conv output when fused), as documented."""
    pool = case.pool
    v = dict(kernel_h=case.k[0], kernel_w=case.k[1], dilation_h=case.dilation[0],
             dilation_w=case.dilation[1], stride_h=case.stride[0], stride_w=case.stride[1],
             in_height=case.h, in_width=case.w, in_channels=case.cin, out_channels=case.cout,
             raw_output=int(case.out == "int32"), weight_base=0, chan_base=0,
             pool_mode=PoolMode.ALONE if case.alone else PoolMode.FUSED if pool else PoolMode.OFF,
             **dict(zip(("pad_top", "pad_left", "pad_bottom", "pad_right"), case.pads)))
    if pool is not None:
        v.update(zip(("pool_kernel_h", "pool_kernel_w"), pool.kernel))
        v.update(zip(("pool_stride_h", "pool_stride_w"), pool.stride))
        v.update(zip(("pool_dilation_h", "pool_dilation_w"), pool.dilation))
        v.update(zip(("pool_pad_top", "pool_pad_left", "pool_pad_bottom", "pool_pad_right"),
                     pool.pads))
    v.update(packing(case, lim.simd, lim.packing))
    v.update(fields or {})
    conv = v["pool_mode"] != PoolMode.ALONE

    def outside(names, hi):
        return any(v[n] == 0 or v[n] > hi for n in names)
    keh, kew = _keff(v["kernel_h"], v["dilation_h"]), _keff(v["kernel_w"], v["dilation_w"])
    cin_g = -(-v["in_channels"] // lim.simd)
    pack, pitch = v["pack"], v["in_row_bytes"]
    # Bytes per pixel and per row of the input stream, packed or plain (rtl.linebuffer).
    cp = v["in_channels"] if pack else cin_g * lim.simd
    row = pitch if pack else v["in_width"] * cp
    ops = -(-v["kernel_h"] * v["kernel_w"] * cp // lim.simd)
    widest_row = lim.max_width * lim.cin_groups * lim.simd + lim.simd - 1
    checks = [
        ("POOL_MODE", lambda: v["pool_mode"] > max(PoolMode)),
        ("POOL_RAW", lambda: v["pool_mode"] == PoolMode.FUSED and v["raw_output"]),
        ("KERNEL", lambda: conv and outside(("kernel_h", "kernel_w"), lim.max_kernel)),
        ("DILATION", lambda: conv and outside(("dilation_h", "dilation_w"), lim.max_dilation)),
        ("STRIDE", lambda: conv and outside(("stride_h", "stride_w"), lim.max_stride)),
        ("SIZE", lambda: conv and (outside(("in_height",), lim.max_height)
                                   or outside(("in_width",), lim.max_width))),
        ("CHANNELS", lambda: conv and outside(("in_channels", "out_channels"), lim.max_channels)),
        ("PACK_UNSUPPORTED", lambda: conv and pack and not lim.packing),
        ("PACK_DILATION", lambda: conv and pack and v["dilation_w"] != 1),
        ("PACK_PITCH", lambda: conv and pack and pitch > widest_row),
        ("PAD", lambda: conv and (max(v["pad_top"], v["pad_bottom"]) >= keh
                                  or max(v["pad_left"], v["pad_right"]) >= kew)),
        ("NO_OUTPUT", lambda: conv and (v["in_height"] + v["pad_top"] + v["pad_bottom"] < keh
                                        or v["in_width"] + v["pad_left"] + v["pad_right"] < kew)),
        ("PACK_ALIGN", lambda: conv and pack and (
            pitch < v["in_width"] * v["in_channels"]
            or (v["dilation_h"] * pitch - v["kernel_w"] * v["in_channels"]) % lim.simd != 0)),
        ("WEIGHTS", lambda: conv and v["weight_base"] + -(-v["out_channels"] // lim.pe) * ops
         > lim.weight_depth),
        ("LINE_BUFFER", lambda: conv and -(-((keh - 1) * row + kew * cp) // lim.simd) + pack
         > lim.line_buffer_depth),
        ("CONSTANTS", lambda: conv and v["chan_base"] + -(-v["out_channels"] // lim.pe)
         > lim.channel_depth),
    ]
    for code, bad in checks:
        if bad():
            return code
    if v["pool_mode"] == PoolMode.OFF:
        return "NONE"
    if not lim.pool_window_slots:
        return "POOL_NO_UNIT"
    if conv:
        size = [(v[n] + v[f"pad_{b}"] + v[f"pad_{e}"] - k) // v[s] + 1 for n, b, e, k, s in (
            ("in_height", "top", "bottom", keh, "stride_h"),
            ("in_width", "left", "right", kew, "stride_w"))]
        channels = v["out_channels"]
    else:
        size, channels = [v["in_height"], v["in_width"]], v["in_channels"]
    pair = lambda name: (v[f"pool_{name}_h"], v[f"pool_{name}_w"])
    code = expected_error(
        MapCase(channels, *size, pair("kernel"), pair("stride"),
                tuple(v[f"pool_pad_{side}"] for side in ("top", "left", "bottom", "right")),
                pair("dilation"), bool(pool.ceil_mode) if pool is not None else False),
        dict(lanes=lim.pe, max_kernel=lim.max_kernel, max_width=lim.max_width,
             max_height=lim.max_height, max_channels=lim.max_channels,
             max_stride=lim.pool_max_stride, max_dilation=lim.max_dilation,
             window_slots=lim.pool_window_slots))
    return "NONE" if code == 0 else EngineError(POOL_ERROR_BASE + code).name


# --- cocotb ---------------------------------------------------------------------------------

class Quiet:
    """Counts the cycles in which the engine is ready for input or offers output, while
    armed (from before a refused layer's start until after its refusal)."""

    def __init__(self, dut):
        self.dut = dut
        self.armed = False
        self.ready = self.valid = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.dut.clk)
            if self.armed:
                self.ready += int(self.dut.s_axis_tready.value)
                self.valid += int(self.dut.m_axis_tvalid.value)

    def arm(self):
        self.armed, self.ready, self.valid = True, 0, 0

    def disarm(self):
        self.armed = False
        return self.ready, self.valid


class TB:
    """The engine with its driver, the limits read from its registers and a data source."""

    def __init__(self, dut, seed):
        self.dut = dut
        self.drv = EngineDriver(dut)
        self.quiet = Quiet(dut)
        self.rng = np.random.default_rng(seed)
        self.lim = None
        self.layers = 0

    @classmethod
    async def create(cls, dut, seed):
        cocotb.start_soon(Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start())
        dut.rst.value = 1
        await ClockCycles(dut.clk, RESET_CYCLES)
        dut.rst.value = 0
        await ClockCycles(dut.clk, RESET_CYCLES)
        tb = cls(dut, seed)
        tb.lim = await Limits.read(tb.drv)
        dut._log.info("limits: %s", tb.lim)
        return tb

    def make(self, case):
        self.layers += 1
        return make_layer(case, self.rng, name=f"layer{self.layers}")

    async def write_fields(self, fields):
        """Write register fields by name over the current configuration."""
        by_register = {}
        for name, value in fields.items():
            by_register.setdefault(REGMAP.field(name).register.name, {})[name] = value
        for reg, values in by_register.items():
            await self.drv.regs.modify_fields(reg, **values)

    async def send_packet(self, beats):
        """One parameter packet of ``param_width``-bit beats (``tlast`` on the last one),
        behind the driver's account of what is resident (which forgets it all)."""
        self.drv.forget()
        await self.drv.param.send(param_bytes(beats, self.lim.param_width))
        await self.drv.param.wait()

    async def load_error(self):
        """STATUS.load_error once the parameter stream is idle."""
        await ClockCycles(self.dut.clk, 2)
        return (await self.drv.status())["load_error"]

    async def drive_input(self, data, lasts):
        """The input words of ``data`` with ``tlast`` on the words whose index is in ``lasts``
        (cocotbext-axi's source puts it on a frame's last word only); the source is idle."""
        dut, simd = self.dut, self.lim.simd
        await self.drv.source.wait()
        for index in range(len(data) // simd):
            dut.s_axis_tdata.value = int.from_bytes(data[index * simd:(index + 1) * simd],
                                                    "little")
            dut.s_axis_tlast.value = int(index in lasts)
            dut.s_axis_tvalid.value = 1
            await RisingEdge(dut.clk)
            while not int(dut.s_axis_tready.value):
                await RisingEdge(dut.clk)
        dut.s_axis_tvalid.value = 0
        dut.s_axis_tlast.value = 0

    async def run(self, case, *, layer=None, x=None, fields=None, lasts=None, load=True,
                  at=None):
        """Run a legal layer (``case``, or ``layer`` on ``x``), with ``fields`` written over its
        registers and the input's ``tlast`` on the words in ``lasts`` (default: the last),
        its parameters loaded at ``at = (weight_base, chan_base)`` (default: the base fields
        among ``fields``, else where the driver places them); check it bit-exact and return
        STATUS at done."""
        return await with_timeout(self._run(case, layer, x, fields, lasts, load, at),
                                  LAYER_TIMEOUT_NS, "ns")

    async def _run(self, case, layer, x, fields, lasts, load, at):
        if layer is None:
            layer, x = self.make(case)
        label = f"{layer.name} ({case.label()}{', ' + str(fields) if fields else ''})"
        drv = self.drv
        if load:
            # Base addresses among the fields: the parameters go there.
            if at is None and {"weight_base", "chan_base"} & set(fields or {}):
                at = (fields.get("weight_base", 0), fields.get("chan_base", 0))
            await drv.load(layer, at=at)
            assert not await self.load_error(), f"{label}: load_error after a legal load"
        await drv.configure(layer)
        await self.write_fields(fields or {})
        host = host_code(layer, fields or {}, self.lim)
        assert host == "NONE", f"{label}: the host's check refuses it with {host}"
        st = await drv.start(label)
        assert not st["load_error"], f"{label}: load_error not cleared by start"
        fields = fields or {}
        pitch = row_pitch(layer, self.lim.simd, self.lim.packing) if "pack" not in fields else \
            fields["in_row_bytes"] if fields["pack"] else None
        data = pack_input(x, self.lim.simd, pitch)
        if lasts is None:
            await drv.source.send(data)
        else:
            await self.drive_input(data, lasts)
        frame = await drv.sink.recv()
        while (await drv.status())["busy"]:
            pass
        st = await drv.status()
        got = unpack_output(frame.tdata, layer)
        want = run_layer(layer, x[None])[0]
        assert got.dtype == want.dtype and np.array_equal(got, want), \
            f"{label}: {first_mismatch(got, want)}"
        assert drv.sink.empty(), f"{label}: output after the last word"
        assert st["done"] and st["error"] == EngineError.NONE, f"{label}: status {st}"
        if lasts is None:
            assert not st["tlast_error"], f"{label}: tlast_error with a correct tlast"
        return st

    async def refuse(self, layer, fields, code, label):
        """Configure ``layer``, write ``fields`` over it and start: it must be refused with
        ``code``, the input never ready and no output, before and after the refusal. The
        host's pre-check (:func:`rtl.limits.check_layer`) must name the same code."""
        host = host_code(layer, fields, self.lim)
        assert host == code, f"{label}: the host's check gives {host}, expected {code}"
        drv = self.drv
        await drv.configure(layer)
        await self.write_fields(fields)
        self.quiet.arm()
        try:
            await with_timeout(drv.start(label), LAYER_TIMEOUT_NS, "ns")
        except EngineRefused as refused:
            got = refused.code
        else:
            raise AssertionError(f"{label}: accepted, expected the refusal {code}")
        await ClockCycles(self.dut.clk, QUIET_CYCLES)
        ready, valid = self.quiet.disarm()
        assert got == EngineError[code], f"{label}: refused with {got.name}, expected {code}"
        assert ready == 0, f"{label}: input ready for {ready} cycles"
        assert valid == 0 and drv.sink.empty(), f"{label}: output valid for {valid} cycles"
        st = await drv.status()
        assert st["done"] and not st["busy"] and not st["running"], f"{label}: status {st}"
        # The status describes the refused layer: no input, no stream error.
        assert not st["tlast_error"] and not st["load_error"], f"{label}: status {st}"

    async def check(self, boundary):
        """A boundary's legal layer runs bit-exact, then each refusal is refused."""
        log = self.dut._log
        layer, x = self.make(boundary.legal)
        log.info("%s: legal %s %s", boundary.name, boundary.legal.label(), boundary.fields)
        await self.run(boundary.legal, layer=layer, x=x, fields=boundary.fields)
        for refusal in boundary.refusals:
            base = layer if refusal.case is None else self.make(refusal.case)[0]
            label = f"{boundary.name}: {refusal.label()}"
            log.info("%s: refused %s", boundary.name, refusal.label())
            await self.refuse(base, refusal.fields, refusal.code, label)


#: A legal layer that must still run after the refusals (legal on the test builds:
#: :func:`test_boundaries_cover_every_code`).
AFTER = Case(3, 2, 5, 6, pads=(1, 1, 1, 1), relu=True)


@cocotb.test()
async def conv_refusals(dut):
    """Every conv refusal at its boundary, in both directions; then a legal layer."""
    tb = await TB.create(dut, SEED)
    for boundary in conv_boundaries(tb.lim):
        await tb.check(boundary)
    await tb.run(AFTER)


@cocotb.test()
async def pool_refusals(dut):
    """Every max-pool refusal at its boundary (POOL_NO_UNIT without a pool unit); the conv's
    own settings are ignored for the pool alone; then a legal layer."""
    tb = await TB.create(dut, SEED + 1)
    if tb.lim.pool_window_slots == 0:
        boundaries = no_unit_boundaries(tb.lim)
    else:
        boundaries = pool_boundaries(tb.lim)
        # Stale conv settings that the conv's range checks, and then its late checks, would
        # refuse: the pool alone ignores them.
        boundaries[0].fields = {"kernel_h": 0}
        boundaries[1].fields = {"kernel_h": 1, "kernel_w": 1, "pad_top": 1}
        assert boundaries[0].legal.alone and boundaries[1].legal.alone
    for boundary in boundaries:
        await tb.check(boundary)
    await tb.run(AFTER)


@cocotb.test()
async def option_refusals(dut):
    """The build options' refusals at their boundaries (:func:`option_boundaries`); then a
    legal layer."""
    tb = await TB.create(dut, SEED + 4)
    for boundary in option_boundaries(tb.lim):
        await tb.check(boundary)
    await tb.run(AFTER)


def _tlast_cases(lim):
    """A conv and a pool alone with two input words per pixel (so that the width converter
    of the pool alone splits or packs them)."""
    cin = min(lim.simd + 1, lim.max_channels)
    return {"conv": Case(cin, 2, 3, 4, pads=(1, 1, 1, 1)),
            "pool alone": Case(cin, 0, 4, 5, alone=True, pool=MaxPool(2, 2))}


@cocotb.test()
async def tlast_errors(dut):
    """STATUS.tlast_error for an input tlast one word or one pixel early (moved, or an extra
    one) and none, for a conv and for the pool alone; not for a correct tlast. The beat count
    ends the map, so the output is bit-exact either way, and the flag clears at the next
    start, a refused one too."""
    tb = await TB.create(dut, SEED + 2)
    log, simd = dut._log, tb.lim.simd
    for mode, case in _tlast_cases(tb.lim).items():
        layer, x = tb.make(case)
        words = len(pack_input(x, simd, row_pitch(layer, simd))) // simd
        last, pixel = words - 1, -(-case.cin // simd)
        variants = {"correct": ({last}, 0), "one word early": ({last - 1}, 1),
                    "one pixel early": ({last - pixel}, 1),
                    "an extra one a word early": ({last - 1, last}, 1),
                    "an extra one a pixel early": ({last - pixel, last}, 1),
                    "none": (set(), 1)}
        for name, (lasts, flag) in variants.items():
            log.info("%s, %d words, tlast %s: %s", mode, words, name, sorted(lasts))
            st = await tb.run(case, layer=layer, x=x, lasts=lasts)
            assert st["tlast_error"] == flag, \
                f"{mode}, tlast {name}: tlast_error {st['tlast_error']}, expected {flag}"
            if flag:    # a refused start clears it too
                await tb.refuse(layer, {"pool_mode": PoolMode.ALONE + 1}, "POOL_MODE",
                                f"{mode}, tlast {name}, then a refused start")
            await tb.run(case, layer=layer, x=tb.rng.integers(-128, 128, x.shape, np.int8),
                         load=False)


@cocotb.test()
async def load_errors(dut):
    """STATUS.load_error at the edges of the parameter memories and for packets that end
    inside a word or have an unknown kind. A refused word is not written (the loaded layer
    reruns bit-exact without a reload), the flag holds until the next start clears it."""
    tb = await TB.create(dut, SEED + 3)
    lim, log = tb.lim, dut._log
    weight_beats = word_beats(8 * lim.pe * lim.simd, lim.param_width)
    channel_beats = word_beats(CHANNEL_BEATS * CHANNEL_VALUE_WIDTH * lim.pe, lim.param_width)

    def header(kind, addr):
        return (kind << HEADER_KIND_SHIFT) | addr

    def garbage(beats):
        return [int.from_bytes(tb.rng.bytes(lim.param_width // 8), "little")
                for _ in range(beats)]

    async def refused_packet(what, beats, case, layer, x, *, then=()):
        """``beats`` set load_error (still set after the packets ``then``); ``layer`` then
        reruns bit-exact without a reload and the start clears the flag."""
        log.info("load: %s", what)
        await tb.send_packet(beats)
        assert await tb.load_error(), f"{what}: no load_error"
        for packet in then:
            await tb.send_packet(packet)
            assert await tb.load_error(), f"{what}: load_error cleared by a later packet"
        await tb.run(case, layer=layer, x=x, load=False)

    # Weights: a layer needing every word; its packet's last word is at weight_depth - 1.
    case_w = _weights_case(lim, lim.weight_depth)
    layer_w, x_w = tb.make(case_w)
    packet_w = pack_weights(layer_w, lim.pe, lim.simd, lim.param_width)
    assert len(packet_w) == 1 + lim.weight_depth * weight_beats
    await tb.run(case_w, layer=layer_w, x=x_w)
    last_word = packet_w[1 + (lim.weight_depth - 1) * weight_beats:]
    await tb.send_packet([header(KIND_WEIGHTS, lim.weight_depth - 1), *last_word])
    assert not await tb.load_error(), "the last weight word alone: load_error"
    await refused_packet("a weight word at weight_depth",
                         [header(KIND_WEIGHTS, lim.weight_depth), *garbage(weight_beats)],
                         case_w, layer_w, x_w)
    # The whole packet one word later: its last word lands at weight_depth. The correct
    # packet after it restores the memory, not the flag.
    await refused_packet("the weights one word later",
                         [header(KIND_WEIGHTS, 1), *packet_w[1:]], case_w, layer_w, x_w,
                         then=[packet_w])
    first_word = packet_w[1:1 + weight_beats]
    for beats in sorted({1, weight_beats - 1} - {0, weight_beats}):
        await refused_packet(f"a weight packet ending {beats} beat(s) into a word",
                             [header(KIND_WEIGHTS, 0), *garbage(beats)], case_w, layer_w, x_w)
        await refused_packet(f"a whole weight word, then {beats} beat(s)",
                             [header(KIND_WEIGHTS, 0), *first_word, *garbage(beats)],
                             case_w, layer_w, x_w)
    # Channel constants: a layer with every output channel group, at word 0; its last word
    # again at the last word of the memory (past the layer's), then one word further.
    case_c = Case(2, lim.max_channels, 2, 3, k=(1, 1))
    layer_c, x_c = tb.make(case_c)
    packet_c = pack_channels(layer_c, lim.pe, lim.param_width)
    assert len(packet_c) == 1 + lim.cout_groups * channel_beats
    assert lim.channel_depth > lim.cout_groups
    await tb.run(case_c, layer=layer_c, x=x_c, at=(0, 0))
    await tb.send_packet([header(KIND_CHANNELS, lim.channel_depth - 1),
                          *packet_c[1 + (lim.cout_groups - 1) * channel_beats:]])
    assert not await tb.load_error(), "the last channel word alone: load_error"
    await refused_packet("a channel word at channel_depth",
                         [header(KIND_CHANNELS, lim.channel_depth), *garbage(channel_beats)],
                         case_c, layer_c, x_c)
    for beats in sorted(b for b in {1, CHANNEL_BEATS - 1, CHANNEL_BEATS, channel_beats - 1}
                        if 0 < b < channel_beats):
        await refused_packet(f"a channel packet ending {beats} beat(s) into a group",
                             [header(KIND_CHANNELS, 0), *garbage(beats)], case_c, layer_c, x_c)
    # Kinds next to the two legal ones, and the largest; a whole word of either kind follows.
    for kind in (0, KIND_CHANNELS + 1, (1 << (BEAT_WIDTH - HEADER_KIND_SHIFT)) - 1):
        for beats in sorted({weight_beats, channel_beats}):
            await refused_packet(f"kind {kind} with {beats} beats",
                                 [header(kind, 0), *garbage(beats)], case_c, layer_c, x_c)


# --- pytest entries -----------------------------------------------------------------------

def _limits(config):
    from rtl.engine import ConvEngine

    engine = ConvEngine(**config)
    engine._MustUse__silence = True         # built only to read its parameters
    return Limits.of_engine(engine)


def test_boundaries_cover_every_code():
    """On both test builds every refusal code has a boundary; each legal layer is legal and
    each refusal gives its code by the documented checks, and the layers that must fill the
    weight memory and the line buffer fill them exactly."""
    from sim.configs import ENGINE_ICE40

    for config in (LIMITS_CONFIG, LIMITS_CONFIG_NARROW, ENGINE_ICE40):
        lim = _limits(config)
        boundaries = (conv_boundaries(lim) + pool_boundaries(lim) if lim.pool_window_slots
                      else no_unit_boundaries(lim)) + option_boundaries(lim)
        if lim.pool_window_slots:
            for case in (AFTER, *_tlast_cases(lim).values()):
                assert expected_code(case, lim) == "NONE", f"{case.label()}: not legal"
        codes = set()
        rng = np.random.default_rng(SEED)
        for b in boundaries:
            assert expected_code(b.legal, lim, b.fields) == "NONE", f"{b.name}: not legal"
            legal = make_layer(b.legal, rng)[0]
            assert host_code(legal, b.fields, lim) == "NONE", f"{b.name}: host refuses it"
            for r in b.refusals:
                got = expected_code(r.case or b.legal, lim, r.fields)
                assert got == r.code, f"{b.name}: {r.label()} gives {got}"
                base = legal if r.case is None else make_layer(r.case, rng)[0]
                host = host_code(base, r.fields, lim)
                assert host == r.code, f"{b.name}: {r.label()}: the host's check gives {host}"
                codes.add(r.code)
        wanted = {"POOL_NO_UNIT", "POOL_MODE", "POOL_RAW"} if not lim.pool_window_slots else \
            {e.name for e in EngineError} - {"NONE", "POOL_NO_UNIT", "PACK_UNSUPPORTED"}
        if not lim.packing:
            wanted.add("PACK_UNSUPPORTED")
        assert codes == wanted, f"{config}: missing {wanted - codes}, extra {codes - wanted}"
        if lim.pool_window_slots:
            by_name = {b.name: b for b in boundaries}
            assert weight_words(by_name["WEIGHTS"].legal, lim) == lim.weight_depth
            assert span_words(by_name["LINE_BUFFER"].legal, lim) == lim.line_buffer_depth


def _run(sim, config, testcase=None):
    from rtl.engine import ConvEngine
    from sim.runner import config_key, emit_verilog, run_cocotb

    # A key of its own: pytest-xdist may run tb/test_engine.py's build of the same
    # configuration at the same time, in its own folder.
    key = config_key("engine_limits", config)
    path = emit_verilog(ConvEngine(**config), toplevel="convcore_engine", key=key)
    run_cocotb(sim, sources=[path], toplevel="convcore_engine", key=key,
               test_module="tb.test_engine_limits", testcase=testcase, ports_only=True)


def test_limits_icarus():
    _run("icarus", LIMITS_CONFIG)


def test_limits_verilator():
    _run("verilator", LIMITS_CONFIG_NARROW)


def test_ice40_refusals_icarus():
    """The iCE40 configuration has no max-pool unit (every pool setting is refused) and no
    packing (a packed layer is refused)."""
    from sim.configs import ENGINE_ICE40
    _run("icarus", ENGINE_ICE40, testcase=["pool_refusals", "option_refusals"])
