"""The KDC's signing key generated inside a SoftHSM2 token (sensitive, never extractable):
MIT kinit verifies PKINIT replies the token signed."""

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc3447

from common.pki.certs import issue_kdc_certificate
from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from telekey.mit_realm import require_tool

pytestmark = pytest.mark.e2e
REALM = "LAB.TEST"
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
# Run in a child process: this test process must not load the module itself.
GENERATE = """
import sys, pkcs11
from pkcs11 import KeyType, Attribute
from pkcs11.util.rsa import encode_rsa_public_key
with pkcs11.lib(sys.argv[1]).get_token(token_label='kdc-token').open(rw=True,
                                                                      user_pin='1234') as s:
    public, _ = s.generate_keypair(KeyType.RSA, 2048, label='kdc', store=True,
        private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
    sys.stdout.buffer.write(encode_rsa_public_key(public))
"""


def test_kdc_signs_inside_softhsm(tmp_path, monkeypatch):
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))  # the KDC process inherits it
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "kdc-token",
                    "--pin", "1234", "--so-pin", "5678"], check=True, capture_output=True)
    pin = tmp_path / "pin"
    pin.write_text("1234\n")
    pin.chmod(0o600)
    der = subprocess.run([sys.executable, "-c", GENERATE, MODULE], check=True,
                         capture_output=True).stdout
    numbers, _ = decoder.decode(der, asn1Spec=rfc3447.RSAPublicKey())
    public = rsa.RSAPublicNumbers(int(numbers["publicExponent"]),
                                  int(numbers["modulus"])).public_key()

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
