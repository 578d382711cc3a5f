"""The device's side of its broker-key pool (seed 003), telekey profile v1. No I/O.

The pool is kept as the device stores it: each key wrapped by a `KeyWrapper` (the agent's
wraps under a key in its PKCS#11 token), unwrapped only to be used. What the broker sends, and
what the device does:

- `Broker-Pool` (epoch E, n slots), inside the SA whose channel secret derives it: the old
  pool is replaced by generation 0 of E's keys; the acknowledgement proves the new pool.
- `Broker-Refresh` (key E.i.g, wrap, session): the slot's key g-1 unwraps key g (the KEK also
  takes the SA's channel secret, so the bytes are useless to anyone without this SA: the
  caller who knew g-1 included); g replaces g-1, which is erased. A refresh for the
  generation we hold already (the broker's retry after a lost acknowledgement) is answered
  with the proof of what we hold; any other — older, of another epoch, another device's, or
  one that does not unwrap — is refused, and the current key stays.
- A call's key: our own key E.i.g (we are the callee), or a key wrapped under our key `by`.
  A key of ours that served one session is never accepted for another: the broker replaces it
  after the session, and until then the device refuses to use it again.
"""

import base64
from dataclasses import dataclass, field
from typing import Protocol

from common.broker import keys as bk
from common.broker.headers import Ack, KeyDelivery, PoolOffer, Refresh
from common.broker.keys import BrokerKeyError, KeyId

MAX_USED = 256


class KeyWrapper(Protocol):
    def wrap(self, key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


@dataclass
class DevicePool:
    me: str  # our principal, without realm
    wrapper: KeyWrapper
    epoch: int | None = None
    slots: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # slot → (g, wrapped)
    used: dict[str, str] = field(default_factory=dict)  # key id → the session it served

    def __repr__(self) -> str:
        return f"DevicePool({self.me}, epoch={self.epoch}, slots={len(self.slots)})"

    # Persistence (the daemon writes it to a 0600 file) ---------------------------------

    def to_record(self) -> dict[str, object]:
        return {"format": "telekey-broker-pool", "version": 1, "me": self.me,
                "epoch": self.epoch,
                "slots": {str(i): [g, base64.b64encode(w).decode()]
                          for i, (g, w) in sorted(self.slots.items())},
                "used": dict(self.used)}

    @classmethod
    def from_record(cls, record: dict[str, object], me: str, wrapper: KeyWrapper
                    ) -> "DevicePool":
        if record.get("format") != "telekey-broker-pool" or record.get("me") != me:
            raise ValueError("not this device's broker pool")
        slots_record = record["slots"]
        used = record.get("used", {})
        if not isinstance(slots_record, dict) or not isinstance(used, dict):
            raise ValueError("broker pool record: bad fields")
        epoch = record.get("epoch")
        return cls(me, wrapper, epoch if isinstance(epoch, int) else None,
                   {int(i): (int(g), base64.b64decode(w)) for i, (g, w) in slots_record.items()},
                   {str(k): str(v) for k, v in used.items()})

    def generations(self) -> dict[str, str]:
        """Identifiers of the keys held (for status and logs; never key bytes)."""
        return {str(i): str(KeyId(self.epoch or 0, i, g)) for i, (g, _) in self.slots.items()}

    # What the broker sends -----------------------------------------------------------

    def accept_pool(self, offer: PoolOffer, secret: bytes) -> Ack:
        new = bk.pool_keys(secret, offer.epoch, offer.slots)
        self.epoch = offer.epoch
        self.slots = {i: (0, self.wrapper.wrap(k)) for i, k in enumerate(new)}
        self.used.clear()
        return Ack(bk.pool_proof(offer.epoch, new), epoch=offer.epoch)

    def _held(self, key_id: KeyId) -> bytes:
        """Our key `key_id`, unwrapped; BrokerKeyError unless it is the one we hold."""
        held = self.slots.get(key_id.slot)
        if self.epoch != key_id.epoch or held is None or held[0] != key_id.generation:
            raise BrokerKeyError("NOT_CURRENT_KEY", str(key_id))
        return self.wrapper.unwrap(held[1])

    def accept_refresh(self, refresh: Refresh, secret: bytes) -> Ack:
        new_id = refresh.key_id
        held = self.slots.get(new_id.slot)
        if self.epoch != new_id.epoch or held is None:
            raise BrokerKeyError("NOT_CURRENT_KEY", str(new_id))
        if held[0] == new_id.generation:  # a retry: we hold it already
            return Ack(bk.key_proof(new_id, self.wrapper.unwrap(held[1])), key_id=new_id)
        if held[0] + 1 != new_id.generation:
            raise BrokerKeyError("STALE_REFRESH", f"{new_id}, holding generation {held[0]}")
        old = self.wrapper.unwrap(held[1])
        new = bk.unwrap(old, secret, refresh.wrapped, holder=self.me, owner=self.me,
                        key_id=new_id, session=refresh.session)
        self.slots[new_id.slot] = (new_id.generation, self.wrapper.wrap(new.key))
        self.used.pop(str(KeyId(new_id.epoch, new_id.slot, held[0])), None)
        return Ack(bk.key_proof(new_id, new.key), key_id=new_id)

    def _use(self, key_id: KeyId, session: str) -> None:
        served = self.used.get(str(key_id))
        if served is not None and served != session:
            raise BrokerKeyError("KEY_ALREADY_USED", f"{key_id} served {served}")
        self.used[str(key_id)] = session
        if len(self.used) > MAX_USED:
            del self.used[next(iter(self.used))]

    def call_key(self, delivery: KeyDelivery, secret: bytes, session: str) -> bk.BrokerKey:
        """The session key a `Broker-Key` delivers (not a conference host's `session` form,
        which names a call the user agent already holds)."""
        if delivery.owner is None or delivery.key_id is None:
            raise BrokerKeyError("NO_KEY_DELIVERED")
        if delivery.wrapped is None:
            if delivery.owner != self.me:
                raise BrokerKeyError("NOT_OUR_KEY", delivery.owner)
            key = self._held(delivery.key_id)
            self._use(delivery.key_id, session)
            return bk.BrokerKey(self.me, delivery.key_id, key)
        assert delivery.by is not None  # parse_key_delivery insists
        wrapping = self._held(delivery.by)
        delivered = bk.unwrap(wrapping, secret, delivery.wrapped, holder=self.me,
                              owner=delivery.owner, key_id=delivery.key_id, session=session)
        self._use(delivery.by, session)
        return delivered
