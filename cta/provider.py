"""The device's crypto provider: every private-key operation of the agent, inside its PKCS#11
token (SoftHSM2 here), behind one small interface (../shared/pkcs11-notes.md).

- All token calls run on one worker thread: SoftHSM is initialised without locking and must
  never be entered from two threads at once.
- The token is found by label, objects by label and CKA_ID (SHA-1 of the subjectPublicKey).
- The PIN comes from a file of mode 0600; private keys are generated SENSITIVE and not
  EXTRACTABLE, so their bytes never exist outside the token.
- The token can go away under the open session (pulled out; for SoftHSM2, its token
  directory removed). When an operation fails and the token no longer answers
  C_GetTokenInfo, the provider finalises and initialises the module again, finds the token,
  reads the PIN file again and logs in; if any step fails the operation raises
  `TokenUnavailable` naming it, and the next operation tries again. SoftHSM2 2.6.1 does not
  go on from memory: its session then finds no objects, and stays blind even after the
  directory returns, until the module is initialised again.
"""

import hashlib
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pkcs11
import pkcs11.exceptions
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
from pkcs11.util.rsa import encode_rsa_public_key
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc3447

from common.crypto.cms import ECDSA_WITH, RSA_WITH, Signer
from common.log import get_logger

log = get_logger("token")
T = TypeVar("T")
MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
_RSA_SIGN = {"sha1": Mechanism.SHA1_RSA_PKCS, "sha256": Mechanism.SHA256_RSA_PKCS,
             "sha384": Mechanism.SHA384_RSA_PKCS, "sha512": Mechanism.SHA512_RSA_PKCS}
_PRIVATE = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.TOKEN: True}
P256_OID = "1.2.840.10045.3.1.7"


class TokenUnavailable(Exception):
    """The token cannot be used now: `status` is a stable tag (TOKEN_NOT_FOUND,
    MODULE_ERROR, TOKEN_ERROR, PIN_FILE_MISSING, PIN_FILE_UNREADABLE, PIN_REFUSED),
    `detail` is for the log."""

    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(f"{status}: {detail}" if detail else status)
        self.status = status
        self.detail = detail


def read_pin(path: Path) -> str:
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{path} must be mode 0600")
    return path.read_text().strip()


def key_id(public_der_spki: bytes) -> bytes:
    """CKA_ID shared by a key pair and its certificate: SHA-1 of the SubjectPublicKeyInfo."""
    return hashlib.sha1(public_der_spki).digest()


def take_ownership(token_label: str, initial_so_pin: str, user_pin: str,
                   module: Path = MODULE) -> None:
    """Right after `softhsm2-util --init-token` (which takes PINs only as arguments, visible
    in `ps`): replace the SO PIN by a random one that is then discarded and set the user PIN,
    so no PIN that ever appeared on a command line opens the token."""
    import secrets

    token = pkcs11.lib(str(module)).get_token(token_label=token_label)
    with token.open(rw=True, so_pin=initial_so_pin) as session:
        session.init_pin(user_pin)
        session.set_pin(initial_so_pin, secrets.token_hex(16))


class TokenProvider:
    def __init__(self, token_label: str, pin_file: Path, module: Path = MODULE) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pkcs11")
        self.token_label = token_label
        self.pin_file = pin_file
        self._module = module
        # The module object is kept: pkcs11.lib() initialises a finalised module itself, and
        # would raise where _reopen must say why.
        self._lib = self._worker.submit(pkcs11.lib, str(module)).result()
        pin = read_pin(pin_file)

        def open_session() -> Any:
            token = self._lib.get_token(token_label=token_label)
            return token.open(rw=True, user_pin=pin)

        self._session: Any = self._worker.submit(open_session).result()

    def _call(self, fn: Callable[[], T]) -> T:
        return self._worker.submit(self._use, fn).result()

    def _use(self, fn: Callable[[], T]) -> T:
        """Run `fn` (on the worker thread) with a working session: reopen one first if the
        token was lost; if `fn` fails and the token does not answer any more, reopen it and
        run `fn` once more on the new session (the failed try reached a token that was gone,
        so a token back in the meantime costs no failed operation)."""
        if self._session is None:
            self._reopen()
        try:
            return fn()
        except (KeyError, pkcs11.exceptions.PKCS11Error):
            # A missing object or a refused operation is the caller's business, unless the
            # token itself has gone (SoftHSM2 then finds no objects at all).
            if self._answers():
                raise
        self._session = None
        self._reopen()
        return fn()

    def _answers(self) -> bool:
        try:
            self._lib.get_token(token_label=self.token_label)
        except pkcs11.exceptions.PKCS11Error:
            return False
        return True

    def _reopen(self) -> None:
        """The module initialised again, the token found by label, the PIN file read again,
        a new logged-in session; TokenUnavailable names the step that failed."""
        lib = self._lib
        try:
            lib.finalize()
        except pkcs11.exceptions.PKCS11Error:
            pass  # already unusable; C_Initialize below starts afresh either way
        try:
            lib.initialize()
        except pkcs11.exceptions.PKCS11Error as exc:
            raise TokenUnavailable("MODULE_ERROR", f"C_Initialize of {self._module} failed: "
                                   f"{type(exc).__name__} {exc}".strip()) from exc
        try:
            token = lib.get_token(token_label=self.token_label)
        except pkcs11.exceptions.NoSuchToken as exc:
            raise TokenUnavailable("TOKEN_NOT_FOUND",
                                   f"no token labelled {self.token_label!r}") from exc
        except pkcs11.exceptions.PKCS11Error as exc:
            raise TokenUnavailable("TOKEN_ERROR", f"finding token {self.token_label!r}: "
                                   f"{type(exc).__name__} {exc}".strip()) from exc
        try:
            pin = read_pin(self.pin_file)
        except FileNotFoundError as exc:
            raise TokenUnavailable("PIN_FILE_MISSING", str(self.pin_file)) from exc
        except OSError as exc:  # PermissionError: not 0600, or not readable
            raise TokenUnavailable("PIN_FILE_UNREADABLE", str(exc)) from exc
        try:
            self._session = token.open(rw=True, user_pin=pin)
        except (pkcs11.exceptions.PinIncorrect, pkcs11.exceptions.PinInvalid,
                pkcs11.exceptions.PinLenRange, pkcs11.exceptions.PinLocked,
                pkcs11.exceptions.PinExpired) as exc:
            raise TokenUnavailable("PIN_REFUSED", type(exc).__name__) from exc
        except pkcs11.exceptions.PKCS11Error as exc:
            raise TokenUnavailable("TOKEN_ERROR", f"{type(exc).__name__} {exc}".strip()) from exc
        log.info("token_reopened", token=self.token_label)

    def close(self) -> None:
        def close() -> None:
            if self._session is not None:
                try:
                    self._session.close()
                except pkcs11.exceptions.PKCS11Error:
                    pass  # the token went away: there is nothing left to close

        self._worker.submit(close).result()
        self._worker.shutdown()

    # Key generation ------------------------------------------------------------------

    def generate_rsa(self, label: str, bits: int = 2048) -> rsa.RSAPublicKey:
        """A new RSA key pair in the token; returns the public key."""
        def generate() -> bytes:
            public, _ = self._session.generate_keypair(
                KeyType.RSA, bits, label=label, store=True, private_template=_PRIVATE,
                public_template={Attribute.TOKEN: True})
            return bytes(encode_rsa_public_key(public))

        numbers, _ = decoder.decode(self._call(generate), asn1Spec=rfc3447.RSAPublicKey())
        public_key = rsa.RSAPublicNumbers(int(numbers["publicExponent"]),
                                          int(numbers["modulus"])).public_key()
        self._set_id(label, public_key)
        return public_key

    def generate_ec(self, label: str) -> ec.EllipticCurvePublicKey:
        """A new ECDSA P-256 key pair in the token; returns the public key."""
        def generate() -> bytes:
            params = self._session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(P256_OID)},
                local=True)
            public, _ = params.generate_keypair(label=label, store=True,
                                                private_template=_PRIVATE,
                                                public_template={Attribute.TOKEN: True})
            return bytes(encode_ec_public_key(public))

        from cryptography.hazmat.primitives.serialization import load_der_public_key

        public_key = load_der_public_key(self._call(generate))
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        self._set_id(label, public_key)
        return public_key

    def unwrap_private_key(self, label: str, factory_label: str, encrypted_key: bytes,
                           wrapped: bytes, public_key: Any) -> None:
        """Seed 004 key delivery: recover the AES wrapping key with the factory RSA key
        (RSA PKCS#1 v1.5, C_UnwrapKey) as a session object, then unwrap the PKCS#8 private
        key with it (CKM_AES_KEY_WRAP_PAD, RFC 5649) into a sensitive, non-extractable token
        object. Neither key is ever visible to this process."""
        key_type = KeyType.EC if isinstance(public_key, ec.EllipticCurvePublicKey) else KeyType.RSA
        sign_only = {a: pkcs11.DEFAULT for a in (Attribute.ENCRYPT, Attribute.VERIFY,
                                                 Attribute.WRAP)}

        def unwrap() -> None:
            factory = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY,
                                            label=factory_label)
            wrapping = factory.unwrap_key(ObjectClass.SECRET_KEY, KeyType.AES, encrypted_key,
                                          mechanism=Mechanism.RSA_PKCS,
                                          capabilities=pkcs11.MechanismFlag.UNWRAP,
                                          template={Attribute.SENSITIVE: True,
                                                    Attribute.EXTRACTABLE: False})
            try:
                wrapping.unwrap_key(ObjectClass.PRIVATE_KEY, key_type, wrapped, label=label,
                                    mechanism=Mechanism.AES_KEY_WRAP_PAD, store=True,
                                    capabilities=pkcs11.MechanismFlag.SIGN,
                                    template={Attribute.SENSITIVE: True,
                                              Attribute.EXTRACTABLE: False, **sign_only})
            finally:
                wrapping.destroy()

        self._call(unwrap)
        spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ident = key_id(spki)

        def set_id() -> None:
            self._session.get_key(object_class=ObjectClass.PRIVATE_KEY,
                                  label=label)[Attribute.ID] = ident

        self._call(set_id)

    def _set_id(self, label: str, public_key: Any) -> None:
        spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ident = key_id(spki)

        def set_ids() -> None:
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                self._session.get_key(object_class=cls, label=label)[Attribute.ID] = ident

        self._call(set_ids)

    def secret_hmac(self, label: str, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` under the token's secret `label` (CKM_SHA256_HMAC, made
        inside the token); the secret is generated there on first use: a 256-bit
        GENERIC_SECRET, SENSITIVE, not EXTRACTABLE, SIGN only, so its value never leaves the
        token. A phone derives the key that wraps its K_g at rest this way (cta/phone_keys.py),
        as the master key store derives a KEK (runtime/master_key_store.py)."""
        def sign() -> bytes:
            found = list(self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                                    Attribute.LABEL: label}))
            if found:
                key = found[0]
            else:
                key = self._session.generate_key(
                    KeyType.GENERIC_SECRET, 256, label=label, store=True, template={
                        Attribute.TOKEN: True, Attribute.PRIVATE: True,
                        Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                        Attribute.SIGN: True, Attribute.VERIFY: False,
                        Attribute.ENCRYPT: False, Attribute.DECRYPT: False,
                        Attribute.WRAP: False, Attribute.UNWRAP: False,
                        Attribute.DERIVE: False})
            return bytes(key.sign(data, mechanism=Mechanism.SHA256_HMAC))

        return self._call(sign)

    # Private-key operations ----------------------------------------------------------

    def sign(self, label: str, data: bytes, digest: str) -> bytes:
        def sign() -> bytes:
            key = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            if key.key_type == KeyType.RSA:
                return bytes(key.sign(data, mechanism=_RSA_SIGN[digest]))
            raw = bytes(key.sign(hashlib.new(digest, data).digest(), mechanism=Mechanism.ECDSA))
            half = len(raw) // 2
            return encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                        int.from_bytes(raw[half:], "big"))

        return self._call(sign)

    def decrypt(self, label: str, data: bytes) -> bytes:
        """RSA PKCS#1 v1.5 decryption with the token key (PKINIT RSA key transport)."""
        def decrypt() -> bytes:
            key = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            return bytes(key.decrypt(data, mechanism=Mechanism.RSA_PKCS))

        return self._call(decrypt)

    def signer(self, label: str, certificate: x509.Certificate,
               chain: tuple[x509.Certificate, ...] = ()) -> Signer:
        """A common.crypto.cms.Signer whose key is the token object `label`."""
        is_rsa = isinstance(certificate.public_key(), rsa.RSAPublicKey)
        return Signer(certificate, chain, lambda data, digest: self.sign(label, data, digest),
                      RSA_WITH if is_rsa else ECDSA_WITH)

    # Certificates --------------------------------------------------------------------

    def store_certificate(self, label: str, certificate: x509.Certificate,
                          replace: bool = False) -> None:
        """Store a certificate object; with `replace`, the old certificate of that label and
        the key pair it certified are destroyed first."""
        der = certificate.public_bytes(Encoding.DER)
        spki = certificate.public_key().public_bytes(Encoding.DER,
                                                      PublicFormat.SubjectPublicKeyInfo)

        def store() -> None:
            if replace:
                for old in list(self._session.get_objects({
                        Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label})):
                    old_id = old[Attribute.ID]
                    for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                        for key in list(self._session.get_objects({Attribute.CLASS: cls,
                                                                   Attribute.ID: old_id})):
                            key.destroy()
                    old.destroy()
            self._session.create_object({
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
                Attribute.TOKEN: True, Attribute.LABEL: label, Attribute.ID: key_id(spki),
                Attribute.SUBJECT: certificate.subject.public_bytes(),
                Attribute.VALUE: der})

        self._call(store)

    def delete_certificate(self, label: str) -> bool:
        """Destroy the certificate objects labelled `label`, and the key pair each certified
        unless another certificate in the token still certifies that key (an operator
        certificate certifies the factory key, which stays). True if there was one."""
        def delete() -> bool:
            found = list(self._session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE,
                                                    Attribute.LABEL: label}))
            for cert in found:
                ident = cert[Attribute.ID]
                cert.destroy()
                if list(self._session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE,
                                                   Attribute.ID: ident})):
                    continue
                for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                    for key in list(self._session.get_objects({Attribute.CLASS: cls,
                                                               Attribute.ID: ident})):
                        key.destroy()
            return bool(found)

        return self._call(delete)

    def key_label_for(self, certificate: x509.Certificate) -> str:
        """The label of the private key certified by `certificate` (same CKA_ID)."""
        spki = certificate.public_key().public_bytes(Encoding.DER,
                                                      PublicFormat.SubjectPublicKeyInfo)

        def find() -> str:
            keys = list(self._session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                                   Attribute.ID: key_id(spki)}))
            if not keys:
                raise KeyError("no private key for this certificate in the token")
            return str(keys[0][Attribute.LABEL])

        return self._call(find)

    def object_summary(self) -> list[tuple[str, str]]:
        """(class, label) of every object: what the token holds, for before/after checks."""
        def summary() -> list[tuple[str, str]]:
            return sorted((str(o[Attribute.CLASS]), str(o[Attribute.LABEL]))
                          for o in list(self._session.get_objects()))

        return self._call(summary)

    def certificate(self, label: str) -> x509.Certificate:
        def load() -> bytes:
            objects = list(self._session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE,
                                                      Attribute.LABEL: label}))
            if not objects:
                raise KeyError(f"no certificate {label!r} in the token")
            return bytes(objects[0][Attribute.VALUE])

        return x509.load_der_x509_certificate(self._call(load))


class TokenEcKey(ec.EllipticCurvePrivateKey):
    """An ECDSA private key that lives in the token: cryptography's CertificateBuilder calls
    `sign`, which the token performs (pyca/cryptography issue 11616 points to this route).
    Everything that would reveal the key raises."""

    def __init__(self, provider: TokenProvider, label: str,
                 public: ec.EllipticCurvePublicKey) -> None:
        self._provider = provider
        self._label = label
        self._public = public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: bytes | bytearray | memoryview,
             signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        algorithm = signature_algorithm.algorithm
        assert not isinstance(algorithm, Prehashed), "token keys sign whole messages"
        return self._provider.sign(self._label, bytes(data), algorithm.name)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise NotImplementedError("the signing key does not do key agreement")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise PermissionError("the private key never leaves the token")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise PermissionError("the private key never leaves the token")

    def __copy__(self) -> "TokenEcKey":
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> "TokenEcKey":
        return self
