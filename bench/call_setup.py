"""Call set-up latency through two controllers, and SRTP packets per second per core.

Starts the call lab of `telekey lab` (KDC, controllers sc1 and sc2, device A on sc1 and B on
sc2, SoftHSM tokens), then places `--rate` new calls per second from A to B for `--seconds`,
each lasting `--hold` seconds with B playing audio. Per call: set-up = INVITE sent → both
devices keyed (the caller holds the key the callee already acknowledged); media = INVITE sent
→ the caller's first SRTP packet from B. Prints p50/p99 of both and the agents' CPU per SRTP
packet (both agents' CPU during the run over the packets they sent and received), then the
SRTP cost in process (RTP + libsrtp protect and unprotect of 20 ms PCMU packets).
Last line: `call_setup_p50_ms=X p99_ms=Y media_p50_ms=Z srtp_pps_per_core=W`.
"""

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import cpu_seconds  # noqa: E402
from common.calls.keys import new_call_key, srtp_keys  # noqa: E402
from common.calls.rtp import PCMU, RtpPacket, decode_rtp, encode_rtp  # noqa: E402
from cta.media import srtp_session  # noqa: E402
from telekey.loopback import CallLab, manage  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def srtp_in_process(packets: int = 20000) -> float:
    """Packets per second per core: build RTP, protect, unprotect, parse (one packet each
    way, i.e. what one agent does for a packet it sends plus one it receives)."""
    key = new_call_key()
    forward, _ = srtp_keys(key.key, "AES_CM_128_HMAC_SHA1_80")
    sender = srtp_session(forward, "AES_CM_128_HMAC_SHA1_80", outbound=True)
    receiver = srtp_session(forward, "AES_CM_128_HMAC_SHA1_80", outbound=False)
    payload = bytes(160)
    started = time.process_time()
    for n in range(packets):
        data = sender.protect(encode_rtp(RtpPacket(PCMU, n & 0xFFFF, n * 160, 1234, payload)))
        decode_rtp(receiver.unprotect(data))
    return packets / (time.process_time() - started) * 2  # two packet operations each


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hold", type=float, default=0.6, help="seconds each call lasts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="telekey-bench-calls-") as tmp:
        lab = CallLab(Path(tmp))
        try:
            lab.start_controller("sc1")
            lab.start_controller("sc2")
            lab.start_devices()
            # Warm the path (peer link SAs, imports) with one call.
            warm = manage(lab.a, op="call", number="2002")
            manage(lab.a, op="hangup", call_id=warm["call_id"])
            agents = [lab.a.process.pid, lab.b.process.pid]
            cpu_before = sum(cpu_seconds(p) for p in agents)
            results: list[dict] = []
            failures: list[dict] = []
            lock = threading.Lock()

            def one_call() -> None:
                reply = manage(lab.a, op="call", number="2002")
                if not reply.get("ok"):
                    with lock:
                        failures.append(reply)
                    return
                time.sleep(args.hold)
                done = manage(lab.a, op="hangup", call_id=reply["call_id"])
                with lock:
                    results.append(done)

            threads = []
            started = time.monotonic()
            total = int(args.rate * args.seconds)
            for n in range(total):
                delay = started + n / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                thread = threading.Thread(target=one_call)
                thread.start()
                threads.append(thread)
            offered = total / (time.monotonic() - started)
            for thread in threads:
                thread.join(timeout=60)
            cpu = sum(cpu_seconds(p) for p in agents) - cpu_before
        finally:
            lab.close()
    setup = [r["setup_ms"] for r in results if r.get("setup_ms") is not None]
    media = [r["media_ms"] for r in results if r.get("media_ms") is not None]
    # Each packet is counted once by its sender and once by its receiver: both agents' work.
    packets = sum(r["sent"] + r["received"] for r in results) * 2
    print(f"calls: {len(results)} completed, {len(failures)} failed, offered "
          f"{offered:.1f} new calls/s through sc1 -> sc2, each held {args.hold} s")
    if not setup:
        print("no call completed", file=sys.stderr)
        sys.exit(1)
    print(f"set-up (INVITE -> both keyed): p50 {percentile(setup, 0.5):.1f} ms, "
          f"p99 {percentile(setup, 0.99):.1f} ms, mean {statistics.mean(setup):.1f} ms")
    print(f"media (INVITE -> first SRTP from the callee): p50 {percentile(media, 0.5):.1f} ms, "
          f"p99 {percentile(media, 0.99):.1f} ms")
    agent_pps = packets / cpu if cpu else 0.0
    print(f"agents: {packets} SRTP packet operations in {cpu:.2f} s CPU = {agent_pps:,.0f} "
          "per second per core (all of the agents' work: SIP, ESP, media)")
    in_process = srtp_in_process()
    print(f"in process: RTP + libsrtp protect/unprotect {in_process:,.0f} packets per second "
          "per core")
    print(f"call_setup_p50_ms={percentile(setup, 0.5):.1f} p99_ms={percentile(setup, 0.99):.1f} "
          f"media_p50_ms={percentile(media, 0.5):.1f} srtp_pps_per_core={in_process:.0f}")


if __name__ == "__main__":
    main()
