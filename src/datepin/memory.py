"""The C allocator, set up for a long-running proxy."""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import platform

log = logging.getLogger(__name__)

# glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

MMAP_THRESHOLD = 4 * 2**20


def tune_malloc() -> None:
    """Keep what a big index page costs from staying with the process for good.

    glibc's defaults hurt here in two ways.  Each thread that allocates gets an arena of its
    own, which keeps what is freed in it: big pages are parsed and their views built in
    worker threads.  And the threshold above which a block gets its own mapping (given back
    at once when freed) grows to the size of any such block freed, so after the first big
    page, a page's 12 MB of bytes and of text come from the heap, whose holes stay.  So: one
    arena, and a fixed 4 MiB threshold (file chunks of 1 MiB stay on the heap).  Measured on
    a 20,000-file page observed and answered (bench/run, growth): peak RSS 180 -> 142 MB with
    one arena, and the parse's own peak 145 -> 126 MB with the fixed threshold.

    Call before any thread starts.  Elsewhere than glibc there is nothing to do."""
    libc = _glibc()
    if libc is None:
        return
    for option, value in ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        if not libc.mallopt(option, value):
            log.debug("mallopt(%d, %d) was refused", option, value)


def freeze_startup_heap() -> None:
    """Keep the objects made while starting (modules, mitmproxy's and aiohttp's tables) out
    of every later garbage collection.

    A full collection walks every tracked object while the event loop stands still.  In a
    fresh `datepin serve` the first one came as its first cold install ended and took
    55-75 ms, almost all of it spent on what starting up had made; with those frozen here
    (after one collection, so that no garbage is kept for good), 9-11 ms.  Call once, when
    everything is set up and before any client is served.
    """
    gc.collect()
    gc.freeze()


def give_back() -> None:
    """Return the free pages inside the C heap to the system (glibc's malloc_trim).

    A burst of downloads leaves holes in the heap where their buffers were (40 parallel
    fills: about 20 MB that RSS kept for good); the heap gives back only its top by itself.
    Takes a few milliseconds: call it in a thread, when a burst is over."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (whose tunables these are), else None.  Looked
    up on first use: platform.libc_ver reads the interpreter's binary."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
