"""The client side of PKINIT (RFC 4556 §3.2.1, §3.2.4): build a signed AS-REQ and check and
open the reply. No I/O; the signer may sit in a PKCS#11 token (the device agent).

The reply is checked completely: KDC certificate chain to the client's anchors, id-pkinit-san
krbtgt/REALM or the KDC EKU, the CMS signature, the nonce, the DH shared secret (left-padded)
or the RSA ReplyKeyPack and its asChecksum over our request.
"""

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from common.codes import ErrorCode, KeyUsage, NameType, PaDataType
from common.crypto import Key
from common.crypto.cms import (
    DIGEST_OIDS,
    Signer,
    certificates_in,
    open_envelope,
    sign_signed_data,
    signer_certificate,
    verify_signed_data,
)
from common.crypto.dh import (
    DhKeyPair,
    EcdhKeyPair,
    ModpGroup,
    generate_dh,
    generate_ecdh,
    known_groups,
)
from common.crypto.pkinit_kdf import octetstring2key, pkinit_kdf
from common.errors import KerberosError, MalformedMessage
from common.messages.cms import (
    AlgorithmIdentifier,
    SignedData,
    SubjectPublicKeyInfo,
    decode_signed_data,
)
from common.messages.kdc_rep import EncKdcRepPart, KdcRep, decode_as_rep, decode_enc_kdc_rep_part
from common.messages.kdc_req import (
    KdcReq,
    KdcReqBody,
    decode_as_req,
    encode_as_req,
    encode_kdc_req_body,
)
from common.messages.pkinit import (
    DH_PUBLIC_NUMBER,
    ID_EC_PUBLIC_KEY,
    ID_PKINIT_AUTH_DATA,
    ID_PKINIT_DHKEY_DATA,
    ID_PKINIT_KDF_SHA1,
    ID_PKINIT_KDF_SHA256,
    ID_PKINIT_KDF_SHA512,
    ID_PKINIT_RKEY_DATA,
    AuthPack,
    DomainParameters,
    KdfAlgorithmId,
    Krb5PrincipalName,
    PaChecksum2,
    PaPkAsReq,
    PkAuthenticator,
    decode_dh_public_value,
    decode_kdc_dh_key_info,
    decode_pa_pk_as_rep,
    decode_reply_key_pack,
    encode_auth_pack,
    encode_dh_public_value,
    encode_domain_parameters,
    encode_named_curve,
    encode_other_info,
    encode_pa_pk_as_req,
)
from common.messages.types import PaData, PrincipalName, find_padata
from common.pki.chain import is_kdc_certificate, verify_chain


class KdcNotTrusted(KerberosError):
    code = ErrorCode.KDC_ERR_KDC_NOT_TRUSTED


@dataclass(frozen=True, slots=True)
class PkinitRequest:
    """What the client must remember between sending the AS-REQ and reading the reply."""

    data: bytes  # the DER AS-REQ as sent
    nonce: int
    dh: DhKeyPair | EcdhKeyPair | None  # None: RSA key transport


@dataclass(frozen=True, slots=True)
class PkinitOptions:
    group: int = 14  # MODP group; 0 = RSA key transport (unless `curve` is set)
    curve: str | None = None  # RFC 5349 ECDH instead: a named-curve OID (P-256, P-384)
    kdfs: tuple[str, ...] = (ID_PKINIT_KDF_SHA256, ID_PKINIT_KDF_SHA1, ID_PKINIT_KDF_SHA512)
    enctypes: tuple[int, ...] = (18, 17, 20, 19)
    digest: str = "sha256"
    freshness_token: bytes | None = None  # RFC 8070: from the KDC's PREAUTH_REQUIRED
    pa_checksum2: str | None = None  # MS-PKCA paChecksum2 digest ("sha256", ...), or none
    # Test hooks: change the request after it is otherwise correct.
    tamper_auth_pack: Callable[[AuthPack], AuthPack] | None = field(default=None)
    tamper_signed: Callable[[bytes], bytes] | None = field(default=None)


def build_pkinit_as_req(*, cname: PrincipalName, realm: str, sname: PrincipalName,
                        signer: Signer, now: datetime, till: datetime,
                        options: PkinitOptions = PkinitOptions(),
                        random: Callable[[int], bytes] = os.urandom,
                        padata_extra: tuple[PaData, ...] = ()) -> PkinitRequest:
    """A PKINIT AS-REQ (RFC 4556 §3.2.1) signed by `signer`."""
    nonce = int.from_bytes(random(4), "big") & 0x7FFFFFFF
    body = KdcReqBody(0x40000010, cname, realm, sname, None, till.replace(microsecond=0),
                      None, nonce, options.enctypes, None, None, None)
    body_der = encode_kdc_req_body(body)
    checksum2 = None
    if options.pa_checksum2:
        checksum2 = PaChecksum2(hashlib.new(options.pa_checksum2, body_der).digest(),
                                AlgorithmIdentifier(DIGEST_OIDS[options.pa_checksum2], None))
    pk_auth = PkAuthenticator(now.microsecond, now.replace(microsecond=0), nonce,
                              hashlib.sha1(body_der).digest(), options.freshness_token,
                              checksum2)
    dh: DhKeyPair | EcdhKeyPair | None = None
    spki = None
    if options.curve:
        dh = generate_ecdh(options.curve)
        spki = SubjectPublicKeyInfo(AlgorithmIdentifier(ID_EC_PUBLIC_KEY,
                                                        encode_named_curve(options.curve)),
                                    dh.public_point)
    elif options.group:
        group: ModpGroup = next(g for g in known_groups() if g.number == options.group)
        dh = generate_dh(group)
        params = encode_domain_parameters(DomainParameters(group.p, group.g, group.q, None,
                                                           None))
        spki = SubjectPublicKeyInfo(AlgorithmIdentifier(DH_PUBLIC_NUMBER, params),
                                    encode_dh_public_value(dh.public_value))
    auth_pack = AuthPack(pk_auth, spki, (AlgorithmIdentifier("2.16.840.1.101.3.4.1.42", None),
                                         AlgorithmIdentifier("1.2.840.113549.3.7", None)),
                         None, tuple(KdfAlgorithmId(k) for k in options.kdfs) or None)
    if options.tamper_auth_pack:
        auth_pack = options.tamper_auth_pack(auth_pack)
    signed = sign_signed_data(ID_PKINIT_AUTH_DATA, encode_auth_pack(auth_pack), signer,
                              options.digest)
    if options.tamper_signed:
        signed = options.tamper_signed(signed)
    padata = (PaData(PaDataType.PA_PK_AS_REQ, encode_pa_pk_as_req(PaPkAsReq(signed, None,
                                                                            None))),
              *padata_extra)
    data = encode_as_req(KdcReq(5, 10, padata, body))
    return PkinitRequest(data, nonce, dh)


@dataclass(frozen=True, slots=True)
class PkinitResult:
    reply: KdcRep
    enc_part: EncKdcRepPart
    reply_key: Key
    session_key: Key


def process_pkinit_as_rep(data: bytes, request: PkinitRequest, *, realm: str,
                          anchors: list[x509.Certificate], now: datetime,
                          decrypt_key: Callable[[bytes], bytes] | None = None) -> PkinitResult:
    """Check and open a PKINIT AS-REP (RFC 4556 §3.2.4). `decrypt_key` unwraps an RSA
    encKeyPack's content key with the client's private key (RSA mode only)."""
    rep = decode_as_rep(data)
    pa = find_padata(rep.padata, PaDataType.PA_PK_AS_REP)
    if pa is None:
        raise MalformedMessage("NO_PA_PK_AS_REP")
    pk = decode_pa_pk_as_rep(pa.padata_value)
    enctype = rep.enc_part.etype
    if pk.dh_info is not None:
        if request.dh is None:
            raise MalformedMessage("UNEXPECTED_DH_REPLY")
        signed = decode_signed_data(pk.dh_info.dh_signed_data)
        content = _verify_kdc_signed(signed, ID_PKINIT_DHKEY_DATA, realm, anchors, now)
        info = decode_kdc_dh_key_info(content)
        if info.nonce != request.nonce:
            raise KdcNotTrusted("NONCE_MISMATCH")
        if isinstance(request.dh, EcdhKeyPair):
            secret = request.dh.shared_secret(info.subject_public_key)
        else:
            secret = request.dh.shared_secret(decode_dh_public_value(info.subject_public_key))
        if pk.dh_info.kdf is not None:
            req = _decoded_request(request)
            body = req.req_body
            assert body.cname is not None and body.sname is not None
            other = encode_other_info(pk.dh_info.kdf.kdf_id,
                                      Krb5PrincipalName(body.realm, body.cname),
                                      Krb5PrincipalName(body.realm, body.sname), enctype,
                                      request.data, pa.padata_value)
            reply_key = pkinit_kdf(pk.dh_info.kdf.kdf_id, secret, other, enctype)
        else:
            reply_key = octetstring2key(secret, enctype)
    elif pk.enc_key_pack is not None and decrypt_key is not None:
        signed = decode_signed_data(open_envelope(pk.enc_key_pack, decrypt_key))
        pack = decode_reply_key_pack(_verify_kdc_signed(signed, ID_PKINIT_RKEY_DATA, realm,
                                                        anchors, now))
        reply_key = Key(pack.reply_key.keytype, pack.reply_key.keyvalue)
        reply_key.verify_checksum(KeyUsage.TGS_REQ_AUTH_CKSUM, request.data,
                                  pack.as_checksum.checksum, pack.as_checksum.cksumtype)
    else:
        raise MalformedMessage("UNUSABLE_PA_PK_AS_REP")
    plain = reply_key.decrypt(KeyUsage.AS_REP_ENCPART, rep.enc_part.cipher)
    enc_part, _ = decode_enc_kdc_rep_part(plain)
    if enc_part.nonce != request.nonce:
        raise KdcNotTrusted("REPLY_NONCE_MISMATCH")
    return PkinitResult(rep, enc_part, reply_key,
                        Key(enc_part.key.keytype, enc_part.key.keyvalue))


def _decoded_request(request: PkinitRequest) -> KdcReq:
    return decode_as_req(request.data)


def _verify_kdc_signed(signed: SignedData, content_type: str, realm: str,
                       anchors: list[x509.Certificate], now: datetime) -> bytes:
    if signed.encap_content_info.e_content_type != content_type:
        raise KdcNotTrusted("BAD_CONTENT_TYPE")
    cert = signer_certificate(signed)
    verify_chain(cert, certificates_in(signed), anchors, now)
    if not is_kdc_certificate(cert, realm):
        raise KdcNotTrusted("NOT_A_KDC_CERTIFICATE", cert.subject.rfc4514_string())
    return verify_signed_data(signed, cert)


def krbtgt(realm: str) -> PrincipalName:
    return PrincipalName(NameType.NT_SRV_INST, ("krbtgt", realm))
