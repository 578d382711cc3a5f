"""Telekey's KDC (`python -m kdc run`) as a real process on loopback: its configuration file
and its start (telekey/service_process.py)."""

import json
from pathlib import Path

from telekey.service_process import ServiceProcess, start_service, telekey_cmd

__all__ = ["KdcProcess", "start_kdc", "telekey_cmd", "write_kdc_config"]


class KdcProcess(ServiceProcess):
    @property
    def port(self) -> int:
        return int(self.listening["port"])


def write_kdc_config(directory: Path, *, realm: str, db_url: str, cert: Path,
                     key: Path | None, anchors: list[Path], **extra: object) -> Path:
    lines = [f'realm = "{realm}"', f'database_url = "{db_url}"', "listen_port = 0",
             f'kdc_cert_file = "{cert}"',
             "pkinit_anchor_files = [" + ", ".join(f'"{a}"' for a in anchors) + "]"]
    if key is not None:
        lines.append(f'kdc_key_file = "{key}"')
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    path = directory / "kdc.toml"
    path.write_text("[kdc]\n" + "\n".join(lines) + "\n")
    return path


def start_kdc(config: Path, log_path: Path, timeout: float = 20.0) -> KdcProcess:
    service = start_service(["kdc", "run", "--config", str(config)], log_path, timeout)
    return KdcProcess(service.process, service.listening, service.log_path)
