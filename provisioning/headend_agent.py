"""The head-end agent (`telekey provisioning headend run`): keeps one head-end's per-MAC access
list and takes changes to it over mutual TLS (docs/protocol.md, "Head-end interface";
common/provisioning/headend.py is the core).

- `PUT /v1/access/{mac}` applies a change and answers its acknowledgement; a `change_id` the
  agent has applied before is answered with the acknowledgement it gave then, and changes
  nothing (a sender that lost the answer just sends the change again).
- `GET /v1/access/{mac}` and `GET /v1/access` answer what the list holds.

The list lives in a database table (SQLite by default), through `AccessBackend`, the place
where the operations issue puts a router's packet filter (nftables rules for each open MAC in
a network namespace). Each change is one transaction: the entry and the record of its
change id are written together.
"""

import asyncio
import signal
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from common.log import get_logger
from common.provisioning.headend import (
    AccessChange,
    AccessEntry,
    apply_change,
    decode_change,
    encode_entry,
)
from common.provisioning.records import InvalidField, ProvisioningError, normalize_mac
from provisioning.db import make_engine
from provisioning.settings import HeadendSettings
from runtime.https_server import bind, listener, server_context, start, stop

log = get_logger(__name__)
metadata = sa.MetaData()
access_list = sa.Table(
    "access_list", metadata,
    sa.Column("mac", sa.String(17), primary_key=True),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("number", sa.String(15), nullable=True),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("change_id", sa.String(128), nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
)
applied_changes = sa.Table(
    "applied_changes", metadata,
    sa.Column("change_id", sa.String(128), primary_key=True),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("ack", sa.JSON, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


class AccessBackend(Protocol):
    """Where a head-end's access list is kept and enforced."""

    def apply(self, change: AccessChange) -> tuple[AccessEntry, bool]: ...

    def entry(self, mac: str) -> AccessEntry | None: ...

    def entries(self) -> list[AccessEntry]: ...


def _entry(row: Any) -> AccessEntry:
    return AccessEntry(row.mac, row.state, row.number, tuple(row.options), row.version,
                       row.change_id)


class TableBackend:
    """The access list in a database table; nothing is enforced on packets (loopback tests
    and labs; nftables comes with the operations issue)."""

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        metadata.create_all(self.engine)

    def apply(self, change: AccessChange) -> tuple[AccessEntry, bool]:
        """(the entry as acknowledged, whether this call changed it)."""
        try:
            return self._apply(change)
        except sa.exc.IntegrityError:
            # The same change applied concurrently by another request: answer as a repeat.
            return self._apply(change)

    def _apply(self, change: AccessChange) -> tuple[AccessEntry, bool]:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            seen = conn.execute(sa.select(applied_changes.c.ack).where(
                applied_changes.c.change_id == change.change_id)).first()
            if seen is not None:
                ack = seen.ack
                return AccessEntry(ack["mac"], ack["state"], ack["number"],
                                   tuple(ack["options"]), ack["version"],
                                   ack["change_id"]), False
            row = conn.execute(sa.select(access_list).where(
                access_list.c.mac == change.mac)).first()
            entry = apply_change(None if row is None else _entry(row), change)
            values = {"state": entry.state, "number": entry.number,
                      "options": list(entry.options), "version": entry.version,
                      "change_id": entry.change_id, "changed_at": now}
            if row is None:
                conn.execute(access_list.insert().values(mac=entry.mac, **values))
            else:
                conn.execute(access_list.update().where(access_list.c.mac == entry.mac)
                             .values(**values))
            conn.execute(applied_changes.insert().values(
                change_id=change.change_id, mac=change.mac, applied_at=now,
                ack={"mac": entry.mac, "state": entry.state, "number": entry.number,
                     "options": list(entry.options), "version": entry.version,
                     "change_id": entry.change_id}))
        return entry, True

    def entry(self, mac: str) -> AccessEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(access_list).where(access_list.c.mac == mac)).first()
        return None if row is None else _entry(row)

    def entries(self) -> list[AccessEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(access_list).order_by(access_list.c.mac)).all()
        return [_entry(r) for r in rows]


def headend_app(name: str, backend: AccessBackend) -> FastAPI:
    app = FastAPI(title=f"telekey head-end agent {name}", version="1", docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json")

    @app.exception_handler(ProvisioningError)
    async def refused(_request: Request, exc: ProvisioningError) -> JSONResponse:
        body: dict[str, Any] = {"error": exc.status, "detail": exc.detail}
        if isinstance(exc, InvalidField):
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.http_status)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "headend": name}

    @app.put("/v1/access/{mac}")
    async def change(mac: str, request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise InvalidField("body", "not JSON") from exc
        access = decode_change(mac, body)
        entry, applied = await asyncio.to_thread(backend.apply, access)
        client = request.client
        log.info("access_change", headend=name, mac=entry.mac, action=access.action,
                 change_id=access.change_id, version=entry.version, applied=applied,
                 peer=client.host if client else None)
        return {**encode_entry(name, entry), "ack": True, "applied": applied}

    @app.get("/v1/access/{mac}")
    async def entry(mac: str) -> JSONResponse:
        found = await asyncio.to_thread(backend.entry, normalize_mac(mac))
        if found is None:
            return JSONResponse({"headend": name, "mac": normalize_mac(mac),
                                 "state": "unknown"}, status_code=404)
        return JSONResponse(encode_entry(name, found))

    @app.get("/v1/access")
    async def entries() -> dict[str, Any]:
        found = await asyncio.to_thread(backend.entries)
        return {"headend": name, "entries": [encode_entry(name, e) for e in found]}

    return app


async def serve(settings: HeadendSettings) -> None:
    """Serve the agent's one mutual-TLS listener until SIGTERM/SIGINT."""
    backend = TableBackend(settings.database_url)
    context = server_context(settings.tls_cert_file, settings.tls_key_file,
                             settings.tls_min_version, settings.client_ca_files)
    listeners = [listener("headend", headend_app(settings.name, backend), context,
                          bind(settings.listen_host, settings.listen_port))]
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    ticks = await start(listeners)
    log.info("listening", host=settings.listen_host, port=listeners[0].port,
             ports={"headend": listeners[0].port}, headend=settings.name,
             backend="table")
    try:
        await stopping.wait()
    finally:
        await stop(listeners, ticks)
        log.info("stopped")
