"""Upstream that throttles (429, 503 with Retry-After) and upstream that trickles.

When datepin has nothing of its own to answer with, a throttled upstream's status and its
Retry-After go on to the client (pip waits as long as Retry-After says before it retries;
uv retries 429 and 5xx on its own schedule), in path mode, forward mode and for extra
registries alike.  What history or the store can answer is answered from there.

A page or `.metadata` file that arrives a few bytes at a time, each within the read timeout,
is given up after `page_deadline`, as if upstream were down; whole files are not.

While upstream's Retry-After runs (a 429 without one: a few seconds), datepin asks that origin
nothing more: its requests are answered as when upstream is down.  Each test has a proxy of
its own, so that one test's window does not reach into the next.
"""

from __future__ import annotations

import asyncio
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
from click.testing import CliRunner
from packaging.utils import canonicalize_name

from clients import ClientError, pip_resolve, uv_compile
from datepin.cli import main
from datepin.config import Config, Registry
from datepin.runtime import runtime
from datepin.snapshotter import Summary, snapshot
from datepin.upstream import DEFAULT_HOLD_OFF, MAX_RETRY_AFTER, Held, HoldOff, retry_after_seconds
from fakepypi import TRICKLE_PIECES, FakePyPI
from proxyproc import Proxy, Response, fetch, write_config

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


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with FakePyPI() as fake, FakePyPI() as corp:
        config = write_config(
            tmp_path / "proxy.toml",
            simple_url=fake.simple_url,
            json_url=fake.json_url,
            files_url=fake.files_url,
            upstream_timeout=f"{TIMEOUT:g}s",
            page_deadline=f"{DEADLINE:g}s",
            live_ttl="0s",
            extra=f'[[registry]]\nname = "corp"\nurl = "{corp.simple_url}"\nintercept = true\n',
        )
        with Proxy(data_dir=tmp_path / "data", config=config) as proxy:
            yield Env(fake, corp, proxy)


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


def assert_throttled(r: Response, status: int, retry_after: int | None = 7) -> None:
    """`r` passes the throttling on: upstream's Retry-After, or what is left of it when datepin
    did not ask upstream again."""
    assert r.status == status, (r.status, r.body)
    if retry_after is None:
        assert r.header("Retry-After") is None
    else:
        assert retry_after - 1 <= int(r.header("Retry-After") or "-1") <= retry_after, r.headers
    assert f"HTTP {status}".encode() in r.body, r.body


# -- throttled, nothing of datepin's own to answer with ----------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_cold_page_passes_the_status_and_retry_after_on(env: Env, status: int) -> None:
    fake, corp, proxy = env.fake, env.corp, env.proxy
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


def test_a_throttled_page_without_retry_after_is_passed_on_without_one(env: Env) -> None:
    env.fake.add_wheel("bare-429", "1.0", upload_time=OLD)
    env.fake.fault("/simple/bare-429/", "status", status=429, times=None)
    assert_throttled(env.proxy.get(f"/{PIN}/simple/bare-429/"), 429, None)


def test_other_upstream_errors_stay_a_bad_gateway(env: Env) -> None:
    env.fake.add_wheel("bad-500", "1.0", upload_time=OLD)
    throttle = {"Retry-After": "7"}
    env.fake.fault("/simple/bad-500/", "status", status=500, times=None, headers=throttle)
    r = env.proxy.get(f"/{PIN}/simple/bad-500/")
    assert r.status == 502 and r.header("Retry-After") is None


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_cold_file_passes_the_status_and_retry_after_on(env: Env, status: int) -> None:
    fake, corp, proxy = env.fake, env.corp, env.proxy
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


def test_a_throttled_upstream_never_replaces_history_or_the_store(env: Env) -> None:
    fake, proxy = env.fake, env.proxy
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


# -- datepin holds off while upstream asks it to ---------------------------------------------


def test_requests_within_the_window_reach_upstream_once_and_after_it_again(env: Env) -> None:
    fake, proxy = env.fake, env.proxy
    fake.add_wheel("held", "1.0", upload_time=OLD)
    wheel = fake.add_wheel("held-file", "1.0", upload_time=OLD)
    url = file_urls(proxy.get(f"/{PIN}/simple/held-file/", {"Accept": JSON}))[wheel.filename]
    fake.fault("/simple/held/", "status", status=429, times=None, headers={"Retry-After": "2"})
    fake.clear_log()
    assert_throttled(proxy.get(f"/{PIN}/simple/held/"), 429, 2)
    for _ in range(3):  # pip retries, CI jobs at once: none of them reaches upstream
        for path in (f"/{PIN}/simple/held/", "/live/simple/held/", f"/{PIN}/pypi/held/json"):
            assert_throttled(proxy.get(path), 429, 2)
        # The origin is held off, its files too: whole, a range, the `.metadata` file.
        for headers in ({}, {"Range": "bytes=0-9"}):
            r = fetch(url, headers=headers)
            assert r.status == 429 and r.header("Retry-After") in ("1", "2"), (r.status, r.headers)
        assert_throttled(Response(*_get(url + ".metadata")), 429, 2)
    assert [r.path for r in fake.requests] == ["/simple/held/"]
    fake.clear_faults()
    r = proxy.get(f"/{PIN}/simple/held/")
    time.sleep(int(r.header("Retry-After") or "0"))  # as a client told to wait does
    assert proxy.get(f"/{PIN}/simple/held/").status == 200
    assert Response(*_get(url)).status == 200
    assert [r.path for r in fake.requests] == ["/simple/held/", "/simple/held/", wheel.path]


def test_history_and_the_store_answer_while_upstream_is_held_off(env: Env) -> None:
    fake, proxy = env.fake, env.proxy
    wheel = fake.add_wheel("kept-h", "1.0", upload_time=OLD)
    fake.add_wheel("cold-h", "1.0", upload_time=OLD)
    url = file_urls(proxy.get("/live/simple/kept-h/", {"Accept": JSON}))[wheel.filename]
    assert Response(*_get(url)).status == 200
    fake.fault("/simple/cold-h/", "status", status=503, times=None, headers={"Retry-After": "2"})
    assert_throttled(proxy.get(f"/{PIN}/simple/cold-h/"), 503, 2)
    fake.clear_log()
    r = proxy.get("/live/simple/kept-h/", {"Accept": JSON})  # live_ttl 0: would observe
    assert list(file_urls(r)) == [wheel.filename]
    assert "HTTP 503" in (r.header("Warning") or "") and r.header("Retry-After") is None
    stored = Response(*_get(url))
    assert stored.status == 200 and hashlib.sha256(stored.body).hexdigest() == wheel.sha256
    assert fake.requests == []


def test_a_held_off_registry_does_not_hold_off_another(env: Env) -> None:
    fake, corp, proxy = env.fake, env.corp, env.proxy
    fake.add_wheel("both", "1.0", upload_time=OLD)
    corp.add_wheel("both", "1.0", upload_time=OLD)
    corp.fault("/", "status", status=429, times=None, headers={"Retry-After": "2"})
    assert_throttled(proxy.get(f"/{PIN}/r/corp/both/"), 429, 2)
    assert proxy.get(f"/{PIN}/simple/both/").status == 200
    assert_throttled(forward_get(proxy, corp.project_url("both")), 429, 2)
    assert_throttled(proxy.get(f"/{PIN}/r/corp/both/"), 429, 2)
    assert len(corp.requests) == 1 and len(fake.requests_for("/simple/both/")) == 1


def test_a_429_without_retry_after_holds_off_for_a_few_seconds(env: Env) -> None:
    fake, proxy = env.fake, env.proxy
    fake.add_wheel("bare-held", "1.0", upload_time=OLD)
    fake.fault("/simple/bare-held/", "status", status=429, times=1)
    assert_throttled(proxy.get(f"/{PIN}/simple/bare-held/"), 429, None)  # as upstream said
    again = proxy.get(f"/{PIN}/simple/bare-held/")
    assert_throttled(again, 429, DEFAULT_HOLD_OFF)  # and when to ask again, which it did not
    assert len(fake.requests_for("/simple/bare-held/")) == 1


def test_a_503_without_retry_after_holds_nothing_off(env: Env) -> None:
    fake, proxy = env.fake, env.proxy
    fake.add_wheel("blip", "1.0", upload_time=OLD)
    fake.fault("/simple/blip/", "status", status=503, times=1)
    assert_throttled(proxy.get(f"/{PIN}/simple/blip/"), 503, None)
    assert proxy.get(f"/{PIN}/simple/blip/").status == 200


def test_the_json_api_passes_a_throttled_release_info_on(env: Env) -> None:
    fake, proxy = env.fake, env.proxy
    fake.add_wheel("api-held", "1.0", upload_time=OLD)
    assert proxy.get(f"/{PIN}/simple/api-held/").status == 200  # the view, fixed
    fake.clear_log()
    fake.fault("/", "status", status=429, times=None, headers={"Retry-After": "2"})
    for path in (f"/{PIN}/pypi/api-held/json", f"/{PIN}/pypi/api-held/1.0/json"):
        r = proxy.get(path)
        assert_throttled(r, 429, 2)
        assert "HTTP 429" in json.loads(r.body)["message"]
    assert len(fake.requests) == 1


def test_the_json_api_passes_on_a_throttled_file_after_a_failed_json_api(env: Env) -> None:
    """Upstream's JSON API fails (500), then the release's files are throttled (429): the
    throttling is what the client can act on, so it is what the client is told."""
    fake, proxy = env.fake, env.proxy
    wheel = fake.add_wheel("api-mixed", "1.0", upload_time=OLD)
    assert proxy.get(f"/{PIN}/simple/api-mixed/").status == 200  # the view, fixed; nothing kept
    fake.clear_log()
    fake.fault("/pypi/", "status", status=500, times=None)
    fake.fault("/files/", "status", status=429, times=None, headers={"Retry-After": "7"})
    r = proxy.get(f"/{PIN}/pypi/api-mixed/json")
    assert_throttled(r, 429)
    assert "HTTP 429" in json.loads(r.body)["message"]
    asked = [r.path for r in fake.requests]
    assert any(p.startswith("/pypi/") for p in asked) and wheel.path + ".metadata" in asked, asked


def test_origins_are_held_off_apart() -> None:
    now = [100.0]
    held = HoldOff(clock=lambda: now[0])
    assert held.check("https://pypi.org/simple/numpy/") is None
    held.note("https://pypi.org/simple/numpy/", 429, {"Retry-After": "30"})
    for url in ("https://PyPI.org:443/pypi/onnx/json", "https://u:p@pypi.org/simple/x/"):
        assert held.check(url) == Held(429, 30), url
    for url in ("https://files.pythonhosted.org/packages/x.whl", "http://pypi.org/simple/x/",
                "https://pypi.org:8443/simple/x/", "https://download.pytorch.org/whl/"):
        assert held.check(url) is None, url
    held.note("https://pypi.org/simple/onnx/", 429, {"Retry-After": "5"})  # never shortened
    now[0] += 29.5
    assert held.check("https://pypi.org/simple/numpy/") == Held(429, 1)
    now[0] += 0.5
    assert held.check("https://pypi.org/simple/numpy/") is None
    held.note("https://pypi.org/simple/numpy/", 503, {})  # a 503 alone: a blip
    held.note("https://pypi.org/simple/numpy/", 429, {"Retry-After": "0"})
    held.note("https://pypi.org/simple/numpy/", 500, {"Retry-After": "9"})
    assert held.check("https://pypi.org/simple/numpy/") is None
    held.note("https://pypi.org/simple/numpy/", 429, {})
    assert held.check("https://pypi.org/simple/numpy/") == Held(429, DEFAULT_HOLD_OFF)


# -- the snapshotter waits the window out --------------------------------------------------------


def test_a_snapshot_waits_out_a_throttled_registry_and_goes_on(
    fake_pypi: FakePyPI, tmp_path: Path
) -> None:
    fake = fake_pypi
    for name in ("snap-a", "snap-b", "snap-c"):
        fake.add_wheel(name, "1.0", upload_time=OLD)
    config = write_config(
        tmp_path / "snapshot.toml", simple_url=fake.simple_url, json_url=fake.json_url,
        files_url=fake.files_url, extra="[snapshot]\nconcurrency = 1\n",
    )
    fake.fault("/simple/snap-b/", "status", status=429, times=1, headers={"Retry-After": "1"})
    fake.clear_log()
    done = CliRunner().invoke(main, ["snapshot", "snap-a", "snap-b", "snap-c", "--config",
                                     str(config), "--data-dir", str(tmp_path / "snap")])
    assert done.exit_code == 0, (done.stdout, done.stderr)
    assert done.stdout.startswith("observed 3,") and done.stdout.strip().endswith("failures 0")
    asked = [(r.path, r.time) for r in fake.requests]
    assert [path for path, _ in asked] == [
        "/simple/snap-a/", "/simple/snap-b/", "/simple/snap-b/", "/simple/snap-c/"
    ]
    assert asked[2][1] - asked[1][1] >= 0.9  # nothing asked within the window


def _snapshot(fake: FakePyPI, tmp_path: Path, names: list[str], *, patience: float) -> Summary:
    """A snapshot of `names` on `fake` as PyPI, one project at a time, within 30 s."""
    pypi = Registry("pypi", fake.simple_url, json_url=fake.json_url)
    config = Config(data_dir=tmp_path / "data", pypi=pypi, files_url=fake.files_url)

    async def run() -> Summary:
        async with runtime(config) as rt:
            projects = [(pypi, canonicalize_name(name)) for name in names]
            return await asyncio.wait_for(
                snapshot(rt.index, projects, concurrency=1, patience=patience), 30
            )

    return asyncio.run(run())


def test_a_snapshot_gives_up_on_a_registry_that_keeps_throttling(
    fake_pypi: FakePyPI, tmp_path: Path
) -> None:
    fake = fake_pypi
    names = ["keep-a", "keep-b", "keep-c"]
    for name in names:
        fake.add_wheel(name, "1.0", upload_time=OLD)
    fake.fault("/simple/", "status", status=429, times=None, headers={"Retry-After": "1"})
    t0 = time.monotonic()
    summary = _snapshot(fake, tmp_path, names, patience=1.5)
    assert time.monotonic() - t0 < 5
    assert [what for what, _ in summary.failures] == names
    assert all("HTTP 429" in why for _, why in summary.failures), summary.failures
    # Asked again once the window was over, then no more: patience ran out.
    assert [r.path for r in fake.requests] == ["/simple/keep-a/"] * 2


def test_a_snapshot_counts_its_patience_from_the_last_answer_let_through(
    fake_pypi: FakePyPI, tmp_path: Path
) -> None:
    """A rate limit that refuses now and then, each refusal waited out, never exhausts the
    snapshot's patience: every answer let through starts the count anew."""
    fake = fake_pypi
    names = ["often-a", "often-b"]
    for name in names:
        fake.add_wheel(name, "1.0", upload_time=OLD)
        fake.fault(f"/simple/{name}/", "status", status=429, times=1, headers={"Retry-After": "1"})
    # Each wait (1 s) fits in the patience; both together (2 s) would not.
    summary = _snapshot(fake, tmp_path, names, patience=1.5)
    assert summary.failures == []
    assert [r.path for r in fake.requests] == [f"/simple/{n}/" for n in names for _ in range(2)]


# -- what real clients make of it ---------------------------------------------------------------


def test_pip_waits_as_long_as_a_throttled_upstream_asks(env: Env) -> None:
    fake, proxy = env.fake, env.proxy
    fake.add_wheel("patient", "1.0", upload_time=OLD)
    fake.fault("/simple/patient/", "status", status=429, times=1, headers={"Retry-After": "2"})
    fake.clear_log()
    assert pip_resolve(proxy.index(PIN), ["patient"]) == {"patient": "1.0"}
    first, second = [r.time for r in fake.requests_for("/simple/patient/")][:2]
    assert second - first >= 1.9


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_clients_name_the_throttling(env: Env, client: str) -> None:
    fake, proxy = env.fake, env.proxy
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
    # RFC 5322's "-0000", an unknown zone: no instant to count from.
    for bad in (None, "", "soon", "-3", "1.5", "Fri, 01 May 2026 12:00:30 -0000"):
        assert retry_after_seconds(bad, now=now) is None


# -- trickling pages: an overall deadline -------------------------------------------------------


def test_a_trickling_page_is_given_up_after_the_deadline(env: Env) -> None:
    fake, corp, proxy = env.fake, env.corp, env.proxy
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


def test_a_trickling_page_with_history_is_answered_from_it(env: Env) -> None:
    fake, proxy = env.fake, env.proxy
    wheel = fake.add_wheel("slow-b", "1.0", upload_time=OLD)
    assert proxy.get("/live/simple/slow-b/").status == 200
    fake.fault("/simple/slow-b/", "trickle", seconds=GAP, times=None)
    t0 = time.monotonic()
    r = proxy.get("/live/simple/slow-b/", {"Accept": JSON})
    assert time.monotonic() - t0 < DEADLINE + 1.5
    assert list(file_urls(r)) == [wheel.filename]
    assert "page_deadline" in (r.header("Warning") or "")


def test_a_trickling_metadata_file_is_given_up_but_a_wheel_is_not(env: Env) -> None:
    fake, proxy = env.fake, env.proxy
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
