"""Which TCP connections a KDC keeps when sources compete for them. No I/O; time is passed in.

RFC 4120 §7.2.2 lets a client keep its connection open for more requests, so an idle
connection costs the KDC a slot until its idle timeout. Without limits per source, one address
holding `max_total` idle connections denies TCP to everyone. The table therefore:
- refuses a connection from an address already holding `max_per_address`, or from a network
  (an IPv4 /24 or IPv6 /64 by default) already holding `max_per_network`;
- when all `max_total` slots are taken, makes room by closing the least recently active
  connection of the network holding the most, rather than refusing the newcomer. A source that
  floods thus only ever displaces its own connections once it is the busiest.
"""

import ipaddress
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class TcpLimits:
    max_total: int = 512
    max_per_address: int = 32
    max_per_network: int = 128
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64


@dataclass(frozen=True)
class Admission:
    """The answer for a new connection: refused (with the reason for the log), or accepted,
    possibly after closing `evict`."""
    accepted: bool
    reason: str = ""
    evict: Hashable | None = None


class ConnectionTable:
    """The open connections by address and network, each network's in order of last activity
    (least recent first), for `admit`, `touch` and `remove`."""

    def __init__(self, limits: TcpLimits) -> None:
        self.limits = limits
        self._where: dict[Hashable, tuple[str, str]] = {}  # connection -> (address, network)
        self._per_address: dict[str, int] = {}
        self._per_network: dict[str, OrderedDict[Hashable, None]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def network_of(self, address: str) -> str:
        """The network an address counts against: its /24 (IPv4) or /64 (IPv6) by default.
        Anything unparsable counts as a network of its own."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        prefix = self.limits.ipv4_prefix if ip.version == 4 else self.limits.ipv6_prefix
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))

    def admit(self, connection: Hashable, address: str) -> Admission:
        """Decide on a new connection from `address`; if accepted it is in the table, and the
        caller must close `evict` (already removed from the table) when one is named."""
        network = self.network_of(address)
        if self._per_address.get(address, 0) >= self.limits.max_per_address:
            return Admission(False, "per_address")
        members = self._per_network.get(network)
        if members is not None and len(members) >= self.limits.max_per_network:
            return Admission(False, "per_network")
        evict = None
        if len(self._where) >= self.limits.max_total:
            busiest = max(self._per_network.values(), key=len)
            evict = next(iter(busiest))
            self.remove(evict)
        self._where[connection] = (address, network)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._per_network.setdefault(network, OrderedDict())[connection] = None
        return Admission(True, "", evict)

    def touch(self, connection: Hashable) -> None:
        """The connection was active (a record arrived): it is now its network's most recent."""
        where = self._where.get(connection)
        if where is not None:
            self._per_network[where[1]].move_to_end(connection)

    def remove(self, connection: Hashable) -> None:
        where = self._where.pop(connection, None)
        if where is None:
            return
        address, network = where
        if self._per_address[address] == 1:
            del self._per_address[address]
        else:
            self._per_address[address] -= 1
        members = self._per_network[network]
        del members[connection]
        if not members:
            del self._per_network[network]
