"""Test support shared by the testbenches that belongs to no one unit: AXI4-Lite transactions
in Amaranth's simulator (the register block's tests and the engine's), and the behavioural models
of the ECP5 DSP and block RAM primitives."""

from pathlib import Path

#: Behavioural Verilog model of the ECP5 ``MULT18X18D`` DSP primitive that ``dsp="ecp5"``
#: instantiates.
MULT18X18D_MODEL = Path(__file__).resolve().parent / "models" / "MULT18X18D.v"
#: Behavioural Verilog model of the ECP5 ``DP16KD`` block RAM that ``bram="ecp5"`` instantiates.
DP16KD_MODEL = Path(__file__).resolve().parent / "models" / "DP16KD.v"


async def axi_write(ctx, bus, address, data, strb):
    """One write through the flat AXI4-Lite ports ``bus`` (AW and W at once); returns BRESP."""
    ctx.set(bus.awaddr, address)
    ctx.set(bus.wdata, data)
    ctx.set(bus.wstrb, strb)
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.wvalid, 1)
    ctx.set(bus.bready, 1)
    pending = {"aw", "w"}
    while True:
        _, _, awready, wready, bvalid, bresp = await ctx.tick().sample(
            bus.awready, bus.wready, bus.bvalid, bus.bresp)
        if awready:
            pending.discard("aw")
            ctx.set(bus.awvalid, 0)
        if wready:
            pending.discard("w")
            ctx.set(bus.wvalid, 0)
        if bvalid:
            assert not pending, "B before AW and W"
            ctx.set(bus.bready, 0)
            return bresp


async def axi_read(ctx, bus, address):
    """One read through the flat AXI4-Lite ports ``bus``; returns ``(RDATA, RRESP)``."""
    ctx.set(bus.araddr, address)
    ctx.set(bus.arvalid, 1)
    ctx.set(bus.rready, 1)
    while True:
        _, _, arready, rvalid, rdata, rresp = await ctx.tick().sample(
            bus.arready, bus.rvalid, bus.rdata, bus.rresp)
        if arready:
            ctx.set(bus.arvalid, 0)
        if rvalid:
            ctx.set(bus.rready, 0)
            return rdata, rresp
