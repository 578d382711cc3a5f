"""Key management end to end in memory: device core ↔ controller core, ESP both ways, the
unknown-SPI Wake Up after a 'restart', retransmission, Error Replies and dropped ESP."""

import pickle
from datetime import UTC, datetime, timedelta

import pytest

from common.crypto import Key
from common.errors import KerberosError
from common.kerberos.tickets import KeyEntry, issue_ticket
from common.messages.restriction import DeviceRestriction, restriction_authorization_data
from common.messages.types import PrincipalName
from common.pktc import esp
from common.pktc import km_framing as pktc
from common.pktc.km_client import KeyManagementClient
from common.pktc.km_server import KeyManagementServer

REALM = "LAB.TEST"
DEVICE = ("127.0.0.1", 40000)
CNAME = PrincipalName(1, ("cta", "001a2b3c4d5e"))


ALL_SUITES = tuple(esp.SUITES.values())


def setup(suites=ALL_SUITES, restriction=None):
    now = datetime.now(UTC)
    service_key = Key.random(18)
    issued = issue_ticket(realm=REALM, cname=CNAME, crealm=REALM,
                          sname=PrincipalName(2, ("sigctl", "sc1")),
                          server_key=KeyEntry(1, service_key), session_enctype=18, flags=0,
                          authtime=now.replace(microsecond=0),
                          endtime=(now + timedelta(days=1)).replace(microsecond=0),
                          authorization_data=restriction_authorization_data(restriction)
                          if restriction else None)

    def server():
        return KeyManagementServer(principal="sigctl/sc1", realm=REALM,
                                   keys=lambda *a: service_key)

    client = KeyManagementClient(ticket=issued.ticket, session_key=issued.session_key,
                                 cname=CNAME, crealm=REALM, suites=tuple(suites))
    return now, server, client


def test_exchange_echo_restart_wake_up():
    now, make_server, client = setup()
    server = make_server()
    request = client.ap_request(now)
    exchange = server.receive_km(request, DEVICE, now, 0.0)
    assert exchange.result == "OK" and exchange.client == f"cta/001a2b3c4d5e@{REALM}"
    assert server.receive_km(request, DEVICE, now, 0.1).reply == exchange.reply  # lookaside
    event = client.receive(exchange.reply, 0.0)
    assert event.kind == "sa" and event.sa.suite is esp.AES_GCM_16
    assert server.receive_km(event.ack, DEVICE, now, 0.0).result == "OK"
    assert exchange.sa.confirmed
    inner = esp.udp_datagram(5060, 7, b"ping")
    result = server.receive_esp(event.sa.outbound.seal(inner), DEVICE, 1.0)
    assert result.payload == inner
    back = server.seal(result.sa, esp.udp_datagram(7, 5060, b"ping"))
    assert client.sa.inbound.open(back) == (17, esp.udp_datagram(7, 5060, b"ping"))
    # Replayed and tampered packets are dropped and counted.
    packet = event.sa.outbound.seal(inner)
    server.receive_esp(packet, DEVICE, 1.0)
    assert server.receive_esp(packet, DEVICE, 1.0).dropped == "ESP_REPLAY"
    fresh = event.sa.outbound.seal(inner)
    assert server.receive_esp(fresh[:-1] + bytes([fresh[-1] ^ 1]), DEVICE,
                              1.0).dropped == "ESP_BAD_ICV"
    assert (server.stats.esp_replay, server.stats.esp_bad_icv) == (1, 1)
    # The controller restarts: ESP on the old SPI → Wake Up → AP exchange with the same ticket.
    restarted = make_server()
    result = restarted.receive_esp(event.sa.outbound.seal(inner), DEVICE, 5.0)
    assert result.payload is None and result.wake_up is not None
    wake = client.receive(result.wake_up, 5.0)
    assert wake.kind == "wake_up" and wake.detail == f"sigctl/sc1@{REALM}"
    again = restarted.receive_km(client.ap_request(now, server_nonce=wake.server_nonce,
                                                   reestablish=True), DEVICE, now, 5.0)
    assert client.receive(again.reply, 5.0).kind == "sa"
    assert restarted.receive_esp(client.sa.outbound.seal(inner), DEVICE, 6.0).payload == inner
    # Wake Ups are rate limited per device address (ip, port).
    assert restarted.receive_esp(b"\x00\x00\x99\x99" + bytes(40), DEVICE, 6.0).wake_up
    assert restarted.receive_esp(b"\x00\x00\x99\x98" + bytes(40), DEVICE, 6.5).wake_up is None
    other = ("127.0.0.1", 40001)
    assert restarted.receive_esp(b"\x00\x00\x99\x98" + bytes(40), other, 6.5).wake_up


def test_errors_and_suites():
    now, make_server, client = setup(suites=(esp.DES3_CBC_SHA1,),
                                     restriction=DeviceRestriction(1, ("611", "911")))
    server = make_server()
    exchange = server.receive_km(client.ap_request(now), DEVICE, now, 0.0)
    assert exchange.sa.restriction.allowed_numbers == ("611", "911")
    assert client.receive(exchange.reply, 0.0).sa.suite is esp.DES3_CBC_SHA1
    assert server.receive_km(b"garbage", DEVICE, now, 0.0).reply is None
    tampered = bytearray(client.ap_request(now))
    tampered[-1] ^= 1
    error = client.receive(server.receive_km(bytes(tampered), DEVICE, now, 0.0).reply, 0.0)
    assert error.kind == "error" and error.error.error_code == 31  # BAD_INTEGRITY (HMAC)
    late = server.receive_km(client.ap_request(now - timedelta(minutes=10)), DEVICE, now, 0.0)
    assert client.receive(late.reply, 0.0).error.error_code == 37
    first = client.ap_request(now)
    server.receive_km(first, DEVICE, now, 0.0)
    # The same authenticator in a different message (other SPI) is a replay: 34.
    replayed = bytearray(first)
    framed = pktc.decode(first).message
    spi_at = 3 + len(framed.ap_req) + 4
    replayed[spi_at:spi_at + 4] = (framed.spi + 1).to_bytes(4, "big")
    reply = server.receive_km(bytes(replayed), DEVICE, now, 0.0).reply
    assert client.receive(reply, 0.0).error.error_code in (34, 41)


# (monotonic seconds, the controller's wall clock minus the right time) when the recorded AP
# Request comes again from another address, and the result it must get.
FORWARD_THEN_BACK = [(5.5, 600, "CTIME_SKEW"), (20.0, 0, "REPLAY"), (280.0, 0, "REPLAY"),
                     (400.0, 0, "CTIME_SKEW")]
BACK = [(5.5, -600, "CTIME_SKEW"), (700.0, -600, "REPLAY"), (850.0, -600, "REPLAY"),
        (1000.0, -600, "CTIME_SKEW")]


@pytest.mark.parametrize("replays", [FORWARD_THEN_BACK, BACK], ids=["forward-then-back", "back"])
def test_replay_cache_survives_a_wall_clock_step(replays):
    """The controller's wall clock steps at monotonic second 5 and an AP exchange follows (the
    device learned the controller's time); an AP Request accepted before the step, sent again
    from another address, is refused (skew or replay cache) whenever its ctime is within the
    skew again. Forward then back: the exchange during the step expired, by the wall clock,
    what the cache held. Back: by elapsed time alone the cache would forget it at 600 s, while
    its ctime is acceptable until 900 s."""
    issued, make_server, client = setup()
    now = issued + timedelta(seconds=1000)  # the ticket is valid 10 minutes before `now` too
    server = make_server()
    recorded = client.ap_request(now)
    assert server.receive_km(recorded, DEVICE, now, 0.0).result == "OK"
    stepped = now + timedelta(seconds=replays[0][1] + 5)
    assert server.receive_km(client.ap_request(stepped), DEVICE, stepped, 5.0).result == "OK"
    for mono, off, result in replays:
        wall = now + timedelta(seconds=mono + off)
        assert server.receive_km(recorded, ("127.0.0.1", 40001), wall, mono).result == result


def test_controller_rekey_when_the_device_does_not():
    now, make_server, client = setup()
    server = KeyManagementServer(principal="sigctl/sc1", realm=REALM,
                                 keys=make_server().keys, sa_lifetime_s=60, grace_s=10)
    exchange = server.receive_km(client.ap_request(now), DEVICE, now, 0.0)
    client.receive(exchange.reply, 0.0)
    assert server.rekeys_due(now, 50.0) == []  # the device's own turn (grace starts at 50)
    [(sa, rekey)] = server.rekeys_due(now, 55.0)
    assert sa is exchange.sa and server.rekeys_due(now, 56.0) == []  # sent once
    event = client.receive(rekey, 55.0)
    assert event.kind == "rekey"
    again = server.receive_km(client.ap_request(now, server_nonce=event.server_nonce),
                              DEVICE, now, 55.5)
    assert client.receive(again.reply, 55.5).kind == "sa"
    # A Rekey under another SA's key is refused.
    forged = pktc.encode_rekey(1, "sigctl/sc1@R", now, 1, (), 60, 10, False, bytes(20))
    with pytest.raises(KerberosError):
        client.receive(forged, 56.0)


def test_workers_prepare_and_the_sa_owner_installs():
    """km_workers: two worker cores with disjoint SPI shares prepare AP Requests; the core that
    owns the SAs installs them. A retransmission prepared again gets the reply already sent;
    the same AP-REQ from another address, prepared by the other worker, is a replay."""
    now, make_server, client = setup()
    owner = make_server()
    workers = [KeyManagementServer(principal="sigctl/sc1", realm=REALM,
                                   keys=owner.keys, spi_share=(i, 2)) for i in range(2)]
    request = client.ap_request(now)
    prepared = workers[0].prepare_km(request, DEVICE, now, 0.0)
    assert (prepared.spi - 256) % 2 == 0 and prepared.client == f"cta/001a2b3c4d5e@{REALM}"
    # It crosses to the owner pickled (sigctl/workers.py), keys and all.
    prepared = pickle.loads(pickle.dumps(prepared, pickle.HIGHEST_PROTOCOL))
    assert prepared.to_us.encryption and prepared.to_device.salt and prepared.reply
    exchange = owner.install(prepared, now, 0.0)
    assert exchange.result == "OK" and owner.sas[prepared.spi] is exchange.sa
    again = owner.install(workers[1].prepare_km(request, DEVICE, now, 0.1), now, 0.1)
    assert again.result == "RETRANSMIT" and again.reply == exchange.reply
    replayed = owner.install(workers[1].prepare_km(request, ("127.0.0.1", 40001), now, 0.2),
                             now, 0.2)
    assert replayed.result == "REPLAY" and replayed.reply is not None
    assert len(owner.sas) == 1
    # The device's SA works with the installed one; other messages need the owner.
    event = client.receive(exchange.reply, 0.0)
    assert workers[1].prepare_km(event.ack, DEVICE, now, 0.3) is None
    assert owner.receive_other(event.ack, DEVICE).result == "OK"
    inner = esp.udp_datagram(5060, 7, b"ping")
    assert owner.receive_esp(event.sa.outbound.seal(inner), DEVICE, 1.0).payload == inner
    # Every SPI a worker hands out is its own share, and never one it issued before.
    spis = {workers[1].prepare_km(client.ap_request(now), DEVICE, now, 0.0).spi
            for _ in range(50)}
    assert len(spis) == 50 and all((spi - 256) % 2 == 1 for spi in spis)


def test_sweeps_look_only_at_what_is_due():
    """expire() and rekeys_due() work from heaps by time: an SA replaced by a newer one ends
    10 s later and gets no Rekey; the newer one gets its Rekey and its end on time; an SA that
    followed its device to a new address (NAT rebinding) is still the one re-keyed."""
    now, make_server, client = setup()
    server = KeyManagementServer(principal="sigctl/sc1", realm=REALM,
                                 keys=make_server().keys, sa_lifetime_s=60, grace_s=10)
    first = server.receive_km(client.ap_request(now), DEVICE, now, 0.0).sa
    second = server.receive_km(client.ap_request(now), DEVICE, now, 30.0).sa
    assert server.expire(39.9) == 0 and server.expire(40.0) == 1
    assert first.inbound.spi not in server.sas and server.sas[second.inbound.spi] is second
    assert server.rekeys_due(now, 55.0) == []  # the replaced SA's turn: nothing
    event = client.receive(server.receive_km(client.ap_request(now), DEVICE, now, 31.0).reply,
                           0.0)
    third = server.newest[DEVICE]
    moved = ("127.0.0.1", 40002)
    inner = esp.udp_datagram(5060, 7, b"ping")
    assert server.receive_esp(event.sa.outbound.seal(inner), moved, 32.0).sa is third
    assert server.newest == {moved: third}
    [(sa, _)] = server.rekeys_due(now, 86.0)
    assert sa is third and server.rekeys_due(now, 87.0) == []
    assert server.expire(90.9) == 1 and server.expire(91.0) == 1  # second (at 41), third
    assert server.sas == {} and server.newest == {} and server.by_client == {}


def test_wake_up_never_amplifies():
    """An ESP packet with an unknown SPI is unauthenticated and its source may be spoofed: a
    Wake Up answers it only if the packet is at least as long, once per second per address,
    and within the global budget; what is held back is counted by reason."""
    from runtime.controller_link import KEEPALIVE

    server = KeyManagementServer(principal="sigctl/sc1", realm=REALM, keys=lambda *_: None,
                                 wake_up_rate=3.0)
    short = b"\x00\x00\x00\x09" + b"\x00" * 4  # 8 bytes: SPI and sequence number
    result = server.receive_esp(short, DEVICE, 1.0)
    assert result.wake_up is None and result.suppressed == "short"
    probe = b"\x00\x00\x00\x09" + b"\x00" * 100
    sent = server.receive_esp(probe, DEVICE, 1.0).wake_up
    assert sent is not None and len(sent) <= len(probe)
    assert server.receive_esp(probe, DEVICE, 1.5).suppressed == "per_source"
    # The budget (3 a second) is full again half a second later: three more, then none.
    others = [server.receive_esp(probe, ("192.0.2.9", port), 1.5) for port in range(1, 6)]
    assert [r.wake_up is not None for r in others] == [True, True, True, False, False]
    assert others[-1].suppressed == "global"
    assert server.receive_esp(probe, ("192.0.2.9", 9), 2.0).wake_up is not None  # refilled
    assert server.stats.wake_ups_suppressed == {"short": 1, "per_source": 1, "global": 2}
    # A device's keepalive probe always qualifies, for controller names up to 100 characters.
    name = "sigctl/" + "c" * (100 - len("sigctl/.example.net@EXAMPLE.NET")) + ".example.net"
    long_named = KeyManagementServer(principal=name, realm="EXAMPLE.NET", keys=lambda *_: None)
    smallest = 4 + 4 + 8 + (8 + len(KEEPALIVE) + 2 + 2) + 16  # AES-GCM-16: 4-byte alignment
    assert long_named.receive_esp(b"\x00\x00\x00\x09" + b"\x00" * (smallest - 4),
                                  DEVICE, 1.0).wake_up is not None
