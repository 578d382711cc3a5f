"""`telekey cta ...` subcommands. The service itself is built under issue #4."""

import typer

app = typer.Typer(help="Device agent: keys in a PKCS#11 token, PKINIT and AP clients, SRTP calls. (Not built yet: issue #4.)", no_args_is_help=True)


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("cta: not built yet (issue #4); common/ provides its codecs and crypto.")
