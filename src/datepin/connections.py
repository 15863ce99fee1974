"""datepin's two reaches into mitmproxy's handling of connections.

Bigger reads.  mitmproxy reads each connection at most 64 KiB at a time, and every read is one
event through its protocol layers.  Relaying a file, those events are most of the work: a store
hit of the 1 GiB wheel ran at about 530 MB/s through datepin, about 800 MB/s when mitmproxy may
take up to READ_PIECE per read and asyncio may buffer that much of a connection before it stops
reading it (bench/run, files).  A connection holds that buffer only while mitmproxy is behind.

A client's socket.  Even so, every byte relayed is copied several times on mitmproxy's one
event loop; a big file sent to a plain-HTTP client goes out by sendfile(2) on the client's own
connection instead (`client_transport`, FileServer.send_direct).

Both use parts of mitmproxy that are not its addon API (pinned to 12.x in pyproject.toml) and a
private attribute of asyncio's StreamReader; tests/test_connections.py and the file tests fail
if a new mitmproxy or Python changes them.
"""

from __future__ import annotations

import asyncio

from mitmproxy import ctx, http
from mitmproxy.connection import Connection
from mitmproxy.proxy.server import ConnectionHandler

READ_PIECE = 1 << 20
_MARK = "_datepin_bigger_reads"


def read_in_bigger_pieces() -> None:
    """Let mitmproxy's connection loop read up to READ_PIECE at a time (idempotent)."""
    original = ConnectionHandler.handle_connection
    if getattr(original, _MARK, False):
        return

    async def handle_connection(self: ConnectionHandler, connection: Connection) -> None:
        io = self.transports.get(connection)
        if io is not None and isinstance(io.reader, asyncio.StreamReader):
            # asyncio stops reading a connection once twice its limit (64 KiB) is buffered.
            limit = getattr(io.reader, "_limit", None)
            if isinstance(limit, int) and limit < READ_PIECE // 2:
                setattr(io.reader, "_limit", READ_PIECE // 2)
            read = io.reader.read

            async def read_piece(n: int = -1) -> bytes:
                return await read(READ_PIECE if 0 <= n < READ_PIECE else n)

            io.reader.read = read_piece  # type: ignore[method-assign]
        await original(self, connection)

    setattr(handle_connection, _MARK, True)
    ConnectionHandler.handle_connection = handle_connection  # type: ignore[method-assign]


def client_transport(flow: http.HTTPFlow) -> asyncio.WriteTransport | None:
    """The socket of a plain-HTTP (no TLS) client's connection, for a response written
    straight to it; None where there is none to take.  The flow must then be killed: mitmproxy
    sends nothing more on a killed flow's connection and closes it."""
    if flow.client_conn.tls:
        return None
    proxyserver = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
    handler = getattr(proxyserver, "connections", {}).get(flow.client_conn.id)
    io = getattr(handler, "transports", {}).get(flow.client_conn)
    writer = getattr(io, "writer", None)
    if not isinstance(writer, asyncio.StreamWriter) or writer.is_closing():
        return None
    transport = writer.transport
    return transport if isinstance(transport, asyncio.WriteTransport) else None
