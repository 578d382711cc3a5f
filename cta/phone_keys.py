"""An enterprise phone's directory and the key information it keeps across restarts (seed
002: "The packet switched device stores K_g, g and CV_m in non-volatile memory").

    <dir>/phone.toml        token label
    <dir>/softhsm2.conf, tokens/, pin    its own SoftHSM2 token and the token's user PIN
    <dir>/key.json          the key file's values, K_g wrapped (mode 0600)

K_g is never stored in plaintext: `key.json` holds it RFC 5649-wrapped (common/crypto/
master_key.py) under KEK = HMAC-SHA256(S, KEK_LABEL), where S is a 256-bit secret generated
inside the token (`telekey-phone-kek`: SENSITIVE, not EXTRACTABLE, SIGN only), so the file
is useless without the token. The extension's PIN is not kept: it comes from `--pin-file`.
"""

import base64
import binascii
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from common.crypto.master_key import KEK_LABEL, unwrap_key, wrap_key
from common.enterprise.key_file import KeyFile
from common.enterprise.keys import SIZES, Profile
from common.enterprise.registration import PhoneKey
from common.errors import MasterKeyError
from cta.device import init_token
from cta.provider import TokenProvider
from runtime.key_files import write_secret_file

KEK_OBJECT = "telekey-phone-kek"
FORMAT = "telekey-phone-key"


class StoredKeyError(Exception):
    """`key.json` cannot be used (damaged, of another extension, or the token's secret does
    not unwrap it): the phone fetches a new key file."""


@dataclass(frozen=True)
class PhoneDirectory:
    directory: Path
    token_label: str

    @classmethod
    def open_or_init(cls, directory: Path) -> "PhoneDirectory":
        """The phone's directory, its token made on first use."""
        config = directory / "phone.toml"
        if config.exists():
            return cls(directory, tomllib.loads(config.read_text())["token_label"])
        directory.mkdir(parents=True, exist_ok=True)
        label = "phone-" + directory.resolve().name[-24:]
        init_token(directory, label)
        config.write_text(f'token_label = "{label}"\n')
        return cls(directory, label)

    def open_token(self) -> TokenProvider:
        import os

        os.environ["SOFTHSM2_CONF"] = str(self.directory / "softhsm2.conf")
        return TokenProvider(self.token_label, self.directory / "pin")

    @property
    def key_path(self) -> Path:
        return self.directory / "key.json"


class PhoneKeyStore:
    """`key.json` through the token: `load` and `save` are blocking (token calls); the
    daemon runs them in an executor."""

    def __init__(self, directory: PhoneDirectory, provider: TokenProvider) -> None:
        self.directory = directory
        self.provider = provider

    def _kek(self) -> bytes:
        return self.provider.secret_hmac(KEK_OBJECT, KEK_LABEL)

    def save(self, key_file: KeyFile) -> PhoneKey:
        record = {"format": FORMAT, "version": 1, "profile": key_file.profile.value,
                  "ext": key_file.ext, "g": key_file.generator.hex(),
                  "cvm": key_file.check_value.hex(),
                  "kg": base64.b64encode(wrap_key(self._kek(), key_file.generator_key)).decode()}
        write_secret_file(self.directory.key_path, json.dumps(record, indent=1).encode())
        return PhoneKey(key_file.profile, key_file.generator, key_file.generator_key,
                        key_file.check_value)

    def load(self, ext: str) -> PhoneKey | None:
        """The stored key for `ext`; None when there is none (or it is another extension's)."""
        path = self.directory.key_path
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            if record.get("format") != FORMAT or record.get("ext") != ext:
                return None
            profile = Profile(record["profile"])
            generator_key = unwrap_key(self._kek(), base64.b64decode(record["kg"]))
            key = PhoneKey(profile, bytes.fromhex(record["g"]), generator_key,
                           bytes.fromhex(record["cvm"]))
        except (ValueError, KeyError, TypeError, binascii.Error, MasterKeyError) as exc:
            raise StoredKeyError(f"{path}: {type(exc).__name__}: {exc}") from exc
        if len(key.generator) != 16 or len(key.check_value) != 3 \
                or len(generator_key) != SIZES[profile].generator_key:
            raise StoredKeyError(f"{path}: field lengths")
        return key
