"""The example configuration in deploy/ stays loadable by the settings it documents."""

import tomllib
from pathlib import Path

from sigctl.settings import SigctlSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_sigctl_example_is_valid():
    data = tomllib.loads((DEPLOY / "examples" / "sigctl-sc1.toml").read_text())["sigctl"]
    settings = SigctlSettings(**data)
    assert settings.routes == {"1556": "sigctl/sc2.example.net"}
    assert set(settings.peers) == set(settings.routes.values())
    assert "611" in settings.lines


def test_units_run_the_telekey_command():
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text()
        assert "ExecStart=/opt/telekey/.venv/bin/telekey " in text, unit.name
