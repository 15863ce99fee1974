"""Credentials for extra registries (DESIGN.md, "Extra registries and auth passthrough").

- `static`: datepin authenticates itself with a secret read from an environment variable at
  startup (`user:password` -> Basic, anything else -> Bearer).
- an egress proxy (`upstream_proxy`): datepin sends it `Proxy-Authorization` from the
  environment variable named by `upstream_proxy_auth_env`, read at startup.
- `passthrough`: the client's own `Authorization` goes upstream, and stored pages and files of
  the registry are served only to credentials upstream accepted for that project recently.
  `AccessGate` remembers those acceptances in memory only, under a salted hash.

Secrets live in memory only: never in Config, history, the blob store or a log line.  They are
sent only to the origin (scheme, host, port) of the registry they belong to, as pip and uv do.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from datepin.config import Config, ConfigError, Registry
from datepin.upstream import Via, origin

__all__ = [
    "CHALLENGE", "AccessGate", "UpstreamAuth", "authorization_header", "egress_routes", "same_origin",
]

Grant = Literal["fresh", "grace"]
# What a passthrough registry's refusal is answered with: pip and uv answer a 401 with this
# challenge by retrying with the credentials of the index URL (or their keyring).
CHALLENGE = 'Basic realm="datepin"'


def authorization_header(secret: str) -> str:
    """`user:password` -> a Basic header value; anything else is a Bearer token."""
    if ":" in secret:
        return "Basic " + base64.b64encode(secret.encode()).decode("ascii")
    return "Bearer " + secret


def same_origin(url: str, registry: Registry) -> bool:
    """Whether `url` is on the registry's own host (its index or JSON API base)."""
    target = origin(url)
    bases = [registry.url] + ([registry.json_url] if registry.json_url else [])
    return any(origin(base) == target for base in bases)


def egress_routes(config: Config, environ: Mapping[str, str]) -> dict[str, Via]:
    """The egress proxy of every registry that has one, by registry name, with its credentials
    read now, so that a missing variable stops startup with its key's name."""
    routes: dict[str, Via] = {}
    for registry in (config.pypi, *config.registries):
        egress = config.egress(registry)
        if egress is None:
            continue
        authorization = None
        if egress.auth_env is not None:
            authorization = _secret_header(
                environ, egress.auth_env,
                f"{egress.key}_auth_env: environment variable {egress.auth_env} is not set"
                " or empty (it holds the upstream proxy's user:password)",
            )
        routes[registry.name] = Via(egress.url, egress.key, authorization)
    return routes


def _secret_header(environ: Mapping[str, str], variable: str, missing: str) -> str:
    """The header value for the secret in `variable`; ConfigError(`missing`) if unset or empty."""
    secret = environ.get(variable, "").strip()
    if not secret:
        raise ConfigError(missing)
    return authorization_header(secret)


class UpstreamAuth:
    """What datepin sends upstream as `Authorization`, per registry and URL, and through which
    egress proxy (with its `Proxy-Authorization`)."""

    def __init__(
        self, static: Mapping[str, str] | None = None, egress: Mapping[str, Via] | None = None
    ) -> None:
        self._static = dict(static or {})  # registry name -> header value
        self._egress = dict(egress or {})  # registry name -> its proxy; absent: direct

    def __repr__(self) -> str:  # never show a secret, even in a traceback
        return f"UpstreamAuth(static={sorted(self._static)}, egress={self._egress})"

    def via(self, registry: Registry) -> Via | None:
        """The egress proxy `registry`'s upstream requests go through; None: direct."""
        return self._egress.get(registry.name)

    @classmethod
    def from_environ(
        cls,
        registries: Iterable[Registry],
        environ: Mapping[str, str],
        *,
        egress: Mapping[str, Via] | None = None,
    ) -> UpstreamAuth:
        """Read every static secret now, so a missing one stops startup with its name."""
        static: dict[str, str] = {}
        for registry in registries:
            if registry.auth != "static" or registry.auth_env is None:
                continue
            static[registry.name] = _secret_header(
                environ, registry.auth_env,
                f"[[registry]] {registry.name}: environment variable {registry.auth_env} "
                f"is not set or empty (auth = \"static\" reads user:password or a token from it)",
            )
        return cls(static, egress)

    def headers(self, registry: Registry, url: str, client: str | None = None) -> dict[str, str]:
        """The Authorization header for a request to `url` on behalf of `registry`: the static
        secret, or the client's own for passthrough; none for another origin."""
        if registry.auth == "static":
            value = self._static.get(registry.name)
        elif registry.auth == "passthrough":
            value = client
        else:
            value = None
        if not value or not same_origin(url, registry):
            return {}
        return {"Authorization": value}


class AccessGate:
    """Which credentials a passthrough registry accepted for which project, and when.

    Keys are keyed BLAKE2b hashes of (credentials, registry, project) under a random salt made
    per process: the table holds no credentials, and nothing of it survives a restart.  Beyond
    `max_entries` the least recently granted are forgotten (their owners are simply re-checked).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 100_000) -> None:
        self._salt = secrets.token_bytes(32)
        self._clock = clock
        self._max = max_entries
        self._granted: OrderedDict[bytes, float] = OrderedDict()

    def key(self, authorization: str | None, registry: str, project: str) -> bytes:
        data = "\0".join((authorization or "", registry, project)).encode()
        return hashlib.blake2b(data, key=self._salt, digest_size=32).digest()

    def state(self, key: bytes, *, ttl: float, grace: float = 0.0) -> Grant | None:
        """"fresh" within `ttl` of the last acceptance; "grace" within `ttl + grace`."""
        at = self._granted.get(key)
        if at is None:
            return None
        age = self._clock() - at
        if age < ttl:
            return "fresh"
        if age < ttl + grace:
            return "grace"
        return None

    def grant(self, key: bytes) -> None:
        self._granted[key] = self._clock()
        self._granted.move_to_end(key)
        while len(self._granted) > self._max:
            self._granted.popitem(last=False)

    def revoke(self, key: bytes) -> None:
        self._granted.pop(key, None)
