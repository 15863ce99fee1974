"""Forward mode for an extra registry with `intercept = true`: clients keep the registry's own
index URL and reach it through the proxy; datepin answers with the pinned view."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from clients import ClientError, ca_bundle_env, pip_install, pip_resolve, uv_compile
from fakepypi import FakePyPI, build_wheel
from proxyproc import Proxy, fetch, write_config
from scripted import ScriptedServer, self_signed_cert
from test_registries import _torch_like_page


@pytest.fixture
def corp() -> Iterator[FakePyPI]:
    with FakePyPI() as fake:
        fake.add_wheel("widget", "1.0", upload_time="2023-01-01T00:00:00Z")
        fake.add_wheel("widget", "2.0", upload_time="2023-06-01T00:00:00Z")
        yield fake


@pytest.fixture
def proxy_for_corp(tmp_path: Path, fake_pypi: FakePyPI, corp: FakePyPI) -> Iterator[Proxy]:
    config = write_config(
        tmp_path / "proxy.toml",
        simple_url=fake_pypi.simple_url, json_url=fake_pypi.json_url, files_url=fake_pypi.files_url,
        upstream_timeout="5s",
        extra=f'[[registry]]\nname = "corp"\nurl = "{corp.simple_url}"\nintercept = true\n',
    )
    with Proxy(data_dir=tmp_path / "data", config=config) as proxy:
        yield proxy


def through(proxy: Proxy, pin: str) -> dict[str, str | None]:
    """Client variables for plain-HTTP forward mode with `pin` in the proxy credentials."""
    url = f"http://{pin}:x@127.0.0.1:{proxy.port}"
    return {"HTTP_PROXY": url, "http_proxy": url, "NO_PROXY": None, "no_proxy": None}


def test_intercepted_registry_is_pinned_through_the_proxy(proxy_for_corp, corp):
    index = corp.simple_url  # the client keeps the registry's own URL
    assert pip_resolve(index, ["widget"], env_extra=through(proxy_for_corp, "2023-03-01")) == {"widget": "1.0"}
    assert uv_compile(index, ["widget"], env_extra=through(proxy_for_corp, "2023-03-01")) == {"widget": "1.0"}
    assert pip_resolve(index, ["widget"], env_extra=through(proxy_for_corp, "2023-07-01")) == {"widget": "2.0"}
    # The pinned view now comes from history, and files from the store.
    corp.clear_log()
    assert pip_resolve(index, ["widget"], env_extra=through(proxy_for_corp, "2023-03-01")) == {"widget": "1.0"}
    assert corp.requests == []


def test_unknown_urls_on_an_intercepted_registry_are_not_fetched(proxy_for_corp, corp):
    import urllib.request

    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://2023-03-01:x@127.0.0.1:{proxy_for_corp.port}"})
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(corp.url.rstrip("/") + "/files/not/listed.whl", timeout=30)
    assert e.value.code == 404, e.value.read()
    assert corp.requests_for("/files/") == []


def test_a_local_version_file_with_a_plus_in_its_link_installs_through_the_proxy(proxy_for_corp, corp):
    """PEP 440 local versions (`2.1.0+cu121`, PyTorch's) put a `+` in file names.  An index
    may link it as is; pip re-quotes the link's path (`%2B`) before asking for it, and that
    request must find the file datepin listed."""
    corp.add_wheel("torchy", "2.1.0+cu121", upload_time="2023-01-01T00:00:00Z")
    index = corp.simple_url
    env = through(proxy_for_corp, "2023-03-01")
    assert pip_resolve(index, ["torchy"], env_extra=env) == {"torchy": "2.1.0+cu121"}
    assert uv_compile(index, ["torchy"], env_extra=env) == {"torchy": "2.1.0+cu121"}


def test_two_intercepted_registries_on_one_host_each_serve_their_own_index(tmp_path, fake_pypi):
    """PyTorch's indexes share one host (download.pytorch.org/whl/cu121/, .../whl/cpu/): a
    user who pins both keeps both index URLs, and each must answer with its own view."""
    with ScriptedServer() as host:
        for variant in ("cu121", "cpu"):
            w = build_wheel("torchy", f"2.1.0+{variant}")
            href = f"/whl/{variant}/{w.filename.replace('+', '%2B')}"
            host.route(href, 200, w.content, content_type="application/octet-stream")
            host.route(f"/whl/{variant}/{w.filename}", 200, w.content, content_type="application/octet-stream")
            page = _torch_like_page("torchy", [(f"{href}#sha256={hashlib.sha256(w.content).hexdigest()}", w.filename, None)])
            host.route(f"/whl/{variant}/torchy/", 200, page, content_type="text/html")
        extra = "".join(
            f'[[registry]]\nname = "{v}"\nurl = "{host.url}/whl/{v}/"\nintercept = true\n'
            for v in ("cu121", "cpu")
        )
        config = write_config(
            tmp_path / "proxy.toml", simple_url=fake_pypi.simple_url, json_url=fake_pypi.json_url,
            files_url=fake_pypi.files_url, upstream_timeout="5s", extra=extra,
        )
        with Proxy(data_dir=tmp_path / "data", config=config) as proxy:
            env = through(proxy, "2023-03-01")
            assert pip_resolve(f"{host.url}/whl/cu121/", ["torchy"], env_extra=env) == {"torchy": "2.1.0+cu121"}
            assert pip_resolve(f"{host.url}/whl/cpu/", ["torchy"], env_extra=env) == {"torchy": "2.1.0+cpu"}
            assert uv_compile(f"{host.url}/whl/cpu/", ["torchy"], env_extra=env) == {"torchy": "2.1.0+cpu"}


def _tls(fake: FakePyPI, tmp_path: Path) -> str:
    """Serve `fake` over TLS with a self-signed certificate for 127.0.0.1 (one for all the
    servers of a test: two of that name in one bundle would confuse OpenSSL); its path."""
    if (tmp_path / "tls" / "cert.pem").exists():
        cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    else:
        cert, key = self_signed_cert(tmp_path / "tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake._server.socket = context.wrap_socket(fake._server.socket, server_side=True)
    return str(cert)


@contextmanager
def https_forward(tmp_path: Path, fake_pypi: FakePyPI, registry: str, upstream_cert: str) -> Iterator[dict[str, str]]:
    """A proxy intercepting an HTTPS registry (`registry`: its [[registry]] table) whose
    certificate is `upstream_cert`; yields a client's forward-mode variables at 2023-03-01,
    trusting datepin's CA and that certificate."""
    upstream_ca = tmp_path / "upstream-ca.pem"
    upstream_ca.write_text(Path(upstream_cert).read_text())
    config = write_config(
        tmp_path / "proxy.toml", simple_url=fake_pypi.simple_url, json_url=fake_pypi.json_url,
        files_url=fake_pypi.files_url, upstream_timeout="5s", extra=registry,
    )
    env = {**os.environ, "SSL_CERT_FILE": str(upstream_ca)}
    with Proxy(data_dir=tmp_path / "data", config=config, env=env) as proxy:
        pem = subprocess.run([sys.executable, "-m", "datepin", "ca", "--data-dir", str(proxy.data_dir), "--pem"],
                             check=True, capture_output=True, text=True).stdout
        bundle = tmp_path / "bundle.pem"
        bundle.write_text(pem + upstream_ca.read_text())
        yield {"HTTPS_PROXY": f"http://2023-03-01:x@127.0.0.1:{proxy.port}", **ca_bundle_env(bundle)}



def test_https_intercepted_passthrough_registry(tmp_path, fake_pypi):
    token = "tok-forward"
    with FakePyPI() as corp:
        corp_cert = _tls(corp, tmp_path)
        corp.require_basic = ("alice", token)
        corp.relative_links = True
        corp.add_wheel("widget", "1.0", upload_time="2023-01-01T00:00:00Z")
        corp.add_wheel("widget", "2.0", upload_time="2023-06-01T00:00:00Z")
        base = f"https://127.0.0.1:{corp.port}"
        registry = f'[[registry]]\nname = "corp"\nurl = "{base}/simple/"\nintercept = true\nauth = "passthrough"\n'
        with https_forward(tmp_path, fake_pypi, registry, corp_cert) as client:
            index = f"https://alice:{token}@127.0.0.1:{corp.port}/simple/"
            assert pip_resolve(index, ["widget"], env_extra=client) == {"widget": "1.0"}
            assert uv_compile(index, ["widget"], env_extra=client) == {"widget": "1.0"}
            # Without credentials: refused, nothing from the store.
            with pytest.raises(ClientError):
                pip_resolve(f"{base}/simple/", ["widget"], env_extra=client)
            corp.clear_log()
            assert pip_resolve(index, ["widget"], env_extra=client) == {"widget": "1.0"}
            good = "Basic " + base64.b64encode(f"alice:{token}".encode()).decode()
            assert all(r.headers.get("authorization") == good for r in corp.requests)


def test_https_intercepted_registry_with_files_on_a_cdn_host(tmp_path, fake_pypi):
    with ScriptedServer(tls_dir=tmp_path / "tls") as index, FakePyPI() as cdn:
        cdn_cert = _tls(cdn, tmp_path)
        f = cdn.add_wheel("torchy", "2.1.0+cu121", upload_time="2023-01-01T00:00:00Z")
        href = f"https://127.0.0.1:{cdn.port}{f.path.replace('+', '%2B')}#sha256={f.sha256}"
        local = build_wheel("torchy", "2.0.0")
        index.route(f"/whl/{local.filename}", 200, local.content, content_type="application/octet-stream")
        links = [(href, f.filename, ">=3.8"),
                 (f"/whl/{local.filename}#sha256={hashlib.sha256(local.content).hexdigest()}", local.filename, None)]
        index.route("/whl/torchy/", 200, _torch_like_page("torchy", links), content_type="text/html")
        registry = f'[[registry]]\nname = "torch"\nurl = "{index.url}/whl/"\nintercept = true\n'
        with https_forward(tmp_path, fake_pypi, registry, cdn_cert) as client:
            for req, want in (("torchy", "2.1.0+cu121"), ("torchy==2.0.0", "2.0.0")):
                assert pip_install(f"{index.url}/whl/", [req], env_extra=client,
                                   target_venv=tmp_path / f"v-{want}") == {"torchy": want}
                assert uv_compile(f"{index.url}/whl/", [req], env_extra=client) == {"torchy": want}
            assert cdn.requests_for("/files/")  # fetched by the client through a tunnel


def test_intercepted_gitlab_registry_with_an_encoded_project_path(tmp_path, fake_pypi):
    """GitLab names a project by id or by its URL-encoded path (`group%2Fproject`): the
    index URL a client keeps has a `%2F` in it, and its pages must still be answered."""
    prefix = "/api/v4/projects/group%2Fproject/packages/pypi"
    w = build_wheel("widget", "1.0")
    with ScriptedServer() as gitlab:
        href = f"{prefix}/files/{hashlib.sha256(w.content).hexdigest()}/{w.filename}"
        gitlab.route(href, 200, w.content, content_type="application/octet-stream")
        page = _torch_like_page("widget", [(f"{href}#sha256={hashlib.sha256(w.content).hexdigest()}", w.filename, None)])
        gitlab.route(f"{prefix}/simple/widget/", 200, page, content_type="text/html")
        config = write_config(
            tmp_path / "proxy.toml", simple_url=fake_pypi.simple_url, json_url=fake_pypi.json_url,
            files_url=fake_pypi.files_url, upstream_timeout="5s",
            extra=f'[[registry]]\nname = "gitlab"\nurl = "{gitlab.url}{prefix}/simple/"\nintercept = true\n',
        )
        with Proxy(data_dir=tmp_path / "data", config=config) as proxy:
            # Path mode reads it.
            assert fetch(f"{proxy.url}/2023-03-01/r/gitlab/widget/").status == 200
            index = f"{gitlab.url}{prefix}/simple/"
            env = through(proxy, "2023-03-01")
            assert pip_resolve(index, ["widget"], env_extra=env) == {"widget": "1.0"}
            assert uv_compile(index, ["widget"], env_extra=env) == {"widget": "1.0"}
