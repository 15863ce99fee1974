"""The fake upstream PyPI behaves like PyPI for real clients, and misbehaves on demand."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import re
import socket
import subprocess
import tarfile
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import pytest
from bs4 import BeautifulSoup

import clients
from fakepypi import (
    HTML_TYPE,
    HTML_V1_TYPE,
    JSON_TYPE,
    FakePyPI,
    build_sdist,
    build_wheel,
    closed_port,
    parse_time,
    wheel_metadata,
    write_wheel,
)

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
UV_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.01"
)
POETRY_ACCEPT = "application/vnd.pypi.simple.v1+json, */*;q=0.1"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(
    fake: FakePyPI,
    path_or_url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Response:
    """One raw request (no redirects followed, no decoding) on a fresh connection."""
    path = urlsplit(path_or_url)._replace(scheme="", netloc="").geturl()
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def add_graph(fake: FakePyPI, *, metadata_file: bool = True, payload_size: int = 0) -> None:
    """alpha 1.0 needs beta>=1; beta has 1.0 and 2.0."""
    for project, version, day, requires in [
        ("alpha", "1.0", "2023-03-01", ["beta>=1"]),
        ("beta", "1.0", "2023-01-01", []),
        ("beta", "2.0", "2023-02-01", []),
    ]:
        fake.add_wheel(project, version, upload_time=f"{day}T10:00:00Z", requires_dist=requires,
                       metadata_file=metadata_file, payload_size=payload_size)


def page_links(body: bytes) -> dict[str, dict[str, str]]:
    """filename -> the attributes of its anchor on a PEP 503 page."""
    soup = BeautifulSoup(body, "html.parser")
    return {a.get_text(): {k: str(v) for k, v in a.attrs.items()} for a in soup.select("a")}


# ---------------------------------------------------------------------------------------------
# Real clients against the fake
# ---------------------------------------------------------------------------------------------


def test_pip_resolves_through_json_pages_and_metadata_files(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)

    assert clients.pip_resolve(fake_pypi.simple_url, ["alpha"]) == {"alpha": "1.0", "beta": "2.0"}

    pages = fake_pypi.requests_for("/simple/")
    assert [r.path for r in pages] == ["/simple/alpha/", "/simple/beta/"]
    assert all("v1+json" in r.headers["accept"] for r in pages)
    files = [r.path for r in fake_pypi.requests_for("/files/")]
    # PEP 658: pip validated and used the .metadata files, never downloading a wheel
    assert files and all(p.endswith(".whl.metadata") for p in files)


def test_uv_compile_resolves_the_same_graph(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)

    assert clients.uv_compile(fake_pypi.simple_url, ["alpha"]) == {"alpha": "1.0", "beta": "2.0"}


def test_uv_reads_wheel_tails_with_ranges_when_there_is_no_metadata_file(
    fake_pypi: FakePyPI,
) -> None:
    add_graph(fake_pypi, metadata_file=False, payload_size=50_000)

    assert clients.uv_compile(fake_pypi.simple_url, ["alpha"]) == {"alpha": "1.0", "beta": "2.0"}

    wheel_requests = fake_pypi.requests_for("/files/")
    assert any(r.method == "HEAD" for r in wheel_requests)
    ranged = [r for r in wheel_requests if "range" in r.headers]
    assert ranged and all(r.status == 206 for r in ranged)


def test_pip_install_into_a_fresh_venv_imports_the_module(
    fake_pypi: FakePyPI, tmp_path: Path
) -> None:
    add_graph(fake_pypi)

    installed = clients.pip_install(fake_pypi.simple_url, ["alpha"], target_venv=tmp_path / "v")

    assert installed == {"alpha": "1.0", "beta": "2.0"}
    out = subprocess.run(
        [clients.venv_python(tmp_path / "v"), "-c",
         "import alpha, beta; print(alpha.__version__, beta.__version__)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == ["1.0", "2.0"]


def test_uv_install_into_a_fresh_venv(fake_pypi: FakePyPI, tmp_path: Path) -> None:
    add_graph(fake_pypi)

    installed = clients.uv_install(fake_pypi.simple_url, ["alpha"], target_venv=tmp_path / "v")

    assert installed == {"alpha": "1.0", "beta": "2.0"}


def test_a_yanked_version_is_skipped_unless_pinned(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)
    fake_pypi.yank("beta-2.0-py3-none-any.whl", "broken")

    assert clients.pip_resolve(fake_pypi.simple_url, ["alpha"])["beta"] == "1.0"
    assert clients.uv_compile(fake_pypi.simple_url, ["alpha"])["beta"] == "1.0"
    # PEP 592: an exact pin may still select a yanked release
    assert clients.pip_resolve(fake_pypi.simple_url, ["beta==2.0"]) == {"beta": "2.0"}

    fake_pypi.unyank("beta-2.0-py3-none-any.whl")
    assert clients.pip_resolve(fake_pypi.simple_url, ["alpha"])["beta"] == "2.0"


@pytest.mark.parametrize("serve_json", [True, False], ids=["json", "html"])
def test_clients_follow_relative_links_and_requires_python(
    fake_pypi: FakePyPI, serve_json: bool
) -> None:
    add_graph(fake_pypi)
    fake_pypi.add_wheel("beta", "3.0", upload_time="2023-04-01T00:00:00Z",
                        requires_python=">=4")  # uv ignores upper bounds
    fake_pypi.serve_json = serve_json
    fake_pypi.relative_links = True

    assert clients.pip_resolve(fake_pypi.simple_url, ["alpha"]) == {"alpha": "1.0", "beta": "2.0"}
    assert clients.uv_compile(fake_pypi.simple_url, ["alpha"]) == {"alpha": "1.0", "beta": "2.0"}
    assert fake_pypi.requests_for("/files/")  # the relative links led to the files


def test_pip_authenticates_with_credentials_in_the_index_url(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)
    fake_pypi.require_basic = ("user", "token")

    with pytest.raises(clients.ClientError):
        clients.pip_resolve(fake_pypi.simple_url, ["alpha"])
    index = fake_pypi.simple_url.replace("http://", "http://user:token@")
    assert clients.pip_resolve(index, ["alpha"]) == {"alpha": "1.0", "beta": "2.0"}


def test_pip_rejects_a_wheel_whose_bytes_do_not_match_the_index(
    fake_pypi: FakePyPI, tmp_path: Path
) -> None:
    fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z")
    fake_pypi.fault(re.compile(r"\.whl$"), "wrong_bytes", times=None)

    with pytest.raises(clients.ClientError, match="(?i)hash"):
        clients.pip_install(fake_pypi.simple_url, ["beta"], target_venv=tmp_path / "v")


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "serve_json", "expected"),
    [
        (PIP_ACCEPT, True, JSON_TYPE),
        (UV_ACCEPT, True, JSON_TYPE),
        (POETRY_ACCEPT, True, JSON_TYPE),
        (None, True, HTML_TYPE),  # pipenv's hash helper sends no Accept
        ("*/*", True, HTML_TYPE),
        ("application/json", True, HTML_TYPE),  # nothing matches -> HTML, as PyPI
        (HTML_V1_TYPE, True, HTML_V1_TYPE),
        (f"{JSON_TYPE}, {HTML_V1_TYPE}", True, HTML_V1_TYPE),  # tie -> HTML
        (PIP_ACCEPT, False, HTML_V1_TYPE),
        (JSON_TYPE, False, HTML_TYPE),
    ],
)
def test_content_negotiation(
    fake_pypi: FakePyPI, accept: str | None, serve_json: bool, expected: str
) -> None:
    add_graph(fake_pypi)
    fake_pypi.serve_json = serve_json

    resp = fetch(fake_pypi, "/simple/beta/", headers={"Accept": accept} if accept else {})

    assert resp.status == 200
    assert resp.headers["content-type"].split(";")[0] == expected
    if expected == JSON_TYPE:
        assert resp.json()["name"] == "beta"
    else:
        assert set(page_links(resp.body)) == {"beta-1.0-py3-none-any.whl",
                                              "beta-2.0-py3-none-any.whl"}


def test_format_query_overrides_accept(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)

    resp = fetch(fake_pypi, f"/simple/beta/?format={quote(JSON_TYPE)}")

    assert resp.headers["content-type"] == JSON_TYPE


def test_json_page_lists_every_field_as_pypi_does(fake_pypi: FakePyPI) -> None:
    whl = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-11-18T07:08:33.123456Z",
                              requires_python=">=3.8")
    sdist = fake_pypi.add_sdist("beta", "1.0", upload_time=datetime(2023, 11, 18, tzinfo=UTC))
    fake_pypi.yank(sdist.filename)

    page = fetch(fake_pypi, "/simple/beta/", headers={"Accept": JSON_TYPE}).json()

    assert page["meta"]["api-version"] == "1.1"
    assert page["name"] == "beta"
    assert page["versions"] == ["1.0"]
    by_name = {f["filename"]: f for f in page["files"]}
    assert by_name[whl.filename] == {
        "filename": whl.filename,
        "url": whl.url,
        "hashes": {"sha256": whl.sha256},
        "requires-python": ">=3.8",
        "yanked": False,
        "core-metadata": {"sha256": whl.metadata_sha256},
        "data-dist-info-metadata": {"sha256": whl.metadata_sha256},
        "upload-time": "2023-11-18T07:08:33.123456Z",
        "size": whl.size,
    }
    assert by_name[sdist.filename]["yanked"] is True
    assert by_name[sdist.filename]["core-metadata"] is False
    assert by_name[sdist.filename]["upload-time"] == "2023-11-18T00:00:00.000000Z"
    # the advertised hashes are those of the bytes served
    assert hashlib.sha256(fetch(fake_pypi, whl.url).body).hexdigest() == whl.sha256
    metadata = fetch(fake_pypi, whl.url + ".metadata").body
    assert hashlib.sha256(metadata).hexdigest() == whl.metadata_sha256
    assert b"Requires-Python: >=3.8" in metadata


def test_html_page_carries_data_attributes(fake_pypi: FakePyPI) -> None:
    whl = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-11-18T07:08:33.5Z",
                              requires_python=">=3.8,<4")
    fake_pypi.yank(whl.filename, 'see <issue> & "fix"')

    links = page_links(fetch(fake_pypi, "/simple/beta/").body)
    attrs = links[whl.filename]
    assert attrs["href"] == f"{whl.url}#sha256={whl.sha256}"
    assert attrs["data-requires-python"] == ">=3.8,<4"
    assert attrs["data-core-metadata"] == f"sha256={whl.metadata_sha256}"
    assert attrs["data-dist-info-metadata"] == attrs["data-core-metadata"]
    assert attrs["data-yanked"] == 'see <issue> & "fix"'
    assert "data-upload-time" not in attrs

    fake_pypi.html_upload_time = True
    fake_pypi.html_core_metadata = False
    fake_pypi.relative_links = True
    page_url = fake_pypi.project_url("beta")
    attrs = page_links(fetch(fake_pypi, page_url).body)[whl.filename]
    assert attrs["data-upload-time"] == "2023-11-18T07:08:33.500000Z"
    assert "data-core-metadata" not in attrs
    assert not attrs["href"].startswith("http")
    assert urljoin(page_url, attrs["href"]) == f"{whl.url}#sha256={whl.sha256}"


def test_names_are_normalized_and_unknown_projects_are_404(fake_pypi: FakePyPI) -> None:
    fake_pypi.add_wheel("Foo.Bar_baz", "1.0", upload_time="2023-01-01T00:00:00Z")

    assert fake_pypi.files("foo-bar-baz")[0].filename == "foo_bar_baz-1.0-py3-none-any.whl"
    redirect = fetch(fake_pypi, "/simple/Foo.Bar_baz/?x=1")
    assert (redirect.status, redirect.headers["location"]) == (301, "/simple/foo-bar-baz/?x=1")
    assert fetch(fake_pypi, "/simple/foo-bar-baz").headers["location"] == "/simple/foo-bar-baz/"
    assert fetch(fake_pypi, "/simple/foo-bar-baz/").status == 200
    assert fetch(fake_pypi, "/simple/nothing-here/").status == 404

    root = fetch(fake_pypi, "/simple/", headers={"Accept": JSON_TYPE}).json()
    assert [p["name"] for p in root["projects"]] == ["Foo.Bar_baz"]
    assert "/simple/foo-bar-baz/" in page_links(fetch(fake_pypi, "/simple/").body)[
        "Foo.Bar_baz"]["href"]


def test_project_status_raises_the_api_version(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)
    fake_pypi.set_status("beta", "archived", "moved to gamma")

    page = fetch(fake_pypi, "/simple/beta/", headers={"Accept": JSON_TYPE}).json()
    assert page["meta"]["api-version"] == "1.4"
    assert page["project-status"] == {"status": "archived", "reason": "moved to gamma"}
    soup = BeautifulSoup(fetch(fake_pypi, "/simple/beta/").body, "html.parser")
    status = soup.select_one('meta[name="pypi:project-status"]')
    assert status is not None and status["content"] == "archived"

    fake_pypi.set_status("beta", None)
    page = fetch(fake_pypi, "/simple/beta/", headers={"Accept": JSON_TYPE}).json()
    assert page["meta"]["api-version"] == "1.1" and "project-status" not in page


def test_deleted_files_leave_the_pages_and_the_file_host(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)
    gone = fake_pypi.file("beta-2.0-py3-none-any.whl")
    fake_pypi.delete(gone.filename)

    page = fetch(fake_pypi, "/simple/beta/", headers={"Accept": JSON_TYPE}).json()
    assert [f["filename"] for f in page["files"]] == ["beta-1.0-py3-none-any.whl"]
    assert page["versions"] == ["1.0"]
    assert "2.0" not in fetch(fake_pypi, "/pypi/beta/json").json()["releases"]
    assert fetch(fake_pypi, gone.url).status == 404
    assert clients.pip_resolve(fake_pypi.simple_url, ["alpha"])["beta"] == "1.0"

    fake_pypi.keep_serving_deleted_files = True
    assert fetch(fake_pypi, gone.url).body == gone.content
    assert fetch(fake_pypi, gone.url + ".metadata").body == gone.metadata

    fake_pypi.remove_project("beta")
    assert fetch(fake_pypi, "/simple/beta/").status == 404
    assert fetch(fake_pypi, "/pypi/beta/json").status == 404
    fake_pypi.add_wheel("beta", "1.0", upload_time="2024-01-01T00:00:00Z")  # a new upload
    assert len(fake_pypi.files("beta")) == 1


def test_gzip_pages_when_asked(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)
    plain = fetch(fake_pypi, "/simple/beta/", headers={"Accept-Encoding": "gzip"})
    fake_pypi.gzip_pages = True
    zipped = fetch(fake_pypi, "/simple/beta/", headers={"Accept-Encoding": "gzip"})

    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["etag"] != plain.headers["etag"]
    assert gzip.decompress(zipped.body) == plain.body


# ---------------------------------------------------------------------------------------------
# JSON API
# ---------------------------------------------------------------------------------------------


def test_json_api_describes_the_release_pypi_would_show(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)
    fake_pypi.add_wheel("beta", "3.0rc1", upload_time="2023-05-01T00:00:00Z")
    fake_pypi.add_wheel("beta", "2.5", upload_time="2023-04-01T00:00:00Z",
                        requires_dist=["gamma; extra == 'fast'"], requires_python=">=3.9")
    fake_pypi.yank("beta-2.5-py3-none-any.whl", "oops")

    doc = fetch(fake_pypi, "/pypi/beta/json").json()
    # not yanked first, then final before pre-release, then the highest version
    assert doc["info"]["version"] == "2.0"
    assert list(doc["releases"]) == ["1.0", "2.0", "2.5", "3.0rc1"]
    assert [u["filename"] for u in doc["urls"]] == ["beta-2.0-py3-none-any.whl"]
    f = fake_pypi.file("beta-2.5-py3-none-any.whl")
    assert doc["releases"]["2.5"] == [{
        "comment_text": "",
        "digests": {"blake2b_256": f.blake2b_256, "md5": f.md5, "sha256": f.sha256},
        "downloads": -1,
        "filename": f.filename,
        "has_sig": False,
        "md5_digest": f.md5,
        "packagetype": "bdist_wheel",
        "python_version": "py3",
        "requires_python": ">=3.9",
        "size": f.size,
        "upload_time": "2023-04-01T00:00:00",
        "upload_time_iso_8601": "2023-04-01T00:00:00.000000Z",
        "url": f.url,
        "yanked": True,
        "yanked_reason": "oops",
    }]

    v25 = fetch(fake_pypi, "/pypi/beta/2.5/json").json()
    assert "releases" not in v25
    info = v25["info"]
    assert (info["version"], info["yanked"], info["yanked_reason"]) == ("2.5", True, "oops")
    assert info["requires_dist"] == ['gamma; extra == "fast"']
    assert info["provides_extra"] == ["fast"]
    assert info["requires_python"] == ">=3.9"
    assert fetch(fake_pypi, "/pypi/alpha/1.0/json").json()["info"]["requires_dist"] == ["beta>=1"]

    fake_pypi.per_version_json = False
    missing = fetch(fake_pypi, "/pypi/beta/2.5/json")
    assert (missing.status, missing.json()) == (404, {"message": "Not Found"})
    assert fetch(fake_pypi, "/pypi/nothing/json").status == 404


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("range_header", "status", "span"),
    [
        ("bytes=0-9", 206, (0, 9)),
        ("bytes=10-", 206, (10, None)),
        ("bytes=-5", 206, (-5, None)),
        ("bytes=-100000", 206, (0, None)),  # more than the file: all of it, still 206
        ("bytes=5-100000", 206, (5, None)),
        ("bytes=100000-", 416, None),
        ("bytes=0-1,5-6", 200, (0, None)),  # multi-range is not needed: whole file
        ("items=0-1", 200, (0, None)),
    ],
)
def test_file_ranges(
    fake_pypi: FakePyPI, range_header: str, status: int, span: tuple[int, int | None] | None
) -> None:
    f = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z")
    assert f.content is not None

    resp = fetch(fake_pypi, f.url, headers={"Range": range_header})

    assert resp.status == status
    assert resp.headers["accept-ranges"] == "bytes"
    if span is None:
        assert resp.headers["content-range"] == f"bytes */{f.size}"
        return
    start, end = span
    expected = f.content[start : None if end is None else end + 1]
    assert resp.body == expected
    assert int(resp.headers["content-length"]) == len(expected)
    if status == 206:
        first = f.size - len(expected)
        assert resp.headers["content-range"] == (
            f"bytes {first if start < 0 else start}-"
            f"{first + len(expected) - 1 if start < 0 else start + len(expected) - 1}/{f.size}"
        )


def test_file_head_etag_and_if_range(fake_pypi: FakePyPI) -> None:
    f = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z")

    head = fetch(fake_pypi, f.url, method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert int(head.headers["content-length"]) == f.size
    assert head.headers["accept-ranges"] == "bytes"
    etag = head.headers["etag"]
    assert not etag.startswith("W/")

    assert fetch(fake_pypi, f.url, headers={"If-None-Match": etag}).status == 304
    resumed = fetch(fake_pypi, f.url, headers={"Range": "bytes=100-", "If-Range": etag})
    assert resumed.status == 206
    stale = fetch(fake_pypi, f.url, headers={"Range": "bytes=100-", "If-Range": '"other"'})
    assert (stale.status, stale.body) == (200, f.content)
    assert fetch(fake_pypi, f.url + "x").status == 404


def test_wheels_are_reproducible_and_consistent() -> None:
    a = build_wheel("Alpha", "1.0", requires_dist=["beta>=1"], payload_size=10_000)
    b = build_wheel("Alpha", "1.0", requires_dist=["beta>=1"], payload_size=10_000)
    assert a == b
    assert a.filename == "alpha-1.0-py3-none-any.whl"

    with zipfile.ZipFile(io.BytesIO(a.content)) as zf:
        assert zf.read("alpha-1.0.dist-info/METADATA") == a.metadata
        payload = zf.getinfo("alpha/_payload.bin")
        assert (payload.file_size, payload.compress_type) == (10_000, zipfile.ZIP_STORED)
        record = zf.read("alpha-1.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            name, digest, size = line.rsplit(",", 2)
            if name.endswith("RECORD"):
                continue
            data = zf.read(name)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert (digest, int(size)) == (f"sha256={b64.decode()}", len(data))
        assert set(zf.namelist()) == {line.rsplit(",", 2)[0] for line in record}
    assert wheel_metadata(a.content) == a.metadata


def test_sdist_has_pkg_info() -> None:
    sdist = build_sdist("Alpha", "1.0", requires_dist=["beta"])
    assert sdist == build_sdist("Alpha", "1.0", requires_dist=["beta"])
    with tarfile.open(fileobj=io.BytesIO(sdist.content)) as tar:
        pkg_info = tar.extractfile("alpha-1.0/PKG-INFO")
        assert pkg_info is not None and pkg_info.read() == sdist.metadata
    assert b"Requires-Dist: beta" in sdist.metadata


def test_files_on_disk_are_streamed(fake_pypi: FakePyPI, tmp_path: Path) -> None:
    path = write_wheel(tmp_path, "big", "1.0", payload_size=3_000_000)
    f = fake_pypi.add_file("big", path.name, path, upload_time="2023-01-01T00:00:00Z",
                           metadata=wheel_metadata(path))
    data = path.read_bytes()
    assert f.content is None and f.size == len(data)
    assert f.sha256 == hashlib.sha256(data).hexdigest()
    # the same bytes as an in-memory build: predictable hashes either way
    assert build_wheel("big", "1.0", payload_size=3_000_000).content == data

    assert fetch(fake_pypi, f.url).body == data
    tail = fetch(fake_pypi, f.url, headers={"Range": "bytes=-70000"})
    assert (tail.status, tail.body) == (206, data[-70000:])
    assert fetch(fake_pypi, f.url + ".metadata").body == wheel_metadata(path)
    fake_pypi.fault(f.path, "wrong_bytes")
    wrong = fetch(fake_pypi, f.url)
    assert len(wrong.body) == len(data) and wrong.body != data
    assert clients.pip_resolve(fake_pypi.simple_url, ["big"]) == {"big": "1.0"}


def test_upload_times_must_carry_a_timezone(fake_pypi: FakePyPI) -> None:
    assert parse_time("2023-11-18T07:08:33+02:00") == datetime(2023, 11, 18, 5, 8, 33, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone"):
        fake_pypi.add_wheel("beta", "1.0", upload_time="2023-11-18T07:08:33")
    fake_pypi.add_wheel("beta", "1.0", upload_time="2023-11-18T07:08:33Z")
    with pytest.raises(ValueError, match="already"):
        fake_pypi.add_wheel("beta", "1.0", upload_time="2023-11-19T07:08:33Z")


# ---------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------


def test_basic_and_bearer_auth(fake_pypi: FakePyPI) -> None:
    f = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z")
    fake_pypi.require_basic = ("user", "token")

    denied = fetch(fake_pypi, "/simple/beta/")
    assert denied.status == 401
    assert denied.headers["www-authenticate"].startswith("Basic")
    assert fetch(fake_pypi, f.url).status == 401
    good = "Basic " + base64.b64encode(b"user:token").decode()
    bad = "Basic " + base64.b64encode(b"user:nope").decode()
    assert fetch(fake_pypi, f.url, headers={"Authorization": good}).status == 200
    assert fetch(fake_pypi, f.url, headers={"Authorization": bad}).status == 401

    fake_pypi.require_basic = None
    fake_pypi.require_bearer = "s3cret"
    assert fetch(fake_pypi, "/simple/beta/").headers["www-authenticate"].startswith("Bearer")
    assert fetch(fake_pypi, "/simple/beta/",
                 headers={"Authorization": "Bearer s3cret"}).status == 200


# ---------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------


def test_status_fault_hits_the_next_n_matching_requests(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)
    fault = fake_pypi.fault("/simple/beta/", "status", status=503, times=2,
                            headers={"Retry-After": "1"})

    assert fetch(fake_pypi, "/simple/alpha/").status == 200  # does not match
    first = fetch(fake_pypi, "/simple/beta/")
    assert (first.status, first.headers["retry-after"]) == (503, "1")
    assert fetch(fake_pypi, "/simple/beta/").status == 503
    assert fetch(fake_pypi, "/simple/beta/").status == 200
    assert fault.hits == 2
    assert [r.fault for r in fake_pypi.requests_for("/simple/beta/")] == ["status", "status", None]


def test_regex_and_method_filters_and_unlimited_faults(fake_pypi: FakePyPI) -> None:
    f = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z")
    fake_pypi.fault(re.compile(r"\.whl$"), "status", status=500, times=None, method="HEAD")

    for _ in range(3):
        assert fetch(fake_pypi, f.url, method="HEAD").status == 500
    assert fetch(fake_pypi, f.url).status == 200  # GET is not matched
    assert fetch(fake_pypi, f.url + ".metadata", method="HEAD").status == 200
    fake_pypi.clear_faults()
    assert fetch(fake_pypi, f.url, method="HEAD").status == 200
    with pytest.raises(ValueError, match="unknown fault"):
        fake_pypi.fault("/", "explode")  # type: ignore[arg-type]


def test_stall_outlasts_a_client_timeout_and_ends_when_the_server_stops(
    fake_pypi: FakePyPI,
) -> None:
    add_graph(fake_pypi)
    fake_pypi.fault("/simple/beta/", "stall", seconds=60)

    with pytest.raises(TimeoutError):
        fetch(fake_pypi, "/simple/beta/", timeout=0.3)
    assert fake_pypi.requests_for("/simple/beta/")[0].fault == "stall"

    started = time.monotonic()
    fake_pypi.stop()
    assert time.monotonic() - started < 5


def test_short_stall_then_normal_answer(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)
    fake_pypi.fault("/simple/beta/", "stall", seconds=0.3)

    started = time.monotonic()
    assert fetch(fake_pypi, "/simple/beta/").status == 200
    assert time.monotonic() - started >= 0.3


def test_stall_body_sends_half_then_waits(fake_pypi: FakePyPI) -> None:
    f = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z",
                            payload_size=200_000)
    fake_pypi.fault(f.path, "stall_body", seconds=60)

    conn = http.client.HTTPConnection("127.0.0.1", fake_pypi.port, timeout=0.5)
    conn.request("GET", f.path)
    resp = conn.getresponse()
    assert int(resp.headers["Content-Length"]) == f.size
    received = bytearray()
    with pytest.raises(TimeoutError):
        while chunk := resp.read1(65536):
            received += chunk
    conn.close()
    assert bytes(received) == f.read()[: f.size // 2]


def test_cut_closes_after_half_the_body(fake_pypi: FakePyPI) -> None:
    f = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z",
                            payload_size=100_000)
    fake_pypi.fault("/files/", "cut", times=1)

    conn = http.client.HTTPConnection("127.0.0.1", fake_pypi.port, timeout=5)
    conn.request("GET", f.path)
    resp = conn.getresponse()
    assert int(resp.headers["Content-Length"]) == f.size
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        resp.read()
    conn.close()
    assert excinfo.value.partial == f.read()[: f.size // 2]
    assert fetch(fake_pypi, f.url).body == f.content  # only once


def test_wrong_bytes_truncate_and_malformed(fake_pypi: FakePyPI) -> None:
    f = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z")
    good_page = fetch(fake_pypi, "/simple/beta/", headers={"Accept": JSON_TYPE}).body

    fake_pypi.fault(f.path, "wrong_bytes")
    wrong = fetch(fake_pypi, f.url)
    assert wrong.status == 200 and len(wrong.body) == f.size
    assert hashlib.sha256(wrong.body).hexdigest() != f.sha256

    fake_pypi.fault("/simple/", "truncate_page")
    cut_page = fetch(fake_pypi, "/simple/beta/", headers={"Accept": JSON_TYPE})
    assert cut_page.body == good_page[: len(good_page) // 2]
    assert int(cut_page.headers["content-length"]) == len(cut_page.body)
    with pytest.raises(ValueError):
        cut_page.json()

    fake_pypi.fault("/simple/", "malformed", times=2)
    with pytest.raises(ValueError):
        fetch(fake_pypi, "/simple/beta/", headers={"Accept": JSON_TYPE}).json()
    bad_html = fetch(fake_pypi, "/simple/beta/")
    assert bad_html.headers["content-type"].startswith("text/html")
    with pytest.raises(UnicodeDecodeError):
        bad_html.body.decode()

    assert fetch(fake_pypi, "/simple/beta/", headers={"Accept": JSON_TYPE}).body == good_page


def test_stop_refuses_connections_and_start_reuses_the_port(fake_pypi: FakePyPI) -> None:
    add_graph(fake_pypi)
    port = fake_pypi.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/simple/beta/")
    conn.getresponse().read()  # a keep-alive connection is open now

    fake_pypi.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("GET", "/simple/beta/")  # the open connection was dropped too
        conn.getresponse()
    conn.close()

    fake_pypi.start()
    assert fake_pypi.port == port
    assert fetch(fake_pypi, "/simple/beta/").status == 200

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port()), timeout=2)


# ---------------------------------------------------------------------------------------------
# Request log and connections
# ---------------------------------------------------------------------------------------------


def test_request_log_records_every_request(fake_pypi: FakePyPI) -> None:
    f = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z")
    before = time.time()

    fetch(fake_pypi, "/simple/beta/?x=1", headers={"Accept": JSON_TYPE, "X-Test": "yes"})
    fetch(fake_pypi, f.url, method="HEAD")
    fetch(fake_pypi, "/nowhere")

    log = fake_pypi.requests
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", "/simple/beta/", 200), ("HEAD", f.path, 200), ("GET", "/nowhere", 404),
    ]
    assert log[0].query == "x=1"
    assert log[0].headers["accept"] == JSON_TYPE and log[0].headers["x-test"] == "yes"
    assert before <= log[0].time <= log[1].time <= log[2].time <= time.time()
    assert fake_pypi.requests_for("/files/", method="GET") == []
    assert len(fake_pypi.requests_for("/files/", method="HEAD")) == 1

    fake_pypi.clear_log()
    assert fake_pypi.requests == []


def test_keep_alive_connections_serve_many_requests(fake_pypi: FakePyPI) -> None:
    f = fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z")
    conn = http.client.HTTPConnection("127.0.0.1", fake_pypi.port, timeout=5)
    try:
        for path in ["/simple/beta/", f.path, "/nowhere", f.path + ".metadata"]:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            assert not resp.will_close
    finally:
        conn.close()
    assert len(fake_pypi.requests) == 4
