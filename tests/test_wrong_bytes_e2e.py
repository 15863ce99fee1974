"""Wrong bytes never reach a client as a complete file, through the real proxy: a resume of a
download cut because its hash failed, forward mode, chunked bodies, recoded (gzip) bodies."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from proxyproc import Proxy, write_config
from scripted import ScriptedServer

JSON = "application/vnd.pypi.simple.v1+json"
PIN = "2023-06-01"


def _get(host: str, port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, bool]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        hdrs = dict(resp.getheaders())
        try:
            return resp.status, hdrs, resp.read(), True
        except (http.client.IncompleteRead, ConnectionError) as e:
            partial = e.partial if isinstance(e, http.client.IncompleteRead) else b""
            return resp.status, hdrs, partial, False
    finally:
        conn.close()


def _url(proxy: Proxy, project: str, filename: str) -> str:
    page = json.loads(proxy.get(f"/{PIN}/simple/{project}/", {"Accept": JSON}).body)
    return {f["filename"]: f["url"] for f in page["files"]}[filename]


def test_path_mode_resume_after_a_failed_hash_assembles_no_wrong_file(fake_pypi, proxy: Proxy) -> None:
    big = fake_pypi.add_wheel("resumed", "1.0", upload_time="2023-01-01T00:00:00Z", payload_size=3_000_000)
    path = http.client.urlsplit(_url(proxy, "resumed", big.filename)).path
    fake_pypi.fault("/files/", "wrong_bytes", times=None)
    status, headers, first, complete = _get("127.0.0.1", proxy.port, path)
    assert status == 200 and not complete and 0 < len(first) < big.size
    # pip >= 25.1: Range: bytes=<received>- with If-Range: <ETag of the first answer>
    status, _, rest, complete = _get(
        "127.0.0.1", proxy.port, path, {"Range": f"bytes={len(first)}-", "If-Range": headers["ETag"]}
    )
    assembled = first + rest
    assert not (status == 206 and complete and len(assembled) == big.size), (
        "a complete wrong file", hashlib.sha256(assembled).hexdigest() == big.sha256
    )


@pytest.mark.parametrize("kind", ["wrong_bytes", "cut"])
def test_forward_mode_never_presents_wrong_bytes_as_complete(fake_pypi, proxy: Proxy, kind: str) -> None:
    big = fake_pypi.add_wheel(f"fwd-{kind.replace('_', '-')}", "1.0", upload_time="2023-01-01T00:00:00Z", payload_size=3_000_000)
    _url(proxy, f"fwd-{kind.replace('_', '-')}", big.filename)  # records the file in history
    path = big.path.removeprefix("/files")
    fake_pypi.fault("/files/", kind)
    status, _, body, complete = _get("127.0.0.1", proxy.port, f"http://files.pythonhosted.org{path}")
    assert status == 200 and not (complete and len(body) == big.size), (status, len(body), big.size)
    status, _, body, complete = _get("127.0.0.1", proxy.port, f"http://files.pythonhosted.org{path}")
    assert status == 200 and complete and hashlib.sha256(body).hexdigest() == big.sha256


# -- a registry that sends files chunked, with no size in its pages ---------------------------


class _Chunky(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    data = os.urandom(3_000_000)
    mode = "wrong"  # wrong: every byte sent, properly terminated, last bytes flipped

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/simple/chunky/"):
            doc = {"meta": {"api-version": "1.1"}, "name": "chunky", "files": [{
                "filename": "chunky-1.0-py3-none-any.whl", "url": "/files/chunky-1.0-py3-none-any.whl",
                "hashes": {"sha256": hashlib.sha256(self.data).hexdigest()},
                "upload-time": "2023-01-01T00:00:00Z"}]}
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", JSON)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        body = self.data if type(self).mode == "ok" else self.data[:-16] + bytes(16)
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 65536):
            part = body[i:i + 65536]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def chunky(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Chunky)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["path", "forward"])
def test_a_chunked_file_that_fails_its_hash_is_never_complete(fake_pypi, tmp_path, chunky, mode) -> None:
    config = write_config(
        tmp_path / "proxy.toml", simple_url=fake_pypi.simple_url, json_url=fake_pypi.json_url,
        files_url=fake_pypi.files_url, upstream_timeout="5s",
        extra=f'[[registry]]\nname = "chunky"\nurl = "{chunky}/simple/"\nintercept = true\n',
    )
    _Chunky.mode = "wrong"
    with Proxy(data_dir=tmp_path / "data", config=config) as proxy:
        page = json.loads(proxy.get(f"/{PIN}/r/chunky/chunky/", {"Accept": JSON}).body)
        [url] = [f["url"] for f in page["files"]]
        if mode == "path":
            target = http.client.urlsplit(url).path
        else:
            target = f"{chunky}/files/chunky-1.0-py3-none-any.whl"
        status, headers, body, complete = _get("127.0.0.1", proxy.port, target)
        assert status == 200, (status, body[:200])
        assert not complete, (headers, len(body), len(_Chunky.data))


def test_a_gzipped_wheel_from_a_registry_without_hashes_is_refused_and_not_kept(fake_pypi, tmp_path) -> None:
    wheel = os.urandom(200_000)
    with ScriptedServer() as up:
        doc = {"meta": {"api-version": "1.1"}, "name": "nohash", "files": [{
            "filename": "nohash-1.0-py3-none-any.whl", "url": "/files/nohash-1.0-py3-none-any.whl",
            "hashes": {}, "upload-time": "2023-01-01T00:00:00Z"}]}
        up.route("/simple/nohash/", 200, json.dumps(doc).encode(), content_type=JSON)
        up.route("/files/nohash-1.0-py3-none-any.whl", 200, gzip.compress(wheel),
                 content_type="application/octet-stream", **{"Content-Encoding": "gzip"})
        config = write_config(
            tmp_path / "proxy.toml", simple_url=fake_pypi.simple_url, json_url=fake_pypi.json_url,
            files_url=fake_pypi.files_url, upstream_timeout="5s",
            extra=f'[[registry]]\nname = "nohash"\nurl = "{up.url}/simple/"\n',
        )
        with Proxy(data_dir=tmp_path / "data", config=config) as proxy:
            page = json.loads(proxy.get(f"/{PIN}/r/nohash/nohash/", {"Accept": JSON}).body)
            [url] = [f["url"] for f in page["files"]]
            path = http.client.urlsplit(url).path
            status, _, body, complete = _get("127.0.0.1", proxy.port, path)
            assert not (status == 200 and complete), ("served as complete", body[:2] == b"\x1f\x8b")
            up.route("/files/nohash-1.0-py3-none-any.whl", 200, wheel, content_type="application/octet-stream")
            status, _, body, complete = _get("127.0.0.1", proxy.port, path)
            assert (status, complete, body == wheel) == (200, True, True), "the gzip bytes were kept"
