"""The staff console (provisioning/console.py) in process, through Starlette's test client (no
sockets): logins (argon2 hashes, secure session cookie), CSRF on every form, validation
messages on the page, and a new customer whose number the page shows. The same flow in a real
browser is tests/e2e/test_provisioning_console.py."""

import re
import warnings
from datetime import timedelta

import pytest
import sqlalchemy as sa

with warnings.catch_warnings():
    # Starlette 1.x would rather drive its test client with the `httpx2` fork; httpx works.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from provisioning.console import console_app
from provisioning.db import customers, staff
from provisioning.flows import Provisioner
from provisioning.staff import StaffStore, csrf_token
from tests.unit.test_provisioning_flows import MACS, clock, pki, prov  # noqa: F401

PASSWORD = "correct horse battery"


@pytest.fixture()
def client(prov: Provisioner) -> TestClient:  # noqa: F811
    store = StaffStore(prov.engine)
    store.add("test", "alice", PASSWORD)
    app = console_app(prov, store, timedelta(hours=1))
    return TestClient(app, base_url="https://testserver")


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def log_in(client: TestClient, password: str = PASSWORD) -> object:
    page = client.get("/login")
    return client.post("/login", data={"username": "alice", "password": password,
                                       "csrf": csrf_of(page.text)}, follow_redirects=False)


def test_pages_need_a_login(client: TestClient) -> None:
    for path in ("/customers", "/customers/new", "/customers/1", "/devices"):
        response = client.get(path, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (303, "/login")
    response = client.post("/customers/new", data={"name": "x"}, follow_redirects=False)
    assert response.headers["location"] == "/login"


def test_login(client: TestClient, prov: Provisioner) -> None:  # noqa: F811
    assert log_in(client, "wrong password!").status_code == 401
    response = log_in(client)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-session=")
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower()
    page = client.get("/customers")
    assert page.status_code == 200 and 'id="who">alice<' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["x-frame-options"] == "DENY"
    with prov.engine.connect() as conn:
        stored = conn.execute(sa.select(staff.c.password_hash)).scalar()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_login_form_needs_its_csrf_token(client: TestClient) -> None:
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": PASSWORD,
                                           "csrf": "forged"}, follow_redirects=False)
    assert response.status_code == 403 and "set-cookie" not in response.headers


def test_forms_without_csrf_change_nothing(client: TestClient,
                                           prov: Provisioner) -> None:  # noqa: F811
    log_in(client)
    form = {"name": "Ada", "address": "1 Engine Row", "mac": MACS[0], "headend": "A",
            "options": "voice"}
    for token in (None, "", "0" * 64, csrf_token("another session")):
        data = form if token is None else {**form, "csrf": token}
        response = client.post("/customers/new", data=data, follow_redirects=False)
        assert response.status_code == 403
    with prov.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(customers)).scalar() == 0


def test_new_customer_from_a_calling_device(client: TestClient) -> None:
    log_in(client)
    listing = client.get("/customers")
    assert MACS[0] in listing.text  # the device that reported in, calling
    form_page = client.get(f"/customers/new?mac={MACS[0]}")
    token = csrf_of(form_page.text)
    response = client.post("/customers/new", data={
        "csrf": token, "name": "Ada Lovelace", "address": "1 Engine Row", "mac": MACS[0],
        "headend": "A", "options": ["voice", "voicemail"], "kind": "customer"},
        follow_redirects=False)
    assert response.status_code == 303
    page = client.get(response.headers["location"])
    assert "Customer created: number 15551000100" in page.text
    assert '<td id="number">15551000100</td>' in page.text
    assert '<td id="state" class="state-pending">pending</td>' in page.text
    assert "waiting for the billing host" in page.text


@pytest.mark.parametrize("field, value, message", [
    ("mac", "00:1a:2b", "six octets"),
    ("mac", "00:1a:2b:3c:4d:99", "reported in"),
    ("name", "   ", "name is required"),
    ("number", "12", "4 to 15 digits"),
    ("headend", "Z", "unknown head-end"),
])
def test_fields_are_validated_on_the_page(client: TestClient, field: str, value: str,
                                          message: str) -> None:
    log_in(client)
    token = csrf_of(client.get("/customers/new").text)
    data = {"csrf": token, "name": "Ada", "address": "1 Engine Row", "mac": MACS[0],
            "headend": "A", "options": ["voice"], field: value}
    response = client.post("/customers/new", data=data)
    assert response.status_code == 422
    assert message in response.text and 'class="error"' in response.text
    assert 'value="1 Engine Row"' not in response.text or field != "address"


def test_actions_on_a_customer(client: TestClient, prov: Provisioner) -> None:  # noqa: F811
    log_in(client)
    token = csrf_of(client.get("/customers/new").text)
    created = client.post("/customers/new", data={
        "csrf": token, "name": "Ada", "address": "1 Engine Row", "mac": MACS[0],
        "headend": "A", "options": ["voice"]}, follow_redirects=False)
    path = created.headers["location"].split("?")[0]
    # Still pending: a move is refused, with the reason on the page.
    response = client.post(f"{path}/move", data={"csrf": token, "headend": "B"})
    assert response.status_code == 409 and "cannot be given a move" in response.text
    response = client.post(f"{path}/terminate", data={"csrf": "nope"})
    assert response.status_code == 403
    response = client.post(f"{path}/terminate", data={"csrf": token, "reason": "changed mind"},
                           follow_redirects=False)
    assert response.status_code == 303
    assert '<td id="state" class="state-terminated">' in client.get(path).text
    history = [row["action"] for row in prov.history(int(path.rsplit("/", 1)[1]))]
    assert "change_cancelled" in history and history.count("change_started") == 2
