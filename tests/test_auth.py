"""Registry credentials: config rules, static secrets, the access gate, the upstream check."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from datepin.auth import AccessGate, UpstreamAuth, authorization_header, same_origin
from datepin.config import Config, ConfigError, Registry, parse
from datepin.history import HistoryStore
from datepin.pins import Pin
from datepin.service import Index, NotObserved
from datepin.upstream import Upstream, UpstreamError, strip_userinfo
from fakepypi import FakePyPI


def run(make: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(make(), 30))


def registry_config(**entry: object) -> Config:
    return parse({"registry": [{"name": "corp", "url": "https://corp.example/simple/", **entry}]})


# -- config ------------------------------------------------------------------------------------


def test_registry_config_keys_and_defaults() -> None:
    [reg] = registry_config(auth="passthrough", access_ttl="2m", grace="10m").registries
    assert (reg.auth, reg.access_ttl, reg.grace) == ("passthrough", 120.0, 600.0)
    [reg] = registry_config().registries
    assert (reg.auth, reg.access_ttl, reg.grace, reg.intercept) == ("none", 300.0, 0.0, False)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"url": "https://u:secret@corp.example/simple/"}, "must not contain credentials"),
        ({"auth": "static"}, "auth_env"),
        ({"auth": "passthrough", "auth_env": "X"}, "only read with auth"),
        ({"auth": "basic"}, "not none, static or passthrough"),
        ({"auth": "passthrough", "grace": "soon"}, "grace"),
        # Read only for passthrough, as auth_env only for static: refused, not silently ignored.
        ({"access_ttl": "2m"}, 'access_ttl: only read with auth = "passthrough"'),
        ({"auth": "static", "auth_env": "X", "grace": "0s"}, 'grace: only read with auth = "passthrough"'),
    ],
)
def test_bad_registry_config_names_the_key(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        registry_config(**entry)
    assert "secret" not in str(e.value)


# -- static secrets ----------------------------------------------------------------------------


def test_authorization_header_basic_for_user_password_else_bearer() -> None:
    assert authorization_header("u:p:w") == "Basic " + base64.b64encode(b"u:p:w").decode()
    assert authorization_header("tok") == "Bearer tok"


def test_static_secret_read_at_startup_and_never_shown() -> None:
    cfg = registry_config(auth="static", auth_env="CORP_TOKEN")
    with pytest.raises(ConfigError, match="CORP_TOKEN is not set"):
        UpstreamAuth.from_environ(cfg.registries, {})
    auth = UpstreamAuth.from_environ(cfg.registries, {"CORP_TOKEN": "hunter2"})
    [reg] = cfg.registries
    assert auth.headers(reg, "https://corp.example/simple/x/") == {"Authorization": "Bearer hunter2"}
    assert "hunter2" not in repr(auth) and "hunter2" not in repr(cfg)


def test_credentials_go_only_to_the_registrys_own_origin() -> None:
    reg = Registry("corp", "https://corp.example/simple/", auth="passthrough",
                   json_url="https://api.corp.example/pypi/")
    auth = UpstreamAuth()
    assert auth.headers(reg, "https://corp.example:443/files/a.whl", "Bearer t") == {
        "Authorization": "Bearer t"
    }
    assert auth.headers(reg, "https://api.corp.example/pypi/x/json", "Bearer t")
    for elsewhere in ("https://cdn.example/a.whl", "http://corp.example/a.whl",
                      "https://corp.example:8443/a.whl"):
        assert not same_origin(elsewhere, reg)
        assert auth.headers(reg, elsewhere, "Bearer t") == {}
    assert auth.headers(Registry("open", "https://corp.example/simple/"), reg.url, "Bearer t") == {}


def test_strip_userinfo() -> None:
    assert strip_userinfo("https://u:p@h.example:8/x?y") == "https://h.example:8/x?y"
    assert strip_userinfo("https://h.example/x") == "https://h.example/x"


# -- the access gate ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gate_fresh_then_grace_then_forgotten() -> None:
    clock = Clock()
    gate = AccessGate(clock=clock)
    key = gate.key("Basic abc", "corp", "alpha")
    assert gate.state(key, ttl=300) is None
    gate.grant(key)
    assert gate.state(key, ttl=300, grace=600) == "fresh"
    clock.now += 301
    assert gate.state(key, ttl=300) is None
    assert gate.state(key, ttl=300, grace=600) == "grace"
    clock.now += 600
    assert gate.state(key, ttl=300, grace=600) is None


def test_gate_keys_differ_by_credentials_registry_project_and_process() -> None:
    gate = AccessGate()
    keys = {gate.key(a, r, p) for a in ("Basic a", "Basic b", None)
            for r in ("corp", "other") for p in ("alpha", "beta")}
    assert len(keys) == 12
    assert gate.key("Basic a", "corp", "alpha") != AccessGate().key("Basic a", "corp", "alpha")
    assert all(b"Basic" not in k for k in keys)


# -- the upstream check (Index.authorize) ------------------------------------------------------


@pytest.fixture
def private() -> FakePyPI:
    with FakePyPI() as fake:
        fake.require_basic = ("u", "good")
        fake.serve_json = False
        fake.add_wheel("alpha", "1.0", upload_time="2023-01-01T00:00:00Z")
        yield fake


GOOD = "Basic " + base64.b64encode(b"u:good").decode()
BAD = "Basic " + base64.b64encode(b"u:bad").decode()


def checked(private: FakePyPI, tmp_path: Path, grace: float,
            body: Callable[[Index, Registry, Clock], Awaitable[None]], *,
            live_ttl: float = Config.live_ttl) -> None:
    """Run `body` with an Index over a passthrough registry `corp` at the fake `private`."""
    reg = Registry("corp", private.simple_url, auth="passthrough", access_ttl=300, grace=grace)
    clock = Clock()

    async def go() -> None:
        upstream = Upstream(timeout=2)
        history = HistoryStore(tmp_path / "h.sqlite3")
        try:
            config = Config(registries=(reg,), live_ttl=live_ttl)
            index = Index(config, history, upstream, gate=AccessGate(clock=clock))
            await body(index, reg, clock)
        finally:
            await upstream.close()
            history.close()

    run(go)


def test_check_asks_upstream_once_per_ttl_and_records_the_page(private: FakePyPI, tmp_path: Path) -> None:
    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await asyncio.gather(*(index.authorize(reg, "alpha", GOOD) for _ in range(5)))
        assert len(private.requests_for("/simple/alpha/")) == 1  # concurrent checks shared
        assert index.history.last_observed("corp", "alpha") is not None
        await index.authorize(reg, "alpha", GOOD)
        assert len(private.requests_for("/simple/alpha/")) == 1
        for who in (BAD, None):
            with pytest.raises(UpstreamError) as e:
                await index.authorize(reg, "alpha", who)
            assert e.value.status == 401 and "good" not in str(e.value)
        with pytest.raises(NotObserved):
            await index.authorize(reg, "nope", GOOD)
        clock.now += 301
        await index.authorize(reg, "alpha", GOOD)
        assert [r.headers.get("authorization") for r in private.requests_for("/simple/alpha/")] == [
            GOOD, BAD, None, GOOD,
        ]

    checked(private, tmp_path, 0, body)


def test_check_fails_closed_when_upstream_is_down(private: FakePyPI, tmp_path: Path) -> None:
    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.authorize(reg, "alpha", GOOD)
        private.stop()
        await index.authorize(reg, "alpha", GOOD)  # still fresh: no need to ask
        clock.now += 301
        with pytest.raises(UpstreamError) as e:
            await index.authorize(reg, "alpha", GOOD)
        assert e.value.status == 502

    checked(private, tmp_path, 0, body)


def test_grace_keeps_accepted_credentials_while_upstream_is_down(
    private: FakePyPI, tmp_path: Path
) -> None:
    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.authorize(reg, "alpha", GOOD)
        private.fault("/simple/", "status", status=503, times=None)
        clock.now += 400
        await index.authorize(reg, "alpha", GOOD)  # within ttl + grace
        with pytest.raises(UpstreamError):
            await index.authorize(reg, "alpha", BAD)  # never accepted: no grace
        private.clear_faults()
        private.require_basic = ("u", "rotated")
        with pytest.raises(UpstreamError) as e:  # a refusal ends the grace at once
            await index.authorize(reg, "alpha", GOOD)
        assert e.value.status == 401
        private.fault("/simple/", "status", status=503, times=None)
        with pytest.raises(UpstreamError) as e:
            await index.authorize(reg, "alpha", GOOD)
        assert e.value.status == 503  # fails closed; the throttling status goes on

    checked(private, tmp_path, 600, body)


def test_a_redirect_to_a_login_page_on_another_host_is_no_acceptance(
    private: FakePyPI, tmp_path: Path
) -> None:
    """Registries behind a single sign-on front (oauth2-proxy, Cloudflare Access, IAP) answer
    a request without credentials with a redirect to a login page on another host, which
    answers 200 with an HTML page.  aiohttp follows it (dropping Authorization, as it must);
    that 200 is no acceptance of the client by the registry, and must not open the project's
    stored files to an anonymous client (nor be recorded as the project having no files)."""
    with FakePyPI() as sso:
        sso.serve_json = False  # a login form is HTML
        sso.add_wheel("unrelated", "1.0", upload_time="2023-01-01T00:00:00Z")
        login = sso.simple_url  # any complete HTML page that answers 200

        async def body(index: Index, reg: Registry, clock: Clock) -> None:
            await index.authorize(reg, "alpha", GOOD)  # alice: stored, observed
            private.fault("/simple/alpha/", "status", status=302, times=None,
                          headers={"Location": login})
            granted = True
            try:
                await index.authorize(reg, "alpha", None)  # anonymous, sent to log in
            except UpstreamError as e:
                granted = False
                assert e.status in (401, 403, 502)
            history = index.history.load("corp", "alpha")
            assert history is not None
            absent = [f.filename for f in history.files if f.states[-1].file is None]
            pin = Pin("2024-01-01", datetime(2024, 1, 1, tzinfo=UTC))
            seen = (await index.answer(reg, "alpha", pin)).view.files if granted else ()
            assert not granted, (
                f"anonymous client let in; it sees {[f.filename for f in seen]}, "
                f"and history now says {absent} went away upstream"
            )
            assert absent == []

        checked(private, tmp_path, 0, body)


def alpha_still_listed(index: Index) -> bool:
    """Whether history still has alpha's one file listed: nothing recorded it gone."""
    history = index.history.load("corp", "alpha")
    assert history is not None
    return [f.states[-1].file is not None for f in history.files] == [True]


def test_a_redirect_to_a_login_page_on_the_registrys_own_host_is_no_acceptance(
    private: FakePyPI, tmp_path: Path
) -> None:
    """The same with the login page on the registry's own host (a reverse proxy's sign-in
    path), which gets the credentials: a page reached by a redirect that lists no package
    is not the project's page, and no acceptance."""
    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.authorize(reg, "alpha", GOOD)
        private.send_to_login("/simple/alpha/")
        with pytest.raises(UpstreamError) as e:
            await index.authorize(reg, "alpha", None)
        assert e.value.status == 401 and "/login" in str(e.value)
        assert alpha_still_listed(index)

    checked(private, tmp_path, 0, body)


def test_a_redirect_to_a_page_of_the_index_that_lists_no_package_is_no_acceptance(
    private: FakePyPI, tmp_path: Path
) -> None:
    """The same with a page that is the index's own (a reverse proxy sending a client it
    does not know to the index's root): it lists no package, so it is not the project's."""
    root = (b'<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.0">'
            b'<title>Simple index</title></head><body><a href="/simple/alpha/">alpha</a>'
            b"</body></html>")

    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.authorize(reg, "alpha", GOOD)
        private.answer_with("/index/", root)
        private.fault("/simple/alpha/", "status", status=302, times=None,
                      headers={"Location": f"{private.url}/index/"})
        with pytest.raises(UpstreamError) as e:
            await index.authorize(reg, "alpha", None)
        assert e.value.status == 401 and "lists no package" in str(e.value)
        assert alpha_still_listed(index)

    checked(private, tmp_path, 0, body)


def test_a_look_up_for_a_file_asks_the_clients_own_credentials_first(
    private: FakePyPI, tmp_path: Path
) -> None:
    """A file URL no page listed (a lock made through another datepin) has its project looked
    up; a client upstream does not accept is refused there, also when the project was just
    observed for another: whether datepin has a file is not told to it (401, not 404)."""
    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.look_up(reg, "alpha", GOOD)
        assert index.history.last_observed("corp", "alpha") is not None
        for who in (None, BAD):
            with pytest.raises(UpstreamError) as e:
                await index.look_up(reg, "alpha", who)
            assert e.value.status == 401

    checked(private, tmp_path, 0, body, live_ttl=600)


def test_a_metadata_file_refused_to_a_credential_ends_its_access(
    private: FakePyPI, tmp_path: Path
) -> None:
    """The JSON API reads a release's `.metadata` file upstream with the client's own
    credentials: a refusal there ends their access (and its grace) as a refused page does."""
    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.authorize(reg, "alpha", GOOD)
        answer = await index.answer(reg, "alpha", Pin("live", None), authorization=GOOD)
        private.require_basic = ("u", "rotated")  # the token is revoked upstream
        with pytest.raises(UpstreamError) as e:
            await index.release_info(reg, answer.view, "1.0", authorization=GOOD)
        assert e.value.status == 401
        key = index.gate.key(GOOD, "corp", "alpha")
        assert index.gate.state(key, ttl=300, grace=600) is None

    checked(private, tmp_path, 600, body)


def test_a_credential_upstream_refuses_while_observing_loses_access_at_once(
    private: FakePyPI, tmp_path: Path
) -> None:
    """Upstream refusing a client's credentials ends its access whichever request saw the
    refusal: the access check, or the observation a live request makes with them."""
    live = Pin("live", None)

    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.authorize(reg, "alpha", GOOD)
        private.require_basic = ("u", "rotated")  # the token is revoked upstream
        await index.authorize(reg, "alpha", GOOD)  # fresh: not asked again
        with pytest.raises(UpstreamError) as e:
            await index.answer(reg, "alpha", live, authorization=GOOD)
        assert e.value.status == 401  # upstream refused it, and the client was told so
        refused_at_once = True
        try:
            await index.authorize(reg, "alpha", GOOD)
        except UpstreamError:
            pass
        else:
            refused_at_once = False
        # Later, the registry is down: a refused credential has no grace either.
        private.fault("/simple/", "status", status=503, times=None)
        clock.now += 400
        graced = True
        try:
            await index.authorize(reg, "alpha", GOOD)
        except UpstreamError:
            graced = False
        assert (refused_at_once, graced) == (True, False)

    checked(private, tmp_path, 600, body, live_ttl=0)


def test_a_passthrough_registry_is_asked_for_whole_pages(private: FakePyPI, tmp_path: Path) -> None:
    """Its page is what says upstream accepted the client's credentials: never asked with the
    ETag of the page history has, which a cache before the registry could answer with 304."""
    live = Pin("live", None)

    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.authorize(reg, "alpha", GOOD)
        for _ in range(2):
            answer = await index.answer(reg, "alpha", live, authorization=GOOD)
            assert answer.view is not None and answer.view.files
        asked = private.requests_for("/simple/alpha/")
        assert [(r.status, "if-none-match" in r.headers) for r in asked] == [(200, False)] * 3

    checked(private, tmp_path, 0, body, live_ttl=0)


def test_a_client_is_not_refused_for_another_clients_credentials(
    private: FakePyPI, tmp_path: Path
) -> None:
    """Two clients accepted for a project ask for its live page at once; upstream has since
    revoked the first one's token.  The second must not get the first one's 401."""
    other = "Basic " + base64.b64encode(b"u:other").decode()

    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.authorize(reg, "alpha", GOOD)
        private.require_basic = ("u", "other")  # GOOD revoked, OTHER valid
        await index.authorize(reg, "alpha", other)
        private.fault("/simple/alpha/", "stall", seconds=0.5, times=1)
        live = Pin("live", None)
        first = asyncio.create_task(index.answer(reg, "alpha", live, authorization=GOOD))
        await asyncio.sleep(0.1)  # GOOD's observation is under way
        second = await asyncio.gather(
            index.answer(reg, "alpha", live, authorization=other), return_exceptions=True
        )
        await asyncio.gather(first, return_exceptions=True)
        assert not isinstance(second[0], Exception), f"OTHER refused: {second[0]}"

    checked(private, tmp_path, 0, body, live_ttl=0)


def test_a_project_upstream_stops_showing_a_credential_gets_no_grace(
    private: FakePyPI, tmp_path: Path
) -> None:
    """Registries that hide private projects answer 404 to credentials without access
    (GitLab, GitHub).  A 404 to a once-accepted credential ends its access like a 401 does:
    no grace when upstream is down later."""
    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.authorize(reg, "alpha", GOOD)
        clock.now += 301  # past access_ttl: the next request asks upstream again
        private.fault("/simple/alpha/", "status", status=404, times=1)
        with pytest.raises(NotObserved):
            await index.authorize(reg, "alpha", GOOD)
        private.fault("/simple/", "status", status=503, times=None)
        with pytest.raises(UpstreamError) as e:  # within ttl + grace of the old grant
            await index.authorize(reg, "alpha", GOOD)
        assert e.value.status == 503  # fails closed; the throttling status goes on

    checked(private, tmp_path, 600, body)


def test_a_project_hidden_from_one_credential_is_not_recorded_as_removed(
    private: FakePyPI, tmp_path: Path
) -> None:
    """Registries that hide private projects answer 404 to credentials without access
    (GitLab, GitHub).  A client accepted a minute ago whose access has just been taken away
    asks for the live page: that 404 says nothing about the project, only about the client.
    Recorded, it would mark every file gone for every client (and for every pin after it)."""
    other = "Basic " + base64.b64encode(b"v:other").decode()
    pin = Pin("live", None)

    async def body(index: Index, reg: Registry, clock: Clock) -> None:
        await index.authorize(reg, "alpha", GOOD)  # observed: one file
        private.fault("/simple/alpha/", "status", status=404, times=2)  # GOOD loses access
        with pytest.raises(NotObserved):
            await index.answer(reg, "alpha", pin, authorization=GOOD)
        with pytest.raises(NotObserved):  # and its acceptance with it
            await index.authorize(reg, "alpha", GOOD)
        loaded = index.history.load("corp", "alpha")
        assert loaded is not None
        assert [f.states[-1].file is not None for f in loaded.files] == [True]
        # Another client upstream still accepts sees the project's file.
        private.require_basic = ("v", "other")
        await index.authorize(reg, "alpha", other)
        private.fault("/simple/", "status", status=503, times=None)
        answer = await index.answer(reg, "alpha", pin, authorization=other)
        assert [f.filename for f in answer.view.files] == ["alpha-1.0-py3-none-any.whl"]

    checked(private, tmp_path, 0, body, live_ttl=0)
