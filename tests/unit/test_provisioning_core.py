"""common/provisioning (seed 001, FIG. 7-11): field validation, what each lifecycle change
requires (`plan_change`), which changes each customer state allows, and the head-end access-list
change core. No I/O."""

import pytest

from common.provisioning.headend import (
    AccessEntry,
    apply_change,
    decode_change,
    encode_change,
    encode_entry,
)
from common.provisioning.lifecycle import (
    AccessAction,
    AccessStep,
    KdcAction,
    KdcStep,
    Revocation,
    Service,
    check_change_allowed,
    plan_change,
    state_after,
    state_during,
)
from common.provisioning.records import (
    ChangeKind,
    CustomerState,
    InvalidField,
    WrongState,
    check_headend,
    check_options,
    check_text,
    normalize_mac,
    normalize_number,
    parse_number_range,
)

MAC = "00:1a:2b:3c:4d:5e"


@pytest.mark.parametrize("text", ["00:1A:2B:3C:4D:5E", "00-1a-2b-3c-4d-5e", "001a.2b3c.4d5e",
                                  "001a2b3c4d5e", " 00:1a:2b:3c:4d:5e "])
def test_mac_spellings(text):
    assert normalize_mac(text) == MAC


@pytest.mark.parametrize("text", ["", "00:1a:2b:3c:4d", "00:1a:2b:3c:4d:5e:6f", "zz:1a:2b:3c:4d:5e",
                                  "01:00:5e:00:00:01", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff",
                                  "00:1a-2b:3c:4d:5e:"])
def test_bad_macs_are_refused(text):
    with pytest.raises(InvalidField) as err:
        normalize_mac(text)
    assert err.value.field == "mac" and err.value.http_status == 422


def test_numbers():
    assert normalize_number("+1 (555) 010-0100") == "15550100100"
    assert normalize_number("6110") == "6110"
    for bad in ("", "123", "1" * 16, "12a4", "١٢٣٤٥"):
        with pytest.raises(InvalidField):
            normalize_number(bad)


def test_number_ranges():
    assert parse_number_range("15550100-15550102") == ["15550100", "15550101", "15550102"]
    assert parse_number_range("0100-0101") == ["0100", "0101"]
    assert parse_number_range("15550100") == ["15550100"]
    for bad in ("15550102-15550100", "1555-155500", "10000000-10100000"):
        with pytest.raises(InvalidField):
            parse_number_range(bad)


def test_text_fields_and_options_and_headends():
    assert check_text("name", "  Ada   Lovelace ") == "Ada Lovelace"
    with pytest.raises(InvalidField, match="required"):
        check_text("name", "   ")
    with pytest.raises(InvalidField, match="control"):
        check_text("name", "Ada\x00")
    with pytest.raises(InvalidField, match="longer"):
        check_text("name", "x" * 201)
    assert check_options(["voicemail", "voice", "voice"], {"voice", "voicemail"}) == (
        "voice", "voicemail")
    with pytest.raises(InvalidField, match="unknown service options fax"):
        check_options(["fax"], {"voice"})
    assert check_headend("A", {"A", "B"}) == "A"
    with pytest.raises(InvalidField, match="unknown head-end"):
        check_headend("C", {"A", "B"})


OPEN_A = Service("A", MAC, "15551000100", ("voice",))
MAC2 = "00:1a:2b:3c:4d:5f"


def test_plan_new_device():
    plan = plan_change(None, OPEN_A)
    assert plan.access == (AccessStep("A", MAC, AccessAction.OPEN, "15551000100", ("voice",)),)
    assert plan.kdc == (KdcStep(KdcAction.ADD, "15551000100", MAC),)
    assert plan.issue_certificate and plan.revoke_now is None and not plan.revoke_on_issue


def test_plan_deprovisioning():
    plan = plan_change(OPEN_A, None)
    assert plan.access == (AccessStep("A", MAC, AccessAction.CLOSE),)
    assert plan.kdc == (KdcStep(KdcAction.SUSPEND, "15551000100", MAC),)
    assert not plan.issue_certificate
    assert plan.revoke_now is Revocation.CESSATION_OF_OPERATION


def test_plan_suspend_and_resume():
    closed = Service("A", MAC, "15551000100", ("voice",), open=False)
    suspend = plan_change(OPEN_A, closed)
    assert [s.action for s in suspend.access] == [AccessAction.CLOSE]
    assert [k.action for k in suspend.kdc] == [KdcAction.SUSPEND]
    assert not suspend.issue_certificate and suspend.revoke_now is None
    resume = plan_change(closed, OPEN_A)
    assert [s.action for s in resume.access] == [AccessAction.OPEN]
    assert [k.action for k in resume.kdc] == [KdcAction.ADD]
    assert not resume.issue_certificate and resume.revoke_now is None
    # Terminating a suspended customer: access and the KDC record are already closed.
    terminate = plan_change(closed, None)
    assert terminate.access == () and terminate.kdc == ()
    assert terminate.revoke_now is Revocation.CESSATION_OF_OPERATION


def test_plan_service_change():
    plan = plan_change(OPEN_A, Service("A", MAC, "15551000100", ("voice", "voicemail")))
    assert plan.access == (AccessStep("A", MAC, AccessAction.OPEN, "15551000100",
                                      ("voice", "voicemail")),)
    assert plan.kdc == ()
    assert plan.issue_certificate and plan.revoke_now is None and plan.revoke_on_issue


def test_plan_segment_move():
    plan = plan_change(OPEN_A, Service("B", MAC, "15552000100", ("voice",)))
    assert [(s.headend, s.action) for s in plan.access] == [("A", AccessAction.CLOSE),
                                                             ("B", AccessAction.OPEN)]
    assert [(k.action, k.number) for k in plan.kdc] == [(KdcAction.SUSPEND, "15551000100"),
                                                        (KdcAction.ADD, "15552000100")]
    assert plan.issue_certificate and plan.revoke_now is Revocation.SUPERSEDED


def test_plan_device_swap():
    plan = plan_change(OPEN_A, Service("A", MAC2, "15551000100", ("voice",)))
    assert [(s.mac, s.action) for s in plan.access] == [(MAC, AccessAction.CLOSE),
                                                         (MAC2, AccessAction.OPEN)]
    assert plan.kdc == ()  # same number: the KDC's record (by phone ID) stands
    assert plan.issue_certificate and plan.revoke_now is Revocation.SUPERSEDED


def test_change_rules_by_state():
    check_change_allowed(ChangeKind.TERMINATE, CustomerState.PENDING)
    check_change_allowed(ChangeKind.RESUME, CustomerState.SUSPENDED)
    for kind, state in ((ChangeKind.TERMINATE, CustomerState.TERMINATED),
                        (ChangeKind.MOVE, CustomerState.SUSPENDED),
                        (ChangeKind.SWAP, CustomerState.PENDING),
                        (ChangeKind.RESUME, CustomerState.ACTIVE),
                        (ChangeKind.NEW, CustomerState.ACTIVE)):
        with pytest.raises(WrongState):
            check_change_allowed(kind, state)
    assert state_during(ChangeKind.NEW) is CustomerState.PENDING
    assert state_after(ChangeKind.NEW) is CustomerState.ACTIVE
    assert state_during(ChangeKind.SUSPEND) is CustomerState.SUSPENDED
    assert state_during(ChangeKind.TERMINATE) is CustomerState.TERMINATED


def test_headend_change_core():
    change = decode_change("00-1A-2B-3C-4D-5E", {"change_id": "prov-7", "action": "open",
                                                 "number": "+1 555 1000 100",
                                                 "options": ["voicemail", "voice"]})
    assert change.mac == MAC and change.number == "15551000100"
    assert change.options == ("voice", "voicemail")
    assert decode_change(MAC, encode_change(change)) == change
    opened = apply_change(None, change)
    assert opened == AccessEntry(MAC, "open", "15551000100", ("voice", "voicemail"), 1, "prov-7")
    closed = apply_change(opened, decode_change(MAC, {"change_id": "prov-9", "action": "close"}))
    assert (closed.state, closed.number, closed.version) == ("closed", None, 2)
    assert encode_entry("A", closed)["version"] == 2


@pytest.mark.parametrize("body, field", [
    ([], "body"),
    ({"change_id": "x", "action": "open", "number": "15551000100", "extra": 1}, "body"),
    ({"change_id": "", "action": "close"}, "change_id"),
    ({"change_id": "a b", "action": "close"}, "change_id"),
    ({"change_id": "x", "action": "delete"}, "action"),
    ({"change_id": "x", "action": "open"}, "number"),
    ({"change_id": "x", "action": "open", "number": 15551000100}, "number"),
    ({"change_id": "x", "action": "close", "options": "voice"}, "options"),
])
def test_headend_change_refusals(body, field):
    with pytest.raises(InvalidField) as err:
        decode_change(MAC, body)
    assert err.value.field == field
