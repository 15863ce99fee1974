"""Reaching upstream through an egress proxy (`upstream_proxy`): every request datepin makes
goes through it with its credentials, a registry can go direct or through another, and wrong
settings or a refusing proxy are reported by name."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients import pip_install, uv_install
from egress import EgressProxy
from fakepypi import FakePyPI
from proxyproc import Proxy, write_config

from datepin.auth import UpstreamAuth, egress_routes
from datepin.config import ConfigError, parse, resolve
from datepin.pins import Pin
from datepin.runtime import runtime

PIN = "2024-01-01"
SECRET = "s3cr3t-" + "e" * 8
CREDENTIALS = f"builds:{SECRET}"
REQUIRED = "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()
JSON = "application/vnd.pypi.simple.v1+json"


@pytest.fixture
def upstream(fake_pypi: FakePyPI) -> FakePyPI:
    fake_pypi.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta"])
    fake_pypi.add_wheel("beta", "1.0", upload_time="2023-01-01T10:00:00Z")
    return fake_pypi


@pytest.fixture
def egress() -> Iterator[EgressProxy]:
    with EgressProxy(require=REQUIRED) as proxy:
        yield proxy


def start(tmp_path: Path, upstream: FakePyPI, extra: str = "", env: dict[str, str] | None = None,
          **server: object) -> Proxy:
    config = write_config(
        tmp_path / "proxy.toml", simple_url=upstream.simple_url, json_url=upstream.json_url,
        files_url=upstream.files_url, upstream_timeout="5s", live_ttl="0s", extra=extra, **server,
    )
    return Proxy(data_dir=tmp_path / "data", config=config, env=env).start()


def with_credentials(value: str = CREDENTIALS) -> dict[str, str]:
    return {**os.environ, "EGRESS_AUTH": value}


def test_pip_and_uv_reach_upstream_only_through_the_egress_proxy(
    tmp_path: Path, upstream: FakePyPI, egress: EgressProxy
) -> None:
    proxy = start(tmp_path, upstream, env=with_credentials(),
                  upstream_proxy=egress.url, upstream_proxy_auth_env="EGRESS_AUTH")
    try:
        index = proxy.index(PIN)
        assert pip_install(index, ["alpha"], target_venv=tmp_path / "pip") == {"alpha": "1.0", "beta": "1.0"}
        assert uv_install(index, ["alpha"], target_venv=tmp_path / "uv") == {"alpha": "1.0", "beta": "1.0"}
        seen = upstream.requests_for("/")
        assert upstream.requests_for("/simple/") and upstream.requests_for("/files/")
        # Pages, .metadata files and wheels: each one came through the proxy, which was
        # asked with datepin's credentials and kept them to itself.
        assert all(r.headers.get("x-egress") == egress.token for r in seen), seen
        assert not any("proxy-authorization" in r.headers for r in seen)
        through = egress.requests
        assert len(through) == len(seen)
        assert all(r.proxy_authorization == REQUIRED and r.status == 200 for r in through), through
        # The files it fetched were kept: upstream is not asked again.
        upstream.clear_log()
        assert uv_install(index, ["alpha"], target_venv=tmp_path / "again") == {"alpha": "1.0", "beta": "1.0"}
        assert upstream.requests_for("/") == [] and len(egress.requests) == len(through)
        assert not any(SECRET in line for line in proxy.log)
    finally:
        proxy.stop()


def test_a_registry_goes_direct_or_through_its_own_proxy(
    tmp_path: Path, upstream: FakePyPI, egress: EgressProxy
) -> None:
    with FakePyPI() as corp, FakePyPI() as other, EgressProxy() as other_egress:
        corp.add_wheel("gamma", "1.0", upload_time="2023-01-01T10:00:00Z")
        other.add_wheel("delta", "1.0", upload_time="2023-01-01T10:00:00Z")
        extra = (
            f'[[registry]]\nname = "corp"\nurl = "{corp.simple_url}"\nupstream_proxy = ""\n'
            f'[[registry]]\nname = "other"\nurl = "{other.simple_url}"\n'
            f'upstream_proxy = "{other_egress.url}"\n'
        )
        proxy = start(tmp_path, upstream, extra, env=with_credentials(),
                      upstream_proxy=egress.url, upstream_proxy_auth_env="EGRESS_AUTH")
        try:
            corp_index = f"{proxy.url}/{PIN}/r/corp/"
            installed = uv_install(proxy.index(PIN), ["alpha", "gamma"], target_venv=tmp_path / "venv",
                                   extra_args=["--extra-index-url", corp_index])
            assert installed == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
            assert corp.requests_for("/simple/gamma/") and corp.requests_for("/files/")
            assert not any("x-egress" in r.headers for r in corp.requests_for("/"))
            assert all(str(corp.port) not in r.target for r in egress.requests)
            assert all(r.headers.get("x-egress") == egress.token for r in upstream.requests_for("/"))
            # Another proxy, without credentials: neither the [server] proxy nor its secret.
            page = proxy.get(f"/{PIN}/r/other/delta/", headers={"Accept": JSON})
            assert page.status == 200, page.body
            [entry] = json.loads(page.body)["files"]
            wheel = proxy.get(entry["url"].removeprefix(proxy.url))
            assert wheel.status == 200 and wheel.body == other.file(entry["filename"]).read()
            assert [r.path for r in other.requests_for("/") if r.headers.get("x-egress") == other_egress.token]
            assert all(r.headers.get("x-egress") == other_egress.token for r in other.requests_for("/"))
            assert {r.proxy_authorization for r in other_egress.requests} == {None}
            assert all(str(other.port) not in r.target for r in egress.requests)
        finally:
            proxy.stop()


def test_a_proxy_that_refuses_datepin_gets_a_502_naming_the_cause(
    tmp_path: Path, upstream: FakePyPI, egress: EgressProxy
) -> None:
    # No credentials configured: the proxy asks for some, for a plain-HTTP request and for
    # the CONNECT of an https:// registry's.
    extra = '[[registry]]\nname = "secure"\nurl = "https://127.0.0.1:9/simple/"\n'
    proxy = start(tmp_path, upstream, extra, upstream_proxy=egress.url)
    try:
        for path in (f"/{PIN}/simple/alpha/", f"/{PIN}/r/secure/alpha/"):
            answer = proxy.get(path)
            assert answer.status == 502
            text = answer.body.decode()
            assert f"upstream proxy {egress.url}" in text and "407" in text, text
            assert "[server] upstream_proxy_auth_env" in text, text
        assert [r.method for r in egress.requests] == ["GET", "CONNECT"]
    finally:
        proxy.stop()
    # Credentials it accepts for the page, then no longer (rotated): the file says so.
    proxy = start(tmp_path, upstream, env=with_credentials(),
                  upstream_proxy=egress.url, upstream_proxy_auth_env="EGRESS_AUTH")
    try:
        page = proxy.get(f"/{PIN}/simple/beta/", headers={"Accept": JSON})
        assert page.status == 200, page.body
        [entry] = json.loads(page.body)["files"]
        egress.require = "Basic " + base64.b64encode(b"builds:rotated").decode()
        wheel = proxy.get(entry["url"].removeprefix(proxy.url))
        assert wheel.status == 502
        text = wheel.body.decode()
        assert "refused datepin's credentials" in text and "407" in text, text
        assert SECRET not in text and not any(SECRET in line for line in proxy.log)
    finally:
        proxy.stop()


def test_an_unreachable_proxy_is_named_in_the_502(tmp_path: Path, upstream: FakePyPI) -> None:
    with EgressProxy() as gone:
        url = gone.url  # a port nobody listens on once it is closed
    proxy = start(tmp_path, upstream, upstream_proxy=url)
    try:
        answer = proxy.get(f"/{PIN}/simple/alpha/")
        assert answer.status == 502
        assert f"upstream proxy {url} ([server] upstream_proxy): cannot connect" in answer.body.decode()
    finally:
        proxy.stop()


def test_snapshots_and_rescues_go_through_the_proxy_too(
    tmp_path: Path, upstream: FakePyPI, egress: EgressProxy
) -> None:
    upstream.add_wheel("beta", "2.0", upload_time="2023-06-01T10:00:00Z")
    gone = upstream.file("beta-1.0-py3-none-any.whl")
    config = parse({
        "server": {"data_dir": str(tmp_path / "data"), "live_ttl": "0s", "upstream_proxy": egress.url,
                   "upstream_proxy_auth_env": "EGRESS_AUTH"},
        "pypi": {"simple_url": upstream.simple_url, "json_url": upstream.json_url,
                 "files_url": upstream.files_url},
    })

    async def main() -> None:
        async with runtime(config, environ={"EGRESS_AUTH": CREDENTIALS}) as rt:
            await rt.index.answer(rt.config.pypi, "beta", Pin("live", None))
            upstream.keep_serving_deleted_files = True
            upstream.delete(gone.filename)
            await rt.index.answer(rt.config.pypi, "beta", Pin("live", None))  # sees it go: rescues it
            await rt.index.drain()
            assert rt.store.has(gone.sha256) and rt.store.is_irreplaceable(gone.sha256)

    asyncio.run(asyncio.wait_for(main(), 30))
    seen = upstream.requests_for("/")
    assert upstream.requests_for("/files/"), seen
    assert all(r.headers.get("x-egress") == egress.token for r in seen), seen
    assert all(r.proxy_authorization == REQUIRED for r in egress.requests)


# -- settings ------------------------------------------------------------------------------


CORP = {"name": "corp", "url": "https://corp.test/simple/"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"server": {"upstream_proxy": "ftp://proxy.test:21"}}, "[server] upstream_proxy: "),
        ({"server": {"upstream_proxy": "proxy.test:3128"}}, "[server] upstream_proxy: "),
        ({"server": {"upstream_proxy": "http://proxy.test:3128/path"}}, "[server] upstream_proxy: "),
        ({"server": {"upstream_proxy": "http://proxy.test:99999"}}, "[server] upstream_proxy: "),
        ({"server": {"upstream_proxy": 3128}}, "[server] upstream_proxy: "),
        ({"server": {"upstream_proxy": f"http://builds:{SECRET}@proxy.test:3128"}},
         "[server] upstream_proxy: must not contain credentials"),
        ({"server": {"upstream_proxy_auth_env": "EGRESS_AUTH"}},
         "[server] upstream_proxy_auth_env: only read with upstream_proxy"),
        ({"server": {"upstream_proxy": "http://proxy.test:3128", "upstream_proxy_auth_env": "A B"}},
         "[server] upstream_proxy_auth_env: "),
        ({"registry": [{**CORP, "upstream_proxy": "socks5://proxy.test:1080"}]},
         "[[registry]] corp upstream_proxy: "),
        ({"registry": [{**CORP, "upstream_proxy": f"https://u:{SECRET}@proxy.test"}]},
         "[[registry]] corp upstream_proxy: must not contain credentials"),
        ({"registry": [{**CORP, "upstream_proxy": "", "upstream_proxy_auth_env": "EGRESS_AUTH"}]},
         "[[registry]] corp upstream_proxy_auth_env: "),
        ({"server": {"upstream_proxy": "http://proxy.test:3128"},
          "registry": [{**CORP, "upstream_proxy_auth_env": "EGRESS_AUTH"}]},
         "[[registry]] corp upstream_proxy_auth_env: "),
    ],
)
def test_bad_proxy_settings_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(doc, source="proxy.toml")
    assert str(e.value).startswith("proxy.toml: " + message), str(e.value)
    assert SECRET not in str(e.value)


def test_proxy_settings_and_who_uses_them() -> None:
    cfg = parse({
        "server": {"upstream_proxy": "HTTP://Proxy.Test:3128/", "upstream_proxy_auth_env": "EGRESS_AUTH"},
        "registry": [
            {**CORP, "upstream_proxy": ""},
            {"name": "mirror", "url": "https://mirror.test/simple/"},
            {"name": "inner", "url": "https://inner.test/simple/",
             "upstream_proxy": "https://inner-proxy.test", "upstream_proxy_auth_env": "INNER_AUTH"},
        ],
    })
    assert cfg.upstream_proxy == "http://proxy.test:3128"
    corp, mirror, inner = cfg.registries
    assert cfg.egress(cfg.pypi) == ("http://proxy.test:3128", "EGRESS_AUTH", "[server] upstream_proxy")
    assert cfg.egress(corp) is None
    assert cfg.egress(mirror) == cfg.egress(cfg.pypi)
    assert cfg.egress(inner) == (
        "https://inner-proxy.test:443", "INNER_AUTH", "[[registry]] inner upstream_proxy"
    )
    with pytest.raises(ConfigError, match=r"^\[server\] upstream_proxy_auth_env: environment variable EGRESS_AUTH"):
        egress_routes(cfg, {"INNER_AUTH": "i:j"})
    with pytest.raises(ConfigError, match=r"^\[\[registry\]\] inner upstream_proxy_auth_env: .*INNER_AUTH"):
        egress_routes(cfg, {"EGRESS_AUTH": CREDENTIALS})
    routes = egress_routes(cfg, {"EGRESS_AUTH": CREDENTIALS, "INNER_AUTH": "i:j"})
    auth = UpstreamAuth(egress=routes)
    assert auth.via(corp) is None
    pypi_via = auth.via(cfg.pypi)
    assert pypi_via is not None and pypi_via.authorization == REQUIRED
    assert SECRET not in repr(auth) and SECRET not in repr(pypi_via)


@pytest.mark.parametrize(
    ("listen", "proxy_url", "flag"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080", None),
        ("127.0.0.1:8080", "http://localhost:8080", None),
        ("0.0.0.0:3128", "http://127.0.0.1:3128", None),
        ("127.0.0.1:9000", "http://127.0.0.1:3128", "127.0.0.1:3128"),  # the flag wins
    ],
)
def test_a_proxy_at_datepins_own_address_is_refused(
    tmp_path: Path, listen: str, proxy_url: str, flag: str | None
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(f'[server]\nlisten = "{listen}"\nupstream_proxy = "{proxy_url}"\n')
    with pytest.raises(ConfigError, match=r"\[server\] upstream_proxy: .* datepin's own listen address"):
        resolve(config, listen=flag, environ={})


def test_a_proxy_elsewhere_is_not_a_loop(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:8080"\nupstream_proxy = "http://127.0.0.1:8080"\n')
    assert resolve(config, listen="127.0.0.1:8081", environ={}).upstream_proxy == "http://127.0.0.1:8080"


def test_serve_refuses_a_missing_proxy_secret_and_its_own_address(tmp_path: Path) -> None:
    def serve(body: str) -> subprocess.CompletedProcess[str]:
        config = tmp_path / "proxy.toml"
        config.write_text(body)
        env = {k: v for k, v in os.environ.items() if k not in ("DATEPIN_CONFIG", "EGRESS_AUTH")}
        return subprocess.run(
            [sys.executable, "-m", "datepin", "serve", "--config", str(config),
             "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:3128"],
            capture_output=True, text=True, timeout=60, env=env,
        )

    missing = serve('[server]\nupstream_proxy = "http://proxy.test:3128"\nupstream_proxy_auth_env = "EGRESS_AUTH"\n')
    assert missing.returncode != 0 and "Traceback" not in missing.stderr, missing.stderr
    assert "[server] upstream_proxy_auth_env: environment variable EGRESS_AUTH is not set" in missing.stderr
    looping = serve('[server]\nupstream_proxy = "http://localhost:3128"\n')
    assert looping.returncode != 0 and "Traceback" not in looping.stderr, looping.stderr
    assert "[server] upstream_proxy: http://localhost:3128 is datepin's own listen address" in looping.stderr
