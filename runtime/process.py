"""How daemons run: uvloop as the event loop when it is installed, asyncio's otherwise; and,
once started (`settle_heap`), the cyclic garbage collector set for a long-running server and
the heap on huge pages."""

import asyncio
import ctypes
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
# 100,000 SAs spent about a tenth of a restart storm's CPU there (docs/performance.md).
GC_THRESHOLDS = (50_000, 20, 100)


def settle_heap() -> None:
    """Once start-up is done: collect, move everything alive now (code, codecs, keys,
    settings) out of the collector's generations for good, collect less often, and put that
    heap on huge pages."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    huge_pages()


MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25  # <linux/mman.h>; MADV_COLLAPSE since Linux 6.1


def huge_pages() -> int:
    """Back the heap that start-up built (code objects, compiled codecs, modules, keys) with
    2 MiB pages: MADV_HUGEPAGE on every anonymous writable mapping of 2 MiB or more (what
    transparent huge pages need in their usual "madvise" mode), then MADV_COLLAPSE to turn
    the pages already there into huge ones now. A daemon answers each request after idling,
    with its caches and TLB cold, and a request touches objects all over that heap; on this
    VM this took 5.7 ± 1.4% off the KDC's CPU per RSA PKINIT login (docs/performance.md).
    Returns the bytes advised; a kernel without THP or MADV_COLLAPSE just refuses (nothing
    changes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    advised = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()  # address perms offset dev inode [path]
            if fields[5:] not in ([], ["[heap]"]) or not fields[1].startswith("rw"):
                continue  # file-backed, the stack, the vDSO
            start, end = (int(address, 16) for address in fields[0].split("-"))
            if end - start < 2 << 20:
                continue
            if libc.madvise(start, end - start, MADV_HUGEPAGE) == 0:
                libc.madvise(start, end - start, MADV_COLLAPSE)
                advised += end - start
    return advised
