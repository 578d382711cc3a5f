"""The key broker at the controller (`call_key_policy = "chained"`; seed 003): the glue
between the broker core (common/broker/broker.py), its pools in the database
(sigctl/broker_store.py), the devices' SAs and call control.

Messages to a device travel as SIP MESSAGE inside its own ESP SA (never anywhere another
device could read them): `Broker-Pool` after an AP exchange that needs a new pool,
`Broker-Refresh` after a session. The device's 200 carries its `Broker-Ack`; an unanswered
MESSAGE is sent again every `RETRY_S` seconds (a refresh is rebuilt for the SA the device
holds then), `MAX_REFRESH_TRIES` times, after which — as after any refusal — the pool is put
to `resync` and the device is sent a Rekey: its new AP exchange brings a new pool.
"""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.broker.broker import MAX_REFRESH_TRIES, Broker, BrokerUnavailable
from common.broker.headers import parse_ack
from common.calls import sip
from common.calls.control import Leg
from common.calls.sip import SipError, SipMessage
from common.log import get_logger
from common.pktc.km_server import ControllerSa
from runtime.master_key_store import MasterKeyring
from sigctl.broker_store import BrokerStore
from sigctl.extensions import master_key_store
from sigctl.settings import SigctlSettings

log = get_logger("sigctl.broker")
RETRY_S = 2.0


@dataclass
class Pending:
    device: str
    kind: str  # pool | refresh
    slot: int
    tries: int
    next_at: float  # monotonic


def open_broker_store(settings: SigctlSettings) -> BrokerStore:
    store = master_key_store(settings)
    if not store.versions():
        store.add_version()
    return BrokerStore(settings.broker_database_url, MasterKeyring(store),
                       busy_timeout_ms=settings.broker_busy_timeout_ms)


class KeyBroker:
    """`ChainedKeys` for call control (common/calls/control.py), and what the daemon asks of
    the broker: after each AP exchange, for each device's answer, once a second."""

    def __init__(self, settings: SigctlSettings, *, sa_of: Callable[[str], ControllerSa | None],
                 link_secret: Callable[[str], bytes | None],
                 send: Callable[[ControllerSa, bytes], None],
                 rekey: Callable[[ControllerSa], None]) -> None:
        self.settings = settings
        self.store = open_broker_store(settings)
        self.broker = Broker(self.store, slots=settings.broker_slots,
                             refresh_s=settings.broker_refresh_s)
        self.sa_of = sa_of  # a device's or a peer's SA with us, by principal
        self.link_secret = link_secret  # the secret of our own link to a peer
        self.send_sip = send
        self.rekey = rekey
        self.pending: dict[str, Pending] = {}  # by the MESSAGE's Call-ID
        self.peers = set(settings.peers)

    def close(self) -> None:
        self.store.close()

    # ChainedKeys ---------------------------------------------------------------------

    def secret(self, leg: Leg, *, sending: bool) -> bytes | None:
        if leg[0] == "peer" and sending:
            return self.link_secret(leg[1])
        sa = self.sa_of(leg[1])
        return sa.channel_secret if sa is not None and sa.channel_secret else None

    # Messages to devices -------------------------------------------------------------

    def _message(self, sa: ControllerSa, device: str, header: tuple[str, str]) -> str:
        call_id = f"broker-{secrets.token_hex(8)}@{self.settings.realm.lower()}"
        realm = self.settings.realm
        message = sip.request("MESSAGE", f"sip:{device.replace('/', '-')}@{realm}", [
            ("via", f"SIP/2.0/UDP {self.settings.principal};branch=z9hG4bK"
                    f"{secrets.token_hex(8)}"),
            ("max-forwards", "70"),
            ("from", f"<sip:broker@{realm}>;tag={secrets.token_hex(4)}"),
            ("to", f"<sip:{device.replace('/', '-')}@{realm}>"), ("call-id", call_id),
            ("cseq", "1 MESSAGE"), header])
        self.send_sip(sa, sip.encode(message))
        return call_id

    def sa_installed(self, sa: ControllerSa) -> None:
        """After an AP exchange: a new pool when one is due (not for peer controllers)."""
        self._offer(sa, tries=1)

    def _offer(self, sa: ControllerSa, tries: int) -> None:
        device = sa.client.rpartition("@")[0]
        if device in self.peers or not sa.channel_secret:
            return
        try:
            if not self.broker.offer_due(device, time.time()):
                return
            offer = self.broker.offer(device, sa.channel_secret, time.time())
        except BrokerUnavailable as exc:
            log.warning("broker_unavailable", device=device, error=str(exc)[:200])
            return
        self._forget(device)
        call_id = self._message(sa, device, ("broker-pool", offer.encode()))
        self.pending[call_id] = Pending(device, "pool", 0, tries, time.monotonic() + RETRY_S)
        log.info("broker_pool_offered", device=device, epoch=offer.epoch, slots=offer.slots,
                 tries=tries)

    def _forget(self, device: str) -> None:
        for call_id in [c for c, p in self.pending.items() if p.device == device]:
            del self.pending[call_id]

    def _send_refresh(self, device: str, slot: int, tries: int) -> None:
        sa = self.sa_of(device)
        if sa is None or not sa.channel_secret:
            log.info("broker_refresh_waits", device=device, slot=slot, reason="no SA")
            self.broker.store.set_state(device, "resync")
            return
        refresh = self.broker.refresh_message(device, slot, sa.channel_secret)
        if refresh is None:
            return
        call_id = self._message(sa, device, ("broker-refresh", refresh.encode()))
        self.pending[call_id] = Pending(device, "refresh", slot, tries,
                                        time.monotonic() + RETRY_S)
        log.info("broker_refresh_sent", device=device, key=str(refresh.key_id),
                 session=refresh.session, tries=tries)

    def session_ended(self, session: str) -> None:
        try:
            for device, slot in self.broker.session_ended(session):
                self._send_refresh(device, slot, 1)
        except BrokerUnavailable as exc:  # the keys stay taken: replaced at the next pool
            log.warning("broker_unavailable", session=session, error=str(exc)[:200])

    def claims(self, leg: Leg, payload: bytes) -> bool:
        """A device's answer to one of our MESSAGEs (handled here), or not ours."""
        if leg[0] != "device" or not payload.startswith(b"SIP/2.0 "):
            return False
        try:
            message = sip.parse(payload)
        except SipError:
            return False
        if message.cseq[1] != "MESSAGE":
            return False
        pending = self.pending.pop(message.call_id, None)
        if pending is None or pending.device != leg[1]:
            return True
        try:
            self._answer(pending, message)
        except BrokerUnavailable as exc:
            log.warning("broker_unavailable", device=pending.device, error=str(exc)[:200])
        return True

    def _answer(self, pending: Pending, message: SipMessage) -> None:
        device = pending.device
        accepted = False
        if message.status == 200:
            try:
                ack = parse_ack(message.header("broker-ack") or "")
            except SipError:
                ack = None
            if ack is not None and pending.kind == "pool":
                accepted = self.broker.pool_acked(device, ack, time.time())
            elif ack is not None:
                accepted = self.broker.refresh_acked(device, ack)
            if accepted:
                log.info(f"broker_{pending.kind}_acknowledged", device=device,
                         key=str(ack.key_id) if ack and ack.key_id else None,
                         epoch=ack.epoch if ack else None)
                return
        log.warning(f"broker_{pending.kind}_refused", device=device, status=message.status,
                    reason=message.start[2] if not message.is_request else None)
        self._resync(device)

    def _resync(self, device: str) -> None:
        self.broker.store.set_state(device, "resync")
        self._forget(device)
        sa = self.sa_of(device)
        if sa is not None:
            self.rekey(sa)
            log.info("broker_resync", device=device)

    # Once a second -------------------------------------------------------------------

    def tick(self) -> None:
        mono = time.monotonic()
        try:
            for call_id, pending in [(c, p) for c, p in self.pending.items()
                                     if p.next_at <= mono]:
                del self.pending[call_id]
                if pending.tries >= MAX_REFRESH_TRIES:
                    log.warning("broker_unanswered", device=pending.device, kind=pending.kind)
                    self._resync(pending.device)
                elif pending.kind == "refresh":
                    self._send_refresh(pending.device, pending.slot, pending.tries + 1)
                else:
                    sa = self.sa_of(pending.device)
                    if sa is not None:  # the offer again: a new epoch on the SA held now
                        self.broker.store.set_state(pending.device, "resync")
                        self._offer(sa, tries=pending.tries + 1)
            for device in self.broker.periodic(time.time()):
                sa = self.sa_of(device)
                log.info("broker_periodic_refresh", device=device, online=sa is not None)
                if sa is not None:
                    self.rekey(sa)
        except BrokerUnavailable as exc:
            log.warning("broker_unavailable", error=str(exc)[:200])

    def status(self, device: str) -> dict[str, Any]:
        pool = self.broker.store.pool(device)
        if pool is None:
            return {"device": device, "pool": None}
        return {"device": device, "epoch": pool.epoch, "state": pool.state,
                "established": pool.established,
                "keys": {str(slot): {"generation": g, "state": state}
                         for slot, (g, state, _) in sorted(pool.slots.items())}}
