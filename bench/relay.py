"""The floor under datepin: mitmproxy alone, relaying to the static upstream.

    .venv/bin/python bench/relay.py UPSTREAM_URL    # prints "listening on http://127.0.0.1:PORT/"

The same slim mitmproxy master datepin runs (datepin.server.make_master), reading its
connections in the same 1 MiB pieces (datepin.connections), in reverse-proxy mode, with no
datepin addon: every response is streamed through, nothing is looked at or stored.  What it
costs a client is what any mitmproxy addon costs at least, so bench/run shows each of
datepin's figures against it as well as against the upstream itself.
Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from mitmproxy import ctx, http
from mitmproxy.options import Options

from datepin.connections import read_in_bigger_pieces
from datepin.server import make_master


class Relay:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        flow.response.stream = True  # as datepin streams files: no body held in memory

    def running(self) -> None:
        [addr, *_] = ctx.master.addons.get("proxyserver").listen_addrs()
        print(f"listening on http://127.0.0.1:{addr[1]}/", flush=True)


async def main(upstream: str) -> None:
    read_in_bigger_pieces()
    master = make_master(Options(listen_host="127.0.0.1", listen_port=0, mode=[f"reverse:{upstream}"]))
    master.addons.add(Relay())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    await master.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
