"""Fixtures shared by the end-to-end tests: one full `telekey lab` run per session.

The lab takes about 70 s, so the tests that look at it (test_cli.py checks what it says,
test_lab_secrets.py what it leaves behind) share one run instead of starting their own.
"""

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class LabRun:
    """One `telekey lab --workdir` run: its files, and its stdout and stderr as captured (kept
    in files outside the work directory)."""

    workdir: Path
    returncode: int
    stdout_file: Path
    stderr_file: Path
    seconds: float

    @property
    def stdout(self) -> str:
        return self.stdout_file.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_file.read_text()


@pytest.fixture(scope="session")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    workdir = tmp_path_factory.mktemp("lab")
    captured = tmp_path_factory.mktemp("lab-output")
    stdout_file, stderr_file = captured / "lab.stdout", captured / "lab.stderr"
    started = time.monotonic()
    # About 70 s; 100 s on a slow day of this 2-vCPU VM.
    with stdout_file.open("wb") as out, stderr_file.open("wb") as err:
        result = subprocess.run([sys.executable, "-m", "telekey", "lab", "--workdir",
                                 str(workdir)], stdout=out, stderr=err, timeout=360,
                                check=False)
    return LabRun(workdir, result.returncode, stdout_file, stderr_file,
                  time.monotonic() - started)
