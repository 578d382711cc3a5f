"""Bounds-checked big-endian reads for the MIT binary file formats (keytab, ccache)."""

import struct

from common.errors import MalformedMessage


class ByteReader:
    """Bounds-checked big-endian reads; every overrun is a MalformedMessage."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.offset = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.offset + n > len(self.data):
            raise MalformedMessage("TRUNCATED", f"{self.what} at offset {self.offset}")
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return int(value)

    def string(self, length_fmt: str) -> bytes:
        return self.take(self.unpack(length_fmt))

    def text(self, length_fmt: str) -> str:
        try:
            return self.string(length_fmt).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessage("BAD_STRING", f"{self.what}: {exc}") from exc

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset
