"""MIT FILE credential caches, version 4 (MIT krb5 doc/formats/ccache_file_format.rst),
as bytes <-> values.

Layout: 0x05 0x04; a header (uint16 length, then tag/length/value fields — tag 1 is the KDC
clock offset, int32 seconds and int32 microseconds); the default principal; then credentials
until the end of the file. Principals are uint32 name type, uint32 component count, realm and
components as uint32-counted strings. A credential is client, server, keyblock (uint16 enctype,
uint32-counted key; v4 has no separate etype), authtime/starttime/endtime/renew_till (uint32),
is_skey (uint8), ticket flags (uint32), addresses and authdata (uint32 count of uint16 type +
counted data), the ticket and the second ticket (counted DER). MIT keeps configuration entries
(server realm "X-CACHECONF:") in the same list; `klist` hides them.
"""

import struct
from dataclasses import dataclass, field

from common.errors import MalformedMessage
from common.kerberos.byte_reader import ByteReader

CCACHE_V4 = b"\x05\x04"
TAG_KDC_OFFSET = 1
CONFIG_REALM = "X-CACHECONF:"


@dataclass(frozen=True, slots=True)
class CcachePrincipal:
    name_type: int
    realm: str
    components: tuple[str, ...]

    def __str__(self) -> str:
        return "/".join(self.components) + "@" + self.realm


@dataclass(frozen=True, slots=True)
class Credential:
    client: CcachePrincipal
    server: CcachePrincipal
    enctype: int
    key: bytes
    authtime: int
    starttime: int
    endtime: int
    renew_till: int
    is_skey: bool
    ticket_flags: int
    addresses: tuple[tuple[int, bytes], ...]
    authdata: tuple[tuple[int, bytes], ...]
    ticket: bytes
    second_ticket: bytes

    @property
    def is_config(self) -> bool:
        return self.server.realm == CONFIG_REALM

    def __repr__(self) -> str:  # never show key bytes
        return f"Credential({self.client} -> {self.server}, enctype={self.enctype})"


@dataclass(frozen=True, slots=True)
class CredentialCache:
    default_principal: CcachePrincipal
    credentials: tuple[Credential, ...] = ()
    kdc_offset: tuple[int, int] | None = None  # (seconds, microseconds) from KRB_AP_ERR_SKEW
    header_fields: tuple[tuple[int, bytes], ...] = field(default=())  # unknown tags, kept


def _read_principal(reader: ByteReader) -> CcachePrincipal:
    name_type = reader.unpack(">I")
    count = reader.unpack(">I")
    if count > reader.remaining // 4:
        raise MalformedMessage("TRUNCATED", "principal component count")
    realm = reader.text(">I")
    return CcachePrincipal(name_type, realm, tuple(reader.text(">I") for _ in range(count)))


def _write_principal(p: CcachePrincipal) -> bytes:
    out = bytearray(struct.pack(">II", p.name_type, len(p.components)))
    for text in (p.realm, *p.components):
        raw = text.encode("utf-8")
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


def _read_pairs(reader: ByteReader) -> tuple[tuple[int, bytes], ...]:
    count = reader.unpack(">I")
    if count > reader.remaining // 6:
        raise MalformedMessage("TRUNCATED", "address/authdata count")
    return tuple((reader.unpack(">H"), reader.string(">I")) for _ in range(count))


def _write_pairs(pairs: tuple[tuple[int, bytes], ...]) -> bytes:
    out = bytearray(struct.pack(">I", len(pairs)))
    for kind, data in pairs:
        out += struct.pack(">HI", kind, len(data)) + data
    return bytes(out)


def decode_ccache(data: bytes) -> CredentialCache:
    """Parse a version-4 FILE ccache. Raises MalformedMessage."""
    if data[:2] != CCACHE_V4:
        raise MalformedMessage("BAD_CCACHE_VERSION", data[:2].hex())
    reader = ByteReader(data, "ccache")
    reader.take(2)
    header = ByteReader(reader.string(">H"), "ccache header")
    kdc_offset = None
    others = []
    while header.remaining:
        tag = header.unpack(">H")
        value = header.string(">H")
        if tag == TAG_KDC_OFFSET and len(value) == 8:
            kdc_offset = struct.unpack(">ii", value)
        else:
            others.append((tag, value))
    default = _read_principal(reader)
    credentials = []
    while reader.remaining:
        client = _read_principal(reader)
        server = _read_principal(reader)
        enctype = reader.unpack(">H")
        key = reader.string(">I")
        authtime, starttime, endtime, renew_till = (reader.unpack(">I") for _ in range(4))
        is_skey = bool(reader.unpack(">B"))
        flags = reader.unpack(">I")
        addresses = _read_pairs(reader)
        authdata = _read_pairs(reader)
        ticket = reader.string(">I")
        second = reader.string(">I")
        credentials.append(Credential(client, server, enctype, key, authtime, starttime, endtime,
                                      renew_till, is_skey, flags, addresses, authdata, ticket,
                                      second))
    return CredentialCache(default, tuple(credentials),
                           (kdc_offset[0], kdc_offset[1]) if kdc_offset else None, tuple(others))


def encode_ccache(cache: CredentialCache) -> bytes:
    """Serialise a version-4 FILE ccache, as MIT writes it."""
    header = bytearray()
    if cache.kdc_offset is not None:
        header += struct.pack(">HHii", TAG_KDC_OFFSET, 8, *cache.kdc_offset)
    for tag, value in cache.header_fields:
        header += struct.pack(">HH", tag, len(value)) + value
    out = bytearray(CCACHE_V4 + struct.pack(">H", len(header)) + header)
    out += _write_principal(cache.default_principal)
    for c in cache.credentials:
        out += _write_principal(c.client) + _write_principal(c.server)
        out += struct.pack(">HI", c.enctype, len(c.key)) + c.key
        out += struct.pack(">IIIIBI", c.authtime, c.starttime, c.endtime, c.renew_till,
                           int(c.is_skey), c.ticket_flags)
        out += _write_pairs(c.addresses) + _write_pairs(c.authdata)
        out += struct.pack(">I", len(c.ticket)) + c.ticket
        out += struct.pack(">I", len(c.second_ticket)) + c.second_ticket
    return bytes(out)
