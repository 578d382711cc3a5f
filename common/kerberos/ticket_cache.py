"""Opened tickets, kept by their ciphertext. No I/O.

A device holds one ticket for its controller for days and presents it in every AP Request:
each SA it re-keys, each recovery after a restart of its own. Every one of those requests
decrypts the same ticket with the same service key to the same EncTicketPart, and derives the
same usage keys from the same session key. An `OpenedTicket` keeps that result — the
decrypted part, the session key with the usage keys it has derived, the device restriction —
keyed by the ticket's exact cipher bytes, so a ticket costs one decryption, not one per AP
Request (TLS session tickets make the same trade).

It changes nothing a verifier checks: an entry is made only after the ticket decrypted with
its integrity check passing, and it is found only by the very same ciphertext under the very
same service key (the key the lookup returns now: after a key change nothing opened under
the old key is reused, while a reload of unchanged keys, as the KDC's principal cache does
every few seconds, keeps the entries). The validity window, the authenticator and the replay
cache are checked on every request, hit or miss. Bounded: the least recently used entry goes
first. Used by the signaling controller (device tickets) and the KDC's TGS (TGTs).
"""

from collections import OrderedDict
from dataclasses import dataclass

from common.codes import KeyUsage
from common.crypto import Key
from common.messages.restriction import DeviceRestriction, find_restriction
from common.messages.ticket import EncTicketPart, Ticket, decode_enc_ticket_part


@dataclass(frozen=True, slots=True)
class OpenedTicket:
    service_key: Key  # the key that opened it; the entry is only good under the same key
    part: EncTicketPart
    session_key: Key  # keeps the usage keys derived from it
    restriction: DeviceRestriction | None


def open_ticket(ticket: Ticket, service_key: Key) -> OpenedTicket:
    """Decrypt a ticket (BAD_INTEGRITY on a wrong key or altered bytes) and decode its part."""
    part = decode_enc_ticket_part(service_key.decrypt(KeyUsage.KDC_REP_TICKET,
                                                      ticket.enc_part.cipher))
    return OpenedTicket(service_key, part, Key(part.key.keytype, part.key.keyvalue),
                        find_restriction(part.authorization_data))


class TicketCache:
    """Up to `max_entries` opened tickets (0 = keep none: every ticket is decrypted)."""

    def __init__(self, max_entries: int = 16384) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._opened: OrderedDict[bytes, OpenedTicket] = OrderedDict()

    def open(self, ticket: Ticket, service_key: Key) -> OpenedTicket:
        """`open_ticket`, or what it returned for these cipher bytes under this key."""
        cipher = ticket.enc_part.cipher
        opened = self._opened.get(cipher)
        if opened is not None and opened.service_key == service_key:
            self._opened.move_to_end(cipher)
            self.hits += 1
            return opened
        self.misses += 1
        opened = open_ticket(ticket, service_key)
        if self.max_entries > 0:
            self._opened[cipher] = opened
            self._opened.move_to_end(cipher)
            if len(self._opened) > self.max_entries:
                self._opened.popitem(last=False)
        return opened

    def forget(self, ticket: Ticket) -> None:
        """Drop a ticket (it has expired: it will not be good again)."""
        self._opened.pop(ticket.enc_part.cipher, None)

    def __len__(self) -> int:
        return len(self._opened)
