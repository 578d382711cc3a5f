"""`telekey phone init|run`: an enterprise IP phone (seed 002), with an extension and a PIN
and no certificate. It gets its key from the key server, registers with the controller over
H.225.0 RAS (cta/ras_link.py), and then places and answers calls like a cable device
(cta/phone.py) on the same management port protocol as `telekey cta run` (cta/daemon.py):
status, echo, call, hangup.

Exit status of `run`: 0 after SIGTERM, 2 when registration failed for good ("registration
failed: check the PIN", an extension not served, key information refused), 1 when the phone
cannot start (PIN file, token)."""

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from runtime.key_files import read_secret_text

HELP = "Enterprise IP phone (seed 002): key file, H.225.0 RAS registration, ESP, calls."
app = typer.Typer(help=HELP, no_args_is_help=True)


@app.callback()
def main() -> None:
    """The enterprise IP phone."""


@app.command()
def init(directory: Annotated[Path, typer.Option("--dir", help="The phone's own directory.")]
         ) -> None:
    """Make the phone's directory and its SoftHSM2 token (which will hold the secret that
    wraps K_g at rest). `run` does this itself on first use."""
    from cta.phone_keys import PhoneDirectory

    phone = PhoneDirectory.open_or_init(directory)
    typer.echo(f"{directory}: token {phone.token_label!r}")


class PhoneDaemon:
    """The management port of a phone (the same protocol as cta/daemon.py's)."""

    def __init__(self, link: Any, phone: Any) -> None:
        self.link = link
        self.phone = phone

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        from cta.media import load_source

        op = message.get("op")
        if op == "status":
            return {"ok": True, "link": self.link.status(), "calls": self.phone.status()}
        if op == "echo":
            started = time.perf_counter()
            try:
                reply = await self.link.echo(str(message.get("data", "")).encode())
            except (TimeoutError, ConnectionError) as exc:
                return {"ok": False, "error": f"echo failed: {exc}"}
            return {"ok": True, "reply": reply.decode(errors="replace"),
                    "rtt_ms": round((time.perf_counter() - started) * 1000, 2)}
        if op == "hangup":
            result: dict[str, Any] = await self.phone.hangup(str(message.get("call_id", "")))
            return result
        if op == "call":
            play = message.get("play")
            try:
                samples = load_source(str(play)) if play else None
            except (OSError, ValueError, EOFError) as exc:
                return {"ok": False, "error": f"play: {exc}"}
            result = await self.phone.call(str(message.get("number", "")), samples)
            return result
        return {"ok": False, "error": f"unknown op {op!r}"}


def _host_port(value: str) -> tuple[str, int, int | None]:
    host, ras, *esp = value.split(":")
    return host, int(ras), int(esp[0]) if esp else None


@app.command()
def run(
    ext: Annotated[str, typer.Option(help="The phone's extension.")],
    pin_file: Annotated[Path, typer.Option(help="File (mode 0600) with the extension's PIN.")],
    keyserver: Annotated[str, typer.Option(
        help="The key server's basic service, e.g. https://keys.example:8443.")],
    ca: Annotated[Path, typer.Option(exists=True, help="The root certificate (PEM) the key "
                                                       "server's must chain to.")],
    controller: Annotated[str, typer.Option(
        help="HOST:RAS_PORT[:ESP_PORT] of the controller (ESP port default: the one RCF "
             "names).")],
    realm: Annotated[str, typer.Option(help="The controller's realm (SIP URIs).")],
    directory: Annotated[Path, typer.Option("--dir", help="The phone's own directory (token, "
                                                          "key information).")],
    management_port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1; 0 = any.")] = 0,
    local_host: Annotated[str, typer.Option(
        help="Address the phone's RAS and ESP socket binds to.")] = "127.0.0.1",
    keepalive: Annotated[float, typer.Option(help="Seconds between ESP echo probes.")] = 20.0,
    tries: Annotated[int, typer.Option(help="GRQs sent before a new key file (and again "
                                            "after it) when none is answered.")] = 4,
    retry_timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the first GRQ's answer (doubling to 8).")] = 1.0,
    grj_wait: Annotated[float, typer.Option(
        help="Seconds a GRJ (not homed here) waits for a GCF before following it.")] = 3.0,
    answer: Annotated[str, typer.Option(
        help="Incoming calls: record (answer, play --play, record), echo, or reject.")
    ] = "record",
    play: Annotated[str | None, typer.Option(
        help="Sent in every call: an 8 kHz 16-bit mono WAV file or tone[:HZ[:SECONDS]].")
    ] = None,
    record_dir: Annotated[Path | None, typer.Option(
        help="Write what each call received to DIR/<Call-ID>.wav.")] = None,
    esp_keylog: Annotated[Path | None, typer.Option(
        help="Labs only: append device-to-device SA keys as Wireshark esp_sa records.")
    ] = None,
    srtp_profile: Annotated[str, typer.Option(
        help="AES_CM_128_HMAC_SHA1_80 or AEAD_AES_128_GCM.")] = "AES_CM_128_HMAC_SHA1_80",
    json_logs: Annotated[bool, typer.Option("--json/--console")] = True,
) -> None:
    """Fetch a key file when there is none, register with the controller (H.225.0 RAS with
    H.235 ICVs), keep the ESP SA, place and answer calls, answer the management port. Stops
    on SIGTERM, or with status 2 when registration failed for good."""
    from common.enterprise.generator import check_extension
    from common.enterprise.keys import encode_pin
    from common.log import configure
    from cta.phone_keys import PhoneDirectory, PhoneKeyStore, StoredKeyError
    from cta.provider import TokenUnavailable
    from runtime.process import run as run_async

    configure(json=json_logs)
    try:
        check_extension(ext)
        pin = read_secret_text(pin_file).strip()
        encode_pin(pin)
        host, ras_port, esp_port = _host_port(controller)
    except (ValueError, OSError) as exc:
        typer.echo(f"phone: {exc}", err=True)
        raise typer.Exit(1) from exc
    try:
        phone_dir = PhoneDirectory.open_or_init(directory)
        provider = phone_dir.open_token()
    except (TokenUnavailable, OSError) as exc:
        typer.echo(f"phone: cannot open the phone's token: {exc}", err=True)
        raise typer.Exit(1) from exc
    store = PhoneKeyStore(phone_dir, provider)

    def load() -> Any:
        try:
            return store.load(ext)
        except StoredKeyError as exc:
            from common.log import get_logger

            get_logger("phone").warning("stored_key_unusable", error=str(exc))
            return None

    failed: list[str] = []
    try:
        run_async(_run(ext=ext, pin=pin, keyserver=keyserver, ca=ca, host=host,
                       ras_port=ras_port, esp_port=esp_port, realm=realm,
                       management_port=management_port, local_host=local_host,
                       keepalive=keepalive, tries=tries,
                       retry_timeout=retry_timeout, grj_wait=grj_wait, answer=answer,
                       play=play, record_dir=record_dir, esp_keylog=esp_keylog,
                       srtp_profile=srtp_profile, load=load, save=store.save, failed=failed))
    finally:
        provider.close()
    if failed:
        typer.echo(failed[0], err=True)
        sys.exit(2)


async def _run(*, ext: str, pin: str, keyserver: str, ca: Path, host: str, ras_port: int,
               esp_port: int | None, realm: str, management_port: int, local_host: str,
               keepalive: float,
               tries: int, retry_timeout: float, grj_wait: float, answer: str,
               play: str | None, record_dir: Path | None, esp_keylog: Path | None,
               srtp_profile: str, load: Any, save: Any, failed: list[str]) -> None:
    from common.calls.user_agent import UserAgent
    from common.enterprise.per import ras_codec
    from common.log import get_logger
    from cta.daemon import serve_management
    from cta.media import load_source
    from cta.phone import Phone
    from cta.ras_link import RasLink, RegistrationPolicy
    from runtime.https_client import HttpsClient, tls_context

    log = get_logger("phone")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ras_codec()  # compiled before the first GRQ (about 0.7 s)

    async def load_key() -> Any:
        return await loop.run_in_executor(None, load)

    async def save_key(key_file: Any) -> Any:
        return await loop.run_in_executor(None, save, key_file)

    def on_failed(message: str) -> None:
        failed.append(message)
        stop.set()

    link = RasLink(host=host, ras_port=ras_port, esp_port=esp_port, ext=ext, pin=pin,
                   keyserver=HttpsClient(keyserver, tls_context(ca)), load_key=load_key,
                   save_key=save_key, on_failed=on_failed,
                   policy=RegistrationPolicy(tries=tries, first_timeout_s=retry_timeout,
                                             grj_wait_s=grj_wait), keepalive_s=keepalive,
                   local_host=local_host)
    phone = Phone(UserAgent(realm=realm, identity=ext), link, host=local_host, answer=answer,
                  play=load_source(play) if play else None, record_dir=record_dir,
                  esp_keylog=esp_keylog, srtp_profile=srtp_profile)
    daemon = PhoneDaemon(link, phone)
    server = await asyncio.start_server(
        lambda r, w: serve_management(daemon.handle, r, w), "127.0.0.1", management_port,
        limit=64 * 1024)
    await link.start()
    await phone.start()
    log.info("listening", management_port=server.sockets[0].getsockname()[1], ext=ext,
             ras_local_port=link.transport.get_extra_info("sockname")[1],
             controller=f"{host}:{ras_port}")
    await stop.wait()
    server.close()
    log.info("stopped", failed=failed[0] if failed else None)
