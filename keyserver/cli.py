"""`telekey keyserver ...` subcommands. The service itself is built under issue #6."""

import typer

HELP = (
    "Enterprise key server: seed-derived device keys over HTTPS and mutual TLS."
    " (Not built yet: issue #6.)"
)
app = typer.Typer(help=HELP, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Keep `status` a named subcommand (typer collapses single-command apps)."""


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("keyserver: not built yet (issue #6); common/ provides its codecs and crypto.")
