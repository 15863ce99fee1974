"""Answering requests: sort each one, call the index and the file server, build the reply.

No business logic here: routing is `routes`, semantics are `service`/`views`, bytes are
`rewrite`, files are `fileserver`.  Requests arrive as an `Ask` and leave as a `Reply`, whichever
server carried them: path-mode ones from datepin's own HTTP server (`front`), the rest from
mitmproxy, whose hooks (and the flows they carry) live here too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

from mitmproxy import connection, ctx, http
from packaging.utils import NormalizedName

from datepin import forward, routes
from datepin.auth import CHALLENGE
from datepin.config import Config, Registry
from datepin.fileserver import (
    FileServer,
    FillError,
    file_target,
    fill_error_headers,
    fill_error_text,
)
from datepin.history import StoredFile, file_key
from datepin.model import DistFile
from datepin.pages import Page, PageCache, build_page
from datepin.pins import Pin, PinError, format_time, parse_pin
from datepin.rewrite.filenames import project_of
from datepin.rewrite.negotiate import choose_format, content_type
from datepin.rewrite.render import (
    LinkFn,
    iter_html,
    iter_json,
    release_named,
    render_json_api,
    render_root_html,
    render_root_json,
)
from datepin.service import Index, NotObserved
from datepin.upstream import UpstreamError, mask_url, one_line

log = logging.getLogger(__name__)

PAGE_VARY = "Accept, Accept-Encoding"
STREAM_FLAG = "datepin-stream"


class HeaderLookup(Protocol):
    """Request headers, looked up case-insensitively (mitmproxy's and aiohttp's both are)."""

    def get(self, key: str, /) -> str | None: ...

    def __contains__(self, key: object, /) -> bool: ...


@dataclass(frozen=True, slots=True)
class Ask:
    """A request as the answering code reads it, whichever server received it."""

    method: str
    path: str  # origin-form: path and query
    headers: HeaderLookup
    host: str  # how the client named the host it asked (Host), for links back to the proxy


@dataclass(slots=True)
class Reply:
    """An answer: a whole body, or a `ticket` for the file server, which streams the file."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # None: the status code's own phrase
    ticket: str | None = None


def text_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    text = message if message.endswith("\n") else message + "\n"
    return Reply(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})


def json_response(status: int, data: object, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


def error_response(
    e: UpstreamError, *, json_api: bool = False, headers: Mapping[str, str] | None = None
) -> Reply:
    """An upstream failure or refusal as an answer; a 401 carries a challenge.

    A failure (5xx) is logged, one line per answer, as an answer from history is: an operator
    learns that upstream is down from the log.  Refused client credentials (401, 403) are the
    client's to fix, not the operator's."""
    if e.status >= 500:
        log.warning("%d to a client: %s", e.status, e)
    extra = dict(headers or {})
    if e.status == 401:
        extra["WWW-Authenticate"] = CHALLENGE
    if e.retry_after is not None:
        extra["Retry-After"] = str(e.retry_after)
    if json_api:
        return json_response(e.status, {"message": str(e)}, extra)
    return text_response(e.status, str(e), extra)


def refusal(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    """An answer to CONNECT that says why: pip shows only the status line of a refused
    tunnel ("Tunnel connection failed: 407 <reason>"), so the reason phrase carries it too."""
    reply = text_response(status, message, headers)
    reason = " ".join(message.split())
    reply.reason = "".join(c for c in reason if " " <= c <= "~")[:400]
    return reply


def to_response(reply: Reply) -> http.Response:
    """A reply as mitmproxy sends it.  The body is set as is: a gzipped page must not be
    encoded again by mitmproxy's `content` setter."""
    response = http.Response.make(reply.status, b"", reply.headers)
    response.raw_content = reply.body
    response.headers["Content-Length"] = str(len(reply.body))
    if reply.reason is not None:
        response.reason = reply.reason
    return response


def ask_from(flow: http.HTTPFlow) -> Ask:
    request = flow.request
    return Ask(request.method, request.path, request.headers, request.host_header or request.pretty_host)


def pin_headers(pin: Pin, kind: str | None = None, *, applied: Pin | None = None) -> dict[str, str]:
    """The pin as the client wrote it (canonical), and the cutoff of the pin `applied` to the
    project answered (its override, if the pin has one for it; else the pin itself)."""
    headers = {"Datepin-Pin": pin.text}
    cutoff = (applied or pin).cutoff
    if cutoff is not None:
        headers["Datepin-Cutoff"] = format_time(cutoff)
    if kind:
        headers["Datepin-View"] = kind
    return headers


def warning_header(text: str) -> str:
    """A `Warning: 110` value (RFC 7234 5.5): warn-text is a quoted-string, kept ASCII and on
    one line whatever the message holds (parts of it come from upstream)."""
    text = one_line(text).encode("ascii", "backslashreplace").decode()
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'110 datepin "{quoted}"'


def path_links(base: str, registry: str) -> LinkFn:
    """Path mode: file links point back to the proxy at date-independent URLs."""

    def link(f: DistFile) -> str:
        name = f.filename if _QUOTE_KEEPS.match(f.filename) else quote(f.filename)
        return f"{base}/files/{registry}/{file_key(f)}/{name}"

    return link


# What quote() leaves as it is: a file name of these characters (nearly every one) is used
# as it is (with single hashes not sorted either, a 20,000-file page renders in 130 ms, not
# 157).
_QUOTE_KEEPS = re.compile(r"[A-Za-z0-9_.~-]*\Z")


class DatepinAddon:
    def __init__(
        self,
        config: Config,
        index: Index,
        files: FileServer,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.index = index
        self.files = files
        self.clock = clock
        self.pages = PageCache()
        self.requests: dict[str, int] = {}
        # Project pages sent from memory (fixed views, and live ones the project has not
        # changed since) and pages rendered from a view.
        self.pages_from_memory = 0
        self.pages_rendered = 0
        self.listening: list[tuple[str, int]] = []
        self.intercepted = forward.intercepted_hosts(config)
        self.connect_pins: dict[str, Pin] = {}  # client connection id -> pin from CONNECT

    # -- mitmproxy hooks -----------------------------------------------------------------

    def running(self) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
        self.listening = [(a[0], a[1]) for a in proxyserver.listen_addrs()]

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A tunnel request (HTTPS_PROXY): refuse it, or remember the pin its credentials name.

        Only hosts in `allow_hosts` are decrypted; every other tunnel is passed through
        untouched by mitmproxy, unless `refuse_other_hosts` says to refuse it here."""
        authorization = flow.request.headers.pop("Proxy-Authorization", None)
        host, port = flow.request.host, flow.request.port
        if (host, port) not in self.intercepted:
            if self.config.refuse_other_hosts:
                flow.response = to_response(refusal(403, self._refused_host(host, port)))
            return
        if authorization is None:
            return
        try:
            pin = forward.pin_from_credentials(authorization, now=self.clock())
        except PinError as e:
            flow.response = to_response(self._bad_credentials(e))
            return
        self.connect_pins[flow.client_conn.id] = pin

    def client_disconnected(self, client: connection.Client) -> None:
        self.connect_pins.pop(client.id, None)

    async def request(self, flow: http.HTTPFlow) -> None:
        if self._is_path_mode(flow):
            reply = await self.answer(ask_from(flow))
        elif flow.client_conn.tls or self._is_forward_http(flow):
            reply = await self._answer_forward(flow)
        else:
            self._pass_on(flow)
            return
        if reply.ticket is not None:
            self._send_to_file_server(flow, reply.ticket)
        else:
            # Always an answer: unanswered, mitmproxy would pass the request on to its
            # target (pypi.org, or for a path-mode request this proxy itself).
            flow.response = to_response(reply)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(STREAM_FLAG) and flow.response is not None:
            flow.response.stream = True

    # -- classification ------------------------------------------------------------------

    def _is_path_mode(self, flow: http.HTTPFlow) -> bool:
        """Origin-form requests aimed at the proxy itself.  Anything else that reaches this
        hook unanswered would make mitmproxy connect onward, so requests to the proxy's own
        port are always ours."""
        if flow.client_conn.tls:
            return False
        sockname = flow.client_conn.sockname
        return bool(sockname) and flow.request.port == sockname[1]

    def _is_forward_http(self, flow: http.HTTPFlow) -> bool:
        """A plain-HTTP request through the proxy (HTTP_PROXY) for an intercepted host."""
        request = flow.request
        return request.scheme == "http" and (request.host, request.port) in self.intercepted

    def _pass_on(self, flow: http.HTTPFlow) -> None:
        """Plain HTTP through the proxy to a host datepin does not serve."""
        flow.request.headers.pop("Proxy-Authorization", None)
        if self.config.refuse_other_hosts:
            flow.response = to_response(
                text_response(403, self._refused_host(flow.request.host, flow.request.port))
            )

    def _refused_host(self, host: str, port: int) -> str:
        served = ", ".join(sorted({h for h, _ in self.intercepted}))
        return (
            f"datepin refuses to connect to {host}:{port}: this proxy serves only {served} "
            f"(refuse_other_hosts = true in {self.config.source})"
        )

    # -- answering -----------------------------------------------------------------------

    async def answer(self, ask: Ask) -> Reply:
        """A path-mode request's answer (`front` calls this for every one)."""
        route = routes.route_path(ask.method, ask.path)
        return await self._answered(ask, route, self._serve(ask, route))

    async def _answered(self, ask: Ask, route: routes.Route, serving: Awaitable[Reply]) -> Reply:
        self.requests[type(route).__name__] = self.requests.get(type(route).__name__, 0) + 1
        try:
            reply = await serving
        except UpstreamError as e:
            reply = error_response(e)
        except Exception:
            # A bug, not a condition: say so.
            log.exception("%s %s%s failed", ask.method, ask.host, mask_url(ask.path))
            reply = text_response(500, "datepin: internal error (details in its log)")
        if ask.method == "HEAD":
            reply.body = b""
        if log.isEnabledFor(logging.DEBUG):  # serve -v: what each client asked, and got
            answer = "file" if reply.ticket is not None else reply.status
            log.debug("%s %s%s: %s", ask.method, ask.host, mask_url(ask.path), answer)
        return reply

    # -- path mode -----------------------------------------------------------------------

    async def _serve(self, ask: Ask, route: routes.Route) -> Reply:
        match route:
            case routes.Help():
                return self._help(ask)
            case routes.Health():
                return text_response(200, "ok")
            case routes.Metrics():
                return Reply(200, self._metrics(), {"Content-Type": "text/plain; version=0.0.4"})
            case routes.Redirect(location):
                return Reply(301, headers={"Location": location})
            case routes.Reject(status, message):
                return text_response(status, message)
            case routes.Root() | routes.Project() | routes.JsonApi():
                try:
                    pin = self._pin(route.pin)
                except PinError as e:
                    return self._bad_pin(route, e)
                return await self._serve_index(ask, route, pin, forward_mode=False)
            case routes.File():
                return await self._serve_file(ask, route)
            case _:
                return text_response(404, routes.NOT_FOUND_HELP)

    def _pin(self, text: str) -> Pin:
        return parse_pin(text, now=self.clock())

    @staticmethod
    def _bad_credentials(e: PinError) -> Reply:
        """407 for a pin in the proxy credentials that can't be read.  Of the answers tried,
        this one reads best: pip prints the reason phrase ("Tunnel connection failed: 407
        datepin: '2023-13-45' is not a pin: ..."), uv prints "tunnel error: proxy
        authorization required" (uv shows no text of a refused tunnel or of an error page)."""
        return refusal(
            407, f"datepin: {e}", {"Proxy-Authenticate": 'Basic realm="datepin: user name = pin"'}
        )

    @staticmethod
    def _bad_pin(route: routes.Route, e: PinError) -> Reply:
        if isinstance(e, forward.CredentialsError):
            return DatepinAddon._bad_credentials(e)
        if isinstance(route, routes.JsonApi):
            return json_response(400, {"message": str(e)})
        return text_response(400, str(e))

    # -- forward mode --------------------------------------------------------------------

    def _route_forward(self, flow: http.HTTPFlow) -> routes.Route:
        request = flow.request
        host = request.pretty_host
        if host not in (forward.INDEX_HOST, forward.FILES_HOST):
            registry = forward.intercepted_registry(
                self.config, request.host, request.port, request.path
            )
            if registry is not None:
                return routes.route_registry_forward(
                    request.method, registry.name, registry.url, request.url
                )
            # A decrypted connection carrying a request for another host: never forward it.
            return routes.Reject(421, f"datepin serves only {forward.INDEX_HOST} and "
                                      f"{forward.FILES_HOST} on this connection, not {host}")
        return routes.route_forward(
            request.method, host, request.path, index_host=host == forward.INDEX_HOST
        )

    async def _answer_forward(self, flow: http.HTTPFlow) -> Reply:
        route, ask = self._route_forward(flow), ask_from(flow)
        return await self._answered(ask, route, self._serve_forward(flow, ask, route))

    async def _serve_forward(self, flow: http.HTTPFlow, ask: Ask, route: routes.Route) -> Reply:
        authorization = flow.request.headers.pop("Proxy-Authorization", None)
        match route:
            case routes.Root() | routes.Project() | routes.JsonApi():
                try:
                    pin = forward.select_pin(
                        flow.request.headers.get(forward.PIN_HEADER),
                        authorization,
                        self.connect_pins.get(flow.client_conn.id),
                        self.config.default_pin,
                        now=self.clock(),
                    )
                except PinError as e:
                    return self._bad_pin(route, e)
                return await self._serve_index(ask, route, pin, forward_mode=True)
            case routes.UpstreamFile(url):
                return await self._serve_upstream_file(ask, flow.request, url)
            case routes.Redirect(location):
                return Reply(301, headers={"Location": location})
            case routes.Reject(status, message):
                return text_response(status, message)
            case _:
                return text_response(404, f"datepin does not serve {flow.request.url}")

    async def _serve_upstream_file(self, ask: Ask, request: http.Request, url: str) -> Reply:
        if request.pretty_host == forward.FILES_HOST:
            registries = [self.config.pypi]
            find = functools.partial(self._find_upstream_file, urlsplit(url).path)
        else:
            registries = forward.intercepted_registries(self.config, request.host, request.port)
            find = functools.partial(self._find_registry_file, url, registries)
        stored, metadata = await asyncio.to_thread(find)
        if stored is None:
            filename = unquote(urlsplit(url).path.rpartition("/")[2]).removesuffix(".metadata")
            failed = await self._look_up(ask, registries, filename)
            stored, metadata = await asyncio.to_thread(find)
            if stored is None and failed is not None:
                return error_response(failed)
        if stored is None:
            return text_response(404, f"{url}: datepin has never listed this file")
        registry = self.config.registry(stored.registry)
        if registry is None:
            return text_response(404, f"no registry named {stored.registry!r} in the config")
        return await self._send_stored(ask, stored, registry, metadata)

    def _find_upstream_file(self, path: str) -> tuple[StoredFile | None, bool]:
        """The file a files.pythonhosted.org path stands for, and whether the path asks for
        its PEP 658 `.metadata` file.  Runs in a thread (SQLite)."""
        files_url = self.config.files_url
        return self._find_by_url(
            lambda p: forward.upstream_file_urls(p, files_url), path, registry=None
        )

    def _find_registry_file(
        self, url: str, registries: list[Registry]
    ) -> tuple[StoredFile | None, bool]:
        """A file on an intercepted registry's host, by its URL (or its `.metadata`), only
        if one of the registries at that host listed it.  Runs in a thread (SQLite)."""
        if not registries:
            return None, False
        names = frozenset(r.name for r in registries)
        return self._find_by_url(forward.registry_file_urls, url, registry=names)

    def _find_by_url(
        self,
        urls: Callable[[str], list[str]],
        where: str,
        *,
        registry: frozenset[str] | None,
    ) -> tuple[StoredFile | None, bool]:
        """Look a file up by the upstream URLs `where` may stand for, then, for a `.metadata`
        path, the file it belongs to; with `registry`, only a file one of those registries
        listed."""
        attempts = [(where, False)]
        if where.endswith(".metadata"):
            attempts.append((where.removesuffix(".metadata"), True))
        for candidate, metadata in attempts:
            for url in urls(candidate):
                stored = self.index.history.find_file_by_url(url)
                if stored is not None and (registry is None or stored.registry in registry):
                    return stored, metadata
        return None, False

    # -- pages ---------------------------------------------------------------------------

    async def _serve_index(
        self,
        ask: Ask,
        route: routes.Root | routes.Project | routes.JsonApi,
        pin: Pin,
        *,
        forward_mode: bool,
    ) -> Reply:
        json_api = isinstance(route, routes.JsonApi)
        registry = self.config.registry(route.registry)
        if registry is None:
            return text_response(404, f"no registry named {route.registry!r} in the config")
        # Only a passthrough registry ever sees it (DESIGN.md "Extra registries").
        authorization = ask.headers.get("Authorization")
        if isinstance(route, routes.Root):
            return await self._root(ask, pin, registry, authorization, forward_mode)
        if forward_mode:
            base = "forward"
            link = forward.forward_links(self.config.files_url)
        else:
            base = f"http://{ask.host}"
            link = path_links(base, registry.name)
        fmt = choose_format(ask.headers.get("Accept"))
        # Everything about the project is answered at the pin applied to it (an override).
        applied = pin.for_project(route.project)
        form = ("json-api", route.version) if isinstance(route, routes.JsonApi) else fmt
        key = (registry.name, route.project, applied.cutoff, form, base)
        # A fixed view's page or JSON API document is answered from memory, with no history
        # read at all, and so is a live page until the project changes (a 15,000-file
        # project's history read and its view took 0.3 s a request); never for a passthrough
        # registry, whose pages only clients upstream accepts may see.
        cacheable = registry.auth != "passthrough" and not (json_api and applied.cutoff is None)
        held = self.pages.get(key) if cacheable else None
        if held is not None and self._still_live(held, registry, route.project):
            return self._send_held(ask, held, pin, applied, forward_mode)
        # A live page held since a change that the project's next observation may show is
        # still its last: then it is sent without history read or rendered again.
        since = None if held is None else held.changed_at
        try:
            await self.index.authorize(registry, route.project, authorization)
            answer = await self.index.answer(
                registry, route.project, pin, authorization=authorization, unchanged_since=since
            )
        except NotObserved:
            message = f"{route.project} is not on {registry.name}"
            return self._not_found(json_api, message, pin_headers(pin, applied=applied))
        except UpstreamError as e:
            return error_response(e, json_api=json_api, headers=pin_headers(pin, applied=applied))
        view = answer.view
        if view is None:
            assert held is not None
            return self._send_held(ask, held, pin, applied, forward_mode)
        headers = pin_headers(pin, view.kind, applied=applied)
        if not view.files:
            when = f"before {format_time(applied.cutoff)}" if applied.cutoff else "upstream now"
            return self._not_found(json_api, f"{route.project} has no files {when}", headers)
        private = registry.auth == "passthrough"
        if answer.warning:
            headers["Warning"] = warning_header(answer.warning)
        # Caches may keep it for its max-age: not answered from history for want of upstream.
        settled = answer.warning is None and (applied.cutoff is None or answer.fixed)
        if isinstance(route, routes.JsonApi):
            # Check the version first: release_info asks upstream for what history lacks, and
            # a version outside the view must not cost an upstream request (a fixed view is
            # answered from history alone).
            version = route.version
            if version is not None:
                # As PyPI: an equal version spelled otherwise (1.0.0 for 1.0) is that release.
                version = release_named(view.versions, version)
                if version is None:
                    return self._not_found(True, "release not found", headers)
            try:
                info = await self.index.release_info(
                    registry, view, version, authorization=authorization
                )
            except UpstreamError as e:
                return error_response(e, json_api=True, headers=headers)
            if info is None:
                return self._not_found(True, "release not found", headers)
            # A fixed view's release info is kept too (fetched once, or read from a kept file).
            body = render_json_api(view, info[1], link, version=version)
            page = build_page([body], "application/json", view.kind)
        else:
            chunks = iter_json(view, link) if fmt == "v1+json" else iter_html(view, link)
            page = build_page(chunks, content_type(fmt), view.kind)
        self.pages_rendered += 1
        if cacheable and answer.fixed:
            self.pages.put(key, page)
        elif cacheable and applied.cutoff is None and answer.changed_at and not answer.warning:
            self.pages.put(key, replace(page, changed_at=answer.changed_at))
        return self._send_page(
            ask, page, headers, applied, forward_mode, private=private, settled=settled
        )

    def _still_live(self, page: Page, registry: Registry, project: NormalizedName) -> bool:
        """Whether a held page may be sent as it is: a fixed view's always, a live one while
        the project, observed within `live_ttl`, has not changed since it was made."""
        return page.changed_at is None or page.changed_at == self.index.live_since(registry, project)

    def _send_held(
        self, ask: Ask, page: Page, pin: Pin, applied: Pin, forward_mode: bool
    ) -> Reply:
        self.pages_from_memory += 1
        headers = pin_headers(pin, page.kind, applied=applied)
        return self._send_page(ask, page, headers, applied, forward_mode)

    async def _root(
        self,
        ask: Ask,
        pin: Pin,
        registry: Registry,
        authorization: str | None,
        forward_mode: bool,
    ) -> Reply:
        names = await self.index.visible_names(registry, authorization)
        fmt = choose_format(ask.headers.get("Accept"))
        body = render_root_json(names) if fmt == "v1+json" else render_root_html(names)
        private = registry.auth == "passthrough"
        return self._page(
            ask, [body], content_type(fmt), pin_headers(pin), pin, forward_mode, private=private
        )

    def _not_found(self, json_api: bool, message: str, headers: dict[str, str]) -> Reply:
        if json_api:
            return json_response(404, {"message": "Not Found", "detail": message}, headers)
        return text_response(404, message, headers)

    def _page(
        self,
        ask: Ask,
        chunks: Iterable[bytes],
        ctype: str,
        headers: dict[str, str],
        pin: Pin,
        forward_mode: bool = False,
        *,
        private: bool = False,
        settled: bool = True,
    ) -> Reply:
        return self._send_page(
            ask, build_page(chunks, ctype), headers, pin, forward_mode, private=private,
            settled=settled,
        )

    def _send_page(
        self,
        ask: Ask,
        page: Page,
        headers: dict[str, str],
        pin: Pin,
        forward_mode: bool = False,
        *,
        private: bool = False,
        settled: bool = True,
    ) -> Reply:
        """Answer with a rendered page: strong ETag per body, cutoff and encoding, 304, gzip.
        `pin`: the pin the page is at (a project's override, if it has one), whose cutoff the
        ETag names and the cache lifetime follows.  `private`: a passthrough registry's page,
        which no shared cache may keep.  `settled` False: answered from history because
        upstream failed, so it may change once upstream answers (a pinned view lacking what
        came after the last look; live's last look)."""
        cutoff = format_time(pin.cutoff) if pin.cutoff else "live"
        gz = "gzip" in (ask.headers.get("Accept-Encoding") or "")
        body, gzipped = page.body(gzip_ok=gz)
        etag = f'"{page.digest}-{cutoff}{"-gz" if gz else ""}"'
        headers = {
            **headers,
            "Content-Type": page.content_type,
            "Vary": PAGE_VARY,
            "ETag": etag,
            "Cache-Control": self._page_cache_control(pin, forward_mode, private, settled),
        }
        if _none_match(ask.headers.get("If-None-Match"), etag):
            return Reply(304, headers=headers)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return Reply(200, body, headers)

    def _page_cache_control(self, pin: Pin, forward_mode: bool, private: bool, settled: bool) -> str:
        scope = "private" if private else "public"
        # Forward mode: one URL, a page per pin: a client's cache must ask again every time
        # (the ETag names the cutoff, so a revalidation under another pin gets the other
        # page).  A page not settled changes once upstream answers: asked again too.
        if forward_mode or not settled:
            return "no-cache, private" if private else "no-cache"
        if pin.cutoff is None:
            return f"max-age=60, {scope}"
        return f"max-age=600, {scope}"

    def _help(self, ask: Ask) -> Reply:
        return text_response(200, HELP.format(host=ask.host or "127.0.0.1:8080"))

    def _metrics(self) -> bytes:
        lines = [
            f"datepin_observations_total {self.index.observations}",
            f"datepin_pages_not_modified_total {self.index.pages_not_modified}",
            f"datepin_upstream_failures_total {self.index.upstream_failures}",
            f"datepin_access_checks_total {self.index.access_checks}",
            f"datepin_access_denied_total {self.index.access_denied}",
            f"datepin_pages_from_memory_total {self.pages_from_memory}",
            f"datepin_pages_rendered_total {self.pages_rendered}",
        ]
        for name, value in sorted(self.requests.items()):
            lines.append(f'datepin_requests_total{{route="{name}"}} {value}')
        for name, value in sorted(self.files.counters.items()):
            lines.append(f"datepin_files_{name}_total {value}")
        lines.append(f"datepin_files_in_progress {self.files.in_progress}")
        return ("\n".join(lines) + "\n").encode()

    # -- files ---------------------------------------------------------------------------

    async def _serve_file(self, ask: Ask, route: routes.File) -> Reply:
        registry = self.config.registry(route.registry)
        if registry is None:
            # Also keeps the files of a registry dropped from the config from going public.
            return text_response(404, f"no registry named {route.registry!r} in the config")
        # One indexed read (WAL: readers never wait for writers), so "made tiny" rather than
        # a thread-pool hop (STYLE.md rule 3): on a busy proxy each hop cost ~0.5 ms CPU.
        find = functools.partial(
            self.index.history.find_file, route.registry, route.key, route.filename
        )
        stored = find()
        if stored is None:
            failed = await self._look_up(ask, [registry], route.filename)
            stored = find()
            if stored is None and failed is not None:
                return error_response(failed)
        if stored is None or stored.file.filename != route.filename:
            return text_response(404, f"{route.filename}: datepin has never listed this file")
        return await self._send_stored(ask, stored, registry, route.metadata)

    async def _look_up(
        self, ask: Ask, registries: Iterable[Registry], filename: str
    ) -> UpstreamError | None:
        """For a file this datepin never listed: have the project its name names in history as
        each registry lists it now (lock files keep datepin's file URLs, and one made through
        another datepin, CI's or a colleague's, names files this one never saw; upstream's
        page says whether the project has a file of that name and sha256).  Returns the
        first upstream failure, for want of the file."""
        project = project_of(filename)
        if project is None:
            return None
        failed = None
        for registry in registries:
            try:
                await self.index.look_up(registry, project, ask.headers.get("Authorization"))
            except NotObserved:
                continue
            except UpstreamError as e:
                failed = failed or e
        return failed

    async def _send_stored(
        self, ask: Ask, stored: StoredFile, registry: Registry, metadata: bool
    ) -> Reply:
        """Serve a file history knows (path mode's /files/, forward mode's file host)."""
        authorization = ask.headers.get("Authorization")
        try:
            # Passthrough: stored or not, a file goes only to clients upstream accepts for
            # its project (the project comes from history).
            await self.index.authorize(registry, stored.project, authorization)
        except NotObserved:
            return text_response(404, f"{stored.project} is not on {registry.name}")
        except UpstreamError as e:
            return error_response(e)
        if metadata and stored.file.core_metadata is None:
            return text_response(404, f"{stored.file.filename} has no .metadata file")
        stored = await self._signed_anew(ask, stored, registry, metadata)
        on_commit = None
        if stored.sha256 is None and not metadata:
            history, name, key = self.index.history, registry.name, stored.key
            filename = stored.file.filename

            def on_commit(computed: str, size: int) -> None:
                history.set_sha256(name, key, filename, computed)

        url = stored.file.url + (".metadata" if metadata else "")
        on_refused = None
        if registry.auth == "passthrough":
            # The file's refusal ends this client's access as a page's would (DESIGN.md: fail
            # closed): stored files of the project wait for upstream to accept it again.
            on_refused = functools.partial(
                self.index.refused, registry, stored.project, authorization
            )
        target = file_target(
            stored.file,
            sha256=stored.sha256,
            metadata=metadata,
            irreplaceable=not stored.present,
            on_commit=on_commit,
            upstream_headers=self.index.upstream_headers(registry, url, authorization),
            private=registry.auth == "passthrough",
            on_refused=on_refused,
            via=self.index.via(registry),
        )
        try:
            small = await self.files.small(target) if _plain_get(ask) else None
        except FillError as e:
            return text_response(e.status, fill_error_text(target, e), fill_error_headers(e))
        if small is not None:
            data, headers = small
            return Reply(200, data, headers)
        return Reply(200, ticket=self.files.ticket(target))

    async def _signed_anew(
        self, ask: Ask, stored: StoredFile, registry: Registry, metadata: bool
    ) -> StoredFile:
        """The file as upstream lists it now, when the URL history has for it is presigned
        and the file must be fetched (Index.signed_anew)."""
        if "?" not in stored.file.url or metadata:
            return stored
        if self.files.is_stored(file_target(stored.file, sha256=stored.sha256)):
            return stored
        fresh = await self.index.signed_anew(
            registry, stored.project, stored.key, stored.file.filename,
            ask.headers.get("Authorization"),
        )
        return stored if fresh is None else fresh

    def _send_to_file_server(self, flow: http.HTTPFlow, ticket: str) -> None:
        """Point the flow at the internal file server, which streams with bounded memory."""
        for header in ("Proxy-Authorization", "Authorization", "Cookie"):
            flow.request.headers.pop(header, None)
        flow.request.scheme = "http"
        flow.request.host = "127.0.0.1"
        flow.request.port = self.files.port
        flow.request.path = ticket
        flow.metadata[STREAM_FLAG] = True


def _none_match(header: str | None, etag: str) -> bool:
    """Whether If-None-Match names `etag`, compared weakly (RFC 9110 13.1.2), or is `*`."""
    tags = [t.strip() for t in (header or "").split(",")]
    return "*" in tags or etag in [t.removeprefix("W/") for t in tags]


def _plain_get(ask: Ask) -> bool:
    """A GET the file server would answer with the whole file: no range, no condition."""
    conditional = ("Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since")
    return ask.method == "GET" and not any(h in ask.headers for h in conditional)


HELP = """\
datepin: Python package indexes as they were at a chosen moment.

Pick a pin: a date (2023-11-18 = the start of that day, UTC), an RFC 3339 timestamp
(2023-11-18T14:05:00Z), or 'live'. Then:

  pip     pip install -i http://{host}/2023-11-18/simple onnx==1.14.0
          (or PIP_INDEX_URL=http://{host}/2023-11-18/simple)
  uv      UV_DEFAULT_INDEX=http://{host}/2023-11-18/simple uv pip install ... (or uv lock)
          (uv add/lock: [[tool.uv.index]] url = "http://{host}/2023-11-18/simple", default = true)
  Poetry  poetry source add --priority=primary datepin http://{host}/2023-11-18/simple
  PDM     [[tool.pdm.source]] name = "pypi", url = "http://{host}/2023-11-18/simple"
  Docker  build with HTTPS_PROXY=http://2023-11-18:x@{host} and datepin's CA trusted;
          `datepin env --mode forward --pin 2023-11-18` prints what to set.

Other pins for some projects (old sdists build with a newer setuptools):
  http://{host}/2018-06-01,setuptools=live,wheel=live/simple
Extra registries from proxy.toml: http://{host}/<pin>/r/<name>/
JSON API: http://{host}/<pin>/pypi/<project>/json
Health: /-/health   Metrics: /-/metrics
"""
