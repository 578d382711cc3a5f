"""Heimdal 7.8 as an independent PKINIT peer (tests/heimdal.py runs its kinit in a Debian
chroot): kinit logs in to telekey's KDC in DH and RSA mode over TCP and UDP, with a
`telekey cert client` certificate and with an operator device certificate, and 200 DH logins
in a row all succeed with a fresh KDC DH key each time.

The first tests need no chroot: they check the AS-REQs Heimdal sent (tests/interop/heimdal,
see its README) and run them through the KDC core at the time they were made."""

import functools
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from common.codes import PaDataType
from common.crypto import Key
from common.crypto.cms import file_signer, verify_signed_data
from common.errors import KerberosError
from common.kerberos.as_exchange import AsPolicy, handle_as_req
from common.kerberos.ccache import decode_ccache
from common.kerberos.tickets import KeyEntry, PrincipalEntry
from common.messages.cms import decode_signed_data
from common.messages.kdc_rep import decode_as_rep
from common.messages.kdc_req import decode_as_req
from common.messages.pkinit import (
    decode_auth_pack,
    decode_kdc_dh_key_info,
    decode_pa_pk_as_rep,
    decode_pa_pk_as_req,
)
from common.messages.types import find_padata
from common.pki.certs import build_ca, issue_device_certificate, phone_id
from runtime.key_files import write_private_key
from telekey.kdc_process import KdcProcess, start_kdc, telekey_cmd, write_kdc_config
from tests.heimdal import (
    HeimdalClient,
    HeimdalPeer,
    HeimdalUnavailable,
    KinitResult,
    ensure_heimdal,
    heimdal_client,
)

pytestmark = pytest.mark.interop
FIXTURES = Path(__file__).parent / "heimdal"
REALM = "LAB.TEST"
MAC = "00:1a:2b:3c:4d:5e"
DEVICE = f"cta/{MAC.replace(':', '')}@{REALM}"
PHONE = "+1 555 0100"
LOGINS = 200


# -- The captured requests, without the chroot --------------------------------------------


def fixture_pem(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((FIXTURES / name).read_bytes())


def heimdal_request(name: str):
    data = (FIXTURES / name).read_bytes()
    req = decode_as_req(data)
    pa = decode_pa_pk_as_req(find_padata(req.padata, PaDataType.PA_PK_AS_REQ).padata_value)
    signed = decode_signed_data(pa.signed_auth_pack)
    return data, req, signed, decode_auth_pack(signed.encap_content_info.e_content)


class Principals(dict):
    def get_principal(self, name):
        return self.get(name)


@pytest.fixture
def fixture_kdc():
    """The KDC core with the fixture realm's CA, KDC certificate and manufacturer root."""
    krbtgt = KeyEntry(1, Key.random(18))
    principals = Principals({"phone1": PrincipalEntry("phone1"),
                             f"krbtgt/{REALM}": PrincipalEntry(f"krbtgt/{REALM}", (krbtgt,))})
    key = load_pem_private_key((FIXTURES / "kdc.key").read_bytes(), None)
    policy = AsPolicy(realm=REALM, anchors=(fixture_pem("ca.pem"),),
                      kdc_signer=file_signer(key, fixture_pem("kdc.pem")),
                      manufacturer_anchors=(fixture_pem("maker.pem"),))
    return policy, principals


def test_captured_requests_show_heimdal_habits():
    """What Heimdal 7.8 sends, read from the bytes (README.md): the signer named by a
    subjectKeyIdentifier in explicit form, a 40-byte clientDHNonce, no supportedKDFs."""
    phone1_ski = fixture_pem("phone1.pem").extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    for name in ("asreq_dh_tcp.der", "asreq_dh_udp.der", "asreq_rsa_tcp.der"):
        data, req, signed, auth = heimdal_request(name)
        assert bytes.fromhex("a0160414") + phone1_ski in data, name
        assert req.req_body.etype == (18, 17, 20, 19, 16, 23)
        assert [p.padata_type for p in req.padata] == [16, 132, 149]
        assert auth.supported_kdfs is None  # so the reply key is octetstring2key's
        assert auth.pk_authenticator.pa_checksum is not None
    for name in ("asreq_dh_tcp.der", "asreq_dh_udp.der", "asreq_factory_dh_tcp.der"):
        assert len(heimdal_request(name)[3].client_dh_nonce) == 40
    assert heimdal_request("asreq_rsa_tcp.der")[3].client_public_value is None
    # The operator certificate (phone-ID OID 2.25.<128-bit arc>) is one Heimdal could not
    # parse: it signed nothing and sent an AuthPack without any signer.
    _, _, signed, _ = heimdal_request("asreq_operator_dh_tcp.der")
    assert not signed.signer_infos and not signed.certificates


@pytest.mark.parametrize("name", ["asreq_dh_tcp.der", "asreq_dh_udp.der",
                                  "asreq_factory_dh_tcp.der"])
def test_kdc_core_answers_heimdal_dh_request(fixture_kdc, name):
    """At the time it was made, Heimdal's DH request gets an AS-REP whose KDCDHKeyInfo
    Heimdal accepts: RFC 4556 §3.2.3.1, "If this field [dhKeyExpiration] is omitted then the
    serverDHNonce field MUST also be omitted" (Heimdal enforces it)."""
    policy, principals = fixture_kdc
    data, req, _, auth = heimdal_request(name)
    reply = handle_as_req(data, policy=policy, principals=principals,
                          now=auth.pk_authenticator.ctime + timedelta(seconds=1))
    rep = decode_as_rep(reply)
    assert rep.cname == req.req_body.cname
    dh = decode_pa_pk_as_rep(find_padata(rep.padata, PaDataType.PA_PK_AS_REP).padata_value
                             ).dh_info
    info = decode_kdc_dh_key_info(verify_signed_data(decode_signed_data(dh.dh_signed_data),
                                                     fixture_pem("kdc.pem")))
    assert info.nonce == auth.pk_authenticator.nonce
    assert dh.kdf is None  # Heimdal offered no KDF
    assert dh.server_dh_nonce is None or info.dh_key_expiration is not None


@pytest.mark.parametrize("name", ["asreq_rsa_tcp.der", "asreq_rsa_udp.der"])
def test_kdc_core_answers_heimdal_rsa_request(fixture_kdc, name):
    policy, principals = fixture_kdc
    data, req, _, auth = heimdal_request(name)
    rep = decode_as_rep(handle_as_req(data, policy=policy, principals=principals,
                                      now=auth.pk_authenticator.ctime + timedelta(seconds=1)))
    pk = decode_pa_pk_as_rep(find_padata(rep.padata, PaDataType.PA_PK_AS_REP).padata_value)
    assert pk.enc_key_pack is not None and rep.cname == req.req_body.cname


def test_kdc_core_refuses_group2_and_unsigned_requests(fixture_kdc):
    policy, principals = fixture_kdc
    for name, code in (("asreq_dh_group2_tcp.der", 65), ("asreq_operator_dh_tcp.der", None)):
        data, _, _, auth = heimdal_request(name)
        with pytest.raises(KerberosError) as err:
            handle_as_req(data, policy=policy, principals=principals,
                          now=auth.pk_authenticator.ctime + timedelta(seconds=1))
        assert code is None or err.value.code == code, (name, err.value)


# -- Heimdal's kinit against a live KDC -----------------------------------------------------


@functools.cache
def _heimdal_or_reason() -> HeimdalPeer | str:
    try:
        return ensure_heimdal()
    except HeimdalUnavailable as exc:
        return str(exc)


def heimdal_peer() -> HeimdalPeer:
    """The chroot, built on first use; a failure to build fails the test with the reason."""
    peer = _heimdal_or_reason()
    if isinstance(peer, str):
        pytest.fail(f"Heimdal chroot unavailable: {peer}", pytrace=False)
    return peer


@dataclass
class Realm:
    directory: Path
    pki: Path
    kdc: KdcProcess
    anchors: list[Path]

    def as_req_events(self) -> list[dict]:
        return [e for e in self.kdc.log_events() if e.get("event") == "as_req"]


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    """A realm made by telekey's CLI (realm init --pki-dir, cert client, customer add) with a
    manufacturer root too, and its KDC: a fresh DH key for every reply (dh_key_reuse_s = 0)
    and no per-source rate limit (the 200 logins come from one address)."""
    tmp = tmp_path_factory.mktemp("heimdal-realm")
    db = f"sqlite:///{tmp}/kdc.db"
    pki = tmp / "pki"
    telekey_cmd("realm", "init", "--realm", REALM, "--db", db, "--pki-dir", str(pki))
    telekey_cmd("principal", "add", "phone1", "--db", db)
    telekey_cmd("cert", "client", "--principal", "phone1", "--realm", REALM, "--pki-dir",
                str(pki), "--out-dir", str(tmp / "devices"))
    telekey_cmd("customer", "add", "--number", PHONE, "--mac", MAC, "--db", db)
    now = datetime.now(UTC)
    operator = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    operator_key = load_pem_private_key((pki / "ca.key").read_bytes(), None)
    device_files(tmp / "devices", "operator", operator, operator_key, now,
                 phone_id_value=phone_id(PHONE), organization=REALM)
    maker_key = rsa.generate_private_key(65537, 2048)
    maker = build_ca(maker_key, "Manufacturer Root", "Manufacturer", now)
    (tmp / "maker.pem").write_bytes(maker.public_bytes(Encoding.PEM))
    device_files(tmp / "devices", "factory", maker, maker_key, now)
    config = write_kdc_config(tmp, realm=REALM, db_url=db, cert=pki / "kdc.pem",
                              key=pki / "kdc.key", anchors=[pki / "ca.pem"],
                              manufacturer_anchor_files=[str(tmp / "maker.pem")],
                              dh_key_reuse_s=0, as_rate_per_source=0)
    kdc = start_kdc(config, tmp / "kdc.log")
    yield Realm(tmp, pki, kdc, [pki / "ca.pem", tmp / "maker.pem"])
    kdc.stop()


def device_files(directory: Path, name: str, ca, ca_key, now, **options) -> None:
    key = rsa.generate_private_key(65537, 2048)
    cert = issue_device_certificate(ca, ca_key, key.public_key(), MAC, now, **options)
    write_private_key(directory / f"{name}.key", key)
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(Encoding.PEM))


def client_for(realm: Realm, *names: str):
    """A Heimdal client directory trusting the realm CA and the manufacturer root, with the
    named identities from the realm's devices/ directory."""
    client = heimdal_client(heimdal_peer(), realm=REALM, port=realm.kdc.port,
                            anchors=realm.anchors)
    return client, [(realm.directory / "devices" / f"{n}.pem",
                     realm.directory / "devices" / f"{n}.key") for n in names]


def new_events(realm: Realm, before: int, count: int = 1) -> list[dict]:
    """The KDC's as_req log lines after the first `before` (it writes each one just after
    its reply, so wait briefly for them)."""
    deadline = time.monotonic() + 3
    while True:
        events = realm.as_req_events()[before:]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def explain(result: KinitResult, events: list[dict]) -> str:
    kdc = "; ".join(f"{e.get('transport')} code {e.get('code')} e-text {e.get('status')}"
                    for e in events) or "no as_req line"
    return (f"`{' '.join(result.argv)}` exit {result.returncode}: "
            f"{result.output.strip() or '(no output)'} | KDC: {kdc}")


def login(realm: Realm, client: HeimdalClient, identity: str, principal: str, *,
          transport: str, rsa: bool = False) -> KinitResult:
    """One Heimdal login that must succeed: kinit's exit status, a TGT in its ccache for the
    principal, and the KDC's log line saying it answered OK over `transport`."""
    before = len(realm.as_req_events())
    result = client.kinit(principal, identity, transport=transport, rsa=rsa)
    events = new_events(realm, before)
    assert result.returncode == 0, explain(result, events)
    assert result.ccache is not None, explain(result, events)
    cache = decode_ccache(result.ccache)
    assert str(cache.default_principal) == principal
    tgts = [c for c in cache.credentials if not c.is_config]
    assert [str(c.server) for c in tgts] == [f"krbtgt/{REALM}@{REALM}"]
    assert [(e["transport"], e["status"], e.get("method")) for e in events] == \
        [(transport, "OK", "PKINIT")], explain(result, events)
    return result


def test_client_certificate_has_subject_key_identifier(realm):
    """The premise of the SignerIdentifier case: `telekey cert client` certificates carry a
    subjectKeyIdentifier, so Heimdal names its signer by it."""
    cert = x509.load_pem_x509_certificate(
        (realm.directory / "devices" / "phone1.pem").read_bytes())
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_heimdal_dh_login(realm, transport):
    """(a), (b): DH (RFC 3526 group 14, pkinit_dh_min_bits = 1024) with phone1's
    certificate."""
    client, [(cert, key)] = client_for(realm, "phone1")
    with client as c:
        login(realm, c, c.add_identity("phone1", cert, key), f"phone1@{REALM}",
              transport=transport)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_heimdal_rsa_login(realm, transport):
    """(c): RSA key transport (--pk-use-enckey)."""
    client, [(cert, key)] = client_for(realm, "phone1")
    with client as c:
        login(realm, c, c.add_identity("phone1", cert, key), f"phone1@{REALM}",
              transport=transport, rsa=True)


def test_heimdal_operator_device_certificate(realm):
    """(d): a factory-keyed device certificate issued by the operator CA with the phone ID
    of a customer added with `telekey customer add`; it logs in as cta/<mac>."""
    client, [(cert, key)] = client_for(realm, "operator")
    with client as c:
        login(realm, c, c.add_identity("operator", cert, key), DEVICE, transport="tcp")


def test_heimdal_factory_device_certificate(realm):
    """A factory certificate (manufacturer root, no phone ID) logs in unprovisioned."""
    client, [(cert, key)] = client_for(realm, "factory")
    with client as c:
        login(realm, c, c.add_identity("factory", cert, key), DEVICE, transport="tcp")


def test_heimdal_200_dh_logins_with_fresh_dh_keys(realm):
    """(e): LOGINS DH logins in a row, each with a new KDC DH key (dh_key_reuse_s = 0), and
    none fails. Prints the count and, if the KDC logs one, how often it had to pick
    another DH key."""
    client, [(cert, key)] = client_for(realm, "phone1")
    failures: list[str] = []
    before = len(realm.as_req_events())
    started = time.monotonic()
    with client as c:
        identity = c.add_identity("phone1", cert, key)
        for i in range(LOGINS):
            result = c.kinit(f"phone1@{REALM}", identity, transport="tcp")
            if result.returncode != 0 or result.ccache is None:
                failures.append(f"login {i + 1}: {result.output.strip()}")
    seconds = time.monotonic() - started
    events = new_events(realm, before, LOGINS)
    statuses: dict[str, int] = {}
    for e in events:
        key_ = f"{e.get('transport')} {e.get('code')} {e.get('status')}"
        statuses[key_] = statuses.get(key_, 0) + 1
    retry_fields = sorted({k for e in events for k in e if k.startswith("dh_retr")})
    retries = {k: sum(int(e.get(k) or 0) for e in events) for k in retry_fields}
    print(f"\n{LOGINS - len(failures)}/{LOGINS} Heimdal DH logins succeeded in {seconds:.1f} s;"
          f" KDC answers: {json.dumps(statuses)}; "
          + (f"KDC picked another DH key: {retries}" if retries
             else "the KDC's as_req lines carry no dh_retries field"))
    assert not failures, f"{len(failures)} of {LOGINS} failed; first: {failures[:3]}; " \
        f"KDC answers: {statuses}"
    assert len(events) == LOGINS and statuses == {"tcp 0 OK": LOGINS}, statuses
