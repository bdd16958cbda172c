"""The engine's parameters, limits and refusal codes, with their messages: defined once here.

Everything else derives from this module:

- :class:`rtl.engine.ConvEngine` and :class:`rtl.maxpool.MaxPool` take their parameters through
  :func:`engine_params` and :func:`pool_params` (defaults, ranges, derived sizes), and build
  their refusal logic from the ``check`` of each :class:`Refusal`, evaluated on their latched
  configuration (Amaranth values);
- :data:`EngineError` (``STATUS.error``, in :mod:`rtl.engine_regs`) and :data:`PoolError` (the
  max-pool unit's ``error``) are made from the tables, so the register map, its README table
  and its C header list the codes with their one-line docs;
- the host (:mod:`sim`) evaluates the same ``check`` functions on Python integers
  (:func:`first_refusal`) to refuse a layer before it runs, and formats the refusal's
  ``message`` when the hardware reports a code.

A check is written once, as a function of a namespace of values that are plain integers on the
host and signals in the hardware: the layer's register fields (``kernel_h``, ``in_width``...,
or the max-pool unit's ``height``, ``kernel_h``...), the derived constants (:func:`derive`,
:func:`derive_pool`) and the hardware parameters (``max_kernel``...). It uses only operators
that mean the same on both (``|``, ``&``, ``~`` on results of comparisons, ``==``, ``<``,
``+``, ``*`` and :func:`outside`).

Adding a refusal is one :class:`Refusal` entry in :data:`ENGINE_REFUSALS` or
:data:`POOL_REFUSALS`: its code, the stage that checks it, its check, its doc and its message.
Within a stage, the first failing entry wins.

>>> from rtl.engine_regs import REGMAP
>>> fields = {**REGMAP.resets(), "in_channels": 200, "kernel_h": 3, "kernel_w": 3}
>>> first_refusal(fields, engine_params(pe=8, simd=8)).name
'CHANNELS'
"""

import enum
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

from model.conv import conv_output_size
from rtl.linebuffer import line_buffer_depth
from rtl.bram import BRAMS
from rtl.mac_array import DSPS
from rtl.streams import BEAT_WIDTH, DATA_WIDTH

__all__ = ["Refusal", "ENGINE_REFUSALS", "POOL_REFUSALS", "EngineError", "PoolError",
           "POOL_ERROR_BASE", "ERROR_WIDTH", "nonzero", "max_row_bytes", "COUNTER_WIDTH", "POOL_ERROR_WIDTH", "DIM_WIDTH", "SMALL_WIDTH",
           "MAX_ARRAY", "ENGINE_DEFAULTS", "engine_params", "pool_params", "outside",
           "is_zero", "derive", "derive_pool", "first_refusal", "layer_values", "refusal", "stage_checks",
           "code_width", "PoolMode", "check_layer", "pool_values", "refusal_message",
           "engine_pool_params", "BASE_WIDTH", "DEFAULT_PARAM_WIDTH", "DEFAULT_WEIGHT_DEPTH",
           "DEFAULT_REQUANT_SHARING"]

#: Width of height, width and channel-count register fields (values above the hardware maxima
#: fit, so that the engine refuses them rather than seeing them truncated).
DIM_WIDTH = 16
#: Width of kernel, stride, dilation and pad register fields.
SMALL_WIDTH = 8
#: Width of the performance counters (the largest ``counter_width``).
COUNTER_WIDTH = 64
#: Largest PE and SIMD (powers of two).
MAX_ARRAY = 64
#: Largest conv stride and dilation (4-bit ``HW_ARRAY`` fields).
MAX_CONV_STEP = 15
#: Width of the ``weight_base`` and ``chan_base`` register fields (every value a host can
#: write is kept, so that the engine refuses one past its memories rather than truncating it).
BASE_WIDTH = 32
#: Largest default ``param_width``: the parameter port is the weight word, at most this wide.
DEFAULT_PARAM_WIDTH = 512
#: Largest default ``weight_depth``: one ECP5 DP16KD deep in its 1024 x 18 shape, so that the
#: weight word is read from one row of block RAMs with no multiplexer after them, and the
#: default's 512-bit words take 29 of the LFE5U-85F's 208 blocks (a 7x7 64 -> 64 layer's 3136
#: words took 114, and left the die too full of block RAM to route). The layer compiler
#: (:mod:`sim.compiler`) splits larger layers into passes over the output channels.
DEFAULT_WEIGHT_DEPTH = 1024
#: PE lanes per requantize unit by default: an output group takes this many cycles in the
#: requantizers, hidden behind any window of at least as many MAC operations (every layer but
#: a 1x1 conv over at most SIMD channels, or a packed one with at most SIMD products a
#: window), for half the units: 16 of the default engine's 32 requantizer DSPs and about a
#: sixth of its logic.
DEFAULT_REQUANT_SHARING = 2
#: ``STATUS.error`` of the max-pool unit's refusal ``n``: ``POOL_ERROR_BASE + n``.
POOL_ERROR_BASE = 32


# --- checks that mean the same on integers and on Amaranth values ----------------------------

def is_zero(value):
    """``value == 0``; on a signal a reduction, which Verilator lints cleanly (Yosys writes
    ``value == 0`` as ``!value``, a logical NOT of a vector)."""
    return value == 0 if isinstance(value, int) else ~value.any()


def nonzero(value):
    """``value != 0`` (a bool on the host, a reduction on a signal)."""
    return value != 0 if isinstance(value, int) else value.any()


def max_row_bytes(v):
    """The largest ``in_row_bytes`` an engine of parameters ``v`` takes: its widest row in the
    plain format plus the SIMD - 1 bytes a packed row may be padded by."""
    return v.max_width * -(-v.max_channels // v.simd) * v.simd + v.simd - 1


def outside(value, hi):
    """``value`` is 0 or above ``hi``: a size, kernel, stride or dilation the hardware lacks."""
    return is_zero(value) | (value > hi)


@dataclass(frozen=True)
class Refusal:
    """One reason to refuse a layer.

    Parameters
    ----------
    name : str
        Its name in :data:`EngineError` (:data:`PoolError` for the max-pool unit's, which
        appear in ``STATUS.error`` as ``POOL_<name>``).
    code : int
        Its value (``STATUS.error``, or the unit's ``error``). Codes are part of the register
        map: never renumber one.
    stage : str
        When the hardware finds it: ``"range"`` (from the latched fields alone),
        ``"derived"`` (from the derived constants, after the range checks passed), ``"run"``
        (while running: the max-pool unit's empty windows) or ``"build"`` (a unit the
        configuration does not have).
    check : callable
        ``check(v)``: true when the layer must be refused (the module docstring says what
        ``v`` holds). On the host every check runs; in the hardware those of ``"range"`` and
        ``"derived"``.
    doc : str
        One line for the register map and its documents.
    message : str
        The host's one-line reason, ``str.format``-ed with the values of ``v``.
    conv : bool
        Checked only when a conv runs (not when the max-pool runs alone).
    """
    name: str
    code: int
    stage: str
    check: Callable
    doc: str
    message: str
    conv: bool = True

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"refusal {self.name}: stage must be one of {STAGES}, not "
                             f"{self.stage!r}")


def _either_axis_outside(field, limit):
    """The check that ``{field}_h`` or ``{field}_w`` is 0 or above the parameter ``limit``."""
    return lambda v: outside(getattr(v, f"{field}_h"), getattr(v, limit)) \
        | outside(getattr(v, f"{field}_w"), getattr(v, limit))


#: The stages, in the order the hardware runs them.
STAGES = ("build", "range", "derived", "run")


#: The conv engine's own refusals (the max-pool unit's follow, see :data:`POOL_REFUSALS`).
ENGINE_REFUSALS = (
    Refusal("POOL_MODE", 11, "range", lambda v: v.pool_mode > v.max_pool_mode,
            "pool_mode 3 (reserved)", "pool mode {pool_mode} is reserved", conv=False),
    Refusal("POOL_RAW", 10, "range", lambda v: v.fused & v.raw_output,
            "a fused max-pool with raw int32 output (ONNX has no such layer)",
            "a fused max-pool needs requantized output", conv=False),
    Refusal("KERNEL", 1, "range",
            _either_axis_outside("kernel", "max_kernel"),
            "kernel height or width 0 or above the maximum",
            "kernel {kernel_h}x{kernel_w} exceeds the engine's maximum {max_kernel}x{max_kernel}"),
    Refusal("DILATION", 2, "range",
            _either_axis_outside("dilation", "max_dilation"),
            "dilation 0 or above the maximum",
            "dilation {dilation_h}x{dilation_w} exceeds the engine's maximum {max_dilation}"),
    Refusal("STRIDE", 3, "range",
            _either_axis_outside("stride", "max_stride"),
            "stride 0 or above the maximum",
            "stride {stride_h}x{stride_w} exceeds the engine's maximum {max_stride}"),
    Refusal("SIZE", 4, "range",
            lambda v: outside(v.in_height, v.max_height) | outside(v.in_width, v.max_width),
            "input height or width 0 or above the maximum",
            "input {in_height}x{in_width} (HxW) exceeds the engine's maximum "
            "{max_height}x{max_width}"),
    Refusal("CHANNELS", 5, "range",
            lambda v: outside(v.in_channels, v.max_channels) | outside(v.out_channels,
                                                                       v.max_channels),
            "input or output channels 0 or above the maximum",
            "{in_channels} input / {out_channels} output channels exceed the engine's maximum "
            "{max_channels}"),
    Refusal("PACK_UNSUPPORTED", 16, "range", lambda v: v.pack & int(not v.packing),
            "a packed layer on an engine built without packing (packing=False)",
            "a packed layer needs an engine built with packing (HW_PARAMS.hw_packing)"),
    Refusal("PACK_DILATION", 12, "range", lambda v: v.pack & (v.dilation_w != 1),
            "a packed layer (PACKING.pack) with a horizontal dilation above 1",
            "a packed layer needs horizontal dilation 1, not {dilation_w}"),
    Refusal("PACK_PITCH", 13, "range", lambda v: v.pack & (v.in_row_bytes > max_row_bytes(v)),
            "a packed layer's row pitch above the widest row the engine takes",
            "row pitch {in_row_bytes} bytes exceeds the engine's maximum"),
    Refusal("PAD", 6, "derived",
            lambda v: (v.pad_top >= v.keff_h) | (v.pad_bottom >= v.keff_h)
            | (v.pad_left >= v.keff_w) | (v.pad_right >= v.keff_w),
            "a pad not smaller than the effective kernel of its axis",
            "pads {pad_top}, {pad_left}, {pad_bottom}, {pad_right} (top, left, bottom, right) "
            "are not smaller than the kernel"),
    Refusal("NO_OUTPUT", 7, "derived",
            lambda v: (v.in_width + v.pad_left + v.pad_right < v.keff_w)
            | (v.in_height + v.pad_top + v.pad_bottom < v.keff_h),
            "the padded input is smaller than the effective kernel",
            "the padded input is smaller than the kernel"),
    Refusal("PACK_ALIGN", 14, "derived",
            lambda v: v.pack & ((v.in_row_bytes < v.w_cp)
                                | nonzero((v.row_step - v.kw_col_step) & (v.simd - 1))),
            "a packed layer's row pitch below W * Cin, or dilation_h * pitch not congruent "
            "to Kw * Cin modulo SIMD (see rtl.linebuffer)",
            "row pitch {in_row_bytes} bytes is below W * Cin = {w_cp} or misaligned: "
            "dilation_h * pitch - Kw * Cin must be a multiple of SIMD {simd}"),
    Refusal("WEIGHTS", 8, "derived",
            lambda v: v.weight_base + v.weight_words > v.weight_depth,
            "weight_base + ceil(Cout/PE) * ceil(Kh * Kw * Cp / SIMD) words exceed the weight "
            "memory (Cp: Cin packed, else ceil(Cin/SIMD) * SIMD)",
            "{weight_words} weight words from word {weight_base} exceed the engine's weight "
            "memory of {weight_depth}"),
    Refusal("LINE_BUFFER", 9, "derived", lambda v: v.span > v.line_buffer_depth,
            "the window span exceeds the line buffer (see rtl.linebuffer)",
            "the window spans {span} line-buffer words, more than the engine's "
            "{line_buffer_depth}"),
    Refusal("CONSTANTS", 15, "derived",
            lambda v: v.chan_base + v.cout_groups > v.channel_depth,
            "chan_base + ceil(Cout/PE) words exceed the channel-constant memory",
            "{cout_groups} channel-constant words from word {chan_base} exceed the engine's "
            "channel-constant memory of {channel_depth}"),
)

#: The max-pool unit's refusals (its ``error``; ``STATUS.error`` shows ``POOL_ERROR_BASE +``
#: the code). ``v`` holds the unit's configuration (its map: the conv output when fused, the
#: input feature map when alone), :func:`derive_pool` and :func:`pool_params`.
POOL_REFUSALS = (
    Refusal("NO_UNIT", 10, "build", lambda v: is_zero(v.window_slots),
            "a max-pool on a configuration without a max-pool unit (HW_POOL 0)",
            "the engine has no max-pool unit (pool_window_slots 0)", conv=False),
    Refusal("KERNEL", 1, "range",
            _either_axis_outside("kernel", "max_kernel"),
            "pool kernel height or width 0 or above the maximum kernel",
            "pool kernel {kernel_h}x{kernel_w} exceeds the engine's maximum {max_kernel}"),
    Refusal("DILATION", 2, "range",
            _either_axis_outside("dilation", "max_dilation"),
            "pool dilation 0 or above the maximum dilation",
            "pool dilation {dilation_h}x{dilation_w} exceeds the engine's maximum "
            "{max_dilation}"),
    Refusal("STRIDE", 3, "range",
            _either_axis_outside("stride", "max_stride"),
            "pool stride 0 or above the maximum pool stride",
            "pool stride {stride_h}x{stride_w} exceeds the engine's maximum {max_stride}"),
    Refusal("SIZE", 4, "range",
            lambda v: outside(v.height, v.max_height) | outside(v.width, v.max_width),
            "pool input height or width 0 or above the maximum",
            "pool input {height}x{width} (HxW) exceeds the engine's maximum "
            "{max_height}x{max_width}"),
    Refusal("CHANNELS", 5, "range", lambda v: outside(v.channels, v.max_channels),
            "pool input channels 0 or above the maximum",
            "{channels} pool channels exceed the engine's maximum {max_channels}"),
    Refusal("PAD", 6, "range",
            lambda v: (v.pad_top >= v.kernel_h) | (v.pad_bottom >= v.kernel_h)
            | (v.pad_left >= v.kernel_w) | (v.pad_right >= v.kernel_w),
            "a pool pad not smaller than the pool kernel of its axis",
            "pool pads {pad_top}, {pad_left}, {pad_bottom}, {pad_right} are not smaller than "
            "the pool kernel"),
    Refusal("NO_OUTPUT", 7, "range",
            lambda v: (v.limit_h < -v.pad_top) | (v.limit_w < -v.pad_left),
            "the padded pool input is smaller than the dilated pool kernel",
            "the padded pool input is smaller than the dilated pool kernel"),
    Refusal("WINDOW_SLOTS", 8, "range",
            lambda v: (v.keff_h > v.window_slots * v.stride_h)
            | (v.keff_w > v.window_slots * v.stride_w),
            "(K - 1) * dilation + 1 > window slots * stride on an axis",
            "the dilated pool kernel exceeds {window_slots} window slots x the pool stride"),
    Refusal("EMPTY_WINDOW", 9, "run", lambda v: v.empty_window,
            "a dilated pool window covers only padding",
            "a dilated pool window covers only padding"),
)


class PoolMode(enum.IntEnum):
    """What the max-pool unit does (``POOL.pool_mode``)."""
    OFF = 0             #: conv only
    FUSED = 1           #: conv, requantize, ReLU, then max-pool
    ALONE = 2           #: max-pool of the input feature map, no conv


def _enum(name, members, doc):
    made = enum.IntEnum(name, {"NONE": 0, **{n: code for n, code, _ in members}})
    made.__doc__ = doc
    #: one line per member, for the register map's documents
    made.docs = {"NONE": "accepted", **{n: text for n, _, text in members}}
    return made


def _by_code(refusals, base=0, prefix=""):
    return [(prefix + r.name, base + r.code, r.doc)
            for r in sorted(refusals, key=lambda r: r.code)]


#: Why the max-pool unit refused a map (its ``error``), from :data:`POOL_REFUSALS`.
PoolError = _enum("PoolError", _by_code(POOL_REFUSALS),
                  "Why the max-pool unit refused a map (``error``); the first violated check "
                  "wins.")
#: Why the engine refused a layer (``STATUS.error``): :data:`ENGINE_REFUSALS`, then
#: :data:`POOL_REFUSALS` at :data:`POOL_ERROR_BASE`.
EngineError = _enum("EngineError", _by_code(ENGINE_REFUSALS)
                    + _by_code(POOL_REFUSALS, POOL_ERROR_BASE, "POOL_"),
                    "Why the engine refused a layer (``STATUS.error``); the first violated "
                    "check wins.")


def code_width(codes) -> int:
    """Bits that hold every code of ``codes``."""
    return max(int(c) for c in codes).bit_length()


#: Width of ``STATUS.error``.
ERROR_WIDTH = code_width(EngineError)
#: Width of the max-pool unit's ``error``.
POOL_ERROR_WIDTH = code_width(PoolError)


def check_tables(engine=ENGINE_REFUSALS, pool=POOL_REFUSALS):
    """ValueError unless the codes of each table are distinct and in range (the engine's
    below :data:`POOL_ERROR_BASE`, the pool unit's below ``2 * POOL_ERROR_BASE -
    POOL_ERROR_BASE``, so that ``POOL_ERROR_BASE + code`` stays distinct)."""
    for table, limit in ((engine, POOL_ERROR_BASE), (pool, POOL_ERROR_BASE)):
        codes = [r.code for r in table]
        if len(set(codes)) != len(codes) or min(codes) < 1 or max(codes) >= limit:
            raise ValueError(f"refusal codes must be distinct, 1..{limit - 1}: {codes}")


check_tables()


def refusal(code) -> Refusal:
    """The :class:`Refusal` of an :data:`EngineError` code or name (``POOL_*``: the max-pool
    unit's)."""
    name = EngineError(code).name if not isinstance(code, str) else code
    if name.startswith("POOL_") and name not in {r.name for r in ENGINE_REFUSALS}:
        return next(r for r in POOL_REFUSALS if r.name == name[len("POOL_"):])
    return next(r for r in ENGINE_REFUSALS if r.name == name)


def stage_checks(refusals, stage, v, gate=None):
    """``[(code, bad), ...]`` of the ``refusals`` checked in ``stage``, in priority order, on
    the values ``v``; a conv-only check is ANDed with ``gate`` (the engine's "a conv runs")
    when one is given. The hardware turns the list into a chain of multiplexers."""
    return [(r.code, gate & r.check(v) if gate is not None and r.conv else r.check(v))
            for r in refusals if r.stage == stage]


# --- parameters --------------------------------------------------------------------------------

#: The engine's default parameters: every layer of the lecture's examples and of the ConvNetJS
#: CIFAR-10 net (kernels up to 7x7, widths up to 224, up to 64 channels).
ENGINE_DEFAULTS = dict(
    pe=8, simd=8, max_kernel=7, max_width=224, max_height=224, max_channels=64,
    weight_depth=None, channel_depth=None, param_width=None, line_buffer_depth=None, max_stride=4, max_dilation=4, fifo_depth=8,
    requant_lanes=None, pool_window_slots=2, pool_max_stride=None, requant_iterative=False,
    counter_width=COUNTER_WIDTH, narrow_registers=False, no_rw_check=False, dsp="generic",
    bram="generic",
    packing=True, queued_starts=True, weight_slice_bits=None)


def _check_int(name, value, lo, hi=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < lo \
            or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
        raise ValueError(f"{name} must be an integer {bound}, not {value!r}")


def _is_pow2(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1 \
        and value & (value - 1) == 0


def engine_params(**params) -> dict:
    """Every :class:`rtl.engine.ConvEngine` parameter, checked (ValueError naming the bad
    value), with the defaults (:data:`ENGINE_DEFAULTS`) and the derived sizes filled in:
    ``weight_depth`` holds the largest layer up to :data:`DEFAULT_WEIGHT_DEPTH` words,
    ``channel_depth`` the constants of two of the
    largest layers, ``line_buffer_depth`` the widest window rounded up to a power of two,
    ``pool_max_stride`` is ``max_kernel``, ``param_width`` (bits of the parameter port, a
    power of two from 32 up to the weight word of ``8 * pe * simd`` bits) the weight word, at
    most :data:`DEFAULT_PARAM_WIDTH`, ``weight_slice_bits`` (a power of two up to the weight
    word) the weight word."""
    unknown = sorted(set(params) - set(ENGINE_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown engine parameter {unknown[0]!r}; the parameters are "
                        f"{', '.join(ENGINE_DEFAULTS)}")
    p = {**ENGINE_DEFAULTS, **params}
    for name in ("pe", "simd"):
        if not _is_pow2(p[name]) or p[name] > MAX_ARRAY:
            raise ValueError(f"{name} must be a power of two up to {MAX_ARRAY}, not {p[name]!r}")
    small_max, dim_max = (1 << SMALL_WIDTH) - 1, (1 << DIM_WIDTH) - 1
    _check_int("max_kernel", p["max_kernel"], 1, small_max)
    _check_int("max_width", p["max_width"], 1, dim_max)
    _check_int("max_height", p["max_height"], 1, dim_max)
    _check_int("max_channels", p["max_channels"], 1, dim_max)
    _check_int("max_stride", p["max_stride"], 1, MAX_CONV_STEP)
    _check_int("max_dilation", p["max_dilation"], 1, MAX_CONV_STEP)
    _check_int("fifo_depth", p["fifo_depth"], 2)
    if p["requant_lanes"] is None:
        p["requant_lanes"] = max(1, p["pe"] // DEFAULT_REQUANT_SHARING)
    if not _is_pow2(p["requant_lanes"]) or p["requant_lanes"] > p["pe"]:
        raise ValueError(f"requant_lanes must be a power of two up to pe={p['pe']}, "
                         f"not {p['requant_lanes']!r}")
    _check_int("pool_window_slots", p["pool_window_slots"], 0, p["max_kernel"])
    if p["pool_max_stride"] is None:
        p["pool_max_stride"] = p["max_kernel"]
    _check_int("pool_max_stride", p["pool_max_stride"], 1, small_max)
    if p["weight_depth"] is None:
        p["weight_depth"] = min(DEFAULT_WEIGHT_DEPTH,
                                (-(-p["max_channels"] // p["pe"]) * p["max_kernel"] ** 2
                                 * -(-p["max_channels"] // p["simd"])))
    _check_int("weight_depth", p["weight_depth"], 1)
    if p["channel_depth"] is None:
        p["channel_depth"] = 2 * -(-p["max_channels"] // p["pe"])
    _check_int("channel_depth", p["channel_depth"], 1)
    word_width = max(BEAT_WIDTH, DATA_WIDTH * p["pe"] * p["simd"])
    if p["param_width"] is None:
        p["param_width"] = min(word_width, DEFAULT_PARAM_WIDTH)
    if not _is_pow2(p["param_width"]) or not BEAT_WIDTH <= p["param_width"] <= word_width:
        raise ValueError(f"param_width must be a power of two from {BEAT_WIDTH} to "
                         f"{word_width} (the weight word), not {p['param_width']!r}")
    weight_word = DATA_WIDTH * p["pe"] * p["simd"]
    if p["weight_slice_bits"] is None:
        p["weight_slice_bits"] = weight_word
    if not _is_pow2(p["weight_slice_bits"]) or p["weight_slice_bits"] > weight_word:
        raise ValueError(f"weight_slice_bits must be a power of two up to the weight word of "
                         f"{weight_word} bits, not {p['weight_slice_bits']!r}")
    if p["line_buffer_depth"] is None:
        p["line_buffer_depth"] = line_buffer_depth(p["max_kernel"], p["max_width"],
                                                   p["max_channels"], p["simd"])
    if not _is_pow2(p["line_buffer_depth"]) or p["line_buffer_depth"] < 2:
        raise ValueError(f"line_buffer_depth must be a power of two of at least 2, "
                         f"not {p['line_buffer_depth']!r}")
    for name in ("requant_iterative", "narrow_registers", "no_rw_check", "packing",
                 "queued_starts"):
        if not isinstance(p[name], bool):
            raise ValueError(f"{name} must be a bool, not {p[name]!r}")
    _check_int("counter_width", p["counter_width"], 1, COUNTER_WIDTH)
    if p["dsp"] not in DSPS:
        raise ValueError(f"dsp must be one of {', '.join(map(repr, DSPS))}, not {p['dsp']!r}")
    if p["bram"] not in BRAMS:
        raise ValueError(f"bram must be one of {', '.join(map(repr, BRAMS))}, not {p['bram']!r}")
    return p


def pool_params(lanes=8, max_kernel=7, max_width=224, max_channels=64, max_height=None,
                max_stride=None, max_dilation=None, window_slots=None) -> dict:
    """Every :class:`rtl.maxpool.MaxPool` parameter, checked, with its defaults filled in."""
    if not _is_pow2(lanes) or lanes > MAX_ARRAY:
        raise ValueError(f"lanes must be a power of two up to {MAX_ARRAY}, not {lanes!r}")
    small_max, dim_max = (1 << SMALL_WIDTH) - 1, (1 << DIM_WIDTH) - 1
    _check_int("max_kernel", max_kernel, 1, small_max)
    _check_int("max_width", max_width, 1, dim_max)
    _check_int("max_channels", max_channels, 1, dim_max)
    max_height = max_width if max_height is None else max_height
    max_stride = max_kernel if max_stride is None else max_stride
    max_dilation = max_kernel if max_dilation is None else max_dilation
    window_slots = max_kernel if window_slots is None else window_slots
    _check_int("max_height", max_height, 1, dim_max)
    _check_int("max_stride", max_stride, 1, small_max)
    _check_int("max_dilation", max_dilation, 1, small_max)
    _check_int("window_slots", window_slots, 0, max_kernel)
    return dict(lanes=lanes, max_kernel=max_kernel, max_width=max_width,
                max_channels=max_channels, max_height=max_height, max_stride=max_stride,
                max_dilation=max_dilation, window_slots=window_slots)


def engine_pool_params(params: dict) -> dict:
    """The max-pool unit's parameters in an engine of ``params`` (:func:`engine_params`):
    lanes PE, the engine's kernel, map, channel and dilation limits."""
    return pool_params(lanes=params["pe"], max_kernel=params["max_kernel"],
                       max_width=params["max_width"], max_height=params["max_height"],
                       max_channels=params["max_channels"],
                       max_stride=params["pool_max_stride"],
                       max_dilation=params["max_dilation"],
                       window_slots=params["pool_window_slots"])


# --- the host's evaluation ----------------------------------------------------------------------

def derive(v) -> dict:
    """The engine's derived constants of a configuration (what ``ConvEngine`` computes after
    the range checks): effective kernels, output-channel groups (channel-constant words), the
    pixel and row pitches of the input stream (:mod:`rtl.linebuffer`), operations per window,
    weight words and line-buffer span."""
    keff_h = (v.kernel_h - 1) * v.dilation_h + 1
    keff_w = (v.kernel_w - 1) * v.dilation_w + 1
    cin_groups = -(-v.in_channels // v.simd)
    cout_groups = -(-v.out_channels // v.pe)
    pixel_bytes = v.in_channels if v.pack else cin_groups * v.simd
    w_cp = v.in_width * pixel_bytes
    row_bytes = v.in_row_bytes if v.pack else w_cp
    ops = -(-(v.kernel_h * v.kernel_w * pixel_bytes) // v.simd)
    col_step = v.dilation_w * pixel_bytes
    span_bytes = (keff_h - 1) * row_bytes + keff_w * pixel_bytes
    return dict(keff_h=keff_h, keff_w=keff_w, cout_groups=cout_groups, pixel_bytes=pixel_bytes,
                w_cp=w_cp, row_bytes=row_bytes, ops=ops, col_step=col_step,
                kw_col_step=v.kernel_w * col_step, row_step=v.dilation_h * row_bytes,
                weight_words=cout_groups * ops,
                span=-(-span_bytes // v.simd) + v.pack)


def derive_pool(v) -> dict:
    """The max-pool unit's derived constants (``keff``, ``limit``: the last window start
    without ``ceil_mode``, relative to the map) and whether a window covers only padding."""
    d = {}
    for a, n, k, s, dil, pb, pe in (("h", v.height, v.kernel_h, v.stride_h, v.dilation_h,
                                     v.pad_top, v.pad_bottom),
                                    ("w", v.width, v.kernel_w, v.stride_w, v.dilation_w,
                                     v.pad_left, v.pad_right)):
        d[f"keff_{a}"] = (k - 1) * dil + 1
        d[f"limit_{a}"] = n + pe - d[f"keff_{a}"]
    d["empty_window"] = False
    if min(v.height, v.width, v.kernel_h, v.kernel_w, v.stride_h, v.stride_w, v.dilation_h,
           v.dilation_w) > 0:
        for n, k, s, dil, pb, pe in ((v.height, v.kernel_h, v.stride_h, v.dilation_h,
                                      v.pad_top, v.pad_bottom),
                                     (v.width, v.kernel_w, v.stride_w, v.dilation_w,
                                      v.pad_left, v.pad_right)):
            if n + pb + pe < (k - 1) * dil + 1:
                continue
            out = conv_output_size(n, k, s, (pb, pe), dil, ceil_mode=bool(v.ceil_mode),
                                   strict=False)
            if any(all(not 0 <= o * s - pb + j * dil < n for j in range(k))
                   for o in range(out)):
                d["empty_window"] = True
    return d


def _first(refusals, v, conv=True):
    for stage in ("build", "range", "derived", "run"):
        for r in refusals:
            if r.stage == stage and (conv or not r.conv) and r.check(v):
                return r
    return None


def layer_values(fields: dict, params: dict) -> SimpleNamespace:
    """The values the engine's checks see for a layer programmed with the register ``fields``
    (a flat ``{field: value}`` of every ``rw`` field, enum names allowed: see
    :func:`rtl.engine_regs.layer_fields`) on an
    engine of ``params`` (:func:`engine_params`): the fields, the parameters, the derived
    constants (:func:`derive`), ``fused`` and ``alone``."""
    f = dict(fields)
    for name, value in f.items():
        f[name] = int(PoolMode[value] if name == "pool_mode" and isinstance(value, str)
                      else value)
    v = SimpleNamespace(**{**params, **f}, fused=int(f["pool_mode"] == PoolMode.FUSED),
                        alone=int(f["pool_mode"] == PoolMode.ALONE), max_pool_mode=max(PoolMode))
    v.__dict__.update(derive(v))
    return v


def check_layer(fields: dict, params: dict):
    """``(refusal, values)``: the :class:`Refusal` the engine of ``params`` gives a layer
    programmed with the register ``fields`` (see :func:`layer_values`) and the values that
    format its message; None when the engine accepts it. The max-pool unit's refusals come
    back named and numbered as in :data:`EngineError` (``POOL_*``). The checks run in the
    hardware's order: the conv's range checks, its derived checks, then the max-pool unit's."""
    v = layer_values(fields, params)
    found = _first(ENGINE_REFUSALS, v, conv=not v.alone)
    if found is not None:
        return found, vars(v)
    if not (v.fused or v.alone):
        return None
    pool_v = pool_values(vars(v), params, v.fused)
    found = _first(POOL_REFUSALS, pool_v)
    if found is not None:
        return _named(found, "POOL_"), vars(pool_v)
    return None


def first_refusal(fields: dict, params: dict):
    """The :class:`Refusal` of :func:`check_layer`, or None."""
    found = check_layer(fields, params)
    return found[0] if found else None


def pool_values(f: dict, params: dict, fused: bool):
    """The max-pool unit's values for the engine's register fields ``f``: its map is the conv
    output when ``fused``, the input feature map when alone."""
    if fused:
        height = conv_output_size(f["in_height"], f["kernel_h"], f["stride_h"],
                                  (f["pad_top"], f["pad_bottom"]), f["dilation_h"],
                                  strict=False)
        width = conv_output_size(f["in_width"], f["kernel_w"], f["stride_w"],
                                 (f["pad_left"], f["pad_right"]), f["dilation_w"],
                                 strict=False)
        channels = f["out_channels"]
    else:
        height, width, channels = f["in_height"], f["in_width"], f["in_channels"]
    v = SimpleNamespace(
        **engine_pool_params(params), height=height, width=width, channels=channels,
        ceil_mode=f["pool_ceil_mode"],
        **{name: f[f"pool_{name}"] for name in (
            "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w",
            "pad_top", "pad_left", "pad_bottom", "pad_right")})
    v.__dict__.update(derive_pool(v))
    return v


def _named(r: Refusal, prefix: str) -> Refusal:
    return Refusal(prefix + r.name, EngineError[prefix + r.name], r.stage, r.check, r.doc,
                   r.message, r.conv)


def refusal_message(code, fields: dict, params: dict) -> str:
    """The one-line message of refusal ``code`` (an :data:`EngineError` code or name, as the
    hardware reported it) for a layer of register ``fields`` on an engine of ``params``."""
    r = refusal(code)
    v = layer_values(fields, params)
    name = EngineError(code).name if not isinstance(code, str) else code
    if name.startswith("POOL_") and r not in ENGINE_REFUSALS:
        v = pool_values(vars(v), params, v.fused)
    try:
        return r.message.format(**vars(v))
    except (KeyError, IndexError, AttributeError, ValueError):
        return r.doc
