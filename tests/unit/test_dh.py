"""common.crypto.dh: the MODP primes computed from their RFC formula equal the primes MIT puts
on the wire; shared secrets are left-padded; bad public values are refused."""

import pytest
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc3279

from common.codes import PaDataType, TypedDataType
from common.crypto.dh import generate_dh, generate_ecdh, identify_group, known_groups, modp_prime
from common.messages.cms import decode_signed_data
from common.messages.kdc_req import decode_as_req
from common.messages.krb_error import decode_krb_error, decode_typed_data
from common.messages.pkinit import decode_auth_pack, decode_pa_pk_as_req, decode_td_dh_parameters
from common.messages.types import find_padata
from tests.conftest import MIT_FIXTURES


def _domain(parameters: bytes) -> tuple[int, int, int]:
    params, _ = decoder.decode(parameters, asn1Spec=rfc3279.DomainParameters())
    return int(params["p"]), int(params["g"]), int(params["q"])


def test_group14_equals_mit_client_parameters():
    req = decode_as_req((MIT_FIXTURES / "asreq_pkinit_dh.der").read_bytes())
    pa = decode_pa_pk_as_req(find_padata(req.padata, PaDataType.PA_PK_AS_REQ).padata_value)
    auth = decode_auth_pack(decode_signed_data(pa.signed_auth_pack).encap_content_info.e_content)
    p, g, q = _domain(auth.client_public_value.algorithm.parameters)
    group = identify_group(p, g)
    assert group is not None and group.number == 14 and group.bits == 2048 and group.q == q


def test_group16_equals_mit_td_dh_parameters():
    err = decode_krb_error((MIT_FIXTURES / "krberror_dh_key_parameters_not_accepted.der")
                           .read_bytes())
    td = next(t for t in decode_typed_data(err.e_data)
              if t.data_type == TypedDataType.TD_DH_PARAMETERS)
    numbers = {identify_group(*_domain(a.parameters)[:2]).number
               for a in decode_td_dh_parameters(td.data_value)}
    assert numbers == {16}
    assert modp_prime(16).bit_length() == 4096


def test_every_prime_has_the_rfc_shape():
    for group in known_groups():
        assert group.p.bit_length() == group.bits
        assert group.p >> (group.bits - 64) == (1 << 64) - 1  # top 64 bits set
        assert group.p & ((1 << 64) - 1) == (1 << 64) - 1  # bottom 64 bits set
        assert pow(2, group.q, group.p) == 1  # 2 generates the subgroup of order q


def test_shared_secret_is_padded_and_agrees():
    group = next(g for g in known_groups() if g.number == 14)
    server = generate_dh(group)
    for _ in range(300):  # about one in 256 secrets has a leading zero byte
        client = generate_dh(group)
        secret = client.shared_secret(server.public_value)
        assert len(secret) == 256
        assert secret == server.shared_secret(client.public_value)


@pytest.mark.parametrize("bad", [0, 1, "p-1", "p"])
def test_out_of_range_public_values_refused(bad):
    group = next(g for g in known_groups() if g.number == 14)
    value = {"p-1": group.p - 1, "p": group.p}.get(bad, bad)
    with pytest.raises(ValueError):
        generate_dh(group).shared_secret(value)


def test_ecdh_p256():
    a, b = generate_ecdh("1.2.840.10045.3.1.7"), generate_ecdh("1.2.840.10045.3.1.7")
    assert a.shared_secret(b.public_point) == b.shared_secret(a.public_point)
    assert len(a.shared_secret(b.public_point)) == 32
    with pytest.raises(ValueError):
        a.shared_secret(b"\x04" + bytes(64))
