"""Upstream faults, through the real proxy (issue 8, part 1).

Whatever upstream does, datepin serves fixed views from history without asking it, serves `live`
from the last observation with a `Warning`, answers anything else with a clear 502/504, and
stores nothing wrong: no blob with wrong bytes, no observation from a page it could not read.

One proxy serves the whole module (starting one takes a second); each test uses its own
project names.  Extra registries point at hosts that fail in other ways: a closed port, a name
that does not resolve, a self-signed TLS server, and a scripted server for pages no real index
would send.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import storecheck
from datepin.pins import format_time
from fakepypi import FakePyPI, closed_port
from proxyproc import Proxy, Response, write_config
from scripted import ScriptedServer

JSON = "application/vnd.pypi.simple.v1+json"
PIN = "2023-03-01"
OLD = "2023-01-01T10:00:00Z"
TIMEOUT = 2.0  # upstream_timeout of this module's proxy


@dataclass
class Env:
    fake: FakePyPI
    proxy: Proxy
    scripted: ScriptedServer
    tls: ScriptedServer
    data: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("faults")
    with FakePyPI() as fake, ScriptedServer() as scripted, ScriptedServer(tls_dir=tmp / "tls") as tls:
        extra = "\n".join(
            f'[[registry]]\nname = "{name}"\nurl = "{url}"\n'
            for name, url in (
                ("dead", f"http://127.0.0.1:{closed_port()}/simple/"),
                ("nodns", "http://nonexistent.invalid/simple/"),
                ("tls", f"{tls.url}/simple/"),
                ("scripted", f"{scripted.url}/simple/"),
            )
        )
        config = write_config(
            tmp / "proxy.toml",
            simple_url=fake.simple_url,
            json_url=fake.json_url,
            files_url=fake.files_url,
            upstream_timeout=f"{TIMEOUT:g}s",
            live_ttl="0s",
            max_page_size="64KiB",
            extra=extra,
        )
        with Proxy(data_dir=tmp / "data", config=config) as proxy:
            yield Env(fake, proxy, scripted, tls, tmp / "data")


@pytest.fixture
def up(env: Env) -> Iterator[Env]:
    env.fake.clear_faults()
    env.fake.start()
    yield env
    env.fake.clear_faults()
    env.fake.start()


def names(response: Response) -> list[str]:
    assert response.status == 200, response.body
    return sorted(f["filename"] for f in json.loads(response.body)["files"])


@dataclass
class FileResult:
    status: int
    body: bytes
    complete: bool  # the body matched its Content-Length and the connection was not cut


def get_file(url: str, timeout: float = 30.0) -> FileResult:
    """GET a file through the proxy, telling a cut connection apart from a complete body."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path)
        resp = conn.getresponse()
        try:
            return FileResult(resp.status, resp.read(), True)
        except (http.client.IncompleteRead, ConnectionError) as e:
            partial = e.partial if isinstance(e, http.client.IncompleteRead) else b""
            return FileResult(resp.status, partial, False)
    finally:
        conn.close()


def settle(env: Env, timeout: float = 10.0) -> None:
    """Wait until no download is in progress and its temp file is gone, so the store can be
    judged (a small file's client is answered before it is stored)."""
    deadline = time.monotonic() + timeout
    while (downloading(env) or storecheck.temp_files(env.data)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert downloading(env) == 0 and storecheck.temp_files(env.data) == []


def downloading(env: Env) -> int:
    return env.proxy.counter("datepin_files_in_progress")


def assert_store_sound(env: Env) -> None:
    settle(env)
    assert storecheck.stored_contents_match(env.data) == []


# -- upstream unreachable ------------------------------------------------------------------------


def test_upstream_down_serves_history_and_fails_the_rest_clearly(up: Env) -> None:
    fake, proxy = up.fake, up.proxy
    a1 = fake.add_wheel("down-a", "1.0", upload_time=OLD)
    fake.add_wheel("down-a", "1.1", upload_time=OLD, tag="py2-none-any")
    pinned = proxy.get(f"/{PIN}/simple/down-a/", {"Accept": JSON})
    assert names(pinned) == sorted([a1.filename, "down_a-1.1-py2-none-any.whl"])
    urls = {f["filename"]: f["url"] for f in json.loads(pinned.body)["files"]}
    assert hashlib.sha256(get_file(urls[a1.filename]).body).hexdigest() == a1.sha256
    settle(up)
    fake.clear_log()
    assert proxy.get(f"/{PIN}/simple/down-a/", {"Accept": JSON}).body == pinned.body
    assert fake.requests_for("/simple/") == []  # fixed view: no upstream request at all
    before = storecheck.observations(up.data, "down-a")

    fake.stop()
    t0 = time.monotonic()
    again = proxy.get(f"/{PIN}/simple/down-a/", {"Accept": JSON})
    assert again.status == 200 and again.body == pinned.body
    live = proxy.get("/live/simple/down-a/", {"Accept": JSON})
    assert names(live) == names(pinned)
    assert "upstream unavailable" in (live.header("Warning") or "")
    assert live.header("Warning", ).startswith("110 ")
    stored = get_file(urls[a1.filename])
    assert stored.complete and hashlib.sha256(stored.body).hexdigest() == a1.sha256
    missing = get_file(urls["down_a-1.1-py2-none-any.whl"])
    assert missing.status == 502 and b"cannot connect" in missing.body
    never = proxy.get(f"/{PIN}/simple/down-never/")
    assert never.status == 502 and b"cannot connect" in never.body
    assert proxy.get("/live/simple/down-never/").status == 502
    json_api = proxy.get(f"/{PIN}/pypi/down-never/json")
    assert json_api.status == 502 and "cannot connect" in json.loads(json_api.body)["message"]
    assert time.monotonic() - t0 < 10  # refused connections fail fast, no timeouts
    fake.start()

    assert storecheck.observations(up.data, "down-a") == before
    assert storecheck.observations(up.data, "down-never") == 0
    assert_store_sound(up)


def test_a_pinned_view_answered_from_older_history_is_not_cached(up: Env) -> None:
    """Upstream down and history older than the cutoff: the view may still change (it lacks
    what was uploaded in between), so no cache may keep it; once observed, it is fixed."""
    fake, proxy = up.fake, up.proxy
    fake.add_wheel("stale-a", "1.0", upload_time=OLD)
    assert names(proxy.get("/live/simple/stale-a/", {"Accept": JSON})) == ["stale_a-1.0-py3-none-any.whl"]
    newer = fake.add_wheel("stale-a", "2.0", upload_time=datetime.now(UTC))
    pin = format_time(newer.upload_time + timedelta(microseconds=1))  # over by the request
    fake.fault("/simple/stale-a/", "status", status=503, times=None)
    stale = proxy.get(f"/{pin}/simple/stale-a/", {"Accept": JSON})
    assert names(stale) == ["stale_a-1.0-py3-none-any.whl"] and stale.header("Warning")
    assert stale.header("Cache-Control") == "no-cache"
    api = proxy.get(f"/{pin}/pypi/stale-a/json")
    assert api.status == 200 and api.header("Cache-Control") == "no-cache"
    live = proxy.get("/live/simple/stale-a/", {"Accept": JSON})  # last look, with a Warning
    assert live.header("Warning") and live.header("Cache-Control") == "no-cache"
    fake.clear_faults()
    fixed = proxy.get(f"/{pin}/simple/stale-a/", {"Accept": JSON})
    assert newer.filename in names(fixed) and fixed.header("Warning") is None
    assert fixed.header("Cache-Control") == "max-age=600, public"


@pytest.mark.parametrize(
    ("registry", "reason"),
    [
        ("dead", b"cannot connect"),
        ("nodns", b"host name not found"),
        ("tls", b"TLS certificate not trusted"),
    ],
)
def test_unreachable_registries_answer_502_with_the_reason(up: Env, registry: str, reason: bytes) -> None:
    for path in (f"/{PIN}/r/{registry}/alpha/", f"/live/r/{registry}/alpha/"):
        r = up.proxy.get(path)
        assert r.status == 502, (path, r.status, r.body)
        assert reason in r.body, r.body
        assert r.body.count(b"\n") == 1  # one line
    assert storecheck.observations(up.data, "alpha", registry) == 0
    if registry == "tls":
        assert all(req.path == "" for req in up.tls.requests)  # no request got past the handshake
    assert up.proxy.get("/-/health").status == 200


def test_an_upstream_failure_answered_with_an_error_is_logged(up: Env) -> None:
    """An operator whose upstream is down sees it in the log, one line per failed answer, as
    the answers given from history say so there too."""
    fake, proxy = up.fake, up.proxy
    fake.add_wheel("logged-a", "1.0", upload_time=OLD)
    fake.fault("/simple/logged-a/", "status", status=503, times=1)
    assert proxy.get(f"/{PIN}/simple/logged-a/").status == 503
    assert proxy.get(f"/{PIN}/r/dead/logged-b/").status == 502
    deadline = time.monotonic() + 5
    while not (lines := [x for x in proxy.log if "/simple/logged-" in x]) or len(lines) < 2:
        assert time.monotonic() < deadline, "".join(proxy.log)
        time.sleep(0.05)
    assert len(lines) == 2, lines
    assert all(" WARNING " in x for x in lines), lines
    assert "HTTP 503" in lines[0] and "cannot connect" in lines[1], lines
    assert not any("Traceback" in x for x in proxy.log)


# -- upstream answers badly ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_pages_and_files(up: Env, status: int) -> None:
    fake, proxy = up.fake, up.proxy
    name = f"err-{status}"
    wheel = fake.add_wheel(name, "1.0", upload_time=OLD)
    fake.fault(f"/simple/{name}/", "status", status=status, times=1)
    answered = 503 if status == 503 else 502  # throttling is passed on (test_throttling.py)
    r = proxy.get(f"/{PIN}/simple/{name}/")
    assert r.status == answered and f"HTTP {status}".encode() in r.body
    assert storecheck.observations(up.data, name) == 0
    page = proxy.get(f"/{PIN}/simple/{name}/", {"Accept": JSON})  # upstream is back
    [url] = [f["url"] for f in json.loads(page.body)["files"]]
    fake.fault("/files/", "status", status=status, times=1)
    failed = get_file(url)
    assert failed.status == answered and f"HTTP {status}".encode() in failed.body
    assert wheel.sha256 not in storecheck.stored(up.data)
    ok = get_file(url)
    assert ok.status == 200 and hashlib.sha256(ok.body).hexdigest() == wheel.sha256
    assert_store_sound(up)


def test_stalls_past_the_timeout(up: Env) -> None:
    fake, proxy = up.fake, up.proxy
    wheel = fake.add_wheel("stall-a", "1.0", upload_time=OLD, payload_size=300_000)
    fake.add_wheel("stall-b", "1.0", upload_time=OLD)

    fake.fault("/simple/stall-b/", "stall", seconds=30)
    t0 = time.monotonic()
    r = proxy.get(f"/{PIN}/simple/stall-b/")
    took = time.monotonic() - t0
    assert r.status == 504 and b"timed out" in r.body
    assert TIMEOUT - 0.5 < took < TIMEOUT + 3

    page = proxy.get("/live/simple/stall-a/", {"Accept": JSON})
    [url] = [f["url"] for f in json.loads(page.body)["files"]]
    fake.fault("/simple/stall-a/", "stall_body", seconds=30)
    t0 = time.monotonic()
    stale = proxy.get("/live/simple/stall-a/", {"Accept": JSON})
    assert time.monotonic() - t0 < TIMEOUT + 3
    assert names(stale) == [wheel.filename] and "timed out" in stale.header("Warning")

    fake.fault("/files/", "stall", seconds=30)
    t0 = time.monotonic()
    no_headers = get_file(url)
    assert no_headers.status == 504 and b"within 2 s" in no_headers.body
    assert time.monotonic() - t0 < TIMEOUT + 3

    fake.fault("/files/", "stall_body", seconds=30)
    t0 = time.monotonic()
    half = get_file(url)
    assert not half.complete and len(half.body) < wheel.size
    assert time.monotonic() - t0 < TIMEOUT + 3
    assert wheel.sha256 not in storecheck.stored(up.data)
    settle(up)

    whole = get_file(url)
    assert whole.complete and hashlib.sha256(whole.body).hexdigest() == wheel.sha256
    assert storecheck.observations(up.data, "stall-b") == 0
    assert_store_sound(up)


def test_flapping_upstream(up: Env) -> None:
    """Every other request fails: live pages are always whole, warnings come and go, history
    holds exactly the observations that succeeded."""
    fake, proxy = up.fake, up.proxy
    for v in ("1.0", "1.1", "1.2"):
        fake.add_wheel("flap", v, upload_time=OLD)
    expected = sorted(f.filename for f in fake.files("flap"))
    kinds = ["status", "malformed", "truncate_page", "stall"]
    good = 0
    for i in range(12):
        failing = i % 2 == 1
        if failing:
            fake.fault("/simple/flap/", kinds[(i // 2) % len(kinds)], seconds=30)  # type: ignore[arg-type]
        r = proxy.get("/live/simple/flap/", {"Accept": JSON})
        if i == 0:
            assert names(r) == expected and r.header("Warning") is None
        else:
            assert names(r) == expected
            assert (r.header("Warning") is not None) == failing, (i, r.header("Warning"))
        good += not failing
    assert storecheck.observations(up.data, "flap") == good
    assert storecheck.gone_states(up.data, "flap") == []

    # A project never seen: its pinned view needs upstream, so it fails and then works.
    fake.add_wheel("flap-new", "1.0", upload_time=OLD)
    fake.fault("/simple/flap-new/", "status", status=503)
    assert proxy.get(f"/{PIN}/simple/flap-new/").status == 503  # throttling is passed on
    assert proxy.get(f"/{PIN}/simple/flap-new/").status == 200


@pytest.mark.parametrize("form", ["json", "html"])
@pytest.mark.parametrize("kind", ["truncate_page", "malformed"])
def test_truncated_and_malformed_pages_record_nothing(up: Env, form: str, kind: str) -> None:
    fake, proxy = up.fake, up.proxy
    name = f"bad-{form}-{kind}".replace("_", "-")
    for v in range(1, 13):  # long enough that half a page still holds complete links
        fake.add_wheel(name, f"{v}.0", upload_time=OLD)
    expected = sorted(f.filename for f in fake.files(name))
    fake.serve_json = form == "json"
    try:
        assert names(proxy.get("/live/simple/" + name + "/", {"Accept": JSON})) == expected
        before = storecheck.observations(up.data, name)
        fake.fault(f"/simple/{name}/", kind)  # type: ignore[arg-type]
        stale = proxy.get("/live/simple/" + name + "/", {"Accept": JSON})
        assert names(stale) == expected
        assert "cannot read" in (stale.header("Warning") or ""), stale.header("Warning")
        assert storecheck.observations(up.data, name) == before
        assert storecheck.gone_states(up.data, name) == []

        fake.fault(f"/simple/{name}-new/", kind)  # type: ignore[arg-type]
        fake.add_wheel(f"{name}-new", "1.0", upload_time=OLD)
        fresh = proxy.get(f"/{PIN}/simple/{name}-new/")
        assert fresh.status == 502 and b"cannot read" in fresh.body
        assert storecheck.observations(up.data, f"{name}-new") == 0
    finally:
        fake.serve_json = True


def test_oversized_page_is_refused(up: Env) -> None:
    fake, proxy = up.fake, up.proxy
    for i in range(200):  # ~100 KiB of JSON: over this proxy's 64 KiB max_page_size
        fake.add_file("huge", f"huge-{i}.0.tar.gz", b"x", upload_time=OLD)
    fake.add_file("small", "small-1.0.tar.gz", b"x", upload_time=OLD)
    r = proxy.get(f"/{PIN}/simple/huge/")
    # The answer names the setting to raise, as page_deadline's does.
    assert r.status == 502 and b"more than 65536 bytes (max_page_size)" in r.body, r.body
    assert storecheck.observations(up.data, "huge") == 0
    assert proxy.get(f"/{PIN}/simple/small/").status == 200


def test_gzip_bomb_page_is_refused(up: Env) -> None:
    """The limit counts decoded bytes: a small compressed page that inflates past it fails."""
    import gzip

    doc = {"meta": {"api-version": "1.1"}, "name": "bomb", "files": [], "pad": " " * 1_000_000}
    body = gzip.compress(json.dumps(doc).encode())
    assert len(body) < 65536
    up.scripted.route("/simple/bomb/", 200, body, content_type=JSON, **{"Content-Encoding": "gzip"})
    r = up.proxy.get(f"/{PIN}/r/scripted/bomb/")
    assert r.status == 502 and b"more than" in r.body
    assert storecheck.observations(up.data, "bomb", "scripted") == 0


def test_wrong_bytes_are_never_served_as_complete_nor_stored(up: Env) -> None:
    fake, proxy = up.fake, up.proxy
    small = fake.add_wheel("wrong", "1.0", upload_time=OLD)
    big = fake.add_wheel("wrong", "2.0", upload_time=OLD, payload_size=3_000_000)
    page = proxy.get(f"/{PIN}/simple/wrong/", {"Accept": JSON})
    urls = {f["filename"]: f["url"] for f in json.loads(page.body)["files"]}
    for wheel in (small, big):
        for kind in ("wrong_bytes", "cut", "truncate_page"):
            fake.fault("/files/", kind)  # type: ignore[arg-type]
            bad = get_file(urls[wheel.filename])
            assert not (bad.complete and bad.status == 200), (wheel.filename, kind, bad.status)
            if bad.status == 200:
                assert len(bad.body) < wheel.size  # the end is held back until verified
            settle(up)
            assert wheel.sha256 not in storecheck.stored(up.data)
        good = get_file(urls[wheel.filename])
        assert good.complete and hashlib.sha256(good.body).hexdigest() == wheel.sha256
    assert_store_sound(up)


# -- pages no real index sends -------------------------------------------------------------------


def _page(name: str, files: object, **top: object) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": files, **top}).encode()


GOOD_FILE = {
    "filename": "lack-1.0.tar.gz",
    "url": "/files/lack-1.0.tar.gz",
    "hashes": {"sha256": "0" * 64},
    "upload-time": "2023-01-01T10:00:00Z",
}


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("no-files", json.dumps({"meta": {"api-version": "1.1"}, "name": "lack"}).encode()),
        ("no-name", json.dumps({"meta": {}, "files": [GOOD_FILE]}).encode()),
        ("files-null", _page("lack", None)),
        ("no-url", _page("lack", [{k: v for k, v in GOOD_FILE.items() if k != "url"}])),
        ("no-filename", _page("lack", [{k: v for k, v in GOOD_FILE.items() if k != "filename"}])),
        ("file-not-object", _page("lack", ["lack-1.0.tar.gz"])),
        ("bad-hashes", _page("lack", [{**GOOD_FILE, "hashes": ["sha256"]}])),
        ("bad-time", _page("lack", [{**GOOD_FILE, "upload-time": "yesterday"}])),
        ("bad-size", _page("lack", [{**GOOD_FILE, "size": -1}])),
        ("bad-yanked", _page("lack", [{**GOOD_FILE, "yanked": 1}])),
        ("sha256-not-hex", _page("lack", [{**GOOD_FILE, "hashes": {"sha256": "NOTHEX"}}])),
        ("sha256-a-path", _page("lack", [{**GOOD_FILE, "hashes": {"sha256": "../../" + "0" * 58}}])),
        ("api-version-2", json.dumps({"meta": {"api-version": "2.0"}, "name": "lack",
                                      "files": [GOOD_FILE]}).encode()),
        ("array", b"[]"),
        ("empty", b""),
        ("deep", b"[" * 60_000),
    ],
)
def test_page_missing_fields_is_refused_and_not_recorded(up: Env, case: str, body: bytes) -> None:
    project = f"lack-{case}"
    up.scripted.route(f"/simple/{project}/", 200, body, content_type=JSON)
    r = up.proxy.get(f"/{PIN}/r/scripted/{project}/")
    assert r.status == 502, (case, r.status, r.body)
    assert b"cannot read" in r.body
    assert storecheck.observations(up.data, project, "scripted") == 0


def test_file_longer_than_the_index_says(up: Env) -> None:
    content = bytes(i % 251 for i in range(1000))
    listed = {
        **GOOD_FILE,
        "filename": "liar-1.0.tar.gz",
        "url": "/files/liar-1.0.tar.gz",
        "hashes": {"sha256": hashlib.sha256(content[:500]).hexdigest()},
        "size": 500,
    }
    up.scripted.route("/simple/liar/", 200, _page("liar", [listed]), content_type=JSON)
    up.scripted.route("/files/liar-1.0.tar.gz", 200, content)
    page = up.proxy.get(f"/{PIN}/r/scripted/liar/", {"Accept": JSON})
    [url] = [f["url"] for f in json.loads(page.body)["files"]]
    r = get_file(url)
    assert r.status == 502 and b"announced 1000 bytes, the index 500" in r.body
    # Same length as the index says, but more bytes than Content-Length announces is
    # impossible over HTTP/1.1; a body that is the wrong 500 bytes fails the hash.
    up.scripted.route("/files/liar-1.0.tar.gz", 200, content[500:])
    wrong = get_file(url)
    assert not (wrong.complete and wrong.status == 200)
    settle(up)
    assert listed["hashes"]["sha256"] not in storecheck.stored(up.data)  # type: ignore[index]


def test_upstream_text_cannot_break_out_of_the_warning_header(up: Env) -> None:
    """An upstream error message ends up in a Warning header: whatever upstream wrote in it
    (here a file name with CR LF) stays inside that header."""
    good = _page("inject", [{**GOOD_FILE, "filename": "inject-1.0.tar.gz",
                             "hashes": {"sha256": hashlib.sha256(b"inject").hexdigest()}}])
    up.scripted.route("/simple/inject/", 200, good, content_type=JSON)
    assert up.proxy.get("/live/r/scripted/inject/").status == 200
    evil = {**GOOD_FILE, "filename": 'inject-2.0.tar.gz\r\nX-Injected: yes\r\n\r\n<b>"', "upload-time": "soon"}
    up.scripted.route("/simple/inject/", 200, _page("inject", [evil]), content_type=JSON)
    raw = http.client.HTTPConnection("127.0.0.1", up.proxy.port, timeout=10)
    raw.request("GET", "/live/r/scripted/inject/")
    resp = raw.getresponse()
    body = resp.read()
    raw.close()
    assert resp.status == 200 and b"inject-1.0.tar.gz" in body and b"<b>" not in body
    assert resp.getheader("X-Injected") is None
    warning = resp.getheader("Warning") or ""
    assert "cannot read" in warning and "\r" not in warning and "\n" not in warning


def test_upstream_text_cannot_forge_log_lines(up: Env) -> None:
    forged = {**GOOD_FILE, "filename": "forge-1.0.tar.gz\r\nFORGED ERROR everything is broken",
              "url": "/files/missing.tar.gz", "hashes": {"sha256": hashlib.sha256(b"forge").hexdigest()}}
    up.scripted.route("/simple/forge/", 200, _page("forge", [forged]), content_type=JSON)
    page = up.proxy.get(f"/{PIN}/r/scripted/forge/", {"Accept": JSON})
    [url] = [f["url"] for f in json.loads(page.body)["files"]]
    assert get_file(url).status == 404  # the fill fails (upstream: 404) and is logged, with the file name
    deadline = time.monotonic() + 5
    while not any("forge-1.0.tar.gz" in line for line in up.proxy.log):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not any(line.startswith("FORGED") for line in up.proxy.log)
    assert any("forge-1.0.tar.gz\\r\\nFORGED" in line for line in up.proxy.log)


def test_the_same_bytes_under_two_names_are_both_served(up: Env) -> None:
    content = b"same bytes, two names\n" * 50
    sha = hashlib.sha256(content).hexdigest()
    for name in ("twin-a", "twin-b"):
        listed = {**GOOD_FILE, "filename": f"{name}-1.0.tar.gz", "url": "/files/twin.tar.gz",
                  "hashes": {"sha256": sha}}
        up.scripted.route(f"/simple/{name}/", 200, _page(name, [listed]), content_type=JSON)
    up.scripted.route("/files/twin.tar.gz", 200, content)
    for name in ("twin-a", "twin-b"):
        page = up.proxy.get(f"/{PIN}/r/scripted/{name}/", {"Accept": JSON})
        [url] = [f["url"] for f in json.loads(page.body)["files"]]
        got = get_file(url)
        assert got.status == 200 and got.body == content, (name, got.status, got.body[:100])


@pytest.mark.parametrize("status", [404, 410])
def test_a_file_upstream_no_longer_has_is_not_found_not_a_bad_gateway(up: Env, status: int) -> None:
    """pip and uv retry a 502 (pip five times, about 8 s) and then fail anyway; a 404 from
    upstream is an answer, passed on as one (one upstream request, a clear reason)."""
    fake, proxy = up.fake, up.proxy
    name = f"nofile-{status}"
    wheel = fake.add_wheel(name, "1.0", upload_time=OLD, payload_size=300_000)
    page = proxy.get(f"/{PIN}/simple/{name}/", {"Accept": JSON})
    [url] = [f["url"] for f in json.loads(page.body)["files"]]
    fake.fault(wheel.path, "status", status=status, times=None)
    try:
        fake.clear_log()
        for target in (url + ".metadata", url):
            got = get_file(target)
            assert got.status == status, (target, got.status, got.body)
            assert f"upstream answered HTTP {status}".encode() in got.body
        head = proxy.get(urlsplit(url).path, method="HEAD")
        assert head.status in (200, status)  # the index gives the size: no need to ask
        ranged = proxy.get(urlsplit(url).path, {"Range": "bytes=0-99"})
        assert ranged.status == status, ranged.body
        assert len(fake.requests_for(wheel.path)) == 3  # .metadata, whole file, range
    finally:
        fake.clear_faults()
    assert hashlib.sha256(get_file(url).body).hexdigest() == wheel.sha256
    assert_store_sound(up)


@pytest.mark.parametrize(
    ("case", "status", "headers", "reason"),
    [
        ("huge-header", 200, {"X-Padding": "a" * 20_000}, b"unreadable HTTP answer"),
        ("bad-length", 200, {"Content-Length": "twelve"}, b"unreadable HTTP answer"),
        ("redirect-loop", 301, {"Location": "/simple/odd-redirect-loop/"}, b"too many redirects"),
        ("undecodable", 200, {"Content-Encoding": "br"}, b"cannot decode"),
    ],
)
def test_an_unreadable_answer_is_not_reported_as_an_upstream_status(
    up: Env, case: str, status: int, headers: dict[str, str], reason: bytes
) -> None:
    """Upstream answers that datepin's HTTP client cannot read were reported as "HTTP 400"
    (or "HTTP 0"), a status upstream never sent, sometimes over two lines."""
    project = f"odd-{case}"
    good = _page(project, [{**GOOD_FILE, "filename": f"{project}-1.0.tar.gz"}])
    up.scripted.route(f"/simple/{project}/", status, good, content_type=JSON, **headers)
    r = up.proxy.get(f"/{PIN}/r/scripted/{project}/")
    assert r.status == 502, (case, r.status, r.body)
    assert reason in r.body, r.body
    assert b"HTTP 400" not in r.body and b"HTTP 0" not in r.body
    assert r.body.count(b"\n") == 1, r.body
    assert storecheck.observations(up.data, project, "scripted") == 0
