"""STYLE §1: common/ imports no asyncio, no sockets, no settings and no daemon package."""

import ast
from pathlib import Path

COMMON = Path(__file__).resolve().parents[2] / "common"
FORBIDDEN = {"asyncio", "socket", "socketserver", "selectors", "ssl", "uvloop", "asyncio_dgram",
             "pydantic_settings", "kdc", "sigctl", "cta", "keyserver", "provisioning", "telekey",
             "subprocess", "threading"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names.add("__import__")
    return names


def test_common_has_modules():
    assert len(list(COMMON.rglob("*.py"))) > 20


def test_common_imports_no_io_settings_or_daemons():
    offenders = {}
    for path in COMMON.rglob("*.py"):
        bad = _imports(path) & (FORBIDDEN | {"__import__"})
        if bad:
            offenders[str(path.relative_to(COMMON))] = sorted(bad)
    assert offenders == {}


def test_common_never_opens_files():
    offenders = []
    for path in COMMON.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "open":
                offenders.append(str(path.relative_to(COMMON)))
    assert offenders == []


def test_the_check_catches_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom kdc.server import x\n")
    assert _imports(bad) & FORBIDDEN == {"asyncio", "kdc"}
