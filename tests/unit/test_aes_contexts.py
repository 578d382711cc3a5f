"""The AES contexts made by calling cryptography's binding directly (common/crypto/aes_cts.py)
give the same bytes as the public `Cipher` API, and keys of a wrong size are still refused."""

import os

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms, modes

from common.crypto import aes_cts


@pytest.mark.parametrize("key_bytes", [16, 32])
def test_direct_contexts_equal_the_public_api(key_bytes):
    key, iv, data = os.urandom(key_bytes), os.urandom(16), os.urandom(96)
    for mode in (modes.ECB(), modes.CBC(iv)):
        direct = aes_cts._encryptor(algorithms.AES(key), mode)
        public = aes_cts._public_encryptor(algorithms.AES(key), mode)
        cipher = public.update(data) + public.finalize()
        assert direct.update(data) + direct.finalize() == cipher
        back = aes_cts._decryptor(algorithms.AES(key), mode)
        assert back.update(cipher) + back.finalize() == data
    # FIPS-197 appendix C.1: AES-128 of 00112233... under 00010203...
    c1 = aes_cts.aes_encrypt_block(bytes(range(16)), bytes.fromhex(
        "00112233445566778899aabbccddeeff"))
    assert c1.hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"


def test_wrong_key_size_is_refused():
    with pytest.raises(ValueError):
        aes_cts.aes_encrypt_block(os.urandom(15), bytes(16))
