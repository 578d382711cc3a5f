"""The lean DER codec (common/messages/der.py) equals the pyasn1 reference.

For every registered schema: on MIT's bytes and on fuzzed bytes, both accept or both reject
(MalformedMessage), accepted input gives equal values, and encoding those values gives the same
bytes through both encoders. Seeds are every TLV found at any depth in MIT's fixtures, so each
schema is fuzzed from valid encodings of itself.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import common.messages.ap_rep
import common.messages.ap_req
import common.messages.cms
import common.messages.kdc_rep
import common.messages.kdc_req
import common.messages.krb_cred
import common.messages.krb_error
import common.messages.krb_priv
import common.messages.krb_safe
import common.messages.padata
import common.messages.pkinit  # noqa: F401  (registers the dataclasses)
from common.errors import MalformedMessage
from common.messages.asn1 import rfc4120, rfc4556, rfc5652
from common.messages.base import (
    _BY_SCHEMA,
    decode_der,
    decode_der_reference,
    encode_der,
    encode_der_reference,
)
from common.messages.der import read_header
from tests.conftest import MIT_FIXTURES, fuzz_examples
from tests.strategies import mutated

# The CI run; `make fuzz` runs each schema up to 100 times longer.
EXAMPLES = fuzz_examples(300)
LIST_SCHEMAS = [rfc4120.METHOD_DATA, rfc4120.TYPED_DATA, rfc4120.ETYPE_INFO2,
                rfc4120.AuthorizationData, rfc4120.HostAddresses, rfc4120.LastReq,
                rfc4556.TD_DH_PARAMETERS, rfc4556.TD_TRUSTED_CERTIFIERS,
                rfc5652.SignedAttributes]
SCHEMAS = {cls.__name__: cls() for cls in [*_BY_SCHEMA, *LIST_SCHEMAS]}


def _tlvs(data: bytes, start: int, end: int, out: list[bytes], depth: int = 0) -> None:
    """Every well-formed TLV inside data[start:end], recursively (also inside primitive values,
    where DER travels wrapped in OCTET STRINGs and implicit tags)."""
    pos = start
    while pos < end and depth < 40:
        try:
            content, stop = read_header(data, pos + 1, end)
        except MalformedMessage:
            return
        out.append(data[pos:stop])
        if data[pos] & 0x20 or data[pos] in (0x04, 0x80, 0x81, 0x82):
            _tlvs(data, content, stop, out, depth + 1)
        pos = stop


def _corpus() -> list[bytes]:
    out: list[bytes] = []
    for path in sorted(MIT_FIXTURES.glob("*.der")):
        data = path.read_bytes()
        _tlvs(data, 0, len(data), out)
    return sorted(set(out), key=lambda b: (len(b), b))


CORPUS = _corpus()


def seeds_for(schema) -> list[bytes]:
    from common.messages.der import _first_identifiers

    first = _first_identifiers(schema)
    matching = [s for s in CORPUS if first is None or s[0] in first]
    return matching or CORPUS


def outcome(decode, data):
    try:
        return ("ok", decode(data))
    except MalformedMessage:
        return ("malformed", None)


def uses_a_leniency(value) -> bool:
    """Whether a decoded value holds a form the lean codec accepts on purpose and DER does not
    (docs/protocol.md, leniencies): Heimdal's constructed subjectKeyIdentifier, which the
    pyasn1 reference reads as the primitive alternative and so refuses as not DER."""
    import dataclasses

    if isinstance(value, common.messages.cms.SignerIdentifier):
        return value.subject_key_identifier_explicit is not None
    if dataclasses.is_dataclass(value):
        return any(uses_a_leniency(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, tuple | list):
        return any(uses_a_leniency(v) for v in value)
    return False


def assert_same(schema, data):
    lean = outcome(lambda d: decode_der(d, schema), data)
    reference = outcome(lambda d: decode_der_reference(d, schema), data)
    if lean[0] == "ok" and reference[0] == "malformed" and uses_a_leniency(lean[1]):
        assert encode_der(lean[1], schema) == data
        return
    assert lean == reference, (type(schema).__name__, data.hex())
    if lean[0] == "ok":
        encoded = encode_der(lean[1], schema)
        assert encoded == encode_der_reference(lean[1], schema)
        # Byte-identical, but for KerberosFlags of other than 32 bits (a leniency), which
        # telekey writes as 32: then what it writes reads back as the same value.
        assert encoded == data or decode_der(encoded, schema) == lean[1]


def test_corpus_is_rich():
    assert len(CORPUS) > 300


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_valid_seeds_agree(name):
    schema = SCHEMAS[name]
    accepted = 0
    for seed in seeds_for(schema):
        assert_same(schema, seed)
        accepted += outcome(lambda d: decode_der(d, schema), seed)[0] == "ok"
    # Schemas that MIT's messages contain must be found in the corpus.
    if name in {"AP_REQ", "Ticket", "EncryptedData", "PrincipalName", "KDC_REQ_BODY",
                "PA_DATA", "SignedData", "SignerInfo", "AuthPack", "PKAuthenticator",
                "KRB_ERROR", "AS_REP", "AlgorithmIdentifier", "ContentInfo"}:
        assert accepted, name


@pytest.mark.parametrize(("name", "hex_data"), [
    # An ANY holding universal tag 0 constructed (0x20): the lean codec accepted it, pyasn1
    # does not (found by test_fuzzed_bytes_agree on 2026-12-05).
    ("OriginatorInfo", "3011a003020101a10a20081b0670686f6e6531"),
    ("OriginatorInfo", "3011a003020101a10a00081b0670686f6e6531"),
    # An untagged ANY whose identifier is in the multi-byte form (here a non-minimal one):
    # the lean codec refused it, the reference accepted it because its ANY check sat behind
    # the OCTET STRING case (pyasn1's Any subclasses OctetString) and never ran.
    ("AlgorithmIdentifier", "300b0603551d0f7f04030203a8"),
    ("AlgorithmIdentifier", "300b0603551d0f7f1f030203a8"),
])
def test_fuzzer_findings_agree(name, hex_data):
    assert_same(SCHEMAS[name], bytes.fromhex(hex_data))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_fuzzed_bytes_agree(name):
    schema = SCHEMAS[name]

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated(seeds_for(schema), max_edits=3) | st.binary(max_size=64))
    def check(data):
        assert_same(schema, data)

    check()


def test_a_kept_type_decodes_once_per_bytes():
    """Ticket is kept by its bytes (asn1_type keep=): the same ticket in two AP-REQs is one
    object, equal to a fresh reference decode; other bytes give another; bad bytes still fail
    every time."""
    from dataclasses import replace

    from common.messages.ap_req import decode_ap_req, encode_ap_req

    data = (MIT_FIXTURES / "apreq_sc1.der").read_bytes()
    first, second = decode_ap_req(data), decode_ap_req(data)
    assert first.ticket is second.ticket
    assert first.ticket == decode_der_reference(data, rfc4120.AP_REQ()).ticket
    other = replace(first.ticket, realm="OTHER.TEST")
    again = decode_ap_req(encode_ap_req(replace(first, ticket=other)))
    assert again.ticket == other and again.ticket is not first.ticket
    ticket_der = encode_der(first.ticket, rfc4120.Ticket())
    inner, _ = read_header(ticket_der, 1, len(ticket_der))  # the SEQUENCE inside [APPLICATION 1]
    broken = data.replace(ticket_der, ticket_der[:inner] + b"\x31" + ticket_der[inner + 1:], 1)
    for _ in range(2):
        with pytest.raises(MalformedMessage):
            decode_ap_req(broken)


def test_first_use_from_many_threads_at_once():
    """Schemas compiled on first use by threads racing each other (a device agent's token
    thread and its event loop; clients in threads): every thread gets working functions."""
    import concurrent.futures

    from common.messages.base import _BY_SCHEMA
    from common.messages.der import Compiler

    data = (MIT_FIXTURES / "asreq_pkinit_dh.der").read_bytes()
    def first_use(compiler: Compiler, schema: object) -> list:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda _: compiler.decoder(schema), range(32)))

    for _ in range(5):  # a fresh compiler each time: every schema compiled on first use
        found = first_use(Compiler(lambda schema_cls: _BY_SCHEMA.get(schema_cls)),
                          rfc4120.AS_REQ())
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            decoded = list(pool.map(lambda decode: decode(data, 0, len(data)), found))
        assert len({id(f) for f in found}) == 1
        assert all(d == decoded[0] for d in decoded)


def test_heimdal_subject_key_identifier_form_is_read():
    """Heimdal names the CMS signer by subjectKeyIdentifier as [0] constructed around an
    OCTET STRING (`A0 16 04 14 ...`), OpenSSL accepts it: so does telekey, and it re-encodes
    the bytes as received. The RFC 5652 form (`80 14 ...`) is what telekey writes."""
    ski = bytes(range(20))
    heimdal = bytes.fromhex("a0160414") + ski
    value = decode_der(heimdal, rfc5652.SignerIdentifier())
    assert value.key_identifier == ski and value.subject_key_identifier is None
    assert encode_der(value, rfc5652.SignerIdentifier()) == heimdal
    rfc = decode_der(bytes.fromhex("8014") + ski, rfc5652.SignerIdentifier())
    assert rfc.key_identifier == ski and rfc.subject_key_identifier_explicit is None
    assert_same(rfc5652.SignerIdentifier(), heimdal)
