"""What the benches share: process CPU time from /proc, and a signaling controller with a
fresh service key plus devices holding tickets for it (made with that key, as the KDC would)."""

import time
from datetime import datetime, timedelta
from pathlib import Path

from common.crypto import Key
from common.kerberos.keytab import KeytabEntry, encode_keytab
from common.kerberos.tickets import IssuedTicket, KeyEntry, issue_ticket
from common.messages.types import PrincipalName
from common.pktc.km_client import KeyManagementClient
from telekey.mit_realm import free_port

REALM = "BENCH.TEST"
SERVICE = ("sigctl", "sc1.bench.test")


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid`, in nanosecond resolution (/proc/PID/task/*/schedstat;
    /proc/PID/stat counts 10 ms ticks, too coarse for sub-millisecond exchanges)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def cpu_seconds_tree(pid: int) -> float:
    """CPU time of `pid` and of its children (the controller's key-management workers)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children)


def device_ticket(service_key: Key, name: str, now: datetime) -> IssuedTicket:
    return issue_ticket(realm=REALM, cname=PrincipalName(1, ("cta", name)), crealm=REALM,
                        sname=PrincipalName(2, SERVICE), server_key=KeyEntry(1, service_key),
                        session_enctype=18, flags=0, authtime=now.replace(microsecond=0),
                        endtime=(now + timedelta(hours=10)).replace(microsecond=0))


def device_client(issued: IssuedTicket) -> KeyManagementClient:
    return KeyManagementClient(ticket=issued.ticket, session_key=issued.session_key,
                               cname=issued.part.cname, crealm=REALM)


def controller_config(base: Path, service_key: Key, extra: str = "") -> tuple[Path, int]:
    """A keytab and sigctl.toml in `base` for the bench controller; (config, km_port)."""
    keytab = base / "sc1.keytab"
    keytab.write_bytes(encode_keytab([KeytabEntry(REALM, SERVICE, 2, int(time.time()), 1, 18,
                                                  service_key.data)]))
    km_port = free_port()
    config = base / "sigctl.toml"
    config.write_text(f'[sigctl]\nrealm = "{REALM}"\nprincipal = "{"/".join(SERVICE)}"\n'
                      f'keytab_file = "{keytab}"\nkm_port = {km_port}\nesp_port = 0\n{extra}')
    return config, km_port
