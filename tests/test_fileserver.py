"""The internal file server, over real sockets, against a fault-injecting upstream."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from datepin import fileserver
from datepin.blobs import INLINE_LIMIT, BlobStore
from datepin.fileserver import (
    CACHE_CONTROL,
    ByteRange,
    FileServer,
    FileTarget,
    SMALL_FILE,
    FillError,
    RangeNotSatisfiable,
    etag_for,
    parse_range,
)
from fakepypi import closed_port

MIB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(make: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(make(), timeout))


# -- a fault-injecting upstream ----------------------------------------------------------------


@dataclass
class Behaviour:
    """How the upstream answers for one file.

    mode: ok | 500 | 404 | 410 | 401 | 403 | stall_headers | stall_body | cut | wrong | chunked
    """

    body: bytes | Path
    mode: str = "ok"
    chunk: int = 64 * 1024
    ranges: bool = True  # honour Range (else answer 200 with the whole body)
    gate: asyncio.Event | None = None  # when set: pause at half the body until the event is set

    @property
    def size(self) -> int:
        return self.body.stat().st_size if isinstance(self.body, Path) else len(self.body)


@dataclass
class Upstream:
    files: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, name: str, auth: str = "") -> str:
        return f"http://{auth}127.0.0.1:{self.port}/files/{name}"

    def count(self, method: str, name: str) -> int:
        return sum(1 for m, n, _ in self.requests if (m, n) == (method, name))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/files/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append((request.method, name, dict(request.headers)))
        b = self.files[name]
        if b.mode in ("500", "404", "410", "401", "403"):
            return web.Response(status=int(b.mode), text="nope")
        if b.mode == "stall_headers":
            await asyncio.sleep(3600)
        if isinstance(b.body, Path):
            return web.FileResponse(b.body)
        body = bytes(x ^ 0xFF for x in b.body[:16]) + b.body[16:] if b.mode == "wrong" else b.body
        if b.mode == "wrong_tail":  # right but for its last 16 bytes
            body = body[:-16] + bytes(x ^ 0xFF for x in body[-16:])
        if b.mode == "gzip":  # a server that ignores Accept-Encoding: identity
            body = gzip.compress(body, mtime=0)
        start, end, status = 0, len(body), 200
        header = request.headers.get("Range")
        if header and b.ranges:
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", header)
            assert m, f"the file server must send explicit ranges, got {header!r}"
            start, end, status = int(m[1]), min(int(m[2]) + 1, len(body)), 206
        response = web.StreamResponse(status=status)
        if b.mode == "gzip":
            response.headers["Content-Encoding"] = "gzip"
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
        if b.mode != "chunked":
            response.content_length = end - start
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        for offset in range(start, end, b.chunk):
            if offset - start >= (end - start) // 2:
                if b.mode == "cut":
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if b.mode == "stall_body":
                    await asyncio.sleep(3600)
                if b.gate is not None:
                    await b.gate.wait()
            await response.write(body[offset : min(offset + b.chunk, end)])
        await response.write_eof()
        return response


@dataclass
class Env:
    upstream: Upstream
    store: BlobStore
    server: FileServer
    client: aiohttp.ClientSession

    def target(self, name: str, **kwargs: Any) -> FileTarget:
        b = self.upstream.files[name]
        data = b.body.read_bytes() if isinstance(b.body, Path) else b.body
        kwargs.setdefault("expected_sha256", sha(data))
        kwargs.setdefault("size", b.size)
        return FileTarget(upstream_url=kwargs.pop("url", self.upstream.url(name)), filename=name, **kwargs)

    def url(self, target: FileTarget) -> str:
        return f"http://127.0.0.1:{self.server.port}{self.server.ticket(target)}"

    async def fetch(self, target: FileTarget, method: str = "GET", **headers: str) -> Result:
        async with self.client.request(method, self.url(target), headers=headers) as response:
            try:
                body, error = await response.read(), None
            except aiohttp.ClientPayloadError as exc:
                body, error = b"", exc
        await self.server.wait_idle()  # the commit follows the client's last bytes
        return Result(response.status, response.headers, body, error)


@dataclass
class Result:
    status: int
    headers: Any
    body: bytes
    error: Exception | None = None


@contextlib.asynccontextmanager
async def environment(tmp_path: Path, *, timeout: float = 5.0, size_limit: int = 1 << 40, **kw: Any) -> AsyncIterator[Env]:
    upstream = Upstream()
    await upstream.start()
    store = BlobStore(tmp_path / "store", size_limit=size_limit)
    async with aiohttp.ClientSession() as session:
        server = FileServer(store, session, timeout=timeout, **kw)
        await server.start()
        # identity: the test client must see the bytes as sent, and never reuse a cut connection
        async with aiohttp.ClientSession(auto_decompress=False) as client:
            try:
                yield Env(upstream, store, server, client)
            finally:
                await server.stop()
    await upstream.stop()
    store.close()


def stored_nothing(env: Env) -> bool:
    return env.store.stats().count == 0 and not list((env.store.directory / "tmp").iterdir())


# -- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, ByteRange(0, 99)),
        ("bytes=100-", 1000, ByteRange(100, 999)),
        ("bytes=-10", 1000, ByteRange(990, 999)),
        ("bytes=-5000", 1000, ByteRange(0, 999)),
        ("bytes=990-5000", 1000, ByteRange(990, 999)),
        ("BYTES=1-1", 1000, ByteRange(1, 1)),
        ("bytes=5-2", 1000, None),
        ("bytes=0-1,5-6", 1000, None),
        ("items=0-1", 1000, None),
        ("bytes=-", 1000, None),
        ("bytes=x-1", 1000, None),
    ],
)
def test_parse_range(header: str, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=1000-", 1000), ("bytes=-0", 1000), ("bytes=0-", 0), ("bytes=-1", 0)])
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


# -- fill, then hit ----------------------------------------------------------------------------


def test_fill_streams_then_hits_without_upstream(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 123)
    commits: list[tuple[str, int]] = []

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["a.whl"] = Behaviour(data)
            target = env.target("a.whl", on_commit=lambda s, n: commits.append((s, n)))
            first = await env.fetch(target, **{"Accept-Encoding": "gzip"})
            assert (first.status, first.body) == (200, data)
            assert first.headers["Content-Length"] == str(len(data))
            assert first.headers["ETag"] == etag_for(sha(data))
            assert "Content-Encoding" not in first.headers
            assert env.upstream.requests[0][2]["Accept-Encoding"] == "identity"
            assert commits == [(sha(data), len(data))]
            assert env.store.has(sha(data))

            second = await env.fetch(target)
            assert (second.status, second.body) == (200, data)
            assert second.headers["Accept-Ranges"] == "bytes"
            assert second.headers["Cache-Control"] == CACHE_CONTROL
            assert second.headers["Content-Length"] == str(len(data))
            assert second.headers["Content-Type"] == "application/octet-stream"
            assert "Content-Encoding" not in second.headers
            assert env.upstream.count("GET", "a.whl") == 1
            counters = env.server.counters
            assert (counters["hits"], counters["misses"], counters["fills"]) == (1, 1, 1)
            assert counters["bytes_served"] == 2 * len(data)

    run(body)


def test_unknown_hash_and_size_are_learnt_from_the_download(tmp_path: Path) -> None:
    data = os.urandom(MIB)
    commits: list[tuple[str, int]] = []

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["x.tar.gz"] = Behaviour(data, mode="chunked")
            target = env.target("x.tar.gz", expected_sha256=None, size=None, on_commit=lambda s, n: commits.append((s, n)))
            result = await env.fetch(target)
            assert (result.status, result.body, result.error) == (200, data, None)
            assert commits == [(sha(data), len(data))] and env.store.has(sha(data))

    run(body)


def test_fill_without_a_client(tmp_path: Path) -> None:
    data = os.urandom(MIB)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["gone.whl"] = Behaviour(data)
            target = env.target("gone.whl", irreplaceable=True)
            assert await env.server.fill(target) == sha(data)
            assert env.store.has(sha(data)) and env.store.is_irreplaceable(sha(data))
            assert await env.server.fill(target) == sha(data)
            assert env.upstream.count("GET", "gone.whl") == 1
            env.upstream.files["broken.whl"] = Behaviour(data, mode="500")
            with pytest.raises(FillError) as failure:
                await env.server.fill(env.target("broken.whl", expected_sha256="0" * 64))
            assert failure.value.status == 502

    run(body)


def test_read_small_gives_a_stored_small_file_whole_with_the_headers_of_a_hit(tmp_path: Path) -> None:
    small, big = os.urandom(1000), os.urandom(SMALL_FILE + 1)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["s.whl"] = Behaviour(small)
            env.upstream.files["b.whl"] = Behaviour(big)
            assert await env.server.read_small(env.target("s.whl")) is None  # not stored yet
            hit = await env.fetch(env.target("s.whl"))
            await env.fetch(env.target("b.whl"))
            read = await env.server.read_small(env.target("s.whl"))
            assert read is not None
            data, headers = read
            assert data == small
            for name in ("ETag", "Cache-Control", "Content-Type", "Accept-Ranges"):
                assert headers[name] == hit.headers[name]
            assert await env.server.read_small(env.target("b.whl")) is None  # too big: stream it
            assert await env.server.read_small(env.target("s.whl", expected_sha256=None)) is None
            assert env.upstream.count("GET", "s.whl") == 1

    run(body)


def test_read_small_marks_an_irreplaceable_file(tmp_path: Path) -> None:
    data = os.urandom(1000)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["i.whl"] = Behaviour(data)
            await env.fetch(env.target("i.whl"))
            assert await env.server.read_small(env.target("i.whl", irreplaceable=True)) is not None
            assert env.store.is_irreplaceable(sha(data))

    run(body)


# -- faults ------------------------------------------------------------------------------------

FAULTS = {
    # mode: (status the client sees, or None for "200 then a cut body")
    "500": 502,
    "404": 404,  # an answer, passed on (pip and uv would retry a 502)
    "stall_headers": 504,
    "refused": 502,
    "stall_body": None,
    "cut": None,
    "wrong": None,
}


@pytest.mark.parametrize("mode", FAULTS)
def test_fault_fails_the_client_stores_nothing_and_a_retry_fills(tmp_path: Path, mode: str) -> None:
    data = os.urandom(2 * MIB)

    async def body() -> None:
        async with environment(tmp_path, timeout=0.5) as env:
            env.upstream.files["f.whl"] = Behaviour(data, mode="ok" if mode == "refused" else mode)
            url = f"http://user:secret@127.0.0.1:{closed_port()}/f.whl" if mode == "refused" else env.upstream.url("f.whl", "user:secret@")
            target = env.target("f.whl", url=url)
            result = await env.fetch(target)
            if FAULTS[mode] is None:
                assert result.status == 200 and isinstance(result.error, aiohttp.ClientPayloadError)
            else:
                assert result.status == FAULTS[mode]
                text = result.body.decode()
                assert text.count("\n") == 1 and "f.whl" in text and "127.0.0.1" in text
                assert "secret" not in text and "user" not in text
            await env.server.wait_idle()  # the failed fill deletes its temp file right after
            assert stored_nothing(env)
            assert env.server.counters["fill_failures"] == 1

            env.upstream.files["f.whl"].mode = "ok"
            retry = await env.fetch(env.target("f.whl"))
            assert (retry.status, retry.body, retry.error) == (200, data, None)
            assert env.store.has(sha(data))

    run(body)


SMALL_FAULTS = {"500": 502, "404": 404, "stall_headers": 504, "cut": 502, "wrong": 502, "short": 502}


@pytest.mark.parametrize("mode", SMALL_FAULTS)
def test_a_cold_small_file_is_answered_once_verified_and_faults_store_nothing(
    tmp_path: Path, mode: str
) -> None:
    data = os.urandom(SMALL_FILE // 2)

    async def body() -> None:
        async with environment(tmp_path, timeout=0.5) as env:
            env.upstream.files["s.whl"] = Behaviour(data, mode="ok" if mode == "short" else mode, chunk=4096)
            # "short": the index promises one byte more than upstream sends.
            target = env.target("s.whl", size=len(data) + 1) if mode == "short" else env.target("s.whl")
            with pytest.raises(FillError) as failed:
                await env.server.small(target)
            assert failed.value.status == SMALL_FAULTS[mode]
            await env.server.wait_idle()
            assert stored_nothing(env)

            env.upstream.files["s.whl"].mode = "ok"
            gate = asyncio.Event()
            env.upstream.files["s.whl"].gate = gate
            # Two proxy-side callers and a ticket client share one download.
            answers = [asyncio.create_task(env.server.small(env.target("s.whl"))) for _ in range(2)]
            streamed = asyncio.create_task(env.fetch(env.target("s.whl")))
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in answers)  # nothing before the whole file is in
            gate.set()
            for answer in answers:
                got = await answer
                assert got is not None and got[0] == data
                assert got[1]["ETag"] == etag_for(sha(data))
            result = await streamed
            assert (result.status, result.body, result.error) == (200, data, None)
            await env.server.wait_idle()
            assert env.store.has(sha(data))
            assert env.upstream.count("GET", "s.whl") == 2  # the failed one and this one
            assert env.server.counters["fills"] == 1

    run(body)


def test_client_never_gets_a_wrong_body_presented_as_complete(tmp_path: Path) -> None:
    data = os.urandom(MIB)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["w.whl"] = Behaviour(data, mode="wrong")
            async with env.client.get(env.url(env.target("w.whl"))) as response:
                assert response.content_length == len(data)
                received = 0
                with pytest.raises(aiohttp.ClientPayloadError):
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        received += len(chunk)
                assert received < len(data)  # the end was held back
            await env.server.wait_idle()  # the failed fill deletes its temp file right after
            assert stored_nothing(env)

    run(body)


def test_a_waiting_client_gets_all_that_arrived_but_the_held_back_end(tmp_path: Path) -> None:
    """With the length known, a client is never more than the held-back end behind the
    download: upstream paused half-way, the client has all of the first half already."""
    data = os.urandom(4 * MIB)

    async def body() -> None:
        async with environment(tmp_path) as env:
            gate = asyncio.Event()
            env.upstream.files["h.whl"] = Behaviour(data, gate=gate)
            async with env.client.get(env.url(env.target("h.whl"))) as response:
                half = await asyncio.wait_for(response.content.readexactly(2 * MIB), 10)
                assert half == data[: 2 * MIB]
                gate.set()
                assert half + await response.read() == data

    run(body)


def test_a_client_that_leaves_does_not_stop_the_fill(tmp_path: Path) -> None:
    data = os.urandom(4 * MIB)

    async def body() -> None:
        async with environment(tmp_path) as env:
            gate = asyncio.Event()
            env.upstream.files["l.whl"] = Behaviour(data, gate=gate)
            async with env.client.get(env.url(env.target("l.whl"))) as response:
                await response.content.readexactly(1000)
                response.close()  # pip interrupted
            gate.set()
            await env.server.wait_idle()
            assert env.store.has(sha(data))
            assert (await env.fetch(env.target("l.whl"))).body == data
            assert env.upstream.count("GET", "l.whl") == 1

    run(body)


# -- one download per file ---------------------------------------------------------------------


async def start_readers(env: Env, target: FileTarget, n: int) -> tuple[list[asyncio.Task[bytes]], list[asyncio.Event]]:
    """n concurrent GETs; each event is set once its client has received its first bytes."""
    first_bytes = [asyncio.Event() for _ in range(n)]

    async def reader(i: int) -> bytes:
        async with env.client.get(env.url(target)) as response:
            assert response.status == 200
            parts = []
            async for chunk in response.content.iter_chunked(64 * 1024):
                parts.append(chunk)
                first_bytes[i].set()
            return b"".join(parts)

    return [asyncio.create_task(reader(i)) for i in range(n)], first_bytes


def test_concurrent_cold_requests_make_one_upstream_get_and_all_stream(tmp_path: Path) -> None:
    data = os.urandom(4 * MIB)

    async def body() -> None:
        async with environment(tmp_path) as env:
            gate = asyncio.Event()
            env.upstream.files["big.whl"] = Behaviour(data, gate=gate)
            tasks, first_bytes = await start_readers(env, env.target("big.whl"), 10)
            # Upstream has sent half and waits: every client must already be receiving bytes
            # (nobody waits for the whole file; pip gives up after 15 s of silence).
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first_bytes)), 10)
            assert not any(t.done() for t in tasks)
            gate.set()
            bodies = await asyncio.gather(*tasks)
            assert all(sha(b) == sha(data) for b in bodies)
            assert env.upstream.count("GET", "big.whl") == 1
            assert env.server.counters["fills"] == 1

    run(body)


def _record_sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(asked, sent) of every sendfile(2) a download's client gets without waiting."""
    calls: list[tuple[int, int]] = []
    send_now = fileserver._send_now

    def recorded(sock_fd: int, file_fd: int, offset: int, count: int) -> int:
        sent = send_now(sock_fd, file_fd, offset, count)
        calls.append((count, sent))
        return sent

    monkeypatch.setattr(fileserver, "_send_now", recorded)
    return calls


def test_a_cold_download_goes_to_its_client_as_the_socket_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What has arrived is sent at once, not by asyncio's sendfile (two turns of the loop at
    least); the counters see it as any other byte served."""
    data = os.urandom(3 * MIB + 5)
    calls = _record_sends(monkeypatch)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["a.whl"] = Behaviour(data)
            result = await env.fetch(env.target("a.whl"))
            assert (result.status, result.body) == (200, data)
            assert calls and sum(sent for _, sent in calls) > 0
            assert env.server.counters["bytes_served"] == len(data)

    run(body)


def test_a_slow_reader_gets_the_rest_once_its_socket_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that does not read fills its socket: the send made at once takes only part
    (or nothing), and the rest follows as the client reads, every byte in order."""
    data = os.urandom(24 * MIB + 7)
    calls = _record_sends(monkeypatch)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["slow.whl"] = Behaviour(data)
            url = env.url(env.target("slow.whl"))
            path = url.split(str(env.server.port), 1)[1]
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.connect(("127.0.0.1", env.server.port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            await asyncio.sleep(0.5)  # reads nothing meanwhile
            raw = await reader.read()
            writer.close()
            head, _, got = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and sha(got) == sha(data)
            assert any(sent < count for count, sent in calls)
            await env.server.wait_idle()
            assert env.server.counters["bytes_served"] == len(data)

    run(body)


def test_concurrent_requests_all_cut_when_the_fill_fails(tmp_path: Path) -> None:
    data = os.urandom(2 * MIB)

    async def body() -> None:
        async with environment(tmp_path) as env:
            gate = asyncio.Event()
            env.upstream.files["bad.whl"] = Behaviour(data, mode="wrong", gate=gate)
            tasks, first_bytes = await start_readers(env, env.target("bad.whl"), 8)
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first_bytes)), 10)
            gate.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, aiohttp.ClientPayloadError) for r in results), results
            assert env.upstream.count("GET", "bad.whl") == 1
            await env.server.wait_idle()  # the failed fill deletes its temp file right after
            assert stored_nothing(env)

    run(body)


# -- ranges, conditionals, HEAD on a hit -------------------------------------------------------


async def stored(env: Env, name: str, data: bytes) -> FileTarget:
    env.upstream.files[name] = Behaviour(data)
    target = env.target(name)
    assert await env.server.fill(target) == sha(data)
    env.upstream.requests.clear()
    return target


SIZE = 100_000


@pytest.mark.parametrize(
    ("header", "status", "content_range", "part"),
    [
        ("bytes=0-99", 206, "bytes 0-99/100000", slice(0, 100)),
        ("bytes=1000-", 206, "bytes 1000-99999/100000", slice(1000, None)),
        ("bytes=-10000", 206, "bytes 90000-99999/100000", slice(90000, None)),
        ("bytes=-100000", 206, "bytes 0-99999/100000", slice(None)),
        ("bytes=-250000", 206, "bytes 0-99999/100000", slice(None)),
        ("bytes=99990-200000", 206, "bytes 99990-99999/100000", slice(99990, None)),
        ("bytes=100000-", 416, "bytes */100000", slice(0, 0)),
        ("bytes=-0", 416, "bytes */100000", slice(0, 0)),
        ("bytes=0-1,3-4", 200, None, slice(None)),
        ("bytes=9-1", 200, None, slice(None)),
    ],
)
def test_ranges_on_a_hit(tmp_path: Path, header: str, status: int, content_range: str | None, part: slice) -> None:
    data = os.urandom(SIZE)

    async def body() -> None:
        async with environment(tmp_path) as env:
            target = await stored(env, "r.whl", data)
            result = await env.fetch(target, Range=header)
            assert result.status == status
            assert result.headers.get("Content-Range") == content_range
            assert result.body == data[part]
            assert result.headers["Content-Length"] == str(len(data[part]))
            if status != 416:
                assert result.headers["Accept-Ranges"] == "bytes"
                assert result.headers["ETag"] == etag_for(sha(data))
            assert env.upstream.requests == []

    run(body)


def test_if_range_etag_and_head_on_a_hit(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    etag = etag_for(sha(data))

    async def body() -> None:
        async with environment(tmp_path) as env:
            target = await stored(env, "c.whl", data)
            # pip resume: Range + If-Range with our ETag -> the rest; a stale validator -> all
            resumed = await env.fetch(target, Range="bytes=40000-", **{"If-Range": etag})
            assert (resumed.status, resumed.body) == (206, data[40000:])
            stale = await env.fetch(target, Range="bytes=40000-", **{"If-Range": '"sha256-00"'})
            assert (stale.status, stale.body) == (200, data)
            dated = await env.fetch(target, Range="bytes=40000-", **{"If-Range": "Sat, 18 Nov 2023 00:00:00 GMT"})
            assert (dated.status, dated.body) == (200, data)

            for validator in (etag, f"W/{etag}", f'"other", {etag}', "*"):
                not_modified = await env.fetch(target, **{"If-None-Match": validator})
                assert (not_modified.status, not_modified.body) == (304, b"")
                assert not_modified.headers["ETag"] == etag
                assert not_modified.headers["Cache-Control"] == CACHE_CONTROL
            modified = await env.fetch(target, **{"If-None-Match": '"sha256-00"'})
            assert (modified.status, modified.body) == (200, data)

            head = await env.fetch(target, "HEAD", **{"Accept-Encoding": "identity"})
            assert (head.status, head.body) == (200, b"")
            assert head.headers["Content-Length"] == str(SIZE)
            assert head.headers["Accept-Ranges"] == "bytes"
            assert head.headers["ETag"] == etag
            assert env.upstream.requests == []

    run(body)


def test_a_small_file_held_in_the_index_is_served_as_any_hit(tmp_path: Path) -> None:
    data = os.urandom(INLINE_LIMIT - 1)
    etag = etag_for(sha(data))

    async def body() -> None:
        async with environment(tmp_path) as env:
            target = await stored(env, "tiny.whl", data)
            handle = env.store.open(sha(data))
            assert handle is not None and handle.inline and handle.path is None
            handle.close()
            whole = await env.fetch(target)
            assert (whole.status, whole.body, whole.headers["ETag"]) == (200, data, etag)
            part = await env.fetch(target, Range="bytes=100-199")
            assert (part.status, part.body) == (206, data[100:200])
            assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
            end = await env.fetch(target, Range="bytes=-10")
            assert (end.status, end.body) == (206, data[-10:])
            not_modified = await env.fetch(target, **{"If-None-Match": etag})
            assert (not_modified.status, not_modified.body) == (304, b"")
            head = await env.fetch(target, "HEAD", **{"Accept-Encoding": "identity"})
            assert (head.status, head.body, head.headers["Content-Length"]) == (200, b"", str(len(data)))
            read = await env.server.read_small(target)
            assert read is not None and read[0] == data
            assert env.upstream.requests == []

    run(body)


# -- HEAD and ranges on a miss -----------------------------------------------------------------


def test_head_and_ranges_on_a_miss_store_nothing(tmp_path: Path) -> None:
    data = os.urandom(SIZE)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["m.whl"] = Behaviour(data)
            # uv: HEAD, then explicit ranges of the tail
            head = await env.fetch(env.target("m.whl"), "HEAD")
            assert (head.status, head.headers["Content-Length"], head.headers["Accept-Ranges"]) == (200, str(SIZE), "bytes")
            assert env.upstream.requests == []  # the index gave the size
            tail = await env.fetch(env.target("m.whl"), Range=f"bytes={SIZE - 16384}-{SIZE - 1}")
            assert (tail.status, tail.body) == (206, data[-16384:])
            assert tail.headers["Content-Range"] == f"bytes {SIZE - 16384}-{SIZE - 1}/{SIZE}"
            # Poetry: a suffix range, sent upstream as an explicit one
            poetry = await env.fetch(env.target("m.whl"), Range="bytes=-10000")
            assert (poetry.status, poetry.body) == (206, data[-10000:])
            assert env.upstream.requests[-1][2]["Range"] == f"bytes={SIZE - 10000}-{SIZE - 1}"
            unsatisfiable = await env.fetch(env.target("m.whl"), Range=f"bytes={SIZE}-")
            assert (unsatisfiable.status, unsatisfiable.headers["Content-Range"]) == (416, f"bytes */{SIZE}")
            # size unknown to the index: one upstream HEAD
            head = await env.fetch(env.target("m.whl", size=None), "HEAD")
            assert (head.status, head.headers["Content-Length"]) == (200, str(SIZE))
            assert env.upstream.count("HEAD", "m.whl") == 1
            # an upstream that ignores ranges: still a correct 206
            env.upstream.files["m.whl"].ranges = False
            middle = await env.fetch(env.target("m.whl"), Range="bytes=70000-70999")
            assert (middle.status, middle.body) == (206, data[70000:71000])
            assert stored_nothing(env)
            assert env.upstream.count("GET", "m.whl") == 3  # the 416 was answered here

    run(body)


@pytest.mark.parametrize("size", [SIZE, SMALL_FILE + 1])  # read whole; streamed
@pytest.mark.parametrize("header", ["bytes=0-", "bytes=-{over}", "bytes=0-{last}", "bytes=0-{over}"])
@pytest.mark.parametrize("index_size", [True, False])
def test_a_range_covering_the_whole_cold_file_is_a_206_of_the_verified_file(
    tmp_path: Path, size: int, header: str, index_size: bool
) -> None:
    """uv reads the end of a wheel without a `.metadata` file by a range; for a wheel smaller
    than that read, the range is the whole file.  Answered 200, uv takes the index for one
    without ranges and downloads every later such wheel whole."""
    data = os.urandom(size)
    asked = header.format(last=size - 1, over=size + 5000)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["w.whl"] = Behaviour(data)
            target = env.target("w.whl") if index_size else env.target("w.whl", size=None)
            result = await env.fetch(target, Range=asked)
            assert (result.status, result.error) == (206, None), asked
            assert result.headers["Content-Range"] == f"bytes 0-{size - 1}/{size}"
            assert result.headers["Content-Length"] == str(size)
            assert result.body == data
            # one whole download from upstream, verified and kept
            assert [r[2].get("Range") for r in env.upstream.requests if r[0] == "GET"] == [None]
            assert env.store.stats().count == 1

    run(body)


def test_conditional_requests_on_a_miss(tmp_path: Path) -> None:
    data = os.urandom(SIZE)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["n.whl"] = Behaviour(data)
            etag = etag_for(sha(data))
            cached = await env.fetch(env.target("n.whl"), **{"If-None-Match": etag})
            assert (cached.status, cached.headers["ETag"]) == (304, etag)
            assert env.upstream.requests == []
            stale = await env.fetch(env.target("n.whl"), Range="bytes=10-", **{"If-Range": '"sha256-00"'})
            assert (stale.status, stale.body) == (200, data)  # a full fill
            assert env.store.has(sha(data))

    run(body)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_of_the_clients_credentials_is_reported_and_passed_on(
    tmp_path: Path, status: int
) -> None:
    """Upstream refusing a file to the client's own credentials (a passthrough registry), to
    a GET, a HEAD or a range: the target's `on_refused` hears of it (its access ends), and the
    client gets the refusal, a 401 with a challenge to give credentials.  Refused to datepin's
    own credentials (no `on_refused`), it is datepin's setup: 502."""
    data = os.urandom(SIZE)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["r.whl"] = Behaviour(data, mode=str(status))
            refusals: list[str] = []

            def target(**kwargs: Any) -> FileTarget:
                return env.target("r.whl", on_refused=lambda: refusals.append("r.whl"), **kwargs)

            answers = [
                await env.fetch(target()),
                await env.fetch(target(size=None), "HEAD"),
                await env.fetch(target(), Range="bytes=0-9"),
            ]
            assert [a.status for a in answers] == [status] * 3
            challenges = {a.headers.get("WWW-Authenticate") for a in answers}
            assert challenges == ({'Basic realm="datepin"'} if status == 401 else {None})
            assert refusals == ["r.whl"] * 3
            with pytest.raises(FillError) as e:
                await env.server.small(target(metadata=True))
            assert e.value.status == status and len(refusals) == 4
            own = await env.fetch(env.target("r.whl"))
            assert own.status == 502 and "WWW-Authenticate" not in own.headers
            assert stored_nothing(env)

    run(body)


@pytest.mark.parametrize("status", [404, 410])
def test_a_file_upstream_no_longer_has_is_passed_on_to_head_and_ranges(
    tmp_path: Path, status: int
) -> None:
    """A HEAD (size unknown: upstream is asked) and a range of a file upstream answers 404
    or 410 for get that answer, as a GET does: pip and uv would retry a 502."""
    data = os.urandom(SIZE)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["g.whl"] = Behaviour(data, mode=str(status))
            head = await env.fetch(env.target("g.whl", size=None), "HEAD")
            ranged = await env.fetch(env.target("g.whl"), Range="bytes=0-9")
            assert (head.status, ranged.status) == (status, status)
            assert stored_nothing(env)

    run(body)


# -- protection --------------------------------------------------------------------------------


def test_only_valid_tickets_are_served(tmp_path: Path) -> None:
    data = os.urandom(1000)
    now = [0.0]

    async def body() -> None:
        async with environment(tmp_path, ticket_ttl=10.0, max_tickets=3, clock=lambda: now[0]) as env:
            target = await stored(env, "p.whl", data)
            base = f"http://127.0.0.1:{env.server.port}"
            for path, status in [("/", 404), ("/etc/passwd", 404), (f"/t/{'A' * 22}", 403), ("/t/../store", 404)]:
                async with env.client.get(base + path) as response:
                    assert response.status == status, path
            path = env.server.ticket(target)
            async with env.client.get(base + path) as response:
                assert (response.status, await response.read()) == (200, data)
            async with env.client.get(base + path) as response:
                assert response.status == 403  # single use
            async with env.client.post(base + env.server.ticket(target)) as response:
                assert response.status == 405
            expired = env.server.ticket(target)
            now[0] = 11.0
            async with env.client.get(base + expired) as response:
                assert response.status == 403
            paths = [env.server.ticket(target) for _ in range(5)]  # at most 3 live tickets
            statuses = []
            for path in paths:
                async with env.client.get(base + path) as response:
                    statuses.append(response.status)
            assert statuses == [403, 403, 200, 200, 200]
            assert env.upstream.requests == []

    run(body)


def test_proxy_requests_are_not_forwarded(tmp_path: Path) -> None:
    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["secret"] = Behaviour(b"private")
            reader, writer = await asyncio.open_connection("127.0.0.1", env.server.port)
            writer.write(f"GET {env.upstream.url('secret')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status = await reader.readline()
            writer.close()
            assert status.split()[1] in (b"403", b"404")
            assert env.upstream.requests == []

    run(body)


# -- eviction ----------------------------------------------------------------------------------


def test_eviction_after_commits_spares_blobs_being_served(tmp_path: Path) -> None:
    old, a, b = os.urandom(32 * MIB), os.urandom(MIB), os.urandom(MIB)

    async def body() -> None:
        async with environment(tmp_path, size_limit=33 * MIB + MIB // 2) as env:
            target = await stored(env, "old.whl", old)
            env.upstream.files["a.whl"] = Behaviour(a)
            env.upstream.files["b.whl"] = Behaviour(b)
            async with env.client.get(env.url(target)) as slow:
                first = await slow.content.readexactly(MIB)  # the server is now mid-sendfile
                await env.server.fill(env.target("a.whl"))
                await env.server.fill(env.target("b.whl"))  # over the limit: old is the LRU one...
                # ...but it is being served, so the next one goes
                assert [env.store.has(sha(d)) for d in (old, a, b)] == [True, False, True]
                other = BlobStore(env.store.directory, size_limit=MIB)  # another process
                assert other.evict_to_limit() == [sha(old)]  # knows nothing of our reader
                rest = await slow.read()
            assert first + rest == old
            assert env.store.stats().count == 1

    run(body)


def test_lru_eviction_through_the_server(tmp_path: Path) -> None:
    blobs = [os.urandom(MIB) for _ in range(3)]

    async def body() -> None:
        async with environment(tmp_path, size_limit=MIB + MIB // 2) as env:
            targets = []
            for i, data in enumerate(blobs):
                env.upstream.files[f"{i}.whl"] = Behaviour(data)
                targets.append(env.target(f"{i}.whl", irreplaceable=i == 0))
                assert (await env.fetch(targets[-1])).body == data
                await asyncio.sleep(0.01)  # distinct recency
            # 0 is irreplaceable, 1 was the least recently used replaceable blob
            assert [env.store.has(sha(d)) for d in blobs] == [True, False, True]

    run(body)


# -- memory ------------------------------------------------------------------------------------


def rss_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise LookupError(field_name)


@pytest.mark.slow
def test_large_file_fill_and_hit_keep_memory_flat(tmp_path: Path) -> None:
    size = 768 * MIB
    source = tmp_path / "big.whl"
    with open(source, "wb") as f:  # sparse, with some real data scattered through it
        f.truncate(size)
        for offset in range(0, size, 64 * MIB):
            f.seek(offset)
            f.write(os.urandom(MIB))
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        while block := f.read(4 * MIB):
            digest.update(block)

    async def download(env: Env, target: FileTarget) -> str:
        h = hashlib.sha256()
        async with env.client.get(env.url(target)) as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(MIB):
                h.update(chunk)
        await env.server.wait_idle()
        return h.hexdigest()

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["big.whl"] = Behaviour(source)
            target = env.target("big.whl", expected_sha256=digest.hexdigest(), size=size)
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
            before = rss_kib("VmRSS")
            assert await download(env, target) == digest.hexdigest()  # fill
            assert await download(env, target) == digest.hexdigest()  # hit
            growth = rss_kib("VmHWM") - before
            assert env.server.counters["hits"] == 1
            assert growth < 64 * 1024, f"peak RSS grew by {growth} KiB"

    run(body, timeout=120)


def test_a_private_target_is_answered_as_no_shared_cache_may_keep(tmp_path: Path) -> None:
    big, small = os.urandom(SMALL_FILE + 1), os.urandom(1000)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["b.whl"] = Behaviour(big)
            env.upstream.files["s.whl"] = Behaviour(small)
            private = "private, max-age=31536000, immutable"
            for name in ("b.whl", "s.whl"):
                target = env.target(name, private=True)
                answers = [
                    await env.fetch(target, "HEAD"),  # a miss: from the index's size
                    await env.fetch(target, Range="bytes=0-9"),  # a miss: relayed
                    await env.fetch(target),  # the fill
                    await env.fetch(target),  # a hit
                    await env.fetch(target, Range="bytes=0-9"),
                    await env.fetch(target, **{"If-None-Match": etag_for(sha(env.upstream.files[name].body))}),
                ]
                assert [a.status for a in answers] == [200, 206, 200, 200, 206, 304]
                assert {a.headers["Cache-Control"] for a in answers} == {private}
                assert (await env.fetch(env.target(name))).headers["Cache-Control"].startswith("public")
            small_answer = await env.server.read_small(env.target("s.whl", private=True))
            assert small_answer is not None and small_answer[1]["Cache-Control"] == private

    run(body)


# -- wrong bytes are never complete: whole-file ranges, resumes, recoded bodies ------------------


def test_a_range_covering_the_whole_cold_file_never_gives_wrong_bytes_as_complete(tmp_path: Path) -> None:
    """`Range: bytes=0-` on a miss selects the whole file: it must not reach the client as a
    complete 206 when upstream's bytes fail the hash."""
    data = os.urandom(SIZE)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["z.whl"] = Behaviour(data, mode="wrong")
            result = await env.fetch(env.target("z.whl"), Range="bytes=0-")
            complete = result.error is None and len(result.body) == SIZE and result.status in (200, 206)
            assert not complete, (result.status, result.headers.get("Content-Range"))

    run(body)


def test_a_resumed_download_never_assembles_a_wrong_file(tmp_path: Path) -> None:
    """pip >= 25.1 resumes a cut download with Range: bytes=N- and If-Range: <ETag>.  The held
    back end of a download that failed its hash must not be handed out by the resume."""
    data = os.urandom(2 * MIB)
    etag = etag_for(sha(data))

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["res.whl"] = Behaviour(data, mode="wrong_tail")
            first = await env.fetch(env.target("res.whl"))
            assert first.error is not None  # cut: the hash failed
            got = b""
            async with env.client.get(env.url(env.target("res.whl"))) as response:
                with contextlib.suppress(aiohttp.ClientPayloadError):
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        got += chunk
            await env.server.wait_idle()
            assert 0 < len(got) < len(data)
            rest = await env.fetch(env.target("res.whl"), Range=f"bytes={len(got)}-", **{"If-Range": etag})
            assembled = got + rest.body
            complete = rest.error is None and rest.status == 206 and len(assembled) == len(data)
            assert not complete, ("assembled a complete file", sha(assembled) == sha(data))

    run(body)


def test_gzip_content_encoding_on_a_wheel_is_an_error_and_stores_nothing(tmp_path: Path) -> None:
    """An upstream that gzips a wheel despite Accept-Encoding: identity.  With no hash or
    size in the index (registries whose pages carry none) nothing else catches it."""
    data = os.urandom(SIZE)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["g.whl"] = Behaviour(data, mode="gzip")
            result = await env.fetch(env.target("g.whl", expected_sha256=None, size=None))
            await env.server.wait_idle()
            assert result.status == 502 or result.error is not None, result.status
            assert stored_nothing(env), "the gzip body was stored as the wheel"

    run(body)


def test_gzip_content_encoding_on_a_range_is_an_error(tmp_path: Path) -> None:
    data = os.urandom(SIZE)

    async def body() -> None:
        async with environment(tmp_path) as env:
            env.upstream.files["gr.whl"] = Behaviour(data, mode="gzip", ranges=False)
            result = await env.fetch(env.target("gr.whl"), Range="bytes=-1000")
            wrong = result.status == 206 and result.error is None and result.body != data[-1000:]
            assert not wrong, "wrong bytes in a complete 206"

    run(body)
