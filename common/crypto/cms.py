"""CMS SignedData signing and verification (RFC 5652 §5) for PKINIT (RFC 4556 §3.2.1,
§3.2.3): RSA PKCS#1 v1.5 with SHA-1/224/256/384/512 and ECDSA, with signed attributes
(content-type and message-digest) as MIT and Heimdal send them.

Chain validation and certificate policy are the KDC's business; this module answers only "did
the holder of this certificate sign this content?".
"""

import functools
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding

from common.codes import ErrorCode
from common.errors import KerberosError
from common.messages.cms import (
    ID_CONTENT_TYPE,
    ID_MESSAGE_DIGEST,
    ID_SIGNED_DATA,
    AlgorithmIdentifier,
    Attribute,
    EncapsulatedContentInfo,
    EncryptedContentInfo,
    EnvelopedData,
    IssuerAndSerialNumber,
    KeyTransRecipientInfo,
    SignedData,
    SignerIdentifier,
    SignerInfo,
    decode_enveloped_data,
    encode_enveloped_data,
    encode_signed_attributes,
    encode_signed_data,
)
from common.messages.der import encode_length, oid_contents

# Digest OIDs and RSA/ECDSA signature OIDs (RFC 3370, RFC 4055, RFC 5758).
DIGESTS = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
DIGEST_OIDS = {name: oid for oid, name in DIGESTS.items()}
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSA_WITH = {"sha1": "1.2.840.113549.1.1.5", "sha224": "1.2.840.113549.1.1.14",
            "sha256": "1.2.840.113549.1.1.11", "sha384": "1.2.840.113549.1.1.12",
            "sha512": "1.2.840.113549.1.1.13"}
ECDSA_WITH = {"sha1": "1.2.840.10045.4.1", "sha224": "1.2.840.10045.4.3.1",
              "sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3",
              "sha512": "1.2.840.10045.4.3.4"}
_RSA_SIG = {oid: name for name, oid in RSA_WITH.items()}
_ECDSA_SIG = {oid: name for name, oid in ECDSA_WITH.items()}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_DER_NULL = b"\x05\x00"


class InvalidSignatureError(KerberosError):
    """RFC 4556 §3.2.2: the CMS signature does not verify."""

    code = ErrorCode.KDC_ERR_INVALID_SIG


class DigestNotAccepted(KerberosError):
    """RFC 4556 §3.2.2: a digest algorithm in the SignedData is not accepted."""

    code = ErrorCode.KDC_ERR_DIGEST_IN_SIGNED_DATA_NOT_ACCEPTED


@dataclass(frozen=True, slots=True)
class Signer:
    """A signing key and its certificate chain (leaf first). A PKCS#11-backed signer provides
    the same `sign` callable; nothing here needs the private key bytes."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    sign: Callable[[bytes, str], bytes]  # (data, digest name) -> signature
    signature_oids: dict[str, str]  # digest name -> signature algorithm OID
    # Encoded once, sent in every reply: the certificates (leaf first) and the leaf's issuer.
    certificates_der: tuple[bytes, ...] = field(init=False)
    issuer_der: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "certificates_der", tuple(
            c.public_bytes(Encoding.DER) for c in (self.certificate, *self.chain)))
        object.__setattr__(self, "issuer_der", self.certificate.issuer.public_bytes())


def file_signer(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
                certificate: x509.Certificate,
                chain: tuple[x509.Certificate, ...] = ()) -> Signer:
    """A Signer over an in-memory private key (the KDC's key from a file)."""
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key = key

        def sign_rsa(data: bytes, digest: str) -> bytes:
            return rsa_key.sign(data, padding.PKCS1v15(), _HASHES[digest]())

        return Signer(certificate, chain, sign_rsa, RSA_WITH)
    ec_key = key

    def sign_ec(data: bytes, digest: str) -> bytes:
        return ec_key.sign(data, ec.ECDSA(_HASHES[digest]()))

    return Signer(certificate, chain, sign_ec, ECDSA_WITH)


@functools.lru_cache(maxsize=4096)
def _certificate(der: bytes) -> x509.Certificate:
    """A parsed certificate, kept: devices send the same certificates at every login, and a
    kept object also keeps its parsed names and extensions. Failures are not cached."""
    return x509.load_der_x509_certificate(der)


def certificates_in(signed: SignedData) -> list[x509.Certificate]:
    """The X.509 certificates carried in the SignedData (others, e.g. attribute certs, skipped)."""
    found = []
    for der in signed.certificates or ():
        if der[:1] != b"\x30":
            continue
        try:
            found.append(_certificate(der))
        except ValueError as exc:
            raise InvalidSignatureError("BAD_CERTIFICATE", str(exc)) from exc
    return found


def chain_thumbprint(signed: SignedData) -> bytes:
    """SHA-256 over the signer identifiers and every certificate the SignedData carries, as
    received: the key of a cache of verified chains (the same identifier among the same
    certificates names the same signer certificate, so a hit needs no certificate parsed)."""
    parts: list[bytes] = []
    for info in signed.signer_infos:
        ias = info.sid.issuer_and_serial_number
        if ias is not None:
            parts += (b"I", len(ias.issuer).to_bytes(4, "big"), ias.issuer,
                      str(ias.serial_number).encode(), b"\0")
        else:
            ski = info.sid.key_identifier or b""
            parts += (b"K", len(ski).to_bytes(4, "big"), ski)
    for der in signed.certificates or ():
        parts += (len(der).to_bytes(4, "big"), der)
    return hashlib.sha256(b"".join(parts)).digest()


@functools.lru_cache(maxsize=4096)
def issuer_der(cert: x509.Certificate) -> bytes:
    """The DER issuer Name of `cert` (for IssuerAndSerialNumber), encoded once per certificate."""
    return cert.issuer.public_bytes()


def _sid_matches(sid: SignerIdentifier, cert: x509.Certificate) -> bool:
    if sid.issuer_and_serial_number is not None:
        ias = sid.issuer_and_serial_number
        return ias.serial_number == cert.serial_number and ias.issuer == issuer_der(cert)
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return False
    return sid.key_identifier == ski


def signer_certificate(signed: SignedData,
                       extra: list[x509.Certificate] | None = None) -> x509.Certificate:
    """The certificate of the (single) signer, found in the SignedData or in `extra`."""
    if len(signed.signer_infos) != 1:
        raise InvalidSignatureError("SIGNER_COUNT", f"{len(signed.signer_infos)} signers")
    sid = signed.signer_infos[0].sid
    for cert in certificates_in(signed) + list(extra or []):
        if _sid_matches(sid, cert):
            return cert
    raise InvalidSignatureError("SIGNER_NOT_FOUND", "no certificate matches the signer")


def verify_signed_data(signed: SignedData, certificate: x509.Certificate,
                       accepted_digests: frozenset[str] = frozenset(DIGESTS.values())) -> bytes:
    """Verify the single signer of `signed` against `certificate`; return the eContent.

    With signed attributes, content-type must equal eContentType and message-digest must equal
    the digest of eContent, and the signature covers the DER SET OF attributes; without them
    it covers eContent itself (RFC 5652 §5.4).
    """
    if len(signed.signer_infos) != 1:
        raise InvalidSignatureError("SIGNER_COUNT", f"{len(signed.signer_infos)} signers")
    info = signed.signer_infos[0]
    content = signed.encap_content_info.e_content
    if content is None:
        raise InvalidSignatureError("NO_CONTENT", "detached content")
    digest = DIGESTS.get(info.digest_algorithm.algorithm)
    if digest is None or digest not in accepted_digests:
        raise DigestNotAccepted("DIGEST_NOT_ACCEPTED", info.digest_algorithm.algorithm)
    if info.signed_attrs is not None:
        attrs = {a.attr_type: a.attr_values for a in info.signed_attrs}
        content_type = attrs.get(ID_CONTENT_TYPE, ())
        message_digest = attrs.get(ID_MESSAGE_DIGEST, ())
        expected_type = _tlv(0x06, oid_contents(signed.encap_content_info.e_content_type))
        if content_type != (expected_type,):
            raise InvalidSignatureError("CONTENT_TYPE_MISMATCH")
        expected_digest = _tlv(0x04, hashlib.new(digest, content).digest())
        if len(message_digest) != 1 or not hmac.compare_digest(message_digest[0],
                                                               expected_digest):
            raise InvalidSignatureError("MESSAGE_DIGEST_MISMATCH")
        signed_bytes = encode_signed_attributes(info.signed_attrs)
    else:
        signed_bytes = content
    _verify(certificate, info.signature_algorithm.algorithm, digest, info.signature, signed_bytes)
    return content


def _verify(cert: x509.Certificate, algorithm: str, digest: str, signature: bytes,
            data: bytes) -> None:
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and (algorithm == RSA_ENCRYPTION or
                                                  _RSA_SIG.get(algorithm) == digest):
            key.verify(signature, data, padding.PKCS1v15(), _HASHES[digest]())
        elif isinstance(key, ec.EllipticCurvePublicKey) and _ECDSA_SIG.get(algorithm) == digest:
            key.verify(signature, data, ec.ECDSA(_HASHES[digest]()))
        else:
            raise InvalidSignatureError("SIGNATURE_ALGORITHM", algorithm)
    except InvalidSignature as exc:
        raise InvalidSignatureError("BAD_SIGNATURE") from exc


def _tlv(tag: int, contents: bytes) -> bytes:
    return bytes((tag,)) + encode_length(len(contents)) + contents


def sign_signed_data(content_type: str, content: bytes, signer: Signer,
                     digest: str = "sha256", *, content_info: bool = True) -> bytes:
    """DER ContentInfo(SignedData) over `content`, signed attributes included, the signer's
    chain in `certificates` (RFC 4556 §3.2.3.1 dhSignedData, §3.2.3.2 ReplyKeyPack)."""
    attrs = (
        Attribute(ID_CONTENT_TYPE, (_tlv(0x06, oid_contents(content_type)),)),
        Attribute(ID_MESSAGE_DIGEST, (_tlv(0x04, hashlib.new(digest, content).digest()),)),
    )
    signature = signer.sign(encode_signed_attributes(attrs), digest)
    cert = signer.certificate
    info = SignerInfo(
        version=1,
        sid=SignerIdentifier(IssuerAndSerialNumber(signer.issuer_der, cert.serial_number),
                             None),
        digest_algorithm=AlgorithmIdentifier(DIGEST_OIDS[digest], None),
        signed_attrs=attrs,
        signature_algorithm=AlgorithmIdentifier(
            signer.signature_oids[digest],
            _DER_NULL if signer.signature_oids is RSA_WITH else None),
        signature=signature,
        unsigned_attrs=None)
    signed = SignedData(
        version=3,  # eContentType is not id-data (RFC 5652 §5.1)
        digest_algorithms=(AlgorithmIdentifier(DIGEST_OIDS[digest], None),),
        encap_content_info=EncapsulatedContentInfo(content_type, content),
        certificates=signer.certificates_der,
        crls=None,
        signer_infos=(info,))
    return encode_signed_data(signed, content_info=content_info)


# --- EnvelopedData with RSA key transport (RFC 5652 §6, RFC 4556 §3.2.3.2) -----------------

DES_EDE3_CBC = "1.2.840.113549.3.7"
AES128_CBC = "2.16.840.1.101.3.4.1.2"
AES256_CBC = "2.16.840.1.101.3.4.1.42"
CONTENT_CIPHERS = {AES256_CBC: 32, AES128_CBC: 16, DES_EDE3_CBC: 24}  # OID -> key bytes


def _content_cipher(oid: str, key: bytes, iv: bytes) -> "Cipher[modes.CBC]":
    if oid == DES_EDE3_CBC:
        return Cipher(TripleDES(key), modes.CBC(iv))
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def choose_content_cipher(offered: list[str]) -> str:
    """The client's first supportedCMSTypes entry we support; des-ede3-cbc when it lists none
    (the only one MIT 1.20 offers, see ../shared/platform-notes.md)."""
    return next((oid for oid in offered if oid in CONTENT_CIPHERS), DES_EDE3_CBC)


def envelope(content: bytes, recipient: x509.Certificate, cipher_oid: str,
             random: Callable[[int], bytes]) -> bytes:
    """DER ContentInfo(EnvelopedData) of `content` (a DER SignedData) for the holder of the
    RSA certificate `recipient`: KeyTransRecipientInfo with PKCS#1 v1.5, CBC content cipher."""
    public = recipient.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise PublicKeyEncryptionNotSupported("RECIPIENT_NOT_RSA")
    key, iv = random(CONTENT_CIPHERS[cipher_oid]), random(8 if cipher_oid == DES_EDE3_CBC else 16)
    padder = sym_padding.PKCS7(64 if cipher_oid == DES_EDE3_CBC else 128).padder()
    encryptor = _content_cipher(cipher_oid, key, iv).encryptor()
    ciphertext = encryptor.update(padder.update(content) + padder.finalize()) + \
        encryptor.finalize()
    recipient_info = KeyTransRecipientInfo(
        0, SignerIdentifier(IssuerAndSerialNumber(issuer_der(recipient),
                                                  recipient.serial_number), None),
        AlgorithmIdentifier(RSA_ENCRYPTION, _DER_NULL), public.encrypt(key, padding.PKCS1v15()))
    return encode_enveloped_data(EnvelopedData(
        0, None, (recipient_info,),
        EncryptedContentInfo(ID_SIGNED_DATA, AlgorithmIdentifier(cipher_oid, _tlv(0x04, iv)),
                             ciphertext), None))


def open_envelope(data: bytes, decrypt_key: Callable[[bytes], bytes]) -> bytes:
    """The content of a ContentInfo(EnvelopedData) for us; `decrypt_key` unwraps the content
    key (RSA PKCS#1 v1.5), e.g. inside a PKCS#11 token. Raises InvalidSignatureError."""
    enveloped = decode_enveloped_data(data)
    info = enveloped.encrypted_content_info
    oid = info.content_encryption_algorithm.algorithm
    if oid not in CONTENT_CIPHERS or info.encrypted_content is None or \
            not enveloped.recipient_infos:
        raise InvalidSignatureError("UNSUPPORTED_ENVELOPE", oid)
    params = info.content_encryption_algorithm.parameters or b""
    if params[:1] != b"\x04" or len(params) < 2 or params[1] != len(params) - 2:
        raise InvalidSignatureError("BAD_IV")
    try:
        key = decrypt_key(enveloped.recipient_infos[0].encrypted_key)
        decryptor = _content_cipher(oid, key, params[2:]).decryptor()
        padded = decryptor.update(info.encrypted_content) + decryptor.finalize()
        unpadder = sym_padding.PKCS7(64 if oid == DES_EDE3_CBC else 128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise InvalidSignatureError("ENVELOPE_DECRYPT_FAILED") from exc


class PublicKeyEncryptionNotSupported(KerberosError):
    """RFC 4556 §3.2.2: RSA key transport is not possible for this client."""

    code = ErrorCode.KDC_ERR_PUBLIC_KEY_ENCRYPTION_NOT_SUPPORTED
