"""The staff console (seed 001, FIG. 6 "CSR terminal"): server-rendered pages (Jinja2, no
JavaScript) on their own TLS listener.

- Each staff member logs in with their own account (provisioning/staff.py: argon2id hashes).
  The session cookie is `__Host-session`: Secure, HttpOnly, SameSite=Strict, Path=/.
- Every form carries a CSRF token: the session's HMAC (staff.py `csrf_token`), or for the login
  form a random value also set as a short-lived cookie (double submit). A POST whose token does
  not match changes nothing and gets 403.
- Every field is validated by common/provisioning/records.py; a refusal is shown on the page,
  next to the form, with the values entered.
- Pages: log in, customers (search, and the devices that reported in unprovisioned), new
  customer, one customer (state, steps under way, billing, certificates, history; service
  change, segment move, device swap, suspend, resume, de-provision), devices.
"""

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from starlette.templating import Jinja2Templates

from common.provisioning.records import (
    CustomerKind,
    DeviceState,
    InvalidField,
    ProvisioningError,
)
from provisioning.flows import Provisioner
from provisioning.staff import StaffSession, StaffStore

TEMPLATES = Path(__file__).resolve().parent / "templates"
SESSION_COOKIE = "__Host-session"
LOGIN_COOKIE = "__Host-login"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
}
CSS = """
body { font-family: sans-serif; margin: 0; color: #222; }
header { background: #1d3557; color: #fff; padding: .6em 1em; display: flex; gap: 1.5em;
         align-items: center; }
header a { color: #fff; } header form { margin-left: auto; }
main { padding: 1em 2em; max-width: 70em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
.error { background: #fde2e2; border: 1px solid #c00; padding: .5em 1em; }
.notice { background: #e2f5e9; border: 1px solid #2a7; padding: .5em 1em; }
label { display: block; margin: .4em 0; } input[type=text], input[type=password], textarea,
select { min-width: 22em; }
.state-active { color: #175; font-weight: bold; } .state-pending { color: #a60; }
.state-terminated, .state-suspended { color: #a00; }
fieldset { margin: 1em 0; }
"""


def console_app(provisioner: Provisioner, staff: StaffStore, session_lifetime: timedelta,
                wake: Callable[[], None] = lambda: None) -> FastAPI:
    app = FastAPI(title="telekey provisioning console", docs_url=None, redoc_url=None,
                  openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    options = provisioner.policy.service_options
    headends = sorted(provisioner.policy.headends)

    @app.middleware("http")
    async def security_headers(request: Request,
                               call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    def page(request: Request, name: str, session: StaffSession | None, status: int = 200,
             **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request, name, {"session": session, "options": options, "headends": headends,
                            **context}, status_code=status)

    async def current(request: Request) -> StaffSession | None:
        return await asyncio.to_thread(staff.session, request.cookies.get(SESSION_COOKIE))

    def to_login() -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    async def checked_form(request: Request, session: StaffSession) -> dict[str, Any] | None:
        form = await request.form()
        token = str(form.get("csrf", ""))
        if not hmac.compare_digest(token.encode(), session.csrf.encode()):
            return None
        return {key: form.getlist(key) if key == "options" else str(form.get(key, ""))
                for key in form}

    def forbidden() -> PlainTextResponse:
        return PlainTextResponse("the form's CSRF token is missing or wrong; reload the page",
                                 status_code=403)

    @app.get("/static/console.css")
    async def css() -> Response:
        return Response(CSS, media_type="text/css")

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        nonce = secrets.token_urlsafe(24)
        response = page(request, "login.html", None, csrf=nonce, error=None, username="")
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=600, secure=True, httponly=True,
                            samesite="strict", path="/")
        return response

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = await request.form()
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        token = str(form.get("csrf", ""))
        if not cookie or not hmac.compare_digest(token.encode(), cookie.encode()):
            return forbidden()
        username = str(form.get("username", ""))[:64]
        session = await asyncio.to_thread(staff.login, username, str(form.get("password", "")),
                                          session_lifetime)
        if session is None:
            nonce = secrets.token_urlsafe(24)
            refused = page(request, "login.html", None, status=401, csrf=nonce,
                           error="Wrong username or password.", username=username)
            refused.set_cookie(LOGIN_COOKIE, nonce, max_age=600, secure=True, httponly=True,
                               samesite="strict", path="/")
            return refused
        response = RedirectResponse("/customers", status_code=303)
        response.set_cookie(SESSION_COOKIE, session.token,
                            max_age=int(session_lifetime.total_seconds()), secure=True,
                            httponly=True, samesite="strict", path="/")
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True,
                               samesite="strict")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        session = await current(request)
        if session is None:
            return to_login()
        if await checked_form(request, session) is None:
            return forbidden()
        await asyncio.to_thread(staff.logout, session.token)
        response = to_login()
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True,
                               samesite="strict")
        return response

    @app.get("/")
    async def home() -> Response:
        return RedirectResponse("/customers", status_code=303)

    @app.get("/customers", response_class=HTMLResponse)
    async def customers(request: Request, q: str = "") -> Response:
        session = await current(request)
        if session is None:
            return to_login()
        found = await asyncio.to_thread(provisioner.search, q[:100])
        calling = await asyncio.to_thread(provisioner.devices, DeviceState.UNPROVISIONED, 50)
        return page(request, "customers.html", session, q=q, customers=found, calling=calling)

    @app.get("/devices", response_class=HTMLResponse)
    async def devices(request: Request) -> Response:
        session = await current(request)
        if session is None:
            return to_login()
        found = await asyncio.to_thread(provisioner.devices, None, 500)
        pool = await asyncio.to_thread(provisioner.pool)
        return page(request, "devices.html", session, devices=found, pool=pool)

    @app.get("/customers/new", response_class=HTMLResponse)
    async def new_form(request: Request, mac: str = "") -> Response:
        session = await current(request)
        if session is None:
            return to_login()
        calling = await asyncio.to_thread(provisioner.devices, DeviceState.UNPROVISIONED, 50)
        return page(request, "customer_new.html", session, error=None, calling=calling,
                    values={"mac": mac[:32], "options": ["voice"], "kind": "customer",
                            "headend": headends[0] if headends else ""})

    @app.post("/customers/new", response_class=HTMLResponse)
    async def new(request: Request) -> Response:
        session = await current(request)
        if session is None:
            return to_login()
        values = await checked_form(request, session)
        if values is None:
            return forbidden()
        try:
            kind = CustomerKind(values.get("kind") or "customer")
        except ValueError:
            kind = CustomerKind.CUSTOMER
        try:
            created = await asyncio.to_thread(
                provisioner.new_customer, session.username, name=values.get("name", ""),
                address=values.get("address", ""), headend=values.get("headend", ""),
                mac=values.get("mac", ""), options=values.get("options", []),
                number=values.get("number") or None, kind=kind)
        except ProvisioningError as exc:
            calling = await asyncio.to_thread(provisioner.devices, DeviceState.UNPROVISIONED,
                                              50)
            return page(request, "customer_new.html", session, status=exc.http_status,
                        error=exc.detail or exc.status, calling=calling, values=values,
                        field=exc.field if isinstance(exc, InvalidField) else None)
        wake()
        return RedirectResponse(f"/customers/{created['id']}?msg="
                                + quote(f"Customer created: number {created['number']}"),
                                status_code=303)

    @app.get("/customers/{customer_id}", response_class=HTMLResponse)
    async def customer(request: Request, customer_id: int, msg: str = "") -> Response:
        session = await current(request)
        if session is None:
            return to_login()
        return await show(request, session, customer_id, notice=msg[:200])

    async def show(request: Request, session: StaffSession, customer_id: int,
                   notice: str = "", error: str | None = None, status: int = 200) -> Response:
        try:
            record = await asyncio.to_thread(provisioner.customer, customer_id)
        except ProvisioningError as exc:
            return page(request, "message.html", session, status=exc.http_status,
                        error=exc.detail)
        history = await asyncio.to_thread(provisioner.history, customer_id)
        calling = await asyncio.to_thread(provisioner.devices, DeviceState.UNPROVISIONED, 50)
        return page(request, "customer.html", session, status=status, c=record,
                    history=history, calling=calling, notice=notice, error=error)

    actions: dict[str, tuple[str, Callable[[str, int, dict[str, Any]], dict[str, Any]]]] = {
        "service": ("Service options changed",
                    lambda who, cid, v: provisioner.change_service(who, cid,
                                                                   v.get("options", []))),
        "move": ("Segment move started",
                 lambda who, cid, v: provisioner.move(who, cid, v.get("headend", ""),
                                                      v.get("number") or None)),
        "swap": ("Device swap started",
                 lambda who, cid, v: provisioner.swap(who, cid, v.get("mac", ""))),
        "suspend": ("Service suspended", lambda who, cid, v: provisioner.suspend(who, cid)),
        "resume": ("Service resumed", lambda who, cid, v: provisioner.resume(who, cid)),
        "terminate": ("Customer de-provisioned",
                      lambda who, cid, v: provisioner.terminate(who, cid,
                                                                v.get("reason", ""))),
    }

    @app.post("/customers/{customer_id}/{action}", response_class=HTMLResponse)
    async def act(request: Request, customer_id: int, action: str) -> Response:
        session = await current(request)
        if session is None:
            return to_login()
        values = await checked_form(request, session)
        if values is None:
            return forbidden()
        if action not in actions:
            return PlainTextResponse("no such action", status_code=404)
        done, function = actions[action]
        try:
            await asyncio.to_thread(function, session.username, customer_id, values)
        except ProvisioningError as exc:
            return await show(request, session, customer_id, error=exc.detail or exc.status,
                              status=exc.http_status)
        wake()
        return RedirectResponse(f"/customers/{customer_id}?msg={quote(done)}", status_code=303)

    return app
