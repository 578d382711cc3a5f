"""The device agent's operations, shared by the one-shot commands (`telekey cta login|tgs|
selfcert`) and the long-running agent (`telekey cta run`): PKINIT with a token certificate,
TGS with the TGT, seed 004 self-issuance, and the MIT credential cache that holds the result.

Every private-key operation goes through the device's TokenProvider; the methods block (the
token has one worker thread) and the daemon calls them from an executor."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key

from common.codes import ErrorCode, TypedDataType
from common.crypto import Key
from common.crypto.dh import SMALLEST_DH_BITS, known_groups
from common.errors import KerberosError
from common.kerberos.ccache import (
    CcachePrincipal,
    Credential,
    CredentialCache,
    decode_ccache,
    encode_ccache,
)
from common.kerberos.pkinit_client import (
    PkinitOptions,
    build_pkinit_as_req,
    krbtgt,
    process_pkinit_as_rep,
)
from common.kerberos.renewal import clock_offset
from common.kerberos.tgs_client import build_tgs_req, process_tgs_rep
from common.messages.cms import encode_spki
from common.messages.krb_error import KrbError, decode_krb_error, decode_typed_data
from common.messages.pkinit import decode_domain_parameters, decode_td_dh_parameters
from common.messages.ticket import decode_ticket, encode_ticket
from common.messages.types import PrincipalName
from common.pki.selfcert import (
    KEY_RSA_2048,
    SelfCertProfile,
    SelfCertRefused,
    build_self_issued,
    verify_request,
)
from common.provisioning.delivery import CertificateDelivery, verify_delivery
from cta.device import Device
from cta.provider import TokenEcKey, TokenProvider
from runtime.kdc_client import credential_from_reply, kdc_exchange
from runtime.key_files import write_secret_file

P256 = "1.2.840.10045.3.1.7"
MODES = ("dh", "ecdh", "rsa")


class AgentError(Exception):
    """An operation the KDC or the agent refused; the message is for the operator, `code` the
    KDC's error code when the KDC refused."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Obtained:
    credential: Credential
    method: str  # "DH", "ECDH", "RSA" (PKINIT) or "TGS"
    ccache: Path


def _refusal(reply: bytes) -> AgentError:
    """The KDC's KRB-ERROR by its RFC 4120/4556 name and number, its e-text apart."""
    error = decode_krb_error(reply)
    try:
        name = ErrorCode(error.error_code).name
    except ValueError:
        name = "unknown error"
    text = f"KDC refused: {name} ({error.error_code})"
    return AgentError(f"{text}; e-text: {error.e_text}" if error.e_text else text,
                      error.error_code)


def _offered_group(error: KrbError) -> int | None:
    """The smallest MODP group we can do among those a KDC lists in TD-DH-PARAMETERS with its
    KDC_ERR_DH_KEY_PARAMETERS_NOT_ACCEPTED (RFC 4556 §3.2.3.1), or None."""
    if not error.e_data:
        return None
    try:
        entries = decode_typed_data(error.e_data)
    except KerberosError:
        return None
    known = {(g.p, g.g): g for g in known_groups() if g.bits >= SMALLEST_DH_BITS}
    offered = []
    for entry in entries:
        if entry.data_type != TypedDataType.TD_DH_PARAMETERS or entry.data_value is None:
            continue
        try:
            for algorithm in decode_td_dh_parameters(entry.data_value):
                if algorithm.parameters is None:
                    continue
                params = decode_domain_parameters(algorithm.parameters)
                if (params.p, params.g) in known:
                    offered.append(known[(params.p, params.g)])
        except KerberosError:
            return None
    return min(offered, key=lambda g: g.bits).number if offered else None


class Agent:
    """One device: its token (open for the agent's lifetime), realm, KDC and ccache."""

    def __init__(self, device: Device, provider: TokenProvider, *, realm: str, kdc: str,
                 ccache: Path | None = None) -> None:
        self.device = device
        self.provider = provider
        self.realm = realm
        self.kdc = kdc
        self.ccache = ccache or device.directory / "ccache"
        self.me = CcachePrincipal(1, realm, tuple(device.principal.split("/")))
        self.offset = timedelta()  # KDC time minus ours, learned from KRB_AP_ERR_SKEW
        if self.ccache.exists():
            offset = self.read_cache().kdc_offset
            if offset:
                self.offset = timedelta(seconds=offset[0], microseconds=offset[1])

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    # The credential cache ------------------------------------------------------------

    def read_cache(self) -> CredentialCache:
        return decode_ccache(self.ccache.read_bytes())

    def credentials(self) -> tuple[Credential, ...]:
        if not self.ccache.exists():
            return ()
        return tuple(c for c in self.read_cache().credentials if not c.is_config)

    def tgt(self) -> Credential | None:
        return next((c for c in self.credentials() if c.server.components[:1] == ("krbtgt",)),
                    None)

    def _store(self, credential: Credential) -> None:
        """Add (or replace) one credential; written to a new file and renamed, so a failure
        at any point leaves the previous cache as it was."""
        kept = tuple(c for c in self.credentials() if c.server != credential.server)
        seconds = int(self.offset.total_seconds())
        micro = int((self.offset.total_seconds() - seconds) * 1e6)
        # A new 0600 file renamed over the cache (a stale temporary file's mode is never
        # inherited, and no umask widens it).
        write_secret_file(self.ccache, encode_ccache(CredentialCache(
            self.me, (*kept, credential), kdc_offset=(seconds, micro))))

    # PKINIT --------------------------------------------------------------------------

    def login(self, service: str | None = None, *, mode: str = "dh",
              certificate: str = "factory", clock_error: timedelta = timedelta()) -> Obtained:
        """PKINIT with a token certificate for a TGT or the named controller's ticket;
        `clock_error` pretends the device clock is off (labs, tests)."""
        if mode not in MODES:
            raise AgentError(f"unknown PKINIT mode {mode!r}")
        provider = self.provider
        cert = provider.certificate(certificate)
        key_label = provider.key_label_for(cert)
        # A self-issued certificate chains through the device's signing certificate.
        chain = (provider.certificate("signing"),) if certificate == "self-issued" else ()
        anchors = [provider.certificate("operator-root")]
        sname = PrincipalName(2, tuple(service.split("/"))) if service else krbtgt(self.realm)
        offset = self.offset + clock_error
        group, curve = (0 if mode == "rsa" else 14), (P256 if mode == "ecdh" else None)
        skew_retried = False
        while True:
            now = datetime.now(UTC) + offset
            request = build_pkinit_as_req(
                cname=PrincipalName(1, self.me.components), realm=self.realm, sname=sname,
                signer=provider.signer(key_label, cert, chain), now=now,
                till=now + timedelta(days=7), options=PkinitOptions(group=group, curve=curve))
            reply = kdc_exchange(self.kdc, request.data)
            if reply[:1] != b"\x7e":
                break
            error = decode_krb_error(reply)
            if error.error_code == ErrorCode.KRB_AP_ERR_SKEW and not skew_retried:
                # RFC 4120 §7.5.9: learn the KDC's time from stime and try once more.
                offset += clock_offset(error, now)
                skew_retried = True
                continue
            if error.error_code == ErrorCode.KDC_ERR_DH_KEY_PARAMETERS_NOT_ACCEPTED and \
                    curve is not None and (offered := _offered_group(error)) is not None:
                # RFC 4556 §3.2.3.1: the KDC lists the groups it takes (MIT 1.20 has no ECDH);
                # try again, once, with one of them.
                group, curve, mode = offered, None, "dh"
                continue
            raise _refusal(reply)
        try:
            result = process_pkinit_as_rep(reply, request, realm=self.realm, anchors=anchors,
                                           now=now,
                                           decrypt_key=lambda k: provider.decrypt(key_label, k))
        except KerberosError as exc:
            raise AgentError(f"KDC reply rejected: {exc.status} {exc.detail}") from exc
        self.offset = offset - clock_error
        credential = credential_from_reply(self.me, result.enc_part,
                                           encode_ticket(result.reply.ticket))
        self._store(credential)
        return Obtained(credential, mode.upper(), self.ccache)

    # TGS -----------------------------------------------------------------------------

    def tgs(self, service: str) -> Obtained:
        """With the TGT in the cache, one TGS exchange (no PKINIT) for another service."""
        tgt = self.tgt()
        if tgt is None:
            raise AgentError("no TGT in the cache: log in first")
        request = build_tgs_req(tgt=decode_ticket(tgt.ticket),
                                session_key=Key(tgt.enctype, tgt.key),
                                cname=PrincipalName(tgt.client.name_type, tgt.client.components),
                                realm=self.realm,
                                sname=PrincipalName(2, tuple(service.split("/"))),
                                now=self.now(), lifetime=timedelta(days=7))
        reply = kdc_exchange(self.kdc, request.data)
        if reply[:1] == b"\x7e":
            raise _refusal(reply)
        try:
            rep, part = process_tgs_rep(reply, request)
        except KerberosError as exc:
            raise AgentError(f"KDC reply rejected: {exc.status} {exc.detail}") from exc
        credential = credential_from_reply(tgt.client, part, encode_ticket(rep.ticket))
        self._store(credential)
        return Obtained(credential, "TGS", self.ccache)

    def forget_tickets(self) -> None:
        """Empty the credential cache (its tickets were obtained with a certificate that is
        gone; the controller refuses them)."""
        if self.ccache.exists():
            seconds = int(self.offset.total_seconds())
            micro = int((self.offset.total_seconds() - seconds) * 1e6)
            write_secret_file(self.ccache, encode_ccache(CredentialCache(
                self.me, (), kdc_offset=(seconds, micro))))

    # Seed 001: the operator certificate delivered through the controller -------------

    def install_delivery(self, delivery: CertificateDelivery) -> tuple[str, x509.Certificate]:
        """Act on a certificate delivery (common/provisioning/delivery.py): verify it against
        the token's roots and certificates, self-issue on its request (seed 004), install its
        operator certificate (label `operator`, replacing the previous one; the factory key
        it certifies stays). Returns ("installed" | "held", the certificate): "held" when the
        token has that very certificate already (a repeated delivery), and nothing changes.
        Raises a KerberosError (SelfCertRefused, MalformedMessage) before touching the token
        when the delivery is refused."""
        provider = self.provider
        current = _held(provider, "operator")
        if current is not None and current.public_bytes(Encoding.DER) == delivery.certificate:
            return "held", current
        factory = provider.certificate("factory")
        _, cert = verify_delivery(
            delivery, operator_root=provider.certificate("operator-root"),
            device_mac=self.device.mac, factory=factory, current_operator=current,
            current_self_issued=_held(provider, "self-issued"), now=datetime.now(UTC))
        if provider.key_label_for(cert) != provider.key_label_for(factory):
            raise SelfCertRefused("KEY_MISMATCH", "it does not certify the factory key")
        try:
            self.selfcert(delivery.request)
        except AgentError as exc:
            raise SelfCertRefused("SELFCERT_FAILED", str(exc)) from exc
        provider.delete_certificate("operator")
        provider.store_certificate("operator", cert)
        (self.device.directory / "certs" / "operator.pem").write_bytes(
            cert.public_bytes(Encoding.PEM))
        return "installed", cert

    def drop_operator_certificates(self) -> list[str]:
        """FIG. 8: the operator certificate was refused by policy. Delete it (its key stays
        when it is the factory key), the certificate this device issued itself for that
        service (with its key pair) and the tickets obtained with them; the device is back
        to its factory certificate. Returns the labels deleted."""
        dropped = [label for label in ("operator", "self-issued")
                   if self.provider.delete_certificate(label)]
        for label in dropped:
            (self.device.directory / "certs" / f"{label}.pem").unlink(missing_ok=True)
        self.forget_tickets()
        return dropped

    # Seed 004: self-issued certificates ----------------------------------------------

    def selfcert(self, request: bytes) -> SelfCertProfile:
        """Verify the provisioning server's signed request against the operator root in the
        token, make (or unwrap) the new key pair in the token and issue the certificate with
        the factory signing key. Every check happens before the token is touched, so a
        refused request leaves it unchanged."""
        provider = self.provider
        try:
            current: datetime | None = provider.certificate("self-issued").not_valid_before_utc
        except KeyError:
            current = None
        try:
            profile = verify_request(request, operator_root=provider.certificate("operator-root"),
                                     device_mac=self.device.mac, current_not_before=current,
                                     now=datetime.now(UTC))
        except KerberosError as exc:
            raise AgentError(f"request refused: {exc.status} {exc.detail}") from exc
        public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
        delivered = profile.delivered_key
        if delivered is not None:
            loaded = load_der_public_key(encode_spki(delivered.public_key))
            if not isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                raise AgentError("request refused: DELIVERED_KEY_TYPE")
            public = loaded
        generation = 1 if current is None else int(datetime.now(UTC).timestamp())
        label = f"self-issued-key-{generation}"
        if delivered is not None:
            provider.unwrap_private_key(label, "factory", delivered.encrypted_key,
                                        delivered.wrapped_private_key, public)
        elif profile.key_algorithm == KEY_RSA_2048:
            public = provider.generate_rsa(label)
        else:
            public = provider.generate_ec(label)
        signing_cert = provider.certificate("signing")
        signing_public = signing_cert.public_key()
        if not isinstance(signing_public, ec.EllipticCurvePublicKey):
            raise AgentError("the device signing certificate must hold an ECDSA key")
        cert = build_self_issued(profile, public, signing_cert,
                                 TokenEcKey(provider, "signing", signing_public),
                                 x509.random_serial_number())
        provider.store_certificate("self-issued", cert, replace=True)
        (self.device.directory / "certs" / "self-issued.pem").write_bytes(
            cert.public_bytes(Encoding.PEM))
        return profile


def _held(provider: TokenProvider, label: str) -> x509.Certificate | None:
    try:
        return provider.certificate(label)
    except KeyError:
        return None
