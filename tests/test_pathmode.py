"""Path mode end to end: the real `datepin serve`, real pip and uv, a fake upstream."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from clients import ClientError, pip_resolve, run, uv_bin, uv_compile, venv_python
from datepin import routes
from datepin.blobs import INLINE_LIMIT
from fakepypi import RequestRecord, add_alpha_beta
from datepin.pins import format_time
from proxyproc import Proxy, Response, fetch, write_config

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def graph(fake_pypi):
    return add_alpha_beta(fake_pypi)


def test_pip_and_uv_pick_the_versions_of_each_pin(graph, proxy):
    early, late = proxy.index("2023-03-01"), proxy.index("2023-07-01")
    assert pip_resolve(early, ["alpha"]) == {"alpha": "1.0", "beta": "1.0"}
    assert pip_resolve(late, ["alpha"]) == {"alpha": "2.0", "beta": "2.0"}
    assert uv_compile(early, ["alpha"]) == {"alpha": "1.0", "beta": "1.0"}
    assert uv_compile(late, ["alpha"]) == {"alpha": "2.0", "beta": "2.0"}


def test_pin_before_the_project_existed_fails_cleanly(graph, proxy):
    with pytest.raises(ClientError) as pip_error:
        pip_resolve(proxy.index("2022-06-01"), ["alpha"])
    assert "No matching distribution found for alpha" in str(pip_error.value)
    with pytest.raises(ClientError) as uv_error:
        uv_compile(proxy.index("2022-06-01"), ["alpha"])
    assert "alpha" in str(uv_error.value)
    r = proxy.get("/2022-06-01/simple/alpha/")
    assert r.status == 404
    assert r.header("Datepin-Cutoff") == "2022-06-01T00:00:00Z"


def test_pinned_request_observed_after_cutoff_makes_no_upstream_request(graph, proxy):
    assert pip_resolve(proxy.index("2023-03-01"), ["alpha"]) == {"alpha": "1.0", "beta": "1.0"}
    graph.clear_log()
    assert pip_resolve(proxy.index("2023-03-01"), ["alpha"]) == {"alpha": "1.0", "beta": "1.0"}
    assert uv_compile(proxy.index("2023-07-01"), ["alpha"]) == {"alpha": "2.0", "beta": "2.0"}
    assert [r for r in graph.requests if r.path.startswith("/simple/")] == []


def test_a_file_backfilled_upstream_does_not_change_an_observed_view(graph, proxy):
    first = proxy.get("/2023-03-01/simple/alpha/", {"Accept": JSON})
    assert first.status == 200
    # Upstream later lists a file with an old upload time (a backfilled wheel).
    graph.add_wheel("alpha", "1.0", upload_time="2023-01-02T10:00:00Z", tag="py2-none-any")
    proxy_live = proxy.get("/live/simple/alpha/", {"Accept": JSON})
    assert any("py2-none-any" in f["filename"] for f in json.loads(proxy_live.body)["files"])
    again = proxy.get("/2023-03-01/simple/alpha/", {"Accept": JSON})
    assert again.body == first.body


def live_ttl_proxy(fake, tmp_path, live_ttl):
    config = write_config(
        tmp_path / "ttl.toml", simple_url=fake.simple_url, json_url=fake.json_url,
        files_url=fake.files_url, upstream_timeout="5s", live_ttl=live_ttl,
    )
    return Proxy(data_dir=tmp_path / "data", config=config)


def test_a_live_page_is_sent_as_made_until_the_project_is_observed_again(graph, tmp_path):
    """Within live_ttl a live page is not made again from history (a 15,000-file project's
    history read and view took 0.3 s a request), and it never outlives an observation: one
    made for a pin after the last look changes the live page at once."""
    with live_ttl_proxy(graph, tmp_path, "10m") as proxy:
        first = proxy.get("/live/simple/alpha/", {"Accept": JSON})
        assert first.status == 200
        rendered = proxy.counter("datepin_pages_rendered_total")
        graph.add_wheel("alpha", "3.0", upload_time=datetime.now(UTC) - timedelta(seconds=1))
        for _ in range(3):
            again = proxy.get("/live/simple/alpha/", {"Accept": JSON})
            assert (again.status, again.body) == (200, first.body)  # the last look, as before
            assert again.header("ETag") == first.header("ETag")
        assert proxy.counter("datepin_pages_rendered_total") == rendered
        assert proxy.counter("datepin_pages_from_memory_total") == 3
        pin = format_time(datetime.now(UTC))  # after the last look: observed upstream
        pinned = json.loads(proxy.get(f"/{pin}/simple/alpha/", {"Accept": JSON}).body)
        assert "alpha-3.0-py3-none-any.whl" in [f["filename"] for f in pinned["files"]]
        live = json.loads(proxy.get("/live/simple/alpha/", {"Accept": JSON}).body)
        assert "alpha-3.0-py3-none-any.whl" in [f["filename"] for f in live["files"]]
        assert proxy.counter("datepin_pages_rendered_total") == rendered + 2


def test_a_live_page_outlives_observations_that_change_nothing(graph, tmp_path):
    """Past live_ttl the project is observed again, asking upstream with the ETag of the page
    history has: its 304 is recorded as a look that changed nothing, and the live page held is
    sent as it was, with no history read or page made.  So is the same page sent whole."""
    with live_ttl_proxy(graph, tmp_path, "1s") as proxy:
        first = proxy.get("/live/simple/alpha/", {"Accept": JSON})
        assert first.status == 200
        rendered = proxy.counter("datepin_pages_rendered_total")
        [whole] = graph.requests_for("/simple/alpha/")
        assert whole.status == 200 and "if-none-match" not in whole.headers

        def look_again() -> tuple[RequestRecord, Response]:
            time.sleep(1.1)  # past live_ttl
            graph.clear_log()
            again = proxy.get("/live/simple/alpha/", {"Accept": JSON})
            [asked] = graph.requests_for("/simple/alpha/")
            return asked, again

        asked, again = look_again()
        assert asked.status == 304 and asked.headers["if-none-match"]
        assert (again.status, again.body, again.header("ETag")) == (200, first.body, first.header("ETag"))
        assert proxy.counter("datepin_pages_not_modified_total") == 1
        assert proxy.counter("datepin_observations_total") == 2
        assert proxy.counter("datepin_pages_rendered_total") == rendered
        graph.conditional_pages = False  # a registry that ignores conditions: the same page whole
        asked, again = look_again()
        assert asked.status == 200 and (again.status, again.body) == (200, first.body)
        assert proxy.counter("datepin_pages_rendered_total") == rendered
        assert proxy.counter("datepin_observations_total") == 3
        assert proxy.counter("datepin_pages_not_modified_total") == 2  # the same bytes: not read
        graph.conditional_pages = True
        graph.add_wheel("alpha", "3.0", upload_time=datetime.now(UTC) - timedelta(seconds=1))
        asked, again = look_again()  # the ETag history has is no longer upstream's
        assert asked.status == 200 and asked.headers["if-none-match"]
        assert "alpha-3.0-py3-none-any.whl" in [f["filename"] for f in json.loads(again.body)["files"]]
        assert proxy.counter("datepin_pages_rendered_total") == rendered + 1
        assert proxy.counter("datepin_pages_not_modified_total") == 2
        # A 304 to a request that named no page is no page: a clear error, nothing recorded.
        graph.fault("/simple/beta/", "status", status=304)
        unasked = proxy.get("/live/simple/beta/", {"Accept": JSON})
        assert unasked.status == 502 and b"answered HTTP 304" in unasked.body
        assert proxy.get("/live/simple/beta/", {"Accept": JSON}).status == 200


def test_a_fixed_views_json_api_is_sent_as_made(graph, proxy):
    """The JSON API of a fixed view (its release info kept) is made once, then sent from memory:
    Poetry asks it for every release it considers."""
    paths = ("/2023-03-01/pypi/alpha/json", "/2023-03-01/pypi/alpha/1.0/json")
    first = {path: proxy.get(path) for path in paths}
    assert all(r.status == 200 for r in first.values())
    rendered = proxy.counter("datepin_pages_rendered_total")
    for path in paths:
        again = proxy.get(path)
        assert (again.status, again.body) == (200, first[path].body)
        assert again.header("ETag") == first[path].header("ETag")
        assert again.header("Datepin-View") == first[path].header("Datepin-View")
    assert proxy.counter("datepin_pages_rendered_total") == rendered
    assert proxy.counter("datepin_pages_from_memory_total") == 2
    live = proxy.get("/live/pypi/alpha/json")  # live: made from the view every time
    assert live.status == 200 and json.loads(live.body)["info"]["version"] == "2.0"
    assert proxy.counter("datepin_pages_rendered_total") == rendered + 1


def test_headers_negotiation_and_etag(graph, proxy):
    r = proxy.get("/2023-03-01/simple/alpha/", {"Accept": JSON})
    assert r.status == 200
    assert r.header("Content-Type") == JSON
    assert r.header("Datepin-Pin") == "2023-03-01"
    assert r.header("Datepin-Cutoff") == "2023-03-01T00:00:00Z"
    assert r.header("Datepin-View") == "reconstructed"
    assert "Accept" in r.header("Vary")
    page = json.loads(r.body)
    assert page["versions"] == ["1.0"]
    [f] = page["files"]
    assert f["url"].startswith(proxy.url + "/files/pypi/")
    assert f["upload-time"] == "2023-01-01T10:00:00Z" or f["upload-time"].startswith("2023-01-01T10:00:00")
    assert "dist-info-metadata" not in f
    for key in ("hashes", "requires-python", "yanked", "size", "core-metadata"):
        assert key in f

    html = proxy.get("/2023-03-01/simple/alpha/", {"Accept": "*/*"})
    assert html.header("Content-Type").startswith("text/html")
    assert b"alpha-1.0-py3-none-any.whl" in html.body and b"alpha-2.0" not in html.body
    assert b"data-core-metadata=" in html.body and b"data-upload-time=" in html.body

    etag = r.header("ETag")
    assert etag and not etag.startswith("W/")
    cached = proxy.get("/2023-03-01/simple/alpha/", {"Accept": JSON, "If-None-Match": etag})
    assert cached.status == 304
    assert proxy.get("/2023-07-01/simple/alpha/", {"Accept": JSON}).header("ETag") != etag


def test_routes_redirects_and_errors(graph, proxy):
    r = proxy.get("/2023-03-01/simple/Alpha/")
    assert r.status == 301 and r.header("Location") == "/2023-03-01/simple/alpha/"
    r = proxy.get("/2023-03-01/simple/alpha")
    assert r.status == 301 and r.header("Location") == "/2023-03-01/simple/alpha/"
    assert proxy.get("/2023-03-01/alpha/").status == 200  # index URL without /simple
    assert proxy.get("/2023-03-01/simple/no-such-project/").status == 404
    bad = proxy.get("/2023-13-45/simple/alpha/")
    assert bad.status == 400 and b"YYYY-MM-DD" in bad.body
    future = proxy.get("/2999-01-01/simple/alpha/")
    assert future.status == 400 and b"future" in future.body
    assert proxy.get("/").status == 200 and b"PIP_INDEX_URL" in proxy.get("/").body
    other = proxy.get("/favicon.ico")
    assert other.status == 404 and b"/<pin>/simple/" in other.body
    assert proxy.get("/-/health").status == 200
    assert proxy.get("/2023-03-01/simple/alpha/", method="POST").status == 405
    ts = proxy.get("/2023-05-01T12:00:00+02:00/simple/beta/", {"Accept": JSON})
    assert ts.header("Datepin-Cutoff") == "2023-05-01T10:00:00Z"
    assert json.loads(ts.body)["versions"] == ["1.0"]  # beta 2.0 is at exactly 10:00Z


def test_root_page_lists_known_projects(graph, proxy):
    proxy.get("/2023-03-01/simple/alpha/")
    root = proxy.get("/2023-03-01/simple/", {"Accept": JSON})
    assert root.status == 200
    assert [p["name"] for p in json.loads(root.body)["projects"]] == ["alpha"]


def test_json_api_at_the_pin(graph, proxy):
    r = proxy.get("/2023-03-01/pypi/alpha/json")
    assert r.status == 200
    doc = json.loads(r.body)
    assert doc["info"]["version"] == "1.0"
    assert doc["info"]["requires_dist"] == ["beta"]
    assert list(doc["releases"]) == ["1.0"]
    assert [u["filename"] for u in doc["urls"]] == ["alpha-1.0-py3-none-any.whl"]
    late = json.loads(proxy.get("/2023-07-01/pypi/alpha/json").body)
    assert late["info"]["version"] == "2.0" and list(late["releases"]) == ["1.0", "2.0"]
    one = json.loads(proxy.get("/2023-07-01/pypi/alpha/1.0/json").body)
    assert one["info"]["version"] == "1.0" and "releases" not in one
    missing = proxy.get("/2023-03-01/pypi/alpha/2.0/json")
    assert missing.status == 404 and json.loads(missing.body)["message"] == "Not Found"


def test_json_api_falls_back_to_core_metadata(graph, proxy):
    graph.per_version_json = False
    doc = json.loads(proxy.get("/2023-03-01/pypi/alpha/json").body)
    assert doc["info"]["version"] == "1.0"
    assert doc["info"]["requires_dist"] == ["beta"]


@pytest.mark.parametrize("payload_size", [0, 100_000])  # held in the blob index; a file of its own
def test_json_api_falls_back_to_the_metadata_inside_a_wheel(fake_pypi, proxy, payload_size):
    fake_pypi.fault("/pypi/", "status", status=404, times=None)  # no JSON API upstream
    wheel = fake_pypi.add_wheel("gamma", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta"],
                                metadata_file=False, payload_size=payload_size)
    assert (wheel.size < INLINE_LIMIT) == (payload_size == 0)
    doc = json.loads(proxy.get("/2023-03-01/pypi/gamma/json").body)
    assert doc["info"]["version"] == "1.0" and doc["info"]["requires_dist"] == ["beta"]
    assert [r.path for r in fake_pypi.requests_for("/files/")] == [wheel.path]


def test_json_api_never_reads_info_from_a_metadata_file_that_fails_its_hash(fake_pypi, proxy):
    """The info read is kept for good: `.metadata` bytes that do not match the sha256 the page
    lists are not used; the METADATA inside the wheel is."""
    fake_pypi.fault("/pypi/", "status", status=404, times=None)  # no JSON API upstream
    fake_pypi.add_wheel("gamma", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta"])
    fake_pypi.fault(re.compile(r"\.metadata$"), "wrong_bytes", times=None)
    doc = json.loads(proxy.get("/2023-03-01/pypi/gamma/json").body)
    assert doc["info"]["name"] == "gamma" and doc["info"]["requires_dist"] == ["beta"]


def test_upstream_down_without_history_is_502_and_with_history_is_served(graph, proxy):
    assert proxy.get("/2023-03-01/simple/alpha/").status == 200
    graph.fault("/simple/", "status", status=500, times=100)  # (a 503 is passed on: test_throttling)
    down = proxy.get("/2023-03-01/simple/beta/")
    assert down.status == 502 and b"500" in down.body
    assert proxy.get("/2023-03-01/simple/alpha/").status == 200  # fixed view, from history


def fills(proxy) -> int:
    metrics = proxy.get("/-/metrics").body.decode().splitlines()
    return next(int(line.split()[1]) for line in metrics if line.startswith("datepin_files_fills_total"))


def test_files_through_the_proxy_fill_once_then_hit_with_the_same_answers(graph, proxy):
    [f] = json.loads(proxy.get("/2023-03-01/simple/beta/", {"Accept": JSON}).body)["files"]
    path = f["url"].removeprefix(proxy.url)
    wheel = graph.file("beta-1.0-py3-none-any.whl")
    cold = proxy.get(path)
    assert cold.status == 200 and cold.body == wheel.read()
    deadline = time.monotonic() + 30
    while fills(proxy) < 1:  # the commit follows the client's last bytes
        assert time.monotonic() < deadline, "the fill was never committed"
    graph.clear_log()
    hit = proxy.get(path)  # a small stored file: answered by the proxy itself
    assert hit.status == 200 and hit.body == wheel.read()
    for name in ("ETag", "Cache-Control", "Content-Type", "Accept-Ranges"):
        assert hit.header(name) == cold.header(name)
    assert not graph.requests_for("/files/")
    tail = proxy.get(path, {"Range": "bytes=-100"})  # ranges still go to the file server
    assert tail.status == 206 and tail.body == wheel.read()[-100:]
    assert proxy.get(path, {"If-None-Match": hit.header("ETag")}).status == 304
    head = proxy.get(path, method="HEAD")
    assert head.status == 200 and head.header("Content-Length") == str(wheel.size)
    metadata = proxy.get(path + ".metadata")
    assert metadata.status == 200 and metadata.body == wheel.metadata
    assert proxy.get(path + ".metadata").body == wheel.metadata


def test_a_cold_page_waits_for_another_process_writing_history_and_the_loop_does_not(graph, proxy):
    """A small page's observation is recorded on the event loop unless history is busy; then
    it waits in a thread, and meanwhile the proxy goes on answering from history."""
    assert proxy.get("/2023-03-01/simple/beta/").status == 200  # observed: fixed from now on
    other = sqlite3.connect(proxy.data_dir / "history.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing history, e.g. `datepin snapshot`
    with ThreadPoolExecutor(1) as pool:
        cold = pool.submit(proxy.get, "/2023-03-01/simple/alpha/")
        time.sleep(0.5)
        assert not cold.done()  # waiting for the lock, not failed
        started = time.monotonic()
        assert proxy.get("/2023-03-01/simple/beta/").status == 200
        assert proxy.get("/-/health").status == 200
        assert time.monotonic() - started < 0.5
        other.execute("COMMIT")
        other.close()
        r = cold.result(timeout=30)
    assert r.status == 200 and b"alpha-1.0" in r.body
    assert proxy.get("/2023-03-01/simple/alpha/").body == r.body


# -- reserved words are project names under /simple/ -----------------------------------------


@pytest.mark.parametrize("project", ["pypi", "files", "simple", "r"])
def test_reserved_words_are_fine_project_names_under_simple(project: str) -> None:
    """`pypi` and `files` are real PyPI projects; `/{pin}/simple/` has no reserved names."""
    route = routes.route_path("GET", f"/2023-11-18/simple/{project}/")
    assert route == routes.Project("2023-11-18", "pypi", project)  # type: ignore[arg-type]
    route = routes.route_path("GET", f"/2023-11-18/r/extra/simple/{project}/")
    assert route == routes.Project("2023-11-18", "extra", project)  # type: ignore[arg-type]


def test_pip_and_uv_install_a_project_named_pypi(fake_pypi, proxy):
    fake_pypi.add_wheel("pypi", "2.1", upload_time="2023-01-01T10:00:00Z")
    assert pip_resolve(proxy.index("2023-03-01"), ["pypi"]) == {"pypi": "2.1"}
    assert uv_compile(proxy.index("2023-03-01"), ["pypi"]) == {"pypi": "2.1"}


# -- the JSON API of a fixed view ---------------------------------------------------------------


def test_json_api_of_a_fixed_view_never_changes(fake_pypi, proxy):
    """PyPI down: the JSON API of a fixed view may fail (5xx, with a reason), but never
    answers 200 with something else than it answers once PyPI is back."""
    fake_pypi.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta"])
    assert proxy.get("/2023-03-01/simple/alpha/").status == 200  # observed: the view is fixed
    fake_pypi.fault("/", "status", times=None)  # PyPI is down
    down = proxy.get("/2023-03-01/pypi/alpha/json")
    fake_pypi.clear_faults()
    up = proxy.get("/2023-03-01/pypi/alpha/json")
    assert up.status == 200 and json.loads(up.body)["info"]["requires_dist"] == ["beta"]
    assert down.status in (502, 503), down.body
    assert json.loads(down.body)["message"]


def test_json_api_finds_a_release_by_an_equal_version(graph, proxy):
    """PyPI answers /pypi/P/1.0.0/json for release 1.0 (warehouse falls back to the canonical
    version); render_json_api does too, so the route must not 404 first."""
    one = proxy.get("/2023-07-01/pypi/alpha/1.0/json")
    assert one.status == 200
    same = proxy.get("/2023-07-01/pypi/alpha/1.0.0/json")
    assert same.status == 200, same.body
    assert json.loads(same.body)["info"]["version"] == "1.0"
    assert json.loads(same.body)["urls"] == json.loads(one.body)["urls"]


def test_if_none_match_uses_weak_comparison(graph, proxy):
    """RFC 9110 13.1.2: If-None-Match compares weakly, so a tag a cache in between made weak
    (nginx's gzip does) or `*` still revalidates to a 304."""
    r = proxy.get("/2023-03-01/simple/alpha/", {"Accept": JSON})
    etag = r.header("ETag")
    for sent in (etag, "W/" + etag, f'"other", W/{etag}', "*"):
        again = proxy.get("/2023-03-01/simple/alpha/", {"Accept": JSON, "If-None-Match": sent})
        assert again.status == 304, sent


# -- file URLs of a lock file, on another datepin -------------------------------------------


def test_a_lock_made_through_one_datepin_installs_through_another(graph, proxy, proxy_config, tmp_path):
    """uv.lock names files by datepin's date-independent URLs.  A lock committed to a
    repository is installed by CI or a colleague through a datepin of their own at the same
    address, whose history never listed those files: it looks the project up upstream."""
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.12"\n'
        'dependencies = ["alpha"]\n'
    )
    run([uv_bin(), "lock", "--python", sys.executable, "--default-index", proxy.index("2023-03-01")],
        cwd=demo)
    with Proxy(data_dir=tmp_path / "other-data", config=proxy_config) as other:
        lock = demo / "uv.lock"
        lock.write_text(lock.read_text().replace(proxy.url, other.url))  # "the same address"
        graph.clear_log()
        run([uv_bin(), "sync", "--frozen", "--python", sys.executable], cwd=demo)
        freeze = run([uv_bin(), "pip", "freeze", "--python", str(venv_python(demo / ".venv"))])
        assert freeze.stdout.split() == ["alpha==1.0", "beta==1.0"]
        # One look at each project, not one per file.
        assert sorted(r.path for r in graph.requests_for("/simple/")) == [
            "/simple/alpha/", "/simple/beta/"]
        # Still only files upstream lists, under their own sha256.
        wheel = graph.file("alpha-1.0-py3-none-any.whl")
        assert other.get(f"/files/pypi/{wheel.sha256}/{wheel.filename}.metadata").body == wheel.metadata
        wrong = other.get(f"/files/pypi/{'0' * 64}/{wheel.filename}")
        assert wrong.status == 404 and b"never listed" in wrong.body
        assert other.get(f"/files/pypi/{wheel.sha256}/alpha-9.0-py3-none-any.whl").status == 404


def test_verbose_logs_one_line_per_request_with_its_answer(graph, tmp_path, proxy_config):
    """`serve -v` is for debugging a client: each request it answered, and how."""
    with Proxy(data_dir=tmp_path / "data", config=proxy_config, extra_args=["-v"]) as proxy:
        page = proxy.get("/2023-03-01/simple/alpha/", {"Accept": JSON})
        [url] = [f["url"] for f in json.loads(page.body)["files"]]
        assert fetch(url).status == 200
        assert proxy.get("/2099-01-01/simple/alpha/").status == 400
        host = f"127.0.0.1:{proxy.port}"
        wanted = [f"GET {host}/2023-03-01/simple/alpha/: 200",
                  f"GET {url.removeprefix('http://')}: ", f"GET {host}/2099-01-01/simple/alpha/: 400"]
        deadline = time.monotonic() + 5
        while not all(any(w in line for line in proxy.log) for w in wanted):
            assert time.monotonic() < deadline, "".join(proxy.log)
            time.sleep(0.05)
    [line] = [x for x in proxy.log if "/2099-01-01/simple/alpha/" in x]
    assert " DEBUG " in line


# -- the JSON API of a release upstream no longer describes ----------------------------------

PIN_JSON_API = ("/2023-03-01/pypi/gamma/json", "/2023-03-01/pypi/gamma/1.0/json")


def add_gamma(fake_pypi, kind: str):
    """gamma 1.0 as a wheel (with its PEP 658 `.metadata` file) or as an sdist alone."""
    add = fake_pypi.add_sdist if kind == "sdist" else fake_pypi.add_wheel
    return add("gamma", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta>=1"],
               requires_python=">=3.8")


def keep(proxy, kept: str) -> None:
    """Have the proxy keep a file of gamma 1.0 at the pin, as a client's download does:
    the wheel, only the wheel's `.metadata` (what `uv pip compile` reads), or the sdist."""
    [f] = json.loads(proxy.get("/2023-03-01/simple/gamma/", {"Accept": JSON}).body)["files"]
    path = f["url"].removeprefix(proxy.url) + (".metadata" if kept == "metadata" else "")
    assert proxy.get(path).status == 200
    deadline = time.monotonic() + 30
    while fills(proxy) < 1:  # the commit follows the client's last bytes
        assert time.monotonic() < deadline, "the file was never committed"


@pytest.mark.parametrize("upstream", ["deleted", "down"])
@pytest.mark.parametrize("kept", ["wheel", "metadata", "sdist"])
def test_json_api_answers_from_kept_core_metadata_when_upstream_cannot(fake_pypi, proxy, kept, upstream):
    """A release whose info datepin never fetched, deleted upstream (or upstream down): the
    JSON API at the pin reads the info from the core metadata of the file it kept (Poetry
    locks from it), and keeps that answer as it keeps fetched info."""
    gamma = add_gamma(fake_pypi, "sdist" if kept == "sdist" else "wheel")
    keep(proxy, kept)
    if upstream == "deleted":
        fake_pypi.delete(gamma.filename)
    else:
        fake_pypi.fault("/", "status", times=None)
    first = [proxy.get(path) for path in PIN_JSON_API]
    for r in first:
        assert r.status == 200, r.body
        info = json.loads(r.body)["info"]
        assert {k: info[k] for k in ("name", "version", "requires_dist", "requires_python", "summary")} == {
            "name": "gamma", "version": "1.0", "requires_dist": ["beta>=1"],
            "requires_python": ">=3.8", "summary": "gamma, a fakepypi test package"}
    fake_pypi.clear_faults()
    fake_pypi.clear_log()
    again = [proxy.get(path) for path in PIN_JSON_API]
    assert [r.body for r in again] == [r.body for r in first]
    assert fake_pypi.requests == []


@pytest.mark.parametrize("upstream", ["deleted", "down"])
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_json_api_of_a_release_gone_with_nothing_kept_is_an_error(fake_pypi, proxy, kind, upstream):
    gamma = add_gamma(fake_pypi, kind)
    assert proxy.get("/2023-03-01/simple/gamma/").status == 200  # observed: the view is fixed
    if upstream == "deleted":
        fake_pypi.delete(gamma.filename)
    else:
        fake_pypi.fault("/", "status", times=None)
    for path in PIN_JSON_API:
        r = proxy.get(path)
        # Upstream's 503 is passed on, as for a page (tests/test_throttling.py).
        assert r.status == (502 if upstream == "deleted" else 503), r.body
        assert "gamma 1.0" in json.loads(r.body)["message"]


def test_json_api_reads_a_kept_wheel_before_a_kept_sdist(fake_pypi, proxy):
    """Both files of a release kept, their core metadata different (an sdist's PKG-INFO often
    lists no dependencies, its wheel's METADATA does), upstream deleted them: the info is the
    wheel's (DESIGN.md "The view function"), even when the sdist was uploaded first."""
    sdist = fake_pypi.add_sdist("gamma", "1.0", upload_time="2023-01-01T10:00:00Z")
    wheel = fake_pypi.add_wheel("gamma", "1.0", upload_time="2023-01-02T10:00:00Z",
                                requires_dist=["beta>=1"])
    listed = json.loads(proxy.get("/2023-03-01/simple/gamma/", {"Accept": JSON}).body)["files"]
    for f in listed:
        assert proxy.get(f["url"].removeprefix(proxy.url)).status == 200
    deadline = time.monotonic() + 30
    while fills(proxy) < 2:  # the commit follows the client's last bytes
        assert time.monotonic() < deadline, "the files were never committed"
    fake_pypi.delete(sdist.filename)
    fake_pypi.delete(wheel.filename)
    for path in PIN_JSON_API:
        r = proxy.get(path)
        assert r.status == 200, r.body
        assert json.loads(r.body)["info"]["requires_dist"] == ["beta>=1"], path


def test_json_api_reads_the_wheel_uploaded_first(fake_pypi, proxy):
    """Two wheels of a release whose METADATA differ, the later upload listed first (by
    filename): the info is the first upload's, as warehouse describes a release."""
    fake_pypi.fault("/pypi/", "status", status=404, times=None)  # no JSON API upstream
    first = fake_pypi.add_wheel("gamma", "1.0", upload_time="2023-01-01T10:00:00Z",
                                requires_dist=["beta>=1"], tag="py3-none-any")
    later = fake_pypi.add_wheel("gamma", "1.0", upload_time="2023-01-05T10:00:00Z",
                                tag="py2-none-any")
    listed = json.loads(proxy.get("/2023-03-01/simple/gamma/", {"Accept": JSON}).body)["files"]
    assert [f["filename"] for f in listed] == [later.filename, first.filename]
    for path in PIN_JSON_API:
        r = proxy.get(path)
        assert r.status == 200, r.body
        assert json.loads(r.body)["info"]["requires_dist"] == ["beta>=1"], path
