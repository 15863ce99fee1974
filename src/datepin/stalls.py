"""Path-mode clients that stop taking their answer are dropped after `idle_timeout`.

aiohttp has no timeout while it sends a body: a client that read an answer's head and then
nothing, or stopped midway, kept its connection, a file descriptor and, for a file, a blob
lease (which keeps the blob from eviction) for ever.  Forward-mode clients, whose answers
mitmproxy sends, get the same watch (datepin.connections).

Progress is what the client's TCP stack has acknowledged (TCP_INFO's `tcpi_bytes_acked`,
Linux), read every few seconds per connection: nothing is added per byte or per piece sent,
so a store hit still goes out in one sendfile(2) call (bench/run, files), and a client that
takes a few KB a second is never cut, however long its answer takes.  A connection is dropped
when bytes wait for its client (in the kernel's send queue or asyncio's buffer) and none has
been acknowledged for `limit` seconds.  One that waits for datepin (a cold download, an
upstream page) or sends no next request has nothing waiting for it: upstream timeouts and
aiohttp's keep-alive timeout apply to those.

A drop shuts the socket down: every send waiting for the client (asyncio's buffer, a
sendfile(2) in progress) then fails at once with EPIPE through its own error path, so the
answer's file, lease and download are released as for a client that went away; the socket is
then closed with a reset (SO_LINGER 0), which also frees the bytes the kernel held for it.
Closing it straight away instead would strand a sendfile in progress: asyncio waits for a
socket to become writable, which a closed socket never does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

log = logging.getLogger(__name__)

# Checks come at most this far apart: a stalled client is dropped between `limit` and `limit`
# plus this many seconds after its last acknowledgement.
CHECK_EVERY = 5.0
_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux
# struct tcp_info (linux/tcp.h): u32 tcpi_unacked (segments) at 24, u64 tcpi_bytes_acked at
# 120 (Linux 4.1), u32 tcpi_notsent_bytes at 144 (Linux 4.6).
_INFO_SIZE = 148
_LINGER_RESET = struct.pack("ii", 1, 0)


def tcp_progress(sock: socket.socket) -> tuple[int, bool] | None:
    """The bytes a TCP socket's peer has acknowledged, and whether more wait for it (sent and
    unacknowledged, or not sent yet); None where the kernel does not say (or it is closed)."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _INFO_SIZE)
    except OSError:
        return None
    if len(info) < _INFO_SIZE:
        return None
    (unacked,) = struct.unpack_from("=I", info, 24)
    (acked,) = struct.unpack_from("=Q", info, 120)
    (notsent,) = struct.unpack_from("=I", info, 144)
    return acked, bool(unacked or notsent)


def progress(transport: asyncio.WriteTransport, sock: socket.socket) -> tuple[int, bool] | None:
    """`tcp_progress` of a transport's socket, where bytes in asyncio's buffer wait too."""
    progress = tcp_progress(sock)
    if progress is None:
        return None
    acked, waiting = progress
    return acked, waiting or bool(transport.get_write_buffer_size())


class Watch:
    """One connection's progress, checked every `limit / 4` seconds (at most CHECK_EVERY)."""

    def __init__(
        self, transport: asyncio.Transport, sock: socket.socket, limit: float
    ) -> None:
        self._transport = transport
        self._sock = sock
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._interval = min(limit / 4, CHECK_EVERY)
        self._acked = -1
        self._since = self._loop.time()
        self._dropped = False
        self._timer = self._loop.call_later(self._interval, self._check)

    @classmethod
    def start(cls, transport: asyncio.Transport, limit: float) -> Watch | None:
        """A watch on a TCP connection, or None where its progress cannot be read."""
        sock = transport.get_extra_info("socket")
        if sock is None or tcp_progress(sock) is None:
            return None
        return cls(transport, sock, limit)

    def stop(self) -> None:
        self._timer.cancel()

    def _check(self) -> None:
        now_progress = progress(self._transport, self._sock)
        if now_progress is None:
            return  # closed
        if self._dropped:
            # Shut down a check ago, and nothing has closed it since: whatever waited for
            # the socket has failed by now, so it can be closed under it.
            self._transport.abort()
            return
        now = self._loop.time()
        acked, waiting = now_progress
        if acked != self._acked or not waiting:
            self._acked, self._since = acked, now
        elif now - self._since >= self._limit:
            self._drop()
        self._timer = self._loop.call_later(self._interval, self._check)

    def _drop(self) -> None:
        log.info(
            "dropping client %s: it took nothing of its answer for %g s (idle_timeout)",
            self._transport.get_extra_info("peername"), self._limit,
        )
        self._dropped = True
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            self._transport.abort()
