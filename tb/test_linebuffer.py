"""The line buffer and its window generator (rtl/linebuffer.py) on their own.

The window generator in Amaranth's simulator: the operations it issues, in order, against a
reference that walks the positions of the reduction (plain and packed layers, every lane's
bank, row and mask), with free-running and with trickling input, and with and without output
credit; and that it never issues an operation before the words of its lanes are written. The line buffer's
size formula and constructor checks (the buffer itself runs inside the engine, tb/test_engine.py).
"""

import random

import pytest
from amaranth.sim import Simulator

from rtl.linebuffer import (LineBuffer, WindowGenerator, geometry_layout, line_buffer_depth,
                            line_buffer_span)

COORD_WIDTH, INDEX_WIDTH, COUNT_WIDTH = 12, 24, 6
DEPTH = 64


def geometry(*, height, width, cin, cout_groups, kernel, stride, pad, dilation, simd,
             packed):
    """The geometry fields the engine derives for one layer (see ConvEngine._derive), with the
    smallest legal row pitch when ``packed``; and the row pitch."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    pt, pl, pb, pr = pad
    keh, kew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    cp = cin if packed else -(-cin // simd) * simd
    if packed:
        pitch = next(p for p in range(width * cin, width * cin + simd)
                     if (dh * p - kw * cin) % simd == 0)
    else:
        pitch = width * cp
    return dict(
        height=height, width=width, cout_groups=cout_groups, kh=kh, kw=kw,
        ops=-(-kh * kw * cp // simd), in_channels=cin, pixel_bytes=cp,
        stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw, keff_w=kew,
        x_start=-pl, y_start=-pt, x_limit=width + pr - kew, y_limit=height + pb - keh,
        x_start_bytes=-pl * cp, y_start_bytes=-pt * pitch,
        stride_w_bytes=sw * cp, stride_h_bytes=sh * pitch,
        col_step=dw * cp, row_step=dh * pitch, kw_col_step=kw * dw * cp), pitch


def reference(g, pitch, simd):
    """Every operation ``({lane: byte address} of its unmasked lanes, first, last, final,
    weight_addr, og)``, from the positions of the reduction (rtl.linebuffer)."""
    ops = []
    ys = range(g["y_start"], g["y_limit"] + 1, g["stride_h"])
    xs = range(g["x_start"], g["x_limit"] + 1, g["stride_w"])
    cp, kh, kw = g["pixel_bytes"], g["kh"], g["kw"]
    for by in ys:
        for bx in xs:
            waddr = 0
            for og in range(g["cout_groups"]):
                for k in range(g["ops"]):
                    lanes = {}
                    for j in range(simd):
                        t = k * simd + j
                        ky, kx, c = t // (kw * cp), t // cp % kw, t % cp
                        iy, ix = by + ky * g["dil_h"], bx + kx * g["dil_w"]
                        if ky < kh and c < g["in_channels"] and 0 <= iy < g["height"] \
                                and 0 <= ix < g["width"]:
                            lanes[j] = iy * pitch + ix * cp + c
                    ops.append((lanes, k == 0, k == g["ops"] - 1,
                                og == g["cout_groups"] - 1 and by == ys[-1] and bx == xs[-1],
                                waddr, og))
                    waddr += 1
    return ops


def protect_bound(ops_left, simd):
    """The smallest word the remaining operations read (the line buffer may drop less)."""
    read = [a // simd for op in ops_left for a in op[0].values()]
    return min(read) if read else None


LAYERS = [
    dict(height=4, width=5, cin=4, cout_groups=1, kernel=(1, 1), stride=(1, 1),
         pad=(0, 0, 0, 0), dilation=(1, 1), packed=False),
    dict(height=5, width=6, cin=7, cout_groups=3, kernel=(3, 3), stride=(1, 1),
         pad=(1, 1, 1, 1), dilation=(1, 1), packed=False),
    dict(height=7, width=6, cin=9, cout_groups=2, kernel=(3, 2), stride=(2, 3),
         pad=(2, 1, 0, 2), dilation=(2, 1), packed=False),
    dict(height=3, width=3, cin=4, cout_groups=2, kernel=(3, 3), stride=(1, 1),
         pad=(2, 2, 2, 2), dilation=(1, 1), packed=False),
    dict(height=6, width=4, cin=8, cout_groups=1, kernel=(2, 3), stride=(3, 1),
         pad=(0, 2, 1, 0), dilation=(1, 2), packed=False),
    # Packed: one channel, three, five (above SIMD), odd vertical dilation, a window wider
    # than the map.
    dict(height=6, width=6, cin=1, cout_groups=2, kernel=(3, 3), stride=(1, 1),
         pad=(1, 1, 1, 1), dilation=(1, 1), packed=True),
    dict(height=7, width=5, cin=3, cout_groups=1, kernel=(5, 5), stride=(2, 2),
         pad=(2, 2, 2, 2), dilation=(1, 1), packed=True),
    dict(height=8, width=5, cin=5, cout_groups=2, kernel=(3, 2), stride=(1, 2),
         pad=(2, 1, 0, 1), dilation=(3, 1), packed=True),
    dict(height=3, width=2, cin=3, cout_groups=1, kernel=(3, 3), stride=(1, 1),
         pad=(2, 2, 2, 2), dilation=(1, 1), packed=True),
]


@pytest.mark.parametrize("mode", ["free", "trickle", "credit"])
@pytest.mark.parametrize("layer,packing", [
    pytest.param(k, packing, id=f"{k}-{'packing' if packing else 'plain-only'}")
    for packing in (True, False) for k, layer in enumerate(LAYERS)
    if packing or not layer["packed"]])
def test_window_generator_issues_the_loop_nest(layer, mode, packing):
    """Every operation, lane address, mask and flag against the reference walk; a build
    without packing generates the plain layers the same way (packed ones never reach it: the
    engine refuses them, ``PACK_UNSUPPORTED``)."""
    simd = 4
    g, pitch = geometry(**LAYERS[layer], simd=simd)
    want = reference(g, pitch, simd)
    total = -(-g["height"] * pitch // simd)
    layout = geometry_layout(coord_width=COORD_WIDTH, index_width=INDEX_WIDTH,
                             count_width=COUNT_WIDTH, simd=simd)
    dut = WindowGenerator(geometry=layout, index_width=INDEX_WIDTH, simd=simd, depth=DEPTH,
                          weight_depth=1024, channel_groups=8, packing=packing)
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
                mask, rot = ctx.get(dut.mask), ctx.get(dut.rot)
                rows = [ctx.get(dut.rows[b]) for b in range(simd)]
                lanes = {}
                for j in range(simd):
                    if mask >> j & 1:
                        # Lane j reads bank (rot + j) mod SIMD, at that bank's row.
                        bank = (rot + j) % simd
                        lanes[j] = (bank, rows[bank])
                expect = want[len(got)][0] if len(got) < len(want) else {}
                for j, address in expect.items():
                    assert address // simd < seen, f"read of word {address // simd} before it came"
                assert ctx.get(~dut.first | dut.credit)
                got.append((lanes, ctx.get(dut.first), ctx.get(dut.last), ctx.get(dut.final),
                            ctx.get(dut.weight_addr), ctx.get(dut.og)))
            bound = protect_bound(want[len(got):], simd)
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
        want_banks = [({j: (a % simd, a // simd % DEPTH) for j, a in lanes.items()}, *rest)
                      for lanes, *rest in want]
        assert got == want_banks

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
