"""`telekey provisioning ...` subcommands. The service itself is built under issue #4."""

import typer

app = typer.Typer(help="Provisioning CA, customer and billing records, device lifecycle. (Not built yet: issue #4.)", no_args_is_help=True)


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("provisioning: not built yet (issue #4); common/ provides its codecs and crypto.")
