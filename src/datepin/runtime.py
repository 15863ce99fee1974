"""The long-lived parts of a datepin process (history, the blob store, the upstream client,
the file server, the index), for `serve` and the CLI's commands alike.

Nothing here imports mitmproxy: `datepin snapshot` and the other commands start without it
(0.38 s of imports instead of 0.66 on this machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from datepin.auth import UpstreamAuth, egress_routes
from datepin.blobs import BlobHandle, BlobStore
from datepin.config import Config, ConfigError, Registry
from datepin.fileserver import FileServer, FillError, file_target
from datepin.history import HistoryStore, file_key
from datepin.model import DistFile
from datepin.service import Index, RescueError
from datepin.upstream import THROTTLED, Upstream, UpstreamError

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Paths:
    """Where a data directory keeps things."""

    root: Path

    @property
    def history(self) -> Path:
        return self.root / "history.sqlite3"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def ca(self) -> Path:
        return self.root / "ca"


def prepare_data_dir(root: Path) -> Paths:
    """Create the data directory and its parts, readable by their owner only: the CA's
    private key and the history live here (mitmproxy would create `ca/` world-readable)."""
    paths = Paths(root)
    try:
        for directory in (root, paths.ca, paths.blobs):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            directory.chmod(0o700)
    except OSError as e:
        raise StartupError(f"cannot use data directory {root}: {e.strerror}") from None
    except ValueError as e:  # a NUL byte in the path (TOML strings may hold one)
        raise StartupError(f"cannot use data directory {str(root)!r}: {e}") from None
    return paths


@dataclass
class Runtime:
    """The long-lived parts, built once per process and shared by serve and the CLI."""

    config: Config
    paths: Paths
    history: HistoryStore
    store: BlobStore
    upstream: Upstream
    files: FileServer
    index: Index

    async def rescue(
        self, registry: Registry, file: DistFile, authorization: str | None = None
    ) -> bool:
        """Keep a file that went away upstream: store it if missing, mark it irreplaceable.
        `authorization`: the client's own credentials, for a passthrough registry.

        Returns True when the file had to be downloaded now; raises RescueError."""
        sha = file.sha256
        if sha is None:  # a registry without hashes: the one computed when it was stored
            stored = await asyncio.to_thread(
                self.history.find_file, registry.name, file_key(file), file.filename
            )
            sha = stored.sha256 if stored is not None else None
        had = sha is not None and await asyncio.to_thread(self.store.has, sha)
        headers = self.index.upstream_headers(registry, file.url, authorization)
        via = self.index.via(registry)
        target = file_target(file, sha256=sha, irreplaceable=True, upstream_headers=headers, via=via)
        try:
            sha = await self.files.fill(target)
        except FillError as e:
            raise RescueError(f"{file.filename}: {e.reason}") from None
        if file.sha256 is None:
            await asyncio.to_thread(
                self.history.set_sha256, registry.name, file_key(file), file.filename, sha
            )
        if file.core_metadata is not None:
            try:
                await self.files.fill(
                    file_target(
                        file, metadata=True, irreplaceable=True, upstream_headers=headers, via=via
                    )
                )
            except FillError as e:
                log.warning("rescue %s.metadata: %s", file.filename, e)
        return not had


def open_stores(paths: Paths, config: Config) -> tuple[HistoryStore, BlobStore]:
    """Open history and the blob store; a damaged or unreadable one is a StartupError."""
    try:
        history = HistoryStore(paths.history)
    except (sqlite3.DatabaseError, OSError) as e:
        raise StartupError(
            f"cannot open the history {paths.history}: {e} (move it away to start afresh)"
        ) from None
    try:
        store = BlobStore(paths.blobs, size_limit=config.size_limit)
    except (sqlite3.DatabaseError, OSError) as e:
        history.close()
        raise StartupError(
            f"cannot open the file store {paths.blobs}: {e} (move it away to start afresh)"
        ) from None
    return history, store


@contextlib.contextmanager
def _reading(handle: BlobHandle) -> Iterator[IO[bytes]]:
    """A blob's file, its lease held until the block ends."""
    with handle:
        yield handle.file


@asynccontextmanager
async def runtime(
    config: Config,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    environ: Mapping[str, str] = os.environ,
) -> AsyncIterator[Runtime]:
    try:
        egress = egress_routes(config, environ)
        auth = UpstreamAuth.from_environ(config.registries, environ, egress=egress)
    except ConfigError as e:
        raise StartupError(str(e)) from None
    paths = prepare_data_dir(config.data_dir)
    history, store = open_stores(paths, config)
    upstream = Upstream(
        timeout=config.upstream_timeout,
        deadline=config.page_deadline,
        max_page_bytes=config.max_page_size,
    )
    files = FileServer(
        store, upstream.session, timeout=config.upstream_timeout, deadline=config.page_deadline,
        holdoff=upstream.holdoff,
    )

    async def fetch_file(
        file: DistFile, registry: Registry, headers: Mapping[str, str]
    ) -> AbstractContextManager[IO[bytes]]:
        try:
            sha = await files.fill(file_target(file, upstream_headers=headers, via=index.via(registry)))
        except FillError as e:  # upstream down or throttling, file gone, bad hash
            status = e.status if e.status in THROTTLED else 502
            raise UpstreamError(
                f"{file.filename}: {e.reason}", status=status, retry_after=e.retry_after
            ) from e
        handle = store.open(sha)
        if handle is None:
            raise OSError(f"{file.filename} vanished from the store")
        return _reading(handle)

    async def open_kept(file: DistFile, metadata: bool) -> AbstractContextManager[IO[bytes]] | None:
        sha = (file.core_metadata or {}).get("sha256") if metadata else file.sha256
        if sha is None:
            return None
        handle = await asyncio.to_thread(store.open, sha)
        return None if handle is None else _reading(handle)

    async def rescue(registry: Registry, file: DistFile, authorization: str | None) -> bool:
        return await rt.rescue(registry, file, authorization)

    index = Index(
        config, history, upstream, clock=clock, fetch_file=fetch_file, open_kept=open_kept,
        auth=auth, rescue=rescue,
    )
    rt = Runtime(config, paths, history, store, upstream, files, index)
    try:
        yield rt
    finally:
        await index.close()
        await files.stop()
        await upstream.close()
        history.close()
        store.close()
