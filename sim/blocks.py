"""Blocks of the conv engine on their own, sized as in an engine, for quick synthesis runs.

``make synth-blocks`` (:func:`sim.synth.run_blocks`) places and routes each block with
registered inputs and outputs (the measurement harness of :mod:`sim.synth`), so a change's
Fmax is known in minutes instead of the hour a whole engine takes. The MAC array, the
requantizer, the max-pool unit and the parameter memories are components with plain
parameters (:mod:`sim.configs`); the line buffer and the window generator are joined here as
:class:`rtl.engine.ConvEngine` joins them, since the generator reads the buffer's ``written``
count and drives its read addresses.
"""

from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.engine import ConvEngine
from rtl.linebuffer import LineBuffer, WindowGenerator
from rtl.streams import DATA_WIDTH, payload_layout

__all__ = ["WindowBlock"]


class WindowBlock(wiring.Component):
    """The line buffer and the window generator of ``ConvEngine(**params)``: input words in,
    per operation the banks' bytes (two cycles after the addresses, registered block RAM
    outputs), the lane mask and rotation, the weight address and the group flags out.

    Members
    -------
    s : ``In(stream.Signature(payload_layout(8 * simd)))``
    geometry : ``In(geometry_layout(...))``; start, enable, restart, credit : ``In(1)``
    total : ``In(count_width)``
    read_data : ``Out(data.ArrayLayout(8, simd))``
    valid, first, last, final, waiting, busy, tlast_error : ``Out(1)``
    mask : ``Out(simd)``; rot : ``Out(range(simd))``
    weight_addr : ``Out(range(weight_depth))``; og : ``Out(range(cout_groups))``
    """

    def __init__(self, **params):
        engine = ConvEngine(**params)
        engine._MustUse__silence = True         # built only for its derived sizes
        self.params = engine.params
        self.simd = simd = engine.simd
        self.depth = engine.line_buffer_depth
        self.count_width = engine.index_width - 1
        self.index_width = engine.index_width
        self.weight_depth = engine.weight_depth
        self.cout_groups = engine.cout_groups
        self.packing = engine.packing
        self.bram = engine.bram
        self.layout = engine.geometry_layout()
        super().__init__({
            "s": In(stream.Signature(payload_layout(DATA_WIDTH * simd))),
            "geometry": In(self.layout), "start": In(1), "enable": In(1), "restart": In(1),
            "credit": In(1), "total": In(self.count_width),
            "read_data": Out(data.ArrayLayout(DATA_WIDTH, simd)),
            "valid": Out(1), "first": Out(1), "last": Out(1), "final": Out(1),
            "waiting": Out(1), "busy": Out(1), "tlast_error": Out(1),
            "mask": Out(simd), "rot": Out(range(simd)),
            "weight_addr": Out(range(self.weight_depth)), "og": Out(range(self.cout_groups)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.lb = lb = LineBuffer(simd=self.simd, depth=self.depth,
                                          count_width=self.count_width, read_register=True,
                                          bram=self.bram)
        m.submodules.gen = gen = WindowGenerator(
            geometry=self.layout, index_width=self.index_width, simd=self.simd,
            depth=self.depth, weight_depth=self.weight_depth, channel_groups=self.cout_groups,
            packing=self.packing)
        wiring.connect(m, wiring.flipped(self.s), lb.s)
        m.d.comb += [
            gen.geometry.eq(self.geometry), gen.start.eq(self.start),
            gen.credit.eq(self.credit), gen.written.eq(lb.written),
            lb.enable.eq(self.enable), lb.restart.eq(self.restart), lb.total.eq(self.total),
            lb.protect.eq(gen.protect), lb.protect_off.eq(~gen.busy),
            lb.read_addr.eq(gen.rows),
            self.read_data.eq(lb.read_data), self.tlast_error.eq(lb.tlast_error),
        ]
        for name in ("valid", "first", "last", "final", "waiting", "busy", "mask", "rot",
                     "weight_addr", "og"):
            m.d.comb += getattr(self, name).eq(getattr(gen, name))
        return m
