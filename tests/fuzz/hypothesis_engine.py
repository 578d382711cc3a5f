"""The Hypothesis engine: Hypothesis drives the mutator (tests/fuzz/mutate.py, through a
Hypothesis random), so a failure shrinks to a small input. About 1,000 inputs a second, a
twentieth of the mutate engine's: use it to minimise what that one found, or to explore one
target at length.

Inputs are mutations of the target's valid seeds, of its other seeds, and random bytes. The
run goes in chunks of fresh Hypothesis runs (new random inputs each, no example database),
sized to fill the target's time share.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.mutate import mutate
from tests.fuzz.report import Result
from tests.fuzz.targets import Target, der_pool

FIRST_CHUNK = 100
MAX_CHUNK = 20_000


def inputs(target: Target) -> st.SearchStrategy[bytes]:
    pool = der_pool() if target.der else ()

    def mutated(seeds: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
        return st.builds(lambda seed, rnd: mutate(seed, pool, target.seeds, rnd),
                         st.sampled_from(seeds), st.randoms(use_true_random=False))

    branches = [mutated(target.valid or target.seeds)]
    if target.valid and target.others:
        branches.append(mutated(target.others))
    branches.append(st.binary(max_size=300))
    return st.one_of(branches)


@dataclass
class _Run:
    target: Target
    inputs: int = 0
    last: bytes = b""
    seen: set[tuple[str, str]] = field(default_factory=set)

    def check(self, data: bytes) -> None:
        self.inputs += 1
        self.last = data
        harness.check(self.target, data)


def run_target(target: Target, *, seconds: float, max_inputs: int, out: Path,
               seed: int = 0) -> Result:
    """`seed` is unused: Hypothesis picks its own (not derandomized)."""
    run = _Run(target)
    result = Result(target.name, "hypothesis", ci_examples=target.ci_examples)
    strategy = inputs(target)
    started = time.monotonic()
    chunk = FIRST_CHUNK
    with harness.watchdog():
        while run.inputs < max_inputs and time.monotonic() - started < seconds and \
                len(result.failures) < harness.MAX_FAILURES_PER_TARGET:
            before, chunk_started = run.inputs, time.monotonic()
            test: Callable[[], None] = settings(
                max_examples=min(chunk, max_inputs - run.inputs), deadline=None,
                database=None, derandomize=False, verbosity=Verbosity.quiet,
                report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
            )(given(strategy)(run.check))
            try:
                test()
            except Exception as exc:  # the target's failure, shrunk (the last input run)
                harness.record(result, run.seen, exc, run.last, out)
            rate = (run.inputs - before) / max(time.monotonic() - chunk_started, 1e-3)
            remaining = seconds - (time.monotonic() - started)
            chunk = int(min(MAX_CHUNK, max(FIRST_CHUNK, rate * remaining)))
    result.inputs, result.seconds = run.inputs, time.monotonic() - started
    return result
