"""The `datepin` command.  Each command parses, loads Config, calls one function, reports."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from datepin import __version__
from datepin.config import Config, ConfigError, resolve

log = logging.getLogger("datepin")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="proxy.toml to read (default: $DATEPIN_CONFIG, else built-in defaults).",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where history, files and the CA live (default: ~/.local/share/datepin).",
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


@click.group()
@click.version_option(__version__, prog_name="datepin")
def main() -> None:
    """datepin: Python package indexes as they were at a chosen moment."""


@main.command()
@config_option
@data_dir_option
@click.option("--listen", metavar="HOST:PORT", help="Address to listen on (default 127.0.0.1:8080).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def serve(config_path: Path | None, data_dir: Path | None, listen: str | None, verbose: bool) -> None:
    """Run the proxy (path mode and forward mode on one port)."""
    from datepin.server import Paths, StartupError, run

    config = load_config(config_path, listen=listen, data_dir=data_dir)
    setup_logging(verbose)

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
