"""`telekey kdc run`, `telekey realm init` and `telekey principal add|list|del|ktadd`."""

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    load_pem_private_key,
)

from common.codes import NameType
from common.crypto import Key
from common.crypto.cms import Signer, file_signer
from common.kerberos.as_exchange import AsPolicy
from common.kerberos.keytab import KeytabEntry, decode_keytab, encode_keytab
from common.log import configure
from common.pki.certs import build_ca, issue_client_certificate, issue_kdc_certificate
from kdc.db import Database
from kdc.settings import KdcSettings
from runtime.key_files import write_private_key
from runtime.settings_file import load_settings

HELP = "Kerberos KDC: PKINIT over TCP and UDP, tickets for signaling controllers."
app = typer.Typer(help=HELP, no_args_is_help=True)
realm_app = typer.Typer(help="Create a realm's KDC database.", no_args_is_help=True)
principal_app = typer.Typer(help="Manage principals in the KDC database.", no_args_is_help=True)
cert_app = typer.Typer(help="Issue certificates from a realm's CA.", no_args_is_help=True)
customer_app = typer.Typer(help="Customer records: phone number -> phone ID, MAC, status.",
                           no_args_is_help=True)

DEFAULT_ENCTYPES = (20, 18, 19, 17)
DbOption = Annotated[str, typer.Option("--db", help="SQLAlchemy URL of the KDC database.")]


def load_certificates(paths: list[Path]) -> tuple[x509.Certificate, ...]:
    return tuple(cert for path in paths for cert in x509.load_pem_x509_certificates(
        path.read_bytes()))


def load_crl(path: Path) -> x509.CertificateRevocationList:
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def build_signer(settings: KdcSettings) -> Signer:
    """The KDC's PKINIT signer: a PKCS#11 token key when pkcs11_token_label is set, else the
    PEM key file."""
    cert = x509.load_pem_x509_certificate(settings.kdc_cert_file.read_bytes())
    chain = load_certificates(settings.kdc_chain_files)
    if settings.pkcs11_token_label:
        from kdc.token import token_signer

        if settings.pkcs11_pin_file is None:
            raise ValueError("pkcs11_pin_file is required with pkcs11_token_label")
        return token_signer(settings.pkcs11_module, settings.pkcs11_token_label,
                            settings.pkcs11_pin_file, settings.pkcs11_key_label, cert, chain)
    if settings.kdc_key_file is None:
        raise ValueError("set kdc_key_file or pkcs11_token_label")
    key = load_pem_private_key(settings.kdc_key_file.read_bytes(), None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("the KDC key must be RSA or ECDSA")
    return file_signer(key, cert, chain)


def build_policy(settings: KdcSettings) -> AsPolicy:
    signer = build_signer(settings)
    return AsPolicy(realm=settings.realm,
                    anchors=load_certificates(settings.pkinit_anchor_files),
                    manufacturer_anchors=load_certificates(settings.manufacturer_anchor_files),
                    crls=tuple(load_crl(path) for path in settings.crl_files),
                    unprovisioned_numbers=tuple(settings.unprovisioned_numbers),
                    kdc_signer=signer, max_skew=timedelta(seconds=settings.max_skew_s),
                    min_dh_bits=settings.min_dh_bits,
                    default_lifetime=timedelta(seconds=settings.default_lifetime_s),
                    controller_lifetime=timedelta(seconds=settings.controller_lifetime_s),
                    dh_key_reuse=timedelta(seconds=settings.dh_key_reuse_s),
                    require_freshness=settings.require_freshness)


@app.callback()
def main() -> None:
    """The KDC."""


@app.command()
def run(config: Annotated[Path, typer.Option(exists=True, help="TOML settings file.")]) -> None:
    """Serve AS (PKINIT) requests on TCP and UDP until SIGTERM."""
    from kdc.server import Kdc, run_workers, serve
    from runtime.process import run as run_loop

    settings = load_settings(KdcSettings, config)
    configure(json=settings.log_json)
    Database(settings.database_url).migrate()

    def make_kdc() -> Kdc:
        # Built per process: a PKCS#11 session and a database engine must not cross a fork.
        return Kdc(settings, build_policy(settings), Database(settings.database_url))

    if settings.workers > 1:
        x509.load_pem_x509_certificate(settings.kdc_cert_file.read_bytes())  # fail early
        run_workers(settings, make_kdc, run_loop)
    else:
        run_loop(serve(make_kdc()))


@realm_app.command("init")
def realm_init(
    realm: Annotated[str, typer.Option(help="Realm name, e.g. EXAMPLE.TEST.")],
    db: DbOption = "sqlite:///kdc.db",
    pki_dir: Annotated[Path | None, typer.Option(
        help="Also create the realm CA and the KDC certificate here, and kdc.toml.")] = None,
    kdc_host: Annotated[str, typer.Option(help="The KDC certificate's CN.")] = "kdc",
    port: Annotated[int, typer.Option(help="listen_port written to kdc.toml.")] = 88,
) -> None:
    """Create the database schema and krbtgt/REALM with random keys (and, with --pki-dir, a
    CA, a KDC certificate with id-pkinit-san krbtgt/REALM@REALM and a ready kdc.toml)."""
    database = Database(db)
    version = database.migrate()
    name = f"krbtgt/{realm}"
    if database.get_principal(name) is None:
        database.add_principal(name, [(1, Key.random(e)) for e in DEFAULT_ENCTYPES])
    typer.echo(f"realm {realm}: schema v{version}, {name} ready in {db}")
    if pki_dir is None:
        return
    now = datetime.now(UTC)
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_key = rsa.generate_private_key(65537, 3072)
    ca = build_ca(ca_key, f"{realm} CA", realm, now)
    kdc_key = rsa.generate_private_key(65537, 2048)
    kdc_cert = issue_kdc_certificate(ca, ca_key, kdc_key.public_key(), realm, kdc_host, now)
    write_private_key(pki_dir / "ca.key", ca_key)
    write_private_key(pki_dir / "kdc.key", kdc_key)
    (pki_dir / "ca.pem").write_bytes(ca.public_bytes(Encoding.PEM))
    (pki_dir / "kdc.pem").write_bytes(kdc_cert.public_bytes(Encoding.PEM))
    (pki_dir / "kdc.toml").write_text(
        f'[kdc]\nrealm = "{realm}"\ndatabase_url = "{db}"\nlisten_port = {port}\n'
        f'kdc_cert_file = "{pki_dir.resolve() / "kdc.pem"}"\n'
        f'kdc_key_file = "{pki_dir.resolve() / "kdc.key"}"\n'
        f'pkinit_anchor_files = ["{pki_dir.resolve() / "ca.pem"}"]\n')
    typer.echo(f"CA, KDC certificate and kdc.toml written to {pki_dir}")


@cert_app.command("client")
def cert_client(
    principal: Annotated[str, typer.Option(help="Client principal without realm.")],
    realm: Annotated[str, typer.Option()],
    pki_dir: Annotated[Path, typer.Option(help="Where realm init put ca.pem and ca.key.")],
    out_dir: Annotated[Path, typer.Option(help="Write <name>.pem and <name>.key here.")],
    days: Annotated[int, typer.Option(help="Validity.")] = 365,
) -> None:
    """Issue a PKINIT client certificate (id-pkinit-san principal@REALM, EKU KPClientAuth)."""
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    ca_key = load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    if not isinstance(ca_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise typer.BadParameter("the CA key must be RSA or ECDSA")
    key = rsa.generate_private_key(65537, 2048)
    cert = issue_client_certificate(ca, ca_key, key.public_key(), realm, principal,
                                    datetime.now(UTC), timedelta(days=days))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = principal.replace("/", "_")
    write_private_key(out_dir / f"{stem}.key", key)
    (out_dir / f"{stem}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    typer.echo(f"{out_dir / stem}.pem: {principal}@{realm}, valid {days} days")


@principal_app.command("add")
def principal_add(
    name: str,
    db: DbOption = "sqlite:///kdc.db",
    random_key: Annotated[bool, typer.Option(
        help="Give it random keys (services); devices that use PKINIT need none.")] = False,
    max_life_hours: Annotated[float | None, typer.Option(help="Ticket lifetime cap.")] = None,
) -> None:
    """Add a principal (name without realm)."""
    database = Database(db)
    database.migrate()
    keys = [(1, Key.random(e)) for e in DEFAULT_ENCTYPES] if random_key else []
    life = timedelta(hours=max_life_hours) if max_life_hours else None
    database.add_principal(name, keys, life)
    typer.echo(f"added {name} ({len(keys)} keys)")


@principal_app.command("list")
def principal_list(db: DbOption = "sqlite:///kdc.db") -> None:
    for name in Database(db).list_principals():
        typer.echo(name)


@principal_app.command("del")
def principal_del(name: str, db: DbOption = "sqlite:///kdc.db") -> None:
    if not Database(db).delete_principal(name):
        typer.echo(f"no principal {name}", err=True)
        raise typer.Exit(1)
    typer.echo(f"deleted {name}")


@principal_app.command("ktadd")
def principal_ktadd(name: str, keytab: Annotated[Path, typer.Option()],
                    realm: Annotated[str, typer.Option()],
                    db: DbOption = "sqlite:///kdc.db") -> None:
    """Append the principal's keys to an MIT keytab (for a signaling controller)."""
    entry = Database(db).get_principal(name)
    if entry is None or not entry.keys:
        typer.echo(f"no keys for {name}", err=True)
        raise typer.Exit(1)
    existing = decode_keytab(keytab.read_bytes()) if keytab.exists() else []
    components = tuple(name.split("/"))
    name_type = NameType.NT_SRV_INST if len(components) > 1 else NameType.NT_PRINCIPAL
    new = [KeytabEntry(realm, components, int(name_type), int(time.time()), k.kvno,
                       k.key.enctype, k.key.data) for k in entry.keys]
    keytab.write_bytes(encode_keytab(existing + new))
    keytab.chmod(0o600)
    typer.echo(f"wrote {len(new)} keys of {name}@{realm} to {keytab}")


@customer_app.command("add")
def customer_add(number: Annotated[str, typer.Option(help="Phone number.")],
                 mac: Annotated[str, typer.Option(help="The device's MAC address.")],
                 db: DbOption = "sqlite:///kdc.db") -> None:
    """Add an active customer; prints the phone ID an operator certificate must carry."""
    database = Database(db)
    database.migrate()
    customer = database.add_customer(number, mac)
    typer.echo(f"customer {customer.phone_number} mac {customer.mac} "
               f"phone-id {customer.phone_id.hex()}")


@customer_app.command("list")
def customer_list(db: DbOption = "sqlite:///kdc.db") -> None:
    for c in Database(db).list_customers():
        typer.echo(f"{c.phone_number}\t{c.mac}\t{'active' if c.active else 'suspended'}\t"
                   f"{c.phone_id.hex()}")


def _set_active(number: str, db: str, active: bool) -> None:
    if not Database(db).set_customer_active(number, active):
        typer.echo(f"no customer {number}", err=True)
        raise typer.Exit(1)
    typer.echo(f"customer {number} {'active' if active else 'suspended'}")


@customer_app.command("suspend")
def customer_suspend(number: Annotated[str, typer.Option()],
                     db: DbOption = "sqlite:///kdc.db") -> None:
    """Suspend: the device's operator certificate stops working (KDC error 18)."""
    _set_active(number, db, False)


@customer_app.command("activate")
def customer_activate(number: Annotated[str, typer.Option()],
                      db: DbOption = "sqlite:///kdc.db") -> None:
    _set_active(number, db, True)


if __name__ == "__main__":
    app(prog_name="kdc", args=sys.argv[1:])
