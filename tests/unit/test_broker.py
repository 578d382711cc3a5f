"""Chained call keys (seed 003): known-answer vectors computed independently with hashlib and
hmac, the wrapping's context binding, the device's pool, and the threat model's claims
(docs/protocol.md §13)."""

import hashlib
import hmac
import struct

import pytest

from common.broker import keys as bk
from common.broker.broker import Broker
from common.broker.device import DevicePool
from common.broker.headers import (
    KeyDelivery,
    Refresh,
    parse_key_delivery,
    parse_refresh,
)
from common.broker.keys import BrokerKey, BrokerKeyError, KeyId
from common.calls.sip import SipError
from common.crypto import Key
from common.crypto.master_key import MasterKeys
from sigctl.broker_store import BrokerStore

# docs/protocol.md §13 vectors.
SUBKEY = Key(18, bytes(range(32)))
CHANNEL = "226dab56488f639c9a28676f5d413897a6000d7d55095e19f373b1a5b613642e"
POOL_7 = ["4d0e7ff0599d42c152e8a65e67039f3f1176720840786abebe066b93db6a1b18",
          "92c9544b335db965f9bb329a38265edb5494e2edc3944c5607de594415ece7e2"]
KEK = "c9e08c3623bc30d5d2394afa6cb9d1c5c4c111949f43d006c037c91cff3c43dc"
WRAP = "d0c9d8d4e6c9f0017eddedc73a8b82657aa2dd26cce87bd322ff882ea4fbec981251478810f5b271"
PROOF = "1829495552bfd3d9f37bd180484bce96dc2bf4881283d4e9a6c349101110ed69"


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 with hmac directly: extract, then one block of expand."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def field(text: str) -> bytes:
    return struct.pack(">H", len(text)) + text.encode()


def test_known_answer_vectors_match_an_independent_computation():
    channel = bk.channel_secret(SUBKEY)  # the Kerberos PRF+ (RFC 6113), itself vector-tested
    assert channel.hex() == CHANNEL
    for slot, expected in enumerate(POOL_7):
        independent = hkdf_sha256(channel, b"", b"telekey broker pool v1" +
                                  struct.pack(">IB", 7, slot))
        assert independent.hex() == expected
    assert [k.hex() for k in bk.pool_keys(channel, 7, 2)] == POOL_7
    key_id = KeyId(7, 1, 0)
    wrapping, secret = b"\x22" * 32, b"\x33" * 32
    independent_kek = hkdf_sha256(wrapping, secret, b"telekey broker kek v1" + field("cta/00bb")
                                  + field("cta/00aa") + struct.pack(">IBI", 7, 1, 0)
                                  + field("c1@lab.test"))
    assert independent_kek.hex() == KEK
    assert bk.kek(wrapping, secret, holder="cta/00bb", owner="cta/00aa", key_id=key_id,
                  session="c1@lab.test").hex() == KEK
    key = BrokerKey("cta/00aa", key_id, bytes.fromhex(POOL_7[1]))
    assert bk.wrap(wrapping, secret, key, holder="cta/00bb", session="c1@lab.test").hex() == WRAP
    assert hashlib.sha256(b"telekey broker ack v1" + struct.pack(">IBI", 7, 1, 0) +
                          key.key).hexdigest() == PROOF == bk.key_proof(key_id, key.key)


def test_a_wrapped_key_opens_only_in_its_own_context():
    wrapping, secret = b"\x22" * 32, b"\x33" * 32
    key = BrokerKey("cta/00aa", KeyId(7, 1, 0), b"\x44" * 32)
    wrapped = bk.wrap(wrapping, secret, key, holder="cta/00bb", session="c1")
    context = {"holder": "cta/00bb", "owner": "cta/00aa", "key_id": KeyId(7, 1, 0),
               "session": "c1"}
    assert bk.unwrap(wrapping, secret, wrapped, **context) == key
    for change in ({"holder": "cta/00cc"}, {"owner": "cta/00cc"},
                   {"key_id": KeyId(7, 1, 1)}, {"key_id": KeyId(6, 1, 0)},
                   {"session": "c2"}):
        with pytest.raises(BrokerKeyError):
            bk.unwrap(wrapping, secret, wrapped, **(context | change))
    with pytest.raises(BrokerKeyError):  # another SA's channel secret
        bk.unwrap(wrapping, b"\x34" * 32, wrapped, **context)
    with pytest.raises(BrokerKeyError):  # truncated
        bk.unwrap(wrapping, secret, wrapped[:-8], **context)


class Plain:
    """The agent wraps under a token-derived KEK; here wrapping is a visible tag."""

    def wrap(self, key: bytes) -> bytes:
        return b"w" + key

    def unwrap(self, wrapped: bytes) -> bytes:
        return wrapped[1:]


@pytest.fixture
def broker(tmp_path):
    store = BrokerStore(f"sqlite:///{tmp_path}/broker.db",
                        MasterKeys.from_master_keys({1: b"\x01" * 32}))
    yield Broker(store, slots=2, refresh_s=100.0)
    store.close()


def _pool(broker: Broker, device: str, secret: bytes, now: float = 1000.0) -> DevicePool:
    pool = DevicePool(device, Plain())
    offer = broker.offer(device, secret, now)
    assert broker.pool_acked(device, pool.accept_pool(offer, secret), now)
    return pool


def test_a_session_then_its_refresh_and_what_the_caller_can_do_with_it(broker):
    """The caller learns K_callee; the refresh {K_next}K_callee travels inside the callee's
    SA and is bound to its channel secret, so even its plaintext gives the caller nothing."""
    a_secret, b_secret = b"\xaa" * 32, b"\xbb" * 32
    pool_a, pool_b = _pool(broker, "cta/a", a_secret), _pool(broker, "cta/b", b_secret)
    session_key = broker.take("cta/b", "s1")
    wrapping = broker.take("cta/a", "s1")
    delivery = Broker.deliver("cta/a", wrapping, session_key, a_secret, 256, "s1")
    k_callee = pool_a.call_key(parse_key_delivery(delivery.encode()), a_secret, "s1")
    assert k_callee.key == pool_b.call_key(KeyDelivery(256, "cta/b", session_key.key_id),
                                           b_secret, "s1").key == session_key.key

    assert sorted(broker.session_ended("s1")) == [("cta/a", wrapping.key_id.slot),
                                                  ("cta/b", session_key.key_id.slot)]
    refresh = broker.refresh_message("cta/b", session_key.key_id.slot, b_secret)
    assert refresh is not None
    recorded = parse_refresh(refresh.encode())
    for guess in (a_secret, k_callee.key, b"", bytes(32)):
        with pytest.raises(BrokerKeyError):
            bk.unwrap(k_callee.key, guess, recorded.wrapped, holder="cta/b", owner="cta/b",
                      key_id=recorded.key_id, session="s1")
    ack = pool_b.accept_refresh(recorded, b_secret)
    assert broker.refresh_acked("cta/b", ack)
    # The broker holds the next generation only; the callee refuses the old key.
    next_key = broker.store.keys("cta/b")[session_key.key_id.slot]
    assert next_key.key_id == session_key.key_id.next() and next_key.key != session_key.key
    with pytest.raises(BrokerKeyError, match="NOT_CURRENT_KEY"):
        pool_b.call_key(KeyDelivery(258, "cta/b", session_key.key_id), b_secret, "s2")
    # The same refresh again (the broker's retry): acknowledged with what is held.
    assert pool_b.accept_refresh(recorded, b_secret).proof == ack.proof


def test_replayed_truncated_and_foreign_refreshes_are_refused_and_the_key_stays(broker):
    secret = b"\xbb" * 32
    pool = _pool(broker, "cta/b", secret)
    other = _pool(broker, "cta/c", b"\xcc" * 32)

    def session(name: str) -> Refresh:
        key = broker.take("cta/b", name)
        assert key is not None and key.key_id.slot == 0
        broker.session_ended(name)
        refresh = broker.refresh_message("cta/b", 0, secret)
        assert refresh is not None
        assert broker.refresh_acked("cta/b", pool.accept_refresh(refresh, secret))
        return refresh

    first, second = session("s1"), session("s2")
    held = dict(pool.slots)
    assert held[0][0] == 2
    with pytest.raises(BrokerKeyError, match="STALE_REFRESH"):
        pool.accept_refresh(first, secret)  # replayed: an older generation
    with pytest.raises(SipError):  # truncated below the RFC 5649 minimum
        parse_refresh(Refresh(second.key_id, second.wrapped[:4], "s2").encode())
    with pytest.raises(BrokerKeyError):  # truncated, and for the next generation
        pool.accept_refresh(Refresh(second.key_id.next(), second.wrapped[:-8], "s3"), secret)
    with pytest.raises(BrokerKeyError):  # another device's refresh
        other.accept_refresh(Refresh(KeyId(other.epoch or 0, 0, 1), second.wrapped, "s2"),
                             b"\xcc" * 32)
    assert pool.slots == held


def test_a_key_never_serves_two_sessions_at_the_device(broker):
    secret = b"\xbb" * 32
    pool = _pool(broker, "cta/b", secret)
    key_id = KeyId(pool.epoch or 0, 0, 0)
    pool.call_key(KeyDelivery(256, "cta/b", key_id), secret, "s1")
    pool.call_key(KeyDelivery(256, "cta/b", key_id), secret, "s1")  # a retransmission
    with pytest.raises(BrokerKeyError, match="KEY_ALREADY_USED"):
        pool.call_key(KeyDelivery(258, "cta/b", key_id), secret, "s2")


def test_an_empty_pool_gives_no_key_and_restart_state_needs_a_new_pool(broker):
    _pool(broker, "cta/b", b"\xbb" * 32)
    assert broker.take("cta/b", "s1") and broker.take("cta/b", "s2")
    assert broker.take("cta/b", "s3") is None  # never a key reused
    assert not broker.offer_due("cta/b", 1001.0)  # sessions s1, s2 live here
    restarted = Broker(broker.store, slots=2, refresh_s=100.0)
    assert restarted.offer_due("cta/b", 1001.0)  # keys taken by sessions nobody knows


def test_the_periodic_refresh_spreads_and_takes_idle_devices_first(broker):
    devices = [f"cta/{i:03d}" for i in range(40)]
    for device in devices:
        _pool(broker, device, device.encode().ljust(32, b"."), now=0.0)
    due = [broker.due_at(d, 0.0) for d in devices]
    assert all(50.0 <= t < 100.0 for t in due) and max(due) - min(due) > 30.0
    busy = devices[0]
    broker.take(busy, "s1")
    broker.per_tick = 100
    chosen = broker.periodic(100.0)
    assert busy not in chosen and set(chosen) == set(devices[1:])
    assert all(broker.store.pool(d).state == "resync" for d in chosen)
    broker.session_ended("s1")
