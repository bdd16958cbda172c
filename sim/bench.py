"""Benchmarks: ``python -m sim.bench [SECTION ...]`` (``make bench``).

A benchmark is a *section*: a function registered with :func:`section` that returns a list of
:class:`Result` rows. Sections run in registration order (all by default, or those named on the
command line); the rows are printed as one table and merged into ``build/bench/bench.json``
(sections not run keep their previous entry). A row may carry a target (``limit`` with
``better="lower"`` or ``"higher"``); a missed target is reported and makes the exit status 1,
as does a section that fails (for example, outputs that disagree).

Adding a section::

    @section("rtl", "resource use of the engine after synthesis")
    def bench_rtl(options):
        return [Result("LUTs", 1234, "LUT", limit=5000)]
"""

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from sim.toolchain import BUILD

#: Where the results go (merged per section).
BENCH_JSON = BUILD / "bench" / "bench.json"


@dataclass
class Result:
    """One measured quantity of a section, with an optional target."""
    metric: str
    value: float
    unit: str = ""
    note: str = ""
    limit: float | None = None
    better: str = "lower"

    def __post_init__(self):
        if self.better not in ("lower", "higher"):
            raise ValueError(f"better must be 'lower' or 'higher', not {self.better!r}")

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None without a target."""
        if self.limit is None:
            return None
        return self.value <= self.limit if self.better == "lower" else self.value >= self.limit


class BenchError(RuntimeError):
    """A section could not produce valid results (the message says why)."""


def _sim_error(sim: str, exc: Exception) -> BenchError:
    """A simulator run's failure as a one-line BenchError naming the simulator."""
    return BenchError(f"{sim}: {' '.join(str(exc).split())}")


@dataclass
class Section:
    name: str
    description: str
    run: Callable[[argparse.Namespace], list[Result]]
    results: list[Result] = field(default_factory=list)


#: Registered sections by name, in registration order.
SECTIONS: dict[str, Section] = {}


def section(name: str, description: str):
    """Decorator registering ``func(options) -> list[Result]`` as the section ``name``."""
    def register(func):
        if name in SECTIONS:
            raise ValueError(f"benchmark section {name!r} is registered twice")
        SECTIONS[name] = Section(name, description, func)
        return func
    return register


def time_interleaved(functions: dict[str, Callable[[], object]], repeats: int,
                     warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved so load changes hit all alike."""
    for _ in range(warmup):
        for func in functions.values():
            func()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, func in functions.items():
            start = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - start)
    return times


# --- section: the golden model against onnxruntime -----------------------------------------

#: The layer of the golden model's speed figure: 64 -> 64 channels, 3x3, pad 1, 32x32, as
#: QLinearConv. Its ratio to onnxruntime depends on the CPU's int8 kernels (VNNI, AMX), so it
#: has no target; the float32 GEMM of the layer is the floor of any exact NumPy conv.
GOLDEN_LAYER = dict(channels=64, size=32, kernel=3, pad=1)


def _golden_layer(rng):
    """uint8 activations, symmetric per-channel int8 weights and an int32 bias, as
    onnxruntime's static quantization writes them."""
    c, n, k = GOLDEN_LAYER["channels"], GOLDEN_LAYER["size"], GOLDEN_LAYER["kernel"]
    x = rng.integers(0, 256, (1, c, n, n)).astype(np.uint8)
    w = rng.integers(-127, 128, (c, c, k, k)).astype(np.int8)
    bias = rng.integers(-20000, 20000, c).astype(np.int32)
    x_scale, x_zp = np.float32(0.02), np.uint8(121)
    w_scale = rng.uniform(0.002, 0.006, c).astype(np.float32)
    y_scale, y_zp = np.float32(0.25), np.uint8(118)
    return x, w, bias, x_scale, x_zp, w_scale, y_scale, y_zp


def _qlinear_conv_model(x, w, bias, x_scale, x_zp, w_scale, y_scale, y_zp, pad):
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                            ["y"], kernel_shape=w.shape[2:], pads=[pad] * 4)
    constants = {"xs": x_scale, "xz": x_zp, "w": w, "ws": w_scale,
                 "wz": np.zeros(w.shape[0], np.int8), "ys": y_scale, "yz": y_zp, "b": bias}
    graph = helper.make_graph(
        [node], "golden_bench",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


@section("golden", "golden model (conv2d + requantize) vs onnxruntime QLinearConv, "
                   "64->64 channels, 3x3, pad 1, 32x32")
def bench_golden(options) -> list[Result]:
    from model import conv2d, quantize_multiplier, requantize
    from model.oracle import ORACLES, agreement, onnxruntime_session
    from model.quant import real_scale

    rng = np.random.default_rng(2024)
    x, w, bias, x_scale, x_zp, w_scale, y_scale, y_zp = _golden_layer(rng)
    pad = GOLDEN_LAYER["pad"]
    multiplier, shift = quantize_multiplier(real_scale(x_scale, w_scale, y_scale))

    def golden():
        acc = conv2d(x, w, bias, padding=pad, x_zero_point=int(x_zp))
        return requantize(acc, multiplier, shift, int(y_zp), np.uint8)

    model = _qlinear_conv_model(x, w, bias, x_scale, x_zp, w_scale, y_scale, y_zp, pad)
    # onnxruntime's idle worker threads spin for a while after each run by default, which takes
    # a core from whatever is timed next in the interleaved loop.
    session = onnxruntime_session(model, config={"session.intra_op.allow_spinning": "0"})
    feeds = {"x": x}

    def onnxruntime():
        return session.run(None, feeds)[0]

    # The float32 GEMM at the heart of conv2d, alone and with operands of the same shapes
    # (filters x im2col columns over the padded width): no exact NumPy convolution can take
    # less than this product.
    c, k = GOLDEN_LAYER["channels"], GOLDEN_LAYER["kernel"]
    width = GOLDEN_LAYER["size"] + 2 * pad
    columns = (GOLDEN_LAYER["size"] - 1) * width + GOLDEN_LAYER["size"]
    filters = rng.integers(-127, 128, (c, c * k * k)).astype(np.float32)
    patches = rng.integers(-128, 128, (c * k * k, columns)).astype(np.float32)

    def gemm():
        return filters @ patches

    got = golden()
    same = {}
    for key, (run, name) in ORACLES.items():
        want = np.asarray(run(model, x)[0])
        if got.shape != want.shape or got.dtype != want.dtype:
            raise BenchError(f"golden output {got.dtype}{got.shape} differs from {name}'s "
                             f"{want.dtype}{want.shape}")
        same[key] = agreement(got, want)
        if same[key]["max_steps"] > 1:
            raise BenchError(f"golden and {name} outputs are {same[key]['max_steps']} steps "
                             f"apart")

    load = os.getloadavg()[0]
    times = time_interleaved({"golden": golden, "onnxruntime": onnxruntime, "gemm": gemm},
                             options.repeats)
    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    macs = w.size * got.shape[2] * got.shape[3]
    return [
        Result("golden model, best", best["golden"] * 1e3, "ms", f"of {options.repeats}"),
        Result("golden model, median", median["golden"] * 1e3, "ms"),
        Result("onnxruntime QLinearConv, best", best["onnxruntime"] * 1e3, "ms",
               f"of {options.repeats}, exact int8 sums (model.oracle)"),
        Result("onnxruntime QLinearConv, median", median["onnxruntime"] * 1e3, "ms"),
        Result("golden model throughput", macs / best["golden"] / 1e9, "GMAC/s"),
        Result("float32 GEMM of the layer alone, best", best["gemm"] * 1e3, "ms",
               f"{c}x{c * k * k} @ {c * k * k}x{columns}, NumPy's BLAS: the floor"),
        Result("ratio golden / GEMM floor, best", best["golden"] / best["gemm"], "x",
               "what the golden model adds to the floor"),
        Result("ratio golden / onnxruntime, best", best["golden"] / best["onnxruntime"], "x",
               "no target: depends on the CPU's int8 kernels"),
        Result("outputs identical to the ONNX reference", same["reference"]["identical"] * 100,
               "%", "the rest exactly 1 step apart (ties)", limit=99.9, better="higher"),
        Result("outputs identical to onnxruntime", same["onnxruntime"]["identical"] * 100, "%",
               "the rest exactly 1 step apart", limit=99.9, better="higher"),
        Result("load average before timing", load, "", f"{os.cpu_count()} CPUs; other work "
               "slows multi-threaded BLAS more than onnxruntime"),
    ]


# --- section: the conv engine on the simulators ------------------------------------------

#: The lecture's conv layers: (name, Cin, Cout, H, W, kernel, stride, pad). The 1x1 layer is the
#: lecture's 56x56x64 -> 32 at 28x28 to keep the Icarus run short (each output position costs
#: the same cycles, so its utilization is that of 56x56 up to row edges).
LECTURE_LAYERS = [
    ("32x32x3, six 5x5", 3, 6, 32, 32, 5, 1, 0),
    ("32x32x3, ten 5x5 pad 2", 3, 10, 32, 32, 5, 1, 2),
    ("1x1, 28x28x64 -> 32", 64, 32, 28, 28, 1, 1, 0),
    ("7x7x8, 3x3 stride 2", 8, 8, 7, 7, 3, 2, 0),
    ("3x3 pad 1, 16x16x32 -> 32", 32, 32, 16, 16, 3, 1, 1),
]
#: Utilization the engine must reach on stride-1 layers with full channel groups (issue 3).
ENGINE_MIN_UTILIZATION = 0.90
#: Simulators the engine section runs on (environment variable, comma-separated).
BENCH_SIMS_ENV = "CONVCORE_BENCH_SIMS"
#: Icarus simulates the default engine at about 1,000 cycles per second: it runs only the
#: layers of at most this many MAC-array cycles (enough to measure its speed) unless the
#: environment variable CONVCORE_BENCH_ICARUS_ALL is set; Verilator runs every layer.
ICARUS_MAX_MAC_CYCLES = 20_000
ICARUS_ALL_ENV = "CONVCORE_BENCH_ICARUS_ALL"


def _bench_conv(name, cin, cout, h, w, k, stride, pad, rng):
    """An int8 ConvLayer with random weights, per-channel requantization and ReLU, and an
    input for it (batch 1)."""
    from model.conv import conv2d
    from model.network import ConvLayer
    from model.quant import quantize_multiplier

    x = rng.integers(-128, 128, (1, cin, h, w)).astype(np.int8)
    weight = rng.integers(-128, 128, (cout, cin, k, k)).astype(np.int8)
    bias = rng.integers(-5000, 5000, cout).astype(np.int32)
    acc = conv2d(x, weight, bias, stride=stride, padding=pad)
    spread = np.maximum(acc.reshape(cout, -1).std(axis=1), 1.0)
    multiplier, shift = quantize_multiplier(40.0 / spread)
    layer = ConvLayer(name=name, nodes=(name,), in_shape=(cin, h, w), out_shape=(cout, 0, 0),
                      in_dtype="int8", weight=weight, bias=bias, stride=stride,
                      pads=(pad,) * 4, multiplier=multiplier, shift=shift, y_zero_point=-20,
                      out_dtype="int8", relu=True)
    layer.out_shape = layer.conv_shape
    return layer, x


def cifar_net(seed: int = 0):
    """The CIFAR-10 example network for ``seed`` (:func:`examples.cifar.build_cifar_net`),
    written under ``build/examples/``."""
    from examples.cifar import build_cifar_net
    from sim.toolchain import EXAMPLES_BUILD

    return build_cifar_net(seed, EXAMPLES_BUILD / f"cifar_int8_seed{seed}.onnx")


def _cifar_convs(rng):
    """The ConvNetJS CIFAR-10 net's three convs, each with its real input (the golden model's
    output of the previous layers for one random image)."""
    from examples.cifar import random_images
    from model.network import ConvLayer, quantize_input, run_layer
    from sim.onnx_import import load_network

    net = load_network(cifar_net())
    x = quantize_input(net, random_images(1, seed=int(rng.integers(1 << 16))))
    pairs = []
    for layer in net.layers:
        if isinstance(layer, ConvLayer):
            pairs.append((layer, x))
        x = run_layer(layer, x)
    return pairs


@section("engine", "conv engine (default configuration) on Icarus and Verilator: the lecture's "
                   "conv layers and the CIFAR-10 net's convs, cycles vs MACs / (PE x SIMD)")
def bench_engine(options) -> list[Result]:
    from dataclasses import replace

    from model.network import layer_macs, run_layer
    from sim.hw_backend import HardwareBackend
    from sim.toolchain import SIMULATORS
    from sim.run_layers import layer_work

    sims = [s for s in os.environ.get(BENCH_SIMS_ENV, ",".join(SIMULATORS)).split(",") if s]
    unknown = [s for s in sims if s not in SIMULATORS]
    if unknown or not sims:
        raise BenchError(f"{BENCH_SIMS_ENV} must name simulators among {', '.join(SIMULATORS)}, "
                         f"not {os.environ.get(BENCH_SIMS_ENV)!r}")
    rng = np.random.default_rng(2026)
    pairs = [_bench_conv(*spec, rng) for spec in LECTURE_LAYERS]
    pairs += [(replace(layer, name=f"CIFAR {layer.name} {'x'.join(map(str, layer.in_shape))}"
                       f" -> {layer.weight.shape[0]}, {layer.kernel[0]}x{layer.kernel[1]} "
                       f"pad {layer.pads[0]}" + (" +pool" if layer.pool else "")), x)
              for layer, x in _cifar_convs(rng)]
    runs = {}       # sim -> {layer index: info}
    for sim in sims:
        backend = HardwareBackend(sim, "default")
        pe, simd = backend.hw["pe"], backend.hw["simd"]
        chosen = [i for i, (layer, _) in enumerate(pairs)
                  if sim != "icarus" or os.environ.get(ICARUS_ALL_ENV)
                  or layer_work(layer, pe, simd)[0] <= ICARUS_MAX_MAC_CYCLES]
        try:
            backend._build()
            out = backend.run_convs([pairs[i][0] for i in chosen], [pairs[i][1] for i in chosen])
        except Exception as exc:
            raise _sim_error(sim, exc) from None
        finally:
            backend.close()
        runs[sim] = {}
        for i, (y, info) in zip(chosen, out):
            layer, x = pairs[i]
            if not np.array_equal(y, run_layer(layer, x)):
                raise BenchError(f"{sim}: layer '{layer.name}' differs from the golden model")
            runs[sim][i] = info
    results = []
    for i, (layer, _) in enumerate(pairs):
        infos = {sim: runs[sim][i] for sim in sims if i in runs[sim]}
        if not infos:
            continue
        # The simulators must agree on every layer run after the same layers in both: a
        # layer's cycles depend on the one before it (its parameters load meanwhile), and
        # Icarus runs a subset of the layers.
        full = max(infos, key=lambda sim: len(runs[sim]))     # the simulator that ran them all
        before = {sim: tuple(j for j in runs[sim] if j < i) for sim in infos}
        same = {sim: info for sim, info in infos.items() if before[sim] == before[full]}
        cycles = {info["cycles"] for info in same.values()}
        if len(cycles) != 1:
            raise BenchError(f"layer '{layer.name}': cycle counts differ between simulators "
                             f"({infos})")
        info = infos[full]
        cin, cout = layer.in_shape[0], layer.weight.shape[0]
        target = layer.stride == (1, 1) and cin % simd == 0 and cout % pe == 0
        macs = layer_macs(layer)
        results += [
            Result(f"{layer.name}: cycles", info["cycles"], "cycles",
                   f"{macs:,} MACs, {info['mac_cycles']:,} MAC-array cycles"),
            Result(f"{layer.name}: ideal cycles", macs / (pe * simd), "cycles",
                   f"MACs / (PE x SIMD) = MACs / {pe * simd}"),
            Result(f"{layer.name}: utilization", info["mac_utilization"], "",
                   "target row: stride 1, Cin % SIMD == 0, Cout % PE == 0" if target else
                   "no target (" + ", ".join(
                       t for t, bad in (("stride > 1", layer.stride != (1, 1)),
                                        (f"Cin {cin} % SIMD {simd} != 0", cin % simd),
                                        (f"Cout {cout} % PE {pe} != 0", cout % pe)) if bad) + ")",
                   limit=ENGINE_MIN_UTILIZATION if target else None, better="higher"),
        ]
        for sim, sim_info in infos.items():
            seconds = sim_info["wall_seconds"]
            results += [
                Result(f"{layer.name}: {sim} wall time", seconds, "s",
                       f"{sim_info['sim_cycles']:,} simulated cycles incl. loading weights"),
                Result(f"{layer.name}: {sim} speed", sim_info["sim_cycles"] / seconds,
                       "cycles/s"),
            ]
    for sim in sims:
        total_cycles = sum(info["sim_cycles"] for info in runs[sim].values())
        total_seconds = sum(info["wall_seconds"] for info in runs[sim].values())
        results.append(Result(f"{len(runs[sim])} layers: {sim} speed",
                              total_cycles / total_seconds, "cycles/s",
                              f"{total_cycles:,} cycles in {total_seconds:.1f} s, load average "
                              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"))
    return results


# --- sections: whole networks on Verilator -------------------------------------------------

#: ``make sim`` must classify the 360 held-out digits on Verilator within this many seconds
#: (issue 4; a first Verilator build is not counted: it is done, and timed, before).
DIGITS_MAX_SECONDS = 120.0
#: MAC utilization targets of the digits CNN: over the 360 demo images, and one image alone.
DIGITS_MIN_UTILIZATION = 0.80
DIGITS_MIN_UTILIZATION_BATCH1 = 0.70
#: CIFAR-10 net targets: conv1's utilization, every layer's share of its ceiling, the net's.
CIFAR_CONV1_MIN_UTILIZATION = 0.90
CIFAR_MIN_SHARE_OF_CEILING = 0.95
CIFAR_MIN_UTILIZATION = 0.80
#: A few-channel first layer: 28x28 1 -> 8, 3x3 pad 1, 2x2 max-pool (ceiling 9/16 = 56.25%).
FIRST_LAYER = ("28x28 1->8 3x3 + 2x2 pool", 1, 8, 28, 28, 3, 1, 1)
FIRST_LAYER_MIN_UTILIZATION = 0.50
#: CIFAR-10 images of the ``cifar`` section, and the seeds of its net and images. The layer
#: targets are checked over this batch: its dense layer (80 operations a sample) runs the 16
#: samples in one pass, each weight word read once for all of them. At batch 1 (reported, no
#: target) a pass that short is dominated by its fixed cost: the input's arrival, the
#: pipelines' fill and drain, the host's register reads (about 51 cycles).
CIFAR_BENCH_IMAGES = 16
CIFAR_BENCH_SEED = 0
CIFAR_BENCH_IMAGE_SEED = 7


def _verilator_default():
    """The Verilator backend on the default hardware configuration, built before anything is
    timed; (backend, seconds the build took, or None when a cached build was reused)."""
    from sim.hw_backend import STAMP_NAME, HardwareBackend

    backend = HardwareBackend("verilator", "default")
    start = time.time()
    try:
        _, build_dir = backend._build()
    except Exception as exc:
        backend.close()
        raise _sim_error("verilator", exc) from None
    rebuilt = (build_dir / STAMP_NAME).stat().st_mtime >= start
    return backend, backend.build_seconds if rebuilt else None


@section("digits", "make sim: the 360 held-out digits through the RTL on Verilator (default "
                   "configuration), as convcore demo runs them")
def bench_digits(options) -> list[Result]:
    from examples.digits import MODEL_PATH, load_test_set
    from model.network import run_network
    from model.oracle import compare_with_oracles
    from sim.demo import CHUNK, CLOCK_HZ, run_chunks
    from sim.onnx_import import load_network

    images, labels = load_test_set()
    net = load_network(MODEL_PATH)
    golden = run_network(net, images)
    backend, build_seconds = _verilator_default()
    start = time.perf_counter()
    try:
        got, layers = run_chunks(net, images, backend)
    except Exception as exc:
        raise _sim_error("verilator", exc) from None
    finally:
        backend.close()
    wall = time.perf_counter() - start
    n = len(images)
    same = np.all(got == golden, axis=1)
    if not same.all():
        raise BenchError(f"{int((~same).sum())} of {n} digits differ from the golden model "
                         f"(first: image {int(np.argmin(same))})")
    predicted = got.argmax(axis=1)
    cycles = sum(r["cycles"] for r in layers)
    ideal = sum(r["ideal_cycles"] for r in layers)
    one = _run_batch(net, images[:1])
    results = [
        Result(f"{n} digits: wall time", wall, "s",
               f"{-(-n // CHUNK)} simulator launches of {CHUNK} images as make sim runs "
               "them; the build excluded",
               limit=DIGITS_MAX_SECONDS),
        Result("Verilator build", build_seconds or 0.0, "s",
               "cached build reused" if build_seconds is None else "built now, not in wall time"),
        Result("cycles per image", cycles / n, "cycles",
               f"MAC utilization {ideal / cycles:.1%}, ideal {ideal / n:,.0f}; every cycle "
               f"counted (loading, setup, fill, drain), chunks of {CHUNK} images"),
        Result(f"MAC utilization over the {n} images", ideal / cycles, "",
               "whole network", limit=DIGITS_MIN_UTILIZATION, better="higher"),
        Result("MAC utilization, batch 1", one["utilization"], "",
               f"one image, cold: {one['cycles']:,} cycles, its parameters loaded first",
               limit=DIGITS_MIN_UTILIZATION_BATCH1, better="higher"),
        Result(f"images per second at {CLOCK_HZ / 1e6:.0f} MHz", CLOCK_HZ * n / cycles, "img/s"),
        Result("simulated cycles per second", backend.sim_cycles / wall, "cycles/s",
               f"{backend.sim_cycles:,} cycles (weight loading, registers included) / wall"),
        Result("simulated cycles per second, in simulation", backend.sim_cycles /
               backend.run_seconds, "cycles/s", "simulator and Python start-up excluded"),
        Result("accuracy", float(np.mean(predicted == labels)) * 100, "%"),
        Result("agreement with the golden model", float(np.mean(same)) * 100, "%",
               "bit-exact images", limit=100.0, better="higher"),
    ]
    for record in compare_with_oracles(MODEL_PATH, images, got, net.output_scale):
        if "error" in record:
            raise BenchError(f"the {record['name']} could not run the digits CNN: "
                             f"{record['error']}")
        results += [
            Result(f"agreement with the {record['oracle']}, class", record["same_class"] * 100,
                   "%", record["name"]),
            Result(f"agreement with the {record['oracle']}, logits identical",
                   record["identical"] * 100, "%", f"largest difference "
                   f"{record['max_steps']} steps", limit=100.0, better="higher"),
        ]
    for rec in layers:
        results.append(Result(f"{rec['name']} ({rec['op']}): cycles per image",
                              rec["cycles"] / n, "cycles",
                              f"MAC utilization {rec['mac_utilization']:.1%}"))
    for rec in one["layers"]:
        results.append(Result(f"{rec['name']}: MAC utilization, batch 1", rec["utilization"], "",
                              f"{rec['cycles']:,} cycles; ceiling {rec['ceiling']:.1%}"))
    return results


def _network_on(backend, net, x):
    """``backend.run_network`` of ``net``'s layers on ``x``, a simulator failure a BenchError;
    the backend closed after."""
    try:
        return backend.run_network(net.layers, x)
    except Exception as exc:
        raise _sim_error(backend.name, exc) from None
    finally:
        backend.close()


def _run_batch(net, images, hw_config="default"):
    """``images`` through ``net`` in one Verilator launch; ``{"cycles", "utilization",
    "layers": [{"name", "cycles", "utilization", "ceiling"}]}`` (every cycle counted), checked
    against the golden model."""
    from model.network import quantize_input, run_network
    from sim.hw_backend import HardwareBackend

    out = _network_on(HardwareBackend("verilator", hw_config), net, quantize_input(net, images))
    from model.network import finish_output
    if not np.array_equal(finish_output(net, out[-1][0]), run_network(net, images)):
        raise BenchError(f"{net.source}: the engine's output differs from the golden model")
    layers = [{"name": layer.name, "cycles": info["cycles"],
               "utilization": info["ideal_cycles"] / info["cycles"],
               "ceiling": info["ceiling"]} for layer, (_, info) in zip(net.layers, out)]
    cycles = sum(r["cycles"] for r in layers)
    ideal = sum(info["ideal_cycles"] for _, info in out)
    return {"cycles": cycles, "utilization": ideal / cycles, "layers": layers}


#: Images of the dma section's batches: the digits CNN's (the chunk ``make sim`` runs) and the
#: CIFAR-10 net's; how far the queue's cycles per image may be from the stream-driven
#: engine's on the same images.
DMA_IMAGES = {"digits": 90, "cifar": 4}
DMA_MAX_RATIO = 1.05


def _dma_net(name):
    """(network, float images) of a dma-section batch."""
    from sim.onnx_import import load_network
    if name == "digits":
        from examples.digits import MODEL_PATH, load_test_set
        return load_network(MODEL_PATH), load_test_set()[0][:DMA_IMAGES[name]]
    from examples.cifar import random_images
    return load_network(cifar_net(CIFAR_BENCH_SEED)), \
        random_images(DMA_IMAGES[name], seed=CIFAR_BENCH_IMAGE_SEED)


@section("dma", "the digits CNN and the CIFAR-10 net through the DMA front end and its layer "
                "queue (memory: cocotbext-axi's AxiRam) against the stream-driven engine, "
                "same images, default configuration, Verilator")
def bench_dma(options) -> list[Result]:
    from model.network import quantize_input, run_layer
    from rtl.dma_engine import DmaEngine
    from sim.queue_image import network_image
    from sim.run_queue import run

    bus_width = 64
    hw = DmaEngine(bus_width=bus_width).hw
    results = []
    for name in DMA_IMAGES:
        net, images = _dma_net(name)
        n = len(images)
        stream = _run_batch(net, images)
        x = quantize_input(net, images)
        queued = network_image(net.layers, x, hw)
        try:
            result = run(queued.image, {}, bus_width, 1 << 24,
                         Path("build") / "bench" / f"dma-{name}")
        except Exception as exc:
            raise _sim_error("verilator", exc) from None
        if result["status"]["q_error"]:
            raise BenchError(f"{name}: the queue stopped: {result['status']}")
        y = x
        for index, layer in enumerate(net.layers):
            want = run_layer(layer, y)
            got = queued.read(result["read"], index).reshape(want.shape)
            if not np.array_equal(got, want):
                raise BenchError(f"{name}: layer '{layer.name}' through the queue differs "
                                 f"from the golden model")
            y = want
        per_image = result["cycles"] / n
        results += [
            Result(f"{name}: stream-driven, cycles per image", stream["cycles"] / n, "cycles",
                   f"{n} images in one launch, the host on the AXI-Stream ports"),
            Result(f"{name}: through the queue, cycles per image", per_image, "cycles",
                   f"Q_CYCLES / {n}: {len(queued.image.entries)} descriptors, parameters "
                   f"sent once per layer over a {bus_width}-bit bus"),
            Result(f"{name}: queue / stream-driven", per_image / (stream["cycles"] / n), "",
                   "cycles per image", limit=DMA_MAX_RATIO),
            Result(f"{name}: simulated cycles per second (cocotb + AxiRam)",
                   result["cycles"] / result["sim_seconds"], "cycles/s",
                   "Python serves every memory beat"),
        ]
    return results


#: The hdl section: images of the digits batch and runs of its queue per simulator, and the
#: rate the issue asks of Verilator (simulated cycles per second, whole network).
HDL_MEASURE = {"verilator": (90, 10), "icarus": (8, 1)}
HDL_MIN_RATE_VERILATOR = 500_000


@section("hdl", "the digits CNN through the DMA front end with its memory in HDL "
                "(tb/hdl/soc_top.v, tb/hdl/tb_soc.v: no Python while it runs), default "
                "configuration, every layer checked")
def bench_hdl(options) -> list[Result]:
    from sim.hdl_sim import HdlRunError, measure

    results = []
    for sim, (images, runs) in HDL_MEASURE.items():
        try:
            r = measure(sim, images, runs, Path("build") / "bench" / f"hdl-{sim}")
        except (HdlRunError, RuntimeError) as exc:
            raise _sim_error(sim, exc) from None
        results.append(Result(
            f"{sim}: simulated cycles per second", r["rate"], "cycles/s",
            f"{images} images x {runs} runs of the queue, {r['cycles']:,} cycles in "
            f"{r['seconds']:.2f} s (the memory's load and dump included, the build not)",
            limit=HDL_MIN_RATE_VERILATOR if sim == "verilator" else None, better="higher"))
    return results


#: The configurations of ``make synth`` and their devices, whose images per second the
#: ``configs`` section gives at the Fmax of their last synthesis report.
SYNTH_CONFIGS = (("default", "ecp5"), ("large", "ecp5"), ("ice40", "ice40"))


def _reported_fmax(name, device, report):
    """The Fmax of ``report`` unless it records other constructor arguments than
    configuration ``name`` has now (a report of an older build; reports written before the
    engine's arguments were recorded have none, and are taken), else None."""
    from sim.configs import get

    if not report.exists():
        return None
    found = json.loads(report.read_text())
    cfg = get(name)
    component = cfg.build(device)
    component._MustUse__silence = True          # built for its arguments only
    recorded = found.get("parameters")
    if recorded and recorded != json.loads(json.dumps(cfg.resolved_params(component))):
        return None
    return found.get("fmax_mhz")


@section("configs", "the CIFAR-10 net through every configuration of make synth on Verilator: "
                    "cycles per image, and images per second at the Fmax of its last "
                    "synthesis report (build/synth/CONFIG-DEVICE/report.json)")
def bench_configs(options) -> list[Result]:
    from examples.cifar import random_images
    from sim.onnx_import import load_network
    from sim.synth import out_folder

    net = load_network(cifar_net(CIFAR_BENCH_SEED))
    images = random_images(CIFAR_BENCH_IMAGES, seed=CIFAR_BENCH_IMAGE_SEED)
    results = []
    for name, device in SYNTH_CONFIGS:
        run = _run_batch(net, images, hw_config=name)
        per_image = run["cycles"] / len(images)
        report = out_folder(name, device) / "report.json"
        fmax = _reported_fmax(name, device, report)
        results.append(Result(f"{name}: cycles per image", per_image, "cycles",
                              f"{len(images)} images, every cycle counted, bit-exact; "
                              f"utilization {run['utilization']:.1%}"
                              + ("" if fmax else f"; no Fmax: {report} missing, unplaced or of "
                                                 "other parameters (run make synth)")))
        if fmax:
            results.append(Result(f"{name}: images per second at {fmax:.1f} MHz ({device})",
                                  fmax * 1e6 / per_image, "img/s", f"Fmax from {report}"))
    return results


#: Layers larger than the default engine (name, Cin, Cout, H, W, kernel, stride, pad): what
#: the layer compiler's passes cost against one ideal pass.
TILED_LAYERS = [
    ("128->128 3x3 on 16x16 (channel groups)", 128, 128, 16, 16, 3, 1, 1),
    ("3->16 3x3 on 300x300 (tiles)", 3, 16, 300, 300, 3, 1, 1),
    ("AlexNet conv1 3->96 11x11/4 on 227x227 (sub-kernels)", 3, 96, 227, 227, 11, 4, 0),
]


@section("tiling", "layers larger than the default engine on Verilator: the compiler's passes "
                   "against one ideal pass, and the plan's estimate")
def bench_tiling(options) -> list[Result]:
    from model.network import layer_macs, run_layer
    from sim.compiler import compile_layer, schedule_cycles
    from sim.run_layers import layer_work

    rng = np.random.default_rng(2026)
    backend, _ = _verilator_default()
    pe, simd = backend.hw["pe"], backend.hw["simd"]
    results = []
    try:
        for spec in TILED_LAYERS:
            layer, x = _bench_conv(*spec, rng)
            schedule = compile_layer(layer, backend.hw)
            estimate = schedule_cycles(schedule.passes, backend.hw)
            try:
                ((y, info),) = backend.run_network([layer], x)
            except Exception as exc:
                raise _sim_error("verilator", exc) from None
            if not np.array_equal(y, run_layer(layer, x)):
                raise BenchError(f"layer '{layer.name}' differs from the golden model")
            ideal = layer_macs(layer) / (pe * simd)
            one_pass = layer_work(layer, pe, simd)[0]
            results += [
                Result(f"{layer.name}: passes", len(schedule.passes), "", schedule.split),
                Result(f"{layer.name}: cycles", info["cycles"], "cycles",
                       f"{info['mac_cycles']:,} MAC-array cycles"),
                Result(f"{layer.name}: one-pass cycles", one_pass, "cycles",
                       "MAC-array operations of the layer in one pass on an engine that held "
                       "it (channel groups of PE and SIMD)"),
                Result(f"{layer.name}: cost of tiling", info["cycles"] / one_pass, "x",
                       "cycles / one-pass cycles"),
                Result(f"{layer.name}: ideal cycles", ideal, "cycles",
                       f"MACs / (PE x SIMD) = {layer_macs(layer):,} / {pe * simd}"),
                Result(f"{layer.name}: utilization", ideal / info["cycles"], "",
                       "ideal / measured (few input channels leave SIMD lanes idle)",
                       better="higher"),
                Result(f"{layer.name}: plan estimate / measured", estimate / info["cycles"],
                       "", f"plan estimate {estimate:,} cycles"),
            ]
    finally:
        backend.close()
    return results


@section("packing", "a few-channel first layer on Verilator (default configuration): its "
                    "products packed across taps into the SIMD lanes, every cycle counted")
def bench_packing(options) -> list[Result]:
    from model.network import MaxPool, layer_macs, run_layer
    from dataclasses import replace
    from sim.engine_driver import array_ceiling, window_ops

    rng = np.random.default_rng(2027)
    name, *spec = FIRST_LAYER
    layer, x = _bench_conv(name, *spec, rng)
    cout, h, w = layer.conv_shape
    layer = replace(layer, pool=MaxPool((2, 2), (2, 2)), out_shape=(cout, h // 2, w // 2))
    backend, _ = _verilator_default()
    pe, simd = backend.hw["pe"], backend.hw["simd"]
    try:
        ((y, info),) = backend.run_network([layer], x)
    except Exception as exc:
        raise _sim_error("verilator", exc) from None
    finally:
        backend.close()
    if not np.array_equal(y, run_layer(layer, x)):
        raise BenchError(f"layer '{layer.name}' differs from the golden model")
    ceiling = array_ceiling(layer, pe, simd)
    util = layer_macs(layer) / (pe * simd) / info["cycles"]
    kh, kw = layer.kernel
    return [
        Result(f"{name}: cycles", info["cycles"], "cycles",
               f"{window_ops(layer, simd)} operations per window (packed) instead of "
               f"{kh * kw * -(-layer.in_shape[0] // simd)}; loading and setup included"),
        Result(f"{name}: MAC utilization", util, "", f"ceiling {ceiling:.2%}",
               limit=FIRST_LAYER_MIN_UTILIZATION, better="higher"),
        Result(f"{name}: share of its ceiling", util / ceiling, "", better="higher"),
    ]


@section("cifar", "the ConvNetJS CIFAR-10 net (random int8 weights) through the RTL on "
                  "Verilator (default configuration): cycles, utilization, agreement")
def bench_cifar(options) -> list[Result]:
    from examples.cifar import random_images
    from model.network import finish_output, quantize_input, run_network
    from model.oracle import ORACLES
    from model.quant import quantize
    from sim.demo import CLOCK_HZ
    from sim.onnx_import import load_network

    path = cifar_net(CIFAR_BENCH_SEED)
    net = load_network(path)
    images = random_images(CIFAR_BENCH_IMAGES, seed=CIFAR_BENCH_IMAGE_SEED)
    golden = run_network(net, images)
    backend, build_seconds = _verilator_default()
    pe, simd = backend.hw["pe"], backend.hw["simd"]
    start = time.perf_counter()
    out = _network_on(backend, net, quantize_input(net, images))
    wall = time.perf_counter() - start
    got = finish_output(net, out[-1][0])
    same = np.all(got == golden, axis=1)
    if not same.all():
        raise BenchError(f"{int((~same).sum())} of {len(images)} CIFAR images differ from the "
                         f"golden model")
    scale, zp, dtype = np.float32(net.output_scale), net.output_zero_point, \
        net.layers[-1].out_dtype
    q = quantize(got, scale, zp, dtype).astype(np.int32)
    oracles = {}
    for key, (run, name) in ORACLES.items():
        want = quantize(np.asarray(run(path, images)[0]), scale, zp, dtype).astype(np.int32)
        apart = int(np.abs(q - want).max())
        if apart > 1:
            raise BenchError(f"CIFAR scores are {apart} output steps from the {name}'s")
        oracles[key] = (float(np.mean(q == want)), apart)
    n = len(images)
    infos = [info for _, info in out]
    cycles = sum(info["cycles"] for info in infos)
    ideal = sum(info["ideal_cycles"] for info in infos)
    results = [
        Result("cycles per image", cycles / n, "cycles",
               f"{n} images, PE {pe} x SIMD {simd}; ideal {ideal / n:,.0f}"),
        Result("MAC utilization, whole net", ideal / cycles, ""),
        Result(f"images per second at {CLOCK_HZ / 1e6:.0f} MHz", CLOCK_HZ * n / cycles, "img/s"),
    ]
    results[1] = Result("MAC utilization, whole net", ideal / cycles, "",
                        f"{n} images, every cycle counted (loading, setup, fill, drain)",
                        limit=CIFAR_MIN_UTILIZATION, better="higher")
    for index, (layer, info) in enumerate(zip(net.layers, infos)):
        util, ceiling = info["ideal_cycles"] / info["cycles"], info["ceiling"]
        results += [
            Result(f"{layer.name}: cycles per image", info["cycles"] / n, "cycles",
                   info.get("note") or ""),
            Result(f"{layer.name}: MAC utilization", util, "",
                   f"{info['ideal_cycles'] / n:,.0f} ideal cycles per image; ceiling "
                   f"{ceiling:.1%}", limit=CIFAR_CONV1_MIN_UTILIZATION if index == 0 else None,
                   better="higher"),
            Result(f"{layer.name}: share of its ceiling", util / ceiling, "",
                   "utilization / what the array's shape allows",
                   limit=CIFAR_MIN_SHARE_OF_CEILING, better="higher"),
        ]
    one = _run_batch(net, images[:1])
    results.append(Result("MAC utilization, whole net, batch 1", one["utilization"], "",
                          f"one image, cold: {one['cycles']:,} cycles",
                          limit=CIFAR_MIN_UTILIZATION, better="higher"))
    for rec in one["layers"]:
        results.append(Result(f"{rec['name']}: share of its ceiling, batch 1",
                              rec["utilization"] / rec["ceiling"], "",
                              f"{rec['utilization']:.1%} of {rec['ceiling']:.1%}, "
                              f"{rec['cycles']:,} cycles", better="higher"))
    results += [
        Result("agreement with the golden model", float(np.mean(same)) * 100, "%",
               "bit-exact images", limit=100.0, better="higher"),
        *(result for key, (identical, apart) in oracles.items() for result in (
            Result(f"scores identical to the {key}", identical * 100, "%",
                   f"the rest {apart} output step apart" if apart else ORACLES[key][1]),
            Result(f"largest difference from the {key}", apart, "steps", limit=1))),
        Result("wall time", wall, "s", f"{backend.sim_cycles:,} simulated cycles, "
               f"{backend.sim_cycles / wall:,.0f} cycles/s; " + (
                   "cached build" if build_seconds is None
                   else f"build of {build_seconds:.0f} s not included")),
    ]
    return results


# --- driver --------------------------------------------------------------------------------

def _format_value(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def print_table(sections: list[Section], out=sys.stdout) -> None:
    rows = [("section", "metric", "value", "unit", "target", "note")]
    for sec in sections:
        for r in sec.results:
            target = ""
            if r.limit is not None:
                sign = "<=" if r.better == "lower" else ">="
                target = f"{sign} {_format_value(r.limit)} {'ok' if r.met else 'MISSED'}"
            rows.append((sec.name, r.metric, _format_value(r.value), r.unit, target, r.note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=out)
        if i == 0:
            print("  ".join("-" * width for width in widths), file=out)


def write_json(sections: list[Section], path=BENCH_JSON) -> None:
    """Merge the sections' results into ``path`` (other sections' entries are kept)."""
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    for sec in sections:
        data[sec.name] = {
            "description": sec.description,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "results": [{**asdict(r), "met": r.met} for r in sec.results],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.split("\n")[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"sections to run (default: all): {', '.join(SECTIONS)}")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument("--repeats", type=int, default=50,
                        help="timed repetitions per measurement (default: 50)")
    parser.add_argument("--json", type=Path, default=BENCH_JSON,
                        help=f"results file (default: {BENCH_JSON})")
    options = parser.parse_args(argv)
    if options.list:
        for sec in SECTIONS.values():
            print(f"{sec.name:12} {sec.description}")
        return 0
    unknown = [name for name in options.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    if options.repeats < 1:
        parser.error(f"--repeats must be >= 1, not {options.repeats}")

    chosen = [SECTIONS[name] for name in (options.sections or SECTIONS)]
    failed = []
    for sec in chosen:
        try:
            sec.results = sec.run(options)
        except BenchError as exc:
            failed.append(f"benchmark section '{sec.name}' failed: {exc}")
            sec.results = []
    done = [sec for sec in chosen if sec.results]
    print_table(done)
    write_json(done, options.json)
    print(f"\nresults written to {options.json}")
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    missed = [f"{sec.name}: {r.metric}" for sec in done for r in sec.results if r.met is False]
    for name in missed:
        print(f"target missed: {name}", file=sys.stderr)
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main())
