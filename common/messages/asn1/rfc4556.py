"""PKINIT ASN.1: RFC 4556 (module EXPLICIT TAGS), RFC 8636 (supportedKDFs, kdf, OtherInfo,
PkinitSuppPubInfo), RFC 8070 (freshnessToken) and MS-PKCA paChecksum2. RFC 5349 (ECDH) adds no
types: it reuses SubjectPublicKeyInfo and KDCDHKeyInfo.subjectPublicKey."""

from pyasn1.type import namedtype, univ
from pyasn1_modules.rfc5280 import AlgorithmIdentifier, SubjectPublicKeyInfo

from common.messages.asn1.rfc4120 import Checksum, EncryptionKey, PrincipalName, Realm
from common.messages.base import explicit as x
from common.messages.base import implicit
from common.messages.primitives import Int32, KerberosTime, Microseconds, UInt32

NT = namedtype.NamedType
OPT = namedtype.OptionalNamedType

DHNonce = univ.OctetString


class ExternalPrincipalIdentifier(univ.Sequence):
    componentType = namedtype.NamedTypes(
        OPT("subjectName", implicit(0, univ.OctetString())),
        OPT("issuerAndSerialNumber", implicit(1, univ.OctetString())),
        OPT("subjectKeyIdentifier", implicit(2, univ.OctetString())),
    )


class PA_PK_AS_REQ(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("signedAuthPack", implicit(0, univ.OctetString())),
        OPT("trustedCertifiers",
            x(1, univ.SequenceOf(componentType=ExternalPrincipalIdentifier()))),
        OPT("kdcPkId", implicit(2, univ.OctetString())),
    )


class PAChecksum2(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("checksum", x(0, univ.OctetString())),
        NT("algorithmIdentifier", x(1, AlgorithmIdentifier())),
    )


class PKAuthenticator(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("cusec", x(0, Microseconds())),
        NT("ctime", x(1, KerberosTime())),
        NT("nonce", x(2, UInt32())),
        OPT("paChecksum", x(3, univ.OctetString())),
        OPT("freshnessToken", x(4, univ.OctetString())),
        OPT("paChecksum2", x(5, PAChecksum2())),
    )


class KDFAlgorithmId(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("kdf-id", x(0, univ.ObjectIdentifier())),
    )


class AuthPack(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("pkAuthenticator", x(0, PKAuthenticator())),
        # Not an ANY: pyasn1 lets an explicitly tagged OPTIONAL ANY swallow the next component.
        OPT("clientPublicValue", x(1, SubjectPublicKeyInfo())),
        OPT("supportedCMSTypes", x(2, univ.SequenceOf(componentType=AlgorithmIdentifier()))),
        OPT("clientDHNonce", x(3, DHNonce())),
        OPT("supportedKDFs", x(4, univ.SequenceOf(componentType=KDFAlgorithmId()))),
    )


class DHRepInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("dhSignedData", implicit(0, univ.OctetString())),
        OPT("serverDHNonce", x(1, DHNonce())),
        OPT("kdf", x(2, KDFAlgorithmId())),
    )


class PA_PK_AS_REP(univ.Choice):
    componentType = namedtype.NamedTypes(
        NT("dhInfo", x(0, DHRepInfo())),
        NT("encKeyPack", implicit(1, univ.OctetString())),
    )


class KDCDHKeyInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("subjectPublicKey", x(0, univ.BitString())),
        NT("nonce", x(1, UInt32())),
        OPT("dhKeyExpiration", x(2, KerberosTime())),
    )


class ReplyKeyPack(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("replyKey", x(0, EncryptionKey())),
        NT("asChecksum", x(1, Checksum())),
    )


class KRB5PrincipalName(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("realm", x(0, Realm())),
        NT("principalName", x(1, PrincipalName())),
    )


class TD_DH_PARAMETERS(univ.SequenceOf):
    componentType = AlgorithmIdentifier()


class TD_TRUSTED_CERTIFIERS(univ.SequenceOf):
    componentType = ExternalPrincipalIdentifier()


class OtherInfo(univ.Sequence):
    """RFC 8636 §3 (from NIST SP 800-56A), with PKINIT's explicit tags."""

    componentType = namedtype.NamedTypes(
        NT("algorithmID", AlgorithmIdentifier()),
        NT("partyUInfo", x(0, univ.OctetString())),
        NT("partyVInfo", x(1, univ.OctetString())),
        OPT("suppPubInfo", x(2, univ.OctetString())),
        OPT("suppPrivInfo", x(3, univ.OctetString())),
    )


class PkinitSuppPubInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        NT("enctype", x(0, Int32())),
        NT("as-REQ", x(1, univ.OctetString())),
        NT("pk-as-rep", x(2, univ.OctetString())),
    )
