"""The KDC database keeps every key wrapped under the master key (kdc/db.py, schema v3), and the
commands that open it (kdc/cli.py) find the master key in a stash next to a SQLite database:
no plaintext key in the file, the v2 → v3 migration, batched rewrapping, rekey/purge/export/
import, and keytabs written 0600 from their first byte."""

import os
import stat

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from common.crypto import Key
from common.crypto.master_key import MasterKeys
from common.errors import MasterKeyError
from common.kerberos.keytab import decode_keytab
from kdc.db import Database, default_stash_file
from runtime.master_key_store import MasterKeyring, StashStore
from telekey.cli import app

REALM = "LAB.TEST"


def master(*versions: int) -> MasterKeys:
    return MasterKeys.from_master_keys({v: bytes([v]) * 32 for v in versions})


def cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture
def realm(tmp_path):
    db = f"sqlite:///{tmp_path}/kdc.db"
    cli("realm", "init", "--realm", REALM, "--db", db)
    return tmp_path, db


def test_default_stash_sits_next_to_a_sqlite_database():
    assert str(default_stash_file("sqlite:////srv/kdc/kdc.db")) == "/srv/kdc/kdc.db.stash"
    assert default_stash_file("postgresql+psycopg://kdc@db/kdc") is None


def test_no_plaintext_key_in_the_database_file_after_principal_add(realm):
    tmp_path, db = realm
    cli("principal", "add", "sigctl/sc1", "--random-key", "--db", db)
    cli("principal", "ktadd", "sigctl/sc1", "--keytab", str(tmp_path / "sc1.kt"), "--realm",
        REALM, "--db", db)
    exported = [e.key for e in decode_keytab((tmp_path / "sc1.kt").read_bytes())]
    assert len(exported) == 4
    raw = (tmp_path / "kdc.db").read_bytes()
    for key in exported:
        assert key not in raw and key[:8] not in raw
    stash = tmp_path / "kdc.db.stash"
    assert stash.stat().st_mode & 0o777 == 0o600
    with sa.create_engine(db).connect() as conn:
        assert set(conn.execute(sa.text("SELECT mkvno FROM keys")).scalars()) == {1}


def test_without_the_master_key_no_key_is_read_or_written(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/kdc.db", master(1))
    db.migrate()
    db.add_principal("svc", [(1, Key.random(18))])
    blind = Database(db.url)
    blind.add_principal("phone1", [])  # a PKINIT device has no keys
    assert blind.get_principal("phone1").keys == ()
    assert blind.list_principals() == ["phone1", "svc"]
    with pytest.raises(MasterKeyError):
        blind.get_principal("svc")
    with pytest.raises(MasterKeyError):
        blind.add_principal("svc2", [(1, Key.random(18))])


V2 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE principals (id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL UNIQUE,
                         max_life_s INTEGER);
CREATE TABLE keys (principal_id INTEGER NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
                   kvno INTEGER NOT NULL, enctype INTEGER NOT NULL, key BLOB NOT NULL,
                   UNIQUE (principal_id, kvno, enctype));
CREATE TABLE customers (phone_number VARCHAR(32) PRIMARY KEY, phone_id BLOB NOT NULL UNIQUE,
                        mac VARCHAR(17) NOT NULL, active BOOLEAN NOT NULL);
INSERT INTO schema_version VALUES (2);
"""


def make_v2_database(engine: sa.Engine, keys: dict[str, Key]) -> None:
    """A version-2 database as telekey wrote it before: keys in plaintext."""
    with engine.begin() as conn:
        for statement in V2.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement.replace("BLOB", "BYTEA")
                                     if engine.dialect.name == "postgresql" else statement)
        for pid, (name, key) in enumerate(keys.items(), 1):
            conn.execute(sa.text("INSERT INTO principals (id, name) VALUES (:i, :n)"),
                         {"i": pid, "n": name})
            conn.execute(sa.text("INSERT INTO keys VALUES (:i, 1, :e, :k)"),
                         {"i": pid, "e": key.enctype, "k": key.data})


def check_v2_migration(url: str) -> None:
    keys = {f"svc{i}": Key.random(18) for i in range(5)}
    make_v2_database(sa.create_engine(url), keys)
    with pytest.raises(MasterKeyError) as err:
        Database(url).migrate()  # without the master key: refused, nothing changed
    assert err.value.status == "NO_MASTER_KEY"
    db = Database(url, master(1))
    assert db.migrate() == 3
    assert db.master_key_versions_in_use() == {1: 5}
    for name, key in keys.items():
        assert db.get_principal(name).keys[0].key == key
    with db.engine.connect() as conn:
        stored = set(conn.execute(sa.text("SELECT key FROM keys")).scalars())
    assert not stored & {key.data for key in keys.values()}


def test_v2_database_migrates_wrapping_its_plaintext_keys(tmp_path):
    check_v2_migration(f"sqlite:///{tmp_path}/v2.db")  # PostgreSQL: tests/e2e/test_master_key.py


def test_migration_leaves_no_plaintext_bytes_in_the_sqlite_file(tmp_path):
    """secure_delete and VACUUM: the old plaintext is not left in free pages (either suffices;
    with neither, this fails)."""
    url = f"sqlite:///{tmp_path}/v2.db"
    keys = {f"svc{i}": Key.random(18) for i in range(20)}
    make_v2_database(sa.create_engine(url), keys)
    Database(url, master(1)).migrate()
    raw = (tmp_path / "v2.db").read_bytes()
    assert not [name for name, key in keys.items() if key.data[:8] in raw]


def test_rewrap_moves_every_key_to_the_current_version_in_batches(tmp_path):
    url = f"sqlite:///{tmp_path}/kdc.db"
    old = Database(url, master(1))
    old.migrate()
    added = {f"svc{i}": Key.random(18) for i in range(7)}
    for name, key in added.items():
        old.add_principal(name, [(1, key)])
    db = Database(url, master(1, 2))
    seen = []
    assert db.rewrap_keys(batch_size=3, on_batch=seen.append) == 7
    assert seen == [3, 6, 7]
    assert db.master_key_versions_in_use() == {2: 7}
    only_new = Database(url, MasterKeys.from_master_keys({2: bytes([2]) * 32}))
    assert all(only_new.get_principal(n).keys[0].key == k for n, k in added.items())
    assert db.rewrap_keys() == 0


# --- the commands ---------------------------------------------------------------------------


def test_rekey_purge_export_import_through_the_cli(realm):
    tmp_path, db = realm
    cli("principal", "add", "svc", "--random-key", "--db", db)
    before = Database(db, MasterKeyring(StashStore(tmp_path / "kdc.db.stash", "kdc"))
                      ).get_principal("svc")
    out = cli("realm", "rekey-master", "--db", db, "--batch-size", "3").output
    assert "version 2 is current" in out and "8 keys rewrapped" in out
    out = cli("realm", "purge-master", "--db", db).output
    assert "removed master key versions [1]; kept [2]" in out
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse battery staple\n")
    passphrase.chmod(0o600)
    cli("realm", "export-master", "--db", db, "--out", str(tmp_path / "backup"),
        "--passphrase-file", str(passphrase))
    assert (tmp_path / "backup").stat().st_mode & 0o777 == 0o600
    (tmp_path / "kdc.db.stash").unlink()  # the lab host lost its stash
    lost = cli("principal", "ktadd", "svc", "--keytab", str(tmp_path / "kt"), "--realm", REALM,
               "--db", db, ok=False)
    assert lost.exit_code == 1 and "no master key stash" in lost.output
    out = cli("realm", "import-master", "--db", db, "--in", str(tmp_path / "backup"),
              "--passphrase-file", str(passphrase)).output
    assert "imported master key versions [2]" in out
    after = Database(db, MasterKeyring(StashStore(tmp_path / "kdc.db.stash", "kdc"))
                     ).get_principal("svc")
    assert after.keys == before.keys


def test_cli_refuses_a_stash_readable_by_others(realm):
    tmp_path, db = realm
    (tmp_path / "kdc.db.stash").chmod(0o644)
    result = cli("principal", "add", "svc", "--random-key", "--db", db, ok=False)
    assert result.exit_code == 1
    assert "STASH_MODE" in result.output and "chmod 600" in result.output
    assert result.exception is not None and "Traceback" not in result.output


def test_ktadd_creates_the_keytab_0600_even_with_umask_000(realm):
    tmp_path, db = realm
    keytab = tmp_path / "new.kt"
    old = os.umask(0)
    try:
        cli("principal", "ktadd", f"krbtgt/{REALM}", "--keytab", str(keytab), "--realm", REALM,
            "--db", db)
    finally:
        os.umask(old)
    assert stat.S_IMODE(keytab.stat().st_mode) == 0o600


def test_ktadd_never_writes_keys_into_an_existing_wider_keytab(realm):
    """Before, the keys were written into the 0644 file and the mode fixed afterwards."""
    tmp_path, db = realm
    keytab = tmp_path / "old.kt"
    cli("principal", "ktadd", f"krbtgt/{REALM}", "--keytab", str(keytab), "--realm", REALM,
        "--db", db)
    keytab.chmod(0o644)
    first = keytab.read_bytes()
    with keytab.open("rb") as wide:
        cli("principal", "ktadd", f"krbtgt/{REALM}", "--keytab", str(keytab), "--realm", REALM,
            "--db", db)
        assert wide.read() == first  # the 0644 file never held the new content
    assert stat.S_IMODE(keytab.stat().st_mode) == 0o600
    assert len(decode_keytab(keytab.read_bytes())) == 8  # appended to what was there
