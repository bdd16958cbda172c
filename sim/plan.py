"""The plan of a network (``convcore plan``): per layer its geometry, size, work and memory.

Per layer: the op, input and output shapes (per sample, CHW), kernel / stride / padding /
dilation, parameters including the bias, multiply-accumulates, line-buffer bytes and weight
bytes; a totals row; and warnings where a stride does not fit the lecture's rule
``(N - F + 2P)/S + 1`` (execution still follows ONNX, which floors, or ceils with ceil_mode).

Memory formulas (8-bit activations and weights, one byte each):

* line buffer of a window of effective height ``F = dilation * (k - 1) + 1`` over an input of
  width ``W`` and ``C`` channels: ``(F - 1) * W * C`` bytes (padding is generated, not stored).
  A conv with a fused max-pool needs one for the conv and one for the pool over the conv output.
* weights: one byte per weight (biases and requantization constants are not counted).
"""

from dataclasses import asdict, dataclass, field

from model.conv import conv_output_size
from model.network import (ConvLayer, DenseLayer, MaxPool, Network, PoolLayer, layer_macs,
                           layer_op, layer_params)
from rtl.limits import layer_values
from sim.compiler import Pass, Schedule, pass_cycles
from sim.engine_driver import register_fields
from sim.errors import CliError
from sim.hw_backend import engine_layer

__all__ = ["LayerPlan", "plan_layers", "plan_dict", "format_plan", "line_buffer_bytes",
           "BYTES_PER_ACTIVATION", "BYTES_PER_WEIGHT"]

#: Storage of one activation and of one weight, in bytes (8-bit).
BYTES_PER_ACTIVATION = 1
BYTES_PER_WEIGHT = 1


@dataclass
class LayerPlan:
    """One row of the plan; shapes are per sample, geometry is (height, width)."""
    name: str
    op: str
    in_shape: tuple
    out_shape: tuple
    kernel: tuple | None
    stride: tuple | None
    pads: tuple | None
    dilation: tuple | None
    pool: dict | None
    params: int
    macs: int
    line_buffer_bytes: int
    weight_bytes: int
    warnings: list = field(default_factory=list)
    #: With a hardware configuration: None when the engine accepts what it runs of the
    #: layer, else ``"CODE: message"`` (:func:`sim.engine_driver.engine_fits`, the checks of
    #: rtl.limits).
    refusal: str | None = None
    #: With a hardware configuration: where the layer runs, ``"engine"``, ``"engine+model"``
    #: (its fused pool on the golden model), ``"model"`` or ``"refused"``; and why, when not
    #: all of it on the engine (:func:`sim.hw_backend.engine_layer`).
    runs_on: str | None = None
    note: str | None = None
    #: With a hardware configuration: the engine passes (:mod:`sim.compiler`), each a dict
    #: of what it computes, its shapes, estimated cycles per sample and memory words.
    passes: list = field(default_factory=list)
    #: Estimated engine cycles per sample of all passes (None without hardware or off it).
    est_cycles: int | None = None


def line_buffer_bytes(kernel_h: int, dilation_h: int, width: int, channels: int) -> int:
    """``(F - 1) * W * C`` bytes with ``F = dilation * (k - 1) + 1``."""
    effective = dilation_h * (kernel_h - 1) + 1
    return (effective - 1) * width * channels * BYTES_PER_ACTIVATION


def _stride_warnings(name, what, hw, kernel, stride, pads, dilation, ceil_mode=False):
    """Warnings for axes where the stride does not fit the lecture's rule."""
    warnings = []
    t, l, b, r = pads
    for axis, n, k, s, p, d in zip(("height", "width"), hw, kernel, stride, ((t, b), (l, r)),
                                   dilation):
        try:
            conv_output_size(n, k, s, p, d, strict=True)
        except ValueError as exc:
            out = conv_output_size(n, k, s, p, d, strict=False, ceil_mode=ceil_mode)
            rounding = "ceil" if ceil_mode else "floor"
            warnings.append(f"warning: layer '{name}' {what} {axis}: {exc}; execution follows "
                            f"ONNX ({rounding}) and gives {out}")
    return warnings


def _pool_dict(pool: MaxPool) -> dict:
    return {"kernel": pool.kernel, "stride": pool.stride, "pads": pool.pads,
            "dilation": pool.dilation, "ceil_mode": pool.ceil_mode}


def plan_layers(net: Network, hw: dict | None = None) -> list[LayerPlan]:
    """The plan of every layer of ``net``; with ``hw`` (the engine's resolved parameters,
    :func:`rtl.limits.engine_params`) each row says whether the engine takes the layer."""
    rows = []
    state = {"before": None}
    for layer in net.layers:
        if isinstance(layer, ConvLayer):
            c, h, w = layer.in_shape
            conv_c, conv_h, conv_w = layer.conv_shape
            lb = line_buffer_bytes(layer.kernel[0], layer.dilation[0], w, c)
            warnings = _stride_warnings(layer.name, "conv", (h, w), layer.kernel, layer.stride,
                                        layer.pads, layer.dilation)
            pool = None
            if layer.pool is not None:
                p = layer.pool
                lb += line_buffer_bytes(p.kernel[0], p.dilation[0], conv_w, conv_c)
                warnings += _stride_warnings(layer.name, "max-pool", (conv_h, conv_w), p.kernel,
                                             p.stride, p.pads, p.dilation, p.ceil_mode)
                pool = _pool_dict(p)
            rows.append(LayerPlan(layer.name, layer_op(layer), layer.in_shape, layer.out_shape,
                                  layer.kernel, layer.stride, layer.pads, layer.dilation, pool,
                                  layer_params(layer), layer_macs(layer), lb,
                                  layer.weight.size * BYTES_PER_WEIGHT, warnings))
        elif isinstance(layer, PoolLayer):
            c, h, w = layer.in_shape
            p = layer.pool
            warnings = _stride_warnings(layer.name, "max-pool", (h, w), p.kernel, p.stride, p.pads,
                                        p.dilation, p.ceil_mode)
            rows.append(LayerPlan(layer.name, layer_op(layer), layer.in_shape, layer.out_shape,
                                  p.kernel, p.stride, p.pads, p.dilation, _pool_dict(p), 0, 0,
                                  line_buffer_bytes(p.kernel[0], p.dilation[0], w, c), 0,
                                  warnings))
        elif isinstance(layer, DenseLayer):
            rows.append(LayerPlan(layer.name, layer_op(layer), layer.in_shape, layer.out_shape,
                                  None, None, None, None, None, layer_params(layer),
                                  layer_macs(layer), 0, layer.weight.size * BYTES_PER_WEIGHT))
        else:
            raise TypeError(f"not a layer: {layer!r}")
        if hw is not None:
            _plan_engine(rows[-1], layer, hw, state)
    return rows


def _pass_dict(p, hw, before=None) -> dict:
    """A pass's plan; ``before``: the estimated cycles of the engine pass before it (None: it
    is the first, a cold start)."""
    layer = p.layer
    words = {"weight_words": 0, "line_buffer_words": 0}
    if isinstance(layer, ConvLayer):
        values = layer_values(register_fields(layer, p.psum is not None, hw["simd"],
                                              hw["packing"]), hw)
        words["weight_words"] = values.weight_words
        words["line_buffer_words"] = values.span
    return {"name": layer.name, "kind": p.kind, "what": p.what,
            "in_shape": tuple(layer.in_shape), "out_shape": tuple(layer.out_shape),
            "kernel": tuple(layer.kernel) if isinstance(layer, ConvLayer)
            else tuple(layer.pool.kernel),
            "est_cycles": pass_cycles(p, hw, cold=before is None, before=before), **words}


def _plan_engine(row: LayerPlan, layer, hw, state):
    """Where ``layer`` runs on the engine of ``hw``, and its passes; ``state["before"]`` is
    the estimate of the last engine pass so far (None before the first)."""
    try:
        runs, note = engine_layer(layer, hw)
    except CliError as exc:
        row.runs_on, row.refusal = "refused", str(exc)
        return
    row.note = note
    if isinstance(runs, PoolLayer) and note:
        row.runs_on = "model"
        return
    schedule = runs if isinstance(runs, Schedule) else \
        Schedule(runs, runs.in_shape, [Pass(runs, None, None, what="whole layer")])
    row.passes = []
    for p in schedule.passes:
        row.passes.append(_pass_dict(p, hw, state["before"]))
        state["before"] = row.passes[-1]["est_cycles"]
    row.est_cycles = sum(p["est_cycles"] for p in row.passes)
    row.runs_on = "engine+model" if note and "golden model" in note else "engine"


def _totals(rows) -> dict:
    return {"layers": len(rows),
            "params": sum(r.params for r in rows),
            "macs": sum(r.macs for r in rows),
            "line_buffer_bytes_max": max((r.line_buffer_bytes for r in rows), default=0),
            "weight_bytes": sum(r.weight_bytes for r in rows)}


def plan_dict(net: Network, hw: dict | None = None) -> dict:
    """``{"model", "input", "output", "layers": [...], "total": {...}, "warnings": [...]}``;
    with ``hw`` each layer's ``refusal`` is None (the engine takes it) or the reason."""
    rows = plan_layers(net, hw)
    return {"model": net.source,
            "input": {"name": net.input_name, "shape": list(net.input_shape),
                      "dtype": net.input_dtype},
            "output": {"name": net.output_name, "shape": list(net.output_shape),
                       "dtype": net.output_dtype},
            "layers": [asdict(r) for r in rows],
            "total": _totals(rows),
            "warnings": [w for r in rows for w in r.warnings]}


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _geom(row: LayerPlan) -> tuple[str, str, str]:
    if row.kernel is None:
        return "-", "-", "-"
    kernel = _shape(row.kernel)
    if row.dilation and row.dilation != (1, 1):
        kernel += f" d{_shape(row.dilation)}"
    stride = _shape(row.stride)
    pads = ",".join(str(p) for p in row.pads)
    if row.pool is not None and not row.op.startswith("maxpool"):
        p = row.pool
        kernel += f" +pool {_shape(p['kernel'])}"
        stride += f" +{_shape(p['stride'])}"
        if any(p["pads"]):
            pads += " +" + ",".join(str(v) for v in p["pads"])
    return kernel, stride, pads


def _pass_lines(passes) -> list:
    """Passes grouped by what they are (kind, shapes, kernel): count, estimated cycles each,
    memory words."""
    groups = {}
    for p in passes:
        key = (p["kind"], p["in_shape"], p["out_shape"], p["kernel"], p["weight_words"],
               p["line_buffer_words"], p["est_cycles"])
        groups[key] = groups.get(key, 0) + 1
    lines = []
    for (kind, i, o, k, ww, lb, cyc), n in groups.items():
        memory = f", {ww:,} weight words, {lb:,} line-buffer words" if kind != "pool" else ""
        lines.append(f"    {n} x {kind} {_shape(i)} -> {_shape(o)} kernel {_shape(k)}: "
                     f"~{cyc:,} cycles each{memory}")
    return lines


def format_plan(net: Network, hw: dict | None = None, hw_name: str = "") -> str:
    """The plan as a text table (CHW shapes, pads top,left,bottom,right), totals and warnings;
    with ``hw`` an ``engine`` column (``ok`` or the refusal code) and a line per refusal."""
    rows = plan_layers(net, hw)
    header = ("layer", "op", "input", "output", "kernel", "stride", "pads t,l,b,r", "params",
              "MACs", "line buf B", "weight B") + (("engine", "est. cycles")
                                                   if hw is not None else ())
    table = [header]
    for r in rows:
        kernel, stride, pads = _geom(r)
        verdict = ((r.runs_on if r.runs_on in ("refused", "model") or not r.passes
                    else f"{len(r.passes)} pass{'es' if len(r.passes) > 1 else ''}",
                    f"{r.est_cycles:,}" if r.est_cycles is not None else "-")
                   if hw is not None else ())
        table.append((r.name, r.op, _shape(r.in_shape), _shape(r.out_shape), kernel, stride, pads,
                      f"{r.params:,}", f"{r.macs:,}", f"{r.line_buffer_bytes:,}",
                      f"{r.weight_bytes:,}") + verdict)
    t = _totals(rows)
    refused = [r for r in rows if r.refusal is not None]
    table.append(("total", f"{t['layers']} layers", "", "", "", "", "", f"{t['params']:,}",
                  f"{t['macs']:,}", f"max {t['line_buffer_bytes_max']:,}",
                  f"{t['weight_bytes']:,}")
                 + ((f"{len(refused)} refused",
                     f"{sum(r.est_cycles or 0 for r in rows):,}") if hw is not None else ()))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = {7, 8, 9, 10, 12}
    lines = []
    for i, row in enumerate(table):
        cells = [c.rjust(w) if j in numeric else c.ljust(w)
                 for j, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0 or i == len(table) - 2:
            lines.append("  ".join("-" * w for w in widths))
    in_shape = _shape("N" if d is None else d for d in net.input_shape)
    out_shape = _shape("N" if d is None else d for d in net.output_shape)
    title = (f"{net.source or 'model'}: input {net.input_name} {in_shape} {net.input_dtype}, "
             f"output {out_shape} {net.output_dtype}; shapes per sample (CHW), MACs per sample")
    lines.insert(0, title)
    lines += [w for r in rows for w in r.warnings]
    config = f" ({hw_name})" if hw_name else ""
    for r in rows:
        if r.note:
            lines.append(f"layer '{r.name}': {r.note}")
        if len(r.passes) > 1:
            lines += _pass_lines(r.passes)
    lines += [f"the engine{config} refuses it: {r.refusal}" for r in refused]
    return "\n".join(lines)
