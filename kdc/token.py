"""The KDC's PKINIT signing key inside a PKCS#11 token (SoftHSM2 here; an HSM in production).

The private key never leaves the token: `common.crypto.cms.Signer` only needs a `sign(data,
digest)` callable. Token calls all come from the KDC's one event-loop thread (SoftHSM must not
be entered from two threads at once, ../shared/pkcs11-notes.md); with `workers` each process
opens its own session after the fork. The PIN is read from a file that must be mode 0600
(runtime/pkcs11_token.py, shared with the master key store, which may use the same token).
"""

import hashlib
import time
from pathlib import Path
from typing import Any

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import KeyType, Mechanism, ObjectClass

from common.crypto.cms import ECDSA_WITH, RSA_WITH, Signer
from runtime.pkcs11_token import load_module, open_session, read_pin

__all__ = ["TokenUnavailable", "read_pin", "token_signer"]

_RSA_MECHANISMS = {"sha1": Mechanism.SHA1_RSA_PKCS, "sha256": Mechanism.SHA256_RSA_PKCS,
                   "sha384": Mechanism.SHA384_RSA_PKCS, "sha512": Mechanism.SHA512_RSA_PKCS}


class TokenUnavailable(Exception):
    """The token, its key or its PIN file cannot be used now (the KDC answers
    KDC_ERR_SVC_UNAVAILABLE and tries the token again, at most once a second)."""


class TokenKey:
    """The signing key in the token, opened again after the token or its PIN file went
    missing and came back: SoftHSM invalidates every handle when its token directory goes, and
    only a module initialised anew finds the token again."""

    RETRY_S = 1.0

    def __init__(self, module: Path, token_label: str, pin_file: Path, key_label: str) -> None:
        self.module, self.token_label, self.pin_file = module, token_label, pin_file
        self.key_label = key_label
        self.key: Any = None
        self.failed_at: float | None = None
        self.reason = ""
        try:  # at start a missing token or PIN file stops the KDC with the reason
            self._open()
        except (pkcs11.exceptions.PKCS11Error, OSError) as exc:
            raise TokenUnavailable(f"token {token_label!r}: {type(exc).__name__} {exc}"
                                   .strip()) from exc

    def _open(self) -> None:
        if self.failed_at is not None:  # handles from before the failure are all dead
            load_module(self.module).reinitialize()
        session = open_session(self.module, self.token_label, self.pin_file)
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=self.key_label)
        if not isinstance(key, pkcs11.SignMixin):
            raise TypeError(f"token object {self.key_label!r} cannot sign")
        self.key, self.failed_at = key, None

    def sign(self, data: bytes, mechanism: Mechanism) -> bytes:
        if self.failed_at is not None:
            if time.monotonic() - self.failed_at < self.RETRY_S:
                raise TokenUnavailable(self.reason)
            try:
                self._open()
            except (pkcs11.exceptions.PKCS11Error, OSError) as exc:
                self._failed(exc)
        try:
            return bytes(self.key.sign(data, mechanism=mechanism))
        except pkcs11.exceptions.PKCS11Error as exc:
            self._failed(exc)
        raise AssertionError("unreachable")

    def _failed(self, exc: BaseException) -> None:
        self.failed_at = time.monotonic()
        self.reason = f"token {self.token_label!r}: {type(exc).__name__} {exc}".strip()
        raise TokenUnavailable(self.reason) from exc


def token_signer(module: Path, token_label: str, pin_file: Path, key_label: str,
                 certificate: x509.Certificate,
                 chain: tuple[x509.Certificate, ...] = ()) -> Signer:
    """A Signer whose private key is the token object labelled `key_label`."""
    token_key = TokenKey(module, token_label, pin_file, key_label)
    if token_key.key.key_type == KeyType.RSA:
        def sign_rsa(data: bytes, digest: str) -> bytes:
            return token_key.sign(data, _RSA_MECHANISMS[digest])

        return Signer(certificate, chain, sign_rsa, RSA_WITH)

    def sign_ec(data: bytes, digest: str) -> bytes:
        # SoftHSM offers only CKM_ECDSA: hash outside, convert r||s to DER.
        raw = token_key.sign(hashlib.new(digest, data).digest(), Mechanism.ECDSA)
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                    int.from_bytes(raw[half:], "big"))

    return Signer(certificate, chain, sign_ec, ECDSA_WITH)
