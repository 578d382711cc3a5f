"""Signaling controller settings: one frozen pydantic-settings class (env prefix SIGCTL_),
loadable from TOML (a [sigctl] table)."""

import tomllib
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class SigctlSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGCTL_", frozen=True, extra="forbid")

    realm: str
    principal: str  # the controller's service principal, e.g. sigctl/sc1.lab.test
    keytab_file: Path  # MIT keytab (telekey principal ktadd, or MIT kadmin ktadd)
    listen_host: str = "127.0.0.1"
    km_port: int = 1293  # PacketCable key management; 0 = any free port (tests)
    esp_port: int = 4500  # ESP in UDP (RFC 3948); 0 = any free port
    suites: list[str] = ["AES-GCM-16", "AES-CBC/HMAC-SHA1-96", "3DES-CBC/HMAC-SHA1-96"]
    sa_lifetime_s: int = 3600
    grace_s: int = 300
    max_skew_s: int = 300
    ack_required: bool = True
    metrics_port: int | None = None
    udp_buffer_bytes: int = 8 * 1024 * 1024  # receive buffer for bursts of AP Requests
    # Worker processes for the CPU of AP exchanges (sigctl/workers.py); 0 = all in one
    # process. On a machine with N cores, N - 1 or N: the main process keeps the SAs and ESP.
    km_workers: int = 0
    # Opened tickets kept (common/ticket_cache.py), per process: a device's ticket is
    # decrypted once, not at every AP Request. About 3 KB each; 0 = decrypt every time.
    ticket_cache: int = 16384
    # Labs and tests only, like SSLKEYLOGFILE: append each SA's keys as Wireshark esp_sa
    # records so a capture can be decrypted. Never set in production.
    esp_keylog_file: Path | None = None
    log_json: bool = True
    # Calls (issue #6). Lines: number → principal of a device or server homed here. Routes:
    # number prefix → peer controller principal; peers: that principal → HOST:KM[:ESP].
    lines: dict[str, str] = {}
    routes: dict[str, str] = {}
    peers: dict[str, str] = {}
    kdc: str | None = None  # HOST:PORT (TCP): tickets for the peer links, by our keytab
    peer_keepalive_s: float = 20.0  # ESP echo on each peer link (finds a restarted peer)
    srtp_profile: str = "AES_CM_128_HMAC_SHA1_80"
    # Lawful-intercept escrow: media keys of calls we originate, sealed to this X25519 public
    # key (PEM); kept for the call and escrow_retention_s after it.
    escrow_public_key_file: Path | None = None
    escrow_database_url: str = "sqlite:///sigctl-escrow.db"
    escrow_retention_s: int = 86_400
    max_call_s: int = 14_400

    @classmethod
    def from_toml(cls, path: Path) -> "SigctlSettings":
        data = tomllib.loads(path.read_text())
        return cls(**data.get("sigctl", data))
