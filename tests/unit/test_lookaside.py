"""The lookaside cache: same request bytes → same reply within the window, then forgotten;
bounded by dropping the oldest entry."""

from common.kerberos.lookaside import Lookaside


def test_remembers_within_window_and_forgets_after():
    cache = Lookaside(window_s=120, max_entries=10)
    key = Lookaside.key(b"request")
    assert cache.get(key, 0.0) is None
    cache.put(key, b"reply", 0.0)
    assert cache.get(key, 119.9) == b"reply"
    assert cache.get(Lookaside.key(b"request!"), 1.0) is None
    assert cache.get(key, 120.0) is None and len(cache) == 0


def test_bounded_drops_oldest():
    cache = Lookaside(window_s=120, max_entries=3)
    for n in range(5):
        cache.put(Lookaside.key(bytes([n])), bytes([n]), float(n))
    assert len(cache) == 3
    assert cache.get(Lookaside.key(b"\x00"), 5.0) is None
    assert cache.get(Lookaside.key(b"\x04"), 5.0) == b"\x04"


def test_bounded_by_bytes_held():
    cache = Lookaside(window_s=120, max_entries=100, max_bytes=250)
    for n in range(4):  # 100 bytes an entry (request and reply): the oldest two go
        cache.put(Lookaside.key(bytes([n]) * 50), bytes([n]) * 50, float(n))
    assert len(cache) == 2
    assert cache.get(Lookaside.key(b"\x01" * 50), 4.0) is None
    assert cache.get(Lookaside.key(b"\x03" * 50), 4.0) == b"\x03" * 50
    cache.put(Lookaside.key(b"\x03" * 50), b"again", 4.0)  # replaced, not counted twice
    assert cache.get(Lookaside.key(b"\x02" * 50), 4.0) == b"\x02" * 50
