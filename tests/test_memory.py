"""What the server does to its heap before serving (datepin.memory), and what it imports."""

from __future__ import annotations

import ast
import gc
import subprocess
import sys
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


def test_the_server_imports_only_the_mitmproxy_addons_it_runs() -> None:
    """A fresh interpreter importing datepin's server (as `datepin serve` does) leaves out the
    addons mitmproxy's package would import for its own tools, and can still build a master."""
    code = (
        "import asyncio, sys\n"
        "from mitmproxy.options import Options\n"
        "from datepin.server import make_master\n"
        "async def build(): make_master(Options())\n"
        "asyncio.run(build())\n"
        "print(sorted(m for m in sys.modules if m.startswith(('flask', 'mitmproxy.addons.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = ast.literal_eval(out)
    assert not [m for m in loaded if m.startswith("flask")], loaded
    assert "mitmproxy.addons.onboarding" not in loaded, loaded
    for needed in ("core", "block", "proxyserver", "next_layer", "tlsconfig", "disable_h2c", "errorcheck"):
        assert f"mitmproxy.addons.{needed}" in loaded, loaded
