"""Integer 2-D convolution, its output-size rule and its parameter count.

Exactness
---------
The hardware accumulates ``(x - x_zero_point) * (w - w_zero_point)`` into a 32-bit register.
The model computes the same sums with float32 GEMMs, which is exact under this bound: with
``B = max|x - x_zero_point| * max|w - w_zero_point|`` (at most ``255 * 255``, measured on the
actual data), each GEMM covers at most ``2**24 // B`` terms of the reduction axis, so every
product and every partial sum, in whatever order BLAS adds them, is an integer of magnitude at
most ``2**24``, and float32 represents all of those exactly. (Typical layers need one GEMM:
``K * B <= 2**24``, e.g. 576 taps of 3x3x64 with B up to 29000.) Several GEMMs' results are summed
in int64; the bias is added and the total wraps to int32 like the hardware accumulator. The model
falls back to int64 matmul if a single product could exceed ``2**24`` (never for 8-bit data) or if
the BLAS in use fails a one-time check that its float32 GEMM is exact on integers.
"""

import functools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .quant import (ACC_MAX, ACC_MIN, QUANT_DTYPES, as_int_array, check_quant_dtype, check_range,
                    dtype_range, max_abs)

__all__ = ["conv2d", "conv_output_size", "conv_params"]

#: Every integer of magnitude up to this is exact in float32 (24-bit significand).
FLOAT32_EXACT = 1 << 24


# --- argument helpers (shared with pool.py and dense.py) -----------------------------------

def as_int(value, name: str, minimum: int) -> int:
    """A Python int ``>= minimum``; ValueError showing the bad value otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return int(value)


def as_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair of ints, each ``>= minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        v = as_int(value, name, minimum)
        return v, v
    if not isinstance(value, (tuple, list, np.ndarray)) or len(value) != 2:
        raise ValueError(f"{name} must be an int or a (height, width) pair, not {value!r}")
    return as_int(value[0], name, minimum), as_int(value[1], name, minimum)


def as_pads(padding) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` from an int, a (ph, pw) pair or ONNX order (t, l, b, r)."""
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, (bool, np.bool_)):
        p = as_int(padding, "padding", 0)
        return p, p, p, p
    if isinstance(padding, (tuple, list, np.ndarray)) and len(padding) == 2:
        ph, pw = as_pair(tuple(padding), "padding", 0)
        return ph, pw, ph, pw
    if isinstance(padding, (tuple, list, np.ndarray)) and len(padding) == 4:
        top, left, bottom, right = (as_int(p, "padding", 0) for p in padding)
        return top, left, bottom, right
    raise ValueError(f"padding must be an int, a (ph, pw) pair or ONNX (top, left, bottom, right), "
                     f"not {padding!r}")


def as_nchw(x, name: str, dtypes) -> tuple[np.ndarray, bool]:
    """``x`` as a 4-D NCHW array and whether it had a batch axis; checks rank and dtype."""
    arr = np.asarray(x)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{name} must be NCHW or CHW, not shape {arr.shape}")
    if arr.dtype not in dtypes:
        allowed = " or ".join(str(np.dtype(d)) for d in dtypes)
        raise ValueError(f"{name} must be {allowed}, not {arr.dtype}")
    return (arr, True) if arr.ndim == 4 else (arr[np.newaxis], False)


def zero_point_array(value, name: str, dtype, channels: int | None) -> np.ndarray:
    """An int64 zero point: scalar, or 1-D with ``channels`` entries when ``channels`` is set."""
    zp = as_int_array(value, name)
    if zp.ndim == 1 and zp.size == 1:
        zp = zp.reshape(())
    if zp.ndim != 0 and (channels is None or zp.shape != (channels,)):
        want = "a scalar" if channels is None else f"a scalar or {channels} per-channel values"
        raise ValueError(f"{name} must be {want}, not shape {zp.shape}")
    lo, hi = dtype_range(dtype)
    check_range(zp, lo, hi, f"{name} for {np.dtype(dtype)} data")
    return zp


def bias_array(bias, channels: int) -> np.ndarray | None:
    """An int64 bias of ``channels`` values inside the int32 range, or None."""
    if bias is None:
        return None
    b = as_int_array(bias, "bias")
    if b.shape != (channels,):
        raise ValueError(f"bias must have shape ({channels},), one value per output channel, "
                         f"not {b.shape}")
    check_range(b, ACC_MIN, ACC_MAX, "bias")
    return b


def wrap_int32(acc: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 sums to int32, as a 32-bit accumulator register does."""
    return (((acc - ACC_MIN) & (ACC_MAX - ACC_MIN)) + ACC_MIN).astype(np.int32)


def exact_matmul(a: np.ndarray, b: np.ndarray, term_bound: int,
                 sum_bound: int | None = None) -> np.ndarray:
    """``a @ b`` for float32 arrays holding integers with every ``|a_ik * b_kj| <= term_bound``
    and, when given, every ``sum_k |a_ik * b_kj| <= sum_bound``.

    Returns the exact integer result: float32 when one GEMM covers the whole reduction axis
    (then every value is at most ``2**24`` in magnitude), else int64. One GEMM is exact when
    ``sum_bound <= 2**24``: every partial sum a BLAS forms, in any order, is a sum of a subset of
    the terms and so an integer of at most that magnitude. Otherwise the reduction axis is split
    so each float32 GEMM stays exact (see the module docstring); int64 matmul when even a single
    product could exceed ``2**24``.
    """
    k = a.shape[-1]
    if term_bound > FLOAT32_EXACT or not blas_is_exact():
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    if sum_bound is not None and sum_bound <= FLOAT32_EXACT:
        return np.matmul(a, b)
    chunk = k if term_bound == 0 else FLOAT32_EXACT // term_bound
    if chunk >= k:
        return np.matmul(a, b)
    out = None
    for start in range(0, k, chunk):
        part = np.matmul(a[..., start:start + chunk], b[..., start:start + chunk, :])
        out = part.astype(np.int64) if out is None else out + part.astype(np.int64)
    return out


@functools.cache
def blas_is_exact() -> bool:
    """Whether float32 GEMM reproduces integer dot products whose sums reach ``2**24``.

    Guards the exactness argument against a BLAS that computes with reduced precision (such as
    bf16 or tf32 internally). Random 8-bit-sized operands, several sizes and layouts, checked
    against int64 matmul once per process.
    """
    rng = np.random.default_rng(0)
    for m, k, n in ((16, 256, 40), (7, 33, 5), (24, 255, 16)):
        bound = FLOAT32_EXACT // k
        limit = int(np.sqrt(bound))
        a = rng.integers(-limit, limit + 1, (m, k))
        b = rng.integers(-limit, limit + 1, (k, n))
        a[0], b[:, 0] = limit, limit  # one sum at the limit of the bound exactly
        for got in (np.matmul(a.astype(np.float32), b.astype(np.float32)),
                    np.matmul(b.T.astype(np.float32), a.T.astype(np.float32)).T):
            if not np.array_equal(got.astype(np.int64), a @ b):
                return False
    return True


def finish_accumulators(acc: np.ndarray, bias: np.ndarray | None, bias_axis: int) -> np.ndarray:
    """int32 accumulators from exact sums (float32 within ``2**24``, or int64) plus a bias."""
    if bias is not None:
        shape = [1] * acc.ndim
        shape[bias_axis] = bias.size
        bias = bias.reshape(shape)
    if acc.dtype == np.float32:
        out = acc.astype(np.int32)  # exact: every value is an integer of magnitude <= 2**24
        if bias is None:
            return out
        if max_abs(bias) <= ACC_MAX - FLOAT32_EXACT:  # the int32 sum cannot overflow
            out += bias.astype(np.int32)
            return out
        acc = out
    acc = acc.astype(np.int64)
    return wrap_int32(acc if bias is None else acc + bias)


# --- public API ----------------------------------------------------------------------------

def conv_output_size(n, k, stride=1, padding=0, dilation=1, strict=True, ceil_mode=False) -> int:
    """Output length of a convolution or pooling window along one axis.

    Parameters
    ----------
    n, k : int
        Input length ``N`` and kernel length (``F = dilation * (k - 1) + 1`` once dilated).
    stride, dilation : int
        ``S`` and the kernel dilation, both >= 1.
    padding : int or (begin, end)
        Zero padding of the axis: ``P`` on each side (the lecture's P, as in
        :func:`conv2d` ``padding=P``), or the two sides separately as ``(begin, end)``.
        ``conv_output_size(7, 3, 1, 1) == 7`` and ``conv_output_size(7, 3, 1, (1, 1)) == 7``.
    strict : bool
        True (the lecture's rule): ``(N - F + 2P)/S + 1`` must be an integer, otherwise
        ValueError showing the formula with numbers and its value. False: floor, as ONNX and
        PyTorch do, or ceil with ``ceil_mode`` (without a last window that starts in the end
        padding, as onnxruntime and PyTorch do).

    Raises
    ------
    ValueError
        For bad arguments, a dilated kernel larger than the padded input, or (strict) a stride
        that does not fit.
    """
    n = as_int(n, "n", 1)
    k = as_int(k, "k", 1)
    stride = as_int(stride, "stride", 1)
    dilation = as_int(dilation, "dilation", 1)
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        pad_begin, pad_end = (as_int(p, "padding", 0) for p in padding)
        total = pad_begin + pad_end
    else:
        pad_begin = as_int(padding, "padding", 0)
        total = 2 * pad_begin
    f = dilation * (k - 1) + 1
    span = n - f + total
    if span < 0:
        kernel = (f"kernel {k}" if dilation == 1
                  else f"dilated kernel {f} (k={k}, dilation={dilation})")
        raise ValueError(f"{kernel} is larger than the padded input {n} + {total} = {n + total}")
    if strict:
        if span % stride:
            value = span / stride + 1
            shown = f"{value:.2f}".rstrip("0")
            if float(shown) == round(value):
                shown = f"{value:.6g}"
            raise ValueError(f"stride {stride} does not fit: (N - F + 2P)/S + 1 = "
                             f"({n} - {f} + {total})/{stride} + 1 = {shown} is not an integer")
        return span // stride + 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= n + pad_begin:
        out -= 1
    return out


def conv_params(out_channels, in_channels, kh, kw, bias=True) -> int:
    """Number of parameters of a conv layer: ``out * (in * kh * kw + 1)`` with a bias."""
    out_channels = as_int(out_channels, "out_channels", 1)
    in_channels = as_int(in_channels, "in_channels", 1)
    kh = as_int(kh, "kh", 1)
    kw = as_int(kw, "kw", 1)
    if not isinstance(bias, (bool, np.bool_)):
        raise ValueError(f"bias must be True or False, not {bias!r}")
    return out_channels * (in_channels * kh * kw + int(bias))


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, x_zero_point=0, w_zero_point=0):
    """Integer 2-D convolution (cross-correlation, as ONNX Conv) returning int32 accumulators.

    Parameters
    ----------
    x : int8 or uint8 array, NCHW or CHW
    w : int8 or uint8 array, OIHW
    bias : 1-D integer array of O values in the int32 range, optional
    stride, dilation : int or (height, width)
    padding : int, (ph, pw) or ONNX (top, left, bottom, right)
        Padded positions hold ``x_zero_point``, so they contribute nothing.
    x_zero_point : int
        Per tensor, in the range of x's type.
    w_zero_point : int or 1-D array of O values
        Per tensor or per output channel, in the range of w's type.

    Returns
    -------
    int32 array, NOHW (or OHW for CHW input)
        ``sum (x - x_zero_point) * (w - w_zero_point) + bias``, computed exactly and wrapped to
        32 bits like the hardware accumulator. The output size floors like ONNX.
    """
    x4, batched = as_nchw(x, "x", QUANT_DTYPES)
    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"w must be OIHW (4-D), not shape {w.shape}")
    check_quant_dtype(w.dtype, "w")
    n, c, h, wd = x4.shape
    o, c_w, kh, kw = w.shape
    if c != c_w:
        raise ValueError(f"x has {c} channels (shape {np.shape(x)}) but w expects {c_w} "
                         f"(shape {w.shape})")
    if kh < 1 or kw < 1 or o < 1:
        raise ValueError(f"w must have at least one output channel and a 1x1 kernel, "
                         f"not shape {w.shape}")
    sh, sw = as_pair(stride, "stride", 1)
    dh, dw = as_pair(dilation, "dilation", 1)
    top, left, bottom, right = as_pads(padding)
    xz = zero_point_array(x_zero_point, "x_zero_point", x4.dtype, None)
    wz = zero_point_array(w_zero_point, "w_zero_point", w.dtype, o)
    b = bias_array(bias, o)

    fh, fw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    hp, wp = h + top + bottom, wd + left + right
    if fh > hp or fw > wp:
        raise ValueError(f"the {'dilated ' if (dh, dw) != (1, 1) else ''}kernel {fh}x{fw} is "
                         f"larger than the padded input {hp}x{wp} (input {h}x{wd}, padding "
                         f"{(top, left, bottom, right)})")
    oh = conv_output_size(h, kh, sh, (top, bottom), dh, strict=False)
    ow = conv_output_size(wd, kw, sw, (left, right), dw, strict=False)

    # Zero-point-free operands in float32; the padding is an exact 0 = x_zero_point - x_zero_point.
    xp = np.zeros((n, c, hp, wp), dtype=np.float32)
    np.subtract(x4, np.float32(xz), out=xp[:, :, top:top + h, left:left + wd], dtype=np.float32)
    wz_b = wz.reshape(-1, 1, 1, 1) if wz.ndim else wz
    wf = np.subtract(w, wz_b.astype(np.float32), dtype=np.float32).reshape(o, c * kh * kw)
    x_bound = max_abs(x4, int(xz))
    term_bound = x_bound * max_abs(wf)
    # Largest sum of |terms| of one output: the largest L1 norm of a filter times max |x - xz|.
    sum_bound = x_bound * int(np.abs(wf).sum(axis=1, dtype=np.float64).max())

    # im2col as a strided view, copied once into the GEMM operand. At stride 1 every kernel tap
    # reads one contiguous run of the flattened padded image (output rows computed over the padded
    # width, the extra columns dropped afterwards), which makes the copy cheaper.
    s_n, s_c, s_h, s_w = xp.strides
    if (sh, sw) == (1, 1):
        run = (oh - 1) * wp + ow
        cols = as_strided(xp, shape=(n, c, kh, kw, run),
                          strides=(s_n, s_c, dh * s_h, dw * s_w, s_w), writeable=False)
        row_step, columns = wp, run
    else:
        cols = as_strided(xp, shape=(n, c, kh, kw, oh, ow),
                          strides=(s_n, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w),
                          writeable=False)
        row_step, columns = ow, oh * ow
    sums = exact_matmul(wf, cols.reshape(n, c * kh * kw, columns), term_bound, sum_bound)
    r_n, r_o, r_p = sums.strides
    sums = as_strided(sums, shape=(n, o, oh, ow), strides=(r_n, r_o, row_step * r_p, r_p),
                      writeable=False)
    out = finish_accumulators(sums, b, 1)
    return out if batched else out[0]
