"""`telekey sigctl ...` subcommands. The service itself is built under issue #5."""

import typer

app = typer.Typer(help="Signaling controller: AP-REQ/AP-REP key management, ESP-protected signaling. (Not built yet: issue #5.)", no_args_is_help=True)


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("sigctl: not built yet (issue #5); common/ provides its codecs and crypto.")
