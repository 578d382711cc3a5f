"""KDC settings: one frozen pydantic-settings class (env prefix KDC_), loadable from TOML."""

import tomllib
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class KdcSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KDC_", frozen=True, extra="forbid")

    realm: str
    database_url: str = "sqlite:///kdc.db"
    listen_host: str = "127.0.0.1"
    listen_port: int = 88  # 0 = pick a free port (tests); TCP and UDP share it
    kdc_cert_file: Path
    kdc_key_file: Path | None = None  # PEM private key file, or the token settings below
    pkcs11_module: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    pkcs11_token_label: str | None = None  # sign inside this token instead of kdc_key_file
    pkcs11_pin_file: Path | None = None  # mode 0600
    pkcs11_key_label: str = "kdc"
    kdc_chain_files: list[Path] = []
    pkinit_anchor_files: list[Path]  # operator roots
    manufacturer_anchor_files: list[Path] = []  # device factory roots (seed 001)
    crl_files: list[Path] = []  # PEM or DER CRLs for operator-issued certificates
    unprovisioned_numbers: list[str] = ["611", "911"]  # what unprovisioned devices may call
    max_skew_s: int = 300
    min_dh_bits: int = 2048
    default_lifetime_s: int = 36_000
    controller_lifetime_s: int = 604_800  # sigctl/... tickets: 7 days (seed 000/001)
    max_record_bytes: int = 65_536
    udp_max_reply_bytes: int = 1400
    workers: int = 1  # processes sharing the port (SO_REUSEPORT), e.g. one per core
    max_tcp_connections: int = 512
    tcp_idle_timeout_s: float = 30.0
    vague_errors: bool = False
    as_rate_per_source: float = 50.0  # AS requests per second per address (0 = no limit)
    as_burst_per_source: float = 100.0
    metrics_port: int | None = None  # Prometheus /metrics on listen_host (0 = any free port)
    principal_cache_ttl_s: float = 2.0
    require_freshness: bool = False  # RFC 8070: refuse PKINIT requests without our token
    dh_key_reuse_s: int = 0  # reuse the KDC's DH key this long (RFC 4556 §3.2.3.1); 0 = never
    log_json: bool = True

    @classmethod
    def from_toml(cls, path: Path) -> "KdcSettings":
        """Settings from a TOML file (a [kdc] table or top-level keys); env vars still apply."""
        data = tomllib.loads(path.read_text())
        return cls(**data.get("kdc", data))
