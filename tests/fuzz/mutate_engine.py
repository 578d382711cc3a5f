"""The mutate engine (the default): a plain loop of mutations of real messages, tens of
thousands of inputs a second per core for the decoders.

Each input is drawn from random.Random(f"{seed}:{target}"), so a run is repeatable with
`--seed`: three in four mutate a seed the target accepts, one in five mutates any of its
seeds, the rest are random bytes. A failing input is minimised (chunks deleted while the same
failure remains, within SHRINK_S) before it is saved.
"""

import random
import time
from pathlib import Path

from tests.fuzz import harness
from tests.fuzz.mutate import mutate
from tests.fuzz.report import Result
from tests.fuzz.targets import Target, der_pool

SHRINK_S = 10.0
CLOCK_EVERY = 128  # inputs between looks at the clock


def shrink(target: Target, data: bytes, kind: tuple[str, str]) -> bytes:
    """A shorter input that fails the same way: delete halves, then quarters... (ddmin's
    complement step only)."""
    deadline = time.monotonic() + SHRINK_S
    best = data
    chunk = max(1, len(best) // 2)
    while time.monotonic() < deadline:
        progressed = False
        pos = 0
        while pos < len(best) and time.monotonic() < deadline:
            candidate = best[:pos] + best[pos + chunk:]
            exc = harness.attempt(target, candidate)
            if exc is not None and harness.kind_of(exc) == kind:
                best, progressed = candidate, True
            else:
                pos += chunk
        if not progressed:
            if chunk == 1:
                break
            chunk = max(1, chunk // 2)
    return best


def run_target(target: Target, *, seconds: float, max_inputs: int, out: Path,
               seed: int = 0) -> Result:
    rnd = random.Random(f"{seed}:{target.name}")
    pool = der_pool() if target.der else ()
    primary = target.valid or target.seeds
    result = Result(target.name, "mutate", ci_examples=target.ci_examples)
    seen: set[tuple[str, str]] = set()
    started = time.monotonic()
    deadline = started + seconds
    with harness.watchdog():
        while result.inputs < max_inputs and \
                len(result.failures) < harness.MAX_FAILURES_PER_TARGET:
            if result.inputs % CLOCK_EVERY == 0 and time.monotonic() > deadline:
                break
            choice = rnd.random()
            if choice < 0.75:
                data = mutate(rnd.choice(primary), pool, target.seeds, rnd)
            elif choice < 0.95:
                data = mutate(rnd.choice(target.seeds), pool, target.seeds, rnd)
            else:
                data = rnd.randbytes(rnd.randrange(300))
            result.inputs += 1
            exc = harness.attempt(target, data)
            if exc is not None and harness.kind_of(exc) not in seen:
                small = shrink(target, data, harness.kind_of(exc))
                harness.record(result, seen, harness.attempt(target, small) or exc, small, out)
    result.seconds = time.monotonic() - started
    return result
