"""Every decoder in common/, given arbitrary bytes, returns a value or raises MalformedMessage:
never another exception, never a hang.

The decoders are discovered (every public `decode_*` of common.messages.*, plus the keytab and
ccache parsers) so a new decoder is fuzzed without anyone remembering to add it. Inputs are
random bytes and MIT's fixture messages mutated: truncated, bit-flipped, spliced and sliced at
random points (slices land on inner TLVs, which reaches nested structures random bytes never
would).
"""

import importlib
import inspect
import pkgutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import common.messages
from common.ccache import decode_ccache
from common.errors import MalformedMessage
from common.keytab import decode_keytab
from tests.conftest import MIT_FIXTURES

EXAMPLES = 2000


def _decoders():
    found = {"keytab.decode_keytab": decode_keytab, "ccache.decode_ccache": decode_ccache}
    for info in pkgutil.iter_modules(common.messages.__path__):
        module = importlib.import_module(f"common.messages.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("decode_") and fn.__module__ == module.__name__ and \
                    list(inspect.signature(fn).parameters)[:1] == ["data"] and \
                    name not in ("decode_der", "decode_asn1", "decode_der_reference"):
                found[f"{info.name}.{name}"] = fn
    return found


DECODERS = _decoders()
SEEDS = [p.read_bytes() for p in sorted(MIT_FIXTURES.glob("*"))
         if p.suffix in (".der", ".keytab")]


def test_discovery_finds_the_codecs():
    assert len(DECODERS) >= 39
    for name in ("ap_req.decode_ap_req", "kdc_req.decode_as_req", "pkinit.decode_auth_pack",
                 "cms.decode_signed_data", "ticket.decode_enc_ticket_part"):
        assert name in DECODERS


@st.composite
def hostile_bytes(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    start = draw(st.integers(0, len(data) - 1))
    end = draw(st.integers(start, len(data)))
    data = data[start:end] if draw(st.booleans()) else data
    for _ in range(draw(st.integers(0, 4))):
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
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoder_returns_value_or_malformed(name):
    decode = DECODERS[name]

    @settings(max_examples=EXAMPLES, deadline=2000, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(hostile_bytes())
    def check(data):
        try:
            decode(data)
        except MalformedMessage:
            pass

    check()
