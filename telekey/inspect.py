"""`telekey decode`: show any Kerberos message, keytab or credential cache as an indented tree,
optionally decrypting ticket enc-parts with a keytab (the way Wireshark does with `-K`)."""

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

from common.codes import KeyUsage
from common.crypto import Key
from common.errors import KerberosError
from common.kerberos.ccache import CCACHE_V4, decode_ccache
from common.kerberos.keytab import KEYTAB_V2, KeytabEntry, decode_keytab, find_key
from common.messages.ap_rep import decode_ap_rep
from common.messages.ap_req import decode_ap_req
from common.messages.kdc_rep import decode_as_rep, decode_tgs_rep
from common.messages.kdc_req import decode_as_req, decode_tgs_req
from common.messages.krb_cred import decode_krb_cred
from common.messages.krb_error import decode_krb_error
from common.messages.krb_priv import decode_krb_priv
from common.messages.krb_safe import decode_krb_safe
from common.messages.ticket import Ticket, decode_enc_ticket_part

DECODERS = {
    0x6A: decode_as_req, 0x6B: decode_as_rep, 0x6C: decode_tgs_req, 0x6D: decode_tgs_rep,
    0x6E: decode_ap_req, 0x6F: decode_ap_rep, 0x74: decode_krb_safe, 0x75: decode_krb_priv,
    0x76: decode_krb_cred, 0x7E: decode_krb_error,
}
SECRET_FIELDS = {"keyvalue", "key"}


def render(value: Any, indent: int = 0) -> list[str]:
    """Lines describing `value`; key material is shown only by length."""
    pad = "  " * indent
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        lines = [f"{pad}{type(value).__name__}"]
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if item is None:
                continue
            if field.name in SECRET_FIELDS and isinstance(item, bytes):
                lines.append(f"{pad}  {field.name}: <{len(item)} secret bytes>")
            elif dataclasses.is_dataclass(item) or isinstance(item, tuple) and item and \
                    dataclasses.is_dataclass(item[0]):
                lines.append(f"{pad}  {field.name}:")
                lines.extend(render(item, indent + 2))
            else:
                lines.append(f"{pad}  {field.name}: {_scalar(item)}")
        return lines
    if isinstance(value, tuple):
        return [line for item in value for line in render(item, indent)]
    return [f"{pad}{_scalar(value)}"]


def _scalar(item: Any) -> str:
    if isinstance(item, bytes):
        return item.hex() if len(item) <= 32 else f"{item[:32].hex()}... ({len(item)} bytes)"
    if isinstance(item, datetime):
        return item.isoformat()
    if isinstance(item, int) and not isinstance(item, bool) and item > 0xFFFF:
        return f"{item} ({item:#x})"
    return str(item)


def _tickets(value: Any) -> list[Ticket]:
    if isinstance(value, Ticket):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in _tickets(getattr(value, f.name))]
    if isinstance(value, tuple):
        return [t for item in value for t in _tickets(item)]
    return []


def describe(path: Path, keytab: list[KeytabEntry] | None = None) -> list[str]:
    data = path.read_bytes()
    if data[:2] == KEYTAB_V2:
        return [repr(e) for e in decode_keytab(data)]
    if data[:2] == CCACHE_V4:
        cache = decode_ccache(data)
        return [f"default principal {cache.default_principal}"] + [repr(c) for c in
                                                                    cache.credentials]
    decode = DECODERS.get(data[0]) if data else None
    if decode is None:
        raise KerberosError("UNKNOWN_MESSAGE", f"first byte {data[:1].hex()}")
    message = decode(data)
    lines = render(message)
    for ticket in _tickets(message) if keytab else []:
        principal = f"{ticket.sname}@{ticket.realm}"
        entry = find_key(keytab or [], principal, ticket.enc_part.etype, ticket.enc_part.kvno)
        if entry is None:
            lines.append(f"(no key for {principal} enctype {ticket.enc_part.etype})")
            continue
        plain = Key(entry.enctype, entry.key).decrypt(KeyUsage.KDC_REP_TICKET,
                                                       ticket.enc_part.cipher)
        lines.append(f"decrypted ticket for {principal}:")
        lines.extend(render(decode_enc_ticket_part(plain), 1))
    return lines
