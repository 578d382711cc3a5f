"""A realm made only by telekey (`realm init --pki-dir`, `cert client`): MIT kinit logs in with
PKINIT trusting telekey's CA; an expired client certificate gets error 71 from the live KDC,
which then still serves the valid one."""

import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.crypto.cms import file_signer
from common.kerberos.pkinit_client import build_pkinit_as_req, krbtgt, process_pkinit_as_rep
from common.messages.krb_error import decode_krb_error
from common.messages.types import PrincipalName
from common.pki.certs import issue_client_certificate
from telekey.kdc_process import start_kdc, telekey_cmd
from telekey.mit_realm import require_tool
from tests.e2e.test_kdc_mit_kinit import _exchange_tcp

pytestmark = pytest.mark.e2e
REALM = "LAB.TEST"


@pytest.fixture
def realm(tmp_path):
    db = f"sqlite:///{tmp_path}/kdc.db"
    pki = tmp_path / "pki"
    telekey_cmd("realm", "init", "--realm", REALM, "--db", db, "--pki-dir", str(pki),
                "--port", "0")
    telekey_cmd("principal", "add", "phone1", "--db", db)
    telekey_cmd("cert", "client", "--principal", "phone1", "--realm", REALM, "--pki-dir",
                str(pki), "--out-dir", str(tmp_path / "devices"))
    kdc = start_kdc(pki / "kdc.toml", tmp_path / "kdc.log")
    yield tmp_path, pki, kdc
    kdc.stop()


def test_mit_kinit_with_telekey_made_realm(realm):
    tmp_path, pki, kdc = realm
    conf = tmp_path / "krb5.conf"
    conf.write_text(f"[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n"
                    f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{kdc.port}\n"
                    f"  pkinit_anchors = FILE:{pki / 'ca.pem'}\n }}\n")
    env = {"PATH": "/usr/bin:/bin", "KRB5_CONFIG": str(conf),
           "KRB5CCNAME": f"FILE:{tmp_path / 'cc'}", "KRB5_TRACE": "/dev/stderr"}
    devices = tmp_path / "devices"
    result = subprocess.run(
        [require_tool("kinit"), "-X",
         f"X509_user_identity=FILE:{devices / 'phone1.pem'},{devices / 'phone1.key'}",
         f"phone1@{REALM}"], env=env, input="", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "matched KDC principal krbtgt/LAB.TEST@LAB.TEST against id-pkinit-san" in \
        result.stderr


def test_expired_certificate_gets_71_then_valid_one_works(realm):
    tmp_path, pki, kdc = realm
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = load_pem_private_key((pki / "ca.key").read_bytes(), None)
    key = rsa.generate_private_key(65537, 2048)
    expired = issue_client_certificate(ca, ca_key, key.public_key(), REALM, "phone1",
                                       datetime.now(UTC) - timedelta(days=30),
                                       timedelta(days=1))
    now = datetime.now(UTC)

    def login(signer):
        return build_pkinit_as_req(cname=PrincipalName(1, ("phone1",)), realm=REALM,
                                   sname=krbtgt(REALM), signer=signer, now=now,
                                   till=now + timedelta(hours=1))

    bad = login(file_signer(key, expired))
    assert decode_krb_error(_exchange_tcp(kdc.port, bad.data)).error_code == 71
    devices = tmp_path / "devices"
    good_signer = file_signer(load_pem_private_key((devices / "phone1.key").read_bytes(), None),
                              x509.load_pem_x509_certificate(
                                  (devices / "phone1.pem").read_bytes()))
    good = login(good_signer)
    result = process_pkinit_as_rep(_exchange_tcp(kdc.port, good.data), good, realm=REALM,
                                   anchors=[ca], now=now)
    assert result.enc_part.srealm == REALM
