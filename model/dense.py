"""Fully connected layer on int8/uint8 data, and ReLU."""

import numpy as np

from .conv import bias_array, exact_matmul, finish_accumulators, zero_point_array
from .quant import QUANT_DTYPES, check_quant_dtype, max_abs

__all__ = ["dense", "relu"]


def dense(x, w, bias=None, x_zero_point=0, w_zero_point=0):
    """Integer fully connected layer returning int32 accumulators.

    Parameters
    ----------
    x : int8 or uint8 array
        ``(N, features)`` or NCHW, flattened per sample in C, H, W order (ONNX Flatten); a single
        sample may be given without N as ``(features,)`` or CHW.
    w : int8 or uint8 array, ``(out, features)``
        As ONNX Gemm with ``transB=1`` and PyTorch Linear.
    bias : 1-D integer array of ``out`` values in the int32 range, optional
    x_zero_point : int
        Per tensor, in the range of x's type.
    w_zero_point : int or 1-D array of ``out`` values
        Per tensor or per output neuron, in the range of w's type.

    Returns
    -------
    int32 array, ``(N, out)`` (or ``(out,)`` for a single sample)
        ``sum (x - x_zero_point) * (w - w_zero_point) + bias``, exact and wrapped to 32 bits like
        the hardware accumulator.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim not in (1, 2, 3, 4):
        raise ValueError(f"x must be (N, features), (features,), NCHW or CHW, not shape {x.shape}")
    if x.dtype not in QUANT_DTYPES:
        raise ValueError(f"x must be int8 or uint8, not {x.dtype}")
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (out, features), not shape {w.shape}")
    check_quant_dtype(w.dtype, "w")
    batched = x.ndim in (2, 4)
    samples = x.shape[0] if batched else 1
    x2 = x.reshape(samples, int(np.prod(x.shape[1:] if batched else x.shape)))
    out_features, features = w.shape
    if x2.shape[1] != features:
        raise ValueError(f"x of shape {x.shape} has {x2.shape[1]} features per sample but w of "
                         f"shape {w.shape} expects {features}")
    if out_features < 1:
        raise ValueError(f"w must have at least one output, not shape {w.shape}")
    xz = zero_point_array(x_zero_point, "x_zero_point", x.dtype, None)
    wz = zero_point_array(w_zero_point, "w_zero_point", w.dtype, out_features)
    b = bias_array(bias, out_features)

    xf = np.subtract(x2, np.float32(xz), dtype=np.float32)
    wz_b = wz.reshape(-1, 1) if wz.ndim else wz
    wf = np.subtract(w, wz_b.astype(np.float32), dtype=np.float32)
    term_bound = max_abs(x2, int(xz)) * max_abs(wf)
    sums = exact_matmul(xf, wf.T, term_bound)
    out = finish_accumulators(sums, b, 1)
    return out if batched else out[0]


def relu(x, zero_point=0):
    """``max(x, zero_point)``: ReLU on real values or, with its zero point, on quantized ones."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"x must be a numeric array, not {arr.dtype}")
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        if not (isinstance(zero_point, (int, np.integer)) and info.min <= zero_point <= info.max):
            raise ValueError(f"zero_point must be an integer in [{info.min}, {info.max}] for "
                             f"{arr.dtype} data, not {zero_point!r}")
    return np.maximum(arr, np.asarray(zero_point).astype(arr.dtype))
