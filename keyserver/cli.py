"""`telekey keyserver ...` subcommands. The service itself is built under issue #6."""

import typer

app = typer.Typer(help="Enterprise key server: seed-derived device keys over HTTPS and mutual TLS. (Not built yet: issue #6.)", no_args_is_help=True)


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("keyserver: not built yet (issue #6); common/ provides its codecs and crypto.")
