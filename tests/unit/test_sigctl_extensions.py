"""`telekey sigctl extension add|del|list` (sigctl/extensions.py): PINs stored wrapped under the
controller's master key (service `sigctl`), never in plaintext nor hashed, readable back only
through that key; the daemon's cache sees a new extension without a restart."""

import hashlib
import stat

from typer.testing import CliRunner

from sigctl.cli import app
from sigctl.extensions import PinCache, open_extension_store
from sigctl.settings import SigctlSettings

PIN = "48291573"


def _settings(tmp_path) -> tuple[SigctlSettings, str]:
    config = tmp_path / "sigctl.toml"
    config.write_text(f'[sigctl]\nrealm = "LAB.TEST"\nprincipal = "sigctl/sc1.lab.test"\n'
                      f'keytab_file = "{tmp_path / "none.keytab"}"\n'
                      f'extensions_database_url = "sqlite:///{tmp_path / "ext.db"}"\n')
    return SigctlSettings.from_toml(config), str(config)


def test_add_list_del_and_pins_are_wrapped(tmp_path):
    settings, config = _settings(tmp_path)
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    runner = CliRunner()
    result = runner.invoke(app, ["extension", "add", "2001", "--pin-file", str(pin_file),
                                 "--config", config])
    assert result.exit_code == 0, result.output
    assert "2001: added" in result.output
    result = runner.invoke(app, ["extension", "list", "--config", config])
    assert result.output.startswith("2001\tmkvno 1\t") and PIN not in result.output
    stash = tmp_path / "ext.db.stash"
    assert stat.S_IMODE(stash.stat().st_mode) == 0o600
    raw = (tmp_path / "ext.db").read_bytes()
    for form in (PIN.encode(), PIN.encode().hex().encode(), hashlib.sha256(PIN.encode())
                 .hexdigest().encode(), hashlib.sha256(PIN.encode()).digest()):
        assert form not in raw
    store = open_extension_store(settings)
    assert store.pins() == {"2001": PIN}
    cache = PinCache(store, refresh_s=3600)
    assert cache.pin("2002") is None
    pin_file.write_text("1234\n")
    assert runner.invoke(app, ["extension", "add", "2002", "--pin-file", str(pin_file),
                               "--config", config]).exit_code == 0
    cache._miss_reload = -1e9  # the next miss reloads (at most once a second otherwise)
    assert cache.pin("2002") == "1234"
    result = runner.invoke(app, ["extension", "del", "2001", "--config", config])
    assert result.exit_code == 0 and "removed" in result.output
    assert runner.invoke(app, ["extension", "del", "2001", "--config", config]).exit_code == 1
    assert store.pins() == {"2002": "1234"}
    store.close()


def test_refuses_a_readable_pin_file_and_a_bad_pin(tmp_path):
    _, config = _settings(tmp_path)
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN)
    pin_file.chmod(0o644)
    runner = CliRunner()
    assert runner.invoke(app, ["extension", "add", "2001", "--pin-file", str(pin_file),
                               "--config", config]).exit_code != 0
    pin_file.chmod(0o600)
    pin_file.write_text("12a4")
    assert runner.invoke(app, ["extension", "add", "2001", "--pin-file", str(pin_file),
                               "--config", config]).exit_code != 0
