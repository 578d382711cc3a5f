"""`telekey kdc ...` subcommands. The service itself is built under issue #3."""

import typer

app = typer.Typer(help="Kerberos KDC: PKINIT over TCP and UDP, tickets for signaling controllers. (Not built yet: issue #3.)", no_args_is_help=True)


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("kdc: not built yet (issue #3); common/ provides its codecs and crypto.")
