"""kdc.cache.CachedPrincipals: lookups served from memory for `ttl`, then from the database,
so a change made through another KDC is seen within the TTL."""

import os

from common.crypto import Key
from common.crypto.master_key import MasterKeys
from kdc.cache import CachedPrincipals
from kdc.db import Database

MASTER = MasterKeys.from_master_keys({1: os.urandom(32)})


def test_ttl(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/kdc.db", MASTER)
    assert db.migrate() == 3
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


def test_a_reload_that_finds_the_same_keys_keeps_the_cached_entry(tmp_path):
    """After the TTL the database is read again; unchanged, the entry already in use is kept
    (its keys keep what they derived); a new key replaces it."""
    db = Database(f"sqlite:///{tmp_path}/kdc.db", MASTER)
    db.migrate()
    db.add_principal("krbtgt/LAB.TEST", [(1, Key.random(18))])
    clock = [100.0]
    cache = CachedPrincipals(db, ttl=2.0, clock=lambda: clock[0])
    first = cache.get_principal("krbtgt/LAB.TEST")
    clock[0] += 2.5
    assert cache.get_principal("krbtgt/LAB.TEST") is first
    db.delete_principal("krbtgt/LAB.TEST")
    db.add_principal("krbtgt/LAB.TEST", [(2, Key.random(18))])
    clock[0] += 2.5
    changed = cache.get_principal("krbtgt/LAB.TEST")
    assert changed is not first and changed.keys[0].kvno == 2


def test_v1_database_migrates_keeping_principals(tmp_path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/old.db"
    db = Database(url, MASTER)
    db.migrate()
    db.add_principal("sigctl/sc1", [(3, Key.random(18))])
    with db.engine.begin() as conn:  # make it look like a version-1 database
        conn.execute(sa.text("DROP TABLE customers"))
        conn.execute(sa.text("UPDATE schema_version SET version = 1"))
    assert Database(url, MASTER).migrate() == 3
    again = Database(url, MASTER)
    assert again.get_principal("sigctl/sc1").keys[0].kvno == 3
    again.add_customer("+1 555 0100", "00:1A:2B:3C:4D:5E")
    assert [c.mac for c in again.list_customers()] == ["00:1a:2b:3c:4d:5e"]
