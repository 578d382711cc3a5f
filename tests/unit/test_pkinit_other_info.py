"""RFC 8636 Appendix A: the OtherInfo telekey builds from the vector's inputs is the DER the
vector file records, byte for byte, and hashing it yields the published key."""

import pytest

from common.crypto.pkinit_kdf import pkinit_kdf, pkinit_kdf_random
from common.crypto.rfc3961 import des3_random_to_key
from common.messages.asn1 import rfc4556
from common.messages.base import encode_der
from common.messages.pkinit import (
    Krb5PrincipalName,
    PkinitSuppPubInfo,
    encode_krb5_principal_name,
    encode_other_info,
)
from common.messages.types import PrincipalName
from tests.conftest import load_vectors

VECTORS = load_vectors("pkinit_kdf.json")


def principal(info: dict) -> Krb5PrincipalName:
    return Krb5PrincipalName(info["realm"],
                             PrincipalName(int(info["name_type"]), tuple(info["components"])))


@pytest.mark.parametrize("v", VECTORS, ids=[f"RFC8636_AppA-{v['hash']}" for v in VECTORS])
def test_other_info_and_key(v):
    client, kdc = principal(v["party_u_info"]), principal(v["party_v_info"])
    assert encode_krb5_principal_name(client).hex() == v["party_u_info_der"]
    assert encode_krb5_principal_name(kdc).hex() == v["party_v_info_der"]
    as_req, pk_as_rep = bytes.fromhex(v["as_req"]), bytes.fromhex(v["pk_as_rep"])
    enctype = int(v["enctype"])
    supp = encode_der(PkinitSuppPubInfo(enctype, as_req, pk_as_rep), rfc4556.PkinitSuppPubInfo())
    assert supp.hex() == v["supp_pub_info_der"]
    other_info = encode_other_info(v["kdf_oid"], client, kdc, enctype, as_req, pk_as_rep)
    assert other_info.hex() == v["other_info_der"]
    z = bytes.fromhex(v["z"])
    if enctype == 16:
        seed = pkinit_kdf_random(v["kdf_oid"], z, other_info, 21)
        assert des3_random_to_key(seed).hex() == v["key"]
    else:
        assert pkinit_kdf(v["kdf_oid"], z, other_info, enctype).data.hex() == v["key"]
