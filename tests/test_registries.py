"""Extra registries end to end: `/<pin>/r/<name>/` with real pip and uv, HTML-only registries
(time = first seen), static credentials, and passthrough credentials that never leak."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clients import pip_install, pip_resolve, uv_compile
from fakepypi import FakePyPI
from proxyproc import Proxy, Response, fetch, write_config
from scripted import ScriptedServer

JSON = "application/vnd.pypi.simple.v1+json"
PIN = "2024-01-01"  # before anything was observed: the first observation is what it sees
USER = "alice"


@pytest.fixture
def token() -> str:
    return "tok-" + secrets.token_hex(12)


@pytest.fixture
def public(fake_pypi: FakePyPI) -> FakePyPI:
    fake_pypi.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z")
    return fake_pypi


@pytest.fixture
def private(token: str) -> Iterator[FakePyPI]:
    """A private registry: Basic auth, HTML only, file links relative to the page."""
    with FakePyPI() as fake:
        fake.require_basic = (USER, token)
        fake.serve_json = False
        fake.relative_links = True
        fake.add_wheel("secretpkg", "1.0", upload_time="2023-01-01T00:00:00Z", requires_dist=["beta"])
        yield fake


def start_proxy(tmp_path: Path, public: FakePyPI, extra: str, env: dict[str, str] | None = None) -> Proxy:
    config = write_config(
        tmp_path / "proxy.toml",
        simple_url=public.simple_url, json_url=public.json_url, files_url=public.files_url,
        upstream_timeout="5s", live_ttl="0s", extra=extra,
    )
    return Proxy(data_dir=tmp_path / "data", config=config, env=env, extra_args=["-v"]).start()


@pytest.fixture
def passthrough(tmp_path: Path, public: FakePyPI, private: FakePyPI) -> Iterator[Proxy]:
    extra = f'[[registry]]\nname = "private"\nurl = "{private.simple_url}"\nauth = "passthrough"\n'
    proxy = start_proxy(tmp_path, public, extra)
    try:
        yield proxy
    finally:
        proxy.stop()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def private_index(proxy: Proxy, token: str, pin: str = PIN) -> str:
    return f"http://{USER}:{token}@127.0.0.1:{proxy.port}/{pin}/r/private/"


def assert_secret_kept(token: str, data_dir: Path, log: list[str]) -> None:
    """Neither the token nor any header built from it is in a file or a log line."""
    forms = [token.encode(), basic(USER, token).split()[1].encode()]
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("history") for p in files)
    for path in files:
        content = path.read_bytes()
        for form in forms:
            assert form not in content, f"secret written to {path}"
    assert any(" DEBUG " in line for line in log), "the proxy was not logging at debug level"
    for line in log:
        for form in forms:
            assert form.decode() not in line, f"secret logged: {line!r}"


def file_link(page: Response) -> str:
    [entry] = json.loads(page.body)["files"]
    return str(entry["url"])


# -- passthrough ---------------------------------------------------------------------------


def test_pip_and_uv_install_from_a_private_registry_with_their_credentials(
    passthrough: Proxy, private: FakePyPI, token: str, tmp_path: Path
) -> None:
    extra = ["--extra-index-url", private_index(passthrough, token)]
    installed = pip_install(
        passthrough.index(PIN), ["secretpkg"], target_venv=tmp_path / "venv", extra_args=extra
    )
    assert installed == {"secretpkg": "1.0", "beta": "1.0"}
    assert uv_compile(passthrough.index(PIN), ["secretpkg"], extra_args=extra) == {
        "secretpkg": "1.0", "beta": "1.0",
    }
    # The client's credentials went upstream for the page and for the file.
    good = basic(USER, token)
    assert private.requests_for("/simple/secretpkg/")
    assert all(r.headers.get("authorization") == good for r in private.requests_for("/simple/secretpkg/")
               if r.status == 200)
    downloads = [r for r in private.requests_for("/files/") if r.status == 200]
    assert downloads and all(r.headers.get("authorization") == good for r in downloads)


def test_stored_private_files_go_only_to_clients_upstream_accepts(
    passthrough: Proxy, private: FakePyPI, token: str, tmp_path: Path
) -> None:
    extra = ["--extra-index-url", private_index(passthrough, token)]
    pip_install(passthrough.index(PIN), ["secretpkg"], target_venv=tmp_path / "venv", extra_args=extra)
    good, wrong = basic(USER, token), basic(USER, "guess")
    page_path = f"/{PIN}/r/private/secretpkg/"
    page = passthrough.get(page_path, {"Accept": JSON, "Authorization": good})
    assert page.status == 200 and page.header("Cache-Control").startswith("max-age")
    assert "private" in page.header("Cache-Control")
    link = file_link(page)
    assert link.startswith(f"{passthrough.url}/files/private/")
    wheel = private.file("secretpkg-1.0-py3-none-any.whl")

    private.clear_log()
    for headers in ({}, {"Authorization": wrong}):
        for url in (passthrough.url + page_path, link, link + ".metadata",
                    f"{passthrough.url}/{PIN}/r/private/pypi/secretpkg/json"):
            denied = fetch(url, headers={"Accept": JSON, **headers})
            assert denied.status == 401, (url, headers, denied.body)
            assert denied.header("WWW-Authenticate") == 'Basic realm="datepin"'
            assert b"secretpkg-1.0" not in denied.body
        root = passthrough.get(f"/{PIN}/r/private/", {"Accept": JSON, **headers})
        assert json.loads(root.body)["projects"] == []
    # Each refusal was decided by upstream, asked with the client's own credentials...
    checks = private.requests_for("/simple/secretpkg/")
    assert {r.headers.get("authorization") for r in checks} == {None, wrong}
    assert all(r.status == 401 for r in checks)
    # ...and no file left the store or came from upstream for them.
    assert private.requests_for("/files/") == []

    ok = fetch(link, headers={"Authorization": good})
    assert ok.status == 200 and ok.body == wheel.read()
    assert private.requests_for("/files/") == []  # it came from the store
    assert "private" in ok.header("Cache-Control")
    root = passthrough.get(f"/{PIN}/r/private/", {"Accept": JSON, "Authorization": good})
    assert [p["name"] for p in json.loads(root.body)["projects"]] == ["secretpkg"]
    api = passthrough.get(f"/{PIN}/r/private/pypi/secretpkg/json", {"Authorization": good})
    assert json.loads(api.body)["info"]["requires_dist"] == ["beta"]
    metrics = passthrough.get("/-/metrics").body.decode()
    assert "datepin_access_denied_total 8\n" in metrics, metrics

    passthrough.stop()
    assert_secret_kept(token, passthrough.data_dir, passthrough.log)


def test_a_cookie_upstream_set_for_one_client_never_goes_out_for_another(
    tmp_path: Path, public: FakePyPI, private: FakePyPI, token: str
) -> None:
    """Registries that keep sessions (Artifactory, Nexus) answer with a cookie naming the
    client they let in.  Sent back on a request made for another client, it would let that
    one in on the first one's session."""
    private.set_cookie = "session=alices; Path=/"
    url = private.simple_url.replace("127.0.0.1", "localhost")  # cookie jars pass over IP hosts
    extra = f'[[registry]]\nname = "private"\nurl = "{url}"\nauth = "passthrough"\n'
    proxy = start_proxy(tmp_path, public, extra)
    try:
        page = proxy.get(f"/{PIN}/r/private/secretpkg/", {"Accept": JSON, "Authorization": basic(USER, token)})
        assert page.status == 200
        assert fetch(file_link(page), headers={"Authorization": basic(USER, token)}).status == 200
        other = proxy.get(f"/{PIN}/r/private/secretpkg/", {"Accept": JSON, "Authorization": basic("mallory", "x")})
        assert other.status == 401
    finally:
        proxy.stop()
    asked = private.requests_for("/")
    assert len(asked) >= 3 and [r.headers.get("cookie") for r in asked] == [None] * len(asked)


def test_unreachable_private_registry_fails_closed(
    passthrough: Proxy, private: FakePyPI, token: str
) -> None:
    good = basic(USER, token)
    page_path = f"/{PIN}/r/private/secretpkg/"
    link = file_link(passthrough.get(page_path, {"Accept": JSON, "Authorization": good}))
    private.stop()
    # Another client, never checked: nothing is served from history or the store.
    other = {"Authorization": basic("mallory", "x")}
    assert passthrough.get(page_path, other).status == 502
    assert fetch(link, headers=other).status == 502
    assert passthrough.get(page_path, {}).status == 502


# -- static credentials --------------------------------------------------------------------


def test_static_credentials_from_the_environment(
    tmp_path: Path, public: FakePyPI, token: str
) -> None:
    with FakePyPI() as static:
        static.require_bearer = token
        static.add_wheel("corp", "2.0", upload_time="2023-01-01T00:00:00Z", requires_dist=["beta"])
        extra = (f'[[registry]]\nname = "corp"\nurl = "{static.simple_url}"\n'
                 f'auth = "static"\nauth_env = "CORP_INDEX_TOKEN"\n')
        proxy = start_proxy(tmp_path, public, extra, env={**os.environ, "CORP_INDEX_TOKEN": token})
        try:
            installed = pip_install(
                proxy.index(PIN), ["corp"], target_venv=tmp_path / "venv",
                extra_args=["--extra-index-url", f"{proxy.url}/{PIN}/r/corp/"],
            )
            assert installed == {"corp": "2.0", "beta": "1.0"}
            served = [r for r in static.requests if r.status == 200]
            assert {r.path.split("/")[1] for r in served} == {"simple", "files"}
            assert all(r.headers.get("authorization") == f"Bearer {token}" for r in served)
        finally:
            proxy.stop()
        assert_secret_kept(token, proxy.data_dir, proxy.log)


def test_missing_static_secret_stops_startup_naming_the_variable(
    tmp_path: Path, public: FakePyPI
) -> None:
    extra = ('[[registry]]\nname = "corp"\nurl = "https://corp.example/simple/"\n'
             'auth = "static"\nauth_env = "CORP_INDEX_TOKEN"\n')
    env = {k: v for k, v in os.environ.items() if k != "CORP_INDEX_TOKEN"}
    with pytest.raises(RuntimeError, match="CORP_INDEX_TOKEN is not set"):
        start_proxy(tmp_path, public, extra, env=env)


# -- registries without upload times, and with them ------------------------------------------


def now_pin() -> str:
    time.sleep(0.2)  # strictly between two observations, and already over
    pin = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.2)
    return pin


def test_registry_without_upload_times_uses_first_seen(tmp_path: Path, public: FakePyPI) -> None:
    with FakePyPI() as html:
        html.serve_json = False  # and no data-upload-time: PyTorch's index looks like this
        html.relative_links = True
        html.add_wheel("alpha", "1.0", upload_time="2025-01-01T00:00:00Z")
        extra = f'[[registry]]\nname = "html"\nurl = "{html.simple_url}"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            # A cutoff before the first observation sees the first observation.
            old = proxy.get("/2020-01-01/r/html/alpha/", {"Accept": JSON})
            assert old.status == 200 and json.loads(old.body)["versions"] == ["1.0"]
            assert old.header("Datepin-View") == "reconstructed"
            between = now_pin()
            html.add_wheel("alpha", "2.0", upload_time="2025-01-02T00:00:00Z")
            assert json.loads(proxy.get("/live/r/html/alpha/", {"Accept": JSON}).body)["versions"] == [
                "1.0", "2.0",
            ]
            later = now_pin()
            html.clear_log()
            mid = proxy.get(f"/{between}/r/html/alpha/", {"Accept": JSON})
            assert json.loads(mid.body)["versions"] == ["1.0"]
            assert mid.header("Datepin-View") == "observed"
            assert html.requests_for("/simple/") == []  # fixed view: answered from history
            assert json.loads(proxy.get(f"/{later}/r/html/alpha/", {"Accept": JSON}).body)[
                "versions"] == ["1.0", "2.0"]
            assert pip_resolve(f"{proxy.url}/{between}/r/html/", ["alpha"]) == {"alpha": "1.0"}
            assert pip_resolve(f"{proxy.url}/{later}/r/html/", ["alpha"]) == {"alpha": "2.0"}
        finally:
            proxy.stop()


def test_registry_with_upload_times_is_filtered_like_pypi(tmp_path: Path, public: FakePyPI) -> None:
    with FakePyPI() as other:
        other.add_wheel("gamma", "1.0", upload_time="2023-01-01T00:00:00Z")
        other.add_wheel("gamma", "2.0", upload_time="2023-06-01T00:00:00Z")
        extra = f'[[registry]]\nname = "other"\nurl = "{other.simple_url}"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            early = proxy.get("/2023-03-01/r/other/gamma/", {"Accept": JSON})
            assert json.loads(early.body)["versions"] == ["1.0"]
            assert uv_compile(f"{proxy.url}/2023-07-01/r/other/", ["gamma"]) == {"gamma": "2.0"}
            assert proxy.get("/2023-03-01/r/nope/gamma/").status == 404
        finally:
            proxy.stop()


def test_a_login_redirect_for_an_anonymous_client_opens_nothing(
    passthrough: Proxy, private: FakePyPI, token: str
) -> None:
    """A registry behind a single sign-on front sends a client without credentials to a
    login page on another host (302, then 200 HTML).  That is a refusal, not an acceptance."""
    good = basic(USER, token)
    page_path = f"/{PIN}/r/private/secretpkg/"
    link = file_link(passthrough.get(page_path, {"Accept": JSON, "Authorization": good}))
    assert fetch(link, headers={"Authorization": good}).status == 200  # stored now
    with FakePyPI() as sso:
        sso.serve_json = False
        private.fault("/simple/secretpkg/", "status", status=302, times=None,
                      headers={"Location": sso.simple_url})
        page = passthrough.get(page_path, {"Accept": JSON})
        wheel = fetch(link)
    assert (page.status, wheel.status) == (401, 401), (page.body[:200], wheel.body[:60])


# -- HTML pages as plain web servers write them ----------------------------------------------


@contextmanager
def _static_registry(tmp_path: Path, public: FakePyPI) -> Iterator[tuple[Proxy, ScriptedServer]]:
    """A registry of pages as a plain web server writes them (routes set by the test)."""
    with ScriptedServer() as server:
        extra = f'[[registry]]\nname = "static"\nurl = "{server.url}/simple/"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            yield proxy, server
        finally:
            proxy.stop()


def test_an_nginx_autoindex_registry_installs_through_datepin_as_it_does_directly(
    tmp_path: Path, public: FakePyPI
) -> None:
    """A directory of wheels behind nginx's `autoindex on` is a PEP 503 index to pip and uv:
    both take a file's name from its URL.  nginx cuts names longer than 50 bytes in the link
    text ("...m..&gt;"), so datepin must not take the name from the text either."""
    project = "a-rather-long-project-name-for-autoindex"
    wheel = public.add_wheel(project, "1.0", upload_time="2023-01-01T00:00:00Z", metadata_file=False)
    assert len(wheel.filename) > 50
    shown = wheel.filename[:47] + "..&gt;"
    page = (
        f"<html>\r\n<head><title>Index of /simple/{project}/</title></head>\r\n<body>\r\n"
        f"<h1>Index of /simple/{project}/</h1><hr><pre><a href=\"../\">../</a>\r\n"
        f'<a href="{wheel.url}">{shown}</a>{" " * 3}01-Jan-2023 00:00{" " * 7}{wheel.size}\r\n'
        "</pre><hr></body>\r\n</html>\r\n"
    ).encode()
    with _static_registry(tmp_path, public) as (proxy, server):
        server.route(f"/simple/{project}/", 200, page, content_type="text/html")
        direct = f"{server.url}/simple/"
        assert pip_resolve(direct, [project]) == {project: "1.0"}
        assert uv_compile(direct, [project]) == {project: "1.0"}
        through = f"{proxy.url}/{PIN}/r/static/"
        listed = [f["filename"] for f in json.loads(proxy.get(f"/{PIN}/r/static/{project}/", {"Accept": JSON}).body)["files"]]
        assert wheel.filename in listed, listed
        assert pip_resolve(through, [project]) == {project: "1.0"}
        assert uv_compile(through, [project]) == {project: "1.0"}


def test_an_html_registry_page_in_latin_1_is_read_as_pip_and_uv_read_it(
    tmp_path: Path, public: FakePyPI
) -> None:
    """pip and uv decode an HTML page in the charset its Content-Type names (UTF-8 if none)."""
    wheel = public.add_wheel("latin", "1.0", upload_time="2023-01-01T00:00:00Z", metadata_file=False)
    page = (
        '<!DOCTYPE html>\n<html><head><title>Liens pour latin \u2013 d\u00e9p\u00f4t</title></head>'
        f'<body>\n<a href="{wheel.url}#sha256={wheel.sha256}" data-yanked="retir\u00e9e">{wheel.filename}</a>\n'
        "</body></html>\n"
    ).replace("\u2013", "-").encode("iso-8859-1")
    with _static_registry(tmp_path, public) as (proxy, server):
        server.route("/simple/latin/", 200, page, content_type="text/html; charset=ISO-8859-1")
        direct = f"{server.url}/simple/"
        assert pip_resolve(direct, ["latin==1.0"]) == {"latin": "1.0"}  # yanked, pinned
        assert uv_compile(direct, ["latin==1.0"]) == {"latin": "1.0"}
        r = proxy.get(f"/{PIN}/r/static/latin/", {"Accept": JSON})
        assert r.status == 200, r.body
        [entry] = json.loads(r.body)["files"]
        assert entry["yanked"] == "retir\u00e9e"
        through = f"{proxy.url}/{PIN}/r/static/"
        assert pip_resolve(through, ["latin==1.0"]) == {"latin": "1.0"}
        assert uv_compile(through, ["latin==1.0"]) == {"latin": "1.0"}
