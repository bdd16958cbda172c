"""Memory images as ``$readmemh`` files, and ``$writememh`` dumps read back: how the HDL memory
of ``tb/hdl/axi_ram.v`` (``+mem=`` and ``+dump=``) is loaded and read in bulk.

A file holds ``data_width``-bit words, one per line, as hex, the word at word address ``a``
holding the bytes ``a * data_width / 8`` and on, little-endian (byte 0 in the low bits); a
line ``@<hex>`` sets the word address of the lines after it, so an image writes only the words
it covers.

>>> path = write_memh(image.image(), "mem.hex", data_width=64, size=1 << 20)  # doctest: +SKIP
>>> memory = read_memh("dump.hex", data_width=64)                           # doctest: +SKIP
>>> net.read(memory.read, 0)             # NetworkImage.read on the dump   # doctest: +SKIP
"""

import re
from pathlib import Path

import numpy as np

__all__ = ["MemoryImageError", "Memory", "write_memh", "read_memh", "DATA_WIDTHS"]

#: Word widths the HDL memory takes (bits).
DATA_WIDTHS = (32, 64, 128, 256, 512)


class MemoryImageError(ValueError):
    """An image or a dump that cannot be written or read as asked; the message names the
    address, the size or the line."""


def _word_bytes(data_width) -> int:
    if data_width not in DATA_WIDTHS:
        raise MemoryImageError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
    return data_width // 8


class Memory:
    """Bytes of a memory from address 0, ``size`` bytes; :meth:`read` serves
    ``memory_read(addr, n) -> bytes`` (:meth:`sim.queue_image.NetworkImage.read`)."""

    def __init__(self, data: bytes):
        self.data = bytes(data)

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, addr: int, n: int) -> bytes:
        """``n`` bytes from ``addr``; MemoryImageError when they are not all in the memory."""
        if not isinstance(addr, (int, np.integer)) or not isinstance(n, (int, np.integer)) \
                or addr < 0 or n < 0 or addr + n > self.size:
            raise MemoryImageError(f"read of {n!r} bytes at {_hex(addr)} is outside the memory "
                                   f"of {self.size:#x} bytes")
        return self.data[addr:addr + n]


def _hex(value):
    return f"{value:#x}" if isinstance(value, (int, np.integer)) else repr(value)


def write_memh(image: dict, path, *, data_width: int = 64, size: int) -> Path:
    """Write ``image`` ({byte address: bytes}, e.g. :meth:`sim.queue_image.QueueImage.image`)
    to ``path`` as a ``$readmemh`` file of ``data_width``-bit words for a memory of ``size``
    bytes: every word a chunk touches (its other bytes zero), in address order, an ``@`` line
    before each run of words. MemoryImageError for a chunk that is not bytes, lies outside the
    memory or overlaps another."""
    word = _word_bytes(data_width)
    if not isinstance(size, int) or size <= 0 or size % word:
        raise MemoryImageError(f"size must be a positive multiple of {word} bytes, not "
                               f"{size!r}")
    flat = np.zeros(size, np.uint8)
    used = np.zeros(size, bool)
    end_before, addr_before = 0, None
    for addr in sorted(image, key=lambda a: (not isinstance(a, int), a if isinstance(a, int)
                                             else 0)):
        data = image[addr]
        if not isinstance(addr, int) or isinstance(addr, bool) or addr < 0:
            raise MemoryImageError(f"chunk address {addr!r} is not a byte address")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MemoryImageError(f"chunk at {addr:#x} is {type(data).__name__}, not bytes")
        if addr + len(data) > size:
            raise MemoryImageError(f"chunk at {addr:#x} of {len(data):#x} bytes ends at "
                                   f"{addr + len(data):#x}, beyond the memory of {size:#x} "
                                   f"bytes")
        if addr < end_before:
            raise MemoryImageError(f"chunk at {addr:#x} overlaps the chunk at "
                                   f"{addr_before:#x} (which ends at {end_before:#x})")
        flat[addr:addr + len(data)] = np.frombuffer(bytes(data), np.uint8)
        used[addr:addr + len(data)] = True
        if len(data):
            end_before, addr_before = addr + len(data), addr
    words = flat.reshape(-1, word)[:, ::-1]           # most significant byte first
    touched = np.flatnonzero(used.reshape(-1, word).any(axis=1))
    lines = []
    before = None
    for index in touched.tolist():
        if before is None or index != before + 1:
            lines.append(f"@{index:x}")
        lines.append(words[index].tobytes().hex())
        before = index
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


_ADDRESS = re.compile(r"@([0-9a-fA-F]+)$")
_WORD = re.compile(r"[0-9a-fA-F_]+$")


def read_memh(path, *, data_width: int = 64, size: int | None = None) -> Memory:
    """A ``$readmemh``/``$writememh`` file of ``data_width``-bit words (``@`` lines, ``//``
    comments, blank lines allowed) as a :class:`Memory` of ``size`` bytes (default: up to its
    last word); words the file does not give are zero. MemoryImageError names the line of a
    word that is not hex (an unknown ``x``/``z`` bit), wider than ``data_width`` or beyond
    ``size``."""
    word = _word_bytes(data_width)
    path = Path(path)
    if not path.exists():
        raise MemoryImageError(f"{path}: no such memory file")
    words = {}
    index = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        for token in line.split("//", 1)[0].split():
            where = f"{path}:{number}"
            address = _ADDRESS.match(token)
            if address:
                index = int(address.group(1), 16)
                continue
            if not _WORD.match(token):
                raise MemoryImageError(f"{where}: word {index:#x} (byte {index * word:#x}) is "
                                       f"{token!r}, not hex")
            value = int(token.replace("_", ""), 16)
            if value >> data_width:
                raise MemoryImageError(f"{where}: word {index:#x} {token!r} is wider than "
                                       f"{data_width} bits")
            words[index] = value
            index += 1
    end = (max(words) + 1) * word if words else 0
    size = end if size is None else size
    if end > size:
        raise MemoryImageError(f"{path}: word {max(words):#x} (byte {end - word:#x}) is beyond "
                               f"the memory of {size:#x} bytes")
    data = bytearray(size)
    for index, value in words.items():
        data[index * word:(index + 1) * word] = value.to_bytes(word, "little")
    return Memory(data)
