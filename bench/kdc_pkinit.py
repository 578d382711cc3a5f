"""KDC CPU per exchange, telekey vs MIT krb5kdc, same certificates, same client, same run.

Starts MIT's krb5kdc (PKINIT configured with the MIT test CA, KDC and client certificates of
tests/interop/mit) and telekey's KDC on loopback, drives N MIT `kinit` PKINIT logins in DH
(group 14) and RSA mode and N `kvno` TGS requests at each, and reads each KDC process's CPU
time (/proc/PID/task/*/schedstat) around each batch. The batches alternate between the two
KDCs in `--rounds` rounds, so a drift in the (shared) machine's speed reaches both alike,
after a warm-up of three of each exchange at each KDC.
Prints ms of KDC CPU per exchange and the ratios (a PKINIT login is two AS exchanges:
PREAUTH_REQUIRED, then the real one), and each round's ratios; the last line is
`ratio_cpu_per_pkinit_dh2048_telekey_over_mit=X`.

    .venv/bin/python bench/kdc_pkinit.py [--logins 40] [--rounds 4]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import cpu_seconds  # noqa: E402
from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config  # noqa: E402
from telekey.mit_realm import free_port, require_tool  # noqa: E402

FIX = ROOT / "tests" / "interop" / "mit"
REALM = "EXAMPLE.TEST"


def client_env(directory: Path, port: int) -> dict[str, str]:
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
        f"  pkinit_anchors = FILE:{FIX / 'cacert.pem'}\n }}\n")
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


def drive(env: dict[str, str], pid: int, command: list[str], n: int,
          fresh_ccache: bytes | None = None) -> float:
    """KDC CPU milliseconds per run of `command` (n runs). With `fresh_ccache`, the credential
    cache is reset to it before each run, so kvno must ask the KDC every time."""
    ccache = Path(env["KRB5CCNAME"].removeprefix("FILE:"))
    before = cpu_seconds(pid)
    for _ in range(n):
        if fresh_ccache is not None:
            ccache.write_bytes(fresh_ccache)
        result = subprocess.run(command, env=env, input="", capture_output=True, timeout=60,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{command}: {result.stderr.decode()[-500:]}")
    return (cpu_seconds(pid) - before) * 1000 / n


def measure(env: dict[str, str], pid: int, n: int) -> dict[str, float]:
    identity = f"X509_user_identity=FILE:{FIX / 'phone1.pem'},{FIX / 'phone1.key'}"
    kinit = [require_tool("kinit"), "-X", identity, f"phone1@{REALM}"]
    figures = {"pkinit_dh2048": drive(env, pid, kinit, n),
               "pkinit_rsa": drive(env, pid, kinit[:1] + ["-X", "flag_RSA_PROTOCOL=yes"] +
                                   kinit[1:], n)}
    subprocess.run(kinit, env=env, input="", capture_output=True, check=True)
    tgt_only = Path(env["KRB5CCNAME"].removeprefix("FILE:")).read_bytes()
    figures["tgs"] = drive(env, pid, [require_tool("kvno"), f"sigctl/sc2.example.test@{REALM}"],
                           n, fresh_ccache=tgt_only)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating batches per KDC (logins are split between them)")
    parser.add_argument("--dh-key-reuse", type=int, default=0,
                        help="seconds telekey's KDC may reuse its DH key (0: fresh each time)")
    args = parser.parse_args()
    n = args.logins
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "mit").mkdir()
        (base / "ours").mkdir()
        mit, mit_port = start_mit(base / "mit")
        db = f"sqlite:///{base}/ours/kdc.db"
        telekey_cmd("realm", "init", "--realm", REALM, "--db", db)
        telekey_cmd("principal", "add", "phone1", "--db", db)
        telekey_cmd("principal", "add", "sigctl/sc2.example.test", "--random-key", "--db", db)
        config = write_kdc_config(base / "ours", realm=REALM, db_url=db,
                                  cert=FIX / "kdc.pem", key=FIX / "kdc.key",
                                  anchors=[FIX / "cacert.pem"],
                                  dh_key_reuse_s=args.dh_key_reuse)
        ours = start_kdc(config, base / "ours" / "kdc.log")
        per_round = max(1, n // args.rounds)
        n = per_round * args.rounds
        rounds: list[tuple[dict[str, float], dict[str, float]]] = []
        try:
            # Warm-up, not counted: each KDC's first requests (for telekey, the first run of
            # each code path in the interpreter) are not what a running KDC costs.
            measure(client_env(base / "mit", mit_port), mit.pid, 3)
            measure(client_env(base / "ours", ours.port), ours.process.pid, 3)
            for _ in range(args.rounds):
                rounds.append((measure(client_env(base / "mit", mit_port), mit.pid, per_round),
                               measure(client_env(base / "ours", ours.port), ours.process.pid,
                                       per_round)))
        finally:
            ours.stop()
            mit.terminate()
            mit.wait(timeout=10)
    names = ("pkinit_dh2048", "pkinit_rsa", "tgs")
    theirs = {k: sum(r[0][k] for r in rounds) / len(rounds) for k in names}
    mine = {k: sum(r[1][k] for r in rounds) / len(rounds) for k in names}
    print(f"KDC CPU ms per exchange, {n} exchanges each in {len(rounds)} alternating rounds, "
          f"MIT kinit/kvno 1.20 as the client, telekey DH key reuse {args.dh_key_reuse} s")
    print(f"  {'exchange':<16}{'telekey':>10}{'MIT':>10}{'ratio':>8}")
    for name in names:
        print(f"  {name:<16}{mine[name]:>10.2f}{theirs[name]:>10.2f}"
              f"{mine[name] / theirs[name]:>8.2f}   rounds: " +
              " ".join(f"{r[1][name] / r[0][name]:.2f}" for r in rounds))
    for name in ("pkinit_rsa", "tgs"):
        print(f"ratio_cpu_per_{name}_telekey_over_mit={mine[name] / theirs[name]:.2f}")
    print(f"ratio_cpu_per_pkinit_dh2048_telekey_over_mit="
          f"{mine['pkinit_dh2048'] / theirs['pkinit_dh2048']:.2f}")


if __name__ == "__main__":
    main()
