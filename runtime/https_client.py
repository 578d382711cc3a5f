"""HTTPS GET for the daemons that talk to the enterprise key server (seed 002): the controller
fetching K_g from the advanced service over mutual TLS, a phone fetching its key file from the
basic service with the server checked against the root it carries.

`HttpsClient` keeps one connection open and reuses it (seed 002: "the trusted communications
process can be performed once as long as the session is maintained and reused"), reconnecting
once when the server closed it. It blocks: daemons call it from an executor thread of their
own (`get_async`), one request at a time.
"""

import asyncio
import http.client
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from runtime.key_files import read_secret_bytes


class HttpsError(Exception):
    """No answer: the connection, TLS or HTTP failed (not an error status, which is a
    Response)."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def tls_context(ca_file: Path, cert_file: Path | None = None,
                key_file: Path | None = None) -> ssl.SSLContext:
    """A client context that checks the server against `ca_file` (and its name), TLS 1.2 or
    later, with a client certificate when one is given (its key must be mode 0600)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        if key_file is None:
            raise ValueError("a client certificate needs its key")
        read_secret_bytes(key_file)  # refuse a key file others can read
        context.load_cert_chain(cert_file, key_file)
    return context


class HttpsClient:
    def __init__(self, base_url: str, context: ssl.SSLContext, *,
                 timeout_s: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{base_url}: an https:// URL is needed")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.prefix = parts.path.rstrip("/")
        self.context = context
        self.timeout_s = timeout_s
        self._connection: http.client.HTTPSConnection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="https")

    def get(self, path: str) -> Response:
        """GET `path` (below the base URL's path); HttpsError when no answer came."""
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout_s, context=self.context)
            try:
                self._connection.request("GET", self.prefix + path)
                response = self._connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # A kept connection the server closed meanwhile fails at once: one more try
                # on a new connection.
                if attempt == 2 or isinstance(exc, ssl.SSLCertVerificationError):
                    raise HttpsError(f"https://{self.host}:{self.port}: "
                                     f"{type(exc).__name__}: {exc}") from exc
                continue
            if response.will_close:
                self.close()
            return Response(response.status, {k.lower(): v for k, v in response.getheaders()},
                            body)
        raise AssertionError("unreachable")

    async def get_async(self, path: str) -> Response:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.get, path)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
