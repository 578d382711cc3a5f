"""H.225.0 RAS in aligned PER (ITU-T X.691): the ITU modules H323-MESSAGES (H.225.0 12/2009)
and H235-SECURITY-MESSAGES (H.235.0 09/2005), compiled once with asn1tools, and a strict
`encode_ras`/`decode_ras` pair around them. No I/O beyond reading the two module texts that
ship inside this package (`asn1/`, unchanged copies of ../shared/asn1/h225/).

The texts are adapted before compiling, as ../shared/asn1/h225/README.md measured (none of
this changes a byte of a RAS message):
- `TYPE-IDENTIFIER.&Type(X)` (H.235's `Encoded*` open types) becomes OCTET STRING, and
  `OBJECT` / `IDENTIFIER` split over two lines is joined;
- the parameterized SIGNED{}, ENCRYPTED{} and HASHED{} are copied into H323-MESSAGES instead
  of imported (asn1tools cannot import parameterized types);
- the three H.245 imports become NULL: a RAS message reaches them only through extension
  alternatives, which PER wraps in a length-prefixed open type.

asn1tools 0.169 gets extension additions wrong in three ways, fixed here on the compiled
types of this specification only (`_fix_extensions`), not in the library:
- an addition whose encoding is empty (a NULL such as GRQ `supportsAltGK` or GRJ reason
  `securityDenial`) is sent as an open type of length 0; X.691 §10.2 and §10.1.3 (an open type
  holds a complete encoding, and a complete encoding that would be empty is one zero octet)
  make it `01 00`. Decoding that correct form did not skip the octet and
  silently corrupted the fields after it;
- a SEQUENCE's open type was not skipped to its announced length (an addition from a later
  version of the type with more inside);
- a failure while encoding one addition (a mandatory field missing inside it) dropped every
  addition with no error: the security tokens with them.

`decode_ras` is strict in the way DER decoders are here: the value it returns must encode
back to exactly the bytes received (no trailing bytes, no other encoding of the same value),
and every failure is a MalformedMessage. Constraints are checked both ways.
"""

import re
from functools import cache
from importlib import resources
from typing import Any, Final

import asn1tools
from asn1tools.codecs import per as asn1_per

from common.errors import MalformedMessage

H323_MODULE: Final = "H323-MESSAGES.asn"
H235_MODULE: Final = "H235-SECURITY-MESSAGES.asn"
MAX_RAS_BYTES: Final = 4096
_PARAMETERIZED = ("SIGNED", "ENCRYPTED", "HASHED")
_H245_STUBS = ("DataProtocolCapability", "T38FaxProfile", "QOSCapability")


def _module_text(name: str) -> str:
    return resources.files("common.enterprise").joinpath("asn1", name).read_text("utf-8")


def adapt_modules(h323: str, h235: str) -> tuple[str, str]:
    """The two ITU module texts as asn1tools can compile them (see the module docstring)."""
    def common(text: str) -> str:
        text = re.sub(r"TYPE-IDENTIFIER\.&Type\s*\([^)]*\)", "OCTET STRING", text)
        return re.sub(r"\bOBJECT\s+IDENTIFIER\b", "OBJECT IDENTIFIER", text)

    h235, h323 = common(h235), common(h323)
    copies = []
    for name in _PARAMETERIZED:
        found = re.search(rf"^{name}\{{\w+\}} ::= SEQUENCE \{{.*?^\}}"
                          r"\(CONSTRAINED BY \{[^}]*\}\)", h235, re.MULTILINE | re.DOTALL)
        if found is None:
            raise AssertionError(f"{name}{{}} not found in {H235_MODULE}")
        copies.append(found.group(0))
    # The copies name H.235's Params, imported in their place.
    h323, count = re.subn(r"SIGNED\{\}, ENCRYPTED\{\}, HASHED\{\}, ", "Params, ", h323)
    imports = re.search(r"\s+DataProtocolCapability, T38FaxProfile, QOSCapability\s+FROM "
                        r"MULTIMEDIA-SYSTEM-CONTROL \{[^}]*\};", h323)
    if count != 1 or imports is None:
        raise AssertionError(f"unexpected IMPORTS in {H323_MODULE}")
    h323 = h323[:imports.start()] + ";" + h323[imports.end():]
    stubs = "".join(f"{name} ::= NULL\n" for name in _H245_STUBS)
    h323 = h323.replace("\nH323-UserInformation ::=",
                        "\n" + "\n\n".join(copies) + "\n\n" + stubs + "\nH323-UserInformation ::=",
                        1)
    return h323, h235


# --- the extension-addition fixes (X.691 §19.7-19.9, §23.7-23.9) ---------------------------

def _sequence_encode_additions(self: Any, data: dict[str, Any], encoder: Any) -> bool:
    encoders = []
    presence = 0
    for addition in self.additions:
        presence <<= 1
        addition_encoder = encoder.__class__()
        if isinstance(addition, asn1_per.AdditionGroup):
            addition.encode_addition_group(data, addition_encoder)
            present = addition_encoder.number_of_bits > 0
        else:
            present = addition.name in data
            # A mandatory addition that is missing raises here (EncodeError), instead of
            # silently dropping every addition (asn1tools catches it).
            self.encode_member(addition, data, addition_encoder, encode_default=True)
        if present:
            if addition_encoder.number_of_bits == 0:
                addition_encoder.append_non_negative_binary_integer(0, 8)  # X.691 §10.1.3
            encoders.append(addition_encoder)
            presence |= 1
    if not encoders:
        return False
    count = len(self.additions)
    encoder.append_normally_small_length(count)
    encoder.append_non_negative_binary_integer(presence, count)
    encoder.align()
    for addition_encoder in encoders:
        addition_encoder.align_always()
        encoder.append_length_determinant(addition_encoder.number_of_bytes())
        encoder += addition_encoder
    return True


def _sequence_decode_additions(self: Any, decoder: Any) -> dict[str, Any]:
    count = decoder.read_normally_small_length()
    presence = decoder.read_non_negative_binary_integer(count)
    decoder.align()
    decoded: dict[str, Any] = {}
    for i in range(count):
        if not presence & (1 << (count - i - 1)):
            continue
        length = 8 * decoder.read_length_determinant()
        before = decoder.number_of_bits  # bits left
        if i < len(self.additions):
            addition = self.additions[i]
            if isinstance(addition, asn1_per.AdditionGroup):
                decoded.update(addition.decode(decoder))
            else:
                decoded[addition.name] = addition.decode(decoder)
        used = before - decoder.number_of_bits
        if used > length:
            raise asn1_per.DecodeError("an extension addition overruns its open type")
        decoder.skip_bits(length - used)  # to the end of the open type, as announced
    return decoded


def _choice_encode_additions(self: Any, data: tuple[str, Any], encoder: Any) -> None:
    try:
        index = self.additions_name_to_index[data[0]]
    except KeyError:
        raise asn1_per.EncodeError(f"Expected choice {self.format_names()}, but got "
                                   f"'{data[0]}'.") from None
    addition_encoder = encoder.__class__()
    self.additions_index_to_member[index].encode(data[1], addition_encoder)
    if addition_encoder.number_of_bits == 0:
        addition_encoder.append_non_negative_binary_integer(0, 8)  # X.691 §10.1.3
    addition_encoder.align_always()
    encoder.append_normally_small_non_negative_whole_number(index)
    encoder.align()
    encoder.append_length_determinant(addition_encoder.number_of_bytes())
    encoder += addition_encoder


def _fix_extensions(root: Any) -> int:
    """Bind the fixed addition methods on every extensible SEQUENCE, SET and CHOICE reachable
    from `root` (a compiled type); returns how many were fixed."""
    seen: set[int] = set()
    stack = [root]
    fixed = 0
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, asn1_per.MembersType):
            if node.additions is not None:
                node.encode_additions = _sequence_encode_additions.__get__(node)
                node.decode_additions = _sequence_decode_additions.__get__(node)
                fixed += 1
            stack.extend(node.root_members)
            stack.extend(node.additions or ())
        elif isinstance(node, asn1_per.AdditionGroup):
            stack.extend(node.root_members)
        elif isinstance(node, asn1_per.Choice):
            if node.additions_index_to_member is not None:
                node.encode_additions = _choice_encode_additions.__get__(node)
                fixed += 1
                stack.extend(node.additions_index_to_member.values())
            stack.extend(node.root_index_to_member.values())
        elif isinstance(node, asn1_per.ArrayType):
            stack.append(node.element_type)
        elif isinstance(node, asn1_per.Recursive):
            inner = getattr(node, "_inner", None)
            if inner is not None:
                stack.append(inner)
    return fixed


@cache
def ras_codec() -> Any:
    """The compiled RasMessage codec (about 0.7 s, once per process: daemons call it before
    they listen)."""
    h323, h235 = adapt_modules(_module_text(H323_MODULE), _module_text(H235_MODULE))
    spec = asn1tools.compile_string(h235 + "\n" + h323, "per")
    _fix_extensions(spec.types["RasMessage"].type)
    return spec


def encode_ras(message: tuple[str, dict[str, Any]]) -> bytes:
    """A RasMessage (CHOICE name, value as asn1tools takes it) in aligned PER, constraints
    checked. Our own bug (a value the schema refuses) raises ValueError."""
    try:
        data = bytes(ras_codec().encode("RasMessage", message, check_constraints=True))
    except (asn1tools.Error, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"RAS encode: {exc}") from exc
    return data


def decode_ras(data: bytes) -> tuple[str, dict[str, Any]]:
    """A RasMessage; MalformedMessage unless `data` is exactly its aligned-PER encoding."""
    if not data or len(data) > MAX_RAS_BYTES:
        raise MalformedMessage("BAD_PER", f"{len(data)} bytes")
    codec = ras_codec()
    try:
        value = codec.decode("RasMessage", data, check_constraints=True)
        again = bytes(codec.encode("RasMessage", value, check_constraints=True))
    except (asn1tools.Error, KeyError, TypeError, IndexError, ValueError, OverflowError,
            RecursionError, NotImplementedError, AttributeError) as exc:
        # asn1tools raises more than its own errors on bad input (a normally small length
        # over 64 is NotImplementedError): every one of them is the peer's bytes.
        raise MalformedMessage("BAD_PER", f"{type(exc).__name__}: {exc}") from exc
    if again != data:
        raise MalformedMessage("NOT_CANONICAL", "the value encodes to other bytes (trailing "
                               "bytes, or an encoding of a field we do not keep)")
    if not isinstance(value, tuple) or len(value) != 2 or not isinstance(value[1], dict):
        raise MalformedMessage("BAD_PER", "not a RAS message with fields")
    return value
