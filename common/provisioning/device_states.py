"""The device's two provisioning state machines (seed 001, FIG. 5A and 5B), with no I/O: the
agent (cta/lifecycle.py) feeds them what happens and logs every transition.

HFC access (FIG. 5A). telekey has no DOCSIS registration: "registered with the head-end"
is a login the network answered, and what the head-end grants shows in the certificate the
device logs in with.

| state | how the device gets there |
|---|---|
| `HFC_NOT_CONFIGURED` | start; its operator certificate was refused (de-provisioned) |
| `UNPROVISIONED_HFC_ACCESS` | a login with its factory (or self-issued) certificate |
| `FULLY_REGISTERED_WITH_HFC` | its operator certificate arrived (issued after the head-end ack) |
| `PROVISIONED_HFC_ACCESS` | a login with the operator certificate ("following a reboot") |

Telephony access (FIG. 5B):

| state | how the device gets there |
|---|---|
| `TELEPHONY_NOT_CONFIGURED` | start; ticket expired; operator certificate refused (removed) |
| `UNPROVISIONED_TELEPHONY_ACCESS` | PKINIT with the factory certificate; its SA ended |
| `UNPROVISIONED_SECURITY_CONTEXT` | an AP exchange with the restricted ticket |
| `RECEIVED_OPERATOR_CERTIFICATE` | the operator certificate delivered and installed |
| `PROVISIONED_TELEPHONY_ACCESS` | PKINIT with the operator certificate |

A failed login (the KDC unreachable, a transient error) and a refused AP exchange change
neither state (the seed: "the CTA remains in this state"). `policy_refusal` says which KDC
errors to an operator-certificate login mean that the certificate is no longer good (the
customer is gone, the certificate revoked, another operator's realm): the device then deletes
it and falls back to its factory certificate.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from common.codes import ErrorCode


class HfcState(StrEnum):
    HFC_NOT_CONFIGURED = "HFC_NOT_CONFIGURED"
    UNPROVISIONED_HFC_ACCESS = "UNPROVISIONED_HFC_ACCESS"
    FULLY_REGISTERED_WITH_HFC = "FULLY_REGISTERED_WITH_HFC"
    PROVISIONED_HFC_ACCESS = "PROVISIONED_HFC_ACCESS"


class TelephonyState(StrEnum):
    TELEPHONY_NOT_CONFIGURED = "TELEPHONY_NOT_CONFIGURED"
    UNPROVISIONED_TELEPHONY_ACCESS = "UNPROVISIONED_TELEPHONY_ACCESS"
    UNPROVISIONED_SECURITY_CONTEXT = "UNPROVISIONED_SECURITY_CONTEXT"
    RECEIVED_OPERATOR_CERTIFICATE = "RECEIVED_OPERATOR_CERTIFICATE"
    PROVISIONED_TELEPHONY_ACCESS = "PROVISIONED_TELEPHONY_ACCESS"


class DeviceEvent(StrEnum):
    LOGIN_FACTORY = "login_factory"  # PKINIT ticket on the factory/self-issued certificate
    LOGIN_OPERATOR = "login_operator"  # PKINIT ticket on the operator certificate
    LOGIN_FAILED = "login_failed"  # no ticket, for a reason that may pass
    OPERATOR_REFUSED = "operator_refused"  # the operator certificate refused by policy
    TICKET_EXPIRED = "ticket_expired"  # no valid ticket left
    SA_ESTABLISHED = "sa_established"
    SA_LOST = "sa_lost"  # ended, or the controller lost it
    AP_REFUSED = "ap_refused"  # the controller refused the AP exchange
    CERTIFICATE_RECEIVED = "certificate_received"  # delivered, verified and installed


H, T, E = HfcState, TelephonyState, DeviceEvent

# (state, event) → next state; a pair not listed leaves the state as it is.
HFC_TRANSITIONS: Mapping[tuple[HfcState, DeviceEvent], HfcState] = {
    (H.HFC_NOT_CONFIGURED, E.LOGIN_FACTORY): H.UNPROVISIONED_HFC_ACCESS,
    (H.HFC_NOT_CONFIGURED, E.LOGIN_OPERATOR): H.PROVISIONED_HFC_ACCESS,
    (H.UNPROVISIONED_HFC_ACCESS, E.CERTIFICATE_RECEIVED): H.FULLY_REGISTERED_WITH_HFC,
    (H.UNPROVISIONED_HFC_ACCESS, E.LOGIN_OPERATOR): H.PROVISIONED_HFC_ACCESS,
    (H.FULLY_REGISTERED_WITH_HFC, E.LOGIN_OPERATOR): H.PROVISIONED_HFC_ACCESS,
    (H.FULLY_REGISTERED_WITH_HFC, E.OPERATOR_REFUSED): H.HFC_NOT_CONFIGURED,
    (H.PROVISIONED_HFC_ACCESS, E.OPERATOR_REFUSED): H.HFC_NOT_CONFIGURED,
    (H.PROVISIONED_HFC_ACCESS, E.LOGIN_FACTORY): H.UNPROVISIONED_HFC_ACCESS,
}

TELEPHONY_TRANSITIONS: Mapping[tuple[TelephonyState, DeviceEvent], TelephonyState] = {
    (T.TELEPHONY_NOT_CONFIGURED, E.LOGIN_FACTORY): T.UNPROVISIONED_TELEPHONY_ACCESS,
    (T.TELEPHONY_NOT_CONFIGURED, E.LOGIN_OPERATOR): T.PROVISIONED_TELEPHONY_ACCESS,
    (T.UNPROVISIONED_TELEPHONY_ACCESS, E.SA_ESTABLISHED): T.UNPROVISIONED_SECURITY_CONTEXT,
    (T.UNPROVISIONED_TELEPHONY_ACCESS, E.TICKET_EXPIRED): T.TELEPHONY_NOT_CONFIGURED,
    (T.UNPROVISIONED_TELEPHONY_ACCESS, E.CERTIFICATE_RECEIVED):
        T.RECEIVED_OPERATOR_CERTIFICATE,
    (T.UNPROVISIONED_TELEPHONY_ACCESS, E.LOGIN_OPERATOR): T.PROVISIONED_TELEPHONY_ACCESS,
    (T.UNPROVISIONED_SECURITY_CONTEXT, E.SA_LOST): T.UNPROVISIONED_TELEPHONY_ACCESS,
    (T.UNPROVISIONED_SECURITY_CONTEXT, E.TICKET_EXPIRED): T.TELEPHONY_NOT_CONFIGURED,
    (T.UNPROVISIONED_SECURITY_CONTEXT, E.CERTIFICATE_RECEIVED):
        T.RECEIVED_OPERATOR_CERTIFICATE,
    (T.UNPROVISIONED_SECURITY_CONTEXT, E.LOGIN_OPERATOR): T.PROVISIONED_TELEPHONY_ACCESS,
    (T.RECEIVED_OPERATOR_CERTIFICATE, E.LOGIN_OPERATOR): T.PROVISIONED_TELEPHONY_ACCESS,
    (T.RECEIVED_OPERATOR_CERTIFICATE, E.OPERATOR_REFUSED): T.TELEPHONY_NOT_CONFIGURED,
    (T.PROVISIONED_TELEPHONY_ACCESS, E.CERTIFICATE_RECEIVED):
        T.RECEIVED_OPERATOR_CERTIFICATE,  # a service change (FIG. 9)
    (T.PROVISIONED_TELEPHONY_ACCESS, E.OPERATOR_REFUSED): T.TELEPHONY_NOT_CONFIGURED,
    (T.PROVISIONED_TELEPHONY_ACCESS, E.TICKET_EXPIRED): T.TELEPHONY_NOT_CONFIGURED,
    (T.PROVISIONED_TELEPHONY_ACCESS, E.LOGIN_FACTORY): T.UNPROVISIONED_TELEPHONY_ACCESS,
}

# KDC errors to a login with the operator certificate after which that certificate is
# dropped: the customer is suspended or gone (18), the certificate revoked (72), not under
# this KDC's operator roots (70, 71: another operator, FIG. 10), its name not usable (75), or
# refused by the KDC's policy (12). Others (skew, a KDC that is down, preauthentication)
# may pass, and the certificate is kept.
POLICY_REFUSALS = frozenset({
    ErrorCode.KDC_ERR_POLICY, ErrorCode.KDC_ERR_CLIENT_REVOKED,
    ErrorCode.KDC_ERR_C_PRINCIPAL_UNKNOWN, ErrorCode.KDC_ERR_CLIENT_NOT_TRUSTED,
    ErrorCode.KDC_ERR_CANT_VERIFY_CERTIFICATE, ErrorCode.KDC_ERR_INVALID_CERTIFICATE,
    ErrorCode.KDC_ERR_REVOKED_CERTIFICATE, ErrorCode.KDC_ERR_CLIENT_NAME_MISMATCH})


def policy_refusal(code: int | None) -> bool:
    """Whether a KDC error code to an operator-certificate login condemns the certificate."""
    return code is not None and code in POLICY_REFUSALS


@dataclass(frozen=True, slots=True)
class Transition:
    machine: str  # "hfc" | "telephony"
    before: str
    after: str
    event: DeviceEvent
    at: datetime


@dataclass
class DeviceStates:
    """Both machines, and the transitions they made (newest last, at most `keep`)."""

    hfc: HfcState = HfcState.HFC_NOT_CONFIGURED
    telephony: TelephonyState = TelephonyState.TELEPHONY_NOT_CONFIGURED
    since: dict[str, datetime] = field(default_factory=dict)
    history: list[Transition] = field(default_factory=list)
    keep: int = 50

    def feed(self, event: DeviceEvent, now: datetime) -> list[Transition]:
        """Apply `event` at `now`; the transitions it caused (none, one or two)."""
        made = []
        hfc = HFC_TRANSITIONS.get((self.hfc, event))
        if hfc is not None and hfc != self.hfc:
            made.append(Transition("hfc", self.hfc, hfc, event, now))
            self.hfc = hfc
            self.since["hfc"] = now
        telephony = TELEPHONY_TRANSITIONS.get((self.telephony, event))
        if telephony is not None and telephony != self.telephony:
            made.append(Transition("telephony", self.telephony, telephony, event, now))
            self.telephony = telephony
            self.since["telephony"] = now
        self.history.extend(made)
        del self.history[:-self.keep]
        return made
