"""mitmproxy's Master and the addons datepin runs (server.make_master), imported alone.

`mitmproxy/addons/__init__.py` imports all of mitmproxy's ~30 addons for its
`default_addons()`, Flask (for the onboarding app) and the flow-filter grammar among them,
and `mitmproxy.master` imports that package: 270 modules and 16 MB for addons datepin never
runs (8 alternating starts here: 90 -> 75 MB idle, 1.16 -> 0.99 s to listening).  The
package is put in `sys.modules` without running that file, so importing an addon module
loads that module and what it needs.  `default_addons()` is the one name it leaves out;
mitmproxy's own tools (mitmdump, mitmweb) call it, datepin does not.  Import mitmproxy's
Master from here only.
"""

from __future__ import annotations

import importlib.util
import sys


def _package_without_init(name: str) -> None:
    if name in sys.modules:  # already imported whole (by a tool embedding datepin)
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not a package")
    sys.modules[name] = importlib.util.module_from_spec(spec)


_package_without_init("mitmproxy.addons")

from mitmproxy.addons import block, core, disable_h2c, next_layer, proxyserver, tlsconfig  # noqa: E402
from mitmproxy.addons.errorcheck import ErrorCheck  # noqa: E402
from mitmproxy.master import Master  # noqa: E402

__all__ = [
    "ErrorCheck", "Master", "block", "core", "disable_h2c", "next_layer", "proxyserver", "tlsconfig",
]
