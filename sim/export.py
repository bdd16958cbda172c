"""What the C driver (``sw/``) needs to run a network on the DMA front end, written to a folder.

``convcore export MODEL.onnx [--hw-config NAME|JSON] [--images N] [--input X.npy] --out DIR``
(:func:`export`) writes:

- ``memory.hex``: the memory image (:mod:`sim.queue_image`: descriptors, register lists,
  parameter packets, the input buffers) as a ``$readmemh`` file of bus words
  (:mod:`sim.memory_image`); a SoC loads the same bytes at the same addresses;
- ``convcore_image.h``: the queue's head, the image's extent and the RAM it needs, the input
  buffers, every layer's output buffers, every descriptor, and each descriptor again on its
  own (``next`` 0) for running the network one layer at a time (:data:`IMAGE_HEADER`);
- ``expected.npy`` (the golden model's output of the last layer, ``(N, C, H, W)`` in the
  engine's integers) and ``input.npy`` (the quantized input);
- the register headers the driver includes (:func:`write_headers`).

``python -m sim.export --harness DIR [--hw-config NAME|JSON]`` builds the Verilator harness
(``tb/c/harness.cpp`` around ``tb/hdl/soc_top.v``, the driver compiled in) for the image in
``DIR`` and prints its path (:func:`build_harness`); run it with ``+mem=DIR/memory.hex
+dump=FILE [--layers]``.

``python -m sim.export --headers DIR`` writes only the register headers:
``convcore_engine_regs.h`` and ``convcore_queue_regs.h`` (:func:`sim.regdoc.render` of the two
register maps) and ``convcore_dma.h`` (:func:`dma_header`: the two windows' base addresses, the
descriptor's words and flags, and the error codes of both maps as X-macros with their texts).

The engine is a DMA configuration of :mod:`sim.configs` (class ``DmaEngine``: ``dma``) or a JSON
object of :class:`rtl.dma_engine.DmaEngine` arguments; without ``--input`` the images are the
digits CNN's held-out test images (:func:`examples.digits.load_test_set`).
"""

import argparse
import fcntl
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim import toolchain
from sim.errors import CliError

__all__ = ["DEFAULT_CONFIG", "HEADER_FILES", "IMAGE_HEADER", "Exported", "resolve_dma_config",
           "dma_hw", "load_images", "dma_header", "image_header", "write_headers", "build",
           "export", "build_harness", "main"]

#: The configuration ``convcore export`` uses without ``--hw-config``.
DEFAULT_CONFIG = "dma"
#: The generated headers the driver includes: file name -> what it holds.
HEADER_FILES = ("convcore_engine_regs.h", "convcore_queue_regs.h", "convcore_dma.h")
#: The file name of the exported image's C header.
IMAGE_HEADER = "convcore_image.h"
MEMORY_FILE = "memory.hex"
#: The harness's sources besides the exported Verilog, and the driver.
HARNESS_SOURCES = (toolchain.ROOT / "tb" / "hdl" / "soc_top.v",
                   toolchain.ROOT / "tb" / "hdl" / "axi_ram.v",
                   toolchain.ROOT / "tb" / "c" / "harness.cpp")
DRIVER_DIR = toolchain.ROOT / "sw"
#: soc_top's RAM in the harness: 2**RAM_ADDR_WIDTH bytes from address 0.
RAM_ADDR_WIDTH = 20
EXPECTED_FILE = "expected.npy"
INPUT_FILE = "input.npy"


def resolve_dma_config(spec: str | None) -> dict:
    """:class:`rtl.dma_engine.DmaEngine` arguments for ``spec``: the name of a configuration
    whose class is DmaEngine, or a JSON object of its arguments. CliError (one line)."""
    from sim import configs

    spec = (spec or DEFAULT_CONFIG).strip()
    try:
        params = configs.json_params(spec)
    except configs.ConfigError as exc:
        raise CliError(str(exc)) from None
    if params is not None:
        return params
    dma = [name for name, c in configs.CONFIGS.items() if c.cls == "DmaEngine"]
    if spec not in dma:
        what = "is the engine without the DMA front end" if spec in configs.CONFIGS \
            else "is unknown"
        raise CliError(f"hardware configuration {spec!r} {what}; export needs one with the "
                       f"DMA front end: {', '.join(dma)}, or a JSON object of DmaEngine "
                       f"arguments")
    return dict(configs.get(spec).params)


def dma_hw(params: dict) -> dict:
    """The DMA engine's parameters (:attr:`rtl.dma_engine.DmaEngine.hw`) for ``params``;
    CliError when the engine refuses them."""
    from rtl.dma_engine import DmaEngine

    try:
        engine = DmaEngine(**params)
    except (TypeError, ValueError) as exc:
        raise CliError(f"DmaEngine refuses the hardware configuration: {exc}") from None
    engine._MustUse__silence = True         # built only to read its parameters
    return engine.hw


def load_images(net, images: int | None, input_path: str | None) -> np.ndarray:
    """The network's quantized input: the first ``images`` of ``input_path`` (a .npy) or, without
    it, of the digits CNN's held-out test images. CliError when they do not fit the network."""
    from model.network import quantize_input

    if images is not None and images < 1:
        raise CliError(f"--images must be at least 1, not {images}")
    if input_path is not None:
        p = Path(input_path)
        if not p.is_file():
            raise CliError(f"input file '{p}' does not exist")
        try:
            x = np.load(p, allow_pickle=False)
        except Exception as exc:
            raise CliError(f"'{p}' is not a valid .npy file ({exc})") from None
    else:
        from examples.digits import load_test_set
        x = load_test_set()[0]
        if tuple(x.shape[1:]) != tuple(net.input_shape[1:]):
            raise CliError(f"the model's input is {tuple(net.input_shape[1:])}, not the digits "
                           f"test images' {tuple(x.shape[1:])}: give its images with --input")
    if images is not None:
        if images > x.shape[0]:
            raise CliError(f"--images {images}: the input has {x.shape[0]}")
        x = x[:images]
    return quantize_input(net, x)


def _c_string(text: str) -> str:
    return '"' + " ".join(str(text).split()).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _enum_x_macro(macro: str, field) -> list[str]:
    lines = [f"#define {macro}(X) \\"]
    items = sorted((int(value), name) for name, value in field.enum.items())
    for value, name in items:
        text = field.enum_docs.get(name) or f"{name} (the register map gives no text)"
        lines.append(f"    X({name}, {value}u, {_c_string(text)}) \\")
    lines[-1] = lines[-1][:-2]
    return lines


def dma_header() -> str:
    """The C header ``convcore_dma.h``: the front end's address map, the descriptor and the
    error codes (from :mod:`rtl.dma_regs` and the two register maps)."""
    from rtl import dma_regs
    from rtl.engine_regs import REGMAP

    q_error = dma_regs.QUEUE_REGMAP.field("q_error")
    e_error = REGMAP.field("error")
    out = ["/* The DMA front end of convcore (rtl/dma_regs.py): generated by "
           "`python -m sim.export --headers`; do not edit. */",
           "#ifndef CONVCORE_DMA_H", "#define CONVCORE_DMA_H", "",
           "/* Byte offsets of the two register windows on the AXI4-Lite port. */",
           f"#define CONVCORE_DMA_ENGINE_BASE {dma_regs.ENGINE_BASE:#05x}u",
           f"#define CONVCORE_DMA_QUEUE_BASE {dma_regs.QUEUE_BASE:#05x}u",
           f"#define CONVCORE_DMA_ADDR_WIDTH {dma_regs.ADDR_WIDTH}u", "",
           "/* A descriptor: CONVCORE_DMA_DESC_WORDS little-endian 32-bit words; the index of "
           "each. */",
           f"#define CONVCORE_DMA_DESC_WORDS {dma_regs.DESC_WORDS}u"]
    out += [f"#define CONVCORE_DMA_DESC_{name.upper()} {i}u"
            for i, name in enumerate(dma_regs.DESCRIPTOR)]
    out += ["", "/* Bits of the descriptor's flags word. */"]
    out += [f"#define CONVCORE_DMA_FLAG_{name.upper()} (1u << {bit}u)"
            for name, bit in dma_regs.FLAGS.items()]
    out += ["", "/* Q_STATUS.q_error: X(name, code, text) for each. */"]
    out += _enum_x_macro("CONVCORE_DMA_QUEUE_ERRORS", q_error)
    out += ["", "/* The engine's STATUS.error (Q_STATUS.q_engine_error): X(name, code, text). */"]
    out += _enum_x_macro("CONVCORE_DMA_ENGINE_ERRORS", e_error)
    out += ["", "#endif /* CONVCORE_DMA_H */"]
    return "\n".join(out) + "\n"


def write_headers(folder: Path) -> list[Path]:
    """Write :data:`HEADER_FILES` into ``folder``; returns their paths."""
    from sim.regdoc import load_map, render
    from sim.runner import write_if_changed

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts = {"convcore_engine_regs.h": render(load_map("rtl.engine_regs:REGMAP"), "c-header"),
             "convcore_queue_regs.h": render(load_map("rtl.dma_regs:QUEUE_REGMAP"), "c-header"),
             "convcore_dma.h": dma_header()}
    return [write_if_changed(folder / name, texts[name]) for name in HEADER_FILES]


@dataclass
class Exported:
    """What :func:`export` built: the network image, the standalone descriptors' addresses,
    the memory image ({address: bytes}), the quantized input and the golden outputs of every
    layer."""
    net_image: object
    layer_descs: list
    memory: dict
    x: np.ndarray
    golden: list
    memory_bytes: int


def _inputs(img):
    """The input regions no descriptor writes (the network's input, placed by the host)."""
    outs = [e.output for e in img.entries]
    seen = {}
    for e in img.entries:
        r = e.input
        if not any(r.overlaps(o) for o in outs):
            seen.setdefault((r.addr, r.size), r)
    return [seen[k] for k in sorted(seen)]


def _outputs(net_image, index):
    """(address, bytes) of each output buffer of layer ``index``."""
    return [(o.base, o.size) if hasattr(o, "base") else (o.addr, o.size)
            for o in net_image.outputs[index]]


def ram_addr_width(memory_bytes: int) -> int:
    """Address bits of the smallest RAM from address 0 (at least 4 KiB, what
    ``tb/hdl/axi_ram.v`` takes) that holds ``memory_bytes``."""
    return max(12, (memory_bytes - 1).bit_length())


def image_header(exp: Exported, model_name: str, config: str) -> str:
    """The C header ``convcore_image.h`` of an exported image."""
    ni = exp.net_image
    img = ni.image
    n = exp.x.shape[0]
    guard = "CONVCORE_IMAGE_H"
    out = [f"/* convcore image of {model_name}: {n} image(s) on hardware configuration "
           f"{config}; generated by `convcore export`; do not edit.",
           " * Every address is a byte address in the memory the DMA front end reads "
           "(memory.hex holds the image). */",
           f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
           f"#define CONVCORE_IMAGE_HEAD {img.head:#010x}u /* Q_HEAD: the first descriptor */",
           f"#define CONVCORE_IMAGE_BASE {img.base:#010x}u /* the image's first byte */",
           f"#define CONVCORE_IMAGE_BYTES {exp.memory_bytes - img.base}u /* from BASE on */",
           f"#define CONVCORE_IMAGE_MEMORY_BYTES {exp.memory_bytes}u /* memory needed from "
           f"address 0 */",
           f"#define CONVCORE_IMAGE_RAM_ADDR_WIDTH {ram_addr_width(exp.memory_bytes)}u "
           f"/* address bits of a RAM from 0 that holds it (soc_top's RAM_ADDR_WIDTH) */",
           f"#define CONVCORE_IMAGE_BUS_BYTES {img.bus_bytes}u /* Q_HW.q_bus_bytes it was "
           f"built for */",
           f"#define CONVCORE_IMAGE_PE {img.hw['pe']}u",
           f"#define CONVCORE_IMAGE_SIMD {img.hw['simd']}u",
           f"#define CONVCORE_IMAGE_COUNT {n}u /* images in the batch */",
           f"#define CONVCORE_IMAGE_LAYERS {len(ni.layers)}u",
           f"#define CONVCORE_IMAGE_DESCRIPTORS {len(img.entries)}u", "",
           "typedef struct convcore_image_buffer {",
           "    uint32_t layer; /* the layer whose output it holds */",
           "    uint32_t addr;",
           "    uint32_t bytes;",
           "} convcore_image_buffer;", ""]
    inputs = _inputs(img)
    out += [f"/* The network's input: {len(inputs)} buffer(s) in the engine's input words "
            f"(sim.engine_driver.pack_input: HWC, channels padded to SIMD, rows to the "
            f"layer's pitch). */",
            f"#define CONVCORE_IMAGE_INPUTS {len(inputs)}u",
            "static const convcore_image_buffer convcore_image_inputs[CONVCORE_IMAGE_INPUTS] "
            "= {"]
    out += [f"    {{0u, {r.addr:#010x}u, {r.size}u}}," for r in inputs]
    out += ["};", ""]
    outputs = []
    out.append("/* Each layer's outputs, in the engine's output words (HWC, channels padded "
               "to PE; int32 lanes for raw output).")
    for index, layer in enumerate(ni.layers):
        bufs = _outputs(ni, index)
        fold = ni.folds.get(index)
        how = f"{len(bufs)} group(s) of {fold[0].samples} images folded into one map" \
            if fold is not None else f"{len(bufs)} buffer(s), one an image"
        out.append(f" * layer {index} '{layer.name}': output {tuple(layer.out_shape)} "
                   f"{'int32' if getattr(layer, 'raw', False) else layer.out_dtype}, {how}")
        outputs += [(index, a, s) for a, s in bufs]
    out[-1] += " */"
    out += [f"#define CONVCORE_IMAGE_OUTPUTS {len(outputs)}u",
            "static const convcore_image_buffer convcore_image_outputs[CONVCORE_IMAGE_OUTPUTS] "
            "= {"]
    out += [f"    {{{i}u, {a:#010x}u, {s}u}}," for i, a, s in outputs]
    out += ["};", "",
            "/* The queue's descriptors in the order they run (each links to the next). */",
            "static const uint32_t convcore_image_descriptors[CONVCORE_IMAGE_DESCRIPTORS] = {"]
    out += [f"    {e.desc:#010x}u, /* {e.layer.name} */" for e in img.entries]
    out += ["};", "",
            "/* The same descriptors each on its own (next 0): run them in this order, one "
            "queue each, for the same result. */",
            "static const uint32_t "
            "convcore_image_layer_descriptors[CONVCORE_IMAGE_DESCRIPTORS] = {"]
    out += [f"    {d:#010x}u," for d in exp.layer_descs]
    out += ["};", "", f"#endif /* {guard} */"]
    return "\n".join(out) + "\n"


def build(net, x, hw) -> Exported:
    """The network image of batch ``x`` with standalone copies of its descriptors, and the
    golden outputs of every layer. CliError (one line) for a layer the queue cannot hold."""
    from model.network import run_layer
    from rtl.dma_regs import DESCRIPTOR
    from sim.queue_image import QueueImageError, network_image

    try:
        ni = network_image(net.layers, x, hw)
        img = ni.image
        linked = img.descriptors()
        layer_descs = []
        for e in img.entries:
            alone = bytearray(linked[e.desc])
            alone[DESCRIPTOR.index("next") * 4:DESCRIPTOR.index("next") * 4 + 4] = bytes(4)
            layer_descs.append(img.put(bytes(alone)))
    except QueueImageError as exc:
        raise CliError(str(exc)) from None
    golden = []
    y = x
    for layer in net.layers:
        y = run_layer(layer, y)
        golden.append(y)
    memory = img.image()
    end = max(a + len(b) for a, b in memory.items())
    return Exported(ni, layer_descs, memory, x, golden, end)


def export(model, out_dir, *, hw_config=None, images=None, input_path=None) -> Exported:
    """Write the folder of the module docstring for ``model`` (an ONNX path) into ``out_dir``."""
    from sim.memory_image import write_memh
    from sim.runner import write_if_changed
    from sim.onnx_import import load_network

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out '{out}' is a file, not a folder")
    net = load_network(model)
    hw = dma_hw(resolve_dma_config(hw_config))
    x = load_images(net, images, input_path)
    exp = build(net, x, hw)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot make the folder '{out}': {exc.strerror}") from None
    bus = hw["bus_width"] // 8
    write_memh(exp.memory, out / MEMORY_FILE, data_width=hw["bus_width"],
               size=-(-exp.memory_bytes // bus) * bus)
    # unchanged files keep their time stamp: a harness built on them is not recompiled
    write_if_changed(out / IMAGE_HEADER, image_header(exp, Path(model).name,
                                                      hw_config or DEFAULT_CONFIG))
    np.save(out / EXPECTED_FILE, exp.golden[-1])
    np.save(out / INPUT_FILE, x)
    write_headers(out)
    return exp


def build_harness(export_dir, hw_config=None, ram_addr_width=RAM_ADDR_WIDTH) -> Path:
    """Build the Verilator harness for the image exported into ``export_dir`` (its
    ``convcore_image.h`` and headers compiled in) on the DMA engine of ``hw_config``; returns
    the executable. One build folder per configuration and export folder under
    ``build/c_driver/``, so a second build only recompiles what changed. CliError (one line)
    when a source is missing or the build fails."""
    from rtl.dma_engine import DmaEngine
    from sim.runner import config_key, emit_verilog

    export_dir = Path(export_dir).resolve()
    if not (export_dir / IMAGE_HEADER).is_file():
        raise CliError(f"'{export_dir}' holds no {IMAGE_HEADER}: run 'convcore export' into it "
                       f"first")
    missing = [str(p) for p in HARNESS_SOURCES if not p.is_file()]
    if missing:
        raise CliError(f"the harness needs {', '.join(missing)}")
    params = resolve_dma_config(hw_config)
    hw = dma_hw(params)
    key = config_key("dma_engine", dict(params, bus_width=hw["bus_width"]))
    engine = DmaEngine(**params)
    verilog = emit_verilog(engine, toplevel="convcore_dma", key=key)
    where = hashlib.sha1(str(export_dir).encode()).hexdigest()[:8]
    folder = toolchain.BUILD / "c_driver" / f"harness-{key}-{ram_addr_width}-{where}"
    folder.mkdir(parents=True, exist_ok=True)
    toolchain.activate("verilator")
    cflags = (f"-I{DRIVER_DIR} -I{export_dir} -DCONVCORE_RAM_ADDR_WIDTH={ram_addr_width}")
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", str(os.cpu_count() or 1),
           "--top-module", "soc_top", "--Mdir", str(folder), "-o", "harness", "--no-timing",
           *toolchain.build_args("verilator"),
           f"-GDATA_WIDTH={hw['bus_width']}", f"-GRAM_ADDR_WIDTH={ram_addr_width}",
           "-CFLAGS", cflags, *map(str, HARNESS_SOURCES[:2]), str(verilog),
           str(HARNESS_SOURCES[2]), str(DRIVER_DIR / "convcore.c")]
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).splitlines()
        errors = [line for line in lines if ": error:" in line or "%Error" in line] \
            or lines[-1:]
        raise CliError(f"the harness build failed ({folder}): "
                       f"{errors[0].strip() if errors else proc.returncode}")
    return folder / "harness"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.export",
                                     description="Write the C driver's generated headers, or "
                                                 "build the Verilator harness for an export.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--headers", type=Path, metavar="DIR",
                      help="write " + ", ".join(HEADER_FILES) + " into DIR")
    what.add_argument("--harness", type=Path, metavar="DIR",
                      help="build tb/c/harness.cpp for the image `convcore export` wrote into "
                           "DIR; prints the executable's path")
    parser.add_argument("--hw-config", metavar="NAME|JSON",
                        help=f"--harness: the DMA engine (default {DEFAULT_CONFIG})")
    args = parser.parse_args(argv)
    try:
        if args.headers is not None:
            paths = write_headers(args.headers)
            print("wrote " + ", ".join(str(p) for p in paths))
        else:
            print(build_harness(args.harness, args.hw_config))
    except OSError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2
    except (CliError, toolchain.ToolchainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
