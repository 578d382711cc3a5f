"""settle_heap (runtime/process.py): start-up objects frozen, collections rarer, the heap on
huge pages. Run in a child interpreter, since it changes the whole process."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.process import GC_THRESHOLDS


def test_settle_heap_freezes_and_raises_the_thresholds():
    code = ("import gc, json; from runtime.process import settle_heap; "
            "before = gc.get_threshold(); settle_heap(); "
            "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    before, after, frozen = json.loads(out)
    assert before == [700, 10, 10]
    assert tuple(after) == GC_THRESHOLDS
    assert frozen > 1000  # the interpreter's and the modules' objects


def test_huge_pages_back_the_heap_where_the_kernel_offers_them():
    """With transparent huge pages in "madvise" (or "always") mode and MADV_COLLAPSE (Linux
    6.1+), the start-up heap ends up on 2 MiB pages; elsewhere the kernel refuses and
    huge_pages() changes nothing."""
    code = ("import json; from runtime.process import huge_pages; "
            "import common.kerberos.as_exchange, kdc.server; advised = huge_pages(); "
            "huge = [int(line.split()[1]) for line in open('/proc/self/smaps_rollup') "
            "if line.startswith('AnonHugePages')]; print(json.dumps([advised, huge[0]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    advised, huge_kb = json.loads(out)
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    release = tuple(int(part) for part in platform.release().split(".")[:2])
    if not mode.exists() or "[never]" in mode.read_text() or release < (6, 1):
        pytest.skip("no transparent huge pages or no MADV_COLLAPSE on this kernel")
    assert advised >= 2 << 20
    assert huge_kb >= 2048
