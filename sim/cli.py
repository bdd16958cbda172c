"""The ``convcore`` command line.

``convcore run MODEL.onnx --input X.npy --output Y.npy [--backend model|icarus|verilator]
[--report R.json] [--check] [--hw-config NAME|JSON] [--waves]``
    Runs a quantized ONNX model on a backend and saves the output with onnxruntime's dtype and
    shape. ``icarus`` and ``verilator`` run the conv (and, where they fit, dense) layers on the
    simulated engine (:mod:`sim.hw_backend`) and print per-layer cycles, MACs and MAC
    utilization; ``--check`` compares every layer's output with the golden model and stops at
    the first mismatch (exit status 3), then reports how the output compares with the ONNX
    reference and onnxruntime (:mod:`model.oracle`); ``--hw-config`` picks the engine's
    hardware configuration (default: ``$CONVCORE_HW_CONFIG`` or ``default``); ``--waves`` (or
    ``WAVES=1``) writes an FST waveform under ``build/waves/`` and prints its path.
``convcore export MODEL.onnx --out DIR [--hw-config NAME|JSON] [--images N] [--input X.npy]``
    Writes what the C driver (``sw/``) needs to run the model on the DMA front end: the memory
    image, its C header, the golden output (:mod:`sim.export`).
``convcore plan MODEL.onnx [--json] [--hw-config NAME|JSON]``
    Per layer: op, shapes, kernel / stride / padding, parameters, MACs, line-buffer and weight
    bytes, totals, and warnings where a stride does not fit the lecture's rule; with
    ``--hw-config``, whether the engine of that configuration takes each layer (the checks of
    :mod:`rtl.limits`, which the hardware runs too) and, for each it refuses, why.

Errors (unsupported model, bad file, bad input) print one line ``convcore: error: ...`` on
stderr and exit with status 2, never a traceback.

Backends are looked up by name in :data:`sim.backends.BACKENDS`; the errors it reports are
those of :mod:`sim.errors`.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from model.network import (InputError, finish_output, layer_macs, layer_op, quantize_input,
                           run_layer, run_network)
from model.oracle import compare_with_oracles, format_agreement
from sim.backends import BACKENDS, ModelBackend
from sim.errors import BackendUnavailable, CheckMismatch, CliError
from sim.onnx_import import ModelFileError, UnsupportedModelError, load_network
from sim.plan import format_plan, plan_dict

__all__ = ["main", "build_parser", "BACKENDS", "ModelBackend", "CliError", "BackendUnavailable",
           "CheckMismatch", "check_layer", "first_mismatch"]

#: Exit status for every user error (bad model, file, input or backend).
EXIT_USAGE = 2
#: Exit status for an internal error (a bug): still one line unless CONVCORE_DEBUG is set.
EXIT_INTERNAL = 1
#: Exit status when --check finds a layer whose output differs from the golden model.
EXIT_MISMATCH = 3
#: Exit status when the reader of the output closed it early (128 + SIGPIPE, as Unix tools).
EXIT_BROKEN_PIPE = 128 + 13


def _load_input(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"input file '{p}' does not exist")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:
        raise CliError(f"'{p}' is not a valid .npy file ({_one_line(exc)})") from None


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def first_mismatch(got: np.ndarray, want: np.ndarray) -> str:
    """Where two batched layer outputs first differ: sample, channel, row, column (NCHW) or
    sample, feature ((N, F)), with both values and the number of differing values."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"output {got.dtype}{tuple(got.shape)}, golden {want.dtype}{tuple(want.shape)}"
    bad = np.argwhere(got != want)
    index = tuple(int(i) for i in bad[0])
    names = ("sample", "channel", "row", "column") if got.ndim == 4 else \
        ("sample", "feature") if got.ndim == 2 else tuple(f"axis {i}" for i in range(got.ndim))
    where = ", ".join(f"{n} {i}" for n, i in zip(names, index))
    return (f"first mismatch at {where}: got {got[index]}, golden {want[index]} "
            f"({len(bad)} of {got.size} values differ)")


def check_layer(layer, x, y) -> None:
    """CheckMismatch naming the layer when ``y`` is not the golden output for ``x``."""
    want = run_layer(layer, x)
    y = np.asarray(y)
    if y.shape != want.shape or y.dtype != want.dtype or not np.array_equal(y, want):
        raise CheckMismatch(f"--check: layer '{layer.name}' ({layer_op(layer)}): "
                            f"{first_mismatch(y, want)}")


def _fmt(value, spec="", none="-"):
    return none if value is None else format(value, spec)


def print_records(records, total, backend_name) -> None:
    """The per-layer table: where each layer ran, MACs, cycles, utilization."""
    header = ("layer", "op", "ran on", "MACs", "cycles", "ideal cycles", "MAC util", "ceiling")
    rows = [header]
    for r in records:
        rows.append((r["name"], r["op"], r["ran_on"], f"{r['macs']:,}",
                     _fmt(r.get("cycles"), ","), _fmt(r.get("ideal_cycles"), ",.0f"),
                     _fmt(r.get("mac_utilization"), ".1%"), _fmt(r.get("ceiling"), ".1%")))
    rows.append(("total", f"{total['layers']} layers", backend_name, f"{total['macs']:,}",
                 _fmt(total.get("cycles"), ","), _fmt(total.get("ideal_cycles"), ",.0f"),
                 _fmt(total.get("mac_utilization"), ".1%"), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {3, 4, 5, 6, 7}
    for i, row in enumerate(rows):
        if i == len(rows) - 1 or i == 1:
            print("  ".join("-" * w for w in widths))
        print("  ".join(c.rjust(w) if j in right else c.ljust(w)
                        for j, (c, w) in enumerate(zip(row, widths))).rstrip())
    for r in records:
        if r.get("note"):
            print(f"note: {r['name']}: {r['note']}")
    if total.get("cycles") is not None:
        print("cycles: all a layer took in the simulation (parameters not loaded during the "
              "layer before, register writes, setup, fill and drain included); ceiling: the "
              "utilization the array's shape allows")


def _totals(records, batch, backend) -> dict:
    total = {"layers": len(records), "macs": sum(r["macs"] for r in records), "batch": batch}
    hw = [r for r in records if r.get("cycles") is not None]
    if hw:
        cycles = sum(r["cycles"] for r in hw)
        ideal = sum(r["ideal_cycles"] for r in hw)
        total.update(
            layers_on_hardware=len(hw), hardware_macs=sum(r["macs"] for r in hw),
            cycles=cycles, ideal_cycles=ideal,
            mac_utilization=round(ideal / cycles, 4) if cycles else None,
            cycles_per_sample=round(cycles / batch, 1))
    for name in ("sim_cycles", "sim_seconds", "run_seconds", "build_seconds"):
        if hasattr(backend, name):
            total[name] = round(getattr(backend, name), 3)
    if total.get("run_seconds"):
        total["sim_cycles_per_second"] = round(total["sim_cycles"] / total["run_seconds"])
    return total


def cmd_run(args) -> int:
    net = load_network(args.model)
    x = _load_input(args.input)
    if args.output is not None and not Path(args.output).resolve().parent.is_dir():
        raise CliError(f"cannot write '{args.output}': folder "
                       f"'{Path(args.output).resolve().parent}' does not exist")
    options = {}
    if args.hw_config is not None:
        if args.backend == "model":
            raise CliError("--hw-config needs a hardware backend (--backend icarus or "
                           "verilator)")
        options["config"] = args.hw_config
    if args.waves:
        if args.backend == "model":
            raise CliError("--waves needs a hardware backend (--backend icarus or verilator)")
        options["waves"] = True
    backend = BACKENDS[args.backend](**options)
    records = []

    def finish(layer, layer_x, y, info):
        if args.check:
            check_layer(layer, layer_x, y)
        records.append({"name": layer.name, "op": layer_op(layer), "nodes": list(layer.nodes),
                        "macs": layer_macs(layer) * int(layer_x.shape[0]), "cycles": None,
                        "mac_utilization": None, **info})
        return y

    try:
        if hasattr(backend, "run_network"):     # one simulator launch for the whole network
            y = layer_x = quantize_input(net, x)
            for layer, (y, info) in zip(net.layers, backend.run_network(net.layers, layer_x)):
                layer_x = finish(layer, layer_x, y, info)
            y = finish_output(net, y)
        else:
            y = run_network(net, x, backend=lambda layer, layer_x: finish(
                layer, layer_x, *backend.run_layer(layer, layer_x)))
    finally:
        backend.close()
    batch = int(np.asarray(x).shape[0])
    total = _totals(records, batch, backend)
    print_records(records, total, backend.name)
    if total.get("run_seconds"):
        print(f"simulation: {total['sim_cycles']:,} cycles in {total['run_seconds']:.1f} s "
              f"({total['sim_cycles_per_second']:,} cycles/s); {total['sim_seconds']:.1f} s "
              f"with simulator start-up, batch {batch}")
    if args.check:
        print(f"check: every layer's output equals the golden model ({len(records)} layers)")
        for record in compare_with_oracles(args.model, x, y, net.output_scale):
            print(f"check: output vs {record['name']}: {format_agreement(record)}")
    if args.output is not None:
        np.save(args.output, y)
        print(f"output {y.dtype} {tuple(y.shape)} written to {args.output}")
    else:
        print(f"output {y.dtype} {tuple(y.shape)} (not saved: no --output)")
    for path in getattr(backend, "wave_files", ()):
        print(f"waves: {path}")
    if args.report is not None:
        report = {"model": str(args.model), "backend": backend.name, "layers": records,
                  "total": total}
        if hasattr(backend, "hw"):
            report["hardware"] = backend.hw
        try:
            Path(args.report).write_text(json.dumps(report, indent=2, default=_json) + "\n")
        except OSError as exc:
            raise CliError(f"cannot write report '{args.report}': {exc.strerror}") from None
    return 0


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def cmd_plan(args) -> int:
    net = load_network(args.model)
    hw = name = None
    if args.hw_config is not None:
        from sim.hw_backend import engine_config, resolve_config
        hw, name = engine_config(resolve_config(args.hw_config)), args.hw_config
    if args.json:
        print(json.dumps(plan_dict(net, hw), indent=2))
    else:
        print(format_plan(net, hw, name or ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convcore", description="Run and inspect quantized CNNs on the convcore accelerator.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a quantized ONNX model on a backend",
                         description="Run a quantized ONNX model (QDQ or operator form).")
    run.add_argument("model", metavar="MODEL.onnx")
    run.add_argument("--input", required=True, metavar="X.npy",
                     help="input array with the model's input shape and dtype (float32 for QDQ "
                          "models: it is quantized with the model's input scale)")
    run.add_argument("--output", metavar="Y.npy",
                     help="where to save the output (onnxruntime's dtype and shape)")
    run.add_argument("--backend", choices=tuple(BACKENDS), default="model",
                     help="where layers run (default: %(default)s, the golden model)")
    run.add_argument("--report", metavar="FILE.json", help="write per-layer figures as JSON")
    run.add_argument("--check", action="store_true",
                     help="compare every layer's output with the golden model (the first "
                          "mismatch is an error, exit status 3), then the output with the ONNX "
                          "reference and onnxruntime")
    run.add_argument("--hw-config", metavar="NAME|JSON",
                     help="hardware configuration of the engine for icarus/verilator: a name "
                          "from sim.configs (default, ice40) or a JSON object of ConvEngine "
                          "arguments (default: $CONVCORE_HW_CONFIG or 'default')")
    run.add_argument("--waves", action="store_true",
                     help="icarus/verilator: write an FST waveform under build/waves/ (as "
                          "WAVES=1 does)")
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", help="per-layer shapes, parameters, MACs and memory",
                          description="Show the plan of a quantized ONNX model.")
    plan.add_argument("model", metavar="MODEL.onnx")
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plan.add_argument("--hw-config", metavar="NAME|JSON",
                      help="also check every layer against the engine of this hardware "
                           "configuration (as for run): the engine column, and one line per "
                           "layer it refuses")
    plan.set_defaults(func=cmd_plan)

    demo = sub.add_parser("demo", help="classify handwritten digits on the simulated engine",
                          description="The make sim demo: scikit-learn's 360 held-out 8x8 "
                                      "digits through the committed int8 CNN.")
    demo.add_argument("--backend", choices=tuple(BACKENDS), default="verilator",
                      help="where layers run (default: %(default)s)")
    demo.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    demo.add_argument("--hw-config", metavar="NAME|JSON",
                      help="hardware configuration of the engine (as for run)")
    demo.set_defaults(func=cmd_demo)

    export = sub.add_parser("export", help="write what the C driver needs to run a model",
                            description="Write a model's memory image (weights, constants, "
                                        "descriptor queue, inputs) for the DMA front end, its "
                                        "C header and the golden output (sim.export).")
    export.add_argument("model", metavar="MODEL.onnx")
    export.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    export.add_argument("--hw-config", metavar="NAME|JSON",
                        help="the DMA engine: a configuration of sim.configs with the DMA "
                             "front end (dma) or a JSON object of DmaEngine arguments "
                             "(default: dma)")
    export.add_argument("--images", type=int, metavar="N",
                        help="the first N images of the input (default: all)")
    export.add_argument("--input", metavar="X.npy",
                        help="the input batch (default: the digits CNN's held-out test images)")
    export.set_defaults(func=cmd_export)
    return parser


def cmd_export(args) -> int:
    from sim.export import IMAGE_HEADER, export
    exp = export(args.model, args.out, hw_config=args.hw_config, images=args.images,
                 input_path=args.input)
    img = exp.net_image.image
    print(f"{exp.x.shape[0]} image(s), {len(exp.net_image.layers)} layers, "
          f"{len(img.entries)} descriptors from {img.head:#x}, {exp.memory_bytes:,} bytes of "
          f"memory from 0; wrote memory.hex, {IMAGE_HEADER}, expected.npy, input.npy and the "
          f"register headers into {args.out}")
    return 0


def cmd_demo(args) -> int:
    from sim.demo import DemoError, demo
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be at least 1, not {args.limit}")
    try:
        demo(args.backend, limit=args.limit, hw_config=args.hw_config)
    except DemoError as exc:
        raise CheckMismatch(str(exc)) from None
    return 0


#: Errors that are the user's (bad model, file, input, backend): one line, exit status 2.
USER_ERRORS = (UnsupportedModelError, ModelFileError, InputError, CliError)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()      # inside the try: a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        # The reader went away (`convcore plan MODEL | head -1`): stop quietly, as Unix tools
        # killed by SIGPIPE do, and keep the interpreter from flushing into the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except USER_ERRORS as exc:
        print(f"convcore: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_MISMATCH if isinstance(exc, CheckMismatch) else EXIT_USAGE
    except KeyboardInterrupt:
        print("convcore: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("CONVCORE_DEBUG"):
            raise
        print(f"convcore: internal error: {type(exc).__name__}: {_one_line(exc)} "
              f"(set CONVCORE_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    # Through the imported module, so that errors raised by other modules (which import
    # sim.cli, not __main__) are the classes main() catches.
    from sim import cli
    sys.exit(cli.main())
