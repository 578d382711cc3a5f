"""Key server settings: one frozen pydantic-settings class (env prefix KEYSERVER_), loadable
from TOML (a [keyserver] table)."""

import tomllib
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KeyserverSettings(BaseSettings):
    """The enterprise key server, seed 002's key generating agent (`telekey keyserver run
    --config FILE`): a TOML file with a `[keyserver]` table or top-level keys; each setting
    can also come from the environment as `KEYSERVER_<NAME>`. Three HTTPS listeners: the basic
    service (server-authenticated TLS, for phones), the advanced service and the admin API
    (both mutual TLS, each against its own client CAs)."""

    model_config = SettingsConfigDict(env_prefix="KEYSERVER_", frozen=True, extra="forbid",
                                      use_attribute_docstrings=True)

    server_id: int = Field(ge=1, le=0xFFFF)
    """This key server's field of every generator g (1-65535): give every key server that
    shares a seed a different one."""
    profile: Literal["default", "seed"] = "default"
    """`default` (SHA-256; K_m in a PKCS#11 token when `km_token_label` is set) or `seed`
    (the document's SHA-1 formulas; K_m wrapped at rest under the master key)."""
    database_url: str = "sqlite:///keyserver.db"
    """SQLAlchemy URL of the key server's database (generator counter, K_m record,
    extensions). One key server process per database."""
    listen_host: str = "127.0.0.1"
    """Address of the basic and advanced services."""
    basic_port: int = 8443
    """Port of the basic secure file service (`GET /kkg.txt?ext=`); 0 = any free port."""
    advanced_port: int = 8445
    """Port of the advanced service (mutual TLS, K_g for application servers); 0 = any free
    port."""
    admin_host: str = "127.0.0.1"
    """Address of the admin API."""
    admin_port: int = 8446
    """Port of the admin API (mutual TLS); 0 = any free port."""
    tls_cert_file: Path
    """The key server's TLS certificate (PEM), followed by any intermediate CA certificates."""
    tls_key_file: Path
    """The TLS certificate's private key (PEM, mode 0600)."""
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    """Lowest TLS version accepted on every listener."""
    advanced_client_ca_files: list[Path]
    """CA certificates (PEM) that application servers' client certificates must chain to
    (advanced service)."""
    admin_client_ca_files: list[Path]
    """CA certificates (PEM) that administrators' client certificates must chain to (admin
    API). Use a CA of their own: the server cannot tell two clients of one CA apart."""
    km_token_label: str | None = None
    """Default profile: hold K_m in this PKCS#11 token as a non-extractable secret (object
    `telekey-keyserver-km-<n>`); the token computes K_g and CV_m. Unset: K_m is wrapped at rest
    under the master key, as in the seed profile."""
    pkcs11_module: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    """PKCS#11 module for `km_token_label` and `master_key_token_label`."""
    pkcs11_pin_file: Path | None = None
    """File holding the token's user PIN (mode 0600)."""
    master_key_stash_file: Path | None = None
    """Stash file (mode 0600) of the master key that wraps K_m at rest (service `keyserver`).
    Unset: `<database file>.stash` next to a SQLite database."""
    master_key_token_label: str | None = None
    """Hold that master key in this PKCS#11 token instead (objects
    `telekey-master-keyserver-<mkvno>`)."""
    generator_block: int = Field(256, ge=1, le=1_000_000)
    """Generator counter values reserved (committed to the database) at a time."""
    key_file_rate_per_source: float = Field(2.0, ge=0)
    """Key files per second per source address (token bucket); 0 = no limit."""
    key_file_burst_per_source: float = Field(20.0, ge=1)
    """The token bucket's depth for `key_file_rate_per_source`."""
    issue_unknown_extensions: bool = True
    """Give key files for any extension (the seed's key server knows no extensions); false:
    only for extensions added through the admin API."""
    log_json: bool = True
    """Log JSON lines (deployment); false logs for a console."""

    @model_validator(mode="after")
    def _token_needs_default_profile(self) -> Self:
        if self.km_token_label and self.profile == "seed":
            raise ValueError("km_token_label: the seed profile needs K_m as HMAC data (K_g = "
                             "HMAC(g, K_m)), which a token cannot give; unset it")
        if (self.km_token_label or self.master_key_token_label) and not self.pkcs11_pin_file:
            raise ValueError("a PKCS#11 token needs pkcs11_pin_file")
        return self

    @classmethod
    def from_toml(cls, path: Path) -> "KeyserverSettings":
        """Settings from a TOML file (a [keyserver] table or top-level keys)."""
        data = tomllib.loads(path.read_text())
        return cls(**data.get("keyserver", data))
