"""Live interop with MIT Kerberos 1.20 tools: klist reads the keytabs and credential caches we
write; we read keytabs written by ktutil and credential caches written by kinit/krb5kdc."""

import re
import subprocess
from datetime import UTC, datetime

import pytest

from common.codes import KeyUsage, NameType, TicketFlags
from common.crypto import Key
from common.kerberos.ccache import (
    CcachePrincipal,
    Credential,
    CredentialCache,
    decode_ccache,
    encode_ccache,
)
from common.kerberos.keytab import KeytabEntry, decode_keytab, encode_keytab
from common.messages.ap_req import decode_ap_req
from common.messages.ticket import decode_enc_ticket_part, decode_ticket, encode_ticket
from telekey.mit_realm import REALM, make_client_config, require_tool, start_mit_realm
from tests.conftest import MIT_FIXTURES

pytestmark = pytest.mark.interop


def run(env, *args, stdin=None):
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, env=env,
                            timeout=30, check=False)
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result.stdout


def test_klist_lists_keytab_we_wrote(tmp_path):
    env = make_client_config(tmp_path)
    keys = {
        18: Key.from_string(18, b"secret", b"INTEROP.TESTsigctlsc1.interop.test"),
        20: Key.from_string(20, b"secret", b"INTEROP.TESTsigctlsc1.interop.test"),
    }
    entries = [KeytabEntry(REALM, ("sigctl", "sc1.interop.test"), NameType.NT_SRV_INST,
                           1_790_000_000, 300, enctype, key.data)  # kvno > 255: 32-bit field
               for enctype, key in keys.items()]
    path = tmp_path / "ours.keytab"
    path.write_bytes(encode_keytab(entries))
    out = run(env, require_tool("klist"), "-k", "-t", "-e", "-K", str(path))
    lines = [line for line in out.splitlines() if "sigctl/sc1.interop.test@INTEROP.TEST" in line]
    assert len(lines) == 2
    for line, (enctype, key) in zip(lines, keys.items(), strict=True):
        assert line.split()[0] == "300"
        assert {18: "aes256-cts-hmac-sha1-96", 20: "aes256-cts-hmac-sha384-192"}[enctype] in line
        assert f"0x{key.data.hex()}" in line


def test_we_read_keytab_written_by_ktutil(tmp_path):
    env = make_client_config(tmp_path)
    path = tmp_path / "mit.keytab"
    script = "".join(
        f"addent -password -p phone1@{REALM} -k 7 -e {name}\nsecret\n"
        for name in ("aes256-cts-hmac-sha1-96", "aes128-cts-hmac-sha1-96",
                     "aes256-cts-hmac-sha384-192", "aes128-cts-hmac-sha256-128"))
    run(env, require_tool("ktutil"), stdin=script + f"wkt {path}\nquit\n")
    entries = decode_keytab(path.read_bytes())
    assert [e.enctype for e in entries] == [18, 17, 20, 19]
    for entry in entries:
        assert entry.principal == f"phone1@{REALM}" and entry.kvno == 7
        # The key MIT derived is the one our string-to-key derives (default salt realm+name).
        expected = Key.from_string(entry.enctype, b"secret", b"INTEROP.TESTphone1")
        assert entry.key == expected.data
    assert encode_keytab(entries) == path.read_bytes()


def _fixture_credential() -> tuple[Credential, bytes]:
    """A credential built from MIT's fixture ticket for sigctl/sc1 (its keys from the keytab)."""
    req = decode_ap_req((MIT_FIXTURES / "apreq_sc1.der").read_bytes())
    keytab = decode_keytab((MIT_FIXTURES / "sigctl-sc1.keytab").read_bytes())
    service = next(e for e in keytab if e.enctype == req.ticket.enc_part.etype)
    part = decode_enc_ticket_part(Key(service.enctype, service.key).decrypt(
        KeyUsage.KDC_REP_TICKET, req.ticket.enc_part.cipher))
    client = CcachePrincipal(part.cname.name_type, part.crealm, part.cname.name_string)
    server = CcachePrincipal(req.ticket.sname.name_type, req.ticket.realm,
                             req.ticket.sname.name_string)
    ticket = encode_ticket(req.ticket)
    ts = lambda t: int(t.timestamp()) if t else 0  # noqa: E731
    cred = Credential(client, server, part.key.keytype, part.key.keyvalue, ts(part.authtime),
                      ts(part.starttime), ts(part.endtime), ts(part.renew_till), False,
                      part.flags, (), (), ticket, b"")
    return cred, ticket


def test_klist_lists_ccache_we_wrote(tmp_path):
    env = make_client_config(tmp_path)
    cred, _ = _fixture_credential()
    cache = CredentialCache(cred.client, (cred,), kdc_offset=(-3, 0))
    path = tmp_path / "ours.ccache"
    path.write_bytes(encode_ccache(cache))
    out = run(env, require_tool("klist"), "-e", "-f", "-c", f"FILE:{path}")
    assert "Default principal: phone1@EXAMPLE.TEST" in out
    assert "sigctl/sc1.example.test@EXAMPLE.TEST" in out
    assert "Etype (skey, tkt): aes256-cts-hmac-sha1-96, aes256-cts-hmac-sha1-96" in out
    expires = datetime.fromtimestamp(cred.endtime).strftime("%m/%d/%y %H:%M:%S")
    assert expires in out
    flags = re.search(r"Flags: (\w+)", out).group(1)
    assert ("I" in flags) == bool(cred.ticket_flags & TicketFlags.INITIAL)
    assert ("A" in flags) == bool(cred.ticket_flags & TicketFlags.PRE_AUTHENT)
    assert decode_ccache(path.read_bytes()) == cache


def test_we_read_ccache_written_by_mit_kinit(tmp_path):
    realm = start_mit_realm(tmp_path)
    try:
        realm.run(require_tool("kinit"), f"phone1@{REALM}", stdin="secret\n")
        realm.run(require_tool("kvno"), f"krbtgt/{REALM}@{REALM}")
        klist = realm.run(require_tool("klist"), "-e")
    finally:
        realm.stop()
    cache = decode_ccache((tmp_path / "ccache").read_bytes())
    assert str(cache.default_principal) == f"phone1@{REALM}"
    tickets = [c for c in cache.credentials if not c.is_config]
    assert [str(c.server) for c in tickets] == [f"krbtgt/{REALM}@{REALM}"]
    tgt = tickets[0]
    assert str(tgt.client) == f"phone1@{REALM}"
    assert tgt.ticket_flags & TicketFlags.INITIAL and tgt.ticket_flags & TicketFlags.PRE_AUTHENT
    assert datetime.fromtimestamp(tgt.endtime).strftime("%m/%d/%y %H:%M:%S") in klist
    # The ticket inside is a Ticket our codec decodes and re-encodes byte-identically.
    ticket = decode_ticket(tgt.ticket)
    assert encode_ticket(ticket) == tgt.ticket and ticket.enc_part.etype == tgt.enctype
    # Re-encoding the whole cache reproduces MIT's file byte for byte.
    assert encode_ccache(cache) == (tmp_path / "ccache").read_bytes()
    assert tgt.starttime <= datetime.now(UTC).timestamp() + 5
