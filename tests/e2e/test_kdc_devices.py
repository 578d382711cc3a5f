"""Seed 001 against the live KDC with MIT kinit as the device: a factory certificate (MAC in
the subject, no PKINIT SAN) logs in as cta/<mac> and its TGT says "unprovisioned"; an
operator-issued certificate works while its customer is active and is refused (18) once the
customer is suspended through the CLI."""

import subprocess
import time
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from common.codes import KeyUsage
from common.crypto import Key
from common.kerberos.ccache import decode_ccache
from common.kerberos.keytab import decode_keytab
from common.messages.restriction import find_restriction
from common.messages.ticket import decode_enc_ticket_part, decode_ticket
from common.pki.certs import build_ca, issue_device_certificate, phone_id
from runtime.key_files import write_private_key
from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from telekey.mit_realm import require_tool

pytestmark = pytest.mark.e2e
REALM = "LAB.TEST"
MAC = "00:1a:2b:3c:4d:5e"


@pytest.fixture
def realm(tmp_path):
    db = f"sqlite:///{tmp_path}/kdc.db"
    pki = tmp_path / "pki"
    telekey_cmd("realm", "init", "--realm", REALM, "--db", db, "--pki-dir", str(pki))
    maker_key = rsa.generate_private_key(65537, 2048)
    maker = build_ca(maker_key, "Manufacturer Root", "Manufacturer", datetime.now(UTC))
    (tmp_path / "maker.pem").write_bytes(maker.public_bytes(Encoding.PEM))
    config = write_kdc_config(tmp_path, realm=REALM, db_url=db, cert=pki / "kdc.pem",
                              key=pki / "kdc.key", anchors=[pki / "ca.pem"],
                              manufacturer_anchor_files=[str(tmp_path / "maker.pem")],
                              principal_cache_ttl_s=0.2)
    kdc = start_kdc(config, tmp_path / "kdc.log")
    yield tmp_path, pki, db, kdc, (maker, maker_key)
    kdc.stop()


def device_files(directory, name, cert, key):
    write_private_key(directory / f"{name}.key", key)
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    return f"FILE:{directory / name}.pem,{directory / name}.key"


def kinit(tmp_path, pki, port, identity):
    # MIT's client also checks its own chain: the device trusts its manufacturer's root too.
    maker = f"  pkinit_anchors = FILE:{tmp_path / 'maker.pem'}\n"
    conf = tmp_path / "krb5.conf"
    conf.write_text(f"[libdefaults]\n default_realm = {REALM}\n[realms]\n {REALM} = {{\n"
                    f"  kdc = 127.0.0.1:{port}\n  pkinit_anchors = FILE:{pki / 'ca.pem'}\n"
                    f"{maker} }}\n")
    env = {"PATH": "/usr/bin:/bin", "KRB5_CONFIG": str(conf),
           "KRB5CCNAME": f"FILE:{tmp_path / 'cc'}"}
    return subprocess.run([require_tool("kinit"), "-X", f"X509_user_identity={identity}",
                           f"cta/001a2b3c4d5e@{REALM}"], env=env, input="",
                          capture_output=True, text=True, timeout=60, check=False)


def test_factory_certificate_gets_unprovisioned_tgt(realm):
    tmp_path, pki, db, kdc, (maker, maker_key) = realm
    key = rsa.generate_private_key(65537, 2048)
    cert = issue_device_certificate(maker, maker_key, key.public_key(), MAC, datetime.now(UTC))
    result = kinit(tmp_path, pki, kdc.port, device_files(tmp_path, "factory", cert, key))
    assert result.returncode == 0, result.stderr[-3000:]
    telekey_cmd("principal", "ktadd", f"krbtgt/{REALM}", "--keytab", str(tmp_path / "k.kt"),
                "--realm", REALM, "--db", db)
    tgt = next(c for c in decode_ccache((tmp_path / "cc").read_bytes()).credentials
               if not c.is_config)
    ticket = decode_ticket(tgt.ticket)
    entry = next(e for e in decode_keytab((tmp_path / "k.kt").read_bytes())
                 if e.enctype == ticket.enc_part.etype)
    part = decode_enc_ticket_part(Key(entry.enctype, entry.key).decrypt(
        KeyUsage.KDC_REP_TICKET, ticket.enc_part.cipher))
    restriction = find_restriction(part.authorization_data)
    assert restriction is not None and restriction.allowed_numbers == ("611", "911")


def test_operator_certificate_follows_customer_status(realm):
    tmp_path, pki, db, kdc, _ = realm
    telekey_cmd("customer", "add", "--number", "+1 555 0100", "--mac", MAC, "--db", db)
    operator = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    operator_key = load_pem_private_key((pki / "ca.key").read_bytes(), None)
    key = rsa.generate_private_key(65537, 2048)
    cert = issue_device_certificate(operator, operator_key, key.public_key(), MAC,
                                    datetime.now(UTC), phone_id_value=phone_id("+1 555 0100"),
                                    organization=REALM)
    identity = device_files(tmp_path, "operator", cert, key)
    assert kinit(tmp_path, pki, kdc.port, identity).returncode == 0
    telekey_cmd("customer", "suspend", "--number", "+1 555 0100", "--db", db)
    time.sleep(0.3)  # the KDC's principal/customer cache TTL
    assert kinit(tmp_path, pki, kdc.port, identity).returncode != 0
    codes = [e["code"] for e in kdc.log_events() if e.get("event") == "as_req"]
    assert codes[-1] == 18
