"""The signaling controller end to end on loopback: our KDC, our controller, two
devices with SoftHSM tokens — PKINIT, AP exchange, echo through ESP both ways; kill -9 of the
controller and every device back on a working SA without a new PKINIT."""

import os
import signal

import pytest

from telekey.loopback import Lab, events, manage, wait_for

pytestmark = pytest.mark.e2e
MACS = ("00:1a:2b:3c:4d:01", "00:1a:2b:3c:4d:02")


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.close()


def _at_least(items, n):
    return items if len(items) >= n else None


def _sa_up(device):
    return (manage(device, op="status")["link"] or {}).get("sa")


@pytest.mark.parametrize("km_workers", [0, 2])
def test_two_devices_echo_through_esp_and_survive_kill_9(lab, km_workers):
    """With key-management workers too: they go with the main process they serve, so the
    restarted controller gets its ports back."""
    controller = lab.controller("sc1", km_workers=km_workers)
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
    restarted = lab.controller("sc1", km_workers=km_workers)
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


def test_key_management_goes_on_when_every_worker_is_killed(lab):
    """km_workers = 2, both workers killed (-9): each death is logged and reaped, and after
    the last the main process answers AP Requests itself."""
    controller = lab.controller("sc1", km_workers=2)
    ready = wait_for(lambda: _at_least(events(controller, "km_worker_ready"), 2))
    for worker in ready:
        os.kill(worker["pid"], signal.SIGKILL)
    wait_for(lambda: events(controller, "km_in_process"))
    assert [e["workers_left"] for e in events(controller, "km_worker_gone")] == [1, 0]
    for worker in ready:  # reaped (by pid) before its death was logged: no zombies
        assert not os.path.exists(f"/proc/{worker['pid']}")
    device = lab.device(MACS[0], "sc1")
    wait_for(lambda: _sa_up(device))
    assert manage(device, op="echo", data="no workers")["reply"] == "no workers"
    assert [e["result"] for e in events(controller, "ap_request")] == ["OK"]


def test_failover_to_backup_controller_without_pkinit(lab):
    """The primary controller goes away: the device's AP Requests go unanswered (1 s, five
    retransmissions), it turns to its backup with the ticket it got by TGS, and signaling
    continues there. The KDC sees one PKINIT (the TGT) and TGS requests only."""
    lab.controller("sc1")
    backup = lab.controller("sc2")
    sc2 = lab.controllers["sc2"]
    device = lab.device(MACS[0], "sc1", "--backup-controller",
                        f"{sc2['principal']}=127.0.0.1:{sc2['km_port']}:{sc2['esp_port']}")
    wait_for(lambda: _sa_up(device))
    assert manage(device, op="echo", data="via sc1")["reply"] == "via sc1"
    lab.controllers["sc1"]["process"].stop()
    reply = manage(device, op="echo", data="via the backup")
    assert reply["ok"] and reply["reply"] == "via the backup", reply
    assert manage(device, op="status")["link"]["controller"] == sc2["principal"]
    assert [e["client"] for e in events(backup, "ap_request")] == ["cta/001a2b3c4d01@LAB.TEST"]
    assert events(device, "failover")
    methods = [e["method"] for e in events(device, "ticket")]
    assert methods.count("DH") == 1 and methods.count("TGS") == 2


def test_sa_is_renewed_before_its_lifetime_ends(lab):
    """SA lifetime 6 s, grace 2 s: the device runs a new AP exchange at 4 s with the ticket
    it holds, and signaling goes on over the new SA."""
    controller = lab.controller("sc1", sa_lifetime_s=6, grace_s=2)
    device = lab.device(MACS[0], "sc1")
    first = wait_for(lambda: _sa_up(device))
    established = wait_for(lambda: _at_least(events(device, "sa_established"), 2), timeout=30)
    assert established[1]["spi_in"] != established[0]["spi_in"]
    assert manage(device, op="echo", data="after re-key")["reply"] == "after re-key"
    assert _sa_up(device)["spi_in"] != first["spi_in"]
    assert [e["result"] for e in events(controller, "ap_request")][:2] == ["OK", "OK"]
    # One PKINIT (our client sends the signed request at once); the re-key needed none.
    assert len([e for e in lab.kdc.log_events() if e.get("event") == "as_req"]) == 1
