"""Start telekey's KDC (`python -m kdc run`) as a real process on loopback and learn its port
from the `listening` log line (no sleeps): used by end-to-end tests, `telekey lab` and bench/."""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class KdcProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


def telekey_cmd(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "telekey", *args], check=True, capture_output=True,
                   timeout=60)


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
    log_file = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "kdc", "run", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=log_file,
                               env=dict(os.environ))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "listening":
                return KdcProcess(process, int(event["port"]), log_path)
        if process.poll() is not None:
            raise RuntimeError(f"KDC exited: {log_path.read_text()}")
        time.sleep(0.02)
    process.kill()
    raise RuntimeError(f"KDC did not start: {log_path.read_text()}")
