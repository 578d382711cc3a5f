"""`telekey cta echo-server`: a network server that answers calls (seed 001's device-to-server
case): it holds a keytab instead of a token, gets its controller ticket by an AS exchange
with encrypted timestamp, keeps an SA with its controller like a device, and answers every
call, sending back the media it receives (an echo test line)."""

import asyncio
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

from common.calls.user_agent import UserAgent
from common.kerberos.ccache import Credential
from common.kerberos.keytab import decode_keytab
from common.log import get_logger
from cta.broker_keys import DeviceBrokerKeys
from cta.phone import Phone
from runtime.controller_link import ControllerAddress, ControllerLink
from runtime.kdc_client import keytab_login

log = get_logger("echo_server")


async def run(*, principal: str, keytab: Path, realm: str, kdc: str,
              controller: ControllerAddress, number: str, record_dir: Path | None,
              esp_keylog: Path | None) -> None:
    entries = decode_keytab(keytab.read_bytes())
    held: dict[str, Credential] = {}
    loop = asyncio.get_running_loop()

    async def renew() -> None:
        try:
            held[controller.principal] = await loop.run_in_executor(None, lambda: keytab_login(
                kdc, entries, client=principal, service=controller.principal, realm=realm))
            log.info("ticket", service=controller.principal, method="ENC-TIMESTAMP",
                     endtime=datetime.fromtimestamp(held[controller.principal].endtime,
                                                    UTC).isoformat())
        except (OSError, KeyError, ValueError) as exc:
            log.warning("ticket_failed", service=controller.principal, error=str(exc))
            await asyncio.sleep(2)

    await renew()
    link = ControllerLink([controller], held.get, renew)
    await link.start()
    broker = DeviceBrokerKeys(principal, os.urandom(32), None, link)
    phone = Phone(UserAgent(realm=realm, identity=number, broker=broker.call_key), link,
                  answer="echo", record_dir=record_dir, esp_keylog=esp_keylog, broker=broker)
    await phone.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening", principal=principal, number=number, esp_port=phone.esp_port,
             controller=controller.principal)
    await stop.wait()
    log.info("stopped", calls=len(phone.finished))
