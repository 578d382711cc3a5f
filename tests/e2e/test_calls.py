"""Calls end to end on loopback (seed 001 FIG. 4): our KDC, two controllers linked by
an AP exchange and ESP, provisioned devices with SoftHSM tokens, an unprovisioned one, and a
network echo server. Audio crosses as SRTP (libsrtp) and is compared sample for sample; the
capture is decrypted by tshark with the lab's esp_sa; the escrowed keys decrypt the SRTP."""

import json
import subprocess
import sys
from array import array

import pytest
from pylibsrtp import Policy, Session

from common.calls.rtp import decode_rtp, ulaw_decode, ulaw_encode
from cta.media import read_wav
from telekey.loopback import REALM, CallLab, events, manage, wait_for

pytestmark = pytest.mark.e2e


def expected(samples: array) -> array:
    """What a receiver decodes of `samples` sent as PCMU."""
    return ulaw_decode(ulaw_encode(samples))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = CallLab(tmp_path_factory.mktemp("calls"))
    lab.start_controller("sc1")
    lab.start_controller("sc2")
    lab.start_devices()
    yield lab
    lab.close()


def _recording(path):
    return read_wav(path)


def test_call_between_two_controllers_audio_both_ways(lab):
    reply = manage(lab.a, op="call", number="2002", play=str(lab.wav["a"]))
    assert reply["ok"], reply
    call_id = reply["call_id"]
    done = manage(lab.a, op="hangup", call_id=call_id)
    assert done["ok"] and done["dropped"] == 0, done
    callee_file = lab.root / "rec-b" / f"{call_id}.wav"
    wait_for(lambda: callee_file.exists())
    assert _recording(callee_file) == expected(read_wav(lab.wav["a"]))
    assert _recording(done["recording"]) == expected(read_wav(lab.wav["b"]))
    # The path: both controllers saw the call; only the caller's escrowed it.
    sc1 = lab.controllers["sc1"]["process"]
    sc2 = lab.controllers["sc2"]["process"]
    assert [e["call_id"] for e in events(sc1, "call_invite")][:1] == [call_id]
    assert any(e["call_id"] == call_id and not e["origin"] for e in events(sc2, "call_invite"))
    assert any(e["call_id"] == call_id for e in events(sc1, "call_confirmed"))
    wait_for(lambda: any(e["call_id"] == call_id for e in events(sc2, "call_ended")))
    lab.calls = getattr(lab, "calls", []) + [call_id]


def test_device_to_server_call_echoes_the_audio(lab):
    reply = manage(lab.a, op="call", number="611", play=str(lab.wav["a"]))
    assert reply["ok"], reply
    done = manage(lab.a, op="hangup", call_id=reply["call_id"])
    assert _recording(done["recording"]) == expected(read_wav(lab.wav["a"]))


def test_unprovisioned_device_gets_403_for_a_normal_number_and_reaches_customer_service(lab):
    refused = manage(lab.u, op="call", number="2002")
    assert refused["ok"] is False and refused["status"] == 403, refused
    sc1 = lab.controllers["sc1"]["process"]
    assert any(e["status"] == 403 and e["restricted"] for e in events(sc1, "call_refused"))
    reply = manage(lab.u, op="call", number="611", play=str(lab.wav["u"]))
    assert reply["ok"], reply
    done = manage(lab.u, op="hangup", call_id=reply["call_id"])
    assert _recording(done["recording"]) == expected(read_wav(lab.wav["u"]))


def test_unknown_number_gets_404(lab):
    for number in ("9999", "2999"):  # nowhere; routed to sc2, which has no such line
        refused = manage(lab.a, op="call", number=number)
        assert refused["ok"] is False and refused["status"] == 404, refused


async def test_malformed_sip_wrong_ack_and_unknown_number_leave_other_calls_alone(lab):
    """A test client holding an SA with sc1 (its own principal and keytab) sends
    malformed SIP, an INVITE for an unknown number, and a call whose ACK carries a wrong
    Call-Key-Ack, while A and B are in a call; that call's audio arrives intact."""
    import asyncio

    from common.calls import sip
    from common.calls.sdp import MediaDescription
    from common.calls.user_agent import UserAgent
    from common.kerberos.keytab import decode_keytab
    from runtime.controller_link import ControllerAddress, ControllerLink
    from runtime.kdc_client import keytab_login

    sc1 = lab.controllers["sc1"]
    keytab = decode_keytab(lab.principal_keytab("media/tester.lab.test").read_bytes())
    ticket = keytab_login(f"127.0.0.1:{lab.kdc.port}", keytab, client="media/tester.lab.test",
                          service=sc1["principal"], realm=REALM)
    inbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def no_renew():
        return None

    link = ControllerLink([ControllerAddress(sc1["principal"], "127.0.0.1", sc1["km_port"],
                                             sc1["esp_port"])],
                          lambda _: ticket, no_renew, on_signal=inbox.put_nowait)
    await link.start()
    await asyncio.wait_for(link.sa_ready.wait(), 10)

    async def next_message(start: bytes) -> bytes:
        while True:
            data = await asyncio.wait_for(inbox.get(), 10)
            if data.startswith(start):
                return data

    ongoing = await asyncio.to_thread(manage, lab.a, op="call", number="2002",
                                      play=str(lab.wav["a"]))
    assert ongoing["ok"], ongoing

    await link.send_signal(b"INVITE sip:2002@LAB.TEST SIP/2.0\r\nVia: SIP/2.0/UDP t;branch=z9"
                           b"\r\nFrom: <sip:x@LAB.TEST>\r\nCall-ID: bad1\r\n\r\n")
    assert (await next_message(b"SIP/2.0 4")).startswith(b"SIP/2.0 400 Missing")

    ua = UserAgent(realm=REALM, identity="tester")
    media = MediaDescription("127.0.0.1", 9, 9)
    _, invite = ua.invite("4444", media)
    await link.send_signal(invite)
    assert (await next_message(b"SIP/2.0 404")).startswith(b"SIP/2.0 404 Not Found")

    call, invite = ua.invite("2002", media)
    await link.send_signal(invite)
    answer = await next_message(b"SIP/2.0 200")
    event = ua.receive_from_controller(answer)
    assert event.kind == "answered" and event.to_controller
    good = event.to_controller[0]
    wrong = sip.encode(sip.SipMessage(
        sip.parse(good).start,
        tuple((n, "0" * 64 if n == "call-key-ack" else v) for n, v in sip.parse(good).headers)))
    await link.send_signal(wrong)
    bye = sip.parse(await next_message(b"BYE "))
    assert bye.call_id == call.call_id and "Call Key Not Acknowledged" in bye.header("reason")
    process = sc1["process"]
    assert any(e["call_id"] == call.call_id for e in events(process, "call_key_ack_mismatch"))
    wait_for(lambda: any(e.get("call_id") == call.call_id and "Acknowledged" in e.get("why", "")
                         for e in events(lab.b, "call_ended")))

    done = await asyncio.to_thread(manage, lab.a, op="hangup", call_id=ongoing["call_id"])
    assert done["ok"], done
    assert _recording(done["recording"]) == expected(read_wav(lab.wav["b"]))
    callee_file = lab.root / "rec-b" / f"{ongoing['call_id']}.wav"
    wait_for(lambda: callee_file.exists())
    assert _recording(callee_file) == expected(read_wav(lab.wav["a"]))
    lab.calls = getattr(lab, "calls", []) + [ongoing["call_id"]]
    lab.srtp_ports = getattr(lab, "srtp_ports", []) + [ongoing["peer"]["rtp_port"]]


def _tshark(lab, *args: str) -> str:
    uat = []
    for line in (lab.root / "esp_sa").read_text().splitlines():
        uat += ["-o", f"uat:esp_sa:{line}"]
    decode = []
    for port in lab.esp_ports:
        decode += ["-d", f"udp.port=={port},udpencap"]
    for name in ("sc1", "sc2"):
        decode += ["-d", f"udp.port=={lab.controllers[name]['km_port']},pktc"]
    out = subprocess.run(["tshark", "-r", str(lab.root / "calls.pcap"), *decode, "-o",
                          "esp.enable_encryption_decode:TRUE", "-o",
                          "esp.enable_authentication_check:TRUE", *uat, *args],
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


def test_capture_decrypts_with_esp_sa_and_srtp_hides_the_audio(lab):
    lab.capture.stop()
    lab.esp_ports = [lab.controllers[n]["esp_port"] for n in ("sc1", "sc2")]
    lab.esp_ports += [manage(d, op="status")["calls"]["esp_port"] for d in (lab.a, lab.b, lab.u)]
    lab.esp_ports.append(lab.echo.listening["esp_port"])
    sip_lines = _tshark(lab, "-Y", "sip", "-T", "fields", "-e", "udp.port", "-e",
                        "sip.Request-Line", "-e", "sip.Status-Line").splitlines()
    assert sip_lines
    controller_ports = {str(p) for p in lab.esp_ports[:2]}
    device_ports = {str(p) for p in lab.esp_ports[2:]}

    def outer_ports(line):
        return set(line.split("\t")[0].split(",")[:2])

    invites = [x for x in sip_lines if "INVITE sip:2002@LAB.TEST" in x]
    # Device → sc1, sc1 → sc2 (peer link), sc2 → device: all inside ESP, all dissected.
    assert len([x for x in invites if outer_ports(x) & controller_ports]) >= 3
    device_to_device = [x for x in sip_lines if outer_ports(x) <= device_ports]
    assert any("BYE sip:" in x for x in device_to_device), sip_lines
    assert any("SIP/2.0 200 OK" in x for x in device_to_device)
    icvs = _tshark(lab, "-Y", "esp", "-T", "fields", "-e", "esp.icv_good")
    assert "1" in icvs.split() and "0" not in icvs.split()
    # No chunk of the audio A played is anywhere in the capture (SRTP encrypts it).
    pcmu = ulaw_encode(read_wav(lab.wav["a"]))
    payloads = _tshark(lab, "-T", "fields", "-e", "udp.payload")
    for offset in range(320, len(pcmu) - 40, 800):
        assert pcmu[offset:offset + 40].hex() not in payloads


def _srtp_payloads(lab, port: int) -> list[bytes]:
    out = _tshark(lab, "-Y", f"udp.dstport=={port}", "-T", "fields", "-e", "udp.payload")
    return [bytes.fromhex(line.split(",")[0]) for line in out.split() if line]


def test_escrowed_keys_decrypt_the_captured_srtp_and_only_with_the_escrow_key(lab):
    call_id = lab.calls[-1]
    opened = subprocess.run([sys.executable, "-m", "telekey", "escrow", "open", "--call-id",
                             call_id, "--key", str(lab.escrow_key), "--db", lab.escrow_db,
                             "--who", "test-officer"], capture_output=True, text=True,
                            timeout=60)
    assert opened.returncode == 0, opened.stderr
    keys = json.loads(opened.stdout)
    forward = keys["caller_to_callee"]
    session = Session(Policy(key=bytes.fromhex(forward["key"]) + bytes.fromhex(forward["salt"]),
                             ssrc_type=Policy.SSRC_ANY_INBOUND,
                             srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    packets = [decode_rtp(session.unprotect(p)) for p in _srtp_payloads(lab, lab.srtp_ports[-1])]
    packets.sort(key=lambda p: p.sequence)
    audio = ulaw_decode(b"".join(p.payload for p in packets))
    assert audio == expected(read_wav(lab.wav["a"]))

    # The controller's record does not hold the keys; another key does not open it.
    import sqlite3

    db = sqlite3.connect(lab.escrow_db.removeprefix("sqlite:///"))
    sealed = db.execute("select sealed from escrow_records where call_id = ?",
                        (call_id,)).fetchone()[0]
    assert bytes.fromhex(forward["key"]) not in sealed
    assert forward["key"].encode() not in sealed
    other = lab.root / "other-escrow"
    subprocess.run([sys.executable, "-m", "telekey", "escrow", "keygen", "--dir", str(other)],
                   check=True, capture_output=True, timeout=60)
    refused = subprocess.run([sys.executable, "-m", "telekey", "escrow", "open", "--call-id",
                              call_id, "--key", str(other / "escrow.key"), "--db",
                              lab.escrow_db, "--who", "someone-else"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1 and "ESCROW_CANNOT_OPEN" in refused.stderr
    access = db.execute("select who, result from escrow_access where call_id = ? order by id",
                        (call_id,)).fetchall()
    assert ("test-officer", "opened") in access and ("someone-else", "cannot_open") in access
