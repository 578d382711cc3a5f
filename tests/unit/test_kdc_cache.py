"""kdc.cache.CachedPrincipals: lookups served from memory for `ttl`, then from the database,
so a change made through another KDC is seen within the TTL."""

from common.crypto import Key
from kdc.cache import CachedPrincipals
from kdc.db import Database


def test_ttl(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/kdc.db")
    assert db.migrate() == 1
    clock = [100.0]
    cache = CachedPrincipals(db, ttl=2.0, clock=lambda: clock[0])
    assert cache.get_principal("phone9") is None
    db.add_principal("phone9", [(1, Key.random(18))])
    assert cache.get_principal("phone9") is None  # negative answer cached
    clock[0] += 2.5
    entry = cache.get_principal("phone9")
    assert entry is not None and entry.keys[0].key.enctype == 18
    db.delete_principal("phone9")
    assert cache.get_principal("phone9") is not None
    clock[0] += 2.5
    assert cache.get_principal("phone9") is None
    assert (tmp_path / "kdc.db").stat().st_mode & 0o777 == 0o600
