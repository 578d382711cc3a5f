"""The key server's three HTTPS services as FastAPI applications (each served on its own
listener by server.py, which enforces client certificates at the TLS layer), and their
OpenAPI schemas (`GET /openapi.json` on each; `telekey keyserver openapi` prints them):

- basic secure file service (seed 002, FIG. 3), server-authenticated TLS: `GET /kkg.txt?ext=`
  returns a key file (common/enterprise/key_file.py), rate-limited per source address;
- advanced service (FIG. 4), mutual TLS: `GET /v1/kg?g=&ext=` returns K_g and CV_m for a
  generator a phone presented, to application servers;
- admin API, mutual TLS: status, set the seed, rotate K_m, list, add, revoke and restore
  extensions.

Errors are JSON `{"error": TAG, "detail": text}` with the status AgentError names.
"""

import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from common.enterprise.generator import EXTENSION
from common.enterprise.key_file import encode_key_file
from common.enterprise.keys import SEED_MAX_BYTES, SEED_MIN_BYTES, Profile
from common.kerberos.rate_limit import RateLimiter
from common.log import get_logger
from keyserver.agent import AgentError, CurrentKm, KeyAgent
from keyserver.db import ExtensionRow, MasterKeyRow

log = get_logger(__name__)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

EXT_PATTERN = f"^{EXTENSION.pattern}$"
ExtQuery = Annotated[str, Query(pattern=EXT_PATTERN, description="The phone's extension "
                                "(1 to 32 of 0-9, * and #; # as %23).")]
ExtPath = Annotated[str, Path(pattern=EXT_PATTERN, description="An extension.")]
KEY_FILE_TYPE = "text/plain; charset=us-ascii"


class ErrorReply(BaseModel):
    error: str = Field(description="Stable tag, e.g. EXTENSION_REVOKED.")
    detail: str = ""


class KgReply(BaseModel):
    """K_g for (g, EXT), with the CV_m of the K_m it comes from."""

    profile: Profile
    ext: str
    g: str = Field(description="The generator, 32 lower-case hex digits.")
    kg: str = Field(description="K_g in hex: 64 digits (default profile) or 32 (seed).")
    cvm: str = Field(description="CV_m of the current K_m, 6 hex digits.")


class SeedRequest(BaseModel):
    seed: str = Field(pattern="^[0-9a-fA-F]+$", min_length=2 * SEED_MIN_BYTES,
                      max_length=2 * SEED_MAX_BYTES,
                      description=f"The seed S in hex, {SEED_MIN_BYTES} to {SEED_MAX_BYTES} "
                      "bytes. Give every key server of the enterprise the same one.")


class MasterKeyInfo(BaseModel):
    kmvno: int = Field(description="K_m version, 1 for the first seed, +1 per rotation.")
    store: Literal["token", "wrapped"]
    check_value: str = Field(description="CV_m in hex.")
    created: str
    retired: str | None = None


class Counters(BaseModel):
    first: int | None = Field(description="This server's first generator counter value.")
    reserved_end: int = Field(description="Every counter below this was reserved (committed).")
    block: int
    block_remaining: int


class StatusReply(BaseModel):
    service: Literal["keyserver"] = "keyserver"
    server_id: int
    profile: Profile
    master_key: MasterKeyInfo | None
    history: list[MasterKeyInfo]
    counters: Counters
    extensions: int


class ExtensionInfo(BaseModel):
    ext: str
    revoked: bool
    administered: bool = Field(description="Added through the admin API.")
    issued: int = Field(description="Key files given (statistics, saved in batches).")
    first_issued: str | None
    last_issued: str | None
    changed: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorReply, "description": text} for code, text in (
        (400, "Bad request"), (403, "Extension revoked"), (404, "Unknown"),
        (409, "Conflict"), (503, "No seed set yet"))}


def _info(km: CurrentKm | MasterKeyRow) -> MasterKeyInfo:
    return MasterKeyInfo(kmvno=km.kmvno, store="token" if km.store == "token" else "wrapped",
                         check_value=km.check_value.hex(), created=km.created,
                         retired=getattr(km, "retired", None))


def _extension(row: ExtensionRow) -> ExtensionInfo:
    return ExtensionInfo(ext=row.ext, revoked=row.revoked, administered=row.administered,
                         issued=row.issued, first_issued=row.first_issued,
                         last_issued=row.last_issued, changed=row.changed)



def _app(title: str, description: str) -> FastAPI:
    app = FastAPI(title=title, description=description, version="1", docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json")

    @app.exception_handler(AgentError)
    async def agent_error(_request: Request, exc: AgentError) -> JSONResponse:
        return JSONResponse({"error": exc.status, "detail": exc.detail},
                            status_code=exc.http_status)

    return app


def basic_app(agent: KeyAgent, rate: float, burst: float,
              clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """The basic secure file service (server-authenticated TLS)."""
    app = _app("telekey key server: basic secure file service",
               "Seed 002's Secure File Service: a phone fetches its key file (g, K_g, CV_m) "
               "over server-authenticated HTTPS, checking the key server against the root "
               "certificate it carries.")
    limiter = RateLimiter(rate, burst) if rate > 0 else None
    retry_after = str(math.ceil(1 / rate)) if rate > 0 else "1"

    @app.get("/kkg.txt", response_class=Response, responses={
        200: {"content": {KEY_FILE_TYPE: {"example": "KKG_FORMAT=1\nPROFILE=default\n"
                                                     "EXT=2001\nG=...\nKG=...\nCVM=...\n"}},
              "description": "The key file: six NAME=VALUE lines (docs/protocol.md §10)."},
        429: {"model": ErrorReply, "description": "Too many key files from this address"},
        **ERRORS})
    async def key_file(request: Request, ext: ExtQuery) -> Response:
        """A new key file for the extension: a fresh generator g, its K_g and CV_m."""
        source = request.client.host if request.client else ""
        if limiter is not None and not limiter.allow(source, clock()):
            return JSONResponse({"error": "RATE_LIMITED", "detail": ""}, status_code=429,
                                headers={"Retry-After": retry_after})
        issued = await agent.issue(ext)
        return Response(encode_key_file(issued), media_type=KEY_FILE_TYPE,
                        headers={"Cache-Control": "no-store"})

    @app.get("/healthz")
    async def health() -> dict[str, Any]:
        """Whether a K_m is set (a key server without one answers key files with 503)."""
        return {"status": "ok", "master_key": agent.master_key is not None}

    return app


def advanced_app(agent: KeyAgent) -> FastAPI:
    """The advanced secure file service (mutual TLS: application servers)."""
    app = _app("telekey key server: advanced secure file service",
               "Seed 002's Advanced Secure File Service: an application server authenticated "
               "by its client certificate gets K_g for the generator and extension a phone "
               "sent in its GRQ.")

    @app.get("/v1/kg", response_model=KgReply, responses=ERRORS)
    async def kg(g: Annotated[str, Query(pattern="^[0-9a-f]{32}$",
                                         description="The generator, 32 hex digits.")],
                 ext: ExtQuery) -> KgReply:
        """K_g for (g, EXT). Refused (404) when g was not issued for EXT, or not by this key
        server when it carries this server's id; 403 when the extension is revoked."""
        found = await agent.generator_key_for(bytes.fromhex(g), ext)
        return KgReply(profile=found.profile, ext=found.ext, g=found.generator.hex(),
                       kg=found.generator_key.hex(), cvm=found.check_value.hex())

    return app


def admin_app(agent: KeyAgent) -> FastAPI:
    """The admin API (mutual TLS: administrators)."""
    app = _app("telekey key server: admin API",
               "Administer the key generating agent: the seed, K_m rotation, extensions.")

    async def status_reply() -> StatusReply:
        km = agent.master_key
        history = await agent.master_key_history()
        return StatusReply(server_id=agent.server_id, profile=agent.profile,
                           master_key=None if km is None else _info(km),
                           history=[_info(row) for row in history],
                           counters=Counters(**agent.counters()),
                           extensions=len(await agent.extensions()))

    @app.get("/v1/status", response_model=StatusReply)
    async def status() -> StatusReply:
        """The current K_m (version, CV_m, store), earlier versions, counters."""
        return await status_reply()

    @app.put("/v1/seed", response_model=MasterKeyInfo, status_code=201, responses=ERRORS)
    async def set_seed(body: SeedRequest) -> MasterKeyInfo:
        """Set the first K_m from the seed (409 if one is set: rotate instead)."""
        return _info(await agent.set_seed(bytes.fromhex(body.seed), rotate=False))

    @app.post("/v1/rotate", response_model=MasterKeyInfo, responses=ERRORS)
    async def rotate(body: SeedRequest) -> MasterKeyInfo:
        """Replace K_m by the one from a new seed: the old K_m is destroyed, CV_m changes, and
        every phone fetches a new key file when its registration is refused."""
        return _info(await agent.set_seed(bytes.fromhex(body.seed), rotate=True))

    @app.get("/v1/extensions", response_model=list[ExtensionInfo])
    async def extensions() -> list[ExtensionInfo]:
        """Extensions administered here or given a key file."""
        return [_extension(row) for row in await agent.extensions()]

    @app.put("/v1/extensions/{ext}", response_model=ExtensionInfo, responses=ERRORS)
    async def add_extension(ext: ExtPath) -> ExtensionInfo:
        """Add an extension (needed when `issue_unknown_extensions` is false)."""
        return _extension(await agent.add_extension(ext))

    @app.post("/v1/extensions/{ext}/revoke", response_model=ExtensionInfo, responses=ERRORS)
    async def revoke_extension(ext: ExtPath) -> ExtensionInfo:
        """No more key files for the extension, and no K_g for its generators."""
        return _extension(await agent.revoke_extension(ext))

    @app.post("/v1/extensions/{ext}/restore", response_model=ExtensionInfo, responses=ERRORS)
    async def restore_extension(ext: ExtPath) -> ExtensionInfo:
        """Lift a revocation; generators this server issued before stay refused."""
        return _extension(await agent.restore_extension(ext))

    return app


def openapi_schemas() -> dict[str, dict[str, Any]]:
    """The three services' OpenAPI documents (no agent needed to describe them)."""
    agent: Any = None
    return {"basic": basic_app(agent, 1.0, 1.0).openapi(),
            "advanced": advanced_app(agent).openapi(),
            "admin": admin_app(agent).openapi()}
