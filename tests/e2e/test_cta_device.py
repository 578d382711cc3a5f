"""The device agent's tools: `telekey cta manufacture` makes a SoftHSM2 token
whose private keys cannot leave it; `telekey cta login` does PKINIT (DH and RSA) against
telekey's KDC with the factory certificate, signing and decrypting in the token, and writes a
credential cache MIT klist reads; a KDC outside the operator root is refused and the old cache
is kept."""

import os
import subprocess
import sys

import pytest

from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from telekey.mit_realm import require_tool
from tests.conftest import MIT_FIXTURES

pytestmark = pytest.mark.e2e
REALM = "LAB.TEST"
MAC = "00:1a:2b:3c:4d:5e"
TOKEN = "device-001a2b3c4d5e"
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TRY_TO_STEAL = """
import sys, pkcs11
from pkcs11 import Attribute, ObjectClass, KeyType, Mechanism
from pkcs11.exceptions import AttributeSensitive, KeyUnextractable
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with token.open(rw=True, user_pin=sys.argv[3]) as s:
    key = s.get_key(object_class=ObjectClass.PRIVATE_KEY, label='factory')
    try:
        key[Attribute.PRIVATE_EXPONENT]
        print('READ')
    except AttributeSensitive:
        print('sensitive')
    wrapper = s.generate_key(KeyType.AES, 256, template={Attribute.WRAP: True})
    try:
        wrapper.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        print('WRAPPED')
    except KeyUnextractable:
        print('unextractable')
"""


def cli(*args):
    return subprocess.run([sys.executable, "-m", "telekey", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def lab(tmp_path):
    db = f"sqlite:///{tmp_path}/kdc.db"
    pki = tmp_path / "pki"
    telekey_cmd("realm", "init", "--realm", REALM, "--db", db, "--pki-dir", str(pki))
    telekey_cmd("principal", "add", "sigctl/sc1.lab.test", "--random-key", "--db", db)
    telekey_cmd("cert", "ca", "--dir", str(tmp_path / "maker"), "--name", "Maker Root")
    result = cli("cta", "manufacture", "--mac", MAC, "--dir", str(tmp_path / "device"),
                 "--manufacturer-ca", str(tmp_path / "maker"), "--operator-root",
                 str(pki / "ca.pem"))
    assert result.returncode == 0, result.stderr
    config = write_kdc_config(tmp_path, realm=REALM, db_url=db, cert=pki / "kdc.pem",
                              key=pki / "kdc.key", anchors=[pki / "ca.pem"],
                              manufacturer_anchor_files=[str(tmp_path / "maker" / "ca.pem")])
    kdc = start_kdc(config, tmp_path / "kdc.log")
    yield tmp_path, kdc
    kdc.stop()


def test_token_keeps_its_private_keys(lab):
    tmp_path, _ = lab
    device = tmp_path / "device"
    env = {**os.environ, "SOFTHSM2_CONF": str(device / "softhsm2.conf")}
    pin = (device / "pin").read_text().strip()
    assert (device / "pin").stat().st_mode & 0o777 == 0o600
    listing = subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", TOKEN,
                              "--login", "--pin", pin, "-O"], capture_output=True, text=True,
                             env=env, check=True).stdout
    for label in ("factory", "signing", "operator-root", "manufacturer-ca"):
        assert f"label:      {label}" in listing
    assert listing.count("Access:     sensitive, always sensitive, never extractable") == 2
    stolen = subprocess.run([sys.executable, "-c", TRY_TO_STEAL, MODULE, TOKEN, pin],
                            capture_output=True, text=True, env=env, check=True).stdout
    assert stolen.split() == ["sensitive", "unextractable"]


@pytest.mark.parametrize("mode", [[], ["--rsa"]], ids=["dh", "rsa"])
def test_login_gets_controller_ticket_mit_klist_reads(lab, mode):
    tmp_path, kdc = lab
    result = cli("cta", "login", "--dir", str(tmp_path / "device"), "--realm", REALM, "--kdc",
                 f"127.0.0.1:{kdc.port}", "--service", "sigctl/sc1.lab.test", *mode)
    assert result.returncode == 0, result.stderr
    listing = subprocess.run([require_tool("klist"), "-e", "-c",
                              f"FILE:{tmp_path / 'device' / 'ccache'}"], capture_output=True,
                             text=True, check=True, env={"KRB5_CONFIG": "/dev/null"}).stdout
    assert "Default principal: cta/001a2b3c4d5e@LAB.TEST" in listing
    assert "sigctl/sc1.lab.test@LAB.TEST" in listing


def test_kdc_outside_operator_root_is_refused_and_cache_kept(lab, tmp_path_factory):
    tmp_path, kdc = lab
    device = tmp_path / "device"
    assert cli("cta", "login", "--dir", str(device), "--realm", REALM, "--kdc",
               f"127.0.0.1:{kdc.port}").returncode == 0
    before = (device / "ccache").read_bytes()
    # Another KDC for the realm whose certificate chains to a different CA (MIT's test CA).
    other = tmp_path_factory.mktemp("rogue")
    db = f"sqlite:///{other}/kdc.db"
    telekey_cmd("realm", "init", "--realm", REALM, "--db", db)
    config = write_kdc_config(other, realm=REALM, db_url=db, cert=MIT_FIXTURES / "kdc.pem",
                              key=MIT_FIXTURES / "kdc.key",
                              anchors=[tmp_path / "pki" / "ca.pem"],
                              manufacturer_anchor_files=[str(tmp_path / "maker" / "ca.pem")])
    rogue = start_kdc(config, other / "kdc.log")
    try:
        result = cli("cta", "login", "--dir", str(device), "--realm", REALM, "--kdc",
                     f"127.0.0.1:{rogue.port}")
    finally:
        rogue.stop()
    assert result.returncode == 1
    assert "KDC reply rejected" in result.stderr
    assert (device / "ccache").read_bytes() == before


def _token_objects(device):
    env = {**os.environ, "SOFTHSM2_CONF": str(device / "softhsm2.conf")}
    pin = (device / "pin").read_text().strip()
    return subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", TOKEN,
                           "--login", "--pin", pin, "-O"], capture_output=True, text=True,
                          env=env, check=True).stdout


def _request(tmp_path, name, signer="prov/provisioning_server"):
    out = tmp_path / f"{name}.der"
    result = cli("provisioning", "certreq", "--signer-cert", str(tmp_path / f"{signer}.pem"),
                 "--signer-key", str(tmp_path / f"{signer}.key"), "--device-id", MAC,
                 "--network-id", REALM, "--out", str(out), "--days", "90")
    assert result.returncode == 0, result.stderr
    return out


def test_self_issued_certificate_seed_004(lab):
    tmp_path, kdc = lab
    device = tmp_path / "device"
    telekey_cmd("cert", "client", "--principal", "provisioning/server", "--realm", REALM,
                "--pki-dir", str(tmp_path / "pki"), "--out-dir", str(tmp_path / "prov"))
    request = _request(tmp_path, "req1")
    result = cli("cta", "selfcert", "--dir", str(device), "--request", str(request))
    assert result.returncode == 0, result.stderr
    issued = device / "certs" / "self-issued.pem"
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "maker" / "ca.pem"),
                             "-untrusted", str(device / "certs" / "signing.pem"), str(issued)],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout.strip().endswith("OK"), verify.stdout
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(issued.read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={MAC},O={REALM}"
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 90
    objects = _token_objects(device)
    assert objects.count("Access:     sensitive, always sensitive, never extractable") == 3

    # Refused requests leave the token exactly as it was.
    (tmp_path / "mit").mkdir()
    for name in ("phone1.pem", "phone1.key"):
        (tmp_path / "mit" / name).write_bytes((MIT_FIXTURES / name).read_bytes())
    outsider = _request(tmp_path, "outsider", signer="mit/phone1")
    tampered = tmp_path / "tampered.der"
    data = bytearray(_request(tmp_path, "req2").read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    for bad, reason in ((request, "REPLAY"), (outsider, "SIGNER_NOT_UNDER_OPERATOR_ROOT"),
                        (tampered, "BAD_SIGNATURE")):
        result = cli("cta", "selfcert", "--dir", str(device), "--request", str(bad))
        assert result.returncode == 1 and reason in result.stderr, result.stderr
        assert _token_objects(device) == objects

    # PKINIT with the self-issued certificate: self-issued -> signing cert -> manufacturer.
    result = cli("cta", "login", "--dir", str(device), "--realm", REALM, "--kdc",
                 f"127.0.0.1:{kdc.port}", "--cert", "self-issued")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", [[], ["--rsa"], ["--ecdh"]], ids=["dh", "rsa", "ecdh-to-dh"])
def test_login_against_mit_krb5kdc(lab, mode):
    """MIT's KDC with the same CAs binds the factory certificate to cta/<mac> through a
    pkinit_cert_match rule (MIT's dbmatch certauth); factory certificates carry no EKU. MIT
    1.20 has no ECDH: in --ecdh mode it answers KDC_ERR_DH_KEY_PARAMETERS_NOT_ACCEPTED with
    its groups, and the agent logs in again with DH (RFC 4556 §3.2.3.1)."""
    from telekey.mit_realm import start_mit_pkinit_kdc

    tmp_path, _ = lab
    pki = tmp_path / "pki"
    mit = start_mit_pkinit_kdc(
        tmp_path / "mitkdc", realm=REALM, identity=(pki / "kdc.pem", pki / "kdc.key"),
        anchors=[tmp_path / "maker" / "ca.pem", pki / "ca.pem"], eku_checking="none",
        admin=["addprinc +requires_preauth -nokey cta/001a2b3c4d5e",
               f'set_string cta/001a2b3c4d5e pkinit_cert_match "<SUBJECT>CN={MAC}"',
               "addprinc -randkey sigctl/sc1.lab.test"])
    try:
        ccache = tmp_path / "mit.ccache"
        result = cli("cta", "login", "--dir", str(tmp_path / "device"), "--realm", REALM,
                     "--kdc", f"127.0.0.1:{mit.port}", "--service", "sigctl/sc1.lab.test",
                     "--ccache", str(ccache), *mode)
    finally:
        mit.stop()
    assert result.returncode == 0, result.stderr
    assert f"({'RSA' if mode == ['--rsa'] else 'DH'})" in result.stdout
    listing = subprocess.run([require_tool("klist"), "-c", f"FILE:{ccache}"],
                             capture_output=True, text=True, check=True,
                             env={"KRB5_CONFIG": "/dev/null"}).stdout
    assert "sigctl/sc1.lab.test@LAB.TEST" in listing
    assert "ISSUE" in (tmp_path / "mitkdc" / "kdc.log").read_text()


def test_device_clock_off_learns_offset_from_skew(lab):
    """A device clock 15 minutes fast: the KDC answers KRB_AP_ERR_SKEW with its time, the
    device retries with the learned offset and records it in the ccache like MIT does."""
    from common.kerberos.ccache import decode_ccache

    tmp_path, kdc = lab
    device = tmp_path / "device"
    result = cli("cta", "login", "--dir", str(device), "--realm", REALM, "--kdc",
                 f"127.0.0.1:{kdc.port}", "--clock-error", "900")
    assert result.returncode == 0, result.stderr
    assert "clock skew" in result.stderr
    seconds, _ = decode_ccache((device / "ccache").read_bytes()).kdc_offset
    assert -903 <= seconds <= -897
    codes = [e["code"] for e in kdc.log_events() if e.get("event") == "as_req"]
    assert codes[-2:] == [37, 0]


def test_ecdh_login_then_backup_controller_via_tgs(lab):
    """ECDH P-256 PKINIT for a TGT, then one TGS exchange for the backup controller; MIT klist
    lists both, and the backup controller's ticket still says "unprovisioned"."""
    tmp_path, kdc = lab
    device = tmp_path / "device"
    telekey_cmd("principal", "add", "sigctl/sc2.lab.test", "--random-key", "--db",
                f"sqlite:///{tmp_path}/kdc.db")
    result = cli("cta", "login", "--dir", str(device), "--realm", REALM, "--kdc",
                 f"127.0.0.1:{kdc.port}", "--ecdh")
    assert result.returncode == 0 and "(ECDH)" in result.stdout, result.stderr
    result = cli("cta", "tgs", "--dir", str(device), "--kdc", f"127.0.0.1:{kdc.port}",
                 "--service", "sigctl/sc2.lab.test")
    assert result.returncode == 0, result.stderr
    listing = subprocess.run([require_tool("klist"), "-c", f"FILE:{device / 'ccache'}"],
                             capture_output=True, text=True, check=True,
                             env={"KRB5_CONFIG": "/dev/null"}).stdout
    assert "krbtgt/LAB.TEST@LAB.TEST" in listing and "sigctl/sc2.lab.test@LAB.TEST" in listing
    # Decrypt the backup controller's ticket: the restriction travelled through TGS.
    from common.codes import KeyUsage
    from common.crypto import Key
    from common.kerberos.ccache import decode_ccache
    from common.kerberos.keytab import decode_keytab
    from common.messages.restriction import find_restriction
    from common.messages.ticket import decode_enc_ticket_part, decode_ticket

    telekey_cmd("principal", "ktadd", "sigctl/sc2.lab.test", "--keytab",
                str(tmp_path / "sc2.kt"), "--realm", REALM, "--db",
                f"sqlite:///{tmp_path}/kdc.db")
    cred = next(c for c in decode_ccache((device / "ccache").read_bytes()).credentials
                if c.server.components == ("sigctl", "sc2.lab.test"))
    ticket = decode_ticket(cred.ticket)
    entry = next(e for e in decode_keytab((tmp_path / "sc2.kt").read_bytes())
                 if e.enctype == ticket.enc_part.etype)
    part = decode_enc_ticket_part(Key(entry.enctype, entry.key).decrypt(
        KeyUsage.KDC_REP_TICKET, ticket.enc_part.cipher))
    assert find_restriction(part.authorization_data).allowed_numbers == ("611", "911")


class _EvilKdc:
    """A TCP man-in-the-middle in front of the real KDC: 'replay' answers every request with
    the first genuine reply it saw (a correctly signed reply to another request: wrong nonce);
    'resign' flips the last byte of the KDC's signature in the reply."""

    def __init__(self, upstream: int, mode: str) -> None:
        import socket
        import threading

        self.upstream, self.mode, self.first = upstream, mode, None
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        from common.kerberos.tcp_framing import RecordBuffer, encode_record
        from tests.e2e.test_kdc_mit_kinit import _exchange_tcp

        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                buffer = RecordBuffer(1 << 20)
                while (record := buffer.next_record()) is None:
                    buffer.feed(conn.recv(65536))
                reply = _exchange_tcp(self.upstream, record)
                if self.mode == "replay":
                    self.first = self.first or reply
                    reply = self.first
                else:
                    reply = _flip_kdc_signature(reply)
                conn.sendall(encode_record(reply))

    def close(self) -> None:
        self.server.close()


def _flip_kdc_signature(reply: bytes) -> bytes:
    from common.messages.kdc_rep import KdcRep, decode_as_rep, encode_as_rep
    from common.messages.pkinit import (
        DhRepInfo,
        PaPkAsRep,
        decode_pa_pk_as_rep,
        encode_pa_pk_as_rep,
    )
    from common.messages.types import PaData, find_padata

    rep = decode_as_rep(reply)
    pk = decode_pa_pk_as_rep(find_padata(rep.padata, 17).padata_value)
    signed = pk.dh_info.dh_signed_data
    broken = PaPkAsRep(DhRepInfo(signed[:-1] + bytes([signed[-1] ^ 1]),
                                 pk.dh_info.server_dh_nonce, pk.dh_info.kdf), None)
    return encode_as_rep(KdcRep(rep.pvno, rep.msg_type, (PaData(17, encode_pa_pk_as_rep(broken)),),
                                rep.crealm, rep.cname, rep.ticket, rep.enc_part))


@pytest.mark.parametrize("mode,reason", [("replay", "NONCE_MISMATCH"),
                                         ("resign", "BAD_SIGNATURE")])
def test_misbehaving_kdc_is_refused_and_cache_kept(lab, mode, reason):
    tmp_path, kdc = lab
    device = tmp_path / "device"
    evil = _EvilKdc(kdc.port, mode)
    try:
        first = cli("cta", "login", "--dir", str(device), "--realm", REALM, "--kdc",
                    f"127.0.0.1:{evil.port if mode == 'replay' else kdc.port}")
        assert first.returncode == 0, first.stderr
        before = (device / "ccache").read_bytes()
        result = cli("cta", "login", "--dir", str(device), "--realm", REALM, "--kdc",
                     f"127.0.0.1:{evil.port}")
    finally:
        evil.close()
    assert result.returncode == 1 and reason in result.stderr, result.stderr
    assert (device / "ccache").read_bytes() == before


def test_self_issued_with_delivered_key(lab):
    """The request's variant that delivers a key pair: the private key arrives wrapped for the
    factory key and is unwrapped inside the token; the certificate is for that public key and
    PKINIT with it works."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from common.messages.cms import decode_signed_data, encode_spki
    from common.pki.selfcert import decode_profile

    tmp_path, kdc = lab
    device = tmp_path / "device"
    telekey_cmd("cert", "client", "--principal", "provisioning/server", "--realm", REALM,
                "--pki-dir", str(tmp_path / "pki"), "--out-dir", str(tmp_path / "prov"))
    out = tmp_path / "deliver.der"
    result = cli("provisioning", "certreq", "--signer-cert",
                 str(tmp_path / "prov" / "provisioning_server.pem"), "--signer-key",
                 str(tmp_path / "prov" / "provisioning_server.key"), "--device-id", MAC,
                 "--network-id", REALM, "--out", str(out), "--deliver-key-for",
                 str(device / "certs" / "factory.pem"))
    assert result.returncode == 0, result.stderr
    result = cli("cta", "selfcert", "--dir", str(device), "--request", str(out))
    assert result.returncode == 0, result.stderr
    delivered = decode_profile(decode_signed_data(out.read_bytes()).encap_content_info.e_content
                               ).delivered_key
    cert = x509.load_pem_x509_certificate((device / "certs" / "self-issued.pem").read_bytes())
    assert cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == \
        encode_spki(delivered.public_key)
    objects = _token_objects(device)
    block = objects[objects.index("label:      self-issued-key-1"):].split("Object;")[0]
    # An unwrapped key existed outside the token once, so PKCS#11 never calls it "never
    # extractable" or "always sensitive"; what matters is that it is sensitive and cannot be
    # extracted now (pkcs11-tool would print "extractable").
    assert "Access:     sensitive\n" in block and "extractable" not in block
    assert objects.count("Access:     sensitive, always sensitive, never extractable") == 2
    result = cli("cta", "login", "--dir", str(device), "--realm", REALM, "--kdc",
                 f"127.0.0.1:{kdc.port}", "--cert", "self-issued")
    assert result.returncode == 0, result.stderr
