"""proxy.toml -> frozen Config.  `parse` is pure; `load` reads a file; `resolve` applies CLI flags.

Precedence: CLI flag > proxy.toml > embedded default.  Unknown keys and bad values are errors
naming the key and the file.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from packaging.utils import NormalizedName, canonicalize_name

AuthMode = Literal["none", "static", "passthrough"]


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Registry:
    name: str
    url: str  # simple index base URL, ends with "/"
    intercept: bool = False
    auth: AuthMode = "none"
    auth_env: str | None = None  # static auth: environment variable holding "user:password" or a token
    json_url: str | None = None  # JSON API base, if the registry has one
    # passthrough: how long upstream's acceptance of a client's credentials for a project is
    # trusted, and how much longer it may be used when upstream cannot be asked
    access_ttl: float = 300.0
    grace: float = 0.0
    # An egress proxy of its own: None takes [server] upstream_proxy; "" goes direct.
    upstream_proxy: str | None = None
    upstream_proxy_auth_env: str | None = None  # the variable holding that proxy's credentials


class Egress(NamedTuple):
    """The egress proxy a registry's upstream requests go through, and the key that chose it
    (`[server] upstream_proxy` or `[[registry]] NAME upstream_proxy`), for messages."""

    url: str
    auth_env: str | None
    key: str


@dataclass(frozen=True)
class Config:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    data_dir: Path = field(default_factory=lambda: default_data_dir())
    default_pin: str = "live"
    live_ttl: float = 600.0
    upstream_timeout: float = 30.0
    # the longest an upstream page, JSON document or `.metadata` file may take as a whole
    page_deadline: float = 60.0
    max_page_size: int = 256 * 2**20  # bytes of one upstream index page or JSON document
    # a client connection that neither sends nor takes anything for this long is closed
    idle_timeout: float = 600.0
    refuse_other_hosts: bool = False
    # An egress HTTP proxy for every upstream request ("": direct), and the environment
    # variable holding its credentials.  HTTPS_PROXY is not read: it is usually set for
    # forward-mode clients and points at datepin itself.
    upstream_proxy: str = ""
    upstream_proxy_auth_env: str | None = None
    size_limit: int = 50 * 10**9
    snapshot_interval: float = 86400.0
    snapshot_concurrency: int = 8
    track: tuple[str, ...] = ()
    pypi: Registry = field(
        default_factory=lambda: Registry(
            name="pypi",
            url="https://pypi.org/simple/",
            intercept=True,
            json_url="https://pypi.org/pypi/",
        )
    )
    files_url: str = "https://files.pythonhosted.org/"
    registries: tuple[Registry, ...] = ()
    source: str = "<defaults>"

    def registry(self, name: str) -> Registry | None:
        if name == "pypi":
            return self.pypi
        return next((r for r in self.registries if r.name == name), None)

    def egress(self, registry: Registry) -> Egress | None:
        """The egress proxy for `registry`'s upstream requests; None: direct."""
        if registry.upstream_proxy is None:
            url, auth_env, key = self.upstream_proxy, self.upstream_proxy_auth_env, "[server] upstream_proxy"
        else:
            url, auth_env = registry.upstream_proxy, registry.upstream_proxy_auth_env
            key = f"[[registry]] {registry.name} upstream_proxy"
        return Egress(url, auth_env, key) if url else None


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "datepin"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_duration(text: str | int | float) -> float:
    """'10m' -> 600.0; bare numbers are seconds.  Negative, NaN and infinite are errors
    (TOML has nan and inf; a timer set to them fails or never fires)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 10m, 24h)")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 10m, 24h)")
    return seconds


def parse_size(text: str | int) -> int:
    """'50GB' -> 50_000_000_000; '1GiB' -> 2**30; bare numbers are bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{text!r} is not a size: it is negative")
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size (use e.g. 500MB, 50GB, 1TiB)")
    unit = (m.group(2) or "b").lower()
    power = "bkmgt".index(unit[0])
    base = 1024 if "i" in unit else 1000
    size = float(m.group(1)) * base**power
    if not math.isfinite(size):
        raise ValueError(f"{text!r} is too large")
    return int(size)


_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    if not _is_host(host):
        raise ValueError(f"{text!r}: {host!r} is not an IP address or host name")
    return host, int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_host(host: str) -> bool:
    """Whether `host` is an IP address or a host name."""
    return _ip(host) is not None or bool(_HOSTNAME.match(host))


def _url(text: object) -> str:
    if not isinstance(text, str):
        raise ValueError("must be a URL string")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError(f"{_masked(text)!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{_masked(text)!r} is not an http(s) URL")
    if "@" in parts.netloc:
        # Credentials in a URL end up in logs and history; keep them in the environment.
        raise ValueError(
            "must not contain credentials (user:password@); an index that needs them is a"
            " [[registry]] with auth = \"static\" and auth_env"
        )
    return text if text.endswith("/") else text + "/"


def _masked(text: str) -> str:
    """`text` with anything that may be a user or password hidden, for error messages (a
    malformed URL is not split reliably, so everything before the last '@' goes)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if "@" not in rest:
        return text
    prefix = scheme + sep if sep else ""
    return prefix + "***@" + rest.rpartition("@")[2]


def parse_proxy_url(text: object) -> str:
    """An egress proxy's URL, `http(s)://host[:port]`, as `scheme://host:port`; "" (none) as is.
    Its credentials come from the environment (`upstream_proxy_auth_env`), never from here."""
    if not isinstance(text, str):
        raise ValueError("must be a URL string (http://host:port, or \"\" for none)")
    if text == "":
        return ""
    wrong = f"{_masked(text)!r} is not http(s)://host[:port]"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(wrong) from None
    if "@" in parts.netloc:
        raise ValueError(
            "must not contain credentials (user:password@): name the environment variable"
            " holding them in upstream_proxy_auth_env"
        )
    host = parts.hostname or ""
    if (
        parts.scheme.lower() not in ("http", "https")
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or not _is_host(host)
    ):
        raise ValueError(wrong)
    scheme = parts.scheme.lower()
    port = port or (443 if scheme == "https" else 80)
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def environment_variable(value: object) -> str:
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise ValueError(f"expected the name of an environment variable, got {value!r}")
    return value


def check_egress(config: Config) -> None:
    """Refuse an egress proxy at datepin's own listen address: every upstream request would
    come back to datepin, which would ask upstream through itself again."""
    for registry in (config.pypi, *config.registries):
        egress = config.egress(registry)
        if egress is not None and is_listen_address(egress.url, config.listen_host, config.listen_port):
            raise ConfigError(
                f"{config.source}: {egress.key}: {egress.url} is datepin's own listen address"
                f" ({config.listen_host}:{config.listen_port}); upstream requests would loop"
                " through datepin"
            )


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_listen_address(url: str, listen_host: str, listen_port: int) -> bool:
    """Whether `url` (a parsed proxy URL) names the address datepin listens on, as far as can
    be told without asking the network: the same host, or a loopback name or address while
    datepin listens on loopback or on every address."""
    parts = urlsplit(url)
    if parts.port != listen_port or listen_port == 0:
        return False
    host, listen = (parts.hostname or "").lower(), listen_host.lower()
    return host == listen or (_is_local(host) and (_is_local(listen) or _is_any(listen)))


def _is_local(host: str) -> bool:
    return host in _LOOPBACK_NAMES or ((ip := _ip(host)) is not None and ip.is_loopback)


def _is_any(host: str) -> bool:
    return (ip := _ip(host)) is not None and ip.is_unspecified


_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def parse_project(text: str, config: Config) -> tuple[Registry, NormalizedName]:
    """`name` (PyPI) or `registry:name` (an extra registry from the config), as `datepin
    snapshot` and `[snapshot] track` take them.

    Raises ValueError naming what is wrong.  The name must be a PEP 508 project name: it
    becomes a path of upstream URLs and of the proxy's own routes."""
    registry_name, sep, name = text.rpartition(":")
    registry = config.registry(registry_name if sep else "pypi")
    if registry is None:
        known = ", ".join(["pypi", *(r.name for r in config.registries)])
        raise ValueError(f"{text!r}: no registry named {registry_name!r} (known: {known})")
    try:
        return registry, canonicalize_name(name, validate=True)
    except ValueError:
        raise ValueError(f"{text!r}: {name!r} is not a valid project name") from None


_SCHEMA: dict[str, dict[str, str]] = {
    "server": {
        "listen": "str",
        "data_dir": "path",
        "default_pin": "str",
        "live_ttl": "duration",
        "upstream_timeout": "positive duration",
        "page_deadline": "positive duration",
        "max_page_size": "positive size",
        "refuse_other_hosts": "bool",
        "idle_timeout": "positive duration",
        "upstream_proxy": "proxy url",
        "upstream_proxy_auth_env": "variable",
    },
    "cache": {"size_limit": "size"},
    # interval 0 turns the server's snapshots off (README, snapshotter.keep_snapshotting)
    "snapshot": {"interval": "duration", "track": "names", "concurrency": "count"},
    "pypi": {"simple_url": "url", "json_url": "url", "files_url": "url"},
}
_REGISTRY_KEYS = {
    "name", "url", "json_url", "intercept", "auth", "auth_env", "access_ttl", "grace",
    "upstream_proxy", "upstream_proxy_auth_env",
}
# What a value of each kind should be, for errors about a value of the wrong type.
_EXPECTED = {
    "str": "a string",
    "path": "a string naming a directory",
    "bool": "true or false",
    "count": "an integer >= 1",
    "names": "a list of strings",
}


def directory(value: str) -> str:
    """A data directory as given; an empty one is refused: Path("") is the current directory,
    which datepin would take over (and make 0700) unasked."""
    if not value.strip():
        raise ValueError("must name a directory, got an empty string")
    return value


def _check(table: str, key: str, kind: str, value: Any) -> Any:
    try:
        if kind == "str" and isinstance(value, str):
            return value
        if kind == "path" and isinstance(value, str):
            return directory(value)
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "count" and isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        if kind.endswith("duration"):
            checked: float = parse_duration(value)
        elif kind.endswith("size"):
            checked = parse_size(value)
        elif kind == "url":
            return _url(value)
        elif kind == "proxy url":
            return parse_proxy_url(value)
        elif kind == "variable":
            return environment_variable(value)
        elif kind == "names" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value  # each checked by _check_track once the registries are known
        else:
            # A ValueError, not a ConfigError: the handler below adds "[table] key: ".
            raise ValueError(f"expected {_EXPECTED.get(kind, kind)}, got {value!r}")
        if kind.startswith("positive") and checked <= 0:
            raise ValueError(f"{value!r} must be more than zero")
        return checked
    except ValueError as e:
        raise ConfigError(f"[{table}] {key}: {e}") from None


def parse(data: Mapping[str, Any], *, source: str = "<config>") -> Config:
    """Turn a parsed proxy.toml into a Config; raises ConfigError naming the key."""
    try:
        return _parse(data, source)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _parse(data: Mapping[str, Any], source: str) -> Config:
    values: dict[str, dict[str, Any]] = {}
    for table, content in data.items():
        if table == "registry":
            continue
        if table not in _SCHEMA:
            raise ConfigError(f"unknown table [{table}]")
        if not isinstance(content, dict):
            raise ConfigError(f"[{table}] must be a table")
        for key, value in content.items():
            if key not in _SCHEMA[table]:
                known = ", ".join(sorted(_SCHEMA[table]))
                raise ConfigError(f"[{table}] unknown key {key!r} (known: {known})")
        values[table] = {k: _check(table, k, _SCHEMA[table][k], v) for k, v in content.items()}

    cfg = Config(source=source)
    server = values.get("server", {})
    if "listen" in server:
        try:
            host, port = parse_listen(server["listen"])
        except ValueError as e:
            raise ConfigError(f"[server] listen: {e}") from None
        cfg = replace(cfg, listen_host=host, listen_port=port)
    if "data_dir" in server:
        cfg = replace(cfg, data_dir=Path(server["data_dir"]).expanduser())
    if "default_pin" in server:
        from datepin.pins import PinError, parse_pin
        from datetime import UTC, datetime

        try:
            parse_pin(server["default_pin"], now=datetime.now(UTC))
        except PinError as e:
            raise ConfigError(f"[server] default_pin: {e}") from None
        cfg = replace(cfg, default_pin=server["default_pin"])
    for key, attr in (
        ("live_ttl", "live_ttl"),
        ("upstream_timeout", "upstream_timeout"),
        ("page_deadline", "page_deadline"),
        ("max_page_size", "max_page_size"),
        ("refuse_other_hosts", "refuse_other_hosts"),
        ("idle_timeout", "idle_timeout"),
        ("upstream_proxy", "upstream_proxy"),
        ("upstream_proxy_auth_env", "upstream_proxy_auth_env"),
    ):
        if key in server:
            cfg = replace(cfg, **{attr: server[key]})
    if cfg.upstream_proxy_auth_env is not None and not cfg.upstream_proxy:
        raise ConfigError("[server] upstream_proxy_auth_env: only read with upstream_proxy")
    if "size_limit" in values.get("cache", {}):
        cfg = replace(cfg, size_limit=values["cache"]["size_limit"])
    snap = values.get("snapshot", {})
    if "interval" in snap:
        cfg = replace(cfg, snapshot_interval=snap["interval"])
    if "concurrency" in snap:
        cfg = replace(cfg, snapshot_concurrency=snap["concurrency"])
    pypi = values.get("pypi", {})
    cfg = replace(
        cfg,
        pypi=replace(
            cfg.pypi,
            url=pypi.get("simple_url", cfg.pypi.url),
            json_url=pypi.get("json_url", cfg.pypi.json_url),
        ),
        files_url=pypi.get("files_url", cfg.files_url),
        registries=_parse_registries(data.get("registry", [])),
    )
    if "track" in snap:
        # After the registries, wherever their tables stand in the file: entries name them.
        cfg = replace(cfg, track=tuple(snap["track"]))
        for text in cfg.track:
            _check_track(text, cfg)
    return cfg


def _check_track(text: str, config: Config) -> None:
    try:
        registry, _ = parse_project(text, config)
    except ValueError as e:
        raise ConfigError(f"[snapshot] track: {e}") from None
    if registry.auth == "passthrough":
        # The snapshotter has no credentials for these (README, "Extra registries").
        raise ConfigError(
            f"[snapshot] track: {text!r}: {registry.name} uses auth = \"passthrough\"; its "
            "projects are observed only when clients ask for them"
        )


def _parse_registries(entries: Any) -> tuple[Registry, ...]:
    if not isinstance(entries, list):
        raise ConfigError("[[registry]] must be an array of tables")
    out: list[Registry] = []
    for i, entry in enumerate(entries):
        where = f"[[registry]] #{i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(entry) - _REGISTRY_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name == "pypi":
            raise ConfigError(f"{where} name: {name!r} must be lowercase letters, digits, . _ - (not 'pypi')")
        where = f"[[registry]] {name}"
        if any(r.name == name for r in out):
            raise ConfigError(f"{where}: name used twice")
        url = _registry_url(entry, "url", where)
        json_url = _registry_url(entry, "json_url", where) if "json_url" in entry else None
        intercept = entry.get("intercept", False)
        if not isinstance(intercept, bool):
            raise ConfigError(f"{where} intercept: expected true or false")
        auth = entry.get("auth", "none")
        if auth not in ("none", "static", "passthrough"):
            raise ConfigError(f"{where} auth: {auth!r} is not none, static or passthrough")
        auth_env = entry.get("auth_env")
        if auth == "static" and (not isinstance(auth_env, str) or not auth_env):
            raise ConfigError(f"{where} auth_env: static auth needs the name of an environment variable")
        if auth != "static" and auth_env is not None:
            raise ConfigError(f"{where} auth_env: only read with auth = \"static\"")
        durations: dict[str, float] = {}
        for key, default in (("access_ttl", "5m"), ("grace", "0s")):
            if auth != "passthrough" and key in entry:
                raise ConfigError(f"{where} {key}: only read with auth = \"passthrough\"")
            try:
                durations[key] = parse_duration(entry.get(key, default))
            except ValueError as e:
                raise ConfigError(f"{where} {key}: {e}") from None
        proxy, proxy_auth_env = _registry_egress(entry, where)
        out.append(Registry(
            name, url, intercept, auth, auth_env, json_url,
            access_ttl=durations["access_ttl"], grace=durations["grace"],
            upstream_proxy=proxy, upstream_proxy_auth_env=proxy_auth_env,
        ))
    return tuple(out)


def _registry_egress(entry: Mapping[str, Any], where: str) -> tuple[str | None, str | None]:
    """A registry's own `upstream_proxy` (None: not given) and `upstream_proxy_auth_env`."""
    try:
        proxy = parse_proxy_url(entry["upstream_proxy"]) if "upstream_proxy" in entry else None
    except ValueError as e:
        raise ConfigError(f"{where} upstream_proxy: {e}") from None
    if "upstream_proxy_auth_env" not in entry:
        return proxy, None
    if not proxy:
        raise ConfigError(
            f"{where} upstream_proxy_auth_env: only read with this registry's own upstream_proxy"
        )
    try:
        return proxy, environment_variable(entry["upstream_proxy_auth_env"])
    except ValueError as e:
        raise ConfigError(f"{where} upstream_proxy_auth_env: {e}") from None


def _registry_url(entry: Mapping[str, Any], key: str, where: str) -> str:
    try:
        return _url(entry.get(key))
    except ValueError as e:
        raise ConfigError(f"{where} {key}: {e}") from None


def load(path: Path) -> Config:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:  # tomllib decodes before parsing and lets this through
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 ({e.reason} at byte {e.start})") from None
    return parse(data, source=str(path))


def resolve(
    config_path: Path | None,
    *,
    listen: str | None = None,
    data_dir: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Config:
    """The one place precedence is decided: CLI flag > proxy.toml > default."""
    if config_path is None and environ.get("DATEPIN_CONFIG"):
        config_path = Path(environ["DATEPIN_CONFIG"])
    cfg = load(config_path) if config_path else Config()
    if listen is not None:
        try:
            host, port = parse_listen(listen)
        except ValueError as e:
            raise ConfigError(f"--listen: {e}") from None
        cfg = replace(cfg, listen_host=host, listen_port=port)
    if data_dir is not None:
        cfg = replace(cfg, data_dir=data_dir)
    check_egress(cfg)  # against the address datepin will listen on, flag or file
    return cfg
