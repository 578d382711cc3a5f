"""The KDC's PKINIT signing key inside a PKCS#11 token (SoftHSM2 here; an HSM in production).

The private key never leaves the token: `common.crypto.cms.Signer` only needs a `sign(data,
digest)` callable. Token calls all come from the KDC's one event-loop thread (SoftHSM must not
be entered from two threads at once, ../shared/pkcs11-notes.md); with `workers` each process
opens its own session after the fork. The PIN is read from a file that must be mode 0600
(runtime/pkcs11_token.py, shared with the master key store, which may use the same token).
"""

import hashlib
from pathlib import Path

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import KeyType, Mechanism, ObjectClass

from common.crypto.cms import ECDSA_WITH, RSA_WITH, Signer
from runtime.pkcs11_token import open_session, read_pin

__all__ = ["read_pin", "token_signer"]

_RSA_MECHANISMS = {"sha1": Mechanism.SHA1_RSA_PKCS, "sha256": Mechanism.SHA256_RSA_PKCS,
                   "sha384": Mechanism.SHA384_RSA_PKCS, "sha512": Mechanism.SHA512_RSA_PKCS}


def token_signer(module: Path, token_label: str, pin_file: Path, key_label: str,
                 certificate: x509.Certificate,
                 chain: tuple[x509.Certificate, ...] = ()) -> Signer:
    """A Signer whose private key is the token object labelled `key_label`."""
    session = open_session(module, token_label, pin_file)  # kept open for the process's life
    key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
    if not isinstance(key, pkcs11.SignMixin):
        raise TypeError(f"token object {key_label!r} cannot sign")
    if key.key_type == KeyType.RSA:
        def sign_rsa(data: bytes, digest: str) -> bytes:
            return bytes(key.sign(data, mechanism=_RSA_MECHANISMS[digest]))

        return Signer(certificate, chain, sign_rsa, RSA_WITH)

    def sign_ec(data: bytes, digest: str) -> bytes:
        # SoftHSM offers only CKM_ECDSA: hash outside, convert r||s to DER.
        raw = bytes(key.sign(hashlib.new(digest, data).digest(), mechanism=Mechanism.ECDSA))
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                    int.from_bytes(raw[half:], "big"))

    return Signer(certificate, chain, sign_ec, ECDSA_WITH)
