"""An AP-REQ made by MIT Kerberos is accepted by our controller with a keytab MIT's kadmin
exported: MIT kinit gets a TGT from MIT krb5kdc, MIT's libkrb5 (`krb5_mk_req`)
builds the AP-REQ for sigctl/sc1.interop.test with its checksum over our pktc parameters, and
our controller answers an AP Reply whose sub-key MIT's session key opens."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common.codes import KeyUsage
from common.crypto import Key
from common.kerberos.ccache import decode_ccache
from common.messages.ap_rep import decode_ap_rep, decode_enc_ap_rep_part
from common.pktc import km_framing as pktc
from telekey.mit_realm import free_port, require_tool, start_mit_realm
from telekey.service_process import start_service

pytestmark = pytest.mark.e2e
HELPER = Path(__file__).parents[1] / "interop" / "mit_mk_req.py"


def test_mit_built_ap_req_with_mit_keytab(tmp_path):
    mit = start_mit_realm(tmp_path)
    try:
        mit.run(require_tool("kadmin.local"), "-r", "INTEROP.TEST", "-q",
                "addprinc -randkey sigctl/sc1.interop.test")
        keytab = tmp_path / "sc1.keytab"
        mit.run(require_tool("kadmin.local"), "-r", "INTEROP.TEST", "-q",
                f"ktadd -k {keytab} sigctl/sc1.interop.test")
        mit.run(require_tool("kinit"), "phone1", stdin="secret\n")
        mit.run(require_tool("kvno"), "sigctl/sc1.interop.test")
        spi, suites = 0x4242, ((0x00, 0x14),)
        binding = pktc.ap_request_binding(0, spi, suites, False)
        made = subprocess.run([sys.executable, str(HELPER), "sigctl", "sc1.interop.test",
                               binding.hex(), f"FILE:{tmp_path / 'ccache'}"],
                              capture_output=True, text=True, env=mit.env, timeout=30)
        assert made.returncode == 0, made.stderr
        ap_req = bytes.fromhex(made.stdout.strip())
    finally:
        mit.stop()
    cache = decode_ccache((tmp_path / "ccache").read_bytes())
    [cred] = [c for c in cache.credentials if c.server.components == ("sigctl",
                                                                        "sc1.interop.test")]
    session = Key(cred.enctype, cred.key)
    km_port, esp_port = free_port(), free_port()
    config = tmp_path / "sigctl.toml"
    config.write_text(f'[sigctl]\nrealm = "INTEROP.TEST"\nprincipal = "sigctl/sc1.interop.test"'
                      f'\nkeytab_file = "{keytab}"\nkm_port = {km_port}\nesp_port = {esp_port}\n')
    controller = start_service(["sigctl", "run", "--config", str(config)],
                               tmp_path / "sigctl.log")
    try:
        message = pktc.encode_ap_request(ap_req, 0, spi, suites, False, pktc.hmac_key(session))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(message, ("127.0.0.1", km_port))
            reply = pktc.decode(sock.recv(65536))
    finally:
        controller.stop()
    assert isinstance(reply.message, pktc.ApReplyMsg), reply
    part = decode_enc_ap_rep_part(session.decrypt(
        KeyUsage.AP_REP_ENCPART, decode_ap_rep(reply.message.ap_rep).enc_part.cipher))
    subkey = Key(part.subkey.keytype, part.subkey.keyvalue)
    pktc.verify_hmac(reply, pktc.hmac_key(subkey))
    assert reply.message.suite == (0x00, 0x14)
    [line] = [e for e in controller.log_events() if e.get("event") == "ap_request"]
    assert line["result"] == "OK" and line["client"] == "phone1@INTEROP.TEST"
