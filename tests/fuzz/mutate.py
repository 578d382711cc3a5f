"""Mutations of real messages for the fuzzers: byte-level (bit flips, truncation, inserted
and overwritten bytes, crossover of two seeds) and DER-aware (a TLV's length field changed to
an off-by-one, zero, indefinite, non-minimal, oversized or too-long form; a TLV replaced by one
spliced from another message, duplicated, deleted or re-tagged). DER edits find the TLVs of
the input as it stands, at any depth, so they also reach nested structures of inputs that
earlier edits already damaged. Deterministic given its `random.Random`, so Hypothesis can
replay and shrink it and atheris can drive it from its seed."""

import random
from collections.abc import Sequence
from functools import lru_cache

from common.errors import MalformedMessage
from common.messages.der import encode_length, read_header

INTERESTING_BYTES = (0x00, 0x01, 0x02, 0x04, 0x05, 0x0A, 0x18, 0x1B, 0x30, 0x31, 0x7F, 0x80,
                     0x81, 0x82, 0x84, 0xA0, 0xA1, 0xFF)
TAGS = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0A, 0x0C, 0x13, 0x16, 0x17, 0x18, 0x1B, 0x1F,
        0x30, 0x31, 0x60, 0x61, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F, 0x7E, 0x80, 0x81, 0x82,
        0x9F, 0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xBF)
MAX_DEPTH = 40


def _is_container(data: bytes, start: int) -> bool:
    return bool(data[start] & 0x20) or data[start] in (0x04, 0x80, 0x81, 0x82)


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The well-formed TLVs one after another in data[start:end], up to the first bad one."""
    found = []
    pos = start
    while pos < end:
        try:
            content, stop = read_header(data, pos + 1, end)
        except MalformedMessage:
            break
        found.append((pos, content, stop))
        pos = stop
    return found


@lru_cache(maxsize=8192)
def tlv_spans(data: bytes) -> tuple[tuple[int, int, int], ...]:
    """(start, content start, end) of every well-formed TLV in `data`, at any depth (also inside
    OCTET STRINGs and implicitly tagged primitives, where DER travels wrapped)."""
    spans: list[tuple[int, int, int]] = []

    def walk(start: int, end: int, depth: int) -> None:
        for span in _children(data, start, end):
            spans.append(span)
            if depth < MAX_DEPTH and _is_container(data, span[0]):
                walk(span[1], span[2], depth + 1)

    walk(0, len(data), 0)
    return tuple(spans)


def random_tlv(data: bytes, rnd: random.Random) -> tuple[int, int, int] | None:
    """One TLV of `data`, found by walking down from the top: a random child at each level,
    stopping there with probability 0.3 (cheaper than listing every TLV of a damaged input)."""
    chosen = None
    start, end = 0, len(data)
    for _ in range(MAX_DEPTH):
        children = _children(data, start, end)
        if not children:
            break
        chosen = rnd.choice(children)
        if not _is_container(data, chosen[0]) or rnd.random() < 0.3:
            break
        start, end = chosen[1], chosen[2]
    return chosen


def tlv_pool(seeds: Sequence[bytes], limit: int = 4000) -> list[bytes]:
    """The distinct TLVs found in `seeds`, shortest first: material for splicing."""
    found = {seed[s:e] for seed in seeds for s, _, e in tlv_spans(seed)}
    return sorted(found, key=lambda b: (len(b), b))[:limit]


def _length_variants(length: int, rnd: random.Random) -> bytes:
    choice = rnd.randrange(9)
    if choice == 0:
        return encode_length(max(0, length + rnd.choice((-1, 1))))
    if choice == 1:
        return b"\x00"
    if choice == 2:
        return b"\x80"  # indefinite: BER, never DER
    if choice == 3:  # long form for a short length, or a leading zero: not minimal
        return b"\x81" + bytes((length & 0xFF,)) if length < 0x80 else \
            b"\x83\x00" + length.to_bytes(2, "big")
    if choice == 4:
        return b"\x84\xff\xff\xff\xff"
    if choice == 5:
        return b"\x89" + bytes(9)  # more length octets than any decoder takes
    if choice == 6:
        return b"\x7f"
    if choice == 7:
        return encode_length(length * 2 + 1)
    return encode_length(rnd.randrange(0, 0x10000))


def mutate_once(data: bytearray, pool: Sequence[bytes], others: Sequence[bytes],
                rnd: random.Random) -> bytearray:
    """One edit; DER edits fall back to byte edits when `data` holds no TLV."""
    action = rnd.randrange(12)
    if action >= 6:
        span = random_tlv(bytes(data), rnd)
        if span is not None:
            start, content, end = span
            if action == 6 or action == 7:  # the length field
                return data[:start + 1] + _length_variants(end - content, rnd) + data[content:]
            if action == 8 and pool:  # splice a TLV from another message
                return data[:start] + rnd.choice(pool) + data[end:]
            if action == 9:
                return data[:end] + data[start:end] + data[end:]
            if action == 10:
                return data[:start] + data[end:]
            retagged = bytearray(data)
            retagged[start] = rnd.choice(TAGS) if rnd.random() < 0.8 else rnd.randrange(256)
            return retagged
        action = rnd.randrange(6)
    if not data:
        return bytearray(rnd.randbytes(rnd.randrange(1, 9)))
    pos = rnd.randrange(len(data))
    if action == 0:
        data[pos] ^= 1 << rnd.randrange(8)
    elif action == 1:
        del data[pos:]
    elif action == 2:
        data[pos:pos] = rnd.randbytes(rnd.randrange(1, 9))
    elif action == 3:
        data[pos] = rnd.choice(INTERESTING_BYTES)
    elif action == 4 and others:
        other = rnd.choice(others)
        data = data[:pos] + other[rnd.randrange(len(other) + 1):]
    else:
        del data[pos:pos + rnd.randrange(1, 17)]
    return data


def mutate(seed: bytes, pool: Sequence[bytes], others: Sequence[bytes],
           rnd: random.Random, max_edits: int = 4, max_size: int = 1 << 16) -> bytes:
    """`seed`, maybe sliced to an inner TLV, then 1..max_edits edits."""
    data = bytearray(seed)
    if data and rnd.random() < 0.15:
        spans = tlv_spans(seed)
        if spans:
            start, _, end = rnd.choice(spans)
            data = data[start:end]
    for _ in range(rnd.randint(1, max_edits)):
        data = mutate_once(data, pool, others, rnd)
    return bytes(data[:max_size])
