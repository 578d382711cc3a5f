"""Codec and crypto figures, with MIT Kerberos measured in the same run.

Prints microseconds per operation (best of several rounds) for decode and encode of an AP-REQ,
a PKINIT AS-REQ and an EncTicketPart (MIT 1.20's own bytes from tests/interop/mit), the AP-REQ
acceptor's parsing path (decode, decrypt ticket, decode EncTicketPart, decrypt and decode the
authenticator), and encrypt/decrypt of a 200-byte enc-part per enctype. MIT's figures come from
libkrb5/libk5crypto called in-process through ctypes (about 0.3 us of call overhead each).

    .venv/bin/python bench/codec.py [--seconds 0.3]
"""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.mit_ctypes import Mit  # noqa: E402
from common.codes import KeyUsage, PaDataType  # noqa: E402
from common.crypto import Key  # noqa: E402
from common.kerberos.keytab import decode_keytab, find_key  # noqa: E402
from common.messages.ap_req import decode_ap_req, decode_authenticator, encode_ap_req  # noqa: E402
from common.messages.cms import decode_signed_data  # noqa: E402
from common.messages.kdc_req import decode_as_req, encode_as_req  # noqa: E402
from common.messages.pkinit import decode_auth_pack, decode_pa_pk_as_req  # noqa: E402
from common.messages.ticket import decode_enc_ticket_part, encode_enc_ticket_part  # noqa: E402
from common.messages.types import find_padata  # noqa: E402

FIXTURES = ROOT / "tests" / "interop" / "mit"


def per_op_us(fn: Callable[[], object], seconds: float) -> float:
    """Best-of-5 mean time of one call, in microseconds."""
    n = 1
    while True:  # calibrate a batch that takes ~seconds/5
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 5:
            break
        n *= 2
    best = elapsed / n
    for _ in range(4):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def row(label: str, ours: float, mit: float | None) -> None:
    mit_text = f"{mit:9.1f}" if mit is not None else "      n/a"
    ratio = f"{ours / mit:7.1f}x" if mit else "        "
    print(f"  {label:<44}{ours:9.1f}{mit_text}{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=0.3, help="time per measurement")
    seconds = parser.parse_args().seconds
    mit = Mit()

    ap_req_der = (FIXTURES / "apreq_sc1.der").read_bytes()
    as_req_der = (FIXTURES / "asreq_pkinit_dh.der").read_bytes()
    ap_req = decode_ap_req(ap_req_der)
    entry = find_key(decode_keytab((FIXTURES / "sigctl-sc1.keytab").read_bytes()),
                     "sigctl/sc1.example.test@EXAMPLE.TEST", ap_req.ticket.enc_part.etype)
    service_key = Key(entry.enctype, entry.key)
    etp_der = service_key.decrypt(KeyUsage.KDC_REP_TICKET, ap_req.ticket.enc_part.cipher)
    etp = decode_enc_ticket_part(etp_der)
    as_req = decode_as_req(as_req_der)

    def pkinit_payload() -> None:
        req = decode_as_req(as_req_der)
        pa = decode_pa_pk_as_req(find_padata(req.padata, PaDataType.PA_PK_AS_REQ).padata_value)
        decode_auth_pack(decode_signed_data(pa.signed_auth_pack).encap_content_info.e_content)

    def acceptor_path() -> None:
        req = decode_ap_req(ap_req_der)
        part = decode_enc_ticket_part(service_key.decrypt(KeyUsage.KDC_REP_TICKET,
                                                          req.ticket.enc_part.cipher))
        session = Key(part.key.keytype, part.key.keyvalue)
        decode_authenticator(session.decrypt(KeyUsage.AP_REQ_AUTH, req.authenticator.cipher))

    print(f"telekey codec/crypto vs MIT krb5 (in-process), microseconds per operation, "
          f"python {sys.version.split()[0]}")
    print(f"  {'operation':<44}{'telekey':>9}{'MIT':>9}{'ratio':>8}")
    row(f"decode AP-REQ ({len(ap_req_der)} B)", per_op_us(lambda: decode_ap_req(ap_req_der),
                                                            seconds),
        per_op_us(mit.decoder("ap_req", ap_req_der), seconds))
    row("encode AP-REQ", per_op_us(lambda: encode_ap_req(ap_req), seconds),
        per_op_us(mit.encoder("ap_req", ap_req_der), seconds))
    row(f"decode PKINIT AS-REQ ({len(as_req_der)} B, outer)",
        per_op_us(lambda: decode_as_req(as_req_der), seconds),
        per_op_us(mit.decoder("as_req", as_req_der), seconds))
    row("decode PKINIT AS-REQ + PA-PK-AS-REQ/CMS/AuthPack", per_op_us(pkinit_payload, seconds),
        None)
    mit_as_enc = mit.encoder("as_req", as_req_der)
    row("encode PKINIT AS-REQ", per_op_us(lambda: encode_as_req(as_req), seconds),
        per_op_us(mit_as_enc, seconds) if mit_as_enc else None)
    row(f"decode EncTicketPart ({len(etp_der)} B)",
        per_op_us(lambda: decode_enc_ticket_part(etp_der), seconds),
        per_op_us(mit.decoder("enc_tkt_part", etp_der), seconds))
    row("encode EncTicketPart", per_op_us(lambda: encode_enc_ticket_part(etp), seconds),
        per_op_us(mit.encoder("enc_tkt_part", etp_der), seconds))
    row("AP-REQ acceptor parse+decrypt path (no rcache)", per_op_us(acceptor_path, seconds),
        None)
    plaintext = bytes(range(200))
    for enctype, name in ((17, "aes128-sha1"), (18, "aes256-sha1"), (19, "aes128-sha256"),
                          (20, "aes256-sha384")):
        key = Key.random(enctype)
        ciphertext = key.encrypt(KeyUsage.AP_REQ_AUTH, plaintext)
        mit_encrypt, mit_decrypt = mit.cipher(enctype, key.data, KeyUsage.AP_REQ_AUTH,
                                              plaintext)
        row(f"encrypt 200 B {name}",
            per_op_us(lambda k=key: k.encrypt(KeyUsage.AP_REQ_AUTH, plaintext), seconds),
            per_op_us(mit_encrypt, seconds))
        row(f"decrypt 200 B {name}",
            per_op_us(lambda k=key, c=ciphertext: k.decrypt(KeyUsage.AP_REQ_AUTH, c), seconds),
            per_op_us(mit_decrypt, seconds))


if __name__ == "__main__":
    main()
