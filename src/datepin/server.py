"""Start mitmproxy with the datepin addon, its path-mode front and the internal file server; stop
cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import signal
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from mitmproxy.options import Options

from datepin import forward
from datepin.mitm import (
    ErrorCheck, Master, block, core, disable_h2c, next_layer, proxyserver, tlsconfig,
)
from datepin.addon import DatepinAddon, file_target
from datepin.auth import UpstreamAuth, egress_routes
from datepin.ca import CAError, ensure_ca
from datepin.blobs import BlobHandle, BlobStore
from datepin.config import Config, ConfigError, Registry
from datepin.fileserver import FileServer, FillError
from datepin.history import HistoryStore, file_key
from datepin.model import DistFile
from datepin.connections import hand_over_origin_form, read_in_bigger_pieces
from datepin.front import PathFront
from datepin.memory import freeze_startup_heap
from datepin.service import Index, RescueError
from datepin.snapshotter import keep_snapshotting
from datepin.upstream import THROTTLED, Upstream, UpstreamError, ca_file

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


def check_port_free(host: str, port: int) -> None:
    """Fail with a clear message before mitmproxy logs a traceback-like startup error."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"{host}:{port} is already in use; stop the other server or pick "
                    f"another address with --listen HOST:PORT"
                ) from None
            raise StartupError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def intercept_patterns(config: Config) -> list[str]:
    """Anchored host:port regexes of the hosts whose TLS datepin decrypts (forward mode)."""
    return forward.intercept_patterns(forward.intercepted_hosts(config))


def proxy_options(
    config: Config, ca_dir: Path, environ: Mapping[str, str] = os.environ
) -> dict[str, object]:
    """mitmproxy's options.  `lazy`: no connection before the addon has seen a request (an
    unreachable host must not fail a CONNECT that datepin answers itself); no upstream
    certificate sniffing (datepin never connects to an intercepted host); upstream TLS, where
    mitmproxy does connect, checked against the same trust store as datepin's own client.
    Its idle timeout is `idle_timeout`, in whole seconds (an int option), as path mode's."""
    return {
        "listen_host": config.listen_host,
        "listen_port": config.listen_port,
        "mode": ["regular"],
        "confdir": str(ca_dir),
        "connection_strategy": "lazy",
        "upstream_cert": False,
        "allow_hosts": intercept_patterns(config),
        "ssl_verify_upstream_trusted_ca": ca_file(environ),
        "tcp_timeout": max(1, math.ceil(config.idle_timeout)),
    }


def make_master(options: Options) -> Master:
    """mitmproxy with the addons a proxy needs, and none of the interactive ones.

    mitmproxy passes every hook of every request through every addon; DumpMaster's ~35
    (playback, export, scripts, map-local...) made that over a third of the CPU of a small
    page (bench/run).  Kept: options and commands, refusing public clients (mitmproxy's
    default), the proxy server, layer selection (allow_hosts), TLS interception, h2c
    refusal, and exiting on startup errors.
    """
    master = Master(options)
    master.addons.add(  # type: ignore[no-untyped-call]
        core.Core(),
        block.Block(),
        proxyserver.Proxyserver(),  # type: ignore[no-untyped-call]
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        disable_h2c.DisableH2C(),
        ErrorCheck(),
    )
    return master


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


async def run(
    config: Config,
    *,
    on_ready: Callable[[list[tuple[str, int]], Paths], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    check_port_free(config.listen_host, config.listen_port)
    async with runtime(config, clock=clock) as rt:
        try:
            await asyncio.to_thread(ensure_ca, rt.paths.ca)
        except CAError as e:
            raise StartupError(str(e)) from None
        await rt.files.start()
        options = proxy_options(config, rt.paths.ca)
        read_in_bigger_pieces()
        # Declared by mitmproxy's proxyserver addon, so settable only once it is loaded.
        late = {"connection_strategy": options.pop("connection_strategy")}
        master = make_master(Options(**options))
        addon = DatepinAddon(config, rt.index, rt.files, clock=clock)
        master.addons.add(addon)  # type: ignore[no-untyped-call]
        front = PathFront(addon, rt.files, idle_timeout=config.idle_timeout)
        hand_over_origin_form(front.adopt, idle_timeout=config.idle_timeout)
        master.options.update(**late)  # type: ignore[no-untyped-call]

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, master.shutdown)

        async def announce() -> None:
            while not addon.listening:
                await asyncio.sleep(0.01)
            if on_ready:
                on_ready(addon.listening, rt.paths)

        announcer = asyncio.create_task(announce())
        snapshots = asyncio.create_task(keep_snapshotting(rt.index), name="snapshots")
        freeze_startup_heap()
        try:
            await master.run()
        finally:
            announcer.cancel()
            snapshots.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await snapshots
            await front.shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
