"""docs/configuration.md and docs/cli.md are generated from the settings classes and the
`telekey` command (`make docs`): they must be up to date, and name every setting and command."""

import pytest

from kdc.settings import KdcSettings
from sigctl.settings import SigctlSettings
from telekey.reference import cli_markdown, configuration_markdown, documents


@pytest.mark.parametrize("path", sorted(documents()), ids=lambda path: path.name)
def test_generated_reference_is_up_to_date(path):
    assert path.read_text() == documents()[path], f"{path.name} is stale: run `make docs`"


def test_every_setting_is_documented():
    text = configuration_markdown()
    for settings, prefix in ((KdcSettings, "KDC_"), (SigctlSettings, "SIGCTL_")):
        for name, field in settings.model_fields.items():
            assert f"| `{name}` |" in text
            assert f"`{prefix}{name.upper()}`" in text
            assert field.description, f"{settings.__name__}.{name} has no docstring"


def test_every_command_is_documented():
    text = cli_markdown()
    for command in ("telekey kdc run", "telekey sigctl run", "telekey cta run",
                    "telekey principal", "telekey realm", "telekey escrow", "telekey lab"):
        assert f"`{command}" in text
