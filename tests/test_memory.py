"""datepin.memory: what the server does to its heap before serving."""

from __future__ import annotations

import gc
import weakref

from datepin.memory import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_freeze_startup_heap_collects_then_freezes() -> None:
    # Garbage only a collection frees (a cycle), and a live object made before the freeze.
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    garbage = weakref.ref(a)
    del a, b
    kept = _Node()
    frozen_before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert garbage() is None, "the cycle was frozen instead of collected"
        assert gc.get_freeze_count() > frozen_before
        assert not any(o is kept for o in gc.get_objects()), "a live object was left to collections"
    finally:
        gc.unfreeze()
