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
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from mitmproxy.options import Options

from datepin import forward
from datepin.mitm import (
    ErrorCheck, Master, block, core, disable_h2c, next_layer, proxyserver, tlsconfig,
)
from datepin.addon import DatepinAddon
from datepin.ca import CAError, ensure_ca
from datepin.config import Config
from datepin.connections import hand_over_origin_form, read_in_bigger_pieces
from datepin.front import PathFront
from datepin.memory import freeze_startup_heap
from datepin.runtime import Paths, StartupError, runtime
from datepin.snapshotter import keep_snapshotting
from datepin.upstream import ca_file

log = logging.getLogger(__name__)


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
