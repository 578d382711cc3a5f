"""A bounded replay cache (RFC 4120 §3.2.3): remembers request fingerprints until they would
fail the clock-skew check anyway. Used by the KDC for signed PKINIT requests and by the
controller for authenticators. In memory by design (DESIGN.md §5).

Given `elapsed` (monotonic seconds) as well as `now`, an entry is kept until its window has
passed by both clocks: a wall clock stepped forward (which would expire entries early) and back
(which makes their times acceptable to the skew check again) cannot open a window for a
replay."""

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
        # fingerprint -> (expiry by the wall clock, expiry in elapsed seconds or None)
        self._seen: OrderedDict[bytes, tuple[datetime, float | None]] = OrderedDict()

    def check_and_add(self, fingerprint: bytes, now: datetime,
                      elapsed: float | None = None) -> None:
        """Raise Replay if `fingerprint` was seen within the window; else remember it."""
        self._expire(now, elapsed)
        if fingerprint in self._seen:
            raise Replay("REPLAY")
        window = self._window.total_seconds()
        self._seen[fingerprint] = (now + self._window,
                                   None if elapsed is None else elapsed + window)
        if len(self._seen) > self._max_entries:
            # Full: forgetting the oldest is safe only because they expire first anyway;
            # a bounded cache under flood trades replay detection for staying up.
            self._seen.popitem(last=False)

    def _expire(self, now: datetime, elapsed: float | None) -> None:
        while self._seen:
            fingerprint, (expires, expires_elapsed) = next(iter(self._seen.items()))
            if expires > now or (expires_elapsed is not None and elapsed is not None
                                 and expires_elapsed > elapsed):
                break
            del self._seen[fingerprint]

    def __len__(self) -> int:
        return len(self._seen)
