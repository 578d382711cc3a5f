"""What the provisioning CA records (seed 001, FIG. 6-11): the validation of every field staff
enter, number ranges, the states of customers, devices, number holds and changes, and the
errors the service reports. No I/O: the service (`provisioning/`) stores and serves these."""

import re
from collections.abc import Collection
from enum import StrEnum
from typing import ClassVar


class ProvisioningError(Exception):
    """A refusal the caller is told about (staff, a server, the command line): `status` is a
    stable tag, `detail` a sentence for people. Subclass it; never raise it directly."""

    http_status: ClassVar[int] = 400

    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(f"{status}: {detail}" if detail else status)
        self.status = status
        self.detail = detail


class InvalidField(ProvisioningError):
    """A field that does not validate; `field` names it so that a form can show the message
    next to it."""

    http_status = 422

    def __init__(self, field: str, detail: str) -> None:
        super().__init__("INVALID_" + field.upper(), detail)
        self.field = field


class NotFound(ProvisioningError):
    http_status = 404


class Conflict(ProvisioningError):
    """The records do not allow it now: the number is held by someone else, the device belongs
    to another customer, another change of this customer is still under way..."""

    http_status = 409


class WrongState(Conflict):
    """The customer's state does not allow this change (terminating a terminated customer...)."""


class CustomerState(StrEnum):
    PENDING = "pending"  # a change is being carried out; the device has no usable certificate
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class CustomerKind(StrEnum):
    CUSTOMER = "customer"
    # A repair facility's account (FIG. 11): short-lived test certificates, billed to the
    # facility, not to a customer.
    REPAIR = "repair"


class DeviceState(StrEnum):
    """FIG. 5A from the provisioning CA's side: reported by a controller but nobody's device;
    linked to a customer whose change is under way; holding an operator certificate."""

    UNPROVISIONED = "unprovisioned"
    ASSIGNED = "assigned"
    PROVISIONED = "provisioned"


class HoldState(StrEnum):
    """A number's hold: assigned to a customer, or in quarantine after it (held for nobody,
    not yet back in the pool); a released hold no longer counts."""

    ASSIGNED = "assigned"
    QUARANTINED = "quarantined"
    RELEASED = "released"


class ChangeKind(StrEnum):
    NEW = "new"  # FIG. 7
    TERMINATE = "terminate"  # FIG. 8
    SUSPEND = "suspend"
    RESUME = "resume"
    SERVICE_CHANGE = "service_change"  # FIG. 9
    MOVE = "move"  # FIG. 10
    SWAP = "swap"  # FIG. 11: repair, loaner


class ChangeState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    CANCELLED = "cancelled"


_MAC_FORMS = (
    re.compile(r"^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]"
               r"([0-9a-f]{2})[:-]([0-9a-f]{2})$"),
    re.compile(r"^([0-9a-f]{2})([0-9a-f]{2})\.([0-9a-f]{2})([0-9a-f]{2})\.([0-9a-f]{2})"
               r"([0-9a-f]{2})$"),
    re.compile(r"^([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})"
               r"([0-9a-f]{2})$"),
)


def normalize_mac(value: str) -> str:
    """`aa:bb:cc:dd:ee:ff` from the usual spellings (colons, dashes, Cisco dots, 12 digits).
    A device's MAC is a unicast address (IEEE 802: the low bit of the first octet clear) and
    neither all zeros nor all ones."""
    text = value.strip().lower()
    for form in _MAC_FORMS:
        match = form.match(text)
        if match:
            octets = match.groups()
            break
    else:
        raise InvalidField("mac", "a MAC address is six octets in hex, e.g. "
                           "00:1a:2b:3c:4d:5e")
    if int(octets[0], 16) & 1:
        raise InvalidField("mac", "a multicast address is not a device's MAC")
    if set("".join(octets)) in ({"0"}, {"f"}):
        raise InvalidField("mac", "not a device's MAC address")
    return ":".join(octets)


_NUMBER_PUNCTUATION = re.compile(r"[\s().-]")


def normalize_number(value: str) -> str:
    """A phone number as its digits only (`+1 (555) 010-0100` → `15550100100`): 4 to 15 digits,
    E.164's limit. The phone ID in a certificate is the hash of these digits
    (common.pki.certs.phone_id)."""
    text = _NUMBER_PUNCTUATION.sub("", value.strip())
    text = text.removeprefix("+")
    if not text.isascii() or not text.isdigit() or not 4 <= len(text) <= 15:
        raise InvalidField("number", "a phone number is 4 to 15 digits (spaces, dashes, "
                           "parentheses and a leading + are allowed)")
    return text


def parse_number_range(value: str) -> list[str]:
    """`15550100-15550199` (or one number) as the list of numbers it covers, at most 100,000;
    both ends the same length."""
    first, _, last = value.partition("-")
    low = normalize_number(first)
    high = normalize_number(last) if last else low
    if len(low) != len(high) or int(high) < int(low):
        raise InvalidField("numbers", f"{value!r}: a range is FIRST-LAST, both of one length, "
                           "FIRST not above LAST")
    if int(high) - int(low) >= 100_000:
        raise InvalidField("numbers", f"{value!r}: at most 100000 numbers in one range")
    return [str(n).zfill(len(low)) for n in range(int(low), int(high) + 1)]


def check_text(field: str, value: str, *, max_length: int = 200) -> str:
    """A name or an address: surrounding whitespace dropped, not empty, at most `max_length`
    characters, no control characters."""
    text = " ".join(value.split()) if field != "address" else value.strip()
    if not text:
        raise InvalidField(field, f"the {field} is required")
    if len(text) > max_length:
        raise InvalidField(field, f"the {field} is longer than {max_length} characters")
    if any(ord(c) < 32 and c not in "\n\r\t" for c in text) or "\x7f" in text:
        raise InvalidField(field, f"the {field} holds control characters")
    return text


def check_options(options: Collection[str], allowed: Collection[str]) -> tuple[str, ...]:
    """Service options, each one of `allowed`, sorted, without repeats."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidField("options", f"unknown service options {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(allowed))}")
    return tuple(sorted(set(options)))


_HEADEND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_headend(name: str, known: Collection[str]) -> str:
    """A head-end name the service is configured for."""
    if not _HEADEND.match(name) or name not in known:
        raise InvalidField("headend", f"unknown head-end {name!r}; known: "
                           f"{', '.join(sorted(known)) or 'none configured'}")
    return name
