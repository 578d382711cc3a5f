"""The default profile with K_m in a SoftHSM2 token: the key server imports K_m from the seed
as a sensitive, never-extractable GENERIC_SECRET object and the token computes K_g and CV_m
(CKM_SHA256_HMAC). The token is used only by the key server process (the module is a
singleton per process); this process checks the objects with pkcs11-tool."""

import hashlib
import hmac
import subprocess
import sys

import pytest

from tests.e2e.test_keyserver import (
    SEED,
    SEED2,
    admin,
    key_file,
    kg,
    pki,  # noqa: F401 (the fixture)
    start_keyserver,
)

pytestmark = pytest.mark.e2e
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
# Run in a child process: this test process must not load the module itself.
INSPECT = """
import sys, pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
with pkcs11.lib(sys.argv[1]).get_token(token_label="ks-token").open(rw=True,
                                                                     user_pin="1234") as s:
    key = s.get_key(ObjectClass.SECRET_KEY, label="telekey-keyserver-km-" + sys.argv[2])
    for name in ("SENSITIVE", "EXTRACTABLE", "SIGN", "ENCRYPT", "DERIVE"):
        print(f"{name}={bool(key[getattr(Attribute, name)])}")
    try:
        key[Attribute.VALUE]
    except pkcs11.PKCS11Error as exc:
        print("value:" + type(exc).__name__)
    wrapping = s.generate_key(KeyType.AES, 256, template={Attribute.WRAP: True})
    try:
        wrapping.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    except pkcs11.PKCS11Error as exc:
        print("wrap:" + type(exc).__name__)
"""


def objects(pin: str = "1234") -> str:
    return subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", "ks-token",
                           "--login", "--pin", pin, "-O"], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def test_km_in_softhsm_token(tmp_path, monkeypatch, pki):  # noqa: F811
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))  # the key server inherits it
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "ks-token",
                    "--pin", "1234", "--so-pin", "5678"], check=True, capture_output=True)
    pin = tmp_path / "pin"
    pin.write_text("1234\n")
    pin.chmod(0o600)
    extra = f'km_token_label = "ks-token"\npkcs11_pin_file = "{pin}"\n'
    server = start_keyserver(tmp_path, pki, profile="default", extra=extra)
    try:
        assert server.listening["km_store"] == "token"
        reply = admin(server, pki).request("PUT", "/v1/seed", {"seed": SEED.hex()})
        assert reply["store"] == "token"
        km = hashlib.sha256(SEED).digest()
        issued = key_file(server, pki)
        assert issued.generator_key == hmac.new(km, issued.generator, "sha256").digest()
        assert issued.check_value == hmac.new(
            km, b"telekey-enterprise-CVm", "sha256").digest()[-3:]
        assert bytes.fromhex(kg(server, pki, issued.generator)["kg"]) == issued.generator_key
        listing = objects()
        assert "telekey-keyserver-km-1" in listing
        block = listing.split("telekey-keyserver-km-1")[1].split("Object;")[0]
        assert "Access:     sensitive\n" in block and "extractable" not in block
        attributes = subprocess.run([sys.executable, "-c", INSPECT, MODULE, "1"], check=True,
                                    capture_output=True, text=True, timeout=30).stdout
        # Imported in plaintext, so PKCS#11 leaves ALWAYS_SENSITIVE and NEVER_EXTRACTABLE
        # false; EXTRACTABLE false means it can never leave the token from now on.
        assert attributes.split() == ["SENSITIVE=True", "EXTRACTABLE=False", "SIGN=True",
                                      "ENCRYPT=False", "DERIVE=False", "value:AttributeSensitive",
                                      "wrap:KeyUnextractable"], attributes

        rotated = admin(server, pki).request("POST", "/v1/rotate", {"seed": SEED2.hex()})
        assert rotated["kmvno"] == 2 and rotated["check_value"] != issued.check_value.hex()
        listing = objects()
        assert "telekey-keyserver-km-2" in listing and "telekey-keyserver-km-1" not in listing
    finally:
        server.stop()
    # A restart finds K_m in the token again (and checks it against the CV_m on record).
    server = start_keyserver(tmp_path, pki, profile="default", extra=extra)
    try:
        assert server.listening["kmvno"] == 2
        assert server.listening["check_value"] == rotated["check_value"]
        again = key_file(server, pki)
        km2 = hashlib.sha256(SEED2).digest()
        assert again.generator_key == hmac.new(km2, again.generator, "sha256").digest()
    finally:
        server.stop()
    db = (tmp_path / "ks.db").read_bytes()
    assert km not in db and km2 not in db
