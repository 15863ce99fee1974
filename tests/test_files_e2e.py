"""The file store through the real proxy: installs from the store, one download, ranges, crashes."""

from __future__ import annotations

import hashlib
import http.client
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from clients import pip_install, uv_install
from fakepypi import build_wheel, closed_port
from proxyproc import Proxy, fetch, write_config

from datepin.blobs import BlobStore

JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def graph(fake_pypi):
    fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T10:00:00Z")
    fake_pypi.add_wheel("alpha", "1.0", upload_time="2023-02-01T10:00:00Z", requires_dist=["beta"])
    return fake_pypi


def file_links(proxy: Proxy, pin: str, project: str) -> dict[str, dict]:
    page = json.loads(proxy.get(f"/{pin}/simple/{project}/", {"Accept": JSON}).body)
    return {f["filename"]: f for f in page["files"]}


def test_installs_again_from_the_store_with_upstream_gone(graph, proxy, tmp_path):
    index = proxy.index("2023-06-01")
    assert pip_install(index, ["alpha"], target_venv=tmp_path / "pip1") == {"alpha": "1.0", "beta": "1.0"}
    assert uv_install(index, ["alpha"], target_venv=tmp_path / "uv1") == {"alpha": "1.0", "beta": "1.0"}
    graph.clear_log()
    # Point the built-in registry at a closed port: only history and the store can answer.
    dead = f"http://127.0.0.1:{closed_port()}/"
    write_config(proxy.config, simple_url=dead + "simple/", json_url=dead + "pypi/", files_url=dead)
    proxy.restart()
    index = proxy.index("2023-06-01")
    assert pip_install(index, ["alpha"], target_venv=tmp_path / "pip2") == {"alpha": "1.0", "beta": "1.0"}
    assert uv_install(index, ["alpha"], target_venv=tmp_path / "uv2") == {"alpha": "1.0", "beta": "1.0"}
    assert graph.requests == []


def test_parallel_cold_requests_make_one_download(graph, proxy):
    big = graph.add_wheel("gamma", "1.0", upload_time="2023-01-01T00:00:00Z", payload_size=8 << 20)
    url = file_links(proxy, "2023-06-01", "gamma")[big.filename]["url"]
    graph.clear_log()
    with ThreadPoolExecutor(10) as pool:
        bodies = list(pool.map(lambda _: fetch(url).body, range(10)))
    assert {hashlib.sha256(b).hexdigest() for b in bodies} == {big.sha256}
    assert len(graph.requests_for("/files/", method="GET")) == 1
    graph.clear_log()
    assert hashlib.sha256(fetch(url).body).hexdigest() == big.sha256
    assert graph.requests == []


def test_ranges_head_and_etags_on_stored_files(graph, proxy):
    f = graph.file("alpha-1.0-py3-none-any.whl")
    entry = file_links(proxy, "2023-06-01", "alpha")[f.filename]
    url = entry["url"]
    assert fetch(url).body == f.content  # fills the store
    graph.clear_log()
    head = fetch(url, method="HEAD")
    assert head.status == 200 and head.header("Accept-Ranges") == "bytes"
    assert int(head.header("Content-Length")) == f.size and head.body == b""
    tail = fetch(url, headers={"Range": "bytes=-100"})
    assert tail.status == 206 and tail.body == f.content[-100:]
    assert tail.header("Content-Range") == f"bytes {f.size - 100}-{f.size - 1}/{f.size}"
    middle = fetch(url, headers={"Range": "bytes=10-19"})
    assert middle.status == 206 and middle.body == f.content[10:20]
    assert fetch(url, headers={"Range": f"bytes={f.size}-"}).status == 416
    etag = head.header("ETag")
    assert fetch(url, headers={"If-None-Match": etag}).status == 304
    stale = fetch(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status == 200 and stale.body == f.content
    assert head.header("Cache-Control") == "public, max-age=31536000, immutable"
    assert head.header("Content-Encoding") is None
    assert graph.requests == []


def test_metadata_files_are_advertised_only_when_they_exist(fake_pypi, proxy):
    with_md = fake_pypi.add_wheel("delta", "1.0", upload_time="2023-01-01T00:00:00Z")
    without = fake_pypi.add_wheel(
        "delta", "1.1", upload_time="2023-01-02T00:00:00Z", metadata_file=False
    )
    links = file_links(proxy, "2023-06-01", "delta")
    assert links[with_md.filename]["core-metadata"] == {"sha256": with_md.metadata_sha256}
    assert links[without.filename]["core-metadata"] is False
    md = fetch(links[with_md.filename]["url"] + ".metadata")
    assert md.status == 200 and md.body == with_md.metadata
    assert fetch(links[without.filename]["url"] + ".metadata").status == 404


def _file_counters(proxy: Proxy) -> dict[str, int]:
    lines = proxy.get("/-/metrics").body.decode().splitlines()
    return {
        line.split()[0].removeprefix("datepin_files_").removesuffix("_total"): int(line.split()[1])
        for line in lines if line.startswith("datepin_files_")
    }


def test_small_files_missing_from_the_store_are_answered_whole_and_big_ones_as_they_arrive(fake_pypi, proxy):
    """A .metadata file or a wheel the index says is small is fetched and verified before the
    answer; a bigger file is sent as it arrives.  Each is one upstream GET and one miss."""
    small = fake_pypi.add_wheel("eps", "1.0", upload_time="2023-01-01T00:00:00Z")
    big = fake_pypi.add_wheel("eps", "2.0", upload_time="2023-01-02T00:00:00Z", payload_size=1 << 20)
    links = file_links(proxy, "2023-06-01", "eps")
    before = _file_counters(proxy)
    fake_pypi.clear_log()
    md = fetch(links[small.filename]["url"] + ".metadata")
    assert md.status == 200 and md.body == small.metadata
    whl = fetch(links[small.filename]["url"])
    assert whl.body == small.content
    streamed = fetch(links[big.filename]["url"])
    assert streamed.body == big.content
    assert len(fake_pypi.requests_for("/files/", method="GET")) == 3
    deadline = time.monotonic() + 10  # answered once verified; the commits may come after
    while (after := _file_counters(proxy))["fills"] - before["fills"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (after["fills"] - before["fills"], after["misses"] - before["misses"]) == (3, 3)
    # Again: from the store, no upstream request.
    fake_pypi.clear_log()
    assert fetch(links[small.filename]["url"] + ".metadata").body == small.metadata
    assert fake_pypi.requests == []

    # Wrong bytes upstream: refused, nothing stored, and the next request gets the file.
    bad = fake_pypi.add_wheel("zeta", "1.0", upload_time="2023-01-01T00:00:00Z")
    url = file_links(proxy, "2023-06-01", "zeta")[bad.filename]["url"]
    fake_pypi.fault("/files/", "wrong_bytes", times=1)
    refused = fetch(url)
    assert refused.status == 502 and b"sha256 mismatch" in refused.body
    assert fetch(url).body == bad.content


def test_big_files_keep_the_clients_connection(fake_pypi, proxy, tmp_path):
    """A big file, missing then stored, then a range of it, its HEAD and a page: all answered
    on one keep-alive connection (sent by sendfile(2) from the download's temp file, then from
    the blob); several clients at once each get the whole file; pip and uv install from it."""
    big = fake_pypi.add_wheel("omega", "1.0", upload_time="2023-01-01T00:00:00Z", payload_size=4 << 20)
    index = proxy.index("2023-06-01")
    url = file_links(proxy, "2023-06-01", "omega")[big.filename]["url"]
    path = urlsplit(url).path
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    try:
        conn.connect()
        sock = conn.sock
        for kind in ("misses", "hits"):
            before = _file_counters(proxy)
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200 and response.read() == big.content
            assert int(response.headers["Content-Length"]) == big.size
            assert response.headers["ETag"] == f'"sha256-{big.sha256}"'
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            after = _file_counters(proxy)
            assert after[kind] - before[kind] == 1
            assert after["bytes_served"] - before["bytes_served"] == big.size
            deadline = time.monotonic() + 10
            while _file_counters(proxy)["fills"] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        conn.request("GET", path, headers={"Range": "bytes=0-99"})
        response = conn.getresponse()
        assert response.status == 206 and response.read() == big.content[:100]
        conn.request("HEAD", path)
        response = conn.getresponse()
        assert response.headers["Content-Length"] == str(big.size) and response.read() == b""
        conn.request("GET", "/2023-06-01/simple/omega/")
        response = conn.getresponse()
        assert response.status == 200 and big.filename.encode() in response.read()
        assert conn.sock is sock  # never closed by the proxy
    finally:
        conn.close()
    assert len(fake_pypi.requests_for("/files/", method="GET")) == 1
    fake_pypi.clear_log()
    with ThreadPoolExecutor(4) as pool:
        assert {hashlib.sha256(b).hexdigest() for b in pool.map(lambda _: fetch(url).body, range(8))} == {big.sha256}
    assert fake_pypi.requests == []

    assert pip_install(index, ["omega"], target_venv=tmp_path / "pip") == {"omega": "1.0"}
    assert uv_install(index, ["omega"], target_venv=tmp_path / "uv") == {"omega": "1.0"}
    # Only the .metadata file, never fetched before, came from upstream.
    assert [r.path.rsplit("/", 1)[1] for r in fake_pypi.requests_for("/files/", method="GET")] == [
        big.filename + ".metadata"
    ]


def test_unknown_files_are_not_fetched(graph, proxy):
    r = proxy.get("/files/pypi/" + "0" * 64 + "/evil.whl")
    assert r.status == 404
    assert proxy.get("/files/pypi/../../etc/passwd").status in (400, 404)


def test_kill_during_a_fill_leaves_a_consistent_store(graph, proxy, tmp_path):
    big = graph.add_wheel("epsilon", "1.0", upload_time="2023-01-01T00:00:00Z", payload_size=16 << 20)
    url = file_links(proxy, "2023-06-01", "epsilon")[big.filename]["url"]
    graph.fault("/files/", "stall_body", seconds=30)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(lambda: fetch(url, timeout=20))
        deadline = time.monotonic() + 10
        while not graph.requests_for("/files/") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proxy.kill()
        try:
            pending.result()
        except (OSError, http.client.IncompleteRead):  # reset, or fewer bytes than announced
            pass
        else:
            pytest.fail("a cut download was presented as a complete body")
    graph.clear_faults()
    store = BlobStore(proxy.data_dir / "blobs", size_limit=10**12)
    try:
        assert not store.has(big.sha256)
        assert [p for p in store.verify() if p.kind != "orphan"] == []
    finally:
        store.close()
    db = sqlite3.connect(proxy.data_dir / "history.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    proxy.start()
    assert hashlib.sha256(fetch(url).body).hexdigest() == big.sha256


# -- other bytes under a name already listed ------------------------------------------------------

WHEEL = "alpha-1.0-py3-none-any.whl"


def _files(proxy: Proxy, pin: str) -> dict[str, dict]:
    r = proxy.get(f"/{pin}/simple/alpha/", {"Accept": JSON})
    assert r.status == 200, r.body
    return {f["filename"]: f for f in json.loads(r.body)["files"]}


def test_a_file_replaced_under_the_same_name_keeps_both_views_downloadable(fake_pypi, proxy):
    """A registry that lets a name be re-uploaded with other bytes (or a project that vanishes
    and comes back): the old pin keeps listing the old sha256, live lists the new one; each
    link must give the bytes its page promises."""
    old = fake_pypi.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z")
    before = _files(proxy, "2023-03-01")[WHEEL]
    assert before["hashes"]["sha256"] == old.sha256
    # Upstream drops the project and brings it back with different bytes under the same name.
    fake_pypi.remove_project("alpha")
    other = build_wheel("alpha", "1.0", requires_dist=["beta"])
    new = fake_pypi.add_file("alpha", WHEEL, other.content, upload_time="2023-01-01T10:00:00Z")
    assert new.sha256 != old.sha256
    live = _files(proxy, "live")[WHEEL]
    assert live["hashes"]["sha256"] == new.sha256
    again = _files(proxy, "2023-03-01")[WHEEL]
    assert again == before  # the past view did not change
    got_old = proxy.get(before["url"].removeprefix(proxy.url))
    # Never bytes other than the ones the page's hash names.
    assert got_old.status != 200 or hashlib.sha256(got_old.body).hexdigest() == old.sha256
    got_new = proxy.get(live["url"].removeprefix(proxy.url))
    assert got_new.status == 200, got_new.body
    assert hashlib.sha256(got_new.body).hexdigest() == new.sha256


def test_the_bytes_an_old_view_lists_are_kept_when_upstream_replaces_them(fake_pypi, proxy):
    """Other bytes under an old name: the old ones went away as surely as a deleted file,
    and are kept the same way (rescued while upstream still serves them)."""
    old = fake_pypi.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z")
    before = _files(proxy, "2023-03-01")[WHEEL]
    fake_pypi.keep_serving_deleted_files = True
    fake_pypi.remove_project("alpha")
    other = build_wheel("alpha", "1.0", requires_dist=["beta"])
    fake_pypi.add_file("alpha", WHEEL, other.content, upload_time="2023-01-01T10:00:00Z")
    assert _files(proxy, "live")[WHEEL]["hashes"]["sha256"] != old.sha256
    store = BlobStore(proxy.data_dir / "blobs", size_limit=10**12)
    deadline = time.monotonic() + 20
    while not store.has(old.sha256):  # rescued: downloaded and committed
        assert time.monotonic() < deadline, "the replaced bytes were never rescued"
        time.sleep(0.1)
    store.close()
    fake_pypi.keep_serving_deleted_files = False
    got = proxy.get(before["url"].removeprefix(proxy.url))
    assert got.status == 200, got.body
    assert hashlib.sha256(got.body).hexdigest() == old.sha256
