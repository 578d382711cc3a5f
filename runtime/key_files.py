"""Small file helpers shared by the command-line tools (not by common/, which does no I/O)."""

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat


def write_private_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                      | x25519.X25519PrivateKey) -> None:
    """PEM PKCS#8, created with mode 0600 before any key byte is written."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
