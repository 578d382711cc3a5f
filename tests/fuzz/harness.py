"""What the in-process engines share: running one input under a watchdog, telling failures
apart, and recording each distinct one once."""

import signal
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from tests.fuzz.report import Failure, Result, save_failure
from tests.fuzz.targets import Target

SLOW_INPUT_S = 5.0
MAX_FAILURES_PER_TARGET = 3


class SlowInput(Exception):
    """One input ran longer than SLOW_INPUT_S: a hang, or close to one."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise SlowInput(f"one input ran longer than {SLOW_INPUT_S} s")


@contextmanager
def watchdog() -> Iterator[None]:
    """SIGALRM raises SlowInput inside a checked input (main thread only)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check(target: Target, data: bytes) -> None:
    """target.check under the watchdog's timer."""
    signal.setitimer(signal.ITIMER_REAL, SLOW_INPUT_S)
    try:
        target.check(data)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def attempt(target: Target, data: bytes) -> Exception | None:
    """The exception the input raises beyond what the target allows, if any."""
    try:
        check(target, data)
    except Exception as exc:  # the fuzzer's finding, whatever its type
        return exc
    return None


def kind_of(exc: BaseException) -> tuple[str, str]:
    """A failure's identity: its type and innermost frame (a hang has no fixed frame)."""
    if isinstance(exc, SlowInput):
        return ("SlowInput", "")
    frames = traceback.extract_tb(exc.__traceback__)
    return (type(exc).__name__, f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?")


def record(result: Result, seen: set[tuple[str, str]], exc: BaseException, data: bytes,
           out: Path) -> bool:
    """Add the failure to `result` unless one of its kind is there; True when it is new."""
    kind = kind_of(exc)
    if kind in seen:
        return False
    seen.add(kind)
    text = "".join(traceback.format_exception(exc))
    result.failures.append(Failure(kind[0], kind[1], str(exc)[:200],
                                   save_failure(out, result, data, text)))
    return True
