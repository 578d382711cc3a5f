"""The signaling controller end to end on loopback (issue #5): our KDC, our controller, two
devices with SoftHSM tokens — PKINIT, AP exchange, echo through ESP both ways; kill -9 of the
controller and every device back on a working SA without a new PKINIT."""

import os
import signal

import pytest

from tests.e2e.sigctl_lab import Lab, events, manage, wait_for

pytestmark = pytest.mark.e2e
MACS = ("00:1a:2b:3c:4d:01", "00:1a:2b:3c:4d:02")


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.close()


def _sa_up(device):
    return (manage(device, op="status")["link"] or {}).get("sa")


def test_two_devices_echo_through_esp_and_survive_kill_9(lab):
    controller = lab.controller("sc1")
    devices = [lab.device(mac, "sc1") for mac in MACS]
    for device in devices:
        wait_for(lambda d=device: _sa_up(d))
        reply = manage(device, op="echo", data="hello through ESP")
        assert reply == {"ok": True, "reply": "hello through ESP", "rtt_ms": reply["rtt_ms"]}
    exchanges = events(controller, "ap_request")
    assert [e["result"] for e in exchanges] == ["OK", "OK"]
    assert {e["client"] for e in exchanges} == {f"cta/{m.replace(':', '')}@LAB.TEST"
                                                for m in MACS}
    assert all(e["suite"] == "AES-GCM-16" and e["restricted"] for e in exchanges)
    pkinit_before = len([e for e in lab.kdc.log_events() if e.get("event") == "as_req"])

    os.kill(controller.process.pid, signal.SIGKILL)
    controller.process.wait()
    restarted = lab.controller("sc1")
    for device in devices:
        # ESP on the lost SA → Wake Up → AP exchange with the ticket the device still holds.
        reply = manage(device, op="echo", data="after restart")
        assert reply["ok"] and reply["reply"] == "after restart", reply
    assert len(events(restarted, "wake_up")) >= 1
    assert [e["result"] for e in events(restarted, "ap_request")] == ["OK", "OK"]
    pkinit_after = len([e for e in lab.kdc.log_events() if e.get("event") == "as_req"])
    assert pkinit_after == pkinit_before, "a device went back to the KDC"
    for device in devices:
        assert events(device, "wake_up")
