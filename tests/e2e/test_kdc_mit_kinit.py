"""MIT kinit 1.20 (krb5-user + krb5-pkinit) logs in to telekey's KDC with PKINIT, on real
loopback sockets: the MIT test CA, KDC and client certificates from ../shared/interop."""

import subprocess
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from telekey.kdc_process import start_kdc, telekey_cmd, write_kdc_config
from telekey.mit_realm import require_tool
from tests.conftest import MIT_FIXTURES

pytestmark = pytest.mark.e2e
REALM = "EXAMPLE.TEST"


@pytest.fixture
def kdc(tmp_path, request):
    extra = getattr(request, "param", {})
    db = f"sqlite:///{tmp_path}/kdc.db"
    telekey_cmd("realm", "init", "--realm", REALM, "--db", db)
    telekey_cmd("principal", "add", "phone1", "--db", db)
    telekey_cmd("principal", "add", "sigctl/sc1.example.test", "--random-key",
                "--max-life-hours", "168", "--db", db)
    config = write_kdc_config(tmp_path, realm=REALM, db_url=db,
                              cert=MIT_FIXTURES / "kdc.pem", key=MIT_FIXTURES / "kdc.key",
                              anchors=[MIT_FIXTURES / "cacert.pem"], **extra)
    process = start_kdc(config, tmp_path / "kdc.log")
    yield process
    process.stop()


@pytest.mark.parametrize("kdc", [{"require_freshness": True}], indirect=True)
def test_mit_kinit_echoes_our_freshness_token(kdc, tmp_path):
    """RFC 8070: with freshness required, MIT's kinit succeeds only by echoing our token."""
    result = kinit(mit_env(tmp_path, kdc.port))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "freshness token" in result.stderr


def mit_env(tmp_path, port, extra_libdefaults=""):
    conf = tmp_path / "krb5.conf"
    conf.write_text(
        "[libdefaults]\n"
        f" default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n"
        f" rdns = false\n{extra_libdefaults}"
        f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n"
        f"  pkinit_anchors = FILE:{MIT_FIXTURES / 'cacert.pem'}\n }}\n")
    return {"PATH": "/usr/bin:/bin:/usr/sbin", "KRB5_CONFIG": str(conf),
            "KRB5CCNAME": f"FILE:{tmp_path / 'ccache'}", "KRB5_TRACE": "/dev/stderr"}


def kinit(env, *args):
    identity = f"FILE:{MIT_FIXTURES / 'phone1.pem'},{MIT_FIXTURES / 'phone1.key'}"
    return subprocess.run([require_tool("kinit"), "-X", f"X509_user_identity={identity}",
                           *args, f"phone1@{REALM}"], env=env, input="", capture_output=True,
                          text=True, timeout=60, check=False)


def test_mit_kinit_pkinit_dh_group14(kdc, tmp_path):
    env = mit_env(tmp_path, kdc.port)
    result = kinit(env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PKINIT" in result.stderr
    klist = subprocess.run([require_tool("klist"), "-e"], env=env, capture_output=True,
                           text=True, check=True).stdout
    assert f"krbtgt/{REALM}@{REALM}" in klist
    events = [e for e in kdc.log_events() if e.get("event") == "as_req"]
    assert [e["code"] for e in events] == [25, 0]  # PREAUTH_REQUIRED, then the login


def test_mit_kinit_pkinit_dh_group16(kdc, tmp_path):
    """With pkinit_dh_min_bits = 4096 the MIT client offers MODP group 16."""
    env = mit_env(tmp_path, kdc.port, " pkinit_dh_min_bits = 4096\n")
    result = kinit(env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PKINIT client verified DH reply" in result.stderr
    assert f"krbtgt/{REALM}@{REALM}" in klist(env)


def klist(env):
    return subprocess.run([require_tool("klist"), "-e"], env=env, capture_output=True,
                          text=True, check=True).stdout


def test_mit_kinit_pkinit_rsa_key_transport(kdc, tmp_path):
    env = mit_env(tmp_path, kdc.port)
    result = kinit(env, "-X", "flag_RSA_PROTOCOL=yes")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PKINIT client making RSA request" in result.stderr
    assert f"krbtgt/{REALM}@{REALM}" in klist(env)


def test_mit_kinit_gets_controller_ticket_directly(kdc, tmp_path):
    """Devices ask for the controller ticket in the AS-REQ itself (seed 001)."""
    env = mit_env(tmp_path, kdc.port)
    result = kinit(env, "-S", "sigctl/sc1.example.test")
    assert result.returncode == 0, result.stderr[-3000:]
    listing = klist(env)
    assert f"sigctl/sc1.example.test@{REALM}" in listing
    line = next(x for x in listing.splitlines() if "sigctl/sc1.example.test" in x)
    start, end = (datetime.strptime(" ".join(line.split()[i:i + 2]), "%m/%d/%y %H:%M:%S")
                  for i in (0, 2))
    assert end - start >= timedelta(hours=23)  # kinit asks for 24 h; the cap is 7 days


def test_mit_kvno_gets_backup_controller_ticket_through_tgs(kdc, tmp_path):
    """After a PKINIT login, a ticket for another controller costs one TGS exchange."""
    env = mit_env(tmp_path, kdc.port)
    assert kinit(env).returncode == 0
    telekey_cmd("principal", "add", "sigctl/sc2.example.test", "--random-key",
                "--db", f"sqlite:///{kdc.log_path.parent}/kdc.db")
    result = subprocess.run([require_tool("kvno"), f"sigctl/sc2.example.test@{REALM}"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kvno = 1" in result.stdout
    listing = klist(env)
    assert f"krbtgt/{REALM}@{REALM}" in listing and f"sigctl/sc2.example.test@{REALM}" in listing
    events = [e for e in kdc.log_events() if e.get("event") == "tgs_req"]
    assert [e["code"] for e in events] == [0]
    # One summary line per request names who asked for what (STYLE §6).
    assert events[0]["client"] == f"phone1@{REALM}"
    assert events[0]["server"] == "sigctl/sc2.example.test"
    logins = [e for e in kdc.log_events() if e.get("event") == "as_req" and e["code"] == 0]
    assert logins[0]["client"] == "phone1" and logins[0]["method"] == "PKINIT"


def test_mit_kinit_with_a_controller_keytab_uses_encrypted_timestamp(kdc, tmp_path):
    """A controller logs in with its keytab (PA-ENC-TIMESTAMP), as `kinit -k` does: the
    ticket for a peer controller that the controller-to-controller link uses."""
    db = f"sqlite:///{kdc.log_path.parent}/kdc.db"
    telekey_cmd("principal", "add", "sigctl/sc2.example.test", "--random-key", "--db", db)
    keytab = tmp_path / "sc1.keytab"
    telekey_cmd("principal", "ktadd", "sigctl/sc1.example.test", "--keytab", str(keytab),
                "--realm", REALM, "--db", db)
    env = mit_env(tmp_path, kdc.port)
    result = subprocess.run([require_tool("kinit"), "-k", "-t", str(keytab), "-S",
                             "sigctl/sc2.example.test", f"sigctl/sc1.example.test@{REALM}"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "encrypted timestamp" in result.stderr.lower()
    assert f"sigctl/sc2.example.test@{REALM}" in klist(env)
    done = [e for e in kdc.log_events() if e.get("event") == "as_req" and e["code"] == 0]
    assert done[-1]["method"] == "ENC-TIMESTAMP"
    assert done[-1]["client"] == "sigctl/sc1.example.test"


def _bare_as_req(sname: str = f"krbtgt/{REALM}") -> bytes:
    """A new AS-REQ without pre-authentication (random nonce, as clients send: the same bytes
    twice would be a retransmission, answered from the lookaside cache)."""
    import secrets
    from datetime import UTC, datetime, timedelta

    from common.codes import NameType
    from common.messages.kdc_req import KdcReq, KdcReqBody, encode_as_req
    from common.messages.types import PrincipalName

    body = KdcReqBody(0x50000000, PrincipalName(NameType.NT_PRINCIPAL, ("phone1",)), REALM,
                      PrincipalName(NameType.NT_SRV_INST, tuple(sname.split("/"))), None,
                      datetime.now(UTC).replace(microsecond=0) + timedelta(hours=8), None,
                      secrets.randbits(31), (18, 17), None, None, None)
    return encode_as_req(KdcReq(5, 10, None, body))


@pytest.mark.parametrize("kdc", [{"metrics_port": 0}], indirect=True)
def test_udp_answers_and_drops_garbage(kdc):
    import socket

    from common.messages.krb_error import decode_krb_error, decode_method_data

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"\x00garbage", ("127.0.0.1", kdc.port))
        sock.sendto(_bare_as_req(), ("127.0.0.1", kdc.port))
        data, _ = sock.recvfrom(65536)  # the garbage got no answer; this is the AS-REQ's
    err = decode_krb_error(data)
    assert err.error_code == 25
    assert [m.padata_type for m in decode_method_data(err.e_data)] == [16, 150]
    events = kdc.log_events()
    assert not any(e.get("event") in ("dropped", "internal_error") for e in events)
    # Dropped datagrams are counted, never logged one by one (a flood would flood the log).
    import urllib.request

    url = f"http://127.0.0.1:{kdc.listening['metrics_port']}/metrics"
    scraped = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'telekey_kdc_dropped_total{reason="not_a_kdc_request",transport="udp"} 1.0' in \
        scraped


def test_tcp_oversized_record_gets_field_toolong(kdc):
    import socket

    from common.kerberos.tcp_framing import RecordBuffer
    from common.messages.krb_error import decode_krb_error

    with socket.create_connection(("127.0.0.1", kdc.port), timeout=5) as sock:
        sock.sendall(b"\x7f\xff\xff\xff")
        buffer = RecordBuffer(65536)
        while (record := buffer.next_record()) is None:
            chunk = sock.recv(65536)
            assert chunk, "connection closed without a KRB-ERROR"
            buffer.feed(chunk)
    assert decode_krb_error(record).error_code == 61  # KRB_ERR_FIELD_TOOLONG


@pytest.mark.parametrize("kdc", [{"tcp_idle_timeout_s": 1.0, "max_tcp_connections": 2}],
                         indirect=True)
def test_tcp_idle_timeout_and_connection_bound(kdc):
    """An idle connection is closed after tcp_idle_timeout_s; one that keeps sending records
    outlives it; a connection beyond max_tcp_connections is served, and the least recently
    active connection of the busiest network is closed to make room for it."""
    import socket
    import time

    from common.kerberos.tcp_framing import RecordBuffer, encode_record
    from common.messages.krb_error import decode_krb_error

    def request(sock: socket.socket) -> int:
        sock.sendall(encode_record(_bare_as_req()))
        buffer = RecordBuffer(1 << 20)
        while (record := buffer.next_record()) is None:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            buffer.feed(chunk)
        return decode_krb_error(record).error_code

    idle = socket.create_connection(("127.0.0.1", kdc.port), timeout=10)
    busy = socket.create_connection(("127.0.0.1", kdc.port), timeout=10)
    with idle, busy:
        assert request(busy) == 25  # busy is now more recently active than idle
        with socket.create_connection(("127.0.0.1", kdc.port), timeout=10) as third:
            assert request(third) == 25  # over the bound, served: idle made room
        assert idle.recv(1) == b""  # closed to make room
        for _ in range(3):  # 1.8 s of requests every 0.6 s: never idle for 1 s
            time.sleep(0.6)
            assert request(busy) == 25  # PREAUTH_REQUIRED
        assert busy.recv(1) == b""  # and now, 1 s after its last record
    events = [e for e in kdc.log_events() if e.get("event") == "connection_evicted"]
    assert len(events) == 1


def _exchange_tcp(port: int, data: bytes) -> bytes:
    import socket

    from common.kerberos.tcp_framing import RecordBuffer, encode_record

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode_record(data))
        buffer = RecordBuffer(1 << 20)
        while (record := buffer.next_record()) is None:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            buffer.feed(chunk)
    return record


def _with_pac_request(as_req: bytes) -> bytes:
    """The same AS-REQ (same signed PA-PK-AS-REQ, same body) plus a PA-PAC-REQUEST."""
    from dataclasses import replace

    from common.messages.kdc_req import decode_as_req, encode_as_req
    from common.messages.types import PaData

    request = decode_as_req(as_req)
    extra = PaData(128, bytes.fromhex("3005a0030101ff"))
    return encode_as_req(replace(request, padata=(*(request.padata or ()), extra)))


@pytest.mark.parametrize("kdc", [{"udp_max_reply_bytes": 1400}], indirect=True)
def test_udp_too_big_then_tcp_retry_gets_the_reply(kdc):
    """MIT's client sends the same request over TCP after KRB_ERR_RESPONSE_TOO_BIG: that is a
    retransmission, not a replay, and gets the AS-REP (the lookaside cache keeps it)."""
    import socket

    from common.messages.krb_error import decode_krb_error
    from tests.pkinit_cases import request

    data = request(datetime.now(UTC)).data
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(data, ("127.0.0.1", kdc.port))
        too_big = sock.recv(65536)
        assert decode_krb_error(too_big).error_code == 52  # KRB_ERR_RESPONSE_TOO_BIG
        sock.sendto(data, ("127.0.0.1", kdc.port))  # a UDP retransmission: still too big
        assert decode_krb_error(sock.recv(65536)).error_code == 52
    assert _exchange_tcp(kdc.port, data)[:1] == b"\x6b"  # AS-REP


def test_mit_kinit_pkinit_over_udp_is_answered_on_udp(kdc, tmp_path):
    """MIT's client sends a request over `udp_preference_limit` (1465 bytes by default) by TCP
    first, and a PKINIT AS-REQ is larger: with the limit raised, kinit uses UDP, and the KDC
    answers the PKINIT reply on UDP (up to udp_max_reply_bytes, 4096 as MIT's KDC). The
    capture shows no TCP at all."""
    capture = tmp_path / "udp.pcapng"
    with capturing(kdc.port, capture):
        result = kinit(mit_env(tmp_path, kdc.port, " udp_preference_limit = 8192\n"))
        assert result.returncode == 0, result.stderr[-3000:]

    def count(display_filter):
        out = subprocess.run(["tshark", "-r", str(capture), "-Y", display_filter],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return len(out.splitlines())

    assert count(f"tcp.port == {kdc.port}") == 0
    assert count(f"udp.srcport == {kdc.port} && udp.length > 1400") >= 1  # the PKINIT reply
    assert "Sending request" in result.stderr and "UDP" in result.stderr


def test_bad_requests_get_their_codes_and_kdc_keeps_serving(kdc):
    """Each defect of tests/pkinit_cases.py (but the expired certificate, which needs the KDC's
    clock moved) against the running daemon; after each, a valid login still succeeds."""
    from datetime import UTC

    from common.kerberos.pkinit_client import process_pkinit_as_rep
    from common.messages.krb_error import decode_krb_error
    from tests.pkinit_cases import CASES, pem, request

    telekey_cmd("principal", "add", "phone2", "--db", f"sqlite:///{kdc.log_path.parent}/kdc.db")
    replayed = request(datetime.now(UTC)).data
    cases = {name: case for name, case in CASES.items() if name != "expired_certificate"}
    seen = {}
    for name, (build, _) in cases.items():
        reply = _exchange_tcp(kdc.port, build(datetime.now(UTC)))
        seen[name] = decode_krb_error(reply).error_code
        now = datetime.now(UTC)
        good = request(now)
        result = process_pkinit_as_rep(_exchange_tcp(kdc.port, good.data), good, realm=REALM,
                                       anchors=[pem("cacert.pem")], now=now)
        assert result.enc_part.sname.name_string == ("krbtgt", REALM)
    assert seen == {name: code for name, (_, code) in cases.items()}
    # A byte-identical retransmission gets the same reply again (lookaside, as MIT's KDC);
    # the same signed AuthPack in another request (one more PA-DATA) is a replay: 34.
    first = _exchange_tcp(kdc.port, replayed)
    assert first[:1] == b"\x6b" and _exchange_tcp(kdc.port, replayed) == first
    assert decode_krb_error(_exchange_tcp(kdc.port, _with_pac_request(replayed))
                            ).error_code == 34
    assert not any(e.get("event") == "internal_error" for e in kdc.log_events())


@contextmanager
def capturing(port: int, capture):
    """tshark capturing `port` on loopback into `capture` while the block runs (it waits until
    tshark says it captures, and a second after the block for the last packets)."""
    import time

    tshark = subprocess.Popen(["tshark", "-i", "lo", "-f", f"port {port}", "-w", str(capture)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while "Capturing on" not in line and time.monotonic() < deadline:
            line = tshark.stderr.readline()
        assert "Capturing on" in line
        yield
        time.sleep(1)
    finally:
        tshark.terminate()
        tshark.wait(timeout=30)


def _malformed_items(capture, port):
    """Wireshark's malformed-packet items in a capture, decoding `port` as Kerberos."""
    out = subprocess.run(["tshark", "-r", str(capture), "-d", f"tcp.port=={port},kerberos",
                          "-d", f"udp.port=={port},kerberos", "-V"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    warnings = out.count("Expert Info (Warning/Malformed)")
    return warnings, out.count("[Malformed Packet"), out.count("AS-REP"), out


def test_tshark_finds_no_more_malformed_items_than_in_mit_own_exchange(kdc, tmp_path):
    """MIT's own PKINIT DH login (its capture, ../shared/interop/mit/pcap) against ours,
    dissected by the same tshark: ours must not look worse."""
    capture = tmp_path / "ours.pcapng"
    with capturing(kdc.port, capture):
        assert kinit(mit_env(tmp_path, kdc.port)).returncode == 0
    ours, our_errors, our_replies, text = _malformed_items(capture, kdc.port)
    theirs, their_errors, their_replies, _ = _malformed_items(
        MIT_FIXTURES / "pcap" / "mit_pkinit_dh_as.pcapng", 18888)
    # tshark 4.0's PKINIT grammar predates freshness tokens and KDFs: 4 warnings on MIT's own
    # bytes (../shared/interop/mit/pcap/summary.txt), none of them a malformed packet.
    assert (theirs, their_errors) == (4, 0) and their_replies >= 1
    assert our_replies >= 1, text[-2000:]
    assert our_errors == 0 and ours <= theirs, text[-4000:]


@pytest.mark.parametrize("kdc", [{"as_rate_per_source": 1, "as_burst_per_source": 2,
                                  "metrics_port": 0}], indirect=True)
def test_rate_limit_and_metrics(kdc):
    """Past its burst a source gets KDC_ERR_SVC_UNAVAILABLE on TCP and silence on UDP; the
    Prometheus endpoint counts requests by code and the refusals."""
    import socket
    import urllib.request

    from common.messages.krb_error import decode_krb_error

    codes = [decode_krb_error(_exchange_tcp(kdc.port, _bare_as_req())).error_code
             for _ in range(4)]
    assert codes[:2] == [25, 25] and codes[2:] == [29, 29]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(_bare_as_req(), ("127.0.0.1", kdc.port))
        with pytest.raises(TimeoutError):
            sock.recvfrom(65536)
    port = next(e["metrics_port"] for e in kdc.log_events() if e.get("event") == "listening")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'telekey_kdc_requests_total{code="25",kind="as_req"} 2.0' in text
    assert 'telekey_kdc_rate_limited_total{transport="tcp"} 2.0' in text
    assert 'telekey_kdc_rate_limited_total{transport="udp"} 1.0' in text
    assert "telekey_kdc_processing_seconds_bucket" in text


@pytest.mark.parametrize("kdc", [{"workers": 2}], indirect=True)
def test_two_workers_share_the_port(kdc, tmp_path):
    """workers = 2: two processes on one port (SO_REUSEPORT); logins keep working, and both
    workers get requests over the connections the kernel spreads between them."""
    import os

    listening = next(e for e in kdc.log_events() if e.get("event") == "listening")
    assert listening["workers"] == 2 and len(listening["pids"]) == 2
    ready = {e["pid"] for e in kdc.log_events() if e.get("event") == "worker_ready"}
    assert ready == set(listening["pids"])
    for _ in range(24):  # 24 connections: all on one worker has odds 2**-23
        _exchange_tcp(kdc.port, _bare_as_req())
    assert kinit(mit_env(tmp_path, kdc.port)).returncode == 0
    served_by = {e.get("worker") for e in kdc.log_events() if e.get("event") == "as_req"}
    assert served_by == {0, 1}
    kdc.stop()
    for pid in listening["pids"]:  # SIGTERM reached the workers too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
