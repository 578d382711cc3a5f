"""Files holding secrets are never readable by others, not even for a moment: created 0600
before any byte is written, whatever the umask or the mode of a file already there; and a key
or PIN file that others can read is refused, naming the file."""

import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from common.kerberos.ccache import CcachePrincipal, Credential
from cta.agent import Agent
from runtime.key_files import (
    append_secret_line,
    read_secret_bytes,
    read_secret_text,
    write_private_key,
    write_secret_file,
)


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_are_0600_under_an_open_umask(tmp_path, open_umask):
    write_secret_file(tmp_path / "keytab", b"secret")
    write_private_key(tmp_path / "kdc.key", ec.generate_private_key(ec.SECP256R1()))
    append_secret_line(tmp_path / "esp_sa", '"IPv4","a","b","0x1"')
    assert {mode(tmp_path / n) for n in ("keytab", "kdc.key", "esp_sa")} == {0o600}


def test_existing_wide_files_are_narrowed_before_anything_is_written(tmp_path, open_umask):
    for name in ("kdc.key", "esp_sa"):
        (tmp_path / name).write_text("old\n")
        (tmp_path / name).chmod(0o644)
    write_private_key(tmp_path / "kdc.key", ec.generate_private_key(ec.SECP256R1()))
    append_secret_line(tmp_path / "esp_sa", "new")
    assert mode(tmp_path / "kdc.key") == mode(tmp_path / "esp_sa") == 0o600
    assert (tmp_path / "esp_sa").read_text() == "old\nnew\n"


def test_the_device_credential_cache_is_0600(tmp_path, open_umask):
    """The agent writes its ccache through a new 0600 file renamed over it (it used to reuse
    a temporary file it found, keeping that file's mode)."""
    (tmp_path / "ccache.new").write_bytes(b"stale")
    (tmp_path / "ccache.new").chmod(0o666)
    device = SimpleNamespace(directory=tmp_path, principal="cta/020000000001")
    agent = Agent(device, None, realm="LAB.TEST", kdc="127.0.0.1:88")  # type: ignore[arg-type]
    me = CcachePrincipal(1, "LAB.TEST", ("cta", "020000000001"))
    tgt = CcachePrincipal(2, "LAB.TEST", ("krbtgt", "LAB.TEST"))
    agent._store(Credential(me, tgt, 18, bytes(32), 1, 1, 2, 0, False, 0, (), (), b"t", b""))
    assert mode(tmp_path / "ccache") == 0o600
    assert [c.server for c in agent.credentials()] == [tgt]


def test_files_others_can_read_are_refused(tmp_path):
    secret = tmp_path / "pin"
    secret.write_text("123456\n")
    secret.chmod(0o600)
    assert read_secret_text(secret) == "123456"
    secret.chmod(0o644)
    with pytest.raises(PermissionError, match=str(secret)):
        read_secret_text(secret)
    with pytest.raises(PermissionError):
        read_secret_bytes(secret)


@pytest.mark.parametrize("which", ["kdc_key_file", "pkcs11_pin_file"])
def test_the_kdc_refuses_to_start_with_a_readable_key_or_pin_file(tmp_path, which):
    from telekey.kdc_process import telekey_cmd, write_kdc_config

    db = f"sqlite:///{tmp_path}/kdc.db"
    pki = tmp_path / "pki"
    telekey_cmd("realm", "init", "--realm", "LAB.TEST", "--db", db, "--pki-dir", str(pki))
    extra = {}
    if which == "kdc_key_file":
        (pki / "kdc.key").chmod(0o644)
        exposed = pki / "kdc.key"
    else:
        exposed = tmp_path / "pin"
        exposed.write_text("1234\n")
        exposed.chmod(0o644)
        extra = {"pkcs11_token_label": "kdc-token", "pkcs11_pin_file": str(exposed)}
    config = write_kdc_config(tmp_path, realm="LAB.TEST", db_url=db, cert=pki / "kdc.pem",
                              key=pki / "kdc.key", anchors=[pki / "ca.pem"], **extra)
    result = subprocess.run([sys.executable, "-m", "kdc", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"{exposed} must not be readable by group or others" in result.stderr
    assert "Traceback" not in result.stderr
