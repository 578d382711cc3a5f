"""`telekey cta manufacture|login` and `telekey cert ca`: the device agent's commands."""

import os
import secrets
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    load_pem_private_key,
)

from common.ccache import CcachePrincipal, Credential, CredentialCache, encode_ccache
from common.certs import build_ca, issue_device_certificate, issue_device_signing_certificate
from common.codes import ErrorCode
from common.errors import KerberosError
from common.framing import RecordBuffer, encode_record
from common.messages.kdc_rep import EncKdcRepPart
from common.messages.krb_error import decode_krb_error
from common.messages.ticket import encode_ticket
from common.messages.types import PrincipalName
from common.pkinit_client import PkinitOptions, build_pkinit_as_req, krbtgt, process_pkinit_as_rep
from common.renewal import clock_offset, renewal_due
from cta.device import Device
from telekey.files import write_private_key

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
    (directory / "tokens").mkdir(exist_ok=True)
    device = Device(directory, mac.lower(), "device-" + mac.lower().replace(":", ""))
    device.softhsm_conf().write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\nlibrary.reset_on_fork = false\n")
    pin = directory / "pin"
    pin.touch(mode=0o600, exist_ok=True)
    pin.chmod(0o600)
    pin.write_text(secrets.token_hex(8) + "\n")
    # The factory step: softhsm2-util takes PINs only as arguments (visible in ps here).
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", device.token_label,
                    "--pin", pin.read_text().strip(), "--so-pin", secrets.token_hex(8)],
                   check=True, capture_output=True,
                   env={**os.environ, "SOFTHSM2_CONF": str(device.softhsm_conf())})
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


def _credential(client: CcachePrincipal, part: EncKdcRepPart, ticket: bytes) -> Credential:
    """An MIT ccache credential from a KDC reply's decrypted part and the ticket's DER."""
    def ts(when: datetime | None) -> int:
        return int(when.timestamp()) if when else 0

    server = CcachePrincipal(part.sname.name_type, part.srealm, part.sname.name_string)
    return Credential(client, server, part.key.keytype, part.key.keyvalue, ts(part.authtime),
                      ts(part.starttime), ts(part.endtime), ts(part.renew_till), False,
                      part.flags, (), (), ticket, b"")


def _exchange(kdc: str, data: bytes, timeout: float = 10.0) -> bytes:
    host, _, port = kdc.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(encode_record(data))
        buffer = RecordBuffer(1 << 20)
        while (record := buffer.next_record()) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the KDC closed the connection")
            buffer.feed(chunk)
    return record


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
    success write the ticket to an MIT credential cache, else say why and leave the old cache
    untouched."""
    device = Device.load(directory)
    provider = device.open_token()
    try:
        cert = provider.certificate(certificate)
        key_label = provider.key_label_for(cert)
        # A self-issued certificate chains through the device's signing certificate.
        chain = (provider.certificate("signing"),) if certificate != "factory" else ()
        anchors = [provider.certificate("operator-root")]
        sname = (PrincipalName(2, tuple(service.split("/"))) if service else krbtgt(realm))
        offset = timedelta(seconds=clock_error)
        for attempt in (1, 2):
            now = datetime.now(UTC) + offset
            request = build_pkinit_as_req(
                cname=PrincipalName(1, tuple(device.principal.split("/"))), realm=realm,
                sname=sname, signer=provider.signer(key_label, cert, chain), now=now,
                till=now + timedelta(days=7),
                options=PkinitOptions(group=0 if rsa_mode else 14,
                                      curve="1.2.840.10045.3.1.7" if ecdh else None))
            reply = _exchange(kdc, request.data)
            if reply[:1] != b"\x7e":
                break
            error = decode_krb_error(reply)
            if error.error_code == ErrorCode.KRB_AP_ERR_SKEW and attempt == 1:
                # RFC 4120 §7.5.9: learn the KDC's time from stime and try once more.
                offset += clock_offset(error, now)
                typer.echo(f"clock skew: KDC is {offset.total_seconds():+.0f} s from us; "
                           "retrying", err=True)
                continue
            typer.echo(f"KDC refused: error {error.error_code} {error.e_text or ''}", err=True)
            raise typer.Exit(1)
        try:
            result = process_pkinit_as_rep(reply, request, realm=realm, anchors=anchors, now=now,
                                           decrypt_key=lambda k: provider.decrypt(key_label, k))
        except KerberosError as exc:
            typer.echo(f"KDC reply rejected: {exc.status} {exc.detail}", err=True)
            raise typer.Exit(1) from exc
    finally:
        provider.close()
    part = result.enc_part
    me = CcachePrincipal(1, realm, tuple(device.principal.split("/")))
    cred = _credential(me, part, encode_ticket(result.reply.ticket))
    server = cred.server
    target = ccache or directory / "ccache"
    temporary = target.with_suffix(".new")
    temporary.touch(mode=0o600, exist_ok=True)
    learned = offset - timedelta(seconds=clock_error)  # what the device's clock needs
    seconds = int(learned.total_seconds())
    temporary.write_bytes(encode_ccache(CredentialCache(
        me, (cred,), kdc_offset=(seconds, int((learned.total_seconds() - seconds) * 1e6)))))
    os.replace(temporary, target)
    is_tgt = part.sname.name_string[:1] == ("krbtgt",)
    method = "RSA" if rsa_mode else "ECDH" if ecdh else "DH"
    typer.echo(f"{device.principal}@{realm}: ticket for {server} until "
               f"{part.endtime:%Y-%m-%d %H:%M} UTC ({method}), "
               f"written to {target}; renew from "
               f"{renewal_due(part.endtime, is_tgt=is_tgt):%Y-%m-%d %H:%M} UTC")


@app.command()
def selfcert(
    directory: Annotated[Path, typer.Option("--dir", help="The device's directory.")],
    request: Annotated[Path, typer.Option(help="The provisioning server's signed request.")],
) -> None:
    """Seed 004: verify a signed certificate request against the operator root in the token,
    generate a new key pair in the token and issue the device a certificate for it, signed by
    the factory certificate-signing key. A request no newer than the current self-issued
    certificate is refused as a replay; a refused request leaves the token unchanged."""
    from cryptography.hazmat.primitives.asymmetric import ec as ec_keys

    from common.selfcert import KEY_RSA_2048, build_self_issued, verify_request
    from cta.provider import TokenEcKey

    device = Device.load(directory)
    provider = device.open_token()
    try:
        try:
            current = provider.certificate("self-issued")
            current_start: datetime | None = current.not_valid_before_utc
        except KeyError:
            current_start = None
        try:
            profile = verify_request(request.read_bytes(),
                                     operator_root=provider.certificate("operator-root"),
                                     device_mac=device.mac, current_not_before=current_start,
                                     now=datetime.now(UTC))
        except KerberosError as exc:
            typer.echo(f"request refused: {exc.status} {exc.detail}", err=True)
            raise typer.Exit(1) from exc
        generation = 1 if current_start is None else int(datetime.now(UTC).timestamp())
        label = f"self-issued-key-{generation}"
        if profile.delivered_key is not None:
            from cryptography.hazmat.primitives.serialization import load_der_public_key

            from common.messages.cms import encode_spki

            delivered = profile.delivered_key
            public = load_der_public_key(encode_spki(delivered.public_key))
            if not isinstance(public, rsa.RSAPublicKey | ec_keys.EllipticCurvePublicKey):
                typer.echo("request refused: DELIVERED_KEY_TYPE", err=True)
                raise typer.Exit(1)
            provider.unwrap_private_key(label, "factory", delivered.encrypted_key,
                                        delivered.wrapped_private_key, public)
        else:
            public = (provider.generate_rsa(label) if profile.key_algorithm == KEY_RSA_2048
                      else provider.generate_ec(label))
        signing_cert = provider.certificate("signing")
        signing_public = signing_cert.public_key()
        assert isinstance(signing_public, ec_keys.EllipticCurvePublicKey)
        issuer_key = TokenEcKey(provider, "signing", signing_public)
        cert = build_self_issued(profile, public, signing_cert, issuer_key,
                                 x509.random_serial_number())
        provider.store_certificate("self-issued", cert, replace=True)
        (directory / "certs" / "self-issued.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    finally:
        provider.close()
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
    from common.ccache import decode_ccache
    from common.crypto import Key
    from common.messages.ticket import decode_ticket
    from common.tgs_client import build_tgs_req, process_tgs_rep

    path = directory / "ccache"
    cache = decode_ccache(path.read_bytes())
    tgt = next((c for c in cache.credentials if c.server.components[:1] == ("krbtgt",)), None)
    if tgt is None:
        typer.echo("no TGT in the cache: run `telekey cta login` first", err=True)
        raise typer.Exit(1)
    realm = tgt.client.realm
    now = datetime.now(UTC)
    if cache.kdc_offset:
        now += timedelta(seconds=cache.kdc_offset[0], microseconds=cache.kdc_offset[1])
    request = build_tgs_req(tgt=decode_ticket(tgt.ticket), session_key=Key(tgt.enctype, tgt.key),
                            cname=PrincipalName(tgt.client.name_type, tgt.client.components),
                            realm=realm, sname=PrincipalName(2, tuple(service.split("/"))),
                            now=now, lifetime=timedelta(days=7))
    reply = _exchange(kdc, request.data)
    if reply[:1] == b"\x7e":
        error = decode_krb_error(reply)
        typer.echo(f"KDC refused: error {error.error_code} {error.e_text or ''}", err=True)
        raise typer.Exit(1)
    rep, part = process_tgs_rep(reply, request)
    cred = _credential(tgt.client, part, encode_ticket(rep.ticket))
    server = cred.server
    kept = tuple(c for c in cache.credentials if c.server != server)
    temporary = path.with_suffix(".new")
    temporary.write_bytes(encode_ccache(CredentialCache(cache.default_principal, (*kept, cred),
                                                        cache.kdc_offset, cache.header_fields)))
    os.replace(temporary, path)
    typer.echo(f"ticket for {server} until {part.endtime:%Y-%m-%d %H:%M} UTC added to {path}")
