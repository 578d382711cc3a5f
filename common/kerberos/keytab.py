"""MIT keytab files, version 2 (MIT krb5 doc/formats/keytab_file_format.rst), as bytes <-> values.

Layout: 0x05 0x02, then records, each a signed 32-bit big-endian length followed by that many
bytes (a negative length is a hole left by a deleted entry and is skipped). A record is the
principal (uint16 component count, realm and components as uint16-counted strings, uint32 name
type), a uint32 timestamp, an 8-bit kvno, the key (uint16 enctype, uint16-counted bytes), and —
when at least four bytes remain — a 32-bit kvno that supersedes the 8-bit one. Any further
bytes in a record are ignored, as MIT does.
"""

import struct
from dataclasses import dataclass

from common.errors import MalformedMessage
from common.kerberos.byte_reader import ByteReader

KEYTAB_V2 = b"\x05\x02"


@dataclass(frozen=True, slots=True)
class KeytabEntry:
    realm: str
    components: tuple[str, ...]
    name_type: int
    timestamp: int
    kvno: int
    enctype: int
    key: bytes

    @property
    def principal(self) -> str:
        return "/".join(self.components) + "@" + self.realm

    def __repr__(self) -> str:  # never show key bytes
        return f"KeytabEntry({self.principal}, kvno={self.kvno}, enctype={self.enctype})"


def decode_keytab(data: bytes) -> list[KeytabEntry]:
    """Parse a version-2 keytab. Raises MalformedMessage."""
    if data[:2] != KEYTAB_V2:
        raise MalformedMessage("BAD_KEYTAB_VERSION", data[:2].hex())
    reader = ByteReader(data, "keytab")
    reader.take(2)
    entries = []
    while reader.remaining:
        size = reader.unpack(">i")
        if size < 0:
            reader.take(-size)
            continue
        if size == 0:
            # MIT treats a zero length as the end of the used part of the file.
            break
        record = ByteReader(reader.take(size), "keytab entry")
        count = record.unpack(">H")
        realm = record.text(">H")
        components = tuple(record.text(">H") for _ in range(count))
        name_type = record.unpack(">I")
        timestamp = record.unpack(">I")
        kvno = record.unpack(">B")
        enctype = record.unpack(">H")
        key = record.string(">H")
        if record.remaining >= 4:
            kvno32 = record.unpack(">I")
            if kvno32:
                kvno = kvno32
        entries.append(KeytabEntry(realm, components, name_type, timestamp, kvno, enctype, key))
    return entries


def encode_keytab(entries: list[KeytabEntry]) -> bytes:
    """Serialise entries as a version-2 keytab, with the 32-bit kvno field, as MIT writes."""
    out = bytearray(KEYTAB_V2)
    for entry in entries:
        record = bytearray(struct.pack(">H", len(entry.components)))
        for text in (entry.realm, *entry.components):
            raw = text.encode("utf-8")
            record += struct.pack(">H", len(raw)) + raw
        record += struct.pack(">IIBHH", entry.name_type, entry.timestamp, entry.kvno & 0xFF,
                              entry.enctype, len(entry.key))
        record += entry.key + struct.pack(">I", entry.kvno)
        out += struct.pack(">i", len(record)) + record
    return bytes(out)


def find_key(entries: list[KeytabEntry], principal: str, enctype: int,
             kvno: int | None = None) -> KeytabEntry | None:
    """The entry for principal/enctype with `kvno`, or the highest kvno when kvno is None."""
    matches = [e for e in entries if e.principal == principal and e.enctype == enctype
               and (kvno is None or e.kvno == kvno)]
    return max(matches, key=lambda e: e.kvno, default=None)
