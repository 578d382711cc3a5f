"""Talking to a KDC from a daemon: one request/reply over TCP, and the MIT ccache credential
made from a reply. Used by the device agent and by controllers and servers that log in with
a keytab (common/kerberos/keytab_login.py)."""

import socket
from datetime import UTC, datetime, timedelta

from common.crypto import Key
from common.kerberos.ccache import CcachePrincipal, Credential
from common.kerberos.keytab import KeytabEntry
from common.kerberos.keytab_login import build_keytab_as_req, process_keytab_as_rep
from common.kerberos.tcp_framing import RecordBuffer, encode_record
from common.messages.kdc_rep import EncKdcRepPart
from common.messages.krb_error import decode_krb_error
from common.messages.ticket import encode_ticket


def credential_from_reply(client: CcachePrincipal, part: EncKdcRepPart,
                          ticket: bytes) -> Credential:
    """An MIT ccache credential from a KDC reply's decrypted part and the ticket's DER."""
    def ts(when: datetime | None) -> int:
        return int(when.timestamp()) if when else 0

    server = CcachePrincipal(part.sname.name_type, part.srealm, part.sname.name_string)
    return Credential(client, server, part.key.keytype, part.key.keyvalue, ts(part.authtime),
                      ts(part.starttime), ts(part.endtime), ts(part.renew_till), False,
                      part.flags, (), (), ticket, b"")


def kdc_exchange(kdc: str, data: bytes, timeout: float = 10.0) -> bytes:
    """One request/reply with a KDC over TCP (RFC 4120 §7.2.2 framing)."""
    host, _, port = kdc.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(encode_record(data))
        buffer = RecordBuffer(1 << 20)
        while (record := buffer.next_record()) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the KDC closed the connection")
            buffer.feed(chunk)
    return record



def keytab_login(kdc: str, keytab: list[KeytabEntry], *, client: str, service: str, realm: str,
                 lifetime: timedelta = timedelta(hours=10)) -> Credential:
    """A ticket for `service` by an AS exchange with encrypted timestamp, using the newest
    key `keytab` holds for `client` (blocking: run it in an executor)."""
    entries = [e for e in keytab if "/".join(e.components) == client]
    if not entries:
        raise KeyError(f"no key for {client} in the keytab")
    entry = max(entries, key=lambda e: (e.kvno, e.enctype == 18))
    request = build_keytab_as_req(client=client, service=service, realm=realm,
                                  key=Key(entry.enctype, entry.key), now=datetime.now(UTC),
                                  lifetime=lifetime)
    reply = kdc_exchange(kdc, request.data)
    if reply[:1] == b"\x7e":  # KRB-ERROR
        error = decode_krb_error(reply)
        raise ConnectionRefusedError(f"KDC refused: error {error.error_code} "
                                     f"{error.e_text or ''}".strip())
    rep, part = process_keytab_as_rep(reply, request)
    me = CcachePrincipal(1, realm, tuple(client.split("/")))
    return credential_from_reply(me, part, encode_ticket(rep.ticket))
