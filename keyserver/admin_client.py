"""The admin API's client for `telekey keyserver` commands: one HTTPS request over mutual
TLS (the administrator's certificate and key; the key server checked against a CA file)."""

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runtime.key_files import read_secret_bytes


class AdminError(Exception):
    """The request failed: no connection, a TLS failure, or an error status."""


@dataclass(frozen=True)
class AdminClient:
    url: str
    cert_file: Path
    key_file: Path
    ca_file: Path
    timeout_s: float = 10.0

    def _context(self) -> ssl.SSLContext:
        read_secret_bytes(self.key_file)  # refuse a key file others can read
        context = ssl.create_default_context(cafile=self.ca_file)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON reply; AdminError with the server's error tag otherwise."""
        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise AdminError(f"{self.url}: an https:// URL is needed")
        connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443,
                                                 timeout=self.timeout_s,
                                                 context=self._context())
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            connection.request(method, parts.path.rstrip("/") + path, body=data,
                               headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AdminError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()
        try:
            reply = json.loads(payload) if payload else None
        except json.JSONDecodeError:
            reply = None
        if response.status >= 400:
            if isinstance(reply, dict) and "error" in reply:
                detail = reply.get("detail")
                raise AdminError(f"{response.status} {reply['error']}"
                                 + (f": {detail}" if detail else ""))
            raise AdminError(f"{response.status} {payload[:200]!r}")
        return reply
