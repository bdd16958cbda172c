"""Quantization arithmetic: exactly what the hardware computes.

Requantization
--------------
An int32 accumulator ``acc`` is scaled to an 8-bit activation with one integer multiply, one
rounding shift and one saturation (gemmlowp / TFLite's fixed-point multiplier, but rounded
once instead of twice)::

    prod = int64(acc) * multiplier              # multiplier < 2**31, so |prod| < 2**62
    y    = (prod + 2**(shift - 1)) >> shift     # arithmetic shift: round half toward +infinity
    y    = y + zero_point
    y    = clip(y, lo, hi)                      # lo = max(lo, zero_point) with a fused ReLU

``(multiplier, shift)`` come from :func:`quantize_multiplier` so that
``real_scale ~= multiplier * 2**-shift`` with a relative error below ``2**-31``. ONNX defines
the same step as a float multiply rounded half to even; the two can differ by one step on
(near) ties, and agree everywhere else.
"""

import numpy as np

__all__ = [
    "MULTIPLIER_BITS", "SHIFT_MIN", "SHIFT_MAX", "ACC_MIN", "ACC_MAX",
    "dtype_range", "real_scale", "quantize_multiplier", "requantize", "quantize", "dequantize",
]

#: The multiplier is an unsigned fixed-point fraction with this many bits: [2**30, 2**31).
MULTIPLIER_BITS = 31
#: Smallest and largest right shift the hardware supports.
SHIFT_MIN = 1
SHIFT_MAX = 62
#: Up to this shift, the zero point can join the rounding constant without int64 overflow:
#: 2**62 + 255 * 2**53 + 2**52 < 2**63.
ZERO_POINT_FOLD_MAX_SHIFT = 53
#: The accumulator is a 32-bit two's-complement register.
ACC_BITS = 32
ACC_MIN = -(1 << (ACC_BITS - 1))
ACC_MAX = (1 << (ACC_BITS - 1)) - 1

#: Activation and weight types the model and the hardware support.
QUANT_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))


def dtype_range(dtype) -> tuple[int, int]:
    """``(lo, hi)`` of an 8-bit quantized type; ValueError for any other type."""
    dtype = check_quant_dtype(dtype, "dtype")
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def check_quant_dtype(dtype, name: str) -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is int8 or uint8, else raise ValueError naming ``name``."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{name} must be int8 or uint8, not {dtype!r}") from None
    if dt not in QUANT_DTYPES:
        raise ValueError(f"{name} must be int8 or uint8, not {dt}")
    return dt


def as_int_array(value, name: str) -> np.ndarray:
    """``value`` as an int64 array; ValueError unless every element is an integer."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer, not {_show(arr)} ({arr.dtype})")
    return arr.astype(np.int64)


def check_range(arr: np.ndarray, lo: int, hi: int, name: str) -> None:
    """ValueError showing the first element of ``arr`` outside ``[lo, hi]``."""
    bad = (arr < lo) | (arr > hi)
    if np.any(bad):
        value = arr[bad].flat[0]
        raise ValueError(f"{name} must lie in [{lo}, {hi}], not {value}")


def channel_axis(ndim: int, axis) -> int:
    """Normalized channel axis: ``axis``, or C of (N)CHW / of (N, C) when ``axis`` is None."""
    if axis is None:
        axis = -3 if ndim >= 3 else -1
    if ndim == 0:
        raise ValueError("a per-channel parameter needs an array with a channel axis, not a scalar")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimensions")
    return axis % ndim


def broadcast_channel(param: np.ndarray, shape: tuple, axis, name: str) -> np.ndarray:
    """Shape a scalar or 1-D per-channel ``param`` to broadcast along ``axis`` of ``shape``."""
    if param.ndim == 0:
        return param
    if param.ndim == len(shape) and param.ndim > 1:  # already shaped to broadcast
        try:
            if np.broadcast_shapes(param.shape, shape) == tuple(shape):
                return param
        except ValueError:
            pass
        raise ValueError(f"{name} of shape {param.shape} does not broadcast to the data's "
                         f"shape {tuple(shape)}")
    if param.ndim != 1:
        raise ValueError(f"{name} must be a scalar or 1-D per-channel array, "
                         f"not shape {param.shape}")
    if param.size == 1:
        return param.reshape(())
    ax = channel_axis(len(shape), axis)
    if param.size != shape[ax]:
        raise ValueError(f"{name} has {param.size} channels but the data of shape {shape} "
                         f"has {shape[ax]} along axis {ax}")
    new_shape = [1] * len(shape)
    new_shape[ax] = param.size
    return param.reshape(new_shape)


def max_abs(arr: np.ndarray, offset: int = 0) -> int:
    """Largest ``|a - offset|`` over an integer-valued array (0 for an empty one)."""
    if arr.size == 0:
        return 0
    return int(max(abs(int(arr.max()) - offset), abs(int(arr.min()) - offset)))


def _show(arr) -> str:
    arr = np.asarray(arr)
    if arr.size == 1:
        return repr(arr.item())
    values = arr.ravel()[:8].tolist()
    return str(values)[:-1] + ", ...]" if arr.size > 8 else str(values)


def real_scale(x_scale, w_scale, y_scale) -> np.ndarray:
    """``x_scale * w_scale / y_scale`` rounded to float32 after the product and after the
    quotient, as ONNX's reference QLinearConv and QLinearMatMul and onnxruntime compute it: the
    scale convcore requantizes with (as float64; per channel for 1-D ``w_scale``)."""
    product = np.float32(x_scale) * np.asarray(w_scale, np.float32)
    return (product / np.float32(y_scale)).astype(np.float64)


def quantize_multiplier(real_scale):
    """Fixed-point form of a positive real scale: ``real_scale ~= multiplier * 2**-shift``.

    Parameters
    ----------
    real_scale : float or array of float
        Finite and > 0, below ``2**30``. Typically ``x_scale * w_scale / y_scale``.

    Returns
    -------
    (multiplier, shift) : int64 scalars, or int64 arrays of the input's shape
        ``m, e = frexp(real_scale)``; ``multiplier = round_half_up(m * 2**31)`` in
        ``[2**30, 2**31)`` (``2**31`` becomes ``2**30`` with ``e + 1``) and ``shift = 31 - e``.
        Shifts above :data:`SHIFT_MAX` are brought to it by dividing the multiplier by the
        excess power of two, rounded half up (tiny scales may give a small or zero multiplier).

    Raises
    ------
    ValueError
        For a non-finite, non-positive or too large scale (it would need ``shift < 1``).
    """
    try:
        scale = np.asarray(real_scale, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"real_scale must be a finite number > 0, not {real_scale!r}") from None
    bad = ~np.isfinite(scale) | ~(scale > 0)
    if np.any(bad):
        raise ValueError(f"real_scale must be finite and > 0, not {scale[bad].flat[0].item()!r}")
    m, e = np.frexp(scale)
    # m * 2**31 is exact in float64 and below 2**31, so adding 0.5 is exact too.
    multiplier = np.floor(m * float(1 << MULTIPLIER_BITS) + 0.5).astype(np.int64)
    e = e.astype(np.int64)
    carry = multiplier == (1 << MULTIPLIER_BITS)
    multiplier = np.where(carry, np.int64(1 << (MULTIPLIER_BITS - 1)), multiplier)
    e = e + carry
    shift = MULTIPLIER_BITS - e
    if np.any(shift < SHIFT_MIN):
        raise ValueError(f"real_scale {scale[shift < SHIFT_MIN].flat[0].item()!r} is too large: it "
                         f"rounds to 2**{MULTIPLIER_BITS - SHIFT_MIN} or more, which needs a "
                         f"shift below {SHIFT_MIN}")
    # Excess shift beyond SHIFT_MAX: divide, rounding half up. multiplier < 2**31, so an excess
    # of 33 or more always gives 0; clamping the excess keeps the int64 shifts well defined.
    excess = np.minimum(np.maximum(shift - SHIFT_MAX, 0), MULTIPLIER_BITS + 2)
    half = np.where(excess > 0, np.left_shift(np.int64(1), np.maximum(excess - 1, 0)), 0)
    multiplier = np.right_shift(multiplier + half, excess)
    shift = np.minimum(shift, SHIFT_MAX)
    if multiplier.ndim == 0:
        return np.int64(multiplier), np.int64(shift)
    return multiplier, shift


def requantize(acc, multiplier, shift, zero_point, dtype, relu=False, axis=None):
    """Scale int32 accumulators to int8 or uint8, exactly as the hardware does.

    Parameters
    ----------
    acc : array of integers in the int32 range
        Accumulators, e.g. from :func:`model.conv2d`.
    multiplier, shift : int or 1-D int array
        From :func:`quantize_multiplier`: ``0 <= multiplier < 2**31``,
        ``1 <= shift <= 62``; per tensor (scalar) or per channel along ``axis`` (or an array of
        ``acc``'s rank that broadcasts against it).
    zero_point : int or 1-D int array
        Output zero point, inside the range of ``dtype``; per tensor or per channel.
    dtype : int8 or uint8
        Output type; results saturate to its range.
    relu : bool
        Fuse a ReLU: the lower saturation bound becomes ``max(lo, zero_point)``.
    axis : int, optional
        Channel axis of per-channel parameters; default C of (N)CHW (``-3``) for 3-D and larger
        arrays, else the last axis (C of (N, C)).

    Returns
    -------
    ndarray of ``dtype``, the shape of ``acc``
        ``clip(((acc * multiplier + 2**(shift-1)) >> shift) + zero_point, lo, hi)``.
    """
    dtype = check_quant_dtype(dtype, "dtype")
    lo, hi = dtype_range(dtype)
    acc_arr = np.asarray(acc)
    if acc_arr.dtype.kind not in "iu":
        raise ValueError(f"acc must be an integer array (int32 accumulators), not {acc_arr.dtype}")
    if acc_arr.dtype.itemsize > 4 or acc_arr.dtype == np.uint32:
        check_range(acc_arr, ACC_MIN, ACC_MAX, "acc")
        acc_arr = acc_arr.astype(np.int64)
    if not isinstance(relu, (bool, np.bool_)):
        raise ValueError(f"relu must be True or False, not {relu!r}")
    mult = as_int_array(multiplier, "multiplier")
    check_range(mult, 0, (1 << MULTIPLIER_BITS) - 1, "multiplier")
    sh = as_int_array(shift, "shift")
    check_range(sh, SHIFT_MIN, SHIFT_MAX, "shift")
    zp = as_int_array(zero_point, "zero_point")
    check_range(zp, lo, hi, "zero_point")
    shape = acc_arr.shape
    mult = broadcast_channel(mult, shape, axis, "multiplier")
    sh = broadcast_channel(sh, shape, axis, "shift")
    zp = broadcast_channel(zp, shape, axis, "zero_point")

    # One common shift for every channel when the products stay inside int64: multiplying by
    # 2**d more and shifting by d more gives the same floor. Scalar shifts and rounding
    # constants make the passes below cheaper than per-channel ones.
    s_max, s_min = int(np.max(sh)), int(np.min(sh))
    if s_min != s_max and s_max - s_min <= MULTIPLIER_BITS:
        wide = np.left_shift(mult, s_max - sh)      # < 2**62
        bound = max_abs(acc_arr) * int(np.max(wide))
        if bound + (1 << (s_max - 1)) + (max(-lo, hi) << s_max) < (1 << 63):
            mult, sh = wide, np.int64(s_max)
    y = np.multiply(acc_arr, mult, dtype=np.int64)  # fits int64: mult < 2**31 or the bound above
    rounding = np.left_shift(np.int64(1), sh - 1)   # round half toward +infinity ...
    if s_max <= ZERO_POINT_FOLD_MAX_SHIFT:
        # Adding zero_point * 2**shift before the shift is the same as adding zero_point after
        # it, and saves a pass; |prod| + |zero_point| * 2**shift + 2**(shift-1) < 2**63 here.
        y += rounding + np.left_shift(zp, sh)
        y >>= sh                                    # ... with an arithmetic shift
    else:
        y += rounding
        y >>= sh
        y += zp
    lower = np.maximum(zp, lo) if relu else np.int64(lo)
    np.clip(y, lower, np.int64(hi), out=y)
    return y.astype(dtype)


def _float_param(value, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0, not {value!r}") from None
    bad = ~np.isfinite(arr) | ~(arr > 0)
    if np.any(bad):
        raise ValueError(f"{name} must be finite and > 0, not {arr[bad].flat[0].item()!r}")
    return arr


def quantize(x_float, scale, zero_point, dtype, axis=None):
    """ONNX QuantizeLinear: ``saturate(round_half_even(x / scale) + zero_point)``.

    Computed in float32 like onnxruntime. ``scale`` and ``zero_point`` are scalars, 1-D per
    channel along ``axis`` (default as :func:`requantize`) or arrays of x's rank that broadcast
    against it. Infinities saturate; NaN is an error.
    """
    dtype = check_quant_dtype(dtype, "dtype")
    lo, hi = dtype_range(dtype)
    x = np.asarray(x_float)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"x_float must be a real array, not {x.dtype}")
    x = x.astype(np.float32)
    if np.any(np.isnan(x)):
        raise ValueError("x_float contains NaN, which has no quantized value")
    s = broadcast_channel(_float_param(scale, "scale"), x.shape, axis, "scale")
    zp = as_int_array(zero_point, "zero_point")
    check_range(zp, lo, hi, "zero_point")
    zp = broadcast_channel(zp, x.shape, axis, "zero_point")
    with np.errstate(over="ignore"):
        q = np.rint(x / s)
    # Clip in float before the cast (out-of-range floats have no defined integer conversion)
    # to a range wide enough that the final saturation still decides for every zero point.
    q = np.clip(q, lo - hi, hi - lo).astype(np.int64) + zp
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q, scale, zero_point, axis=None):
    """ONNX DequantizeLinear: ``float32(q - zero_point) * scale``, per tensor or per axis."""
    arr = np.asarray(q)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"q must be an integer array, not {arr.dtype}")
    s = broadcast_channel(_float_param(scale, "scale"), arr.shape, axis, "scale")
    zp = broadcast_channel(as_int_array(zero_point, "zero_point"), arr.shape, axis, "zero_point")
    return (arr.astype(np.int64) - zp).astype(np.float32) * s
