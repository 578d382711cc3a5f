"""`telekey escrow`: the lawful-intercept escrow authority's side (seed 001, CALEA)."""

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Lawful-intercept key escrow: make the authority's key pair, open a "
                  "call's record.", no_args_is_help=True)


@app.command()
def keygen(directory: Annotated[Path, typer.Option("--dir", help="Where to write the pair.")]
           ) -> None:
    """An X25519 key pair: escrow.key (PEM, 0600; the authority keeps it) and escrow.pub
    (give it to the controllers as escrow_public_key_file)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from runtime.key_files import write_private_key

    directory.mkdir(parents=True, exist_ok=True)
    private = X25519PrivateKey.generate()
    write_private_key(directory / "escrow.key", private)
    (directory / "escrow.pub").write_bytes(private.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    typer.echo(f"wrote {directory / 'escrow.key'} (keep it) and {directory / 'escrow.pub'}")


@app.command("open")
def open_record(
    call_id: Annotated[str, typer.Option(help="The call's Call-ID.")],
    key: Annotated[Path, typer.Option(exists=True, help="The escrow private key (PEM).")],
    db: Annotated[str, typer.Option(help="The controller's escrow_database_url.")],
    who: Annotated[str | None, typer.Option(help="Who opens it (recorded).")] = None,
) -> None:
    """Print a call's media keys (JSON). Every attempt is recorded in the database and
    logged, whether it succeeds or not."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from common.calls.escrow import open_sealed
    from common.errors import KerberosError
    from common.log import configure, get_logger
    from sigctl.escrow_store import EscrowStore

    configure(json=True)
    log = get_logger("escrow")
    opener = who or getpass.getuser()
    store = EscrowStore(db)
    sealed = store.sealed(call_id, opener)
    if sealed is None:
        log.warning("escrow_access", call_id=call_id, who=opener, result="not_found")
        typer.echo(f"no escrow record for {call_id}", err=True)
        raise typer.Exit(1)
    private = load_pem_private_key(key.read_bytes(), None)
    if not isinstance(private, X25519PrivateKey):
        typer.echo(f"{key}: not an X25519 private key", err=True)
        raise typer.Exit(1)
    try:
        plain = open_sealed(sealed, private, call_id)
    except KerberosError as exc:
        store.log_result(call_id, opener, "cannot_open")
        log.warning("escrow_access", call_id=call_id, who=opener, result=exc.status)
        typer.echo(f"cannot open the record: {exc.status}", err=True)
        raise typer.Exit(1) from exc
    store.log_result(call_id, opener, "opened")
    log.info("escrow_access", call_id=call_id, who=opener, result="opened")
    typer.echo(json.dumps(json.loads(plain), indent=2))
