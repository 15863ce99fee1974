"""datepin's two reaches into mitmproxy's handling of connections.

Bigger reads.  mitmproxy reads each connection at most 64 KiB at a time, and every read is one
event through its protocol layers.  Relaying a file, those events are most of the work: a store
hit of the 1 GiB wheel ran at about 530 MB/s through datepin, about 800 MB/s when mitmproxy may
take up to READ_PIECE per read and asyncio may buffer that much of a connection before it stops
reading it (bench/run, files).  A connection holds that buffer only while mitmproxy is behind.

HTTP/2 clients that stop reading.  mitmproxy's HTTP/2 layer buffers whatever a client's
flow-control window does not admit yet, and keeps reading the answer's source meanwhile: an
uv that stops taking a streamed file (the file server's answer) made mitmproxy hold the whole
file in memory (a 300 MB file: 93 -> 412 MB RSS).  So a server-side connection answering a
stream of a client speaking HTTP/2 is read only while that stream has less than H2_BUFFER
bytes waiting for window; over HTTP/1.1 the socket's own backpressure does it (mitmproxy
drains its writers).  Per stream, as HTTP/2's own flow control is: the other answers on the
connection go on while the client takes them (counted for the connection as a whole, one
stream the client no longer reads stopped them all).

Forward-mode clients waiting for datepin.  mitmproxy closes a client connection that has had
no traffic for `tcp_timeout` (datepin's `idle_timeout`), also while the client waits for an
answer datepin does not have yet: a file the file server is still waiting for upstream to
send (a slow upstream, a download waiting for its turn).  Such a client has sent its request
and has nothing waiting for it; it is kept as long as that lasts (`_answer_awaited`), as in
path mode (datepin.stalls).

Forward-mode clients that stop taking their answer.  mitmproxy counts as traffic only what it
reads, and stops reading a file while its client's socket is full: it cut a client taking a
MiB in more than `tcp_timeout` (a slow one, never stalled), and the cut of a stalled one only
closed its socket gracefully, which asyncio does once its buffer is sent: never, for a client
that reads nothing more, so the socket and the bytes the kernel held for it (4 MB) stayed for
as long as the client did.  So a client with bytes waiting for it is left to the same watch as
path mode's (datepin.stalls.Watch, on TCP progress): dropped, with a reset, once it has taken
none of them for `tcp_timeout`, never while it takes some; mitmproxy's idle timeout is for
the rest (`_answer_waits`).

Path-mode connections.  A connection whose first request is origin-form (a client using
datepin as its index) is handed, before mitmproxy sees it, to datepin's own HTTP/1.1 server
(`hand_over_origin_form`, datepin.front); mitmproxy keeps CONNECT and absolute-form requests.

All use parts of mitmproxy that are not its addon API (pinned to 12.x in pyproject.toml) and a
private attribute of asyncio's StreamReader; tests/test_connections.py, tests/test_front.py,
tests/test_forward_stalls.py and the file tests fail if a new mitmproxy or Python changes them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mitmproxy.connection import Connection
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http._http1 import Http1Client
from mitmproxy.proxy.layers.http._http2 import Http2Server
from mitmproxy.proxy.layers.http._http_h2 import BufferedH2Connection
from mitmproxy.proxy.mode_servers import RegularInstance
from mitmproxy.proxy.server import ConnectionHandler

from datepin.stalls import CHECK_EVERY, Watch, progress

READ_PIECE = 1 << 20
# What one stream of an HTTP/2 client may have waiting for flow-control window before its
# answer's source is no longer read (each read adds up to READ_PIECE more).
H2_BUFFER = 4 << 20
_MARK = "_datepin_bigger_reads"
_H2 = "_datepin_h2"  # on a client Connection: its BufferedH2Connection
_H1 = "_datepin_h1"  # on a server Connection: the Http1Client relaying its answers
_PROGRESS = "_datepin_client_progress"  # on a ConnectionHandler: set when its client was read
_WATCH = "_datepin_client_watch"  # on a ConnectionHandler: the Watch on its client's socket


def read_in_bigger_pieces() -> None:
    """Let mitmproxy's connection loop read up to READ_PIECE at a time, no further ahead of
    an HTTP/2 stream than H2_BUFFER, and keep clients waiting for datepin (idempotent)."""
    original = ConnectionHandler.handle_connection
    if getattr(original, _MARK, False):
        return

    async def handle_connection(self: ConnectionHandler, connection: Connection) -> None:
        io = self.transports.get(connection)
        progress: asyncio.Event = self.__dict__.setdefault(_PROGRESS, asyncio.Event())
        from_client = connection is getattr(self, "client", None)
        if io is not None and isinstance(io.reader, asyncio.StreamReader):
            # asyncio stops reading a connection once twice its limit (64 KiB) is buffered.
            limit = getattr(io.reader, "_limit", None)
            if isinstance(limit, int) and limit < READ_PIECE // 2:
                setattr(io.reader, "_limit", READ_PIECE // 2)
            read = io.reader.read

            async def read_piece(n: int = -1) -> bytes:
                if from_client:
                    # What the client sent before has been handled: window updates included.
                    progress.set()
                else:
                    await _client_catches_up(self, connection, progress)
                return await read(READ_PIECE if 0 <= n < READ_PIECE else n)

            io.reader.read = read_piece  # type: ignore[method-assign]
        if from_client and io is not None and isinstance(io.writer, asyncio.StreamWriter):
            transport = io.writer.transport
            if isinstance(transport, asyncio.Transport):
                # Not stopped with the handler: mitmproxy closes the socket gracefully, which
                # waits for its client to take what is left; the watch ends once it is closed.
                self.__dict__[_WATCH] = Watch.start(transport, self.timeout_watchdog.timeout)
        try:
            await original(self, connection)
        finally:
            if from_client:
                progress.set()  # the client is gone: nothing more to wait for

    setattr(handle_connection, _MARK, True)
    ConnectionHandler.handle_connection = handle_connection  # type: ignore[method-assign]

    original_init = Http2Server.__init__

    def init(self: Http2Server, context: Context) -> None:
        original_init(self, context)
        setattr(context.client, _H2, self.h2_conn)

    Http2Server.__init__ = init  # type: ignore[method-assign]

    original_client_init = Http1Client.__init__

    def client_init(self: Http1Client, context: Context) -> None:
        original_client_init(self, context)
        setattr(self.conn, _H1, self)

    Http1Client.__init__ = client_init  # type: ignore[method-assign]

    original_on_timeout = ConnectionHandler.on_timeout

    async def on_timeout(self: ConnectionHandler) -> None:
        watchdog = self.timeout_watchdog
        while (
            watchdog.blocker  # a hook runs: the client waits for the addon
            or time.time() - watchdog.last_activity < watchdog.timeout
            or _answer_awaited(self)
            or _answer_waits(self)
        ):
            await asyncio.sleep(min(watchdog.timeout / 4, CHECK_EVERY))
        await original_on_timeout(self)

    ConnectionHandler.on_timeout = on_timeout  # type: ignore[method-assign]


def _waiting_for_window(h2: BufferedH2Connection, stream_id: int) -> int:
    """Bytes of a stream an HTTP/2 connection holds because its window is closed."""
    # `get`: stream_buffers is a defaultdict, and an empty queue left in it would break
    # mitmproxy's sending of the others.
    return sum(len(item.data) for item in h2.stream_buffers.get(stream_id, ()))


async def _client_catches_up(
    handler: ConnectionHandler, server: Connection, progress: asyncio.Event
) -> None:
    """Wait while the stream of the handler's HTTP/2 client that `server` answers has
    H2_BUFFER bytes or more waiting for window."""
    h2 = getattr(getattr(handler, "client", None), _H2, None)
    if not isinstance(h2, BufferedH2Connection):
        return
    relay = getattr(server, _H1, None)
    while (
        isinstance(relay, Http1Client)
        and relay.stream_id is not None
        and _waiting_for_window(h2, relay.stream_id) >= H2_BUFFER
    ):
        progress.clear()
        await progress.wait()


def _bytes_waiting(handler: ConnectionHandler) -> bool | None:
    """Whether bytes wait for the handler's client in asyncio's buffer or its socket; None
    where that cannot be told (the client is gone, or the kernel does not say)."""
    io = handler.transports.get(handler.client)
    writer = None if io is None else io.writer
    if not isinstance(writer, asyncio.StreamWriter):
        return None
    sock = writer.get_extra_info("socket")
    now = None if sock is None else progress(writer.transport, sock)
    return None if now is None else now[1]


def _answer_waits(handler: ConnectionHandler) -> bool:
    """Whether bytes wait for the handler's client under its Watch, which drops the client if
    it takes none of them for the limit."""
    return handler.__dict__.get(_WATCH) is not None and _bytes_waiting(handler) is True


def _answer_awaited(handler: ConnectionHandler) -> bool:
    """Whether the handler's client waits for an answer datepin has not got yet: a request is
    on its way to a server, and nothing of that answer waits for the client (in the socket,
    mitmproxy's buffer, or an HTTP/2 stream's window)."""
    if _bytes_waiting(handler) is not False:
        return False
    h2 = getattr(handler.client, _H2, None)
    for connection in handler.transports:
        relay = getattr(connection, _H1, None)
        if isinstance(relay, Http1Client) and relay.stream_id is not None:
            if isinstance(h2, BufferedH2Connection) and _waiting_for_window(h2, relay.stream_id):
                return False
            return True
    return False


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
