"""Keep a long-running server's memory flat under many threads.

glibc gives each thread that meets a locked heap an arena of its own, up to eight per core, and
memory freed into one arena is rarely handed back to the system or reused by another. A server
with dozens of request threads (batched serving keeps 48 in progress by default) grew its RSS for
minutes at saturation before settling (bench/results/load-*). Two arenas bound that growth; the
Python objects themselves live in CPython's own allocator and are unaffected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc's mallopt parameter number for the arena limit (malloc.h)."""
SERVER_ARENAS = 2


def limit_malloc_arenas(arenas: int = SERVER_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process, before its threads start; True when applied.

    An operator's own MALLOC_ARENA_MAX wins, and on a C library other than glibc nothing changes.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    applied = bool(mallopt(M_ARENA_MAX, arenas))
    log.debug("malloc arenas limited", extra={"arenas": arenas, "applied": applied})
    return applied
