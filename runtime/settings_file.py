"""Load a daemon's settings file for its `run` command: an invalid file stops the daemon at
start with a message naming the field (exit status 2)."""

from pathlib import Path
from typing import Protocol, TypeVar

import typer
from pydantic import ValidationError

S = TypeVar("S", covariant=True)


class FromToml(Protocol[S]):
    def from_toml(self, path: Path) -> S: ...


def load_settings(kind: FromToml[S], path: Path) -> S:
    try:
        return kind.from_toml(path)
    except (ValidationError, ValueError) as exc:
        typer.echo(f"invalid settings in {path}:\n{exc}", err=True)
        raise typer.Exit(2) from exc
