"""What the KDC accepts from deployed PKINIT clients beyond the letter of the RFCs, and what it
sends so that they accept its replies (docs/protocol.md, leniencies): KDCOptions of 9 bits, a
PKAuthenticator nonce other than the body's, dhKeyExpiration with every serverDHNonce, no DH
shared secret with a leading zero byte, and error 65 rather than an internal error for a group
the crypto library cannot do. Requests come from telekey's client with MIT's test identity."""

import dataclasses
import hashlib
import os
from datetime import UTC, datetime

import pytest

from common.crypto.dh import generate_dh
from common.errors import KerberosError
from common.kerberos.pkinit_client import process_pkinit_as_rep
from common.messages.cms import decode_signed_data
from common.messages.der import read_header
from common.messages.kdc_rep import decode_as_rep
from common.messages.krb_error import decode_typed_data
from common.messages.pkinit import (
    decode_dh_public_value,
    decode_domain_parameters,
    decode_kdc_dh_key_info,
    decode_pa_pk_as_rep,
    decode_td_dh_parameters,
)
from common.messages.types import find_padata
from tests.pkinit_cases import REALM, pem, request
from tests.unit.test_pkinit_errors import kdc, policy

ANCHORS = [pem("cacert.pem")]


def tlvs(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, start, end) of each TLV in data[start:end]."""
    out = []
    while start < end:
        _, stop = read_header(data, start + 1, end)  # read_header starts after the tag
        out.append((data[start], start, stop))
        start = stop
    return out


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x81, n]) if n < 0x100 else \
        bytes([0x82]) + n.to_bytes(2, "big")
    return bytes([tag]) + length + content


def with_body(data: bytes, body: bytes) -> bytes:
    """The AS-REQ `data` with its req-body [4] replaced by `body` (lengths made right)."""
    inner_start, _ = read_header(data, 1, len(data))
    seq_start, _ = read_header(data, inner_start + 1, len(data))
    parts = []
    for tag, start, end in tlvs(data, seq_start, len(data)):
        parts.append(tlv(0xA4, body) if tag == 0xA4 else data[start:end])
    return tlv(0x6A, tlv(0x30, b"".join(parts)))


def body_of(data: bytes) -> bytes:
    inner_start, _ = read_header(data, 1, len(data))
    seq_start, _ = read_header(data, inner_start + 1, len(data))
    tag, start, end = next(t for t in tlvs(data, seq_start, len(data)) if t[0] == 0xA4)
    contents, _ = read_header(data, start + 1, end)
    return data[contents:end]


def test_kdc_options_of_9_bits_get_an_as_rep():
    """`03 03 07 50 80`, as a deployed client sends it: RFC 4120 says 32..MAX bits, MIT reads
    any length, so does telekey; the paChecksum covers the body as received."""
    now = datetime.now(UTC)
    original = request(now)
    body = body_of(original.data)
    seq, _ = read_header(body, 1, len(body))
    first = tlvs(body, seq, len(body))[0]
    assert body[first[1]:first[2]] == bytes.fromhex("a00703050040000010")  # telekey's 32 bits
    new_body = tlv(0x30, bytes.fromhex("a0050303075080") + body[first[2]:])

    def checksum_new_body(pack):
        return dataclasses.replace(pack, pk_authenticator=dataclasses.replace(
            pack.pk_authenticator, pa_checksum=hashlib.sha1(new_body).digest()))

    req = request(now, tamper_auth_pack=checksum_new_body)
    data = with_body(req.data, new_body)
    reply = decode_as_rep(kdc(data, now))
    assert reply.ticket is not None and reply.cname.name_string == ("phone1",)


def test_pk_authenticator_nonce_other_than_the_body_nonce_gets_an_as_rep():
    """RFC 4556 §3.2.1: that nonce "does not need to match with the nonce in the
    KDC-REQ-BODY". The reply's nonce is the body's; KDCDHKeyInfo echoes the signed one."""
    now = datetime.now(UTC)
    req = request(now, tamper_auth_pack=lambda pack: dataclasses.replace(
        pack, pk_authenticator=dataclasses.replace(pack.pk_authenticator, nonce=12345)))
    reply = kdc(req.data, now)
    with pytest.raises(KerberosError) as err:  # telekey's client checks its own nonce
        process_pkinit_as_rep(reply, req, realm=REALM, anchors=ANCHORS, now=now)
    assert err.value.status == "NONCE_MISMATCH"
    info = _dh_key_info(reply)
    assert info.nonce == 12345


def _dh_key_info(reply: bytes):
    rep = decode_as_rep(reply)
    pk = decode_pa_pk_as_rep(find_padata(rep.padata, 17).padata_value)
    return decode_kdc_dh_key_info(decode_signed_data(pk.dh_info.dh_signed_data)
                                  .encap_content_info.e_content)


def test_server_nonce_always_comes_with_a_key_expiration():
    """Heimdal (and Windows with Credential Guard) refuse serverDHNonce without
    dhKeyExpiration (RFC 4556 §3.2.3.1): sent even for a key used once."""
    now = datetime.now(UTC)
    req = request(now, tamper_auth_pack=lambda pack: dataclasses.replace(
        pack, client_dh_nonce=os.urandom(32)))
    reply = kdc(req.data, now)
    rep = decode_as_rep(reply)
    pk = decode_pa_pk_as_rep(find_padata(rep.padata, 17).padata_value)
    assert pk.dh_info.server_dh_nonce is not None
    expiration = _dh_key_info(reply).dh_key_expiration
    assert expiration == now.replace(microsecond=0) + policy().max_skew
    without = kdc(request(now).data, now)  # no clientDHNonce: neither field
    assert _dh_key_info(without).dh_key_expiration is None


def test_a_shared_secret_with_a_leading_zero_byte_is_never_used():
    """The KDC's first key gives this client a secret that starts with a zero byte (Heimdal
    would hash it without that byte): the KDC picks another key and notes it."""
    now = datetime.now(UTC)
    req = request(now)
    peer = req.dh.public_value
    made = []

    def keygen(group):
        if not made:  # the first key the KDC makes: one with a leading zero, found by search
            while (key := generate_dh(group)).shared_secret(peer)[0] != 0:
                pass
        else:
            key = generate_dh(group)
        made.append(key)
        return key

    from common.kerberos.as_exchange import handle_as_req
    from tests.unit.test_pkinit_errors import PRINCIPALS

    notes: dict[str, str] = {}
    reply = handle_as_req(req.data, policy=policy(dh_keygen=keygen), principals=PRINCIPALS,
                          now=now, notes=notes)
    assert len(made) == 2 and notes["dh_retries"] == "1"
    kdc_public = decode_dh_public_value(_dh_key_info(reply).subject_public_key)
    assert kdc_public == made[1].public_value
    assert req.dh.shared_secret(kdc_public)[0] != 0
    result = process_pkinit_as_rep(reply, req, realm=REALM, anchors=ANCHORS, now=now)
    assert result.enc_part.nonce == req.nonce


def test_group_2_with_min_dh_bits_1024_gets_65_with_the_groups_that_work():
    """The crypto library cannot make keys in MODP group 2: error 65 listing groups of 2048
    bits and more, never KRB_ERR_GENERIC "INTERNAL"."""
    now = datetime.now(UTC)
    from tests.pkinit_cases import _group2_public_value

    req = request(now, tamper_auth_pack=_group2_public_value)
    with pytest.raises(KerberosError) as err:
        from common.kerberos.as_exchange import handle_as_req
        from tests.unit.test_pkinit_errors import PRINCIPALS

        handle_as_req(req.data, policy=policy(min_dh_bits=1024), principals=PRINCIPALS,
                      now=now)
    assert int(err.value.code) == 65
    (entry,) = decode_typed_data(err.value.e_data)
    groups = [decode_domain_parameters(a.parameters).p.bit_length()
              for a in decode_td_dh_parameters(entry.data_value)]
    assert groups and min(groups) >= 2048
