"""Path-mode clients that stop taking their answer are dropped after `idle_timeout`, their
connection, file descriptors and blob leases released; clients that take it slowly, or wait
for upstream, are not (src/datepin/stalls.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import select
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from fakepypi import FakePyPI
from proxyproc import Proxy, fetch, get_head, write_config
from storecheck import stored

from datepin.stalls import Watch

IDLE = 1.0  # the proxy's idle_timeout here, seconds
JSON = "application/vnd.pypi.simple.v1+json"
UPLOADED = "2023-01-01T00:00:00Z"
PIN = "2023-06-01"


@pytest.fixture
def proxy(tmp_path: Path, fake_pypi: FakePyPI):
    config = write_config(
        tmp_path / "proxy.toml",
        simple_url=fake_pypi.simple_url,
        json_url=fake_pypi.json_url,
        files_url=fake_pypi.files_url,
        upstream_timeout="10s",
        live_ttl="0s",
        idle_timeout=f"{IDLE:g}s",
        extra='[cache]\nsize_limit = "20MB"',  # one 16 MiB file fits, two do not
    )
    with Proxy(data_dir=tmp_path / "data", config=config) as p:
        yield p


def file_path(proxy: Proxy, project: str, filename: str) -> str:
    page = json.loads(proxy.get(f"/{PIN}/simple/{project}/", {"Accept": JSON}).body)
    [url] = [f["url"] for f in page["files"] if f["filename"] == filename]
    return urlsplit(url).path


_DATABASE = (".db", ".sqlite3", "-wal", "-shm", "-journal")


def open_files(proxy: Proxy) -> list[str]:
    """What the proxy's file descriptors point at, but its SQLite files (a thread of its
    pools opens them when it first needs them)."""
    assert proxy.process is not None
    fd_dir = Path(f"/proc/{proxy.process.pid}/fd")
    links = []
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(fd_dir / fd)
        except FileNotFoundError:  # closed meanwhile
            continue
        if not link.endswith(_DATABASE):
            links.append(link)
    return links


def blob_files_open(proxy: Proxy) -> list[str]:
    """Files of the store the proxy holds open: a blob it serves (leased), a download's temp file."""
    return [link for link in open_files(proxy) if link.startswith(str(proxy.data_dir / "blobs"))]


def settles(proxy: Proxy, at_most: int, timeout: float = 5.0) -> tuple[int, list[str]]:
    """The proxy's fd count and open blob files, once it holds no blob file and at most
    `at_most` fds, or when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        count, blobs = len(open_files(proxy)), blob_files_open(proxy)
        if (count <= at_most and not blobs) or time.monotonic() > deadline:
            return count, blobs
        time.sleep(0.05)


def fills(proxy: Proxy) -> int:
    for line in proxy.get("/-/metrics").body.decode().splitlines():
        if line.startswith("datepin_files_fills"):
            return int(line.split()[1])
    raise AssertionError("no fills counter")


def wait_fills(proxy: Proxy, count: int) -> None:
    """The client has its last bytes a moment before the commit."""
    deadline = time.monotonic() + 10
    while fills(proxy) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fills(proxy) >= count


def ask(proxy: Proxy, path: str, *, rcvbuf: int = 16384) -> tuple[socket.socket, bytes]:
    """A GET of `path` on a connection with a small receive buffer; returns it and the
    answer's head, having read no more of the body than came with the head."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", proxy.port))
    sock.settimeout(10)
    return sock, get_head(sock, path, f"127.0.0.1:{proxy.port}")


def dropped_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the proxy drops the connection (reset or closed), reading nothing
    meanwhile; None if it is still open after `timeout`."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)  # POLLERR and POLLHUP are always reported
    start = time.monotonic()
    events = poller.poll(timeout * 1000)
    return time.monotonic() - start if events else None


def logged_no_error(proxy: Proxy) -> bool:
    return not [line for line in proxy.log if "Traceback" in line or " ERROR " in line]


def test_a_client_that_stops_reading_a_stored_file_is_dropped(fake_pypi, proxy):
    big = fake_pypi.add_wheel("omega", "1.0", upload_time=UPLOADED, payload_size=16 << 20)
    path = file_path(proxy, "omega", big.filename)
    assert hashlib.sha256(fetch(proxy.url + path).body).hexdigest() == big.sha256
    wait_fills(proxy, 1)
    idle_fds, _ = settles(proxy, at_most=10_000)

    sock, head = ask(proxy, path)
    with sock:
        assert head.startswith(b"HTTP/1.1 200")
        assert blob_files_open(proxy)  # the blob being sent, leased
        after = dropped_within(sock, timeout=IDLE * 10)
        assert after is not None, "never dropped"
        assert after >= IDLE * 0.9  # not before the limit
    count, blobs = settles(proxy, at_most=idle_fds)
    assert (count, blobs) <= (idle_fds, []), open_files(proxy)
    assert hashlib.sha256(fetch(proxy.url + path).body).hexdigest() == big.sha256

    # No lease is left: filling another big file evicts it (the store holds one of them).
    other = fake_pypi.add_wheel("psi", "1.0", upload_time=UPLOADED, payload_size=16 << 20)
    assert fetch(proxy.url + file_path(proxy, "psi", other.filename)).body == other.content
    wait_fills(proxy, 2)
    assert other.sha256 in stored(proxy.data_dir)
    assert big.sha256 not in stored(proxy.data_dir)
    assert logged_no_error(proxy), proxy.log


def test_a_client_that_stops_reading_a_download_is_dropped_and_the_others_are_not(fake_pypi, proxy):
    """Dropped while upstream is stalled mid-body; a client waiting for upstream's bytes for
    longer than the limit is not (it has taken all there is), and gets the file."""
    big = fake_pypi.add_wheel("omega", "1.0", upload_time=UPLOADED, payload_size=16 << 20)
    path = file_path(proxy, "omega", big.filename)
    idle_fds, _ = settles(proxy, at_most=10_000)
    fake_pypi.fault("/files/", "stall_body", seconds=4 * IDLE, times=1)  # half, a pause, the rest

    sock, head = ask(proxy, path)
    with sock, ThreadPoolExecutor(1) as pool:
        assert head.startswith(b"HTTP/1.1 200")
        steady = pool.submit(fetch, proxy.url + path)
        after = dropped_within(sock, timeout=IDLE * 10)
        assert after is not None, "never dropped"
        assert after >= IDLE * 0.9
        assert not steady.done()  # the download goes on
        assert hashlib.sha256(steady.result().body).hexdigest() == big.sha256
    wait_fills(proxy, 1)
    assert big.sha256 in stored(proxy.data_dir)
    count, blobs = settles(proxy, at_most=idle_fds)
    assert (count, blobs) <= (idle_fds, []), open_files(proxy)
    fake_pypi.clear_log()
    assert hashlib.sha256(fetch(proxy.url + path).body).hexdigest() == big.sha256
    assert fake_pypi.requests == []  # from the store
    assert logged_no_error(proxy), proxy.log


def test_a_slow_but_steady_client_is_not_cut_nor_an_idle_one(fake_pypi, proxy):
    """8 MiB read at about 2 MiB/s: twice as much as the socket buffers hold, so the proxy's
    sendfile(2) waits for this client for seconds at a time, longer than the limit."""
    big = fake_pypi.add_wheel("omega", "1.0", upload_time=UPLOADED, payload_size=8 << 20)
    path = file_path(proxy, "omega", big.filename)
    assert fetch(proxy.url + path).body == big.content
    wait_fills(proxy, 1)

    sock, head = ask(proxy, path, rcvbuf=256 * 1024)
    with sock:
        start = time.monotonic()
        length = int(next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ))
        body = bytearray(head.split(b"\r\n\r\n", 1)[1])
        while len(body) < length:
            piece = sock.recv(min(64 * 1024, length - len(body)), socket.MSG_WAITALL)
            assert piece, f"cut after {len(body)} of {length} bytes"
            body += piece
            time.sleep(1 / 32)
        assert time.monotonic() - start > 3 * IDLE
        assert hashlib.sha256(body).hexdigest() == big.sha256
        # Nothing left to send: a connection that then says nothing is kept for keep-alive.
        assert dropped_within(sock, timeout=2.5 * IDLE) is None
        sock.sendall(f"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")


# -- the watch alone, on a page aiohttp sends (front.py's answers that are not files) -------------

LIMIT = 0.5


async def _serve_page(size: int, *, sndbuf: int | None = None) -> tuple[int, asyncio.Future[BaseException | None], Callable[[], Awaitable[None]]]:
    """An aiohttp server on 127.0.0.1 answering a page of `size` bytes under a Watch; returns
    its port, a future of how its sending ended (None: whole), and a function stopping it."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[BaseException | None] = loop.create_future()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        transport = request.transport
        assert isinstance(transport, asyncio.Transport)
        if sndbuf is not None:
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        watch = Watch.start(transport, LIMIT)
        assert watch is not None
        response = web.Response(body=b"x" * size)
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError as exc:
            ended.set_result(exc)
            raise
        finally:
            watch.stop()  # as front.py does when the connection is lost
        ended.set_result(None)
        return response

    server = web.Server(handle, access_log=None)
    listening = await loop.create_server(server, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]

    async def stop() -> None:
        listening.close()
        await server.shutdown(1)

    return port, ended, stop


def _page_client(port: int, rcvbuf: int) -> tuple[socket.socket, bytes]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(64)
    return sock, head


def test_a_client_that_stops_reading_a_page_is_dropped_and_the_send_fails() -> None:
    async def main() -> tuple[float | None, BaseException | None]:
        port, ended, stop = await _serve_page(32 << 20)
        try:
            sock, _ = await asyncio.to_thread(_page_client, port, 16384)
            with sock:
                after = await asyncio.to_thread(dropped_within, sock, LIMIT * 10)
            return after, await asyncio.wait_for(ended, 5)
        finally:
            await stop()

    after, ended = asyncio.run(main())
    assert after is not None and after >= LIMIT * 0.9
    assert isinstance(ended, ConnectionError)


def test_a_client_taking_40_kb_a_second_is_not_cut() -> None:
    """With small socket buffers, the page's send waits for this client for seconds, many
    times the limit."""
    size = 160 * 1024

    async def main() -> tuple[bytes, float, BaseException | None]:
        port, ended, stop = await _serve_page(size, sndbuf=4096)
        try:
            sock, head = await asyncio.to_thread(_page_client, port, 4096)
            with sock:
                start = time.monotonic()
                body = await asyncio.to_thread(_read_slowly, sock, head, size)
                took = time.monotonic() - start
            return body, took, await asyncio.wait_for(ended, 5)
        finally:
            await stop()

    body, took, ended = asyncio.run(main())
    assert body == b"x" * size
    assert took > 6 * LIMIT
    assert ended is None


def _read_slowly(sock: socket.socket, head: bytes, size: int) -> bytes:
    body = bytearray(head.split(b"\r\n\r\n", 1)[1])
    while len(body) < size:
        piece = sock.recv(min(4096, size - len(body)))
        assert piece, f"cut after {len(body)} of {size} bytes"
        body += piece
        time.sleep(0.1)
    return bytes(body)
