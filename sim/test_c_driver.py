"""The C driver (``sw/convcore.c``) on the RTL: compiled freestanding, and run by the Verilator
harness (``tb/c/harness.cpp`` around ``tb/hdl/soc_top.v``) on the digits CNN that ``convcore
export`` wrote; every layer's outputs in the RAM's dump == golden model. Errors: the queue's
and the engine's codes decoded by the driver, the export command's one-line errors.

The harness is built once per configuration and export folder (``build/c_driver/``); a lock
keeps parallel pytest workers from exporting or building at the same time.
"""

import fcntl
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from model.network import run_layer
from rtl.dma_regs import DESCRIPTOR, QueueError
from rtl.engine_regs import REGMAP
from sim import toolchain
from sim.cli import first_mismatch
from sim.export import DEFAULT_CONFIG, build, dma_hw, load_images, resolve_dma_config

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "digits" / "digits_int8.onnx"
DRIVER = ROOT / "sw" / "convcore.c"
IMAGES = 4
EXPORT_DIR = toolchain.BUILD / "c_driver" / f"digits-{IMAGES}"
#: The harness's exit statuses (tb/c/harness.cpp).
EXIT_QUEUE = 1
#: A run of 4 images takes about 10,000 cycles; far more is a hang.
MAX_CYCLES = 2_000_000


@contextmanager
def build_lock():
    EXPORT_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(EXPORT_DIR.parent / ".export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def convcore(*args):
    return subprocess.run([sys.executable, "-m", "sim.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convcore: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def exported():
    """The digits CNN exported for IMAGES images (`convcore export`, as a user runs it), the
    harness built on it, and the same export rebuilt in this process (its NetworkImage tells
    where each layer's outputs are)."""
    from sim.export import build_harness
    from sim.onnx_import import load_network

    with build_lock():
        proc = convcore("export", MODEL, "--hw-config", DEFAULT_CONFIG, "--images", IMAGES,
                        "--out", EXPORT_DIR)
        assert proc.returncode == 0, proc.stderr
        assert f"{IMAGES} image(s)" in proc.stdout, proc.stdout
        harness = build_harness(EXPORT_DIR, DEFAULT_CONFIG)
        memory = (EXPORT_DIR / "memory.hex").read_text()
    net = load_network(MODEL)
    hw = dma_hw(resolve_dma_config(DEFAULT_CONFIG))
    exp = build(net, load_images(net, IMAGES, None), hw)
    return {"harness": harness, "memory": memory, "net": net, "hw": hw, "exp": exp}


def run_harness(exported, tmp_path, *args, memory=None):
    """Run the harness on the exported memory image (or ``memory``, {address: bytes}, written
    over it); returns the process and the RAM after the run."""
    from sim.memory_image import read_memh, write_memh

    mem = tmp_path / "memory.hex"
    if memory is None:
        mem.write_text(exported["memory"])
    else:
        bus = exported["hw"]["bus_width"]
        write_memh(memory, mem, data_width=bus,
                   size=-(-exported["exp"].memory_bytes // (bus // 8)) * (bus // 8))
    dump = tmp_path / "dump.hex"
    proc = subprocess.run([str(exported["harness"]), f"+mem={mem}", f"+dump={dump}",
                           "--max-cycles", str(MAX_CYCLES), *args],
                          capture_output=True, text=True, timeout=120)
    assert dump.exists(), proc.stdout + proc.stderr
    return proc, read_memh(dump, data_width=exported["hw"]["bus_width"])


def assert_golden(exported, ram):
    """Every layer's outputs in ``ram`` == the golden model, each layer run on the golden
    output of the layer before."""
    exp, net = exported["exp"], exported["net"]
    y = exp.x
    for index, layer in enumerate(net.layers):
        want = run_layer(layer, y)
        got = exp.net_image.read(ram.read, index).reshape(want.shape)
        assert np.array_equal(got, want), f"{layer.name}: {first_mismatch(got, want)}"
        y = want


def test_driver_compiles_freestanding(tmp_path):
    """C99 with every warning an error, freestanding, and no symbol from a C library."""
    from sim.export import write_headers

    write_headers(tmp_path)
    obj = tmp_path / "convcore.o"
    proc = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                           "-ffreestanding", f"-I{tmp_path}", "-c", str(DRIVER), "-o", str(obj)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("nm"):
        undefined = subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True)
        assert undefined.stdout.split() == [], f"the driver calls {undefined.stdout.split()}"


def test_export_writes_the_image(exported):
    exp, hw = exported["exp"], exported["hw"]
    img = exp.net_image.image
    header = (EXPORT_DIR / "convcore_image.h").read_text()
    assert f"#define CONVCORE_IMAGE_HEAD {img.head:#010x}u" in header
    assert f"#define CONVCORE_IMAGE_DESCRIPTORS {len(img.entries)}u" in header
    assert f"#define CONVCORE_IMAGE_COUNT {IMAGES}u" in header
    assert f"#define CONVCORE_IMAGE_BUS_BYTES {hw['bus_width'] // 8}u" in header
    expected = np.load(EXPORT_DIR / "expected.npy")
    assert expected.dtype == exp.golden[-1].dtype
    assert np.array_equal(expected, exp.golden[-1])
    assert np.array_equal(np.load(EXPORT_DIR / "input.npy"), exp.x)
    # the image holds no output: a run that wrote nothing cannot pass the comparison
    from sim.memory_image import read_memh
    before = read_memh(EXPORT_DIR / "memory.hex", data_width=hw["bus_width"],
                       size=exp.memory_bytes + hw["bus_width"] // 8)
    last = len(exported["net"].layers) - 1
    got = exp.net_image.read(before.read, last).reshape(exp.golden[-1].shape)
    assert not np.array_equal(got, exp.golden[-1])


def test_digits_queue_bit_exact(exported, tmp_path):
    """The whole queue, its end seen on irq: every layer == golden model."""
    proc, ram = run_harness(exported, tmp_path)
    n = len(exported["exp"].net_image.image.entries)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = proc.stdout.strip()
    assert line.startswith(f"convcore: queue: ok, {n} of {n} descriptors, "), line
    assert_golden(exported, ram)


def test_digits_layer_by_layer_bit_exact(exported, tmp_path):
    """Each descriptor on its own (cc_run_layer, polling Q_STATUS): the same outputs."""
    proc, ram = run_harness(exported, tmp_path, "--layers")
    n = len(exported["exp"].net_image.image.entries)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"convcore: layers: ok, {n} of {n} descriptors, "), \
        proc.stdout
    assert_golden(exported, ram)


#: An engine whose weight memory holds 64 words: the digits CNN's conv2 (72 words) is split by
#: the compiler into output-channel passes, each writing its slice of every pixel.
SPLIT_CONFIG = '{"bus_width": 64, "weight_depth": 64}'
SPLIT_DIR = toolchain.BUILD / "c_driver" / f"digits-split-{IMAGES}"


def test_multi_pass_layer_bit_exact(tmp_path):
    """A layer the compiler splits into passes, through the C driver: the digits CNN on an
    engine whose weight memory cannot hold conv2 whole; every layer == golden model."""
    from sim.compiler import compile_layer
    from sim.export import build_harness
    from sim.onnx_import import load_network

    net = load_network(MODEL)
    hw = dma_hw(resolve_dma_config(SPLIT_CONFIG))
    passes = {layer.name: len(compile_layer(layer, hw).passes) for layer in net.layers}
    assert passes["conv2"] > 1, passes
    with build_lock():
        proc = convcore("export", MODEL, "--hw-config", SPLIT_CONFIG, "--images", IMAGES,
                        "--out", SPLIT_DIR)
        assert proc.returncode == 0, proc.stderr
        harness = build_harness(SPLIT_DIR, SPLIT_CONFIG)
        memory = (SPLIT_DIR / "memory.hex").read_text()
    exported = {"harness": harness, "memory": memory, "net": net, "hw": hw,
                "exp": build(net, load_images(net, IMAGES, None), hw)}
    proc, ram = run_harness(exported, tmp_path)
    n = len(exported["exp"].net_image.image.entries)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"convcore: queue: ok, {n} of {n} descriptors, "), \
        proc.stdout
    assert_golden(exported, ram)


def _patched(exported, change):
    """The memory image with the first descriptor's words changed by ``change(words)``."""
    exp = exported["exp"]
    memory = dict(exp.memory)
    head = exp.net_image.image.head
    words = [int.from_bytes(memory[head][4 * i:4 * i + 4], "little")
             for i in range(len(DESCRIPTOR))]
    change(words, memory)
    memory[head] = b"".join(w.to_bytes(4, "little") for w in words)
    return memory


def test_misaligned_input_decoded_as_align(exported, tmp_path):
    """A descriptor whose input address is half a bus word off: the queue stops there with
    ALIGN, the driver prints its name and text, the harness exits 1."""
    half = exported["hw"]["bus_width"] // 16

    def change(words, memory):
        words[DESCRIPTOR.index("in_addr")] += half
    proc, _ = run_harness(exported, tmp_path, memory=_patched(exported, change))
    head = exported["exp"].net_image.image.head
    assert proc.returncode == EXIT_QUEUE, proc.stdout + proc.stderr
    assert proc.stdout.strip() == (
        f"convcore: queue: queue error ALIGN: {QueueError.docs['ALIGN']}; at descriptor "
        f"{head:#010x} after 0 completed"), proc.stdout


def test_engine_refusal_decoded(exported, tmp_path):
    """A register list with a 0x0 kernel: the queue stops with ENGINE, the engine's code
    KERNEL decoded too."""
    kernel = REGMAP["KERNEL"]

    def change(words, memory):
        regs = words[DESCRIPTOR.index("regs")]
        pairs = bytearray(memory[regs])
        for i in range(words[DESCRIPTOR.index("reg_count")]):
            if int.from_bytes(pairs[8 * i:8 * i + 4], "little") == kernel.offset:
                pairs[8 * i + 4:8 * i + 8] = bytes(4)
                break
        else:
            raise AssertionError("the first descriptor writes no KERNEL")
        memory[regs] = bytes(pairs)
    proc, _ = run_harness(exported, tmp_path, memory=_patched(exported, change))
    assert proc.returncode == EXIT_QUEUE, proc.stdout + proc.stderr
    assert "queue error ENGINE: " in proc.stdout, proc.stdout
    assert proc.stdout.strip().endswith(
        "; engine error KERNEL: kernel height or width 0 or above the maximum"), proc.stdout


@pytest.mark.parametrize("args,fragments", [
    (["--hw-config", "nonesuch"], ["'nonesuch' is unknown", "dma"]),
    (["--hw-config", "default"], ["'default' is the engine without the DMA front end"]),
    (["--hw-config", '{"bus_width": 24}'], ["DmaEngine refuses", "24"]),
    (["--images", "0"], ["--images must be at least 1, not 0"]),
    # the image does not fit an 8 KiB address space: sim.queue_image's QueueImageError
    (["--hw-config", '{"addr_width": 13}'], ["beyond the 13-bit address space"]),
])
def test_export_errors_are_one_line(tmp_path, args, fragments):
    proc = convcore("export", MODEL, "--out", tmp_path / "out", *args)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "out" / "memory.hex").exists()
