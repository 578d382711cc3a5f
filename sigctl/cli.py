"""`telekey sigctl ...` subcommands. The service itself is built under issue #5."""

import typer

HELP = (
    "Signaling controller: AP-REQ/AP-REP key management, ESP-protected signaling."
    " (Not built yet: issue #5.)"
)
app = typer.Typer(help=HELP, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Keep `status` a named subcommand (typer collapses single-command apps)."""


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("sigctl: not built yet (issue #5); common/ provides its codecs and crypto.")
