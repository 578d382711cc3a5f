"""A bounded replay cache (RFC 4120 §3.2.3): remembers request fingerprints until they would
fail the clock-skew check anyway. Used by the KDC for signed PKINIT requests and by the
controller for authenticators. In memory by design (DESIGN.md §5)."""

from collections import OrderedDict
from datetime import datetime, timedelta

from common.codes import ErrorCode
from common.errors import KerberosError


class Replay(KerberosError):
    code = ErrorCode.KRB_AP_ERR_REPEAT


class ReplayCache:
    def __init__(self, window: timedelta, max_entries: int = 1_000_000) -> None:
        self._window = window
        self._max_entries = max_entries
        self._seen: OrderedDict[bytes, datetime] = OrderedDict()

    def check_and_add(self, fingerprint: bytes, now: datetime) -> None:
        """Raise Replay if `fingerprint` was seen within the window; else remember it."""
        self._expire(now)
        if fingerprint in self._seen:
            raise Replay("REPLAY")
        self._seen[fingerprint] = now + self._window
        if len(self._seen) > self._max_entries:
            # Full: forgetting the oldest is safe only because they expire first anyway;
            # a bounded cache under flood trades replay detection for staying up.
            self._seen.popitem(last=False)

    def _expire(self, now: datetime) -> None:
        while self._seen:
            fingerprint, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[fingerprint]

    def __len__(self) -> int:
        return len(self._seen)
