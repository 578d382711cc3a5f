"""Keys at rest: the keyring and file formats of common/crypto/master_key.py, and the stash
store and reloading keyring of runtime/master_key_store.py (no token here: that runs in
tests/e2e/test_master_key.py, in child processes)."""

import hashlib
import hmac
import json
import os

import pytest

from common.crypto.master_key import (
    KEK_LABEL,
    Backup,
    MasterKeys,
    ScryptParams,
    decode_stash,
    derive_backup_keys,
    derive_kek,
    encode_stash,
    open_backup,
    read_backup,
    seal_backup,
    unwrap_key,
    wrap_key,
)
from common.errors import (
    MasterKeyBackupError,
    MasterKeyError,
    MasterKeyIntegrityError,
    UnknownMasterKeyVersion,
)
from runtime.key_files import write_secret_file
from runtime.master_key_store import MasterKeyring, MasterKeyStoreError, StashStore

M1, M2 = bytes(range(32)), bytes(range(32, 64))
FAST = ScryptParams(salt=b"s" * 16, n=1 << 14)


def test_kek_is_hmac_sha256_of_the_label():
    """The derivation a token does with CKM_SHA256_HMAC (docs/protocol.md)."""
    assert derive_kek(M1) == hmac.new(M1, KEK_LABEL, hashlib.sha256).digest()
    assert KEK_LABEL == b"telekey master key: RFC 5649 key-encryption key"


def test_keyring_wraps_under_the_newest_version_and_unwraps_any():
    old = MasterKeys.from_master_keys({1: M1})
    mkvno, wrapped = old.wrap(b"k" * 32)
    assert mkvno == 1 and len(wrapped) == 40  # RFC 5649: 8 bytes more, a multiple of 8
    both = MasterKeys.from_master_keys({1: M1, 2: M2})
    assert both.current == 2 and both.versions == (1, 2)
    assert both.unwrap(1, wrapped) == b"k" * 32
    assert both.wrap(b"k" * 16)[0] == 2
    assert "current=2" in repr(both) and M1.hex() not in repr(both)


def test_unknown_version_and_integrity_failures_are_typed():
    keys = MasterKeys.from_master_keys({1: M1, 2: M2})
    _, wrapped = keys.wrap(b"k" * 32)
    with pytest.raises(UnknownMasterKeyVersion) as unknown:
        keys.unwrap(3, wrapped)
    assert unknown.value.status == "UNKNOWN_MKVNO"
    with pytest.raises(MasterKeyIntegrityError):
        keys.unwrap(1, wrapped)  # the wrong version's KEK
    with pytest.raises(MasterKeyIntegrityError):
        keys.unwrap(2, wrapped[:-8])
    assert issubclass(UnknownMasterKeyVersion, MasterKeyError)


def test_master_key_errors_are_not_kerberos_errors():
    """They never reach the wire (the KDC answers KRB_ERR_GENERIC and logs them)."""
    from common.errors import KerberosError

    for cls in (MasterKeyError, UnknownMasterKeyVersion, MasterKeyIntegrityError,
                MasterKeyBackupError):
        assert not issubclass(cls, KerberosError)


def test_keyring_refuses_bad_keks():
    with pytest.raises(ValueError):
        MasterKeys({})
    with pytest.raises(ValueError):
        MasterKeys({1: b"short"})
    with pytest.raises(ValueError):
        MasterKeys({0: bytes(32)})


def test_stash_format_round_trips():
    data = encode_stash("kdc", {2: M2, 1: M1})
    document = json.loads(data)
    assert document["format"] == "telekey-master-key-stash" and document["version"] == 1
    assert [k["mkvno"] for k in document["keys"]] == [1, 2]
    assert decode_stash(data) == ("kdc", {1: M1, 2: M2})


@pytest.mark.parametrize("data", [b"", b"\xff", b"[]", b'{"format": "x"}',
                                  b'{"format": "telekey-master-key-stash", "version": 2}',
                                  b'{"format": "telekey-master-key-stash", "version": 1, '
                                  b'"service": "kdc", "keys": [{"mkvno": 1, "key": "AAAA"}]}'])
def test_bad_stashes_are_refused(data):
    with pytest.raises(MasterKeyBackupError):
        decode_stash(data)


def test_backup_round_trips_and_wraps_each_key_by_rfc5649():
    keys = derive_backup_keys(b"passphrase", FAST)
    wrapped = {1: wrap_key(keys.wrapping_key, M1), 2: wrap_key(keys.wrapping_key, M2)}
    data = seal_backup(Backup("kdc", FAST, wrapped), keys)
    assert read_backup(data).wrapped == wrapped  # readable without the passphrase
    backup, opened = open_backup(data, b"passphrase")
    assert backup.service == "kdc" and opened == keys
    assert unwrap_key(opened.wrapping_key, backup.wrapped[2]) == M2


def test_backup_with_wrong_passphrase_or_changed_field_is_refused():
    keys = derive_backup_keys(b"passphrase", FAST)
    data = seal_backup(Backup("kdc", FAST, {1: wrap_key(keys.wrapping_key, M1)}), keys)
    with pytest.raises(MasterKeyBackupError) as err:
        open_backup(data, b"wrong")
    assert err.value.status == "BAD_PASSPHRASE"
    document = json.loads(data)
    document["keys"][0]["mkvno"] = 7  # the MAC covers the versions too
    with pytest.raises(MasterKeyBackupError):
        open_backup(json.dumps(document).encode(), b"passphrase")


def test_backup_refuses_scrypt_parameters_out_of_range():
    keys = derive_backup_keys(b"p", FAST)
    data = seal_backup(Backup("kdc", FAST, {1: wrap_key(keys.wrapping_key, M1)}), keys)
    document = json.loads(data)
    document["kdf"]["n"] = 1 << 30
    with pytest.raises(MasterKeyBackupError):
        read_backup(json.dumps(document).encode())


# --- the stash store ----------------------------------------------------------------------


def test_stash_is_created_0600_even_with_umask_000(tmp_path):
    old = os.umask(0)
    try:
        store = StashStore(tmp_path / "kdc.stash", "kdc")
        assert store.versions() == []
        assert store.add_version() == 1
    finally:
        os.umask(old)
    assert (tmp_path / "kdc.stash").stat().st_mode & 0o777 == 0o600
    assert store.load().versions == (1,)


def test_stash_readable_by_others_is_refused(tmp_path):
    store = StashStore(tmp_path / "kdc.stash", "kdc")
    store.add_version()
    (tmp_path / "kdc.stash").chmod(0o644)
    with pytest.raises(MasterKeyStoreError) as err:
        store.load()
    assert err.value.status == "STASH_MODE"
    assert "mode 0644" in str(err.value) and "chmod 600" in str(err.value)


def test_stash_of_another_service_is_refused(tmp_path):
    StashStore(tmp_path / "s", "sigctl").add_version()
    with pytest.raises(MasterKeyStoreError, match="sigctl"):
        StashStore(tmp_path / "s", "kdc").load()


def test_missing_stash_says_how_to_make_one(tmp_path):
    with pytest.raises(MasterKeyStoreError, match="realm init"):
        StashStore(tmp_path / "none", "kdc").load()


def test_stash_versions_added_and_removed_but_never_the_last(tmp_path):
    store = StashStore(tmp_path / "kdc.stash", "kdc")
    assert [store.add_version() for _ in range(3)] == [1, 2, 3]
    store.remove_versions([1, 2])
    assert store.versions() == [3]
    with pytest.raises(MasterKeyStoreError):
        store.remove_versions([3])


def test_stash_backup_restores_into_a_new_stash(tmp_path):
    store = StashStore(tmp_path / "a.stash", "kdc")
    store.add_version()
    store.add_version()
    wrapped = store.load().wrap(b"principal key".ljust(32, b"."))
    backup = store.export_backup(b"passphrase", FAST)
    restored = StashStore(tmp_path / "b.stash", "kdc")
    assert restored.import_backup(backup, b"passphrase") == [1, 2]
    assert restored.load().unwrap(*wrapped) == b"principal key".ljust(32, b".")
    assert restored.import_backup(backup, b"passphrase") == []  # present already
    with pytest.raises(MasterKeyBackupError):
        StashStore(tmp_path / "c.stash", "sigctl").import_backup(backup, b"passphrase")


def test_import_refuses_a_different_key_under_the_same_version(tmp_path):
    backup_from = StashStore(tmp_path / "a.stash", "kdc")
    backup_from.add_version()
    other = StashStore(tmp_path / "b.stash", "kdc")
    other.add_version()  # its own version 1
    with pytest.raises(MasterKeyStoreError) as err:
        other.import_backup(backup_from.export_backup(b"p", FAST), b"p")
    assert err.value.status == "VERSION_CONFLICT"


def test_keyring_reloads_when_it_meets_a_new_version(tmp_path):
    """A KDC meets a key wrapped under a version another process just added."""
    store = StashStore(tmp_path / "kdc.stash", "kdc")
    store.add_version()
    serving = MasterKeyring(StashStore(tmp_path / "kdc.stash", "kdc"))
    assert serving.current == 1
    store.add_version()
    wrapped = MasterKeyring(store).wrap(b"x" * 32)
    assert wrapped[0] == 2
    assert serving.unwrap(*wrapped) == b"x" * 32
    assert serving.current == 2
    store.add_version()  # and again at once: a new version is never waited for
    assert serving.unwrap(*MasterKeyring(store).wrap(b"y" * 32)) == b"y" * 32


def test_a_version_the_store_lacks_is_looked_for_once_a_second(tmp_path):
    loads = []

    class Counting(StashStore):
        def load(self):
            loads.append(1)
            return super().load()

    StashStore(tmp_path / "kdc.stash", "kdc").add_version()
    clock = [100.0]
    keyring = MasterKeyring(Counting(tmp_path / "kdc.stash", "kdc"), clock=lambda: clock[0])
    for _ in range(3):
        with pytest.raises(UnknownMasterKeyVersion):
            keyring.unwrap(9, bytes(40))
    assert len(loads) == 2  # the first load, then one reload looking for version 9
    clock[0] += 1.0
    with pytest.raises(UnknownMasterKeyVersion):
        keyring.unwrap(9, bytes(40))
    assert len(loads) == 3


def test_secret_file_replaces_a_wider_file_without_writing_into_it(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"old")
    path.chmod(0o644)
    with path.open("rb") as old:
        write_secret_file(path, b"new")
        assert old.read() == b"old"  # the 0644 file never held the new bytes
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]
