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
from common.errors import MalformedMessage
from common.kerberos.ccache import decode_ccache
from common.kerberos.keytab import decode_keytab
from tests.conftest import MIT_FIXTURES, fuzz_examples
from tests.strategies import mutated

# The CI run; `make fuzz` runs each decoder up to 100 times longer, from mutated real messages.
EXAMPLES = fuzz_examples(600)


def _decoders():
    found = {"keytab.decode_keytab": decode_keytab, "ccache.decode_ccache": decode_ccache}
    seen = set(found.values())
    for info in pkgutil.iter_modules(common.messages.__path__):
        module = importlib.import_module(f"common.messages.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            # Every public decoder takes the bytes alone; base's generic ones take a schema.
            if name.startswith("decode_") and fn not in seen and \
                    list(inspect.signature(fn).parameters) in (["data"], ["data", "expected_type"]):
                found[f"{info.name}.{name}"] = fn
                seen.add(fn)
    return found


DECODERS = _decoders()
SEEDS = [p.read_bytes() for p in sorted(MIT_FIXTURES.glob("*"))
         if p.suffix in (".der", ".keytab")]


def test_discovery_finds_the_codecs():
    assert len(DECODERS) >= 39
    for name in ("ap_req.decode_ap_req", "kdc_req.decode_as_req", "pkinit.decode_auth_pack",
                 "cms.decode_signed_data", "ticket.decode_enc_ticket_part"):
        assert name in DECODERS


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoder_returns_value_or_malformed(name):
    decode = DECODERS[name]

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.binary(max_size=300) | mutated(SEEDS))
    def check(data):
        try:
            decode(data)
        except MalformedMessage:
            pass

    check()
