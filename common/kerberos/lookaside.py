"""A lookaside cache (RFC 4120 §3.2.3, as MIT's KDC keeps one): the reply sent for each
recent request, keyed by the request's exact bytes. A client that retransmits — a
UDP timeout, or the same request again over TCP after KRB_ERR_RESPONSE_TOO_BIG — gets the
same reply again instead of a replay error; a replayed request is useless to an attacker,
since only the real client can read the reply. Bounded; entries expire after `window`.
No I/O; used by the KDC and the signaling controller."""

from collections import OrderedDict


class Lookaside:
    """Keyed by the request's bytes themselves: an exact match (no digest to compute, no
    collision to rule out), and Python hashes bytes once per object. Bounded by entries and by
    the bytes held (requests and replies), oldest dropped first."""

    def __init__(self, window_s: float = 120.0, max_entries: int = 8192,
                 max_bytes: int = 32 << 20) -> None:
        self._window = window_s
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._held = 0
        self._replies: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()

    @staticmethod
    def key(request: bytes) -> bytes:
        """The key for `request`: the bytes as received (retransmissions are identical)."""
        return request

    def get(self, key: bytes, now: float) -> bytes | None:
        """The reply sent to the request with this key, if it is still remembered."""
        self._expire(now)
        entry = self._replies.get(key)
        return entry[1] if entry is not None else None

    def put(self, key: bytes, reply: bytes, now: float) -> None:
        old = self._replies.pop(key, None)
        if old is not None:
            self._held -= len(key) + len(old[1])
        self._replies[key] = (now + self._window, reply)
        self._held += len(key) + len(reply)
        while len(self._replies) > self._max_entries or self._held > self._max_bytes:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        key, (_, reply) = self._replies.popitem(last=False)
        self._held -= len(key) + len(reply)

    def _expire(self, now: float) -> None:
        while self._replies:
            expires, _ = next(iter(self._replies.values()))
            if expires > now:
                break
            self._drop_oldest()

    def __len__(self) -> int:
        return len(self._replies)
