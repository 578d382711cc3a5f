"""`telekey sigctl run`: the signaling controller."""

from pathlib import Path
from typing import Annotated, Any

import typer

from runtime.settings_file import load_settings
from sigctl.settings import SigctlSettings

HELP = "Signaling controller: AP-REQ/AP-REP key management, ESP-protected signaling."
app = typer.Typer(help=HELP, no_args_is_help=True)
extension_app = typer.Typer(
    help="Enterprise phones' extensions and PINs (seed 002), wrapped under the controller's "
         "master key.", no_args_is_help=True)
app.add_typer(extension_app, name="extension")
broker_app = typer.Typer(
    help="The key broker's pools (call_key_policy = \"chained\", seed 003): identifiers and "
         "generations, never keys.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
ConfigOption = Annotated[Path, typer.Option("--config", exists=True,
                                            help="The controller's TOML settings.")]


@app.callback()
def main() -> None:
    """The signaling controller."""


@app.command()
def run(config: Annotated[Path, typer.Option(exists=True, help="TOML settings file.")]) -> None:
    """Serve key management (UDP, PacketCable framing) and ESP until SIGTERM."""
    from common.log import configure
    from runtime.process import run as run_loop
    from sigctl.server import serve, start_km_workers

    settings = load_settings(SigctlSettings, config)
    configure(json=settings.log_json)
    run_loop(serve(settings, start_km_workers(settings) if settings.km_workers else None))


@app.command()
def status() -> None:
    """Say what this service provides."""
    typer.echo("sigctl: key management on UDP (PacketCable framing), ESP in UDP, echo on "
               "inner port 7, enterprise-phone registration (H.225.0 RAS, UDP 1719, with "
               "keyserver_url set), per-call or chained call keys (call_key_policy); run "
               "with `telekey sigctl run --config sigctl.toml`.")


def _extension_store(config: Path, *, create_master_key: bool = False) -> Any:
    from common.errors import MasterKeyError
    from sigctl.extensions import open_extension_store

    settings = load_settings(SigctlSettings, config)
    try:
        return open_extension_store(settings, create_master_key=create_master_key)
    except (MasterKeyError, ValueError, OSError) as exc:
        typer.echo(f"sigctl: extensions: {exc}", err=True)
        raise typer.Exit(1) from exc


@extension_app.command("add")
def extension_add(
    ext: Annotated[str, typer.Argument(help="The extension (1 to 32 of 0-9, * and #).")],
    pin_file: Annotated[Path, typer.Option(exists=True, help="File (mode 0600) holding the "
                                                            "extension's PIN, 4-16 digits.")],
    config: ConfigOption,
) -> None:
    """Administer an extension and its PIN (or change the PIN). The PIN is stored wrapped
    under the controller's master key (made on first use), never in plaintext nor hashed."""
    from common.enterprise.generator import check_extension
    from common.enterprise.keys import encode_pin
    from runtime.key_files import read_secret_text

    try:
        check_extension(ext)
        pin = read_secret_text(pin_file).strip()
        encode_pin(pin)
    except (ValueError, PermissionError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    store = _extension_store(config, create_master_key=True)
    try:
        added = store.put(ext, pin)
    finally:
        store.close()
    typer.echo(f"extension {ext}: {'added' if added else 'PIN changed'}")


@extension_app.command("del")
def extension_del(ext: Annotated[str, typer.Argument(help="The extension.")],
                  config: ConfigOption) -> None:
    """Remove an extension: its phone can no longer register here."""
    store = _extension_store(config)
    try:
        removed = store.delete(ext)
    finally:
        store.close()
    if not removed:
        typer.echo(f"extension {ext}: not administered here", err=True)
        raise typer.Exit(1)
    typer.echo(f"extension {ext}: removed")


@extension_app.command("list")
def extension_list(config: ConfigOption) -> None:
    """The extensions administered here (never their PINs): extension, master key version of
    its wrapped PIN, last change."""
    store = _extension_store(config)
    try:
        rows = store.listing()
    finally:
        store.close()
    for ext, mkvno, changed in rows:
        typer.echo(f"{ext}\tmkvno {mkvno}\t{changed}")


@broker_app.command("list")
def broker_list(config: ConfigOption) -> None:
    """Each device's pool: device, epoch, state, when established, and per slot its
    generation and state (ready, in_use, refreshing)."""
    from datetime import UTC, datetime

    from common.broker.broker import BrokerUnavailable
    from common.errors import MasterKeyError
    from sigctl.broker import open_broker_store

    settings = load_settings(SigctlSettings, config)
    try:
        store = open_broker_store(settings)
        try:
            pools = store.pools()
        finally:
            store.close()
    except (BrokerUnavailable, MasterKeyError, ValueError, OSError) as exc:
        typer.echo(f"sigctl: broker: {exc}", err=True)
        raise typer.Exit(1) from exc
    for device, pool in sorted(pools):
        when = datetime.fromtimestamp(pool.established, UTC).isoformat(timespec="seconds")
        slots = " ".join(f"{i}:{g}:{state}" for i, (g, state, _) in sorted(pool.slots.items()))
        typer.echo(f"{device}\tepoch {pool.epoch}\t{pool.state}\t{when}\t{slots}")
