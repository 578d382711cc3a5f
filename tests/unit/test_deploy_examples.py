"""The example configuration in deploy/ stays loadable by the settings it documents."""

import re
import tomllib
from pathlib import Path

import typer

from cta.phone_cli import app as phone_app
from keyserver.settings import KeyserverSettings
from sigctl.settings import SigctlSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_sigctl_example_is_valid():
    data = tomllib.loads((DEPLOY / "examples" / "sigctl-sc1.toml").read_text())["sigctl"]
    settings = SigctlSettings(**data)
    assert settings.routes == {"1556": "sigctl/sc2.example.net"}
    assert set(settings.peers) == set(settings.routes.values())
    assert "611" in settings.lines
    assert settings.keyserver_url and settings.ras_alternates == ["sc2.example.net:1719"]


def test_keyserver_example_is_valid():
    settings = KeyserverSettings.from_toml(DEPLOY / "examples" / "keyserver-ks1.toml")
    assert settings.server_id == 1 and settings.km_token_label


def test_phone_unit_names_options_of_phone_run_and_variables_of_its_example():
    unit = (DEPLOY / "systemd" / "telekey-phone@.service").read_text()
    command = re.search(r"ExecStart=(.*?)\n(?!    )", unit, re.DOTALL).group(1)
    run = typer.main.get_command(phone_app).commands["run"]
    known = {option for param in run.params for option in param.opts}
    assert set(re.findall(r"--[a-z-]+", command)) <= known
    example = (DEPLOY / "examples" / "phone-1500.env").read_text()
    defined = set(re.findall(r"^([A-Z_]+)=", example, re.MULTILINE))
    assert set(re.findall(r"\$\{([A-Z_]+)\}", command)) == defined


def test_units_run_the_telekey_command():
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text()
        assert "ExecStart=/opt/telekey/.venv/bin/telekey " in text, unit.name
