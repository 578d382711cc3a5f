"""H.225.0 RAS for seed 002 (common/enterprise/per.py, common/enterprise/ras.py): the five
messages round trip in both profiles, and pycrate (an independent PER codec) decodes our
bytes and encodes them back identically; the asn1tools pitfalls of ../shared/asn1/h225/
README.md each have a test; tokens absent or incomplete are refused; a seed-profile GRQ
against its known bytes and an ICV computed with hmac alone; any bytes give a message or
MalformedMessage."""

import hashlib
import hmac
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.enterprise.keys import IcvMismatch, Profile
from common.enterprise.per import decode_ras, encode_ras
from common.enterprise.ras import (
    NOT_HOMED,
    STALE_KEY,
    Gcf,
    Grj,
    Grq,
    MissingToken,
    Rcf,
    Rrq,
    Token,
    decode_message,
    encode_message,
    verify_message,
)
from common.errors import MalformedMessage
from tests.conftest import fuzz_examples
from tests.strategies import mutated

pycrate = pytest.importorskip("pycrate_asn1dir.H225")
VECTORS = json.loads((Path(__file__).parents[1] / "vectors/data/enterprise_ras.json").read_text())
KA = {Profile.SEED: bytes(range(16)), Profile.DEFAULT: bytes(range(32))}
RE, RG = bytes(range(16, 32)), bytes(range(32, 48))
G = bytes.fromhex("00015ec288c4083a0123456789abcdef")


def messages() -> list:
    phone = Token(1700000000, 7, "2001", generator=G, check_value=b"\x72\xc4\x1b", re=RE)
    controller = Token(1700000001, 7, "sigctl/sc1.lab.test", "2001", re=RE, rg=RG)
    answer = Token(1700000002, 8, "2001", "sigctl/sc1.lab.test", re=RE, rg=RG)
    return [
        Grq(7, ("127.0.0.1", 40000), "2001", phone),
        Gcf(7, "sigctl/sc1.lab.test", ("127.0.0.1", 1719), controller),
        Grj(7, "sigctl/sc1.lab.test", STALE_KEY, re=RE),
        Grj(7, "sigctl/sc1.lab.test", NOT_HOMED, (("192.0.2.1", 1719), ("192.0.2.2", 1720)), RE),
        Rrq(8, ("127.0.0.1", 40000), "2001", "sigctl/sc1.lab.test", 0x1234,
            ((0x00, 0x14), (0x02, 0x0C)), answer),
        Rcf(8, "sigctl/sc1.lab.test", "2001", "0123456789abcdef" * 2, ("127.0.0.1", 4500),
            0x5678, (0x00, 0x14), 3600, 300, controller),
    ]


def _normal(value):
    """pycrate's and asn1tools' Python forms of one value made comparable: OIDs as dotted
    text, BIT STRINGs as (bytes, bits), NULL as 0."""
    if value is None:
        return 0
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, tuple):
        if len(value) > 2 and all(isinstance(v, int) for v in value):
            return ".".join(map(str, value))
        if len(value) == 2 and isinstance(value[0], int) and isinstance(value[1], int):
            bits = value[1]
            return ((value[0] << (-bits % 8)).to_bytes((bits + 7) // 8, "big"), bits)
        return tuple(_normal(v) for v in value)
    return value


def _pycrate_agrees(data: bytes) -> None:
    """pycrate decodes our bytes to the value asn1tools decodes them to. (pycrate 0.8.1
    re-encodes some of them one octet longer: after an extension bitmap that ends on an
    octet boundary it pads anyway. Wireshark agrees with our bytes and calls pycrate's
    malformed, so its re-encoding is not compared.)"""
    ras = pycrate.H323_MESSAGES.RasMessage
    ras.from_aper(data)
    assert _normal(ras.get_val()) == _normal(decode_ras(data))


@pytest.mark.parametrize("profile", list(Profile))
@pytest.mark.parametrize("index", range(6))
def test_round_trip_and_pycrate_agrees(profile, index):
    message = messages()[index]
    data = encode_message(message, KA[profile], profile)
    received = decode_message(data)
    if isinstance(message, Grj):
        assert received.message == message and received.icv_input is None
    else:
        assert replace(received.message, token=replace(received.message.token, icv=b"")) \
            == replace(message, token=replace(message.token, algorithm=received.message.token
                                              .algorithm))
        verify_message(received, KA[profile], profile)
    _pycrate_agrees(data)


def test_any_changed_field_breaks_the_icv():
    grq = messages()[0]
    data = encode_message(grq, KA[Profile.DEFAULT])
    other = encode_message(replace(grq, ras_address=("127.0.0.1", 40001)), KA[Profile.DEFAULT])
    # The other message's fields with this message's ICV.
    forged = decode_message(other)
    forged = replace(forged, message=replace(forged.message, token=decode_message(data)
                                             .message.token))
    with pytest.raises(IcvMismatch):
        verify_message(forged, KA[Profile.DEFAULT], Profile.DEFAULT)
    with pytest.raises(IcvMismatch):
        verify_message(decode_message(data), bytes(32), Profile.DEFAULT)
    with pytest.raises(IcvMismatch):  # a seed-profile ICV where the default is expected
        verify_message(decode_message(encode_message(grq, KA[Profile.SEED], Profile.SEED)),
                       KA[Profile.SEED], Profile.DEFAULT)


def test_null_extension_addition_is_01_00_and_decodes_correctly():
    """Pitfall 2: GRQ supportsAltGK (a NULL addition) before supportsAssignedGK TRUE."""
    value = ("gatekeeperRequest", {
        "requestSeqNum": 1, "protocolIdentifier": "0.0.8.2250.0.7",
        "rasAddress": ("ipAddress", {"ip": b"\x7f\0\0\1", "port": 1719}),
        "endpointType": {"terminal": {}, "mc": False, "undefinedNode": False},
        "supportsAltGK": None, "supportsAssignedGK": True})
    data = encode_ras(value)
    assert b"\x01\x00\x01\x80" in data  # the NULL's open type, then the BOOLEAN's
    assert decode_ras(data) == value
    _pycrate_agrees(data)
    grj = encode_message(messages()[2])  # rejectReason securityDenial: a NULL CHOICE addition
    assert b"\x01\x00" in grj and decode_message(grj).message == messages()[2]
    _pycrate_agrees(grj)


def test_missing_mandatory_addition_raises_instead_of_dropping_the_tokens():
    """Pitfall 3: RRQ without keepAlive would have lost every addition, cryptoTokens too."""
    data = encode_message(messages()[4], KA[Profile.DEFAULT])
    name, fields = decode_ras(data)
    del fields["keepAlive"]
    with pytest.raises(ValueError):
        encode_ras((name, fields))


def test_constraints_and_trailing_bytes():
    """Pitfall 4: constraints are checked, trailing bytes refused."""
    name, fields = decode_ras(encode_message(messages()[0], KA[Profile.DEFAULT]))
    fields["requestSeqNum"] = 0  # 1..65535
    with pytest.raises(ValueError):
        encode_ras((name, fields))
    data = encode_message(messages()[0], KA[Profile.DEFAULT])
    with pytest.raises(MalformedMessage):
        decode_message(data + b"\x00")
    with pytest.raises(MalformedMessage):
        decode_message(data[:-3])


def _without(path: list, value: tuple) -> bytes:
    name, fields = value
    target = fields
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return encode_ras((name, fields))


@pytest.mark.parametrize("path", [
    ["cryptoTokens"],
    ["cryptoTokens", 0, 1, 1, "hashedVals", "sendersID"],
    ["cryptoTokens", 0, 1, 1, "hashedVals", "timeStamp"],
    ["cryptoTokens", 0, 1, 1, "hashedVals", "profileInfo"],
], ids=["no-token", "no-sendersID", "no-timeStamp", "no-profileInfo"])
def test_messages_without_complete_tokens_are_refused(path):
    value = decode_ras(encode_message(messages()[0], KA[Profile.DEFAULT]))
    data = _without(path, value)
    with pytest.raises(MissingToken):
        decode_message(data)


def test_other_ras_messages_are_not_taken_for_ours():
    value = ("unregistrationConfirm", {"requestSeqNum": 3})
    with pytest.raises(MalformedMessage):
        decode_message(encode_ras(value))


def test_seed_profile_grq_known_bytes_and_icv_by_hmac_alone():
    case = VECTORS["grq"]
    token = Token(case["timestamp"], case["seq"], case["ext"], generator=bytes.fromhex(case["g"]),
                  check_value=bytes.fromhex(case["cvm"]), re=bytes.fromhex(case["re"]))
    ka = bytes.fromhex(case["ka"])
    data = encode_message(Grq(case["seq"], tuple(case["ras_address"]), case["ext"], token), ka,
                          Profile.SEED)
    assert data.hex() == case["per"]
    received = decode_message(data)
    assert received.icv_input is not None and received.icv_input.hex() == case["icv_input"]
    # H.235.1: HMAC-SHA1-96 over the message with the hash field zeroed.
    icv = hmac.new(ka, bytes.fromhex(case["icv_input"]), hashlib.sha1).digest()[:12]
    assert icv.hex() == case["icv"] == received.message.token.icv.hex()
    assert bytes.fromhex(case["icv"]) in data
    assert data.replace(icv, bytes(12)) == bytes.fromhex(case["icv_input"])
    _pycrate_agrees(data)


SEEDS = [encode_message(m, KA[Profile.DEFAULT]) for m in messages()]


@settings(max_examples=fuzz_examples(300), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(st.binary(max_size=300), mutated(SEEDS)))
def test_any_bytes_give_a_message_or_malformed(data):
    try:
        decode_message(data)
    except MalformedMessage:
        pass


def test_missing_token_is_a_malformed_message():
    from common.codes import ErrorCode

    assert issubclass(MissingToken, MalformedMessage)
    assert MissingToken.code is ErrorCode.KRB_ERR_GENERIC
