"""KDC CPU per exchange, telekey vs MIT krb5kdc, same certificates, same client, same run.

Starts MIT's krb5kdc (PKINIT configured with the MIT test CA, KDC and client certificates of
tests/interop/mit) and telekey's KDC on loopback, and drives MIT `kinit` PKINIT logins in DH
(group 14) and RSA mode and `kvno` TGS requests at each. Every exchange is measured on its own
(the KDC process's CPU time from /proc/PID/task/*/schedstat before and after the client
process), and the two KDCs take turns exchange by exchange, first one then the other, so each
pair is measured under the same machine speed (on this VM it drifts by up to 2x within an
hour). The exchanges are spread over several fresh pairs of KDC processes (`restarted`). Both
KDCs log every request to a file. A warm-up of three of each exchange at each KDC process is
not counted.

Prints ms of KDC CPU per exchange (a PKINIT login is two AS exchanges: PREAUTH_REQUIRED, then
the real one), the ratio of the means with two standard errors (paired, delta method; and over
the process pairs, which includes how fast each process happened to be), and as the last line
`ratio_cpu_per_pkinit_dh2048_telekey_over_mit=X`.

    .venv/bin/python bench/kdc_pkinit.py [--logins 80] [--restarts 4] [--dh-key-reuse 0]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import cpu_seconds  # noqa: E402
from telekey.kdc_process import KdcProcess, start_kdc, telekey_cmd, write_kdc_config  # noqa: E402
from telekey.mit_realm import free_port, require_tool  # noqa: E402

FIX = ROOT / "tests" / "interop" / "mit"
(FIX / "kdc.key").chmod(0o600)  # a clean clone has it 0644; the KDC refuses such a key file
REALM = "EXAMPLE.TEST"
CONTROLLER = f"sigctl/sc2.example.test@{REALM}"
EXCHANGES = ("pkinit_dh2048", "pkinit_rsa", "tgs")


def client_env(directory: Path, port: int) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "krb5.conf"
    conf.write_text(
        f"[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n"
        " dns_lookup_realm = false\n rdns = false\n"
        f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n"
        f"  pkinit_anchors = FILE:{FIX / 'cacert.pem'}\n }}\n")
    return {"PATH": "/usr/bin:/bin:/usr/sbin", "KRB5_CONFIG": str(conf),
            "KRB5CCNAME": f"FILE:{directory / 'ccache'}"}


def start_mit(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (directory / "kdc.conf").write_text(
        f"[kdcdefaults]\n kdc_ports = {port}\n kdc_tcp_ports = {port}\n"
        f"[realms]\n {REALM} = {{\n  database_name = {directory}/principal\n"
        f"  key_stash_file = {directory}/stash\n"
        f"  pkinit_identity = FILE:{FIX / 'kdc.pem'},{FIX / 'kdc.key'}\n"
        f"  pkinit_anchors = FILE:{FIX / 'cacert.pem'}\n }}\n"
        f"[logging]\n kdc = FILE:{directory}/kdc.log\n")
    env = {**os.environ, "KRB5_CONFIG": str(directory / "krb5.conf"),
           "KRB5_KDC_PROFILE": str(directory / "kdc.conf")}
    (directory / "krb5.conf").write_text(f"[libdefaults]\n default_realm = {REALM}\n")
    run = lambda *a: subprocess.run(a, env=env, check=True, capture_output=True)  # noqa: E731
    run(require_tool("kdb5_util"), "create", "-s", "-r", REALM, "-P", "master")
    admin = require_tool("kadmin.local")
    run(admin, "-r", REALM, "-q", "addprinc +requires_preauth -nokey phone1")
    run(admin, "-r", REALM, "-q", "addprinc -randkey sigctl/sc2.example.test")
    process = subprocess.Popen([require_tool("krb5kdc"), "-n", "-r", REALM], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return process, port


def start_telekey(directory: Path, source: Path = ROOT, **settings: object) -> KdcProcess:
    """telekey's KDC from the source tree `source` (another checkout, for A/B comparisons),
    with the bench's principals in a fresh SQLite database."""
    directory.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{directory}/kdc.db"
    here = Path.cwd()
    os.chdir(source)  # `python -m telekey|kdc` run the packages of the current directory
    try:
        telekey_cmd("realm", "init", "--realm", REALM, "--db", db)
        telekey_cmd("principal", "add", "phone1", "--db", db)
        telekey_cmd("principal", "add", "sigctl/sc2.example.test", "--random-key", "--db", db)
        config = write_kdc_config(directory, realm=REALM, db_url=db, cert=FIX / "kdc.pem",
                                  key=FIX / "kdc.key", anchors=[FIX / "cacert.pem"], **settings)
        return start_kdc(config, directory / "kdc.log")
    finally:
        os.chdir(here)


@dataclass
class Target:
    """One KDC process and a client set up for it."""

    name: str
    pid: int
    env: dict[str, str]
    tgt_only: bytes = b""  # a credential cache holding just a TGT, for kvno

    def run(self, exchange: str) -> float:
        """KDC CPU milliseconds of one `exchange` (a name in EXCHANGES)."""
        identity = f"X509_user_identity=FILE:{FIX / 'phone1.pem'},{FIX / 'phone1.key'}"
        command = [require_tool("kinit"), "-X", identity, f"phone1@{REALM}"]
        if exchange == "pkinit_rsa":
            command[1:1] = ["-X", "flag_RSA_PROTOCOL=yes"]
        elif exchange == "tgs":
            command = [require_tool("kvno"), CONTROLLER]
            if not self.tgt_only:
                self.run("pkinit_dh2048")
                self.tgt_only = self.ccache.read_bytes()
            self.ccache.write_bytes(self.tgt_only)  # so kvno must ask the KDC every time
        before = cpu_seconds(self.pid)
        result = subprocess.run(command, env=self.env, input="", capture_output=True,
                                timeout=60, check=False)
        spent = cpu_seconds(self.pid) - before
        if result.returncode != 0:
            raise RuntimeError(f"{self.name} {exchange}: {result.stderr.decode()[-500:]}")
        return spent * 1000

    @property
    def ccache(self) -> Path:
        return Path(self.env["KRB5CCNAME"].removeprefix("FILE:"))


def paired(first: Target, second: Target, exchange: str, n: int,
           warm_up: int = 3) -> tuple[list[float], list[float]]:
    """n measurements of `exchange` at each target, taking turns (the order swapped every
    pair); the first `warm_up` of each are not kept."""
    kept: tuple[list[float], list[float]] = ([], [])
    for i in range(warm_up + n):
        order = (0, 1) if i % 2 else (1, 0)
        spent = {k: (first, second)[k].run(exchange) for k in order}
        if i >= warm_up:
            kept[0].append(spent[0])
            kept[1].append(spent[1])
    return kept


def ratio_of_means(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(a) / mean(b) and its standard error for paired samples (delta method)."""
    ratio = statistics.fmean(a) / statistics.fmean(b)
    residuals = [x - ratio * y for x, y in zip(a, b, strict=True)]
    return ratio, statistics.stdev(residuals) / len(a) ** 0.5 / statistics.fmean(b)


def spread(ratios: list[float]) -> float:
    """The standard error of the mean of per-restart ratios (0 with a single restart)."""
    return statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0.0


def restarted(start: Callable[[Path, bool], tuple[Target, Target, Callable[[], None]]],
              exchanges: tuple[str, ...], n: int, restarts: int
              ) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """`n` paired measurements of each exchange, spread over `restarts` fresh pairs of KDC
    processes: (first's, second's, per-restart ratios of means) by exchange.

    One process's speed depends on where its memory and code landed (measured: the same KDC
    code, restarted, runs 5-10% faster or slower for its whole life), so a comparison of one
    process pair carries that much error whatever the number of exchanges; restarting and
    alternating which KDC starts first averages it out. `start(directory, swap)` starts both
    KDCs (the second first when `swap`) and returns them and a stop function."""
    out: dict[str, tuple[list[float], list[float], list[float]]] = {
        e: ([], [], []) for e in exchanges}
    for restart in range(restarts):
        share = n // restarts + (1 if restart < n % restarts else 0)
        with tempfile.TemporaryDirectory() as tmp:
            first, second, stop = start(Path(tmp), restart % 2 == 1)
            try:
                for exchange in exchanges:
                    a, b = paired(first, second, exchange, share)
                    out[exchange][0].extend(a)
                    out[exchange][1].extend(b)
                    out[exchange][2].append(statistics.fmean(a) / statistics.fmean(b))
            finally:
                stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logins", type=int, default=80, help="exchanges of each kind per KDC")
    parser.add_argument("--restarts", type=int, default=4,
                        help="fresh KDC process pairs the exchanges are spread over")
    parser.add_argument("--dh-key-reuse", type=int, default=0,
                        help="seconds telekey's KDC may reuse its DH key (0: fresh each time)")
    args = parser.parse_args()
    n = args.logins

    def start(base: Path, swap: bool) -> tuple[Target, Target, Callable[[], None]]:
        (base / "mit").mkdir()
        if swap:
            ours = start_telekey(base / "ours", dh_key_reuse_s=args.dh_key_reuse)
        mit, mit_port = start_mit(base / "mit")
        if not swap:
            ours = start_telekey(base / "ours", dh_key_reuse_s=args.dh_key_reuse)

        def stop() -> None:
            ours.stop()
            mit.terminate()
            mit.wait(timeout=10)

        return (Target("telekey", ours.process.pid, client_env(base / "ours", ours.port)),
                Target("MIT", mit.pid, client_env(base / "mit" / "client", mit_port)), stop)

    results = restarted(start, EXCHANGES, n, args.restarts)
    print(f"KDC CPU ms per exchange, {n} of each at each KDC over {args.restarts} process "
          f"pairs, taking turns, MIT kinit/kvno 1.20 as the client, telekey DH key reuse "
          f"{args.dh_key_reuse} s")
    print(f"  {'exchange':<16}{'telekey':>10}{'MIT':>10}{'ratio':>8}  ± s.e. paired, "
          f"± s.e. over process pairs (medians; per-pair ratios)")
    ratios = {}
    for name, (mine, other, per_restart) in results.items():
        ratios[name], error = ratio_of_means(mine, other)
        print(f"  {name:<16}{statistics.fmean(mine):>10.2f}{statistics.fmean(other):>10.2f}"
              f"{ratios[name]:>8.2f}  ± {error:.2f}, ± {spread(per_restart):.2f}  "
              f"({statistics.median(mine):.2f} / {statistics.median(other):.2f}; "
              f"{' '.join(f'{r:.2f}' for r in per_restart)})")
    for name in ("pkinit_rsa", "tgs"):
        print(f"ratio_cpu_per_{name}_telekey_over_mit={ratios[name]:.2f}")
    print(f"ratio_cpu_per_pkinit_dh2048_telekey_over_mit={ratios['pkinit_dh2048']:.2f}")


if __name__ == "__main__":
    main()
