"""X.509 checks PKINIT needs (RFC 4556 §3.2.2, §3.2.4): a chain from the end-entity
certificate to a configured anchor, validity at `now`, CA basic constraints and key usage on
issuers, the PKINIT EKUs, and the id-pkinit-san KRB5PrincipalName.

Errors carry the RFC 4556 codes: 70 CANT_VERIFY_CERTIFICATE (no chain to an anchor),
71 INVALID_CERTIFICATE (expired, not yet valid, malformed), 77 INCONSISTENT_KEY_PURPOSE.
"""

from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from common.codes import ErrorCode
from common.errors import KerberosError, MalformedMessage
from common.messages.pkinit import (
    ID_MS_SC_LOGON,
    ID_PKINIT_KP_CLIENT_AUTH,
    ID_PKINIT_KP_KDC,
    ID_PKINIT_SAN,
    Krb5PrincipalName,
    decode_krb5_principal_name,
)

MAX_CHAIN = 8


class CantVerifyCertificate(KerberosError):
    code = ErrorCode.KDC_ERR_CANT_VERIFY_CERTIFICATE


class InvalidCertificate(KerberosError):
    code = ErrorCode.KDC_ERR_INVALID_CERTIFICATE


class InconsistentKeyPurpose(KerberosError):
    code = ErrorCode.KDC_ERR_INCONSISTENT_KEY_PURPOSE


def _check_time(cert: x509.Certificate, now: datetime) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InvalidCertificate("CERT_EXPIRED_OR_NOT_YET_VALID",
                                 cert.subject.rfc4514_string())


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_ca(cert: x509.Certificate) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CantVerifyCertificate("ISSUER_NOT_CA", cert.subject.rfc4514_string())
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise CantVerifyCertificate("ISSUER_CANNOT_SIGN", cert.subject.rfc4514_string())


def verify_chain(leaf: x509.Certificate, intermediates: list[x509.Certificate],
                 anchors: list[x509.Certificate], now: datetime) -> list[x509.Certificate]:
    """The chain leaf -> ... -> anchor (anchor last). Raises CantVerifyCertificate or
    InvalidCertificate. Signatures, validity times, CA flags and path length are checked."""
    chain = [leaf]
    _check_time(leaf, now)
    current = leaf
    for _ in range(MAX_CHAIN):
        for anchor in anchors:
            if current == anchor or _issued_by(current, anchor):
                if current != anchor:
                    _check_ca(anchor)
                    _check_time(anchor, now)
                    chain.append(anchor)
                return chain
        issuer = next((c for c in intermediates if c not in chain and _issued_by(current, c)),
                      None)
        if issuer is None:
            raise CantVerifyCertificate("NO_CHAIN_TO_ANCHOR", current.issuer.rfc4514_string())
        _check_ca(issuer)
        _check_time(issuer, now)
        chain.append(issuer)
        current = issuer
    raise CantVerifyCertificate("CHAIN_TOO_LONG")


def extended_key_usages(cert: x509.Certificate) -> set[str]:
    try:
        return {oid.dotted_string for oid in
                cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value}
    except x509.ExtensionNotFound:
        return set()


def verify_client_eku(cert: x509.Certificate, *, allow_sc_logon: bool = True,
                      require: bool = True) -> None:
    """id-pkinit-KPClientAuth (or Microsoft smart-card logon when allowed), else error 77.

    An EKU only restricts; it never authorises a principal by itself (CVE-2017-7562)."""
    if not require:
        return
    usages = extended_key_usages(cert)
    if ID_PKINIT_KP_CLIENT_AUTH in usages or (allow_sc_logon and ID_MS_SC_LOGON in usages):
        return
    raise InconsistentKeyPurpose("CLIENT_EKU_MISSING", cert.subject.rfc4514_string())


def is_kdc_certificate(cert: x509.Certificate, realm: str) -> bool:
    """RFC 4556 §3.2.4: id-pkinit-san krbtgt/REALM@REALM, or the id-pkinit-KPKdc EKU."""
    for name in pkinit_san_names(cert):
        if name.realm == realm and name.principal_name.name_string == ("krbtgt", realm):
            return True
    return ID_PKINIT_KP_KDC in extended_key_usages(cert)


def pkinit_san_names(cert: x509.Certificate) -> list[Krb5PrincipalName]:
    """Every id-pkinit-san otherName in the certificate, decoded (RFC 4556 §3.2.2)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = []
    for general in san:
        if isinstance(general, x509.OtherName) and general.type_id.dotted_string == ID_PKINIT_SAN:
            try:
                names.append(decode_krb5_principal_name(general.value))
            except MalformedMessage as exc:
                raise InvalidCertificate("BAD_PKINIT_SAN", str(exc)) from exc
    return names
