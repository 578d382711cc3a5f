"""The key file (seed 002, FIG. 3: "kkg.txt") the key server's basic service returns to a
phone: g, K_g and CV_m, in a format a phone's firmware parses with a few lines of C. No I/O.

Six lines of US-ASCII, each `NAME=VALUE` ending in LF, in this order and nothing else:

    KKG_FORMAT=1
    PROFILE=default            (or seed)
    EXT=2001                   (the extension it was issued for)
    G=<32 lower-case hex digits>
    KG=<lower-case hex: 64 digits in the default profile, 32 in the seed profile>
    CVM=<6 lower-case hex digits>

It is served as `text/plain; charset=us-ascii` with `Cache-Control: no-store`.
"""

import re
from dataclasses import dataclass
from typing import Final

from common.enterprise.generator import check_extension
from common.enterprise.keys import CHECK_VALUE_BYTES, GENERATOR_BYTES, SIZES, Profile
from common.errors import MalformedMessage

FORMAT_VERSION: Final = 1
NAMES: Final = ("KKG_FORMAT", "PROFILE", "EXT", "G", "KG", "CVM")
MAX_BYTES: Final = 512
_HEX = re.compile(r"[0-9a-f]*")


@dataclass(frozen=True, slots=True)
class KeyFile:
    profile: Profile
    ext: str
    generator: bytes
    generator_key: bytes
    check_value: bytes

    def __repr__(self) -> str:  # never show K_g
        return (f"KeyFile(profile={self.profile.value!r}, ext={self.ext!r}, "
                f"generator={self.generator.hex()!r}, check_value={self.check_value.hex()!r})")


def encode_key_file(key_file: KeyFile) -> bytes:
    sizes = SIZES[key_file.profile]
    if (len(key_file.generator) != GENERATOR_BYTES
            or len(key_file.generator_key) != sizes.generator_key
            or len(key_file.check_value) != CHECK_VALUE_BYTES):
        raise ValueError("a key file field has the wrong length")
    values = (str(FORMAT_VERSION), key_file.profile.value, check_extension(key_file.ext),
              key_file.generator.hex(), key_file.generator_key.hex(), key_file.check_value.hex())
    return "".join(f"{name}={value}\n" for name, value in zip(NAMES, values, strict=True)
                   ).encode("ascii")


def _hex(name: str, value: str, length: int) -> bytes:
    if len(value) != 2 * length or not _HEX.fullmatch(value):
        raise MalformedMessage("BAD_KEY_FILE", f"{name}: {2 * length} lower-case hex digits")
    return bytes.fromhex(value)


def decode_key_file(data: bytes) -> KeyFile:
    """The key file in `data`; MalformedMessage for anything that is not exactly the format."""
    if len(data) > MAX_BYTES:
        raise MalformedMessage("BAD_KEY_FILE", "too long")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedMessage("BAD_KEY_FILE", "not ASCII") from exc
    if not text.endswith("\n"):
        raise MalformedMessage("BAD_KEY_FILE", "the last line has no LF")
    lines = text[:-1].split("\n")
    if len(lines) != len(NAMES):
        raise MalformedMessage("BAD_KEY_FILE", f"{len(lines)} lines, not {len(NAMES)}")
    values = []
    for name, line in zip(NAMES, lines, strict=True):
        found, sep, value = line.partition("=")
        if found != name or not sep:
            raise MalformedMessage("BAD_KEY_FILE", f"expected {name}=")
        values.append(value)
    if values[0] != str(FORMAT_VERSION):
        raise MalformedMessage("BAD_KEY_FILE", f"format {values[0]!r}")
    try:
        profile = Profile(values[1])
        ext = check_extension(values[2])
    except ValueError as exc:
        raise MalformedMessage("BAD_KEY_FILE", str(exc)) from exc
    return KeyFile(profile, ext, _hex("G", values[3], GENERATOR_BYTES),
                   _hex("KG", values[4], SIZES[profile].generator_key),
                   _hex("CVM", values[5], CHECK_VALUE_BYTES))
