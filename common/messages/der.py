"""The lean DER codec: the same pyasn1 schemas, compiled once into closures that read and write
DER directly and build the registered dataclasses, with no intermediate pyasn1 objects.

pyasn1 remains the reference (`base.decode_der_reference`); tests/unit/test_lean_codec.py proves
the two equal over MIT's messages and over fuzzed bytes (same accept/reject, same values, same
encodings). DER is enforced here directly: definite minimal lengths, minimal INTEGERs, BOOLEAN
0x00/0xFF, zero unused BIT STRING bits, minimal OID arcs, sorted SET OF, no trailing bytes and
no components outside the schema. Single-byte tags only (all Kerberos/PKINIT/CMS tags here).
"""

import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import Any

from pyasn1.type import base, char, constraint, univ, useful

from common.errors import MalformedMessage
from common.messages.primitives import (
    FLAGS_BITS,
    KerberosFlags,
    flags_value,
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


def _value_range(schema: Any) -> tuple[int, int] | None:
    """The (low, high) of an INTEGER schema's ValueRangeConstraint, if it has one."""
    pending = [schema.subtypeSpec]
    while pending:
        spec = pending.pop()
        if isinstance(spec, constraint.ValueRangeConstraint):
            return int(spec.start), int(spec.stop)
        if isinstance(spec, constraint.ConstraintsIntersection):
            pending.extend(spec)
    return None


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
    return value if nbits == FLAGS_BITS else flags_value(value, nbits)


def _bitstring_bytes_from(data: bytes, start: int, end: int) -> bytes:
    value, nbits = _bits_from(data, start, end)
    return value.to_bytes((nbits + 7) // 8, "big")  # pyasn1's asOctets(): left-padded


def _oid_from(data: bytes, start: int, end: int) -> str:
    if end == start or data[end - 1] & 0x80:
        raise _bad("BAD_OID", start)
    try:
        return _oid_text(data[start:end])
    except MalformedMessage:
        raise _bad("NOT_DER_OID", start) from None


@functools.lru_cache(maxsize=1024)
def _oid_text(data: bytes) -> str:
    """Dotted text of OID contents (a message carries the same few OIDs again and again)."""
    arcs = []
    value = 0
    fresh = True
    for byte in data:
        if fresh and byte == 0x80:
            raise _bad("NOT_DER_OID", 0)
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


@functools.lru_cache(maxsize=1024)
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


_ascii_from = _text_from("ascii")


def _time_from(data: bytes, start: int, end: int) -> Any:
    return parse_kerberos_time(_ascii_from(data, start, end))


def _boolean_from(data: bytes, start: int, end: int) -> bool:
    if end - start != 1 or data[start] not in (0x00, 0xFF):
        raise _bad("NOT_DER_BOOLEAN", start)
    return data[start] == 0xFF


# --- compiling a schema -------------------------------------------------------------------
#
# Each schema becomes straight-line Python source, compiled once with exec (as `dataclasses`
# builds `__init__`): a SEQUENCE reads its components one after another, tags compared with
# constants and short-form lengths read inline, so a message costs one call per constructed
# value rather than two calls and a loop iteration per field. Generated names: d_N(data, pos,
# end) -> (value, pos) and e_N(value) -> bytes for a whole TLV; c_N/ec_N for the contents of
# a SEQUENCE (OF); ch_N/ech_N for a CHOICE, whose value is the TLV of one alternative.

_SMALL_INTEGERS = tuple(bytes((i,)) for i in range(128))  # INTEGER contents of 0..127


def _wrap(contents: bytes, tags: tuple[int, ...]) -> bytes:
    """Wrap contents in each tag, innermost first (the rare chains of three or more)."""
    for tag in tags:
        contents = bytes((tag,)) + encode_length(len(contents)) + contents
    return contents


def _kept(decode: Callable[[bytes, int, int], Any], keep: int) -> Callable[[bytes, int, int], Any]:
    """`decode` of contents data[start:end], remembering up to `keep` results by those bytes
    (all forgotten at once when full). Only a successful decode is remembered."""
    seen: dict[bytes, Any] = {}

    def read(data: bytes, start: int, end: int) -> Any:
        contents = data[start:end]
        value = seen.get(contents)
        if value is None:
            value = decode(data, start, end)
            if len(seen) >= keep:
                seen.clear()
            seen[contents] = value
        return value

    return read


class Compiler:
    """Compiles schemas into generated decode/encode functions, once per schema object.

    Schema objects (module-level singletons and the component types inside them) live as long
    as the program, and two of the same class and tags can differ in content (`[1] SEQUENCE OF
    X` and `[1] SEQUENCE OF Y`), so they are named by identity; `_keep` pins them. A recursive
    schema works because generated functions find each other by name when called.
    """

    def __init__(self, mapping_for: Callable[[type], Any]) -> None:
        self._mapping_for = mapping_for
        self._names: dict[int, str] = {}
        self._decoders: dict[int, Decoder] = {}  # by id(schema), like _names: pinned by _keep
        self._encoders: dict[int, Encoder] = {}
        self._keep: list[base.Asn1Type] = []
        # Generating is serialised: a second thread must not find a schema's name before its
        # functions exist. Once generated, lookups take no lock.
        self._lock = threading.RLock()
        self._ns: dict[str, Any] = {
            "_bad": _bad, "read_header": read_header, "raw_tlv": raw_tlv,
            "encode_length": encode_length, "integer_contents": integer_contents,
            "oid_contents": oid_contents, "_int_from": _int_from,
            "_boolean_from": _boolean_from, "_time_from": _time_from,
            "_flags_from": _flags_from, "_bitstring_bytes_from": _bitstring_bytes_from,
            "_oid_from": _oid_from, "_check_set_order": _check_set_order,
            "_der_set_order": _der_set_order, "format_kerberos_time": format_kerberos_time,
            "_SMALL_INTEGERS": _SMALL_INTEGERS, "_wrap": _wrap, "_new": object.__new__,
        }

    def decoder(self, schema: base.Asn1Type) -> Decoder:
        decode = self._decoders.get(id(schema))
        if decode is None:
            with self._lock:
                decode = self._decoders[id(schema)] = self._ns["d_" + self._name(schema)]
        return decode

    def encoder(self, schema: base.Asn1Type) -> Encoder:
        encode = self._encoders.get(id(schema))
        if encode is None:
            with self._lock:
                encode = self._encoders[id(schema)] = self._ns["e_" + self._name(schema)]
        return encode

    def _name(self, schema: base.Asn1Type) -> str:
        key = id(schema)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = str(len(self._keep))
            self._keep.append(schema)
            try:
                self._generate(schema, name)
            except BaseException:
                del self._names[key]
                raise
        return name

    def _exec(self, schema: base.Asn1Type, lines: list[str]) -> None:
        source = "\n".join(lines) + "\n"
        exec(compile(source, f"<der {type(schema).__name__}>", "exec"), self._ns)

    # Shapes ------------------------------------------------------------------------------

    @staticmethod
    def _tags(schema: base.Asn1Type) -> tuple[list[int], int | None]:
        """(explicit wrappers outermost first, the type's own tag or None). A CHOICE or ANY
        has no tag of its own: every tag it carries is a wrapper."""
        tags = [_identifier(t) for t in reversed(schema.tagSet.superTags)]
        if isinstance(schema, univ.Choice | univ.Any):
            return tags, None
        return tags[:-1], tags[-1]

    def _generate(self, schema: base.Asn1Type, name: str) -> None:
        mapping = self._mapping_for(type(schema))
        lines: list[str] = []
        if isinstance(schema, univ.Choice):
            self._choice_functions(schema, name, mapping, lines)
        elif isinstance(schema, univ.Sequence):
            if mapping is None:
                raise TypeError(f"no dataclass registered for {type(schema).__name__}")
            self._ns[f"K_{name}"] = mapping.cls
            self._sequence_functions(schema, name, mapping, lines)
        elif isinstance(schema, univ.SequenceOf | univ.SetOf):
            self._list_functions(schema, name, lines)
        else:
            self._read(schema, "v", "0", "0")  # raises TypeError for what cannot compile
        lines.append(f"def d_{name}(data, pos, end):")
        self._read_tlv(schema, "v", lines, "    ", checked=False)
        lines.append("    return v, pos")
        lines.append(f"def e_{name}(x):")
        lines.append(f"    c = {self._contents(schema)}")
        tags = [_identifier(t) for t in schema.tagSet.superTags]  # innermost first
        self._write_tags(tags, lines, "    ", "return")
        self._exec(schema, lines)
        if mapping is not None and mapping.keep:
            self._ns[f"m_{name}"] = _kept(self._ns[f"c_{name}"], mapping.keep)

    # Decoding ----------------------------------------------------------------------------

    def _read(self, schema: base.Asn1Type, target: str, start: str, end: str) -> list[str]:
        """Statements setting `target` to the value of contents data[start:end]."""
        call = f"{target} = {{}}(data, {start}, {end})"
        if isinstance(schema, univ.Sequence | univ.SequenceOf | univ.SetOf):
            name = self._name(schema)
            mapping = self._mapping_for(type(schema))
            if mapping is not None and mapping.keep:  # m_: see _generate
                return [call.format(f"m_{name}")]
            return [call.format(f"c_{name}")]
        if isinstance(schema, univ.Boolean):  # before Integer: pyasn1's Boolean subclasses it
            return [call.format("_boolean_from")]
        if isinstance(schema, univ.Integer):
            lines = [f"if {end} - {start} == 1:",
                     f"    {target} = data[{start}]",
                     f"    if {target} >= 0x80: {target} -= 256",
                     "else:",
                     f"    {call.format('_int_from')}"]
            bounds = _value_range(schema)
            if bounds is not None:  # contents too long for the range are not even converted
                low, high = bounds
                octets = max(len(integer_contents(low)), len(integer_contents(high)))
                lines[3:3] = [f"elif {end} - {start} > {octets}:",
                              f"    raise _bad('INTEGER_OUT_OF_RANGE', {start})"]
                lines.append(f"if not {low} <= {target} <= {high}: "
                             f"raise _bad('INTEGER_OUT_OF_RANGE', {start})")
            return lines
        if isinstance(schema, useful.GeneralizedTime):
            return [call.format("_time_from")]
        if isinstance(schema, char.AbstractCharacterString):
            reader = "_text_" + schema.encoding.replace("-", "_")
            self._ns.setdefault(reader, _text_from(schema.encoding))
            return [call.format(reader)]
        if isinstance(schema, univ.OctetString):
            return [f"{target} = data[{start}:{end}]"]
        if isinstance(schema, univ.BitString):
            return [call.format("_flags_from" if isinstance(schema, KerberosFlags)
                                else "_bitstring_bytes_from")]
        if isinstance(schema, univ.ObjectIdentifier):
            return [call.format("_oid_from")]
        raise TypeError(f"lean codec cannot compile {type(schema).__name__}")

    def _read_tlv(self, schema: base.Asn1Type, target: str, lines: list[str], indent: str,
                  *, checked: bool) -> None:
        """Statements reading one TLV of `schema` at `pos` (within `end`) into `target` and
        moving `pos` past it. `checked`: the caller has seen the first tag at pos < end."""
        wrappers, own = self._tags(schema)
        pos, end = "pos", "end"
        chain = wrappers + ([own] if own is not None else [])
        for level, tag in enumerate(chain):
            start, stop = f"s{level}", f"e{level}"
            if level == 0 and checked:
                lines.append(f"{indent}if {pos} + 1 >= {end}: raise _bad('TRUNCATED', {pos})")
            else:
                lines.append(f"{indent}if {pos} + 1 >= {end} or data[{pos}] != {tag}: "
                             f"raise _bad('UNEXPECTED_TAG', {pos})")
            lines += [f"{indent}n = data[{pos} + 1]",
                      f"{indent}if n < 0x80:",
                      f"{indent}    {start} = {pos} + 2",
                      f"{indent}    {stop} = {start} + n",
                      f"{indent}    if {stop} > {end}: raise _bad('TRUNCATED', {start})",
                      f"{indent}else:",
                      f"{indent}    {start}, {stop} = read_header(data, {pos} + 1, {end})"]
            pos, end = start, stop
        if own is not None:
            lines += [indent + s for s in self._read(schema, target, pos, end)]
            inner = len(chain) - 1
        elif isinstance(schema, univ.Choice):
            name = self._name(schema)
            lines.append(f"{indent}{target}, q = ch_{name}(data, {pos}, {end})")
            if not wrappers:
                lines.append(f"{indent}pos = q")
                return
            lines.append(f"{indent}if q != {end}: raise _bad('TRAILING_BYTES_IN_TAG', q)")
            inner = len(wrappers) - 1
        else:  # ANY: untagged, one whole TLV; tagged, everything inside its tag
            if not wrappers:
                lines.append(f"{indent}{target}, pos = raw_tlv(data, pos, end)")
                return
            lines.append(f"{indent}{target} = data[{pos}:{end}]")
            inner = len(wrappers) - 1
        for level in range(inner, 0, -1):
            lines.append(f"{indent}if e{level} != e{level - 1}: "
                         f"raise _bad('TRAILING_BYTES_IN_TAG', e{level})")
        lines.append(f"{indent}pos = e0")

    @staticmethod
    def _present(schema: base.Asn1Type) -> str:
        first = _first_identifiers(schema)
        if first is None:
            return "pos < end"
        if len(first) == 1:
            return f"pos < end and data[pos] == {next(iter(first))}"
        return f"pos < end and data[pos] in {tuple(sorted(first))}"

    def _sequence_functions(self, schema: Any, name: str, mapping: Any,
                            lines: list[str]) -> None:
        named = schema.componentType
        values = []
        body = [f"def c_{name}(data, start, end):", "    pos = start"]
        for position in range(len(named)):
            component = named.getTypeByPosition(position)
            value = f"v{position}"
            values.append(value)
            body.append(f"    if {self._present(component)}:")
            self._read_tlv(component, value, body, "        ",
                           checked=_first_identifiers(component) is not None)
            body.append("    else:")
            body.append(f"        {value} = None" if named[position].isOptional
                        else "        raise _bad('MISSING_COMPONENT', pos)")
        body.append("    if pos != end: raise _bad('UNKNOWN_COMPONENT', pos)")
        body += self._construct(name, values, "    ")
        body.append("    return o")
        lines += body
        body = [f"def ec_{name}(value):", "    out = []"]
        for field_name, position, _ in mapping.components:
            component = named.getTypeByPosition(position)
            body.append(f"    x = value.{field_name}")
            body.append("    if x is not None:")
            body.append(f"        c = {self._contents(component)}")
            tags = [_identifier(t) for t in component.tagSet.superTags]
            self._write_tags(tags, body, "        ", "out.append")
            if not named[position].isOptional:
                body.append("    else:")
                body.append(f"        raise ValueError(type(value).__name__ + "
                            f"'.{field_name} is required')")
        body.append("    return b''.join(out)")
        lines += body

    def _list_functions(self, schema: Any, name: str, lines: list[str]) -> None:
        element = schema.componentType
        is_set = isinstance(schema, univ.SetOf)
        lines += [f"def c_{name}(data, start, end):", "    items = []", "    bounds = []",
                  "    pos = start", "    while pos < end:", "        first = pos"]
        self._read_tlv(element, "v", lines, "        ", checked=False)
        lines.append("        items.append(v)")
        if is_set:
            lines += ["        bounds.append((first, pos))",
                      "    if len(items) > 1: _check_set_order(data, bounds)"]
        lines.append("    return tuple(items)")
        encode = f"[e_{self._name(element)}(i) for i in items]"
        joined = f"_der_set_order({encode})" if is_set else encode
        lines += [f"def ec_{name}(items):", f"    return b''.join({joined})"]

    def _choice_functions(self, schema: Any, name: str, mapping: Any,
                          lines: list[str]) -> None:
        named = schema.componentType
        width = len(named)
        self._ns[f"K_{name}"] = mapping.cls
        lines += [f"def ch_{name}(data, pos, end):",
                  "    if pos >= end: raise _bad('TRUNCATED', pos)"]
        for index in range(width):
            component = named.getTypeByPosition(index)
            args = ["None"] * width
            args[index] = "v"
            first = _first_identifiers(component)
            lines.append(f"    if {self._present(component)}:")
            self._read_tlv(component, "v", lines, "        ", checked=first is not None)
            lines += self._construct(name, args, "        ")
            lines.append("        return o, pos")
        lines.append("    raise _bad('UNKNOWN_CHOICE', pos)")
        lines.append(f"def ech_{name}(value):")
        for field_name, position, _ in mapping.components:
            lines.append(f"    x = value.{field_name}")
            lines.append(f"    if x is not None: return "
                         f"e_{self._name(named.getTypeByPosition(position))}(x)")
        lines.append("    raise ValueError(type(value).__name__ + "
                     "': no CHOICE alternative set')")

    def _construct(self, name: str, values: list[str], indent: str) -> list[str]:
        """Statements setting `o` to a new K_name of `values` (expressions, in field order).
        A frozen dataclass's __init__ sets each field through object.__setattr__; the slots'
        own setters do the same work at about half the cost (the decoders build a dozen
        objects per message). Other classes are called as usual."""
        cls = self._ns[f"K_{name}"]
        names = [f.name for f in dataclasses.fields(cls)]
        if "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__") or \
                len(names) != len(values):
            return [f"{indent}o = K_{name}({', '.join(values)})"]
        lines = [f"{indent}o = _new(K_{name})"]
        for index, (field_name, value) in enumerate(zip(names, values, strict=True)):
            self._ns[f"S_{name}_{index}"] = cls.__dict__[field_name].__set__
            lines.append(f"{indent}S_{name}_{index}(o, {value})")
        return lines

    # Encoding ----------------------------------------------------------------------------

    def _contents(self, schema: base.Asn1Type) -> str:
        """An expression of the contents octets of value `x` (for a CHOICE: the chosen
        alternative's whole TLV; for ANY: its bytes)."""
        if isinstance(schema, univ.Choice):
            return f"ech_{self._name(schema)}(x)"
        if isinstance(schema, univ.Sequence | univ.SequenceOf | univ.SetOf):
            return f"ec_{self._name(schema)}(x)"
        if isinstance(schema, univ.Boolean):  # before Integer: pyasn1's Boolean subclasses it
            return "(b'\\xff' if x else b'\\x00')"
        if isinstance(schema, univ.Integer):
            return "(_SMALL_INTEGERS[x] if 0 <= x < 128 else integer_contents(x))"
        if isinstance(schema, useful.GeneralizedTime):
            return "format_kerberos_time(x).encode('ascii')"
        if isinstance(schema, char.AbstractCharacterString):
            return f"x.encode({schema.encoding!r})"
        if isinstance(schema, univ.OctetString | univ.Any):
            return "bytes(x)"
        if isinstance(schema, univ.BitString):
            if isinstance(schema, KerberosFlags):
                return "b'\\x00' + x.to_bytes(4, 'big')"
            return "b'\\x00' + x"
        if isinstance(schema, univ.ObjectIdentifier):
            return "oid_contents(x)"
        raise TypeError(f"lean codec cannot compile {type(schema).__name__}")

    @staticmethod
    def _write_tags(tags: list[int], lines: list[str], indent: str, emit: str) -> None:
        """Statements that hand contents `c` wrapped in `tags` (innermost first) to `emit`
        ("return" or "out.append"); short lengths are written inline."""

        def give(expression: str) -> str:
            return f"{emit} {expression}" if emit == "return" else f"{emit}({expression})"

        if not tags:
            lines.append(indent + give("c"))
        elif len(tags) == 1:
            lines += [f"{indent}n = len(c)",
                      f"{indent}if n < 0x80:",
                      f"{indent}    {give(f'bytes(({tags[0]}, n)) + c')}",
                      f"{indent}else:",
                      f"{indent}    {give(f'bytes(({tags[0]},)) + encode_length(n) + c')}"]
        elif len(tags) == 2:  # [n] EXPLICIT around a typed value: most Kerberos fields
            inner, outer = tags
            lines += [f"{indent}n = len(c)",
                      f"{indent}if n < 0x7E:",
                      f"{indent}    {give(f'bytes(({outer}, n + 2, {inner}, n)) + c')}",
                      f"{indent}else:",
                      f"{indent}    h = bytes(({inner},)) + encode_length(n)",
                      f"{indent}    "
                      f"{give(f'bytes(({outer},)) + encode_length(len(h) + n) + h + c')}"]
        else:
            lines.append(indent + give(f"_wrap(c, {tuple(tags)})"))


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
    """One complete TLV with any single-byte tag, returned whole (an untagged ANY). Universal
    tag 0, primitive or constructed, is reserved for the encoding rules (end-of-contents,
    X.680 §8.6, X.690 §8.1.5), never a value."""
    if pos >= end or data[pos] & 0x1F == 0x1F or data[pos] in (0x00, 0x20):
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
