"""A lookaside cache (RFC 4120 §3.2.3, as MIT's KDC keeps one): the reply sent for each
recent request, keyed by a hash of the request's exact bytes. A client that retransmits — a
UDP timeout, or the same request again over TCP after KRB_ERR_RESPONSE_TOO_BIG — gets the
same reply again instead of a replay error; a replayed request is useless to an attacker,
since only the real client can read the reply. Bounded; entries expire after `window`.
No I/O; used by the KDC and the signaling controller."""

import hashlib
from collections import OrderedDict


class Lookaside:
    def __init__(self, window_s: float = 120.0, max_entries: int = 8192) -> None:
        self._window = window_s
        self._max_entries = max_entries
        self._replies: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()

    @staticmethod
    def key(request: bytes) -> bytes:
        return hashlib.sha256(request).digest()

    def get(self, key: bytes, now: float) -> bytes | None:
        """The reply sent to the request with this key, if it is still remembered."""
        self._expire(now)
        entry = self._replies.get(key)
        return entry[1] if entry is not None else None

    def put(self, key: bytes, reply: bytes, now: float) -> None:
        self._replies[key] = (now + self._window, reply)
        self._replies.move_to_end(key)
        if len(self._replies) > self._max_entries:
            self._replies.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._replies:
            key, (expires, _) = next(iter(self._replies.items()))
            if expires > now:
                break
            del self._replies[key]

    def __len__(self) -> int:
        return len(self._replies)
