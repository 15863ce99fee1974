"""The internal file server behind `/files/...` (DESIGN.md, "Blobs").

mitmproxy holds a whole body in memory when an addon answers a request itself, so in forward
mode the addon points a file request at this aiohttp server on 127.0.0.1 instead and mitmproxy
streams its answer; path-mode requests, which datepin's own HTTP server answers (`front`), are
answered by `answer_ticket` on the client's own connection.  The server answers only tickets
the addon issued for one `FileTarget`: it is neither a file server for arbitrary paths nor an
open proxy.

- Store hit: the blob, with GET/HEAD, single byte ranges, If-Range, ETag/304, sent with
  sendfile(2) from an open file (an eviction meanwhile does not cut it).
- Miss, GET: one upstream download per file (`_Download`), written to a temp file of the store
  while hashing.  Every client, the first included, tails that temp file, so a client that goes
  away does not stop the fill and a late client does not wait for the end (sent by sendfile(2)
  when the length is known).  Clients may read only what is `visible`: the bytes written but the
  last 16 KiB of a file of known length (else the last write), released once the sha256 checks
  out (the commit, an fsync and a rename, follows in a pool of its own; `wait_idle` waits for
  it).  A download that fails deletes its temp file, then cuts every client's connection, so
  nobody sees a short or wrong body presented as complete.
- Miss of a small file (a `.metadata` file, or at most SMALL_FILE by the index): the download
  reads it whole into memory and verifies it; the addon then answers a plain GET itself
  (`small`: in forward mode one HTTP exchange through mitmproxy instead of two), any client
  here gets it whole, and one thread call stores it afterwards.
- Miss, HEAD or Range: answered without storing anything.  HEAD from the index's size (or an
  upstream HEAD); a range is fetched from upstream as an explicit `bytes=a-b` (suffix ranges are
  resolved here: files.pythonhosted.org has answered them with 501).  A range never starts a
  whole-file download: uv and Poetry read a few KiB of many wheels they will not install.  A
  range that covers the whole file is the file: a shared download, verified, answered 206.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import re
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from datepin.auth import CHALLENGE
from datepin.blobs import BlobHandle, BlobStore, Fill, HashMismatch, check_sha256
from datepin.memory import give_back
from datepin.model import DistFile
from datepin.upstream import BULK_DOWNLOADS, HoldOff, Via, describe, request_options, status_error

log = logging.getLogger(__name__)

CACHE_CONTROL = "public, max-age=31536000, immutable"
_CONTENT_TYPE = "application/octet-stream"
_CHUNK = 1 << 20
# The end of a file of known length that no client gets until the whole file's hash is right.
_HOLD_BACK = 16 * 1024
# aiohttp's buffer for a download (it reads ahead up to twice this): bigger than its 64 KiB
# default so that a fast upstream fills whole writes, small enough for 64 fills at once.
_READ_BUFFER = 256 * 1024
# A download's batches up to this size are hashed and written on the event loop (about 0.2 ms):
# a thread hop cost more on a busy proxy (bench/run, uv cold installs: 1.01 -> 0.98 s, datepin
# CPU 0.63 -> 0.59 s).  Bigger ones go to a thread, hashed beside the loop (a lone 1 GiB fill
# was slower with all of them on the loop).
_LOOP_WRITE = 256 * 1024
# Store hits up to this size may be read whole and answered by the proxy itself (`read_small`).
SMALL_FILE = 256 * 1024
_TICKET = re.compile(r"/t/([A-Za-z0-9_-]{22})")
_T = TypeVar("_T")


@dataclass(frozen=True)
class FileTarget:
    """One file a client may fetch through a ticket, as the index describes it."""

    upstream_url: str  # where the bytes come from when not stored
    expected_sha256: str | None  # from the index; None when the index gives none
    filename: str  # for logging
    size: int | None = None  # from the index, if known
    metadata: bool = False  # a PEP 658 `.metadata` file: a few KB by nature
    # e.g. Authorization for a private registry; kept out of repr so that it is never logged
    upstream_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    irreplaceable: bool = False  # mark the blob irreplaceable when committed
    on_commit: Callable[[str, int], None] | None = field(default=None, repr=False)
    private: bool = False  # a passthrough registry's file: no shared cache may keep it
    # Set when `upstream_headers` carry the client's own credentials (passthrough): called
    # when upstream refuses them (401/403), so that they lose the access they were granted;
    # the client is then told so (401/403) rather than sent a 502.
    on_refused: Callable[[], None] | None = field(default=None, repr=False)
    # (algorithm, hex digest): the index's hash when it gives no sha256 (md5 from pypiserver,
    # older Nexus), checked as the sha256 would be, so that wrong bytes are not stored.
    index_hash: tuple[str, str] | None = None
    via: Via | None = None  # the egress proxy upstream is reached through; None: direct

    @property
    def known_small(self) -> bool:
        """Small enough to be fetched whole before it is answered (see FileServer.small)."""
        return self.metadata or (self.size is not None and self.size <= SMALL_FILE)


def file_target(
    file: DistFile,
    *,
    sha256: str | None = None,
    metadata: bool = False,
    irreplaceable: bool = False,
    on_commit: Callable[[str, int], None] | None = None,
    upstream_headers: Mapping[str, str] | None = None,
    private: bool = False,
    on_refused: Callable[[], None] | None = None,
    via: Via | None = None,
) -> FileTarget:
    """What the file server needs to serve or fetch a file (or its PEP 658 `.metadata`).
    `upstream_headers`: credentials for a private registry (never logged); `private`: a
    passthrough registry's file, answered as no shared cache may keep; `on_refused`: called
    when upstream refuses the client's own credentials (passthrough) for the file; `via`:
    the egress proxy upstream is reached through."""
    if metadata:
        return FileTarget(
            upstream_url=file.url + ".metadata",
            expected_sha256=(file.core_metadata or {}).get("sha256"),
            filename=file.filename + ".metadata",
            metadata=True,
            upstream_headers=dict(upstream_headers or {}),
            irreplaceable=irreplaceable,
            private=private,
            on_refused=on_refused,
            via=via,
        )
    return FileTarget(
        upstream_url=file.url,
        expected_sha256=sha256 or file.sha256,
        filename=file.filename,
        size=file.size,
        index_hash=index_hash(file),
        upstream_headers=dict(upstream_headers or {}),
        irreplaceable=irreplaceable,
        on_commit=on_commit,
        private=private,
        on_refused=on_refused,
        via=via,
    )


def index_hash(file: DistFile) -> tuple[str, str] | None:
    """The hash to check a file by when its index gives no sha256: the strongest other one
    that hashlib has everywhere (PEP 503 lets an index name any of them)."""
    if file.sha256 is not None:
        return None
    for algo in ("sha512", "sha384", "sha224", "sha1", "md5"):
        if algo in file.hashes:
            return algo, file.hashes[algo]
    return None


class FillError(Exception):
    """Upstream could not supply a file; `status` is the HTTP answer for a waiting client."""

    def __init__(self, status: int, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after  # seconds, sent as Retry-After: upstream throttles


class RangeNotSatisfiable(ValueError):
    """A Range header that selects no byte of the file (answer 416)."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """The Content-Range of these bytes of a file of `size` bytes."""
        return f"bytes {self.start}-{self.end}/{size}"


_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)


def parse_range(header: str, size: int) -> ByteRange | None:
    """The single byte range `header` selects from a file of `size` bytes (RFC 9110 14.1.2).

    None means serve the whole file as 200: the header is malformed, not in bytes, or asks for
    several ranges (allowed: a server may ignore Range).  A suffix `-n` with n >= size is the
    whole file as a range.  Raises RangeNotSatisfiable when no byte is selected.
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid, so ignored (RFC 9110 14.2)
    if start >= size:
        raise RangeNotSatisfiable(header)
    return ByteRange(start, min(int(last), size - 1) if last else size - 1)


def etag_for(sha256: str) -> str:
    """The strong ETag of a blob: its content hash, so it is the same in every process."""
    return f'"sha256-{sha256}"'


def etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """Whether an If-None-Match (weak) or If-Match (strong) list names `etag` (RFC 9110 8.8.3)."""
    if header.strip() == "*":
        return True
    for tag in re.findall(r'(?:W/)?"[^"]*"', header):
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def public_url(url: str) -> str:
    """`url` without user, password, query or fragment: fit for logs and error messages."""
    try:
        return str(URL(url).with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<unparsable URL>"


def _check_identity(upstream: aiohttp.ClientResponse) -> None:
    """Refuse a body upstream recoded (gzip...) despite Accept-Encoding: identity: its bytes
    are not the file, and with no hash in the index nothing else would tell."""
    coding = upstream.headers.get("Content-Encoding", "").strip().lower()
    if coding not in ("", "identity"):
        shown = re.sub(r"[^a-z0-9._-]", "?", coding[:40])
        raise FillError(502, f"upstream sent the file recoded (Content-Encoding {shown})")


def _not_ok(
    target: FileTarget, upstream: aiohttp.ClientResponse, holdoff: HoldOff, what: str = ""
) -> FillError:
    """Upstream answered `target`'s request (`what`: which one) other than with the file.
    Its 404 and 410 are answers, passed on as such: a 502 makes pip and uv retry (pip five
    times, about 8 s) a file that is not there, asking upstream each time.  A 401/403 to
    the client's own credentials (`on_refused`) ends their access and is passed on; to
    datepin's own, or to none, its setup is wrong: 502.  Throttling (429, 503) is passed on
    with its Retry-After, as for pages, and holds the origin off (`holdoff`)."""
    status = upstream.status
    if status == 407 and target.via is not None:
        return FillError(502, target.via.refused())
    holdoff.note(target.upstream_url, status, upstream.headers)
    if status in (401, 403) and target.on_refused is not None:
        target.on_refused()
        return FillError(status, f"the registry refused these credentials (HTTP {status}{what})")
    failed = status_error(target.upstream_url, status, upstream.headers)
    client_status = status if status in (404, 410) else failed.status
    reason = f"upstream answered HTTP {status}{what}"
    if failed.retry_after is not None:
        reason += f" (retry after {failed.retry_after} s)"
    return FillError(client_status, reason, retry_after=failed.retry_after)


def _checked_sha256(digest: str, expected: str | None) -> str:
    if expected is not None and digest != expected:
        raise FillError(502, f"sha256 mismatch: the index says {expected}, upstream sent {digest}")
    return digest


def _check_index_hash(target: FileTarget, digest: str | None) -> None:
    if target.index_hash is not None and digest != target.index_hash[1]:
        algo, expected = target.index_hash
        raise FillError(502, f"{algo} mismatch: the index says {expected}, upstream sent {digest}")


def _write_all(fill: Fill, parts: list[bytes]) -> None:
    for part in parts:
        fill.write(part)


async def _read_up_to(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body's first `limit` bytes (all of it, if shorter)."""
    parts: list[bytes] = []
    size = 0
    while size < limit and (part := await content.read(limit - size)):
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _plain_socket_fd(transport: asyncio.BaseTransport) -> int | None:
    """The file descriptor of the transport's socket, if bytes written to it go straight to
    the client: no TLS, and nothing the transport still holds to send first."""
    if not isinstance(transport, asyncio.WriteTransport) or transport.get_write_buffer_size():
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    return int(sock.fileno())


def _send_now(sock_fd: int, file_fd: int, offset: int, count: int) -> int:
    """sendfile(2) of what a non-blocking socket takes at once (0 when it is full)."""
    if not hasattr(os, "sendfile"):
        return 0
    try:
        return os.sendfile(sock_fd, file_fd, offset, count)
    except (BlockingIOError, InterruptedError):
        return 0


def _as_whole_range(response: web.StreamResponse, length: int, whole: int | None) -> None:
    """Make `response`, a file of `length` bytes, the 206 answer to a range that asked for all
    `whole` bytes of it; left a 200 if the file is not that size after all."""
    if whole is not None and length == whole:
        response.set_status(206)
        response.headers["Content-Range"] = ByteRange(0, length - 1).content_range(length)


def fill_error_headers(exc: FillError) -> dict[str, str]:
    """A 401 asks for credentials: pip and uv retry with their index URL's or keyring's.  A
    throttled upstream's Retry-After goes on."""
    headers = {"WWW-Authenticate": CHALLENGE} if exc.status == 401 else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return headers


def fill_error_text(target: FileTarget, exc: FillError) -> str:
    """What a client is told when a file cannot be fetched."""
    return f"datepin: cannot fetch {target.filename} from {public_url(target.upstream_url)}: {exc.reason}\n"


def _as_fill_error(exc: BaseException, timeout: float, via: Via | None = None) -> FillError:
    if isinstance(exc, FillError):
        return exc
    if via is not None and isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ClientHttpProxyError)):
        return FillError(502, describe(exc, via))  # the proxy could not be reached, or refused
    if isinstance(exc, TimeoutError):  # includes aiohttp's connect and read timeouts
        return FillError(504, f"no answer from upstream within {timeout:g} s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return FillError(502, f"cannot connect to upstream ({exc.os_error.strerror or exc.os_error})")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return FillError(502, "upstream cut the body short")
    if isinstance(exc, aiohttp.ClientError):
        return FillError(502, f"upstream connection failed ({type(exc).__name__})")
    if isinstance(exc, HashMismatch):
        return FillError(502, str(exc))
    if isinstance(exc, OSError):
        return FillError(502, f"cannot store the file ({exc.strerror or type(exc).__name__})")
    return FillError(502, type(exc).__name__)


class _Download:
    """One upstream download into the store, shared by every client that wants the file."""

    def __init__(self, target: FileTarget) -> None:
        self.target = target
        self.callbacks: list[Callable[[str, int], None]] = []
        self.irreplaceable = False
        self.fill: Fill | None = None
        self.fd: int | None = None  # the temp file, for readers (pread: no shared offset)
        self.length: int | None = None  # Content-Length for clients; None: unknown (chunked)
        self.visible = 0  # bytes clients may have before the hash is checked: never all of them
        self.sha256: str | None = None
        self.body: bytes | None = None  # the whole file, when it was small enough to be read whole
        self.verified = False  # the whole body is visible and its hash is right
        self.committed = False
        self.already_stored = False  # found in the store at the start: no download made
        self.error: FillError | None = None
        self.started = asyncio.Event()  # length known, or failed, or already stored
        self.done = asyncio.Event()  # committed or failed
        self.lease: BlobHandle | None = None  # keeps our own eviction off the fresh blob
        self.preparing: asyncio.Future[bool] | None = None  # the fill being begun (`_prepare`)
        self._changed = asyncio.Event()
        self._refs = 1  # the download task's own reference
        self.join(target)

    def join(self, target: FileTarget) -> None:
        if target.on_commit is not None and target.on_commit not in self.callbacks:
            self.callbacks.append(target.on_commit)
        self.irreplaceable |= target.irreplaceable

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_progress(self, pos: int) -> None:
        while self.visible <= pos and not self.verified and self.error is None:
            await self._changed.wait()

    def acquire(self) -> None:
        self._refs += 1

    def release(self) -> None:
        self._refs -= 1
        if self._refs == 0:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
            if self.lease is not None:
                self.lease.close()
                self.lease = None


class FileServer:
    """Serves blobs on 127.0.0.1 to ticket holders; fills misses from upstream."""

    def __init__(
        self,
        store: BlobStore,
        session: aiohttp.ClientSession,
        *,
        timeout: float = 30.0,
        deadline: float = 60.0,
        ticket_ttl: float = 60.0,
        max_tickets: int = 10_000,
        workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
        holdoff: HoldOff | None = None,
    ) -> None:
        self._store = store
        self._session = session
        # Shared with the pages' Upstream: a throttled origin is one, whatever is asked of it.
        self._holdoff = holdoff or HoldOff()
        # Whole-file downloads of files not known to be small (`_fetch`) take at most half of
        # the session's connections: HEAD, ranges, small files and pages have the rest.
        self._bulk = asyncio.Semaphore(BULK_DOWNLOADS)
        self._timeout = timeout
        self._deadline = deadline  # for `.metadata` files (`_fetch`), as for pages
        self._ticket_ttl = ticket_ttl
        self._max_tickets = max_tickets
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datepin-files")
        # Commits (fsync, rename, the blob index) and what follows them wait on the disk and
        # on the store's lock; in a pool of their own they never hold up the reads and
        # writes clients are waiting for (bench/run, cold installs).
        self._committer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="datepin-commit")
        self._tickets: OrderedDict[str, tuple[FileTarget, float]] = OrderedDict()
        self._downloads: dict[str, _Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._task_downloads: dict[asyncio.Task[None], _Download] = {}
        self._runner: web.AppRunner | None = None
        self._counters = dict.fromkeys(
            ("hits", "misses", "fills", "fill_failures", "passthrough", "bytes_served"), 0
        )
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        await self._call(self._store.evict_to_limit)  # the limit may have shrunk since last run

    async def stop(self, *, commit_grace: float = 10.0) -> None:
        # Downloads whose bytes are all here and verified are committing (fsync, rename):
        # their clients have the whole file already, so let them land rather than lose them.
        committing = [task for task, download in self._task_downloads.items() if download.verified]
        if committing:
            await asyncio.wait(committing, timeout=commit_grace)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._executor.shutdown(wait=False)
        self._committer.shutdown(wait=False)

    async def wait_idle(self) -> None:
        """Wait for the downloads in progress to commit or fail.

        A client receives its last bytes as soon as their hash checks out, a moment before the
        commit; tests (and shutdown) that need the store settled wait here.
        """
        # Not `while self._tasks: gather(...)`: gather of finished tasks completes without
        # yielding, so the done-callbacks that empty `_tasks` would never run.
        while pending := [task for task in self._tasks if not task.done()]:
            await asyncio.wait(pending)

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    @property
    def in_progress(self) -> int:
        """Downloads not yet committed or failed (a small file's client has it before this)."""
        return sum(1 for task in self._tasks if not task.done())

    # -- tickets -------------------------------------------------------------------------------

    def ticket(self, target: FileTarget) -> str:
        """A path on 127.0.0.1:port that serves `target` once, within `ticket_ttl` seconds.

        Raises ValueError if the target's sha256 is not lowercase hex.  At most `max_tickets`
        are live; issuing one more retires the oldest.
        """
        if target.expected_sha256 is not None:
            check_sha256(target.expected_sha256)
        now = self._clock()
        while self._tickets:
            token, (_, expires) = next(iter(self._tickets.items()))
            if expires > now and len(self._tickets) < self._max_tickets:
                break
            del self._tickets[token]
        token = secrets.token_urlsafe(16)  # 128 bits
        self._tickets[token] = (target, now + self._ticket_ttl)
        return f"/t/{token}"

    def _redeem(self, path: str) -> FileTarget | None:
        match = _TICKET.fullmatch(path)
        entry = self._tickets.pop(match.group(1), None) if match else None
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    # -- filling without a client --------------------------------------------------------------

    async def fill(self, target: FileTarget) -> str:
        """Make sure the store has `target`'s file; return its sha256.  Raises FillError."""
        sha = target.expected_sha256
        if sha is not None:
            # mark_irreplaceable says whether the blob is stored, after protecting it.
            check = self._store.mark_irreplaceable if target.irreplaceable else self._store.has
            if await self._call(check, check_sha256(sha)):
                return sha
        download = self._join(target)
        download.acquire()
        try:
            await download.done.wait()
        finally:
            download.release()
        if download.committed and download.sha256 is not None:
            return download.sha256
        raise download.error or FillError(502, "download did not complete")

    # -- small hits, answered by the caller ----------------------------------------------------

    async def read_small(self, target: FileTarget) -> tuple[bytes, dict[str, str]] | None:
        """A stored file of at most SMALL_FILE bytes, whole, and the headers of its 200.

        For a plain GET (no Range, no conditional headers) of a `.metadata` file or a small
        wheel, the proxy can answer with these instead of relaying this server's answer: one
        HTTP exchange instead of two.  None when the file is not stored whole (missing, being
        filled, or bigger): send the client here.
        """
        sha = self._stored_sha(target)
        if sha is None:
            return None
        data = await self._call(self._read_small, sha, target.irreplaceable)
        if data is None:
            return None
        self._counters["hits"] += 1
        self._counters["bytes_served"] += len(data)
        return data, self._headers(etag_for(sha), target.private)

    async def small(self, target: FileTarget) -> tuple[bytes, dict[str, str]] | None:
        """`read_small`, and for a file the index says is small (or a `.metadata` file) that is
        not stored yet, the download first: the client gets the verified bytes whole, in one
        HTTP exchange instead of two, and without waiting for the commit (bench/run, cold
        installs: uv reads every `.metadata` while it resolves).  Raises FillError."""
        found = await self.read_small(target)
        if found is not None or not target.known_small:
            return found
        download = self._join(target)
        download.acquire()
        try:
            await download.started.wait()
            while not download.verified and download.error is None and not download.already_stored:
                await download.wait_progress(download.visible)
            if download.error is not None and not download.verified:
                raise download.error
            assert download.sha256 is not None
            if download.already_stored:
                data = await self._call(self._read_small, download.sha256, target.irreplaceable)
            else:
                data = download.body  # None: bigger than the index said, so streamed instead
        finally:
            download.release()
        if data is None:
            return None  # the client is sent to this server instead, which counts the miss
        self._counters["misses"] += 1
        self._counters["bytes_served"] += len(data)
        return data, self._headers(etag_for(download.sha256), target.private)

    def is_stored(self, target: FileTarget) -> bool:
        """Whether `target`'s file is in the store, whole, with no download of it running."""
        return self._stored_sha(target) is not None

    def _stored_sha(self, target: FileTarget) -> str | None:
        """The target's sha256 if its blob is stored and no download of it is running.  One
        indexed read, made on the loop (STYLE.md rule 3): a miss, the first request for every
        file of a cold install, then costs no thread hop."""
        sha = target.expected_sha256
        if sha is None or self._key(target) in self._downloads or not self._store.has(sha):
            return None
        return sha

    def _read_small(self, sha256: str, irreplaceable: bool) -> bytes | None:
        handle = self._store.open(sha256)
        if handle is None:
            return None
        with handle:
            if handle.size > SMALL_FILE:
                return None
            data = handle.read_all()
            if len(data) != handle.size:
                return None  # a short read: let the streaming path deal with it
        self._store.touch(sha256)
        if irreplaceable:
            self._store.mark_irreplaceable(sha256)
        return data

    # -- request handling ----------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if not request.raw_path.startswith("/t/"):
            return web.Response(status=404, text="not found\n")
        return await self.answer_ticket(request, request.raw_path)

    async def answer_ticket(self, request: web.BaseRequest, ticket: str) -> web.StreamResponse:
        """Answer `request` with the file a ticket names (the path-mode front's requests)."""
        target = self._redeem(ticket)
        if target is None:
            return web.Response(status=403, text="unknown or expired ticket\n")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={"Allow": "GET, HEAD"}, text="GET or HEAD only\n")
        try:
            return await self._answer(request, target)
        except ConnectionError:
            # The client went away (a download it started goes on).
            return web.Response(status=499)

    async def _answer(self, request: web.BaseRequest, target: FileTarget) -> web.StreamResponse:
        sha = target.expected_sha256
        download = self._downloads.get(self._key(target))
        if download is not None and download.verified:
            # Every byte is in and checked; only the commit is pending.  A client that just
            # got the whole file may come straight back for a range: serve it from the store.
            await download.done.wait()
            download = self._downloads.get(self._key(target))
        if (handle := await self._open_stored(target)) is not None:  # none while downloading
            with handle:
                return await self._serve_blob(request, handle, target.private)
        self._counters["misses"] += 1
        etag = etag_for(sha) if sha is not None else None
        inm = request.headers.get("If-None-Match")
        if etag is not None and inm is not None and etag_matches(inm, etag, weak=True):
            # The client holds these bytes already: the ETag is their hash.
            return web.Response(status=304, headers=self._headers(etag, target.private))
        if request.method == "HEAD":
            return await self._head_miss(request, target, download)
        if "Range" in request.headers and self._if_range_holds(request, etag):
            return await self._range_miss(request, target, download)
        return await self._stream_miss(request, target)

    async def _open_stored(self, target: FileTarget) -> BlobHandle | None:
        """A handle on the target's blob if it is stored and no download of it is running."""
        sha = self._stored_sha(target)
        return None if sha is None else await self._call(self._open_hit, sha, target.irreplaceable)

    def _open_hit(self, sha256: str, irreplaceable: bool) -> BlobHandle | None:
        handle = self._store.open(sha256)
        if handle is not None:
            self._store.touch(sha256)
            if irreplaceable:
                self._store.mark_irreplaceable(sha256)
        return handle

    @staticmethod
    def _if_range_holds(request: web.BaseRequest, etag: str | None) -> bool:
        # Strong comparison; a date never matches, as we send no Last-Modified (RFC 9110 13.1.5).
        if_range = request.headers.get("If-Range")
        return if_range is None or (etag is not None and if_range.strip() == etag)

    @staticmethod
    def _headers(etag: str | None, private: bool) -> dict[str, str]:
        cache_control = CACHE_CONTROL.replace("public", "private") if private else CACHE_CONTROL
        headers = {"Accept-Ranges": "bytes", "Cache-Control": cache_control, "Content-Type": _CONTENT_TYPE}
        if etag is not None:
            headers["ETag"] = etag
        return headers

    def _error(self, target: FileTarget, exc: FillError) -> web.Response:
        return web.Response(
            status=exc.status, text=fill_error_text(target, exc), headers=fill_error_headers(exc)
        )

    # -- store hits ----------------------------------------------------------------------------

    async def _serve_blob(
        self, request: web.BaseRequest, handle: BlobHandle, private: bool
    ) -> web.StreamResponse:
        self._counters["hits"] += 1
        etag, size = etag_for(handle.sha256), handle.size
        headers = self._headers(etag, private)
        inm = request.headers.get("If-None-Match")
        if inm is not None and etag_matches(inm, etag, weak=True):
            return web.Response(status=304, headers=headers)
        wanted: ByteRange | None = None
        range_header = request.headers.get("Range")
        if request.method == "GET" and range_header is not None and self._if_range_holds(request, etag):
            try:
                wanted = parse_range(range_header, size)
            except RangeNotSatisfiable:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
        response = web.StreamResponse(status=200, headers=headers)
        start, count = 0, size
        if wanted is not None:
            response.set_status(206)
            response.headers["Content-Range"] = wanted.content_range(size)
            start, count = wanted.start, wanted.length
        response.content_length = count
        await response.prepare(request)
        if request.method == "GET" and count:
            if handle.inline:
                await response.write(handle.read_all()[start : start + count])
                self._counters["bytes_served"] += count
            else:
                await self._send_file(request, response, handle.file, start, count)
        await response.write_eof()
        return response

    async def _send_file(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        file: IO[bytes],
        start: int,
        count: int,
        *,
        raw: bool = True,
        cached: bool = False,
    ) -> None:
        """Bytes [start, start + count) of `file` after the response's headers, which a
        StreamResponse has sent on prepare: by sendfile(2) where the platform has it, unless
        not `raw` (a chunked response), then as chunks read into memory.

        `cached`: the bytes were just written (a download's temp file), so sendfile(2) reads
        them from the page cache without waiting for the disk, and what the socket takes now
        is sent in this call.  asyncio's sendfile costs at least two turns of the event loop
        even when the socket takes everything at once, and on a busy proxy each turn is
        milliseconds: in cold uv installs, a streamed wheel's client got its last bytes a
        median 23-29 ms after the download was verified, 5-7 ms with this."""
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client gone")
        if raw and cached and (sock_fd := _plain_socket_fd(transport)) is not None:
            sent = _send_now(sock_fd, file.fileno(), start, count)
            self._counters["bytes_served"] += sent
            start, count = start + sent, count - sent
            if not count:
                return
        if raw:
            try:
                await asyncio.get_running_loop().sendfile(transport, file, start, count, fallback=False)
                self._counters["bytes_served"] += count
                return
            # Unavailable: asyncio says so also when the first sendfile(2) fails, the client
            # being gone (or dropped, datepin.stalls); nothing was sent, and the writes below
            # fail as they should then.
            except (NotImplementedError, asyncio.SendfileNotAvailableError):
                pass
        fd, end = file.fileno(), start + count
        while start < end:
            data = await self._call(os.pread, fd, min(_CHUNK, end - start), start)
            if not data:
                raise ConnectionResetError("file shorter than its size")
            await response.write(data)
            start += len(data)
            self._counters["bytes_served"] += len(data)

    # -- misses: one shared download -----------------------------------------------------------

    @staticmethod
    def _key(target: FileTarget) -> str:
        return target.expected_sha256 or f"url:{target.upstream_url}"

    def _join(self, target: FileTarget) -> _Download:
        key = self._key(target)
        download = self._downloads.get(key)
        if download is not None:
            download.join(target)
            return download
        download = self._downloads[key] = _Download(target)
        task = asyncio.create_task(self._run_download(key, download))
        self._tasks.add(task)
        self._task_downloads[task] = download
        task.add_done_callback(self._forget_task)
        return download

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._task_downloads.pop(task, None)
        if not self._tasks:  # the last download of a burst: its buffers' memory goes back
            with contextlib.suppress(RuntimeError):  # shutting down
                self._committer.submit(give_back)

    async def _stream_miss(
        self, request: web.BaseRequest, target: FileTarget, *, whole: int | None = None
    ) -> web.StreamResponse:
        """The file from the shared download; with `whole` (its size), as the 206 answer to
        a range that covers it all."""
        download = self._join(target)
        download.acquire()
        try:
            await download.started.wait()
            if download.already_stored and download.sha256 is not None:  # by another process
                handle = await self._call(self._open_hit, download.sha256, download.irreplaceable)
                if handle is None:
                    return self._error(target, FillError(502, "evicted while being requested; retry"))
                with handle:
                    return await self._serve_blob(request, handle, target.private)
            if download.error is not None and not download.verified:
                return self._error(target, download.error)
            return await self._stream_download(request, target, download, whole)
        finally:
            download.release()

    async def _stream_download(
        self, request: web.BaseRequest, target: FileTarget, download: _Download, whole: int | None
    ) -> web.StreamResponse:
        sha = target.expected_sha256
        if download.body is not None and download.sha256 is not None:  # read whole, verified
            self._counters["bytes_served"] += len(download.body)
            headers = self._headers(etag_for(download.sha256), target.private)
            whole_body = web.Response(body=download.body, headers=headers)
            _as_whole_range(whole_body, len(download.body), whole)
            return whole_body
        response = web.StreamResponse(status=200, headers=self._headers(sha and etag_for(sha), target.private))
        if download.length is not None:
            response.content_length = download.length
            _as_whole_range(response, download.length, whole)
        await response.prepare(request)
        # A known length: sent by sendfile(2), as a stored file is (bench/run, cold
        # installs: the copies through user space were the biggest cost of a cold fill on
        # the event loop); else as chunks read into memory, the response being chunked.
        assert download.fd is not None
        with os.fdopen(os.dup(download.fd), "rb", buffering=0) as file:
            if await self._tail(request, response, file, download):
                await response.write_eof()
            else:
                self._cut(request)
        return response

    async def _tail(
        self, request: web.BaseRequest, response: web.StreamResponse, file: IO[bytes], download: _Download
    ) -> bool:
        """Send the download's temp file (`file`) as it grows; False when the download failed
        (cut the client)."""
        raw = download.length is not None
        pos = 0
        while True:
            if download.error is not None and not download.verified:
                return False
            if pos < download.visible:
                count = download.visible - pos
                await self._send_file(request, response, file, pos, count, raw=raw, cached=True)
                pos += count
            elif download.verified:
                return True
            else:
                await download.wait_progress(pos)

    @staticmethod
    def _cut(request: web.BaseRequest) -> None:
        # abort(), not close(): nothing more may reach the client, not even a chunked terminator.
        if request.transport is not None:
            request.transport.abort()

    async def _run_download(self, key: str, download: _Download) -> None:
        try:
            await self._download(download)
        except asyncio.CancelledError:
            self._forget(key, download)
            if download.fill is not None:
                download.fill.abort()
            self._failed(download, FillError(503, "datepin is shutting down"))
            raise
        except Exception as exc:
            expected = (FillError, aiohttp.ClientError, TimeoutError, OSError, HashMismatch)
            if not isinstance(exc, expected):
                log.exception("fill of %s failed unexpectedly", download.target.filename)
            # Forgotten first, so that the next request starts afresh; the temp file is gone
            # before any client learns of the failure.
            self._forget(key, download)
            if download.fill is not None:
                await self._call(download.fill.abort)
            self._failed(download, _as_fill_error(exc, self._timeout, download.target.via))
        finally:
            self._forget(key, download)
            if download.error is None and not download.committed:
                download.error = FillError(502, "download ended unexpectedly")
            download.started.set()
            download.done.set()
            download.notify()
            download.release()

    def _forget(self, key: str, download: _Download) -> None:
        if self._downloads.get(key) is download:
            del self._downloads[key]

    def _failed(self, download: _Download, error: FillError) -> None:
        download.error = error
        download.notify()
        self._counters["fill_failures"] += 1
        target = download.target
        log.warning(
            "fill of %s from %s failed: %s", target.filename, public_url(target.upstream_url), error.reason
        )

    def _ask(
        self, method: str, target: FileTarget, *, headers: Mapping[str, str], **options: Any
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """A request for `target`'s file upstream; FillError instead while its origin is held
        off.  Checked when the request is made: a download that waited for a slot
        (BULK_DOWNLOADS) sees a hold-off begun meanwhile."""
        if (held := self._holdoff.check(target.upstream_url)) is not None:
            reason = (
                f"upstream answered HTTP {held.status} and is left alone for now"
                f" (retry after {held.retry_after} s)"
            )
            raise FillError(held.status, reason, retry_after=held.retry_after)
        url = target.upstream_url
        return self._session.request(method, url, **request_options(url, headers, target.via, **options))

    def _upstream_headers(self, target: FileTarget, **extra: str) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict(target.upstream_headers)
        headers["Accept-Encoding"] = "identity"  # the stored bytes are the file, never a recoding
        headers.update(extra)
        return headers

    def _client_timeout(self) -> aiohttp.ClientTimeout:
        t = self._timeout
        return aiohttp.ClientTimeout(total=None, connect=t, sock_connect=t, sock_read=t)

    async def _download(self, download: _Download) -> None:
        # A file not known to be small gets its temp file while upstream is being asked: its
        # first client waits for both (bench/run, cold installs).
        if not download.target.known_small:
            self._prepare(download, b"")
        try:
            await self._fetch(download)
        finally:
            if (prepared := download.preparing) is not None:
                # Landed before a failure is handled, so that its temp file is deleted.
                await asyncio.wait([prepared])
                if not prepared.cancelled():
                    prepared.exception()  # seen: a failed GET is the error to report

    def _prepare(self, download: _Download, first: bytes) -> asyncio.Future[bool]:
        """Begin the download's fill with `first` written: True once it is, False if the
        blob is stored already."""

        async def begin() -> bool:
            begun = await self._call(self._begin_fill, download.target, first)
            if begun is not None:
                download.fill, download.fd = begun
            return begun is not None

        download.preparing = asyncio.ensure_future(begin())
        return download.preparing

    async def _fetch(self, download: _Download) -> None:
        # A `.metadata` file is read whole, as a page is, and gets a page's overall deadline:
        # one that trickles in, each read within the timeout, would hold its clients forever.
        # A whole file (a wheel of any size) keeps only the per-read timeout.
        deadline = asyncio.timeout(self._deadline if download.target.metadata else None)
        try:
            async with deadline:
                await self._fetch_within(download, deadline)
        except TimeoutError:
            if deadline.expired():
                raise FillError(
                    504, f"upstream sent no complete answer within {self._deadline:g} s (page_deadline)"
                ) from None
            raise

    async def _fetch_within(self, download: _Download, deadline: asyncio.Timeout) -> None:
        target, sha = download.target, download.target.expected_sha256
        slot = contextlib.nullcontext() if target.known_small else self._bulk
        async with slot, self._ask(
            "GET",
            target,
            headers=self._upstream_headers(target),
            timeout=self._client_timeout(),
            auto_decompress=False,
            read_bufsize=_READ_BUFFER,
        ) as upstream:
            if upstream.status != 200:
                raise _not_ok(target, upstream, self._holdoff)
            _check_identity(upstream)
            length = upstream.content_length
            if target.size is not None:
                if length is not None and length != target.size:
                    raise FillError(502, f"upstream announced {length} bytes, the index {target.size}")
                length = target.size
            # A small file is read whole and verified here, and its clients are answered
            # before it is stored: a cold `.metadata` file's client would wait for each hop.
            first = await _read_up_to(upstream.content, SMALL_FILE + 1) if target.known_small else b""
            deadline.reschedule(None)  # read: storing it is datepin's own work
            if target.known_small and len(first) <= SMALL_FILE:
                await self._keep_small(download, first, length)
                return
            # Shielded: a cancelled download still learns of its temp file, to delete it.
            if not await asyncio.shield(download.preparing or self._prepare(download, first)):
                # Stored meanwhile (by another process): nothing to download.
                download.already_stored, download.sha256, download.committed = True, sha, True
                download.started.set()
                return
            fill = download.fill
            assert fill is not None
            download.length = length
            download.started.set()
            if length is not None and fill.size > length:
                raise FillError(502, f"upstream sent more than {length} bytes")
            # Each write is a thread hop and a wake-up of every waiting client, so each takes
            # all that has arrived (up to _CHUNK), not one piece of it; never more, so that
            # clients get what has arrived.
            async for chunk in upstream.content.iter_any():
                batch, batched = [chunk], len(chunk)
                while batched < _CHUNK and (more := upstream.content.read_nowait(_CHUNK - batched)):
                    batch.append(more)
                    batched += len(more)
                await self._write_batch(download, fill, batch, length)
        if length is not None and fill.size != length:
            raise FillError(502, f"body ended after {fill.size} of {length} bytes")
        digest = _checked_sha256(fill.sha256, sha)
        _check_index_hash(target, fill.also_digest)
        download.sha256, download.visible, download.verified = digest, fill.size, True
        download.notify()
        download.lease = await self._call(self._commit, fill, download, executor=self._committer)
        self._committed(download, digest, fill.size, stored=True)

    async def _keep_small(self, download: _Download, body: bytes, length: int | None) -> None:
        """A file read whole: verified, handed to its clients, then stored in one thread call."""
        if length is not None and len(body) != length:
            if len(body) > length:
                raise FillError(502, f"upstream sent more than {length} bytes")
            raise FillError(502, f"body ended after {len(body)} of {length} bytes")
        target = download.target
        digest = _checked_sha256(hashlib.sha256(body).hexdigest(), target.expected_sha256)
        if target.index_hash is not None:
            _check_index_hash(target, hashlib.new(target.index_hash[0], body).hexdigest())
        download.body, download.length, download.sha256 = body, len(body), digest
        download.visible, download.verified = len(body), True
        download.started.set()
        download.notify()
        stored = await self._call(self._put, digest, body, download, executor=self._committer)
        self._committed(download, digest, len(body), stored=stored)

    async def _write_batch(
        self, download: _Download, fill: Fill, batch: list[bytes], length: int | None
    ) -> None:
        if sum(map(len, batch)) <= _LOOP_WRITE:
            _write_all(fill, batch)
        else:
            await self._call(_write_all, fill, batch)
        if length is not None and fill.size > length:
            raise FillError(502, f"upstream sent more than {length} bytes")
        # What clients may have before the hash is checked: never the whole file.  With the
        # length known, all but its last _HOLD_BACK bytes, so that a client is not kept
        # waiting for a batch once the download ends (pip fetches one file after another);
        # else all but this batch, which may be the last.
        if length is not None:
            download.visible = max(0, min(fill.size, length - _HOLD_BACK))
        else:
            download.visible = fill.size - sum(map(len, batch))
        download.notify()

    def _begin_fill(self, target: FileTarget, first: bytes) -> tuple[Fill, int] | None:
        """None if the blob is stored already; else a fill (with `first` written) and a
        reader's fd on its temp file.

        One thread-pool call where there were three: callers have just found the blob
        missing, so this check only catches another process's commit, and each hop cost a
        client about a millisecond on a busy proxy (bench/run, cold installs)."""
        sha256 = target.expected_sha256
        if sha256 is not None and self._store.has(sha256):
            return None
        also = target.index_hash[0] if target.index_hash is not None else None
        fill = self._store.open_fill(sha256, also=also)
        try:
            if first:
                fill.write(first)
            return fill, os.open(fill.path, os.O_RDONLY)
        except BaseException:
            fill.abort()
            raise

    # Commits and what follows them are one thread call each: every hop is a wake-up of the
    # event loop, and a cold install commits a file per request (bench/run, cold installs).

    def _commit(self, fill: Fill, download: _Download) -> BlobHandle | None:
        """Store a streamed download; returns a lease that keeps our own eviction off the fresh
        blob while its clients finish reading the temp file."""
        digest = fill.commit()
        lease = self._store.open(digest)
        self._settle(digest, download)
        return lease

    def _put(self, sha256: str, body: bytes, download: _Download) -> bool:
        stored = self._store.put(sha256, body)
        self._settle(sha256, download)
        return stored

    def _settle(self, sha256: str, download: _Download) -> None:
        if download.irreplaceable:
            self._store.mark_irreplaceable(sha256)
        self._store.evict_if_over()

    def _committed(self, download: _Download, sha256: str, size: int, *, stored: bool) -> None:
        download.committed = True
        if stored:
            self._counters["fills"] += 1
        for callback in download.callbacks:
            try:
                callback(sha256, size)
            except Exception:
                log.exception("on_commit callback failed for %s", sha256)

    # -- misses: HEAD and ranges, passed through without storing -------------------------------

    async def _known_length(self, target: FileTarget, download: _Download | None) -> int | None:
        if target.size is not None:
            return target.size
        if download is not None and download.started.is_set() and download.error is None:
            if download.length is not None:
                return download.length
        self._counters["passthrough"] += 1
        try:
            async with self._ask(
                "HEAD",
                target,
                headers=self._upstream_headers(target),
                timeout=self._client_timeout(),
                allow_redirects=True,
            ) as upstream:
                if upstream.status != 200:
                    raise _not_ok(target, upstream, self._holdoff, " to HEAD")
                _check_identity(upstream)
                return upstream.content_length
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _as_fill_error(exc, self._timeout, target.via) from exc

    async def _head_miss(
        self, request: web.BaseRequest, target: FileTarget, download: _Download | None
    ) -> web.StreamResponse:
        try:
            length = await self._known_length(target, download)
        except FillError as exc:
            return self._error(target, exc)
        sha = target.expected_sha256
        response = web.StreamResponse(status=200, headers=self._headers(sha and etag_for(sha), target.private))
        response.content_length = length
        await response.prepare(request)
        await response.write_eof()
        return response

    async def _range_miss(
        self, request: web.BaseRequest, target: FileTarget, download: _Download | None
    ) -> web.StreamResponse:
        try:
            size = await self._known_length(target, download)
        except FillError as exc:
            return self._error(target, exc)
        sha = target.expected_sha256
        headers = self._headers(sha and etag_for(sha), target.private)
        try:
            wanted = parse_range(request.headers["Range"], size) if size is not None else None
        except RangeNotSatisfiable:
            headers["Content-Range"] = f"bytes */{size}"
            return web.Response(status=416, headers=headers)
        # A range is relayed unverified.  A resume (If-Range: the client holds the start of
        # this very file, perhaps cut because its hash failed) would hand out as complete what
        # the hash must check first: it gets the whole file, from the shared download (a
        # server may ignore Range, RFC 9110 14.2).
        if wanted is None or size is None or "If-Range" in request.headers:
            return await self._stream_miss(request, target)
        if wanted.length == size:
            # The whole file asked as a range (uv reading the end of a wheel smaller than
            # its read): the shared download, verified, as the 206 asked for.  A 200 tells uv
            # the index cannot serve ranges, and it then downloads every later wheel without
            # a `.metadata` file whole, to read its metadata (torch 2.1.0's: up to 1.8 GB).
            return await self._stream_miss(request, target, whole=size)
        self._counters["passthrough"] += 1
        return await self._relay_range(request, target, wanted, size, headers)

    async def _relay_range(
        self, request: web.BaseRequest, target: FileTarget, wanted: ByteRange, size: int, headers: dict[str, str]
    ) -> web.StreamResponse:
        spec = wanted.content_range(size)
        response: web.StreamResponse | None = None
        remaining = wanted.length
        try:
            async with self._ask(
                "GET",
                target,
                headers=self._upstream_headers(target, Range=f"bytes={wanted.start}-{wanted.end}"),
                timeout=self._client_timeout(),
                auto_decompress=False,
            ) as upstream:
                if upstream.status in (200, 206):
                    _check_identity(upstream)
                if upstream.status == 206:
                    got = upstream.headers.get("Content-Range", "")
                    if got.strip() != spec:
                        raise FillError(502, f"upstream answered the range with {got!r}")
                    skip = 0
                elif upstream.status == 200:
                    if upstream.content_length not in (None, size):
                        raise FillError(
                            502, f"upstream announced {upstream.content_length} bytes, not {size}"
                        )
                    skip = wanted.start  # upstream ignores ranges: slice the whole body
                else:
                    raise _not_ok(target, upstream, self._holdoff, " to a range request")
                response = web.StreamResponse(status=206, headers=headers)
                response.headers["Content-Range"] = spec
                response.content_length = remaining
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    if skip >= len(chunk):
                        skip -= len(chunk)
                        continue
                    piece = chunk[skip : skip + remaining]
                    skip = 0
                    await response.write(piece)
                    remaining -= len(piece)
                    self._counters["bytes_served"] += len(piece)
                    if remaining == 0:
                        break
        except (FillError, aiohttp.ClientError, TimeoutError) as exc:
            error = _as_fill_error(exc, self._timeout, target.via)
            if response is None:
                return self._error(target, error)
            log.warning("range of %s from upstream failed: %s", target.filename, error.reason)
        assert response is not None
        if remaining:
            self._cut(request)
        else:
            await response.write_eof()
        return response

    # -- helpers -------------------------------------------------------------------------------

    async def _call(
        self, fn: Callable[..., _T], *args: Any, executor: ThreadPoolExecutor | None = None
    ) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor or self._executor, functools.partial(fn, *args))

