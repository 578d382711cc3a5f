"""Start one of telekey's daemons as a real process and learn where it listens from its
`listening` JSON log line (no sleeps): used by end-to-end tests, `telekey lab` and bench/."""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ServiceProcess:
    process: subprocess.Popen[bytes]
    listening: dict[str, Any]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


def start_service(argv: list[str], log_path: Path, timeout: float = 20.0) -> ServiceProcess:
    """Run `python -m <argv>` with stderr to `log_path`; wait for its `listening` event."""
    log_file = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.DEVNULL,
                               stderr=log_file, env=dict(os.environ))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "listening":
                return ServiceProcess(process, event, log_path)
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited: {log_path.read_text()}")
        time.sleep(0.02)
    process.kill()
    raise RuntimeError(f"{argv[0]} did not start: {log_path.read_text()}")


def telekey_cmd(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "telekey", *args], check=True, capture_output=True,
                   timeout=60)
