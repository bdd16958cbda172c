"""The ``icarus`` and ``verilator`` backends of ``convcore run``: layers on the simulated engine.

:class:`HardwareBackend` runs the layers of a network on :class:`rtl.engine.ConvEngine`
simulated by Icarus Verilog or Verilator, driven by the cocotb module :mod:`sim.run_layers`
through :class:`sim.engine_driver.EngineDriver`. :meth:`HardwareBackend.run_network` runs a
whole network on a whole batch in ONE simulator launch (``convcore run`` uses it): per layer,
the weights are loaded once through the engine's parameter port, then every image streams
through back to back, and the testbench keeps the feature maps between layers.
:meth:`HardwareBackend.run_layer` (the plain backend interface) runs one layer per launch.

Where each layer runs (the ``ran_on`` field of the report):

- conv, with its requantization, ReLU and fused max-pool (the lecture's CONV-RELU-POOL in one
  pass): on the engine.
- dense (Gemm, MatMul, ...): on the engine as a conv whose kernel covers the whole input
  (weight ``(O, C*H*W)`` -> ``(O, C, H, W)``; a flat input of ``F`` features becomes
  ``F`` channels of a 1x1 map) when that conv is within the engine's limits, else on the
  golden model with the reason.
- max-pool alone: on the engine (its pool-alone mode; no MAC operations).
- on a configuration without a max-pool unit (``pool_window_slots`` 0, the engine refuses
  any pool with ``POOL_NO_UNIT``): the conv on the engine and its fused max-pool on the golden
  model, a max-pool alone on the golden model, both inside the same launch and said so in the
  ``note``.

A layer the engine refuses (kernel, width, channels, ... above the hardware's limits) is a
one-line :class:`sim.errors.CliError` naming the layer and the violated limit; so is a layer that
hangs (the watchdog of :mod:`sim.run_layers`) and a simulation that fails (with its log file).

Speed: Verilator builds keep only the top level visible (``toolchain.build_args(...,
ports_only=True)``), and :class:`sim.run_layers.FastAxiStreamSink` reads each output beat once;
Python wakes per stream beat and per register access, never per MAC cycle.

Hardware configuration: the engine's default (:data:`sim.configs` ``"default"``: every layer of
the lecture's examples and of the CIFAR-10 net) unless ``config`` or the environment variable
:data:`CONFIG_ENV` names another one: a name from :mod:`sim.configs` (``default``, ``ice40``)
or a JSON object of :class:`rtl.engine.ConvEngine` arguments, e.g.
``CONVCORE_HW_CONFIG='{"pe": 4, "simd": 4, "max_width": 16, "max_height": 16,
"max_channels": 16}'`` (the tests use such a small one: it builds faster). Each configuration
is built once per simulator under ``build/sim/run_engine-HASH-SIM`` and reused, without even
converting the design to Verilog, while the RTL sources (``rtl/*.py``), the harness and the
flags are unchanged; jobs, results and simulator logs go to ``build/run/``.

Waveforms: with ``waves`` (``convcore run --waves``) or ``WAVES=1`` in the environment, every
launch writes an FST file, ``build/waves/run-SIM-XXXX/jobN.fst``
(:attr:`HardwareBackend.wave_files`; an error message names it too), from a build with tracing
compiled in (``build/sim/run_engine-HASH-SIM-waves``, cached apart from the build without
tracing).
"""

import dataclasses
import fcntl
import hashlib
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

from model.network import ConvLayer, DenseLayer, PoolLayer, layer_macs, layer_op, run_layer
from rtl.limits import refusal_message
from rtl.streams import connect_flat
from sim import toolchain
from sim.compiler import CompileError, Folded, Schedule, compile_layer
from sim.engine_driver import array_ceiling, dense_as_conv, engine_fits, register_fields
from sim.errors import CliError

__all__ = ["HardwareBackend", "EngineHarness", "resolve_config", "dense_as_conv",
           "CONFIG_ENV", "TOPLEVEL"]

#: Environment variable choosing the hardware configuration (name or JSON object).
CONFIG_ENV = "CONVCORE_HW_CONFIG"
#: Verilog module name of the simulated top level.
TOPLEVEL = "convcore_run"
#: Width of the harness's handshake counters.
BEAT_COUNTER_WIDTH = 32
#: File in a build folder holding the digest of what the build was made from.
STAMP_NAME = ".convcore_sources"
#: Where jobs, results and simulator logs go.
RUN_DIR = toolchain.BUILD / "run"

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
    try:
        params = configs.json_params(spec)
    except configs.ConfigError as exc:
        raise CliError(str(exc)) from None
    if params is not None:
        return params
    engines = [name for name, c in configs.CONFIGS.items() if c.cls == "ConvEngine"]
    if spec not in engines:
        raise CliError(f"unknown hardware configuration {spec!r}; choose one of "
                         f"{', '.join(engines)} or give a JSON object of ConvEngine arguments")
    return dict(configs.get(spec).params)


def make_engine(params: dict):
    """A ConvEngine for ``params``; CliError (one line) when the engine refuses them."""
    from rtl.engine import ConvEngine
    try:
        return ConvEngine(**params)
    except (TypeError, ValueError) as exc:
        raise CliError(f"hardware configuration {params}: {exc}") from None


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
            connect_flat(m, self, eng, "")
            with m.If(self.s_axis_tvalid & self.s_axis_tready):
                m.d.sync += self.in_beats.eq(self.in_beats + 1)
            with m.If(self.m_axis_tvalid & self.m_axis_tready):
                m.d.sync += self.out_beats.eq(self.out_beats + 1)
            return m

    return _Harness()


def _source_digest(hw: dict, args: list) -> str:
    """Digest of everything a simulator build depends on: the RTL sources, the harness, the
    hardware configuration and the build flags. A build whose stamp holds it is reused
    without converting the design to Verilog again."""
    import inspect

    digest = hashlib.sha1(json.dumps([hw, args], sort_keys=True, default=str).encode())
    digest.update(inspect.getsource(EngineHarness).encode())
    for path in sorted((toolchain.ROOT / "rtl").glob("*.py")):
        if path.name.startswith("test_"):
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


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

#: The note of a max-pool that runs on the golden model for want of a max-pool unit.
NO_POOL_UNIT_NOTE = "max-pool on the golden model: the engine has no max-pool unit"


def refusal_text(code: str, layer, hw: dict) -> str:
    """Why the engine refused ``layer`` with EngineError ``code``, with the values involved
    (:func:`rtl.limits.refusal_message`)."""
    return refusal_message(code, register_fields(layer, simd=hw["simd"],
                                                 packing=hw["packing"]), hw)


def engine_layer(layer, hw: dict):
    """(what the engine of ``hw`` runs for ``layer``, a note or None): a layer the engine
    holds as it is (a dense layer as a conv whose kernel covers its input), any other as a
    :class:`sim.compiler.Schedule` of engine passes. Without a max-pool unit, a conv's fused
    pool is left out (the testbench applies it on the golden model, see
    :meth:`HardwareBackend.run_network`) and a max-pool alone stays a PoolLayer that runs on
    the model. CliError (one line, naming the layer and the limit) for a layer no schedule
    holds."""
    note = None
    if isinstance(layer, PoolLayer) and hw["pool_window_slots"] == 0:
        return layer, NO_POOL_UNIT_NOTE
    if isinstance(layer, ConvLayer) and layer.pool is not None and hw["pool_window_slots"] == 0:
        layer = dataclasses.replace(layer, pool=None, out_shape=layer.conv_shape)
        note = f"fused {NO_POOL_UNIT_NOTE}"
    one_pass = dense_as_conv(layer) if isinstance(layer, DenseLayer) else layer
    if engine_fits(one_pass, hw) is None:
        if isinstance(layer, DenseLayer):
            note = "dense as a conv whose kernel covers the input"
        return one_pass, note
    try:
        schedule = compile_layer(layer, hw)
    except CompileError as exc:
        raise CliError(str(exc)) from None
    count = len(schedule.passes)
    split = f"{count} engine pass{'es' if count > 1 else ''}" + (
        f" ({schedule.split})" if schedule.split else "")
    return schedule, f"{note}; {split}" if note else split


def _model_layer(job_layer):
    """The model layer behind a job entry (a layer, a Schedule or a Folded pass of one)."""
    if isinstance(job_layer, Folded):
        return job_layer.original
    return job_layer.layer if isinstance(job_layer, Schedule) else job_layer


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
    waves : bool or None
        Write an FST waveform per simulator launch (:attr:`wave_files`); None: ``$WAVES``.

    Members
    -------
    wave_files : list of Path
        The waveforms written so far, one per launch.
    """

    def __init__(self, sim: str, config=None, *, stall_output=False, keep=False, waves=None):
        if sim not in toolchain.SIMULATORS:
            raise ValueError(f"sim must be one of {toolchain.SIMULATORS}, not {sim!r}")
        self.name = sim
        self.params = resolve_config(config)
        self.hw = engine_config(self.params)
        self.stall_output = bool(stall_output)
        self.keep = keep or bool(os.environ.get("CONVCORE_KEEP_RUN"))
        try:
            self.waves = toolchain.waves_requested() if waves is None else bool(waves)
        except toolchain.ToolchainError as exc:
            raise CliError(str(exc)) from None
        self.wave_files = []
        self._last_waves = None
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

        from sim.runner import config_key, emit_verilog

        try:
            toolchain.activate(self.name, waves=self.waves)
        except toolchain.ToolchainError as exc:
            raise CliError(f"backend '{self.name}': {exc}") from None
        start = time.perf_counter()
        args = toolchain.build_args(self.name, ports_only=True, waves=self.waves)
        key = config_key("run_engine", {**self.hw, "build_args": args})
        build_dir = toolchain.sim_build_dir(key, self.name, waves=self.waves)
        runner = get_runner(self.name)
        logging.getLogger(type(runner).__name__).setLevel(logging.CRITICAL)  # errors: one line
        log = build_dir.parent / f"{build_dir.name}.build.log"
        stamp = build_dir / STAMP_NAME
        sources = _source_digest(self.hw, args)
        with _locked(build_dir.parent / f".{build_dir.name}.lock"), \
                toolchain.waves_env(self.waves):
            if not (stamp.exists() and stamp.read_text() == sources):
                source = emit_verilog(EngineHarness(**self.params), toplevel=TOPLEVEL, key=key)
                stamp.unlink(missing_ok=True)
                try:
                    runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=build_dir,
                                 build_args=args, timescale=("1ns", "1ps"), log_file=log,
                                 waves=self.waves)
                except Exception as exc:
                    raise CliError(f"backend '{self.name}': building the engine failed "
                                     f"({type(exc).__name__}); see {log}") from None
                stamp.write_text(sources)
        self.build_seconds += time.perf_counter() - start
        self._built = (runner, build_dir)
        return self._built

    def _launch(self, layers, x=None, inputs=None, golden=(), post_pool=None):
        """Run ``layers`` in one simulation, in sequence on the batch ``x`` or each on its own
        batch of ``inputs``; the result dict of :mod:`sim.run_layers`. The layers at the
        indices ``golden`` run on the golden model; ``post_pool`` maps an index to the
        max-pool the testbench applies (on the golden model) to that engine layer's output."""
        from sim.run_layers import JOB_ENV, result_path
        from sim.runner import count_results

        runner, build_dir = self._build()
        self._jobs += 1
        job = self.run_dir / f"job{self._jobs}.pkl"
        data = {"layers": layers, "stall_output": self.stall_output,
                "golden": list(golden), "post_pool": dict(post_pool or {})}
        if inputs is not None:
            data["inputs"] = [np.ascontiguousarray(i) for i in inputs]
        else:
            data["x"] = np.ascontiguousarray(x)
        job.write_bytes(pickle.dumps(data))
        result_file = result_path(job)
        log = job.with_suffix(".log")
        results_xml = job.with_suffix(".xml")
        logging.getLogger("cocotb").setLevel(logging.CRITICAL)
        extra_env = {JOB_ENV: str(job), "COCOTB_LOG_LEVEL": "WARNING"}
        trace, wave_file = {}, None
        if self.waves:
            wave_file = toolchain.waves_path(f"run-{self.run_dir.name}", job.stem)
            trace = toolchain.waves_test_options(self.name, wave_file)
            extra_env["COCOTB_RESULTS_ATTACHMENTS"] = str(wave_file)
        start = time.perf_counter()
        failure = ""
        try:
            with toolchain.waves_env(self.waves):
                runner.test(test_module="sim.run_layers", hdl_toplevel=TOPLEVEL,
                            hdl_toplevel_lang="verilog",
                            build_dir=build_dir, test_dir=self.run_dir, extra_env=extra_env,
                            results_xml=str(results_xml), log_file=log,
                            timescale=("1ns", "1ps"), waves=self.waves, **trace)
        except Exception as exc:        # judged by the result file below
            failure = f" ({type(exc).__name__}: {' '.join(str(exc).split())})"
        self.sim_seconds += time.perf_counter() - start
        self._last_waves = wave_file if wave_file and wave_file.exists() else None
        if self._last_waves:
            self.wave_files.append(wave_file)
        ok = results_xml.exists() and count_results(results_xml)[1] == 0
        if not ok or not result_file.exists():
            self.keep = True
            raise CliError(f"backend '{self.name}': the simulation of layer "
                             f"'{layers[0].name}' failed{failure}; see {log}{self._waves_note()}")
        result = pickle.loads(result_file.read_bytes())
        self.sim_cycles += result["sim_cycles"]
        self.run_seconds += result["wall_seconds"]
        return result

    # -- the backend interface --------------------------------------------------------------
    @property
    def has_pool_unit(self) -> bool:
        """False for a configuration without a max-pool unit (``pool_window_slots`` 0)."""
        return self.hw.get("pool_window_slots", 1) != 0

    def engine_layer(self, layer):
        """:func:`engine_layer` on this backend's engine."""
        return engine_layer(layer, self.hw)

    def run_layer(self, layer, x):
        """One layer on the batch ``x``: ``(y, info)`` (one simulator launch)."""
        return self.run_network([layer], x)[0]

    def run_network(self, layers, x):
        """Every layer of a network on the batch ``x`` in ONE simulator launch: conv layers
        (with their fused max-pool), max-pool layers and the dense layers that fit on the
        engine, other dense layers on the golden model inside the testbench between them.
        Returns ``[(y, info), ...]``, one per layer; ``info`` has ``ran_on``, the counters,
        ``mac_utilization``, and the layer's ``sim_cycles`` and ``wall_seconds``."""
        x = np.asarray(x)
        if x.shape[0] == 0:
            raise CliError(f"backend '{self.name}': the input holds no samples (batch 0)")
        job, notes = zip(*(self.engine_layer(layer) for layer in layers))
        # Whole-input convs (dense layers) run a batch's samples side by side in one pass.
        job = tuple(Folded.of(layer, x.shape[0], self.hw) or layer for layer in job)
        notes = tuple(f"{note}; {j.samples} samples a pass" if isinstance(j, Folded) else note
                      for j, note in zip(job, notes))
        golden = [i for i, layer in enumerate(job)
                  if isinstance(layer, PoolLayer) and not self.has_pool_unit]
        if len(golden) == len(job):                                 # nothing for the engine
            out = []
            for layer, note in zip(layers, notes):
                x = run_layer(layer, x)
                out.append((x, {"ran_on": "model", "note": note}))
            return out
        post_pool = {i: layer.pool for i, (layer, job_layer) in enumerate(zip(layers, job))
                     if isinstance(layer, ConvLayer) and layer.pool is not None
                     and _model_layer(job_layer).pool is None}
        result = self._launch(list(job), x, golden=golden, post_pool=post_pool)
        self._raise_error(result, job, layers)
        out = []
        for layer, job_layer, note, entry in zip(layers, job, notes, result["layers"]):
            y = entry["output"].reshape(x.shape[0], *layer.out_shape)
            info = {"ran_on": "model"} if entry.get("golden") else \
                self._info(entry, job_layer, x.shape[0])
            if note is not None:
                info["note"] = note
            out.append((y, info))
        return out

    def run_convs(self, layers, inputs):
        """Independent engine layers, each on its own batch, in one simulator launch (for
        benchmarks): ``[(y, info), ...]`` as :meth:`run_network` gives."""
        result = self._launch(list(layers), inputs=inputs)
        self._raise_error(result, layers, layers)
        return [(entry["output"], self._info(entry, layer, np.asarray(x).shape[0]))
                for layer, x, entry in zip(layers, inputs, result["layers"])]

    def _info(self, entry, hw_layer, batch):
        """A layer's figures. ``cycles``: every cycle the layer took in the simulation, its
        parameters' loading (what was not sent while the layer before ran), register writes,
        setup, fill and drain included (``cycles_per_sample`` splits them by image);
        ``engine_cycles``: the engine's CYCLES counter (busy cycles only)."""
        counters = entry["counters"]
        cycles = int(sum(entry["image_cycles"]))
        pe, simd = self.hw["pe"], self.hw["simd"]
        macs = layer_macs(_model_layer(hw_layer)) * batch
        return {
            "passes": entry.get("passes", 1),
            "ran_on": self.name,
            "cycles": cycles,
            "ideal_cycles": macs / (pe * simd),
            "mac_utilization": round(macs / (cycles * pe * simd), 4) if cycles and macs
            else None,
            "ceiling": round(array_ceiling(_model_layer(hw_layer), pe, simd), 4)
            if array_ceiling(_model_layer(hw_layer), pe, simd) is not None else None,
            "engine_cycles": int(counters["cycles"]),
            "mac_cycles": int(counters["mac_cycles"]),
            "starved_cycles": int(counters["starved_cycles"]),
            "stalled_cycles": int(counters["stalled_cycles"]),
            "cycles_per_sample": [int(c) for c in entry["image_cycles"]],
            "sim_cycles": int(entry["sim_cycles"]),
            "wall_seconds": round(entry["wall_seconds"], 3),
        }

    def _waves_note(self) -> str:
        """``"; waves in PATH"`` for an error message when the last launch wrote a waveform."""
        return f"; waves in {self._last_waves}" if self._last_waves else ""

    def _raise_error(self, result, job, layers):
        """CliError (one line, naming the layer) when the launch stopped at a layer."""
        if result["error"] is None:
            return
        index = next(i for i, layer in enumerate(job)
                     if _model_layer(layer).name == result["failed_layer"])
        original = layers[index]
        op = layer_op(original)
        if result["refused"] and not isinstance(job[index], Schedule):
            reason = refusal_text(result["refused"], job[index], self.hw)
            raise CliError(f"layer '{original.name}' ({op}): the engine refused it "
                             f"({result['refused']}: {reason}) on backend "
                             f"'{self.name}'{self._waves_note()}")
        raise CliError(f"{result['error']} on backend '{self.name}'{self._waves_note()}")

    def close(self):
        if not self.keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)
