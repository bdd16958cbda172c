"""The engine's one definition of parameters, limits and refusals (rtl.limits), on the host.

The hardware side (the same checks evaluated on signals, STATUS.error for each boundary) is
tested in tb/test_engine_limits.py, which also compares every case with :func:`check_layer`.
"""

import pytest

from rtl import limits
from rtl.engine_regs import REGMAP
from rtl.limits import (ENGINE_REFUSALS, ERROR_WIDTH, POOL_ERROR_BASE, POOL_REFUSALS,
                        EngineError, PoolError, PoolMode, check_layer, engine_params,
                        first_refusal, pool_params, refusal, refusal_message)

DEFAULT = engine_params()


def fields(**values):
    """Every configuration field at its reset value, then ``values``."""
    return {**REGMAP.resets(), "in_height": 16, "in_width": 16, "in_channels": 8,
            "out_channels": 8, "kernel_h": 3, "kernel_w": 3, **values}


def test_codes_come_from_the_tables():
    assert [m.name for m in PoolError][1:] == [r.name for r in sorted(POOL_REFUSALS,
                                                                       key=lambda r: r.code)]
    for r in ENGINE_REFUSALS:
        assert EngineError[r.name] == r.code < POOL_ERROR_BASE
    for r in POOL_REFUSALS:
        assert EngineError[f"POOL_{r.name}"] == POOL_ERROR_BASE + PoolError[r.name]
    assert ERROR_WIDTH == max(EngineError).bit_length() == 6
    assert REGMAP.field("error").width == ERROR_WIDTH
    assert REGMAP.field("error").enum == {m.name: int(m) for m in EngineError}
    assert REGMAP.field("error").enum_docs["POOL_WINDOW_SLOTS"] == refusal(
        "POOL_WINDOW_SLOTS").doc


def test_every_refusal_has_a_doc_and_a_message():
    for r in ENGINE_REFUSALS + POOL_REFUSALS:
        assert r.doc and r.message and r.stage in limits.STAGES


def test_a_bad_table_is_refused():
    with pytest.raises(ValueError, match="stage must be one of"):
        limits.Refusal("X", 1, "never", lambda v: False, "doc", "msg")
    # A code the table does not use is accepted (the last entry's, with that entry left out).
    extra = limits.Refusal("X", ENGINE_REFUSALS[-1].code, "range", lambda v: False, "doc", "msg")
    limits.check_tables(ENGINE_REFUSALS[:-1] + (extra,), POOL_REFUSALS)
    for code in (11, 0, POOL_ERROR_BASE):
        bad = limits.Refusal("X", code, "range", lambda v: False, "doc", "msg")
        with pytest.raises(ValueError, match="refusal codes must be distinct"):
            limits.check_tables(ENGINE_REFUSALS + (bad,), POOL_REFUSALS)


# --- parameters --------------------------------------------------------------------------------

def test_defaults_and_derived_sizes():
    p = engine_params()
    assert p == engine_params(**limits.ENGINE_DEFAULTS)
    assert (p["weight_depth"], p["line_buffer_depth"], p["pool_max_stride"],
            p["requant_lanes"], p["channel_depth"], p["param_width"]) == (1024, 16384, 7,
                                                                          4, 16, 512)
    # The weight memory holds the largest layer, at most DEFAULT_WEIGHT_DEPTH words: the last
    # layer size kept whole, the first one capped.
    assert limits.DEFAULT_WEIGHT_DEPTH == 1024
    assert engine_params(max_kernel=4, max_channels=64)["weight_depth"] == 8 * 16 * 8 == 1024
    assert engine_params(max_kernel=5, max_channels=64)["weight_depth"] == 1024 < 8 * 25 * 8
    assert engine_params(max_kernel=3)["weight_depth"] == 8 * 9 * 8
    # Requantize units: PE / DEFAULT_REQUANT_SHARING by default, at least one.
    assert limits.DEFAULT_REQUANT_SHARING == 2
    assert [engine_params(pe=pe)["requant_lanes"] for pe in (1, 2, 8, 16)] == [1, 1, 4, 8]
    # The parameter port is the weight word, at most 512 and at least 32 bits.
    assert engine_params(pe=4, simd=4)["param_width"] == 128
    assert engine_params(pe=16, simd=16)["param_width"] == 512
    assert engine_params(pe=1, simd=2)["param_width"] == 32
    assert engine_params(pe=1, simd=4, max_channels=32)["channel_depth"] == 64


@pytest.mark.parametrize("name, last_good, first_bad", [
    ("pe", 64, 128), ("simd", 64, 128), ("max_kernel", 255, 256),
    ("max_width", 65535, 65536), ("max_height", 65535, 65536),
    ("max_channels", 65535, 65536), ("max_stride", 15, 16), ("max_dilation", 15, 16),
    ("counter_width", 64, 65), ("pool_window_slots", 7, 8), ("pool_max_stride", 255, 256),
    ("param_width", 512, 1024), ("channel_depth", 1, 0),
])
def test_parameter_boundaries(name, last_good, first_bad):
    engine_params(**{name: last_good})
    with pytest.raises(ValueError, match=rf"{name} must be .*not {first_bad}"):
        engine_params(**{name: first_bad})


@pytest.mark.parametrize("name, bad", [
    ("pe", 3), ("pe", 0), ("simd", True), ("max_kernel", 0), ("fifo_depth", 1),
    ("requant_lanes", 16), ("line_buffer_depth", 1000), ("weight_depth", 0),
    ("narrow_registers", 1), ("dsp", "xilinx"), ("pool_window_slots", -1)])
def test_bad_parameters_are_named(name, bad):
    with pytest.raises(ValueError, match=name):
        engine_params(**{name: bad})


@pytest.mark.parametrize("params, last_good, first_bad", [
    (dict(pe=4, simd=4), 128, 256), (dict(pe=8, simd=8), 512, 1024),
    (dict(pe=16, simd=16), 2048, 4096), (dict(pe=1, simd=1), 32, 64)])
def test_param_width_range(params, last_good, first_bad):
    """param_width: a power of two from 32 to the weight word (8 * pe * simd bits, at least
    32)."""
    engine_params(**params, param_width=last_good)
    engine_params(**params, param_width=32)
    for bad in (first_bad, 16, 48, True):
        with pytest.raises(ValueError, match=rf"^param_width must be a power of two from 32 to "
                                             rf"{last_good} \(the weight word\), not {bad!r}$"):
            engine_params(**params, param_width=bad)


def test_unknown_parameter():
    with pytest.raises(TypeError, match="unknown engine parameter 'max_kernels'"):
        engine_params(max_kernels=3)


def test_pool_parameters():
    assert pool_params() == dict(lanes=8, max_kernel=7, max_width=224, max_channels=64,
                                 max_height=224, max_stride=7, max_dilation=7, window_slots=7)
    pool_params(window_slots=0)
    with pytest.raises(ValueError, match="window_slots must be .* not 8"):
        pool_params(window_slots=8)
    with pytest.raises(ValueError, match="lanes must be a power of two up to 64, not 128"):
        pool_params(lanes=128)


# --- the host's checks, at every boundary ------------------------------------------------------

def refused(**values):
    found = first_refusal(fields(**values), DEFAULT)
    return found.name if found else None


@pytest.mark.parametrize("values, code", [
    (dict(kernel_h=7, kernel_w=7), None), (dict(kernel_h=8), "KERNEL"),
    (dict(kernel_w=0), "KERNEL"),
    (dict(dilation_h=4, dilation_w=4, kernel_h=2, kernel_w=2), None),
    (dict(dilation_w=5), "DILATION"), (dict(dilation_h=0), "DILATION"),
    (dict(stride_h=4, stride_w=4), None), (dict(stride_w=5), "STRIDE"),
    (dict(stride_h=0), "STRIDE"),
    (dict(in_height=224, in_width=224), None), (dict(in_width=225), "SIZE"),
    (dict(in_height=0), "SIZE"),
    (dict(in_channels=64, out_channels=64), None), (dict(out_channels=65), "CHANNELS"),
    (dict(in_channels=0), "CHANNELS"),
    (dict(pad_top=2, pad_left=2, pad_bottom=2, pad_right=2), None),
    (dict(pad_right=3), "PAD"), (dict(pad_top=3), "PAD"),
    (dict(kernel_h=3, dilation_h=2, pad_top=4), None),
    (dict(kernel_h=3, dilation_h=2, pad_top=5), "PAD"),
    (dict(in_width=2, kernel_w=3, pad_left=1), None),
    (dict(in_width=1, kernel_w=3, pad_left=1), "NO_OUTPUT"),
    (dict(raw_output=1, pool_mode="FUSED", pool_kernel_h=2, pool_kernel_w=2), "POOL_RAW"),
    (dict(pool_mode=3), "POOL_MODE"),
])
def test_conv_boundaries(values, code):
    assert refused(**values) == code


def test_weights_and_line_buffer_boundaries():
    small = engine_params(weight_depth=9 * 8, line_buffer_depth=128, max_channels=64)
    # 8 output channels (1 group) x 3x3 x 64 input channels (8 groups) = 72 words; 9 output
    # channels are 2 groups, 144 words
    assert first_refusal(fields(in_channels=64, in_width=4), small) is None
    assert first_refusal(fields(in_channels=64, out_channels=9, in_width=4),
                         small).name == "WEIGHTS"
    # span ((3 - 1) * W + 3) * 8 groups <= 128 words: W = 6 fits (120), W = 7 does not (136)
    assert first_refusal(fields(in_channels=64, in_width=6), small) is None
    assert first_refusal(fields(in_channels=64, in_width=7), small).name == "LINE_BUFFER"


def test_base_address_boundaries():
    """weight_base + weight words <= weight_depth, chan_base + ceil(Cout/PE) <=
    channel_depth: the last legal base is accepted, the next refused, and the message names
    the numbers."""
    small = engine_params(weight_depth=100, channel_depth=5, max_channels=64)
    layer = dict(in_channels=16, out_channels=24, kernel_h=3, kernel_w=3)      # 3 * 9 * 2 = 54
    assert first_refusal(fields(**layer, weight_base=46), small) is None
    assert first_refusal(fields(**layer, weight_base=47), small).name == "WEIGHTS"
    assert refusal_message("WEIGHTS", fields(**layer, weight_base=47), small) == \
        "54 weight words from word 47 exceed the engine's weight memory of 100"
    assert first_refusal(fields(**layer, chan_base=2), small) is None       # 3 groups
    assert first_refusal(fields(**layer, chan_base=3), small).name == "CONSTANTS"
    assert refusal_message("CONSTANTS", fields(**layer, chan_base=3), small) == \
        "3 channel-constant words from word 3 exceed the engine's channel-constant memory of 5"
    assert first_refusal(fields(**layer, chan_base=2 ** 32 - 1), small).name == "CONSTANTS"
    # A pool alone reads no parameters: the bases do not matter.
    assert first_refusal(fields(pool_mode="ALONE", pool_kernel_h=2, pool_kernel_w=2,
                                pool_stride_h=2, pool_stride_w=2, weight_base=1000,
                                chan_base=1000), small) is None
    assert EngineError.CONSTANTS == 15 and EngineError.WEIGHTS == 8


def pool(mode="ALONE", **values):
    base = dict(pool_mode=mode, pool_kernel_h=2, pool_kernel_w=2, pool_stride_h=2,
                pool_stride_w=2)
    return refused(**{**base, **values})


@pytest.mark.parametrize("values, code", [
    (dict(), None),
    (dict(pool_kernel_h=4, pool_stride_h=2), None),
    (dict(pool_kernel_h=5, pool_stride_h=2), "POOL_WINDOW_SLOTS"),
    (dict(pool_kernel_w=3, pool_stride_w=1), "POOL_WINDOW_SLOTS"),
    (dict(pool_kernel_h=7, pool_stride_h=4), None),
    (dict(pool_kernel_h=8, pool_stride_h=4), "POOL_KERNEL"),
    (dict(pool_stride_w=7), None), (dict(pool_stride_w=8), "POOL_STRIDE"),
    (dict(pool_dilation_w=4, pool_kernel_w=2, pool_stride_w=3), None),
    (dict(pool_dilation_w=4, pool_kernel_w=2, pool_stride_w=2), "POOL_WINDOW_SLOTS"),
    (dict(pool_dilation_w=5, pool_kernel_w=2, pool_stride_w=3), "POOL_DILATION"),
    (dict(pool_pad_left=1), None), (dict(pool_pad_left=2), "POOL_PAD"),
    (dict(in_channels=64), None), (dict(in_channels=65), "POOL_CHANNELS"),
    (dict(in_height=224), None), (dict(in_height=225), "POOL_SIZE"),
    (dict(in_width=1, pool_pad_right=1), None),
    (dict(in_width=1, pool_pad_right=0), "POOL_NO_OUTPUT"),
    (dict(pool_kernel_w=2, pool_stride_w=2, pool_dilation_w=2, pool_pad_left=1,
          pool_pad_right=1, in_width=2), None),
    (dict(pool_kernel_w=2, pool_stride_w=2, pool_dilation_w=2, pool_pad_left=1,
          pool_pad_right=1, in_width=1), "POOL_EMPTY_WINDOW"),
])
def test_pool_alone_boundaries(values, code):
    assert pool(**values) == code


def test_fused_pool_sees_the_conv_output():
    # conv 3x3 on 16x16 without pads: 14x14, 8 channels; pool 2x2/2 fits
    assert pool("FUSED") is None
    # the conv's own checks come first
    assert pool("FUSED", kernel_h=8) == "KERNEL"
    # 65 output channels: the conv refuses before the pool unit sees them
    assert pool("FUSED", out_channels=65) == "CHANNELS"
    # padding can make the conv output, the pool's map, wider than the maximum: 224 wide
    # with pads 1 + 1 and a 3-wide kernel fits, pads 2 + 2 give 226: POOL_SIZE
    wide = dict(in_width=224, kernel_w=3, pool_mode="FUSED", pool_kernel_h=2,
                pool_kernel_w=2, pool_stride_h=2, pool_stride_w=2)
    assert refused(**wide, pad_left=1, pad_right=1) is None
    assert refused(**wide, pad_left=2, pad_right=2) == "POOL_SIZE"


def test_no_pool_unit():
    hw = engine_params(pool_window_slots=0)
    assert first_refusal(fields(pool_mode="ALONE"), hw).name == "POOL_NO_UNIT"
    assert first_refusal(fields(pool_mode="FUSED"), hw).name == "POOL_NO_UNIT"
    assert first_refusal(fields(), hw) is None
    assert first_refusal(fields(pool_mode=PoolMode.ALONE, kernel_h=99), DEFAULT) is None


def test_messages_name_the_values_and_the_limit():
    refusal_found, values = check_layer(fields(in_channels=100), DEFAULT)
    assert refusal_found.message.format(**values) == \
        "100 input / 8 output channels exceed the engine's maximum 64"
    assert refusal_message("CHANNELS", fields(in_channels=100), DEFAULT) == \
        "100 input / 8 output channels exceed the engine's maximum 64"
    assert refusal_message(EngineError.POOL_WINDOW_SLOTS, fields(
        pool_mode="ALONE", pool_kernel_h=3, pool_kernel_w=3), DEFAULT) == \
        "the dilated pool kernel exceeds 2 window slots x the pool stride"
    for r in ENGINE_REFUSALS + POOL_REFUSALS:
        name = r.name if r in ENGINE_REFUSALS else f"POOL_{r.name}"
        text = refusal_message(name, fields(pool_mode="ALONE"), DEFAULT)
        assert "{" not in text and text
