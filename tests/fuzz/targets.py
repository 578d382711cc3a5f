"""What the fuzzers run: each target is a function of untrusted bytes, the exceptions its
documentation allows, its seeds and the number of examples `make test` gives it.

- `decode.*`: every decoder tests/unit/test_decoder_fuzz.py discovers (each public
  `decode_*` of common.messages, the keytab and ccache parsers): a value or MalformedMessage.
- `lean.*`: every schema of tests/unit/test_lean_codec.py: the lean DER codec and the pyasn1
  reference agree on the bytes (both reject, or both accept with equal values that re-encode
  to the input); any disagreement is a failure.
- `pktc.decode`, `esp.open.<suite>` (an inbound SA holding the fixed keys the seeds were
  sealed with), `esp.parse_udp_datagram`, `esp.spi_of`, `sip.parse`, `sdp.parse_sdp`,
  `control.decode_call_key`, `rtp.decode_rtp`, `tcp_framing.RecordBuffer`: the
  non-ASN.1 decoders, each with its own documented error.

`MAIN` names the decoders the coverage-guided (atheris) mode runs.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cache

from common.calls import sip
from common.calls.control import decode_call_key
from common.calls.rtp import decode_rtp
from common.calls.sdp import parse_sdp
from common.errors import FieldTooLong, MalformedMessage
from common.kerberos.tcp_framing import RecordBuffer
from common.pktc import esp, km_framing
from tests.fuzz import corpus
from tests.fuzz.mutate import tlv_pool

MAIN = ("decode.kdc_req.decode_as_req", "decode.kdc_req.decode_tgs_req",
        "decode.ap_req.decode_ap_req", "decode.krb_error.decode_krb_error", "decode.pkinit.*",
        "decode.cms.*", "pktc.decode", "esp.*", "sip.parse")


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    valid: tuple[bytes, ...]  # seeds the target accepts (valid_seeds)
    others: tuple[bytes, ...]  # seeds it refuses: still material for mutation
    ci_examples: int  # what `make test` gives it
    der: bool  # an ASN.1 decoder: splice TLVs from the whole DER corpus

    @property
    def seeds(self) -> tuple[bytes, ...]:
        return self.valid + self.others

    @property
    def main(self) -> bool:
        return is_main(self.name)

    def check(self, data: bytes) -> None:
        """Run the target; the allowed exceptions are outcomes, anything else escapes."""
        try:
            self.run(data)
        except self.allowed:
            pass


def valid_seeds(run: Callable[[bytes], object], candidates: Sequence[bytes]
                ) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """(the candidates `run` accepts, the rest): a decoder is fuzzed mostly from valid
    encodings of its own message."""
    accepted: list[bytes] = []
    rejected: list[bytes] = []
    for data in candidates:
        try:
            run(data)
        except Exception:  # an allowed error, or a bug that the run then reports
            rejected.append(data)
            continue
        accepted.append(data)
    return tuple(accepted), tuple(rejected)


def _record_buffer(data: bytes) -> None:
    """Feed the bytes in two reads split where the data says, then drain the records."""
    buffer = RecordBuffer(max_record=65_536)
    cut = data[0] % (len(data) + 1) if data else 0
    for part in (data[:cut], data[cut:]):
        buffer.feed(part)
        while buffer.next_record() is not None:
            pass


def _esp_open(suite: esp.Suite) -> Callable[[bytes], object]:
    keys = corpus.esp_keys(suite)

    def open_packet(data: bytes) -> object:
        return esp.InboundSa(0x1000, suite, keys).open(data)

    return open_packet


@cache
def der_pool() -> tuple[bytes, ...]:
    return tuple(tlv_pool(corpus.der_corpus()))


@cache
def der_candidates() -> tuple[bytes, ...]:
    """Whole DER messages and every TLV inside them: inner types (AuthPack, SignedData,
    Ticket...) get valid seeds of their own."""
    return tuple(dict.fromkeys((*corpus.der_corpus(), *der_pool())))


@dataclass(frozen=True)
class _Spec:
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    candidates: Callable[[], Sequence[bytes]]  # built only for the targets a run uses
    ci_examples: int = 100


@cache
def _specs() -> dict[str, _Spec]:
    from tests.unit.test_decoder_fuzz import DECODERS, EXAMPLES
    from tests.unit.test_lean_codec import EXAMPLES as LEAN_EXAMPLES
    from tests.unit.test_lean_codec import SCHEMAS, assert_same, seeds_for

    specs: dict[str, _Spec] = {}
    for name, decode in sorted(DECODERS.items()):
        specs[f"decode.{name}"] = _Spec(decode, (MalformedMessage,), der_candidates, EXAMPLES)
    for name, schema in sorted(SCHEMAS.items()):
        # assert_same compares the two codecs; it raises AssertionError when they differ.
        specs[f"lean.{name}"] = _Spec(lambda data, schema=schema: assert_same(schema, data),
                                      (), lambda schema=schema: seeds_for(schema),
                                      LEAN_EXAMPLES)
    specs["pktc.decode"] = _Spec(km_framing.decode, (MalformedMessage,), corpus.km_messages)
    for suite in esp.SUITES.values():
        specs[f"esp.open.{suite.name.replace('/', '-')}"] = _Spec(
            _esp_open(suite), (MalformedMessage, esp.EspDropped),
            lambda suite=suite: corpus.esp_packets(suite))
    specs["esp.parse_udp_datagram"] = _Spec(esp.parse_udp_datagram, (MalformedMessage,),
                                            corpus.udp_datagrams)
    specs["esp.spi_of"] = _Spec(esp.spi_of, (MalformedMessage,),
                                lambda: corpus.esp_packets(esp.AES_GCM_16))
    specs["sip.parse"] = _Spec(sip.parse, (sip.SipError,), corpus.sip_messages)
    specs["sdp.parse_sdp"] = _Spec(parse_sdp, (sip.SipError,), corpus.sdp_bodies, 300)
    specs["control.decode_call_key"] = _Spec(
        lambda data: decode_call_key(data.decode("utf-8", "surrogateescape")),
        (sip.SipError,), lambda: [line.split(b": ", 1)[1] for m in corpus.sip_messages()
                                  for line in m.split(b"\r\n")
                                  if line.startswith(b"Call-Key: ")])
    specs["rtp.decode_rtp"] = _Spec(decode_rtp, (MalformedMessage,), corpus.rtp_packets)
    specs["tcp_framing.RecordBuffer"] = _Spec(_record_buffer, (FieldTooLong,),
                                              corpus.tcp_records)
    return specs


def names() -> list[str]:
    return list(_specs())


@cache
def get(name: str) -> Target:
    """The target, its seeds sorted into valid and other (decoding every candidate once)."""
    spec = _specs()[name]
    valid, others = valid_seeds(spec.run, spec.candidates())
    return Target(name, spec.run, spec.allowed, valid, others, spec.ci_examples,
                  der=name.startswith(("decode.", "lean.")))


def all_targets() -> dict[str, Target]:
    return {name: get(name) for name in names()}


def is_main(name: str) -> bool:
    return any(fnmatch(name, pattern) for pattern in MAIN)


def select(patterns: Sequence[str], main_only: bool = False) -> list[Target]:
    """The targets whose names match any of `patterns` (fnmatch; all when empty)."""
    chosen = [get(name) for name in names()
              if (not patterns or any(fnmatch(name, p) for p in patterns))
              and (is_main(name) or not main_only)]
    if not chosen:
        raise SystemExit(f"no fuzz target matches {list(patterns)} (--list shows them)")
    return chosen
