"""The broker's side (seed 003), telekey profile v1: which pool a device holds, which key a
session takes, what is refreshed and when. No I/O: the pools live in a `PoolStore` (the
controller's database, each key wrapped under its master key), the daemon moves messages.

- **Offer.** After an AP exchange, a device is offered a new pool (`Broker-Pool`, epoch + 1,
  keys derived from that SA's channel secret) when it has none, when its pool is not in a
  state both ends agree on (an offer or a refresh not acknowledged, a key taken by a session
  this process does not know: the controller restarted), or when the periodic refresh is
  due. The pool is usable once the device's proof of it arrives.
- **Sessions.** A session takes one ready key of the callee (the session key) and one of each
  party that receives it wrapped (the caller, a conference's third party); a device with no
  ready key makes the call fail (503), never a key reused.
- **Refresh.** When the session ends, each key it took is replaced: a random next key,
  stored beside the old one, sent wrapped under the old one (`Broker-Refresh`), committed
  (old erased) when the device's proof of the new key arrives. A refresh refused, or not
  acknowledged after `MAX_REFRESH_TRIES`, puts the pool to `resync`: the device is sent a
  Rekey, and its new AP exchange brings a new pool from scratch.
- **Periodic refresh.** Every pool is replaced from scratch within `refresh_s` of its
  establishment: a device is due at establishment + refresh_s × (1 - spread × phase), its
  phase in [0, 1) fixed by its name, so that due times spread over the last `spread` of the
  period; idle devices (no key in a session) go first, at most `per_tick` at a time.
"""

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from common.broker import keys as bk
from common.broker.headers import Ack, KeyDelivery, PoolOffer, Refresh
from common.broker.keys import BrokerKey, KeyId

MAX_REFRESH_TRIES = 5
SPREAD = 0.5


class BrokerUnavailable(Exception):
    """The pool store cannot be read or written now: chained calls are refused (503)."""


@dataclass(frozen=True)
class PoolState:
    epoch: int
    state: str  # offered | ready | resync
    established: float  # wall-clock seconds
    slots: dict[int, tuple[int, str, str | None]]  # slot → (generation, state, session)


class PoolStore(Protocol):
    """Each method is one committed transaction; BrokerUnavailable when the store is not."""

    def pool(self, device: str) -> PoolState | None: ...

    def offer(self, device: str, epoch: int, keys: list[bytes], now: float) -> None: ...

    def confirm(self, device: str, epoch: int, now: float) -> bool: ...

    def set_state(self, device: str, state: str) -> None: ...

    def keys(self, device: str) -> dict[int, BrokerKey]: ...

    def take(self, device: str, session: str) -> BrokerKey | None: ...

    def begin_refresh(self, device: str, slot: int, session: str, new_key: bytes
                      ) -> KeyId | None: ...

    def refreshing(self, device: str, slot: int) -> tuple[BrokerKey, BrokerKey, str] | None: ...

    def commit_refresh(self, device: str, key_id: KeyId) -> bool: ...

    def pools(self) -> list[tuple[str, PoolState]]: ...

    def ready_before(self, cutoff: float) -> list[tuple[str, float]]:
        """(device, established) of the ready pools established at `cutoff` or before."""
        ...


@dataclass
class Pending:
    """A MESSAGE to a device waiting for its acknowledgement."""
    device: str
    kind: str  # pool | refresh
    epoch: int
    slot: int = 0
    tries: int = 0
    next_at: float = 0.0


@dataclass
class Broker:
    store: PoolStore
    slots: int = 4
    refresh_s: float = 86400.0
    per_tick: int = 10
    random: Callable[[int], bytes] = os.urandom
    sessions: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    # Pools ---------------------------------------------------------------------------

    def offer_due(self, device: str, now: float) -> bool:
        pool = self.store.pool(device)
        if pool is None or pool.state != "ready":
            return True
        if now >= self.due_at(device, pool.established):
            return True
        live = {s for entries in self.sessions.values() for s in entries}
        return any(state != "ready" and (device, slot) not in live
                   for slot, (_, state, _) in pool.slots.items())

    def offer(self, device: str, secret: bytes, now: float) -> PoolOffer:
        pool = self.store.pool(device)
        epoch = (pool.epoch + 1) % 2**32 if pool else 1
        self.store.offer(device, epoch, bk.pool_keys(secret, epoch, self.slots), now)
        self._forget(device)
        return PoolOffer(epoch, self.slots)

    def pool_acked(self, device: str, ack: Ack, now: float) -> bool:
        keys = self.store.keys(device)
        pool = self.store.pool(device)
        if pool is None or ack.epoch != pool.epoch or pool.state != "offered":
            return False
        expected = bk.pool_proof(pool.epoch, [keys[i].key for i in sorted(keys)])
        if not bk.proof_matches(ack.proof, expected):
            self.store.set_state(device, "resync")
            return False
        return self.store.confirm(device, pool.epoch, now)

    def _forget(self, device: str) -> None:
        for entries in self.sessions.values():
            entries[:] = [e for e in entries if e[0] != device]

    # Sessions ------------------------------------------------------------------------

    def take(self, device: str, session: str) -> BrokerKey | None:
        pool = self.store.pool(device)
        if pool is None or pool.state != "ready":
            return None
        key = self.store.take(device, session)
        if key is not None:
            self.sessions.setdefault(session, []).append((device, key.key_id.slot))
        return key

    @staticmethod
    def deliver(holder: str, wrapping: BrokerKey, key: BrokerKey, secret: bytes, spi: int,
                session: str) -> KeyDelivery:
        """`Broker-Key` giving `key` to `holder`, wrapped under the holder's `wrapping`."""
        return KeyDelivery(spi, key.owner, key.key_id,
                           bk.wrap(wrapping.key, secret, key, holder=holder, session=session),
                           wrapping.key_id)

    def session_ended(self, session: str) -> list[tuple[str, int]]:
        """Start replacing every key the session took; the (device, slot) to send."""
        started = []
        for device, slot in self.sessions.pop(session, []):
            if self.store.begin_refresh(device, slot, session, self.random(bk.KEY_BYTES)):
                started.append((device, slot))
        return started

    def refresh_message(self, device: str, slot: int, secret: bytes) -> Refresh | None:
        """The `Broker-Refresh` of a refresh under way, for the device's current SA."""
        found = self.store.refreshing(device, slot)
        if found is None:
            return None
        old, new, session = found
        return Refresh(new.key_id, bk.wrap(old.key, secret, new, holder=device,
                                            session=session), session)

    def refresh_acked(self, device: str, ack: Ack) -> bool:
        if ack.key_id is None:
            return False
        found = self.store.refreshing(device, ack.key_id.slot)
        if found is None or found[1].key_id != ack.key_id:
            return False
        if not bk.proof_matches(ack.proof, bk.key_proof(ack.key_id, found[1].key)):
            self.store.set_state(device, "resync")
            return False
        return self.store.commit_refresh(device, ack.key_id)

    # The periodic refresh ------------------------------------------------------------

    def due_at(self, device: str, established: float) -> float:
        phase = int.from_bytes(hashlib.sha256(device.encode()).digest()[:4], "big") / 2**32
        return established + self.refresh_s * (1 - SPREAD * phase)

    def periodic(self, now: float) -> list[str]:
        """Devices whose pool is due for replacement from scratch, idle ones first, at most
        `per_tick`; each is put to `resync` (the daemon sends it a Rekey)."""
        busy = {device for entries in self.sessions.values() for device, _ in entries}
        oldest = now - self.refresh_s * (1 - SPREAD)  # no pool younger is due yet
        due = [(device in busy, self.due_at(device, established), device)
               for device, established in self.store.ready_before(oldest)
               if now >= self.due_at(device, established)]
        chosen = [device for in_use, _, device in sorted(due) if not in_use][:self.per_tick]
        for device in chosen:
            self.store.set_state(device, "resync")
        return chosen
