"""Forward mode, pure parts: which hosts are intercepted, where the pin comes from, file URLs.

DESIGN.md "Forward mode": clients keep `https://pypi.org/simple/` as their index and reach it
through `HTTPS_PROXY`; datepin decrypts `pypi.org` and `files.pythonhosted.org` only, answers
from the pin's view, and points file links at `https://files.pythonhosted.org/...`, which it
serves from the blob store.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import quote, unquote, urlsplit

from datepin.config import Config, Registry
from datepin.model import DistFile
from datepin.pins import LIVE, Pin, PinError, leading_pin, parse_pin
from datepin.rewrite.render import LinkFn
from datepin.routes import path_segments

INDEX_HOST = "pypi.org"
FILES_HOST = "files.pythonhosted.org"
PUBLIC_FILES_URL = f"https://{FILES_HOST}/"
PIN_HEADER = "Datepin-Pin"

PROXY_PIN_FORMS = (
    "put the pin in the proxy URL as the user name (http://2023-11-18:x@HOST:PORT) "
    "or as the password (http://pin:2023-11-18T14%3A05%3A00Z@HOST:PORT)"
)


class CredentialsError(PinError):
    """Proxy credentials that carry no readable pin."""


def intercepted_hosts(config: Config) -> frozenset[tuple[str, int]]:
    """(host, port) pairs datepin answers for in forward mode: PyPI's two hosts (HTTPS, and
    plain HTTP through HTTP_PROXY), plus the registries that ask for it, at their URL's port."""
    hosts = {(h, p) for h in (INDEX_HOST, FILES_HOST) for p in (443, 80)}
    for registry in config.registries:
        if registry.intercept and (address := registry_address(registry)) is not None:
            hosts.add(address)
    return frozenset(hosts)


def registry_address(registry: Registry) -> tuple[str, int] | None:
    parts = urlsplit(registry.url)
    if parts.hostname is None:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def intercepted_registries(config: Config, host: str, port: int) -> list[Registry]:
    """The extra registries (intercept = true) served at host:port (several indexes may share
    a host: download.pytorch.org/whl/cu121/ and .../whl/cpu/)."""
    return [r for r in config.registries if r.intercept and registry_address(r) == (host, port)]


def intercepted_registry(
    config: Config, host: str, port: int, path: str = "/"
) -> Registry | None:
    """The extra registry (intercept = true) served at host:port whose index URL path is the
    longest prefix of `path` (segment by segment); the first one at host:port if none is."""
    registries = intercepted_registries(config, host, port)
    segs = path_segments(path)

    def depth(registry: Registry) -> int:
        base = path_segments(urlsplit(registry.url).path)
        return len(base) if segs[: len(base)] == base else -1

    return max(registries, key=depth, default=None)


def intercept_patterns(hosts: Iterable[tuple[str, int]]) -> list[str]:
    """Anchored `host:port` regexes for mitmproxy's `allow_hosts`: the tunnels it may decrypt
    (PyPI's plain-HTTP hosts need none)."""
    plain_pypi = {(INDEX_HOST, 80), (FILES_HOST, 80)}
    return [rf"^{re.escape(h)}:{p}$" for h, p in sorted(hosts) if (h, p) not in plain_pypi]


def select_pin(
    header: str | None,
    authorization: str | None,
    connect_pin: Pin | None,
    default_pin: str,
    *,
    now: datetime,
) -> Pin:
    """The pin of a forward-mode request: its `Datepin-Pin` header, then proxy credentials (the
    request's own `Proxy-Authorization`, sent with plain-HTTP requests, or `connect_pin`, read
    when the tunnel was opened), then `default_pin`.  Raises PinError."""
    if header is not None:
        return parse_pin(header.strip(), now=now)
    if authorization is not None:
        return pin_from_credentials(authorization, now=now)
    if connect_pin is not None:
        return connect_pin
    return parse_pin(default_pin, now=now)


def pin_from_credentials(authorization: str, *, now: datetime) -> Pin:
    """The pin in a `Proxy-Authorization: Basic ...` header: the user name if it is a pin,
    else the password.  Raises CredentialsError (a PinError) naming the accepted forms."""
    user, password = _basic_credentials(authorization)
    for text in (user, password):
        if not _looks_like_pin(text):
            continue
        try:
            return parse_pin(text, now=now)  # also a pin a client did not percent-decode
        except PinError as e:
            raise CredentialsError(f"{e}; {PROXY_PIN_FORMS}") from None
    shown = user if len(user) <= 40 else user[:40] + "..."
    raise CredentialsError(
        f"the proxy credentials (user {shown!r}) name no pin (YYYY-MM-DD, an RFC 3339 "
        f"timestamp or live): {PROXY_PIN_FORMS}"
    )


def _basic_credentials(authorization: str) -> tuple[str, str]:
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise CredentialsError(f"proxy credentials must use Basic auth: {PROXY_PIN_FORMS}")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(f"unreadable proxy credentials: {PROXY_PIN_FORMS}") from None
    return _split_user(decoded)


def _split_user(decoded: str) -> tuple[str, str]:
    """The user name and password of decoded Basic credentials.  A user name holds no colon
    (RFC 7617), but a timestamp pin does: pip and uv percent-decode
    `http://2023-11-18T14%3A05%3A00Z:x@host` and send `2023-11-18T14:05:00Z:x`.  So a text
    that starts with a pin has it as its user name, timestamps (the base's or an override's)
    included; the colon after it ends it."""
    user, _, password = decoded.partition(":")
    if not _looks_like_pin(user):
        return user, password
    # Read once from the start: trying each colon as the end of a timestamp took time
    # quadratic in the header's length, on the event loop (a header of colons: seconds).
    pin = leading_pin(decoded)
    if decoded[len(pin) : len(pin) + 1] not in (":", ""):
        return user, password
    return pin, decoded[len(pin) + 1 :]


def _looks_like_pin(text: str) -> bool:
    """A pin, or a malformed attempt at one (to report it rather than try the password)."""
    return text[:1].isdigit() or text.partition(",")[0].partition("%")[0] == LIVE


# -- file URLs ---------------------------------------------------------------------------------


def public_file_url(upstream_url: str, files_url: str) -> str:
    """The URL a forward-mode page shows for a file: on files.pythonhosted.org when it is
    hosted under the configured `files_url`, else the upstream URL unchanged."""
    if upstream_url.startswith(files_url):
        return PUBLIC_FILES_URL + upstream_url[len(files_url):]
    return upstream_url


def forward_links(files_url: str) -> LinkFn:
    def link(f: DistFile) -> str:
        return public_file_url(f.url, files_url)

    return link


def upstream_file_urls(path: str, files_url: str) -> list[str]:
    """Upstream URLs a request for `https://files.pythonhosted.org{path}` may stand for, as
    history keeps them: the path as sent, then decoded and re-encoded (clients differ in
    which characters of a file name they percent-encode); under `files_url`, then on
    files.pythonhosted.org itself: a file recorded there (from PyPI, before `files_url` was
    pointed elsewhere) keeps that URL on pages (public_file_url)."""
    path = path.partition("?")[0].partition("#")[0].lstrip("/")
    bases = dict.fromkeys([files_url, PUBLIC_FILES_URL])
    return [base + v for base in bases for v in _spellings(path)]


def registry_file_urls(url: str) -> list[str]:
    """Upstream URLs a request for `url` on an intercepted registry's host may stand for:
    the URL as sent, then with its path decoded and re-encoded (pip re-quotes a link's path,
    so a `+` the index wrote as is arrives as `%2B`; uv sends it as written)."""
    parts = urlsplit(url.partition("#")[0])
    return [parts._replace(path=v).geturl() for v in _spellings(parts.path)]


def _spellings(path: str) -> list[str]:
    """A URL path as sent, decoded, and re-encoded, once each: clients differ in which
    characters of a file name they percent-encode, and history keeps the index's spelling."""
    return list(dict.fromkeys([path, unquote(path), quote(unquote(path), safe="/")]))
