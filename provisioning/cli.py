"""`telekey provisioning ...`: the provisioning server's tools. The service itself (seed 001's
customer and device lifecycle) is not built yet."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from common.crypto.cms import file_signer
from common.pki.selfcert import (
    KEY_ECDSA_P256,
    KEY_RSA_2048,
    SelfCertProfile,
    build_request,
    deliver_key,
)

HELP = "Provisioning CA, customer and billing records, device lifecycle."
app = typer.Typer(help=HELP, no_args_is_help=True)


@app.callback()
def main() -> None:
    """The provisioning server's tools."""


@app.command()
def status() -> None:
    """Say what of this service exists in this build."""
    typer.echo("provisioning: certreq (signed self-issue requests) and device-cert only;"
               " the service is not built yet")


@app.command()
def certreq(
    signer_cert: Annotated[Path, typer.Option(help="Provisioning server certificate (PEM).")],
    signer_key: Annotated[Path, typer.Option(help="Its private key (PEM).")],
    device_id: Annotated[str, typer.Option(help="The device's MAC address.")],
    network_id: Annotated[str, typer.Option(help="The operator network (realm).")],
    out: Annotated[Path, typer.Option(help="Where to write the DER request.")],
    days: Annotated[int, typer.Option(help="Validity of the certificate.")] = 365,
    rsa_key: Annotated[bool, typer.Option("--rsa", help="RSA-2048 instead of P-256.")] = False,
    deliver_key_for: Annotated[Path | None, typer.Option(
        "--deliver-key-for", help="Make the key pair here and deliver it, encrypted to this "
        "factory certificate (PEM), instead of the device generating one.")] = None,
) -> None:
    """A signed request for a device to issue itself a certificate (seed 004)."""
    key = load_pem_private_key(signer_key.read_bytes(), None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise typer.BadParameter("the signer key must be RSA or ECDSA")
    now = datetime.now(UTC).replace(microsecond=0)
    delivered = None
    if deliver_key_for is not None:
        factory = x509.load_pem_x509_certificate(deliver_key_for.read_bytes()).public_key()
        if not isinstance(factory, rsa.RSAPublicKey):
            raise typer.BadParameter("the factory certificate must hold an RSA key")
        new_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            rsa.generate_private_key(65537, 2048) if rsa_key
            else ec.generate_private_key(ec.SECP256R1()))
        delivered = deliver_key(new_key, factory)
    profile = SelfCertProfile(1, now, now + timedelta(days=days), network_id, device_id.lower(),
                              KEY_RSA_2048 if rsa_key else KEY_ECDSA_P256, delivered)
    signer = file_signer(key, x509.load_pem_x509_certificate(signer_cert.read_bytes()))
    out.write_bytes(build_request(profile, signer))
    typer.echo(f"request for {device_id} in {network_id} written to {out}")


@app.command("device-cert")
def device_cert(
    factory_cert: Annotated[Path, typer.Option(help="The device's factory certificate (PEM).")],
    number: Annotated[str, typer.Option(help="The phone number assigned to the device.")],
    pki_dir: Annotated[Path, typer.Option(help="The operator CA (ca.pem, ca.key).")],
    out: Annotated[Path, typer.Option(help="Where to write the certificate (PEM).")],
    days: Annotated[int, typer.Option(help="Validity.")] = 365,
) -> None:
    """The operator-issued device certificate of seed 001 (flow 4): the factory key pair's
    public key and MAC, the phone ID (SHA-256 of the number), signed by the operator CA. With
    a matching active customer record (`telekey customer add`) it gets unrestricted tickets."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from common.pki.certs import issue_device_certificate, phone_id

    factory = x509.load_pem_x509_certificate(factory_cert.read_bytes())
    public = factory.public_key()
    if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise typer.BadParameter("the factory key must be RSA or ECDSA")
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    ca_key = load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    if not isinstance(ca_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise typer.BadParameter("the CA key must be RSA or ECDSA")
    mac = str(factory.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
    cert = issue_device_certificate(ca, ca_key, public, mac, datetime.now(UTC),
                                    timedelta(days=days), phone_id_value=phone_id(number),
                                    organization=str(ca.subject.get_attributes_for_oid(
                                        x509.NameOID.ORGANIZATION_NAME)[0].value))
    out.write_bytes(cert.public_bytes(Encoding.PEM))
    typer.echo(f"{out}: operator certificate for {mac}, number {number}, valid {days} days")
