"""What pip, uv, Poetry, PDM and pipenv send and expect (PROTOCOL.md's checklist), against
the real proxy: the items no other test file holds it to."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest

from clients import run, uv_compile
from fakepypi import FakePyPI, add_alpha_beta
from proxyproc import Proxy, fetch
from test_lockers import index_source, isolated_env, locked, project, tool

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def graph(fake_pypi: FakePyPI) -> FakePyPI:
    return add_alpha_beta(fake_pypi)


def wheel_url(proxy: Proxy, pin: str, project: str) -> str:
    page = json.loads(proxy.get(f"/{pin}/simple/{project}/", {"Accept": JSON}).body)
    return str(page["files"][0]["url"]).removeprefix(proxy.url)


def test_every_route_answers_head_as_it_answers_get(graph: FakePyPI, proxy: Proxy) -> None:
    file = wheel_url(proxy, "2023-03-01", "alpha")
    paths = [
        "/2023-03-01/simple/alpha/", "/2023-03-01/alpha/", "/2023-03-01/simple/",
        "/2023-03-01/pypi/alpha/json", "/2023-03-01/pypi/alpha/1.0/json",
        "/2023-03-01/simple/Alpha/", "/2023-03-01/simple/alpha", "/2022-01-01/simple/alpha/",
        "/", "/-/health", file, file + ".metadata",
    ]
    for path in paths:
        get, head = proxy.get(path), proxy.get(path, method="HEAD")
        assert (head.status, head.body) == (get.status, b""), path
        for name in ("Content-Type", "ETag", "Location", "Cache-Control", "Datepin-Cutoff"):
            assert head.header(name) == get.header(name), (path, name)


def test_pipenv_hash_helper_url_without_accept_gets_html(graph: FakePyPI, proxy: Proxy) -> None:
    """pipenv's helper sends GET f"{url}/{name}/" (no rstrip, so `//`) with no Accept, and
    reads HTML."""
    r = fetch(f"{proxy.index('2023-03-01')}/alpha/")
    assert r.status == 200 and r.header("Content-Type") == "text/html; charset=utf-8"
    assert b">alpha-1.0-py3-none-any.whl</a>" in r.body and b"alpha-2.0" not in r.body


def test_redirects_keep_the_pin_and_the_query(graph: FakePyPI, proxy: Proxy) -> None:
    for path, location in [
        ("/2023-03-01/simple/Alpha/?format=x", "/2023-03-01/simple/alpha/?format=x"),
        ("/2023-03-01/simple/alpha?format=x", "/2023-03-01/simple/alpha/?format=x"),
        ("/2023-03-01/pypi/Alpha/json", "/2023-03-01/pypi/alpha/json"),
        ("/2023-03-01/pypi/Alpha/1.0/json", "/2023-03-01/pypi/alpha/1.0/json"),
    ]:
        r = proxy.get(path)
        assert (r.status, r.header("Location")) == (301, location), path


def test_json_api_answers_with_and_without_a_trailing_slash(graph: FakePyPI, proxy: Proxy) -> None:
    for path in ("/2023-03-01/pypi/alpha/json", "/2023-03-01/pypi/alpha/1.0/json"):
        plain, slash = proxy.get(path), proxy.get(path + "/")
        assert plain.status == slash.status == 200 and plain.body == slash.body, path


def test_json_api_not_found_is_json_as_pypi_sends_it(graph: FakePyPI, proxy: Proxy) -> None:
    for path in ("/2023-03-01/pypi/no-such/json", "/2022-01-01/pypi/alpha/json",
                 "/2023-03-01/pypi/alpha/9.9/json"):
        r = proxy.get(path)
        assert r.status == 404 and r.header("Content-Type") == "application/json", path
        assert json.loads(r.body)["message"] == "Not Found", path


def test_page_caching_headers_per_encoding(graph: FakePyPI, proxy: Proxy) -> None:
    plain = proxy.get("/2023-03-01/simple/alpha/", {"Accept": JSON})
    zipped = proxy.get("/2023-03-01/simple/alpha/", {"Accept": JSON, "Accept-Encoding": "gzip"})
    assert plain.header("Vary") == zipped.header("Vary") == "Accept, Accept-Encoding"
    assert plain.header("Content-Encoding") is None and zipped.header("Content-Encoding") == "gzip"
    assert gzip.decompress(zipped.body) == plain.body
    tags = {plain.header("ETag"), zipped.header("ETag")}
    assert len(tags) == 2 and not any(t.startswith("W/") for t in tags)  # uv: strong only
    for r, encoding in ((plain, "identity"), (zipped, "gzip")):
        again = proxy.get("/2023-03-01/simple/alpha/", {
            "Accept": JSON, "Accept-Encoding": encoding, "If-None-Match": r.header("ETag")})
        assert again.status == 304
        assert again.header("ETag") == r.header("ETag")
        assert again.header("Cache-Control") == r.header("Cache-Control")
    assert plain.header("X-PyPI-Last-Serial") is None  # omitted, never a wrong serial
    assert "_last-serial" not in json.loads(plain.body)["meta"]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for pin in (today, "live"):
        cache_control = proxy.get(f"/{pin}/simple/alpha/").header("Cache-Control")
        max_age = next(int(p.split("=")[1]) for p in cache_control.split(", ") if p.startswith("max-age="))
        assert 0 <= max_age <= 600, (pin, cache_control)


def test_files_are_never_recoded_and_a_long_suffix_range_is_the_whole_file(graph: FakePyPI, proxy: Proxy) -> None:
    wheel = graph.file("alpha-1.0-py3-none-any.whl")
    path = wheel_url(proxy, "2023-03-01", "alpha")
    for suffix, body in (("", wheel.content), (".metadata", wheel.metadata)):
        for _ in range(2):  # cold, then from the store
            r = proxy.get(path + suffix, {"Accept-Encoding": "gzip, deflate"})
            assert r.status == 200 and r.body == body and r.header("Content-Encoding") is None
    whole = proxy.get(path, {"Range": f"bytes=-{wheel.size + 10_000}", "Accept-Encoding": "identity"})
    assert whole.status == 206 and whole.body == wheel.content
    assert whole.header("Content-Range") == f"bytes 0-{wheel.size - 1}/{wheel.size}"
    assert proxy.get(path, method="HEAD").header("Accept-Ranges") == "bytes"


def test_uv_searches_the_next_index_when_the_pin_has_no_such_project(graph: FakePyPI, proxy: Proxy) -> None:
    """A project with no file before the pin is a 404, which uv's first-index search passes
    over; an empty 200 would stop it there."""
    assert proxy.get("/2022-06-01/simple/alpha/").status == 404
    resolved = uv_compile(proxy.index("2023-03-01"), ["alpha"],
                          extra_args=["--extra-index-url", proxy.index("2022-06-01")])
    assert resolved == {"alpha": "1.0", "beta": "1.0"}


@pytest.fixture
def no_metadata_files(fake_pypi: FakePyPI) -> FakePyPI:
    """Wheels without PEP 658 files, big enough that a tail range is not the whole wheel."""
    fake_pypi.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z",
                        metadata_file=False, payload_size=60_000)
    fake_pypi.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta"],
                        metadata_file=False, payload_size=60_000)
    return fake_pypi


def whole_wheel_downloads(fake: FakePyPI) -> list[str]:
    return [r.path for r in fake.requests_for("/files/", method="GET") if "range" not in r.headers]


def test_uv_reads_wheel_tails_through_the_proxy(no_metadata_files: FakePyPI, proxy: Proxy) -> None:
    assert uv_compile(proxy.index("2023-03-01"), ["alpha"]) == {"alpha": "1.0", "beta": "1.0"}
    ranged = [r for r in no_metadata_files.requests_for("/files/") if "range" in r.headers]
    assert ranged and whole_wheel_downloads(no_metadata_files) == []


def test_poetry_reads_wheel_tails_through_the_proxy(no_metadata_files: FakePyPI, proxy: Proxy, tmp_path) -> None:
    """Poetry's lazy wheel: `Range: bytes=-10000` first, on a file not yet stored."""
    poetry = tool("poetry")
    path = project(tmp_path / "demo", index_source("poetry", proxy.index("2023-03-01")))
    run([poetry, "lock"], cwd=path, env_extra=isolated_env(tmp_path / "home"))
    assert locked(path / "poetry.lock") == {"alpha": "1.0", "beta": "1.0"}
    # datepin knows the size: upstream gets the suffix as the explicit range it stands for
    ranged = [r for r in no_metadata_files.requests_for("/files/") if "range" in r.headers]
    assert ranged and whole_wheel_downloads(no_metadata_files) == []


@pytest.fixture
def small_then_big_without_metadata(fake_pypi: FakePyPI) -> FakePyPI:
    """A wheel smaller than a client's tail read, whose range is so the whole file, then one
    bigger (PyPI: filelock's wheel, then torch's nvidia-* wheels of hundreds of MB)."""
    fake_pypi.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z",
                        metadata_file=False, payload_size=60_000)
    fake_pypi.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta"],
                        metadata_file=False)
    return fake_pypi


@pytest.mark.parametrize("client", ["uv", "poetry"])
def test_a_small_wheel_read_whole_by_a_range_leaves_ranges_for_the_next(
    small_then_big_without_metadata: FakePyPI, proxy: Proxy, tmp_path, client: str
) -> None:
    """A range covering the whole cold file is answered 206: uv marks an index that answers a
    range 200 as one without ranges, and then downloads each later wheel whole.  Poetry, which
    asks again per file, must read that 206 as well."""
    fake = small_then_big_without_metadata
    alpha, beta = fake.file("alpha-1.0-py3-none-any.whl"), fake.file("beta-1.0-py3-none-any.whl")
    if client == "uv":
        assert uv_compile(proxy.index("2023-03-01"), ["alpha"]) == {"alpha": "1.0", "beta": "1.0"}
    else:
        path = project(tmp_path / "demo", index_source("poetry", proxy.index("2023-03-01")))
        run([tool("poetry"), "lock"], cwd=path, env_extra=isolated_env(tmp_path / "home"))
        assert locked(path / "poetry.lock") == {"alpha": "1.0", "beta": "1.0"}
    assert any("range" in r.headers for r in fake.requests_for(beta.path))
    assert whole_wheel_downloads(fake) == [alpha.path]


def test_pdm_reads_the_json_api_beside_the_pinned_index(graph: FakePyPI, proxy: Proxy, tmp_path) -> None:
    """PDM's `pypi.json_api` asks `<index without /simple>/pypi/<name>/<version>/json`."""
    pdm = tool("pdm")
    path = project(tmp_path / "demo", index_source("pdm", f"{proxy.url}/2023-03-01/simple"))
    run([pdm, "lock"], cwd=path, env_extra={**isolated_env(tmp_path / "home"), "PDM_PYPI_JSON_API": "true"})
    assert locked(path / "pdm.lock") == {"alpha": "1.0", "beta": "1.0"}
    # datepin fetched what PDM asked for: the release's own JSON, once
    assert [r.path for r in graph.requests_for("/pypi/alpha/")] == ["/pypi/alpha/1.0/json"]
