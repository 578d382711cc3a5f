"""The long fuzz run, `make fuzz` (`python -m tests.fuzz`): every decoder the unit tests fuzz,
for minutes instead of seconds, from a corpus of real messages.

`make test` keeps its short, derandomized fuzzers (tests/unit/test_decoder_fuzz.py,
test_lean_codec.py). This driver runs the same decoders, discovered the same way (it imports
those modules' DECODERS and SCHEMAS), plus the non-ASN.1 ones (targets.py), with:

- **more examples**: each target stops at `--scale` (100) times the examples the CI run gives
  it, or at its equal share of `--seconds` (600), whichever comes first;
- **a corpus of real messages** (corpus.py): MIT's DER messages and keytabs from
  tests/interop/mit/, the inner parts they carry encrypted (decrypted with the fixtures'
  keys), the DER in tests/vectors/data/, every TLV inside them; for what MIT does not make,
  telekey's encoders (PacketCable KM messages, ESP, SIP of a whole call, SDP, RTP);
- **structure-aware mutation** (mutate.py): bit flips, truncations, inserted bytes, crossover,
  and DER edits: length fields changed (off by one, zero, indefinite, non-minimal,
  oversized), TLVs spliced from other messages, duplicated, deleted, re-tagged.

A failure is any exception other than the target's documented error (MalformedMessage for
the decoders, SipError for SIP and SDP, EspDropped too for ESP, FieldTooLong for TCP
records), a disagreement between the lean DER codec and the pyasn1 reference, or a hang. The
run prints each target's inputs and failures and a summary, saves every distinct failing
input (shrunk by Hypothesis) with its traceback under build/fuzz/failures/, writes
build/fuzz/summary-<engine>.json, and exits 1 if anything failed.

Engines:
- `--engine hypothesis` (the default): Hypothesis drives the mutator, so failures shrink.
- `--engine atheris`: coverage-guided libFuzzer over the main decoders (targets.MAIN: AS-REQ,
  TGS-REQ, AP-REQ, KRB-ERROR, PKINIT and CMS, KM framing, ESP, SIP), seeded from the same
  corpus, corpora kept in build/fuzz/atheris/. Needs the `fuzz` extra
  (`pip install -e '.[fuzz]'`; `make fuzz FUZZ_ENGINE=atheris` installs it).

Examples:
    make fuzz                                   # hypothesis, 10 minutes
    make fuzz FUZZ_ENGINE=atheris FUZZ_SECONDS=300
    .venv/bin/python -m tests.fuzz --list
    .venv/bin/python -m tests.fuzz --seconds 60 --target 'decode.kdc_req.*' --target sip.parse
"""
