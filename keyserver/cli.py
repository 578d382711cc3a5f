"""`telekey keyserver ...` subcommands. The enterprise key server (seed 002) is not built yet."""

import typer

HELP = (
    "Enterprise key server: seed-derived device keys over HTTPS and mutual TLS."
    " (Not built yet.)"
)
app = typer.Typer(help=HELP, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Keep `status` a named subcommand (typer collapses single-command apps)."""


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("keyserver: not built yet; common/ provides its codecs and crypto.")
