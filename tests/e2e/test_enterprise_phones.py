"""Enterprise phones (seed 002) end to end on loopback: a real key server, real controllers
with their RAS port open, and `telekey phone run` processes with their own SoftHSM2 tokens.

- A phone fetches its key file, registers (GRQ/GCF/RRQ/RCF with H.235 ICVs), opens ESP, and
  calls a cable device on another controller and is called by it, with audio equal sample
  for sample; tshark dissects the registration as H.225.0 RAS, 0 malformed, tokens shown.
- Failures (seed FIG. 4): a wrong PIN meets silence, one new key file, then "registration
  failed: check the PIN" and the phone stops, and its address is locked out; replayed GRQ and
  RRQ, malformed PER and messages without tokens get no answer; after a K_m rotation the
  phone is told its key information is stale, fetches a new key file and registers.
"""

import socket
import subprocess
import time
from array import array
from urllib.request import urlopen

import pytest

from common.calls.rtp import ulaw_decode, ulaw_encode
from common.enterprise.key_file import decode_key_file
from common.enterprise.per import encode_ras
from common.enterprise.registration import PhoneKey, PhoneRegistration
from cta.media import read_wav, tone, write_wav
from telekey.loopback import CallLab, Enterprise, Lab, events, manage, wait_for

pytestmark = pytest.mark.e2e
PHONE_EXT, PHONE_PIN = "1500", "482915"


def expected(samples: array) -> array:
    return ulaw_decode(ulaw_encode(samples))


def registered(phone) -> dict | None:
    return (manage(phone, op="status")["link"] or {}).get("sa")


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    lab = CallLab(tmp_path_factory.mktemp("enterprise-calls"))
    enterprise = Enterprise(lab)
    lab.start_controller("sc1", **enterprise.controller_settings("sc1"))
    lab.start_controller("sc2")
    lab.start_devices()
    enterprise.add_extension("sc1", PHONE_EXT, PHONE_PIN)
    (lab.root / "rec-p").mkdir()
    # Shorter than what B plays: a caller hangs up when its own audio has been sent.
    lab.wav["p"] = lab.root / "p.wav"
    write_wav(lab.wav["p"], tone(0.4, 520.0))
    phone = enterprise.phone(PHONE_EXT, PHONE_PIN, "sc1", "--record-dir",
                             str(lab.root / "rec-p"), "--play", str(lab.wav["p"]),
                             "--esp-keylog", str(lab.root / "esp_sa"))
    wait_for(lambda: registered(phone), 30)
    yield lab, enterprise, phone
    lab.close()


def test_phone_registers_echoes_and_calls_a_cable_device_both_ways(calls):
    lab, enterprise, phone = calls
    sc1 = lab.controllers["sc1"]["process"]
    assert [e["result"] for e in events(sc1, "ras")][:2] == ["OK", "OK"]
    assert manage(phone, op="echo", data="through ESP")["reply"] == "through ESP"
    # The phone calls B (2002, homed on sc2) ...
    reply = manage(phone, op="call", number="2002", play=str(lab.wav["a"]))
    assert reply["ok"], reply
    done = manage(phone, op="hangup", call_id=reply["call_id"])
    assert done["ok"] and done["dropped"] == 0, done
    callee_file = lab.root / "rec-b" / f"{reply['call_id']}.wav"
    wait_for(lambda: callee_file.exists())
    assert read_wav(callee_file) == expected(read_wav(lab.wav["a"]))
    assert read_wav(done["recording"]) == expected(read_wav(lab.wav["b"]))
    # ... and B calls the phone: sc2 routes 1xxx to sc1, where the extension is a line.
    reply = manage(lab.b, op="call", number=PHONE_EXT, play=str(lab.wav["b"]))
    assert reply["ok"], reply
    done = manage(lab.b, op="hangup", call_id=reply["call_id"])
    assert done["ok"], done
    phone_file = lab.root / "rec-p" / f"{reply['call_id']}.wav"
    wait_for(lambda: phone_file.exists())
    assert read_wav(phone_file) == expected(read_wav(lab.wav["b"]))
    assert read_wav(done["recording"]) == expected(read_wav(lab.wav["p"]))
    invites = events(sc1, "call_invite")
    assert any(e["caller"] == f"phone/{PHONE_EXT}" for e in invites)
    assert any(e["callee"] == f"phone/{PHONE_EXT}" for e in invites)


def test_tshark_dissects_the_registration_as_h225_ras(calls):
    lab, enterprise, phone = calls
    ras_port = lab.controllers["sc1"]["process"].listening["ras_port"]
    lab.capture.stop()
    summary = subprocess.run(
        ["tshark", "-r", str(lab.capture.path), "-d", f"udp.port=={ras_port},h225", "-Y",
         "h225", "-T", "fields", "-e", "h225.RasMessage", "-e", "_ws.malformed",
         "-e", "_ws.expert"], capture_output=True, text=True, timeout=120, check=True)
    rows = [line.split("\t") for line in summary.stdout.splitlines()]
    # gatekeeperRequest, gatekeeperConfirm, registrationRequest, registrationConfirm
    assert [row[0] for row in rows][:4] == ["0", "1", "3", "4"], summary.stdout
    assert all(not row[1] and not row[2] for row in rows), summary.stdout
    detail = subprocess.run(
        ["tshark", "-r", str(lab.capture.path), "-d", f"udp.port=={ras_port},h225", "-Y",
         "h225", "-V"], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "Malformed" not in detail
    for shown in ("gatekeeperRequest", "gatekeeperConfirm", "registrationRequest",
                  "registrationConfirm", "cryptoHashedToken", "tokenOID: 0.0.8.235.0.2.1",
                  "algorithmOID: 1.2.840.113549.2.9", "[bit length 128]", "profileInfo",
                  f"dialledDigits: {PHONE_EXT}", "genericData", "endpointIdentifier"):
        assert shown in detail, shown


# --- failures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def failures(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("enterprise-failures"))
    enterprise = Enterprise(lab)
    lab.controller("sc1", **enterprise.controller_settings(
        "sc1", ras_lockout_failures=3, ras_lockout_s=3.0, kg_cache_s=1.0))
    enterprise.add_extension("sc1", "2001", "1234")
    enterprise.add_extension("sc1", "2002", "5678")
    yield lab, enterprise
    lab.close()


def _ras_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(1.0)
    return sock


def _exchange(sock: socket.socket, data: bytes, port: int) -> bytes | None:
    sock.sendto(data, ("127.0.0.1", port))
    try:
        return sock.recv(4096)
    except TimeoutError:
        return None


def test_wrong_pin_meets_silence_then_check_the_pin_and_the_address_is_locked_out(failures):
    lab, enterprise = failures
    sc1 = lab.controllers["sc1"]["process"]
    started = time.monotonic()
    phone = enterprise.phone("2001", "9999", "sc1", "--tries", "2", "--retry-timeout", "0.3",
                             "--local-host", "127.0.0.2", name="wrong-pin")
    assert phone.process.wait(timeout=30) == 2
    log = phone.log_path.read_text()
    assert "registration failed: check the PIN" in log
    # Two rounds of GRQs, one new key file between them, and no answer to any of them.
    assert [e["event"] for e in phone.log_events()].count("key_file") == 2
    assert not [e for e in phone.log_events() if e["event"] == "registered"]
    results = [e["result"] for e in events(sc1, "ras") if e["peer"].startswith("127.0.0.2:")]
    assert results[:3] == ["BAD_ICV"] * 3, results
    assert set(results[3:]) <= {"BAD_ICV"}
    lockouts = events(sc1, "ras_lockout")
    assert lockouts and lockouts[0]["peer"] == "127.0.0.2"
    assert time.monotonic() - started < 25
    # A phone on another address is not affected.
    good = enterprise.phone("2002", "5678", "sc1", name="good-2002")
    wait_for(lambda: registered(good), 20)
    good.stop()


def test_replays_malformed_per_and_missing_tokens_get_no_answer(failures):
    lab, enterprise = failures
    sc1 = lab.controllers["sc1"]["process"]
    port = int(sc1.listening["ras_port"])
    with urlopen(f"{enterprise.basic_url}/kkg.txt?ext=2002",
                 context=_tls(enterprise)) as response:
        key_file = decode_key_file(response.read())
    key = PhoneKey(key_file.profile, key_file.generator, key_file.generator_key,
                   key_file.check_value)
    phone = PhoneRegistration(ext="2002", pin="5678", key=key)
    from datetime import UTC, datetime

    sock, other = _ras_socket(), _ras_socket("127.0.0.3")
    try:
        grq = phone.grq(datetime.now(UTC), sock.getsockname())
        gcf = _exchange(sock, grq, port)
        assert gcf is not None
        assert _exchange(sock, grq, port) == gcf  # a retransmission: the same GCF
        rrq = phone.receive(gcf, datetime.now(UTC), time.monotonic()).reply
        rcf = _exchange(sock, rrq, port)
        assert phone.receive(rcf, datetime.now(UTC), time.monotonic()).kind == "registered"
        assert _exchange(other, grq, port) is None  # replayed GRQ
        assert _exchange(other, rrq, port) is None  # replayed RRQ: Rg was single use
        assert _exchange(other, b"\x02\x20garbage" * 3, port) is None  # malformed PER
        no_token = ("gatekeeperRequest", {
            "requestSeqNum": 9, "protocolIdentifier": "0.0.8.2250.0.7",
            "rasAddress": ("ipAddress", {"ip": b"\x7f\0\0\1", "port": 1}),
            "endpointType": {"terminal": {}, "mc": False, "undefinedNode": False},
            "endpointAlias": [("dialledDigits", "2002")], "supportsAssignedGK": False})
        assert _exchange(other, encode_ras(no_token), port) is None
    finally:
        sock.close()
        other.close()
    results = [e["result"] for e in events(sc1, "ras")][-4:]
    assert results == ["REPLAY", "NO_CHALLENGE", "BAD_PER", "MISSING_TOKEN"], results
    assert sc1.process.poll() is None


def _tls(enterprise):
    import ssl

    return ssl.create_default_context(cafile=enterprise.pki / "ca.pem")


def test_km_rotation_makes_the_phone_fetch_a_new_key_file(failures):
    lab, enterprise = failures
    sc1 = lab.controllers["sc1"]["process"]
    phone = enterprise.phone("2002", "5678", "sc1", name="rotating")
    wait_for(lambda: registered(phone), 20)
    first = manage(phone, op="status")["link"]
    phone.stop()
    new_cvm = enterprise.rotate(bytes(range(100, 132)))
    assert new_cvm != first["cvm"]
    time.sleep(1.2)  # the controller's K_g cache (kg_cache_s = 1)
    phone = enterprise.phone("2002", "5678", "sc1", name="rotating")  # same directory
    wait_for(lambda: registered(phone), 20)
    now = manage(phone, op="status")["link"]
    assert now["cvm"] == new_cvm and now["g"] != first["g"]
    names = [e["event"] for e in phone.log_events()]
    # It registered first with what it kept (no key file), was told the key is stale.
    assert names.index("registration_stale_key") < names.index("key_file") \
        < names.index("registered")
    assert names.count("key_file") == 1
    assert "GRJ_STALE_KEY" in [e["result"] for e in events(sc1, "ras")]
    assert manage(phone, op="echo", data="new key")["reply"] == "new key"
    phone.stop()
