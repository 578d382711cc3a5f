"""Short-lived caches in front of the KDC database: a principal lookup costs a round trip to
SQLite/PostgreSQL, and every AS and TGS request makes two. Entries live `ttl` seconds, so a
principal added or removed through another KDC sharing the database is seen within that time."""

import time
from collections.abc import Callable

from common.tickets import PrincipalEntry
from kdc.db import Database


class CachedPrincipals:
    """A PrincipalStore over `Database` with a per-name TTL (negative answers cached too)."""

    def __init__(self, db: Database, ttl: float = 2.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, PrincipalEntry | None]] = {}

    def get_principal(self, name: str) -> PrincipalEntry | None:
        now = self._clock()
        cached = self._entries.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        entry = self._db.get_principal(name)
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[name] = (now + self._ttl, entry)
        return entry
