"""Layers of the conv engine's tests (tb/test_engine.py, tb/test_engine_limits.py): a
:class:`Case` describes one layer and how to drive it, :func:`make_layer` builds it with random
contents, :func:`first_mismatch` names the first wrong output."""

from dataclasses import dataclass

import numpy as np

from model.conv import conv2d, conv_output_size
from model.network import ConvLayer, PoolLayer
from model.quant import quantize_multiplier
from sim.engine_driver import output_shape


@dataclass
class Case:
    """One layer of a sweep (see :func:`make_layer`) and how to drive it."""
    cin: int
    cout: int
    h: int
    w: int
    k: tuple = (3, 3)
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    dilation: tuple = (1, 1)
    x_dtype: str = "int8"
    w_dtype: str = "int8"
    out: str = "int8"           # "int8", "uint8" or "int32" (raw)
    relu: bool = False
    per_channel: bool = True
    stalls: bool = False        # random idle input cycles and output backpressure
    perf: bool = False          # check the utilization target
    expect: str = "NONE"        # EngineError name for layers that must be refused
    repeat: int = 1             # runs with new inputs and the weights already loaded
    pool: object = None         # MaxPool (or the same fields, for illegal settings)
    alone: bool = False         # the pool alone (PoolLayer, cin channels; conv fields unused)
    psum: bool = False          # random int32 partial sums on s_axis_acc (QUANT.acc_in)

    def label(self):
        pool = "" if self.pool is None else (
            f" pool(k{self.pool.kernel} s{self.pool.stride} p{self.pool.pads} "
            f"d{self.pool.dilation}{' ceil' if self.pool.ceil_mode else ''})")
        if self.alone:
            return f"{self.cin} ch {self.h}x{self.w} {self.x_dtype}{pool}"
        return (f"{self.cin}->{self.cout} {self.h}x{self.w} k{self.k} s{self.stride} "
                f"p{self.pads} d{self.dilation} {self.x_dtype}/{self.w_dtype}->{self.out}{pool}"
                + (" +psum" if self.psum else ""))


def make_layer(case: Case, rng: np.random.Generator, name="layer"):
    """A random ConvLayer (or PoolLayer) for ``case`` and a CHW input for it."""
    info = {d: np.iinfo(d) for d in ("int8", "uint8")}
    xi, wi = info[case.x_dtype], info[case.w_dtype]
    kh, kw = case.k
    if case.alone:
        # Half the maps near the type's minimum: padding must never win there.
        top = xi.min + 16 if rng.random() < 0.5 else xi.max + 1
        x = rng.integers(xi.min, top, (case.cin, case.h, case.w)).astype(case.x_dtype)
        layer = PoolLayer(name=name, nodes=(name,), in_shape=(case.cin, case.h, case.w),
                          out_shape=(case.cin, 0, 0), in_dtype=case.x_dtype, pool=case.pool)
        if case.expect == "NONE":
            layer.out_shape = output_shape(layer)
        return layer, x
    x = rng.integers(xi.min, xi.max + 1, (case.cin, case.h, case.w)).astype(case.x_dtype)
    w = rng.integers(wi.min, wi.max + 1, (case.cout, case.cin, kh, kw)).astype(case.w_dtype)
    x_zp = int(rng.integers(xi.min, xi.max + 1)) if case.x_dtype == "uint8" else \
        int(rng.integers(-8, 9))
    if case.per_channel:
        w_zp = rng.integers(wi.min, wi.max + 1, case.cout) if case.w_dtype == "uint8" else \
            np.zeros(case.cout, np.int64)
    else:
        w_zp = np.full(case.cout, int(rng.integers(wi.min, wi.max + 1))
                       if case.w_dtype == "uint8" else 0)
    bias = rng.integers(-(1 << 15), 1 << 15, case.cout).astype(np.int32)
    w_zp = np.asarray(w_zp, np.int32)
    # The golden model cannot describe some layers the engine must refuse (stride 0, no
    # output): those are built with stride 1 and raw output, then given their real stride.
    geometry_ok = min(case.stride) >= 1
    if geometry_ok:
        try:
            conv_output_size(case.h, kh, case.stride[0], case.pads[0::2],
                             case.dilation[0], strict=False)
            conv_output_size(case.w, kw, case.stride[1], case.pads[1::2],
                             case.dilation[1], strict=False)
        except ValueError:
            geometry_ok = False
    quant = {"out_dtype": "int32"}
    if case.out != "int32" and geometry_ok:
        acc = conv2d(x, w, bias, case.stride, case.pads, case.dilation, x_zp, w_zp)
        spread = np.maximum(acc.reshape(case.cout, -1).std(axis=1), 1.0)
        scale = rng.uniform(30, 90, case.cout) / spread
        if not case.per_channel:
            scale = np.full(case.cout, scale.mean())
        multiplier, shift = quantize_multiplier(scale)
        yi = np.iinfo(case.out)
        y_zp = int(rng.integers(yi.min, yi.max + 1)) if case.out == "uint8" \
            else int(rng.integers(-10, 11))
        quant = dict(out_dtype=case.out, multiplier=multiplier, shift=shift, y_zero_point=y_zp,
                     relu=case.relu)
    layer = ConvLayer(name=name, nodes=(name,), in_shape=(case.cin, case.h, case.w),
                      out_shape=(case.cout, 0, 0), in_dtype=case.x_dtype, weight=w, bias=bias,
                      stride=tuple(case.stride) if geometry_ok else (1, 1), pads=tuple(case.pads),
                      dilation=tuple(case.dilation), x_zero_point=x_zp, w_zero_point=w_zp,
                      **quant)
    # Set after construction: the model refuses a pool after raw output (so does the engine).
    layer.pool = case.pool
    if geometry_ok and case.expect == "NONE":
        layer.out_shape = output_shape(layer)
    elif not geometry_ok:
        layer.stride = tuple(case.stride)
    return layer, x


def make_psum(layer, rng: np.random.Generator):
    """Random int32 partial sums for a ConvLayer's conv output (CHW), spread like the
    accumulators of another input-channel group; some near the int32 limits, which wrap."""
    from sim.engine_driver import conv_shape

    shape = conv_shape(layer)
    psum = rng.integers(-(1 << 12), 1 << 12, shape).astype(np.int32)
    edge = rng.random(shape) < 0.02
    psum[edge] = rng.choice(np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max],
                                     np.int32), int(edge.sum()))
    return psum


def first_mismatch(got, want):
    """'(channel, row, col): got G, want W' for the first differing element."""
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    c, r, q = bad[0]
    return (f"{len(bad)} mismatches; first at (channel {c}, row {r}, col {q}): "
            f"got {got[c, r, q]}, want {want[c, r, q]}")
