"""The C allocator, set up for a long-running proxy."""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's malloc.h


def single_malloc_arena() -> None:
    """Make every thread allocate from glibc's main arena.

    By default glibc gives each thread that allocates its own arena, and an arena keeps what
    was freed in it.  Big index pages are parsed and views built in worker threads, so a
    20,000-file page left about 30 MB behind in a worker's arena for good (bench/run, growth:
    peak RSS 180 MB; with one arena the same work returns to within 30 MB of the idle size).
    Threads here allocate little outside the GIL, so sharing one arena costs nothing
    measurable.  Call before any thread starts; elsewhere than glibc, nothing to do."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    if not mallopt(_M_ARENA_MAX, 1):
        log.debug("mallopt(M_ARENA_MAX, 1) was refused")
