"""Chained call keys end to end (seed 003): two controllers with `call_key_policy =
"chained"`, devices A (1001) and C (1003) on sc1, B (2002) on sc2, real SoftHSM2 tokens.
Audio is compared sample for sample; the brokers' databases are read as they are stored."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from array import array
from pathlib import Path

import pytest

from common.broker.keys import KeyId
from common.calls.keys import CallKey, srtp_keys
from common.calls.rtp import ulaw_decode, ulaw_encode
from common.crypto import Key
from cta.media import read_wav, tone, write_wav
from runtime.master_key_store import MasterKeyring, open_store
from sigctl.broker_store import BrokerStore
from telekey.loopback import Lab, cli, events, manage, wait_for, wait_for_sa

pytestmark = pytest.mark.e2e
A_MAC, C_MAC, B_MAC = "00:1a:2b:3c:5d:0a", "00:1a:2b:3c:5d:0c", "00:1a:2b:3c:5d:0b"


def expected(samples: array) -> array:
    return ulaw_decode(ulaw_encode(samples))


class ChainedLab:
    def __init__(self, root) -> None:
        self.lab = Lab(root)
        self.root = root
        self.principal = {m: "cta/" + m.replace(":", "") for m in (A_MAC, C_MAC, B_MAC)}
        for name in ("sc1", "sc2"):
            self.lab.reserve(name)
        escrow = root / "escrow"
        subprocess.run([sys.executable, "-m", "telekey", "escrow", "keygen", "--dir",
                        str(escrow)], check=True, capture_output=True, timeout=60)
        self.escrow_key, self.escrow_db = escrow / "escrow.key", f"sqlite:///{root}/esc.db"
        self.wav = {}
        for name, seconds, frequency in (("a", 0.8, 440.0), ("b", 0.5, 660.0),
                                         ("c", 0.6, 550.0)):
            self.wav[name] = root / f"{name}.wav"
            write_wav(self.wav[name], tone(seconds, frequency))
            (root / f"rec-{name}").mkdir()
        self.start("sc1")
        self.start("sc2")
        for mac, number in ((A_MAC, "1001"), (C_MAC, "1003"), (B_MAC, "2002")):
            self.lab.provision(mac, number)
        self.a = self.device(A_MAC, "sc1", "1001", "a")
        self.c = self.device(C_MAC, "sc1", "1003", "c")
        self.b = self.device(B_MAC, "sc2", "2002", "b")
        for device in (self.a, self.b, self.c):
            wait_for_sa(device)
            wait_for(lambda d=device: self.epoch(d))

    def start(self, name: str, **extra: object):
        lab, other = self.lab, "sc2" if name == "sc1" else "sc1"
        settings: dict[str, object] = {
            "kdc": f"127.0.0.1:{lab.kdc.port}", "call_key_policy": "chained",
            "peers": {lab.controllers[other]["principal"]: lab.address(other)},
            "broker_database_url": f"sqlite:///{self.root}/{name}-broker.db",
            "extensions_database_url": f"sqlite:///{self.root}/{name}-ext.db",
            "broker_busy_timeout_ms": 300, **extra}
        if name == "sc1":
            settings |= {"lines": {"1001": self.principal[A_MAC], "1003": self.principal[C_MAC]},
                         "routes": {"2": lab.controllers["sc2"]["principal"]},
                         "escrow_public_key_file": self.root / "escrow" / "escrow.pub",
                         "escrow_database_url": self.escrow_db}
        else:
            settings |= {"lines": {"2002": self.principal[B_MAC]},
                         "routes": {"1": lab.controllers["sc1"]["principal"]}}
        return lab.controller(name, **settings)

    def device(self, mac: str, controller: str, number: str, name: str):
        return self.lab.device(mac, controller, "--number", number, "--record-dir",
                               str(self.root / f"rec-{name}"), "--play", str(self.wav[name]),
                               "--keepalive", "1")

    def epoch(self, device) -> int | None:
        return manage(device, op="status")["calls"].get("broker", {}).get("epoch")

    def store(self, name: str) -> BrokerStore:
        stash = self.root / f"{name}-ext.db.stash"
        return BrokerStore(f"sqlite:///{self.root}/{name}-broker.db",
                           MasterKeyring(open_store("sigctl", stash_file=stash, token_label=None,
                                                      pkcs11_module=Path("/"), pin_file=None)))

    def process(self, name: str):
        return self.lab.controllers[name]["process"]

    def close(self) -> None:
        self.lab.close()


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    lab = ChainedLab(tmp_path_factory.mktemp("chained"))
    yield lab
    lab.close()


def _invite_key(lab: ChainedLab, controller: str, call_id: str) -> tuple[str, KeyId]:
    event = next(e for e in events(lab.process(controller), "call_invite")
                 if e["call_id"] == call_id and "broker_key" in e)
    owner, key_id = event["broker_key"].split()
    return owner, KeyId.parse(key_id)


def _call(lab: ChainedLab, caller, number: str, play: str, **extra) -> dict:
    reply = manage(caller, op="call", number=number, play=str(lab.wav[play]), **extra)
    assert reply["ok"], reply
    return reply


def _hangup(lab: ChainedLab, caller, call_id: str, callee_rec: str) -> dict:
    done = manage(caller, op="hangup", call_id=call_id)
    assert done["ok"] and done["dropped"] == 0, done
    wait_for(lambda: (lab.root / callee_rec / f"{call_id}.wav").exists())
    return done


def test_a_call_uses_the_callees_key_and_the_broker_then_keeps_only_the_next(chained):
    lab = chained
    reply = _call(lab, lab.a, "1003", "a")
    call_id = reply["call_id"]
    owner, key_id = _invite_key(lab, "sc1", call_id)
    assert owner == lab.principal[C_MAC]
    store = lab.store("sc1")
    key = store.keys(owner)[key_id.slot]
    assert key.key_id == key_id
    # Escrow opens the chained call's media keys: those derived from the callee's key.
    opened = subprocess.run([sys.executable, "-m", "telekey", "escrow", "open", "--call-id",
                             call_id, "--key", str(lab.escrow_key), "--db", lab.escrow_db,
                             "--who", "test-officer"], capture_output=True, text=True,
                            timeout=60)
    assert opened.returncode == 0, opened.stderr
    forward, _ = srtp_keys(CallKey(Key(18, key.key), 256).key, "AES_CM_128_HMAC_SHA1_80")
    assert json.loads(opened.stdout)["caller_to_callee"]["key"] == forward.master_key.hex()

    done = _hangup(lab, lab.a, call_id, "rec-c")
    assert read_wav(lab.root / "rec-c" / f"{call_id}.wav") == expected(read_wav(lab.wav["a"]))
    assert read_wav(done["recording"]) == expected(read_wav(lab.wav["c"]))

    # After the call: C holds the next generation, the broker only that one, wrapped.
    wait_for(lambda: manage(lab.c, op="status")["calls"]["broker"]["keys"][str(key_id.slot)]
             == str(key_id.next()))
    rows = {r["slot"]: r for r in store.wrapped_rows(owner)}
    row = rows[key_id.slot]
    assert (row["generation"], row["state"], row["next_key"]) == (key_id.generation + 1,
                                                                   "ready", None)
    assert all(key.key not in bytes(r["key"]) for r in rows.values())
    assert store.keys(owner)[key_id.slot].key != key.key
    raw = (lab.root / "sc1-broker.db").read_bytes() + \
        (lab.lab.manufacture(C_MAC) / "broker.json").read_bytes()
    assert key.key not in raw and store.keys(owner)[key_id.slot].key not in raw

    # The next call to C takes another key; none ever serves two sessions.
    again = _call(lab, lab.a, "1003", "a")
    _, second = _invite_key(lab, "sc1", again["call_id"])
    assert second != key_id
    _hangup(lab, lab.a, again["call_id"], "rec-c")
    store.close()


def test_cross_network_call_and_a_conference_carry_audio(chained):
    lab = chained
    first = _call(lab, lab.a, "2002", "a")
    owner, key_id = _invite_key(lab, "sc2", first["call_id"])
    assert owner == lab.principal[B_MAC]  # B's broker chose B's key, sent it link-wrapped
    assert any(e["call_id"] == first["call_id"] for e in events(lab.process("sc1"),
                                                                "call_confirmed"))
    # A brings C into the call: C receives B's key wrapped under one of its own.
    joined = _call(lab, lab.a, "1003", "a", conference=first["call_id"])
    assert _invite_key(lab, "sc1", joined["call_id"]) == (owner, key_id)
    done = _hangup(lab, lab.a, joined["call_id"], "rec-c")
    assert read_wav(lab.root / "rec-c" / f"{joined['call_id']}.wav") == \
        expected(read_wav(lab.wav["a"]))
    assert read_wav(done["recording"]) == expected(read_wav(lab.wav["c"]))
    done = _hangup(lab, lab.a, first["call_id"], "rec-b")
    assert read_wav(lab.root / "rec-b" / f"{first['call_id']}.wav") == \
        expected(read_wav(lab.wav["a"]))
    assert read_wav(done["recording"]) == expected(read_wav(lab.wav["b"]))
    # Every participant whose key the session used gets a fresh one.
    wait_for(lambda: manage(lab.b, op="status")["calls"]["broker"]["keys"][str(key_id.slot)]
             == str(key_id.next()))
    sessions = {first["call_id"], joined["call_id"]}
    for controller, mac in (("sc1", A_MAC), ("sc1", C_MAC), ("sc2", B_MAC)):
        assert any(e["device"] == lab.principal[mac] and e["session"] in sessions
                   for e in events(lab.process(controller), "broker_refresh_sent")), mac
    assert not events(lab.process("sc1"), "broker_refresh_refused")


def test_kill9_between_the_end_of_a_call_and_the_acknowledgement(chained):
    lab = chained
    reply = _call(lab, lab.a, "1003", "a")
    epoch = lab.epoch(lab.c)
    os.kill(lab.c.process.pid, signal.SIGSTOP)  # C cannot acknowledge the refresh
    try:
        manage(lab.a, op="hangup", call_id=reply["call_id"])
        wait_for(lambda: any(e.get("session") == reply["call_id"]
                             for e in events(lab.process("sc1"), "broker_refresh_sent")))
        lab.process("sc1").process.kill()
        lab.process("sc1").process.wait()
    finally:
        os.kill(lab.c.process.pid, signal.SIGCONT)
    lab.start("sc1")
    # C and the broker agree again: a new pool from C's new AP exchange.
    wait_for(lambda: (lab.epoch(lab.c) or 0) > epoch)
    store = lab.store("sc1")
    wait_for(lambda: store.pool(lab.principal[C_MAC]).state == "ready")
    assert store.pool(lab.principal[C_MAC]).epoch == lab.epoch(lab.c)
    store.close()
    for device in (lab.a, lab.c):
        wait_for_sa(device)
    again = _call(lab, lab.a, "1003", "a")
    owner, key_id = _invite_key(lab, "sc1", again["call_id"])
    assert key_id.epoch == lab.epoch(lab.c)
    _hangup(lab, lab.a, again["call_id"], "rec-c")


def test_a_locked_database_refuses_chained_calls_with_503(chained):
    lab = chained
    db = sqlite3.connect(lab.root / "sc1-broker.db", timeout=5)
    db.execute("BEGIN EXCLUSIVE")
    try:
        refused = manage(lab.a, op="call", number="1003")
        assert refused["ok"] is False and refused["status"] == 503, refused
    finally:
        db.rollback()
        db.close()
    assert events(lab.process("sc1"), "broker_unavailable")
    reply = _call(lab, lab.a, "1003", "a")
    _hangup(lab, lab.a, reply["call_id"], "rec-c")


def test_the_periodic_refresh_replaces_every_pool_within_its_period(chained):
    lab = chained
    devices = (lab.a, lab.c)

    def epochs() -> list[int]:
        return [lab.epoch(d) or 0 for d in devices]

    before = epochs()
    lab.process("sc1").stop()
    lab.start("sc1", broker_refresh_s=4.0)
    # Pools older than the period are replaced at the devices' next AP exchange...
    wait_for(lambda: all(e > b for e, b in zip(epochs(), before, strict=True)), timeout=15)
    fresh, started = epochs(), time.monotonic()
    # ...and each fresh one again within the period, by a Rekey from the broker.
    wait_for(lambda: all(e > f for e, f in zip(epochs(), fresh, strict=True)), timeout=10)
    assert time.monotonic() - started < 4.0 + 2.0  # the period, and a Rekey's round trip
    refreshed = {e["device"] for e in events(lab.process("sc1"), "broker_periodic_refresh")}
    assert {lab.principal[A_MAC], lab.principal[C_MAC]} <= refreshed
    # What an operator sees: identifiers and generations, never keys.
    listing = cli("sigctl", "broker", "list", "--config", str(lab.root / "sc1.toml"))
    assert listing.returncode == 0, listing.stderr
    rows = {row[0]: row for row in (line.split("\t") for line in listing.stdout.splitlines())}
    for mac, epoch in zip((A_MAC, C_MAC), fresh, strict=True):
        device, generation, state, _, slots = rows[lab.principal[mac]]
        assert int(generation.removeprefix("epoch ")) > epoch  # refreshed within the period
        assert state in ("ready", "refreshing")
        assert all(slot.split(":")[2] in ("ready", "in_use", "refreshing")
                   for slot in slots.split())
