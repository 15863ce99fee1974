"""Upstream that throttles (429, 503 with Retry-After) and upstream that trickles.

When datepin has nothing of its own to answer with, a throttled upstream's status and its
Retry-After go on to the client (pip waits as long as Retry-After says before it retries;
uv retries 429 and 5xx on its own schedule), in path mode, forward mode and for extra
registries alike.  What history or the store can answer is answered from there.

A page or `.metadata` file that arrives a few bytes at a time, each within the read timeout,
is given up after `page_deadline`, as if upstream were down; whole files are not.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from clients import ClientError, pip_resolve, uv_compile
from datepin.upstream import MAX_RETRY_AFTER, retry_after_seconds
from fakepypi import TRICKLE_PIECES, FakePyPI
from proxyproc import Proxy, Response, write_config

JSON = "application/vnd.pypi.simple.v1+json"
PIN = "2023-03-01"
OLD = "2023-01-01T10:00:00Z"
TIMEOUT = 1.0  # upstream_timeout: every read of a trickle comes within it
DEADLINE = 2.0  # page_deadline
GAP = 0.4  # between the pieces of a trickle: TRICKLE_PIECES * GAP > DEADLINE


@dataclass
class Env:
    fake: FakePyPI
    corp: FakePyPI  # an extra registry, intercepted in forward mode
    proxy: Proxy


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("throttling")
    with FakePyPI() as fake, FakePyPI() as corp:
        config = write_config(
            tmp / "proxy.toml",
            simple_url=fake.simple_url,
            json_url=fake.json_url,
            files_url=fake.files_url,
            upstream_timeout=f"{TIMEOUT:g}s",
            page_deadline=f"{DEADLINE:g}s",
            live_ttl="0s",
            extra=f'[[registry]]\nname = "corp"\nurl = "{corp.simple_url}"\nintercept = true\n',
        )
        with Proxy(data_dir=tmp / "data", config=config) as proxy:
            yield Env(fake, corp, proxy)


@pytest.fixture
def up(env: Env) -> Iterator[Env]:
    for fake in (env.fake, env.corp):
        fake.clear_faults()
    yield env
    for fake in (env.fake, env.corp):
        fake.clear_faults()


def forward_get(proxy: Proxy, url: str, pin: str = PIN) -> Response:
    """GET `url` through the proxy as a plain-HTTP forward-mode client with `pin`."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://{pin}:x@127.0.0.1:{proxy.port}"})
    )
    request = urllib.request.Request(url, headers={"Accept": JSON})
    try:
        with opener.open(request, timeout=30) as resp:
            return Response(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers.items()), e.read())


def file_urls(page: Response) -> dict[str, str]:
    assert page.status == 200, page.body
    return {f["filename"]: f["url"] for f in json.loads(page.body)["files"]}


def assert_throttled(r: Response, status: int, retry_after: str | None = "7") -> None:
    assert r.status == status, (r.status, r.body)
    assert r.header("Retry-After") == retry_after
    assert f"HTTP {status}".encode() in r.body, r.body


# -- throttled, nothing of datepin's own to answer with ----------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_cold_page_passes_the_status_and_retry_after_on(up: Env, status: int) -> None:
    fake, corp, proxy = up.fake, up.corp, up.proxy
    name = f"cold-{status}"
    fake.add_wheel(name, "1.0", upload_time=OLD)
    corp.add_wheel(name, "1.0", upload_time=OLD)
    throttle = {"Retry-After": "7"}
    fake.fault(f"/simple/{name}/", "status", status=status, times=None, headers=throttle)
    corp.fault(f"/simple/{name}/", "status", status=status, times=None, headers=throttle)
    for path in (f"/{PIN}/simple/{name}/", f"/live/simple/{name}/", f"/{PIN}/r/corp/{name}/"):
        assert_throttled(proxy.get(path), status)
    api = proxy.get(f"/{PIN}/pypi/{name}/json")
    assert_throttled(api, status)
    assert "HTTP" in json.loads(api.body)["message"]
    assert_throttled(forward_get(proxy, corp.project_url(name)), status)


def test_a_throttled_page_without_retry_after_is_passed_on_without_one(up: Env) -> None:
    up.fake.add_wheel("bare-429", "1.0", upload_time=OLD)
    up.fake.fault("/simple/bare-429/", "status", status=429, times=None)
    assert_throttled(up.proxy.get(f"/{PIN}/simple/bare-429/"), 429, None)


def test_other_upstream_errors_stay_a_bad_gateway(up: Env) -> None:
    up.fake.add_wheel("bad-500", "1.0", upload_time=OLD)
    up.fake.fault("/simple/bad-500/", "status", status=500, times=None, headers={"Retry-After": "7"})
    r = up.proxy.get(f"/{PIN}/simple/bad-500/")
    assert r.status == 502 and r.header("Retry-After") is None


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_cold_file_passes_the_status_and_retry_after_on(up: Env, status: int) -> None:
    fake, corp, proxy = up.fake, up.corp, up.proxy
    name = f"file-{status}"
    wheel = fake.add_wheel(name, "1.0", upload_time=OLD, payload_size=300_000)
    corp_wheel = corp.add_wheel(name, "1.0", upload_time=OLD)
    urls = file_urls(proxy.get(f"/{PIN}/simple/{name}/", {"Accept": JSON}))
    assert forward_get(proxy, corp.project_url(name)).status == 200
    throttle = {"Retry-After": "7"}
    fake.fault("/files/", "status", status=status, times=None, headers=throttle)
    corp.fault("/files/", "status", status=status, times=None, headers=throttle)
    url = urls[wheel.filename]
    for path in (url, url + ".metadata"):
        assert_throttled(Response(*_get(path)), status)
    assert_throttled(forward_get(proxy, corp_wheel.url), status)
    assert_throttled(forward_get(proxy, corp_wheel.url + ".metadata"), status)


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    r = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with r.open(url, timeout=30) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


# -- throttled, but history or the store can answer --------------------------------------------


def test_a_throttled_upstream_never_replaces_history_or_the_store(up: Env) -> None:
    fake, proxy = up.fake, up.proxy
    wheel = fake.add_wheel("kept", "1.0", upload_time=OLD)
    urls = file_urls(proxy.get("/live/simple/kept/", {"Accept": JSON}))
    assert hashlib.sha256(Response(*_get(urls[wheel.filename])).body).hexdigest() == wheel.sha256
    later = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # after the observation
    fake.fault("/", "status", status=429, times=None, headers={"Retry-After": "7"})
    for path in ("/live/simple/kept/", f"/{later}/simple/kept/"):
        r = proxy.get(path, {"Accept": JSON})
        assert r.status == 200 and "HTTP 429" in (r.header("Warning") or ""), (path, r.status, r.body)
        assert r.header("Retry-After") is None
    stored = Response(*_get(urls[wheel.filename]))
    assert stored.status == 200 and hashlib.sha256(stored.body).hexdigest() == wheel.sha256


# -- what real clients make of it ---------------------------------------------------------------


def test_pip_waits_as_long_as_a_throttled_upstream_asks(up: Env) -> None:
    fake, proxy = up.fake, up.proxy
    fake.add_wheel("patient", "1.0", upload_time=OLD)
    fake.fault("/simple/patient/", "status", status=429, times=1, headers={"Retry-After": "2"})
    fake.clear_log()
    assert pip_resolve(proxy.index(PIN), ["patient"]) == {"patient": "1.0"}
    first, second = [r.time for r in fake.requests_for("/simple/patient/")][:2]
    assert second - first >= 1.9


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_clients_name_the_throttling(up: Env, client: str) -> None:
    fake, proxy = up.fake, up.proxy
    name = f"refused-{client}"
    fake.add_wheel(name, "1.0", upload_time=OLD)
    fake.fault(f"/simple/{name}/", "status", status=429, times=None, headers={"Retry-After": "1"})
    with pytest.raises(ClientError) as e:
        if client == "pip":  # pip says why only in its debug output
            pip_resolve(proxy.index(PIN), [name], extra_args=["--retries", "1", "-vvv"])
        else:
            uv_compile(proxy.index(PIN), [name], env_extra={"UV_HTTP_RETRIES": "1"})
    said = "429 Client Error: Too Many Requests" if client == "pip" else "429 Too Many Requests"
    assert said in e.value.stdout + e.value.stderr, e.value


# -- Retry-After as upstream writes it ----------------------------------------------------------


def test_retry_after_is_read_in_seconds_or_as_a_date_and_bounded() -> None:
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now=now) == 7
    assert retry_after_seconds(" 0 ", now=now) == 0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    assert retry_after_seconds(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0
    assert retry_after_seconds("86400", now=now) == MAX_RETRY_AFTER
    for bad in (None, "", "soon", "-3", "1.5"):
        assert retry_after_seconds(bad, now=now) is None


# -- trickling pages: an overall deadline -------------------------------------------------------


def test_a_trickling_page_is_given_up_after_the_deadline(up: Env) -> None:
    fake, corp, proxy = up.fake, up.corp, up.proxy
    fake.add_wheel("slow-a", "1.0", upload_time=OLD)
    corp.add_wheel("slow-a", "1.0", upload_time=OLD)
    fake.fault("/simple/slow-a/", "trickle", seconds=GAP, times=None)
    corp.fault("/simple/slow-a/", "trickle", seconds=GAP, times=None)
    for get in (
        lambda: proxy.get(f"/{PIN}/simple/slow-a/"),
        lambda: forward_get(proxy, corp.project_url("slow-a")),
    ):
        t0 = time.monotonic()
        r = get()
        took = time.monotonic() - t0
        assert r.status == 504 and b"page_deadline" in r.body, (r.status, r.body)
        assert DEADLINE - 0.2 < took < DEADLINE + 1.5, took


def test_a_trickling_page_with_history_is_answered_from_it(up: Env) -> None:
    fake, proxy = up.fake, up.proxy
    wheel = fake.add_wheel("slow-b", "1.0", upload_time=OLD)
    assert proxy.get("/live/simple/slow-b/").status == 200
    fake.fault("/simple/slow-b/", "trickle", seconds=GAP, times=None)
    t0 = time.monotonic()
    r = proxy.get("/live/simple/slow-b/", {"Accept": JSON})
    assert time.monotonic() - t0 < DEADLINE + 1.5
    assert list(file_urls(r)) == [wheel.filename]
    assert "page_deadline" in (r.header("Warning") or "")


def test_a_trickling_metadata_file_is_given_up_but_a_wheel_is_not(up: Env) -> None:
    fake, proxy = up.fake, up.proxy
    wheel = fake.add_wheel("slow-c", "1.0", upload_time=OLD)
    url = file_urls(proxy.get(f"/{PIN}/simple/slow-c/", {"Accept": JSON}))[wheel.filename]
    fake.fault("/files/", "trickle", seconds=GAP, times=None)
    t0 = time.monotonic()
    metadata = Response(*_get(url + ".metadata"))
    assert metadata.status == 504 and b"page_deadline" in metadata.body, (metadata.status, metadata.body)
    assert time.monotonic() - t0 < DEADLINE + 1.5
    t0 = time.monotonic()
    whole = Response(*_get(url))  # small, read whole: still no deadline for a wheel
    assert time.monotonic() - t0 >= (TRICKLE_PIECES - 1) * GAP > DEADLINE
    assert whole.status == 200 and hashlib.sha256(whole.body).hexdigest() == wheel.sha256
