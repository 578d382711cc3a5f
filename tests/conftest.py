"""Shared fixtures: vector data and MIT interop fixtures copied into tests/ (the project stands
on its own, independent of ../shared)."""

import json
from pathlib import Path

TESTS = Path(__file__).parent
VECTORS = TESTS / "vectors" / "data"
MIT_FIXTURES = TESTS / "interop" / "mit"


def load_vectors(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text())["vectors"]


def _hypothesis_profiles() -> None:
    """Under CI the fuzzers replay a fixed example sequence (a submission must not land or fail
    by luck); elsewhere each run explores new inputs. TELEKEY_FUZZ_EXAMPLES scales the runs."""
    import os

    from hypothesis import settings

    settings.register_profile("ci", derandomize=True)
    settings.register_profile("explore", derandomize=False)
    settings.load_profile("ci" if os.environ.get("CI") else "explore")


_hypothesis_profiles()


def fuzz_examples(default: int) -> int:
    import os

    return int(os.environ.get("TELEKEY_FUZZ_EXAMPLES", default))


def _private_fixture_keys() -> None:
    """git keeps no file mode but the executable bit, so a clean clone has MIT's fixture keys
    readable by all; the KDC refuses a key file that others can read. Made 0600 once here."""
    for key in MIT_FIXTURES.glob("*.key"):
        key.chmod(0o600)


_private_fixture_keys()
