"""A device's directory: its private SoftHSM2 configuration and token, PIN file, public copies
of its certificates and device.toml. `open_token` points SOFTHSM2_CONF at the device's own
configuration before the PKCS#11 module is loaded (it reads it once per process)."""

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cta.provider import TokenProvider


@dataclass(frozen=True)
class Device:
    directory: Path
    mac: str
    token_label: str

    @property
    def principal(self) -> str:
        return "cta/" + re.sub(r"[:-]", "", self.mac.lower())

    @classmethod
    def load(cls, directory: Path) -> "Device":
        data = tomllib.loads((directory / "device.toml").read_text())
        return cls(directory, data["mac"], data["token_label"])

    def save(self) -> None:
        (self.directory / "device.toml").write_text(
            f'mac = "{self.mac}"\ntoken_label = "{self.token_label}"\n')

    def softhsm_conf(self) -> Path:
        return self.directory / "softhsm2.conf"

    def open_token(self) -> TokenProvider:
        os.environ["SOFTHSM2_CONF"] = str(self.softhsm_conf())
        return TokenProvider(self.token_label, self.directory / "pin")
