"""The register map description, its validation, the driver and the generated text."""

import asyncio
import enum
import re
import shutil
import subprocess

import pytest

from rtl.regmap import (Field, Register, RegisterDriver, RegisterMap, c_header, markdown_table,
                        python_module)


def small_map():
    return RegisterMap("demo", [
        Register("CTRL", 0x00, [Field("start", 1, "w1p", doc="Start a layer"),
                                Field("abort", 1, "pulse")], doc="Control"),
        Register("CFG", 0x04, [
            Field("stride", 4, "rw", reset=1, doc="Stride | both axes"),
            Field("mode", 2, "rw", reset="UINT8", enum={"INT8": 0, "UINT8": 1}, lsb=8),
            Field("zp", 8, "rw", reset=0x80, lsb=24),
        ]),
        Register("STATUS", 0x08, [Field("busy", 1, "ro"), Field("done", 1, "w1c", reset=1)]),
        Register("FIFO", 0x0C, [Field("data", 32, "wo")]),
        Register("CYCLES", 0x10, [Field("cycles", 48, "ro", doc="Cycle counter")]),
    ], doc="A small map")


# --- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: Field("x", 0, "rw"), "field 'x': width must be a positive integer, not 0"),
    (lambda: Field("x", 2, "rx"),
     "field 'x': access must be one of rw, ro, w1p, w1c, wo (or 'pulse'), not 'rx'"),
    (lambda: Field("x", 4, "rw", reset=16),
     "field 'x': reset 16 does not fit in 4 bits (0..15)"),
    (lambda: Field("x", 4, "rw", reset=-1),
     "field 'x': reset -1 does not fit in 4 bits (0..15)"),
    (lambda: Field("x", 2, "rw", reset="BIG", enum={"SMALL": 0}),
     "field 'x': unknown reset 'BIG' (enum names: SMALL)"),
    (lambda: Field("x", 2, "rw", enum={"A": 0, "B": 4}),
     "field 'x': enum value B=4 does not fit in 2 bits"),
    (lambda: Field("x", 2, "rw", enum={"A": 1, "B": 1}),
     "field 'x': enum names 'A' and 'B' share the value 1"),
    (lambda: Field("x", 1, "w1p", reset=1), "field 'x': a w1p field resets to 0, not 1"),
    (lambda: Field("2x", 1, "rw"), "field name must be a Python identifier, not '2x'"),
    (lambda: Field("x", 1, "rw", lsb=-1), "field 'x': lsb must be a non-negative integer, not -1"),
    (lambda: Register("R", 2.0, [Field("x", 1, "rw")]),
     "register 'R': offset must be a non-negative integer, not 2.0"),
    (lambda: Register("R", 0, []), "register 'R' has no fields"),
    (lambda: Register("R", 0, [Field("a", 4, "rw"), Field("b", 4, "rw", lsb=2)]),
     "register 'R': field 'b' [5:2] overlaps field 'a' [3:0]"),
    (lambda: Register("R", 0, [Field("a", 4, "rw"), Field("a", 4, "rw")]),
     "register 'R': field name 'a' is used twice"),
    (lambda: RegisterMap("m", [Register("R", 6, [Field("a", 1, "rw")])]),
     "register 'R': offset 0x6 is not a multiple of 4 bytes"),
    (lambda: RegisterMap("m", [Register("R", 8, [Field("a", 1, "rw")])], data_width=64) and
     RegisterMap("m", [Register("R", 4, [Field("a", 1, "rw")])], data_width=64),
     "register 'R': offset 0x4 is not a multiple of 8 bytes"),
    (lambda: RegisterMap("m", [Register("R", 0, [Field("a", 1, "rw")])], data_width=16),
     "data_width must be one of (32, 64), not 16"),
    (lambda: RegisterMap("m", [Register("A", 0, [Field("a", 40, "ro")]),
                               Register("B", 4, [Field("b", 1, "rw")])]),
     "register 'B' at 0x4 overlaps register 'A' at 0x0..0x7"),
    (lambda: RegisterMap("m", [Register("A", 0, [Field("a", 1, "rw")]),
                               Register("A", 4, [Field("b", 1, "rw")])]),
     "register name 'A' is used twice"),
    (lambda: RegisterMap("m", [Register("A", 0, [Field("a", 1, "rw")]),
                               Register("B", 4, [Field("a", 1, "rw")])]),
     "field name 'a' is used in both registers 'A' and 'B'"),
    (lambda: RegisterMap("m", []), "register map 'm' has no registers"),
])
def test_validation_messages(make, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make()


def test_field_cannot_join_two_registers():
    field = Field("a", 1, "rw")
    Register("A", 0, [field])
    with pytest.raises(ValueError, match="^field 'a' already belongs to register 'A'$"):
        Register("B", 4, [field])


def test_layout():
    regmap = small_map()
    cfg = regmap["CFG"]
    assert [(f.name, f.lsb, f.msb, f.mask) for f in cfg.fields] == [
        ("stride", 0, 3, 0xF), ("mode", 8, 9, 0x300), ("zp", 24, 31, 0xFF00_0000)]
    assert regmap["CTRL"]["abort"].access == "w1p"
    assert cfg.reset == 0x8000_0101
    assert regmap["CYCLES"].words == 2 and regmap["CYCLES"].word_offsets == (0x10, 0x14)
    assert regmap["CYCLES"].latched and not cfg.latched
    assert regmap.addr_width == 5
    assert regmap.field("zp") is cfg["zp"]
    assert regmap.register_at(0x14) == (regmap["CYCLES"], 1)
    assert regmap.register_at(0x18) is None
    assert [r.name for r in regmap] == ["CTRL", "CFG", "STATUS", "FIFO", "CYCLES"]
    with pytest.raises(KeyError, match="has no register 'NOPE'"):
        regmap["NOPE"]
    with pytest.raises(KeyError, match="has no field 'nope'"):
        cfg["nope"]


def test_registers_sorted_and_64_bit_bus():
    regmap = RegisterMap("m", [Register("B", 0x10, [Field("b", 100, "ro")]),
                               Register("A", 0x00, [Field("a", 1, "rw")])], data_width=64)
    assert [r.name for r in regmap] == ["A", "B"]
    assert regmap["B"].word_offsets == (0x10, 0x18)
    assert regmap.addr_width == 5


class Mode(enum.IntEnum):
    INT8 = 0
    UINT8 = 1


def test_pack_unpack_round_trip():
    cfg = small_map()["CFG"]
    value = cfg.pack(stride=7, mode=Mode.UINT8, zp=0x12)
    assert value == 0x1200_0107
    assert cfg.pack({"stride": 2}, 0xFFFF_FFFF) == 0xFF00_0302  # base: other fields' bits
    assert cfg.unpack(value) == {"stride": 7, "mode": 1, "zp": 0x12}
    assert cfg.unpack(value, names=True) == {"stride": 7, "mode": "UINT8", "zp": 0x12}
    assert cfg.pack(mode="INT8") == 0x8000_0001
    with pytest.raises(ValueError, match=r"^field 'CFG\.stride': value 16 does not fit in 4 bits"):
        cfg.pack(stride=16)
    with pytest.raises(ValueError, match=r"^field 'CFG\.mode': unknown value 'RAW'"):
        cfg.pack(mode="RAW")
    with pytest.raises(KeyError, match="has no field 'strides'"):
        cfg.pack(strides=1)
    status = small_map()["STATUS"]
    assert status.pack() == 0, "w1c bits never default to 1 (that would clear)"
    cycles = small_map()["CYCLES"]
    assert cycles.split(0x1234_5678_9ABC) == [0x5678_9ABC, 0x1234]
    assert cycles.join([0x5678_9ABC, 0x1234]) == 0x1234_5678_9ABC


def test_c_macro_collision():
    regmap = RegisterMap("m", [Register("A", 0, [Field("b_c", 1, "rw")]),
                               Register("A_B", 4, [Field("c", 1, "rw")])])
    with pytest.raises(ValueError, match=r"^C macro prefix M_A_B_C stands for both A\.b_c and "
                                         r"A_B\.c: rename one$"):
        c_header(regmap)


def test_ro_fields_cannot_be_packed():
    with pytest.raises(ValueError, match=r"^field STATUS\.busy is read only: it cannot be "
                                         r"written$"):
        small_map()["STATUS"].pack(busy=1)


def test_enum_class_field():
    field = Field("mode", 2, "rw", enum=Mode, reset=Mode.UINT8)
    assert field.enum == {"INT8": 0, "UINT8": 1} and field.reset == 1


# --- the driver -----------------------------------------------------------------------------

class FakeBus:
    """Word memory with a log; ``asynchronous`` makes its callables coroutine functions."""

    def __init__(self, asynchronous):
        self.words = {}
        self.log = []
        if asynchronous:
            async def write(address, word):
                self._write(address, word)

            async def read(address):
                return self._read(address)
            self.write, self.read = write, read
        else:
            self.write, self.read = self._write, self._read

    def _write(self, address, word):
        self.log.append(("w", address, word))
        self.words[address] = word

    def _read(self, address):
        self.log.append(("r", address))
        return self.words.get(address, 0)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_driver(asynchronous):
    bus = FakeBus(asynchronous)
    drv = RegisterDriver(small_map(), bus.write, bus.read, base=0x1000)

    def run(result):
        return asyncio.run(result) if asynchronous else result

    run(drv.write_fields("CFG", stride=3, mode="INT8"))
    assert bus.log == [("w", 0x1004, 0x8000_0003)]
    assert run(drv.read_field("CFG", "stride")) == 3
    assert run(drv.read_fields("CFG", names=True)) == {"stride": 3, "mode": "INT8", "zp": 0x80}
    run(drv.modify_fields("CFG", zp=5))
    assert bus.words[0x1004] == 0x0500_0003
    bus.log.clear()
    run(drv.write("CYCLES", 0xAB_0000_0001))
    assert run(drv.read("CYCLES")) == 0xAB_0000_0001
    assert bus.log == [("w", 0x1010, 1), ("w", 0x1014, 0xAB), ("r", 0x1010), ("r", 0x1014)]
    bus.log.clear()
    run(drv.pulse("abort"))
    assert bus.log == [("w", 0x1000, 0b10)]
    with pytest.raises(ValueError, match=r"^field CTRL\.start is w1p: reads return 0$"):
        drv.read_field("CTRL", "start")
    with pytest.raises(ValueError, match=r"^field CFG\.zp is rw, not w1p$"):
        drv.pulse("zp")
    with pytest.raises(ValueError, match=r"^register 'CFG': value 4294967296 does not fit"):
        drv.write("CFG", 1 << 32)


def test_driver_rejects_bad_reads_and_arguments():
    drv = RegisterDriver(small_map(), lambda a, w: None, lambda a: -1)
    with pytest.raises(ValueError, match=r"^read of CFG at 0x4 returned -1, not a 32-bit word$"):
        drv.read("CFG")
    with pytest.raises(ValueError, match="^base must be a non-negative multiple of 4, not 2$"):
        RegisterDriver(small_map(), print, print, base=2)
    with pytest.raises(ValueError, match="^regmap must be a RegisterMap"):
        RegisterDriver({}, print, print)


# --- generated text -------------------------------------------------------------------------

def test_markdown_table():
    text = markdown_table(small_map())
    lines = text.splitlines()
    assert lines[0] == "| Offset | Register | Field | Bits | Access | Reset | Description |"
    assert "| 0x04 | **CFG** | | | | | |" in lines
    assert "| | | `stride` | [3:0] | rw | 0x1 | Stride \\| both axes |" in lines
    assert "| | | `mode` | [9:8] | rw | UINT8 | (0=INT8, 1=UINT8) |" in lines
    assert "| | | `done` | [1] | w1c | 0x1 | |" in lines
    assert any(line.startswith("| 0x10..0x17 | **CYCLES** (read the first word first")
               for line in lines)
    assert "| | | `data` | [31:0] | wo | 0x0 | |" in lines
    fields = [line for line in lines if line.startswith("| | | `")]
    assert len(fields) == len(small_map().fields)


def test_python_module_matches_map():
    regmap = small_map()
    namespace = {}
    exec(compile(python_module(regmap), "demo_regs.py", "exec"), namespace)
    assert namespace["DATA_WIDTH"] == 32 and namespace["ADDR_WIDTH"] == regmap.addr_width
    for reg in regmap:
        cls = namespace[reg.name]
        assert (cls.OFFSET, cls.WORDS, cls.RESET) == (reg.offset, reg.words, reg.reset)
        for field in reg.fields:
            name = field.name.upper()
            assert getattr(cls, f"{name}_SHIFT") == field.lsb
            assert getattr(cls, f"{name}_MASK") == field.mask
            assert getattr(cls, f"{name}_WIDTH") == field.width
            assert getattr(cls, f"{name}_RESET") == field.reset
            assert getattr(cls, f"{name}_ACCESS") == field.access
            assert getattr(cls, f"{name}_ENUM", None) == field.enum
    assert [r.__name__ for r in namespace["REGISTERS"]] == [r.name for r in regmap]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_header_compiles_and_matches_map(tmp_path):
    regmap = small_map()
    (tmp_path / "demo_regs.h").write_text(c_header(regmap))
    checks = []
    for reg in regmap:
        macro = f"DEMO_{reg.name}"
        checks.append((f"{macro}_OFFSET", reg.offset))
        checks.append((f"{macro}_WORDS", reg.words))
        checks.append((f"{macro}_RESET", reg.reset))
        for field in reg.fields:
            fmacro = f"{macro}_{field.name.upper()}"
            checks += [(f"{fmacro}_SHIFT", field.lsb), (f"{fmacro}_WIDTH", field.width),
                       (f"{fmacro}_MASK", field.mask), (f"{fmacro}_RESET", field.reset)]
            checks += [(f"{fmacro}_{k}", v) for k, v in (field.enum or {}).items()]
    body = "\n".join(f'    printf("%llu\\n", (unsigned long long)({name}));' for name, _ in checks)
    (tmp_path / "main.c").write_text('#include <stdio.h>\n#include "demo_regs.h"\n'
                                     '#include "demo_regs.h"\n'  # the include guard works
                                     f"int main(void) {{\n{body}\n    return 0;\n}}\n")
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-o", str(tmp_path / "main"),
                    str(tmp_path / "main.c")], check=True)
    out = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, check=True)
    assert [int(x) for x in out.stdout.split()] == [v for _, v in checks]
