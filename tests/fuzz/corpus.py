"""The fuzzers' seed corpus: real messages.

- MIT-made DER messages and keytabs in tests/interop/mit/ (AS, TGS, AP exchanges, PKINIT DH
  and RSA, KRB-ERRORs), Heimdal's PKINIT AS-REQs in tests/interop/heimdal/, and the inner
  parts MIT's messages carry encrypted: tickets decrypted
  with the fixtures' keytabs, authenticators and AP-REP parts with the session keys the
  fixtures' JSON records (these reach EncTicketPart, Authenticator, EncAPRepPart decoders
  that no outer message shows);
- the DER inside tests/vectors/data/*.json (RFC 8636's AS-REQ and PA-PK-AS-REP,
  OtherInfo, party infos...): every hex value that is exactly one DER TLV;
- messages MIT has no equivalent for, made by telekey's own encoders from the MIT fixtures:
  the six PacketCable key-management messages, ESP packets sealed under fixed keys for each
  suite, UDP-in-ESP datagrams, RTP, SDP, Kerberos TCP records, and every SIP message of a
  call across two controllers (tests/unit/test_call_flow.py's sans-I/O network).
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache

from common.calls.rtp import RtpPacket, encode_rtp
from common.calls.sdp import MediaDescription, encode_sdp
from common.codes import KeyUsage
from common.crypto import Key
from common.errors import KerberosError
from common.kerberos.ccache import CcachePrincipal, Credential, CredentialCache, encode_ccache
from common.kerberos.keytab import decode_keytab
from common.kerberos.tcp_framing import encode_record
from common.messages.ap_rep import decode_ap_rep
from common.messages.ap_req import decode_ap_req
from common.messages.der import read_header
from common.messages.padata import (
    PaEncTsEnc,
    PaPacRequest,
    encode_pa_enc_ts_enc,
    encode_pa_pac_request,
)
from common.messages.pkinit import ReplyKeyPack, encode_reply_key_pack
from common.messages.restriction import DeviceRestriction, encode_device_restriction
from common.messages.ticket import decode_enc_ticket_part, encode_ticket
from common.messages.types import Checksum, EncryptionKey
from common.pktc import esp
from common.pktc import km_framing as pktc
from tests.conftest import MIT_FIXTURES, VECTORS

HEIMDAL_FIXTURES = MIT_FIXTURES.parent / "heimdal"
# Fixed keys for the ESP seeds and target (the fuzzer opens what it sealed, then mutations).
ESP_SUBKEY = Key(18, bytes(range(32)))
KM_HMAC_KEY = bytes(range(20))


def _is_one_tlv(data: bytes) -> bool:
    try:
        return len(data) >= 2 and read_header(data, 1, len(data))[1] == len(data)
    except KerberosError:
        return False


@cache
def mit_messages() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(MIT_FIXTURES.glob("*"))
            if p.suffix in (".der", ".keytab")}


@cache
def heimdal_messages() -> dict[str, bytes]:
    """Heimdal 7.8's kinit's real AS-REQs (tests/interop/heimdal/, see its README)."""
    return {p.name: p.read_bytes() for p in sorted(HEIMDAL_FIXTURES.glob("*.der"))}


def _strings(value: object, where: str) -> Iterator[tuple[str, str]]:
    """Every string inside a JSON document, with its path."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from _strings(item, f"{where}[{number}]")


@cache
def vector_messages() -> dict[str, bytes]:
    """Every hex string in tests/vectors/data/*.json that is exactly one DER TLV."""
    found = {}
    for path in sorted(VECTORS.glob("*.json")):
        for where, value in _strings(json.loads(path.read_text()), path.name):
            if len(value) >= 4:
                try:
                    data = bytes.fromhex(value)
                except ValueError:
                    continue
                if _is_one_tlv(data):
                    found[where] = data
    return found


def _recorded_keys(record: str) -> list[Key]:
    """The session key and sub-keys a fixture's JSON record names (none for some)."""
    path = MIT_FIXTURES / record
    info = json.loads(path.read_text()) if path.exists() else {}
    return [Key(k["enctype"], bytes.fromhex(k["key_hex"]))
            for k in (info.get("session_key"), info.get("client_subkey"),
                      info.get("acceptor_subkey")) if isinstance(k, dict)]


@cache
def decrypted_parts() -> dict[str, bytes]:
    """Inner plaintext DER of the MIT fixtures (see the module docstring)."""
    keys = [Key(e.enctype, e.key) for p in sorted(MIT_FIXTURES.glob("*.keytab"))
            for e in decode_keytab(p.read_bytes())]
    found = {}
    for name, data in mit_messages().items():
        session = [*_recorded_keys(f"{name}.json")]
        if name.startswith("aprep"):
            session += _recorded_keys(f"{name.replace('aprep', 'apreq')}.json")
        try:
            ap_req = decode_ap_req(data)
        except KerberosError:
            ap_req = None
        if ap_req is not None:
            for key in keys:
                if key.enctype != ap_req.ticket.enc_part.etype:
                    continue
                try:
                    part = key.decrypt(KeyUsage.KDC_REP_TICKET, ap_req.ticket.enc_part.cipher)
                except KerberosError:
                    continue
                found[f"{name}:enc-ticket-part"] = part
                ticket_key = decode_enc_ticket_part(part).key
                session.append(Key(ticket_key.keytype, ticket_key.keyvalue))
            for key in session:
                try:
                    found[f"{name}:authenticator"] = key.decrypt(
                        KeyUsage.AP_REQ_AUTH, ap_req.authenticator.cipher)
                except KerberosError:
                    continue
        if name.startswith("aprep"):
            try:
                enc_part = decode_ap_rep(data).enc_part
            except KerberosError:
                continue
            for key in session:
                try:
                    found[f"{name}:enc-ap-rep-part"] = key.decrypt(KeyUsage.AP_REP_ENCPART,
                                                                   enc_part.cipher)
                except KerberosError:
                    continue
    return found


@cache
def made_messages() -> dict[str, bytes]:
    """A few types no MIT fixture shows, made by telekey's encoders from fixture values: a
    credential cache holding the fixture ticket, telekey's DeviceRestriction, PA-ENC-TS-ENC,
    KERB-PA-PAC-REQUEST and ReplyKeyPack."""
    ap_req = decode_ap_req(mit_messages()["apreq_sc1.der"])
    key = _recorded_keys("apreq_sc1.der.json")[0]
    client = CcachePrincipal(1, "EXAMPLE.TEST", ("phone1",))
    server = CcachePrincipal(1, "EXAMPLE.TEST", ("sigctl", "sc1.example.test"))
    credential = Credential(client, server, key.enctype, key.data, 1795351536, 1795351536,
                            1795387536, 1795437936, False, 0x40E10000, (), (),
                            encode_ticket(ap_req.ticket), b"")
    when = datetime(2026, 12, 2, 6, 0, 0, tzinfo=UTC)
    return {
        "ccache": encode_ccache(CredentialCache(client, (credential,), kdc_offset=(0, 0))),
        "device-restriction": encode_device_restriction(DeviceRestriction(1, ("2002", "611"))),
        "pa-enc-ts-enc": encode_pa_enc_ts_enc(PaEncTsEnc(when, 123456)),
        "pa-pac-request": encode_pa_pac_request(PaPacRequest(True)),
        "reply-key-pack": encode_reply_key_pack(ReplyKeyPack(
            EncryptionKey(key.enctype, key.data), Checksum(16, bytes(range(12))))),
    }


@cache
def der_corpus() -> tuple[bytes, ...]:
    """Every DER message of the corpus (MIT's, the vectors', the decrypted inner parts and
    the few telekey makes)."""
    return tuple(dict.fromkeys([*mit_messages().values(), *heimdal_messages().values(),
                                *vector_messages().values(), *decrypted_parts().values(),
                                *made_messages().values()]))


@cache
def km_messages() -> tuple[bytes, ...]:
    mit = mit_messages()
    when = datetime(2026, 12, 2, 6, 0, 0, tzinfo=UTC)
    suites = ((0, 0x14), (2, 0x0C), (2, 0x03))
    return (
        pktc.encode_wake_up(0xDEADBEEF, "sigctl/sc1.lab.test@LAB.TEST"),
        pktc.encode_ap_request(mit["apreq_sc1.der"], 7, 0x1000, suites, False, KM_HMAC_KEY),
        pktc.encode_ap_request(mit["apreq_sc2.der"], 9, 0x1001, suites[:1], True, KM_HMAC_KEY),
        pktc.encode_ap_reply(mit["aprep_sc1.der"], 0x2000, suites[0], 3600, 300, True, True,
                             KM_HMAC_KEY),
        pktc.encode_sec_param_recovered(KM_HMAC_KEY),
        pktc.encode_rekey(1, "sigctl/sc1.lab.test@LAB.TEST", when, 0x3000, suites, 60, 10,
                          False, KM_HMAC_KEY),
        pktc.encode_error_reply(mit["krberror_preauth_required.der"]),
    )


def esp_keys(suite: esp.Suite) -> esp.DirectionKeys:
    return esp.derive_sa_keys(ESP_SUBKEY, suite, 0x1000, 0x2000)[0]


@cache
def esp_packets(suite: esp.Suite) -> tuple[bytes, ...]:
    outbound = esp.OutboundSa(0x1000, suite, esp_keys(suite))
    return tuple(outbound.seal(esp.udp_datagram(5060, 5060, payload))
                 for payload in (b"", b"echo", *sip_messages()[:3], *km_messages()[:2]))


@cache
def udp_datagrams() -> tuple[bytes, ...]:
    return tuple(esp.udp_datagram(5060, 7, p) for p in (b"", b"hello", *sip_messages()[:4]))


@cache
def sip_messages() -> tuple[bytes, ...]:
    """Every SIP message of a call across two controllers, then its BYEs."""
    from tests.unit.test_call_flow import A, Network

    seen: list[bytes] = []

    class Recording(Network):  # type: ignore[misc]
        def to_controller(self, controller, leg, data):  # type: ignore[no-untyped-def]
            seen.append(data)
            super().to_controller(controller, leg, data)

        def to_agent(self, who, data):  # type: ignore[no-untyped-def]
            seen.append(data)
            super().to_agent(who, data)

    net = Recording()
    call = net.call(A, "2002")
    ended = net.agents[A].hangup(call)
    seen += ended.to_peer
    for data in ended.to_controller:
        net.to_controller(net.home[A], ("device", A), data)
    return tuple(dict.fromkeys(seen))


@cache
def sdp_bodies() -> tuple[bytes, ...]:
    return tuple(encode_sdp(MediaDescription("127.0.0.1", port, port + 2, profile), 7)
                 for port, profile in ((40000, "AES_CM_128_HMAC_SHA1_80"),
                                       (6000, "AEAD_AES_128_GCM")))


@cache
def rtp_packets() -> tuple[bytes, ...]:
    return tuple(encode_rtp(RtpPacket(0, seq, seq * 160, 0x1234, bytes(range(160)), seq == 1))
                 for seq in (1, 2))


@cache
def tcp_records() -> tuple[bytes, ...]:
    mit = mit_messages()
    return (encode_record(mit["asreq_pkinit_dh.der"]),
            encode_record(mit["tgsreq_sc1.der"]) + encode_record(mit["apreq_sc1.der"]))
