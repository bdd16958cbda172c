"""The ``convcore`` command line.

``convcore run MODEL.onnx --input X.npy --output Y.npy [--backend model] [--report R.json]``
    Runs a quantized ONNX model on a backend and saves the output with onnxruntime's dtype and
    shape.
``convcore plan MODEL.onnx [--json]``
    Per layer: op, shapes, kernel / stride / padding, parameters, MACs, line-buffer and weight
    bytes, totals, and warnings where a stride does not fit the lecture's rule.

Errors (unsupported model, bad file, bad input) print one line ``convcore: error: ...`` on
stderr and exit with status 2, never a traceback.

Backends are looked up by name in :data:`BACKENDS`: a factory ``() -> backend`` whose result has
``name`` and ``run_layer(layer, x) -> (y, info)``, where ``info`` is a dict of per-layer report
fields (``ran_on``, and for hardware ``cycles``, ``mac_utilization``, ...), and ``close()``.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from model.network import InputError, layer_macs, layer_op, run_layer, run_network
from sim.onnx_import import ModelFileError, UnsupportedModelError, load_network
from sim.plan import format_plan, plan_dict

__all__ = ["main", "build_parser", "BACKENDS", "ModelBackend", "CliError", "BackendUnavailable"]

#: Exit status for every user error (bad model, file, input or backend).
EXIT_USAGE = 2
#: Exit status for an internal error (a bug): still one line unless CONVCORE_DEBUG is set.
EXIT_INTERNAL = 1


class CliError(Exception):
    """A user error the command line reports as one line."""


class BackendUnavailable(CliError):
    """The chosen backend cannot run here (not built yet, simulator missing, ...)."""


class ModelBackend:
    """Runs every layer on the golden model (:func:`model.network.run_layer`)."""

    name = "model"

    def run_layer(self, layer, x):
        return run_layer(layer, x), {"ran_on": "model"}

    def close(self):
        pass


def _not_available(name: str):
    def factory():
        raise BackendUnavailable(f"backend '{name}' is not available yet: the conv engine RTL "
                                 f"is not built; use --backend model")
    return factory


#: Backend name -> factory. Hardware backends replace their entries when the engine exists.
BACKENDS = {
    "model": ModelBackend,
    "icarus": _not_available("icarus"),
    "verilator": _not_available("verilator"),
}


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


def cmd_run(args) -> int:
    net = load_network(args.model)
    x = _load_input(args.input)
    if args.output is not None and not Path(args.output).resolve().parent.is_dir():
        raise CliError(f"cannot write '{args.output}': folder "
                       f"'{Path(args.output).resolve().parent}' does not exist")
    backend = BACKENDS[args.backend]()
    records = []

    def run(layer, layer_x):
        y, info = backend.run_layer(layer, layer_x)
        records.append({"name": layer.name, "op": layer_op(layer), "nodes": list(layer.nodes),
                        "macs": layer_macs(layer) * int(layer_x.shape[0]), **info})
        return y

    try:
        y = run_network(net, x, backend=run)
    finally:
        backend.close()
    batch = int(np.asarray(x).shape[0])
    for r in records:
        extra = "".join(f", {k} {v}" for k, v in r.items()
                        if k not in ("name", "op", "nodes", "macs", "ran_on"))
        print(f"{r['name']:<24} {r['op']:<18} on {r['ran_on']:<9} {r['macs']:>14,} MACs{extra}")
    total = {"layers": len(records), "macs": sum(r["macs"] for r in records), "batch": batch}
    print(f"{'total':<24} {len(records)} layers{'':<10} {total['macs']:>14,} MACs "
          f"(batch {batch}, backend {backend.name})")
    if args.output is not None:
        np.save(args.output, y)
        print(f"output {y.dtype} {tuple(y.shape)} written to {args.output}")
    else:
        print(f"output {y.dtype} {tuple(y.shape)} (not saved: no --output)")
    if args.report is not None:
        report = {"model": str(args.model), "backend": backend.name, "layers": records,
                  "total": total}
        try:
            Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise CliError(f"cannot write report '{args.report}': {exc.strerror}") from None
    return 0


def cmd_plan(args) -> int:
    net = load_network(args.model)
    if args.json:
        print(json.dumps(plan_dict(net), indent=2))
    else:
        print(format_plan(net))
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
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", help="per-layer shapes, parameters, MACs and memory",
                          description="Show the plan of a quantized ONNX model.")
    plan.add_argument("model", metavar="MODEL.onnx")
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plan.set_defaults(func=cmd_plan)
    return parser


#: Errors that are the user's (bad model, file, input, backend): one line, exit status 2.
USER_ERRORS = (UnsupportedModelError, ModelFileError, InputError, CliError)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"convcore: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
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
    sys.exit(main())
