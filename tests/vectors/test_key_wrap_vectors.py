"""RFC 5649 §6 known answers for the key wrap that keeps long-term keys at rest
(common/crypto/master_key.py: wrap_key, unwrap_key)."""

import pytest

from common.crypto.master_key import unwrap_key, wrap_key
from common.errors import MasterKeyIntegrityError
from tests.conftest import load_vectors

H = bytes.fromhex
CASES = [pytest.param(v, id=f"{i}-RFC5649-{len(H(v['key']))}octets")
         for i, v in enumerate(load_vectors("rfc5649.json"))]


@pytest.mark.parametrize("v", CASES)
def test_wrap(v):
    assert wrap_key(H(v["kek"]), H(v["key"])) == H(v["wrapped"])


@pytest.mark.parametrize("v", CASES)
def test_unwrap(v):
    assert unwrap_key(H(v["kek"]), H(v["wrapped"])) == H(v["key"])


@pytest.mark.parametrize("v", CASES)
def test_a_changed_bit_fails_the_integrity_check(v):
    wrapped = bytearray(H(v["wrapped"]))
    wrapped[-1] ^= 1
    with pytest.raises(MasterKeyIntegrityError) as err:
        unwrap_key(H(v["kek"]), bytes(wrapped))
    assert err.value.status == "BAD_INTEGRITY"
