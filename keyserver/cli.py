"""`telekey keyserver ...`: run the enterprise key server (seed 002), make a lab for it, and
administer it through its admin API (mutual TLS) or, for `status` and `rekey-master`, its
database."""

import json
import secrets
import ssl
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy.exc
import typer

from common.enterprise.keys import SEED_MAX_BYTES, SEED_MIN_BYTES, Profile
from common.errors import MasterKeyError
from common.log import configure
from keyserver.admin_client import AdminClient, AdminError
from keyserver.settings import KeyserverSettings
from runtime.key_files import read_secret_text, write_secret_file
from runtime.settings_file import load_settings

HELP = ("Enterprise key server (seed 002): key files for phones over HTTPS, K_g for "
        "application servers over mutual TLS, an admin API.")
SERVICE = "keyserver"  # the master key's service name (telekey-master-keyserver-<mkvno>)
app = typer.Typer(help=HELP, no_args_is_help=True)
seed_app = typer.Typer(help="The enterprise seed S that K_m comes from.", no_args_is_help=True)
extension_app = typer.Typer(help="Extensions known to the key server (admin API).",
                            no_args_is_help=True)
app.add_typer(seed_app, name="seed")
app.add_typer(extension_app, name="extension")

ConfigOption = Annotated[Path, typer.Option(exists=True, help="The key server's TOML settings.")]
UrlOption = Annotated[str, typer.Option(envvar="KEYSERVER_CLIENT_URL",
                                        help="The admin API's URL.")]
CertOption = Annotated[Path, typer.Option("--cert", envvar="KEYSERVER_CLIENT_CERT", exists=True,
                                          help="The administrator's client certificate (PEM).")]
KeyOption = Annotated[Path, typer.Option("--key", envvar="KEYSERVER_CLIENT_KEY", exists=True,
                                         help="Its private key (PEM, mode 0600).")]
CaOption = Annotated[Path, typer.Option("--ca", envvar="KEYSERVER_CLIENT_CA", exists=True,
                                        help="CA certificate to check the key server against.")]
SeedFileOption = Annotated[Path, typer.Option(
    "--seed-file", exists=True, help="File (mode 0600) holding the seed in hex.")]
DEFAULT_ADMIN_URL = "https://127.0.0.1:8446"


@app.callback()
def main() -> None:
    """The enterprise key server."""


def _settings_store(settings: KeyserverSettings) -> Any:
    from keyserver.db import default_stash_file
    from runtime.master_key_store import open_store

    return open_store(SERVICE, stash_file=settings.master_key_stash_file
                      or default_stash_file(settings.database_url),
                      token_label=settings.master_key_token_label,
                      pkcs11_module=settings.pkcs11_module, pin_file=settings.pkcs11_pin_file)


@app.command()
def run(config: ConfigOption) -> None:
    """Serve the basic service, the advanced service and the admin API until SIGTERM."""
    from keyserver.agent import KeyAgent, StartError
    from keyserver.db import Database
    from keyserver.server import serve
    from keyserver.token import KmToken
    from runtime.process import run as run_loop

    settings = load_settings(KeyserverSettings, config)
    configure(json=settings.log_json)
    token = None
    if settings.km_token_label:
        assert settings.pkcs11_pin_file is not None  # the settings require it
        token = KmToken(settings.pkcs11_module, settings.km_token_label, settings.pkcs11_pin_file)
    agent = KeyAgent(server_id=settings.server_id, profile=Profile(settings.profile),
                     block=settings.generator_block, db=Database(settings.database_url),
                     token=token,
                     master_key_store=None if token else lambda: _settings_store(settings),
                     issue_unknown_extensions=settings.issue_unknown_extensions)
    try:
        run_loop(serve(agent, settings))
    except (StartError, MasterKeyError, OSError, ValueError, ssl.SSLError,
            sqlalchemy.exc.SQLAlchemyError) as exc:
        # A token or PIN file missing, a key file others can read, a port taken: the reason.
        typer.echo(f"keyserver: cannot start: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def status(config: Annotated[Path | None, typer.Option(
        exists=True, help="Read this key server's database.")] = None) -> None:
    """What this key server is: without --config its services; with it, from its database,
    the current K_m (version, CV_m, where it is kept), counters and extensions."""
    if config is None:
        typer.echo("keyserver: enterprise key server (seed 002): basic service GET /kkg.txt "
                   "(HTTPS, default port 8443), advanced service GET /v1/kg (mutual TLS, 8445), "
                   "admin API (mutual TLS, 8446); `keyserver status --config FILE` reads a "
                   "server's database")
        return
    from keyserver.db import Database

    settings = load_settings(KeyserverSettings, config)
    url = settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        typer.echo(f"keyserver {settings.server_id}: no database yet at {url} (`keyserver run` "
                   "makes it)")
        return
    db = Database(url)
    try:
        db.migrate()
        current = db.current_master_key()
        counters = db.counter_range(settings.server_id)
        extensions = db.extension_rows()
    finally:
        db.close()
    km = "none (set the seed)" if current is None else (
        f"version {current.kmvno}, CV_m {current.check_value.hex()}, {current.store}, "
        f"since {current.created}")
    typer.echo(f"keyserver {settings.server_id}: profile {settings.profile}; K_m {km}")
    typer.echo("generator counters: " + ("none reserved" if counters is None else
                                        f"first {counters[0]}, reserved below {counters[1]} "
                                        f"({counters[1] - counters[0]} reserved)"))
    revoked = sum(row.revoked for row in extensions.values())
    typer.echo(f"extensions: {len(extensions)} known, {revoked} revoked")


@app.command()
def openapi(service: Annotated[str | None, typer.Option(
        help="basic, advanced or admin; all three when not given.")] = None) -> None:
    """Print the services' OpenAPI schemas (JSON), as they serve them at /openapi.json."""
    from keyserver.app import openapi_schemas

    schemas = openapi_schemas()
    if service is not None and service not in schemas:
        raise typer.BadParameter(f"one of {', '.join(schemas)}")
    typer.echo(json.dumps(schemas[service] if service else schemas, indent=1))


@app.command("lab-init")
def lab_init(
    directory: Annotated[Path, typer.Option("--dir", help="Write everything here.")],
    server_id: Annotated[int, typer.Option(help="The key server's id in generators.")] = 1,
    profile: Annotated[Profile, typer.Option(help="default or seed.")] = Profile.DEFAULT,
    port: Annotated[int, typer.Option(help="Basic service port (advanced +2, admin +3).")
                    ] = 8443,
    host: Annotated[list[str] | None, typer.Option(
        help="Name or address in the server certificate (repeatable).")] = None,
    token: Annotated[str | None, typer.Option(
        help="Default profile: keep K_m in this PKCS#11 token.")] = None,
    pin_file: Annotated[Path | None, typer.Option(help="The token's PIN file.")] = None,
) -> None:
    """A lab key server: CAs, certificates, a random seed (seed.hex) and keyserver.toml."""
    from keyserver.pki import make_lab_pki

    hosts = tuple(host or ("127.0.0.1", "localhost"))
    make_lab_pki(directory, hosts)
    write_secret_file(directory / "seed.hex", (secrets.token_hex(32) + "\n").encode())
    root = directory.resolve()
    lines = [
        "[keyserver]", f"server_id = {server_id}", f'profile = "{profile.value}"',
        f'database_url = "sqlite:///{root / "keyserver.db"}"',
        f'listen_host = "{hosts[0] if hosts[0][0].isdigit() else "127.0.0.1"}"',
        f"basic_port = {port}", f"advanced_port = {port + 2 if port else 0}",
        f"admin_port = {port + 3 if port else 0}",
        f'tls_cert_file = "{root / "server.pem"}"', f'tls_key_file = "{root / "server.key"}"',
        f'advanced_client_ca_files = ["{root / "ca.pem"}"]',
        f'admin_client_ca_files = ["{root / "admin-ca.pem"}"]',
    ]
    if token:
        lines += [f'km_token_label = "{token}"',
                  f'pkcs11_pin_file = "{pin_file.resolve() if pin_file else ""}"']
    (directory / "keyserver.toml").write_text("\n".join(lines) + "\n")
    typer.echo(f"{directory}: ca.pem (the phones' root), server.pem, appserver.pem, "
               "admin-ca.pem, admin.pem (+ .key), seed.hex, keyserver.toml")


@app.command("rekey-master")
def rekey_master(config: ConfigOption) -> None:
    """Add a new version of the key server's master key and wrap K_m under it (a wrapped
    K_m only; the running server keeps the K_m it unwrapped). Earlier versions stay in the
    store: a running server may still wrap a rotated K_m under the version it loaded."""
    from keyserver.db import Database
    from runtime.master_key_store import MasterKeyring

    settings = load_settings(KeyserverSettings, config)
    store = _settings_store(settings)
    db = Database(settings.database_url)
    try:
        current = db.current_master_key()
        if current is None or current.store != "wrapped" or current.wrapped is None:
            typer.echo("keyserver: no wrapped K_m to rewrap", err=True)
            raise typer.Exit(1)
        assert current.mkvno is not None
        keyring = MasterKeyring(store)
        key = keyring.unwrap(current.mkvno, current.wrapped)
        mkvno = store.add_version()
        keyring = MasterKeyring(store)
        new_mkvno, wrapped = keyring.wrap(key)
        if not db.rewrap_master_key(current.kmvno, current.mkvno, new_mkvno, wrapped):
            typer.echo("keyserver: K_m changed meanwhile; run it again", err=True)
            raise typer.Exit(1)
    except MasterKeyError as exc:
        typer.echo(f"master key: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        db.close()
        store.close()
    typer.echo(f"K_m version {current.kmvno} now wrapped under master key version {mkvno}")


def _client(url: str, cert: Path, key: Path, ca: Path) -> AdminClient:
    return AdminClient(url, cert, key, ca)


def _admin(client: AdminClient, method: str, path: str, body: dict[str, Any] | None = None
           ) -> Any:
    try:
        return client.request(method, path, body)
    except (AdminError, OSError, ssl.SSLError) as exc:
        typer.echo(f"keyserver: {exc}", err=True)
        raise typer.Exit(1) from exc


def _read_seed(path: Path) -> str:
    try:
        text = "".join(read_secret_text(path).split())
        seed = bytes.fromhex(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{path}: the seed in hex") from exc
    except PermissionError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not SEED_MIN_BYTES <= len(seed) <= SEED_MAX_BYTES:
        raise typer.BadParameter(f"{path}: a seed is {SEED_MIN_BYTES} to {SEED_MAX_BYTES} bytes")
    return seed.hex()


@seed_app.command("generate")
def seed_generate(
    out: Annotated[Path, typer.Option(help="Write the seed here (hex, mode 0600).")],
    size: Annotated[int, typer.Option("--bytes", min=SEED_MIN_BYTES, max=SEED_MAX_BYTES)] = 32,
) -> None:
    """A random seed. Give the same file to every key server of the enterprise."""
    if out.exists():
        raise typer.BadParameter(f"{out} exists; refusing to overwrite a seed")
    write_secret_file(out, (secrets.token_hex(size) + "\n").encode())
    typer.echo(f"{out}: {size}-byte seed")


def _km_line(reply: dict[str, Any]) -> str:
    return f"K_m version {reply['kmvno']}, CV_m {reply['check_value']} ({reply['store']})"


@seed_app.command("set")
def seed_set(seed_file: SeedFileOption, url: UrlOption = DEFAULT_ADMIN_URL,
             cert: CertOption = Path("admin.pem"), key: KeyOption = Path("admin.key"),
             ca: CaOption = Path("ca.pem")) -> None:
    """Set the first K_m from the seed (refused once one is set: use `seed rotate`)."""
    reply = _admin(_client(url, cert, key, ca), "PUT", "/v1/seed",
                   {"seed": _read_seed(seed_file)})
    typer.echo(f"set: {_km_line(reply)}")


@seed_app.command("rotate")
def seed_rotate(seed_file: SeedFileOption, url: UrlOption = DEFAULT_ADMIN_URL,
                cert: CertOption = Path("admin.pem"), key: KeyOption = Path("admin.key"),
                ca: CaOption = Path("ca.pem")) -> None:
    """Replace K_m by the one from a new seed: CV_m changes and phones fetch new key files.
    Rotate every key server of the enterprise with the same seed."""
    reply = _admin(_client(url, cert, key, ca), "POST", "/v1/rotate",
                   {"seed": _read_seed(seed_file)})
    typer.echo(f"rotated: {_km_line(reply)}")


def _extension_line(row: dict[str, Any]) -> str:
    state = "revoked" if row["revoked"] else "active"
    origin = "administered" if row["administered"] else "seen"
    return (f"{row['ext']}\t{state}\t{origin}\tissued {row['issued']}\t"
            f"last {row['last_issued'] or '-'}")


@extension_app.command("list")
def extension_list(url: UrlOption = DEFAULT_ADMIN_URL, cert: CertOption = Path("admin.pem"),
                   key: KeyOption = Path("admin.key"), ca: CaOption = Path("ca.pem")) -> None:
    """Extensions administered or given key files: state, key files given, the last one."""
    for row in _admin(_client(url, cert, key, ca), "GET", "/v1/extensions"):
        typer.echo(_extension_line(row))


def _extension_command(action: str, method: str, suffix: str, doc: str) -> None:
    def command(ext: Annotated[str, typer.Argument(help="The extension.")],
                url: UrlOption = DEFAULT_ADMIN_URL, cert: CertOption = Path("admin.pem"),
                key: KeyOption = Path("admin.key"), ca: CaOption = Path("ca.pem")) -> None:
        from urllib.parse import quote

        path = f"/v1/extensions/{quote(ext, safe='')}{suffix}"
        typer.echo(_extension_line(_admin(_client(url, cert, key, ca), method, path)))

    command.__doc__ = doc
    extension_app.command(action)(command)


_extension_command("add", "PUT", "", "Add an extension (needed when the key server gives key "
                   "files only to extensions added here).")
_extension_command("revoke", "POST", "/revoke", "Revoke an extension: no more key files, no "
                   "K_g for its generators.")
_extension_command("restore", "POST", "/restore", "Lift a revocation (generators issued "
                   "before stay refused at this key server).")

