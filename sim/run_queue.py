"""cocotb module that runs a layer queue on the DMA front end (:mod:`rtl.dma_engine`), memory
in cocotbext-axi's AxiRam: what ``make bench`` measures the queue with (:func:`run`).

Job (a pickle, path in :data:`JOB_ENV`): ``{"image": {address: bytes}, "head": int,
"memory_bytes": int, "dump": (first address, bytes)}``. The test loads the image, runs the
queue from ``head`` (Q_HEAD, Q_CTRL.run), waits for ``irq`` and writes the result beside the
job: ``{"status": Q_STATUS fields, "cycles": Q_CYCLES, "completed": Q_COMPLETED,
"dump": the bytes of the dump range, "sim_seconds": wall time of the run}``.
"""

import logging
import os
import pickle
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from rtl.dma_regs import QUEUE_BASE, QUEUE_REGMAP
from rtl.regmap import RegisterDriver

__all__ = ["JOB_ENV", "RESULT_SUFFIX", "run"]

JOB_ENV = "CONVCORE_QUEUE_JOB"
RESULT_SUFFIX = ".result.pkl"
CLOCK_PERIOD_NS = 10
#: A queue must end within this many cycles.
TIMEOUT_CYCLES = 20_000_000


@cocotb.test()
async def run_queue(dut):
    from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

    job_path = Path(os.environ[JOB_ENV])
    job = pickle.loads(job_path.read_bytes())
    cocotb.start_soon(Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=job["memory_bytes"])
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
    for agent in (ram.write_if, ram.read_if, axil.write_if, axil.read_if):
        agent.log.setLevel(logging.WARNING)

    async def write(addr, value):
        await axil.write_dword(QUEUE_BASE + addr, value)

    async def read(addr):
        return await axil.read_dword(QUEUE_BASE + addr)

    queue = RegisterDriver(QUEUE_REGMAP, write=write, read=read)
    for addr, data in job["image"].items():
        ram.write(addr, data)
    start = time.perf_counter()
    await queue.write_fields("Q_IRQ_ENABLE", q_irq_enable=1)
    await queue.write_fields("Q_HEAD", q_head=job["head"])
    await queue.pulse("run")
    await with_timeout(RisingEdge(dut.irq), TIMEOUT_CYCLES * CLOCK_PERIOD_NS, "ns")
    seconds = time.perf_counter() - start
    first, size = job["dump"]
    result = {"status": await queue.read_fields("Q_STATUS"),
              "cycles": (await queue.read_fields("Q_CYCLES"))["q_cycles"],
              "completed": (await queue.read_fields("Q_COMPLETED"))["q_completed"],
              "dump": ram.read(first, size), "sim_seconds": seconds}
    Path(str(job_path) + RESULT_SUFFIX).write_bytes(pickle.dumps(result))


def run(image, config: dict, bus_width: int, memory_bytes: int, work: Path) -> dict:
    """Run the queue of ``image`` (a :class:`sim.queue_image.QueueImage`) on Verilator, the
    DMA front end built around the engine ``config``; the result dict (module docstring),
    ``"read"`` added: ``read(addr, n) -> bytes`` of the memory after the run."""
    from rtl.dma_engine import DmaEngine
    from sim.runner import config_key, emit_verilog, run_cocotb

    key = config_key("dma_engine", dict(config, bus_width=bus_width))
    path = emit_verilog(DmaEngine(bus_width=bus_width, **config), toplevel="convcore_dma",
                        key=key)
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    job = work / "queue_job.pkl"
    dump = (image.base, image.size)
    job.write_bytes(pickle.dumps({"image": image.image(), "head": image.head,
                                  "memory_bytes": memory_bytes, "dump": dump}))
    result_file = Path(str(job) + RESULT_SUFFIX)
    result_file.unlink(missing_ok=True)
    run_cocotb("verilator", sources=[path], toplevel="convcore_dma", key=key,
               test_module="sim.run_queue", ports_only=True,
               extra_env={JOB_ENV: str(job), "COCOTB_LOG_LEVEL": "WARNING"})
    result = pickle.loads(result_file.read_bytes())
    memory = result["dump"]

    def read(addr, n):
        lo = addr - dump[0]
        if lo < 0 or lo + n > len(memory):
            raise ValueError(f"read of {n} bytes at {addr:#x} is outside the dump "
                             f"{dump[0]:#x}..{dump[0] + len(memory):#x}")
        return memory[lo:lo + n]
    result["read"] = read
    return result
