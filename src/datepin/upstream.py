"""The only outbound HTTP: one aiohttp session, timeouts, trust store, credential masking."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp.http_exceptions import ContentEncodingError

log = logging.getLogger(__name__)

MAX_PAGE_BYTES = 256 * 2**20
SIMPLE_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)


# Upstream answers that say "not now" (PyPI's CDN under load, a registry's rate limit): when
# datepin has nothing of its own to answer with, the client gets the same status and its
# Retry-After.  pip retries 503 always and 429 only with a Retry-After, waiting as long as it
# says; uv retries both (and 502) on its own schedule.  Other failures stay 502.
THROTTLED = (429, 503)
# The longest Retry-After passed on: pip sleeps for whatever it is told (up to 6 hours),
# silently, before each of its 5 retries.
MAX_RETRY_AFTER = 60
# How long an origin that answered 429 without a Retry-After is left alone.  A 429 says "too
# many requests" without saying for how long: long enough to fold a burst (a CI fan-out, and
# uv's and pip's own quick retries, about 1-4 s apart) into one request upstream, short enough
# that a one-off refusal costs clients a few seconds.  A 503 without one is not held off: on
# PyPI's CDN it is usually one request's failure, not a request to wait.
DEFAULT_HOLD_OFF = 5
_SECONDS = re.compile(r"[0-9]+")


class UpstreamError(Exception):
    """Upstream could not be asked or gave an unusable answer; `status` is what we answer,
    with `retry_after` (seconds) as Retry-After when upstream asked to be left alone."""

    def __init__(self, message: str, *, status: int = 502, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    def restated(self, message: str) -> UpstreamError:
        """`message` (which tells this error's story) as an error of its own: a throttling
        status and its Retry-After kept, anything else a bad gateway."""
        if self.status in THROTTLED:
            return UpstreamError(message, status=self.status, retry_after=self.retry_after)
        return UpstreamError(message)


def retry_after_seconds(value: str | None, *, now: datetime) -> int | None:
    """A Retry-After header (RFC 9110 10.2.3: seconds, or an HTTP date) as seconds from `now`,
    at most MAX_RETRY_AFTER; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return min(int(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0, int((when - now).total_seconds())), MAX_RETRY_AFTER)


def status_error(url: str, status: int, headers: Mapping[str, str]) -> UpstreamError:
    """Upstream answered `url` with `status` instead of what was asked for: a throttling
    status is passed on with its Retry-After, anything else is a bad gateway."""
    message = f"{mask_url(url)} answered HTTP {status}"
    if status not in THROTTLED:
        return UpstreamError(message)
    retry_after = retry_after_seconds(retry_after_header(headers), now=datetime.now(UTC))
    if retry_after is not None:
        message += f" (retry after {retry_after} s)"
    return UpstreamError(message, status=status, retry_after=retry_after)


def retry_after_header(headers: Mapping[str, str]) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == "retry-after"), None)


# scheme, host and port of a URL: what credentials are scoped to, and a rate limit applies to
# (PyPI's pages and files hosts are two).
Origin = tuple[str, str, int | None]


def origin(url: str) -> Origin:
    """`url`'s scheme and host, lower-cased, and port (the scheme's default filled in; -1 when
    unreadable); no credentials."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def _shown(key: Origin) -> str:
    return "%s://%s:%s" % key


class Held(NamedTuple):
    """An origin datepin is leaving alone: the status it answered, and the seconds left (at
    least 1), for Retry-After."""

    status: int
    retry_after: int


class HoldOff:
    """Origins that asked datepin to wait (429 or 503 with Retry-After, or a bare 429): no
    request goes to them until the time is up, so that clients retrying (pip five times, uv
    three, dozens of CI jobs at once) do not each go upstream.  Requests already sent finish.

    One per process, shared by everything that asks upstream.  While nothing is held off,
    `check` is one test of an empty dict: requests pay nothing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[Origin, tuple[float, int]] = {}  # origin -> (until, status)

    def note(self, url: str, status: int, headers: Mapping[str, str]) -> None:
        """Upstream answered a request for `url` with `status`: hold its origin off if that
        asks for it.  A later answer may lengthen a hold-off, never shorten it."""
        if status not in THROTTLED:
            return
        seconds = retry_after_seconds(retry_after_header(headers), now=datetime.now(UTC))
        if seconds is None and status == 429:
            seconds = DEFAULT_HOLD_OFF
        if not seconds:
            return
        key = origin(url)
        until = self._clock() + seconds
        held = self._until.get(key)
        if held is None or held[0] < until:
            if held is None:
                log.warning("%s answered HTTP %d: not asked again for %d s", _shown(key), status, seconds)
            self._until[key] = (until, status)

    def check(self, url: str) -> Held | None:
        """Whether `url`'s origin is held off, and for how much longer."""
        if not self._until:
            return None
        key = origin(url)
        held = self._until.get(key)
        if held is None:
            return None
        left = held[0] - self._clock()
        if left <= 0:
            del self._until[key]
            log.info("%s: asking again", _shown(key))
            return None
        return Held(held[1], max(1, math.ceil(left)))


def held_error(url: str, held: Held) -> UpstreamError:
    """The answer to a request for `url` that was not sent: its origin is held off."""
    return UpstreamError(
        f"{mask_url(url)} not asked: upstream answered HTTP {held.status} and is left alone"
        f" for now (retry after {held.retry_after} s)",
        status=held.status,
        retry_after=held.retry_after,
    )


@dataclass(frozen=True)
class Via:
    """An egress proxy that upstream requests go through (`server.upstream_proxy`, or a
    registry's own): its URL, the config key that chose it (named in errors), and the
    `Proxy-Authorization` datepin sends it, read from the environment (never shown)."""

    url: str
    key: str
    authorization: str | None = field(default=None, repr=False)

    def options(self, url: str) -> dict[str, Any]:
        """aiohttp request options that send a request for `url` through this proxy.  The
        credentials go on the CONNECT of an https:// target (`proxy_headers`), and on the
        request itself for an http:// one, which the proxy receives whole (absolute form):
        aiohttp 3.14 sends `proxy_headers` only on a CONNECT."""
        if self.authorization is None:
            return {"proxy": self.url}
        credentials = {"Proxy-Authorization": self.authorization}
        options: dict[str, Any] = {"proxy": self.url, "proxy_headers": credentials}
        if urlsplit(url).scheme.lower() == "http":
            options["headers"] = credentials
        return options

    def refused(self) -> str:
        """Why the proxy answered 407, and what to set."""
        if self.authorization is None:
            return (
                f"the upstream proxy {self.url} ({self.key}) asks for credentials (HTTP 407):"
                f" name the environment variable holding them in {self.key}_auth_env"
            )
        return (
            f"the upstream proxy {self.url} ({self.key}) refused datepin's credentials (HTTP"
            f" 407): check the environment variable {self.key}_auth_env names"
        )


def request_options(
    url: str, headers: Mapping[str, str], via: Via | None, **options: Any
) -> dict[str, Any]:
    """`options` for an aiohttp request for `url` with `headers`, through `via` if any."""
    if via is None:
        return {"headers": headers, **options}
    through = via.options(url)
    return {**options, **through, "headers": {**headers, **through.get("headers", {})}}


@dataclass(frozen=True)
class Fetched:
    status: int
    url: str  # after redirects, credentials removed
    content_type: str
    body: bytearray
    headers: Mapping[str, str]
    redirected: bool = False  # `url` is where a redirect led, not what was asked for


def mask_url(url: str) -> str:
    """The URL with any user:password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    # The host as written (IPv6 brackets and port kept), without parsing the port: an
    # invalid one must not turn masking into an exception.
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def strip_userinfo(url: str) -> str:
    """The URL without any user:password (for URLs that are kept: history, base URLs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def one_line(text: str) -> str:
    """`text` with control characters escaped (CR LF as \\r\\n): upstream wrote parts of our
    error messages (file names, parser complaints), and they go into log lines and headers."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def trust_store(environ: Mapping[str, str] = os.environ) -> ssl.SSLContext:
    """Verify upstream TLS against SSL_CERT_FILE / REQUESTS_CA_BUNDLE when set (an intercepting
    egress proxy's CA is often only there), else the default store."""
    return ssl.create_default_context(cafile=ca_file(environ))


def ca_file(environ: Mapping[str, str] = os.environ) -> str | None:
    """The CA bundle SSL_CERT_FILE or REQUESTS_CA_BUNDLE names, if it is a file."""
    cafile = environ.get("SSL_CERT_FILE") or environ.get("REQUESTS_CA_BUNDLE")
    return cafile if cafile and os.path.isfile(cafile) else None


BULK_DOWNLOADS = 64  # whole-file downloads from upstream at once (src/datepin/fileserver.py)


class Upstream:
    """Owns the aiohttp session.  Construct inside the running loop."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        deadline: float = 60.0,
        max_page_bytes: int = MAX_PAGE_BYTES,
    ) -> None:
        self.timeout = timeout
        # A page that trickles in, each read within `timeout`, would hold its clients forever.
        self.deadline = deadline
        self.max_page_bytes = max_page_bytes
        self.holdoff = HoldOff()
        # Room for every whole-file download datepin runs at once (BULK_DOWNLOADS) and as many
        # connections again for pages, the JSON API and small files, which so never wait for
        # a download that may last minutes (and fail after `upstream_timeout`).  One pool:
        # a cold install's wheels reuse the connections (TLS handshakes, on PyPI) that its
        # `.metadata` files opened.
        connector = aiohttp.TCPConnector(ssl=trust_store(), limit=2 * BULK_DOWNLOADS, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(
            connector=connector,
            # One session asks upstream for every client: a cookie set for one (a registry's
            # session, after it accepted their credentials) must never go out for another.
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
            auto_decompress=True,
            trust_env=False,
        )

    async def close(self) -> None:
        await self.session.close()

    async def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
        via: Via | None = None,
    ) -> Fetched:
        """GET a page into memory (index pages and JSON only; files are streamed elsewhere),
        through the egress proxy `via` if any.

        The limit counts decoded bytes, so a small gzip body cannot blow up in memory."""
        if (held := self.holdoff.check(url)) is not None:
            raise held_error(url, held)
        shown = mask_url(url)
        log.debug("GET %s", shown)
        # The configured limit is named in the error, so that whoever meets it knows what to raise.
        setting = " (max_page_size)" if max_bytes is None else ""
        max_bytes = self.max_page_bytes if max_bytes is None else max_bytes
        deadline = asyncio.timeout(self.deadline)
        try:
            options = request_options(url, dict(headers or {}), via)
            async with deadline, self.session.get(url, **options) as resp:
                if resp.status == 407 and via is not None:
                    raise UpstreamError(f"{shown}: {via.refused()}")
                if resp.status in THROTTLED:
                    self.holdoff.note(url, resp.status, resp.headers)
                # One growing buffer rather than a list of pieces joined at the end: a big
                # page's pieces would leave a hole of its size in the C heap, and the join
                # would hold it twice (bench/run, growth: a 12 MB page).
                body = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > max_bytes:
                        raise UpstreamError(f"{shown} sent more than {max_bytes} bytes{setting}")
                log.debug("GET %s: HTTP %d, %d bytes", shown, resp.status, len(body))
                return Fetched(
                    status=resp.status,
                    url=strip_userinfo(str(resp.url)),
                    content_type=resp.headers.get("Content-Type", ""),
                    body=body,
                    headers={k: v for k, v in resp.headers.items()},
                    redirected=bool(resp.history),
                )
        except TimeoutError:
            if deadline.expired():
                raise UpstreamError(
                    f"{shown} sent no complete answer within {self.deadline:g}s (page_deadline)",
                    status=504,
                ) from None
            raise UpstreamError(f"{shown} timed out after {self.timeout:g}s", status=504) from None
        except aiohttp.ClientError as e:  # a body cut short or undecodable, too
            raise UpstreamError(f"{shown}: {describe(e, via)}") from None
        except asyncio.CancelledError:
            raise


def describe(e: BaseException, via: Via | None = None) -> str:
    """A one-line reason for a network error, without credentials; one the egress proxy
    `via` caused names it."""
    if via is not None and isinstance(e, aiohttp.ClientHttpProxyError):  # its CONNECT refused
        if e.status == 407:
            return via.refused()
        return f"the upstream proxy {via.url} ({via.key}) answered HTTP {e.status} to CONNECT"
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not trusted ({e.certificate_error})"
    if isinstance(e, aiohttp.ClientConnectorDNSError):
        reason = "host name not found"
    elif isinstance(e, aiohttp.ClientConnectorError):
        reason = f"cannot connect ({e.os_error.strerror or e.os_error})"
    else:
        return _describe_exchange(e)
    if via is not None and not isinstance(e, aiohttp.ClientSSLError):
        # Through a proxy, every connection datepin opens is to the proxy.
        return f"upstream proxy {via.url} ({via.key}): {reason}"
    return reason


def _describe_exchange(e: BaseException) -> str:
    if isinstance(e, aiohttp.TooManyRedirects):
        return f"too many redirects ({len(e.history)})"
    if isinstance(e, aiohttp.ClientResponseError):
        # Raised by aiohttp's parser (its `status` is the parser's own 400): answers with an
        # upstream status are read, not raised, so this one is never "upstream said 400".
        return f"unreadable HTTP answer ({one_line(str(e.message))[:200]})"
    if isinstance(e, aiohttp.ClientPayloadError):
        if isinstance(e.__cause__, ContentEncodingError):
            return f"cannot decode the body ({one_line(str(e.__cause__.message)).strip()})"
        return f"body cut short ({one_line(str(e))})"
    return one_line(f"{type(e).__name__}: {e}".rstrip(": "))
