"""`telekey cta ...` subcommands. The service itself is built under issue #4."""

import typer

HELP = (
    "Device agent: keys in a PKCS#11 token, PKINIT and AP clients, SRTP calls."
    " (Not built yet: issue #4.)"
)
app = typer.Typer(help=HELP, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Keep `status` a named subcommand (typer collapses single-command apps)."""


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("cta: not built yet (issue #4); common/ provides its codecs and crypto.")
