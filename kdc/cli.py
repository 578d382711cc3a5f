"""`telekey kdc ...` subcommands. The service itself is built under issue #3."""

import typer

HELP = (
    "Kerberos KDC: PKINIT over TCP and UDP, tickets for signaling controllers."
    " (Not built yet: issue #3.)"
)
app = typer.Typer(help=HELP, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Keep `status` a named subcommand (typer collapses single-command apps)."""


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("kdc: not built yet (issue #3); common/ provides its codecs and crypto.")
