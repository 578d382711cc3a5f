"""How daemons run: uvloop as the event loop when it is installed, asyncio's otherwise; and
the cyclic garbage collector set for a long-running server (`settle_heap`)."""

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# A generation-0 collection after 50,000 net container allocations rather than 700 (Python's
# default), and a full one after 100 of those. Reference counting frees almost everything a
# request allocates; the collector only finds cycles, and at the default it ran every few
# requests and walked everything that had survived since the last one: a controller holding
# 100,000 SAs spent about a tenth of a restart storm's CPU there (README, controller figures).
GC_THRESHOLDS = (50_000, 20, 100)


def settle_heap() -> None:
    """Once start-up is done: collect, move everything alive now (code, codecs, keys,
    settings) out of the collector's generations for good, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
