"""cocotb module launched by the hardware backends of ``convcore run``: layers, whole batch.

:class:`sim.hw_backend.HardwareBackend` writes a *job* (a pickle, path in the environment
variable :data:`JOB_ENV`), starts the simulator on :class:`sim.hw_backend.EngineHarness`
with this module, and reads the *result* the test writes next to the job.

Job: ``{"layers": [layer or sim.compiler.Schedule, ...], "x": int8/uint8 array (N, ...), "stall_output": bool,
"golden": [index, ...], "post_pool": {index: model.network.MaxPool}}`` (the last two
optional).
The layers run in order, each on the previous one's output (or, with ``"inputs": [array, ...]``
instead of ``"x"``, each on its own input: independent layers in one launch, for benchmarks).
A :class:`model.network.ConvLayer` (with its fused max-pool) or
:class:`model.network.PoolLayer` runs on the engine; a :class:`model.network.DenseLayer`
(one the backend could not map onto the engine), and every layer whose index is in
``golden`` (a max-pool alone on a configuration without a max-pool unit), run on the golden
model here, between engine layers, so a whole network takes one launch; ``post_pool[i]`` is
a max-pool applied on the golden model to engine layer ``i``'s output (a conv's fused pool on
such a configuration). On the engine, every layer's (and compiler pass's) parameters are
loaded once through :class:`sim.engine_driver.EngineDriver` and its registers written once,
then the batch's images run back to back (start, input stream, output stream, counters per
image). While a layer or pass runs, the next one's parameters are sent on ``s_axis_param``
(to words the running one does not read, see :class:`sim.engine_driver.ParamMemory`), so the
next starts as soon as this one ends; parameters still resident are not sent again. ``stall_output`` holds ``m_axis_tready`` low for ever: a fault injection that makes
the watchdog fire (tests use it).

Result: ``{"layers": [{"output": array, "counters": {name: total over the batch},
"image_cycles": [cycles per image, see run_layer], "sim_cycles": simulated cycles of the layer (loading and
register accesses included), "wall_seconds": its simulation time} or, for a golden layer,
{"output": array, "golden": True}], "error": str or None, "refused": EngineError name or
None, "failed_layer": name or None, "sim_cycles": int, "wall_seconds": float}``. An error
(the engine refused a layer, the watchdog fired, a parameter out of the engine's range) is one
line naming the layer; the layers before it keep their results. The test itself fails only on
a bug of the harness.

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
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiStreamFrame, AxiStreamSink

from model.network import DenseLayer, PoolLayer
from model.network import run_layer as run_golden
from rtl.engine_regs import EngineError
from sim.compiler import Folded, Schedule, steps
from sim.engine_driver import (EngineDriver, EngineRefused, conv_shape, input_words,
                              output_shape, pack_acc, pack_input, row_pitch, unpack_output,
                              window_ops)

#: Environment variable holding the job file's path; the result goes beside it (RESULT_SUFFIX).
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


def layer_work(layer, pe, simd, packing=True):
    """(MAC-array operations, input words, output words) of one image of ``layer`` (a
    ConvLayer, its fused pool included, or a PoolLayer) on an engine with ``packing`` or
    without."""
    cout, oh, ow = output_shape(layer)
    if isinstance(layer, PoolLayer):
        ops = 0
    else:
        ccout, ch, cw = conv_shape(layer)
        ops = ch * cw * _groups(ccout, pe) * window_ops(layer, simd, packing)
    return ops, input_words(layer, simd, packing), oh * ow * _groups(cout, pe)


def watchdog_cycles(layer, pe, simd, packing=True):
    """Cycle budget of one image of ``layer`` (module docstring)."""
    return WATCHDOG_FACTOR * sum(layer_work(layer, pe, simd, packing)) + WATCHDOG_BASE_CYCLES


class FastAxiStreamSink(AxiStreamSink):
    """:class:`cocotbext.axi.AxiStreamSink` with the same handshake, pause and queue behaviour,
    but each beat's ``tdata`` and ``tkeep`` are read once (not once per byte lane) and only the
    kept bytes are stored, so a frame arrives already compacted.

    The stock sink converts the whole ``tdata`` vector to an integer twice per byte lane and
    compacts frames byte by byte: for the engine's 32 x PE-bit output that is most of the
    simulation time. :func:`speed_up` swaps an existing sink (the driver's) to this class.
    """

    async def _run(self):
        frame = None
        self.active = False
        bus, lanes = self.bus, self.byte_lanes
        kept_cache = {}
        clock_edge_event = RisingEdge(self.clock)
        wake_event = self.wake_event.wait()
        while True:
            pause_sample = bool(self.pause)
            await clock_edge_event
            tvalid_sample = bus.tvalid.value
            if bus.tready.value and tvalid_sample:
                if not frame:
                    frame = AxiStreamFrame(bytearray(), [], [], [], [])
                    frame.sim_time_start = get_sim_time()
                    self.active = True
                data = int(bus.tdata.value).to_bytes(lanes, "little")
                keep = int(bus.tkeep.value)
                kept = kept_cache.get(keep)
                if kept is None:
                    index = [i for i in range(lanes) if keep >> i & 1]
                    # A prefix of lanes (the engine's case) is a slice, else a gather.
                    prefix = index == list(range(len(index)))
                    kept = kept_cache[keep] = len(index) if prefix else index
                if isinstance(kept, int):
                    frame.tdata += data[:kept]
                else:
                    frame.tdata += bytes(data[i] for i in kept)
                if bus.tlast.value:
                    frame.sim_time_end = get_sim_time()
                    self.queue_occupancy_bytes += len(frame)
                    self.queue_occupancy_frames += 1
                    self.queue.put_nowait(frame)
                    self.active_event.set()
                    frame = None
            else:
                self.active = bool(frame)
            paused = self.full() or pause_sample
            bus.tready.value = not paused
            if (not tvalid_sample or paused) and (pause_sample == bool(self.pause)):
                self.wake_event.clear()
                await wake_event


def speed_up(sink: AxiStreamSink) -> None:
    """Restart ``sink`` (an AxiStreamSink of a bus with tkeep and tlast, 8-bit lanes) as a
    :class:`FastAxiStreamSink`; its queue and settings are kept."""
    if sink.byte_size != 8 or not hasattr(sink.bus, "tkeep") or not hasattr(sink.bus, "tlast"):
        raise ValueError("FastAxiStreamSink needs 8-bit lanes, tkeep and tlast")
    sink.assert_reset(True)         # stops the running coroutine
    sink.__class__ = FastAxiStreamSink
    sink.assert_reset(False)        # starts FastAxiStreamSink._run


async def reset(dut):
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns", impl="gpi").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, RESET_CYCLES)
    dut.rst.value = 0
    await ClockCycles(dut.clk, RESET_CYCLES)


async def _pending(drv, dut, layer, image, hw):
    """What a hung image was waiting for, as one line."""
    ops, in_words, out_words = layer_work(layer, hw.pe, hw.simd, hw.packing)
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


async def run_layer(drv, dut, layer, x, hw, psum=None, after=None, started=False, then=None):
    """The whole batch ``x`` (N, C, H, W) through ``layer`` (adding the partial sums ``psum``,
    N x CHW int32, if given), the parameters of the engine layer ``after`` it sent while the
    images run; dict for the result file.

    The images run back to back: the first start checks the layer (a refusal is reported at
    once), each next start is queued while the image before it runs (``STATUS.queued``), so
    that the engine sets it up meanwhile and starts it the cycle the running one ends; the
    inputs stream back to back. ``image_cycles`` are the cycles from the previous image's last
    output word to the image's last output word, the first image's counted from the call (its
    parameters' loading, the register writes, the setup) and the last one's to the return (the
    final status and counter reads): together every cycle the layer took.

    ``started``: the layer's parameters are in place, its registers written and its first
    start queued already (by the call for the layer before, as ``then``). ``then``: a layer
    (without partial sums) to set up behind this one: once this layer's last image has
    started, its parameters are awaited, its registers written and its first start queued,
    so that the engine starts it the cycle this one ends; ``"then_started"`` in the result
    says whether that was done."""
    cycle0 = get_sim_time("ns") // CLOCK_PERIOD_NS
    drv._layer_name = layer.name
    if not started:
        try:
            await drv.load(layer)
        except ValueError as exc:       # constants out of the engine's range (pack_channels)
            raise LayerFailed(str(exc)) from None
        await drv.configure(layer, acc_in=psum is not None)
    n = x.shape[0]
    budget_ns = watchdog_cycles(layer, hw.pe, hw.simd, hw.packing) * CLOCK_PERIOD_NS
    pitch = row_pitch(layer, hw.simd, hw.packing)
    try:
        await (drv.started(layer.name) if started else drv.start())
    except EngineRefused as refused:
        raise LayerFailed(str(refused), refused=refused.code.name) from None
    drv.preload(after, drv.placement_of(layer))
    then_started = False
    handover = {}
    # Without queued starts each image starts from idle, which clears the counters: the
    # images' counters before each restart.
    spent = []

    async def feed():
        nonlocal then_started
        for image in range(n):
            if image:
                if not hw.queued_starts:
                    await drv.idle()
                    spent.append({name: int(v) for name, v in (await drv.counters()).items()})
                await drv.queue()
            if psum is not None:
                await drv.acc.send(pack_acc(psum[image], hw.pe))
            await drv.source.send(pack_input(x[image], hw.simd, pitch))
        if then is not None and (isinstance(then, PoolLayer)
                                 or drv.placement_of(then) is not None):
            await drv.settle()              # its parameters are in the memories
            await drv.configure(then)
            if not hw.queued_starts:
                await drv.idle()
            # The counters run on from a queued start and clear at a start from idle: if this
            # layer ends before the pulse, they clear, so they are read first.
            before = {name: int(v) for name, v in (await drv.counters()).items()}
            await drv.queue()
            if await drv.regs.read("CYCLES") < before["cycles"]:
                handover["fresh"] = before
            then_started = True

    feeder = cocotb.start_soon(feed())
    outputs, image_cycles = [], []
    last = cycle0
    for image in range(n):
        try:
            frame = await with_timeout(drv.sink.recv(), budget_ns, "ns")
        except TimeoutError:
            feeder.cancel()
            pending = await _pending(drv, dut, layer, image, hw)
            raise LayerFailed(f"layer '{layer.name}': watchdog: no result within "
                              f"{budget_ns // CLOCK_PERIOD_NS} cycles; {pending}") from None
        now = get_sim_time("ns") // CLOCK_PERIOD_NS
        image_cycles.append(int(now - last))
        last = now
        outputs.append(unpack_output(frame.tdata, layer))
    await feeder
    st = await drv.status()
    if then_started:
        # Ended once the next layer runs, or its refusal shows (that one's call reports it).
        while not (st["done"] or (st["running"] and not st["queued"])):
            st = await drv.status()
    else:
        while st["busy"]:
            st = await drv.status()
        if st["error"] != EngineError.NONE:
            raise LayerFailed(f"layer '{layer.name}': the engine refused a queued image "
                              f"({EngineError(st['error']).name})",
                              refused=EngineError(st["error"]).name)
    if st["tlast_error"] or st["load_error"]:
        raise LayerFailed(f"layer '{layer.name}': engine status tlast_error "
                          f"{st['tlast_error']}, load_error {st['load_error']}")
    # The counters run on from a queued start: this layer's are the difference from where
    # they stood when the layer before it handed over.
    if "fresh" in handover:     # this layer ended before the next one's start: they cleared
        counters = handover["fresh"]
    else:
        counters = {name: int(value) for name, value in (await drv.counters()).items()}
    base = drv.counter_base if started and drv.counter_base else dict.fromkeys(counters, 0)
    totals = {name: value - base[name] + sum(s[name] for s in spent)
              for name, value in counters.items()}
    drv.counter_base = counters if then_started and "fresh" not in handover else None
    image_cycles[-1] += int(get_sim_time("ns") // CLOCK_PERIOD_NS - last)
    return {"output": np.stack(outputs), "counters": totals, "image_cycles": image_cycles,
            "then_started": then_started}


async def run_schedule(drv, dut, schedule, x, hw, after=None):
    """A compiled layer (:class:`sim.compiler.Schedule`): its passes on the engine, the host's
    moves between them, each pass's successor (the engine layer ``after`` the last)
    preloaded while it runs; the counters and per-image cycles summed over the passes."""
    gen = steps(schedule, x)
    totals, image_cycles = {}, np.zeros(x.shape[0], np.int64)
    successors = [q.layer for q in schedule.passes[1:]] + [after]
    try:
        p, xin, psum = next(gen)
        for successor in successors:
            entry = await run_layer(drv, dut, p.layer, xin, hw, psum, successor)
            for name, value in entry["counters"].items():
                totals[name] = totals.get(name, 0) + value
            image_cycles += entry["image_cycles"]
            p, xin, psum = gen.send(entry["output"])
    except StopIteration as stop:
        y = stop.value
    except LayerFailed as exc:
        raise LayerFailed(f"layer '{schedule.layer.name}', pass '{p.layer.name}' ({p.what}): "
                          f"{exc}", refused=exc.refused) from None
    return {"output": y, "counters": totals, "image_cycles": [int(c) for c in image_cycles],
            "passes": len(schedule.passes)}


def _first_pass(layer):
    """What the engine runs first of a job's layer: the layer, or a Schedule's first pass."""
    if isinstance(layer, Folded):
        return layer.layer
    return layer.passes[0].layer if isinstance(layer, Schedule) else layer


@cocotb.test()
async def run_job(dut):
    """Runs the job named by CONVCORE_RUN_JOB and writes its result file."""
    job_path = Path(os.environ[JOB_ENV])
    job = pickle.loads(job_path.read_bytes())
    start = time.perf_counter()
    await reset(dut)
    drv = EngineDriver(dut)
    speed_up(drv.sink)
    if job.get("stall_output"):
        drv.sink.pause = True
    hw = await drv.hardware()
    result = {"layers": [], "error": None, "refused": None, "failed_layer": None}
    inputs = job.get("inputs")
    golden, post_pool = set(job.get("golden", ())), job.get("post_pool") or {}
    x = None if inputs is not None else np.asarray(job["x"])
    engine = [index for index, layer in enumerate(job["layers"])
              if not (isinstance(layer, DenseLayer) or index in golden)]
    next_engine = dict(zip(engine, engine[1:]))
    started = False                 # the layer's first start was queued behind the last one
    for index, layer in enumerate(job["layers"]):
        if inputs is not None:
            x = np.asarray(inputs[index])
        x = x.reshape(x.shape[0], *(layer.layer if isinstance(layer, Schedule)
                                    else layer.original if isinstance(layer, Folded)
                                    else layer).in_shape)
        if isinstance(layer, DenseLayer) or index in golden:    # not for the engine
            x = run_golden(layer, x)
            result["layers"].append({"output": x, "golden": True})
            continue
        cycle0, wall0 = get_sim_time("ns") // CLOCK_PERIOD_NS, time.perf_counter()
        after = (_first_pass(job["layers"][next_engine[index]]) if index in next_engine
                 else None)
        then = job["layers"][next_engine[index]] if index in next_engine else None
        if isinstance(then, Folded):
            then = then.layer
        if isinstance(then, Schedule) or isinstance(layer, Schedule):
            then = None
        try:
            if isinstance(layer, Schedule):
                entry = await run_schedule(drv, dut, layer, x, hw, after)
            elif isinstance(layer, Folded):
                entry = await run_layer(drv, dut, layer.layer, layer.fold(x), hw, after=after,
                                        started=started, then=then)
                # Each pass's cycles shared by its samples.
                n, per = x.shape[0], layer.samples
                entry["output"] = layer.unfold(entry["output"], n)
                shares = [c // per + (k < c % per) for c in entry["image_cycles"]
                          for k in range(per)]
                entry["image_cycles"] = shares[:n - 1] + [sum(shares[n - 1:])]
            else:
                entry = await run_layer(drv, dut, layer, x, hw, after=after, started=started,
                                        then=then)
            started = entry.pop("then_started", False)
        except LayerFailed as exc:
            result["error"] = str(exc)
            result["refused"] = exc.refused
            result["failed_layer"] = (layer.layer if isinstance(layer, (Schedule, Folded))
                                      else layer).name
            break
        entry["sim_cycles"] = int(get_sim_time("ns") // CLOCK_PERIOD_NS - cycle0)
        entry["wall_seconds"] = time.perf_counter() - wall0
        if index in post_pool:
            entry["output"] = post_pool[index].apply(entry["output"])
        result["layers"].append(entry)
        x = entry["output"]
    result["sim_cycles"] = int(get_sim_time("ns") // CLOCK_PERIOD_NS)
    result["wall_seconds"] = time.perf_counter() - start
    result_path(job_path).write_bytes(pickle.dumps(result))
