"""The master key with a live KDC: rotation (`realm rekey-master`) while the KDC serves
encrypted-timestamp keytab logins, a PKCS#11 token lost and restored from its backup, and the
wrapped keys on PostgreSQL."""

import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from common.kerberos.keytab import decode_keytab
from kdc.db import Database
from runtime.kdc_client import keytab_login
from runtime.master_key_store import MasterKeyring, StashStore
from telekey.cli import app
from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from tests.conftest import MIT_FIXTURES
from tests.postgres import postgres_server
from tests.unit.test_kdc_master_key import check_v2_migration

pytestmark = pytest.mark.e2e
REALM = "EXAMPLE.TEST"
SERVICE = "sigctl/sc1.example.test"
MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def kdc_config(directory, db, **extra):
    return write_kdc_config(directory, realm=REALM, db_url=db, cert=MIT_FIXTURES / "kdc.pem",
                            key=MIT_FIXTURES / "kdc.key", anchors=[MIT_FIXTURES / "cacert.pem"],
                            as_rate_per_source=0, **extra)


def login(kdc, keytab):
    credential = keytab_login(f"127.0.0.1:{kdc.port}", keytab, client=SERVICE,
                              service=f"krbtgt/{REALM}", realm=REALM)
    assert credential.server.components == ("krbtgt", REALM)
    return credential


def test_rekey_master_while_the_kdc_serves(tmp_path):
    db = f"sqlite:///{tmp_path}/kdc.db"
    cli("realm", "init", "--realm", REALM, "--db", db)
    for name in (SERVICE, *(f"host/h{i}" for i in range(6))):
        cli("principal", "add", name, "--random-key", "--db", db)
    cli("principal", "ktadd", SERVICE, "--keytab", str(tmp_path / "sc1.kt"), "--realm", REALM,
        "--db", db)
    keytab = decode_keytab((tmp_path / "sc1.kt").read_bytes())
    # No principal cache: every login reads its keys from the database as they are now.
    kdc = start_kdc(kdc_config(tmp_path, db, principal_cache_ttl_s=0), tmp_path / "kdc.log")
    try:
        login(kdc, keytab)
        # Step by step first: a login between every committed batch, the database holding
        # keys under both versions meanwhile.
        store = StashStore(tmp_path / "kdc.db.stash", "kdc")
        store.add_version()
        mixed = []

        def between_batches(done):
            mixed.append(Database(db).master_key_versions_in_use())
            login(kdc, keytab)

        Database(db, MasterKeyring(store)).rewrap_keys(batch_size=5,
                                                       on_batch=between_batches)
        assert {1, 2} <= set().union(*mixed) and len(mixed) == 7  # 32 keys, 5 a batch
        # Then the command, with logins running all along.
        stop, logins, failures = threading.Event(), [], []

        def keep_logging_in():
            while not stop.is_set():
                try:
                    logins.append(login(kdc, keytab))
                except Exception as exc:  # noqa: BLE001 - reported below
                    failures.append(exc)

        thread = threading.Thread(target=keep_logging_in)
        thread.start()
        try:
            out = cli("realm", "rekey-master", "--db", db, "--batch-size", "4", "--purge")
        finally:
            stop.set()
            thread.join(timeout=30)
        assert failures == [] and logins
        assert "version 3 is current" in out and "32 keys rewrapped" in out
        assert "removed master key versions [1, 2]; kept [3]" in out
        assert store.versions() == [3]
        login(kdc, keytab)
        reloads = [e for e in kdc.log_events() if e.get("event") == "master_key_reload"]
        assert [e["current"] for e in reloads] == [2, 3]
        assert not [e for e in kdc.log_events() if e.get("event") == "internal_error"]
    finally:
        kdc.stop()


def test_lost_token_restored_from_backup_decrypts_the_database(tmp_path, monkeypatch):
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    # Only child processes load the module: this process must not fix SOFTHSM2_CONF for good.
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))

    def init_token():
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "master",
                        "--pin", "1234", "--so-pin", "5678"], check=True, capture_output=True)

    init_token()
    for name, text in (("pin", "1234\n"), ("passphrase", "correct horse battery staple\n")):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)
    db = f"sqlite:///{tmp_path}/kdc.db"
    token = ("--token", "master", "--pin-file", str(tmp_path / "pin"))
    telekey_cmd("realm", "init", "--realm", REALM, "--db", db, *token)
    telekey_cmd("principal", "add", SERVICE, "--random-key", "--db", db, *token)
    telekey_cmd("principal", "ktadd", SERVICE, "--keytab", str(tmp_path / "sc1.kt"),
                "--realm", REALM, "--db", db, *token)
    keytab = decode_keytab((tmp_path / "sc1.kt").read_bytes())
    config = kdc_config(tmp_path, db, master_key_token_label="master",
                        pkcs11_pin_file=str(tmp_path / "pin"))
    assert not (tmp_path / "kdc.db.stash").exists()
    kdc = start_kdc(config, tmp_path / "kdc.log")
    try:
        login(kdc, keytab)
    finally:
        kdc.stop()
    telekey_cmd("realm", "export-master", "--db", db, "--out", str(tmp_path / "backup"),
                "--passphrase-file", str(tmp_path / "passphrase"), *token)
    listing = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", "master",
                              "--login", "--pin", "1234", "-O"], capture_output=True, text=True,
                             check=True).stdout
    assert "label:      telekey-master-kdc-1" in listing
    assert "Access:     sensitive, always sensitive, extractable" in listing

    subprocess.run(["softhsm2-util", "--delete-token", "--token", "master"], check=True,
                   capture_output=True)
    init_token()  # a new, empty token: the KDC cannot read its database
    with pytest.raises(RuntimeError, match="NO_MASTER_KEY"):
        start_kdc(config, tmp_path / "kdc-lost.log")
    telekey_cmd("realm", "import-master", "--db", db, "--in", str(tmp_path / "backup"),
                "--passphrase-file", str(tmp_path / "passphrase"), *token)
    kdc = start_kdc(config, tmp_path / "kdc-restored.log")
    try:
        login(kdc, keytab)
    finally:
        kdc.stop()

    # The token's backup holds the RFC 5649 wrap of the same master key a stash would hold:
    # it restores into a stash, which then reads the database too.
    passphrase = b"correct horse battery staple"
    stash = StashStore(tmp_path / "from-token.stash", "kdc")
    assert stash.import_backup((tmp_path / "backup").read_bytes(), passphrase) == [1]
    entry = Database(db, MasterKeyring(stash)).get_principal(SERVICE)
    assert {k.key.data for k in entry.keys} == {e.key for e in keytab}
    # A different master key under a version the token holds is refused, and adds nothing.
    other = StashStore(tmp_path / "other.stash", "kdc")
    other.add_version()
    other.add_version()
    (tmp_path / "other-backup").write_bytes(other.export_backup(passphrase))
    refused = subprocess.run(
        [sys.executable, "-m", "telekey", "realm", "import-master", "--db", db, "--in",
         str(tmp_path / "other-backup"), "--passphrase-file", str(tmp_path / "passphrase"),
         *token], capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1 and "VERSION_CONFLICT" in refused.stderr
    assert "telekey-master-kdc-2" not in subprocess.run(
        ["pkcs11-tool", "--module", MODULE, "--token-label", "master", "--login", "--pin",
         "1234", "-O"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


def test_wrapped_keys_on_postgresql(postgres_url, tmp_path):
    with sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE migrated")
    check_v2_migration(postgres_url.rsplit("/", 1)[0] + "/migrated")

    stash = ("--stash", str(tmp_path / "pg.stash"))
    result = CliRunner().invoke(app, ["realm", "init", "--realm", REALM, "--db", postgres_url])
    assert result.exit_code == 2 and "--stash" in result.output  # no place next to the data
    cli("realm", "init", "--realm", REALM, "--db", postgres_url, *stash)
    cli("principal", "add", SERVICE, "--random-key", "--db", postgres_url, *stash)
    cli("principal", "ktadd", SERVICE, "--keytab", str(tmp_path / "kt"), "--realm", REALM,
        "--db", postgres_url, *stash)
    exported = {e.key for e in decode_keytab((tmp_path / "kt").read_bytes())}
    with sa.create_engine(postgres_url).connect() as conn:
        stored = set(conn.execute(sa.text("SELECT key FROM keys")).scalars())
    assert len(stored) == 8 and not stored & exported
    out = cli("realm", "rekey-master", "--db", postgres_url, "--batch-size", "3", *stash)
    assert "8 keys rewrapped" in out
    assert Database(postgres_url).master_key_versions_in_use() == {2: 8}
