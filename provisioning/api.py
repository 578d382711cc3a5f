"""The provisioning service's server-to-server APIs (JSON over HTTPS, mutual TLS at the
listener: runtime/https_server.py). docs/protocol.md ("Provisioning") documents every call.

- `api_app`, for signaling controllers and other operator servers: device reports (seed 001,
  FIG. 7 "forward CTA certificate", answered approve or deny), device and customer queries,
  the operator certificate of a provisioned device and a seed 004 certificate request for it,
  and each controller's lines (number, MAC, the certificate to deliver), which controllers
  pull.
- `billing_app`, for the billing host: the billing records not yet acknowledged, and the
  acknowledgement of each (FIG. 7-10 "ACK").

Who called is known only by listener (released uvicorn hides the client certificate), so the
audit log's actor is `api@<address>` or `billing@<address>`.
"""

import asyncio
import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from common.provisioning.records import InvalidField, ProvisioningError
from provisioning.ca import RequestSigner
from provisioning.flows import Provisioner


class DeviceReport(BaseModel):
    certificates: list[str] = Field(min_length=1, max_length=4)
    """The device's certificate first, then the certificates up to the manufacturer root:
    PEM, or base64 of DER."""
    address: str | None = Field(None, max_length=64)
    """The device's (unprovisioned) IP address."""
    controller: str | None = Field(None, max_length=255)
    """The reporting controller's name (where to tell the number later)."""


def _certificate(text: str) -> x509.Certificate:
    try:
        if "-----BEGIN" in text:
            return x509.load_pem_x509_certificate(text.encode())
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise InvalidField("certificates", "not a certificate (PEM or base64 DER)") from exc


def _actor(kind: str, request: Request) -> str:
    client = request.client
    return f"{kind}@{client.host if client else '?'}"


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ProvisioningError)
    async def refused(_request: Request, exc: ProvisioningError) -> JSONResponse:
        body: dict[str, Any] = {"error": exc.status, "detail": exc.detail}
        if isinstance(exc, InvalidField):
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.http_status)


async def _in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


def api_app(provisioner: Provisioner, signer: RequestSigner | None, realm: str) -> FastAPI:
    app = FastAPI(title="telekey provisioning API", version="1", docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json")
    _errors(app)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"ok": True}

    @app.post("/v1/devices/report")
    async def report(body: DeviceReport, request: Request) -> dict[str, Any]:
        chain = [_certificate(text) for text in body.certificates]
        result: dict[str, Any] = await _in_thread(
            provisioner.report_device, _actor("api", request), chain, body.address,
            body.controller)
        return result

    @app.get("/v1/devices/{mac}")
    async def device(mac: str) -> dict[str, Any]:
        result: dict[str, Any] = await _in_thread(provisioner.device, mac)
        return result

    @app.get("/v1/devices/{mac}/certificate")
    async def certificate(mac: str) -> dict[str, Any]:
        cert: x509.Certificate = await _in_thread(provisioner.operator_certificate, mac)
        ca = provisioner.ca
        return {"serial": format(cert.serial_number, "x"),
                "not_before": cert.not_valid_before_utc, "not_after": cert.not_valid_after_utc,
                "certificate": cert.public_bytes(Encoding.PEM).decode(),
                "chain": [] if ca is None else [
                    ca.certificate.public_bytes(Encoding.PEM).decode()]}

    @app.get("/v1/devices/{mac}/certificate-request")
    async def certificate_request(mac: str) -> dict[str, Any]:
        if signer is None:
            raise InvalidField("signer", "this service signs no certificate requests")
        cert: x509.Certificate = await _in_thread(provisioner.operator_certificate, mac)
        device_id = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        request = signer.request(str(device_id), realm, cert.not_valid_before_utc,
                                 cert.not_valid_after_utc)
        return {"request": base64.b64encode(request).decode(),
                "not_before": cert.not_valid_before_utc,
                "not_after": cert.not_valid_after_utc}

    @app.get("/v1/lines")
    async def lines(controller: Annotated[str, Query(min_length=1, max_length=255)],
                    since: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
        """The lines of a signaling controller changed after version `since` (seed 001,
        FIG. 7 "number and MAC address sent to the signaling controller")."""
        result: dict[str, Any] = await _in_thread(provisioner.lines_since, controller, since,
                                                  limit)
        return result

    @app.get("/v1/customers/{number}")
    async def customer(number: str) -> dict[str, Any]:
        result: dict[str, Any] = await _in_thread(provisioner.customer_by_number, number)
        result.pop("billing", None)
        return result

    @app.get("/v1/access")
    async def access(headend: str | None = None) -> dict[str, Any]:
        return {"entries": await _in_thread(provisioner.access_list, headend)}

    return app


def billing_app(provisioner: Provisioner) -> FastAPI:
    app = FastAPI(title="telekey provisioning billing API", version="1", docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json")
    _errors(app)

    @app.get("/v1/billing/records")
    async def records(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Billing records not yet acknowledged, oldest first."""
        return {"records": await _in_thread(provisioner.pending_billing, limit)}

    @app.post("/v1/billing/records/{record_id}/ack")
    async def ack(record_id: int, request: Request) -> dict[str, Any]:
        result: dict[str, Any] = await _in_thread(provisioner.ack_billing,
                                                  _actor("billing", request), record_id)
        return result

    return app
