"""Named hardware configurations: what ``make verilog`` and ``make synth`` build.

A :class:`Config` names a component class (imported lazily, so this registry loads even while
a part of the RTL is still being written), its constructor arguments, the Verilog module name,
and what the synthesis report needs to know (MACs per cycle, target frequency per device).
Adding a configuration, or pointing one at a new component, is one entry in :data:`CONFIGS`.

>>> from sim.configs import get
>>> component = get("requantize").build()
"""

import importlib
import json
import inspect
from dataclasses import dataclass, field

from rtl.limits import ENGINE_DEFAULTS, engine_params, engine_pool_params

__all__ = ["Config", "ConfigError", "CONFIGS", "get", "names", "register", "json_params"]


class ConfigError(ValueError):
    """A configuration is unknown or cannot be built; the message is one line."""


#: Engine parameters of the default configuration: the engine's own defaults
#: (:data:`rtl.limits.ENGINE_DEFAULTS`, which cover every layer of the lecture's examples and of
#: the ConvNetJS CIFAR-10 net: kernels up to 7x7, widths up to 224, up to 64 channels).
ENGINE_DEFAULT = {}
#: The small configuration for an iCE40 UP5K (8 SB_MAC16, 30 4-kbit block RAMs, 5,280 logic
#: cells): a 1 x 4 MAC array (PE 1, SIMD 4: 4 DSPs, one MAC each; one output channel per group,
#: so that one requantize unit keeps up as well as with 2 x 2 and the output path is one lane
#: wide), one requantize unit multiplying on a single DSP and shifting by radix-4 digits over
#: several cycles, the setup multiplier; weights, line buffer and channel memories in all 30
#: block RAMs. Sized for the digits CNN (its 16 -> 32 3x3 layer needs all 1152 weight words of 4
#: bytes), 32x32 maps with up to 32 channels and the lecture's small layers (5x5 kernels,
#: strides 1 and 2). No max-pool unit
#: (``pool_window_slots`` 0: the engine refuses pools with POOL_NO_UNIT and the hardware
#: backends run them on the golden model). To fit the logic cells: configuration registers
#: kept in the bits their maxima need (``narrow_registers``), parameter memories without
#: read-during-write emulation (``no_rw_check``), a 2-group accumulator FIFO and 24-bit
#: counters (a layer within these limits takes at most 6.6 M MAC cycles), a window generator
#: without packing (the plain format only), one configuration set (no queued starts) and the
#: weight memory in 2-bit slices (``weight_slice_bits``: 16 block RAMs of 2048 x 2, no
#: multiplexer after them; all 30 block RAMs are used).
ENGINE_ICE40 = {"pe": 1, "simd": 4, "max_kernel": 5, "max_width": 32, "max_height": 32,
                "max_channels": 32, "weight_depth": 1152, "line_buffer_depth": 1024,
                "max_stride": 2, "max_dilation": 2, "pool_max_stride": 2,
                "pool_window_slots": 0, "requant_lanes": 1, "requant_iterative": True,
                "fifo_depth": 2, "counter_width": 24, "narrow_registers": True,
                "no_rw_check": True, "packing": False, "queued_starts": False,
                "weight_slice_bits": 2}

#: The large configuration that fills an ECP5 LFE5U-85F: 128 MACs as SIMD 16 x PE 8 (16-byte
#: input words, 8 output channels per group: channel counts such as 20 leave fewer PE rows
#: idle than with PE 16), one MULT18X18D per MAC. The 156 DSPs leave 28 for requantization:
#: the default four requantize units (16 DSPs, :data:`rtl.limits.DEFAULT_REQUANT_SHARING`)
#: shared by the eight PE lanes, a group of outputs taking two cycles there, hidden behind
#: any window of two or more MAC operations (every layer with more than 16 products per
#: output). The other limits are the default's. The
#: line buffer keeps the default's bits (16-byte words, half the rows); the weight memory holds
#: the default 1024 words (:data:`rtl.limits.DEFAULT_WEIGHT_DEPTH`), here of 128 bytes: 57
#: DP16KD in their 1024 x 18 shape (a 7x7 64-channel layer needs 196 words per group of 8
#: outputs: 5 groups a pass, the layer compiler splits the rest), so that block RAM stays
#: under 90% of the LFE5U-85F's 208.
ENGINE_LARGE = {"pe": 8, "simd": 16}
#: What the engine configurations instantiate when synthesized for ECP5: MULT18X18D with their
#: registers for the MAC array and the requantizers, DP16KD with their output registers for
#: the large memories.
ECP5_PRIMITIVES = {"dsp": "ecp5", "bram": "ecp5"}


def _macs(params: dict) -> int | None:
    pe, simd = params.get("pe"), params.get("simd")
    return pe * simd if isinstance(pe, int) and isinstance(simd, int) else None


@dataclass(frozen=True)
class Config:
    """One named hardware configuration.

    Parameters
    ----------
    name : str
        Registry key and build folder name (``build/verilog/NAME``, ``build/synth/NAME-DEVICE``).
    summary : str
        One line for ``--list`` and the generated Markdown.
    module, cls : str
        Where the component class lives (``"rtl.engine"``, ``"ConvEngine"``); imported only
        when :meth:`build` runs.
    params : dict
        Constructor keyword arguments (the rest keep the class's defaults).
    toplevel : str
        Verilog module name of the exported top level.
    targets_mhz : dict
        Target clock frequency per device name (``"ecp5"``, ``"ice40"``) for ``make synth``.
    macs_per_cycle : int or None
        Multiply-accumulates per clock (PE x SIMD for the engine); None for units without a
        MAC array. Used for "MACs per DSP" and peak GOPS in the synthesis report.
    device_params : dict
        Constructor arguments over :attr:`params` for synthesis on one device, by device name:
        vendor primitives (``{"ecp5": {"dsp": "ecp5"}}``) that the vendor-free Verilog of
        ``make verilog``, lint and simulation must not contain.
    """

    name: str
    summary: str
    module: str
    cls: str
    params: dict = field(default_factory=dict)
    toplevel: str = "convcore"
    targets_mhz: dict = field(default_factory=lambda: {"ecp5": 150.0, "ice40": 40.0})
    macs_per_cycle: int | None = None
    device_params: dict = field(default_factory=dict)

    def component_class(self):
        """The component class; :class:`ConfigError` (one line) when its module is missing."""
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name and (self.module == exc.name or self.module.startswith(exc.name + ".")):
                raise ConfigError(f"configuration {self.name!r} needs {self.module}.{self.cls}, "
                                  f"but module {self.module} does not exist yet") from None
            raise
        try:
            return getattr(module, self.cls)
        except AttributeError:
            raise ConfigError(f"configuration {self.name!r} needs {self.module}.{self.cls}, "
                              f"but {self.module} has no {self.cls}") from None

    def macs(self, component=None) -> int | None:
        """MACs per cycle: ``pe * simd`` read from ``component`` if it has both, else
        :attr:`macs_per_cycle`."""
        if component is not None:
            found = _macs({k: getattr(component, k, None) for k in ("pe", "simd")})
            if found is not None:
                return found
        return self.macs_per_cycle

    def build(self, device=None):
        """Construct the component with :attr:`params` (and, for synthesis on ``device``, its
        :attr:`device_params`)."""
        cls = self.component_class()
        params = {**self.params, **self.device_params.get(device, {})}
        accepted = inspect.signature(cls).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        unknown = [k for k in params if k not in accepted and not takes_any]
        if unknown:
            raise ConfigError(f"configuration {self.name!r}: {self.module}.{self.cls} has no "
                              f"parameter {unknown[0]!r} (it takes: {', '.join(accepted)})")
        try:
            return cls(**params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"configuration {self.name!r}: {self.cls}("
                              f"{_kwargs(params)}) refused: {exc}") from None

    def resolved_params(self, component=None) -> dict:
        """Every constructor parameter with its value: :attr:`params` over the class defaults,
        read back from ``component`` where it keeps an attribute of the same name."""
        cls = self.component_class()
        out = {}
        for name, p in inspect.signature(cls).parameters.items():
            if p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
                continue
            value = self.params.get(name, None if p.default is inspect.Parameter.empty
                                    else p.default)
            if component is not None and _plain(getattr(component, name, None)):
                value = getattr(component, name)
            elif component is not None and isinstance(getattr(component, "config", None), dict):
                value = component.config.get(name, value)
            out[name] = value
        for name, value in self.params.items():
            out.setdefault(name, value)
        # A class that takes its parameters as keywords (ConvEngine) keeps them all, defaults
        # filled in, in a `params` dict.
        found = getattr(component, "params", None) if component is not None else None
        if isinstance(found, dict):
            for name, value in found.items():
                if _plain(value):
                    out.setdefault(name, value)
        return out


def _plain(value) -> bool:
    return isinstance(value, (int, float, str, bool)) and value is not None


def _kwargs(params: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _engine(name, summary, params, targets, device_params=None):
    return Config(name=name, summary=summary, module="rtl.engine", cls="ConvEngine",
                  params=params, toplevel="convcore", targets_mhz=targets,
                  macs_per_cycle=_macs({**ENGINE_DEFAULTS, **params}),
                  device_params=device_params or {})


#: Every named configuration.
CONFIGS: dict[str, Config] = {}


def register(config: Config) -> Config:
    """Add ``config`` to :data:`CONFIGS` (a name may be registered once)."""
    if not isinstance(config, Config):
        raise TypeError(f"register() takes a Config, not {config!r}")
    if config.name in CONFIGS:
        raise ConfigError(f"configuration {config.name!r} is already registered")
    CONFIGS[config.name] = config
    return config


register(_engine("default", "conv engine, default configuration (ECP5 LFE5U-85F class devices; "
                            "on ECP5 the MAC products are registered inside the MULT18X18D, "
                            "the block RAM reads in the DP16KD output registers)",
                 ENGINE_DEFAULT, {"ecp5": 150.0, "ice40": 40.0},
                 device_params={"ecp5": ECP5_PRIMITIVES}))
register(_engine("ice40", "conv engine, small configuration for an iCE40 UP5K (8 DSPs at most)",
                 ENGINE_ICE40, {"ecp5": 150.0, "ice40": 40.0}))
register(_engine("large", "conv engine, 128 MACs (SIMD 16 x PE 8) for an ECP5 LFE5U-85F; "
                          "on ECP5 the MAC products are registered inside the MULT18X18D, the block RAM reads in "
                          "the DP16KD output registers",
                 ENGINE_LARGE, {"ecp5": 150.0, "ice40": 40.0},
                 device_params={"ecp5": ECP5_PRIMITIVES}))
register(Config(
    name="dma", summary="the default engine behind its DMA front end and layer queue "
                        "(AXI4 manager to memory, 64-bit; AXI4-Lite registers; irq)",
    module="rtl.dma_engine", cls="DmaEngine", params={"bus_width": 64},
    toplevel="convcore_dma", macs_per_cycle=_macs(ENGINE_DEFAULTS)))
register(Config(
    name="requantize", summary="requantize unit (int32 -> int8/uint8) with AXI-Stream ports",
    module="rtl.requantize", cls="RequantizeAxis", toplevel="convcore_requantize",
    params={"acc_width": 32, "mult_width": 31, "shift_width": 6, "out_width": 8},
    device_params={"ecp5": {"dsp": "ecp5"}}))
register(Config(
    name="mac-default", summary="PE x SIMD MAC array alone, PE and SIMD of 'default' "
                                "(on ECP5: products registered inside the MULT18X18D)",
    module="rtl.mac_array", cls="MacArray",
    params={"pe": ENGINE_DEFAULTS["pe"], "simd": ENGINE_DEFAULTS["simd"]},
    device_params={"ecp5": {"dsp": "ecp5"}},
    toplevel="convcore_mac_array", macs_per_cycle=_macs(ENGINE_DEFAULTS)))
register(Config(
    name="mac-ice40", summary="PE x SIMD MAC array alone, PE and SIMD of 'ice40'",
    module="rtl.mac_array", cls="MacArray",
    params={"pe": ENGINE_ICE40["pe"], "simd": ENGINE_ICE40["simd"]},
    toplevel="convcore_mac_array", macs_per_cycle=_macs(ENGINE_ICE40)))


# Blocks of the engine on their own, sized as in a configuration (``make synth-blocks``).
for _name, _params in (("default", ENGINE_DEFAULT), ("ice40", ENGINE_ICE40)):
    register(Config(
        name=f"window-{_name}",
        summary=f"line buffer and window generator of '{_name}' (sim.blocks.WindowBlock)",
        module="sim.blocks", cls="WindowBlock", params=dict(_params),
        device_params={"ecp5": {"bram": "ecp5"}}, toplevel="convcore_window"))
    _p = engine_params(**_params)
    register(Config(
        name=f"params-{_name}",
        summary=f"weight and channel-constant memories with their load port, of '{_name}'",
        module="rtl.weights", cls="ParamStore",
        params={k: _p[k] for k in ("pe", "simd", "weight_depth", "channel_depth",
                                   "param_width", "no_rw_check", "weight_slice_bits")}
        | {"read_register": True},
        device_params={"ecp5": {"bram": "ecp5"}} if not _p["no_rw_check"] else {},
        toplevel="convcore_params"))
    if _p["pool_window_slots"]:
        register(Config(
            name=f"maxpool-{_name}", summary=f"max-pool unit of '{_name}'",
            module="rtl.maxpool", cls="MaxPool", params=engine_pool_params(_p),
            device_params={"ecp5": {"bram": "ecp5"}}, toplevel="convcore_maxpool"))
del _name, _params, _p


def json_params(spec: str) -> dict | None:
    """The constructor arguments a command line's hardware configuration ``spec`` gives as a
    JSON object, or None when ``spec`` is not JSON (a configuration's name). ConfigError (one
    line) for JSON that is malformed or not an object."""
    spec = spec.strip()
    if not spec.startswith(("{", "[")):
        return None
    try:
        params = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"hardware configuration {spec!r} is not valid JSON "
                          f"({exc.msg})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"hardware configuration must be a JSON object, not {spec!r}")
    return params


def names() -> list[str]:
    return list(CONFIGS)


def get(name: str) -> Config:
    """The configuration called ``name``; :class:`ConfigError` lists the known ones."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigError(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}") from None
