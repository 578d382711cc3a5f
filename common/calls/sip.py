"""A small SIP (RFC 3261) subset for telekey's call signaling: requests INVITE, ACK, BYE,
CANCEL (and any token method, answered 405 by the caller's policy), responses with any
status. No I/O.

Parsing is strict and bounded: UTF-8, CRLF line ends, a request line `METHOD SP
Request-URI SP SIP/2.0` or status line `SIP/2.0 SP 3DIGIT SP reason`, headers `Name: value`
(compact forms v f t i m l c k expanded), the mandatory Via, From, To, Call-ID, CSeq (whose
method must match the request's) and Max-Forwards on requests, Content-Length equal to the
body. Anything else is a SipError carrying the 400-class response to send
(RFC 3261 §21.4); a parser never raises anything else.
"""

import re
from dataclasses import dataclass, field

MAX_MESSAGE = 65_536
MAX_HEADERS = 64
VERSION = "SIP/2.0"
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
           "l": "content-length", "c": "content-type", "k": "supported"}
CANONICAL = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq",
             "contact": "Contact", "content-length": "Content-Length",
             "content-type": "Content-Type", "max-forwards": "Max-Forwards"}
REQUIRED = ("via", "from", "to", "call-id", "cseq")
TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
URI = re.compile(r"^sips?:[^\s]+$")
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           481: "Call/Transaction Does Not Exist", 486: "Busy Here", 487: "Request Terminated",
           488: "Not Acceptable Here", 500: "Server Internal Error"}


class SipError(Exception):
    """A message we must refuse, with the response status to refuse it with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class SipMessage:
    start: tuple[str, str, str]  # (method, uri, version) or (version, code, reason)
    headers: tuple[tuple[str, str], ...]  # (lower-case name, value) in order
    body: bytes = b""
    is_request: bool = field(default=True)

    @property
    def method(self) -> str:
        return self.start[0] if self.is_request else self.cseq[1]

    @property
    def uri(self) -> str:
        return self.start[1]

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.start[1])

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n == name), None)

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = (self.header("cseq") or "").partition(" ")
        return int(number), method.strip()


def parse(data: bytes) -> SipMessage:
    """Parse one SIP message; raise SipError(400-class) for anything malformed."""
    if len(data) > MAX_MESSAGE:
        raise SipError(413, "Request Entity Too Large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipError(400, "No End Of Headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipError(400, "Not UTF-8") from exc
    lines = text.split("\r\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise SipError(400, "Too Many Headers")
    parts = lines[0].split(" ", 2)
    if len(parts) != 3:
        raise SipError(400, "Bad Start Line")
    is_request = parts[0] != VERSION
    if is_request:
        method, uri, version = parts
        if not TOKEN.match(method) or not URI.match(uri) or version != VERSION:
            raise SipError(400, "Bad Request Line")
    elif not (len(parts[1]) == 3 and parts[1].isdigit() and 100 <= int(parts[1]) <= 699):
        raise SipError(400, "Bad Status Line")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not TOKEN.match(name):
            raise SipError(400, "Bad Header")
        headers.append((COMPACT.get(name, name), value.strip()))
    message = SipMessage((parts[0], parts[1], parts[2]), tuple(headers), body, is_request)
    for name in REQUIRED + (("max-forwards",) if is_request else ()):
        if message.header(name) is None:
            raise SipError(400, f"Missing {CANONICAL[name]}")
    cseq = (message.header("cseq") or "").split()
    if len(cseq) != 2 or not cseq[0].isdigit() or len(cseq[0]) > 10:
        raise SipError(400, "Bad CSeq")
    if is_request and cseq[1] != parts[0]:
        raise SipError(400, "CSeq Method Mismatch")
    length = message.header("content-length")
    if length is not None and (not length.isdigit() or int(length) != len(body)):
        raise SipError(400, "Bad Content-Length")
    return message


def encode(message: SipMessage) -> bytes:
    """Serialise with canonical header names and a correct Content-Length."""
    lines = [" ".join(message.start)]
    for name, value in message.headers:
        if name != "content-length":
            lines.append(f"{CANONICAL.get(name, name.title())}: {value}")
    lines.append(f"Content-Length: {len(message.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + message.body


def request(method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b"",
            ) -> SipMessage:
    return SipMessage((method, uri, VERSION), tuple((n.lower(), v) for n, v in headers), body)


def response(to: SipMessage, status: int, reason: str | None = None,
             headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> SipMessage:
    """A response to `to` (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq copied."""
    copied = [(n, v) for n, v in to.headers if n in ("via", "from", "to", "call-id", "cseq")]
    extra = [(n.lower(), v) for n, v in headers or []]
    return SipMessage((VERSION, str(status), reason or REASONS.get(status, "Unknown")),
                      tuple(copied + extra), body, is_request=False)


def refusal(data: bytes, error: SipError) -> bytes | None:
    """The response to a request that failed to parse, if enough of it can be read to
    address one (else None: the datagram is dropped)."""
    head = data.partition(b"\r\n\r\n")[0].decode("utf-8", "replace")
    headers = []
    for line in head.split("\r\n")[1:]:
        name, colon, value = line.partition(":")
        name = COMPACT.get(name.strip().lower(), name.strip().lower())
        if colon and name in ("via", "from", "to", "call-id", "cseq"):
            headers.append((name, value.strip()))
    if not any(n == "via" for n, _ in headers) or head.startswith(VERSION):
        return None
    stub = SipMessage(("X", "sip:x", VERSION), tuple(headers))
    return encode(response(stub, error.status, error.reason))
