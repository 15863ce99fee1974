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


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
    from datepin.server import StartupError, prepare_data_dir

    try:
        return ensure_ca(prepare_data_dir(config.data_dir).ca)
    except (CAError, StartupError) as e:
        raise click.ClickException(str(e)) from None


@main.command()
@config_option
@data_dir_option
@click.option("--pin", "pin_text", required=True, help="A date (2023-11-18), an RFC 3339 timestamp or live.")
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
