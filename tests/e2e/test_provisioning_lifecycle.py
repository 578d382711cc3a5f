"""The device lifecycle end to end on loopback (seed 001, FIG. 5A/5B, 7, 8), every daemon a real
process sharing one module-scoped network: telekey's KDC, signaling controller sc1 linked to
the provisioning service (mutual TLS), the service itself with a head-end agent, and device
agents with SoftHSM2 tokens. One operator root: the realm's CA issues the KDC's certificate,
the operator device certificates and the request signer's.

- flow 1, new device (FIG. 7): the device logs in with its factory certificate and gets a
  restricted ticket; sc1 reports it; staff enter the customer on the command line; the
  billing host acknowledges; sc1 pulls the line, the head-end opens the MAC, the KDC gets its
  record; sc1 delivers the operator certificate over the device's ESP SA; the device
  self-issues, installs it, logs in again, gets an unrestricted SA and calls another
  customer (who can call it back on its new number);
- flow 2, de-provisioning (FIG. 8): the customer is terminated; sc1 drops the device's SA and
  refuses its still valid ticket; the device's operator-certificate login is refused by the
  KDC, it deletes that certificate and ends up unprovisioned, reported again;
- the controller takes lines only from the service it verifies: a server with another CA's
  certificate changes nothing.

The two flows run in order on the same device (flow 2 undoes flow 1).
"""

import http.server
import shutil
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.pki.certs import phone_id
from provisioning.lab_pki import make_lab_pki, make_tls
from telekey.loopback import Lab, events, manage, wait_for, wait_for_sa
from tests.e2e import test_provisioning as prov

pytestmark = pytest.mark.e2e
NEW_MAC, OTHER_MAC = "00:1a:2b:3c:4d:71", "00:1a:2b:3c:4d:72"
NEW, OTHER = "cta/001a2b3c4d71", "cta/001a2b3c4d72"
OTHER_NUMBER = "2001"
SC1 = "sigctl/sc1.lab.test"


def provisioning_pki(lab: Lab, directory: Path) -> Path:
    """provisioning/lab_pki.py's servers and billing PKI, with the realm's CA as the operator
    CA and the lab's manufacturer root as the factory root."""
    make_lab_pki(directory)
    for source, stem in ((lab.pki / "ca", "operator-ca"),
                         (lab.root / "maker" / "ca", "manufacturer-ca")):
        shutil.copy(source.with_suffix(".pem"), directory / f"{stem}.pem")
        shutil.copy(source.with_suffix(".key"), directory / f"{stem}.key")
    ca = x509.load_pem_x509_certificate((lab.pki / "ca.pem").read_bytes())
    key = load_pem_private_key((lab.pki / "ca.key").read_bytes(), None)
    make_tls(directory, "request-signer", ca, key, "provisioning server",  # type: ignore[arg-type]
             server=False)
    return directory


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("lifecycle")
    lab = Lab(root)
    try:
        pki = provisioning_pki(lab, root / "prov-pki")
        headend = prov.start_headend(root, pki, "A")
        lab.processes.append(headend)
        service_dir = root / "prov"
        service_dir.mkdir()
        config = prov.configure(service_dir, pki,
                                {"A": f"https://127.0.0.1:{headend.listening['port']}"},
                                kdc_database_url=lab.db)
        server = prov.start_provisioning(config)
        lab.processes.append(server)
        lab.provision(OTHER_MAC, OTHER_NUMBER)  # another customer, provisioned beforehand
        controller = lab.controller(
            "sc1", kdc=f"127.0.0.1:{lab.kdc.port}", lines={OTHER_NUMBER: OTHER},
            provisioning_url=f"https://127.0.0.1:{prov.port(server, 'api')}",
            provisioning_ca_file=pki / "servers-ca.pem",
            provisioning_client_cert_file=pki / "controller.pem",
            provisioning_client_key_file=pki / "controller.key", provisioning_poll_s=0.2)
        tone = ("--play", "tone:440:0.2", "--keepalive", "2")
        other = lab.device(OTHER_MAC, "sc1", "--number", OTHER_NUMBER, *tone)
        device = lab.device(NEW_MAC, "sc1", *tone)
        wait_for_sa(device)
        wait_for_sa(other)
        yield {"lab": lab, "pki": pki, "config": config, "server": server, "headend": headend,
               "controller": controller, "device": device, "other": other}
    finally:
        lab.close()


def api(net: dict[str, Any], path: str) -> Any:
    status, body = prov.call(prov.port(net["server"], "api"), net["pki"], "controller", "GET",
                             path)
    assert status == 200, (path, status, body)
    return body


def state(device: Any) -> dict[str, Any]:
    reply = manage(device, op="state")
    assert reply["ok"], reply
    return reply


def call(caller: Any, number: str) -> dict[str, Any]:
    """A call from `caller` to `number`, hung up at once when it is set up."""
    reply = manage(caller, op="call", number=number, play="tone:440:0.2")
    if reply["ok"]:
        assert manage(caller, op="hangup", call_id=reply["call_id"])["ok"]
    return reply


def billing_pending(net: dict[str, Any]) -> list[Any]:
    status, body = prov.call(prov.port(net["server"], "billing"), net["pki"], "billing", "GET",
                             "/v1/billing/records")
    assert status == 200
    return list(body["records"])


def kdc_customers(net: dict[str, Any]) -> str:
    return prov.cli("telekey", "customer", "list", "--db", net["lab"].db).stdout


def test_flow_1_new_device(net: dict[str, Any]) -> None:
    device, controller = net["device"], net["controller"]
    # Unprovisioned: the factory certificate, a restricted SA; only 611 and 911 may be called.
    assert (state(device)["hfc"]["state"], state(device)["telephony"]["state"],
            state(device)["certificate"]) == ("UNPROVISIONED_HFC_ACCESS",
                                              "UNPROVISIONED_SECURITY_CONTEXT", "factory")
    assert call(device, OTHER_NUMBER)["status"] == 403
    # sc1 reported it (the chain the KDC verified, its address), once for its SA.
    reported = wait_for(lambda: [e for e in events(controller, "device_reported")
                                 if e["client"] == NEW])
    assert len(reported) == 1 and reported[0]["state"] == "unprovisioned"
    record = api(net, f"/v1/devices/{NEW_MAC}")
    assert (record["state"], record["controller"], record["address"]) == (
        "unprovisioned", SC1, "127.0.0.1")
    # Staff enter the customer (the command line writes what the console would).
    out = prov.cli("provisioning", "customer", "add", "--config", str(net["config"]), "--name",
                   "Grace Hopper", "--address", "3 Compiler Court", "--headend", "A", "--mac",
                   NEW_MAC).stdout
    number = out.split("number ")[1].split()[0]
    assert number == "15551000100"
    assert len(prov.ack_billing(net["server"], net["pki"])) == 1  # the "new" record
    # The service completes; sc1 delivers the certificate; the device logs in with it.
    customer = wait_for(lambda: (r := api(net, f"/v1/customers/{number}"))["state"] == "active"
                        and r)
    final = wait_for(lambda: (s := state(device))["telephony"]["state"]
                     == "PROVISIONED_TELEPHONY_ACCESS" and s)
    assert final["hfc"]["state"] == "PROVISIONED_HFC_ACCESS"
    assert final["certificate"] == "operator"
    assert final["operator_certificate"]["phone_id"] == phone_id(number).hex()
    assert final["operator_certificate"]["serial"] == customer["device"]["operator_serial"]
    walked = [(t["machine"], t["after"]) for t in final["history"]]
    for step in (("telephony", "RECEIVED_OPERATOR_CERTIFICATE"),
                 ("hfc", "FULLY_REGISTERED_WITH_HFC"),
                 ("telephony", "PROVISIONED_TELEPHONY_ACCESS"),
                 ("hfc", "PROVISIONED_HFC_ACCESS")):
        assert step in walked, step
    assert events(device, "operator_certificate_installed")
    assert [e["client"] for e in events(controller, "certificate_delivered")] == [NEW]
    assert any(e["number"] == number and e["client"] == NEW
               for e in events(controller, "line_assigned"))
    wait_for(lambda: any(e.get("client") == f"{NEW}@LAB.TEST" and e["result"] == "OK"
                         and not e["restricted"] for e in events(controller, "ap_request")))
    # Unrestricted now: it calls another customer, who can call its new number.
    assert call(device, OTHER_NUMBER)["ok"]
    assert call(net["other"], number)["ok"]
    # The records: customer, billing, number, access list, the KDC's customer record.
    assert customer["mac"] == NEW_MAC and customer["device"]["state"] == "provisioned"
    pools = prov.cli("provisioning", "numbers", "list", "--config", str(net["config"])).stdout
    assert "A\t100 numbers\t1 assigned\t0 in quarantine\t99 free" in pools
    assert billing_pending(net) == []
    audit = prov.cli("provisioning", "audit", "--config", str(net["config"]), "--limit",
                     "200").stdout
    for line in ("api@127.0.0.1\tdevice_reported", "billing@127.0.0.1\tbilling_ack",
                 "system\tcertificate_issued", "system\theadend_ack", "system\tkdc_record"):
        assert line in audit, line
    access = api(net, "/v1/access?headend=A")["entries"]
    assert [(e["mac"], e["desired"], e["acked_state"], e["number"]) for e in access] == [
        (NEW_MAC, "open", "open", number)]
    assert f"{number}\t{NEW_MAC}\tactive" in kdc_customers(net)
    net["number"], net["customer"] = number, customer


def test_flow_2_deprovisioning(net: dict[str, Any]) -> None:
    if "number" not in net:
        pytest.skip("needs flow 1's provisioned device")
    device, controller, number = net["device"], net["controller"], net["number"]
    prov.cli("provisioning", "customer", "terminate", "--config", str(net["config"]), "--id",
             str(net["customer"]["id"]), "--reason", "moving abroad")
    assert len(prov.ack_billing(net["server"], net["pki"])) == 1  # the "terminate" record
    # sc1 takes the line away and the device's SA with it; its valid ticket is refused.
    wait_for(lambda: any(e["client"] == NEW for e in events(controller, "sa_revoked")))
    assert any(e["number"] == number for e in events(controller, "line_removed"))
    # The KDC refuses the operator certificate; the device drops it and is unprovisioned.
    final = wait_for(lambda: (s := state(device))["telephony"]["state"]
                     == "UNPROVISIONED_SECURITY_CONTEXT" and s["certificate"] == "factory"
                     and s, timeout=60)
    assert final["hfc"]["state"] == "UNPROVISIONED_HFC_ACCESS"
    assert final["operator_certificate"] is None
    walked = [(t["machine"], t["after"], t["event"]) for t in final["history"]]
    assert ("telephony", "TELEPHONY_NOT_CONFIGURED", "operator_refused") in walked
    assert ("hfc", "HFC_NOT_CONFIGURED", "operator_refused") in walked
    dropped = events(device, "operator_certificate_dropped")
    assert dropped and dropped[0]["deleted"] == ["operator", "self-issued"]
    assert dropped[0]["code"] == 18  # KDC_ERR_CLIENT_REVOKED: no active customer
    refused = [e for e in events(controller, "ap_request")
               if e.get("client") == f"{NEW}@LAB.TEST" and e["result"] == "NO_LINE"]
    assert refused, "sc1 never refused the removed device's ticket"
    # Restricted again: only 611 and 911; reported again as unprovisioned.
    assert call(device, OTHER_NUMBER)["status"] == 403
    assert call(net["other"], number)["status"] == 404
    wait_for(lambda: api(net, f"/v1/devices/{NEW_MAC}")["state"] == "unprovisioned")
    wait_for(lambda: len([e for e in events(controller, "device_reported")
                          if e["client"] == NEW]) >= 2)
    # The records.
    status, _ = prov.call(prov.port(net["server"], "api"), net["pki"], "controller", "GET",
                          f"/v1/customers/{number}")
    assert status == 404  # no live customer holds the number
    shown = prov.cli("provisioning", "customer", "show", "--config", str(net["config"]),
                     "--id", str(net["customer"]["id"])).stdout
    assert "terminated" in shown and "revoked (cessationOfOperation)" in shown
    assert billing_pending(net) == []
    pools = prov.cli("provisioning", "numbers", "list", "--config", str(net["config"])).stdout
    assert "A\t100 numbers\t0 assigned\t1 in quarantine\t99 free" in pools
    wait_for(lambda: api(net, "/v1/access?headend=A")["entries"][0]["acked_state"] == "closed")
    wait_for(lambda: f"{number}\t{NEW_MAC}\tsuspended" in kdc_customers(net))


class _Forger(http.server.BaseHTTPRequestHandler):
    """A server that hands out an assignment of its own."""

    timeout = 5  # a connection that never finishes its handshake does not hold a thread

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = (b'{"version": 99, "more": false, "lines": [{"number": "15550000666", '
                b'"mac": "00:1a:2b:3c:4d:66", "state": "assigned", "serial": null, '
                b'"version": 99}]}')
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_assignment_not_from_provisioning_changes_nothing(net: dict[str, Any]) -> None:
    """The controller's link, pointed at a server whose certificate is from another CA, pulls
    nothing: the TLS handshake fails and its table stays as it was."""
    import asyncio
    from types import SimpleNamespace

    from sigctl.provisioning_link import ProvisioningLink
    from sigctl.settings import SigctlSettings

    pki = net["pki"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forger)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "intruder.pem", pki / "intruder.key")
    # The handshake happens in the connection's thread, not in accept().
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings = SigctlSettings(
        realm="LAB.TEST", principal=SC1, keytab_file=net["lab"].controllers["sc1"]["keytab"],
        provisioning_url=f"https://127.0.0.1:{server.server_address[1]}",
        provisioning_ca_file=pki / "servers-ca.pem",
        provisioning_client_cert_file=pki / "controller.pem",
        provisioning_client_key_file=pki / "controller.key")
    controller = SimpleNamespace(core=SimpleNamespace(admit=None),
                                 calls=SimpleNamespace(lines={}, numbers={}))

    async def pull() -> BaseException | None:
        link = ProvisioningLink(settings, controller)  # type: ignore[arg-type]
        await link.start()
        try:
            await link.sync()
        except Exception as exc:  # what the link's loop catches and logs
            return exc
        finally:
            await link.close()
            assert (link.table.version, link.table.lines, link.table.synced) == (0, {}, False)
        return None

    try:
        error = asyncio.run(pull())
    finally:
        server.shutdown()
        server.server_close()
    assert error is not None and "CERTIFICATE_VERIFY_FAILED" in repr(error), error
    assert controller.calls.lines == {} and controller.calls.numbers == {}
