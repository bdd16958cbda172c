"""Stream payloads and widths shared by the engine's blocks, and the one adapter that turns a
stream or a bus into the flat ports of a Verilog top level.

Every block takes and gives ``amaranth.lib.stream`` interfaces whose payload is a
:func:`payload_layout`: the block's data and ``last`` (the final word of a feature map or
packet). A top level for an FPGA flow or a cocotb testbench exposes them as AXI4-Stream ports,
``{prefix}_tdata``, ``_tvalid``, ``_tready``, ``_tlast`` (and ``_tkeep`` where bytes can be
empty): :func:`axis_members` declares them, :func:`connect_axis` joins them to a stream.
:func:`flat_members` and :func:`connect_flat` do the same for any other interface (the
AXI4-Lite bus: ``s_axil_awaddr``...).
"""

from amaranth.hdl import Cat, Value, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

__all__ = ["DATA_WIDTH", "ZP_WIDTH", "ACC_WIDTH", "ACC_BYTES", "BEAT_WIDTH", "payload_layout",
           "lanes_layout", "pack", "tdata_layout", "axis_members", "connect_axis", "flat_members",
           "connect_flat"]

#: Bits of one activation or weight, on buses and in memories (int8 or uint8 bit patterns).
DATA_WIDTH = 8
#: Bits of a zero point: covers -128..127 (int8) and 0..255 (uint8), two's complement.
ZP_WIDTH = DATA_WIDTH + 1
#: Bits of an accumulator (wraps like a 32-bit hardware accumulator) and of a raw output lane.
ACC_WIDTH = 32
#: Bytes of one raw int32 output lane.
ACC_BYTES = ACC_WIDTH // DATA_WIDTH
#: Bits of one beat of the parameter stream.
BEAT_WIDTH = 32


def payload_layout(data_shape) -> data.StructLayout:
    """A stream payload: ``data`` of ``data_shape`` and ``last``."""
    return data.StructLayout({"data": data_shape, "last": 1})


def lanes_layout(lanes: int) -> data.ArrayLayout:
    """``lanes`` activations, lane ``i`` in bits ``8i .. 8i+7``."""
    return data.ArrayLayout(unsigned(DATA_WIDTH), lanes)


def pack(layout: data.StructLayout, **fields):
    """The bits of a ``layout`` structure whose fields hold the values ``fields`` (every field
    given, each as wide as its field): a value to store in a memory or a FIFO and read back
    with ``data.View(layout, ...)``."""
    if set(fields) != {name for name, _ in layout}:
        raise ValueError(f"pack: the fields of {layout!r} are {[name for name, _ in layout]}, "
                         f"not {sorted(fields)}")
    parts = []
    for name, field in sorted(layout, key=lambda item: item[1].offset):
        value = Value.cast(fields[name])
        if len(value) != field.width:
            raise ValueError(f"pack: field {name!r} has {field.width} bits, its value "
                             f"{len(value)}")
        parts.append(value)
    return Cat(*parts)


def tdata_layout(payload: data.StructLayout):
    """What ``tdata`` carries of a payload: ``data`` when the payload is ``{data, last}``,
    else every field but ``last`` as a structure (first field in the low bits)."""
    names = [name for name, _ in payload]
    if names == ["data", "last"]:
        return payload["data"].shape
    return data.StructLayout({name: field.shape for name, field in payload if name != "last"})


def axis_members(prefix: str, payload: data.StructLayout, flow, keep_width: int = 0) -> dict:
    """Flat AXI4-Stream ports ``{prefix}_t*`` of a stream with ``payload``: ``flow`` ``In``
    for a subordinate (the stream comes in), ``Out`` for a manager; ``keep_width`` bits of
    ``tkeep`` when nonzero."""
    back = Out if flow is In else In
    members = {f"{prefix}_tdata": flow(tdata_layout(payload))}
    if keep_width:
        members[f"{prefix}_tkeep"] = flow(keep_width)
    members.update({f"{prefix}_tvalid": flow(1), f"{prefix}_tready": back(1),
                    f"{prefix}_tlast": flow(1)})
    return members


def connect_axis(m, outer, prefix: str, inner):
    """Join the flat ports ``outer.{prefix}_t*`` (:func:`axis_members`) to the stream
    interface ``inner`` of a submodule (its ``i``: the ports feed it; its ``o``: it drives
    them). ``tkeep``, if any, is the caller's."""
    tdata, tlast = getattr(outer, f"{prefix}_tdata"), getattr(outer, f"{prefix}_tlast")
    tvalid, tready = getattr(outer, f"{prefix}_tvalid"), getattr(outer, f"{prefix}_tready")
    payload = inner.payload
    names = [name for name, _ in payload.shape()]
    if inner.signature.members["valid"].flow == In:         # the submodule's input
        fields = ([payload.data.eq(tdata)] if names == ["data", "last"] else
                  [getattr(payload, n).eq(getattr(tdata, n)) for n in names if n != "last"])
        m.d.comb += [*fields, payload.last.eq(tlast), inner.valid.eq(tvalid),
                     tready.eq(inner.ready)]
    else:
        fields = ([tdata.eq(payload.data)] if names == ["data", "last"] else
                  [getattr(tdata, n).eq(getattr(payload, n)) for n in names if n != "last"])
        m.d.comb += [*fields, tlast.eq(payload.last), tvalid.eq(inner.valid),
                     inner.ready.eq(tready)]


def flat_members(signature, prefix: str) -> dict:
    """Members ``{prefix}_{name}`` with the flows of ``signature``'s port members, for a
    top level that exposes an interface as flat ports (``s_axil_awaddr``, ...); no prefix
    (``""``) keeps the names."""
    return {f"{prefix}_{name}" if prefix else name: member
            for name, member in signature.members.items()}


def connect_flat(m, outer, inner, prefix: str):
    """Connect the flat ports ``outer.{prefix}_{name}`` (:func:`flat_members`) to the
    interface ``inner`` (a submodule's bus, or a whole submodule), whose members have the same
    flows as the ports."""
    for name, member in inner.signature.members.items():
        port = getattr(outer, f"{prefix}_{name}" if prefix else name)
        if member.flow == In:
            m.d.comb += getattr(inner, name).eq(port)
        else:
            m.d.comb += port.eq(getattr(inner, name))
