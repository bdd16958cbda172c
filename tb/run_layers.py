"""cocotb module launched by the hardware backends of ``convcore run``: one layer, whole batch.

:class:`sim.hw_backend.HardwareBackend` writes a *job* (a pickle, path in the environment
variable :data:`JOB_ENV`), starts the simulator on :class:`sim.hw_backend.EngineHarness`
with this module, and reads the *result* the test writes next to the job.

Job: ``{"layers": [ConvLayer, ...], "x": int8/uint8 array (N, C, H, W), "stall_output": bool}``.
The layers run in order, each on the previous one's output (or, with ``"inputs": [array, ...]``
instead of ``"x"``, each on its own input: independent layers in one launch, for benchmarks);
every layer's parameters are
loaded once through :class:`tb.engine_driver.EngineDriver` and its registers written once, then
the batch's images run back to back (start, input stream, output stream, counters per image).
Fused max-pools are not in the engine yet: a layer's ``pool`` is applied here with the golden
:meth:`model.network.MaxPool.apply` after the engine's output, so the next layer gets the
pooled map. ``stall_output`` holds ``m_axis_tready`` low for ever: a fault injection that
makes the watchdog fire (tests use it).

Result: ``{"layers": [{"output": array, "counters": {name: total over the batch},
"image_cycles": [CYCLES per image], "sim_cycles": simulated cycles of the layer (loading and
register accesses included), "wall_seconds": its simulation time}], "error": str or None,
"refused": EngineError name or None, "failed_layer": name or None, "sim_cycles": int,
"wall_seconds": float}``. An error (the engine refused a layer, the watchdog fired, a
parameter out of the engine's range) is one line naming the layer; the layers before it keep
their results. The test itself fails only on a bug of the harness.

Watchdog: an image of a layer must finish within ``WATCHDOG_FACTOR`` times its
operation count (MAC-array operations + input words + output words) plus
``WATCHDOG_BASE_CYCLES``; otherwise the error says what was pending: input words sent, output
words received, the engine's status and its MAC-operation counter.
"""

import os
import pickle
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, with_timeout
from cocotb.utils import get_sim_time

from tb.engine_driver import EngineDriver, EngineRefused, output_shape, pack_input, unpack_output

#: Environment variable holding the job file's path; the result goes to RESULT_NAME beside it.
JOB_ENV = "CONVCORE_RUN_JOB"
RESULT_SUFFIX = ".result.pkl"
CLOCK_PERIOD_NS = 10
RESET_CYCLES = 4
#: Watchdog budget per image: factor x (operations + stream words) + base cycles.
WATCHDOG_FACTOR = 4
WATCHDOG_BASE_CYCLES = 5000


def result_path(job_path) -> Path:
    job_path = Path(job_path)
    return job_path.with_name(job_path.stem + RESULT_SUFFIX)


class LayerFailed(Exception):
    """A layer could not run; the message is one line naming it. ``refused`` is the
    EngineError name when the engine refused the layer."""

    def __init__(self, message, refused=None):
        super().__init__(message)
        self.refused = refused


def _groups(n, size):
    return -(-n // size)


def layer_work(layer, pe, simd):
    """(MAC-array operations, input words, output words) of one image of ``layer``."""
    cin, h, w = layer.in_shape
    cout, oh, ow = output_shape(layer)
    kh, kw = layer.kernel
    ops = oh * ow * _groups(cout, pe) * kh * kw * _groups(cin, simd)
    return ops, h * w * _groups(cin, simd), oh * ow * _groups(cout, pe)


def watchdog_cycles(layer, pe, simd):
    """Cycle budget of one image of ``layer`` (module docstring)."""
    return WATCHDOG_FACTOR * sum(layer_work(layer, pe, simd)) + WATCHDOG_BASE_CYCLES


async def reset(dut):
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns", impl="gpi").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, RESET_CYCLES)
    dut.rst.value = 0
    await ClockCycles(dut.clk, RESET_CYCLES)


async def _pending(drv, dut, layer, image, pe, simd):
    """What a hung image was waiting for, as one line."""
    ops, in_words, out_words = layer_work(layer, pe, simd)
    sent, received = int(dut.in_beats.value), int(dut.out_beats.value)
    try:
        st = await with_timeout(drv.status(), 1000 * CLOCK_PERIOD_NS, "ns")
        macs = await with_timeout(drv.regs.read("MAC_CYCLES"), 1000 * CLOCK_PERIOD_NS, "ns")
        status = ", ".join(f"{k} {int(v)}" for k, v in st.items())
        engine = f"engine status: {status}; MAC operations {macs} of {ops}"
    except Exception:       # the register bus hangs too
        engine = "engine status: register bus not answering"
    return (f"sample {image}: input words sent {sent} of {in_words}, output words received "
            f"{received} of {out_words}; {engine}")


async def run_image(drv, dut, layer, x, image, hw):
    """Run one CHW image of a loaded and configured layer; (CHW output, counters)."""
    try:
        await drv.start()
    except EngineRefused as refused:
        raise LayerFailed(str(refused), refused=refused.code.name) from None
    await drv.source.send(pack_input(x, hw.simd))
    frame = await drv.sink.recv()
    while (await drv.status())["busy"]:
        pass
    st = await drv.status()
    if st["tlast_error"] or st["load_error"]:
        raise LayerFailed(f"layer '{layer.name}': sample {image}: engine status "
                          f"tlast_error {st['tlast_error']}, load_error {st['load_error']}")
    return unpack_output(frame.tdata, layer), await drv.counters()


async def run_layer(drv, dut, layer, x, hw):
    """The whole batch ``x`` (N, C, H, W) through ``layer``; dict for the result file."""
    try:
        await drv.load(layer)
    except ValueError as exc:       # constants out of the engine's range (pack_channels)
        raise LayerFailed(str(exc)) from None
    await drv.configure(layer)
    drv._layer_name = layer.name
    budget_ns = watchdog_cycles(layer, hw.pe, hw.simd) * CLOCK_PERIOD_NS
    outputs, totals, image_cycles = [], {}, []
    for image in range(x.shape[0]):
        try:
            y, counters = await with_timeout(run_image(drv, dut, layer, x[image], image, hw),
                                             budget_ns, "ns")
        except TimeoutError:
            pending = await _pending(drv, dut, layer, image, hw.pe, hw.simd)
            raise LayerFailed(f"layer '{layer.name}': watchdog: no result within "
                              f"{budget_ns // CLOCK_PERIOD_NS} cycles; {pending}") from None
        outputs.append(y)
        image_cycles.append(int(counters["cycles"]))
        for name, value in counters.items():
            totals[name] = totals.get(name, 0) + int(value)
    return {"output": np.stack(outputs), "counters": totals, "image_cycles": image_cycles}


@cocotb.test()
async def run_job(dut):
    """Runs the job named by CONVCORE_RUN_JOB and writes its result file."""
    job_path = Path(os.environ[JOB_ENV])
    job = pickle.loads(job_path.read_bytes())
    start = time.perf_counter()
    await reset(dut)
    drv = EngineDriver(dut)
    if job.get("stall_output"):
        drv.sink.pause = True
    hw = await drv.hardware()
    result = {"layers": [], "error": None, "refused": None, "failed_layer": None}
    inputs = job.get("inputs")
    x = None if inputs is not None else np.asarray(job["x"])
    for index, layer in enumerate(job["layers"]):
        if inputs is not None:
            x = np.asarray(inputs[index])
        cycle0, wall0 = get_sim_time("ns") // CLOCK_PERIOD_NS, time.perf_counter()
        try:
            entry = await run_layer(drv, dut, layer, x, hw)
        except LayerFailed as exc:
            result["error"] = str(exc)
            result["refused"] = exc.refused
            result["failed_layer"] = layer.name
            break
        entry["sim_cycles"] = int(get_sim_time("ns") // CLOCK_PERIOD_NS - cycle0)
        entry["wall_seconds"] = time.perf_counter() - wall0
        result["layers"].append(entry)
        x = entry["output"] if layer.pool is None else layer.pool.apply(entry["output"])
    result["sim_cycles"] = int(get_sim_time("ns") // CLOCK_PERIOD_NS)
    result["wall_seconds"] = time.perf_counter() - start
    result_path(job_path).write_bytes(pickle.dumps(result))
