"""The ``icarus`` and ``verilator`` backends of ``convcore run``: layers on the simulated engine.

:class:`HardwareBackend` runs every conv layer of a network on :class:`rtl.engine.ConvEngine`
simulated by Icarus Verilog or Verilator: one simulator launch per layer for the whole batch
(the layer's weights are loaded once, then every image streams through back to back), driven
by the cocotb module :mod:`tb.run_layers` through :class:`tb.engine_driver.EngineDriver`.

Where each layer runs (the ``ran_on`` field of the report):

- conv: on the engine. A fused max-pool (CONV-RELU-POOL) is not in the engine yet: the conv,
  requantization and ReLU run on the engine, the pool on the golden model
  (``"verilator+model(maxpool)"``).
- dense (Gemm, MatMul, ...): on the engine as a conv whose kernel covers the whole input
  (weight ``(O, C*H*W)`` -> ``(O, C, H, W)``; a flat input of ``F`` features becomes
  ``F`` channels of a 1x1 map) when that conv is within the engine's limits, else on the
  golden model with the reason.
- max-pool alone: on the golden model.

A conv layer the engine refuses (kernel, width, channels, ... above the hardware's limits) is a
one-line :class:`sim.cli.CliError` naming the layer and the violated limit; so is a layer that
hangs (the watchdog of :mod:`tb.run_layers`).

Hardware configuration: the engine's default (:data:`sim.configs` ``"default"``: every layer of
the lecture's examples and of the CIFAR-10 net) unless ``config`` or the environment variable
:data:`CONFIG_ENV` names another one: a name from :mod:`sim.configs` (``default``, ``ice40``)
or a JSON object of :class:`rtl.engine.ConvEngine` arguments, e.g.
``CONVCORE_HW_CONFIG='{"pe": 4, "simd": 4, "max_width": 16, "max_height": 16,
"max_channels": 16}'`` (the tests use such a small one: it builds faster). Each configuration
is built once per simulator under ``build/sim/run_engine-HASH-SIM`` (Verilator's build is
reused while the Verilog is unchanged); jobs, results and simulator logs go to
``build/run/``.
"""

import fcntl
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from model.network import ConvLayer, DenseLayer, PoolLayer, run_layer
from sim import toolchain

__all__ = ["HardwareBackend", "EngineHarness", "resolve_config", "dense_as_conv",
           "CONFIG_ENV", "TOPLEVEL"]

#: Environment variable choosing the hardware configuration (name or JSON object).
CONFIG_ENV = "CONVCORE_HW_CONFIG"
#: Verilog module name of the simulated top level.
TOPLEVEL = "convcore_run"
#: Width of the harness's handshake counters.
BEAT_COUNTER_WIDTH = 32
#: Where jobs, results and simulator logs go.
RUN_DIR = toolchain.BUILD / "run"

#: What each engine refusal means, with the hardware limit it names (EngineError names).
REFUSAL_TEXT = {
    "KERNEL": "kernel {kh}x{kw} exceeds the engine's maximum {max_kernel}x{max_kernel}",
    "DILATION": "dilation {dil} exceeds the engine's maximum {max_dilation}",
    "STRIDE": "stride {stride} exceeds the engine's maximum {max_stride}",
    "SIZE": "input {h}x{w} (HxW) exceeds the engine's maximum {max_height}x{max_width}",
    "CHANNELS": "{cin} input / {cout} output channels exceed the engine's maximum "
                "{max_channels}",
    "PAD": "pads {pads} (top, left, bottom, right) are not smaller than the kernel",
    "NO_OUTPUT": "the padded input is smaller than the kernel",
    "WEIGHTS": "{weight_words} weight words exceed the engine's weight memory of "
               "{weight_depth}",
    "LINE_BUFFER": "the window spans {span} line-buffer words, more than the engine's "
                   "{line_buffer_depth}",
}


def _cli_error(message):
    from sim.cli import CliError
    return CliError(message)


# --- hardware configuration ---------------------------------------------------------------

def resolve_config(spec: str | dict | None = None) -> dict:
    """ConvEngine arguments for ``spec`` (a configuration name, a JSON object, a dict) or, when
    None, for :data:`CONFIG_ENV` or ``"default"``. Raises CliError (one line)."""
    from sim import configs

    if spec is None:
        spec = os.environ.get(CONFIG_ENV) or "default"
    if isinstance(spec, dict):
        return dict(spec)
    spec = spec.strip()
    if spec.startswith(("{", "[")):
        try:
            params = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise _cli_error(f"hardware configuration {spec!r} is not valid JSON "
                             f"({exc.msg})") from None
        if not isinstance(params, dict):
            raise _cli_error(f"hardware configuration must be a JSON object, not {spec!r}")
        return params
    engines = [name for name, c in configs.CONFIGS.items() if c.cls == "ConvEngine"]
    if spec not in engines:
        raise _cli_error(f"unknown hardware configuration {spec!r}; choose one of "
                         f"{', '.join(engines)} or give a JSON object of ConvEngine arguments")
    return dict(configs.get(spec).params)


def make_engine(params: dict):
    from rtl.engine import ConvEngine
    try:
        return ConvEngine(**params)
    except (TypeError, ValueError) as exc:
        raise _cli_error(f"hardware configuration {params}: {exc}") from None


def engine_config(params: dict) -> dict:
    """The engine's resolved configuration (derived depths included) for ``params``."""
    engine = make_engine(params)
    engine._MustUse__silence = True        # built only to read its configuration
    return engine.config


def EngineHarness(**params):
    """The engine with handshake counters on its data streams (``in_beats``, ``out_beats``)
    for the watchdog's messages: same ports as :class:`rtl.engine.ConvEngine` plus two."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import Out

    engine = make_engine(params)

    class _Harness(wiring.Component):
        def __init__(self):
            self.engine = engine
            super().__init__({**dict(engine.signature.members.items()),
                              "in_beats": Out(BEAT_COUNTER_WIDTH),
                              "out_beats": Out(BEAT_COUNTER_WIDTH)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.engine = eng = self.engine
            for name, member in eng.signature.members.items():
                outer, inner = getattr(self, name), getattr(eng, name)
                if member.flow == wiring.In:
                    m.d.comb += inner.eq(outer)
                else:
                    m.d.comb += outer.eq(inner)
            with m.If(self.s_axis_tvalid & self.s_axis_tready):
                m.d.sync += self.in_beats.eq(self.in_beats + 1)
            with m.If(self.m_axis_tvalid & self.m_axis_tready):
                m.d.sync += self.out_beats.eq(self.out_beats + 1)
            return m

    return _Harness()


@contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (parallel pytest workers building the same folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- layers as the engine sees them ---------------------------------------------------------

def dense_as_conv(layer: DenseLayer) -> ConvLayer:
    """The conv whose kernel covers the whole input: weight (O, C*H*W) -> (O, C, H, W)."""
    shape = tuple(layer.in_shape)
    c, h, w = shape if len(shape) == 3 else (int(np.prod(shape)), 1, 1)
    out = int(layer.weight.shape[0])
    return ConvLayer(
        name=layer.name, nodes=tuple(layer.nodes), in_shape=(c, h, w), out_shape=(out, 1, 1),
        in_dtype=layer.in_dtype, weight=layer.weight.reshape(out, c, h, w), bias=layer.bias,
        x_zero_point=layer.x_zero_point, w_zero_point=layer.w_zero_point,
        multiplier=layer.multiplier, shift=layer.shift, y_zero_point=layer.y_zero_point,
        out_dtype=layer.out_dtype, relu=layer.relu, tensor=layer.tensor,
        has_bias=layer.has_bias)


def layer_values(layer: ConvLayer, hw: dict) -> dict:
    """The quantities the engine's checks look at, for messages."""
    from rtl.linebuffer import line_buffer_span

    cin, h, w = layer.in_shape
    cout = int(layer.weight.shape[0])
    kh, kw = layer.kernel
    pe, simd = hw["pe"], hw["simd"]
    return dict(hw, cin=cin, cout=cout, h=h, w=w, kh=kh, kw=kw, pads=layer.pads,
                stride=layer.stride, dil=layer.dilation,
                weight_words=-(-cout // pe) * kh * kw * -(-cin // simd),
                span=line_buffer_span(kh, kw, w, cin, simd, layer.dilation))


def engine_fits(layer: ConvLayer, hw: dict) -> str | None:
    """None when the engine accepts ``layer`` (stride 1, no padding: a dense layer), else the
    reason (same checks as :meth:`rtl.engine.ConvEngine._check`)."""
    v = layer_values(layer, hw)
    if max(v["kh"], v["kw"]) > hw["max_kernel"]:
        return REFUSAL_TEXT["KERNEL"].format(**v)
    if v["h"] > hw["max_height"] or v["w"] > hw["max_width"]:
        return REFUSAL_TEXT["SIZE"].format(**v)
    if max(v["cin"], v["cout"]) > hw["max_channels"]:
        return REFUSAL_TEXT["CHANNELS"].format(**v)
    if v["weight_words"] > hw["weight_depth"]:
        return REFUSAL_TEXT["WEIGHTS"].format(**v)
    if v["span"] > hw["line_buffer_depth"]:
        return REFUSAL_TEXT["LINE_BUFFER"].format(**v)
    return None


def _strip_pool(layer: ConvLayer) -> ConvLayer:
    """The same conv without its fused pool (the engine has no pool unit yet)."""
    from dataclasses import replace
    if layer.pool is None:
        return layer
    return replace(layer, pool=None, out_shape=layer.conv_shape)


# --- the backend ------------------------------------------------------------------------------

class HardwareBackend:
    """``convcore run --backend icarus|verilator`` (module docstring).

    Parameters
    ----------
    sim : "icarus" or "verilator"
    config : str, dict or None
        Hardware configuration (:func:`resolve_config`).
    stall_output : bool
        Fault injection for tests: the output stream is never ready, so the watchdog fires.
    keep : bool
        Keep the job folder (jobs, results, simulator logs) after :meth:`close`.
    """

    def __init__(self, sim: str, config=None, *, stall_output=False, keep=False):
        if sim not in toolchain.SIMULATORS:
            raise ValueError(f"sim must be one of {toolchain.SIMULATORS}, not {sim!r}")
        self.name = sim
        self.params = resolve_config(config)
        self.hw = engine_config(self.params)
        self.stall_output = bool(stall_output)
        self.keep = keep or bool(os.environ.get("CONVCORE_KEEP_RUN"))
        self._built = None
        self._jobs = 0
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{sim}-", dir=RUN_DIR))
        #: Totals over every simulator launch: simulated cycles, wall seconds of the launches
        #: (simulator and Python start included) and of the simulations proper, build time.
        self.sim_cycles = 0
        self.sim_seconds = 0.0
        self.run_seconds = 0.0
        self.build_seconds = 0.0

    # -- build and launch -----------------------------------------------------------------
    def _build(self):
        if self._built is not None:
            return self._built
        from cocotb_tools.runner import get_runner

        from tb.runner import config_key, emit_verilog

        try:
            toolchain.activate(self.name)
        except toolchain.ToolchainError as exc:
            raise _cli_error(f"backend '{self.name}': {exc}") from None
        start = time.perf_counter()
        args = toolchain.build_args(self.name, ports_only=True)
        key = config_key("run_engine", {**self.hw, "build_args": args})
        source = emit_verilog(EngineHarness(**self.params), toplevel=TOPLEVEL, key=key)
        build_dir = toolchain.BUILD / "sim" / f"{key}-{self.name}"
        runner = get_runner(self.name)
        logging.getLogger(type(runner).__name__).setLevel(logging.WARNING)
        log = build_dir.parent / f"{key}-{self.name}.build.log"
        with _locked(build_dir.parent / f".{key}-{self.name}.lock"):
            try:
                runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=build_dir,
                             build_args=args,
                             timescale=("1ns", "1ps"), log_file=log)
            except Exception as exc:
                raise _cli_error(f"backend '{self.name}': building the engine failed "
                                 f"({type(exc).__name__}); see {log}") from None
        self.build_seconds += time.perf_counter() - start
        self._built = (runner, build_dir)
        return self._built

    def _launch(self, layers, x=None, inputs=None):
        """Run ``layers`` in one simulation, in sequence on the batch ``x`` or each on its own
        batch of ``inputs``; the result dict of :mod:`tb.run_layers`."""
        from tb.run_layers import JOB_ENV, result_path
        from tb.runner import count_results

        runner, build_dir = self._build()
        self._jobs += 1
        job = self.run_dir / f"job{self._jobs}.pkl"
        data = {"layers": layers, "stall_output": self.stall_output}
        if inputs is not None:
            data["inputs"] = [np.ascontiguousarray(i) for i in inputs]
        else:
            data["x"] = np.ascontiguousarray(x)
        job.write_bytes(pickle.dumps(data))
        result_file = result_path(job)
        log = job.with_suffix(".log")
        results_xml = job.with_suffix(".xml")
        logging.getLogger("cocotb").setLevel(logging.CRITICAL)
        start = time.perf_counter()
        try:
            runner.test(test_module="tb.run_layers", hdl_toplevel=TOPLEVEL,
                        build_dir=build_dir, test_dir=self.run_dir,
                        extra_env={JOB_ENV: str(job), "COCOTB_LOG_LEVEL": "WARNING"},
                        results_xml=str(results_xml), log_file=log, timescale=("1ns", "1ps"))
        except Exception:
            pass            # judged by the result file below
        self.sim_seconds += time.perf_counter() - start
        ok = results_xml.exists() and count_results(results_xml)[1] == 0
        if not ok or not result_file.exists():
            self.keep = True
            raise _cli_error(f"backend '{self.name}': the simulation of layer "
                             f"'{layers[0].name}' failed; see {log}")
        result = pickle.loads(result_file.read_bytes())
        self.sim_cycles += result["sim_cycles"]
        self.run_seconds += result["wall_seconds"]
        return result

    # -- the backend interface --------------------------------------------------------------
    def run_layer(self, layer, x):
        x = np.asarray(x)
        if isinstance(layer, PoolLayer):
            return run_layer(layer, x), {"ran_on": "model"}
        if isinstance(layer, DenseLayer):
            conv = dense_as_conv(layer)
            reason = engine_fits(conv, self.hw)
            if reason is not None:
                return run_layer(layer, x), {"ran_on": "model", "note": f"dense as a conv: "
                                             f"{reason}"}
            y, info = self._run_conv(conv, x.reshape(x.shape[0], *conv.in_shape), layer)
            return y.reshape(y.shape[0], -1), info
        if isinstance(layer, ConvLayer):
            return self._run_conv(layer, x, layer)
        raise TypeError(f"not a layer: {layer!r}")

    def run_convs(self, layers, inputs):
        """Independent conv layers (fused pools ignored), each on its own batch, in one
        simulator launch: ``[(y, info), ...]`` with the engine's raw conv outputs and, in
        ``info``, counters plus ``sim_cycles`` and ``wall_seconds`` of the layer's part of the
        simulation (benchmarks)."""
        hw_layers = [_strip_pool(layer) for layer in layers]
        result = self._launch(hw_layers, inputs=inputs)
        if result["error"] is not None:
            failed = next(l for l in layers if l.name == result["failed_layer"])
            raise _cli_error(self._error_text(result, _strip_pool(failed), failed))
        out = []
        for layer, x, entry in zip(hw_layers, inputs, result["layers"]):
            info = self._info(entry, layer, np.asarray(x).shape[0], self.name)
            info.update(sim_cycles=entry["sim_cycles"], wall_seconds=entry["wall_seconds"])
            out.append((entry["output"], info))
        return out

    def _info(self, entry, hw_layer, batch, ran_on):
        counters = entry["counters"]
        cycles = counters["cycles"]
        pe, simd = self.hw["pe"], self.hw["simd"]
        macs = _macs(hw_layer) * batch
        return {
            "ran_on": ran_on,
            "cycles": int(cycles),
            "ideal_cycles": macs / (pe * simd),
            "mac_utilization": round(macs / (cycles * pe * simd), 4) if cycles else None,
            "mac_cycles": int(counters["mac_cycles"]),
            "starved_cycles": int(counters["starved_cycles"]),
            "stalled_cycles": int(counters["stalled_cycles"]),
            "cycles_per_sample": [int(c) for c in entry["image_cycles"]],
        }

    def _run_conv(self, conv, x, original):
        hw_layer = _strip_pool(conv)
        sim_cycles, sim_seconds = self.sim_cycles, self.sim_seconds
        result = self._launch([hw_layer], x)
        if result["error"] is not None:
            raise _cli_error(self._error_text(result, hw_layer, original))
        entry = result["layers"][0]
        y = entry["output"]
        ran_on = self.name
        if conv.pool is not None:
            y = conv.pool.apply(y)
            ran_on += "+model(maxpool)"
        info = self._info(entry, hw_layer, x.shape[0], ran_on)
        info.update(sim_cycles=int(self.sim_cycles - sim_cycles),
                    sim_seconds=round(self.sim_seconds - sim_seconds, 3))
        if isinstance(original, DenseLayer):
            info["note"] = "dense as a conv whose kernel covers the input"
        return y, info

    def _error_text(self, result, hw_layer, original):
        op = type(original).__name__.replace("Layer", "").lower()
        if result["refused"]:
            values = layer_values(hw_layer, self.hw)
            reason = REFUSAL_TEXT.get(result["refused"], "").format(**values)
            return (f"layer '{original.name}' ({op}): the engine refused it "
                    f"({result['refused']}: {reason}) on backend '{self.name}'")
        return f"{result['error']} on backend '{self.name}'"

    def close(self):
        if not self.keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _macs(layer: ConvLayer) -> int:
    from model.network import layer_macs
    return layer_macs(layer)


def factory(sim: str):
    """A BACKENDS entry: ``() -> HardwareBackend(sim)``."""
    def make(**options):
        return HardwareBackend(sim, **options)
    make.__name__ = f"{sim}_backend"
    return make
