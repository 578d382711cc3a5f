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


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh server; stop and delete it afterwards."""
    directory = tempfile.mkdtemp(prefix="telekey-pg-", dir="/tmp")
    os.chmod(directory, 0o755)
    shutil.chown(directory, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_postgres = ["runuser", "-u", "postgres", "--"]
    data = f"{directory}/data"
    subprocess.run([*as_postgres, _bin("initdb"), "-D", data, "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_postgres, _bin("pg_ctl"), "-D", data, "-o",
                    f"-k {directory} -p {port} -h 127.0.0.1", "-l", f"{directory}/log", "-w",
                    "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, _bin("pg_ctl"), "-D", data, "-m", "fast", "stop"],
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(directory, ignore_errors=True)
