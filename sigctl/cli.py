"""`telekey sigctl run`: the signaling controller."""

from pathlib import Path
from typing import Annotated

import typer

from runtime.settings_file import load_settings
from sigctl.settings import SigctlSettings

HELP = "Signaling controller: AP-REQ/AP-REP key management, ESP-protected signaling."
app = typer.Typer(help=HELP, no_args_is_help=True)


@app.callback()
def main() -> None:
    """The signaling controller."""


@app.command()
def run(config: Annotated[Path, typer.Option(exists=True, help="TOML settings file.")]) -> None:
    """Serve key management (UDP, PacketCable framing) and ESP until SIGTERM."""
    from common.log import configure
    from runtime.process import run as run_loop
    from sigctl.server import serve, start_km_workers

    settings = load_settings(SigctlSettings, config)
    configure(json=settings.log_json)
    run_loop(serve(settings, start_km_workers(settings) if settings.km_workers else None))


@app.command()
def status() -> None:
    """Say what this service provides."""
    typer.echo("sigctl: key management on UDP (PacketCable framing), ESP in UDP, echo on "
               "inner port 7; run with `telekey sigctl run --config sigctl.toml`.")
