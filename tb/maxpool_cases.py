"""Max-pool maps and the error the max-pool unit must report for them, shared by the unit's
tests (tb/test_maxpool.py) and the engine's (tb/test_engine.py, tb/test_engine_limits.py)."""

from dataclasses import dataclass

import numpy as np

from model.pool import maxpool2d
from rtl.limits import PoolError, pool_params

DTYPES = {0: np.dtype(np.int8), 1: np.dtype(np.uint8)}


@dataclass(frozen=True)
class Case:
    """One pooling map: geometry, element type and the error the unit must report."""
    channels: int
    height: int
    width: int
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)
    pads: tuple = (0, 0, 0, 0)          # ONNX order: top, left, bottom, right
    dilation: tuple = (1, 1)
    ceil_mode: bool = False
    is_unsigned: bool = False

    @property
    def dtype(self) -> np.dtype:
        return DTYPES[int(self.is_unsigned)]

    def fields(self) -> dict:
        """The unit's ``config`` fields."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        top, left, bottom, right = self.pads
        return dict(height=self.height, width=self.width, channels=self.channels,
                    kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_top=top,
                    pad_left=left, pad_bottom=bottom, pad_right=right, dilation_h=dh,
                    dilation_w=dw, ceil_mode=int(self.ceil_mode),
                    is_unsigned=int(self.is_unsigned))

    def label(self) -> str:
        return (f"{self.channels}x{self.height}x{self.width} k{self.kernel} s{self.stride} "
                f"p{self.pads} d{self.dilation}{' ceil' if self.ceil_mode else ''} "
                f"{self.dtype.name}")


def expected_error(case: Case, params: dict) -> PoolError:
    """The error the unit must report for ``case`` on hardware ``params`` (first check wins).

    The hardware limits come from ``params``; the geometric checks are ONNX's, and each of
    them is confirmed by the golden model raising for exactly those maps.
    """
    limits = pool_params(**params)
    kernel_max, slots = limits["max_kernel"], limits["window_slots"]

    def outside(values, hi):
        return any(v == 0 or v > hi for v in values)
    (kh, kw), (sh, sw), (dh, dw) = case.kernel, case.stride, case.dilation
    top, left, bottom, right = case.pads
    keff_h, keff_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    checks = [
        (PoolError.KERNEL, outside(case.kernel, kernel_max)),
        (PoolError.DILATION, outside(case.dilation, limits["max_dilation"])),
        (PoolError.STRIDE, outside(case.stride, limits["max_stride"])),
        (PoolError.SIZE, outside([case.height], limits["max_height"])
         or outside([case.width], limits["max_width"])),
        (PoolError.CHANNELS, outside([case.channels], limits["max_channels"])),
        (PoolError.PAD, max(top, bottom) >= kh or max(left, right) >= kw),
        (PoolError.NO_OUTPUT, keff_h > case.height + top + bottom
         or keff_w > case.width + left + right),
        (PoolError.WINDOW_SLOTS, keff_h > slots * sh or keff_w > slots * sw),
    ]
    for code, bad in checks:
        if bad:
            return code
    try:
        maxpool2d(np.zeros((1, case.height, case.width), np.int8), case.kernel, case.stride,
                  case.pads, case.dilation, case.ceil_mode)
    except ValueError as exc:
        assert "covers only padding" in str(exc), f"{case.label()}: unexpected model error {exc}"
        return PoolError.EMPTY_WINDOW
    return PoolError.NONE
