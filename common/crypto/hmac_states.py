"""HMAC (RFC 2104) with each key's inner and outer hash states computed once.

`hmac.digest` starts from the key every time: pad it, hash the two padded blocks, then the
message. A Kerberos usage key, a PacketCable message key or an ESP integrity key signs many
messages, so the two keyed states are kept per key (as `_ecb` keeps AES key schedules) and
each message costs two copies of a hash state and the hashing of the message alone. The
result is the same bytes as `hmac.digest` (tests/unit/test_hmac_states.py, RFC 2202/4231).
"""

import functools
import hashlib
from typing import Any

_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


_HASHES: dict[str, tuple[Any, int]] = {  # name -> (constructor, block size)
    name: (getattr(hashlib, name), getattr(hashlib, name)().block_size)
    for name in ("sha1", "sha256", "sha384")}


@functools.lru_cache(maxsize=4096)
def _states(key: bytes, name: str) -> tuple[Any, Any]:
    """(inner, outer) hash states after the padded key. Bounded: at most 4096 keys."""
    new, block = _HASHES[name]
    if len(key) > block:
        key = new(key).digest()
    key = key.ljust(block, b"\x00")
    return new(key.translate(_IPAD)), new(key.translate(_OPAD))


def hmac_digest(key: bytes, data: bytes, name: str) -> bytes:
    """HMAC-`name` ("sha1", "sha256" or "sha384") of `data` under `key`."""
    inner, outer = _states(key, name)
    inner = inner.copy()
    inner.update(data)
    outer = outer.copy()
    outer.update(inner.digest())
    result: bytes = outer.digest()
    return result
