"""The lean DER codec: the same pyasn1 schemas, compiled once into closures that read and write
DER directly and build the registered dataclasses, with no intermediate pyasn1 objects.

pyasn1 remains the reference (`base.decode_der_reference`); tests/unit/test_lean_codec.py proves
the two equal over MIT's messages and over fuzzed bytes (same accept/reject, same values, same
encodings). DER is enforced here directly: definite minimal lengths, minimal INTEGERs, BOOLEAN
0x00/0xFF, zero unused BIT STRING bits, minimal OID arcs, sorted SET OF, no trailing bytes and
no components outside the schema. Single-byte tags only (all Kerberos/PKINIT/CMS tags here).
"""

from collections.abc import Callable
from typing import Any

from pyasn1.type import base, char, univ, useful

from common.errors import MalformedMessage
from common.messages.primitives import (
    FLAGS_BITS,
    KerberosFlags,
    format_kerberos_time,
    parse_kerberos_time,
)

Decoder = Callable[[bytes, int, int], tuple[Any, int]]  # (data, pos, end) -> (value, new pos)
Encoder = Callable[[Any], bytes]


def _bad(status: str, pos: int) -> MalformedMessage:
    return MalformedMessage(status, f"at offset {pos}")


def read_header(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a DER length at `pos` (just after the tag); return (content start, content end)."""
    if pos >= end:
        raise _bad("TRUNCATED", pos)
    first = data[pos]
    pos += 1
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise _bad("BAD_LENGTH", pos)
        length = int.from_bytes(data[pos : pos + count], "big")
        if data[pos] == 0 or length < 0x80:
            raise _bad("NOT_DER_LENGTH", pos)
        pos += count
    if pos + length > end:
        raise _bad("TRUNCATED", pos)
    return pos, pos + length


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _identifier(tag: Any) -> int:
    if tag.tagId >= 31:
        raise TypeError("multi-byte tags are not supported by the lean codec")
    return int(tag.tagClass | tag.tagFormat | tag.tagId)


# --- primitive contents -------------------------------------------------------------------


def _int_from(data: bytes, start: int, end: int) -> int:
    if end == start:
        raise _bad("EMPTY_INTEGER", start)
    if end - start > 1 and ((data[start] == 0 and data[start + 1] < 0x80) or
                            (data[start] == 0xFF and data[start + 1] >= 0x80)):
        raise _bad("NOT_DER_INTEGER", start)
    return int.from_bytes(data[start:end], "big", signed=True)


def integer_contents(value: int) -> bytes:
    """Minimal two's-complement contents of an INTEGER (X.690 §8.3.2)."""
    return value.to_bytes(max(1, (value + (value < 0)).bit_length() // 8 + 1), "big",
                          signed=True)


def _bits_from(data: bytes, start: int, end: int) -> tuple[int, int]:
    """(value, number of bits) of a DER BIT STRING's contents."""
    if end == start:
        raise _bad("EMPTY_BIT_STRING", start)
    unused = data[start]
    if unused > 7 or (unused and end - start == 1):
        raise _bad("BAD_BIT_STRING", start)
    if unused and data[end - 1] & ((1 << unused) - 1):
        raise _bad("NOT_DER_BIT_STRING", start)
    nbits = 8 * (end - start - 1) - unused
    return int.from_bytes(data[start + 1 : end], "big") >> unused, nbits


def _flags_from(data: bytes, start: int, end: int) -> int:
    value, nbits = _bits_from(data, start, end)
    if nbits != FLAGS_BITS:
        raise _bad("BAD_FLAGS_LENGTH", start)
    return value


def _bitstring_bytes_from(data: bytes, start: int, end: int) -> bytes:
    value, nbits = _bits_from(data, start, end)
    return value.to_bytes((nbits + 7) // 8, "big")  # pyasn1's asOctets(): left-padded


def _oid_from(data: bytes, start: int, end: int) -> str:
    if end == start or data[end - 1] & 0x80:
        raise _bad("BAD_OID", start)
    arcs = []
    value = 0
    fresh = True
    for byte in data[start:end]:
        if fresh and byte == 0x80:
            raise _bad("NOT_DER_OID", start)
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def oid_contents(text: str) -> bytes:
    """The contents octets of an OBJECT IDENTIFIER (X.690 §8.19)."""
    arcs = [int(a) for a in text.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def _text_from(encoding: str) -> Callable[[bytes, int, int], str]:
    def read(data: bytes, start: int, end: int) -> str:
        try:
            return data[start:end].decode(encoding)
        except UnicodeDecodeError as exc:
            raise _bad("BAD_STRING", start) from exc

    return read


def _time_from(data: bytes, start: int, end: int) -> Any:
    return parse_kerberos_time(_text_from("ascii")(data, start, end))


def _boolean_from(data: bytes, start: int, end: int) -> bool:
    if end - start != 1 or data[start] not in (0x00, 0xFF):
        raise _bad("NOT_DER_BOOLEAN", start)
    return data[start] == 0xFF


# --- compiling a schema -------------------------------------------------------------------


class Compiler:
    """Compiles schemas into decode/encode closures, memoised per schema object.

    Schema objects (module-level singletons and the component types inside them) live as long
    as the program, and two of the same class and tags can differ in content (`[1] SEQUENCE OF
    X` and `[1] SEQUENCE OF Y`), so the memo is keyed by identity; `_keep` pins them.
    """

    def __init__(self, mapping_for: Callable[[type], Any]) -> None:
        self._mapping_for = mapping_for
        self._decoders: dict[int, Decoder] = {}
        self._encoders: dict[int, Encoder] = {}
        self._keep: list[base.Asn1Type] = []

    # Decoding --------------------------------------------------------------------------

    def decoder(self, schema: base.Asn1Type) -> Decoder:
        key = id(schema)
        found = self._decoders.get(key)
        if found is None:
            self._keep.append(schema)
            # Insert a trampoline first so recursive schemas terminate.
            slot: list[Decoder] = []
            self._decoders[key] = lambda d, p, e: slot[0](d, p, e)
            found = self._build_decoder(schema)
            slot.append(found)
            self._decoders[key] = found
        return found

    def _build_decoder(self, schema: base.Asn1Type) -> Decoder:
        tags = [_identifier(t) for t in reversed(schema.tagSet.superTags)]  # outermost first
        untagged_kind = isinstance(schema, univ.Choice | univ.Any)
        # For a CHOICE or ANY every tag is an explicit wrapper; otherwise the innermost tag is
        # the type's own and its contents go to the contents decoder.
        wrappers = tags if untagged_kind else tags[:-1]
        own_tag = None if untagged_kind else tags[-1]
        contents = self._contents_decoder(schema)
        is_any = isinstance(schema, univ.Any)

        if own_tag is not None and contents is not None and len(wrappers) <= 1:
            # The shapes nearly every Kerberos field has — [n] EXPLICIT around a typed value,
            # or the bare type — without the general loop's lists (the hot path of every
            # decode).
            if not wrappers:
                def decode_plain(data: bytes, pos: int, end: int) -> tuple[Any, int]:
                    if pos >= end or data[pos] != own_tag:
                        raise _bad("UNEXPECTED_TAG", pos)
                    start, pos = read_header(data, pos + 1, end)
                    return contents(data, start, pos), pos

                return decode_plain
            wrapper = wrappers[0]

            def decode_tagged(data: bytes, pos: int, end: int) -> tuple[Any, int]:
                if pos + 1 >= end or data[pos] != wrapper:
                    raise _bad("UNEXPECTED_TAG", pos)
                length = data[pos + 1]
                if length < 0x80:  # short-form length, read inline (most fields)
                    pos, stop = pos + 2, pos + 2 + length
                    if stop > end:
                        raise _bad("TRUNCATED", pos)
                else:
                    pos, stop = read_header(data, pos + 1, end)
                if pos + 1 >= stop or data[pos] != own_tag:
                    raise _bad("UNEXPECTED_TAG", pos)
                length = data[pos + 1]
                if length < 0x80:
                    start, pos = pos + 2, pos + 2 + length
                else:
                    start, pos = read_header(data, pos + 1, stop)
                if pos != stop:
                    raise _bad("TRAILING_BYTES_IN_TAG", pos)
                return contents(data, start, pos), pos

            return decode_tagged

        def decode(data: bytes, pos: int, end: int) -> tuple[Any, int]:
            stops = []
            for tag in wrappers:
                if pos >= end or data[pos] != tag:
                    raise _bad("UNEXPECTED_TAG", pos)
                pos, end = read_header(data, pos + 1, end)
                stops.append(end)
            if own_tag is not None:
                if pos >= end or data[pos] != own_tag:
                    raise _bad("UNEXPECTED_TAG", pos)
                start, pos = read_header(data, pos + 1, end)
                value = contents(data, start, pos)
            elif is_any:
                # Untagged ANY: one whole TLV. Tagged ANY: everything inside its tag.
                value, pos = raw_tlv(data, pos, end) if not wrappers else (data[pos:end], end)
            else:
                value, pos = contents(data, pos, end)
            for stop in reversed(stops):
                if pos != stop:
                    raise _bad("TRAILING_BYTES_IN_TAG", pos)
            return value, pos

        return decode

    def _contents_decoder(self, schema: base.Asn1Type) -> Any:
        mapping = self._mapping_for(type(schema))
        if isinstance(schema, univ.Choice):
            return self._choice_decoder(schema, mapping)
        if isinstance(schema, univ.Sequence):
            return self._sequence_decoder(schema, mapping)
        if isinstance(schema, univ.SequenceOf | univ.SetOf):
            element = self.decoder(schema.componentType)
            is_set = isinstance(schema, univ.SetOf)

            def decode_list(data: bytes, start: int, end: int) -> tuple[Any, ...]:
                items = []
                bounds = []
                pos = start
                while pos < end:
                    item, new_pos = element(data, pos, end)
                    items.append(item)
                    bounds.append((pos, new_pos))
                    pos = new_pos
                if is_set and len(items) > 1:
                    _check_set_order(data, bounds)
                return tuple(items)

            return decode_list
        if isinstance(schema, univ.Boolean):  # before Integer: pyasn1's Boolean subclasses it
            return _boolean_from
        if isinstance(schema, univ.Integer):
            return _int_from
        if isinstance(schema, useful.GeneralizedTime):
            return _time_from
        if isinstance(schema, char.AbstractCharacterString):
            return _text_from(schema.encoding)
        if isinstance(schema, univ.OctetString):
            return lambda data, start, end: data[start:end]
        if isinstance(schema, univ.BitString):
            return _flags_from if isinstance(schema, KerberosFlags) else _bitstring_bytes_from
        if isinstance(schema, univ.ObjectIdentifier):
            return _oid_from
        if isinstance(schema, univ.Any):
            return None
        raise TypeError(f"lean codec cannot compile {type(schema).__name__}")

    def _sequence_decoder(self, schema: Any, mapping: Any) -> Any:
        if mapping is None:
            raise TypeError(f"no dataclass registered for {type(schema).__name__}")
        named = schema.componentType
        fields = []
        for position in range(len(named)):
            component = named.getTypeByPosition(position)
            first = _first_identifiers(component)
            fields.append((self.decoder(component), first, named[position].isOptional))
        cls = mapping.cls

        def decode_sequence(data: bytes, start: int, end: int) -> Any:
            values = []
            pos = start
            for decode, first, optional in fields:
                if pos < end and (first is None or data[pos] in first):
                    value, pos = decode(data, pos, end)
                    values.append(value)
                elif optional:
                    values.append(None)
                else:
                    raise _bad("MISSING_COMPONENT", pos)
            if pos != end:
                raise _bad("UNKNOWN_COMPONENT", pos)
            return cls(*values)

        return decode_sequence

    def _choice_decoder(self, schema: Any, mapping: Any) -> Any:
        named = schema.componentType
        alternatives = []
        for position in range(len(named)):
            component = named.getTypeByPosition(position)
            alternatives.append((_first_identifiers(component), self.decoder(component)))
        cls = mapping.cls
        width = len(alternatives)

        def decode_choice(data: bytes, pos: int, end: int) -> tuple[Any, int]:
            if pos >= end:
                raise _bad("TRUNCATED", pos)
            for index, (first, decode) in enumerate(alternatives):
                if first is None or data[pos] in first:
                    value, pos = decode(data, pos, end)
                    values: list[Any] = [None] * width
                    values[index] = value
                    return cls(*values), pos
            raise _bad("UNKNOWN_CHOICE", pos)

        return decode_choice

    # Encoding --------------------------------------------------------------------------

    def encoder(self, schema: base.Asn1Type) -> Encoder:
        key = id(schema)
        found = self._encoders.get(key)
        if found is None:
            self._keep.append(schema)
            slot: list[Encoder] = []
            self._encoders[key] = lambda v: slot[0](v)
            found = self._build_encoder(schema)
            slot.append(found)
            self._encoders[key] = found
        return found

    def _build_encoder(self, schema: base.Asn1Type) -> Encoder:
        # A CHOICE or ANY has no tag of its own, so its tag chain holds only explicit wrappers;
        # every other type's innermost tag is its own. Either way: wrap with every tag.
        tags = [_identifier(t) for t in schema.tagSet.superTags]  # innermost first
        contents = self._contents_encoder(schema)
        if len(tags) == 1:
            own = bytes(tags)

            def encode_plain(value: Any) -> bytes:
                out = contents(value)
                return b"".join((own, encode_length(len(out)), out))

            return encode_plain
        if len(tags) == 2:  # [n] EXPLICIT around a typed value: most Kerberos fields
            inner, outer = bytes(tags[:1]), bytes(tags[1:])

            def encode_tagged(value: Any) -> bytes:
                out = contents(value)
                length = encode_length(len(out))
                return b"".join((outer, encode_length(1 + len(length) + len(out)), inner,
                                 length, out))

            return encode_tagged

        def encode(value: Any) -> bytes:
            out = contents(value)
            for tag in tags:
                out = bytes((tag,)) + encode_length(len(out)) + out
            return out

        return encode

    def _contents_encoder(self, schema: base.Asn1Type) -> Encoder:
        mapping = self._mapping_for(type(schema))
        if isinstance(schema, univ.Choice):
            named = schema.componentType
            alternatives = [self.encoder(named.getTypeByPosition(i)) for i in range(len(named))]
            names = [c[0] for c in mapping.components]

            def encode_choice(value: Any) -> bytes:
                for name, encode in zip(names, alternatives, strict=True):
                    item = getattr(value, name)
                    if item is not None:
                        return encode(item)
                raise ValueError(f"{type(value).__name__}: no CHOICE alternative set")

            return encode_choice
        if isinstance(schema, univ.Sequence):
            if mapping is None:
                raise TypeError(f"no dataclass registered for {type(schema).__name__}")
            named = schema.componentType
            parts = [(c[0], self.encoder(named.getTypeByPosition(c[1])), named[c[1]].isOptional)
                     for c in mapping.components]

            def encode_sequence(value: Any) -> bytes:
                out = []
                for name, encode, optional in parts:
                    item = getattr(value, name)
                    if item is None:
                        if not optional:
                            raise ValueError(f"{type(value).__name__}.{name} is required")
                        continue
                    out.append(encode(item))
                return b"".join(out)

            return encode_sequence
        if isinstance(schema, univ.SequenceOf | univ.SetOf):
            element = self.encoder(schema.componentType)
            if isinstance(schema, univ.SetOf):
                return lambda items: b"".join(_der_set_order([element(i) for i in items]))
            return lambda items: b"".join(element(i) for i in items)
        if isinstance(schema, univ.Boolean):  # before Integer: pyasn1's Boolean subclasses it
            return lambda flag: b"\xff" if flag else b"\x00"
        if isinstance(schema, univ.Integer):
            return integer_contents
        if isinstance(schema, useful.GeneralizedTime):
            return lambda when: format_kerberos_time(when).encode("ascii")
        if isinstance(schema, char.AbstractCharacterString):
            encoding = schema.encoding
            return lambda text: text.encode(encoding)
        if isinstance(schema, univ.OctetString):
            return bytes
        if isinstance(schema, univ.BitString):
            if isinstance(schema, KerberosFlags):
                return lambda flags: b"\x00" + flags.to_bytes(4, "big")
            return lambda raw: b"\x00" + raw
        if isinstance(schema, univ.ObjectIdentifier):
            return oid_contents
        if isinstance(schema, univ.Any):
            return bytes
        raise TypeError(f"lean codec cannot compile {type(schema).__name__}")


def _first_identifiers(schema: base.Asn1Type) -> frozenset[int] | None:
    """The identifier bytes a component can start with (None: anything, i.e. untagged ANY)."""
    tags = schema.tagSet.superTags
    if tags:
        return frozenset((_identifier(tags[-1]),))
    if isinstance(schema, univ.Choice):
        named = schema.componentType
        found: set[int] = set()
        for position in range(len(named)):
            first = _first_identifiers(named.getTypeByPosition(position))
            if first is None:
                return None
            found |= first
        return frozenset(found)
    return None


def raw_tlv(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """One complete TLV with any single-byte tag, returned whole (an untagged ANY). Tag 0 is
    end-of-contents, never a value (X.690 §8.1.5)."""
    if pos >= end or data[pos] & 0x1F == 0x1F or data[pos] == 0x00:
        raise _bad("UNEXPECTED_TAG", pos)
    _, stop = read_header(data, pos + 1, end)
    return data[pos:stop], stop


def _der_set_order(chunks: list[bytes]) -> list[bytes]:
    """X.690 §11.6 SET OF order: by encoding, shorter ones padded with zeros (stable)."""
    if len(chunks) < 2:
        return chunks
    width = max(map(len, chunks))
    return sorted(chunks, key=lambda c: c.ljust(width, b"\x00"))


def _check_set_order(data: bytes, bounds: list[tuple[int, int]]) -> None:
    chunks = [data[a:b] for a, b in bounds]
    if _der_set_order(chunks) != chunks:
        raise _bad("NOT_DER_SET_ORDER", bounds[0][0])
