"""Seed 001's call flow with the sans-I/O cores wired back to back: device A on controller 1
calls device B on controller 2 (and a device on the same controller); key delivery and its
acknowledgements, restriction, malformed SIP, wrong ACK hashes, CANCEL, BYE."""

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from common.calls import sip
from common.calls.control import CallControl, Leg, decode_call_key
from common.calls.escrow import open_sealed, seal
from common.calls.keys import ack_hash
from common.calls.sdp import MediaDescription
from common.calls.user_agent import UserAgent
from common.messages.restriction import DeviceRestriction
from common.pktc import esp

REALM = "LAB.TEST"
A, B, C = "cta/00000000000a", "cta/00000000000b", "cta/00000000000c"
SC1, SC2 = "sigctl/sc1.lab.test", "sigctl/sc2.lab.test"
ESCROW = X25519PrivateKey.generate()


class Network:
    """Moves SIP between two controllers and their user agents until nothing is left."""

    def __init__(self, restriction=None, tamper=None):
        online = {A, B, C}
        self.controllers = {
            SC1: CallControl(principal=SC1, realm=REALM, lines={"1001": A, "1003": C},
                             routes={"2": SC2}, online=online.__contains__,
                             seal=lambda data, call_id: seal(data, ESCROW.public_key(),
                                                             call_id)),
            SC2: CallControl(principal=SC2, realm=REALM, lines={"2002": B},
                             routes={"1": SC1}, online=online.__contains__)}
        self.home = {A: SC1, C: SC1, B: SC2}
        self.agents = {p: UserAgent(realm=REALM, identity=p) for p in (A, B, C)}
        self.restriction = restriction or {}
        self.tamper = tamper or (lambda who, data: data)
        self.log = []  # (who, first line)
        self.events = []
        self.escrow = {}
        self.answer = True
        self.drops = []  # (receiver, first bytes): lost once each

    def lost(self, who, data):
        for drop in self.drops:
            if drop[0] == who and data.startswith(drop[1]):
                self.drops.remove(drop)
                self.log.append((who, "LOST " + data.split(b"\r\n", 1)[0].decode()))
                return True
        return False

    def media(self, port):
        return MediaDescription("127.0.0.1", port, port + 1)

    def to_controller(self, controller, leg: Leg, data):
        if self.lost(controller, data):
            return
        self.log.append((controller, data.split(b"\r\n", 1)[0].decode()))
        out = self.controllers[controller].receive(leg, data, self.restriction.get(leg[1]))
        self.events += out.events
        if out.escrow:
            self.escrow[out.escrow.call_id] = out.escrow.sealed
        for send in out.sends:
            if send.leg[0] == "device":
                self.to_agent(send.leg[1], send.data)
            else:
                self.to_controller(send.leg[1], ("peer", controller), send.data)

    def to_agent(self, who, data):
        if self.lost(who, data):
            return
        self.log.append((who, data.split(b"\r\n", 1)[0].decode()))
        ua = self.agents[who]
        event = ua.receive_from_controller(data)
        self.events.append({"event": "ua_" + event.kind, "who": who})
        replies = event.to_controller
        if event.kind == "incoming" and self.answer:
            replies = ua.answer(event.call, self.media(7000))
        for reply in replies:
            self.to_controller(self.home[who], ("device", who),
                               self.tamper(who, reply))

    def call(self, caller, number):
        call, data = self.agents[caller].invite(number, self.media(6000))
        self.to_controller(self.home[caller], ("device", caller), self.tamper(caller, data))
        return call


def kinds(net, who=None):
    return [e["event"] for e in net.events if who is None or e.get("who") == who]


def test_call_across_two_controllers_delivers_one_key_to_both_devices():
    net = Network()
    call = net.call(A, "2002")
    assert call.state == "confirmed"
    callee = net.agents[B]
    assert callee.by_spi, "the callee holds the call"
    b_call = next(iter(callee.by_spi.values()))
    assert b_call.state == "confirmed"
    assert call.secrets.key.key.data == b_call.secrets.key.key.data
    # ESP both ways between the devices, SRTP keys crossed.
    packet = call.secrets.esp_out.seal(esp.udp_datagram(5060, 5060, b"hello"))
    assert esp.parse_udp_datagram(b_call.secrets.esp_in.open(packet)[1])[2] == b"hello"
    back = b_call.secrets.esp_out.seal(esp.udp_datagram(5060, 5060, b"hi"))
    assert esp.parse_udp_datagram(call.secrets.esp_in.open(back)[1])[2] == b"hi"
    assert call.secrets.srtp_send == b_call.secrets.srtp_receive
    assert call.secrets.srtp_receive == b_call.secrets.srtp_send
    assert call.remote_media.rtp_port == 7000 and b_call.remote_media.rtp_port == 6000
    # The path: INVITE through both controllers, 100s absorbed, 180/200 back, ACK through.
    assert [line for who, line in net.log if who == B] == [
        f"INVITE sip:2002@{REALM} SIP/2.0", f"ACK sip:2002@{REALM} SIP/2.0"]
    assert [line for who, line in net.log if who == A] == [
        "SIP/2.0 100 Trying", "SIP/2.0 180 Ringing", "SIP/2.0 200 OK"]
    # Only the caller's controller escrows, and only the escrow key opens the record.
    assert list(net.escrow) == [call.call_id]
    opened = open_sealed(net.escrow[call.call_id], ESCROW, call.call_id)
    assert call.secrets.srtp_send.master_key.hex().encode() in opened


def test_the_callee_sees_the_callers_line_not_what_the_caller_claimed():
    net = Network()
    net.call(A, "2002")
    invite = next(line for who, line in net.log if who == B)
    b_call = next(iter(net.agents[B].by_spi.values()))
    assert b_call.invite.header("from").startswith(f"<sip:1001@{REALM}>")
    assert invite.startswith("INVITE")


def test_call_on_one_controller():
    net = Network()
    call = net.call(A, "1003")
    assert call.state == "confirmed"
    assert next(iter(net.agents[C].by_spi.values())).state == "confirmed"


def test_unprovisioned_device_may_call_only_its_listed_numbers():
    restriction = DeviceRestriction(1, ("2002",))
    net = Network(restriction={A: restriction})
    refused = net.call(A, "1003")
    assert refused.status == 403 and refused.state == "ended"
    assert "call_refused" in kinds(net)
    allowed = net.call(A, "2002")
    assert allowed.state == "confirmed"


@pytest.mark.parametrize("number, status", [("9999", 404), ("2999", 404)])
def test_unknown_number_is_404(number, status):
    net = Network()
    call = net.call(A, number)
    assert call.status == status


def test_malformed_sip_gets_400_and_other_calls_go_on():
    net = Network()
    first = net.call(A, "2002")
    out = net.controllers[SC1].receive(("device", A), b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h"
                                       b"\r\nCall-ID: z\r\nCSeq: 1 INVITE\r\n\r\n")
    assert out.sends and out.sends[0].data.startswith(b"SIP/2.0 400 Missing")
    assert net.controllers[SC1].receive(("device", A), b"\x00\xff garbage").sends == []
    assert first.call_id in net.controllers[SC1].calls
    assert net.call(A, "1003").state == "confirmed"


def _wrong_ack(target):
    def tamper(who, data):
        if who == target and b"Call-Key-Ack:" in data:
            head, _, rest = data.partition(b"Call-Key-Ack: ")
            return head + b"Call-Key-Ack: " + b"0" * 64 + rest[64:]
        return data
    return tamper


def test_wrong_ack_from_the_callee_ends_the_call_with_500():
    net = Network(tamper=_wrong_ack(B))
    call = net.call(A, "2002")
    assert call.status == 500 and call.state == "ended"
    assert "call_key_ack_mismatch" in kinds(net)
    assert any(who == B and line.startswith("BYE") for who, line in net.log)
    assert not net.controllers[SC1].calls and not net.controllers[SC2].calls


def test_wrong_ack_from_the_caller_ends_the_call_with_bye_to_both():
    net = Network(tamper=_wrong_ack(A))
    call = net.call(A, "2002")
    assert call.state == "ended" and "Call Key Not Acknowledged" in call.why
    assert any(who == B and line.startswith("BYE") for who, line in net.log)
    assert not any(who == B and line.startswith("ACK") for who, line in net.log)
    assert not net.controllers[SC1].calls


def test_cancel_before_answer_gives_487():
    net = Network()
    net.answer = False
    call = net.call(A, "2002")
    assert call.state == "calling"
    net.to_controller(SC1, ("device", A), net.agents[A].cancel(call))
    assert call.status == 487
    assert not net.controllers[SC1].calls and not net.controllers[SC2].calls


def test_bye_end_to_end_then_each_leg_closes():
    net = Network()
    call = net.call(A, "2002")
    b_call = next(iter(net.agents[B].by_spi.values()))
    event = net.agents[A].hangup(call)
    assert len(event.to_peer) == 1
    peer_event = net.agents[B].receive_from_peer(b_call, event.to_peer[0])
    assert peer_event.kind == "ended" and peer_event.to_peer[0].startswith(b"SIP/2.0 200")
    for data in event.to_controller:
        net.to_controller(SC1, ("device", A), data)
    for data in peer_event.to_controller:
        net.to_controller(SC2, ("device", B), data)
    assert not net.controllers[SC1].calls and not net.controllers[SC2].calls
    assert kinds(net).count("call_ended") == 2


def test_a_call_key_header_round_trips_and_rejects_junk():
    key = decode_call_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=;spi=4096")
    assert key.spi == 4096 and key.key.data == bytes(range(32))
    assert ack_hash(key.key, key.spi).hex().startswith("7f708fd5")
    for bad in ("", "AAAA;spi=4096", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=;spi=1",
                "!!;spi=4096"):
        with pytest.raises(sip.SipError) as err:
            decode_call_key(bad)
        assert err.value.status == 400


def test_a_call_without_bye_expires_after_max_call_duration():
    net = Network()
    control = net.controllers[SC1]
    call = net.call(A, "2002")
    assert call.call_id in control.calls
    assert control.expire(3600.0, 7200) == []
    (outcome,) = control.expire(7201.0, 7200)
    assert outcome.ended == call.call_id and call.call_id not in control.calls


def _b_call(net):
    return next(iter(net.agents[B].by_spi.values()), None)


def test_a_lost_invite_is_recovered_by_the_callers_retransmission():
    net = Network()
    net.drops = [(B, b"INVITE")]
    call = net.call(A, "2002")
    assert call.state == "calling" and _b_call(net) is None
    net.to_controller(SC1, ("device", A), call.sent)  # timer A fires
    assert call.state == "confirmed" and _b_call(net).state == "confirmed"
    assert "invite_retransmission" in kinds(net)


def test_a_lost_200_is_repeated_from_the_callers_controller():
    net = Network()
    net.drops = [(A, b"SIP/2.0 200")]
    call = net.call(A, "2002")
    assert call.state == "ringing"
    net.to_controller(SC1, ("device", A), call.sent)
    assert call.state == "confirmed" and _b_call(net).state == "confirmed"
    assert call.secrets.key.key.data == _b_call(net).secrets.key.key.data


def test_a_lost_ack_is_recovered_by_the_callees_repeated_200():
    net = Network()
    net.drops = [(B, b"ACK")]
    call = net.call(A, "2002")
    b_call = _b_call(net)
    assert call.state == "confirmed" and b_call.state == "answered"
    net.to_controller(SC2, ("device", B), b_call.responses[-1])  # timer G fires
    assert b_call.state == "confirmed"
    assert [line for who, line in net.log if who == A].count("SIP/2.0 200 OK") == 2


def test_a_repeated_invite_to_the_callee_gets_the_same_answer():
    net = Network()
    net.call(A, "2002")
    b_call = _b_call(net)
    invite = sip.encode(b_call.invite)
    event = net.agents[B].receive_from_controller(invite)
    assert event.kind == "ignored" and event.to_controller == b_call.responses
