"""Hostile clients against the real proxy (issue 8, part 5, over HTTP).

- A bounded hypothesis fuzz of paths and headers: every answer is a 4xx or a correct one,
  never a 5xx, and the proxy keeps serving.
- Malformed request lines and headers on raw sockets.
- Path traversal and SSRF attempts through path-mode URLs: nothing outside the store is read
  and no host but the configured upstream is contacted (an "attacker" server must see nothing;
  the fake's log shows only the requests a correct proxy would make).
- Requests aimed at the proxy are answered by it, never forwarded to itself.

The port is also a forward proxy (DESIGN.md: requests for other hosts pass through, CONNECT is
tunnelled), so an absolute-form request naming another host is *meant* to reach it; these tests
send path-mode (origin-form) requests with the proxy's own Host.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakepypi import FakeFile, FakePyPI
from proxyproc import Proxy, write_config
from scripted import ScriptedServer

JSON = "application/vnd.pypi.simple.v1+json"


@dataclass(repr=False)
class Env:
    fake: FakePyPI
    attacker: ScriptedServer
    proxy: Proxy
    wheels: dict[str, FakeFile]
    data: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("hostile")
    with FakePyPI() as fake, ScriptedServer() as attacker:
        attacker.route("/", 200, b"attacker\n")
        wheels = {
            "alpha-1": fake.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z"),
            "alpha-2": fake.add_wheel("alpha", "2.0", upload_time="2023-06-01T10:00:00Z",
                                      payload_size=200_000),
            "beta-1": fake.add_wheel("beta", "1.0", upload_time="2022-01-01T10:00:00Z"),
        }
        config = write_config(
            tmp / "proxy.toml", simple_url=fake.simple_url, json_url=fake.json_url,
            files_url=fake.files_url, upstream_timeout="5s", live_ttl="10m",
        )
        with Proxy(data_dir=tmp / "data", config=config) as proxy:
            yield Env(fake, attacker, proxy, wheels, tmp / "data")


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def raw(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    """Send bytes, return what came back before the server closed or went quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and _complete(out):
                break
        return out


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return m is not None and len(body) >= int(m.group(1))


def status_of(answer: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(m.group(1)) if m else None


def metric(proxy: Proxy, route: str) -> int:
    return proxy.counter(f'datepin_requests_total{{route="{route}"}}', default=0)


def upstream_requests_are_expected(env: Env) -> None:
    """Every request the fake saw is one a correct proxy makes: a project page, the JSON API of
    a project or of a version it lists, or a file (or .metadata) it lists."""
    files = {w.path for w in env.wheels.values()} | {w.path + ".metadata" for w in env.wheels.values()}
    versions = {("alpha", "1.0"), ("alpha", "2.0"), ("beta", "1.0")}
    for r in env.fake.requests:
        if m := re.fullmatch(r"/simple/([a-z0-9]([a-z0-9._-]*[a-z0-9])?)/", r.path):
            continue
        if m := re.fullmatch(r"/pypi/([a-z0-9._-]+)/json", r.path):
            continue
        if m := re.fullmatch(r"/pypi/([a-z0-9._-]+)/([^/]+)/json", r.path):
            assert (m.group(1), m.group(2)) in versions, r.path
            continue
        assert r.path in files, r.path
        assert r.query == "", r


# -- fuzz -------------------------------------------------------------------------------------

PIECES = [
    "2023-03-01", "2023-07-01", "live", "2023-03-01T00:00:00Z", "2023-03-01T02:00:00+02:00",
    "2999-01-01", "2023-02-30", "0000-00-00", "simple", "pypi", "r", "files", "-", "json",
    "alpha", "Alpha", "ALPHA", "beta", "no-such-project", "a..b", "1.0", "2.0", "9.9", "..",
    ".", "%2e%2e", "%2f", "%00", "%0d%0a", "@", "\\", "%5c", "~", "health", "metrics", "pypi",
    "x" * 500, "ünïcode", "%ff", "*", "",
]


@st.composite
def fuzz_path(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=6))
    raw_pieces = [p if draw(st.booleans()) and p.isascii() and p.isprintable() and " " not in p
                  else quote(p, safe="") for p in pieces]
    path = "/" + "/".join(raw_pieces) + ("/" if draw(st.booleans()) else "")
    return path + draw(st.sampled_from(["", "?", "?a=b", "?x=%0d%0a", "#f"]))


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=40)
fuzz_headers = st.fixed_dictionaries(
    {},
    optional={
        "Accept": st.one_of(header_text, st.sampled_from(
            [JSON, "text/html", "application/vnd.pypi.simple.v1+html;q=0.2, */*;q=0.1", "*/*;q=nan"])),
        "Range": st.one_of(header_text, st.sampled_from(
            ["bytes=0-0", "bytes=-1", "bytes=5-", "bytes=9999999999-", "bytes=1-0", "bytes=0-1,3-4",
             "bytes=-0", "bytes=--1", "bytes=18446744073709551616-"])),
        "If-None-Match": st.one_of(header_text, st.sampled_from(['*', 'W/"x"', '"sha256-' + "0" * 64 + '"'])),
        "If-Range": header_text,
        "Proxy-Authorization": st.one_of(header_text, st.just("Basic MjAyMy0wMy0wMTp4")),
        "Authorization": st.one_of(header_text, st.just("Bearer x")),
        "Accept-Encoding": st.sampled_from(["gzip", "br", "identity", "*", "gzip;q=0", ""]),
        "Datepin-Pin": header_text,
    },
)


@settings(max_examples=250, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "OPTIONS"]), fuzz_path(), fuzz_headers)
def test_fuzzed_requests_get_a_4xx_or_a_correct_answer(
    env: Env, method: str, path: str, headers: dict[str, str]
) -> None:
    status, got, body = request(env.proxy.port, method, path, headers)
    assert status < 500, (method, path, headers, status, body[:300])
    if status == 200 and method == "GET" and got.get("content-type") == JSON:
        cutoff = got.get("datepin-cutoff")
        for f in json.loads(body).get("files", []):
            if cutoff:  # nothing at or after the cutoff, whatever the request looked like
                assert f["upload-time"] < cutoff.replace("Z", ".000000Z") or f["upload-time"] < cutoff
    if status == 206:
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", got["content-range"])
        assert m and int(m.group(2)) - int(m.group(1)) + 1 == len(body)
    if status == 200 and method == "GET" and "/files/" in path and "content-range" not in got:
        assert hashlib.sha256(body).hexdigest() in {w.sha256 for w in env.wheels.values()} | {
            hashlib.sha256(w.metadata or b"").hexdigest() for w in env.wheels.values()}


def test_after_the_fuzz_the_proxy_serves_and_asked_upstream_only_what_it_should(env: Env) -> None:
    status, _, body = request(env.proxy.port, "GET", "/2023-03-01/simple/alpha/", {"Accept": JSON})
    assert status == 200
    assert [f["filename"] for f in json.loads(body)["files"]] == [env.wheels["alpha-1"].filename]
    upstream_requests_are_expected(env)
    assert env.attacker.requests == []


# -- raw sockets -------------------------------------------------------------------------------


def malformed(port: int) -> list[tuple[str, bytes]]:
    host = b"Host: 127.0.0.1:%d\r\n" % port
    return [
        ("no request line", b"\r\n\r\n"),
        ("method only", b"GET\r\n\r\n"),
        ("no version", b"GET /\r\n" + host + b"\r\n"),
        ("HTTP/9.9", b"GET / HTTP/9.9\r\n" + host + b"\r\n"),
        ("HTTP/0.9 style", b"GET /2023-03-01/simple/alpha/\r\n"),
        ("no Host", b"GET /-/health HTTP/1.1\r\n\r\n"),
        ("HTTP/1.0 no Host", b"GET /-/health HTTP/1.0\r\n\r\n"),
        ("NUL in path", b"GET /\x00/simple/ HTTP/1.1\r\n" + host + b"\r\n"),
        ("high bytes in path", b"GET /\xff\xfe/simple/\xc3/ HTTP/1.1\r\n" + host + b"\r\n"),
        ("bad escape", b"GET /%zz/simple/alpha/ HTTP/1.1\r\n" + host + b"\r\n"),
        ("space in path", b"GET /2023-03-01/simple/al pha/ HTTP/1.1\r\n" + host + b"\r\n"),
        ("long path", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n" + host + b"\r\n"),
        ("long header", b"GET / HTTP/1.1\r\n" + host + b"X: " + b"y" * 200_000 + b"\r\n\r\n"),
        ("many headers", b"GET / HTTP/1.1\r\n" + host + b"".join(b"X-%d: y\r\n" % i for i in range(3000)) + b"\r\n"),
        ("header without colon", b"GET / HTTP/1.1\r\n" + host + b"garbage\r\n\r\n"),
        ("negative length", b"GET / HTTP/1.1\r\n" + host + b"Content-Length: -1\r\n\r\n"),
        ("two lengths", b"POST / HTTP/1.1\r\n" + host + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        ("bad chunk", b"POST / HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
        ("unknown method", b"BREW /2023-03-01/simple/alpha/ HTTP/1.1\r\n" + host + b"\r\n"),
        ("asterisk", b"OPTIONS * HTTP/1.1\r\n" + host + b"\r\n"),
        ("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("tls hello", bytes.fromhex("160301002e0100002a0303") + b"\x00" * 40),
        ("binary", bytes(range(256)) * 4),
        ("LF only", b"GET /-/health HTTP/1.1\n" + host.replace(b"\r\n", b"\n") + b"\n"),
        ("range bomb", b"GET / HTTP/1.1\r\n" + host + b"Range: bytes=" + b"0-0," * 5000 + b"0-0\r\n\r\n"),
    ]


def test_malformed_requests_on_raw_sockets(env: Env) -> None:
    port = env.proxy.port
    answers = {}
    for name, data in malformed(port):
        answer = raw(port, data)
        answers[name] = status_of(answer)
        assert answers[name] is None or answers[name] < 500, (name, answer[:300])
        assert env.proxy.process is not None and env.proxy.process.poll() is None, name
    # An unknown method: 405 from datepin, or 400 from a parser that knows only standard ones.
    assert answers["no Host"] == 400 and answers["unknown method"] in (400, 405)
    assert status_of(raw(port, b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)) == 200
    assert env.attacker.requests == []


# -- traversal and SSRF ------------------------------------------------------------------------


def test_traversal_and_ssrf_through_path_mode(env: Env) -> None:
    port, att = env.proxy.port, f"127.0.0.1:{env.attacker.port}"
    sha = env.wheels["alpha-1"].sha256
    name = env.wheels["alpha-1"].filename
    url_key = "u" + "0" * 40
    paths = [
        f"/files/pypi/{sha}/..%2f..%2f..%2fhistory.sqlite3",
        f"/files/pypi/{sha}/%2e%2e/%2e%2e/history.sqlite3",
        f"/files/pypi/{sha}/..\\..\\history.sqlite3",
        "/files/pypi/../../history.sqlite3",
        "/files/../../../../etc/passwd",
        "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/files/pypi/%2e%2e%2f%2e%2e%2fetc%2fpasswd/x",
        f"/files/pypi/{sha}/{name}%00.txt",
        f"/files/pypi/{sha.upper()}/{name}",
        f"/files/pypi/{url_key}/x.whl",
        f"/files/..%2f..%2f/{sha}/{name}",
        f"/files/{att}/{sha}/{name}",
        f"/files/http:%2f%2f{att}%2f/{sha}/{name}",
        f"/2023-03-01/r/..%2f..%2f{att}/alpha/",
        f"/2023-03-01/r/{att}/alpha/",
        f"/2023-03-01/r/%40{att}/alpha/",
        f"/2023-03-01/simple/@{att}/",
        f"/2023-03-01/simple/alpha@{att}/",
        f"/2023-03-01/simple/%2f%2f{att}%2f/",
        f"/2023-03-01/simple/..%2f..%2f..%2f{att}/",
        f"/2023-03-01/simple/%5c%5c{att}%5calpha/",
        f"/2023-03-01/pypi/alpha/1.0@{att}/json",
        "/2023-03-01/pypi/alpha/..%2f..%2f..%2fsimple/json",
        f"/2023-03-01/pypi/alpha/1.0%3f@{att}%23/json",
        "/2023-03-01/pypi/alpha/9.9/json",
        f"/http://{att}/simple/alpha/",
        f"/http:%2f%2f{att}/simple/alpha/",
        f"//{att}/simple/alpha/",
    ]
    queries = [f"/2023-03-01/simple/alpha/?url=http://{att}/", f"/live/simple/alpha/?@{att}"]
    for path in queries:  # the query is ignored
        status, _, body = request(port, "GET", path)
        assert status == 200 and att.encode() not in body
    for path in paths:
        status, headers, body = request(port, "GET", path)
        assert status in (301, 400, 404, 405), (path, status, body[:200])
        assert b"SQLite format 3" not in body and b"root:" not in body, path
        if status == 301:
            location = headers["location"]
            assert location.startswith("/") and not location.startswith("//"), (path, location)
    assert env.attacker.requests == []
    upstream_requests_are_expected(env)
    # and the legitimate file is still there
    status, _, body = request(port, "GET", "/2023-03-01/simple/alpha/", {"Accept": JSON})
    [f] = json.loads(body)["files"]
    status, _, body = request(port, "GET", f["url"].split(str(port), 1)[1])
    assert status == 200 and hashlib.sha256(body).hexdigest() == sha


def test_a_fixed_view_asks_upstream_nothing_even_for_unknown_versions(env: Env) -> None:
    port = env.proxy.port
    assert request(port, "GET", "/2023-03-01/pypi/alpha/json")[0] == 200
    env.fake.clear_log()
    assert request(port, "GET", "/2023-03-01/pypi/alpha/json")[0] == 200
    for version in ("2.0", "9.9", "1.0rc1", "..", "1.0?x=1"):
        status, _, _ = request(port, "GET", f"/2023-03-01/pypi/alpha/{quote(version, safe='')}/json")
        assert status in (400, 404), version
    assert env.fake.requests == []


# -- aimed at the proxy itself -----------------------------------------------------------------


def test_requests_aimed_at_the_proxy_are_answered_not_forwarded_to_itself(env: Env) -> None:
    port = env.proxy.port
    before = metric(env.proxy, "Health")
    targets = [f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://0.0.0.0:{port}",
               f"http://127.1.2.3:{port}"]
    for target in targets:
        for host in (f"127.0.0.1:{port}", f"127.0.0.1:{env.attacker.port}", "evil.test"):
            answer = raw(port, f"GET {target}/-/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert status_of(answer) == 200 and answer.endswith(b"\r\n\r\nok\n"), (target, host, answer)
    for host in (f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", f"127.0.0.1:{port}"):
        answer = raw(port, f"GET /-/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert status_of(answer) == 200, (host, answer)
    answered = metric(env.proxy, "Health") - before
    assert answered == len(targets) * 3 + 4  # each seen exactly once: no request looped back

    before = metric(env.proxy, "Health")
    t0 = time.monotonic()
    tunnel = raw(port, (f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
                        f"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").encode())
    assert time.monotonic() - t0 < 3
    assert b"\r\n\r\nok\n" not in tunnel  # the tunnel to itself carried nothing
    assert metric(env.proxy, "Health") == before
    assert env.attacker.requests == []
    assert request(port, "GET", "/-/health")[0] == 200
