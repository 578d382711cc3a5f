"""Enterprise phones (seed 002) across controllers and key servers, as real processes on
loopback. There are two key servers of one enterprise (A and B: the same seed, their own
server ids) and two controllers. sc1 fetches K_g from A, gives its SAs a 4 s lifetime and
redirects to sc2 the extensions it does not serve. sc2 fetches K_g from B. Three phones run
`telekey phone run`.

- A phone sent to a controller that does not serve its extension gets a GRJ with the
  alternates. It keeps waiting for a GCF for `--grj-wait` (a forged GRJ must not send it
  away), then registers with the alternate.
- Each key server serves the other's phones through registration: a phone whose key file came
  from A registers with sc2, which knows only B, and the reverse.
- A phone registers again before its SA's lifetime ends, with no Rekey from the controller.
- After a kill -9 and a restart of its controller, a phone registers again (Wake Up) and
  calls another phone.
"""

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from common.calls.rtp import ulaw_decode, ulaw_encode
from cta.media import read_wav, tone, write_wav
from telekey.loopback import Enterprise, Lab, events, manage, wait_for
from telekey.mit_realm import free_port

pytestmark = pytest.mark.e2e
PINS = {"1500": "482915", "1501": "771203", "1600": "630418"}
GRJ_WAIT_S = 1.5
SA_LIFETIME_S, GRACE_S = 4, 2
# Long enough that the restarted controller answers it with a Wake Up (its anti-amplification
# rule: an ESP packet shorter than the Wake Up gets none).
PROBE = "x" * 100


def registered(phone) -> dict | None:
    return (manage(phone, op="status")["link"] or {}).get("sa")


def when(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("enterprise-failover"))
    try:
        enterprise = Enterprise(lab)
        b, b_ports, _ = enterprise.add_keyserver("keyserver-b", 2)
        keyservers = {"A": enterprise.keyserver, "B": b}
        ras = {"sc1": free_port(), "sc2": free_port()}
        settings = {
            "sc1": enterprise.controller_settings(
                "sc1", ras_port=ras["sc1"], ras_alternates=[f"127.0.0.1:{ras['sc2']}"],
                sa_lifetime_s=SA_LIFETIME_S, grace_s=GRACE_S),
            "sc2": enterprise.controller_settings(
                "sc2", ras_port=ras["sc2"],
                keyserver_url=f"https://127.0.0.1:{b_ports['advanced']}")}
        (lab.root / "rec").mkdir()
        for name in settings:
            lab.reserve(name)  # principals and keytabs one at a time (one KDC database)
        # The daemons start side by side: each takes seconds, mostly importing and compiling.
        with ThreadPoolExecutor() as pool:
            for done in [pool.submit(lab.controller, name, **settings[name]) for name in settings]:
                done.result()

            def administer(controller: str, *exts: str) -> None:
                for ext in exts:  # one at a time per controller: its first makes the master key
                    enterprise.add_extension(controller, ext, PINS[ext])

            for done in [pool.submit(administer, "sc2", "1500", "1501"),
                         pool.submit(administer, "sc1", "1600")]:
                done.result()
            starting = {
                # Homed on sc2, sent to sc1 first; key file from A.
                "1500": pool.submit(enterprise.phone, "1500", PINS["1500"], "sc1", "--grj-wait",
                                    str(GRJ_WAIT_S), "--retry-timeout", "0.5"),
                # Key file from A, registers with sc2 (which asks B).
                "1501": pool.submit(enterprise.phone, "1501", PINS["1501"], "sc2",
                                    "--record-dir", str(lab.root / "rec")),
                # Key file from B, registers with sc1 (which asks A); short SAs.
                "1600": pool.submit(enterprise.phone, "1600", PINS["1600"], "sc1",
                                    keyserver=f"https://127.0.0.1:{b_ports['basic']}")}
            phones = {ext: done.result() for ext, done in starting.items()}
        for phone in phones.values():
            wait_for(lambda phone=phone: registered(phone), 20)
        yield lab, keyservers, settings, phones
    finally:
        lab.close()


def test_a_phone_homed_elsewhere_waits_then_follows_the_grj(network):
    lab, _, _, phones = network
    names = [e["event"] for e in phones["1500"].log_events()]
    assert names.index("grj") < names.index("registration_redirected") \
        < names.index("registered")
    grj = next(e for e in phones["1500"].log_events() if e["event"] == "grj")
    redirected = next(e for e in phones["1500"].log_events()
                      if e["event"] == "registration_redirected")
    assert grj["reason"] == "not-homed-here" and grj["alternates"] == 1
    # The GRJ is unauthenticated: the phone went on waiting for a GCF before following it
    # (give or take the event loop's millisecond timers, read against the log's wall clock).
    assert when(redirected) - when(grj) >= GRJ_WAIT_S - 0.01
    sc2_ras = lab.controllers["sc2"]["process"].listening["ras_port"]
    assert redirected["to"] == f"127.0.0.1:{sc2_ras}"
    sc1, sc2 = (lab.controllers[n]["process"] for n in ("sc1", "sc2"))
    assert [e["result"] for e in events(sc1, "ras") if e["ext"] == "1500"] == ["GRJ_NOT_HOMED"]
    assert [e["result"] for e in events(sc2, "ras") if e["ext"] == "1500"][:2] == ["OK", "OK"]
    assert manage(phones["1500"], op="echo", data="via sc2")["reply"] == "via sc2"


def test_each_key_server_serves_the_other_s_phones(network):
    lab, keyservers, settings, phones = network
    # sc1 asks only A for K_g, sc2 only B. 1501's key file came from A (g starts with A's
    # server id, 1) and it registered with sc2, so B gave K_g for A's g; 1600's came from B
    # (2), and it registered with sc1, so A gave K_g for B's g.
    assert settings["sc1"]["keyserver_url"] != settings["sc2"]["keyserver_url"]
    for ext, controller, issuer, asked in (("1501", "sc2", 1, "B"), ("1600", "sc1", 2, "A")):
        link = manage(phones[ext], op="status")["link"]
        assert int(link["g"][:4], 16) == issuer and link["key_files"] == 1, link
        kg_requests = [e["query"] for e in events(keyservers[asked], "request")
                       if e["listener"] == "advanced"]
        assert f"g={link['g']}&ext={ext}" in kg_requests, kg_requests
        results = [e["result"] for e in events(lab.controllers[controller]["process"], "ras")
                   if e["ext"] == ext]
        assert results[:2] == ["OK", "OK"], results
        assert manage(phones[ext], op="echo", data=f"{ext} keyed")["reply"] == f"{ext} keyed"


def test_a_phone_registers_again_before_its_sa_ends(network):
    lab, _, _, phones = network
    phone = phones["1600"]
    wait_for(lambda: len(events(phone, "registered")) >= 2, SA_LIFETIME_S * 2)
    first, second = events(phone, "registered")[:2]
    assert first["lifetime_s"] == SA_LIFETIME_S
    assert not second["reestablish"] and second["session"] != first["session"]
    # Renewed `grace` before the end (the timer, not a Rekey or a Wake Up).
    assert SA_LIFETIME_S - GRACE_S - 0.5 < when(second) - when(first) < SA_LIFETIME_S
    sc1 = lab.controllers["sc1"]["process"]
    assert not [e for e in events(sc1, "rekey") if e["client"].startswith("phone/1600@")]
    assert not events(phone, "rekey") and not events(phone, "wake_up")
    assert manage(phone, op="echo", data="renewed")["reply"] == "renewed"
    phone.stop()


def test_after_a_controller_restart_phones_register_again_and_call(network):
    lab, _, settings, phones = network
    caller, callee = phones["1500"], phones["1501"]
    sc2 = lab.controllers["sc2"]["process"]
    os.kill(sc2.process.pid, signal.SIGKILL)
    sc2.process.wait()
    restarted = lab.controller("sc2", **settings["sc2"])
    # ESP on the SA the controller lost: Wake Up, a registration, the echo on the new SA.
    for phone in (caller, callee):
        before = len(events(phone, "registered"))
        assert manage(phone, op="echo", data=PROBE)["reply"] == PROBE
        again = events(phone, "registered")[before:]
        assert again and again[0]["reestablish"], again
    assert len(events(restarted, "wake_up")) >= 2
    assert [e["result"] for e in events(restarted, "ras")].count("OK") >= 4
    audio = lab.root / "caller.wav"
    write_wav(audio, tone(0.3, 500.0))
    reply = manage(caller, op="call", number="1501", play=str(audio))
    assert reply["ok"], reply
    done = manage(caller, op="hangup", call_id=reply["call_id"])
    assert done["ok"] and done["sent"] > 0, done
    recording = lab.root / "rec" / f"{reply['call_id']}.wav"
    wait_for(lambda: recording.exists(), 10)
    assert read_wav(recording) == ulaw_decode(ulaw_encode(read_wav(audio)))
