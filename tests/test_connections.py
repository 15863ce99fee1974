"""mitmproxy's connection loop, with datepin's bigger reads (src/datepin/connections.py)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from mitmproxy.connection import Client
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.mode_servers import RegularInstance
from mitmproxy.proxy.server import ConnectionHandler, ConnectionIO

from datepin.connections import READ_PIECE, hand_over_origin_form, read_in_bigger_pieces

SENT = 4 << 20


class Recording(ConnectionHandler):
    """mitmproxy's own `handle_connection`, with the events it makes recorded, not handled."""

    def __init__(self, connection: Client, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.transports = {connection: ConnectionIO(reader=reader, writer=writer)}
        self._drain_lock = asyncio.Lock()
        self.pieces: list[int] = []
        self.busy = asyncio.Event()  # set: events are handled at once

    async def server_event(self, event: events.Event) -> None:
        if isinstance(event, events.DataReceived):
            self.pieces.append(len(event.data))
            await self.busy.wait()  # as a busy proxy: the connection buffers meanwhile

    async def handle_hook(self, hook: commands.StartHook) -> None:
        pass


async def pieces_read() -> list[int]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    connection = Client(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2), timestamp_start=time.time())
    handler = Recording(connection, reader, writer)
    reading = asyncio.create_task(handler.handle_connection(connection))
    sending = asyncio.create_task(asyncio.to_thread(theirs.sendall, b"x" * SENT))
    await asyncio.sleep(0.2)  # the first event is being handled: what arrives is buffered
    handler.busy.set()
    await sending
    theirs.close()
    while sum(handler.pieces) < SENT:
        await asyncio.sleep(0.01)
    reading.cancel()  # a half-closed connection waits to be cancelled
    await asyncio.gather(reading, return_exceptions=True)
    return handler.pieces


def test_mitmproxy_reads_a_connection_in_pieces_bigger_than_its_64_kib() -> None:
    read_in_bigger_pieces()
    read_in_bigger_pieces()  # once is enough: a second call changes nothing
    pieces = asyncio.run(asyncio.wait_for(pieces_read(), 30))
    assert sum(pieces) == SENT
    # While the first was handled, asyncio buffered more than a piece (by default it stops
    # reading at 128 KiB), and the next read took a whole one.
    assert pieces[1] == READ_PIECE
    assert len(pieces) < SENT // 65535


def test_a_connection_that_never_says_what_it_is_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before mitmproxy sees a connection (and its own idle timeout, `tcp_timeout`, starts),
    datepin reads its first bytes to tell a path-mode one.  A client that sends nothing, or
    a few bytes and then nothing (gone without a FIN, or holding connections on purpose),
    must not keep its socket open for ever."""
    handed: list[bytes] = []

    async def mitmproxy_handles(self: object, reader: asyncio.StreamReader, writer: object) -> None:
        handed.append(await reader.read())

    monkeypatch.setattr(RegularInstance, "handle_stream", mitmproxy_handles)
    hand_over_origin_form(lambda writer, first: None, idle_timeout=0.3)  # never decides

    async def served(first: bytes) -> bytes:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=ours)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(theirs, first)
        await asyncio.wait_for(RegularInstance.handle_stream(None, reader, writer), 5)  # type: ignore[arg-type]
        try:
            return await asyncio.wait_for(loop.sock_recv(theirs, 10), 5)  # b"": closed
        finally:
            theirs.close()

    for first in (b"", b"GE"):
        t0 = time.monotonic()
        assert asyncio.run(served(first)) == b""
        assert time.monotonic() - t0 < 3
    assert handed == []
