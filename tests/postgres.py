"""A throwaway PostgreSQL server for tests (Debian's postgresql package; `make` installs it).

PostgreSQL refuses to run as root, so initdb and pg_ctl run as the `postgres` user in a
directory it owns, listening on a free loopback port (../shared/platform-notes.md)."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"{name} not found: install Debian's postgresql (make test does)"
    return found[-1]


class PostgresServer:
    """A fresh server in its own directory, on a free loopback port, that a test can stop and
    start again (an outage)."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="telekey-pg-", dir="/tmp")
        os.chmod(self.directory, 0o755)
        shutil.chown(self.directory, "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data = f"{self.directory}/data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        subprocess.run([*_AS_POSTGRES, _bin("initdb"), "-D", self.data, "-A", "trust", "-U",
                        "postgres"], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        subprocess.run([*_AS_POSTGRES, _bin("pg_ctl"), "-D", self.data, "-o",
                        f"-k {self.directory} -p {self.port} -h 127.0.0.1", "-l",
                        f"{self.directory}/log", "-w", "start"], check=True,
                       capture_output=True, timeout=120)

    def stop(self) -> None:
        subprocess.run([*_AS_POSTGRES, _bin("pg_ctl"), "-D", self.data, "-m", "fast", "stop"],
                       capture_output=True, timeout=120, check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


_AS_POSTGRES = ["runuser", "-u", "postgres", "--"]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh server; stop and delete it afterwards."""
    with running_postgres() as server:
        yield server.url


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()
