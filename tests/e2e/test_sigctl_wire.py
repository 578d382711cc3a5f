"""The controller's traffic as independent tools see it, and bad input on the wire:
tshark decodes every key-management message (pktc) with no Malformed item, decrypts the ticket,
authenticator and AP-REP with the controller keytab, and — given the SA keys — decrypts the ESP
packets (ICV verified by Wireshark) down to the inner UDP datagram; malformed, forged, expired
and replayed AP Requests get their Error Reply or are dropped; bad-ICV and replayed ESP is
dropped and counted; the controller keeps serving."""

import socket
from datetime import UTC, datetime, timedelta

import pytest

from common.crypto import Key
from common.kerberos.keytab import decode_keytab
from common.kerberos.tickets import KeyEntry, issue_ticket
from common.messages.krb_error import decode_krb_error
from common.messages.types import PrincipalName
from common.pktc import esp
from common.pktc import km_framing as pktc
from common.pktc.km_client import KeyManagementClient
from telekey.loopback import REALM, Capture, Lab, decode_capture, events, manage, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.close()


@pytest.mark.parametrize("suite", ["AES-GCM-16", "AES-CBC/HMAC-SHA1-96",
                                   "3DES-CBC/HMAC-SHA1-96"])
def test_tshark_decodes_and_decrypts_everything(lab, suite):
    lab.controller("sc1", suites=[suite])
    info = lab.controllers["sc1"]
    capture = Capture(lab.root / "cap.pcap", [info["km_port"], info["esp_port"]])
    device = lab.device("00:1a:2b:3c:4d:01", "sc1")
    wait_for(lambda: (manage(device, op="status")["link"] or {}).get("sa"))
    assert manage(device, op="echo", data="hello through ESP")["ok"]
    capture.stop()
    text = decode_capture(capture.path, pktc_port=info["km_port"], esp_port=info["esp_port"],
                          keytab=lab.root / "sc1.keytab", esp_sa=lab.root / "esp_sa")
    assert "Malformed" not in text
    for message in ("AP Request (0x02)", "AP Reply (0x03)",
                    "Security Parameter Recovered (0x04)"):
        assert f"Key Management Message ID: {message}" in text
    assert "usage 2 using keytab principal sigctl/sc1.lab.test@LAB.TEST" in text  # ticket
    assert "Decrypted keytype 18 usage 11" in text  # authenticator, with the session key
    assert "Decrypted keytype 18 usage 12" in text  # AP-REP, showing the sub-key
    assert "User Datagram Protocol, Src Port: 5060, Dst Port: 7" in text
    assert "User Datagram Protocol, Src Port: 7, Dst Port: 5060" in text
    assert text.count("[correct]") >= 2 and "[incorrect]" not in text  # ICVs checked
    assert b"hello through ESP".hex() in text.replace(" ", "")
    assert b"hello through ESP" not in capture.path.read_bytes()


def _client(lab, *, endtime_hours=10.0, authtime=None):
    """A device core holding a real ticket for sc1 (made with the controller's key, as the
    KDC would), to send hand-built messages."""
    [entry] = [e for e in decode_keytab((lab.root / "sc1.keytab").read_bytes())
               if e.enctype == 18]
    now = authtime or datetime.now(UTC)
    cname = PrincipalName(1, ("cta", "00aa00aa00aa"))
    issued = issue_ticket(realm=REALM, cname=cname, crealm=REALM,
                          sname=PrincipalName(2, ("sigctl", "sc1.lab.test")),
                          server_key=KeyEntry(entry.kvno, Key(18, entry.key)),
                          session_enctype=18, flags=0, authtime=now.replace(microsecond=0),
                          endtime=(now + timedelta(hours=endtime_hours)).replace(microsecond=0))
    return KeyManagementClient(ticket=issued.ticket, session_key=issued.session_key,
                               cname=cname, crealm=REALM)


def _ask(sock, port, data, timeout=2.0):
    sock.sendto(data, ("127.0.0.1", port))
    sock.settimeout(timeout)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None


@pytest.mark.parametrize("km_workers", [0, 2])
def test_bad_ap_requests_and_esp_are_refused_and_counted(lab, km_workers):
    """With km_workers = 2, the retransmission and the replay may reach the other worker:
    the main process's lookaside and replay cache still tell them apart."""
    controller = lab.controller("sc1", metrics_port=0, km_workers=km_workers)
    port = lab.controllers["sc1"]["km_port"]
    esp_port = lab.controllers["sc1"]["esp_port"]
    now = datetime.now(UTC)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        assert _ask(sock, port, b"\x02\x01\x10garbage", 1.0) is None  # dropped, no reply
        client = _client(lab)
        forged = bytearray(client.ap_request(now))
        forged[-1] ^= 1  # the pktc HMAC
        code = decode_krb_error(pktc.decode(_ask(sock, port, bytes(forged))).message.krb_error)
        assert code.error_code == 31
        expired = _client(lab, authtime=now - timedelta(days=2), endtime_hours=1)
        reply = pktc.decode(_ask(sock, port, expired.ap_request(now))).message
        assert decode_krb_error(reply.krb_error).error_code == 32
        skewed = _client(lab).ap_request(now - timedelta(minutes=10))
        assert decode_krb_error(pktc.decode(_ask(sock, port, skewed)).message.krb_error
                                ).error_code == 37
        good = _client(lab)
        request = good.ap_request(now)
        first = _ask(sock, port, request)
        assert _ask(sock, port, request) == first  # a retransmission: the same AP Reply
        event = good.receive(first, 0.0)
        assert event.kind == "sa"
        # The same AP-REQ with other parameters (another SPI): the authenticator checksum
        # no longer matches (41); the same bytes from another address: a replay (34).
        message = pktc.decode(request).message
        altered = pktc.encode_ap_request(message.ap_req, 0, message.spi + 1, message.suites,
                                         False, pktc.hmac_key(good.session_key))
        assert decode_krb_error(pktc.decode(_ask(sock, port, altered)).message.krb_error
                                ).error_code == 41
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            attacker.bind(("127.0.0.1", 0))
            assert decode_krb_error(pktc.decode(_ask(attacker, port, request)).message
                                    .krb_error).error_code == 34
        # ESP: a good packet is echoed; a replay and a bad ICV are dropped, not delivered.
        packet = event.sa.outbound.seal(esp.udp_datagram(5060, 7, b"ping"))
        echoed = _ask(sock, esp_port, packet)
        assert event.sa.inbound.open(echoed)[1] == esp.udp_datagram(7, 5060, b"ping")
        assert _ask(sock, esp_port, packet, 0.5) is None
        bad = bytearray(event.sa.outbound.seal(esp.udp_datagram(5060, 7, b"ping")))
        bad[-1] ^= 1
        assert _ask(sock, esp_port, bytes(bad), 0.5) is None
        # ... and the controller still serves.
        packet = event.sa.outbound.seal(esp.udp_datagram(5060, 7, b"still there"))
        assert event.sa.inbound.open(_ask(sock, esp_port, packet))[1][8:] == b"still there"
    results = [e["result"] for e in events(controller, "ap_request")]
    assert results == ["PKTC_BAD_HMAC", "TICKET_EXPIRED", "CTIME_SKEW", "OK", "RETRANSMIT",
                       "BAD_CHECKSUM", "REPLAY"]
    metrics_port = controller.listening["metrics_port"]
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    assert 'telekey_sigctl_esp_packets_total{result="ESP_REPLAY"} 1.0' in text
    assert 'telekey_sigctl_esp_packets_total{result="ESP_BAD_ICV"} 1.0' in text
    assert 'telekey_sigctl_esp_packets_total{result="accepted"} 2.0' in text
    assert "telekey_sigctl_security_associations 1.0" in text  # counted when scraped
    assert not events(controller, "internal_error")
    assert controller.process.poll() is None
