"""One declarative description of a register map, and everything generated from it.

A :class:`RegisterMap` is a list of :class:`Register` s, each a list of :class:`Field` s. From that
single description come

- the AXI4-Lite register block (:class:`rtl.axil_regs.AXI4LiteRegisters`),
- the Python driver (:class:`RegisterDriver`, a runtime class: no generated code),
- the documentation and headers (:func:`markdown_table`, :func:`c_header`, :func:`python_module`;
  command line ``python -m sim.regdoc``).

Example::

    REGMAP = RegisterMap("convcore", [
        Register("CTRL", 0x00, [Field("start", 1, "w1p", doc="Start the configured layer")],
                 doc="Control"),
        Register("STATUS", 0x04, [Field("busy", 1, "ro", doc="A layer is running"),
                                  Field("error", 4, "ro", doc="Why the layer was refused",
                                        enum={"NONE": 0, "KERNEL": 1})]),
        Register("STRIDE", 0x08, [Field("stride_h", 4, "rw", reset=1),
                                  Field("stride_w", 4, "rw", reset=1, lsb=8)]),
        Register("CYCLES", 0x10, [Field("cycles", 64, "ro", doc="Total cycles")]),
    ])

Access kinds (what software sees / what the hardware side of the register block is):

=======  ==========================================  ==============================================
access   software                                    hardware (``regs.fields[name]``)
=======  ==========================================  ==============================================
``rw``   read/write configuration, reset value       output: the current value
``ro``   read only (writes are ignored)              input: status or counter value
``w1p``  write 1 to a bit: a one-cycle pulse; reads  output: strobe, high one cycle per write of 1
         return 0 (``"pulse"`` is an alias)
``w1c``  reads a sticky flag; write 1 to clear it    input: set strobe per bit (set beats clear)
``wo``   write-only data (e.g. a FIFO push); reads   output: the last written value
         return 0
=======  ==========================================  ==============================================

``rw`` and ``wo`` fields also have a write strobe ``regs.written[name]``: high for the one cycle in
which a new value written by software appears on ``regs.fields[name]``.

Fields are placed from bit 0 upwards in the order given, unless ``lsb=`` places them explicitly.
A register wider than one bus word (e.g. a 64-bit counter) occupies consecutive words, least
significant word first (LO at ``offset``, HI at ``offset + 4``). If it holds hardware-driven
(``ro``/``w1c``) bits, reading its first word latches the upper words, so reading LO then HI gives
one consistent value even while a counter runs. Writes update each word as it is written.
:class:`RegisterDriver` always accesses the words in that order.
"""

import enum
import inspect
import keyword

__all__ = ["ACCESS", "Field", "Register", "RegisterMap", "RegisterDriver",
           "markdown_table", "c_header", "python_module"]

#: Access kinds and what each means (see the module documentation).
ACCESS = {
    "rw": "read/write",
    "ro": "read only",
    "w1p": "write 1 to pulse",
    "w1c": "write 1 to clear",
    "wo": "write only",
}
#: Aliases accepted for access kinds.
ACCESS_ALIASES = {"pulse": "w1p"}
#: Data widths an AXI4-Lite bus may have.
DATA_WIDTHS = (32, 64)
BYTE = 8


def _check_name(kind, name):
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"{kind} name must be a Python identifier, not {name!r}")
    if name.startswith("_"):
        raise ValueError(f"{kind} name must not start with an underscore, not {name!r}")


class Field:
    """A group of bits of a register with one meaning.

    Parameters
    ----------
    name : str
        Identifier, unique in the whole map (the hardware port and driver keyword use it).
    width : int
        Number of bits, at least 1 (may exceed the bus width in a multi-word register).
    access : str
        One of :data:`ACCESS` (``"pulse"`` is accepted for ``"w1p"``).
    reset : int or str
        Value after reset (an enum name is accepted). For ``ro`` fields this only documents
        what the hardware drives after reset; ``w1p`` and ``wo`` fields always reset to 0.
    doc : str
        One line of description for the documentation.
    enum : dict or enum.Enum subclass, optional
        Named values (``{"INT8": 0, "UINT8": 1}``); the driver accepts the names.
    lsb : int, optional
        Position of the least significant bit in the register; by default right after the
        previous field.

    Members
    -------
    Set by :class:`Register`: ``lsb`` (bit position) and ``register`` (the owner).
    """

    def __init__(self, name, width, access, reset=0, doc="", enum=None, lsb=None):
        _check_name("field", name)
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"field {name!r}: width must be a positive integer, not {width!r}")
        access = ACCESS_ALIASES.get(access, access)
        if access not in ACCESS:
            raise ValueError(f"field {name!r}: access must be one of "
                             f"{', '.join(ACCESS)} (or 'pulse'), not {access!r}")
        if lsb is not None and (not isinstance(lsb, int) or isinstance(lsb, bool) or lsb < 0):
            raise ValueError(f"field {name!r}: lsb must be a non-negative integer, not {lsb!r}")
        self.name = name
        self.width = width
        self.access = access
        self.register = None
        self.doc = " ".join(str(doc).split())
        self.enum = self._check_enum(enum)
        #: One line per enum name (an Enum class's ``docs`` dict), for the documents.
        self.enum_docs = dict(getattr(enum, "docs", None) or {})
        self.reset = self.encode(reset, what="reset")
        if access in ("w1p", "wo") and self.reset != 0:
            raise ValueError(f"field {name!r}: a {access} field resets to 0, not {reset!r}")
        self.lsb = lsb

    def _check_enum(self, values):
        if values is None:
            return None
        if isinstance(values, type) and issubclass(values, enum.Enum):
            values = {member.name: member.value for member in values}
        if not isinstance(values, dict) or not values:
            raise ValueError(f"field {self.name!r}: enum must be a non-empty dict or Enum class, "
                             f"not {values!r}")
        seen = {}
        for key, value in values.items():
            _check_name(f"field {self.name!r}: enum", key)
            if not isinstance(value, int) or not 0 <= value < 1 << self.width:
                raise ValueError(f"field {self.name!r}: enum value {key}={value!r} does not fit "
                                 f"in {self.width} bits")
            if value in seen:
                raise ValueError(f"field {self.name!r}: enum names {seen[value]!r} and {key!r} "
                                 f"share the value {value}")
            seen[value] = key
        return dict(values)

    @property
    def mask(self):
        """Mask of the field's bits within its register."""
        return ((1 << self.width) - 1) << self.lsb

    @property
    def msb(self):
        return self.lsb + self.width - 1

    @property
    def bits(self):
        """``"[msb:lsb]"`` or ``"[bit]"``."""
        return f"[{self.msb}:{self.lsb}]" if self.width > 1 else f"[{self.lsb}]"

    @property
    def path(self):
        return f"{self.register.name}.{self.name}" if self.register else self.name

    @property
    def readable(self):
        """True if reads return the field's value (``rw``, ``ro``, ``w1c``)."""
        return self.access in ("rw", "ro", "w1c")

    @property
    def writable(self):
        return self.access != "ro"

    def encode(self, value, *, what="value"):
        """The integer for ``value`` (an int, an enum name or an Enum member); checks the width."""
        if isinstance(value, enum.Enum):
            value = value.name if self.enum and value.name in self.enum else value.value
        if isinstance(value, str):
            if not self.enum or value not in self.enum:
                names = ", ".join(self.enum) if self.enum else "none"
                raise ValueError(f"field {self.path!r}: unknown {what} {value!r} "
                                 f"(enum names: {names})")
            value = self.enum[value]
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"field {self.path!r}: {what} must be an integer, not {value!r}")
        if not 0 <= value < 1 << self.width:
            raise ValueError(f"field {self.path!r}: {what} {value} does not fit in "
                             f"{self.width} bits (0..{(1 << self.width) - 1})")
        return value

    def decode(self, value):
        """The enum name for ``value`` if there is one, else ``value``."""
        if self.enum:
            for key, val in self.enum.items():
                if val == value:
                    return key
        return value

    def __repr__(self):
        return f"Field({self.name!r}, {self.width}, {self.access!r}, reset={self.reset})"


class Register:
    """A register: one or more bus words at ``offset`` holding ``fields``.

    Parameters
    ----------
    name : str
        Identifier, unique in the map (C macros use it upper-cased).
    offset : int
        Byte address, a multiple of the bus width in bytes (checked by :class:`RegisterMap`).
    fields : list of Field
        At least one; placed from bit 0 upwards unless they give ``lsb``; must not overlap.
    doc : str
        One line of description.

    Members
    -------
    ``width`` (bits used, up to the end of the last field), ``reset`` (the whole register's
    reset value), ``fields`` (tuple), ``words`` and ``word_offsets`` (set by the map).
    """

    def __init__(self, name, offset, fields, doc=""):
        _check_name("register", name)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError(f"register {name!r}: offset must be a non-negative integer, "
                             f"not {offset!r}")
        fields = list(fields)
        if not fields:
            raise ValueError(f"register {name!r} has no fields")
        self.name = name
        self.offset = offset
        self.doc = " ".join(str(doc).split())
        position = 0
        taken = {}
        for field in fields:
            if not isinstance(field, Field):
                raise ValueError(f"register {name!r}: fields must be Field objects, not {field!r}")
            if field.register is not None:
                raise ValueError(f"field {field.name!r} already belongs to register "
                                 f"{field.register.name!r}")
            if field.name in taken:
                raise ValueError(f"register {name!r}: field name {field.name!r} is used twice")
            if field.lsb is None:
                field.lsb = position
            field.register = self
            for other in taken.values():
                if field.lsb <= other.msb and other.lsb <= field.msb:
                    raise ValueError(f"register {name!r}: field {field.name!r} {field.bits} "
                                     f"overlaps field {other.name!r} {other.bits}")
            taken[field.name] = field
            position = field.msb + 1
        self.fields = tuple(fields)
        self.width = max(f.msb for f in fields) + 1
        self.reset = sum(f.reset << f.lsb for f in fields)
        self.words = None
        self.word_offsets = None
        self.data_width = None

    def __getitem__(self, name):
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(f"register {self.name!r} has no field {name!r} "
                       f"(fields: {', '.join(f.name for f in self.fields)})")

    def _bind(self, data_width):
        if self.data_width is not None and self.data_width != data_width:
            raise ValueError(f"register {self.name!r} already belongs to a map with "
                             f"{self.data_width}-bit words")
        self.data_width = data_width
        self.words = -(-self.width // data_width)
        self.word_offsets = tuple(self.offset + i * data_width // BYTE for i in range(self.words))

    @property
    def readable_mask(self):
        """Bits whose value reads return (``rw``, ``ro``, ``w1c``); other bits read 0."""
        return sum(f.mask for f in self.fields if f.readable)

    @property
    def latched(self):
        """True if reading the first word latches the upper words (multi-word, hardware-driven)."""
        return self.words > 1 and any(f.access in ("ro", "w1c") for f in self.fields)

    def pack(self, values=None, base=None, /, **fields):
        """The register value with ``fields`` (a dict and/or keywords) set, others from
        ``base`` (default: the reset value).

        Bits of ``w1p``, ``w1c`` and ``wo`` fields default to 0 rather than to ``base``, so
        packing never pulses, clears or pushes anything by accident.
        """
        if values is not None:
            fields = {**values, **fields}
        if base is None:
            base = self.reset
        word = base & sum(f.mask for f in self.fields if f.access in ("rw", "ro"))
        for key, value in fields.items():
            field = self[key]
            if field.access == "ro":
                raise ValueError(f"field {field.path} is read only: it cannot be written")
            word = (word & ~field.mask) | (field.encode(value) << field.lsb)
        return word

    def unpack(self, value, *, names=False):
        """``{field: value}`` for every readable field of the register value ``value``;
        ``names=True`` turns enum values into their names."""
        out = {}
        for field in self.fields:
            if field.readable:
                raw = (value >> field.lsb) & ((1 << field.width) - 1)
                out[field.name] = field.decode(raw) if names else raw
        return out

    def split(self, value):
        """The bus words of a register value, first word first."""
        word_mask = (1 << self.data_width) - 1
        return [(value >> (i * self.data_width)) & word_mask for i in range(self.words)]

    def join(self, words):
        """The register value of its bus words, first word first."""
        return sum(w << (i * self.data_width) for i, w in enumerate(words))

    def __repr__(self):
        return f"Register({self.name!r}, {self.offset:#x}, {list(self.fields)!r})"


class RegisterMap:
    """A validated set of registers on an AXI4-Lite bus of ``data_width`` bits.

    Parameters
    ----------
    name : str
        Identifier of the map (C macro prefix, module name of the generated Python).
    registers : list of Register
        Offsets word aligned, not overlapping; register and field names unique in the map.
    data_width : int
        32 or 64.
    doc : str
        One line describing the map.

    Members
    -------
    ``registers`` (tuple, sorted by offset), ``addr_width`` (bits of byte address that reach
    every register), ``map[name]`` (a register), :meth:`field` (a field by name),
    ``fields`` (all fields, in address order).
    """

    def __init__(self, name, registers, data_width=32, doc=""):
        _check_name("register map", name)
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
        registers = list(registers)
        if not registers:
            raise ValueError(f"register map {name!r} has no registers")
        self.name = name
        self.doc = " ".join(str(doc).split())
        self.data_width = data_width
        self.word_bytes = data_width // BYTE
        names, field_names = {}, {}
        for reg in registers:
            if not isinstance(reg, Register):
                raise ValueError(f"registers must be Register objects, not {reg!r}")
            if reg.name in names:
                raise ValueError(f"register name {reg.name!r} is used twice")
            names[reg.name] = reg
            if reg.offset % self.word_bytes:
                raise ValueError(f"register {reg.name!r}: offset {reg.offset:#x} is not a "
                                 f"multiple of {self.word_bytes} bytes")
            for field in reg.fields:
                if field.name in field_names:
                    raise ValueError(f"field name {field.name!r} is used in both registers "
                                     f"{field_names[field.name].register.name!r} and "
                                     f"{reg.name!r}")
                field_names[field.name] = field
            reg._bind(data_width)
        registers.sort(key=lambda r: r.offset)
        for prev, reg in zip(registers, registers[1:]):
            end = prev.offset + prev.words * self.word_bytes
            if reg.offset < end:
                raise ValueError(f"register {reg.name!r} at {reg.offset:#x} overlaps register "
                                 f"{prev.name!r} at {prev.offset:#x}..{end - 1:#x}")
        self.registers = tuple(registers)
        self._by_name = names
        self._fields = field_names
        top = registers[-1].offset + registers[-1].words * self.word_bytes
        self.addr_width = max((top - 1).bit_length(), (self.word_bytes - 1).bit_length())

    def __getitem__(self, name):
        if isinstance(name, Register):
            if self._by_name.get(name.name) is not name:
                raise KeyError(f"register {name.name!r} is not in map {self.name!r}")
            return name
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"map {self.name!r} has no register {name!r}") from None

    def __iter__(self):
        return iter(self.registers)

    def __len__(self):
        return len(self.registers)

    def field(self, name):
        """The field called ``name`` (field names are unique in the map)."""
        try:
            return self._fields[name]
        except KeyError:
            raise KeyError(f"map {self.name!r} has no field {name!r}") from None

    @property
    def fields(self):
        return tuple(f for reg in self.registers for f in reg.fields)

    def resets(self, access="rw"):
        """``{field name: reset value}`` of the fields with ``access``: a configuration as the
        hardware holds it after reset."""
        return {f.name: f.reset for f in self.fields if f.access == access}

    def register_at(self, address):
        """``(register, word index)`` at byte ``address``, or ``None`` if unmapped."""
        for reg in self.registers:
            for index, offset in enumerate(reg.word_offsets):
                if offset == address:
                    return reg, index
        return None


# --- the Python driver -------------------------------------------------------------------------

class RegisterDriver:
    """Reads and writes fields through two bus callables; no generated code.

    Parameters
    ----------
    regmap : RegisterMap
    write : callable
        ``write(address, word)``; plain function or coroutine function (``async def``).
    read : callable
        ``read(address) -> word``; plain or coroutine function.
    base : int
        Byte address of the register block on the bus.

    With plain callables the methods return their result; when the callables return
    awaitables (e.g. cocotbext-axi's ``AxiLiteMaster``), every method returns a coroutine to
    ``await``. Registers are named by name or :class:`Register`; multi-word registers are
    accessed first word first.

    Example::

        drv = RegisterDriver(REGMAP, write=bus_write, read=bus_read)
        await drv.write_fields("STRIDE", stride_h=2, stride_w=2)
        busy = await drv.read_field("STATUS", "busy")
    """

    def __init__(self, regmap, write, read, base=0):
        if not isinstance(regmap, RegisterMap):
            raise ValueError(f"regmap must be a RegisterMap, not {regmap!r}")
        if not callable(write) or not callable(read):
            raise ValueError(f"write and read must be callables, not {write!r} and {read!r}")
        if not isinstance(base, int) or base < 0 or base % regmap.word_bytes:
            raise ValueError(f"base must be a non-negative multiple of {regmap.word_bytes}, "
                             f"not {base!r}")
        self.regmap = regmap
        self._write = write
        self._read = read
        self.base = base

    # Each operation is a generator yielding ("w", address, word) or ("r", address) and
    # receiving the read word; _run drives it synchronously until a callable returns an
    # awaitable, and from then on as a coroutine.
    def _run(self, gen):
        try:
            op = next(gen)
            while True:
                result = self._issue(op)
                if inspect.isawaitable(result):
                    return self._finish(gen, result)
                op = gen.send(result)
        except StopIteration as stop:
            return stop.value

    async def _finish(self, gen, pending):
        try:
            op = gen.send(await pending)
            while True:
                result = self._issue(op)
                if inspect.isawaitable(result):
                    result = await result
                op = gen.send(result)
        except StopIteration as stop:
            return stop.value

    def _issue(self, op):
        if op[0] == "w":
            return self._write(self.base + op[1], op[2])
        return self._read(self.base + op[1])

    def _write_words(self, reg, value):
        for offset, word in zip(reg.word_offsets, reg.split(value)):
            yield ("w", offset, word)

    def _read_words(self, reg):
        words = []
        for offset in reg.word_offsets:
            word = yield ("r", offset)
            if not isinstance(word, int) or not 0 <= word < 1 << self.regmap.data_width:
                raise ValueError(f"read of {reg.name} at {self.base + offset:#x} returned "
                                 f"{word!r}, not a {self.regmap.data_width}-bit word")
            words.append(word)
        return reg.join(words)

    def _gen_write(self, reg, value):
        yield from self._write_words(reg, value)

    def _gen_read(self, reg, field=None, names=False):
        value = yield from self._read_words(reg)
        if field is None:
            return value
        if field == "*":
            return reg.unpack(value, names=names)
        return reg.unpack(value, names=names)[field]

    def _gen_modify(self, reg, fields):
        value = yield from self._read_words(reg)
        yield from self._write_words(reg, reg.pack(fields, value))

    def write(self, reg, value):
        """Write the whole register value ``value`` (all its words)."""
        reg = self.regmap[reg]
        if not isinstance(value, int) or not 0 <= value < 1 << reg.width:
            raise ValueError(f"register {reg.name!r}: value {value!r} does not fit in "
                             f"{reg.width} bits")
        return self._run(self._gen_write(reg, value))

    def read(self, reg):
        """The whole register value."""
        return self._run(self._gen_read(self.regmap[reg]))

    def write_fields(self, reg, /, **fields):
        """Write ``reg`` with ``fields`` set; its other ``rw`` fields get their reset values and
        its pulse/clear/write-only bits 0. Values may be enum names."""
        reg = self.regmap[reg]
        return self._run(self._gen_write(reg, reg.pack(fields)))

    def modify_fields(self, reg, /, **fields):
        """Read-modify-write: set ``fields``, keep the other ``rw`` fields as read."""
        reg = self.regmap[reg]
        reg.pack(fields)  # validates before any bus access
        return self._run(self._gen_modify(reg, fields))

    def read_field(self, reg, field, *, names=False):
        """The value of one field (``names=True``: its enum name when it has one)."""
        reg = self.regmap[reg]
        if not reg[field].readable:
            raise ValueError(f"field {reg.name}.{field} is {reg[field].access}: reads return 0")
        return self._run(self._gen_read(reg, field, names))

    def read_fields(self, reg, *, names=False):
        """``{field: value}`` of every readable field of ``reg``."""
        return self._run(self._gen_read(self.regmap[reg], "*", names))

    def pulse(self, field):
        """Write 1 to every bit of the ``w1p`` field ``field`` and 0 to the rest of its
        register (e.g. ``drv.pulse("start")``)."""
        target = self.regmap.field(field)
        if target.access != "w1p":
            raise ValueError(f"field {target.path} is {target.access}, not w1p")
        reg = target.register
        return self._run(self._gen_write(reg, reg.pack({field: target.mask >> target.lsb}, 0)))


# --- generators --------------------------------------------------------------------------------

def _hex(value, width):
    return f"0x{value:0{max(1, -(-width // 4))}x}"


def _escape(text):
    return text.replace("|", "\\|")


def _row(*cells):
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def markdown_table(regmap):
    """A Markdown table, one row per register and per field: offset, register, field, bits,
    access, reset, description."""
    digits = -(-regmap.addr_width // 4)
    lines = ["| Offset | Register | Field | Bits | Access | Reset | Description |",
             "|---|---|---|---|---|---|---|"]
    for reg in regmap.registers:
        first = reg.word_offsets[0]
        offset = f"0x{first:0{digits}x}"
        if reg.words > 1:
            offset += f"..0x{reg.word_offsets[-1] + regmap.word_bytes - 1:0{digits}x}"
        head = f"**{reg.name}**" + (f": {_escape(reg.doc)}" if reg.doc else "")
        if reg.latched:
            head += " (read the first word first: it latches the others)"
        lines.append(_row(offset, head, "", "", "", "", ""))
        for field in reg.fields:
            doc = field.doc
            if field.enum:
                doc += (" " if doc else "") + "(" + ", ".join(
                    f"{v}={k}" for k, v in field.enum.items()) + ")"
            reset = field.decode(field.reset) if field.enum else f"{field.reset:#x}"
            lines.append(_row("", "", f"`{field.name}`", field.bits, field.access, reset,
                              _escape(doc)))
    return "\n".join(lines) + "\n"


def markdown_enums(regmap):
    """Per field whose enum documents its values (``enum.docs``): a table of value, name and
    meaning ("" when no field does)."""
    out = []
    for reg in regmap.registers:
        for field in reg.fields:
            if not field.enum_docs:
                continue
            out += ["", f"`{reg.name}.{field.name}`:", "",
                    "| Value | Name | Meaning |", "|---|---|---|"]
            out += [f"| {value} | `{name}` | {field.enum_docs.get(name, '')} |"
                    for name, value in field.enum.items()]
    return "\n".join(out) + "\n" if out else ""


def markdown_legend():
    """A Markdown list explaining the access kinds."""
    text = {
        "rw": "read/write configuration",
        "ro": "read only, driven by the hardware; writes are ignored",
        "w1p": "write 1 to a bit to pulse it for one cycle; reads return 0",
        "w1c": "sticky flag set by the hardware; write 1 to clear; reads return the flag",
        "wo": "write only (each write is seen by the hardware); reads return 0",
    }
    return "".join(f"- `{k}`: {v}\n" for k, v in text.items())


def _c_const(value, width):
    suffix = "ULL" if width > 32 else "u"
    return f"{_hex(value, width)}{suffix}"


def c_header(regmap):
    """A C header with offsets, and per field its shift, width, mask, reset and enum values.

    Masks, shifts and resets are relative to the register (a multi-word register's value is
    ``lo | (uint64_t)hi << 32``); macros are ``PREFIX_REG_OFFSET``, ``PREFIX_REG_FIELD_SHIFT``,
    ``..._WIDTH``, ``..._MASK``, ``..._RESET``, ``..._ENUMNAME``, prefix the map name upper-cased.
    """
    prefix = regmap.name.upper()
    guard = f"{prefix}_REGS_H"
    _check_unique_macros(regmap, prefix)
    out = [f"/* Register map of {regmap.name}: generated by `python -m sim.regdoc --c-header`; "
           "do not edit. */",
           f"#ifndef {guard}", f"#define {guard}", "",
           f"#define {prefix}_DATA_WIDTH {regmap.data_width}u",
           f"#define {prefix}_ADDR_WIDTH {regmap.addr_width}u", ""]
    for reg in regmap.registers:
        name = f"{prefix}_{reg.name.upper()}"
        out.append(f"/* {reg.name}: {reg.doc} */" if reg.doc else f"/* {reg.name} */")
        out.append(f"#define {name}_OFFSET {_hex(reg.offset, 16)}u")
        out.append(f"#define {name}_WORDS {reg.words}u")
        out.append(f"#define {name}_RESET {_c_const(reg.reset, reg.words * regmap.data_width)}")
        for field in reg.fields:
            fname = f"{name}_{field.name.upper()}"
            wide = reg.words * regmap.data_width
            out.append(f"#define {fname}_SHIFT {field.lsb}u")
            out.append(f"#define {fname}_WIDTH {field.width}u")
            out.append(f"#define {fname}_MASK {_c_const(field.mask, wide)}")
            out.append(f"#define {fname}_RESET {_c_const(field.reset, field.width)}")
            for key, value in (field.enum or {}).items():
                doc = field.enum_docs.get(key, "").replace("*/", "* /")
                out.append(f"#define {fname}_{key.upper()} {_c_const(value, field.width)}"
                           + (f" /* {doc} */" if doc else ""))
        out.append("")
    out.append(f"#endif /* {guard} */")
    return "\n".join(out) + "\n"


def _check_unique_macros(regmap, prefix):
    seen = {}
    for reg in regmap.registers:
        names = [(f"{prefix}_{reg.name.upper()}", reg.name)]
        for field in reg.fields:
            names.append((f"{prefix}_{reg.name.upper()}_{field.name.upper()}", field.path))
            names += [(f"{prefix}_{reg.name.upper()}_{field.name.upper()}_{key.upper()}",
                       f"{field.path}={key}") for key in field.enum or {}]
        for macro, what in names:
            if macro in seen and seen[macro] != what:
                raise ValueError(f"C macro prefix {macro} stands for both {seen[macro]} and "
                                 f"{what}: rename one")
            seen[macro] = what


def python_module(regmap):
    """A self-contained Python module of constants (for software without convcore installed).

    One class per register with ``OFFSET``, ``WORDS``, ``RESET`` and per field ``NAME_SHIFT``,
    ``NAME_WIDTH``, ``NAME_MASK``, ``NAME_RESET`` and ``NAME_ENUM`` (a dict) when it has one.
    Within convcore use :class:`RegisterDriver` instead.
    """
    out = [f'"""Register map of {regmap.name}: generated by `python -m sim.regdoc --python`; '
           'do not edit."""', "",
           f"NAME = {regmap.name!r}",
           f"DATA_WIDTH = {regmap.data_width}",
           f"ADDR_WIDTH = {regmap.addr_width}", ""]
    for reg in regmap.registers:
        out += ["", f"class {reg.name}:"]
        out.append(f"    {reg.doc!r}" if reg.doc else f"    {reg.name!r}")
        out.append(f"    OFFSET = {reg.offset:#x}")
        out.append(f"    WORDS = {reg.words}")
        out.append(f"    RESET = {reg.reset:#x}")
        for field in reg.fields:
            fname = field.name.upper()
            out.append(f"    {fname}_SHIFT = {field.lsb}")
            out.append(f"    {fname}_WIDTH = {field.width}")
            out.append(f"    {fname}_MASK = {field.mask:#x}")
            out.append(f"    {fname}_RESET = {field.reset:#x}")
            out.append(f"    {fname}_ACCESS = {field.access!r}")
            if field.enum:
                out.append(f"    {fname}_ENUM = {field.enum!r}")
    out.append(f"\n\nREGISTERS = ({', '.join(r.name for r in regmap.registers)},)")
    return "\n".join(out) + "\n"
