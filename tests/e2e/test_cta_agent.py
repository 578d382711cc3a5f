"""The long-running device agent (`telekey cta run`): renewal timers fire before the
tickets end (PKINIT for tickets PKINIT gave, TGS for those TGS gave), the management port
answers status/renew/selfcert, a seed 004 request over the port makes the agent log in again
with its self-issued certificate, and bad input gets an error without stopping the agent."""

import base64
import json
import socket

import pytest

from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from telekey.loopback import wait_for
from telekey.service_process import start_service
from tests.e2e.test_cta_device import MAC, REALM, _request, _token_objects, cli, lab  # noqa: F401

pytestmark = pytest.mark.e2e
SERVICE = "sigctl/sc1.lab.test"


class Management:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rwb")

    def send_raw(self, line: bytes) -> dict:
        self.file.write(line)
        self.file.flush()
        return json.loads(self.file.readline())

    def __call__(self, **message) -> dict:
        return self.send_raw(json.dumps(message).encode() + b"\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _tickets(agent, at_least: int = 1) -> list[dict] | None:
    """The agent's `ticket` events once there are `at_least` of them."""
    events = [e for e in agent.log_events() if e.get("event") == "ticket"]
    return events if len(events) >= at_least else None


@pytest.fixture
def short_kdc(lab):  # noqa: F811 (the fixture imported above)
    """The lab's KDC restarted with 30-second controller and TGT lifetimes."""
    tmp_path, kdc = lab
    kdc.stop()
    pki = tmp_path / "pki"
    telekey_cmd("principal", "add", "sigctl/sc2.lab.test", "--random-key", "--db",
                f"sqlite:///{tmp_path}/kdc.db")
    config = write_kdc_config(tmp_path, realm=REALM, db_url=f"sqlite:///{tmp_path}/kdc.db",
                              cert=pki / "kdc.pem", key=pki / "kdc.key",
                              anchors=[pki / "ca.pem"],
                              manufacturer_anchor_files=[str(tmp_path / "maker" / "ca.pem")],
                              controller_lifetime_s=30, default_lifetime_s=30)
    short = start_kdc(config, tmp_path / "kdc-short.log")
    yield tmp_path, short
    short.stop()


def _start_agent(tmp_path, kdc, *extra):
    return start_service(["telekey", "cta", "run", "--dir", str(tmp_path / "device"), "--realm",
                          REALM, "--kdc", f"127.0.0.1:{kdc.port}", "--pkinit-grace", "25",
                          "--tgs-grace", "25", *extra], tmp_path / "agent.log")


def test_renewal_timers_and_management_port(short_kdc):
    tmp_path, kdc = short_kdc
    agent = _start_agent(tmp_path, kdc, "--service", SERVICE)
    try:
        port = int(agent.listening["management_port"])
        # 30 s tickets renewed 25 s before they end: a fresh PKINIT about every 5 s.
        renewals = wait_for(lambda: _tickets(agent, 3))
        assert all(t["method"] == "DH" and t["service"] == f"{SERVICE}@{REALM}"
                   for t in renewals)
        manage = Management(port)
        status = manage(op="status")
        assert status["ok"] and status["principal"] == f"cta/001a2b3c4d5e@{REALM}"
        assert status["certificate"] == "factory"
        [ticket] = status["tickets"]
        assert ticket["service"] == SERVICE and ticket["by"] == "PKINIT"
        assert ticket["endtime"] and ticket["last_error"] is None

        # Bad input: an error reply each, and the agent keeps serving.
        assert manage.send_raw(b"not json\n") == {
            "ok": False, "error": "malformed: one JSON object per line"}
        assert manage(op="launch")["error"] == "unknown op 'launch'"
        assert manage(op="selfcert", request="%%%")["error"] == "request is not base64"
        assert manage(op="selfcert", request=base64.b64encode(b"\x30\x03junk").decode())[
            "ok"] is False
        assert manage(op="status")["ok"]
        manage.close()
        assert agent.process.poll() is None
    finally:
        agent.stop()
    assert any(e.get("event") == "stopped" for e in agent.log_events())


def test_selfcert_over_management_port_then_login_with_it(short_kdc):
    tmp_path, kdc = short_kdc
    device = tmp_path / "device"
    telekey_cmd("cert", "client", "--principal", "provisioning/server", "--realm", REALM,
                "--pki-dir", str(tmp_path / "pki"), "--out-dir", str(tmp_path / "prov"))
    agent = _start_agent(tmp_path, kdc, "--service", SERVICE, "--pkinit-grace", "5")
    try:
        count = len(wait_for(lambda: _tickets(agent)))
        manage = Management(int(agent.listening["management_port"]))
        request = base64.b64encode(_request(tmp_path, "req1").read_bytes()).decode()
        reply = manage(op="selfcert", request=request)
        assert reply["ok"] and reply["device_id"] == MAC and reply["network_id"] == REALM
        # The agent logs in again at once, now with the self-issued certificate.
        assert manage(op="status")["certificate"] == "self-issued"
        latest = wait_for(lambda: _tickets(agent, count + 1))[-1]
        assert latest["certificate"] == "self-issued" and latest["method"] == "DH"
        objects = _token_objects(device)
        replay = manage(op="selfcert", request=request)
        assert replay["ok"] is False and "REPLAY" in replay["error"]
        assert _token_objects(device) == objects
        manage.close()
    finally:
        agent.stop()
    assert [e["certificate"] for e in _tickets(agent)][:1] == ["factory"]


def test_backups_mean_tgt_by_pkinit_and_controllers_by_tgs(short_kdc):
    tmp_path, kdc = short_kdc
    agent = _start_agent(tmp_path, kdc, "--service", SERVICE, "--backup",
                         "sigctl/sc2.lab.test")
    try:
        got = wait_for(lambda: _tickets(agent, 6))
    finally:
        agent.stop()
    by_service: dict[str, set[str]] = {}
    for event in got:
        by_service.setdefault(event["service"].split("@")[0], set()).add(event["method"])
    assert by_service == {f"krbtgt/{REALM}": {"DH"}, SERVICE: {"TGS"},
                          "sigctl/sc2.lab.test": {"TGS"}}
    listing = cli("decode", str(tmp_path / "device" / "ccache"))
    assert "sigctl/sc2.lab.test" in listing.stdout, listing.stderr
