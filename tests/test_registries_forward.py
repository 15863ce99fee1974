"""Forward mode for an extra registry with `intercept = true`: clients keep the registry's own
index URL and reach it through the proxy; datepin answers with the pinned view."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients import pip_resolve, uv_compile
from fakepypi import FakePyPI
from proxyproc import Proxy, write_config


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
