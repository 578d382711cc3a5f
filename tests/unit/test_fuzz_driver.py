"""The long fuzz run's driver (tests/fuzz/, `make fuzz`) still works: it sees every decoder
the short run fuzzes, its mutations are repeatable and reach inside DER, a failure is caught,
shrunk and saved, and libFuzzer's crash report is read. About a second: the long run itself is
not part of `make test`."""

import random
from pathlib import Path

from common.errors import MalformedMessage
from tests.fuzz import mutate_engine
from tests.fuzz.atheris_engine import read_log
from tests.fuzz.corpus import mit_messages
from tests.fuzz.mutate import mutate, random_tlv, tlv_spans
from tests.fuzz.targets import Target, get, is_main, names
from tests.unit.test_decoder_fuzz import DECODERS
from tests.unit.test_lean_codec import SCHEMAS


def test_every_decoder_and_schema_is_a_target():
    assert {f"decode.{n}" for n in DECODERS} | {f"lean.{n}" for n in SCHEMAS} <= set(names())
    main = [n for n in names() if is_main(n)]
    for name in ("decode.kdc_req.decode_as_req", "decode.ap_req.decode_ap_req",
                 "decode.cms.decode_signed_data", "pktc.decode", "sip.parse"):
        assert name in main


def test_a_target_has_valid_seeds_from_the_corpus():
    target = get("decode.kdc_req.decode_as_req")
    assert mit_messages()["asreq_pkinit_dh.der"] in target.valid
    assert get("sip.parse").valid and get("pktc.decode").valid


def test_mutations_are_repeatable_and_reach_inner_tlvs():
    seed = mit_messages()["apreq_sc1.der"]
    spans = tlv_spans(seed)
    assert spans[0] == (0, 4, len(seed)) and len(spans) > 20
    one, two = random.Random(7), random.Random(7)
    first = [mutate(seed, [], [seed], one) for _ in range(50)]
    again = [mutate(seed, [], [seed], two) for _ in range(50)]
    assert first == again and len(set(first)) > 10
    depths = {random_tlv(seed, random.Random(n))[0] for n in range(200)}
    assert len(depths) > 5  # not only the outer TLV


def test_a_failure_is_caught_shrunk_and_saved(tmp_path):
    def buggy(data: bytes) -> None:
        if len(data) > 3 and data[1] == 0x81:
            raise TypeError("planted bug")
        raise MalformedMessage("BAD")

    target = Target("test.buggy", buggy, (MalformedMessage,), (bytes.fromhex("3003020101"),),
                    (), 100, True)
    result = mutate_engine.run_target(target, seconds=5, max_inputs=5000, out=tmp_path, seed=1)
    assert result.inputs == 5000
    [failure] = result.failures
    assert failure.kind == "TypeError" and failure.message == "planted bug"
    assert len(Path(failure.saved).read_bytes()) == 4  # shrunk to the smallest that fails
    assert "planted bug" in Path(failure.saved).with_suffix(".txt").read_text()


def test_libfuzzer_crash_report_is_read():
    log = ("INFO: Seed: 1\n#2\tINITED exec/s: 0\n\n === Uncaught Python exception: ===\n"
           "TypeError: boom\nTraceback (most recent call last):\n"
           '  File "/work/common/x.py", line 4, in t\nTypeError: boom\n'
           "artifact_prefix='c/'; Test unit written to c/crash-549d\n"
           "stat::number_of_executed_units: 2065\n")
    inputs, failure = read_log(log, 77, Path("last-run.log"))
    assert inputs == 2065 and failure is not None
    assert (failure.kind, failure.where, failure.saved) == ("TypeError", "/work/common/x.py:4",
                                                            "c/crash-549d")
    assert read_log("stat::number_of_executed_units: 9\n", 0, Path("x")) == (9, None)
