"""RFC 4120 §7.2.2 TCP record marking as a byte buffer. Does no I/O.

Each Kerberos message over TCP is preceded by a 4-octet big-endian length. The high bit is
reserved for an extension mechanism nobody defines: a length with it set, or longer than the
configured cap, is answered with KRB_ERR_FIELD_TOOLONG and the connection closed. The records
complete before a bad length (a client pipelining requests) are still handed out first.
"""

import struct

from common.errors import FieldTooLong

_HIGH_BIT = 0x80000000


def encode_record(data: bytes) -> bytes:
    """Prefix one message with its RFC 4120 §7.2.2 length."""
    if len(data) >= _HIGH_BIT:
        raise ValueError("message too long for RFC 4120 record marking")
    return struct.pack(">I", len(data)) + data


class RecordBuffer:
    """Reassembles RFC 4120 §7.2.2 TCP records. Does no I/O."""

    def __init__(self, max_record: int) -> None:
        self._max_record = max_record
        self._buffer = bytearray()
        self._need: int | None = None
        self._error: FieldTooLong | None = None  # a bad length behind a complete record

    def feed(self, data: bytes) -> None:
        """Add received bytes. Raises FieldTooLong when the next length word is bad and no
        complete record comes before it."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        self._read_length()

    def _read_length(self) -> None:
        if self._need is None and len(self._buffer) >= 4:
            (length,) = struct.unpack_from(">I", self._buffer)
            if length & _HIGH_BIT:
                raise FieldTooLong("RECORD_HIGH_BIT", f"length word {length:#010x}")
            if length > self._max_record:
                raise FieldTooLong("RECORD_TOO_LONG", f"{length} > {self._max_record}")
            self._need = length
            del self._buffer[:4]

    def next_record(self) -> bytes | None:
        """Return the next complete record, or None when more data is needed. Raises
        FieldTooLong once the records before a bad length word have been returned."""
        if self._error is not None:
            raise self._error
        if self._need is None or len(self._buffer) < self._need:
            return None
        record = bytes(self._buffer[: self._need])
        del self._buffer[: self._need]
        self._need = None
        try:
            self._read_length()
        except FieldTooLong as exc:  # this record is good: the error waits for the next call
            self._error = exc
        return record

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a complete record (for idle/partial accounting)."""
        return len(self._buffer) + (4 if self._need is not None else 0)
