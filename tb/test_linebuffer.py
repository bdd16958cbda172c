"""The line buffer and its window generator (rtl/linebuffer.py) on their own.

The window generator in Amaranth's simulator: the operations it issues, in order, against a
plain loop-nest reference, with free-running and with trickling input, and with and without
output credit; and that it never issues a tap before its word is written. The line buffer's
size formula and constructor checks (the buffer itself runs inside the engine, tb/test_engine.py).
"""

import random

import pytest
from amaranth.sim import Simulator

from rtl.linebuffer import (LineBuffer, WindowGenerator, geometry_layout, line_buffer_depth,
                            line_buffer_span)

COORD_WIDTH, INDEX_WIDTH, COUNT_WIDTH = 12, 24, 6


def geometry(*, height, width, cin_groups, cout_groups, kernel, stride, pad, dilation,
             last_lanes):
    """The geometry fields the engine derives for one layer (see ConvEngine._derive)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pl, pb, pr = pad
    keh, kew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    wc = width * cin_groups
    return dict(
        height=height, width=width, cin_groups=cin_groups, cout_groups=cout_groups, kh=kh,
        kw=kw, last_lanes=last_lanes, stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw,
        x_start=-pl, y_start=-pt, x_limit=width + pr - kew, y_limit=height + pb - keh,
        x_start_words=-pl * cin_groups, y_start_words=-pt * wc,
        dil_w_words=dw * cin_groups, dil_h_words=dh * wc,
        stride_w_words=sw * cin_groups, stride_h_words=sh * wc)


def reference(g, simd):
    """Every operation ``(index or None, first, last, final, lanes, weight_addr, og)``."""
    ops = []
    ys = range(g["y_start"], g["y_limit"] + 1, g["stride_h"])
    xs = range(g["x_start"], g["x_limit"] + 1, g["stride_w"])
    for by in ys:
        for bx in xs:
            waddr = 0
            for og in range(g["cout_groups"]):
                for ky in range(g["kh"]):
                    for kx in range(g["kw"]):
                        for ig in range(g["cin_groups"]):
                            iy, ix = by + ky * g["dil_h"], bx + kx * g["dil_w"]
                            inside = 0 <= iy < g["height"] and 0 <= ix < g["width"]
                            index = ((iy * g["width"] + ix) * g["cin_groups"] + ig
                                     if inside else None)
                            last_ig = ig == g["cin_groups"] - 1
                            ops.append((
                                index, ky == kx == ig == 0,
                                last_ig and kx == g["kw"] - 1 and ky == g["kh"] - 1,
                                og == g["cout_groups"] - 1 and by == ys[-1] and bx == xs[-1],
                                g["last_lanes"] if last_ig else simd, waddr, og))
                            waddr += 1
    return ops


def protect_bound(ops_left):
    """The smallest index the remaining operations read (the line buffer may drop less)."""
    read = [op[0] for op in ops_left if op[0] is not None]
    return min(read) if read else None


LAYERS = [
    dict(height=4, width=5, cin_groups=1, cout_groups=1, kernel=(1, 1), stride=(1, 1),
         pad=(0, 0, 0, 0), dilation=(1, 1), last_lanes=4),
    dict(height=5, width=6, cin_groups=2, cout_groups=3, kernel=(3, 3), stride=(1, 1),
         pad=(1, 1, 1, 1), dilation=(1, 1), last_lanes=3),
    dict(height=7, width=6, cin_groups=3, cout_groups=2, kernel=(3, 2), stride=(2, 3),
         pad=(2, 1, 0, 2), dilation=(2, 1), last_lanes=1),
    dict(height=3, width=3, cin_groups=1, cout_groups=2, kernel=(3, 3), stride=(1, 1),
         pad=(2, 2, 2, 2), dilation=(1, 1), last_lanes=4),
    dict(height=6, width=4, cin_groups=2, cout_groups=1, kernel=(2, 3), stride=(3, 1),
         pad=(0, 2, 1, 0), dilation=(1, 2), last_lanes=4),
]


@pytest.mark.parametrize("mode", ["free", "trickle", "credit"])
@pytest.mark.parametrize("layer", range(len(LAYERS)))
def test_window_generator_issues_the_loop_nest(layer, mode):
    simd = 4
    g = geometry(**LAYERS[layer])
    want = reference(g, simd)
    total = g["height"] * g["width"] * g["cin_groups"]
    layout = geometry_layout(coord_width=COORD_WIDTH, index_width=INDEX_WIDTH,
                             count_width=COUNT_WIDTH, simd=simd)
    dut = WindowGenerator(geometry=layout, index_width=INDEX_WIDTH, simd=simd,
                          weight_depth=1024, channel_groups=8)
    rng = random.Random(layer * 7 + len(mode))
    got = []

    async def bench(ctx):
        for name, value in g.items():
            ctx.set(getattr(dut.geometry, name), value)
        written = 0 if mode == "trickle" else total
        seen = written      # `written` a cycle earlier: a word is in the memory from then on
        ctx.set(dut.written, written)
        ctx.set(dut.credit, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(20 * len(want) + 100):
            credit = mode != "credit" or rng.random() < 0.5
            ctx.set(dut.credit, credit)
            if ctx.get(dut.valid):
                index = ctx.get(dut.index) if ctx.get(dut.in_image) else None
                assert index is None or index < seen, f"read of word {index} before it came"
                assert ctx.get(~dut.first | dut.credit)
                got.append((index, ctx.get(dut.first), ctx.get(dut.last), ctx.get(dut.final),
                            ctx.get(dut.lanes), ctx.get(dut.weight_addr), ctx.get(dut.og)))
            bound = protect_bound(want[len(got):])
            protect = ctx.get(dut.protect)
            assert bound is None or protect <= bound, \
                f"protect {protect} above word {bound} still to be read"
            if not ctx.get(dut.busy) and len(got) == len(want):
                break
            await ctx.tick()
            seen = written
            if mode == "trickle" and written < total and rng.random() < 0.4:
                written += 1
                ctx.set(dut.written, written)
        assert got == want

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_line_buffer_formula():
    # Keff_h - 1 rows plus Keff_w pixels, ceil(C / SIMD) words each.
    assert line_buffer_span(3, 3, 32, 16, 8) == (2 * 32 + 3) * 2
    assert line_buffer_span(3, 3, 32, 16, 8, dilation=(2, 2)) == (4 * 32 + 5) * 2
    assert line_buffer_depth(7, 224, 64, 8) == 16384          # (6*224 + 7) * 8 = 10808
    assert line_buffer_depth(7, 16, 16, 4) == 512              # (6*16 + 7) * 4 = 412


# Constructors that are expected to fail leave half-built elaboratables behind.
@pytest.mark.filterwarnings("ignore::amaranth.hdl._ir.UnusedElaboratable")
def test_line_buffer_rejects_bad_parameters():
    with pytest.raises(ValueError, match="depth must be a power of two of at least 2, not 12"):
        LineBuffer(simd=4, depth=12, count_width=8)
    with pytest.raises(ValueError, match="read_register must be a bool, not 1"):
        LineBuffer(simd=4, depth=16, count_width=8, read_register=1)
