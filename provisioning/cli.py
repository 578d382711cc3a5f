"""`telekey provisioning ...` (also `python -m provisioning`): the provisioning service (seed
001's provisioning CA: customers, numbers, billing records, head-end access lists, operator
device certificates), its staff and record commands, the head-end agent, and the certificate
tools (`certreq`, `device-cert`)."""

import contextlib
import getpass
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy
import typer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.crypto.cms import file_signer
from common.log import configure
from common.pki.selfcert import (
    KEY_ECDSA_P256,
    KEY_RSA_2048,
    SelfCertProfile,
    build_request,
    deliver_key,
)
from common.provisioning.records import CustomerKind, ProvisioningError, parse_number_range
from provisioning.settings import HeadendSettings, ProvisioningSettings
from runtime.settings_file import load_settings

HELP = "Provisioning CA, customer and billing records, device lifecycle."
app = typer.Typer(help=HELP, no_args_is_help=True)
staff_app = typer.Typer(help="Staff accounts of the console.", no_args_is_help=True)
numbers_app = typer.Typer(help="The number pools of the head-ends.", no_args_is_help=True)
customer_app = typer.Typer(help="Customers and their lifecycle (what the console does), "
                           "for staff without the console.", no_args_is_help=True)
headend_app = typer.Typer(help="The head-end agent: one head-end's per-MAC access list.",
                          no_args_is_help=True)
app.add_typer(staff_app, name="staff")
app.add_typer(numbers_app, name="numbers")
app.add_typer(customer_app, name="customer")
app.add_typer(headend_app, name="headend")

ConfigOption = Annotated[Path, typer.Option("--config", exists=True, dir_okay=False,
                                            help="The service's TOML settings file.")]
CustomerId = Annotated[int, typer.Option("--id", help="The customer's id.")]


@app.callback()
def main() -> None:
    """The provisioning service and its tools."""


@app.command()
def status() -> None:
    """Say what this package provides."""
    typer.echo("provisioning: service (run), head-end agent (headend run), records (customer, "
               "numbers, staff), certificate tools (certreq, device-cert)")


@app.command()
def run(config: ConfigOption) -> None:
    """Serve the API, the billing API and the staff console, and carry out queued lifecycle
    steps, until SIGTERM."""
    from provisioning.server import serve
    from runtime.process import run as run_loop

    settings = load_settings(ProvisioningSettings, config)
    configure(json=settings.log_json)
    try:
        run_loop(serve(settings))
    except (OSError, ValueError, ssl.SSLError, sqlalchemy.exc.SQLAlchemyError) as exc:
        # A key file others can read, a port taken, a database out of reach: the reason.
        typer.echo(f"provisioning: cannot start: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc


@headend_app.command("run")
def headend_run(config: Annotated[Path, typer.Option(
        "--config", exists=True, dir_okay=False, help="The agent's TOML settings file.")]
        ) -> None:
    """Serve the head-end agent (mutual TLS) until SIGTERM."""
    from provisioning.headend_agent import serve
    from runtime.process import run as run_loop

    settings = load_settings(HeadendSettings, config)
    configure(json=settings.log_json)
    try:
        run_loop(serve(settings))
    except (OSError, ValueError, ssl.SSLError, sqlalchemy.exc.SQLAlchemyError) as exc:
        typer.echo(f"headend: cannot start: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command("lab-init")
def lab_init(directory: Annotated[Path, typer.Option("--dir", help="Where to write.")],
             kdc_db: Annotated[str | None, typer.Option(
                 help="A KDC database URL whose customer records the service keeps.")] = None,
             ) -> None:
    """A throwaway PKI, a device factory certificate and settings for a loopback lab
    (provisioning.toml, headend-A.toml, headend-B.toml)."""
    from provisioning.lab_pki import make_device, make_lab_pki, write_lab_configs

    make_lab_pki(directory)
    device = make_device(directory, "00:1a:2b:3c:4d:5e")
    for path in write_lab_configs(directory, kdc_database_url=kdc_db):
        typer.echo(f"wrote {path}")
    typer.echo(f"wrote the PKI and a device certificate ({device.name}) into {directory}")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A refusal (validation, conflict, unknown record) or a database failure ends the command
    with its reason and exit status 1; the transaction leaves the records as they were."""
    try:
        yield
    except ProvisioningError as exc:
        typer.echo(f"refused: {exc.status}: {exc.detail}", err=True)
        raise typer.Exit(1) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        typer.echo(f"database: {exc.__class__.__name__}: {str(exc).splitlines()[0]}; "
                   "nothing was changed", err=True)
        raise typer.Exit(1) from exc


def _provisioner(config: Path) -> Any:
    from provisioning.server import open_provisioner

    settings = load_settings(ProvisioningSettings, config)
    configure(json=False, level="WARNING")
    with _refusals():
        return open_provisioner(settings)


@app.command()
def migrate(config: ConfigOption) -> None:
    """Create or upgrade the records' schema (Alembic; `run` does it too)."""
    from provisioning.db import current_revision

    provisioner = _provisioner(config)
    typer.echo(f"schema at revision {current_revision(provisioner.engine)}")


@numbers_app.command("add")
def numbers_add(config: ConfigOption,
                headend: Annotated[str, typer.Option(help="The head-end's name.")],
                numbers: Annotated[list[str], typer.Option(
                    "--range", help="FIRST-LAST or one number; repeatable.")]) -> None:
    """Add numbers to a head-end's pool (present ones are left alone)."""
    provisioner = _provisioner(config)
    with _refusals():
        wanted = [n for text in numbers for n in parse_number_range(text)]
        added = provisioner.add_numbers(_actor(), headend, wanted)
    typer.echo(f"head-end {headend}: {added} numbers added, {len(wanted) - added} present")


@numbers_app.command("list")
def numbers_list(config: ConfigOption) -> None:
    """Per head-end: numbers, assigned, in quarantine, free."""
    for pool in _provisioner(config).pool():
        typer.echo(f"{pool['headend']}\t{pool['total']} numbers\t{pool['assigned']} assigned\t"
                   f"{pool['quarantined']} in quarantine\t{pool['free']} free")


@staff_app.command("add")
def staff_add(config: ConfigOption,
              username: Annotated[str, typer.Option(help="The login name.")],
              password_file: Annotated[Path | None, typer.Option(
                  help="Read the password from this file (mode 0600); else it is asked.")]
              = None) -> None:
    """A staff account for the console (the password is stored as an argon2id hash)."""
    from provisioning.staff import StaffStore
    from runtime.key_files import read_secret_text

    provisioner = _provisioner(config)
    if password_file is not None:
        password = read_secret_text(password_file)
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with _refusals():
        StaffStore(provisioner.engine).add(_actor(), username, password)
    typer.echo(f"staff {username} added")


@staff_app.command("disable")
def staff_disable(config: ConfigOption, username: Annotated[str, typer.Option()]) -> None:
    """Disable an account and end its sessions."""
    from provisioning.staff import StaffStore

    if not StaffStore(_provisioner(config).engine).set_disabled(_actor(), username, True):
        typer.echo(f"no staff {username}", err=True)
        raise typer.Exit(1)
    typer.echo(f"staff {username} disabled")


def _describe(record: dict[str, Any]) -> str:
    lines = [f"customer {record['id']} ({record['kind']}) {record['state']}: "
             f"{record['name']}, number {record['number'] or '-'} on head-end "
             f"{record['headend']}, device {record['mac']}, options "
             f"{', '.join(record['options']) or '-'}"]
    change = record["pending_change"]
    if change is not None:
        waiting = [f"{s['kind']} {s['payload']['action']} "
                   f"{s['payload'].get('headend') or s['payload'].get('number')}"
                   + (f" (failed {s['attempts']}x: {s['last_error']})" if s["attempts"] else "")
                   for s in change["steps"] if s["state"] == "pending"]
        waiting += [f"billing record {b['id']}" for b in record["billing"]
                    if b["change_id"] == change["id"] and b["acked_at"] is None]
        lines.append(f"  {change['kind']} under way; waiting for: "
                     f"{'; '.join(waiting) or 'nothing'}")
    for cert in record["certificates"]:
        lines.append(f"  certificate {cert['serial']} for {cert['mac']} ({cert['number']}), "
                     f"until {cert['not_after']:%Y-%m-%d %H:%M}"
                     + (f", revoked ({cert['revocation_reason']})" if cert["revoked_at"]
                        else ""))
    return "\n".join(lines)


@customer_app.command("add")
def customer_add(
    config: ConfigOption,
    name: Annotated[str, typer.Option(help="The customer's name.")],
    address: Annotated[str, typer.Option(help="The service address.")],
    headend: Annotated[str, typer.Option(help="The head-end serving the address.")],
    mac: Annotated[str, typer.Option(help="The device's MAC (it must have reported in).")],
    option: Annotated[list[str] | None, typer.Option(
        help="A service option; repeatable.")] = None,
    number: Annotated[str | None, typer.Option(
        help="A number of the head-end's pool; default: the next free one.")] = None,
    repair: Annotated[bool, typer.Option(
        help="A repair facility's account (short test certificate).")] = False,
) -> None:
    """A new customer for a device (FIG. 7); the running service carries out the steps."""
    provisioner = _provisioner(config)
    with _refusals():
        record = provisioner.new_customer(
            _actor(), name=name, address=address, headend=headend, mac=mac,
            options=option or ["voice"], number=number,
            kind=CustomerKind.REPAIR if repair else CustomerKind.CUSTOMER)
    typer.echo(_describe(record))


@customer_app.command("list")
def customer_list(config: ConfigOption,
                  search: Annotated[str, typer.Option(help="Name, address, number or MAC.")]
                  = "") -> None:
    """Customers (id, state, number, MAC, head-end, account, name), newest first."""
    for c in _provisioner(config).search(search, 1000):
        typer.echo(f"{c['id']}\t{c['state']}\t{c['number'] or '-'}\t{c['mac']}\t"
                   f"{c['headend']}\t{c['kind']}\t{c['name']}")


@customer_app.command("show")
def customer_show(config: ConfigOption, customer_id: CustomerId) -> None:
    """One customer: state, the change under way and what it waits for, certificates."""
    with _refusals():
        typer.echo(_describe(_provisioner(config).customer(customer_id)))


@customer_app.command("change")
def customer_change(config: ConfigOption, customer_id: CustomerId,
                    option: Annotated[list[str], typer.Option(
                        help="The new service options; repeatable.")]) -> None:
    """A service change (FIG. 9): new options, a new certificate."""
    with _refusals():
        typer.echo(_describe(_provisioner(config).change_service(_actor(), customer_id,
                                                                 option)))


@customer_app.command("move")
def customer_move(config: ConfigOption, customer_id: CustomerId,
                  headend: Annotated[str, typer.Option(help="The new head-end.")],
                  number: Annotated[str | None, typer.Option(
                      help="A number of its pool; default: the next free one.")] = None
                  ) -> None:
    """A segment move (FIG. 10): a new head-end and number."""
    with _refusals():
        typer.echo(_describe(_provisioner(config).move(_actor(), customer_id, headend,
                                                       number)))


@customer_app.command("swap")
def customer_swap(config: ConfigOption, customer_id: CustomerId,
                  mac: Annotated[str, typer.Option(help="The new device's MAC.")]) -> None:
    """A device swap (FIG. 11: repair, loaner): same customer and number, another device."""
    with _refusals():
        typer.echo(_describe(_provisioner(config).swap(_actor(), customer_id, mac)))


@customer_app.command("suspend")
def customer_suspend(config: ConfigOption, customer_id: CustomerId) -> None:
    """Suspend: access closed, KDC record suspended; number and certificate kept."""
    with _refusals():
        typer.echo(_describe(_provisioner(config).suspend(_actor(), customer_id)))


@customer_app.command("resume")
def customer_resume(config: ConfigOption, customer_id: CustomerId) -> None:
    """Resume a suspended customer (active again once the head-end and KDC have it)."""
    with _refusals():
        typer.echo(_describe(_provisioner(config).resume(_actor(), customer_id)))


@customer_app.command("terminate")
def customer_terminate(config: ConfigOption, customer_id: CustomerId,
                       reason: Annotated[str, typer.Option(help="Why (recorded).")] = ""
                       ) -> None:
    """De-provisioning (FIG. 8): access closed, number to quarantine, certificate revoked."""
    with _refusals():
        typer.echo(_describe(_provisioner(config).terminate(_actor(), customer_id, reason)))


@app.command()
def audit(config: ConfigOption,
          limit: Annotated[int, typer.Option(help="How many rows, newest first.")] = 50
          ) -> None:
    """The audit log: who changed what, when."""
    for row in _provisioner(config).audit(limit):
        detail = " ".join(f"{k}={v}" for k, v in row["detail"].items())
        typer.echo(f"{row['at']:%Y-%m-%d %H:%M:%S}\t{row['actor']}\t{row['action']}\t"
                   f"{row['entity']} {row['entity_id']}\t{detail}")


@app.command()
def certreq(
    signer_cert: Annotated[Path, typer.Option(help="Provisioning server certificate (PEM).")],
    signer_key: Annotated[Path, typer.Option(help="Its private key (PEM).")],
    device_id: Annotated[str, typer.Option(help="The device's MAC address.")],
    network_id: Annotated[str, typer.Option(help="The operator network (realm).")],
    out: Annotated[Path, typer.Option(help="Where to write the DER request.")],
    days: Annotated[int, typer.Option(help="Validity of the certificate.")] = 365,
    rsa_key: Annotated[bool, typer.Option("--rsa", help="RSA-2048 instead of P-256.")] = False,
    deliver_key_for: Annotated[Path | None, typer.Option(
        "--deliver-key-for", help="Make the key pair here and deliver it, encrypted to this "
        "factory certificate (PEM), instead of the device generating one.")] = None,
) -> None:
    """A signed request for a device to issue itself a certificate (seed 004)."""
    key = load_pem_private_key(signer_key.read_bytes(), None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise typer.BadParameter("the signer key must be RSA or ECDSA")
    now = datetime.now(UTC).replace(microsecond=0)
    delivered = None
    if deliver_key_for is not None:
        factory = x509.load_pem_x509_certificate(deliver_key_for.read_bytes()).public_key()
        if not isinstance(factory, rsa.RSAPublicKey):
            raise typer.BadParameter("the factory certificate must hold an RSA key")
        new_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            rsa.generate_private_key(65537, 2048) if rsa_key
            else ec.generate_private_key(ec.SECP256R1()))
        delivered = deliver_key(new_key, factory)
    profile = SelfCertProfile(1, now, now + timedelta(days=days), network_id, device_id.lower(),
                              KEY_RSA_2048 if rsa_key else KEY_ECDSA_P256, delivered)
    signer = file_signer(key, x509.load_pem_x509_certificate(signer_cert.read_bytes()))
    out.write_bytes(build_request(profile, signer))
    typer.echo(f"request for {device_id} in {network_id} written to {out}")


@app.command("device-cert")
def device_cert(
    factory_cert: Annotated[Path, typer.Option(help="The device's factory certificate (PEM).")],
    number: Annotated[str, typer.Option(help="The phone number assigned to the device.")],
    pki_dir: Annotated[Path, typer.Option(help="The operator CA (ca.pem, ca.key).")],
    out: Annotated[Path, typer.Option(help="Where to write the certificate (PEM).")],
    days: Annotated[int, typer.Option(help="Validity.")] = 365,
) -> None:
    """The operator-issued device certificate of seed 001 (flow 4): the factory key pair's
    public key and MAC, the phone ID (SHA-256 of the number), signed by the operator CA. With
    a matching active customer record (`telekey customer add`) it gets unrestricted tickets."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from common.pki.certs import issue_device_certificate, phone_id

    factory = x509.load_pem_x509_certificate(factory_cert.read_bytes())
    public = factory.public_key()
    if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise typer.BadParameter("the factory key must be RSA or ECDSA")
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    ca_key = load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    if not isinstance(ca_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise typer.BadParameter("the CA key must be RSA or ECDSA")
    mac = str(factory.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
    cert = issue_device_certificate(ca, ca_key, public, mac, datetime.now(UTC),
                                    timedelta(days=days), phone_id_value=phone_id(number),
                                    organization=str(ca.subject.get_attributes_for_oid(
                                        x509.NameOID.ORGANIZATION_NAME)[0].value))
    out.write_bytes(cert.public_bytes(Encoding.PEM))
    typer.echo(f"{out}: operator certificate for {mac}, number {number}, valid {days} days")
