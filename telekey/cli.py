"""The `telekey` command. Each package contributes its own subcommand group."""

from pathlib import Path
from typing import Annotated

import typer

from common.errors import KerberosError
from common.kerberos.keytab import decode_keytab

app = typer.Typer(help="telekey: key management and secure signaling for IP telephony.",
                  no_args_is_help=True)


def _add_groups() -> None:
    from cta.cli import app as cta
    from cta.phone_cli import app as phone
    from kdc.cli import app as kdc
    from kdc.cli import cert_app, customer_app, principal_app, realm_app
    from keyserver.cli import app as keyserver
    from provisioning.cli import app as provisioning
    from sigctl.cli import app as sigctl
    from sigctl.escrow_cli import app as escrow

    for name, group in (("kdc", kdc), ("sigctl", sigctl), ("cta", cta),
                        ("keyserver", keyserver), ("provisioning", provisioning),
                        ("phone", phone)):
        app.add_typer(group, name=name)
    app.add_typer(realm_app, name="realm")
    app.add_typer(principal_app, name="principal")
    app.add_typer(cert_app, name="cert")
    app.add_typer(customer_app, name="customer")
    app.add_typer(escrow, name="escrow")
    from cta.cli import ca_app

    cert_app.registered_commands.extend(ca_app.registered_commands)


_add_groups()


@app.command()
def lab(workdir: Annotated[Path | None, typer.Option(help="Keep the lab's files here.")] = None
        ) -> None:
    """Run the system end to end on loopback and print what happened."""
    from telekey.lab import run_lab

    run_lab(workdir)


@app.command()
def decode(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    keytab: Annotated[Path | None, typer.Option(
        "--keytab", "-K", exists=True, help="Decrypt tickets with this keytab's keys.")] = None,
) -> None:
    """Show a Kerberos message (DER), a keytab or a credential cache."""
    from telekey.inspect import describe

    try:
        keys = decode_keytab(keytab.read_bytes()) if keytab else None
        for line in describe(path, keys):
            typer.echo(line)
    except KerberosError as exc:
        typer.echo(f"{path}: {exc.status}: {exc.detail}", err=True)
        raise typer.Exit(1) from exc
