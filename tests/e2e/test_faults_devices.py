"""Faults under real processes on loopback, each ending in a clear log line (never a
traceback), no lost state and recovery without help:

- the wall clock of one process (the controller, or the device agent) steps forward 10
  minutes and back again, through libfaketime with a control file read at every call
  (FAKETIME_NO_CACHE). Monotonic clocks are left alone (FAKETIME_DONT_FAKE_MONOTONIC): a real
  clock step (NTP, settimeofday) moves CLOCK_REALTIME only, and a faked CLOCK_MONOTONIC
  stepping back would stall the event loop's timers for the length of the step, which no
  host can do. An on-path attacker records the loopback traffic (AF_PACKET) and replays an AP
  Request and an ESP packet from another address after each step;
- the device's PKCS#11 token (SoftHSM2's token directory) and its PIN file go missing under
  `telekey cta run`, then come back."""

import glob
import os
import socket
import struct
import threading
import urllib.request
from pathlib import Path

import pytest

from common.messages.krb_error import decode_krb_error
from common.pktc import km_framing
from telekey.loopback import Lab, events, manage, wait_for, wait_for_sa
from telekey.service_process import ServiceProcess

pytestmark = pytest.mark.e2e
MAC = "00:1a:2b:3c:4d:21"
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
STEP_S = 600


class StepClock:
    """A wall-clock offset for the processes started with `env()`, changed while they run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(0)

    def env(self) -> dict[str, str]:
        # FORCE_MONOTONIC_FIX=0: libfaketime 0.9.10 turns its "monotonic fix" on for this
        # glibc, and then its pthread_cond_timedwait (Python's GIL hand-over waits there)
        # often waits ~230 ms: every hand-over to the token's worker thread did, and a PKINIT
        # took seconds. The fix is for faked monotonic clocks, which these are not.
        return {"LD_PRELOAD": LIBFAKETIME[0], "FAKETIME_TIMESTAMP_FILE": str(self.path),
                "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                "FAKETIME_FORCE_MONOTONIC_FIX": "0"}

    def set(self, offset_s: int) -> None:
        # Replaced whole: a process reading the file never sees it half written.
        new = self.path.with_suffix(".new")
        new.write_text(f"{offset_s:+d}\n")
        os.replace(new, self.path)


class LoopbackSniffer:
    """UDP payloads sent on lo to the given ports, in order (AF_PACKET: needs root)."""

    def __init__(self, ports: set[int]) -> None:
        self.ports = ports
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        self.sock.bind(("lo", 0x0800))
        self.sock.settimeout(0.2)
        self.packets: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if address[2] == socket.PACKET_OUTGOING or data[9] != 17:  # each once; UDP only
                continue
            header = (data[0] & 0x0F) * 4
            destination = struct.unpack("!H", data[header + 2:header + 4])[0]
            if destination in self.ports:
                with self._lock:
                    self.packets.append((destination, data[header + 8:]))

    def to(self, port: int) -> list[bytes]:
        with self._lock:
            return [payload for destination, payload in self.packets if destination == port]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def send_from_elsewhere(data: bytes, port: int, timeout: float = 1.0) -> bytes | None:
    """`data` sent to the controller's `port` from a new address; its answer, if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def refusal(reply: bytes | None) -> int:
    """The KRB-ERROR code of the controller's Error Reply (fails on anything else)."""
    assert reply is not None, "the controller did not answer"
    message = km_framing.decode(reply).message
    assert isinstance(message, km_framing.ErrorReply), f"accepted: {type(message).__name__}"
    return decode_krb_error(message.krb_error).error_code


def esp_replays(controller: ServiceProcess) -> float:
    url = f"http://127.0.0.1:{controller.listening['metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith('telekey_sigctl_esp_packets_total{result="ESP_REPLAY"}'):
                return float(line.split()[-1])
    return 0.0


def echo(device: ServiceProcess, data: str) -> None:
    reply = manage(device, op="echo", data=data)
    assert reply["ok"] and reply["reply"] == data, reply


def skew_then_sa(device: ServiceProcess, start: int, offset_s: int) -> dict | None:
    """The SA established after the device learned, from a skew error, that the controller's
    clock is `offset_s` from its own (among the log lines from `start` on)."""
    lines = device.log_events()[start:]
    for index, line in enumerate(lines):
        if (line.get("event") == "controller_clock_skew" and line["action"] == "resent"
                and abs(line["offset_s"] - offset_s) < 5):
            return next((later for later in lines[index + 1:]
                         if later.get("event") == "sa_established"), None)
    return None


def logins(lab: Lab) -> int:
    return len([e for e in lab.kdc.log_events() if e.get("event") == "as_req"])


def assert_no_tracebacks(*processes: ServiceProcess) -> None:
    for process in processes:
        assert "Traceback" not in process.log_path.read_text(), process.log_path
        assert not [e for e in process.log_events()
                    if e.get("event") == "internal_error" or "exception" in e]


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.close()


@pytest.mark.skipif(not LIBFAKETIME, reason="libfaketime is not installed (Debian: faketime)")
@pytest.mark.skipif(os.geteuid() != 0, reason="capturing on lo (AF_PACKET) needs root")
@pytest.mark.parametrize("stepped", ["controller", "agent"])
def test_clock_steps_forward_and_back(lab, tmp_path, monkeypatch, stepped):
    """SA lifetime 8 s, grace 4 s: the device runs an AP exchange every 4 s, so each step is
    followed within seconds by one, which must succeed (after one KRB_AP_ERR_SKEW that teaches
    the device the controller's clock). Replays recorded before a step are refused after it:
    the AP Request by the skew check or the replay cache (which must not have forgotten it
    while the controller's clock was ahead), the ESP packet by its SA's anti-replay window."""
    info = lab.reserve("sc1")
    km_port, esp_port = info["km_port"], info["esp_port"]
    lab.manufacture(MAC)
    clock = StepClock(tmp_path / "faketime.rc")
    sniffer = LoopbackSniffer({km_port, esp_port})
    try:
        with monkeypatch.context() as env:
            if stepped == "controller":
                for name, value in clock.env().items():
                    env.setenv(name, value)
            controller = lab.controller("sc1", sa_lifetime_s=8, grace_s=4, metrics_port=0)
        with monkeypatch.context() as env:
            if stepped == "agent":
                for name, value in clock.env().items():
                    env.setenv(name, value)
            # Controller tickets last 7 days; with the agent's clock stepped, it renews its
            # ticket 6 s after it gets one, so its renewal timer is tested at every step.
            renewal = ("--pkinit-grace", str(7 * 86400 - 6)) if stepped == "agent" else ()
            device = lab.device(MAC, "sc1", *renewal)
        wait_for_sa(device)
        echo(device, "before the steps")
        requests = [p for p in sniffer.to(km_port)
                    if isinstance(km_framing.decode(p).message, km_framing.ApRequestMsg)]
        recorded = requests[0]  # the first AP Request, which the controller accepted
        assert refusal(send_from_elsewhere(recorded, km_port)) == 34  # KRB_AP_ERR_REPEAT
        logins_before = logins(lab)
        # The controller ahead by 10 minutes sees the old AP Request's ctime out of its skew;
        # once it is back, the replay cache still has it. The agent's steps leave the
        # controller's clock, so its replay cache, alone.
        expected = {("controller", STEP_S): 37, ("controller", 0): 34,
                    ("agent", STEP_S): 34, ("agent", 0): 34}
        for offset in (STEP_S, 0):
            esp_packet = sniffer.to(esp_port)[-1]
            replays = esp_replays(controller)
            start = len(device.log_events())
            tickets = len(events(device, "ticket"))
            clock.set(offset)

            assert send_from_elsewhere(esp_packet, esp_port, timeout=0.5) is None
            assert wait_for(lambda r=replays: esp_replays(controller) == r + 1, timeout=5)
            assert refusal(send_from_elsewhere(recorded, km_port)) == expected[stepped, offset]
            echo(device, f"just after the step to {offset:+d} s")

            # The next re-key: one skew error teaches the device the controller's clock
            # (ahead of it by 10 minutes, or back in step), then the AP exchange succeeds.
            learned = (STEP_S if stepped == "controller" else -STEP_S) if offset else 0
            wait_for(lambda s=start, o=learned: skew_then_sa(device, s, o), timeout=15)
            echo(device, f"after a re-key at {offset:+d} s")
            if stepped == "agent":  # the timer's next PKINIT: the KDC's skew error, a ticket
                kdc_offset = -STEP_S if offset else 0
                wait_for(lambda n=tickets, o=kdc_offset: events(device, "ticket")[n:] and abs(
                    manage(device, op="status")["clock_offset_s"] - o) < 5, timeout=15)

        results = [e["result"] for e in events(controller, "ap_request")]
        assert results[-1] == "OK" and "CTIME_SKEW" in results, results
        assert results.count("REPLAY") == (2 if stepped == "controller" else 3), results
        if stepped == "controller":  # the device kept its ticket throughout: no PKINIT
            assert logins(lab) == logins_before
        assert manage(device, op="status")["tickets"][0]["last_error"] is None
        assert controller.process.poll() is None and device.process.poll() is None
        assert_no_tracebacks(controller, device)
    finally:
        sniffer.close()


def test_token_and_pin_file_go_missing_then_come_back(lab):
    """SoftHSM2 does not go on from memory when its token directory goes: the open session
    finds no objects, and stays blind even once the directory is back. The PIN file is read
    only to log in to the token, so its loss alone changes nothing while the session lives."""
    lab.controller("sc1")
    directory = lab.manufacture(MAC)
    device = lab.device(MAC, "sc1")
    wait_for_sa(device)
    wait_for(lambda: events(device, "ticket"))
    tokens, pin = directory / "tokens", directory / "pin"
    away = {tokens: directory / "tokens.away", pin: directory / "pin.away"}

    def renewed_after(count: int) -> dict:
        assert manage(device, op="renew")["ok"]
        return wait_for(lambda: events(device, "ticket")[count:], timeout=15)[0]

    def unavailable(count: int, timeout: float = 15) -> list[dict]:
        return wait_for(lambda: events(device, "token_unavailable")[count:] or None,
                        timeout=timeout)

    pin.rename(away[pin])  # 1. The PIN file alone: the logged-in session is enough.
    assert renewed_after(len(events(device, "ticket")))["method"] == "DH"
    away[pin].rename(pin)

    tokens.rename(away[tokens])  # 2. The token's store goes.
    tickets = len(events(device, "ticket"))
    assert manage(device, op="renew")["ok"]
    [first] = unavailable(0)
    assert first["reason"] == "MODULE_ERROR" and first["retry_in_s"] == 5.0, first
    # Nothing is lost meanwhile: the ticket, the SA (ESP needs no token), the agent.
    echo(device, "while the token is away")
    status = manage(device, op="status")
    assert status["ok"] and status["certificate"] is None
    [ticket] = status["tickets"]
    assert ticket["endtime"] and "MODULE_ERROR" in ticket["last_error"], ticket
    [second] = unavailable(1, timeout=10)  # retried by itself, after a longer delay
    assert second["reason"] == "MODULE_ERROR" and second["retry_in_s"] == 10.0, second

    pin.rename(away[pin])  # 3. The token is back, the PIN file is not.
    away[tokens].rename(tokens)
    assert manage(device, op="renew")["ok"]
    [third] = unavailable(2)
    assert third["reason"] == "PIN_FILE_MISSING" and third["detail"] == str(pin), third

    away[pin].rename(pin)  # 4. Both back: the next renewal succeeds.
    assert renewed_after(tickets)["method"] == "DH"
    assert events(device, "token_reopened")
    status = manage(device, op="status")
    assert status["certificate"] == "factory" and status["tickets"][0]["last_error"] is None
    echo(device, "after the token came back")
    assert len(events(device, "token_unavailable")) == 3
    assert device.process.poll() is None
    assert_no_tracebacks(device)
