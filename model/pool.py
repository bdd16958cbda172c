"""2-D max pooling with ONNX MaxPool semantics."""

import numpy as np

from .conv import as_nchw, as_pads, as_pair, conv_output_size

__all__ = ["maxpool2d"]

#: Element types maxpool2d accepts: the quantized types and floats.
POOL_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.float16, np.float32, np.float64))


def _lowest(dtype: np.dtype):
    """A value no element can beat: the type's minimum, or -inf for floats."""
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _check_windows(n, k, stride, pad_begin, dilation, out, axis):
    """ValueError if some window along an axis covers only padding (it would have no maximum)."""
    taps = (np.arange(out)[:, np.newaxis] * stride - pad_begin
            + np.arange(k)[np.newaxis, :] * dilation)
    empty = ~np.any((taps >= 0) & (taps < n), axis=1)
    if np.any(empty):
        raise ValueError(f"maxpool window {int(np.argmax(empty))} along the {axis} covers only "
                         f"padding (input {n}, kernel {k}, stride {stride}, dilation {dilation}, "
                         f"padding begin {pad_begin})")


def maxpool2d(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling over NCHW (or CHW) data, as ONNX MaxPool computes it.

    Parameters
    ----------
    x : int8, uint8 or float array, NCHW or CHW
    kernel : int or (height, width)
    stride : int or (height, width), optional
        Default: the kernel size (non-overlapping windows, as PyTorch). ONNX's default is 1, so
        an ONNX importer passes the strides explicitly.
    padding : int, (ph, pw) or ONNX (top, left, bottom, right)
        Each side smaller than the kernel, as onnxruntime requires. Padding never wins the max.
    dilation : int or (height, width)
    ceil_mode : bool
        Round the output size up (ONNX ``ceil_mode=1``); windows running past the input are
        cut, and a last window that would start in the end padding is dropped (onnxruntime,
        PyTorch).

    Returns
    -------
    array of x's type, N C OH OW (or C OH OW)
        NaN in float data propagates.

    Raises
    ------
    ValueError
        For bad arguments, a window larger than the padded input, or a window that would cover
        only padding (possible with dilation).
    """
    x4, batched = as_nchw(x, "x", POOL_DTYPES)
    kh, kw = as_pair(kernel, "kernel", 1)
    sh, sw = (kh, kw) if stride is None else as_pair(stride, "stride", 1)
    dh, dw = as_pair(dilation, "dilation", 1)
    top, left, bottom, right = as_pads(padding)
    if not isinstance(ceil_mode, (bool, np.bool_, int)) or ceil_mode not in (0, 1):
        raise ValueError(f"ceil_mode must be True or False, not {ceil_mode!r}")
    if max(top, bottom) >= kh or max(left, right) >= kw:
        raise ValueError(f"padding {(top, left, bottom, right)} must be smaller than the kernel "
                         f"{kh}x{kw} on every side")
    n, c, h, w = x4.shape
    fh, fw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if fh > h + top + bottom or fw > w + left + right:
        raise ValueError(f"the pooling window {fh}x{fw} is larger than the padded input "
                         f"{h + top + bottom}x{w + left + right} (input {h}x{w}, padding "
                         f"{(top, left, bottom, right)})")
    oh = conv_output_size(h, kh, sh, (top, bottom), dh, strict=False, ceil_mode=bool(ceil_mode))
    ow = conv_output_size(w, kw, sw, (left, right), dw, strict=False, ceil_mode=bool(ceil_mode))
    _check_windows(h, kh, sh, top, dh, oh, "height")
    _check_windows(w, kw, sw, left, dw, ow, "width")

    # Pad with a value that never wins; ceil_mode windows may also run past the end padding.
    hp = max(h + top + bottom, (oh - 1) * sh + fh)
    wp = max(w + left + right, (ow - 1) * sw + fw)
    lowest = _lowest(x4.dtype)
    xp = np.full((n, c, hp, wp), lowest, dtype=x4.dtype)
    xp[:, :, top:top + h, left:left + w] = x4
    out = np.full((n, c, oh, ow), lowest, dtype=x4.dtype)
    for i in range(kh):
        for j in range(kw):
            r, q = i * dh, j * dw
            window = xp[:, :, r:r + (oh - 1) * sh + 1:sh, q:q + (ow - 1) * sw + 1:sw]
            np.maximum(out, window, out=out)
    return out if batched else out[0]
