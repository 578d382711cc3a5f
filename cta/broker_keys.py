"""A device's broker keys (seed 003, chained call keys): the pool core (common/broker/device.py)
kept at rest in `<device dir>/broker.json` (mode 0600), every key RFC 5649-wrapped under
KEK = HMAC-SHA256(S, "telekey broker pool at rest v1"), S being a 256-bit secret generated
inside the device's PKCS#11 token (`telekey-broker-kek`: SENSITIVE, not EXTRACTABLE, SIGN
only). The KEK is computed by the token once at start; a key is unwrapped only to be used.

The broker's MESSAGEs (Broker-Pool, Broker-Refresh) arrive inside the device's ESP SA with
its controller; the pool is derived from, and each refresh bound to, that SA's channel
secret. The answer is a 200 with Broker-Ack, or a 4xx that keeps the current keys (the
broker then resynchronises us through a new AP exchange). The file is written (new file,
then rename) before the acknowledgement leaves, so a key the broker considers delivered is
never lost.
"""

import json
from pathlib import Path
from typing import Any

from common.broker.device import DevicePool
from common.broker.headers import KeyDelivery, parse_pool_offer, parse_refresh
from common.broker.keys import BrokerKeyError
from common.calls import sip
from common.calls.sip import SipError, SipMessage
from common.crypto.master_key import unwrap_key, wrap_key
from common.errors import MasterKeyError
from common.log import get_logger
from runtime.controller_link import ControllerLink
from runtime.key_files import write_secret_file

log = get_logger("cta.broker")
KEK_OBJECT = "telekey-broker-kek"
KEK_LABEL = b"telekey broker pool at rest v1"


class TokenWrapper:
    def __init__(self, kek: bytes) -> None:
        self._kek = kek

    def __repr__(self) -> str:
        return "TokenWrapper(...)"

    def wrap(self, key: bytes) -> bytes:
        return wrap_key(self._kek, key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return unwrap_key(self._kek, wrapped)
        except MasterKeyError as exc:
            raise BrokerKeyError("AT_REST_UNWRAP_FAILED") from exc


class DeviceBrokerKeys:
    def __init__(self, me: str, kek: bytes, path: Path | None, link: ControllerLink) -> None:
        """`path` None: the pool is kept in memory only (a network server without a token,
        its KEK random: after a restart the broker gives it a new pool)."""
        self.path = path
        self.link = link
        wrapper = TokenWrapper(kek)
        self.pool = DevicePool(me, wrapper)
        if path is not None and path.exists():
            try:
                self.pool = DevicePool.from_record(json.loads(path.read_text()), me, wrapper)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("broker_pool_unreadable", path=str(path), error=str(exc))

    def _secret(self) -> bytes:
        sa = self.link.sa
        if sa is None or not sa.channel_secret:
            raise BrokerKeyError("NO_SA")
        return sa.channel_secret

    def _save(self) -> None:
        if self.path is not None:
            write_secret_file(self.path, json.dumps(self.pool.to_record(), indent=1).encode())

    def call_key(self, delivery: KeyDelivery, session: str) -> bytes:
        """For the user agent: the session key a Broker-Key delivers."""
        key = self.pool.call_key(delivery, self._secret(), session)
        self._save()  # the key is now used for this session
        log.info("broker_key_used", session=session, key=f"{key.owner} {key.key_id}",
                 by=str(delivery.by) if delivery.by else None)
        return key.key

    def handle(self, message: SipMessage) -> bytes | None:
        """A MESSAGE from the broker → our answer; None when it is not one."""
        if not message.is_request or message.method != "MESSAGE":
            return None
        pool_value, refresh_value = message.header("broker-pool"), message.header("broker-refresh")
        if pool_value is None and refresh_value is None:
            return None
        try:
            if pool_value is not None:
                ack = self.pool.accept_pool(parse_pool_offer(pool_value), self._secret())
                event: dict[str, Any] = {"event": "broker_pool", "epoch": ack.epoch}
            else:
                refresh = parse_refresh(refresh_value or "")
                ack = self.pool.accept_refresh(refresh, self._secret())
                event = {"event": "broker_refresh", "key": str(refresh.key_id),
                         "session": refresh.session}
        except SipError as exc:
            return sip.encode(sip.response(message, exc.status, exc.reason))
        except BrokerKeyError as exc:
            log.warning("broker_message_refused", reason=exc.status, detail=exc.detail)
            return sip.encode(sip.response(message, 403, "Broker Key Refused"))
        self._save()
        log.info(str(event.pop("event")), **event)
        return sip.encode(sip.response(message, 200, headers=[("broker-ack", ack.encode())]))

    def status(self) -> dict[str, Any]:
        return {"epoch": self.pool.epoch, "keys": self.pool.generations()}
