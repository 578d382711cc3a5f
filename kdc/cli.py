"""`telekey kdc run`, `telekey realm init|rekey-master|purge-master|export-master|
import-master` and `telekey principal add|list|del|ktadd`."""

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import sqlalchemy.exc
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
from common.errors import MasterKeyError
from common.kerberos.as_exchange import AsPolicy
from common.kerberos.keytab import KeytabEntry, decode_keytab, encode_keytab
from common.log import configure, get_logger
from common.pki.certs import build_ca, issue_client_certificate, issue_kdc_certificate
from kdc.db import Database, default_stash_file
from kdc.settings import KdcSettings
from kdc.token import TokenUnavailable
from runtime.key_files import (
    read_secret_bytes,
    read_secret_text,
    write_private_key,
    write_secret_file,
)
from runtime.master_key_store import MasterKeyring, MasterKeyStore, open_store
from runtime.settings_file import load_settings

HELP = "Kerberos KDC: PKINIT over TCP and UDP, tickets for signaling controllers."
app = typer.Typer(help=HELP, no_args_is_help=True)
realm_app = typer.Typer(help="Create a realm's KDC database; its master key.",
                        no_args_is_help=True)
principal_app = typer.Typer(help="Manage principals in the KDC database.", no_args_is_help=True)
cert_app = typer.Typer(help="Issue certificates from a realm's CA.", no_args_is_help=True)
customer_app = typer.Typer(help="Customer records: phone number -> phone ID, MAC, status.",
                           no_args_is_help=True)

DEFAULT_ENCTYPES = (20, 18, 19, 17)
SERVICE = "kdc"  # the master key's service name (token labels telekey-master-kdc-<mkvno>)
log = get_logger(__name__)
DbOption = Annotated[str, typer.Option("--db", help="SQLAlchemy URL of the KDC database.")]
StashOption = Annotated[Path | None, typer.Option(
    "--stash", help="The master key's stash file (mode 0600); default: next to a SQLite "
    "database, <file>.stash.")]
TokenOption = Annotated[str | None, typer.Option(
    "--token", help="Keep the master key in this PKCS#11 token (label) instead of a stash.")]
PinFileOption = Annotated[Path | None, typer.Option(
    "--pin-file", help="File holding the token's user PIN (mode 0600).")]
ModuleOption = Annotated[Path, typer.Option("--pkcs11-module", help="PKCS#11 module.")]
PassphraseOption = Annotated[Path | None, typer.Option(
    "--passphrase-file", help="File (mode 0600) holding the backup passphrase; asked for "
    "when not given.")]
DEFAULT_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


def master_key_store(db: str, stash: Path | None, token: str | None, pin_file: Path | None,
                     module: Path) -> MasterKeyStore:
    """The store the command-line options name (a stash next to a SQLite database unless
    told otherwise)."""
    try:
        return open_store(SERVICE, stash_file=stash or default_stash_file(db),
                          token_label=token, pkcs11_module=module, pin_file=pin_file)
    except ValueError as exc:
        raise typer.BadParameter(f"{exc}: give --stash, or --token and --pin-file") from exc


def settings_master_key_store(settings: KdcSettings) -> MasterKeyStore:
    return open_store(SERVICE, stash_file=settings.master_key_stash_file
                      or default_stash_file(settings.database_url),
                      token_label=settings.master_key_token_label,
                      pkcs11_module=settings.pkcs11_module, pin_file=settings.pkcs11_pin_file)


@contextmanager
def command_errors() -> Iterator[None]:
    """A master key that cannot be used, or a database that refuses the change (a duplicate,
    a full disk, an unreachable server), ends the command with its reason and exit status 1,
    not a traceback. The database's own transaction leaves it as it was."""
    try:
        yield
    except (MasterKeyError, PermissionError, FileNotFoundError) as exc:
        typer.echo(f"master key: {exc}", err=True)
        raise typer.Exit(1) from exc
    except sqlalchemy.exc.IntegrityError as exc:
        typer.echo(f"database: refused, already there ({_driver_message(exc)})", err=True)
        raise typer.Exit(1) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        typer.echo(f"database: {_driver_message(exc)}; nothing was changed", err=True)
        raise typer.Exit(1) from exc


def _driver_message(exc: sqlalchemy.exc.SQLAlchemyError) -> str:
    """The driver's first line (e.g. "database or disk is full"), never the SQL or its
    parameters, which may hold wrapped keys."""
    inner = getattr(exc, "orig", None) or exc
    return (str(inner).splitlines() or [type(inner).__name__])[0][:200]


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
    key = load_pem_private_key(read_secret_bytes(settings.kdc_key_file), None)
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
    try:
        store = settings_master_key_store(settings)
    except ValueError as exc:
        typer.echo(f"invalid settings in {config}: {exc} (master_key_stash_file or "
                   "master_key_token_label)", err=True)
        raise typer.Exit(2) from exc
    with command_errors():
        keyring = MasterKeyring(store)
        keyring.keys()  # a missing or unreadable master key stops the KDC here
        Database(settings.database_url, keyring).migrate()
        store.close()

    def make_kdc() -> Kdc:
        # Built per process: a PKCS#11 session and a database engine must not cross a fork.
        # The keyring is loaded now, so that no request waits for the stash or the token.
        keyring = MasterKeyring(settings_master_key_store(settings))
        with command_errors():
            keys = keyring.keys()
        log.info("master_key", store=keyring.store.describe(), versions=list(keys.versions),
                 current=keys.current)
        return Kdc(settings, build_policy(settings), Database(settings.database_url, keyring))

    if settings.workers > 1:
        x509.load_pem_x509_certificate(settings.kdc_cert_file.read_bytes())  # fail early
        run_workers(settings, make_kdc, run_loop)
        return
    try:
        kdc = make_kdc()
    except (OSError, ValueError, TokenUnavailable) as exc:
        # A key file readable by others, a missing token or PIN file: the reason, no traceback.
        typer.echo(f"kdc: cannot start: {exc}", err=True)
        raise typer.Exit(1) from exc
    run_loop(serve(kdc))


@realm_app.command("init")
def realm_init(
    realm: Annotated[str, typer.Option(help="Realm name, e.g. EXAMPLE.TEST.")],
    db: DbOption = "sqlite:///kdc.db",
    pki_dir: Annotated[Path | None, typer.Option(
        help="Also create the realm CA and the KDC certificate here, and kdc.toml.")] = None,
    kdc_host: Annotated[str, typer.Option(help="The KDC certificate's CN.")] = "kdc",
    port: Annotated[int, typer.Option(help="listen_port written to kdc.toml.")] = 88,
    stash: StashOption = None,
    token: TokenOption = None,
    pin_file: PinFileOption = None,
    pkcs11_module: ModuleOption = DEFAULT_MODULE,
) -> None:
    """Create the master key (a stash next to a SQLite database, or --stash, or objects in the
    PKCS#11 token --token), the database schema (wrapping any plaintext keys of an older
    database) and krbtgt/REALM with random keys; with --pki-dir also a CA, a KDC certificate
    with id-pkinit-san krbtgt/REALM@REALM and a ready kdc.toml."""
    store = master_key_store(db, stash, token, pin_file, pkcs11_module)
    with command_errors():
        made = not store.versions()
        if made:
            store.add_version()
        database = Database(db, MasterKeyring(store))
        version = database.migrate()
        name = f"krbtgt/{realm}"
        if database.get_principal(name) is None:
            database.add_principal(name, [(1, Key.random(e)) for e in DEFAULT_ENCTYPES])
        store.close()
    typer.echo(f"realm {realm}: schema v{version}, {name} ready in {db}; master key "
               f"{'created' if made else 'found'} in {store.describe()}")
    if pki_dir is None:
        return
    if token:
        master_key_lines = (f'master_key_token_label = "{token}"\n'
                            f'pkcs11_pin_file = "{pin_file.resolve() if pin_file else ""}"\n'
                            f'pkcs11_module = "{pkcs11_module}"\n')
    else:
        stash_file = stash or default_stash_file(db)
        assert stash_file is not None  # master_key_store required one
        master_key_lines = f'master_key_stash_file = "{stash_file.resolve()}"\n'
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
        f'pkinit_anchor_files = ["{pki_dir.resolve() / "ca.pem"}"]\n' + master_key_lines)
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
    stash: StashOption = None,
    token: TokenOption = None,
    pin_file: PinFileOption = None,
    pkcs11_module: ModuleOption = DEFAULT_MODULE,
) -> None:
    """Add a principal (name without realm); its keys are stored wrapped under the master
    key."""
    # A principal without keys (a PKINIT device) needs no master key: a PostgreSQL database
    # with no store named gets none (the keyring loads its store only when a key is wrapped).
    keyring = None
    if random_key or stash or token or default_stash_file(db):
        keyring = MasterKeyring(master_key_store(db, stash, token, pin_file, pkcs11_module))
    with command_errors():
        database = Database(db, keyring)
        database.migrate()
        keys = [(1, Key.random(e)) for e in DEFAULT_ENCTYPES] if random_key else []
        life = timedelta(hours=max_life_hours) if max_life_hours else None
        database.add_principal(name, keys, life)
        if keyring is not None:
            keyring.store.close()
    typer.echo(f"added {name} ({len(keys)} keys)")


@principal_app.command("list")
def principal_list(db: DbOption = "sqlite:///kdc.db") -> None:
    with command_errors():
        names = Database(db).list_principals()
    for name in names:
        typer.echo(name)


@principal_app.command("del")
def principal_del(name: str, db: DbOption = "sqlite:///kdc.db") -> None:
    with command_errors():
        deleted = Database(db).delete_principal(name)
    if not deleted:
        typer.echo(f"no principal {name}", err=True)
        raise typer.Exit(1)
    typer.echo(f"deleted {name}")


@principal_app.command("ktadd")
def principal_ktadd(name: str, keytab: Annotated[Path, typer.Option()],
                    realm: Annotated[str, typer.Option()],
                    db: DbOption = "sqlite:///kdc.db",
                    stash: StashOption = None,
                    token: TokenOption = None,
                    pin_file: PinFileOption = None,
                    pkcs11_module: ModuleOption = DEFAULT_MODULE) -> None:
    """Append the principal's keys to an MIT keytab (for a signaling controller). The keytab
    is rewritten into a new file created with mode 0600 before any key is written."""
    store = master_key_store(db, stash, token, pin_file, pkcs11_module)
    with command_errors():
        entry = Database(db, MasterKeyring(store)).get_principal(name)
        store.close()
    if entry is None or not entry.keys:
        typer.echo(f"no keys for {name}", err=True)
        raise typer.Exit(1)
    existing = decode_keytab(keytab.read_bytes()) if keytab.exists() else []
    components = tuple(name.split("/"))
    name_type = NameType.NT_SRV_INST if len(components) > 1 else NameType.NT_PRINCIPAL
    new = [KeytabEntry(realm, components, int(name_type), int(time.time()), k.kvno,
                       k.key.enctype, k.key.data) for k in entry.keys]
    write_secret_file(keytab, encode_keytab(existing + new))
    typer.echo(f"wrote {len(new)} keys of {name}@{realm} to {keytab}")


# --- the master key: rotation, purge, backup ------------------------------------------------


@realm_app.command("rekey-master")
def realm_rekey_master(
    db: DbOption = "sqlite:///kdc.db",
    batch_size: Annotated[int, typer.Option(help="Keys rewrapped per committed transaction.",
                                            min=1)] = 500,
    rewrap_only: Annotated[bool, typer.Option(
        help="Add no version: finish rewrapping under the current one (after an interrupted "
        "rekey, or keys written meanwhile under an older version).")] = False,
    purge: Annotated[bool, typer.Option(
        help="Then remove the versions no key uses any more (as purge-master).")] = False,
    stash: StashOption = None,
    token: TokenOption = None,
    pin_file: PinFileOption = None,
    pkcs11_module: ModuleOption = DEFAULT_MODULE,
) -> None:
    """Rotate the master key online: add a version, make it current, and rewrap every key
    under it in committed batches. Running KDCs keep serving: they load the new version from
    the stash or token the first time they read a key under it, and old versions stay until
    purge-master."""
    store = master_key_store(db, stash, token, pin_file, pkcs11_module)
    with command_errors():
        Database(db, MasterKeyring(store)).migrate()
        if not rewrap_only:
            store.add_version()
        keyring = MasterKeyring(store)  # loaded after the new version was added
        database = Database(db, keyring)
        count = database.rewrap_keys(batch_size)
        typer.echo(f"master key version {keyring.current} is current in {store.describe()}; "
                   f"{count} keys rewrapped")
        if purge:
            _purge(database, store)
        store.close()


@realm_app.command("purge-master")
def realm_purge_master(
    db: DbOption = "sqlite:///kdc.db",
    stash: StashOption = None,
    token: TokenOption = None,
    pin_file: PinFileOption = None,
    pkcs11_module: ModuleOption = DEFAULT_MODULE,
) -> None:
    """Remove the master key versions that no key in the database is wrapped under (never the
    current one). Run it when no other command that writes keys is running."""
    store = master_key_store(db, stash, token, pin_file, pkcs11_module)
    with command_errors():
        _purge(Database(db, MasterKeyring(store)), store)
        store.close()


def _purge(database: Database, store: MasterKeyStore) -> None:
    in_use = database.master_key_versions_in_use()
    versions = store.versions()
    unused = [v for v in versions if v != max(versions) and v not in in_use]
    if unused:
        store.remove_versions(unused)
    kept = [v for v in versions if v not in unused]
    typer.echo(f"removed master key versions {unused or 'none'}; kept {kept} "
               f"(keys per version: {in_use})")


def _passphrase(path: Path | None, confirm: bool) -> bytes:
    if path is not None:
        with command_errors():
            text = read_secret_text(path)
    else:
        text = typer.prompt("backup passphrase", hide_input=True, confirmation_prompt=confirm)
    if not text:
        raise typer.BadParameter("the passphrase is empty")
    return text.encode()


@realm_app.command("export-master")
def realm_export_master(
    out: Annotated[Path, typer.Option("--out", help="The backup file to write (mode 0600).")],
    db: DbOption = "sqlite:///kdc.db",
    passphrase_file: PassphraseOption = None,
    stash: StashOption = None,
    token: TokenOption = None,
    pin_file: PinFileOption = None,
    pkcs11_module: ModuleOption = DEFAULT_MODULE,
) -> None:
    """Back up every master key version, wrapped under a passphrase (scrypt, RFC 5649; from a
    token by C_WrapKey, so the key is never in the clear outside it)."""
    store = master_key_store(db, stash, token, pin_file, pkcs11_module)
    passphrase = _passphrase(passphrase_file, confirm=True)
    with command_errors():
        versions = store.versions()
        data = store.export_backup(passphrase)
        store.close()
    write_secret_file(out, data)
    typer.echo(f"master key versions {versions} from {store.describe()} written to {out}")


@realm_app.command("import-master")
def realm_import_master(
    in_file: Annotated[Path, typer.Option("--in", exists=True, dir_okay=False,
                                          help="A backup made by export-master.")],
    db: DbOption = "sqlite:///kdc.db",
    passphrase_file: PassphraseOption = None,
    stash: StashOption = None,
    token: TokenOption = None,
    pin_file: PinFileOption = None,
    pkcs11_module: ModuleOption = DEFAULT_MODULE,
) -> None:
    """Restore master key versions from a backup into this host's stash or token (a version
    already there must be the same key)."""
    store = master_key_store(db, stash, token, pin_file, pkcs11_module)
    passphrase = _passphrase(passphrase_file, confirm=False)
    with command_errors():
        added = store.import_backup(in_file.read_bytes(), passphrase)
        versions = store.versions()
        store.close()
    typer.echo(f"imported master key versions {added or 'none (all present)'} into "
               f"{store.describe()}; it holds {versions}")


@customer_app.command("add")
def customer_add(number: Annotated[str, typer.Option(help="Phone number.")],
                 mac: Annotated[str, typer.Option(help="The device's MAC address.")],
                 db: DbOption = "sqlite:///kdc.db") -> None:
    """Add an active customer; prints the phone ID an operator certificate must carry."""
    database = Database(db)
    with command_errors():  # migrating a v2 database with keys needs the master key
        database.migrate()
        customer = database.add_customer(number, mac)
    typer.echo(f"customer {customer.phone_number} mac {customer.mac} "
               f"phone-id {customer.phone_id.hex()}")


@customer_app.command("list")
def customer_list(db: DbOption = "sqlite:///kdc.db") -> None:
    with command_errors():
        customers = Database(db).list_customers()
    for c in customers:
        typer.echo(f"{c.phone_number}\t{c.mac}\t{'active' if c.active else 'suspended'}\t"
                   f"{c.phone_id.hex()}")


def _set_active(number: str, db: str, active: bool) -> None:
    with command_errors():
        changed = Database(db).set_customer_active(number, active)
    if not changed:
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
