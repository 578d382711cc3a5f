"""RFC 5652 CMS: ContentInfo, SignedData and EnvelopedData, as far as PKINIT needs them.

Certificates, CRLs, Names and attribute values are kept as raw DER (ANY): X.509 parsing is
pyca/cryptography's job. Of the RecipientInfo alternatives only KeyTransRecipientInfo (the one
PKINIT's encKeyPack uses, RFC 4556 §3.2.3.2) is decoded; the others are rejected.
"""

from pyasn1.type import namedtype, univ
from pyasn1_modules.rfc5280 import AlgorithmIdentifier

from common.messages.base import explicit, implicit
from common.messages.primitives import CertificateSerialNumber, Int32

NT = namedtype.NamedType
OPT = namedtype.OptionalNamedType


class ContentInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("contentType", univ.ObjectIdentifier()),
        NT("content", explicit(0, univ.Any())),
    )


class EncapsulatedContentInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("eContentType", univ.ObjectIdentifier()),
        OPT("eContent", explicit(0, univ.OctetString())),
    )


class Attribute(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("attrType", univ.ObjectIdentifier()),
        NT("attrValues", univ.SetOf(componentType=univ.Any())),
    )


class SignedAttributes(univ.SetOf):
    """SET OF Attribute: the DER the signature covers (RFC 5652 §5.4)."""

    componentType = Attribute()


class IssuerAndSerialNumber(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("issuer", univ.Any()),
        NT("serialNumber", CertificateSerialNumber()),
    )


class SignerIdentifier(univ.Choice):
    """RFC 5652 §5.3, plus a leniency: Heimdal writes subjectKeyIdentifier as if the module
    had EXPLICIT tags ([0] constructed around an OCTET STRING, `A0 16 04 14 ...`), and OpenSSL,
    so MIT, accepts it. The third alternative reads that form; telekey never writes it."""

    componentType = namedtype.NamedTypes(
        NT("issuerAndSerialNumber", IssuerAndSerialNumber()),
        NT("subjectKeyIdentifier", implicit(0, univ.OctetString())),
        NT("subjectKeyIdentifierExplicit", explicit(0, univ.OctetString())),
    )


class SignerInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("version", Int32()),
        NT("sid", SignerIdentifier()),
        NT("digestAlgorithm", AlgorithmIdentifier()),
        OPT("signedAttrs", implicit(0, SignedAttributes(), constructed=True)),
        NT("signatureAlgorithm", AlgorithmIdentifier()),
        NT("signature", univ.OctetString()),
        OPT("unsignedAttrs", implicit(1, univ.SetOf(componentType=Attribute()), constructed=True)),
    )


class SignedData(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("version", Int32()),
        NT("digestAlgorithms", univ.SetOf(componentType=AlgorithmIdentifier())),
        NT("encapContentInfo", EncapsulatedContentInfo()),
        OPT("certificates", implicit(0, univ.SetOf(componentType=univ.Any()), constructed=True)),
        OPT("crls", implicit(1, univ.SetOf(componentType=univ.Any()), constructed=True)),
        NT("signerInfos", univ.SetOf(componentType=SignerInfo())),
    )


class OriginatorInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        OPT("certs", implicit(0, univ.SetOf(componentType=univ.Any()), constructed=True)),
        OPT("crls", implicit(1, univ.SetOf(componentType=univ.Any()), constructed=True)),
    )


class KeyTransRecipientInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("version", Int32()),
        NT("rid", SignerIdentifier()),  # RecipientIdentifier has the same two alternatives
        NT("keyEncryptionAlgorithm", AlgorithmIdentifier()),
        NT("encryptedKey", univ.OctetString()),
    )


class EncryptedContentInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("contentType", univ.ObjectIdentifier()),
        NT("contentEncryptionAlgorithm", AlgorithmIdentifier()),
        OPT("encryptedContent", implicit(0, univ.OctetString())),
    )


class EnvelopedData(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("version", Int32()),
        OPT("originatorInfo", implicit(0, OriginatorInfo(), constructed=True)),
        NT("recipientInfos", univ.SetOf(componentType=KeyTransRecipientInfo())),
        NT("encryptedContentInfo", EncryptedContentInfo()),
        OPT("unprotectedAttrs", implicit(1, univ.SetOf(componentType=Attribute()),
                                         constructed=True)),
    )
