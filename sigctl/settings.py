"""Signaling controller settings: one frozen pydantic-settings class (env prefix SIGCTL_),
loadable from TOML (a [sigctl] table)."""

import tomllib
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
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
    call_key_policy: Literal["per-call", "chained"] = "per-call"
    """`per-call`: a random key for each call (seed 001). `chained`: this controller is the
    key broker of seed 003 — each device shares a pool of one-time keys with it, a call's key
    is one of the callee's, and every key a call used is replaced afterwards
    (docs/protocol.md §13). Stateful: the pools live in `broker_database_url`."""
    broker_slots: int = Field(4, ge=1, le=32)
    """Chained policy: one-time keys per device (one per simultaneous call it can take
    part in)."""
    broker_refresh_s: float = Field(86_400.0, gt=0)
    """Chained policy: every device's pool is replaced from scratch (a new AP exchange)
    within this period, idle devices first, spread over its second half."""
    broker_database_url: str = "sqlite:///sigctl-broker.db"
    """Chained policy: SQLAlchemy URL of the broker's pools (keys wrapped under the master
    key of `master_key_stash_file` / `master_key_token_label`)."""
    broker_busy_timeout_ms: int = Field(2000, ge=1)
    """Chained policy: how long a locked SQLite database is waited for before the call is
    refused (503)."""
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

    # Enterprise phones (seed 002): H.225.0 RAS registration ------------------------------
    keyserver_url: str | None = None
    """Enterprise phones (seed 002): the key server's advanced service, e.g.
    `https://keys.example:8445`, from which K_g is fetched over mutual TLS. Setting it opens
    the RAS port; unset, the controller registers no phones."""
    keyserver_ca_file: Path | None = None
    """CA certificate (PEM) the key server's TLS certificate must chain to."""
    keyserver_client_cert_file: Path | None = None
    """The controller's client certificate (PEM) for the key server's advanced service."""
    keyserver_client_key_file: Path | None = None
    """Its private key (PEM, mode 0600)."""
    keyserver_timeout_s: float = 5.0
    """Seconds to wait for the key server; a GRQ whose K_g does not come gets no answer."""
    enterprise_profile: Literal["default", "seed"] = "default"
    """The key server's profile (docs/protocol.md §10): `default` (SHA-256) or `seed` (the
    document's SHA-1 formulas, HMAC-SHA1-96 ICVs)."""
    ras_port: int = 1719
    """UDP port of H.225.0 RAS registration (seed 002); 0 = any free port (tests). Open only
    with `keyserver_url`."""
    gatekeeper_id: str | None = None
    """The gatekeeperIdentifier in GCF and RCF; default: the principal."""
    ras_alternates: list[str] = []
    """`HOST:PORT` RAS addresses of other controllers, sent in a GRJ to a phone whose
    extension is not administered here (seed 002: redirection)."""
    kg_cache_s: float = 300.0
    """K_g fetched from the key server is kept this long per generator g. A K_m rotation is
    noticed at the latest this long after it (sooner when any fetch returns the new CV_m)."""
    kg_cache_entries: int = 100_000
    """Generators whose K_g is kept at most."""
    ras_challenge_lifetime_s: float = 30.0
    """Lifetime of the controller's nonce Rg (single use): an RRQ must follow its GCF
    within it."""
    ras_max_skew_s: int = 300
    """Largest difference between a GRQ's timeStamp and the controller's clock; GRQs are
    remembered twice this long, so that a replayed one meets silence."""
    ras_lockout_failures: int = 5
    """Refused registrations (bad ICV, replay, missing token, unknown extension) from one
    IP address within `ras_lockout_s` that make the controller ignore that address."""
    ras_lockout_s: float = 300.0
    """How long an address is ignored once locked out (and the window its failures are
    counted in): seed 002, a PIN-guessing defence."""
    extensions_database_url: str = "sqlite:///sigctl-extensions.db"
    """SQLAlchemy URL of the extensions and their PINs (wrapped under the master key)."""
    master_key_stash_file: Path | None = None
    """Stash file (mode 0600) of the master key that wraps PINs (service `sigctl`). Unset:
    `<extensions database file>.stash` next to a SQLite database."""
    master_key_token_label: str | None = None
    """Hold that master key in this PKCS#11 token instead (objects
    `telekey-master-sigctl-<mkvno>`)."""
    pkcs11_module: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    """PKCS#11 module for `master_key_token_label`."""
    pkcs11_pin_file: Path | None = None
    """File holding that token's user PIN (mode 0600)."""

    # Provisioning (seed 001, FIG. 7-8): sigctl/provisioning_link.py -----------------------
    provisioning_url: str | None = None
    """The provisioning service's API listener, e.g. `https://prov.example:8444` (mutual TLS):
    unprovisioned devices are reported to it, the lines it assigns to this controller are
    pulled from it, and the operator certificates it issues are delivered to the devices.
    Once they are pulled, a device whose ticket is not restricted (it logged in with an
    operator certificate) and whose MAC holds no line here is refused. Unset: none of this
    (lines come only from `lines`)."""
    provisioning_ca_file: Path | None = None
    """CA certificate (PEM) the provisioning service's TLS certificate must chain to: the only
    source of line assignments."""
    provisioning_client_cert_file: Path | None = None
    """The controller's client certificate (PEM) for the provisioning API."""
    provisioning_client_key_file: Path | None = None
    """Its private key (PEM, mode 0600)."""
    provisioning_poll_s: float = Field(2.0, gt=0)
    """How often the lines changed since the last pull are pulled: a removed number is refused
    at most this long after the change (plus the pull's time)."""
    provisioning_timeout_s: float = Field(10.0, gt=0)
    """Timeout of one request to the provisioning service."""

    @model_validator(mode="after")
    def _provisioning_needs_tls_files(self) -> Self:
        if self.provisioning_url and not (self.provisioning_ca_file
                                          and self.provisioning_client_cert_file
                                          and self.provisioning_client_key_file):
            raise ValueError("provisioning_url needs provisioning_ca_file, "
                             "provisioning_client_cert_file and provisioning_client_key_file "
                             "(mutual TLS)")
        return self

    @model_validator(mode="after")
    def _keyserver_needs_tls_files(self) -> Self:
        if self.keyserver_url and not (self.keyserver_ca_file and self.keyserver_client_cert_file
                                       and self.keyserver_client_key_file):
            raise ValueError("keyserver_url needs keyserver_ca_file, keyserver_client_cert_file "
                             "and keyserver_client_key_file (mutual TLS)")
        return self

    @classmethod
    def from_toml(cls, path: Path) -> "SigctlSettings":
        data = tomllib.loads(path.read_text())
        return cls(**data.get("sigctl", data))
