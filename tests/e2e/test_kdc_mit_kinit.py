"""MIT kinit 1.20 (krb5-user + krb5-pkinit) logs in to telekey's KDC with PKINIT, on real
loopback sockets: the MIT test CA, KDC and client certificates from ../shared/interop."""

import subprocess

import pytest

from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from telekey.mit_realm import require_tool
from tests.conftest import MIT_FIXTURES

pytestmark = pytest.mark.e2e
REALM = "EXAMPLE.TEST"


@pytest.fixture
def kdc(tmp_path):
    db = f"sqlite:///{tmp_path}/kdc.db"
    telekey_cmd("realm", "init", "--realm", REALM, "--db", db)
    telekey_cmd("principal", "add", "phone1", "--db", db)
    config = write_kdc_config(tmp_path, realm=REALM, db_url=db,
                              cert=MIT_FIXTURES / "kdc.pem", key=MIT_FIXTURES / "kdc.key",
                              anchors=[MIT_FIXTURES / "cacert.pem"])
    process = start_kdc(config, tmp_path / "kdc.log")
    yield process
    process.stop()


def mit_env(tmp_path, port, extra_libdefaults=""):
    conf = tmp_path / "krb5.conf"
    conf.write_text(
        "[libdefaults]\n"
        f" default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n"
        f" rdns = false\n{extra_libdefaults}"
        f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n"
        f"  pkinit_anchors = FILE:{MIT_FIXTURES / 'cacert.pem'}\n }}\n")
    return {"PATH": "/usr/bin:/bin:/usr/sbin", "KRB5_CONFIG": str(conf),
            "KRB5CCNAME": f"FILE:{tmp_path / 'ccache'}", "KRB5_TRACE": "/dev/stderr"}


def kinit(env, *args):
    identity = f"FILE:{MIT_FIXTURES / 'phone1.pem'},{MIT_FIXTURES / 'phone1.key'}"
    return subprocess.run([require_tool("kinit"), "-X", f"X509_user_identity={identity}",
                           *args, f"phone1@{REALM}"], env=env, input="", capture_output=True,
                          text=True, timeout=60, check=False)


def test_mit_kinit_pkinit_dh_group14(kdc, tmp_path):
    env = mit_env(tmp_path, kdc.port)
    result = kinit(env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PKINIT" in result.stderr
    klist = subprocess.run([require_tool("klist"), "-e"], env=env, capture_output=True,
                           text=True, check=True).stdout
    assert f"krbtgt/{REALM}@{REALM}" in klist
    events = [e for e in kdc.log_events() if e.get("event") == "as_req"]
    assert [e["code"] for e in events] == [25, 0]  # PREAUTH_REQUIRED, then the login
