"""``convcore demo`` (``make sim``): handwritten digits classified on the simulated engine.

The committed int8 CNN of :mod:`examples.digits` classifies scikit-learn's 360 held-out 8x8
digits on a backend (the simulated RTL by default). The demo prints accuracy, agreement with
the golden model (which must be 100%), with the ONNX reference evaluator (the CPU-independent
oracle of :mod:`model.oracle`) and with onnxruntime, cycles per image, images per second at a
stated clock and simulated cycles per second; it writes the first conv layer's activation maps
for one digit and a per-layer chart of cycles and MAC utilization.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from model.network import finish_output, layer_macs, layer_op, quantize_input, run_network
from model.oracle import compare_with_oracles, cpu_int8_note, format_agreement
from sim.toolchain import BUILD

#: Where the demo writes its pictures and report, unless the environment variable
#: :data:`DEMO_DIR_ENV` names another folder (tests use it to keep ``build/demo`` untouched).
DEMO_DIR = BUILD / "demo"
DEMO_DIR_ENV = "CONVCORE_DEMO_DIR"
#: The clock at which images per second are stated (a conservative FPGA clock, see README).
CLOCK_HZ = 100e6
#: Images per simulator launch: the progress bar advances once per chunk.
CHUNK = 90


class DemoError(RuntimeError):
    """A demo result that must not happen (hardware disagreeing with the golden model)."""


def progress(done: int, total: int, label: str, width: int = 30, stream=sys.stdout) -> None:
    """One self-overwriting progress line."""
    filled = width * done // total if total else width
    end = "\n" if done >= total else ""
    stream.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:>3}/{total} {label}{end}")
    stream.flush()


def _network_runner(net, backend):
    """``x -> [(y, info), ...]`` over every layer of ``net``: in one simulator launch when the
    backend can run whole networks, layer by layer otherwise."""
    if hasattr(backend, "run_network"):
        return lambda x: backend.run_network(net.layers, x)

    def layer_by_layer(x):
        out = []
        for layer in net.layers:
            x, info = backend.run_layer(layer, x)
            out.append((x, info))
        return out
    return layer_by_layer


def run_chunks(net, images, backend, on_layer=None, chunk=CHUNK):
    """Runs ``images`` through ``net`` on ``backend`` in chunks (the progress bar advances per
    chunk); returns the network output and one record per layer summed over all images.
    ``on_layer(start, index, layer, x, y)`` sees every layer's input and output."""
    records = {}
    outputs = []
    run = _network_runner(net, backend)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk]
        x = quantize_input(net, part)
        for index, (layer, (y, info)) in enumerate(zip(net.layers, run(x))):
            rec = records.setdefault(layer.name, {
                "name": layer.name, "op": layer_op(layer),
                "ran_on": info.get("ran_on", backend.name), "macs": 0,
                "cycles": None, "ideal_cycles": None})
            rec["macs"] += layer_macs(layer) * int(x.shape[0])
            for key in ("cycles", "ideal_cycles"):
                if info.get(key) is not None:
                    rec[key] = (rec[key] or 0) + info[key]
            if on_layer is not None:
                on_layer(start, index, layer, x, y)
            x = y
        outputs.append(finish_output(net, x))
        progress(start + len(part), len(images), f"images on {backend.name}")
    layers = list(records.values())
    for rec in layers:
        rec["mac_utilization"] = (round(rec["ideal_cycles"] / rec["cycles"], 4)
                                  if rec.get("cycles") and rec.get("ideal_cycles") else None)
    return np.concatenate(outputs), layers


def demo(backend_name: str = "verilator", out_dir: Path | None = None, limit: int | None = None,
         hw_config: str | None = None) -> dict:
    """Runs the demo; returns the summary it prints (also written to ``out_dir/demo.json``;
    ``out_dir`` defaults to ``$CONVCORE_DEMO_DIR`` or :data:`DEMO_DIR`)."""
    from examples.digits import MODEL_PATH, load_test_set
    from sim.backends import BACKENDS
    from sim.onnx_import import load_network
    from sim.plots import plot_activation_maps, plot_layer_chart

    out_dir = Path(out_dir or os.environ.get(DEMO_DIR_ENV) or DEMO_DIR)
    images, labels = load_test_set()
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    net = load_network(MODEL_PATH)
    print(f"convcore demo: {len(images)} held-out 8x8 digits through {MODEL_PATH.name} "
          f"({len(net.layers)} layers) on the '{backend_name}' backend")

    golden = run_network(net, images)

    first_conv = {}

    def keep_first_conv(start, index, layer, x, y):
        if start == 0 and index == 0:
            first_conv["maps"] = np.asarray(y[0], np.float32)
            first_conv["layer"] = layer

    options = {} if hw_config is None else {"config": hw_config}
    backend = BACKENDS[backend_name](**options)
    started = time.perf_counter()
    try:
        got, layers = run_chunks(net, images, backend, on_layer=keep_first_conv)
    finally:
        backend.close()
    wall = time.perf_counter() - started

    predicted = got.argmax(axis=1)
    same_as_golden = float(np.mean(np.all(got == golden, axis=1)))
    if same_as_golden != 1.0:
        raise DemoError(f"the '{backend_name}' backend disagrees with the golden model on "
                        f"{int(round((1 - same_as_golden) * len(images)))} of {len(images)} images")
    hw_cycles = sum(r["cycles"] for r in layers if r.get("cycles"))
    ideal = sum(r["ideal_cycles"] for r in layers if r.get("ideal_cycles"))
    summary = {
        "backend": backend_name,
        "images": len(images),
        "accuracy": float(np.mean(predicted == labels)),
        "agreement_golden": same_as_golden,
        "oracles": compare_with_oracles(MODEL_PATH, images, got, net.output_scale),
        "cpu_int8": cpu_int8_note(),
        "wall_seconds": round(wall, 2),
        "layers": layers,
    }
    if hw_cycles:
        sim_cycles = getattr(backend, "sim_cycles", hw_cycles)
        sim_seconds = getattr(backend, "sim_seconds", 0.0) or wall
        summary.update(
            cycles_per_image=hw_cycles / len(images),
            mac_utilization=round(ideal / hw_cycles, 4),
            clock_hz=CLOCK_HZ,
            images_per_second=CLOCK_HZ * len(images) / hw_cycles,
            simulated_cycles=sim_cycles, simulation_seconds=round(sim_seconds, 2),
            simulated_cycles_per_second=sim_cycles / sim_seconds)

    out_dir.mkdir(parents=True, exist_ok=True)
    pictures = {}
    if "maps" in first_conv:
        layer = first_conv["layer"]
        pictures["activation_maps"] = str(plot_activation_maps(
            first_conv["maps"], out_dir / "conv1_activation_maps.png", image=images[0, 0],
            title=f"{layer.name}: activation maps of a '{labels[0]}' ({backend_name})"))
    report = {"layers": layers, "total": {"cycles": hw_cycles or None,
                                          "macs": sum(r["macs"] for r in layers),
                                          "mac_utilization": summary.get("mac_utilization")}}
    if hw_cycles:
        pictures["layer_chart"] = str(plot_layer_chart(
            report, out_dir / "layer_cycles.png",
            title=f"Cycles and MAC utilization per layer: {len(images)} digits on {backend_name}"))
    summary["pictures"] = pictures
    (out_dir / "demo.json").write_text(json.dumps(summary, indent=2, default=float))
    print_summary(summary)
    print(f"  summary: {out_dir / 'demo.json'}")
    return summary


def print_summary(s: dict) -> None:
    print(f"  accuracy                 {s['accuracy']:.2%} ({s['images']} images)")
    print(f"  agreement, golden model  {s['agreement_golden']:.2%} of images bit-exact")
    for record in s["oracles"]:
        print(f"  agreement, {record['oracle']:<13} {format_agreement(record)} "
              f"[{record['name']}]")
    print(f"  int8 kernels             {s['cpu_int8']}")
    if "cycles_per_image" in s:
        print(f"  cycles per image         {s['cycles_per_image']:,.0f} "
              f"(MAC utilization {s['mac_utilization']:.1%})")
        print(f"  images per second        {s['images_per_second']:,.0f} at "
              f"{s['clock_hz'] / 1e6:.0f} MHz")
        print(f"  simulation               {s['simulated_cycles']:,} cycles in "
              f"{s['simulation_seconds']:.1f} s ({s['simulated_cycles_per_second']:,.0f} "
              f"cycles/s); {s['wall_seconds']:.1f} s in all")
    else:
        print(f"  run time                 {s['wall_seconds']:.1f} s")
    for rec in s["layers"]:
        cyc = f"{rec['cycles']:>10,} cycles" if rec.get("cycles") else "        (no cycles)"
        print(f"    {rec['name']:<12} {rec['op']:<18} on {rec['ran_on']:<10} {cyc}")
    for name, path in s["pictures"].items():
        print(f"  picture ({name.replace('_', ' ')}): {path}")
