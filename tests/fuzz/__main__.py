"""`python -m tests.fuzz`: the long fuzz run (`make fuzz`); tests/fuzz/__init__.py says what
it does."""

import argparse
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from tests.fuzz import atheris_engine, hypothesis_engine, mutate_engine
from tests.fuzz.report import Result, line, summary
from tests.fuzz.targets import Target, all_targets, get, select

ENGINES = {"mutate": mutate_engine.run_target, "hypothesis": hypothesis_engine.run_target,
           "atheris": atheris_engine.run_target}


def _run_one(engine: str, name: str, seconds: float, max_inputs: int, out: Path,
             seed: int) -> Result:
    return ENGINES[engine](get(name), seconds=seconds, max_inputs=max_inputs,
                           out=out, seed=seed)


def _merge(total: Result | None, more: Result) -> Result:
    if total is None:
        return more
    total.inputs += more.inputs
    total.seconds += more.seconds
    known = {(f.kind, f.where) for f in total.failures}
    total.failures += [f for f in more.failures if (f.kind, f.where) not in known]
    return total


def run_all(engine: str, targets: list[Target], *, seconds: float, jobs: int, scale: int,
            out: Path, seed: int) -> list[Result]:
    """Every target, `jobs` at a time, in rounds. A target's time share is set when it
    starts: the time left times the jobs, over the targets of the round not yet finished.
    Targets that stop early (at `scale` times their CI examples) leave time over; the next
    round gives it to those below their cap, until the time or the targets run out."""
    deadline = time.monotonic() + seconds
    cap = {t.name: scale * t.ci_examples for t in targets}
    totals: dict[str, Result] = {}
    # fork: the workers inherit the targets and corpus already built here.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for round_number in range(1000):
            pending = [name for name in cap if name not in totals or (
                totals[name].inputs < cap[name] and not totals[name].failures)]
            if not pending or (round_number and deadline - time.monotonic() < 5.0):
                break
            running: set[Future[Result]] = set()
            while pending or running:
                while pending and len(running) < jobs:
                    left = max(1.0, deadline - time.monotonic())
                    share = min(left, left * jobs / (len(pending) + len(running)))
                    name = pending.pop(0)
                    done_so_far = totals[name].inputs if name in totals else 0
                    running.add(pool.submit(_run_one, engine, name, share,
                                            cap[name] - done_so_far, out,
                                            seed + 7919 * round_number))
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    result = future.result()
                    totals[result.target] = _merge(totals.get(result.target), result)
                    print(("" if round_number == 0 else f"[round {round_number + 1}] ") +
                          line(totals[result.target]), flush=True)
    return sorted(totals.values(), key=lambda r: r.target)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--engine", choices=sorted(ENGINES), default="mutate")
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="the whole run's time budget (wall clock)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="targets fuzzed at once (default: one per CPU)")
    parser.add_argument("--scale", type=int, default=100,
                        help="stop a target at this many times its CI examples")
    parser.add_argument("--seed", type=int, default=0,
                        help="mutate: the inputs are a function of it (0: a random one)")
    parser.add_argument("--target", action="append", default=[],
                        help="fnmatch pattern of target names (repeatable; default: all, "
                        "or the main decoders with atheris)")
    parser.add_argument("--out", type=Path, default=Path("build/fuzz"),
                        help="failures, atheris corpora and summary-<engine>.json go here")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    args = parser.parse_args()

    if args.list:
        for name, target in all_targets().items():
            print(f"{name:48} {len(target.valid):>4} valid seeds, {len(target.others):>4} "
                  f"others, CI {target.ci_examples}{'  (atheris)' if target.main else ''}")
        return 0
    if args.engine == "atheris" and not atheris_engine.available():
        raise SystemExit("atheris is not installed: pip install -e '.[fuzz]' (make fuzz "
                         "FUZZ_ENGINE=atheris does)")
    seed = args.seed or int.from_bytes(os.urandom(4), "big")
    targets = select(args.target, main_only=args.engine == "atheris")
    print(f"{args.engine}: {len(targets)} targets, {args.jobs} at a time, {args.seconds:.0f} s, "
          f"up to {args.scale}x the CI examples each, seed {seed}", flush=True)
    started = time.monotonic()
    results = run_all(args.engine, targets, seconds=args.seconds, jobs=args.jobs,
                      scale=args.scale, out=args.out, seed=seed)
    print(summary(results, time.monotonic() - started, args.out, args.engine))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
