"""Provisioning settings: the service (`ProvisioningSettings`, env prefix PROVISIONING_, TOML
`[provisioning]`) and the head-end agent (`HeadendSettings`, env prefix HEADEND_, TOML
`[headend]`), each one frozen pydantic-settings class loadable from TOML."""

import tomllib
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class HeadendLink(BaseModel):
    """One head-end the service provisions: where its agent listens and its numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    url: str
    """The head-end agent's base URL, e.g. `https://10.0.0.5:8449`."""
    numbers: list[str] = []
    """Number ranges of this head-end's pool (`15550100-15550199`), added at start when
    missing (never removed)."""


class ProvisioningSettings(BaseSettings):
    """The provisioning service (`telekey provisioning run --config FILE`): a TOML file with a
    `[provisioning]` table or top-level keys; each setting can also come from the environment
    as `PROVISIONING_<NAME>`. Three HTTPS listeners, each with its own TLS context: the
    server-to-server API and the billing API (both mutual TLS, each against its own client
    CAs) and the staff console (server-authenticated TLS and a login)."""

    model_config = SettingsConfigDict(env_prefix="PROVISIONING_", frozen=True, extra="forbid",
                                      use_attribute_docstrings=True)

    realm: str
    """The operator's realm (the network ID of seed 004 certificate requests)."""
    database_url: str = "sqlite:///provisioning.db"
    """SQLAlchemy URL of the records (SQLite or PostgreSQL); Alembic migrates it at start."""
    listen_host: str = "127.0.0.1"
    """Address of the API and billing listeners."""
    api_port: int = 8444
    """Server-to-server API (mutual TLS): device reports, queries; 0 = any free port."""
    billing_port: int = 8448
    """Billing API (mutual TLS against `billing_client_ca_files`); 0 = any free port."""
    console_host: str = "127.0.0.1"
    """Address of the staff console."""
    console_port: int = 8447
    """Staff console (TLS and a login); 0 = any free port."""
    tls_cert_file: Path
    """The service's TLS certificate (PEM, its chain after it) for all three listeners."""
    tls_key_file: Path
    """Its private key (PEM, mode 0600)."""
    tls_min_version: str = Field("1.2", pattern=r"^1\.[23]$")
    """Lowest TLS version accepted: `1.2` or `1.3`."""
    api_client_ca_files: list[Path]
    """CA certificates (PEM) of the servers that may call the API (controllers, the KDC)."""
    billing_client_ca_files: list[Path]
    """CA certificates (PEM) of the billing hosts that may read and acknowledge billing
    records."""
    ca_cert_file: Path
    """The operator CA certificate (PEM) that issues operator device certificates."""
    ca_key_file: Path
    """Its private key (PEM, mode 0600)."""
    crl_file: Path
    """Where the CRL of revoked operator device certificates is written (DER), for the KDC's
    `crl_files`; rewritten after every revocation and at start."""
    crl_lifetime_s: int = Field(7 * 86_400, ge=3600)
    """nextUpdate of the CRL, from its thisUpdate; it is rewritten daily in any case."""
    manufacturer_anchor_files: list[Path]
    """Device factory roots (PEM): a reported device's certificate must chain to one."""
    request_signer_cert_file: Path | None = None
    """Certificate (PEM) signing seed 004 certificate requests for devices; unset: the API does
    not offer them."""
    request_signer_key_file: Path | None = None
    """Its private key (PEM, mode 0600)."""
    headends: dict[str, HeadendLink] = {}
    """The head-ends, by name: `[provisioning.headends.A]` with `url` and `numbers`."""
    headend_ca_files: list[Path] = []
    """CA certificates (PEM) the head-end agents' TLS certificates chain to."""
    client_cert_file: Path | None = None
    """The certificate (PEM) this service presents to head-end agents (mutual TLS)."""
    client_key_file: Path | None = None
    """Its private key (PEM, mode 0600)."""
    kdc_database_url: str | None = None
    """The KDC's database, whose customer records this service keeps (through `telekey
    customer`); unset: no KDC records are written."""
    kdc_command: list[str] = []
    """The command that runs `telekey` for KDC records; empty: this Python's `-m telekey`."""
    service_options: list[str] = ["voice", "call-waiting", "voicemail", "international"]
    """The service options staff can choose."""
    device_cert_days: int = Field(365, ge=1)
    """Validity of a customer's operator device certificate."""
    repair_cert_hours: int = Field(24, ge=1)
    """Validity of a repair facility account's test certificate (FIG. 11)."""
    number_quarantine_s: int = Field(90 * 86_400, ge=0)
    """How long a released number is held before it returns to the pool."""
    task_retry_s: float = Field(2.0, gt=0)
    """First wait before a failed head-end or KDC step is tried again (doubling, at most 5
    minutes)."""
    task_poll_s: float = Field(1.0, gt=0)
    """How often pending steps and the quarantine are looked at (changes made by the command
    line are picked up then)."""
    headend_timeout_s: float = Field(10.0, gt=0)
    """Timeout of one call to a head-end agent."""
    session_lifetime_s: int = Field(8 * 3600, ge=60)
    """A staff login lasts this long."""
    log_json: bool = True
    """Log JSON lines (deployment); false logs for a console."""

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        if (self.request_signer_cert_file is None) != (self.request_signer_key_file is None):
            raise ValueError("request_signer_cert_file and request_signer_key_file go together")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")
        if self.headends and (self.client_cert_file is None or not self.headend_ca_files):
            raise ValueError("head-ends need client_cert_file, client_key_file and "
                             "headend_ca_files (mutual TLS)")
        return self

    @classmethod
    def from_toml(cls, path: Path) -> "ProvisioningSettings":
        """Settings from a TOML file (a [provisioning] table or top-level keys)."""
        data = tomllib.loads(path.read_text())
        return cls(**data.get("provisioning", data))


class HeadendSettings(BaseSettings):
    """The head-end agent (`telekey provisioning headend run --config FILE`): a TOML file with a
    `[headend]` table or top-level keys, or `HEADEND_<NAME>` in the environment. It keeps the
    head-end's per-MAC access list and takes changes over mutual TLS. Its backend here is a
    SQLite (or PostgreSQL) table; applying the list to a router (nftables) is the operations
    issue's."""

    model_config = SettingsConfigDict(env_prefix="HEADEND_", frozen=True, extra="forbid",
                                      use_attribute_docstrings=True)

    name: str
    """The head-end's name, as the provisioning service's `headends` table calls it."""
    database_url: str = "sqlite:///headend.db"
    """Where the access list and the applied change ids are kept."""
    listen_host: str = "127.0.0.1"
    """Address to bind."""
    listen_port: int = 8449
    """HTTPS port (mutual TLS); 0 = any free port."""
    tls_cert_file: Path
    """The agent's TLS certificate (PEM)."""
    tls_key_file: Path
    """Its private key (PEM, mode 0600)."""
    tls_min_version: str = Field("1.2", pattern=r"^1\.[23]$")
    """Lowest TLS version accepted: `1.2` or `1.3`."""
    client_ca_files: list[Path]
    """CA certificates (PEM) of those who may change the list (provisioning, controllers)."""
    log_json: bool = True
    """Log JSON lines (deployment); false logs for a console."""

    @classmethod
    def from_toml(cls, path: Path) -> "HeadendSettings":
        """Settings from a TOML file (a [headend] table or top-level keys)."""
        data = tomllib.loads(path.read_text())
        return cls(**data.get("headend", data))
