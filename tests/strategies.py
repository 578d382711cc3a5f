"""Hypothesis strategies shared by the fuzz tests: hostile variations of real messages."""

from hypothesis import strategies as st


@st.composite
def mutated(draw, seeds: list[bytes], max_edits: int = 4):
    """A seed, optionally sliced, then flipped/cut/spliced/overwritten at random points."""
    data = bytearray(draw(st.sampled_from(seeds)))
    if data and draw(st.booleans()):
        start = draw(st.integers(0, len(data) - 1))
        data = data[start : draw(st.integers(start, len(data)))]
    for _ in range(draw(st.integers(1, max_edits))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "byte"]))
        if action == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[pos:]
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x30, 0x7F, 0x80, 0x81, 0x82, 0xA0,
                                              0xFF, draw(st.integers(0, 255))]))
    return bytes(data)
