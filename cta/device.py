"""A device's directory: its private SoftHSM2 configuration and token, PIN file, public copies
of its certificates and device.toml. `open_token` points SOFTHSM2_CONF at the device's own
configuration before the PKCS#11 module is loaded (it reads it once per process)."""

import os
import re
import secrets
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cta.provider import TokenProvider, take_ownership


def init_token(directory: Path, token_label: str) -> None:
    """A new SoftHSM2 token of its own in `directory` (softhsm2.conf, tokens/, and the user
    PIN in `pin`, mode 0600). softhsm2-util takes PINs only as arguments (visible in ps):
    the token is initialised with throwaway PINs, then the real user PIN and a discarded
    random SO PIN are set through PKCS#11. Points SOFTHSM2_CONF at the new configuration."""
    (directory / "tokens").mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\nlibrary.reset_on_fork = false\n")
    pin = directory / "pin"
    pin.touch(mode=0o600, exist_ok=True)
    pin.chmod(0o600)
    pin.write_text(secrets.token_hex(16) + "\n")
    throwaway_so = secrets.token_hex(8)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", token_label,
                    "--pin", secrets.token_hex(8), "--so-pin", throwaway_so],
                   check=True, capture_output=True,
                   env={**os.environ, "SOFTHSM2_CONF": str(conf)})
    os.environ["SOFTHSM2_CONF"] = str(conf)
    take_ownership(token_label, throwaway_so, pin.read_text().strip())


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
