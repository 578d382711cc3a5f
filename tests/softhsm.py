"""SoftHSM2 tokens for tests, in a directory of the test's own (../shared/pkcs11-notes.md): the
configuration in SOFTHSM2_CONF, which only child processes load (the module is a singleton in a
process, so this process never loads it), tokens made with softhsm2-util, and the KDC's RSA
signing key generated inside a token by a child process."""

import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc3447

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
# Run in a child process: the test process must not load the module itself.
GENERATE = """
import sys, pkcs11
from pkcs11 import KeyType, Attribute
from pkcs11.util.rsa import encode_rsa_public_key
with pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2]).open(rw=True,
                                                                    user_pin=sys.argv[3]) as s:
    public, _ = s.generate_keypair(KeyType.RSA, 2048, label=sys.argv[4], store=True,
        private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
    sys.stdout.buffer.write(encode_rsa_public_key(public))
"""


def softhsm_directory(directory: Path, monkeypatch: object) -> Path:
    """A token directory in `directory`, with SOFTHSM2_CONF set for the children; returns it."""
    tokens = directory / "tokens"
    tokens.mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))  # type: ignore[attr-defined]
    return tokens


def init_token(label: str, pin: str = "1234", so_pin: str = "5678") -> None:
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
                    "--so-pin", so_pin], check=True, capture_output=True)


def pin_file(path: Path, pin: str = "1234") -> Path:
    path.write_text(pin + "\n")
    path.chmod(0o600)
    return path


def generate_rsa_key(token_label: str, key_label: str = "kdc", pin: str = "1234"
                     ) -> rsa.RSAPublicKey:
    """An RSA-2048 key pair made inside the token (sensitive, never extractable): its public
    key."""
    der = subprocess.run([sys.executable, "-c", GENERATE, MODULE, token_label, pin, key_label],
                         check=True, capture_output=True).stdout
    numbers, _ = decoder.decode(der, asn1Spec=rfc3447.RSAPublicKey())
    return rsa.RSAPublicNumbers(int(numbers["publicExponent"]),
                                int(numbers["modulus"])).public_key()
