"""The KDC's signing key generated inside a SoftHSM2 token (sensitive, never extractable):
MIT kinit verifies PKINIT replies the token signed."""

import subprocess
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from common.pki.certs import issue_kdc_certificate
from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from telekey.mit_realm import require_tool
from tests.softhsm import MODULE, generate_rsa_key, init_token, pin_file, softhsm_directory

pytestmark = pytest.mark.e2e
REALM = "LAB.TEST"


def test_kdc_signs_inside_softhsm(tmp_path, monkeypatch):
    softhsm_directory(tmp_path, monkeypatch)  # the KDC process inherits SOFTHSM2_CONF
    init_token("kdc-token")
    pin = pin_file(tmp_path / "pin")
    public = generate_rsa_key("kdc-token")

    db = f"sqlite:///{tmp_path}/kdc.db"
    pki = tmp_path / "pki"
    telekey_cmd("realm", "init", "--realm", REALM, "--db", db, "--pki-dir", str(pki))
    telekey_cmd("principal", "add", "phone1", "--db", db)
    telekey_cmd("cert", "client", "--principal", "phone1", "--realm", REALM, "--pki-dir",
                str(pki), "--out-dir", str(tmp_path / "devices"))
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = load_pem_private_key((pki / "ca.key").read_bytes(), None)
    cert = issue_kdc_certificate(ca, ca_key, public, REALM, "kdc", datetime.now(UTC))
    (tmp_path / "kdc-token.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    config = write_kdc_config(tmp_path, realm=REALM, db_url=db, cert=tmp_path / "kdc-token.pem",
                              key=None, anchors=[pki / "ca.pem"],
                              pkcs11_token_label="kdc-token", pkcs11_pin_file=str(pin))
    kdc = start_kdc(config, tmp_path / "kdc.log")
    try:
        krb5 = tmp_path / "krb5.conf"
        krb5.write_text(f"[libdefaults]\n default_realm = {REALM}\n[realms]\n {REALM} = {{\n"
                        f"  kdc = 127.0.0.1:{kdc.port}\n  pkinit_anchors = FILE:{pki / 'ca.pem'}"
                        "\n }\n")
        devices = tmp_path / "devices"
        result = subprocess.run(
            [require_tool("kinit"), "-X",
             f"X509_user_identity=FILE:{devices / 'phone1.pem'},{devices / 'phone1.key'}",
             f"phone1@{REALM}"], input="", capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "KRB5_CONFIG": str(krb5),
                 "KRB5CCNAME": f"FILE:{tmp_path / 'cc'}", "KRB5_TRACE": "/dev/stderr"})
        assert result.returncode == 0, result.stderr[-3000:]
        assert "PKINIT client verified DH reply" in result.stderr
    finally:
        kdc.stop()
    listing = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", "kdc-token",
                              "--login", "--pin", "1234", "-O"], capture_output=True, text=True,
                             check=True).stdout
    assert "Private Key Object; RSA" in listing and "kdc" in listing
    assert "Access:     sensitive, always sensitive, never extractable" in listing
