"""Staff accounts and console sessions.

Passwords are stored as argon2id hashes (argon2-cffi's `PasswordHasher`, its default cost, PHC
strings that carry their own parameters, so a later cost is applied at the next login). A
session is a random 32-byte token in a cookie; the database keeps only its SHA-256, so a copy
of the database opens no session. The CSRF token of a session is HMAC-SHA256(token, "csrf"):
only the browser holding the (HttpOnly) cookie can compute it, and the server keeps nothing
more for it.
"""

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from common.provisioning.records import Conflict, InvalidField
from provisioning.db import audit_log, sessions, staff, utc

_hasher = PasswordHasher()
MIN_PASSWORD = 12


@functools.cache
def _dummy_hash() -> str:
    """Verified when the username is unknown, so that a wrong username costs as long as a
    wrong password and timing does not tell which usernames exist."""
    return _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class StaffSession:
    username: str
    staff_id: int
    token: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def csrf_token(token: str) -> str:
    return hmac.new(token.encode(), b"csrf", hashlib.sha256).hexdigest()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class StaffStore:
    def __init__(self, engine: sa.Engine, clock: Callable[[], datetime] = _now) -> None:
        self.engine = engine
        self.clock = clock

    def add(self, actor: str, username: str, password: str) -> None:
        username = username.strip()
        if not username or len(username) > 64 or not username.isprintable():
            raise InvalidField("username", "1-64 printable characters")
        if len(password) < MIN_PASSWORD:
            raise InvalidField("password", f"at least {MIN_PASSWORD} characters")
        now = self.clock()
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(staff.insert().values(username=username,
                                                       password_hash=_hasher.hash(password),
                                                       disabled=False, created_at=now))
            except sa.exc.IntegrityError as exc:
                raise Conflict("STAFF_EXISTS", f"{username} exists already") from exc
            conn.execute(audit_log.insert().values(at=now, actor=actor, action="staff_added",
                                                   entity="staff", entity_id=username,
                                                   detail={}))

    def set_disabled(self, actor: str, username: str, disabled: bool) -> bool:
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(staff.c.id).where(staff.c.username == username)).first()
            if row is None:
                return False
            conn.execute(staff.update().where(staff.c.id == row.id).values(disabled=disabled))
            if disabled:
                conn.execute(sessions.delete().where(sessions.c.staff_id == row.id))
            conn.execute(audit_log.insert().values(
                at=now, actor=actor, action="staff_disabled" if disabled else "staff_enabled",
                entity="staff", entity_id=username, detail={}))
        return True

    def login(self, username: str, password: str, lifetime: timedelta) -> StaffSession | None:
        """A new session when the password is right (None otherwise, whatever was wrong)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(staff).where(staff.c.username == username)).first()
        try:
            _hasher.verify(row.password_hash if row else _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row.disabled:
            return None
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self.engine.begin() as conn:
            if _hasher.check_needs_rehash(row.password_hash):
                conn.execute(staff.update().where(staff.c.id == row.id).values(
                    password_hash=_hasher.hash(password)))
            conn.execute(sessions.delete().where(sessions.c.expires_at <= now))
            conn.execute(sessions.insert().values(token_hash=_token_hash(token),
                                                  staff_id=row.id, created_at=now,
                                                  expires_at=now + lifetime))
            conn.execute(audit_log.insert().values(at=now, actor=username, action="login",
                                                   entity="staff", entity_id=username,
                                                   detail={}))
        return StaffSession(username, row.id, token)

    def session(self, token: str | None) -> StaffSession | None:
        if not token or len(token) > 100:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(sessions.c.expires_at, staff.c.id, staff.c.username,
                          staff.c.disabled)
                .join(staff, staff.c.id == sessions.c.staff_id)
                .where(sessions.c.token_hash == _token_hash(token))).first()
        if row is None or row.disabled or utc(row.expires_at) <= self.clock():
            return None
        return StaffSession(row.username, row.id, token)

    def logout(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sessions.delete().where(sessions.c.token_hash == _token_hash(token)))
