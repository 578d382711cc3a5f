"""The head-end access-list interface (seed 001, FIG. 7 steps "MAC address and routing
information" and "ACK", FIG. 8 and FIG. 10 clean-up), with no I/O.

The provisioning CA (and, for a segment move's clean-up, the old signaling controller) tells a
head-end to open or close one MAC's access to the telephony network. A change carries a
`change_id` chosen by its sender, unique for that sender: the head-end applies each id once and
answers a repeat with the acknowledgement it gave the first time, so a sender that lost the
answer (a timeout, a crash between sending and recording) just sends the same change again.
Each applied change increases the entry's `version`. The JSON bodies are documented in
docs/protocol.md ("Provisioning").
"""

import re
from dataclasses import dataclass
from typing import Any

from common.provisioning.records import InvalidField, normalize_mac, normalize_number

_CHANGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_OPTION = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
ACTIONS = ("open", "close")


@dataclass(frozen=True, slots=True)
class AccessChange:
    change_id: str
    mac: str
    action: str  # "open" | "close"
    number: str | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AccessEntry:
    mac: str
    state: str  # "open" | "closed"
    number: str | None
    options: tuple[str, ...]
    version: int
    change_id: str


def decode_change(mac: str, body: Any) -> AccessChange:
    """The change in a `PUT /v1/access/{mac}` body. Raises InvalidField."""
    if not isinstance(body, dict):
        raise InvalidField("body", "a JSON object is expected")
    unknown = set(body) - {"change_id", "action", "number", "options"}
    if unknown:
        raise InvalidField("body", f"unknown fields {sorted(unknown)}")
    change_id = body.get("change_id")
    if not isinstance(change_id, str) or not _CHANGE_ID.match(change_id):
        raise InvalidField("change_id", "1-128 characters of letters, digits and _.:-")
    action = body.get("action")
    if action not in ACTIONS:
        raise InvalidField("action", "`open` or `close`")
    number = body.get("number")
    if number is not None:
        if not isinstance(number, str):
            raise InvalidField("number", "a string")
        number = normalize_number(number)
    if action == "open" and number is None:
        raise InvalidField("number", "opening access needs the device's number")
    options = body.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) and _OPTION.match(o)
                                                for o in options):
        raise InvalidField("options", "a list of option names")
    return AccessChange(change_id, normalize_mac(mac), str(action), number,
                        tuple(sorted(set(options))))


def encode_change(change: AccessChange) -> dict[str, Any]:
    body: dict[str, Any] = {"change_id": change.change_id, "action": change.action,
                            "options": list(change.options)}
    if change.number is not None:
        body["number"] = change.number
    return body


def apply_change(current: AccessEntry | None, change: AccessChange) -> AccessEntry:
    """The entry after `change` (a change already applied, same `change_id`, is the caller's
    to recognise: it must not be applied twice)."""
    version = 1 if current is None else current.version + 1
    if change.action == "open":
        return AccessEntry(change.mac, "open", change.number, change.options, version,
                           change.change_id)
    return AccessEntry(change.mac, "closed", None, (), version, change.change_id)


def encode_entry(headend: str, entry: AccessEntry) -> dict[str, Any]:
    """The acknowledgement of a change, and the answer to a query."""
    return {"headend": headend, "mac": entry.mac, "state": entry.state, "number": entry.number,
            "options": list(entry.options), "version": entry.version,
            "change_id": entry.change_id}
