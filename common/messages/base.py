"""The one place that turns DER bytes into frozen dataclasses and back.

Two codecs share the pyasn1 schemas of common/messages/asn1/:
- `decode_der`/`encode_der` use the lean codec (common/messages/der.py), compiled once per
  schema, DER-strict on its own. This is what every `decode_*`/`encode_*` function calls.
- `decode_der_reference`/`encode_der_reference` go through pyasn1: decode, re-encode, require
  the very same bytes (pyasn1's decoder alone is lenient, e.g. on non-minimal lengths), with two
  pyasn1 encoder defects corrected below. It is the reference the lean codec is tested against.
Either way a decoded message re-encodes byte-identically, so the re-encoded KDC-REQ-BODY *is*
the received body, and any defect becomes one MalformedMessage.

Mapping: each message dataclass is registered against its pyasn1 schema with `@asn1_type`; its
fields are the schema's component names in snake case ("kdc-options" -> kdc_options,
"clientDHNonce" -> client_dh_nonce, "from" -> from_), checked at import time. Absent OPTIONAL
components are None; SEQUENCE OF is a tuple; KerberosFlags is an int over 32 bits; KerberosTime
is an aware UTC datetime; OBJECT IDENTIFIER is a dotted string; ANY and OCTET STRING are bytes.
"""

import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from pyasn1.codec.ber import encoder as ber_encoder
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import base, char, tag, univ, useful

from common.errors import MalformedMessage
from common.messages.der import Compiler, integer_contents, raw_tlv
from common.messages.primitives import (
    KerberosFlags,
    flags_value,
    format_kerberos_time,
    parse_kerberos_time,
)

T = TypeVar("T")

# Exceptions pyasn1 lets escape on hostile input besides PyAsn1Error (found by fuzzing).
_DECODE_ERRORS = (PyAsn1Error, ValueError, TypeError, IndexError, KeyError, OverflowError,
                  UnicodeError, RecursionError)


def explicit(number: int, schema: base.Asn1Type) -> Any:
    """`[number] EXPLICIT schema` with a context tag (RFC 4120's module uses EXPLICIT TAGS)."""
    return schema.subtype(
        explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, number))


def implicit(number: int, schema: base.Asn1Type, constructed: bool = False) -> Any:
    """`[number] IMPLICIT schema` with a context tag."""
    fmt = tag.tagFormatConstructed if constructed else tag.tagFormatSimple
    return schema.subtype(implicitTag=tag.Tag(tag.tagClassContext, fmt, number))


def application(number: int) -> tag.TagSet:
    """The `[APPLICATION number]` explicit tag set of a SEQUENCE (RFC 4120 messages)."""
    return univ.Sequence.tagSet.tagExplicitly(
        tag.Tag(tag.tagClassApplication, tag.tagFormatConstructed, number))


def snake_case(asn1_name: str) -> str:
    """The dataclass field name of an ASN.1 component name."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", asn1_name)
    # Split an acronym from the word after it ("DHNonce"), not from a plural "s" ("KDFs").
    name = re.sub(r"(?<=[A-Z])([A-Z](?!s$)[a-z])", r"_\1", name)
    name = name.replace("-", "_").lower()
    return name + "_" if keyword.iskeyword(name) else name


@dataclass(frozen=True, slots=True)
class _Mapping:
    cls: type
    schema: base.Asn1Type
    is_choice: bool
    components: tuple[tuple[str, int, Any], ...]  # (field name, position, component schema)
    keep: int = 0  # decoded values kept by their exact bytes (see asn1_type)


_BY_SCHEMA: dict[type, _Mapping] = {}
_BY_CLASS: dict[type, _Mapping] = {}


def asn1_type(schema_cls: type, *, keep: int = 0) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as the Python form of `schema_cls` (a SEQUENCE or CHOICE).
    `keep`: the lean codec keeps up to this many decoded values by their exact contents
    bytes and returns the same (immutable) object when those bytes come again, for a type
    that arrives unchanged again and again inside other messages (a ticket)."""

    def register(cls: type[T]) -> type[T]:
        schema = schema_cls()
        named = schema.componentType
        components = tuple(
            (snake_case(named.getNameByPosition(i)), i, named.getTypeByPosition(i))
            for i in range(len(named)))
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        expected = [c[0] for c in components]
        if names != expected:
            raise TypeError(f"{cls.__name__} fields {names} != {schema_cls.__name__} {expected}")
        mapping = _Mapping(cls, schema, isinstance(schema, univ.Choice), components, keep)
        _BY_SCHEMA[schema_cls] = mapping
        _BY_CLASS[cls] = mapping
        return cls

    return register


def alias_schema(schema_cls: type, cls: type) -> None:
    """Let `schema_cls` (e.g. AS_REQ, an APPLICATION-tagged KDC_REQ) decode to `cls` too."""
    _BY_SCHEMA[schema_cls] = _BY_CLASS[cls]


# --- pyasn1 -> Python ----------------------------------------------------------------------


def to_python(obj: Any) -> Any:
    """Convert a decoded pyasn1 value to its Python form (see the module docstring)."""
    mapping = _BY_SCHEMA.get(type(obj))
    if mapping is not None:
        if mapping.is_choice:
            position = obj.componentType.getPositionByName(obj.getName())
            values: dict[str, Any] = {name: None for name, _, _ in mapping.components}
            name = mapping.components[position][0]
            values[name] = to_python(obj.getComponentByPosition(position))
            return mapping.cls(**values)
        values = {}
        for name, position, _ in mapping.components:
            component = obj.getComponentByPosition(position, default=None, instantiate=False)
            values[name] = None if component is None else to_python(component)
        return mapping.cls(**values)
    if isinstance(obj, univ.Boolean):  # before Integer: pyasn1's Boolean subclasses it
        return bool(obj)
    if isinstance(obj, univ.Integer):
        return int(obj)
    if isinstance(obj, useful.GeneralizedTime):
        return parse_kerberos_time(str(obj))
    if isinstance(obj, char.AbstractCharacterString):
        return str(obj)
    if isinstance(obj, univ.Any):  # before OctetString: pyasn1's Any is an OctetString
        raw = obj.asOctets()
        if not obj.tagSet:
            # pyasn1 re-emits an ANY verbatim, so its DER check cannot see a BER header here.
            _, stop = raw_tlv(raw, 0, len(raw))
            if stop != len(raw):
                raise MalformedMessage("TRAILING_BYTES", "after an ANY value")
        return raw
    if isinstance(obj, univ.OctetString):
        return obj.asOctets()
    if isinstance(obj, KerberosFlags):
        return flags_value(int(obj), len(obj)) if len(obj) else 0
    if isinstance(obj, univ.BitString):
        return obj.asOctets()
    if isinstance(obj, univ.ObjectIdentifier):
        return str(obj)
    if isinstance(obj, univ.SequenceOf | univ.SetOf):
        return tuple(to_python(item) for item in obj)
    raise TypeError(f"no Python mapping for {type(obj).__name__}")


# --- Python -> pyasn1 ----------------------------------------------------------------------


def to_asn1(value: Any, schema: Any) -> Any:
    """Build the pyasn1 value of `value` against `schema` (a schema object carrying its tags)."""
    mapping = _BY_CLASS.get(type(value))
    if mapping is not None:
        obj = schema.clone()
        for name, position, component_schema in mapping.components:
            item = getattr(value, name)
            if item is not None:
                obj.setComponentByPosition(position, to_asn1(item, component_schema))
        return obj
    if isinstance(schema, univ.SequenceOf | univ.SetOf):
        obj = schema.clone()
        obj.clear()
        for position, item in enumerate(value):
            obj.setComponentByPosition(position, to_asn1(item, schema.componentType))
        return obj
    if isinstance(schema, useful.GeneralizedTime):
        return schema.clone(format_kerberos_time(value))
    if isinstance(schema, KerberosFlags):
        return schema.clone(binValue=format(value, "032b"))
    if isinstance(schema, univ.BitString):
        return schema.clone(hexValue=value.hex())
    return schema.clone(value)


# --- the DER encoder ------------------------------------------------------------------------


class _SequenceEncoder(ber_encoder.SequenceEncoder):
    """pyasn1's SEQUENCE encoder decides OPTIONAL presence with `isValue`, which is True for an
    absent SEQUENCE whose components are all OPTIONAL once it has been instantiated (CMS
    OriginatorInfo), and its DER mode drops present-but-empty OPTIONAL values (an empty SEQUENCE
    OF). X.690 wants neither: a component is encoded exactly when it is present."""

    def encodeValue(self, value: Any, asn1Spec: Any, encodeFun: Any,
                    **options: Any) -> tuple[bytes, bool, bool]:
        if asn1Spec is not None:
            return super().encodeValue(value, asn1Spec, encodeFun, **options)  # type: ignore[no-any-return]
        substrate = b""
        for position, named_type in enumerate(value.componentType.namedTypes):
            component = value.getComponentByPosition(position, default=None, instantiate=False)
            if component is None:
                if named_type.isOptional or named_type.isDefaulted:
                    continue
                raise PyAsn1Error(f"required component {named_type.name} is missing")
            substrate += encodeFun(component, asn1Spec, **options)
        return substrate, True, True


class _IntegerEncoder(ber_encoder.IntegerEncoder):
    """pyasn1 encodes -2**(8k-1) with a redundant 0xFF byte (-128 as ff 80), which X.690
    §8.3.2 forbids; the fuzzer found it. Minimal two's complement, as the lean codec writes."""

    def encodeValue(self, value: Any, asn1Spec: Any, encodeFun: Any,
                    **options: Any) -> tuple[bytes, bool, bool]:
        return integer_contents(int(value)), False, True


class _SingleItemEncoder(der_encoder.SingleItemEncoder):
    TAG_MAP = {**der_encoder.TAG_MAP, univ.Sequence.tagSet: _SequenceEncoder(),
               univ.Integer.tagSet: _IntegerEncoder()}
    TYPE_MAP = {**der_encoder.TYPE_MAP, univ.Sequence.typeId: _SequenceEncoder(),
                univ.Integer.typeId: _IntegerEncoder()}


class _Encoder(der_encoder.Encoder):
    SINGLE_ITEM_ENCODER = _SingleItemEncoder


_encode = _Encoder()


# --- bytes <-> Python ----------------------------------------------------------------------


_lean = Compiler(lambda schema_cls: _BY_SCHEMA.get(schema_cls))


def encode_der(value: Any, schema: Any) -> bytes:
    """DER-encode a Python value (a registered dataclass or scalar) against `schema`."""
    return _lean.encoder(schema)(value)


def encode_der_reference(value: Any, schema: Any) -> bytes:
    """The same through pyasn1: the reference the lean codec is tested against."""
    return bytes(_encode(to_asn1(value, schema)))


def decode_asn1(data: bytes, schema: Any) -> Any:
    """Strict DER decode to the pyasn1 object; MalformedMessage on any defect."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("decode needs bytes")
    data = bytes(data)
    try:
        obj, rest = der_decoder.decode(data, asn1Spec=schema)
        if rest:
            raise MalformedMessage("TRAILING_BYTES", f"{len(rest)} extra bytes")
        if _encode(obj) != data:
            raise MalformedMessage("NOT_DER", "re-encoding differs from the input")
    except _DECODE_ERRORS as exc:
        raise MalformedMessage("BAD_ASN1", f"{type(exc).__name__}: {exc}"[:200]) from exc
    return obj


def decode_der(data: bytes, schema: Any) -> Any:
    """Strict DER decode to the Python form; MalformedMessage on any defect (lean codec)."""
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            raise TypeError("decode needs bytes")
        data = bytes(data)
    try:
        value, end = _lean.decoder(schema)(data, 0, len(data))
    except RecursionError as exc:
        raise MalformedMessage("TOO_DEEP", "nesting too deep") from exc
    if end != len(data):
        raise MalformedMessage("TRAILING_BYTES", f"{len(data) - end} extra bytes")
    return value


def decode_der_reference(data: bytes, schema: Any) -> Any:
    """The same through pyasn1 (decode, re-encode, compare): the reference implementation."""
    obj = decode_asn1(data, schema)
    try:
        return to_python(obj)
    except _DECODE_ERRORS as exc:
        raise MalformedMessage("BAD_VALUE", f"{type(exc).__name__}: {exc}"[:200]) from exc


_CODEC_SCHEMAS: list[Any] = []  # every codec()'s schema, for compile_codecs


def compile_codecs() -> None:
    """Generate every message codec's functions now rather than on first use: daemons call
    this at start, so no request pays for compiling its message types."""
    for schema in _CODEC_SCHEMAS:
        _lean.decoder(schema)


def codec(schema_cls: type, cls: type[T], verify: Callable[[T], None] | None = None
          ) -> tuple[Callable[[bytes], T], Callable[[T], bytes]]:
    """The (decode, encode) pair of one message type: strict DER <-> `cls`.

    `verify` runs after decoding, for checks the schema cannot express (pvno, msg-type).
    """
    schema = schema_cls()
    _CODEC_SCHEMAS.append(schema)

    def decode(data: bytes) -> T:
        value: T = decode_der(data, schema)
        if verify is not None:
            verify(value)
        return value

    def encode(value: T) -> bytes:
        return encode_der(value, schema)

    decode.__doc__ = f"Decode DER {schema_cls.__name__}; MalformedMessage on any defect."
    encode.__doc__ = f"Encode {schema_cls.__name__} as DER."
    return decode, encode
