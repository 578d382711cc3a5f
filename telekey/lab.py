"""`telekey lab`: run what exists of telekey end to end on loopback and say what happened.

Part 1, the KDC: telekey creates a realm (database, CA, KDC certificate, a device
certificate), starts its KDC, and MIT's kinit logs the device in with PKINIT (DH and RSA),
gets a controller ticket directly, and MIT's kvno gets a backup controller's through telekey's
TGS exchange.

Part 2, the foundation against a real MIT Kerberos realm on 127.0.0.1:
telekey derives keys and writes a keytab that MIT's klist lists and MIT's kinit uses to log in
to MIT's krb5kdc; telekey reads the credential cache kinit wrote, decrypts the TGT inside it
with the krbtgt key MIT's kadmin exported, writes its own credential cache, and MIT's klist
lists that.

Part 3, the signaling controller: two devices set up SAs with a controller, echo
through ESP, survive a kill -9 of the controller without PKINIT; tshark decodes the capture.

Part 4, calls, as a timeline with per-step latencies: two controllers, provisioned
and unprovisioned devices, calls across controllers and to the echo server with audio checked
both ways; an enterprise phone (seed 002) that gets its key file from the key server,
registers with its controller over H.225.0 RAS and calls a cable device; a kill -9 of a
controller and a call after it; a pcap of everything, keytabs and esp_sa stay in the work
directory.
"""

import subprocess
import tempfile
import time
from pathlib import Path

import typer

from common.codes import KeyUsage, NameType
from common.crypto import Key
from common.kerberos.ccache import CredentialCache, decode_ccache, encode_ccache
from common.kerberos.keytab import KeytabEntry, decode_keytab, encode_keytab, find_key
from common.messages.ticket import decode_enc_ticket_part, decode_ticket
from telekey.kdc_process import start_kdc, telekey_cmd
from telekey.mit_realm import REALM, require_tool, start_mit_realm

# The lab's enterprise phone (seed 002): its extension and PIN, administered at sc1.
PHONE_EXT, PHONE_PIN = "1500", "482915"
# h225.RasMessage values as tshark prints them (the RasMessage CHOICE index).
RAS_NAMES = {"0": "GRQ", "1": "GCF", "2": "GRJ", "3": "RRQ", "4": "RCF"}


def step(text: str) -> None:
    typer.secho(f"==> {text}", bold=True)


def show(output: str) -> None:
    for line in output.strip().splitlines():
        typer.echo(f"    {line}")


def run_kdc_part(directory: Path) -> None:
    realm = "LAB.TEST"
    db = f"sqlite:///{directory}/kdc.db"
    step(f"telekey creates realm {realm}: database, CA, KDC certificate, a device certificate")
    telekey_cmd("realm", "init", "--realm", realm, "--db", db, "--pki-dir",
                str(directory / "pki"), "--port", "0")
    telekey_cmd("principal", "add", "phone1", "--db", db)
    for controller in ("sigctl/sc1.lab.test", "sigctl/sc2.lab.test"):
        telekey_cmd("principal", "add", controller, "--random-key", "--max-life-hours", "168",
                    "--db", db)
    telekey_cmd("cert", "client", "--principal", "phone1", "--realm", realm, "--pki-dir",
                str(directory / "pki"), "--out-dir", str(directory / "devices"))
    kdc = start_kdc(directory / "pki" / "kdc.toml", directory / "kdc.log")
    try:
        typer.echo(f"    telekey KDC listening on 127.0.0.1:{kdc.port} (tcp+udp)")
        conf = directory / "krb5-lab.conf"
        conf.write_text(f"[libdefaults]\n default_realm = {realm}\n dns_lookup_kdc = false\n"
                        f" dns_lookup_realm = false\n rdns = false\n[realms]\n {realm} = {{\n"
                        f"  kdc = 127.0.0.1:{kdc.port}\n"
                        f"  pkinit_anchors = FILE:{directory / 'pki' / 'ca.pem'}\n }}\n")
        env = {"PATH": "/usr/bin:/bin:/usr/sbin", "KRB5_CONFIG": str(conf),
               "KRB5CCNAME": f"FILE:{directory / 'lab.ccache'}"}
        device = directory / "devices"
        identity = f"X509_user_identity=FILE:{device / 'phone1.pem'},{device / 'phone1.key'}"

        def mit(*args: str) -> str:
            result = subprocess.run(args, env=env, input="", capture_output=True, text=True,
                                    timeout=60, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(args)}: {result.stderr}")
            return result.stdout

        step("MIT kinit: PKINIT DH (group 14, RFC 8636 KDF) for the controller ticket directly")
        mit(require_tool("kinit"), "-X", identity, "-S", "sigctl/sc1.lab.test",
            f"phone1@{realm}")
        show(mit(require_tool("klist"), "-e"))
        step("MIT kinit: PKINIT RSA key transport for a TGT; MIT kvno: backup controller via TGS")
        mit(require_tool("kinit"), "-X", identity, "-X", "flag_RSA_PROTOCOL=yes",
            f"phone1@{realm}")
        mit(require_tool("kvno"), f"sigctl/sc2.lab.test@{realm}")
        show(mit(require_tool("klist"), "-e"))
    finally:
        kdc.stop()
    step("telekey KDC log (one line per request):")
    for event in kdc.log_events():
        if event.get("event") in ("as_req", "tgs_req"):
            typer.echo(f"    {event['event']} {event['transport']} {event['status']} "
                       f"code={event['code']} {event['duration_ms']} ms")


def run_device_part(directory: Path) -> None:
    """A device made in a SoftHSM2 token logs in, unprovisioned, with its factory
    certificate; self-issues a certificate on a signed request (seed 004) and logs in with it;
    then reaches a backup controller through TGS."""
    import json
    import sys

    realm = "LAB.TEST"
    pki = directory / "pki"

    def cmd(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "telekey", *args], capture_output=True,
                                text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"telekey {' '.join(args)}: {result.stderr}")
        return result.stdout.strip()

    step("a manufacturer root and a device token (SoftHSM2): factory RSA key and certificate, "
         "certificate-signing key, roots")
    cmd("cert", "ca", "--dir", str(directory / "maker"), "--name", "Maker Root")
    device = directory / "device"
    show(cmd("cta", "manufacture", "--mac", "00:1a:2b:3c:4d:5e", "--dir", str(device),
             "--manufacturer-ca", str(directory / "maker"), "--operator-root",
             str(pki / "ca.pem")))
    config = directory / "pki" / "kdc-devices.toml"
    config.write_text((pki / "kdc.toml").read_text() + "manufacturer_anchor_files = " +
                      json.dumps([str(directory / "maker" / "ca.pem")]) + "\n")
    kdc = start_kdc(config, directory / "kdc-devices.log")
    try:
        where = f"127.0.0.1:{kdc.port}"
        step("the device logs in with its factory certificate (signed in the token): "
             "unprovisioned controller ticket")
        show(cmd("cta", "login", "--dir", str(device), "--realm", realm, "--kdc", where,
                 "--service", "sigctl/sc1.lab.test"))
        step("the provisioning server signs a certificate request; the device verifies it, "
             "makes a key in the token and issues itself a certificate")
        cmd("cert", "client", "--principal", "provisioning/server", "--realm", realm,
            "--pki-dir", str(pki), "--out-dir", str(directory / "prov"))
        request = directory / "selfcert-request.der"
        cmd("provisioning", "certreq", "--signer-cert",
            str(directory / "prov" / "provisioning_server.pem"), "--signer-key",
            str(directory / "prov" / "provisioning_server.key"), "--device-id",
            "00:1a:2b:3c:4d:5e", "--network-id", realm, "--out", str(request))
        show(cmd("cta", "selfcert", "--dir", str(device), "--request", str(request)))
        step("the same request again is refused as a replay")
        replay = subprocess.run([sys.executable, "-m", "telekey", "cta", "selfcert", "--dir",
                                 str(device), "--request", str(request)], capture_output=True,
                                text=True, timeout=120)
        show(replay.stderr)
        step("PKINIT with the self-issued certificate (ECDH P-256) for a TGT, then TGS for the "
             "backup controller")
        show(cmd("cta", "login", "--dir", str(device), "--realm", realm, "--kdc", where,
                 "--cert", "self-issued", "--ecdh"))
        show(cmd("cta", "tgs", "--dir", str(device), "--kdc", where, "--service",
                 "sigctl/sc2.lab.test"))
        show(subprocess.run([require_tool("klist"), "-c", f"FILE:{device / 'ccache'}"],
                            capture_output=True, text=True, env={"KRB5_CONFIG": "/dev/null"},
                            check=True).stdout)
    finally:
        kdc.stop()


def run_controller_part(directory: Path) -> None:
    """A KDC, a signaling controller and two devices in SoftHSM tokens on loopback —
    PKINIT, AP exchange, echo through ESP; kill -9 of the controller and the devices back
    without a new PKINIT; tshark decodes and decrypts the capture."""
    import os
    import signal

    from telekey.loopback import Capture, Lab, decode_capture, events, manage, wait_for_sa

    directory.mkdir(parents=True, exist_ok=True)
    step("a realm, telekey's KDC and signaling controller sc1 (keytab from telekey principal "
         "ktadd), tshark capturing on loopback")
    lab = Lab(directory)
    try:
        controller = lab.controller("sc1")
        info = lab.controllers["sc1"]
        typer.echo(f"    KDC 127.0.0.1:{lab.kdc.port}; sc1 key management "
                   f"127.0.0.1:{info['km_port']}, ESP 127.0.0.1:{info['esp_port']}")
        capture = Capture(directory / "controller.pcap", [info["km_port"], info["esp_port"]])
        step("two devices (SoftHSM tokens) start `telekey cta run`: PKINIT for the controller "
             "ticket, then an AP exchange for an SA")
        devices = {mac: lab.device(mac, "sc1") for mac in ("00:1a:2b:3c:4d:01",
                                                           "00:1a:2b:3c:4d:02")}
        for mac, device in devices.items():
            wait_for_sa(device)
            ticket = events(device, "ticket")[0]
            sa = events(device, "sa_established")[0]
            typer.echo(f"    {mac}: PKINIT {ticket['method']} {ticket['ms']} ms, SA "
                       f"{sa['spi_in']}/{sa['spi_out']} {sa['suite']} in {sa['ms']} ms")
        step("each device sends a datagram to the controller's echo service through ESP")
        for mac, device in devices.items():
            reply = manage(device, op="echo", data=f"hello from {mac}")
            typer.echo(f"    {mac}: {reply['reply']!r} back in {reply['rtt_ms']} ms")
        step("kill -9 of the controller, and a restart: it has forgotten every SA")
        os.kill(controller.process.pid, signal.SIGKILL)
        controller.process.wait()
        restarted = lab.controller("sc1")
        before = len(events(lab.kdc, "as_req"))
        for mac, device in devices.items():
            started = time.monotonic()
            reply = manage(device, op="echo", data="still there?")
            typer.echo(f"    {mac}: ESP on the lost SA -> Wake Up -> AP exchange with the "
                       f"ticket it holds -> {reply['reply']!r} after "
                       f"{(time.monotonic() - started) * 1000:.0f} ms")
        typer.echo(f"    the controller sent {len(events(restarted, 'wake_up'))} Wake Up(s); "
                   f"new PKINIT logins at the KDC: {len(events(lab.kdc, 'as_req')) - before}")
        capture.stop()
        step("tshark decodes the capture (pktc, Kerberos with the keytab, ESP with esp_sa)")
        text = decode_capture(capture.path, pktc_port=info["km_port"],
                              esp_port=info["esp_port"], keytab=directory / "sc1.keytab",
                              esp_sa=directory / "esp_sa")
        for label in ("AP Request (0x02)", "AP Reply (0x03)", "Wake Up (0x01)"):
            typer.echo(f"    {text.count(label)} x {label}")
        typer.echo(f"    {text.count('Encapsulating Security Payload')} ESP packets, "
                   f"{text.count('[correct]')} with the ICV verified by Wireshark, "
                   f"{text.count('Malformed')} malformed; files: {capture.path}, "
                   f"{directory / 'esp_sa'}, {directory / 'sc1.keytab'}")
    finally:
        lab.close()


class Timeline:
    """Prints each step with the time since the start and how long the step took."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = self.start

    def mark(self, text: str) -> None:
        now = time.monotonic()
        typer.echo(f"    [{now - self.start:7.2f} s] {text}  ({(now - self.last) * 1000:.0f} ms)")
        self.last = now


def run_call_part(directory: Path) -> None:
    """The whole story with calls, as a timeline."""
    import os
    import signal

    from cta.media import read_wav, tone, write_wav
    from telekey.loopback import CallLab, Enterprise, events, manage, wait_for
    from telekey.service_process import ServiceProcess

    directory.mkdir(parents=True, exist_ok=True)
    step("calls (seed 001): two controllers, provisioned devices, SRTP media, escrow")
    clock = Timeline()
    lab = CallLab(directory, keepalive_s=1.0)
    clock.mark(f"realm, operator CA, manufacturer CA, escrow key pair; KDC on "
               f"127.0.0.1:{lab.kdc.port}; tshark capturing")
    try:
        enterprise = Enterprise(lab)
        clock.mark(f"enterprise key server (seed 002) on 127.0.0.1:{enterprise.ports['basic']} "
                   f"(key files) and :{enterprise.ports['advanced']} (K_g, mutual TLS), its "
                   "seed set")
        lab.start_controller("sc1", **enterprise.controller_settings("sc1"))
        lab.start_controller("sc2")
        clock.mark("controllers sc1 (lines 1001, 1009, 611; routes 2* to sc2; H.225.0 RAS for "
                   "enterprise phones) and sc2 (line 2002; routes 1*, 6* to sc1) started, "
                   "keytabs from principal ktadd")
        lab.start_devices()
        clock.mark("devices manufactured (SoftHSM tokens); A=1001 and B=2002 provisioned "
                   "(operator certificates + customer records); U left unprovisioned; all "
                   "logged in by PKINIT and hold SAs; echo server 611 up")
        for name, device in (("A", lab.a), ("B", lab.b), ("U", lab.u)):
            ticket, sa = events(device, "ticket")[0], events(device, "sa_established")[0]
            typer.echo(f"        {name}: PKINIT {ticket['method']} with the "
                       f"{ticket['certificate']} certificate {ticket['ms']} ms, SA "
                       f"{sa['spi_in']} {sa['suite']} {sa['ms']} ms")

        def call(label: str, device: ServiceProcess, number: str, wav: str,
                 expect_back: str) -> str:
            reply = manage(device, op="call", number=number, play=str(lab.wav[wav]))
            if not reply["ok"]:
                raise RuntimeError(f"{label}: {reply}")
            clock.mark(f"{label}: INVITE -> both ends keyed, media flowing in "
                       f"{reply['setup_ms']} ms (Call-ID {reply['call_id']})")
            done = manage(device, op="hangup", call_id=reply["call_id"])
            back = read_wav(Path(done["recording"]))
            verdict = "equals" if len(back) and back == _pcmu(read_wav(lab.wav[expect_back])) \
                else "DIFFERS FROM"
            clock.mark(f"{label}: hung up; {done['sent']} SRTP packets sent, "
                       f"{done['received']} received; what came back {verdict} what "
                       f"{expect_back.upper()} played")
            if verdict != "equals":
                raise RuntimeError(f"{label}: audio differs")
            return str(reply["call_id"])

        first = call("A calls B across sc1 -> sc2", lab.a, "2002", "a", "b")
        call("A calls the echo server 611", lab.a, "611", "a", "a")
        refused = manage(lab.u, op="call", number="2002")
        clock.mark(f"unprovisioned U calls 2002: {refused.get('status')} (restricted ticket)")
        call("U calls customer service 611", lab.u, "611", "u", "u")

        enterprise.add_extension("sc1", PHONE_EXT, PHONE_PIN)
        lab.wav["p"] = directory / "p.wav"  # as long as B's tone, at least: B is heard whole
        write_wav(lab.wav["p"], tone(0.9, 520.0))
        (directory / "rec-p").mkdir(exist_ok=True)
        phone = enterprise.phone(PHONE_EXT, PHONE_PIN, "sc1", "--record-dir",
                                 str(directory / "rec-p"), "--esp-keylog",
                                 str(directory / "esp_sa"))
        wait_for(lambda: (manage(phone, op="status")["link"] or {}).get("sa"), timeout=30)
        key_file, registered = events(phone, "key_file")[0], events(phone, "registered")[0]
        clock.mark(f"enterprise phone {PHONE_EXT} (a PIN and a SoftHSM token, no certificate): "
                   f"key file from the key server (g {key_file['g'][:8]}..., CV_m "
                   f"{key_file['cvm']}), registered with sc1 (GRQ, GCF, RRQ, RCF) in "
                   f"{registered['ms']} ms, SA {registered['spi_in']} {registered['suite']}")
        call(f"phone {PHONE_EXT} calls B across sc1 -> sc2", phone, "2002", "p", "b")

        os.kill(lab.controllers["sc2"]["process"].process.pid, signal.SIGKILL)
        lab.controllers["sc2"]["process"].process.wait()
        devices = (lab.a, lab.b, lab.u)
        before = sum(len(events(d, "ticket")) for d in devices)
        restarted = lab.start_controller("sc2")
        clock.mark("kill -9 of sc2 and a restart: every SA it held is gone")
        peer = lab.controllers["sc1"]["principal"]
        wait_for(lambda: {e.get("client", "").split("@")[0]
                          for e in events(restarted, "ap_request")} >=
                 {lab.principals[lab.B_MAC], peer}, timeout=30)
        clock.mark(f"B and sc1's link are back on sc2 (Wake Up, AP exchange with the tickets "
                   f"they hold); new device logins at the KDC: "
                   f"{sum(len(events(d, 'ticket')) for d in devices) - before}")
        call("after the restart, A calls B again", lab.a, "2002", "a", "b")
        lab.capture.stop()
        opened = subprocess.run(
            [*_telekey(), "escrow", "open", "--call-id", first, "--key",
             str(lab.escrow_key), "--db", lab.escrow_db, "--who", "lab"],
            capture_output=True, text=True, timeout=60, check=True)
        clock.mark(f"escrow authority opens the first call's record: "
                   f"{len(opened.stdout.splitlines())} lines of keys (access recorded)")
        esp_sa = directory / "esp_sa"
        ras_port = lab.controllers["sc1"]["process"].listening["ras_port"]
        rows = [line.split("\t") for line in subprocess.run(
            ["tshark", "-r", str(lab.capture.path), *_udpencap(lab, phone), "-d",
             f"udp.port=={ras_port},h225", "-o", "esp.enable_encryption_decode:TRUE",
             *[a for line in esp_sa.read_text().splitlines() for a in ("-o",
                                                                       f"uat:esp_sa:{line}")],
             "-Y", "sip or h225", "-T", "fields", "-e", "sip.Method", "-e", "sip.Status-Code",
             "-e", "h225.RasMessage"],
            capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()]
        count = [field for row in rows for field in row[:2]]
        ras = [RAS_NAMES.get(row[2], row[2]) for row in rows if len(row) > 2 and row[2]]
        clock.mark(f"tshark decrypts the capture with esp_sa: {count.count('INVITE')} INVITEs, "
                   f"{count.count('BYE')} BYEs, {count.count('200')} 200s dissected; "
                   f"H.225.0 RAS: {', '.join(ras)}; files: {lab.capture.path}, {esp_sa}, "
                   f"{directory}/*.keytab")
    finally:
        lab.close()


def _pcmu(samples: object) -> object:
    from common.calls.rtp import ulaw_decode, ulaw_encode

    return ulaw_decode(ulaw_encode(samples))  # type: ignore[arg-type]


def _telekey() -> list[str]:
    import sys

    return [sys.executable, "-m", "telekey"]


def _udpencap(lab: object, phone: object) -> list[str]:
    from telekey.loopback import manage

    ports = [lab.controllers[n]["esp_port"] for n in ("sc1", "sc2")]  # type: ignore[attr-defined]
    ports += [manage(d, op="status")["calls"]["esp_port"]  # type: ignore[arg-type]
              for d in (lab.a, lab.b, lab.u, phone)]  # type: ignore[attr-defined]
    ports.append(lab.echo.listening["esp_port"])  # type: ignore[attr-defined]
    return [a for port in ports for a in ("-d", f"udp.port=={port},udpencap")]


def run_lab(workdir: Path | None = None) -> None:
    started = time.monotonic()
    directory = Path(workdir or tempfile.mkdtemp(prefix="telekey-lab-"))
    directory.mkdir(parents=True, exist_ok=True)
    run_kdc_part(directory)
    run_device_part(directory)
    run_controller_part(directory / "controller")
    run_call_part(directory / "calls")
    step(f"MIT Kerberos realm {REALM} on loopback (working files in {directory})")
    realm = start_mit_realm(directory)
    try:
        typer.echo(f"    krb5kdc listening on 127.0.0.1:{realm.port} (tcp+udp)")

        step("telekey derives phone1's keys from its password and writes a keytab")
        salt = f"{REALM}phone1".encode()
        entries = [KeytabEntry(REALM, ("phone1",), NameType.NT_PRINCIPAL, int(time.time()), 1,
                               enctype, Key.from_string(enctype, b"secret", salt).data)
                   for enctype in (20, 18)]
        ours = directory / "phone1.keytab"
        ours.write_bytes(encode_keytab(entries))
        show(realm.run(require_tool("klist"), "-k", "-t", "-e", str(ours)))

        step("MIT kinit logs in to MIT krb5kdc with telekey's keytab")
        realm.run(require_tool("kinit"), "-k", "-t", str(ours), f"phone1@{REALM}")
        show(realm.run(require_tool("klist"), "-e"))

        step("telekey reads MIT's credential cache and decrypts the TGT with the krbtgt key")
        krbtgt_keytab = directory / "krbtgt.keytab"
        realm.run(require_tool("kadmin.local"), "-r", REALM, "-q",
                  f"ktadd -norandkey -k {krbtgt_keytab} krbtgt/{REALM}")
        cache = decode_ccache((directory / "ccache").read_bytes())
        tgt = next(c for c in cache.credentials if not c.is_config)
        ticket = decode_ticket(tgt.ticket)
        service = find_key(decode_keytab(krbtgt_keytab.read_bytes()), f"krbtgt/{REALM}@{REALM}",
                           ticket.enc_part.etype, ticket.enc_part.kvno)
        if service is None:
            raise RuntimeError("kadmin exported no krbtgt key for the TGT's enctype")
        part = decode_enc_ticket_part(Key(service.enctype, service.key).decrypt(
            KeyUsage.KDC_REP_TICKET, ticket.enc_part.cipher))
        same_key = part.key.keyvalue == tgt.key
        typer.echo(f"    ticket for {ticket.sname}@{ticket.realm}, enctype {ticket.enc_part.etype}"
                   f", client {part.cname}@{part.crealm}, flags {part.flags:#010x}")
        window = f"{part.authtime:%Y-%m-%d %H:%M:%S} .. {part.endtime:%Y-%m-%d %H:%M:%S}"
        verdict = "matches" if same_key else "DIFFERS FROM"
        typer.echo(f"    valid {window} UTC; session key in ticket {verdict} the cache")
        if not same_key:
            raise RuntimeError("session key mismatch")

        step("telekey writes its own credential cache; MIT klist lists it")
        copy = directory / "telekey.ccache"
        copy.write_bytes(encode_ccache(CredentialCache(cache.default_principal, (tgt,),
                                                       kdc_offset=(0, 0))))
        show(realm.run(require_tool("klist"), "-e", "-f", "-c", f"FILE:{copy}"))
    finally:
        realm.stop()
    step(f"lab finished in {time.monotonic() - started:.1f} s: telekey's KDC serves MIT's "
         "clients and telekey's devices, devices keep their keys in their tokens, and the "
         "foundation reads and writes MIT's formats, devices keep SAs with their controller and "
         "survive its restart without PKINIT, calls carry SRTP media keyed by their "
         "controllers, and an enterprise phone with a PIN registers and calls a cable device")
