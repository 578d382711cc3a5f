"""STYLE §1: the import directions that keep the layout legible, checked by walking every import
of every module (at module level and inside functions):
- `common/` imports no asyncio, no sockets, no settings, no `runtime`, no daemon, no `telekey`;
- `runtime/` imports no daemon and not `telekey`;
- a daemon imports no other daemon and not `telekey`;
- nothing but `telekey/` itself imports `telekey`.
One exception: the lean DER codec (`common/messages/der.py`) takes a `threading` lock while it
generates a schema's functions, so that threads decoding at once never meet one half made; it
starts no thread."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMON = ROOT / "common"
DAEMONS = {"kdc", "sigctl", "cta", "keyserver", "provisioning"}
IO = {"asyncio", "socket", "socketserver", "selectors", "ssl", "uvloop", "asyncio_dgram",
      "pydantic_settings", "subprocess", "threading"}
FORBIDDEN = {
    "common": IO | DAEMONS | {"runtime", "telekey"},
    "runtime": DAEMONS | {"telekey"},
    **{daemon: (DAEMONS - {daemon}) | {"telekey"} for daemon in DAEMONS},
}
# The packages whose imports are checked, with what each may not import (tests and bench may
# import anything).
PACKAGES = sorted(FORBIDDEN)


def _imports(path: Path) -> set[str]:
    """The top-level names of every module `path` imports. A relative import is reported as
    "." so that no import escapes the check."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add(".")
            elif node.module:
                names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                "__import__", "import_module"):
            names.add("__import__")
    return names


ALLOWED = {"common/messages/der.py": {"threading"}}


def _offenders(package: str) -> dict[str, list[str]]:
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        allowed = ALLOWED.get(str(path.relative_to(ROOT)), set())
        bad = _imports(path) & (FORBIDDEN[package] | {"__import__", "."}) - allowed
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    return offenders


def test_common_has_modules():
    assert len(list(COMMON.rglob("*.py"))) > 20


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_go_one_way(package):
    assert (ROOT / package / "__init__.py").exists()
    assert _offenders(package) == {}


def test_only_telekey_imports_telekey():
    offenders = [str(path.relative_to(ROOT)) for package in PACKAGES
                 for path in (ROOT / package).rglob("*.py") if "telekey" in _imports(path)]
    assert offenders == []


def test_every_common_subpackage_says_what_it_holds():
    """Each protocol area's docstring names what it holds and the RFCs or seeds it implements."""
    for init in COMMON.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80, init
        assert "RFC" in doc or "seed" in doc, init


def test_common_never_opens_files():
    offenders = []
    for path in COMMON.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "open":
                offenders.append(str(path.relative_to(COMMON)))
    assert offenders == []


def test_the_check_catches_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom kdc.server import x\n"
                   "def f():\n    from telekey.cli import app\n    from . import sibling\n")
    assert _imports(bad) & FORBIDDEN["common"] == {"asyncio", "kdc", "telekey"}
    assert _imports(bad) & FORBIDDEN["sigctl"] == {"kdc", "telekey"}
    assert "." in _imports(bad)
