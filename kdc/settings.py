"""KDC settings: one frozen pydantic-settings class (env prefix KDC_), loadable from TOML."""

import tomllib
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KdcSettings(BaseSettings):
    """The KDC (`telekey kdc run --config FILE`): a TOML file with a `[kdc]` table or top-level
    keys; each setting can also come from the environment as `KDC_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="KDC_", frozen=True, extra="forbid",
                                      use_attribute_docstrings=True)

    realm: str
    """The Kerberos realm this KDC serves, e.g. `LAB.TEST`."""
    database_url: str = "sqlite:///kdc.db"
    """SQLAlchemy URL of the principal and customer database (SQLite or PostgreSQL)."""
    listen_host: str = "127.0.0.1"
    """Address to bind, TCP and UDP."""
    listen_port: int = 88
    """Port for TCP and UDP (they share it); 0 picks a free port (tests)."""
    kdc_cert_file: Path
    """The KDC's PKINIT certificate (PEM): id-pkinit-san krbtgt/REALM@REALM, EKU id-pkinit-KPKdc."""
    kdc_key_file: Path | None = None
    """The KDC certificate's private key (PEM, mode 0600), unless it sits in a PKCS#11 token."""
    pkcs11_module: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    """PKCS#11 module holding the KDC's key when `pkcs11_token_label` is set."""
    pkcs11_token_label: str | None = None
    """Sign inside this PKCS#11 token instead of with `kdc_key_file`."""
    pkcs11_pin_file: Path | None = None
    """File holding the token's user PIN (mode 0600)."""
    pkcs11_key_label: str = "kdc"
    """Label of the KDC's private key in the token."""
    master_key_stash_file: Path | None = None
    """Stash file (mode 0600) holding the master key that wraps every key in the database,
    all its versions (`telekey realm init` makes it). Unset: `<database file>.stash` next to
    a SQLite database; a PostgreSQL database needs this or `master_key_token_label`."""
    master_key_token_label: str | None = None
    """Hold the master key in this PKCS#11 token instead of a stash (token objects
    `telekey-master-kdc-<mkvno>`, through `pkcs11_module` with the PIN in `pkcs11_pin_file`)."""
    kdc_chain_files: list[Path] = []
    """Intermediate CA certificates (PEM) sent with the KDC's certificate in its replies."""
    pkinit_anchor_files: list[Path]
    """Operator root certificates (PEM): chains to these may log in as provisioned devices."""
    manufacturer_anchor_files: list[Path] = []
    """Device factory roots (PEM, seed 001): devices log in with these unprovisioned."""
    crl_files: list[Path] = []
    """CRLs (PEM or DER) for operator-issued certificates, signatures checked against the issuer."""
    unprovisioned_numbers: list[str] = ["611", "911"]
    """The numbers an unprovisioned device may call (its ticket's DeviceRestriction)."""
    max_skew_s: int = 300
    """Largest clock difference accepted from a client, in seconds (RFC 4120 §1.6)."""
    min_dh_bits: int = 2048
    """Smallest finite-field DH group accepted in PKINIT (RFC 4556 §3.2.3.1)."""
    default_lifetime_s: int = 36_000
    """Lifetime of tickets, in seconds, where no other setting applies."""
    controller_lifetime_s: int = 604_800
    """Lifetime of tickets for signaling controllers (`sigctl/...`): 7 days (seeds 000, 001)."""
    max_record_bytes: int = 65_536
    """Largest TCP record accepted (RFC 4120 §7.2.2); larger gets KRB_ERR_FIELD_TOOLONG."""
    udp_max_reply_bytes: int = 4096
    """Largest UDP reply, as MIT's `kdc_max_dgram_reply_size` (4096 by default); a larger one
    becomes KRB_ERR_RESPONSE_TOO_BIG (MIT's client retries over TCP; Heimdal's does not when
    its realm lists only `udp/` KDCs). A PKINIT reply is 2-3 KB."""
    workers: int = 1
    """Processes sharing the port (SO_REUSEPORT), e.g. one per core."""
    max_tcp_connections: int = 512
    """Open TCP connections at most, per process. When all are taken, a newcomer is accepted
    and the least recently active connection of the network holding the most is closed."""
    max_tcp_per_address: int = 32
    """Open TCP connections at most from one address; more are refused."""
    max_tcp_per_network: int = 128
    """Open TCP connections at most from one network (see the prefixes); more are refused."""
    tcp_ipv4_prefix: int = Field(24, ge=0, le=32)
    """IPv4 addresses within this prefix length count as one network."""
    tcp_ipv6_prefix: int = Field(64, ge=0, le=128)
    """IPv6 addresses within this prefix length count as one network."""
    tcp_idle_timeout_s: float = 30.0
    """A TCP connection idle this long is closed."""
    vague_errors: bool = False
    """Send KRB-ERRORs without e-text (the status tag that names the failure)."""
    as_rate_per_source: float = 50.0
    """AS requests per second per source address (token bucket); 0 = no limit."""
    as_burst_per_source: float = 100.0
    """The token bucket's depth for `as_rate_per_source`."""
    metrics_port: int | None = None
    """Serve Prometheus /metrics on `listen_host` at this port (0 = any free port); none if
    unset."""
    principal_cache_ttl_s: float = 2.0
    """How long a principal and its keys read from the database are used from memory."""
    require_freshness: bool = False
    """Refuse PKINIT requests that carry no freshness token of ours (RFC 8070)."""
    dh_key_reuse_s: int = 0
    """Reuse the KDC's DH key pair this long, in seconds (RFC 4556 §3.2.3.1); 0 = never."""
    log_json: bool = True
    """Log JSON lines (deployment); false logs for a console."""

    @classmethod
    def from_toml(cls, path: Path) -> "KdcSettings":
        """Settings from a TOML file (a [kdc] table or top-level keys); env vars still apply."""
        data = tomllib.loads(path.read_text())
        return cls(**data.get("kdc", data))
