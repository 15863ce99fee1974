"""The `datepin` command.  Each command parses, loads Config, calls one function, reports."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from packaging.utils import NormalizedName

from datepin import __version__
from datepin.config import Config, ConfigError, Registry, directory, parse_project, resolve

if TYPE_CHECKING:
    from datepin.snapshotter import Summary

log = logging.getLogger("datepin")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="proxy.toml to read (default: $DATEPIN_CONFIG, else built-in defaults).",
)


def data_dir_value(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    if value is None:
        return None
    try:
        return Path(directory(value))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    callback=data_dir_value,
    help="Where history, files and the CA live (default: server.data_dir from the config,"
    " else $XDG_DATA_HOME/datepin, else ~/.local/share/datepin).",
)


def load_config(config_path: Path | None, **flags: object) -> Config:
    try:
        return resolve(config_path, **flags)  # type: ignore[arg-type]
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


class OneLineFormatter(logging.Formatter):
    """Messages quote upstream data (file names, URLs): escape control characters so that a
    name holding CR LF cannot forge log lines.  Tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        from datepin.upstream import one_line

        record.message = one_line(record.message)
        return super().formatMessage(record)


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    # mitmproxy logs every connection at INFO; keep its warnings and errors only.
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The HTTP/2 libraries under mitmproxy log every header they decode at DEBUG, client
    # credentials included (uv speaks HTTP/2 through the tunnel): never at -v either.
    for name in ("hpack", "h2"):
        logging.getLogger(name).setLevel(logging.WARNING)


@click.group()
@click.version_option(__version__, prog_name="datepin")
def main() -> None:
    """datepin: Python package indexes as they were at a chosen moment."""


@main.command()
@config_option
@data_dir_option
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Address to listen on (default: server.listen from the config, else 127.0.0.1:8080).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def serve(config_path: Path | None, data_dir: Path | None, listen: str | None, verbose: bool) -> None:
    """Run the proxy (path mode and forward mode on one port)."""
    from datepin.memory import tune_malloc
    from datepin.runtime import Paths, StartupError
    from datepin.server import run

    config = load_config(config_path, listen=listen, data_dir=data_dir)
    setup_logging(verbose)
    tune_malloc()

    def ready(addrs: list[tuple[str, int]], paths: Paths) -> None:
        for host, port in addrs:
            shown = f"[{host}]" if ":" in host else host
            log.info("datepin listening on http://%s:%d/ (data in %s)", shown, port, paths.root)
        if config.listen_host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "listening on %s: anyone who can reach it can use this proxy", config.listen_host
            )

    try:
        asyncio.run(run(config, on_ready=ready))
    except StartupError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        pass
    log.info("datepin stopped")


# -- snapshot, history, cache ------------------------------------------------------------------


def quiet_logging(verbose: bool) -> None:
    """Commands that report for themselves log errors only, unless asked for more."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def parse_projects(texts: tuple[str, ...], config: Config) -> list[tuple[Registry, NormalizedName]]:
    try:
        return [parse_project(text, config) for text in texts]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="PROJECT") from None


@main.command()
@config_option
@data_dir_option
@click.argument("projects", nargs=-1, metavar="[PROJECT]...")
@click.option("--all", "all_", is_flag=True, help="Every tracked project (ever requested, plus [snapshot] track).")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
def snapshot(
    config_path: Path | None, data_dir: Path | None, projects: tuple[str, ...], all_: bool, verbose: bool
) -> None:
    """Observe projects upstream now: record what changed, keep files that went away.

    PROJECT is a PyPI project name, or REGISTRY:NAME for a registry from the config.
    Exits 1 if any project could not be observed or any file that went away could not be kept.
    """
    if not projects and not all_:
        raise click.UsageError("name the projects to observe, or pass --all")
    config = load_config(config_path, data_dir=data_dir)
    quiet_logging(verbose)
    named = parse_projects(projects, config)
    from datepin.runtime import StartupError

    try:
        summary = asyncio.run(_snapshot(config, named, all_, show_progress=sys.stderr.isatty()))
    except StartupError as e:
        raise click.ClickException(str(e)) from None
    for what, why in summary.failures:
        click.echo(f"failed: {what}: {why}", err=True)
    click.echo(summary.line())
    if summary.failures:
        sys.exit(1)


async def _snapshot(
    config: Config, named: list[tuple[Registry, NormalizedName]], all_: bool, *, show_progress: bool
) -> Summary:
    from datepin.runtime import runtime
    from datepin.snapshotter import snapshot as observe, snapshot_tracked, tracked

    async with runtime(config) as rt:
        work = {(r.name, n): (r, n) for r, n in named}  # once each, in the order given
        if all_:
            everything = await asyncio.to_thread(tracked, config, rt.history)
            work.update(((r.name, n), (r, n)) for r, n in everything if (r.name, n) not in work)
        projects = list(work.values())
        with progress_bar(len(projects), show_progress) as advance:
            if all_:
                return await snapshot_tracked(rt.index, projects, progress=advance)
            return await observe(
                rt.index, projects, concurrency=config.snapshot_concurrency, progress=advance
            )


@contextmanager
def progress_bar(length: int, show: bool) -> Iterator[Callable[[str], None]]:
    """click's progress bar on a terminal (stderr), else nothing."""
    if not show:
        yield lambda _: None
        return
    with click.progressbar(length=length, label="observing", file=sys.stderr,
                           item_show_func=lambda item: item) as bar:
        yield lambda name: bar.update(1, name)


@main.command()
@config_option
@data_dir_option
@click.argument("project")
@click.option("--at", "pin_text", metavar="PIN", help="Show the view at this pin (the project's override, if it has one) and why each file is in or out.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(
    config_path: Path | None, data_dir: Path | None, project: str, pin_text: str | None, as_json: bool
) -> None:
    """What datepin has recorded for PROJECT (or REGISTRY:NAME), and what a pin shows of it.

    Each file: upload time, first and last seen, gone since, yank changes, whether the blob
    store has it and whether it is irreplaceable.  Never contacts upstream.
    """
    from datepin.pins import PinError, parse_pin
    from datepin.reports import NoHistory, project_history

    config = load_config(config_path, data_dir=data_dir)
    [(registry, name)] = parse_projects((project,), config)
    pin = None
    if pin_text is not None:
        try:
            pin = parse_pin(pin_text, now=datetime.now(UTC))
        except PinError as e:
            raise click.BadParameter(str(e), param_hint="--at") from None
    try:
        click.echo(project_history(config, registry, name, at=pin, as_json=as_json), nl=False)
    except NoHistory as e:
        raise click.ClickException(str(e)) from None


@main.group()
def cache() -> None:
    """The file store: what it holds, and whether it is intact."""


@cache.command("stats")
@config_option
@data_dir_option
@click.option("--url", metavar="URL", help="Also read hits and misses from a running server (http://HOST:PORT).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cache_stats(config_path: Path | None, data_dir: Path | None, url: str | None, as_json: bool) -> None:
    """Blobs stored, bytes, how many are irreplaceable (gone upstream)."""
    from datepin.reports import NoHistory, cache_stats as read_stats, human_bytes

    config = load_config(config_path, data_dir=data_dir)
    try:
        stats = read_stats(config, url)
    except (NoHistory, OSError) as e:
        raise click.ClickException(str(e)) from None
    b = stats.blobs
    server = {
        name: stats.server.get(f"datepin_files_{name}_total", 0.0)
        for name in ("hits", "misses", "fills", "fill_failures", "bytes_served")
    } if stats.server is not None else None
    if as_json:
        doc = {
            "blobs": b.count, "bytes": b.bytes, "irreplaceable": b.irreplaceable_count,
            "irreplaceable_bytes": b.irreplaceable_bytes, "size_limit": stats.size_limit,
            "server": {k: int(v) for k, v in server.items()} if server is not None else None,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"blobs: {b.count}, {human_bytes(b.bytes)} ({b.bytes} bytes)")
    click.echo(f"irreplaceable: {b.irreplaceable_count}, {human_bytes(b.irreplaceable_bytes)} (never evicted)")
    click.echo(f"size limit for the others: {human_bytes(stats.size_limit)}")
    if server is not None:
        click.echo(
            f"server since start: hits {server['hits']:.0f}, misses {server['misses']:.0f}, "
            f"fills {server['fills']:.0f}, fill failures {server['fill_failures']:.0f}, "
            f"served {human_bytes(server['bytes_served'])}"
        )


@cache.command("verify")
@config_option
@data_dir_option
def cache_verify(config_path: Path | None, data_dir: Path | None) -> None:
    """Re-hash every blob; move corrupt ones to quarantine.  Exits 1 if any was corrupt or
    missing."""
    from datepin.reports import NoHistory, verify_store

    config = load_config(config_path, data_dir=data_dir)
    try:
        count, problems = verify_store(config)
    except NoHistory as e:
        raise click.ClickException(str(e)) from None
    bad = 0
    for p in problems:
        where = f" -> {p.moved_to}" if p.moved_to else ""
        click.echo(f"{p.kind}: {p.sha256 or ''} {p.detail}{where}".replace("  ", " "), err=True)
        bad += p.kind != "orphan"
    click.echo(f"verified {count} blobs: {bad} corrupt or missing, "
               f"{len(problems) - bad} orphan files moved to quarantine")
    if bad:
        sys.exit(1)


@main.command()
@config_option
@data_dir_option
@click.option("--pem", is_flag=True, help="Print the certificate itself instead of its path.")
@click.option(
    "--bundle",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="Write the system CAs plus datepin's CA to FILE ('-': standard output), for "
    "PIP_CERT, REQUESTS_CA_BUNDLE and SSL_CERT_FILE.",
)
def ca(config_path: Path | None, data_dir: Path | None, pem: bool, bundle: Path | None) -> None:
    """Print the path of datepin's CA certificate (forward mode), creating the CA if needed.

    Clients that reach pypi.org through datepin (HTTPS_PROXY) must trust this CA."""
    if pem and bundle:
        raise click.UsageError("--pem and --bundle: choose one")
    config = load_config(config_path, data_dir=data_dir)
    cert = ensure_ca_of(config)
    if bundle is not None:
        from datepin.ca import bundle_text

        text = bundle_text(cert)
        if str(bundle) == "-":
            click.echo(text, nl=False)
            return
        try:
            bundle.write_text(text)
        except OSError as e:
            raise click.ClickException(f"cannot write {bundle}: {e.strerror}") from None
        click.echo(bundle.resolve())
    elif pem:
        click.echo(cert.read_text(), nl=False)
    else:
        click.echo(cert)


def ensure_ca_of(config: Config) -> Path:
    from datepin.ca import CAError, ensure_ca
    from datepin.runtime import StartupError, prepare_data_dir

    try:
        # Absolute: `datepin env` output and `datepin ca` are pasted in other directories.
        return ensure_ca(prepare_data_dir(config.data_dir).ca).absolute()
    except (CAError, StartupError) as e:
        raise click.ClickException(str(e)) from None


@main.command()
@config_option
@data_dir_option
@click.option("--pin", "pin_text", required=True, help="A date (2023-11-18), an RFC 3339 timestamp or live, with per-project overrides after it (2018-06-01,setuptools=live).")
@click.option(
    "--mode",
    type=click.Choice(["path", "forward"]),
    default="path",
    show_default=True,
    help="path: an index URL with the pin in it; forward: HTTPS_PROXY and datepin's CA.",
)
@click.option(
    "--proxy",
    "proxy_url",
    metavar="URL",
    help="How clients reach datepin (default: the listen address, e.g. http://127.0.0.1:8080).",
)
def env(
    config_path: Path | None, data_dir: Path | None, pin_text: str, mode: str, proxy_url: str | None
) -> None:
    """Print shell exports for pip, uv, Poetry and PDM, and a Dockerfile snippet."""
    from datetime import UTC, datetime

    from datepin import clientenv
    from datepin.pins import PinError, parse_pin

    config = load_config(config_path, data_dir=data_dir)
    try:
        pin = parse_pin(pin_text, now=datetime.now(UTC))
    except PinError as e:
        raise click.BadParameter(str(e), param_hint="--pin") from None
    try:
        proxy = (
            clientenv.parse_proxy_url(proxy_url)
            if proxy_url
            else clientenv.listen_address(config.listen_host, config.listen_port)
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--proxy") from None
    bundle = None
    if mode == "forward" and proxy.is_loopback:
        # The proxy runs here, so its CA is this data directory's: hand out a ready bundle.
        from datepin.ca import bundle_text

        cert = ensure_ca_of(config)
        path = cert.parent / clientenv.BUNDLE_NAME
        path.write_text(bundle_text(cert))
        bundle = str(path)
    click.echo(clientenv.render(pin, "forward" if mode == "forward" else "path", proxy, bundle), nl=False)
