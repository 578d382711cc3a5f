"""Published Kerberos crypto vectors (../shared/vectors, copied into tests/vectors/data).

Each case id names its source: RFC 3961 App. A (n-fold), RFC 3962 App. B (s2k, CTS), MIT's
t_derive/t_decrypt/t_cksums/t_prf/t_cf2 regression values, RFC 8009 App. A, RFC 4556 App. B and
RFC 8636 App. A.
"""

import pytest

from common.crypto import Key, cf2
from common.crypto.aes_cts import cts_decrypt, cts_encrypt, cts_next_iv
from common.crypto.pkinit_kdf import octetstring2key, pkinit_kdf, pkinit_kdf_random
from common.crypto.rfc3961 import KC, KE, KI, des3_random_to_key, nfold
from common.errors import IntegrityError, ModifiedError
from tests.conftest import load_vectors

H = bytes.fromhex


def cases(name: str, label):
    vectors = load_vectors(name)
    return [pytest.param(v, id=f"{i}-{label(v)}") for i, v in enumerate(vectors)]


def src(v) -> str:
    return v["source"].split("(")[0].strip().replace(" ", "_")


@pytest.mark.parametrize("v", cases("nfold.json", lambda v: f"{src(v)}-{v['n_bits']}bits"))
def test_nfold(v):
    assert nfold(H(v["input_hex"]), int(v["n_bits"]) // 8) == H(v["output"])


@pytest.mark.parametrize("v", cases("str2key.json", lambda v: f"{src(v)}-e{v['enctype']}"))
def test_string_to_key(v):
    key = Key.from_string(int(v["enctype"]), H(v["password_hex"]), H(v["salt"]),
                          H(v["s2kparams"]))
    assert key.data == H(v["key"])


@pytest.mark.parametrize("v", cases("derive.json", lambda v: f"{src(v)}-e{v['enctype']}"))
def test_derive(v):
    key = Key(int(v["enctype"]), H(v["base_key"]))
    usage = int(v["usage"])
    assert key.usage_key(usage, KC) == H(v["kc"])
    assert key.usage_key(usage, KE) == H(v["ke"])
    assert key.usage_key(usage, KI) == H(v["ki"])


@pytest.mark.parametrize("v", cases("derive.json", lambda v: f"{src(v)}-e{v['enctype']}"))
def test_prepare_derives_the_same_keys_in_one_batch(v):
    key = Key(int(v["enctype"]), H(v["base_key"]))
    usage = int(v["usage"])
    key.prepare(((usage, KC), (usage, KE), (usage, KI)), prf=True)
    assert key.usage_key(usage, KC) == H(v["kc"])
    assert key.usage_key(usage, KE) == H(v["ke"])
    assert key.usage_key(usage, KI) == H(v["ki"])
    assert key.prf(b"x") == Key(key.enctype, key.data).prf(b"x")  # the batched PRF key too


@pytest.mark.parametrize("v", cases("decrypt.json", lambda v: f"{src(v)}-e{v['enctype']}"))
def test_decrypt_and_encrypt(v):
    key = Key(int(v["enctype"]), H(v["key"]))
    usage = int(v["usage"])
    assert key.decrypt(usage, H(v["ciphertext"])) == H(v["plaintext"])
    assert key.encrypt(usage, H(v["plaintext"]), confounder=H(v["confounder"])) == H(
        v["ciphertext"])


@pytest.mark.parametrize("v", cases("decrypt.json", lambda v: f"{src(v)}-e{v['enctype']}"))
def test_decrypt_detects_tampering(v):
    key = Key(int(v["enctype"]), H(v["key"]))
    usage = int(v["usage"])
    tampered = bytearray(H(v["ciphertext"]))
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(IntegrityError):
        key.decrypt(usage, bytes(tampered))
    with pytest.raises(IntegrityError):
        key.decrypt(usage + 1, H(v["ciphertext"]))


@pytest.mark.parametrize("v", cases("checksums.json", lambda v: f"{src(v)}-c{v['cksumtype']}"))
def test_checksum(v):
    key = Key(int(v["enctype"]), H(v["key"]))
    usage = int(v["usage"])
    assert key.profile.cksumtype == int(v["cksumtype"])
    assert key.checksum(usage, H(v["plaintext"])) == H(v["checksum"])
    key.verify_checksum(usage, H(v["plaintext"]), H(v["checksum"]), int(v["cksumtype"]))
    with pytest.raises(ModifiedError):
        key.verify_checksum(usage, H(v["plaintext"]) + b"x", H(v["checksum"]))


def _prf_key(v) -> Key:
    if v.get("key"):
        return Key(int(v["enctype"]), H(v["key"]))
    s2k = v["key_from_string_to_key"]
    return Key.from_string(int(v["enctype"]), s2k["password"].encode(), H(s2k["salt"]))


@pytest.mark.parametrize("v", cases("prf.json", lambda v: f"{src(v)}-e{v['enctype']}"))
def test_prf(v):
    assert _prf_key(v).prf(H(v["input"])) == H(v["output"])


@pytest.mark.parametrize("v", cases("cts.json", lambda v: f"RFC3962_AppB-len{v['length']}"))
def test_cts(v):
    ciphertext = cts_encrypt(H(v["key"]), H(v["iv"]), H(v["plaintext"]))
    assert ciphertext == H(v["ciphertext"])
    assert cts_next_iv(ciphertext) == H(v["next_iv"])
    assert cts_decrypt(H(v["key"]), H(v["iv"]), ciphertext) == H(v["plaintext"])


@pytest.mark.parametrize("v", cases("cf2.json", lambda v: f"{src(v)}-e{v['enctype']}"))
def test_cf2(v):
    enctype = int(v["enctype"])
    s1, s2 = v["key1_from_string_to_key"], v["key2_from_string_to_key"]
    key1 = Key.from_string(enctype, s1["password"].encode(), H(s1["salt"]))
    key2 = Key.from_string(enctype, s2["password"].encode(), H(s2["salt"]))
    assert key1.data == H(v["key1"]) and key2.data == H(v["key2"])
    assert cf2(key1, key2, H(v["pepper1"]), H(v["pepper2"])).data == H(v["output"])


@pytest.mark.parametrize("v", cases("octetstring2key.json", lambda v: f"{src(v)}-x{v['x_length']}"))
def test_octetstring2key(v):
    x = H(v["x"])
    for nonce in (v.get("client_nonce"), v.get("kdc_nonce")):
        if nonce not in (None, "None"):
            x += H(nonce)
    assert octetstring2key(x, int(v["enctype"])).data == H(v["key"])


@pytest.mark.parametrize("v", cases("pkinit_kdf.json", lambda v: f"RFC8636_AppA-{v['hash']}"))
def test_pkinit_kdf_with_given_other_info(v):
    """The KDF itself, on the OtherInfo bytes the vector file gives (the codec test builds them)."""
    enctype = int(v["enctype"])
    z, other_info = H(v["z"]), H(v["other_info_der"])
    seed = pkinit_kdf_random(v["kdf_oid"], z, other_info, len(H(v["kdf_output"])))
    assert seed == H(v["kdf_output"])
    if enctype == 16:  # des3-cbc-sha1-kd: only its random-to-key is implemented, for this vector
        assert des3_random_to_key(seed) == H(v["key"])
    else:
        assert pkinit_kdf(v["kdf_oid"], z, other_info, enctype).data == H(v["key"])


def test_prf_plus_is_prf_with_counter():
    key = Key(18, bytes(range(32)))
    out = key.prf_plus(b"pepper", 40)
    assert out[:16] == key.prf(b"\x01pepper")
    assert out[16:32] == key.prf(b"\x02pepper")
    assert out[32:] == key.prf(b"\x03pepper")[:8]
    kept = key.prf_plus(b"pepper", 40, keep=True)
    assert kept == out
    assert key.prf_plus(b"pepper", 40, keep=True) is kept  # remembered, not derived again
    assert key.prf_plus(b"pepper", 20, keep=True) == out[:20]  # per (data, length)
    prf = key.prf(b"\x01pepper", keep=True)  # the PRF itself, kept apart from PRF+
    assert prf == out[:16] and key.prf(b"\x01pepper", keep=True) is prf


def test_key_repr_hides_bytes():
    assert "00" not in repr(Key(17, bytes(16)))
