"""The generator g (seed 002: "Key generator, g, is a unique key identifier for each K_g ...
includes 128 bits ... a field that is unique to the specific Key generating agent ... another
field unique to the packet switched device, such as its extension ... a counter field"). No
I/O.

Layout, big-endian, 16 bytes:

    0..1   server id: 1..65535, administered, different on every key server sharing a seed
    2..7   extension tag: the first 6 bytes of SHA-256("telekey-enterprise-ext:"‖EXT)
    8..15  counter: 64 bits, below 2^63; starts at a random value below 2^62 when a key
           server's database is made (the document's random g_0), +1 per key file

Distinct server ids make two key servers' generators disjoint; within one server the counter
is reserved in committed blocks (`CounterBlocks`) before any key leaves, so no value repeats
across restarts, `kill -9` included. The random start also keeps two servers mistakenly given
the same id apart unless their ranges meet (about n/2^61 for n keys each). The tag binds g to the
extension it was issued for: the advanced service refuses K_g for a (g, EXT) pair whose tag
does not match. The tag hides nothing (extensions are short), and needs not to.
"""

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from common.enterprise.keys import GENERATOR_BYTES

SERVER_ID_MAX: Final = 0xFFFF
EXT_TAG_BYTES: Final = 6
COUNTER_BYTES: Final = 8
# Below 2^63: a counter is a signed 64-bit integer in the key server's database.
COUNTER_LIMIT: Final = 1 << 63
START_LIMIT: Final = 1 << 62
EXT_TAG_LABEL: Final = b"telekey-enterprise-ext:"
# H.225.0 dialedDigits use "0123456789#*,"; an extension is 1 to 32 of "0123456789*#".
EXTENSION: Final = re.compile(r"[0-9*#]{1,32}")


def check_extension(ext: str) -> str:
    """`ext` if it is 1 to 32 of the characters 0-9, * and #; ValueError otherwise."""
    if not EXTENSION.fullmatch(ext):
        raise ValueError("an extension is 1 to 32 of the characters 0-9, * and #")
    return ext


def extension_tag(ext: str) -> bytes:
    return hashlib.sha256(EXT_TAG_LABEL + check_extension(ext).encode("ascii")).digest()[
        :EXT_TAG_BYTES]


@dataclass(frozen=True, slots=True)
class Generator:
    """A parsed generator."""

    server_id: int
    ext_tag: bytes
    counter: int

    def issued_for(self, ext: str) -> bool:
        """Whether this generator's tag is that of `ext`."""
        return self.ext_tag == extension_tag(ext)


def make_generator(server_id: int, ext: str, counter: int) -> bytes:
    """g for key server `server_id`, extension `ext` and counter value `counter`."""
    if not 1 <= server_id <= SERVER_ID_MAX:
        raise ValueError(f"a server id is 1 to {SERVER_ID_MAX}")
    if not 0 <= counter < COUNTER_LIMIT:
        raise ValueError("counter out of range")
    return (server_id.to_bytes(2, "big") + extension_tag(ext)
            + counter.to_bytes(COUNTER_BYTES, "big"))


def parse_generator(data: bytes) -> Generator:
    """The fields of a 16-byte generator; ValueError for another length or server id 0."""
    if len(data) != GENERATOR_BYTES:
        raise ValueError(f"a generator is {GENERATOR_BYTES} bytes")
    server_id = int.from_bytes(data[:2], "big")
    if server_id == 0:
        raise ValueError("server id 0 is never issued")
    return Generator(server_id, data[2:2 + EXT_TAG_BYTES],
                     int.from_bytes(data[2 + EXT_TAG_BYTES:], "big"))


def random_counter_start(random: Callable[[int], bytes] = os.urandom) -> int:
    """A key server's first counter value: uniform below 2^62 (the document's random g_0),
    leaving at least 2^62 values before the counter reaches 2^63."""
    return int.from_bytes(random(8), "big") % START_LIMIT


class CounterBlocks:
    """The counter values a key server has reserved in its database and not used yet. The
    server commits a reservation of [start, start + count) first and only then calls `add`;
    `take` hands out values in order and returns None when a new block must be reserved.
    Values of a block lost in a crash are skipped, never reused. No I/O."""

    def __init__(self) -> None:
        self._next = 0
        self._end = 0

    @property
    def remaining(self) -> int:
        return self._end - self._next

    def add(self, start: int, count: int) -> None:
        """Use the committed block [start, start + count) from now on (the rest of the old
        one, if any, is dropped)."""
        if count < 1 or start < 0 or start + count > COUNTER_LIMIT:
            raise ValueError("bad counter block")
        self._next, self._end = start, start + count

    def drop(self) -> None:
        """Forget the rest of the current block (the next `take` asks for a new one)."""
        self._next = self._end

    def take(self) -> int | None:
        if self._next >= self._end:
            return None
        value = self._next
        self._next += 1
        return value
