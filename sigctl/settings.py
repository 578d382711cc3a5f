"""Signaling controller settings: one frozen pydantic-settings class (env prefix SIGCTL_),
loadable from TOML (a [sigctl] table)."""

import tomllib
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class SigctlSettings(BaseSettings):
    """A signaling controller (`telekey sigctl run --config FILE`): a TOML file with a `[sigctl]`
    table or top-level keys; each setting can also come from the environment as
    `SIGCTL_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="SIGCTL_", frozen=True, extra="forbid",
                                      use_attribute_docstrings=True)

    realm: str
    """The Kerberos realm of the controller and its devices."""
    principal: str
    """The controller's service principal, e.g. `sigctl/sc1.lab.test`."""
    keytab_file: Path
    """MIT keytab with the principal's keys (`telekey principal ktadd`, or MIT kadmin's)."""
    listen_host: str = "127.0.0.1"
    """Address to bind, key management and ESP."""
    km_port: int = 1293
    """UDP port of PacketCable key management; 0 = any free port (tests)."""
    esp_port: int = 4500
    """UDP port of ESP in UDP (RFC 3948); 0 = any free port."""
    suites: list[str] = ["AES-GCM-16", "AES-CBC/HMAC-SHA1-96", "3DES-CBC/HMAC-SHA1-96"]
    """ESP ciphersuites offered to devices, most preferred first."""
    sa_lifetime_s: int = 3600
    """Lifetime of a security association, in seconds."""
    grace_s: int = 300
    """A device renews its SA this many seconds before the lifetime ends."""
    max_skew_s: int = 300
    """Largest clock difference accepted in an authenticator, in seconds."""
    ack_required: bool = True
    """Ask devices to confirm each new SA (Security Parameter Recovered)."""
    metrics_port: int | None = None
    """Serve Prometheus /metrics on `listen_host` at this port (0 = any free port); none if
    unset."""
    udp_buffer_bytes: int = 8 * 1024 * 1024
    """Receive buffer of each UDP socket, for bursts of AP Requests after a restart."""
    km_workers: int = 0
    """Worker processes for the CPU of AP exchanges (`sigctl/workers.py`); 0 = all in one
    process. With N cores, N - 1 or N: the main process keeps the SAs and ESP."""
    ticket_cache: int = 16384
    """Opened tickets kept per process (`common/kerberos/ticket_cache.py`), so a device's ticket
    is decrypted once, not at every AP Request. About 3 KB each; 0 = decrypt every time."""
    esp_keylog_file: Path | None = None
    """Labs and tests only, like SSLKEYLOGFILE: append each SA's keys as Wireshark `esp_sa`
    records so that a capture can be decrypted. Never set in production."""
    log_json: bool = True
    """Log JSON lines (deployment); false logs for a console."""
    lines: dict[str, str] = {}
    """Lines homed here: phone number -> principal of a device or network server."""
    routes: dict[str, str] = {}
    """Routes: number prefix -> principal of the peer controller that serves it."""
    peers: dict[str, str] = {}
    """Peer controllers: principal -> `HOST:KM[:ESP]`."""
    kdc: str | None = None
    """`HOST:PORT` (TCP) of the KDC, for tickets to peer controllers with our keytab."""
    peer_keepalive_s: float = 20.0
    """Interval of the ESP echo on each peer link, which finds a restarted peer."""
    srtp_profile: str = "AES_CM_128_HMAC_SHA1_80"
    """SRTP protection profile for calls: `AES_CM_128_HMAC_SHA1_80` or `AEAD_AES_128_GCM`."""
    escrow_public_key_file: Path | None = None
    """Lawful-intercept escrow: the authority's X25519 public key (PEM). The media keys of
    calls originated here are sealed to it; no escrow if unset."""
    escrow_database_url: str = "sqlite:///sigctl-escrow.db"
    """SQLAlchemy URL of the escrow records."""
    escrow_retention_s: int = 86_400
    """Escrow records are kept for the call and this many seconds after it."""
    max_call_s: int = 14_400
    """A call that lasts longer is ended by the controller."""
    wake_up_rate_per_s: float = 2000.0
    """Wake Ups sent per second at most, in all (each address also gets at most one a
    second): an ESP packet with an unknown SPI is unauthenticated, and its source may be
    spoofed."""

    @classmethod
    def from_toml(cls, path: Path) -> "SigctlSettings":
        data = tomllib.loads(path.read_text())
        return cls(**data.get("sigctl", data))
