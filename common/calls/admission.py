"""Whom a device may call (seed 001): the controller's first decision on an INVITE. No I/O.

A device whose ticket carries the unprovisioned DeviceRestriction may call only the numbers
it lists (customer service, emergency); anything else is 403 Forbidden. A number that is
neither homed here nor routed elsewhere is 404 Not Found. Addresses are
`sip:<phone number>@<realm>`; another realm is 404 too (no federation).
"""

import re
from dataclasses import dataclass

from common.calls.sip import SipMessage
from common.messages.restriction import DeviceRestriction

ADDRESS = re.compile(r"^sips?:(\+?[0-9]{1,15})@([A-Za-z0-9.-]+)(;.*)?$")


@dataclass(frozen=True)
class Admission:
    status: int  # 0 = admitted
    reason: str
    number: str | None = None


def called_number(message: SipMessage, realm: str) -> str | None:
    match = ADDRESS.match(message.uri)
    if match is None or match.group(2).upper() != realm.upper():
        return None
    return match.group(1)


def admit_invite(message: SipMessage, *, realm: str, restriction: DeviceRestriction | None,
                 reachable: set[str]) -> Admission:
    """The status to refuse the INVITE with, or 0 when the call may be set up."""
    number = called_number(message, realm)
    if number is None:
        return Admission(404, "Not Found")
    if restriction is not None and number not in restriction.allowed_numbers:
        return Admission(403, "Forbidden", number)
    if number not in reachable:
        return Admission(404, "Not Found", number)
    return Admission(0, "", number)
