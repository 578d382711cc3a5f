"""The atheris engine: libFuzzer's coverage-guided search over the main decoders
(targets.MAIN), one process per target, for its share of the time budget.

The parent writes each target's seeds into a corpus directory (build/fuzz/atheris/<target>/
corpus, kept between runs, so libFuzzer's discoveries accumulate), runs
`python -m tests.fuzz.atheris_engine <target> <corpus> <libFuzzer flags>`, and reads the
number of executed inputs and any crash from libFuzzer's output. The child instruments
`common` (every module is imported inside atheris.instrument_imports) and mixes libFuzzer's
mutations with the DER-aware ones of tests/fuzz/mutate.py. A crash is an exception the
target does not allow, or a hang (-timeout); libFuzzer stops that target there and writes the
input next to the corpus.
"""

import hashlib
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.fuzz.report import Failure, Result

if TYPE_CHECKING:
    # Not at run time: the child must import every `common` module inside
    # atheris.instrument_imports, and targets imports them.
    from tests.fuzz.targets import Target

INPUT_TIMEOUT_S = 10
STARTUP_S = 2.0  # the child's imports and seeds, before libFuzzer's clock starts
MAX_LEN = 8192


def available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_target(target: "Target", *, seconds: float, max_inputs: int, out: Path,
               seed: int = 0) -> Result:
    home = out / "atheris" / target.name
    corpus_dir, crashes = home / "corpus", home / "crashes"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    for data in target.seeds:
        path = corpus_dir / hashlib.sha1(data).hexdigest()
        if not path.exists():
            path.write_bytes(data)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.atheris_engine", target.name, str(corpus_dir),
         f"-max_total_time={max(1, int(seconds - STARTUP_S))}", f"-runs={max_inputs}",
         *([f"-seed={seed % 2**31}"] if seed % 2**31 else []), f"-timeout={INPUT_TIMEOUT_S}",
         f"-max_len={MAX_LEN}", "-rss_limit_mb=4096", "-print_final_stats=1",
         f"-artifact_prefix={crashes}/"],
        capture_output=True, text=True, timeout=seconds + 300, check=False)
    result = Result(target.name, "atheris", ci_examples=target.ci_examples,
                    seconds=time.monotonic() - started)
    log = proc.stdout + proc.stderr
    (home / "last-run.log").write_text(log)
    result.inputs, failure = read_log(log, proc.returncode, home / "last-run.log")
    if failure is not None:
        result.failures.append(failure)
    return result


def read_log(log: str, returncode: int, log_path: Path) -> tuple[int, Failure | None]:
    """(inputs executed, the crash if any) from libFuzzer's and atheris's output."""
    executed = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or \
        re.findall(r"^#(\d+)\s", log, re.MULTILINE)
    inputs = int(executed[-1]) if executed else 0
    if returncode == 0:
        return inputs, None
    written = re.findall(r"Test unit written to (\S+)", log)
    exception = re.findall(r"^(\w+(?:Error|Exception|Exit|Input)\w*): ?(.*)$", log,
                           re.MULTILINE)
    frames = re.findall(r'File "([^"]+)", line (\d+)', log)
    kind, message = exception[-1] if exception else (
        "timeout" if "timeout" in log.lower() else f"exit {returncode}", "")
    where = f"{frames[-1][0]}:{frames[-1][1]}" if frames else "?"
    return inputs, Failure(kind, where, message[:200], written[-1] if written else str(log_path))


def main() -> None:
    """The child: fuzz one target (argv: target name, then libFuzzer's arguments)."""
    import atheris

    name = sys.argv[1]
    with atheris.instrument_imports(include=["common"]):
        from tests.fuzz.mutate import mutate
        from tests.fuzz.targets import der_pool, get

        target = get(name)
        pool = der_pool() if target.der else ()

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rnd = random.Random(seed)
        if rnd.random() < 0.5:
            mutated: bytes = atheris.Mutate(data, max_size)
            return mutated
        return mutate(data, pool, target.seeds, rnd, max_size=max_size)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], target.check, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
