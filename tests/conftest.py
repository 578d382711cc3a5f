"""Shared fixtures: vector data and MIT interop fixtures copied into tests/ (the project stands
on its own, independent of ../shared)."""

import json
from pathlib import Path

TESTS = Path(__file__).parent
VECTORS = TESTS / "vectors" / "data"
MIT_FIXTURES = TESTS / "interop" / "mit"


def load_vectors(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text())["vectors"]
