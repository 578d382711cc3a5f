"""Short-lived caches in front of the KDC database: a principal lookup costs a round trip to
SQLite/PostgreSQL, and every AS and TGS request makes two. Entries live `ttl` seconds, so a
principal or customer changed through another process sharing the database is seen within
that time (a suspended customer's device is refused at most `ttl` seconds later)."""

import time
from collections.abc import Callable
from typing import Any

from common.kerberos.tickets import PrincipalEntry
from common.pki.device_policy import Customer
from kdc.db import Database


class CachedPrincipals:
    """A PrincipalStore and CustomerStore over `Database` with a per-key TTL (negative answers
    cached too; a reload that finds the same value keeps the cached object)."""

    def __init__(self, db: Database, ttl: float = 2.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[object, tuple[float, Any]] = {}

    def _cached(self, key: object, load: Callable[[], Any]) -> Any:
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        value = load()
        if cached is not None and value == cached[1]:
            # Unchanged: keep the objects already in use, whose keys keep what they have
            # derived (usage keys, PRF results, AES contexts) instead of deriving it again.
            value = cached[1]
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (now + self._ttl, value)
        return value

    def get_principal(self, name: str) -> PrincipalEntry | None:
        entry: PrincipalEntry | None = self._cached(name, lambda: self._db.get_principal(name))
        return entry

    def customer_by_phone_id(self, phone_id: bytes) -> Customer | None:
        customer: Customer | None = self._cached(
            ("customer", phone_id), lambda: self._db.customer_by_phone_id(phone_id))
        return customer
