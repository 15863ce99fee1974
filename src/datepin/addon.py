"""mitmproxy glue: sort each request, call the index and the file server, build responses.

No business logic here: routing is `routes`, semantics are `service`/`views`, bytes are
`rewrite`, files are `fileserver`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from urllib.parse import quote

from mitmproxy import ctx, http

from datepin import routes
from datepin.config import Config, Registry
from datepin.fileserver import FileServer, FileTarget
from datepin.history import file_key
from datepin.model import DistFile, View
from datepin.pages import Page, PageCache, build_page
from datepin.pins import Pin, PinError, format_time, parse_pin
from datepin.rewrite.negotiate import choose_format, content_type
from datepin.rewrite.render import (
    LinkFn,
    iter_html,
    iter_json,
    render_json_api,
    render_root_html,
    render_root_json,
)
from datepin.service import Index, NotObserved
from datepin.upstream import UpstreamError

log = logging.getLogger(__name__)

PAGE_VARY = "Accept, Accept-Encoding"
STREAM_FLAG = "datepin-stream"


def text_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> http.Response:
    return http.Response.make(
        status,
        message if message.endswith("\n") else message + "\n",
        {"Content-Type": "text/plain; charset=utf-8", **(headers or {})},
    )


def json_response(status: int, data: object, headers: Mapping[str, str] | None = None) -> http.Response:
    return http.Response.make(
        status, json.dumps(data), {"Content-Type": "application/json", **(headers or {})}
    )


def pin_headers(pin: Pin, kind: str | None = None) -> dict[str, str]:
    headers = {"Datepin-Pin": pin.text}
    if pin.cutoff is not None:
        headers["Datepin-Cutoff"] = format_time(pin.cutoff)
    if kind:
        headers["Datepin-View"] = kind
    return headers


def path_links(base: str, registry: str) -> LinkFn:
    """Path mode: file links point back to the proxy at date-independent URLs."""

    def link(f: DistFile) -> str:
        return f"{base}/files/{registry}/{file_key(f)}/{quote(f.filename)}"

    return link


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
        self.listening: list[tuple[str, int]] = []

    # -- mitmproxy hooks -----------------------------------------------------------------

    def running(self) -> None:
        proxyserver = ctx.master.addons.get("proxyserver")
        self.listening = [(a[0], a[1]) for a in proxyserver.listen_addrs()]

    async def request(self, flow: http.HTTPFlow) -> None:
        if not self._is_path_mode(flow):
            return  # not for us: mitmproxy passes it on untouched
        route = routes.route_path(flow.request.method, flow.request.path)
        self.requests[type(route).__name__] = self.requests.get(type(route).__name__, 0) + 1
        try:
            await self._serve(flow, route)
        except UpstreamError as e:
            flow.response = text_response(e.status, str(e))
        if flow.response is not None and flow.request.method == "HEAD":
            flow.response.content = b""

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

    # -- path mode -----------------------------------------------------------------------

    async def _serve(self, flow: http.HTTPFlow, route: routes.Route) -> None:
        match route:
            case routes.Help():
                flow.response = self._help(flow)
            case routes.Health():
                flow.response = text_response(200, "ok")
            case routes.Metrics():
                flow.response = http.Response.make(
                    200, self._metrics(), {"Content-Type": "text/plain; version=0.0.4"}
                )
            case routes.Redirect(location):
                flow.response = http.Response.make(301, b"", {"Location": location})
            case routes.Reject(status, message):
                flow.response = text_response(status, message)
            case routes.Root() | routes.Project() | routes.JsonApi():
                await self._serve_index(flow, route)
            case routes.File():
                await self._serve_file(flow, route)
            case _:
                flow.response = text_response(404, routes.NOT_FOUND_HELP)

    def _pin(self, text: str) -> Pin:
        return parse_pin(text, now=self.clock())

    async def _serve_index(
        self, flow: http.HTTPFlow, route: routes.Root | routes.Project | routes.JsonApi
    ) -> None:
        json_api = isinstance(route, routes.JsonApi)
        try:
            pin = self._pin(route.pin)
        except PinError as e:
            flow.response = (json_response(400, {"message": str(e)}) if json_api
                             else text_response(400, str(e)))
            return
        registry = self.config.registry(route.registry)
        if registry is None:
            flow.response = text_response(404, f"no registry named {route.registry!r} in the config")
            return
        base = f"http://{flow.request.host_header or flow.request.pretty_host}"
        if isinstance(route, routes.Root):
            flow.response = await self._root(flow, pin, registry)
            return
        fmt = choose_format(flow.request.headers.get("Accept"))
        key = (registry.name, route.project, pin.cutoff, fmt, base)
        # A fixed view's page is answered from memory, with no history read at all; never for
        # a passthrough registry, whose pages only clients upstream accepts may see.
        cacheable = not json_api and pin.cutoff is not None and registry.auth != "passthrough"
        if cacheable and (page := self.pages.get(key)) is not None:
            self._send_page(flow, page, pin_headers(pin, page.kind), pin)
            return
        try:
            answer = await self.index.answer(registry, route.project, pin)
        except NotObserved:
            flow.response = self._not_found(json_api, f"{route.project} is not on {registry.name}", pin)
            return
        except UpstreamError as e:
            flow.response = (json_response(e.status, {"message": str(e)}, pin_headers(pin))
                             if json_api else text_response(e.status, str(e), pin_headers(pin)))
            return
        view = answer.view
        if not view.files:
            when = f"before {format_time(pin.cutoff)}" if pin.cutoff else "upstream now"
            flow.response = self._not_found(json_api, f"{route.project} has no files {when}", pin, view)
            return
        link = path_links(base, registry.name)
        headers = pin_headers(pin, view.kind)
        if answer.warning:
            headers["Warning"] = f'110 datepin "{answer.warning}"'
        if isinstance(route, routes.JsonApi):
            info = await self.index.release_info(registry, view, route.version)
            if info is None or (route.version and route.version not in view.versions):
                flow.response = self._not_found(True, "release not found", pin, view)
                return
            body = render_json_api(view, info[1], link, version=route.version)
            self._page(flow, [body], "application/json", headers, pin)
            return
        chunks = iter_json(view, link) if fmt == "v1+json" else iter_html(view, link)
        page = build_page(chunks, content_type(fmt), view.kind)
        if cacheable and answer.fixed:
            self.pages.put(key, page)
        self._send_page(flow, page, headers, pin)

    async def _root(self, flow: http.HTTPFlow, pin: Pin, registry: Registry) -> http.Response:
        names = await asyncio.to_thread(self.index.history.visible_names, registry.name)
        fmt = choose_format(flow.request.headers.get("Accept"))
        body = render_root_json(names) if fmt == "v1+json" else render_root_html(names)
        self._page(flow, [body], content_type(fmt), pin_headers(pin), pin)
        assert flow.response is not None
        return flow.response

    def _not_found(self, json_api: bool, message: str, pin: Pin, view: View | None = None) -> http.Response:
        headers = pin_headers(pin, view.kind if view else None)
        if json_api:
            return json_response(404, {"message": "Not Found", "detail": message}, headers)
        return text_response(404, message, headers)

    def _page(
        self, flow: http.HTTPFlow, chunks: Iterable[bytes], ctype: str, headers: dict[str, str], pin: Pin
    ) -> None:
        self._send_page(flow, build_page(chunks, ctype), headers, pin)

    def _send_page(self, flow: http.HTTPFlow, page: Page, headers: dict[str, str], pin: Pin) -> None:
        """Answer with a rendered page: strong ETag per body and encoding, 304, gzip."""
        cutoff = format_time(pin.cutoff) if pin.cutoff else "live"
        gz = "gzip" in flow.request.headers.get("Accept-Encoding", "")
        body, gzipped = page.body(gzip_ok=gz)
        etag = f'"{page.digest}-{cutoff}{"-gz" if gz else ""}"'
        headers = {
            **headers,
            "Content-Type": page.content_type,
            "Vary": PAGE_VARY,
            "ETag": etag,
            "Cache-Control": self._page_cache_control(pin),
        }
        if etag in [t.strip() for t in flow.request.headers.get("If-None-Match", "").split(",")]:
            flow.response = http.Response.make(304, b"", headers)
            return
        response = http.Response.make(200, b"" if gzipped else body, headers)
        if gzipped:
            # Already compressed: set as is (assigning `content` would compress it again).
            response.headers["Content-Encoding"] = "gzip"
            response.raw_content = body
            response.headers["Content-Length"] = str(len(body))
        flow.response = response

    def _page_cache_control(self, pin: Pin) -> str:
        if pin.cutoff is None:
            return "max-age=60, public"
        return "max-age=600, public"

    def _help(self, flow: http.HTTPFlow) -> http.Response:
        host = flow.request.host_header or "127.0.0.1:8080"
        return http.Response.make(200, HELP.format(host=host), {"Content-Type": "text/plain; charset=utf-8"})

    def _metrics(self) -> bytes:
        lines = [
            f"datepin_observations_total {self.index.observations}",
            f"datepin_upstream_failures_total {self.index.upstream_failures}",
        ]
        for name, value in sorted(self.requests.items()):
            lines.append(f'datepin_requests_total{{route="{name}"}} {value}')
        for name, value in sorted(self.files.counters.items()):
            lines.append(f"datepin_files_{name}_total {value}")
        return ("\n".join(lines) + "\n").encode()

    # -- files ---------------------------------------------------------------------------

    async def _serve_file(self, flow: http.HTTPFlow, route: routes.File) -> None:
        # One indexed read (WAL: readers never wait for writers), so "made tiny" rather than
        # a thread-pool hop (STYLE.md rule 3): on a busy proxy each hop cost ~0.5 ms CPU.
        stored = self.index.history.find_file(route.registry, route.key)
        if stored is None or stored.file.filename != route.filename:
            flow.response = text_response(404, f"{route.filename}: datepin has never listed this file")
            return
        target = self._target(stored.file, stored.sha256, route.registry, stored.present, route.metadata)
        if target is None:
            flow.response = text_response(404, f"{route.filename} has no .metadata file")
            return
        if _plain_get(flow.request) and (small := await self.files.read_small(target)) is not None:
            data, headers = small
            flow.response = http.Response.make(200, data, headers)
            return
        self._send_to_file_server(flow, target)

    def _target(
        self, file: DistFile, sha256: str | None, registry: str, present: bool, metadata: bool
    ) -> FileTarget | None:
        if metadata:
            if file.core_metadata is None:
                return None
            return FileTarget(
                upstream_url=file.url + ".metadata",
                expected_sha256=file.core_metadata.get("sha256"),
                filename=file.filename + ".metadata",
                irreplaceable=not present,
            )
        on_commit = None
        if sha256 is None:
            key, history = file_key(file), self.index.history

            def on_commit(computed: str, size: int) -> None:
                history.set_sha256(registry, key, computed)

        return FileTarget(
            upstream_url=file.url,
            expected_sha256=sha256,
            filename=file.filename,
            size=file.size,
            irreplaceable=not present,
            on_commit=on_commit,
        )

    def _send_to_file_server(self, flow: http.HTTPFlow, target: FileTarget) -> None:
        """Point the flow at the internal file server, which streams with bounded memory."""
        ticket = self.files.ticket(target)
        for header in ("Proxy-Authorization", "Authorization", "Cookie"):
            flow.request.headers.pop(header, None)
        flow.request.scheme = "http"
        flow.request.host = "127.0.0.1"
        flow.request.port = self.files.port
        flow.request.path = ticket
        flow.metadata[STREAM_FLAG] = True


def _plain_get(request: http.Request) -> bool:
    """A GET the file server would answer with the whole file: no range, no condition."""
    conditional = ("Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since")
    return request.method == "GET" and not any(h in request.headers for h in conditional)


HELP = """\
datepin: Python package indexes as they were at a chosen moment.

Pick a pin: a date (2023-11-18 = the start of that day, UTC), an RFC 3339 timestamp
(2023-11-18T14:05:00Z), or 'live'. Then:

  pip     pip install -i http://{host}/2023-11-18/simple onnx==1.14.0
          (or PIP_INDEX_URL=http://{host}/2023-11-18/simple)
  uv      UV_INDEX_URL=http://{host}/2023-11-18/simple uv pip install ...
          (uv add/lock: [[tool.uv.index]] url = "http://{host}/2023-11-18/simple", default = true)
  Poetry  poetry source add --priority=primary datepin http://{host}/2023-11-18/simple
  PDM     [[tool.pdm.source]] name = "pypi", url = "http://{host}/2023-11-18/simple"
  Docker  build with HTTPS_PROXY=http://2023-11-18:x@{host} and datepin's CA trusted;
          `datepin env --mode forward --pin 2023-11-18` prints what to set.

Extra registries from proxy.toml: http://{host}/<pin>/r/<name>/
JSON API: http://{host}/<pin>/pypi/<project>/json
Health: /-/health   Metrics: /-/metrics
"""
