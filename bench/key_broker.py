"""The key broker of `call_key_policy = "chained"` with N devices: its state per device, and
devices re-keyed per second.

The broker is the controller's own `KeyBroker` (sigctl/broker.py) in this process, over its
`BrokerStore`: a SQLite file (in the temporary directory, on the machine's disk; the store's
pragmas: secure_delete, foreign keys, default journal and synchronous mode) with every key
RFC 5649-wrapped under a master key from a stash file, and its log lines written to a file as
the daemon writes them. N simulated devices live in this process too, each a device agent's
broker-key handler (cta/broker_keys.py: the pool core of common/broker/device.py, its keys
wrapped under a random KEK in memory, no file) behind a stand-in SA holding a random channel
secret. The broker's MESSAGEs (SIP bytes) go to the device's handler, its 200 (SIP bytes) back
to the broker's `claims`, as the daemon hands them over; ESP, UDP and the event loop are left
out. `--window` MESSAGEs are outstanding at a time. The time spent in the broker (its calls,
their SQL transactions, its log lines) and in the devices (parsing, unwrapping, the proof, the
200) are clocked apart.

1. Pools: each device's AP exchange is announced (`sa_installed`): Broker-Pool, the device's
   acknowledgement, the pool confirmed. Timed: pools per second.
2. State: the database file's size over N (after the pools, nothing in progress: every key
   `ready`), and SQLite's own accounting of it (`dbstat`: record bytes and pages per table and
   index).
3. Refresh: devices are paired into N/2 sessions, each taking one key of both (a call,
   untimed); then, timed, every session ends: Broker-Refresh to both devices (a next key
   wrapped under the one used), the device unwraps it and acknowledges, the broker checks the
   proof and commits (the old key overwritten). Every device's key is checked afterwards: the
   broker's and the device's next generation are the same key.
Last line: `broker_bytes_per_device=B pools_per_s=P refreshes_per_s=R broker_refreshes_per_s=Q`.

    .venv/bin/python bench/key_broker.py [--devices 4000] [--slots 4] [--window 256]
"""

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from common.calls import sip  # noqa: E402
from common.log import configure  # noqa: E402
from cta.broker_keys import DeviceBrokerKeys  # noqa: E402
from sigctl.broker import KeyBroker  # noqa: E402
from sigctl.settings import SigctlSettings  # noqa: E402

REALM = "BENCH.TEST"


@dataclass
class SimSa:
    """What the broker reads of a device's SA: whose it is and its channel secret."""
    client: str
    channel_secret: bytes


@dataclass
class SimLink:
    """What the device's handler reads of its controller link: the SA."""
    sa: SimSa


class Clock:
    """Wall seconds spent in one side (perf_counter around each of its calls)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> "Clock":
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds += time.perf_counter() - self._started


class Bench:
    def __init__(self, base: Path, devices: int, slots: int) -> None:
        self.db = base / "broker.db"
        settings = SigctlSettings(
            realm=REALM, principal="sigctl/sc1.bench.test", keytab_file=base / "unused.keytab",
            call_key_policy="chained", broker_slots=slots,
            broker_database_url=f"sqlite:///{self.db}",
            extensions_database_url=f"sqlite:///{base / 'ext.db'}")
        self.names = [f"cta/{i:012x}" for i in range(devices)]
        self.sas = {n: SimSa(f"{n}@{REALM}", os.urandom(32)) for n in self.names}
        self.devices = {n: DeviceBrokerKeys(n, os.urandom(32), None, SimLink(self.sas[n]))
                        for n in self.names}
        self.outbox: list[tuple[str, bytes]] = []
        self.rekeys = 0
        self.broker = KeyBroker(settings, sa_of=self.sas.get, link_secret=lambda _: None,
                                send=self._send, rekey=self._rekey)  # type: ignore[arg-type]
        self.in_broker, self.in_devices = Clock(), Clock()

    def _send(self, sa: SimSa, data: bytes) -> None:
        self.outbox.append((sa.client.rpartition("@")[0], data))

    def _rekey(self, _sa: SimSa) -> None:
        self.rekeys += 1

    def deliver(self) -> None:
        """Every MESSAGE sent to its device, every answer back to the broker."""
        outbox, self.outbox = self.outbox, []
        for device, data in outbox:
            with self.in_devices:
                reply = self.devices[device].handle(sip.parse(data))
            assert reply is not None
            with self.in_broker:
                self.broker.claims(("device", device), reply)

    def reset_clocks(self) -> None:
        self.in_broker, self.in_devices = Clock(), Clock()


def dbstat(path: Path) -> dict[str, tuple[int, int]]:
    """Per table and index: (record bytes, bytes of pages)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, sum(payload), sum(pgsize) FROM dbstat GROUP BY name")
        return {name: (payload, pages) for name, payload, pages in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4000, help="an even number")
    parser.add_argument("--slots", type=int, default=4, help="broker_slots: keys per device")
    parser.add_argument("--window", type=int, default=256, help="MESSAGEs outstanding")
    args = parser.parse_args()
    n = args.devices - args.devices % 2
    with tempfile.TemporaryDirectory(prefix="telekey-bench-broker-") as tmp:
        base = Path(tmp)
        log_file = (base / "broker.log").open("w")
        configure(json=True)
        structlog.configure(logger_factory=lambda *_: log_file)
        bench = Bench(base, n, args.slots)
        broker, store = bench.broker, bench.broker.store

        # 1. Pools.
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, n, args.window):
            for name in bench.names[first:first + args.window]:
                with bench.in_broker:
                    broker.sa_installed(bench.sas[name])  # type: ignore[arg-type]
            bench.deliver()
        pool_seconds, pool_cpu = time.perf_counter() - started, time.process_time() - cpu
        pool_broker, pool_devices = bench.in_broker.seconds, bench.in_devices.seconds
        ready = sum(1 for _, p in store.pools() if p.state == "ready")

        # 2. State.
        size = bench.db.stat().st_size
        journal = sum(p.stat().st_size for p in base.glob("broker.db-*"))
        stats = dbstat(bench.db)

        # 3. Refresh.
        sessions = [(f"bench-{k}@{REALM.lower()}", bench.names[2 * k], bench.names[2 * k + 1])
                    for k in range(n // 2)]
        used = {}
        for session, caller, callee in sessions:
            for device in (callee, caller):
                key = broker.broker.take(device, session)
                assert key is not None, device
                used[device] = key
        bench.reset_clocks()
        started, cpu = time.perf_counter(), time.process_time()
        per_batch = max(1, args.window // 2)
        for first in range(0, len(sessions), per_batch):
            for session, _, _ in sessions[first:first + per_batch]:
                with bench.in_broker:
                    broker.session_ended(session)
            bench.deliver()
        refresh_seconds, refresh_cpu = time.perf_counter() - started, time.process_time() - cpu
        refresh_broker, refresh_devices = bench.in_broker.seconds, bench.in_devices.seconds

        # Every device holds the next generation of the key it used, as the broker does.
        rekeyed = 0
        for device, old in used.items():
            next_id = old.key_id.next()
            held = store.keys(device)[next_id.slot]
            pool = bench.devices[device].pool
            slot = pool.slots.get(next_id.slot)
            if held.key_id == next_id and slot is not None and slot[0] == next_id.generation \
                    and pool.wrapper.unwrap(slot[1]) == held.key and held.key != old.key:
                rekeyed += 1
        states = {p.state for _, p in store.pools()}
        size_after = bench.db.stat().st_size
        broker.close()
        log_file.close()

    print(f"{n} devices, {args.slots} keys each, window {args.window}; "
          f"SQLite {sqlite3.sqlite_version}")
    print(f"pools: {ready} of {n} confirmed in {pool_seconds:.2f} s = {n / pool_seconds:,.0f} "
          f"per second (broker {pool_broker:.2f} s, devices {pool_devices:.2f} s; "
          f"process CPU {pool_cpu:.2f} s)")
    print(f"state: broker.db {size:,} bytes = {size / n:,.1f} bytes per device"
          + (f" (+ {journal:,} bytes of journal)" if journal else ""))
    for name, (payload, pages) in sorted(stats.items()):
        print(f"  {name}: records {payload:,} bytes ({payload / n:,.1f} per device), "
              f"pages {pages:,} bytes ({pages / n:,.1f} per device)")
    print(f"refresh: {rekeyed} of {n} devices re-keyed (pools {', '.join(sorted(states))}, "
          f"{bench.rekeys} Rekeys) in {refresh_seconds:.2f} s = {n / refresh_seconds:,.0f} "
          f"per second; process CPU {refresh_cpu:.2f} s")
    print(f"  broker {refresh_broker:.2f} s = {refresh_broker / n * 1e6:,.0f} µs per refresh "
          f"({n / refresh_broker:,.0f} per second); devices {refresh_devices:.2f} s = "
          f"{refresh_devices / n * 1e6:,.0f} µs each")
    print(f"  broker.db after: {size_after:,} bytes")
    if rekeyed != n or ready != n:
        print("not every device was re-keyed", file=sys.stderr)
        sys.exit(1)
    print(f"broker_bytes_per_device={size / n:.1f} pools_per_s={n / pool_seconds:.0f} "
          f"refreshes_per_s={n / refresh_seconds:.0f} "
          f"broker_refreshes_per_s={n / refresh_broker:.0f}")


if __name__ == "__main__":
    main()
