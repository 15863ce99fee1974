"""Extra registries end to end: `/<pin>/r/<name>/` with real pip and uv, HTML-only registries
(time = first seen), static credentials, and passthrough credentials that never leak."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import pytest
from click.testing import CliRunner

from clients import ClientError, pip_install, pip_resolve, uv_compile, uv_install
from fakepypi import TINY_BACKEND, FakePyPI, build_sdist, build_wheel
from proxyproc import Proxy, Response, fetch, write_config
from scripted import ScriptedServer

from datepin.cli import main

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


def test_a_private_file_this_datepin_never_listed_is_looked_up_with_the_clients_credentials(
    passthrough: Proxy, private: FakePyPI, token: str
) -> None:
    """A lock file made through another datepin names a private file this one never listed:
    it is looked up upstream with the asking client's credentials, and only they get it."""
    wheel = private.file("secretpkg-1.0-py3-none-any.whl")
    path = f"/files/private/{wheel.sha256}/{wheel.filename}"
    for headers in ({}, {"Authorization": basic(USER, "guess")}):
        refused = passthrough.get(path, headers)
        assert refused.status == 401 and refused.header("WWW-Authenticate"), refused.body
    got = passthrough.get(path, {"Authorization": basic(USER, token)})
    assert got.status == 200 and hashlib.sha256(got.body).hexdigest() == wheel.sha256
    assert passthrough.get(path).status == 401  # still nothing for a client without them
    other = f"/files/private/{'0' * 64}/{wheel.filename}"  # a name upstream lists, other bytes
    assert passthrough.get(other, {"Authorization": basic(USER, token)}).status == 404


@pytest.mark.parametrize("client", ["pip", "uv"])
def test_a_credential_refused_for_a_file_loses_access_to_the_stored_files(
    passthrough: Proxy, private: FakePyPI, token: str, tmp_path: Path, client: str
) -> None:
    """The registry revokes a client's token while datepin's acceptance of it is still
    fresh; datepin learns it when it fetches a file (not a page) with that token.  That
    refusal ends the token's access at once, as a page's does: the files datepin stored for
    it are not served to it, nor to anyone without credentials, until upstream accepts the
    client again."""
    private.add_wheel("secretpkg", "2.0", upload_time="2023-02-01T00:00:00Z", requires_dist=["beta"])
    install = pip_install if client == "pip" else uv_install
    extra = ["--extra-index-url", private_index(passthrough, token)]
    assert install(passthrough.index(PIN), ["secretpkg==1.0"], target_venv=tmp_path / "v1",
                   extra_args=extra) == {"secretpkg": "1.0", "beta": "1.0"}
    good = basic(USER, token)
    page = passthrough.get(f"/{PIN}/r/private/secretpkg/", {"Accept": JSON, "Authorization": good})
    [link] = [f["url"] for f in json.loads(page.body)["files"] if "-1.0-" in f["filename"]]
    assert fetch(link, headers={"Authorization": good}).status == 200  # stored

    private.require_basic = (USER, "rotated")  # the token is revoked upstream
    with pytest.raises(ClientError):  # 2.0 is not stored: fetched with the token, refused
        install(passthrough.index(PIN), ["secretpkg==2.0"], target_venv=tmp_path / "v2",
                extra_args=extra)
    for headers in ({"Authorization": good}, {}):
        denied = fetch(link, headers=headers)
        assert denied.status == 401, (headers, denied.status, denied.body[:80])
        assert denied.header("WWW-Authenticate") == 'Basic realm="datepin"'
    with pytest.raises(ClientError):  # 1.0 is stored, but no longer for this token
        install(passthrough.index(PIN), ["secretpkg==1.0"], target_venv=tmp_path / "v3",
                extra_args=extra)
    # The new token: upstream accepts it for the project, and the stored file is served.
    private.clear_log()
    again = fetch(link, headers={"Authorization": basic(USER, "rotated")})
    assert again.status == 200 and private.requests_for("/files/") == []


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


def test_a_throttled_access_check_passes_the_throttling_on_and_opens_nothing(
    passthrough: Proxy, private: FakePyPI, token: str
) -> None:
    """The registry answers a client's access check with 429: that client is told when to
    ask again (pip waits that long), not that the registry is broken, and gets nothing that
    datepin stored for another client."""
    good = {"Authorization": basic(USER, token)}
    page_path = f"/{PIN}/r/private/secretpkg/"
    link = file_link(passthrough.get(page_path, {"Accept": JSON, **good}))
    [wheel] = private.files("secretpkg")
    assert hashlib.sha256(fetch(link, headers=good).body).hexdigest() == wheel.sha256  # kept
    private.fault("/", "status", status=429, times=None, headers={"Retry-After": "7"})
    other = {"Authorization": basic("mallory", "x")}
    for got in (passthrough.get(page_path, {"Accept": JSON, **other}), fetch(link, headers=other)):
        assert got.status == 429, (got.status, got.body)
        assert 6 <= int(got.header("Retry-After") or "-1") <= 7, got.headers
        assert b"HTTP 429" in got.body and wheel.filename.encode() not in got.body, got.body
        assert hashlib.sha256(got.body).hexdigest() != wheel.sha256


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


@pytest.mark.parametrize("login", ["on another host", "on the registry's host"])
def test_a_static_registry_sending_datepin_to_log_in_is_an_upstream_failure(
    tmp_path: Path, public: FakePyPI, token: str, login: str
) -> None:
    """A registry behind a single sign-on front answers a project page, once datepin's token
    has expired there, with a redirect to a login page: HTML that answers 200 and lists no
    package.  That is upstream failing, not the project having no files; recorded, it would
    show every pin of that moment the project as empty, for good."""
    with FakePyPI() as corp, FakePyPI() as sso:
        corp.require_bearer = token
        corp.add_wheel("corpy", "1.0", upload_time="2023-01-01T00:00:00Z", requires_dist=["beta"])
        corp.add_wheel("later", "1.0", upload_time="2023-01-01T00:00:00Z")
        extra = (f'[[registry]]\nname = "corp"\nurl = "{corp.simple_url}"\n'
                 f'auth = "static"\nauth_env = "CORP_INDEX_TOKEN"\n')
        proxy = start_proxy(tmp_path, public, extra, env={**os.environ, "CORP_INDEX_TOKEN": token})
        try:
            assert proxy.get("/live/r/corp/corpy/").status == 200  # observed once, stored
            corp.send_to_login("/simple/", sso.login_url if login == "on another host" else None)
            live = proxy.get("/live/r/corp/corpy/", {"Accept": JSON})
            assert live.status == 200, live.body
            assert json.loads(live.body)["versions"] == ["1.0"]
            assert "answered from history" in live.header("Warning")
            never = proxy.get("/live/r/corp/later/")
            assert never.status == 502 and b"redirected to" in never.body, never.body
            during = now_pin()
            # corp's page for beta was never observed: a 502, which pip would ask again five
            # times over 8 s before going on without it.
            assert pip_resolve(proxy.index(during), ["corpy"], extra_args=[
                "--retries", "0", "--extra-index-url", f"{proxy.url}/{during}/r/corp/"]
            ) == {"corpy": "1.0", "beta": "1.0"}
            corp.clear_faults()
            # Upstream is back: the pin of the failure sees what the registry had then.
            idx = ["--extra-index-url", f"{proxy.url}/{during}/r/corp/"]
            assert uv_compile(proxy.index(during), ["corpy"], extra_args=idx) == {
                "corpy": "1.0", "beta": "1.0"}
            assert proxy.get(f"/{during}/r/corp/corpy/").header("Datepin-View") == "observed"
        finally:
            proxy.stop()


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


# What a registry (or the proxy repository in front of it) answers, 200 and unredirected, for
# a project page while it is not serving projects.
MAINTENANCE = (b'<html><body><h1>Down for maintenance</h1><a href="https://status.example.com">'
               b"status</a></body></html>")
EMPTY_LISTING = b"<html><head></head><body></body></html>"


def test_a_page_that_is_not_a_project_page_is_an_upstream_failure(
    tmp_path: Path, public: FakePyPI
) -> None:
    """Recorded, a maintenance page or an empty listing would be the project losing every
    file (for the pins of that moment, for good), or a project never seen having none (its
    files then first seen later: hidden for good from older pins)."""
    with FakePyPI() as html:
        html.serve_json = False
        html.add_wheel("alpha", "1.0", upload_time="2025-01-01T00:00:00Z")
        html.add_wheel("fresh", "1.0", upload_time="2025-01-01T00:00:00Z")
        extra = f'[[registry]]\nname = "html"\nurl = "{html.simple_url}"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            assert proxy.get("/live/r/html/alpha/").status == 200  # observed: files in history
            html.answer_with("/simple/alpha/", MAINTENANCE)
            html.answer_with("/simple/fresh/", EMPTY_LISTING)
            live = proxy.get("/live/r/html/alpha/", {"Accept": JSON})
            assert live.status == 200, live.body
            assert json.loads(live.body)["versions"] == ["1.0"]
            assert "answered from history" in live.header("Warning")
            never = proxy.get("/2023-11-18/r/html/fresh/")
            assert never.status == 502, never.body
            assert html.project_url("fresh").encode() in never.body
            assert b"not a project page" in never.body
            during = now_pin()
            html.clear_faults()
            assert proxy.get("/live/r/html/alpha/").status == 200  # upstream is back
            assert pip_resolve(f"{proxy.url}/{during}/r/html/", ["alpha"]) == {"alpha": "1.0"}
            assert uv_compile(f"{proxy.url}/2023-11-18/r/html/", ["fresh"]) == {"fresh": "1.0"}
        finally:
            proxy.stop()


def test_sdists_whose_version_follows_the_project_name_are_installable(
    tmp_path: Path, public: FakePyPI
) -> None:
    """`relpkg-1.0-rc1.tar.gz` is relpkg 1.0rc1 to pip and uv (the version is what follows
    the project's name), as an old sdist or a private index may name it."""
    with FakePyPI() as html:
        html.serve_json = False
        html.add_wheel("tinybackend", "2.0", upload_time="2025-01-01T00:00:00Z",
                       init_py=TINY_BACKEND)
        sdist = build_sdist("relpkg", "1.0rc1", build_backend="tinybackend",
                            build_requires=["tinybackend"])
        html.add_file("relpkg", "relpkg-1.0-rc1.tar.gz", sdist.content,
                      upload_time="2025-01-01T00:00:00Z", version="1.0rc1")
        extra = f'[[registry]]\nname = "html"\nurl = "{html.simple_url}"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            page = proxy.get("/live/r/html/relpkg/", {"Accept": JSON})
            assert page.status == 200, page.body
            files = json.loads(page.body)["files"]
            assert [f["filename"] for f in files] == ["relpkg-1.0-rc1.tar.gz"]
            index = f"{proxy.url}/live/r/html/"
            assert pip_resolve(index, ["relpkg==1.0rc1"]) == {"relpkg": "1.0rc1"}
            assert uv_compile(index, ["relpkg==1.0rc1"]) == {"relpkg": "1.0rc1"}
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


# -- a PyTorch-like index: HTML only, files on a CDN and under another path ------------------


def _torch_like_page(project: str, links: list[tuple[str, str, str | None]]) -> bytes:
    """PyTorch's page layout: `(href, filename, requires_python)` per file."""
    anchors = "".join(
        f'    <a href="{escape(href)}"'
        + (f' data-requires-python="{escape(rp)}"' if rp else "")
        + f" >{escape(name)}</a><br/>\n"
        for href, name, rp in links
    )
    return (f"<!DOCTYPE html>\n<html>\n  <body>\n    <h1>Links for {project}</h1>\n"
            f"{anchors}  </body>\n</html>\n").encode()


def test_a_pytorch_like_index_installs_beside_pinned_pypi(tmp_path: Path, public: FakePyPI) -> None:
    with FakePyPI() as cdn, ScriptedServer() as index:
        links = []
        for tag in ("cp312-cp312-win_amd64", "cp312-cp312-macosx_11_0_arm64", "py3-none-any"):
            f = cdn.add_wheel("torchy", "2.1.0+cu121", upload_time="2025-01-01T00:00:00Z",
                              tag=tag, requires_dist=["beta"], requires_python=">=3.8")
            links.append((f"{cdn.url}{f.path.replace('+', '%2B')}#sha256={f.sha256}", f.filename, ">=3.8"))
        # An older release under another path of the index's own host.
        old = build_wheel("torchy", "2.0.0+cu121", requires_dist=["beta"])
        quoted = "/whl/cu121/" + old.filename.replace("+", "%2B")
        index.route(quoted, 200, old.content, content_type="application/octet-stream")
        index.route("/whl/cu121/" + old.filename, 200, old.content, content_type="application/octet-stream")
        links.append((f"{quoted}#sha256={hashlib.sha256(old.content).hexdigest()}", old.filename, ">=3.8"))
        index.route("/whl/torchy/", 200, _torch_like_page("torchy", links), content_type="text/html")
        extra = f'[[registry]]\nname = "pytorch"\nurl = "{index.url}/whl/"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            page = proxy.get(f"/{PIN}/r/pytorch/torchy/", {"Accept": JSON})
            assert page.status == 200, page.body
            files = json.loads(page.body)["files"]
            assert sorted(f["filename"] for f in files) == sorted(name for _, name, _ in links)
            assert {f["requires-python"] for f in files} == {">=3.8"}
            torch_index = f"{proxy.url}/{PIN}/r/pytorch/"
            extra_args = ["--extra-index-url", torch_index]
            assert pip_install(proxy.index(PIN), ["torchy"], target_venv=tmp_path / "venv",
                               extra_args=extra_args) == {"torchy": "2.1.0+cu121", "beta": "1.0"}
            assert pip_resolve(proxy.index(PIN), ["torchy==2.0.0+cu121"], extra_args=extra_args) == {
                "torchy": "2.0.0+cu121", "beta": "1.0"}
            for strategy in ("first-index", "unsafe-best-match"):
                assert uv_compile(proxy.index(PIN), ["torchy"], extra_args=[
                    *extra_args, "--index-strategy", strategy]) == {"torchy": "2.1.0+cu121", "beta": "1.0"}
            assert uv_compile(proxy.index(PIN), ["torchy==2.0.0+cu121"], extra_args=[
                "--index", torch_index]) == {"torchy": "2.0.0+cu121", "beta": "1.0"}
        finally:
            proxy.stop()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_an_nvidia_like_index_whose_pages_redirect(tmp_path: Path, public: FakePyPI, status: int) -> None:
    wheel = build_wheel("nvidia-cudnn-cu12", "9.1.0.70", tag="py3-none-manylinux2014_x86_64")
    wheel_any = build_wheel("nvidia-cudnn-cu12", "9.0.0", requires_dist=["beta"])
    with ScriptedServer() as index, ScriptedServer() as other:
        # The name as the index spells it: underscores; the page's links are relative.
        links = [(f"../../files/{w.filename}#sha256={hashlib.sha256(w.content).hexdigest()}", w.filename, None)
                 for w in (wheel, wheel_any)]
        other.route("/pypi/nvidia_cudnn_cu12/", 200, _torch_like_page("nvidia-cudnn-cu12", links),
                    content_type="text/html")
        for w in (wheel, wheel_any):
            other.route(f"/files/{w.filename}", 200, w.content, content_type="application/octet-stream")
        index.route("/simple/nvidia-cudnn-cu12/", status, b"moved\n",
                    Location=f"{other.url}/pypi/nvidia_cudnn_cu12/")
        extra = f'[[registry]]\nname = "nvidia"\nurl = "{index.url}/simple/"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            page = proxy.get(f"/{PIN}/r/nvidia/nvidia_cudnn_cu12/", {"Accept": JSON})
            assert page.status == 301
            page = proxy.get(f"/{PIN}/r/nvidia/nvidia-cudnn-cu12/", {"Accept": JSON})
            assert page.status == 200, page.body
            assert len(json.loads(page.body)["files"]) == 2
            nv = ["--extra-index-url", f"{proxy.url}/{PIN}/r/nvidia/"]
            assert pip_resolve(proxy.index(PIN), ["nvidia_cudnn_cu12==9.0.0"], extra_args=nv) == {
                "nvidia-cudnn-cu12": "9.0.0", "beta": "1.0"}
            assert uv_compile(proxy.index(PIN), ["nvidia.cudnn.cu12==9.0.0"], extra_args=nv) == {
                "nvidia-cudnn-cu12": "9.0.0", "beta": "1.0"}
            [hit] = [f for f in json.loads(page.body)["files"] if f["filename"] == wheel.filename]
            got = fetch(hit["url"])
            assert got.status == 200 and got.body == wheel.content
        finally:
            proxy.stop()


def test_files_deleted_from_an_html_registry_still_install_at_the_old_pin(
    tmp_path: Path, public: FakePyPI
) -> None:
    """No hashes, no upload times (a plain directory listing): installed once, deleted
    upstream, seen gone; the old pin still installs it from the store, with pinned PyPI."""
    wheels = [build_wheel("listed", v, requires_dist=["beta"]) for v in ("1.0", "2.0")]

    def page(ws):
        return _torch_like_page("listed", [(w.filename, w.filename, None) for w in ws])

    with _static_registry(tmp_path, public) as (proxy, server):
        for w in wheels:
            server.route(f"/simple/listed/{w.filename}", 200, w.content, content_type="application/octet-stream")
        server.route("/simple/listed/", 200, page(wheels[:1]), content_type="text/html")
        assert proxy.get("/live/r/static/listed/").status == 200
        t1 = now_pin()
        idx = ["--extra-index-url", f"{proxy.url}/{t1}/r/static/"]
        assert pip_install(proxy.index(t1), ["listed"], target_venv=tmp_path / "v1", extra_args=idx) == {
            "listed": "1.0", "beta": "1.0"}
        # 1.0 goes away upstream, 2.0 arrives.
        server.route("/simple/listed/", 200, page(wheels[1:]), content_type="text/html")
        server.route(f"/simple/listed/{wheels[0].filename}", 404, b"gone\n")
        live = json.loads(proxy.get("/live/r/static/listed/", {"Accept": JSON}).body)
        assert live["versions"] == ["2.0"]
        t2 = now_pin()
        assert pip_install(proxy.index(t1), ["listed"], target_venv=tmp_path / "v2", extra_args=idx) == {
            "listed": "1.0", "beta": "1.0"}
        assert uv_compile(proxy.index(t1), ["listed"], extra_args=idx) == {"listed": "1.0", "beta": "1.0"}
        assert uv_install(proxy.index(t1), ["listed"], target_venv=tmp_path / "v3", extra_args=idx) == {
            "listed": "1.0", "beta": "1.0"}
        idx2 = ["--extra-index-url", f"{proxy.url}/{t2}/r/static/"]
        assert pip_resolve(proxy.index(t2), ["listed"], extra_args=idx2) == {"listed": "2.0", "beta": "1.0"}


@pytest.mark.parametrize("secret", ["tok-bearer-123", "bob:s3cret"])
def test_static_credentials_go_to_the_registry_host_only(
    tmp_path: Path, public: FakePyPI, secret: str
) -> None:
    expected = ("Bearer " + secret) if ":" not in secret else (
        "Basic " + base64.b64encode(secret.encode()).decode())
    local = build_wheel("corpy", "1.0", requires_dist=["beta"])
    with ScriptedServer() as index, FakePyPI() as cdn:
        remote = cdn.add_wheel("corpy", "2.0", upload_time="2023-01-01T00:00:00Z", requires_dist=["beta"])
        index.route(f"/files/{local.filename}", 200, local.content, content_type="application/octet-stream")
        links = [(f"/files/{local.filename}#sha256={hashlib.sha256(local.content).hexdigest()}", local.filename, None),
                 (f"{remote.url}#sha256={remote.sha256}", remote.filename, None)]
        index.route("/simple/corpy/", 200, _torch_like_page("corpy", links), content_type="text/html")
        extra = (f'[[registry]]\nname = "corp"\nurl = "{index.url}/simple/"\n'
                 f'auth = "static"\nauth_env = "CORP_SECRET"\n')
        proxy = start_proxy(tmp_path, public, extra, env={**os.environ, "CORP_SECRET": secret})
        try:
            idx = ["--extra-index-url", f"{proxy.url}/{PIN}/r/corp/"]
            assert pip_install(proxy.index(PIN), ["corpy"], target_venv=tmp_path / "v",
                               extra_args=idx) == {"corpy": "2.0", "beta": "1.0"}
            assert pip_install(proxy.index(PIN), ["corpy==1.0"], target_venv=tmp_path / "v1",
                               extra_args=idx) == {"corpy": "1.0", "beta": "1.0"}
            api = proxy.get(f"/{PIN}/r/corp/pypi/corpy/json")
            assert api.status == 200 and json.loads(api.body)["info"]["requires_dist"] == ["beta"]
        finally:
            proxy.stop()
        assert {"/simple/corpy/", f"/files/{local.filename}"} <= {r.path for r in index.requests}
        assert all(r.headers.get("Authorization") == expected for r in index.requests)
        assert cdn.requests and all("authorization" not in r.headers for r in cdn.requests)


# -- registries on object storage: expiring signed file URLs ---------------------------------


def _links(page: Response) -> dict[str, str]:
    return {f["filename"]: f["url"] for f in json.loads(page.body)["files"]}


@pytest.mark.parametrize("hash_name", ["sha256", "md5"])
def test_expiring_signed_links_change_nothing_and_cold_files_still_install(
    tmp_path: Path, public: FakePyPI, hash_name: str
) -> None:
    """Each page of a registry on S3 lists every file under a new presigned URL, valid for
    minutes.  Unchanged otherwise, the project has not changed: snapshots say so, the file
    keeps its link, and a pin fixed long ago (every signature it saw has expired) installs
    files not yet stored."""
    with FakePyPI() as s3:
        s3.serve_json = False
        s3.signed_links = True
        s3.html_hash = hash_name
        one = s3.add_wheel("signed", "1.0", upload_time="2025-01-01T00:00:00Z", requires_dist=["beta"])
        two = s3.add_wheel("signed", "2.0", upload_time="2025-01-02T00:00:00Z", requires_dist=["beta"])
        extra = f'[[registry]]\nname = "s3"\nurl = "{s3.simple_url}"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            links = _links(proxy.get("/live/r/s3/signed/", {"Accept": JSON}))
            pin = now_pin()
            for _ in range(2):  # two days of the snapshotter, upstream unchanged
                done = CliRunner().invoke(main, ["snapshot", "s3:signed", "--config", str(
                    tmp_path / "proxy.toml"), "--data-dir", str(tmp_path / "data")])
                assert done.stdout.startswith("observed 1, changed 0, files gone 0, files rescued 0"), done.stdout
            assert _links(proxy.get(f"/{pin}/r/s3/signed/", {"Accept": JSON})) == links
            s3.expire_signatures()
            s3.clear_log()
            # A client that does not retry gets a cold file at once (not a 502 first).
            cold = fetch(links[two.filename])
            assert cold.status == 200 and hashlib.sha256(cold.body).hexdigest() == two.sha256
            idx = ["--extra-index-url", f"{proxy.url}/{pin}/r/s3/"]
            assert uv_install(proxy.index(pin), ["signed==1.0"], target_venv=tmp_path / "uv",
                              extra_args=idx) == {"signed": "1.0", "beta": "1.0"}
            assert pip_install(proxy.index(pin), ["signed"], target_venv=tmp_path / "pip",
                               extra_args=idx) == {"signed": "2.0", "beta": "1.0"}
            assert {r.path for r in s3.requests_for("/files/") if r.status == 200} == {one.path, two.path}
            s3.clear_log()
            again = fetch(links[two.filename])  # stored: upstream's page is not asked for
            assert again.status == 200 and hashlib.sha256(again.body).hexdigest() == two.sha256
            assert s3.requests == []
        finally:
            proxy.stop()


def test_a_file_that_does_not_match_its_md5_is_not_kept(tmp_path: Path, public: FakePyPI) -> None:
    """An index that gives md5 alone (pypiserver, older Nexus): wrong bytes from upstream
    are caught by that hash, not stored, and the next request gets the file."""
    with FakePyPI() as pypiserver:
        pypiserver.serve_json = False
        pypiserver.relative_links = True
        pypiserver.html_hash = "md5"
        wheel = pypiserver.add_wheel("hashed", "1.0", upload_time="2025-01-01T00:00:00Z",
                                     requires_dist=["beta"], payload_size=300_000)
        extra = f'[[registry]]\nname = "md5"\nurl = "{pypiserver.simple_url}"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            [link] = _links(proxy.get(f"/{PIN}/r/md5/hashed/", {"Accept": JSON})).values()
            pypiserver.fault("/files/", "wrong_bytes", times=1)
            try:
                bad = fetch(link)
            except (OSError, http.client.HTTPException):  # cut: never the whole wrong file
                pass
            else:
                assert bad.status != 200 or bad.body == wheel.content
            again = fetch(link)
            assert again.status == 200 and hashlib.md5(again.body).hexdigest() == wheel.md5
            idx = ["--extra-index-url", f"{proxy.url}/{PIN}/r/md5/"]
            assert pip_install(proxy.index(PIN), ["hashed"], target_venv=tmp_path / "v",
                               extra_args=idx) == {"hashed": "1.0", "beta": "1.0"}
        finally:
            proxy.stop()


@pytest.mark.parametrize("auth", ["static", "passthrough"])
def test_a_registry_that_forwards_unknown_projects_to_pypi(
    tmp_path: Path, public: FakePyPI, auth: str
) -> None:
    """GitLab's package registry answers a project it does not hold with a redirect to
    pypi.org's page (request forwarding, on by default).  With credentials, that is not a
    login page: the project is not on this registry (404), and the client takes it from
    its pinned PyPI index, as it would take it from PyPI going straight to GitLab."""
    own = build_wheel("foo-bar", "1.0", requires_dist=["beta"])
    base = "/api/v4/projects/42/packages/pypi"
    with ScriptedServer() as gitlab:
        href = f"{base}/files/{own.filename}#sha256={hashlib.sha256(own.content).hexdigest()}"
        gitlab.route(f"{base}/simple/foo-bar/", 200, _torch_like_page("foo-bar", [(href, own.filename, None)]),
                     content_type="text/html")
        gitlab.route(f"{base}/files/{own.filename}", 200, own.content, content_type="application/octet-stream")
        gitlab.route(f"{base}/simple/beta/", 302, b"", Location=f"{public.url}/simple/beta/")
        extra = f'[[registry]]\nname = "gl"\nurl = "{gitlab.url}{base}/simple/"\nauth = "{auth}"\n'
        if auth == "static":
            extra += 'auth_env = "GL_TOKEN"\n'
        proxy = start_proxy(tmp_path, public, extra, env={**os.environ, "GL_TOKEN": "t0ken"})
        try:
            cred = f"{USER}:t0ken@" if auth == "passthrough" else ""
            index = f"http://{cred}127.0.0.1:{proxy.port}/{PIN}/r/gl/"
            page = proxy.get(f"/{PIN}/r/gl/beta/", {"Authorization": basic(USER, "t0ken")})
            assert page.status == 404, page.body
            assert proxy.get(f"/{PIN}/r/gl/foo-bar/", {"Authorization": basic(USER, "t0ken")}).status == 200
            idx = ["--extra-index-url", index]
            assert uv_compile(proxy.index(PIN), ["foo-bar"], extra_args=idx) == {"foo-bar": "1.0", "beta": "1.0"}
            assert pip_resolve(proxy.index(PIN), ["foo-bar"], extra_args=idx) == {"foo-bar": "1.0", "beta": "1.0"}
        finally:
            proxy.stop()


def _release(proxy: Proxy, path: str) -> tuple[object, object, object]:
    """Name, version and requirements of the JSON API answer at `path` (which must be a 200)."""
    r = proxy.get(path)
    assert r.status == 200, r.body
    info = json.loads(r.body)["info"]
    return info["name"], info["version"], info["requires_dist"]


@pytest.mark.parametrize("hash_name", ["md5", ""])
def test_json_api_reads_a_kept_file_of_a_registry_that_lists_no_sha256(
    tmp_path: Path, public: FakePyPI, hash_name: str
) -> None:
    """A file whose index gives no sha256 (pypiserver's md5, a directory listing's bare
    links) is kept under the sha256 datepin computed: the JSON API reads the release's info
    from it when upstream is down, as for any kept file (tests/test_pathmode.py)."""
    with FakePyPI() as pypiserver:
        pypiserver.serve_json = False
        pypiserver.html_hash = hash_name
        wheel = pypiserver.add_wheel("hashed", "1.0", upload_time="2025-01-01T00:00:00Z",
                                     requires_dist=["beta"])
        extra = f'[[registry]]\nname = "plain"\nurl = "{pypiserver.simple_url}"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            [link] = _links(proxy.get(f"/{PIN}/r/plain/hashed/", {"Accept": JSON})).values()
            assert fetch(link).body == wheel.content
            deadline = time.monotonic() + 10
            while b"datepin_files_fills_total 1" not in proxy.get("/-/metrics").body:
                assert time.monotonic() < deadline, "the file was never kept"
            pypiserver.fault("/", "status", status=500, times=None)
            assert _release(proxy, f"/{PIN}/r/plain/pypi/hashed/json") == ("hashed", "1.0", ["beta"])
        finally:
            proxy.stop()


def test_json_api_of_a_registry_whose_signed_links_expired(tmp_path: Path, public: FakePyPI) -> None:
    """The release's info is read from its wheel, fetched as a client's download is: under the
    URL upstream lists now, not the presigned one a fixed pin saw long ago (S3's 403)."""
    with FakePyPI() as s3:
        s3.serve_json = False
        s3.signed_links = True
        s3.add_wheel("signed", "1.0", upload_time="2025-01-01T00:00:00Z", requires_dist=["beta"])
        extra = f'[[registry]]\nname = "s3"\nurl = "{s3.simple_url}"\n'
        proxy = start_proxy(tmp_path, public, extra)
        try:
            assert proxy.get("/live/r/s3/signed/").status == 200
            pin = now_pin()
            s3.expire_signatures()
            assert _release(proxy, f"/{pin}/r/s3/pypi/signed/json") == ("signed", "1.0", ["beta"])
        finally:
            proxy.stop()
