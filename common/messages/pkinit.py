"""PKINIT messages: RFC 4556 §3.2 (PA-PK-AS-REQ, AuthPack, PKAuthenticator, PA-PK-AS-REP,
DHRepInfo, KDCDHKeyInfo, ReplyKeyPack, KRB5PrincipalName, TD-DH-PARAMETERS), RFC 5349 (ECDH: same
types), RFC 8070 (freshnessToken, PA-AS-FRESHNESS), RFC 8636 (KDFs, OtherInfo) and MS-PKCA
paChecksum2."""

from dataclasses import dataclass
from datetime import datetime

from pyasn1.type import univ
from pyasn1_modules import rfc3279

from common.messages.asn1 import rfc4556 as asn1
from common.messages.base import asn1_type, codec
from common.messages.cms import AlgorithmIdentifier, SubjectPublicKeyInfo
from common.messages.types import Checksum, EncryptionKey, PrincipalName

ID_PKINIT = "1.3.6.1.5.2.3"
ID_PKINIT_AUTH_DATA = "1.3.6.1.5.2.3.1"
ID_PKINIT_DHKEY_DATA = "1.3.6.1.5.2.3.2"
ID_PKINIT_RKEY_DATA = "1.3.6.1.5.2.3.3"
ID_PKINIT_KP_CLIENT_AUTH = "1.3.6.1.5.2.3.4"
ID_PKINIT_KP_KDC = "1.3.6.1.5.2.3.5"
ID_PKINIT_KDF_SHA1 = "1.3.6.1.5.2.3.6.1"
ID_PKINIT_KDF_SHA256 = "1.3.6.1.5.2.3.6.2"
ID_PKINIT_KDF_SHA512 = "1.3.6.1.5.2.3.6.3"
ID_PKINIT_KDF_SHA384 = "1.3.6.1.5.2.3.6.4"
ID_PKINIT_SAN = "1.3.6.1.5.2.2"
ID_MS_SC_LOGON = "1.3.6.1.4.1.311.20.2.2"
DH_PUBLIC_NUMBER = "1.2.840.10046.2.1"
ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"


@asn1_type(asn1.ExternalPrincipalIdentifier)
@dataclass(frozen=True, slots=True)
class ExternalPrincipalIdentifier:
    subject_name: bytes | None
    issuer_and_serial_number: bytes | None
    subject_key_identifier: bytes | None


@asn1_type(asn1.PA_PK_AS_REQ)
@dataclass(frozen=True, slots=True)
class PaPkAsReq:
    signed_auth_pack: bytes  # DER ContentInfo(SignedData(AuthPack))
    trusted_certifiers: tuple[ExternalPrincipalIdentifier, ...] | None
    kdc_pk_id: bytes | None


@asn1_type(asn1.PAChecksum2)
@dataclass(frozen=True, slots=True)
class PaChecksum2:
    checksum: bytes
    algorithm_identifier: AlgorithmIdentifier


@asn1_type(asn1.PKAuthenticator)
@dataclass(frozen=True, slots=True)
class PkAuthenticator:
    cusec: int
    ctime: datetime
    nonce: int
    pa_checksum: bytes | None
    freshness_token: bytes | None
    pa_checksum2: PaChecksum2 | None


@asn1_type(asn1.KDFAlgorithmId)
@dataclass(frozen=True, slots=True)
class KdfAlgorithmId:
    kdf_id: str


@asn1_type(asn1.AuthPack)
@dataclass(frozen=True, slots=True)
class AuthPack:
    pk_authenticator: PkAuthenticator
    client_public_value: SubjectPublicKeyInfo | None  # absent => RSA key transport
    supported_cms_types: tuple[AlgorithmIdentifier, ...] | None
    client_dh_nonce: bytes | None
    supported_kdfs: tuple[KdfAlgorithmId, ...] | None


@asn1_type(asn1.DHRepInfo)
@dataclass(frozen=True, slots=True)
class DhRepInfo:
    dh_signed_data: bytes  # DER ContentInfo(SignedData(KDCDHKeyInfo))
    server_dh_nonce: bytes | None
    kdf: KdfAlgorithmId | None


@asn1_type(asn1.PA_PK_AS_REP)
@dataclass(frozen=True, slots=True)
class PaPkAsRep:
    """CHOICE: exactly one of dh_info and enc_key_pack is set."""

    dh_info: DhRepInfo | None
    enc_key_pack: bytes | None  # DER ContentInfo(EnvelopedData(SignedData(ReplyKeyPack)))


@asn1_type(asn1.KDCDHKeyInfo)
@dataclass(frozen=True, slots=True)
class KdcDhKeyInfo:
    subject_public_key: bytes  # DH: DER INTEGER y; ECDH: the ECPoint
    nonce: int
    dh_key_expiration: datetime | None


@asn1_type(asn1.ReplyKeyPack)
@dataclass(frozen=True, slots=True)
class ReplyKeyPack:
    reply_key: EncryptionKey
    as_checksum: Checksum


@asn1_type(asn1.KRB5PrincipalName)
@dataclass(frozen=True, slots=True)
class Krb5PrincipalName:
    realm: str
    principal_name: PrincipalName


@asn1_type(asn1.OtherInfo)
@dataclass(frozen=True, slots=True)
class OtherInfo:
    algorithm_id: AlgorithmIdentifier
    party_u_info: bytes
    party_v_info: bytes
    supp_pub_info: bytes | None
    supp_priv_info: bytes | None


@asn1_type(asn1.PkinitSuppPubInfo)
@dataclass(frozen=True, slots=True)
class PkinitSuppPubInfo:
    enctype: int
    as_req: bytes
    pk_as_rep: bytes


def _verify_choice(value: PaPkAsRep) -> None:
    if (value.dh_info is None) == (value.enc_key_pack is None):
        raise ValueError("PA-PK-AS-REP is a CHOICE: set exactly one of dh_info, enc_key_pack")


decode_pa_pk_as_req, encode_pa_pk_as_req = codec(asn1.PA_PK_AS_REQ, PaPkAsReq)
decode_auth_pack, encode_auth_pack = codec(asn1.AuthPack, AuthPack)
decode_pa_pk_as_rep, _encode_pa_pk_as_rep = codec(asn1.PA_PK_AS_REP, PaPkAsRep)
decode_kdc_dh_key_info, encode_kdc_dh_key_info = codec(asn1.KDCDHKeyInfo, KdcDhKeyInfo)
decode_reply_key_pack, encode_reply_key_pack = codec(asn1.ReplyKeyPack, ReplyKeyPack)
# KRB5PrincipalName is the id-pkinit-san otherName value (RFC 4556 §3.2.2).
decode_krb5_principal_name, encode_krb5_principal_name = codec(asn1.KRB5PrincipalName,
                                                               Krb5PrincipalName)
decode_td_dh_parameters, encode_td_dh_parameters = codec(asn1.TD_DH_PARAMETERS,
                                                         tuple[AlgorithmIdentifier, ...])
decode_td_trusted_certifiers, encode_td_trusted_certifiers = codec(
    asn1.TD_TRUSTED_CERTIFIERS, tuple[ExternalPrincipalIdentifier, ...])
_encode_supp_pub_info = codec(asn1.PkinitSuppPubInfo, PkinitSuppPubInfo)[1]
_encode_other_info = codec(asn1.OtherInfo, OtherInfo)[1]


def encode_pa_pk_as_rep(value: PaPkAsRep) -> bytes:
    _verify_choice(value)
    return _encode_pa_pk_as_rep(value)


def encode_other_info(kdf_oid: str, client: Krb5PrincipalName, kdc: Krb5PrincipalName,
                      enctype: int, as_req: bytes, pk_as_rep: bytes) -> bytes:
    """The DER OtherInfo hashed by the RFC 8636 §3 KDF.

    `as_req` is the DER AS-REQ as received and `pk_as_rep` the DER PA-PK-AS-REP as sent.
    """
    supp = _encode_supp_pub_info(PkinitSuppPubInfo(enctype, as_req, pk_as_rep))
    return _encode_other_info(OtherInfo(AlgorithmIdentifier(kdf_oid, None),
                                        encode_krb5_principal_name(client),
                                        encode_krb5_principal_name(kdc), supp, None))


# --- DH public values (RFC 3279 §2.3.3, RFC 4556 §3.2.3.1) ---------------------------------


@asn1_type(rfc3279.ValidationParms)
@dataclass(frozen=True, slots=True)
class ValidationParms:
    seed: bytes
    pgen_counter: int


@asn1_type(rfc3279.DomainParameters)
@dataclass(frozen=True, slots=True)
class DomainParameters:
    """RFC 3279 §2.3.3 DomainParameters: the parameters of a dhpublicnumber SPKI."""

    p: int
    g: int
    q: int
    j: int | None
    validation_parms: ValidationParms | None


decode_domain_parameters, encode_domain_parameters = codec(rfc3279.DomainParameters,
                                                           DomainParameters)
# A DH public value travels as a DER INTEGER inside the SPKI / KDCDHKeyInfo BIT STRING.
decode_dh_public_value, encode_dh_public_value = codec(univ.Integer, int)
# An ECDH SPKI's parameters are the namedCurve OBJECT IDENTIFIER (RFC 5480 §2.1.1).
decode_named_curve, encode_named_curve = codec(univ.ObjectIdentifier, str)
