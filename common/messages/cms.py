"""RFC 5652 CMS ContentInfo, SignedData and EnvelopedData (KeyTransRecipientInfo) as frozen
dataclasses, for PKINIT (RFC 4556 §3.2). Certificates, CRLs, issuer Names and attribute values
stay raw DER for pyca/cryptography to parse."""

from dataclasses import dataclass

from pyasn1_modules import rfc5280

from common.errors import MalformedMessage
from common.messages.asn1 import rfc5652 as asn1
from common.messages.base import asn1_type, codec, decode_der, encode_der
from common.messages.der import read_header

ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
ID_SIGNING_TIME = "1.2.840.113549.1.9.5"


@asn1_type(rfc5280.AlgorithmIdentifier)
@dataclass(frozen=True, slots=True)
class AlgorithmIdentifier:
    algorithm: str
    parameters: bytes | None  # DER of the parameters, when present


@asn1_type(rfc5280.SubjectPublicKeyInfo)
@dataclass(frozen=True, slots=True)
class SubjectPublicKeyInfo:
    algorithm: AlgorithmIdentifier
    subject_public_key: bytes


# encode_spki gives the DER that pyca/cryptography's load_der_public_key takes.
decode_spki, encode_spki = codec(rfc5280.SubjectPublicKeyInfo, SubjectPublicKeyInfo)


@asn1_type(asn1.ContentInfo)
@dataclass(frozen=True, slots=True)
class ContentInfo:
    content_type: str
    content: bytes  # DER of the content (e.g. a SignedData SEQUENCE)


@asn1_type(asn1.EncapsulatedContentInfo)
@dataclass(frozen=True, slots=True)
class EncapsulatedContentInfo:
    e_content_type: str
    e_content: bytes | None


@asn1_type(asn1.Attribute)
@dataclass(frozen=True, slots=True)
class Attribute:
    attr_type: str
    attr_values: tuple[bytes, ...]  # DER of each value


@asn1_type(asn1.IssuerAndSerialNumber)
@dataclass(frozen=True, slots=True)
class IssuerAndSerialNumber:
    issuer: bytes  # DER Name
    serial_number: int


@asn1_type(asn1.SignerIdentifier)
@dataclass(frozen=True, slots=True)
class SignerIdentifier:
    issuer_and_serial_number: IssuerAndSerialNumber | None
    subject_key_identifier: bytes | None
    subject_key_identifier_explicit: bytes | None = None  # Heimdal's form (asn1/rfc5652.py)

    @property
    def key_identifier(self) -> bytes | None:
        """The subjectKeyIdentifier, in whichever form it came."""
        return self.subject_key_identifier or self.subject_key_identifier_explicit


@asn1_type(asn1.SignerInfo)
@dataclass(frozen=True, slots=True)
class SignerInfo:
    version: int
    sid: SignerIdentifier
    digest_algorithm: AlgorithmIdentifier
    signed_attrs: tuple[Attribute, ...] | None
    signature_algorithm: AlgorithmIdentifier
    signature: bytes
    unsigned_attrs: tuple[Attribute, ...] | None


@asn1_type(asn1.SignedData)
@dataclass(frozen=True, slots=True)
class SignedData:
    version: int
    digest_algorithms: tuple[AlgorithmIdentifier, ...]
    encap_content_info: EncapsulatedContentInfo
    certificates: tuple[bytes, ...] | None  # DER of each certificate
    crls: tuple[bytes, ...] | None
    signer_infos: tuple[SignerInfo, ...]


@asn1_type(asn1.OriginatorInfo)
@dataclass(frozen=True, slots=True)
class OriginatorInfo:
    certs: tuple[bytes, ...] | None
    crls: tuple[bytes, ...] | None


@asn1_type(asn1.KeyTransRecipientInfo)
@dataclass(frozen=True, slots=True)
class KeyTransRecipientInfo:
    version: int
    rid: SignerIdentifier
    key_encryption_algorithm: AlgorithmIdentifier
    encrypted_key: bytes


@asn1_type(asn1.EncryptedContentInfo)
@dataclass(frozen=True, slots=True)
class EncryptedContentInfo:
    content_type: str
    content_encryption_algorithm: AlgorithmIdentifier
    encrypted_content: bytes | None


@asn1_type(asn1.EnvelopedData)
@dataclass(frozen=True, slots=True)
class EnvelopedData:
    version: int
    originator_info: OriginatorInfo | None
    recipient_infos: tuple[KeyTransRecipientInfo, ...]
    encrypted_content_info: EncryptedContentInfo
    unprotected_attrs: tuple[Attribute, ...] | None


_CONTENT_INFO = asn1.ContentInfo()
_SIGNED_DATA = asn1.SignedData()
_ENVELOPED_DATA = asn1.EnvelopedData()
_SIGNED_ATTRS = asn1.SignedAttributes()


def decode_content_info(data: bytes, expected_type: str | None = None) -> ContentInfo:
    info: ContentInfo = decode_der(data, _CONTENT_INFO)
    if expected_type is not None and info.content_type != expected_type:
        raise MalformedMessage("BAD_CONTENT_TYPE", info.content_type)
    return info


def encode_content_info(info: ContentInfo) -> bytes:
    return encode_der(info, _CONTENT_INFO)


def decode_signed_data(data: bytes) -> SignedData:
    """A SignedData, given either bare or inside ContentInfo (RFC 4556 sends ContentInfo)."""
    result: SignedData = decode_der(_unwrap(data, ID_SIGNED_DATA), _SIGNED_DATA)
    return result


def encode_signed_data(signed: SignedData, *, content_info: bool = True) -> bytes:
    body = encode_der(signed, _SIGNED_DATA)
    return encode_content_info(ContentInfo(ID_SIGNED_DATA, body)) if content_info else body


def decode_enveloped_data(data: bytes) -> EnvelopedData:
    """An EnvelopedData, given either bare or inside ContentInfo."""
    result: EnvelopedData = decode_der(_unwrap(data, ID_ENVELOPED_DATA), _ENVELOPED_DATA)
    return result


def encode_enveloped_data(enveloped: EnvelopedData, *, content_info: bool = True) -> bytes:
    body = encode_der(enveloped, _ENVELOPED_DATA)
    return encode_content_info(ContentInfo(ID_ENVELOPED_DATA, body)) if content_info else body


def encode_signed_attributes(attrs: tuple[Attribute, ...]) -> bytes:
    """DER of SET OF Attribute with the universal SET tag: what the signature covers
    (RFC 5652 §5.4). With strict decoding this equals the bytes that were received."""
    return encode_der(attrs, _SIGNED_ATTRS)


def _unwrap(data: bytes, content_type: str) -> bytes:
    """The content of a ContentInfo of `content_type`, or `data` itself when it is the bare
    structure: a ContentInfo's SEQUENCE starts with an OBJECT IDENTIFIER, SignedData and
    EnvelopedData start with an INTEGER (RFC 5652 §3, §5.1, §6.1)."""
    if data[:1] != b"\x30":
        return data  # not a SEQUENCE at all: the decoder says why
    try:
        start, _ = read_header(data, 1, len(data))
    except MalformedMessage:
        return data
    if data[start : start + 1] == b"\x06":
        return decode_content_info(data, content_type).content
    return data
