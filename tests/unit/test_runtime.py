"""settle_heap (telekey/runtime.py): start-up objects frozen, collections rarer. Run in a
child interpreter, since it changes the collector for the whole process."""

import json
import subprocess
import sys

from telekey.runtime import GC_THRESHOLDS


def test_settle_heap_freezes_and_raises_the_thresholds():
    code = ("import gc, json; from telekey.runtime import settle_heap; "
            "before = gc.get_threshold(); settle_heap(); "
            "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    before, after, frozen = json.loads(out)
    assert before == [700, 10, 10]
    assert tuple(after) == GC_THRESHOLDS
    assert frozen > 1000  # the interpreter's and the modules' objects
