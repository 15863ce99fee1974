"""datepin's two reaches into mitmproxy's handling of connections.

Bigger reads.  mitmproxy reads each connection at most 64 KiB at a time, and every read is one
event through its protocol layers.  Relaying a file, those events are most of the work: a store
hit of the 1 GiB wheel ran at about 530 MB/s through datepin, about 800 MB/s when mitmproxy may
take up to READ_PIECE per read and asyncio may buffer that much of a connection before it stops
reading it (bench/run, files).  A connection holds that buffer only while mitmproxy is behind.

Path-mode connections.  A connection whose first request is origin-form (a client using
datepin as its index) is handed, before mitmproxy sees it, to datepin's own HTTP/1.1 server
(`hand_over_origin_form`, datepin.front); mitmproxy keeps CONNECT and absolute-form requests.

Both use parts of mitmproxy that are not its addon API (pinned to 12.x in pyproject.toml) and a
private attribute of asyncio's StreamReader; tests/test_connections.py, tests/test_front.py
and the file tests fail if a new mitmproxy or Python changes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mitmproxy.connection import Connection
from mitmproxy.proxy.mode_servers import RegularInstance
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


def hand_over_origin_form(
    adopt: Callable[[asyncio.StreamWriter, bytes], bool | None], *, idle_timeout: float
) -> None:
    """Offer each new connection on a regular-mode port to `adopt` before mitmproxy sees it.

    `adopt(writer, first)` gets the bytes read so far: True if it has taken the connection
    (the writer's transport is then its own), False to leave it to mitmproxy (which reads
    those bytes first), None to see more of them.  A connection that has not said enough
    within `idle_timeout` seconds is closed: mitmproxy's own idle timeout (`tcp_timeout`)
    starts only once it has the connection, and a client gone without a FIN (or holding
    connections open on purpose) would otherwise keep its socket for ever."""
    original = getattr(RegularInstance.handle_stream, "__wrapped__", RegularInstance.handle_stream)

    async def handle_stream(self: RegularInstance, reader: object, writer: object = None) -> None:
        if isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter):
            first = b""
            taken: bool | None = None
            deadline = asyncio.get_running_loop().time() + idle_timeout
            while taken is None and isinstance(writer.transport, asyncio.Transport):
                try:
                    async with asyncio.timeout_at(deadline):
                        piece = await reader.read(READ_PIECE)
                except TimeoutError:
                    piece = b""
                if not piece:  # closed, or silent, before saying anything useful
                    writer.close()
                    return
                first += piece
                taken = adopt(writer, first)
                if taken is None and len(first) >= 64:
                    taken = False
            if taken:
                return
            reader.feed_data(first)
        await original(self, reader, writer)  # type: ignore[arg-type]

    setattr(handle_stream, "__wrapped__", original)
    RegularInstance.handle_stream = handle_stream  # type: ignore[method-assign, assignment]
