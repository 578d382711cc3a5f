"""Small file helpers shared by the command-line tools (not by common/, which does no I/O)."""

import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat


def write_private_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                      | x25519.X25519PrivateKey) -> None:
    """PEM PKCS#8 in a file created with mode 0600 before any key byte is written."""
    write_secret_file(path, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                              NoEncryption()))


def write_secret_file(path: Path, data: bytes) -> None:
    """Replace `path` by a file holding `data` with mode 0600 (keytabs, master key stashes).

    The bytes go into a new file created 0600 before any is written (so no umask widens it,
    and an existing file's wider mode is never written into), synced, then renamed over
    `path`: a reader sees the old content or the new, never a part of it or a wider mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a umask narrower than 077 must not leave it unreadable
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def read_secret_bytes(path: Path) -> bytes:
    """A private key or other secret from a file that must not be readable by group or
    others (PermissionError, naming the file, otherwise)."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(f"{path} must not be readable by group or others "
                                  "(chmod 600)")
        return file.read()


def read_secret_text(path: Path) -> str:
    """A PIN or passphrase from a file that must not be readable by group or others;
    surrounding whitespace (the final newline) is dropped."""
    return read_secret_bytes(path).decode().strip()


def append_secret_line(path: Path, line: str) -> None:
    """Append a line to a file of secrets (ESP key logs for labs): created 0600, and made
    0600 before anything is added if it was wider."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (line.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)
