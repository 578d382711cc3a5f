"""Seed 002's cores without I/O: derivation rules and their refusals, the generator layout,
counter blocks, and the key file codec (strict; fuzzed)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.codes import ErrorCode
from common.enterprise.generator import (
    COUNTER_LIMIT,
    START_LIMIT,
    CounterBlocks,
    check_extension,
    extension_tag,
    make_generator,
    parse_generator,
    random_counter_start,
)
from common.enterprise.key_file import KeyFile, decode_key_file, encode_key_file
from common.enterprise.keys import (
    C_A,
    C_B,
    C_CV,
    SIZES,
    IcvMismatch,
    Profile,
    auth_key,
    check_value,
    compute_icv,
    encode_pin,
    generator_key,
    master_key_from_seed,
    session_key,
    verify_icv,
)
from common.errors import MalformedMessage

SEED = bytes(range(32))
RE, RG = bytes(16), bytes([1]) * 16


@pytest.mark.parametrize("profile", list(Profile))
def test_lengths_follow_the_profile(profile):
    sizes = SIZES[profile]
    km = master_key_from_seed(SEED, profile)
    kg = generator_key(km, make_generator(1, "2001", 7), profile)
    ka = auth_key(kg, "1234", profile)
    assert (len(km), len(kg), len(ka)) == (sizes.master_key, sizes.generator_key,
                                           sizes.auth_key)
    assert len(session_key(kg, "1234", RE, RG, profile)) == sizes.session_key
    assert len(compute_icv(ka, b"x", profile)) == sizes.icv
    assert len(check_value(km, profile)) == 3


def test_constants_separate_the_derivations():
    assert len(C_A) == len(C_B) and C_A[:-1] == C_B[:-1] and C_A[-1] != C_B[-1]
    assert len(C_CV) != 16  # never a generator


@pytest.mark.parametrize("profile", list(Profile))
def test_every_input_changes_the_keys(profile):
    km = master_key_from_seed(SEED, profile)
    g1, g2 = make_generator(1, "2001", 7), make_generator(1, "2001", 8)
    kg1 = generator_key(km, g1, profile)
    assert kg1 != generator_key(km, g2, profile)
    assert kg1 != generator_key(master_key_from_seed(SEED[::-1], profile), g1, profile)
    assert auth_key(kg1, "1234", profile) != auth_key(kg1, "1235", profile)
    ks = session_key(kg1, "1234", RE, RG, profile)
    assert ks != session_key(kg1, "1234", RG, RE, profile)
    assert ks != auth_key(kg1, "1234", profile)[:len(ks)]


def test_two_servers_with_one_seed_derive_the_same_keys():
    for profile in Profile:
        g = make_generator(2, "2001", 99)
        assert generator_key(master_key_from_seed(SEED, profile), g, profile) == \
            generator_key(master_key_from_seed(bytes(SEED), profile), g, profile)


@pytest.mark.parametrize("pin", ["123", "12345678901234567", "12a4", "１２３４", "", " 1234"])
def test_bad_pins_are_refused(pin):
    with pytest.raises(ValueError):
        encode_pin(pin)


def test_bad_lengths_are_refused():
    km = master_key_from_seed(SEED, Profile.SEED)
    with pytest.raises(ValueError):
        master_key_from_seed(bytes(15), Profile.SEED)
    with pytest.raises(ValueError):
        generator_key(km, bytes(15), Profile.SEED)
    with pytest.raises(ValueError):
        generator_key(km, bytes(16), Profile.DEFAULT)  # a 20-byte K_m is not the default's
    kg = generator_key(km, bytes(16), Profile.SEED)
    with pytest.raises(ValueError):
        session_key(kg, "1234", bytes(15), RG, Profile.SEED)


def test_icv_mismatch_is_a_modified_error():
    ka = bytes(16)
    icv = compute_icv(ka, b"GRQ", Profile.SEED)
    verify_icv(ka, b"GRQ", icv, Profile.SEED)
    with pytest.raises(IcvMismatch) as err:
        verify_icv(ka, b"GRQ!", icv, Profile.SEED)
    assert err.value.code is ErrorCode.KRB_AP_ERR_MODIFIED


def test_generator_layout():
    g = make_generator(0x1234, "2001", 0x0102030405060708)
    assert g[:2] == b"\x12\x34" and g[2:8] == extension_tag("2001")
    assert g[8:] == bytes(range(1, 9))
    parsed = parse_generator(g)
    assert parsed.issued_for("2001") and not parsed.issued_for("2002")
    for bad in (bytes(15), bytes(16)):  # wrong length; server id 0
        with pytest.raises(ValueError):
            parse_generator(bad)
    for args in ((0, "1", 0), (65536, "1", 0), (1, "1", COUNTER_LIMIT), (1, "12a", 0)):
        with pytest.raises(ValueError):
            make_generator(*args)


@pytest.mark.parametrize("ext", ["", "1" * 33, "12 3", "+1", "１"])
def test_bad_extensions_are_refused(ext):
    with pytest.raises(ValueError):
        check_extension(ext)


def test_counter_start_is_random_and_below_the_limit():
    assert random_counter_start(lambda n: b"\xff" * n) < START_LIMIT
    assert random_counter_start(lambda n: bytes(n)) == 0


def test_counter_blocks_hand_out_each_value_once():
    blocks = CounterBlocks()
    assert blocks.take() is None
    blocks.add(100, 3)
    assert [blocks.take() for _ in range(4)] == [100, 101, 102, None]
    blocks.add(200, 5)
    assert blocks.take() == 200 and blocks.remaining == 4
    blocks.drop()
    assert blocks.take() is None
    with pytest.raises(ValueError):
        blocks.add(COUNTER_LIMIT - 1, 2)


KEY_FILE = KeyFile(Profile.DEFAULT, "2001", bytes(range(16)), bytes(32), b"\x01\x02\x03")


def test_key_file_round_trip_and_repr_hides_kg():
    data = encode_key_file(KEY_FILE)
    assert data.count(b"\n") == 6 and data.startswith(b"KKG_FORMAT=1\nPROFILE=default\n")
    assert decode_key_file(data) == KEY_FILE
    assert "generator_key" not in repr(KEY_FILE) and bytes(32).hex() not in repr(KEY_FILE)


@pytest.mark.parametrize("mutate", [
    lambda d: d[:-1],                                  # no final LF
    lambda d: d + b"X=1\n",                            # an extra line
    lambda d: d.replace(b"KKG_FORMAT=1", b"KKG_FORMAT=2"),
    lambda d: d.replace(b"PROFILE=default", b"PROFILE=other"),
    lambda d: d.replace(b"CVM=010203", b"CVM=01020"),
    lambda d: d.replace(b"CVM=010203", b"CVM=01020G"),
    lambda d: d.replace(b"G=000102", b"G=00010A"),     # upper case
    lambda d: d.replace(b"PROFILE=default", b"PROFILE=seed"),  # K_g too long for seed
    lambda d: b"\n".join(reversed(d[:-1].split(b"\n"))) + b"\n",
    lambda d: d.replace(b"EXT=2001", b"EXT=20 1"),
    lambda d: d.replace(b"\n", b"\r\n"),
], ids=["no-final-lf", "extra-line", "format-2", "unknown-profile", "short-cvm", "non-hex",
        "upper-case", "length-of-other-profile", "reordered", "bad-extension", "crlf"])
def test_key_file_decoder_is_strict(mutate):
    with pytest.raises(MalformedMessage):
        decode_key_file(mutate(encode_key_file(KEY_FILE)))


@given(st.binary(max_size=600))
def test_key_file_decoder_gives_a_key_file_or_malformed(data):
    try:
        decode_key_file(data)
    except MalformedMessage:
        pass
