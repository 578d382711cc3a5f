"""Seed 002's key derivations against the known answers in
tests/vectors/data/enterprise_seed.json, and those answers recomputed here from the formulas
with hashlib and hmac alone (no telekey code), so that the implementation, the vectors and the
document's formulas agree."""

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from common.enterprise.generator import make_generator, parse_generator
from common.enterprise.key_file import KeyFile, decode_key_file, encode_key_file
from common.enterprise.keys import (
    Profile,
    auth_key,
    check_value,
    compute_icv,
    generator_key,
    master_key_from_seed,
    session_key,
    verify_icv,
)

DATA = json.loads((Path(__file__).parents[1] / "vectors/data/enterprise_seed.json").read_text())
CASES = DATA["cases"]
CONSTANTS = {name: value.encode() for name, value in DATA["constants"].items()}


def _ids(case):
    return case["name"]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_implementation_gives_the_known_answers(case):
    profile = Profile(case["profile"])
    km = master_key_from_seed(bytes.fromhex(case["seed"]), profile)
    g = make_generator(case["server_id"], case["ext"], case["counter"])
    kg = generator_key(km, g, profile)
    ka = auth_key(kg, case["pin"], profile)
    re, rg = bytes.fromhex(case["re"]), bytes.fromhex(case["rg"])
    data = bytes.fromhex(case["icv_data"])
    assert km.hex() == case["km"]
    assert g.hex() == case["g"]
    assert kg.hex() == case["kg"]
    assert check_value(km, profile).hex() == case["cvm"]
    assert ka.hex() == case["ka"]
    assert session_key(kg, case["pin"], re, rg, profile).hex() == case["ks"]
    assert compute_icv(ka, data, profile).hex() == case["icv"]
    verify_icv(ka, data, bytes.fromhex(case["icv"]), profile)
    key_file = KeyFile(profile, case["ext"], g, kg, bytes.fromhex(case["cvm"]))
    assert encode_key_file(key_file).decode() == case["key_file"]
    assert decode_key_file(case["key_file"].encode()) == key_file
    parsed = parse_generator(g)
    assert (parsed.server_id, parsed.counter) == (case["server_id"], case["counter"])


@pytest.mark.parametrize("case", [c for c in CASES if c["profile"] == "seed"], ids=_ids)
def test_seed_profile_recomputed_with_hashlib_and_hmac(case):
    """The document's formulas, written out: K_m = SHA-1(S); K_g = HMAC-SHA-1-128(g, K_m)
    with g as the key; CV_m = the three least significant bytes of SHA-1(K_m);
    K_a = HMAC-SHA1-128(K_g, C_a‖PIN); K_s = HMAC-SHA1-128(K_g, C_b‖PIN‖Re‖Rg);
    ICV = HMAC-SHA1-96 under K_a."""
    seed = bytes.fromhex(case["seed"])
    pin = case["pin"].encode("ascii")
    re, rg = bytes.fromhex(case["re"]), bytes.fromhex(case["rg"])
    tag = hashlib.sha256(CONSTANTS["ext_tag_label"] + case["ext"].encode()).digest()[:6]
    g = case["server_id"].to_bytes(2, "big") + tag + case["counter"].to_bytes(8, "big")
    km = hashlib.sha1(seed).digest()
    kg = hmac.new(g, km, hashlib.sha1).digest()[:16]
    cvm = int.from_bytes(hashlib.sha1(km).digest(), "big") & 0xFFFFFF
    ka = hmac.new(kg, CONSTANTS["C_a"] + pin, hashlib.sha1).digest()[:16]
    ks = hmac.new(kg, CONSTANTS["C_b"] + pin + re + rg, hashlib.sha1).digest()[:16]
    icv = hmac.new(ka, bytes.fromhex(case["icv_data"]), hashlib.sha1).digest()[:12]
    assert (len(km), len(kg), len(ka), len(ks), len(icv)) == (20, 16, 16, 16, 12)
    assert g.hex() == case["g"]
    assert km.hex() == case["km"]
    assert kg.hex() == case["kg"]
    assert cvm.to_bytes(3, "big").hex() == case["cvm"]
    assert ka.hex() == case["ka"]
    assert ks.hex() == case["ks"]
    assert icv.hex() == case["icv"]


@pytest.mark.parametrize("case", [c for c in CASES if c["profile"] == "default"], ids=_ids)
def test_default_profile_recomputed_with_hashlib_and_hmac(case):
    """The same structure with SHA-256, K_g = HMAC-SHA256(K_m, g) and CV_m the last three
    bytes of HMAC-SHA256(K_m, C_CV); ICV = HMAC-SHA256-128."""
    km = hashlib.sha256(bytes.fromhex(case["seed"])).digest()
    g = bytes.fromhex(case["g"])
    pin = case["pin"].encode("ascii")
    kg = hmac.new(km, g, hashlib.sha256).digest()
    ka = hmac.new(kg, CONSTANTS["C_a"] + pin, hashlib.sha256).digest()
    ks = hmac.new(kg, CONSTANTS["C_b"] + pin + bytes.fromhex(case["re"])
                  + bytes.fromhex(case["rg"]), hashlib.sha256).digest()
    assert km.hex() == case["km"]
    assert kg.hex() == case["kg"]
    assert hmac.new(km, CONSTANTS["C_CV"], hashlib.sha256).digest()[-3:].hex() == case["cvm"]
    assert ka.hex() == case["ka"]
    assert ks.hex() == case["ks"]
    assert hmac.new(ka, bytes.fromhex(case["icv_data"]),
                    hashlib.sha256).digest()[:16].hex() == case["icv"]
