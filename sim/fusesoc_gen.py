#!/usr/bin/env python3
"""FuseSoC generator of the conv engine (``convcore.core``, generator ``convcore_gen``).

FuseSoC runs ``python3 sim/fusesoc_gen.py INPUT.yml`` in a work folder of its own; INPUT.yml
holds ``files_root``, ``gapi``, ``vlnv`` and the ``parameters`` of the core's ``generate:``
entry:

``config`` (default ``"default"``)
    An engine configuration of :mod:`sim.configs` (``default``, ``ice40``, ``large``).
``testbench`` (default false)
    Also write the vectors of ``tb/hdl/tb_engine.v`` (:func:`vectors`): a 3x3 conv over 3
    channels with bias, per-channel requantization and ReLU (and a fused 2x2 max-pool when the
    configuration has a max-pool unit) on seeded random weights and input, its register
    writes, parameter and input streams, and the expected output words from the golden model.
``seed`` (default 1)
    Seed of the testbench layer's weights and input.
``harness`` (default none)
    ``ecp5`` or ``ice40``: also write the synthesis harness of :func:`sim.synth.harness_verilog`
    (top ``convcore_synth_harness``, four pins), for the synthesis targets.

It writes the engine's Verilog with :func:`sim.verilog_export.export_config` (``convcore.v``,
``lint_waivers.vlt``, the description) and the ``.core`` file FuseSoC reads back: fileset
``rtl`` (the Verilog), ``waivers`` (the Verilator waivers, for Verilator only), ``vectors``
and ``harness`` when asked. A bad parameter ends with one line on stderr and exit status 1.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:           # FuseSoC runs the script from its own work folder
    sys.path.insert(0, str(ROOT))

__all__ = ["GeneratorError", "Vectors", "PARAMETERS", "engine_configs", "vectors", "output_words",
           "testbench_layer", "write_vectors", "generate", "main"]

#: Parameters the generator takes, with their defaults.
PARAMETERS = {"config": "default", "testbench": False, "seed": 1, "harness": None}
#: The component class of the configurations this core packages.
ENGINE_CLASS = ("rtl.engine", "ConvEngine")
#: The engine behind its DMA front end (rtl.dma_engine): exported as it is, no testbench
#: vectors or synthesis harness (those drive the engine's streams).
DMA_CLASS = ("rtl.dma_engine", "DmaEngine")
#: The testbench layer: input channels, output channels, height, width, kernel.
TB_CIN, TB_COUT, TB_H, TB_W, TB_K = 3, 4, 8, 8, 3
#: Watchdog of the testbench: cycles allowed per MAC, plus a base for loading and configuration.
WATCHDOG_CYCLES_PER_MAC = 4
WATCHDOG_BASE_CYCLES = 20000
#: Files of the testbench vectors (read with $readmemh from the simulator's work folder).
VECTOR_FILES = {"regs": "tb_engine_regs.hex", "param": "tb_engine_param.hex",
                "input": "tb_engine_input.hex", "expected": "tb_engine_expected.hex"}
PARAMS_HEADER = "tb_engine_params.vh"
HARNESS_FILE = "convcore_synth_harness.v"


class GeneratorError(ValueError):
    """A parameter the generator cannot use; one-line message."""


@dataclass
class Vectors:
    """What ``tb/hdl/tb_engine.v`` replays and expects, as integers.

    Members
    -------
    layer : model.network.ConvLayer
    x, y : numpy arrays
        The CHW input and the golden model's CHW output.
    regs : list of (address, word)
        AXI4-Lite writes, in order; the last one pulses ``CTRL.start``.
    param, input : list of (data, last)
        Beats of the parameter stream (weight then channel-constant packet, ``tlast`` at the
        end of each) and of the input stream.
    expected : list of (data, keep, last)
        The output words; ``data`` holds only the kept bytes (the others 0).
    widths : dict
        Port widths of the engine (``param``, ``input``, ``output``, ``keep``, ``acc``,
        ``axil_addr``, ``axil_data``), read from its exported ports.
    macs : int
        Multiply-accumulates of the layer (for the watchdog).
    """
    layer: object
    x: object
    y: object
    regs: list
    param: list
    input: list
    expected: list
    widths: dict
    macs: int


def _fail(message):
    raise GeneratorError(message)


def engine_configs() -> list[str]:
    """Names of the configurations of :mod:`sim.configs` that build the engine."""
    from sim.configs import CONFIGS

    return [n for n, c in CONFIGS.items() if (c.module, c.cls) == ENGINE_CLASS]


def _engine_config(name, dma_ok=False):
    from sim.configs import CONFIGS

    cfg = CONFIGS.get(name)
    if cfg is None:
        _fail(f"unknown configuration {name!r}; engine configurations: "
              f"{', '.join(engine_configs())}")
    if dma_ok and (cfg.module, cfg.cls) == DMA_CLASS:
        return cfg
    if (cfg.module, cfg.cls) != ENGINE_CLASS:
        _fail(f"configuration {name!r} is a {cfg.module}.{cfg.cls}, not the engine; "
              f"engine configurations: {', '.join(engine_configs())}")
    return cfg


def testbench_layer(hw: dict, seed: int):
    """The testbench's ConvLayer for the engine parameters ``hw`` and its CHW input: seeded
    random int8 weights and input, bias, per-channel requantization to int8 with ReLU, pads 1,
    and a fused 2x2 stride-2 max-pool when ``hw`` has a max-pool unit."""
    import numpy as np

    from model.conv import conv2d
    from model.network import ConvLayer, MaxPool
    from model.quant import quantize_multiplier
    from sim.engine_driver import output_shape

    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (TB_CIN, TB_H, TB_W)).astype(np.int8)
    w = rng.integers(-128, 128, (TB_COUT, TB_CIN, TB_K, TB_K)).astype(np.int8)
    bias = rng.integers(-(1 << 12), 1 << 12, TB_COUT).astype(np.int32)
    x_zp, pads = 3, (1, 1, 1, 1)
    acc = conv2d(x, w, bias, 1, pads, 1, x_zp, 0)
    spread = np.maximum(acc.reshape(TB_COUT, -1).std(axis=1), 1.0)
    multiplier, shift = quantize_multiplier(rng.uniform(30, 90, TB_COUT) / spread)
    layer = ConvLayer(name="tb_engine", nodes=("tb_engine",), in_shape=(TB_CIN, TB_H, TB_W),
                      out_shape=(TB_COUT, TB_H, TB_W), in_dtype="int8", weight=w, bias=bias,
                      pads=pads, x_zero_point=x_zp, w_zero_point=np.zeros(TB_COUT, np.int32),
                      multiplier=multiplier, shift=shift, y_zero_point=-5, out_dtype="int8",
                      relu=True,
                      pool=MaxPool((2, 2), (2, 2)) if hw["pool_window_slots"] else None)
    layer.out_shape = output_shape(layer)
    return layer, x


def output_words(y, pe: int, out_bytes: int):
    """The engine's output words of a requantized CHW map ``y`` (rtl.engine, ``m_axis``):
    per output pixel in raster order ``ceil(C / PE)`` words, lane ``p`` in byte ``p``, tkeep
    on the bytes of real channels; ``(data, keep, last)`` with the other bytes 0."""
    import numpy as np

    c, h, w = y.shape
    raw = np.asarray(y).view(np.uint8)
    words = []
    for row in range(h):
        for col in range(w):
            for base in range(0, c, pe):
                lanes = min(pe, c - base)
                data = int.from_bytes(bytes(raw[base:base + lanes, row, col])
                                      + bytes(out_bytes - lanes), "little")
                words.append([data, (1 << lanes) - 1, 0])
    words[-1][2] = 1
    return [tuple(w) for w in words]


def _beats(data: bytes, width_bits: int):
    size = width_bits // 8
    if len(data) % size:
        raise ValueError(f"{len(data)} bytes are not whole {size}-byte words")
    words = [int.from_bytes(data[i:i + size], "little") for i in range(0, len(data), size)]
    return [(word, int(i == len(words) - 1)) for i, word in enumerate(words)]


def vectors(config: str = "default", seed: int = 1, ports=None) -> Vectors:
    """The testbench vectors of engine configuration ``config`` (see :class:`Vectors`);
    ``ports``: the exported ports (:func:`sim.verilog_export.ports`) to read the widths from,
    else they are exported here."""
    from model.network import layer_macs, run_layer
    from rtl.engine_regs import REGMAP
    from rtl.limits import engine_params
    from rtl.regmap import RegisterDriver
    from sim.engine_driver import (engine_fits, layer_fields, pack_channels, pack_input,
                                   pack_weights, param_bytes, row_pitch)

    cfg = _engine_config(config)
    hw = engine_params(**cfg.params)
    layer, x = testbench_layer(hw, seed)
    refused = engine_fits(layer, hw)
    if refused is not None:
        _fail(f"configuration {config!r} refuses the testbench layer: {refused}")
    if ports is None:
        from amaranth.back import verilog

        from sim.verilog_export import ports as read_ports
        ports = read_ports(verilog.convert(cfg.build(), name=cfg.toplevel, emit_src=False),
                           cfg.toplevel)
    width = {p.name: p.width for p in ports}
    widths = {"param": width["s_axis_param_tdata"], "input": width["s_axis_tdata"],
              "output": width["m_axis_tdata"], "keep": width["m_axis_tkeep"],
              "acc": width["s_axis_acc_tdata"], "axil_addr": width["s_axil_awaddr"],
              "axil_data": width["s_axil_wdata"]}
    pe, simd, packing = hw["pe"], hw["simd"], hw["packing"]
    pitch = row_pitch(layer, simd, packing)

    regs = []
    driver = RegisterDriver(REGMAP, write=lambda addr, word: regs.append((addr, word)),
                            read=lambda addr: 0)
    for reg, fields in layer_fields(layer, False, simd, packing).items():
        driver.write_fields(reg, **fields)
    driver.write_fields("WEIGHT_BASE", weight_base=0)
    driver.write_fields("CHAN_BASE", chan_base=0)
    driver.pulse("start")

    param = []
    for packet in (pack_weights(layer, pe, simd, hw["param_width"], 0, pitch is not None),
                   pack_channels(layer, pe, hw["param_width"], 0)):
        param += _beats(param_bytes(packet, hw["param_width"]), widths["param"])
    y = run_layer(layer, x[None])[0]
    return Vectors(layer=layer, x=x, y=y, regs=regs, param=param,
                   input=_beats(pack_input(x, simd, pitch), widths["input"]),
                   expected=output_words(y, pe, widths["output"] // 8), widths=widths,
                   macs=int(layer_macs(layer)))


def _hex_lines(values, width_bits):
    digits = -(-width_bits // 4)
    return "".join(f"{v:0{digits}x}\n" for v in values)


def write_vectors(v: Vectors, folder: Path, config: str, seed: int) -> list[str]:
    """The $readmemh files and ``tb_engine_params.vh`` of ``v`` in ``folder``; their names."""
    from rtl.engine_regs import REGMAP

    wd = v.widths
    status = REGMAP["STATUS"]
    files = {
        "regs": _hex_lines(((a << wd["axil_data"]) | d for a, d in v.regs),
                           wd["axil_addr"] + wd["axil_data"]),
        "param": _hex_lines(((last << wd["param"]) | d for d, last in v.param), wd["param"] + 1),
        "input": _hex_lines(((last << wd["input"]) | d for d, last in v.input), wd["input"] + 1),
        "expected": _hex_lines(((last << (wd["keep"] + wd["output"])) | (keep << wd["output"]) | d
                                for d, keep, last in v.expected),
                               1 + wd["keep"] + wd["output"]),
    }
    for kind, text in files.items():
        (folder / VECTOR_FILES[kind]).write_text(text)
    layer = v.layer
    pool = " then a 2x2 stride-2 max-pool" if layer.pool is not None else ""
    define = [
        f"// Generated by sim/fusesoc_gen.py: configuration '{config}', seed {seed}.",
        f"// Layer: {TB_K}x{TB_K} conv, {layer.in_shape} int8 -> {layer.weight.shape[0]} "
        f"channels, pads 1, bias, requantized to int8 with ReLU{pool}; output {layer.out_shape}.",
        f'localparam CONFIG = "{config}";',
        *(f"localparam {name} = {value};" for name, value in (
            ("AXIL_ADDR_W", wd["axil_addr"]), ("AXIL_DATA_W", wd["axil_data"]),
            ("PARAM_W", wd["param"]), ("IN_W", wd["input"]), ("OUT_W", wd["output"]),
            ("KEEP_W", wd["keep"]), ("ACC_W", wd["acc"]),
            ("N_REGS", len(v.regs)), ("N_PARAM", len(v.param)), ("N_INPUT", len(v.input)),
            ("N_OUTPUT", len(v.expected)),
            ("STATUS_ADDR", status.word_offsets[0]),
            ("STATUS_BUSY", status["busy"].lsb), ("STATUS_RUNNING", status["running"].lsb),
            ("STATUS_DONE", status["done"].lsb), ("STATUS_TLAST_ERROR", status["tlast_error"].lsb),
            ("STATUS_LOAD_ERROR", status["load_error"].lsb),
            ("STATUS_ERROR_LSB", status["error"].lsb), ("STATUS_ERROR_W", status["error"].width),
            ("TIMEOUT_CYCLES", WATCHDOG_BASE_CYCLES + WATCHDOG_CYCLES_PER_MAC * v.macs))),
        *(f'localparam FILE_{kind.upper()} = "{name}";' for kind, name in VECTOR_FILES.items()),
    ]
    (folder / PARAMS_HEADER).write_text("\n".join(define) + "\n")
    return [*VECTOR_FILES.values(), PARAMS_HEADER]


def _parameters(given) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(PARAMETERS))
    if unknown:
        _fail(f"unknown parameter {unknown[0]!r}; the generator takes: {', '.join(PARAMETERS)}")
    params = {**PARAMETERS, **given}
    if not isinstance(params["config"], str):
        _fail(f"parameter 'config' must be a configuration name, not {params['config']!r}")
    if not isinstance(params["testbench"], bool):
        _fail(f"parameter 'testbench' must be true or false, not {params['testbench']!r}")
    if not isinstance(params["seed"], int) or isinstance(params["seed"], bool) \
            or params["seed"] < 0:
        _fail(f"parameter 'seed' must be a non-negative integer, not {params['seed']!r}")
    if params["harness"] not in (None, "ecp5", "ice40"):
        _fail(f"parameter 'harness' must be ecp5 or ice40, not {params['harness']!r}")
    return params


def generate(data: dict, folder: Path) -> Path:
    """Run the generator on FuseSoC's input ``data`` into ``folder``; the .core file written."""
    import yaml

    from sim import toolchain
    from sim.configs import ConfigError
    from sim.verilog_export import ExportError, export_config

    vlnv = data.get("vlnv")
    if not isinstance(vlnv, str) or vlnv.count(":") != 3:
        _fail(f"the generator input has no VLNV of four fields: {vlnv!r}")
    params = _parameters(data.get("parameters"))
    cfg = _engine_config(params["config"],
                         dma_ok=not params["testbench"] and not params["harness"])
    try:
        result = export_config(cfg.name, folder, run_lint=False)
    except (ConfigError, ExportError, toolchain.ToolchainError) as exc:
        _fail(str(exc))
    filesets = {
        "rtl": {"files": [result.verilog.name], "file_type": "verilogSource"},
        "waivers": {"files": [result.waivers.name], "file_type": "vlt"},
    }
    target = ["rtl", "tool_verilator ? (waivers)"]
    if params["testbench"]:
        v = vectors(cfg.name, params["seed"], result.ports)
        write_vectors(v, folder, cfg.name, params["seed"])
        filesets["vectors"] = {"files": [
            {PARAMS_HEADER: {"file_type": "verilogSource", "is_include_file": True}},
            *({name: {"file_type": "user", "copyto": name}} for name in VECTOR_FILES.values())]}
        target.append("vectors")
    if params["harness"]:
        from sim.synth import DEVICES, harness_verilog

        (folder / HARNESS_FILE).write_text(harness_verilog(
            cfg.toplevel, result.ports, DEVICES[params["harness"]].reset_buffer))
        filesets["harness"] = {"files": [HARNESS_FILE], "file_type": "verilogSource"}
        target.append("harness")
    core = {"name": vlnv,
            "description": f"convcore engine, configuration {cfg.name!r}: {cfg.summary}",
            "filesets": filesets, "targets": {"default": {"filesets": target}}}
    path = folder / (vlnv.split(":")[2] + ".core")
    path.write_text("CAPI=2:\n" + yaml.safe_dump(core, sort_keys=False))
    # FuseSoC reads the generated core from here; its library scan (--cores-root) must not
    # find it as a second core of the same name when the build root is inside a cores root.
    (folder / "FUSESOC_IGNORE").write_text("")
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "fusesoc_gen.py"
    if len(argv) != 1:
        print(f"{prog}: error: usage: {prog} GENERATOR_INPUT.yml (FuseSoC runs it)",
              file=sys.stderr)
        return 2
    try:
        import yaml
        import amaranth  # noqa: F401  (the project's virtualenv)
    except ImportError as exc:
        print(f"{prog}: error: {sys.executable} cannot import {exc.name}: run FuseSoC with the "
              f"project's virtualenv first on PATH (. .venv/bin/activate)", file=sys.stderr)
        return 1
    try:
        data = yaml.safe_load(Path(argv[0]).read_text())
        if not isinstance(data, dict):
            _fail(f"{argv[0]} is not a FuseSoC generator input (a YAML mapping)")
        generate(data, Path.cwd())
    except (OSError, yaml.YAMLError) as exc:
        print(f"{prog}: error: cannot read {argv[0]}: {str(exc).splitlines()[0]}",
              file=sys.stderr)
        return 1
    except GeneratorError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
