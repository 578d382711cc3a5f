"""HMAC from kept key states equals the standard library's, on the RFC vectors and on keys
shorter than, equal to and longer than a block."""

import hmac
import os

import pytest

from common.crypto.hmac_states import hmac_digest


@pytest.mark.parametrize(("key", "data", "name", "expected"), [
    # RFC 2202 §3 test cases 1 and 6 (HMAC-SHA-1; case 6 has an 80-byte key).
    (b"\x0b" * 20, b"Hi There", "sha1", "b617318655057264e28bc0b6fb378c8ef146be00"),
    (b"\xaa" * 80, b"Test Using Larger Than Block-Size Key - Hash Key First", "sha1",
     "aa4ae5e15272d00e95705637ce8a3b55ed402112"),
    # RFC 4231 §4.2 test case 1 (HMAC-SHA-256 and HMAC-SHA-384).
    (b"\x0b" * 20, b"Hi There", "sha256",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"\x0b" * 20, b"Hi There", "sha384",
     "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
     "faea9ea9076ede7f4af152e8b2fa9cb6"),
])
def test_rfc_vectors(key, data, name, expected):
    assert hmac_digest(key, data, name).hex() == expected
    assert hmac_digest(key, data, name).hex() == expected  # from the kept states


@pytest.mark.parametrize("name", ["sha1", "sha256", "sha384"])
@pytest.mark.parametrize("key_bytes", [0, 16, 20, 32, 64, 128, 129, 200])
def test_same_as_the_standard_library(name, key_bytes):
    key = os.urandom(key_bytes)
    for size in (0, 1, 55, 64, 1000):
        data = os.urandom(size)
        assert hmac_digest(key, data, name) == hmac.digest(key, data, name)
