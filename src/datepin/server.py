"""Start mitmproxy with the datepin addon and the internal file server; stop cleanly."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from mitmproxy.addons import block, core, disable_h2c, next_layer, proxyserver, tlsconfig
from mitmproxy.addons.errorcheck import ErrorCheck
from mitmproxy.master import Master
from mitmproxy.options import Options

from datepin.addon import DatepinAddon
from datepin.blobs import BlobStore
from datepin.config import Config, Registry
from datepin.fileserver import FileServer, FileTarget, FillError
from datepin.history import HistoryStore
from datepin.model import DistFile
from datepin.service import Index
from datepin.upstream import Upstream, ca_file

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
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        root.chmod(0o700)
    except OSError as e:
        raise StartupError(f"cannot use data directory {root}: {e.strerror}") from None
    return Paths(root)


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
    hosts = {"pypi.org", "files.pythonhosted.org"}
    for registry in config.registries:
        if registry.intercept:
            hosts.add(urlsplit(registry.url).hostname or "")
    return [rf"^{h.replace('.', r'\.')}:443$" for h in sorted(hosts) if h]


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

    async def rescue(self, registry: Registry, file: DistFile) -> bool:
        """Keep a file that went away upstream: store it if missing, mark it irreplaceable.

        Returns True when the file had to be downloaded now."""
        had = file.sha256 is not None and await asyncio.to_thread(self.store.has, file.sha256)
        await self.files.fill(self.target(file, irreplaceable=True))
        if file.core_metadata is not None:
            try:
                await self.files.fill(self.target(file, metadata=True, irreplaceable=True))
            except FillError as e:
                log.warning("rescue %s.metadata: %s", file.filename, e)
        return not had

    def target(
        self, file: DistFile, *, metadata: bool = False, irreplaceable: bool = False
    ) -> FileTarget:
        if metadata:
            assert file.core_metadata is not None
            return FileTarget(
                upstream_url=file.url + ".metadata",
                expected_sha256=file.core_metadata.get("sha256"),
                filename=file.filename + ".metadata",
                irreplaceable=irreplaceable,
            )
        return FileTarget(
            upstream_url=file.url,
            expected_sha256=file.sha256,
            filename=file.filename,
            size=file.size,
            irreplaceable=irreplaceable,
        )


@asynccontextmanager
async def runtime(
    config: Config, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> AsyncIterator[Runtime]:
    paths = prepare_data_dir(config.data_dir)
    history = HistoryStore(paths.history)
    store = BlobStore(paths.blobs, size_limit=config.size_limit)
    upstream = Upstream(timeout=config.upstream_timeout)
    files = FileServer(store, upstream.session, timeout=config.upstream_timeout)

    async def fetch_file(file: DistFile, registry: Registry) -> Path:
        sha = await files.fill(rt.target(file))
        path = store.path(sha)
        if path is None:
            raise OSError(f"{file.filename} vanished from the store")
        return path

    index = Index(config, history, upstream, clock=clock, fetch_file=fetch_file)
    rt = Runtime(config, paths, history, store, upstream, files, index)
    try:
        yield rt
    finally:
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
        await rt.files.start()
        options = Options(
            listen_host=config.listen_host,
            listen_port=config.listen_port,
            mode=["regular"],
            confdir=str(rt.paths.ca),
        )
        master = make_master(options)
        addon = DatepinAddon(config, rt.index, rt.files, clock=clock)
        master.addons.add(addon)  # type: ignore[no-untyped-call]
        master.options.update(  # type: ignore[no-untyped-call]
            connection_strategy="lazy",
            allow_hosts=intercept_patterns(config),
            ssl_verify_upstream_trusted_ca=ca_file(),
        )

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, master.shutdown)

        async def announce() -> None:
            while not addon.listening:
                await asyncio.sleep(0.01)
            if on_ready:
                on_ready(addon.listening, rt.paths)

        announcer = asyncio.create_task(announce())
        try:
            await master.run()
        finally:
            announcer.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
