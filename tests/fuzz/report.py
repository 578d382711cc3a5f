"""What a fuzz run reports: per target the inputs tried, how many times the CI run's
examples that is, and each distinct failure with the file holding its input."""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Failure:
    kind: str  # the exception's type
    where: str  # its innermost frame, file:line
    message: str
    saved: str  # the input (and, next to it, the traceback)


@dataclass
class Result:
    target: str
    engine: str
    ci_examples: int = 0
    inputs: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)


def save_failure(out: Path, result: Result, data: bytes, text: str) -> str:
    directory = out / "failures" / result.engine / result.target
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / hashlib.sha256(data).hexdigest()[:16]
    path.with_suffix(".bin").write_bytes(data)
    path.with_suffix(".txt").write_text(text)
    return str(path.with_suffix(".bin"))


def line(result: Result) -> str:
    times = f"{result.inputs / result.ci_examples:7.1f}x CI" if result.ci_examples else ""
    rate = result.inputs / result.seconds if result.seconds else 0.0
    status = f"{len(result.failures)} FAILED" if result.failures else "ok"
    return (f"{result.target:48} {result.inputs:>10,} inputs {rate:>8,.0f}/s {times:>12}  "
            f"{status}")


def summary(results: list[Result], seconds: float, out: Path, engine: str) -> str:
    inputs = sum(r.inputs for r in results)
    ci = sum(r.ci_examples for r in results)
    failures = [(r, f) for r in results for f in r.failures]
    lines = [f"{engine}: {inputs:,} inputs over {len(results)} targets in {seconds:.0f} s "
             f"({inputs / ci:.1f}x the CI run's {ci:,} examples); "
             f"{len(failures)} distinct failure(s)"]
    for result, failure in failures:
        lines.append(f"  {result.target}: {failure.kind} at {failure.where}: "
                     f"{failure.message} (input: {failure.saved})")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"summary-{engine}.json").write_text(json.dumps(
        {"engine": engine, "seconds": seconds, "inputs": inputs,
         "results": [asdict(r) for r in results]}, indent=1) + "\n")
    return "\n".join(lines)
