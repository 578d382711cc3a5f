"""Enterprise IP phones (seed 002: "Key server for securing IP telephony registration,
control, and maintenance"), with no I/O.

- `keys`: the key derivations in two profiles. `seed` is the document's formulas exactly:
  K_m = SHA-1(S), K_g = HMAC-SHA-1-128(key g, message K_m), CV_m = the three low-order bytes
  of SHA-1(K_m), K_a = HMAC-SHA1-128(K_g, C_a‖PIN), K_s = HMAC-SHA1-128(K_g, C_b‖PIN‖Re‖Rg),
  ICV = HMAC-SHA1-96 under K_a. `default` keeps that structure with SHA-256 (FIPS 180-4) but
  keys K_g and CV_m with K_m (K_g = HMAC-SHA256(K_m, g)), so that a PKCS#11 token holding K_m
  computes them; ICV = HMAC-SHA256-128 (RFC 4868's truncation). HMAC is RFC 2104, truncation
  its §5 (leftmost bytes).
- `generator`: the 128-bit generator g (key server id, extension tag, counter) and the
  counter blocks a key server reserves in its database before any key leaves.
- `key_file`: the key file (`kkg.txt`) a phone fetches from the key server's basic service.

- `per`: the ITU H.225.0 (H323-MESSAGES) and H.235 modules in aligned PER, compiled with
  asn1tools from `asn1/`, with its extension-addition bugs fixed and a strict decoder.
- `ras`: GRQ, GCF, GRJ, RRQ and RCF carrying seed 002's values and the ICV in an H.235.1
  baseline token, so that Wireshark's h225 dissector shows every field.
- `registration`: FIG. 4 at both ends: the controller's `Gatekeeper` (replay, lockout, GRJ
  rules) and the phone's `PhoneRegistration`; K_s turned into the ESP SA.

docs/protocol.md §10 (the key server) and §12 (registration) write the formats and choices
down; tests/vectors/data/enterprise_seed.json and enterprise_ras.json hold known answers for
both profiles. The key server (`keyserver/`), the controller's RAS port (`sigctl/ras.py`) and
the phone (`cta/ras_link.py`) do the I/O.
"""
