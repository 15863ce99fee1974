"""Path-mode connections, served by datepin's own HTTP/1.1 server on mitmproxy's port.

mitmproxy still accepts every connection on the listening port.  A connection whose first
request is origin-form (`GET /2023-11-18/simple/numpy/`: a client using datepin as its index,
never as a proxy) is handed to an aiohttp server in the same event loop; CONNECT and
absolute-form requests (forward mode, everything tunnelled) stay with mitmproxy.  The request
is answered by the same addon code either way: the front hands it over as an `Ask` and sends
the `Reply` it gets, with no mitmproxy objects on the way (building a flow and its response
cost 0.13 ms a request).

Why: mitmproxy's connection handling, protocol layers and hook dispatch cost more of the
event loop per request than datepin's own work on a warm page, and relaying the fixture set
through mitmproxy alone, with no addon, cost uv 1.3x the direct install time (bench/run).  Here
a pinned page is answered at p50 0.34-0.43 ms and 2,180-2,740 requests/s at concurrency 1,
where mitmproxy alone relays a file of the same size at 2.1-2.2 ms and 430-450 requests/s.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from mitmproxy import ctx

from datepin.addon import Ask, DatepinAddon
from datepin.fileserver import FileServer
from datepin.stalls import Watch


class _Server(web.Server):
    """aiohttp's low-level server, holding each adopted connection's StreamWriter while the
    connection lasts (a StreamWriter collected by the garbage collector closes its socket),
    and the watch that drops its client if it stops taking its answers (datepin.stalls)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writers: dict[object, asyncio.StreamWriter] = {}
        self.watches: dict[object, Watch] = {}

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.writers.pop(handler, None)
        if (watch := self.watches.pop(handler, None)) is not None:
            watch.stop()


class PathFront:
    """aiohttp's low-level server, answering path-mode requests through the addon."""

    def __init__(self, addon: DatepinAddon, files: FileServer, *, idle_timeout: float) -> None:
        self._addon = addon
        self._files = files
        self._idle_timeout = idle_timeout
        self._server = _Server(self._handle, access_log=None)

    def adopt(self, writer: asyncio.StreamWriter, first: bytes) -> bool | None:
        """Take a new connection whose first bytes are `first` if it is a path-mode one and
        mitmproxy would let its client in (connections.hand_over_origin_form)."""
        taken = takes(first)
        if not taken:
            return taken
        options = ctx.options
        if not accepted(writer.get_extra_info("peername"), options.block_global, options.block_private):
            return False  # mitmproxy refuses it, and logs why
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        protocol = self._server()
        self._server.writers[protocol] = writer
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if (watch := Watch.start(transport, self._idle_timeout)) is not None:
            self._server.watches[protocol] = watch
        protocol.data_received(first)
        return True

    async def shutdown(self, timeout: float = 2.0) -> None:
        await self._server.shutdown(timeout)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if not request.raw_path.startswith("/"):
            # A proxy request after path-mode ones on the same connection.
            return web.Response(
                status=400, text="datepin: send proxy requests on a connection of their own\n"
            )
        if request.body_exists:
            await request.read()  # no route takes a body: read so the connection stays usable
        reply = await self._addon.answer(Ask(request.method, request.raw_path, request.headers, _host(request)))
        if reply.ticket is not None:
            return await self._files.answer_ticket(request, reply.ticket)
        return web.Response(status=reply.status, reason=reply.reason, body=reply.body, headers=reply.headers)


def _host(request: web.BaseRequest) -> str:
    """The Host the client asked for, else the address it connected to (aiohttp's own
    fallback is the machine's FQDN, a DNS lookup)."""
    host = request.headers.get("Host")
    if host:
        return host
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return f"{sockname[0]}:{sockname[1]}" if sockname else "127.0.0.1"


def takes(first: bytes) -> bool | None:
    """Whether a connection starting with `first` is a path-mode one (origin-form request
    line); None until enough has arrived to tell."""
    space = first.find(b" ")
    if space < 0:
        return None if len(first) < 32 and first.isalpha() else False
    if len(first) <= space + 1:
        return None
    return first[space + 1 : space + 2] == b"/" and first[:space].isalpha()


def accepted(peername: object, block_global: bool, block_private: bool) -> bool:
    """Whether mitmproxy's own rules (its `block` addon) would let this client in."""
    try:
        host = str(peername[0]).rsplit("%", 1)[0]  # type: ignore[index]
        address = ipaddress.ip_address(host)
    except (TypeError, IndexError, ValueError):
        return False
    if isinstance(address, ipaddress.IPv6Address):
        address = address.ipv4_mapped or address
    if address.is_loopback:
        return True
    return not (block_private and address.is_private) and not (block_global and address.is_global)
