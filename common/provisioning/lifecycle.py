"""From a customer's service before and after a change to what must happen (seed 001, FIG. 7-11),
with no I/O.

A `Service` is what the network grants one customer: a device (MAC) behind a head-end, a number,
service options, and whether access is open (a suspended customer's is not). Every lifecycle
flow is a pair (before, after):

| flow | before | after |
|---|---|---|
| new device (FIG. 7) | none | open service |
| de-provisioning (FIG. 8) | the service | none |
| suspension / resumption | open | closed / closed → open |
| service change (FIG. 9) | options A | options B |
| segment move (FIG. 10) | head-end A, number 1 | head-end B, number 2 |
| repair, loaner (FIG. 11) | MAC 1 | MAC 2 (same number) |

`plan_change` compares the two and returns the `Plan`: the head-end access-list changes (the
old entry closed before the new one opens, so a MAC never has two), the KDC customer records
(suspend the old number, add the new one), whether an operator certificate is issued when
the change completes, and whether the current one is revoked at once (its number or MAC is no
longer the customer's, or the customer is gone) or when the new one is issued (a service
change: the old certificate stays usable until the new one exists).
"""

from dataclasses import dataclass
from enum import StrEnum

from common.provisioning.records import ChangeKind, CustomerState, WrongState


@dataclass(frozen=True, slots=True)
class Service:
    headend: str
    mac: str
    number: str
    options: tuple[str, ...] = ()
    open: bool = True


class AccessAction(StrEnum):
    OPEN = "open"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class AccessStep:
    """One per-MAC access-list change for one head-end (common.provisioning.headend)."""

    headend: str
    mac: str
    action: AccessAction
    number: str | None = None
    options: tuple[str, ...] = ()


class KdcAction(StrEnum):
    ADD = "add"  # an active customer record for the number (added, or made active again)
    SUSPEND = "suspend"


@dataclass(frozen=True, slots=True)
class KdcStep:
    action: KdcAction
    number: str
    mac: str


class Revocation(StrEnum):
    """RFC 5280 §5.3.1 reason codes used here."""

    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessationOfOperation"


@dataclass(frozen=True, slots=True)
class Plan:
    access: tuple[AccessStep, ...]
    kdc: tuple[KdcStep, ...]
    issue_certificate: bool
    # Revoke the customer's current certificate when the change starts (None: not then).
    revoke_now: Revocation | None
    # Revoke it when the new certificate is issued.
    revoke_on_issue: bool


def plan_change(before: Service | None, after: Service | None) -> Plan:
    """What the change from `before` to `after` requires (this module's docstring)."""
    access: list[AccessStep] = []
    kdc: list[KdcStep] = []
    was_open = before is not None and before.open
    is_open = after is not None and after.open
    same_line = (before is not None and after is not None and before.headend == after.headend
                 and before.mac == after.mac)
    if was_open and before is not None and (not is_open or not same_line):
        access.append(AccessStep(before.headend, before.mac, AccessAction.CLOSE))
    if is_open and after is not None and (not was_open or not same_line or before is None
                                          or before.number != after.number
                                          or before.options != after.options):
        access.append(AccessStep(after.headend, after.mac, AccessAction.OPEN, after.number,
                                 after.options))
    same_number = before is not None and after is not None and before.number == after.number
    if was_open and before is not None and (not is_open or not same_number):
        kdc.append(KdcStep(KdcAction.SUSPEND, before.number, before.mac))
    if is_open and after is not None and (not was_open or not same_number):
        kdc.append(KdcStep(KdcAction.ADD, after.number, after.mac))
    identity_changed = after is None or not same_number or (
        before is not None and before.mac != after.mac)
    issue = is_open and after is not None and (
        before is None or identity_changed or before.options != after.options)
    revoke_now: Revocation | None = None
    if before is not None and after is None:
        revoke_now = Revocation.CESSATION_OF_OPERATION
    elif before is not None and identity_changed:
        revoke_now = Revocation.SUPERSEDED
    return Plan(tuple(access), tuple(kdc), issue, revoke_now,
                revoke_on_issue=issue and before is not None and revoke_now is None)


# The customer states a change may start from, the state while it is carried out, and the
# state once every step is acknowledged.
_FLOW: dict[ChangeKind, tuple[frozenset[CustomerState], CustomerState, CustomerState]] = {
    ChangeKind.NEW: (frozenset(), CustomerState.PENDING, CustomerState.ACTIVE),
    ChangeKind.TERMINATE: (frozenset({CustomerState.PENDING, CustomerState.ACTIVE,
                                      CustomerState.SUSPENDED}),
                           CustomerState.TERMINATED, CustomerState.TERMINATED),
    ChangeKind.SUSPEND: (frozenset({CustomerState.ACTIVE}), CustomerState.SUSPENDED,
                         CustomerState.SUSPENDED),
    ChangeKind.RESUME: (frozenset({CustomerState.SUSPENDED}), CustomerState.SUSPENDED,
                        CustomerState.ACTIVE),
    ChangeKind.SERVICE_CHANGE: (frozenset({CustomerState.ACTIVE}), CustomerState.ACTIVE,
                                CustomerState.ACTIVE),
    ChangeKind.MOVE: (frozenset({CustomerState.ACTIVE}), CustomerState.PENDING,
                      CustomerState.ACTIVE),
    ChangeKind.SWAP: (frozenset({CustomerState.ACTIVE}), CustomerState.PENDING,
                      CustomerState.ACTIVE),
}


def check_change_allowed(kind: ChangeKind, state: CustomerState) -> None:
    """Raises WrongState unless a customer in `state` may undergo `kind`."""
    if state not in _FLOW[kind][0]:
        raise WrongState("WRONG_STATE", f"a {state} customer cannot be given a "
                         f"{kind.replace('_', ' ')}")


def state_during(kind: ChangeKind) -> CustomerState:
    return _FLOW[kind][1]


def state_after(kind: ChangeKind) -> CustomerState:
    return _FLOW[kind][2]
