"""A forward HTTP proxy on 127.0.0.1, standing in for a company's egress proxy (squid).

It takes absolute-form requests for http:// targets (the fake upstream is plain HTTP: a
CONNECT is answered, 407 or 405, but never tunnelled), checks `Proxy-Authorization` when told to, records every request, and forwards the
rest with an `X-Egress` header of its own, so that the upstream can tell what came through it.
"""

from __future__ import annotations

import http.client
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HEADER = "X-Egress"
# Not passed on in either direction (RFC 9110 7.6.1), plus the proxy's own credentials.
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
}
_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class ProxyRecord:
    method: str
    target: str  # the absolute URL asked for ("" for an origin-form request)
    proxy_authorization: str | None
    status: int  # what the proxy answered the client


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        egress = self.server.egress
        credentials = self.headers.get("Proxy-Authorization")
        target = self.path if self.path.startswith(("http://", "https://")) else ""
        if not target:
            self._refuse(400, "egress: absolute-form requests only\n", target)
        elif egress.require is not None and credentials != egress.require:
            self._refuse(407, "egress: proxy authentication required\n", target,
                         (("Proxy-Authenticate", 'Basic realm="egress"'),))
        else:
            self._forward(target)

    do_GET = do_HEAD = _handle

    def do_CONNECT(self) -> None:
        """Checks credentials, then refuses: no tunnels here (the fake upstream is plain HTTP)."""
        egress = self.server.egress
        if egress.require is not None and self.headers.get("Proxy-Authorization") != egress.require:
            self._refuse(407, "egress: proxy authentication required\n", self.path,
                         (("Proxy-Authenticate", 'Basic realm="egress"'),))
        else:
            self._refuse(405, "egress: no tunnels here\n", self.path)
        self.close_connection = True

    def _record(self, target: str, status: int) -> None:
        """Before the answer goes out: a test reading the log once its client has the
        answer finds the request there."""
        self.server.egress.record(
            ProxyRecord(self.command, target, self.headers.get("Proxy-Authorization"), status))

    def _refuse(self, status: int, text: str, target: str,
                headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._record(target, status)
        body = text.encode()
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, target: str) -> None:
        url = urlsplit(target)
        path = url.path + (f"?{url.query}" if url.query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers[HEADER] = self.server.egress.token
        conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=30)
        try:
            conn.request(self.command, path, headers=headers)
            resp = conn.getresponse()
        except OSError:
            self.close_connection = True
            self._record(target, 0)
            conn.close()
            return
        self._record(target, resp.status)
        try:
            self.send_response(resp.status, resp.reason)
            for key, value in resp.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            if resp.getheader("Content-Length") is None:
                self.close_connection = True  # the body ends when the connection does
            self.end_headers()
            if self.command != "HEAD":
                while chunk := resp.read(_CHUNK):
                    self.wfile.write(chunk)
        except OSError:
            self.close_connection = True
        finally:
            conn.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, egress: EgressProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.egress = egress


class EgressProxy:
    """`with EgressProxy() as egress:` serves on `egress.url`; `require` is the exact
    `Proxy-Authorization` it insists on (None: anything goes)."""

    def __init__(self, *, require: str | None = None) -> None:
        self.require = require
        self.token = secrets.token_hex(8)  # the X-Egress value forwarded requests carry
        self._lock = threading.Lock()
        self._log: list[ProxyRecord] = []
        self._server = _Server(self)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, entry: ProxyRecord) -> None:
        with self._lock:
            self._log.append(entry)

    @property
    def requests(self) -> list[ProxyRecord]:
        with self._lock:
            return list(self._log)

    def __enter__(self) -> EgressProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
