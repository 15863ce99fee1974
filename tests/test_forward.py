"""Forward mode: HTTPS_PROXY with real pip and uv, tunnels to other hosts, the pure helpers."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import pytest

from clients import ClientError, ca_bundle_env, pip_resolve, uv_compile, uv_install
from fakepypi import FakePyPI, add_alpha_beta, build_wheel, closed_port, write_wheel
from proxyproc import Proxy, Response, write_config

from datepin import forward
from datepin.blobs import BlobStore
from datepin.config import Config, Registry
from datepin.forward import CredentialsError, pin_from_credentials, select_pin
from datepin.history import HistoryStore
from datepin.model import DistFile, ProjectPage
from datepin.pins import PinError, parse_pin
from datepin.server import proxy_options
from datepin.upstream import trust_store

JSON = "application/vnd.pypi.simple.v1+json"
PYPI = "https://pypi.org/simple/"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


# -- helpers ----------------------------------------------------------------------------------


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def make_bundle(proxy: Proxy, dest: Path) -> Path:
    """`datepin ca --bundle`, as a user would run it, for the proxy's data directory."""
    subprocess.run(
        [sys.executable, "-m", "datepin", "ca", "--data-dir", str(proxy.data_dir), "--bundle", str(dest)],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return dest


def forward_env(proxy: Proxy, bundle: Path, credentials: str | None = None) -> dict[str, str | None]:
    auth = f"{credentials}@" if credentials else ""
    return {"HTTPS_PROXY": f"http://{auth}127.0.0.1:{proxy.port}", **ca_bundle_env(bundle)}


def tunnel_get(
    proxy: Proxy,
    url: str,
    *,
    bundle: Path,
    credentials: str | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Response:
    """One request through a CONNECT tunnel, trusting only `bundle`."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=str(bundle))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=context, timeout=30)
    conn.set_tunnel(parts.netloc, 443, headers={"Proxy-Authorization": basic(credentials)} if credentials else {})
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, dict(r.getheaders()), r.read())
    finally:
        conn.close()


def connect(proxy: Proxy, target: str, credentials: str | None = None) -> tuple[socket.socket, bytes]:
    """Send CONNECT by hand; return the socket and the proxy's answer (status line + headers)."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    auth = f"Proxy-Authorization: {basic(credentials)}\r\n" if credentials else ""
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return sock, answer


@dataclass
class Setup:
    fake: FakePyPI
    proxy: Proxy
    bundle: Path


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[Setup]:
    """One fake upstream and one proxy for the tests that only read (starting a proxy and
    making its CA costs seconds).  Each test clears the fake's request log first."""
    tmp = tmp_path_factory.mktemp("forward")
    with FakePyPI() as fake:
        add_alpha_beta(fake)
        proxy = start_proxy(tmp, fake, "shared")
        try:
            yield Setup(fake, proxy, make_bundle(proxy, tmp / "bundle.pem"))
        finally:
            proxy.stop()


@pytest.fixture
def graph(shared) -> FakePyPI:
    shared.fake.clear_log()
    return shared.fake


@pytest.fixture
def proxy(shared) -> Proxy:
    return shared.proxy


@pytest.fixture
def bundle(shared) -> Path:
    return shared.bundle


def start_proxy(tmp_path: Path, fake, name: str, **server: object) -> Proxy:
    config = write_config(
        tmp_path / f"{name}.toml", simple_url=fake.simple_url, json_url=fake.json_url,
        files_url=fake.files_url, upstream_timeout="5s", live_ttl="0s", **server,
    )
    return Proxy(data_dir=tmp_path / f"{name}-data", config=config).start()


# -- real clients through HTTPS_PROXY ----------------------------------------------------------


def test_pip_and_uv_resolve_each_pin_named_in_the_proxy_credentials(graph, proxy, bundle, tmp_path):
    # With their HTTP caches on and shared between the runs: a page cached under one pin must
    # not be reused under the other (same URL).
    caches = {"PIP_NO_CACHE_DIR": None, "PIP_CACHE_DIR": str(tmp_path / "pip-cache"),
              "UV_NO_CACHE": None, "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    early = {**forward_env(proxy, bundle, "2023-03-01:x"), **caches}
    late = {**forward_env(proxy, bundle, "pin:2023-07-01T00%3A00%3A00Z"), **caches}  # as password
    assert pip_resolve(PYPI, ["alpha"], env_extra=early) == {"alpha": "1.0", "beta": "1.0"}
    assert uv_compile(PYPI, ["alpha"], env_extra=early) == {"alpha": "1.0", "beta": "1.0"}
    assert pip_resolve(PYPI, ["alpha"], env_extra=late) == {"alpha": "2.0", "beta": "2.0"}
    assert uv_compile(PYPI, ["alpha"], env_extra=late) == {"alpha": "2.0", "beta": "2.0"}


def test_a_timestamp_pin_as_the_proxy_user_name(graph, proxy, bundle):
    # HTTPS_PROXY=http://2023-07-01T00%3A00%3A00Z:x@host:port, as README writes a pin's colons.
    env = forward_env(proxy, bundle, "2023-07-01T00%3A00%3A00Z:x")
    assert pip_resolve(PYPI, ["alpha"], env_extra=env) == {"alpha": "2.0", "beta": "2.0"}
    assert uv_compile(PYPI, ["alpha"], env_extra=env) == {"alpha": "2.0", "beta": "2.0"}


def test_default_pin_applies_when_the_client_names_none(fake_pypi, tmp_path):
    proxy = start_proxy(tmp_path, add_alpha_beta(fake_pypi), "default", default_pin="2023-03-01")
    try:
        env = forward_env(proxy, make_bundle(proxy, tmp_path / "bundle.pem"))
        assert pip_resolve(PYPI, ["alpha"], env_extra=env) == {"alpha": "1.0", "beta": "1.0"}
        assert uv_compile(PYPI, ["alpha"], env_extra=env) == {"alpha": "1.0", "beta": "1.0"}
    finally:
        proxy.stop()


def test_a_bad_pin_in_the_credentials_is_refused_with_the_accepted_forms(graph, proxy, bundle):
    _, answer = connect(proxy, "pypi.org:443", "2023-13-45:x")
    status_line = answer.split(b"\r\n")[0].decode()
    assert status_line.startswith("HTTP/1.1 407 ")
    assert "'2023-13-45' is not a pin" in status_line and "YYYY-MM-DD" in status_line
    assert b"Proxy-Authenticate: Basic" in answer
    _, answer = connect(proxy, "pypi.org:443", "alice:secret")
    assert b" 407 " in answer.split(b"\r\n")[0] and b"name no pin" in answer

    env = forward_env(proxy, bundle, "2023-13-45:x")
    with pytest.raises(ClientError) as pip_error:
        pip_resolve(PYPI, ["alpha"], env_extra=env, extra_args=["--retries", "1"])
    assert "Tunnel connection failed: 407 datepin: '2023-13-45' is not a pin" in pip_error.value.stderr
    with pytest.raises(ClientError) as uv_error:
        uv_compile(PYPI, ["alpha"], env_extra={**env, "UV_HTTP_RETRIES": "0"})
    assert "proxy authorization required" in uv_error.value.stderr
    assert not graph.requests


# -- pages, headers, files ---------------------------------------------------------------------


def test_pages_carry_the_pin_and_are_never_reused_across_pins(graph, proxy, bundle):
    r = tunnel_get(proxy, PYPI + "alpha/", bundle=bundle, credentials="2023-03-01:x",
                   headers={"Accept": JSON})
    assert r.status == 200
    assert r.header("Datepin-Pin") == "2023-03-01"
    assert r.header("Datepin-Cutoff") == "2023-03-01T00:00:00Z"
    assert r.header("Datepin-View") == "reconstructed"
    assert r.header("Cache-Control") == "no-cache"
    etag = r.header("ETag")
    assert etag and not etag.startswith("W/") and "2023-03-01T00:00:00Z" in etag
    page = json.loads(r.body)
    assert page["versions"] == ["1.0"]
    [f] = page["files"]
    path = urlsplit(graph.file("alpha-1.0-py3-none-any.whl").url).path.removeprefix("/files/")
    assert f["url"] == "https://files.pythonhosted.org/" + path

    # The same URL and ETag under another pin is another page, not a 304.
    late = tunnel_get(proxy, PYPI + "alpha/", bundle=bundle, credentials="2023-07-01:x",
                      headers={"Accept": JSON, "If-None-Match": etag})
    assert late.status == 200 and json.loads(late.body)["versions"] == ["1.0", "2.0"]
    same = tunnel_get(proxy, PYPI + "alpha/", bundle=bundle, credentials="2023-03-01:x",
                      headers={"Accept": JSON, "If-None-Match": etag})
    assert same.status == 304

    # A Datepin-Pin header wins over the credentials.
    header = tunnel_get(proxy, PYPI + "alpha/", bundle=bundle, credentials="2023-03-01:x",
                        headers={"Accept": JSON, "Datepin-Pin": "2023-07-01"})
    assert header.header("Datepin-Pin") == "2023-07-01"
    bad = tunnel_get(proxy, PYPI + "alpha/", bundle=bundle, headers={"Datepin-Pin": "yesterday"})
    assert bad.status == 400 and b"YYYY-MM-DD" in bad.body

    html = tunnel_get(proxy, PYPI + "alpha/", bundle=bundle, credentials="2023-03-01:x")
    assert html.header("Content-Type").startswith("text/html")
    assert b'href="https://files.pythonhosted.org/packages/' in html.body
    redirect = tunnel_get(proxy, PYPI + "Alpha/", bundle=bundle, credentials="2023-03-01:x")
    assert redirect.status == 301 and redirect.header("Location") == "/simple/alpha/"
    elsewhere = tunnel_get(proxy, "https://pypi.org/project/alpha/", bundle=bundle)
    assert elsewhere.status == 404


def test_an_override_in_the_proxy_credentials_applies_to_its_project(graph, proxy, bundle):
    # alpha 1.0 needs beta (any version): at 2023-03-01 that is beta 1.0; beta's override
    # shows it 2.0.  `,` and `=` go in the proxy URL's user name as they are.
    env = forward_env(proxy, bundle, "2023-03-01,beta=live:x")
    assert pip_resolve(PYPI, ["alpha"], env_extra=env) == {"alpha": "1.0", "beta": "2.0"}
    assert uv_compile(PYPI, ["alpha"], env_extra=env) == {"alpha": "1.0", "beta": "2.0"}

    credentials = "2023-03-01,beta=2023-07-01:x"
    beta = tunnel_get(proxy, PYPI + "beta/", bundle=bundle, credentials=credentials,
                      headers={"Accept": JSON})
    assert json.loads(beta.body)["versions"] == ["1.0", "2.0"]
    assert beta.header("Datepin-Pin") == "2023-03-01,beta=2023-07-01"
    assert beta.header("Datepin-Cutoff") == "2023-07-01T00:00:00Z"
    assert beta.header("Datepin-View") == "reconstructed"
    assert "2023-07-01T00:00:00Z" in beta.header("ETag")
    alpha = tunnel_get(proxy, PYPI + "alpha/", bundle=bundle, credentials=credentials,
                       headers={"Accept": JSON})
    assert json.loads(alpha.body)["versions"] == ["1.0"]
    assert alpha.header("Datepin-Cutoff") == "2023-03-01T00:00:00Z"
    header = tunnel_get(proxy, PYPI + "beta/", bundle=bundle,
                        headers={"Accept": JSON, "Datepin-Pin": "2023-03-01,beta=live"})
    assert header.header("Datepin-View") == "live" and header.header("Datepin-Cutoff") is None


def test_json_api_at_the_pin(graph, proxy, bundle):
    r = tunnel_get(proxy, "https://pypi.org/pypi/alpha/json", bundle=bundle, credentials="2023-03-01:x")
    assert r.status == 200 and r.header("Cache-Control") == "no-cache"
    doc = json.loads(r.body)
    assert doc["info"]["version"] == "1.0" and list(doc["releases"]) == ["1.0"]
    assert doc["urls"][0]["url"].startswith("https://files.pythonhosted.org/packages/")
    one = tunnel_get(proxy, "https://pypi.org/pypi/alpha/2.0/json", bundle=bundle,
                     credentials="2023-07-01:x")
    assert json.loads(one.body)["info"]["version"] == "2.0"
    missing = tunnel_get(proxy, "https://pypi.org/pypi/alpha/2.0/json", bundle=bundle,
                         credentials="2023-03-01:x")
    assert missing.status == 404 and json.loads(missing.body)["message"] == "Not Found"


def test_files_are_served_from_the_store_by_upstream_url(graph, proxy, bundle):
    wheel = graph.file("alpha-1.0-py3-none-any.whl")
    page = tunnel_get(proxy, PYPI + "alpha/", bundle=bundle, credentials="2023-03-01:x",
                      headers={"Accept": JSON})
    url = json.loads(page.body)["files"][0]["url"]
    r = tunnel_get(proxy, url, bundle=bundle, credentials="2023-03-01:x")
    assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == wheel.sha256
    assert r.header("Accept-Ranges") == "bytes"
    meta = tunnel_get(proxy, url + ".metadata", bundle=bundle)
    assert meta.status == 200 and hashlib.sha256(meta.body).hexdigest() == wheel.metadata_sha256
    head = tunnel_get(proxy, url, bundle=bundle, method="HEAD")
    assert head.status == 200 and head.header("Content-Length") == str(len(r.body))
    downloads = lambda: [r for r in graph.requests if r.path == wheel.path]  # noqa: E731
    [download] = downloads()  # no other test here downloads this wheel
    assert "proxy-authorization" not in download.headers
    graph.clear_log()
    again = tunnel_get(proxy, url, bundle=bundle)
    assert again.body == r.body and not downloads()  # from the store

    unknown = tunnel_get(proxy, "https://files.pythonhosted.org/packages/aa/bb/nothing.whl", bundle=bundle)
    assert unknown.status == 404 and b"never listed" in unknown.body


def test_files_recorded_from_pypi_are_served_after_the_pypi_urls_change(tmp_path):
    """History recorded against PyPI itself lists files on files.pythonhosted.org.  With the
    `[pypi]` URLs pointed elsewhere (a mirror, or nowhere while PyPI is down), a pinned page
    still links those URLs, and the files behind them come from the store."""
    wheel = build_wheel("alpha", "1.0")
    sha256 = hashlib.sha256(wheel.content).hexdigest()
    url = f"https://files.pythonhosted.org/packages/0a/1b/2c3d/{wheel.filename}"
    uploaded = datetime(2023, 1, 1, tzinfo=UTC)
    listed = DistFile(
        filename=wheel.filename, url=url, hashes={"sha256": sha256}, upload_time=uploaded,
        upload_time_raw="2023-01-01T00:00:00.000000Z", size=len(wheel.content),
    )
    data = tmp_path / "data"
    history = HistoryStore(data / "history.sqlite3")
    history.record("pypi", "alpha", ProjectPage(name="alpha", files=(listed,)),  # type: ignore[arg-type]
                   datetime(2024, 1, 1, tzinfo=UTC))
    history.close()
    store = BlobStore(data / "blobs", size_limit=10**12)
    store.put(sha256, wheel.content)
    store.close()
    down = f"http://127.0.0.1:{closed_port()}/"
    config = write_config(tmp_path / "down.toml", simple_url=down + "simple/",
                          json_url=down + "pypi/", files_url=down, upstream_timeout="5s")
    with Proxy(data_dir=data, config=config) as proxy:
        bundle = make_bundle(proxy, tmp_path / "bundle.pem")
        page = tunnel_get(proxy, PYPI + "alpha/", bundle=bundle, credentials="2023-06-01:x",
                          headers={"Accept": JSON})
        assert page.status == 200, page.body
        assert [f["url"] for f in json.loads(page.body)["files"]] == [url]
        got = tunnel_get(proxy, url, bundle=bundle)
        assert got.status == 200, got.body
        assert hashlib.sha256(got.body).hexdigest() == sha256
        env = forward_env(proxy, bundle, "2023-06-01:x")
        assert uv_install(PYPI, ["alpha"], target_venv=tmp_path / "venv", env_extra=env) == {
            "alpha": "1.0"
        }


def test_plain_http_proxy_requests_carry_their_own_credentials(graph, proxy):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(
        {"http": f"http://2023-03-01:x@127.0.0.1:{proxy.port}"}
    ))
    with opener.open(urllib.request.Request(PYPI.replace("https", "http") + "alpha/",
                                            headers={"Accept": JSON}), timeout=30) as r:
        assert r.headers["Datepin-Cutoff"] == "2023-03-01T00:00:00Z"
        assert json.loads(r.read())["versions"] == ["1.0"]
    # A host datepin does not serve: passed on, without the proxy credentials.
    with opener.open(graph.url + "/simple/beta/", timeout=30) as r:
        assert r.status == 200
    [passed] = [r for r in graph.requests if r.path == "/simple/beta/"]
    assert "proxy-authorization" not in passed.headers
    assert all("proxy-authorization" not in r.headers for r in graph.requests)


# -- other hosts -------------------------------------------------------------------------------


@pytest.fixture
def other_tls_server() -> Iterator[tuple[int, bytes]]:
    """A TLS server on 127.0.0.1 with its own self-signed certificate: (port, cert DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "datepin test: some other host")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    keydir = Path(os.environ.get("TMPDIR", "/tmp"))
    pem = keydir / f"datepin-other-{os.getpid()}-{threading.get_ident()}.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    try:
        context.load_cert_chain(pem)
    finally:
        pem.unlink()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(b"hello from the other host\n")
            except (OSError, ssl.SSLError):
                raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], der
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_tunnels_to_other_hosts_are_never_decrypted(proxy, other_tls_server):
    port, der = other_tls_server
    sock, answer = connect(proxy, f"127.0.0.1:{port}", "2023-03-01:x")
    assert answer.startswith(b"HTTP/1.1 200")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    with client.wrap_socket(sock, server_hostname="other.example") as tls:
        assert tls.getpeercert(binary_form=True) == der  # the server's own, not datepin's
        assert tls.recv(100) == b"hello from the other host\n"


def test_refuse_other_hosts_refuses_their_tunnels(fake_pypi, tmp_path, other_tls_server):
    port, _ = other_tls_server
    proxy = start_proxy(tmp_path, fake_pypi, "refusing", refuse_other_hosts=True)
    try:
        sock, answer = connect(proxy, f"127.0.0.1:{port}")
        sock.close()
        assert answer.startswith(b"HTTP/1.1 403 ")
        assert b"pypi.org" in answer and b"refuse_other_hosts" in answer
        sock, answer = connect(proxy, "pypi.org:443")
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        proxy.stop()


def test_the_ca_is_private(proxy, bundle):
    ca_dir = proxy.data_dir / "ca"
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    for name in ("mitmproxy-ca.pem", "mitmproxy-ca.p12"):
        assert stat.S_IMODE((ca_dir / name).stat().st_mode) == 0o600
    cert = (ca_dir / "mitmproxy-ca-cert.pem").read_text()
    assert cert.strip() in bundle.read_text()
    assert bundle.read_text().count("BEGIN CERTIFICATE") > 1  # the system CAs too


# -- pure parts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "pin"),
    [
        ("2023-11-18:x", "2023-11-18"),
        ("2023-11-18:", "2023-11-18"),
        ("live:x", "live"),
        ("pin:2023-11-18", "2023-11-18"),
        ("pin:2023-11-18T14:05:00Z", "2023-11-18T14:05:00Z"),
        ("pin:2023-11-18T14%3A05%3A00Z", "2023-11-18T14:05:00Z"),  # not percent-decoded
        # A timestamp as the user name, percent-encoded in the proxy URL: clients decode it,
        # so its colons reach datepin unescaped, before the one that ends the user name.
        ("2023-11-18T14:05:00Z:x", "2023-11-18T14:05:00Z"),
        ("2023-11-18T14:05:00Z:", "2023-11-18T14:05:00Z"),
        ("2023-11-18T14:05:00Z", "2023-11-18T14:05:00Z"),  # no password at all
        ("2023-11-18T15:05:00+01:00:x", "2023-11-18T15:05:00+01:00"),
        ("2023-11-18T14:05:00.5Z:a:b", "2023-11-18T14:05:00.5Z"),
        # Per-project overrides, as pip and uv send `http://2018-06-01,setuptools=live:x@...`.
        ("2018-06-01,setuptools=live:x", "2018-06-01,setuptools=live"),
        ("2018-06-01,Setuptools=live,wheel=2024-01-01:x", "2018-06-01,setuptools=live,wheel=2024-01-01"),
        ("live,setuptools=2024-01-01:x", "live,setuptools=2024-01-01"),
        ("2018-06-01,setuptools=2024-01-01T00:00:00Z:x", "2018-06-01,setuptools=2024-01-01T00:00:00Z"),
        ("2018-06-01,wheel=live,setuptools=2024-01-01T00:00:00Z:x",
         "2018-06-01,wheel=live,setuptools=2024-01-01T00:00:00Z"),
        ("2023-11-18T14:05:00Z,setuptools=live:x", "2023-11-18T14:05:00Z,setuptools=live"),
        ("pin:2018-06-01,setuptools=2024-01-01T00:00:00Z", "2018-06-01,setuptools=2024-01-01T00:00:00Z"),
        ("2018-06-01%2Csetuptools%3Dlive:x", "2018-06-01,setuptools=live"),  # not decoded
        ("live%2Csetuptools%3D2024-01-01:x", "live,setuptools=2024-01-01"),
    ],
)
def test_pin_from_credentials(credentials, pin):
    assert pin_from_credentials(basic(credentials), now=NOW).text == pin


def test_the_basic_scheme_is_case_insensitive():
    token = basic("2023-11-18:x").split(" ", 1)[1]
    assert pin_from_credentials(f"basic {token}", now=NOW).text == "2023-11-18"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (basic("2023-13-45:x"), "'2023-13-45' is not a pin"),
        (basic("2999-01-01:x"), "in the future"),
        (basic("alice:secret"), "name no pin"),
        (basic("2018-06-01,setuptools=live,setuptools=live:x"), "names setuptools twice"),
        (basic("live,:x"), "empty part"),
        ("Bearer abc", "Basic"),
        ("Basic %%%", "unreadable"),
    ],
)
def test_bad_credentials_name_the_accepted_forms(authorization, reason):
    with pytest.raises(CredentialsError) as e:
        pin_from_credentials(authorization, now=NOW)
    assert reason in str(e.value) and "http://2023-11-18:x@HOST:PORT" in str(e.value)


def test_credentials_full_of_colons_are_read_in_linear_time():
    """The proxy credentials are read on the event loop, which serves every client: a
    user name that looks like a pin followed by a long run of colons (as anyone who can
    reach the port may send) must be refused at once, not after seconds of trying each
    colon as the end of a timestamp."""
    started = time.monotonic()
    with pytest.raises(CredentialsError):
        pin_from_credentials(basic("2" + ":" * 100_000), now=NOW)
    assert time.monotonic() - started < 1


def test_pin_selection_order():
    connect_pin = parse_pin("2023-05-05", now=NOW)
    own = basic("2023-02-02:x")
    assert select_pin("2023-01-01", own, connect_pin, "live", now=NOW).text == "2023-01-01"
    assert select_pin(None, own, connect_pin, "live", now=NOW).text == "2023-02-02"
    assert select_pin(None, None, connect_pin, "live", now=NOW).text == "2023-05-05"
    assert select_pin(None, None, None, "2023-06-06", now=NOW).text == "2023-06-06"
    assert select_pin(" 2023-01-01 ", None, None, "live", now=NOW).text == "2023-01-01"
    header = select_pin("2023-01-01,Setuptools=live", own, None, "live", now=NOW)
    assert header.text == "2023-01-01,setuptools=live" and header.for_project("setuptools").cutoff is None
    encoded = select_pin("2023-01-01%2Csetuptools%3Dlive", None, None, "live", now=NOW)
    assert encoded == header
    default = select_pin(None, None, None, "2023-06-06,wheel=live", now=NOW)
    assert default.for_project("wheel").cutoff is None
    with pytest.raises(PinError):
        select_pin("soon", own, connect_pin, "live", now=NOW)


def test_file_urls_map_between_upstream_and_files_pythonhosted_org():
    files = "http://127.0.0.1:9/files/"
    assert forward.public_file_url(files + "packages/a/b/x.whl", files) == (
        "https://files.pythonhosted.org/packages/a/b/x.whl"
    )
    other = "https://download.example.org/x.whl"
    assert forward.public_file_url(other, files) == other
    assert forward.upstream_file_urls("/packages/a/x%2Bcpu.whl?q", files) == [
        files + "packages/a/x%2Bcpu.whl",
        files + "packages/a/x+cpu.whl",
        "https://files.pythonhosted.org/packages/a/x%2Bcpu.whl",
        "https://files.pythonhosted.org/packages/a/x+cpu.whl",
    ]
    public = "https://files.pythonhosted.org/"
    assert forward.upstream_file_urls("/packages/a/x.whl", public) == [public + "packages/a/x.whl"]
    # A client that sends the `+` as is still finds a file the index wrote as `%2B`.
    plus = forward.upstream_file_urls("/packages/a/x+cpu.whl", public)
    assert public + "packages/a/x%2Bcpu.whl" in plus


def registry(name: str, url: str, *, intercept: bool = True) -> Registry:
    return Registry(name=name, url=url, intercept=intercept)


def test_intercepted_hosts_and_their_tls_patterns():
    config = Config(
        registries=(
            registry("corp", "http://corp.example/simple/"),
            registry("secure", "https://secure.example/simple/"),
            registry("plain", "https://plain.example/simple/", intercept=False),
        )
    )
    hosts = forward.intercepted_hosts(config)
    assert hosts == {
        ("pypi.org", 443), ("pypi.org", 80),
        ("files.pythonhosted.org", 443), ("files.pythonhosted.org", 80),
        ("corp.example", 80), ("secure.example", 443),
    }
    patterns = forward.intercept_patterns(hosts)
    assert r"^pypi\.org:443$" in patterns and r"^pypi\.org:80$" not in patterns
    assert not any(re.match(p, "pypixorg:443") for p in patterns)
    assert forward.intercepted_registries(config, "plain.example", 443) == []


def test_an_intercepted_request_goes_to_the_registry_with_the_longest_index_path():
    cpu = registry("cpu", "https://torch.example/whl/cpu/")
    cu121 = registry("cu121", "https://torch.example/whl/cu121/")
    config = Config(registries=(cpu, cu121))
    assert forward.intercepted_registry(config, "torch.example", 443, "/whl/cu121/torch/") == cu121
    assert forward.intercepted_registry(config, "torch.example", 443, "/whl/cpu/torch/") == cpu
    assert forward.intercepted_registry(config, "torch.example", 443, "/other/x.whl") == cpu
    assert forward.intercepted_registry(config, "other.example", 443) is None


def test_mitmproxy_checks_upstream_tls_against_the_same_trust_store(tmp_path, shared):
    bundle = shared.bundle  # any bundle: it stands for an egress proxy's
    context = trust_store({"SSL_CERT_FILE": str(bundle)})  # datepin's own upstream client
    subjects = [dict(x[0] for x in c["subject"]).get("commonName") for c in context.get_ca_certs()]
    assert "datepin forward-mode CA" in subjects
    config = Config(data_dir=tmp_path)
    options = proxy_options(config, tmp_path / "ca", {"SSL_CERT_FILE": str(bundle)})
    assert options["ssl_verify_upstream_trusted_ca"] == str(bundle)
    assert proxy_options(config, tmp_path / "ca", {"REQUESTS_CA_BUNDLE": str(bundle)})[
        "ssl_verify_upstream_trusted_ca"
    ] == str(bundle)
    assert proxy_options(config, tmp_path / "ca", {})["ssl_verify_upstream_trusted_ca"] is None
    assert options["allow_hosts"] == [r"^files\.pythonhosted\.org:443$", r"^pypi\.org:443$"]
    assert options["connection_strategy"] == "lazy" and options["upstream_cert"] is False


def h2_get(proxy: Proxy, host: str, path: str, *, bundle: Path, credentials: str,
           headers: dict[str, str]) -> tuple[int, bytes]:
    """One HTTP/2 request through a CONNECT tunnel, as uv makes them."""
    sock, answer = connect(proxy, f"{host}:443", credentials)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    context = ssl.create_default_context(cafile=str(bundle))
    context.set_alpn_protocols(["h2"])
    tls = context.wrap_socket(sock, server_hostname=host)
    assert tls.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", host),
                          (":path", path), *((k.lower(), v) for k, v in headers.items())],
                      end_stream=True)
    tls.sendall(conn.data_to_send())
    status, body = 0, b""
    try:
        while True:
            data = tls.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    return status, body
            tls.sendall(conn.data_to_send())
    finally:
        tls.close()
    return status, body


def test_credentials_sent_over_http2_are_not_logged_at_debug(shared, tmp_path):
    """uv speaks HTTP/2 through the tunnel; the client's Authorization (an index URL with
    user:token, a private registry's credentials) must not reach the log, also at -v."""
    config = write_config(
        tmp_path / "v.toml", simple_url=shared.fake.simple_url, json_url=shared.fake.json_url,
        files_url=shared.fake.files_url, upstream_timeout="5s",
    )
    token = "tok-" + os.urandom(8).hex()
    secret = basic(f"alice:{token}")
    with Proxy(data_dir=tmp_path / "data", config=config, extra_args=["-v"]) as proxy:
        bundle = make_bundle(proxy, tmp_path / "bundle.pem")
        status, body = h2_get(proxy, "pypi.org", "/simple/alpha/", bundle=bundle,
                              credentials="2025-01-01:x", headers={"Authorization": secret})
        assert status == 200 and b"alpha" in body
    assert any(" DEBUG " in line for line in proxy.log)
    leaked = [line for line in proxy.log if token in line or secret.split()[1] in line]
    assert leaked == [], leaked[:3]


def _proxy_rss(proxy: Proxy) -> int:
    assert proxy.process is not None
    status = Path(f"/proc/{proxy.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def _files_served(proxy: Proxy) -> int:
    return proxy.counter("datepin_files_bytes_served_total")


def _h2_tunnel(proxy: Proxy, bundle: Path, host: str) -> ssl.SSLSocket:
    """A TLS connection to `host` through the proxy's tunnel, speaking HTTP/2 (as uv does)."""
    sock, answer = connect(proxy, f"{host}:443")
    assert answer.startswith(b"HTTP/1.1 200"), answer
    context = ssl.create_default_context(cafile=str(bundle))
    context.set_alpn_protocols(["h2"])
    tls = context.wrap_socket(sock, server_hostname=host)
    assert tls.selected_alpn_protocol() == "h2"
    return tls


def test_an_http2_client_that_stops_reading_does_not_make_the_proxy_hold_the_file(tmp_path):
    """uv speaks HTTP/2 through the tunnel.  A client that stops taking a big file (it opens
    no more flow-control window) must not make mitmproxy read the whole file into memory
    (DESIGN.md, "Blobs": bounded memory whatever the size); once it reads on, it gets the
    whole file."""
    size = 96 << 20
    (tmp_path / "dist").mkdir()
    wheel = write_wheel(tmp_path / "dist", "stalled", "1.0", payload_size=size)
    with FakePyPI() as fake:
        listed = fake.add_file("stalled", wheel.name, wheel, upload_time="2023-01-01T00:00:00Z")
        proxy = start_proxy(tmp_path, fake, "h2")
        try:
            bundle = make_bundle(proxy, tmp_path / "bundle.pem")
            assert proxy.get("/2023-06-01/simple/stalled/").status == 200  # in history now
            before = _proxy_rss(proxy)
            tls = _h2_tunnel(proxy, bundle, "files.pythonhosted.org")
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.send_headers(1, [(":method", "GET"), (":scheme", "https"),
                                  (":authority", "files.pythonhosted.org"),
                                  (":path", listed.path.removeprefix("/files"))], end_stream=True)
            tls.sendall(conn.data_to_send())
            # The client takes its first window's worth and then nothing: the proxy may send
            # no more, and must stop reading the file meanwhile.
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                assert _files_served(proxy) < listed.size, "the whole file went into the proxy's memory"
            grown = _proxy_rss(proxy) - before
            assert grown < 32 << 20, f"RSS grew {grown >> 20} MiB while the client read nothing"
            digest, received, ended = hashlib.sha256(), 0, False
            while not ended:
                data = tls.recv(1 << 20)
                assert data, "the proxy closed the connection"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        digest.update(event.data)
                        received += len(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = True
                tls.sendall(conn.data_to_send())
            tls.close()
            assert (received, digest.hexdigest()) == (listed.size, listed.sha256)
        finally:
            proxy.stop()


def test_an_http2_stream_read_on_while_another_on_its_connection_is_not(tmp_path):
    """HTTP/2 carries many answers on one connection, each with its own flow-control window.
    A client that stops taking one file (it is busy elsewhere, or done with it without
    resetting the stream) must still get the others it reads, as over two connections."""
    size = 48 << 20
    (tmp_path / "dist").mkdir()
    files = []
    with FakePyPI() as fake:
        for version in ("1.0", "2.0"):
            wheel = write_wheel(tmp_path / "dist", "twofold", version, payload_size=size)
            files.append(fake.add_file("twofold", wheel.name, wheel, upload_time="2023-01-01T00:00:00Z"))
        proxy = start_proxy(tmp_path, fake, "h2")
        try:
            bundle = make_bundle(proxy, tmp_path / "bundle.pem")
            assert proxy.get("/2023-06-01/simple/twofold/").status == 200  # in history now
            tls = _h2_tunnel(proxy, bundle, "files.pythonhosted.org")
            tls.settimeout(10)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()

            def ask(stream_id: int, path: str) -> None:
                conn.send_headers(stream_id, [(":method", "GET"), (":scheme", "https"),
                                              (":authority", "files.pythonhosted.org"),
                                              (":path", path.removeprefix("/files"))], end_stream=True)
                tls.sendall(conn.data_to_send())

            # Stream 1 takes its first window's worth and then nothing more (only the
            # connection's window is given back, so other streams may go on).
            ask(1, files[0].path)
            received = {1: 0, 3: 0}
            digest, ended = hashlib.sha256(), False

            def take() -> None:
                nonlocal ended
                try:
                    data = tls.recv(1 << 20)
                except TimeoutError:
                    raise AssertionError(f"nothing came for 10 s; received {received}") from None
                assert data, "the proxy closed the connection"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        received[event.stream_id] += len(event.data)
                        if event.stream_id == 1:
                            conn.increment_flow_control_window(event.flow_controlled_length)
                        else:
                            digest.update(event.data)
                            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 3:
                        ended = True
                tls.sendall(conn.data_to_send())

            while received[1] < 65535:
                take()
            ask(3, files[1].path)
            while not ended:
                take()
            tls.close()
            assert (received[3], digest.hexdigest()) == (files[1].size, files[1].sha256)
        finally:
            proxy.stop()


def test_a_forward_client_waiting_for_a_slow_upstream_longer_than_idle_timeout_is_not_cut(tmp_path):
    """`idle_timeout` closes connections that send nothing or take nothing of an answer
    waiting for them; a client through HTTPS_PROXY whose file datepin is still waiting for
    (a slow upstream, a download waiting for its turn) has nothing waiting for it, as in
    path mode (tests/test_stalls.py), and gets its file."""
    with FakePyPI() as fake:
        wheel = fake.add_wheel("patient", "1.0", upload_time="2023-01-01T00:00:00Z", payload_size=1 << 20)
        proxy = start_proxy(tmp_path, fake, "idle", idle_timeout="1s")  # upstream_timeout 5s
        try:
            bundle = make_bundle(proxy, tmp_path / "bundle.pem")
            assert proxy.get("/2023-06-01/simple/patient/").status == 200  # in history now
            fault = fake.fault(wheel.path, "stall", seconds=3)
            start = time.monotonic()
            r = tunnel_get(proxy, "https://files.pythonhosted.org" + wheel.path.removeprefix("/files"),
                           bundle=bundle)
            assert fault.hits == 1 and time.monotonic() - start >= 3
            assert (r.status, hashlib.sha256(r.body).hexdigest()) == (200, wheel.sha256)
        finally:
            proxy.stop()


def test_a_file_url_from_a_lock_made_through_another_datepin(graph, tmp_path):
    """Forward mode's lock files keep PyPI's own file URLs: a datepin that never listed one
    (a fresh data directory) looks the project up upstream and serves it."""
    fresh = start_proxy(tmp_path, graph, "fresh")
    try:
        bundle = make_bundle(fresh, tmp_path / "bundle.pem")
        wheel = graph.file("alpha-1.0-py3-none-any.whl")
        url = "https://files.pythonhosted.org/" + wheel.path.removeprefix("/files/")
        r = tunnel_get(fresh, url, bundle=bundle)
        assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == wheel.sha256
        assert tunnel_get(fresh, url + ".metadata", bundle=bundle).body == wheel.metadata
        unlisted = tunnel_get(fresh, url.replace("alpha-1.0-", "alpha-9.0-"), bundle=bundle)
        assert unlisted.status == 404 and b"never listed" in unlisted.body
    finally:
        fresh.stop()
