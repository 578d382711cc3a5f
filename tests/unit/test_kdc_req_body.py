"""The KDC-REQ-BODY as received (the input of paChecksum and of the TGS authenticator
checksum), over requests MIT's kinit and kvno sent: the slice is exactly the body's own DER,
and it is what MIT's paChecksum was computed over."""

import hashlib
from pathlib import Path

import pytest

from common.errors import MalformedMessage
from common.messages.cms import decode_signed_data
from common.messages.kdc_req import (
    decode_as_req,
    decode_tgs_req,
    encode_kdc_req_body,
    received_req_body,
)
from common.messages.pkinit import decode_auth_pack, decode_pa_pk_as_req

MIT = Path(__file__).parents[1] / "interop" / "mit"


@pytest.mark.parametrize("name, decode", [("asreq_pkinit_dh.der", decode_as_req),
                                          ("asreq_pkinit_rsa.der", decode_as_req),
                                          ("tgsreq_sc1.der", decode_tgs_req)])
def test_received_body_is_the_bodys_der(name, decode):
    data = (MIT / name).read_bytes()
    body = received_req_body(data)
    assert body == encode_kdc_req_body(decode(data).req_body)
    assert body[0] == 0x30 and data.endswith(body)  # req-body is the last field


def test_mits_pa_checksum_is_over_the_received_body():
    data = (MIT / "asreq_pkinit_rsa.der").read_bytes()
    [pa] = [p for p in decode_as_req(data).padata if p.padata_type == 16]
    signed = decode_signed_data(decode_pa_pk_as_req(pa.padata_value).signed_auth_pack)
    auth_pack = decode_auth_pack(signed.encap_content_info.e_content)
    assert auth_pack.pk_authenticator.pa_checksum == \
        hashlib.sha1(received_req_body(data)).digest()


def test_a_request_without_a_body_is_refused():
    with pytest.raises(MalformedMessage):
        received_req_body(bytes.fromhex("6a0530030201 05".replace(" ", "")))
