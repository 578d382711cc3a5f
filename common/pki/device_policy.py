"""Which principal a PKINIT client certificate speaks for, and on what terms (seed 001,
DESIGN.md §2). No I/O: anchors, CRLs and the customer store are handed in.

Rules, in order:
1. The certificate chains to an *operator* anchor (the PKINIT anchors):
   - it is checked against the configured CRLs (72 KDC_ERR_REVOKED_CERTIFICATE);
   - an id-pkinit-san names the principal (RFC 4556 §3.2.2); the EKU must allow PKINIT client
     authentication (77);
   - otherwise it must be an operator-issued device certificate: MAC in the subject CN (-> the
     principal `cta/<12 lowercase hex digits>`) and the phone-ID extension, which must match an
     active customer record (18 KDC_ERR_CLIENT_REVOKED if suspended or unknown);
   - anything else is 75 KDC_ERR_CLIENT_NAME_MISMATCH.
2. Else it chains to a *manufacturer* anchor (directly, or device certificate -> device
   signing certificate -> manufacturer CA for self-issued certificates): MAC in the subject CN
   -> `cta/<mac>`, and the ticket carries the unprovisioned DeviceRestriction (with the
   verified chain, for the controller's report to the provisioning service).
3. Else 70 KDC_ERR_CANT_VERIFY_CERTIFICATE.
The principal must equal the request's cname, else 75. Device principals `cta/<mac>` need no
database entry: the certificate is the credential.
"""

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from common.codes import ErrorCode
from common.errors import KerberosError
from common.messages.restriction import (
    STATE_UNPROVISIONED,
    DeviceRestriction,
    restriction_authorization_data,
)
from common.messages.types import AuthorizationDataEntry
from common.pki.certs import PHONE_ID_OID
from common.pki.chain import (
    CantVerifyCertificate,
    InconsistentKeyPurpose,
    extended_key_usages,
    pkinit_san_names,
    verify_chain,
)

CLIENT_AUTH_EKUS = {"1.3.6.1.5.2.3.4", "1.3.6.1.4.1.311.20.2.2", "2.5.29.37.0"}
_MAC = re.compile(r"^(?:[0-9a-f]{2}[:-]?){5}[0-9a-f]{2}$")


class RevokedCertificate(KerberosError):
    code = ErrorCode.KDC_ERR_REVOKED_CERTIFICATE


class ClientRevoked(KerberosError):
    code = ErrorCode.KDC_ERR_CLIENT_REVOKED


class ClientNameMismatch(KerberosError):
    code = ErrorCode.KDC_ERR_CLIENT_NAME_MISMATCH


@dataclass(frozen=True, slots=True)
class Customer:
    phone_number: str
    phone_id: bytes
    mac: str
    active: bool


class CustomerStore(Protocol):
    def customer_by_phone_id(self, phone_id: bytes) -> Customer | None: ...


@dataclass(frozen=True, slots=True)
class DevicePolicy:
    realm: str
    operator_anchors: tuple[x509.Certificate, ...]
    manufacturer_anchors: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    unprovisioned_numbers: tuple[str, ...] = ()
    require_client_eku: bool = True


@dataclass(frozen=True, slots=True)
class Binding:
    principal: str  # without realm
    kind: str  # "pkinit-san", "operator-device", "manufacturer"
    authorization_data: tuple[AuthorizationDataEntry, ...] = ()
    # An operator-issued device certificate's phone ID: its customer record must be active,
    # checked at every request (check_customer).
    phone_id: bytes | None = None


def mac_principal(cert: x509.Certificate) -> str | None:
    """`cta/<mac>` from a device certificate's subject CN, or None."""
    for attribute in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        value = str(attribute.value).strip().lower()
        if _MAC.match(value):
            return "cta/" + re.sub(r"[:-]", "", value)
    return None


def phone_id_of(cert: x509.Certificate) -> bytes | None:
    """The phone ID of an operator device certificate: its subject serialNumber of 40 or 64
    hex digits (SHA-1 or SHA-256), or the legacy private extension (common/pki/certs.py)."""
    for attribute in cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER):
        value = str(attribute.value).strip()
        if len(value) in (40, 64) and all(c in "0123456789abcdefABCDEF" for c in value):
            return bytes.fromhex(value)
    for extension in cert.extensions:
        if extension.oid.dotted_string == PHONE_ID_OID:
            raw = extension.value.value
            if len(raw) >= 2 and raw[0] == 0x04 and raw[1] == len(raw) - 2:
                return bytes(raw[2:])
    return None


def _check_crls(chain: list[x509.Certificate], crls: tuple[x509.CertificateRevocationList, ...]
                ) -> None:
    for cert, issuer in zip(chain, chain[1:], strict=False):
        for crl in crls:
            if crl.issuer != issuer.subject or not crl.is_signature_valid(
                    issuer.public_key()):  # type: ignore[arg-type]
                continue
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise RevokedCertificate("CERT_REVOKED", cert.subject.rfc4514_string())


def verify_device_chain(cert: x509.Certificate, intermediates: list[x509.Certificate],
                        policy: DevicePolicy, now: datetime
                        ) -> tuple[str, list[x509.Certificate]]:
    """("operator" | "manufacturer", chain): rules 1-3 of the module docstring, chain part.
    The result may be cached by certificate thumbprint (it depends on no database state)."""
    try:
        return "operator", verify_chain(cert, intermediates, list(policy.operator_anchors), now)
    except CantVerifyCertificate:
        if not policy.manufacturer_anchors:
            raise
    return "manufacturer", verify_chain(cert, intermediates, list(policy.manufacturer_anchors),
                                        now)


def certificate_binding(cert: x509.Certificate, kind: str, chain: list[x509.Certificate],
                        policy: DevicePolicy) -> Binding:
    """The principal `cert` speaks for under `policy`: CRLs and names (the rules of this
    module's docstring, but for the customer record). It depends only on the verified chain and
    the policy, so it may be kept with the chain; `check_customer` is what must run at every
    request."""
    if kind == "operator":
        _check_crls(chain, policy.crls)
        names = pkinit_san_names(cert)
        if names:
            usages = extended_key_usages(cert)
            if policy.require_client_eku and not usages & CLIENT_AUTH_EKUS:
                raise InconsistentKeyPurpose("CLIENT_EKU_MISSING", cert.subject.rfc4514_string())
            ours = [n for n in names if n.realm == policy.realm]
            if not ours:
                raise ClientNameMismatch("SAN_OTHER_REALM")
            return Binding("/".join(ours[0].principal_name.name_string), "pkinit-san")
        principal, pid = mac_principal(cert), phone_id_of(cert)
        if principal is None or pid is None:
            raise ClientNameMismatch("NO_PRINCIPAL_IN_CERTIFICATE", cert.subject.rfc4514_string())
        return Binding(principal, "operator-device", phone_id=pid)
    principal = mac_principal(cert)
    if principal is None:
        raise ClientNameMismatch("NO_MAC_IN_SUBJECT", cert.subject.rfc4514_string())
    # The chain goes into the ticket (without its anchor), so the controller can report the
    # device to the provisioning service with a certificate the KDC has verified.
    presented = chain[:-1] if len(chain) > 1 else chain
    restriction = DeviceRestriction(STATE_UNPROVISIONED, policy.unprovisioned_numbers,
                                    tuple(c.public_bytes(Encoding.DER) for c in presented))
    return Binding(principal, "manufacturer", restriction_authorization_data(restriction))


def check_customer(binding: Binding, customers: CustomerStore | None) -> None:
    """An operator-issued device certificate needs an active customer record for its phone ID
    (18 KDC_ERR_CLIENT_REVOKED if suspended or unknown); other bindings need none."""
    if binding.phone_id is None:
        return
    customer = customers.customer_by_phone_id(binding.phone_id) if customers else None
    if customer is None or not customer.active:
        raise ClientRevoked("NO_ACTIVE_CUSTOMER", binding.principal)
