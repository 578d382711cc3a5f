"""The SIP header values that carry broker keys (telekey profile v1). No I/O.

Each value is `name=value` parameters separated by `;`, in any order; unknown parameters are
ignored (a later version may add some), a missing or malformed one is SipError 400.

- `Broker-Key` (INVITE to the callee, 200 to the caller, INVITE to a conference's third
  party, INVITE and 200 between controllers): `owner` (the key's device), `key` (E.i.g),
  `spi`; with `wrap` + `by` (an RFC 5649 wrap for the recipient under its key `by`), or
  `link-wrap` (between controllers), or `session` (a conference host's existing call); only
  `spi` in a chained INVITE between controllers.
- `Broker-Pool` (MESSAGE to a device): `epoch`, `slots`.
- `Broker-Refresh` (MESSAGE to a device): `key` (the new E.i.g), `wrap`, `session`.
- `Broker-Ack` (the device's 200 to either MESSAGE): `epoch` or `key`, and `proof`.
- `Conference` (a conference host's INVITE): the Call-ID of the call whose session key the
  new party joins.
"""

import base64
import binascii
from dataclasses import dataclass

from common.broker.keys import MAX_SLOTS, KeyId
from common.calls.sip import SipError

MAX_WRAPPED = 64


def parse_params(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, text = part.strip().partition("=")
        if not name:
            continue
        if not sep:
            raise SipError(400, "Bad Broker Parameter")
        params[name.lower()] = text.strip()
    return params


def encode_params(**params: str | int | None) -> str:
    return ";".join(f"{name.replace('_', '-')}={value}" for name, value in params.items()
                    if value is not None)


def _b64(text: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SipError(400, "Bad Wrapped Key") from exc
    if not 8 <= len(data) <= MAX_WRAPPED:
        raise SipError(400, "Bad Wrapped Key")
    return data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _key_id(text: str | None) -> KeyId:
    if text is None:
        raise SipError(400, "Missing Broker Key Id")
    try:
        return KeyId.parse(text)
    except Exception as exc:
        raise SipError(400, "Bad Broker Key Id") from exc


def _spi(text: str | None) -> int:
    if text is None or not text.isdigit() or not 256 <= int(text) < 2**32 - 1:
        raise SipError(400, "Bad Broker SPI")
    return int(text)


@dataclass(frozen=True)
class KeyDelivery:
    """A `Broker-Key` value."""
    spi: int
    owner: str | None = None
    key_id: KeyId | None = None
    wrapped: bytes | None = None
    by: KeyId | None = None  # the recipient's key that wraps (with `wrapped`)
    link_wrapped: bytes | None = None
    session: str | None = None  # a conference: the host's call that holds the key

    def encode(self) -> str:
        return encode_params(
            owner=self.owner, key=None if self.key_id is None else str(self.key_id),
            spi=self.spi, wrap=None if self.wrapped is None else b64(self.wrapped),
            by=None if self.by is None else str(self.by),
            link_wrap=None if self.link_wrapped is None else b64(self.link_wrapped),
            session=self.session)


def parse_key_delivery(value: str) -> KeyDelivery:
    p = parse_params(value)
    spi = _spi(p.get("spi"))
    if set(p) & {"key", "owner", "wrap", "by", "link-wrap", "session"} == set():
        return KeyDelivery(spi)  # a chained INVITE between controllers
    owner = p.get("owner")
    if not owner or len(owner) > 255:
        raise SipError(400, "Bad Broker Key Owner")
    delivery = KeyDelivery(spi, owner, _key_id(p.get("key")),
                           _b64(p["wrap"]) if "wrap" in p else None,
                           _key_id(p["by"]) if "by" in p else None,
                           _b64(p["link-wrap"]) if "link-wrap" in p else None,
                           p.get("session") or None)
    if (delivery.wrapped is None) != (delivery.by is None):
        raise SipError(400, "Bad Broker Key")
    return delivery


@dataclass(frozen=True)
class PoolOffer:
    epoch: int
    slots: int

    def encode(self) -> str:
        return encode_params(epoch=self.epoch, slots=self.slots)


def parse_pool_offer(value: str) -> PoolOffer:
    p = parse_params(value)
    epoch, slots = p.get("epoch", ""), p.get("slots", "")
    if not (epoch.isdigit() and slots.isdigit() and len(epoch) <= 10
            and int(epoch) < 2**32 and 1 <= int(slots) <= MAX_SLOTS):
        raise SipError(400, "Bad Broker-Pool")
    return PoolOffer(int(epoch), int(slots))


@dataclass(frozen=True)
class Refresh:
    key_id: KeyId  # the new key's
    wrapped: bytes
    session: str

    def encode(self) -> str:
        return encode_params(key=str(self.key_id), wrap=b64(self.wrapped), session=self.session)


def parse_refresh(value: str) -> Refresh:
    p = parse_params(value)
    if "wrap" not in p or not p.get("session"):
        raise SipError(400, "Bad Broker-Refresh")
    return Refresh(_key_id(p.get("key")), _b64(p["wrap"]), p["session"])


@dataclass(frozen=True)
class Ack:
    proof: str
    epoch: int | None = None  # a pool's
    key_id: KeyId | None = None  # a refreshed key's

    def encode(self) -> str:
        return encode_params(epoch=self.epoch,
                             key=None if self.key_id is None else str(self.key_id),
                             proof=self.proof)


def parse_ack(value: str) -> Ack:
    p = parse_params(value)
    proof = p.get("proof", "")
    if len(proof) != 64:
        raise SipError(400, "Bad Broker-Ack")
    epoch = p.get("epoch")
    if epoch is not None:
        if not epoch.isdigit() or len(epoch) > 10:
            raise SipError(400, "Bad Broker-Ack")
        return Ack(proof, epoch=int(epoch))
    return Ack(proof, key_id=_key_id(p.get("key")))
