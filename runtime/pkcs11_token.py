"""Opening a PKCS#11 token the way ../shared/pkcs11-notes.md says it must be opened: the PIN
from a file only its owner can read; the module initialised again in a process forked from
one that had used it; and a second login in the same process (the KDC's signing key and its
master key may share a token) answered by a session without login, since a login holds for
every session of the process on that token.

Callers keep to one thread per process for every token call (SoftHSM runs without locks
under python-pkcs11)."""

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
from pkcs11.exceptions import UserAlreadyLoggedIn

from runtime.key_files import read_secret_text

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Module

_initialised_in: dict[str, int] = {}  # module path -> pid that initialised it


def read_pin(path: Path) -> str:
    """The PIN in `path`, which must not be readable by group or others."""
    return read_secret_text(path)


def load_module(module: Path) -> "Module":
    """The module, initialised in this process (python-pkcs11 keeps one per path; after a
    fork the child finalises and initialises it again)."""
    lib = pkcs11.lib(str(module))
    pid = os.getpid()
    if _initialised_in.setdefault(str(module), pid) != pid:
        lib.reinitialize()
        _initialised_in[str(module)] = pid
    return lib


def open_session(module: Path, token_label: str, pin_file: Path,
                 rw: bool = False) -> pkcs11.Session:
    """A logged-in session on the token labelled `token_label` (found by label, never by
    slot). Keep it open: closing a process's last session on a token logs it out."""
    pin = read_pin(pin_file)  # first: a PIN file others can read is refused in any case
    token = load_module(module).get_token(token_label=token_label)
    try:
        session: pkcs11.Session = token.open(rw=rw, user_pin=pin)
    except UserAlreadyLoggedIn:
        session = token.open(rw=rw)
    return session
