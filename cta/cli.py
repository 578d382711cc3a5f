"""`telekey cta manufacture|login|tgs|selfcert|run` and `telekey cert ca`: the device agent's
commands (thin: the operations live in cta/agent.py, the daemon in cta/daemon.py)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from pkcs11.exceptions import PKCS11Error

from common.errors import KerberosError
from common.kerberos.renewal import renewal_due
from common.pki.certs import build_ca, issue_device_certificate, issue_device_signing_certificate
from cta.agent import Agent, AgentError
from cta.device import Device, init_token
from cta.provider import TokenUnavailable
from runtime.controller_link import ControllerAddress
from runtime.key_files import write_private_key

HELP = "Device agent: keys in a PKCS#11 token, PKINIT client, ticket cache."
app = typer.Typer(help=HELP, no_args_is_help=True)
ca_app = typer.Typer(help="Certificate authorities for labs and tests.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """The device agent (CTA)."""


@ca_app.command("ca")
def cert_ca(directory: Annotated[Path, typer.Option("--dir", help="Write ca.pem, ca.key.")],
            name: Annotated[str, typer.Option(help="The CA's common name.")],
            organization: Annotated[str, typer.Option()] = "Manufacturer") -> None:
    """Create a CA (a manufacturer root for labs and tests; realm init makes operator CAs)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(65537, 3072)
    write_private_key(directory / "ca.key", key)
    (directory / "ca.pem").write_bytes(
        build_ca(key, name, organization, datetime.now(UTC)).public_bytes(Encoding.PEM))
    typer.echo(f"CA {name!r} written to {directory}")


@app.command()
def manufacture(
    mac: Annotated[str, typer.Option(help="The device's MAC address, aa:bb:cc:dd:ee:ff.")],
    directory: Annotated[Path, typer.Option("--dir", help="The device's own directory.")],
    manufacturer_ca: Annotated[Path, typer.Option(help="Directory with ca.pem and ca.key.")],
    operator_root: Annotated[Path, typer.Option(help="Operator root certificate (PEM).")],
) -> None:
    """Initialise the device's token: factory RSA-2048 key and certificate (MAC in the
    subject), factory certificate-signing key (ECDSA P-256) and certificate, and the
    manufacturer and operator roots. Private keys are sensitive and never extractable."""
    directory.mkdir(parents=True, exist_ok=True)
    device = Device(directory, mac.lower(), "device-" + mac.lower().replace(":", ""))
    init_token(directory, device.token_label)
    device.save()
    ca = x509.load_pem_x509_certificate((manufacturer_ca / "ca.pem").read_bytes())
    ca_key = load_pem_private_key((manufacturer_ca / "ca.key").read_bytes(), None)
    if not isinstance(ca_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise typer.BadParameter("the manufacturer CA key must be RSA or ECDSA")
    operator = x509.load_pem_x509_certificate(operator_root.read_bytes())
    now = datetime.now(UTC)
    provider = device.open_token()
    try:
        factory = issue_device_certificate(ca, ca_key, provider.generate_rsa("factory"),
                                           device.mac, now)
        signing = issue_device_signing_certificate(ca, ca_key, provider.generate_ec("signing"),
                                                   device.mac, now)
        certs = {"factory": factory, "signing": signing, "manufacturer-ca": ca,
                 "operator-root": operator}
        (directory / "certs").mkdir(exist_ok=True)
        for label, cert in certs.items():
            provider.store_certificate(label, cert)
            (directory / "certs" / f"{label}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    finally:
        provider.close()
    typer.echo(f"manufactured {device.principal} in token {device.token_label!r} ({directory})")


def _agent(directory: Path, realm: str, kdc: str, ccache: Path | None = None) -> Agent:
    """The device's agent with its token open; a device directory, token or PIN file that
    cannot be used ends the command with the reason, not a traceback."""
    try:
        device = Device.load(directory)
        return Agent(device, device.open_token(), realm=realm, kdc=kdc, ccache=ccache)
    except (TokenUnavailable, OSError, PKCS11Error) as exc:
        typer.echo(f"{directory}: cannot open the device's token: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def login(
    directory: Annotated[Path, typer.Option("--dir", help="The device's directory.")],
    realm: Annotated[str, typer.Option()],
    kdc: Annotated[str, typer.Option(help="host:port of the KDC (TCP).")],
    service: Annotated[str | None, typer.Option(
        help="Ask for this controller's ticket directly (default: a TGT).")] = None,
    rsa_mode: Annotated[bool, typer.Option("--rsa", help="RSA key transport, not DH.")] = False,
    ecdh: Annotated[bool, typer.Option("--ecdh", help="ECDH P-256 (RFC 5349), not DH.")] = False,
    certificate: Annotated[str, typer.Option(
        "--cert", help="Token certificate to log in with: factory or self-issued.")] = "factory",
    ccache: Annotated[Path | None, typer.Option(help="Default: <dir>/ccache.")] = None,
    clock_error: Annotated[int, typer.Option(
        help="Pretend the device clock is off by this many seconds (labs, tests).")] = 0,
) -> None:
    """PKINIT once with the factory (or self-issued) certificate, signed in the token; on
    success add the ticket to an MIT credential cache, else say why and leave the old cache
    untouched."""
    agent = _agent(directory, realm, kdc, ccache)
    try:
        got = agent.login(service, mode="rsa" if rsa_mode else "ecdh" if ecdh else "dh",
                          certificate=certificate, clock_error=timedelta(seconds=clock_error))
    except AgentError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    finally:
        agent.provider.close()
    if agent.offset:
        typer.echo(f"clock skew: KDC is {agent.offset.total_seconds() + clock_error:+.0f} s "
                   "from us; learned", err=True)
    cred = got.credential
    endtime = datetime.fromtimestamp(cred.endtime, UTC)
    is_tgt = cred.server.components[:1] == ("krbtgt",)
    typer.echo(f"{agent.device.principal}@{realm}: ticket for {cred.server} until "
               f"{endtime:%Y-%m-%d %H:%M} UTC ({got.method}), written to {got.ccache}; "
               f"renew from {renewal_due(endtime, is_tgt=is_tgt):%Y-%m-%d %H:%M} UTC")


@app.command()
def selfcert(
    directory: Annotated[Path, typer.Option("--dir", help="The device's directory.")],
    request: Annotated[Path, typer.Option(help="The provisioning server's signed request.")],
) -> None:
    """Seed 004: verify a signed certificate request against the operator root in the token,
    generate a new key pair in the token and issue the device a certificate for it, signed by
    the factory certificate-signing key. A request no newer than the current self-issued
    certificate is refused as a replay; a refused request leaves the token unchanged."""
    agent = _agent(directory, "", "")
    try:
        profile = agent.selfcert(request.read_bytes())
    except AgentError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    finally:
        agent.provider.close()
    typer.echo(f"self-issued certificate for {profile.device_id} ({profile.network_id}), valid "
               f"{profile.not_before:%Y-%m-%d} .. {profile.not_after:%Y-%m-%d}")


@app.command()
def tgs(
    directory: Annotated[Path, typer.Option("--dir", help="The device's directory.")],
    kdc: Annotated[str, typer.Option(help="host:port of the KDC (TCP).")],
    service: Annotated[str, typer.Option(help="The (backup) controller's principal.")],
) -> None:
    """With the TGT in <dir>/ccache, get a ticket for another controller by one TGS exchange
    (no PKINIT) and add it to the cache."""
    from common.kerberos.ccache import decode_ccache

    path = directory / "ccache"
    realm = decode_ccache(path.read_bytes()).default_principal.realm if path.exists() else ""
    agent = _agent(directory, realm, kdc)
    try:
        got = agent.tgs(service)
    except AgentError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    finally:
        agent.provider.close()
    endtime = datetime.fromtimestamp(got.credential.endtime, UTC)
    typer.echo(f"ticket for {got.credential.server} until {endtime:%Y-%m-%d %H:%M} UTC added "
               f"to {path}")


@app.command("export-cert")
def export_cert(
    directory: Annotated[Path, typer.Option("--dir", help="The device's directory.")],
    label: Annotated[str, typer.Option(help="factory, signing, self-issued, operator ...")],
    out: Annotated[Path, typer.Option(help="Where to write it (PEM).")],
) -> None:
    """Copy a certificate out of the token (certificates are public; keys never leave)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    agent = _agent(directory, "", "")
    try:
        out.write_bytes(agent.provider.certificate(label).public_bytes(Encoding.PEM))
    except KeyError as exc:
        typer.echo(f"no certificate {label!r} in the token", err=True)
        raise typer.Exit(1) from exc
    finally:
        agent.provider.close()
    typer.echo(f"{out}: the token's {label} certificate")


@app.command("install-cert")
def install_cert(
    directory: Annotated[Path, typer.Option("--dir", help="The device's directory.")],
    cert: Annotated[Path, typer.Option(help="The operator-issued certificate (PEM).")],
) -> None:
    """Store the operator-issued device certificate in the token (label `operator`). It must
    certify a key the token already holds (the factory key) and chain to the operator root
    in the token; the agent logs in with it from then on."""
    from common.pki.chain import verify_chain

    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    agent = _agent(directory, "", "")
    try:
        provider = agent.provider
        try:
            provider.key_label_for(certificate)
            verify_chain(certificate, [], [provider.certificate("operator-root")],
                         datetime.now(UTC))
        except (KeyError, KerberosError) as exc:
            typer.echo(f"refused: {exc}", err=True)
            raise typer.Exit(1) from exc
        try:
            provider.certificate("operator")
        except KeyError:
            pass
        else:
            # Replacing would destroy the key the old certificate certifies: the factory key.
            typer.echo("refused: the token already holds an operator certificate", err=True)
            raise typer.Exit(1)
        provider.store_certificate("operator", certificate)
    finally:
        agent.provider.close()
    typer.echo(f"operator certificate for {certificate.subject.rfc4514_string()} installed")


def _controller_address(principal: str, address: str) -> ControllerAddress:
    host, km_port, *esp = address.split(":")
    return ControllerAddress(principal, host, int(km_port), int(esp[0]) if esp else 4500)


@app.command()
def run(
    directory: Annotated[Path, typer.Option("--dir", help="The device's directory.")],
    realm: Annotated[str, typer.Option()],
    kdc: Annotated[str, typer.Option(help="host:port of the KDC (TCP).")],
    service: Annotated[str | None, typer.Option(help="The device's controller.")] = None,
    backup: Annotated[list[str] | None, typer.Option(
        help="Backup controller (repeatable): then PKINIT gets a TGT, controllers TGS.")] = None,
    mode: Annotated[str, typer.Option(help="PKINIT key delivery: dh, ecdh or rsa.")] = "dh",
    management_port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1; 0 = any.")] = 0,
    pkinit_grace: Annotated[int, typer.Option(
        help="Seconds before a PKINIT ticket ends to renew it (RFC 4682: 900).")] = 900,
    tgs_grace: Annotated[int, typer.Option(
        help="Seconds before a TGS ticket ends to renew it (RFC 4682: 600).")] = 600,
    controller: Annotated[str | None, typer.Option(
        help="HOST:KM_PORT[:ESP_PORT] of the controller named by --service: set up an SA "
             "(AP exchange) and keep it (ESP port default 4500).")] = None,
    backup_controller: Annotated[list[str] | None, typer.Option(
        help="PRINCIPAL=HOST:KM_PORT[:ESP_PORT] (repeatable), in failover order.")] = None,
    keepalive: Annotated[float, typer.Option(help="Seconds between ESP echo probes.")] = 20.0,
    number: Annotated[str | None, typer.Option(
        help="The device's phone number (its From; the controller's lines are what count).")
    ] = None,
    answer: Annotated[str, typer.Option(
        help="Incoming calls: record (answer, play --play, record), echo, or reject.")
    ] = "record",
    play: Annotated[str | None, typer.Option(
        help="Sent in every call: an 8 kHz 16-bit mono WAV file or tone[:HZ[:SECONDS]] "
             "(default: silence).")] = None,
    record_dir: Annotated[Path | None, typer.Option(
        help="Write what each call received to DIR/<Call-ID>.wav.")] = None,
    esp_keylog: Annotated[Path | None, typer.Option(
        help="Labs only: append device-to-device SA keys as Wireshark esp_sa records.")
    ] = None,
    srtp_profile: Annotated[str, typer.Option(
        help="AES_CM_128_HMAC_SHA1_80 or AEAD_AES_128_GCM.")] = "AES_CM_128_HMAC_SHA1_80",
    json_logs: Annotated[bool, typer.Option("--json/--console")] = True,
) -> None:
    """The long-running agent: keeps the controller tickets fresh (renewal timers), keeps an
    SA with the controller, places and answers calls (SRTP media), and answers the
    management port (status, renew, selfcert, echo, call, hangup). SIGTERM stops it."""
    from common.log import configure
    from cta.daemon import AgentConfig, CallConfig
    from cta.daemon import run as run_daemon
    from runtime.process import run as run_async

    configure(json=json_logs)
    agent = _agent(directory, realm, kdc)
    controllers = []
    if controller:
        if not service:
            raise typer.BadParameter("--controller needs --service (its principal)")
        controllers.append(_controller_address(service, controller))
    for item in backup_controller or ():
        principal, _, address = item.partition("=")
        controllers.append(_controller_address(principal, address))
    backups = tuple(dict.fromkeys([*(backup or ()), *(c.principal for c in controllers[1:])]))
    config = AgentConfig(service=service, backups=backups, mode=mode,
                         controllers=tuple(controllers), keepalive_s=keepalive,
                         management_port=management_port,
                         pkinit_grace=timedelta(seconds=pkinit_grace),
                         tgs_grace=timedelta(seconds=tgs_grace),
                         calls=CallConfig(number, answer, play, record_dir, esp_keylog,
                                          srtp_profile))
    try:
        run_async(run_daemon(agent, config))
    finally:
        agent.provider.close()


@app.command("echo-server")
def echo_server(
    principal: Annotated[str, typer.Option(help="Its principal, e.g. media/echo.lab.test.")],
    keytab: Annotated[Path, typer.Option(exists=True, help="Its keytab (principal ktadd).")],
    realm: Annotated[str, typer.Option()],
    kdc: Annotated[str, typer.Option(help="host:port of the KDC (TCP).")],
    service: Annotated[str, typer.Option(help="The controller's principal.")],
    controller: Annotated[str, typer.Option(help="HOST:KM_PORT[:ESP_PORT] of the controller.")],
    number: Annotated[str, typer.Option(help="The number it answers (a line at the controller).")],
    record_dir: Annotated[Path | None, typer.Option(help="Record each call here.")] = None,
    esp_keylog: Annotated[Path | None, typer.Option(help="Labs only: esp_sa records.")] = None,
) -> None:
    """A network server that answers every call and sends the caller's audio back (the
    device-to-server call of seed 001). SIGTERM stops it."""
    from common.log import configure
    from cta.echo_server import run as run_server
    from runtime.process import run as run_async

    configure(json=True)
    run_async(run_server(principal=principal, keytab=keytab, realm=realm, kdc=kdc,
                         controller=_controller_address(service, controller), number=number,
                         record_dir=record_dir, esp_keylog=esp_keylog))
