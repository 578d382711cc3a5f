"""The signaling controller's side of provisioning without sockets (common/provisioning/lines.py,
common/pktc/km_server.py's admission): the line table fed page by page, who is admitted, the
Rekey that tells a device its line is gone, reports once per SA, certificate deliveries, and
the chain the KDC puts in an unprovisioned ticket."""

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from common.codes import ErrorCode
from common.errors import MalformedMessage
from common.messages.restriction import DeviceRestriction, find_restriction
from common.pki.certs import build_ca, issue_device_certificate
from common.pki.device_policy import DevicePolicy, certificate_binding, verify_device_chain
from common.provisioning.lines import (
    MAX_SENDS,
    Deliveries,
    LineRemoved,
    LineTable,
    PendingReports,
    decode_line_page,
)
from tests.unit.test_km_core import DEVICE, setup

MAC, OTHER = "00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5f"
DEVICE_PRINCIPAL = "cta/001a2b3c4d5e"


def page(version: int, *rows: tuple, more: bool = False) -> dict:
    return {"version": version, "more": more, "lines": [
        {"number": n, "mac": m, "state": s, "serial": serial, "version": v}
        for n, m, s, serial, v in rows]}


def test_lines_assigned_removed_and_admission() -> None:
    table = LineTable(static=["cta/00000000aaaa"])
    unrestricted = None
    restricted = DeviceRestriction(1, ("611",))
    # Before the first complete pull nobody is refused.
    table.check_admission(f"{DEVICE_PRINCIPAL}@LAB.TEST", unrestricted)
    first = table.apply(decode_line_page(page(
        3, ("15551000100", MAC, "assigned", None, 2), ("15551000101", OTHER, "removed", None, 3))))
    assert [line.number for line in first.assigned] == ["15551000100"]
    assert first.removed == [] and first.revoked == [] and first.deliver == []
    assert table.synced and table.version == 3
    table.check_admission(f"{DEVICE_PRINCIPAL}@LAB.TEST", unrestricted)
    with pytest.raises(LineRemoved) as refused:
        table.check_admission("cta/001a2b3c4d5f@LAB.TEST", unrestricted)
    assert refused.value.code is ErrorCode.KDC_ERR_CLIENT_REVOKED
    assert refused.value.status == "NO_LINE"
    # Restricted devices, configured lines and servers are not concerned.
    table.check_admission("cta/001a2b3c4d5f@LAB.TEST", restricted)
    table.check_admission("cta/00000000aaaa@LAB.TEST", unrestricted)
    table.check_admission("media/echo.lab.test@LAB.TEST", unrestricted)
    # The certificate is issued: deliver it; then the line is removed: revoke the device.
    issued = table.apply(decode_line_page(page(4, ("15551000100", MAC, "assigned", "ab12", 4))))
    assert [(line.principal, line.serial) for line in issued.deliver] == [
        (DEVICE_PRINCIPAL, "ab12")]
    assert issued.assigned == []  # the same number and MAC: routing unchanged
    removed = table.apply(decode_line_page(page(5, ("15551000100", MAC, "removed", None, 5))))
    assert [line.number for line in removed.removed] == ["15551000100"]
    assert removed.revoked == [DEVICE_PRINCIPAL]
    with pytest.raises(LineRemoved):
        table.check_admission(DEVICE_PRINCIPAL, unrestricted)


def test_a_restored_feed_is_pulled_again_and_what_it_lacks_removed() -> None:
    table = LineTable()
    table.apply(decode_line_page(page(9, ("15551000100", MAC, "assigned", None, 9))))
    reset = table.apply(decode_line_page(page(2)))
    assert reset.reset and table.version == 0 and not table.synced
    # The full pull comes in two pages; the line it does not list goes at its end.
    table.apply(decode_line_page(page(1, ("15551000101", OTHER, "assigned", None, 1),
                                      more=True)))
    assert "15551000100" in table.lines
    last = table.apply(decode_line_page(page(2)))
    assert [line.number for line in last.removed] == ["15551000100"]
    assert last.revoked == [DEVICE_PRINCIPAL] and table.synced


@pytest.mark.parametrize("bad", [
    {"version": 1, "more": False},
    {"version": -1, "more": False, "lines": []},
    page(1, ("not a number", MAC, "assigned", None, 1)),
    page(1, ("15551000100", "00-1a-2b-3c-4d-5e", "assigned", None, 1)),
    page(1, ("15551000100", MAC, "open", None, 1)),
    page(1, ("15551000100", MAC, "assigned", "XYZ", 1)),
    page(1, ("15551000100", MAC, "assigned", None, 0)),
], ids=["no-lines", "negative", "number", "mac", "state", "serial", "version"])
def test_line_pages_are_checked(bad: dict) -> None:
    with pytest.raises(MalformedMessage):
        decode_line_page(bad)


def test_admission_refuses_the_ap_exchange_and_revocation_sends_a_rekey() -> None:
    now, make_server, client = setup()
    server = make_server()
    table = LineTable()
    server.admit = table.check_admission
    table.apply(decode_line_page(page(1, ("15551000100", MAC, "assigned", None, 1))))
    exchange = server.receive_km(client.ap_request(now), DEVICE, now, 0.0)
    assert exchange.result == "OK"
    event = client.receive(exchange.reply, 0.0)
    changes = table.apply(decode_line_page(page(2, ("15551000100", MAC, "removed", None, 2))))
    rekeys = server.revoke_client(f"{changes.revoked[0]}@LAB.TEST", now)
    assert len(rekeys) == 1 and server.sas == {} and server.by_client == {}
    # The device hears a Rekey it can verify, and its new AP exchange is refused with 18.
    assert client.receive(rekeys[0][1], 1.0).kind == "rekey"
    refused = server.receive_km(client.ap_request(now), DEVICE, now, 1.0)
    assert refused.result == "NO_LINE" and refused.sa is None
    assert client.receive(refused.reply, 1.0).error.error_code == 18
    # ESP on the old SA now meets an unknown SPI.
    assert server.receive_esp(event.sa.outbound.seal(b"\x00" * 64), DEVICE, 2.0).dropped == \
        "UNKNOWN_SPI"


def test_reports_once_per_sa_and_retried() -> None:
    reports = PendingReports()
    chain = DeviceRestriction(1, ("611",), (b"device", b"signing"))
    assert not reports.add(DEVICE_PRINCIPAL, DeviceRestriction(1, ("611",)), "10.0.0.7", 0.0)
    assert reports.add(DEVICE_PRINCIPAL, chain, "10.0.0.7", 0.0)
    report = reports.due(0.0)[0]
    assert (report.certificates, report.address) == ((b"device", b"signing"), "10.0.0.7")
    assert [reports.failed(report, 0.0) for _ in range(3)] == [1.0, 2.0, 4.0]
    assert reports.due(3.0) == [] and reports.due(4.0) == [report]
    # A newer SA's report replaces the one not yet sent; done removes only its own.
    assert reports.add(DEVICE_PRINCIPAL, chain, "10.0.0.8", 5.0)
    reports.done(report)
    assert [r.address for r in reports.due(5.0)] == ["10.0.0.8"]
    reports.done(reports.due(5.0)[0])
    assert reports.pending == {}


def test_deliveries_repeat_until_answered_and_again_on_a_new_sa() -> None:
    ids = iter(f"call-{n}" for n in range(10))
    deliveries = Deliveries(lambda: next(ids))
    table = LineTable()
    line = table.apply(decode_line_page(page(1, ("15551000100", MAC, "assigned", "ab", 1)))
                       ).deliver[0]
    delivery = deliveries.want(line, 0.0)
    assert delivery is not None and deliveries.want(line, 0.0) is None  # the same serial
    assert deliveries.due(0.0, lambda p: False) == []  # no SA: nothing to send on
    for n in range(MAX_SENDS):
        assert deliveries.due(1000.0 * n, lambda p: True) == [delivery]
        deliveries.sent(delivery, 1000.0 * n)
    assert deliveries.due(1e9, lambda p: True) == []  # given up on this SA...
    deliveries.new_sa(DEVICE_PRINCIPAL, 1e9)
    assert deliveries.due(1e9, lambda p: True) == [delivery]  # ...until the next one
    assert deliveries.answered("call-0", 100) is None  # provisional
    assert deliveries.answered("call-0", 200) is delivery and delivery.state == "delivered"
    assert deliveries.answered("call-0", 200) is None
    # A new certificate for the line is a new delivery; a refusal is final too.
    newer = deliveries.want(table.apply(decode_line_page(page(
        2, ("15551000100", MAC, "assigned", "cd", 2)))).deliver[0], 0.0)
    assert newer is not None and newer.call_id == "call-1"
    assert deliveries.answered("call-1", 403) is newer and newer.state == "refused"
    assert deliveries.status() == {"refused": 1}


def test_the_kdc_puts_the_verified_chain_in_an_unprovisioned_ticket() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    maker_key = ec.generate_private_key(ec.SECP256R1())
    maker = build_ca(maker_key, "maker", "Maker", now - timedelta(days=1))
    device = issue_device_certificate(maker, maker_key,
                                      ec.generate_private_key(ec.SECP256R1()).public_key(),
                                      MAC, now - timedelta(days=1))
    policy = DevicePolicy("LAB.TEST", (), (maker,), unprovisioned_numbers=("611",))
    kind, chain = verify_device_chain(device, [], policy, now)
    binding = certificate_binding(device, kind, chain, policy)
    restriction = find_restriction(binding.authorization_data)
    assert restriction is not None
    assert restriction.certificates == (device.public_bytes(Encoding.DER),)  # no anchor
