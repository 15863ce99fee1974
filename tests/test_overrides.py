"""Per-project overrides in a pin (`2018-06-01,tinybackend=live`): an old pin whose sdists need
a newer build backend than the pin shows.  pip and uv build an sdist in an isolated
environment, installing its build requirements from the same index at the same pin."""

from __future__ import annotations

import json

import pytest

from clients import ClientError, pip_install, run, uv_install, venv_python
from fakepypi import FakePyPI, add_old_sdists
from proxyproc import write_config

JSON = "application/vnd.pypi.simple.v1+json"
BASE = "2018-06-01"


@pytest.fixture
def graph(fake_pypi: FakePyPI) -> FakePyPI:
    """`oldpkg` 1.0, an sdist only (March 2018), builds with `tinybackend>=2`; tinybackend
    1.0 came out in January 2018, 2.0 in January 2024 (add_old_sdists)."""
    return add_old_sdists(fake_pypi)


@pytest.fixture
def proxy_config(tmp_path, fake_pypi):
    """The fake upstream as PyPI and, once more, as an extra registry named `mirror`."""
    return write_config(
        tmp_path / "proxy.toml", simple_url=fake_pypi.simple_url, json_url=fake_pypi.json_url,
        files_url=fake_pypi.files_url, upstream_timeout="5s", live_ttl="0s",
        extra=f'[[registry]]\nname = "mirror"\nurl = "{fake_pypi.simple_url}"\n',
    )


def imported_version(venv) -> str:
    return run([str(venv_python(venv)), "-c", "import oldpkg; print(oldpkg.__version__)"]).stdout


def test_pip_builds_an_old_sdist_with_the_backend_an_override_lets_through(graph, proxy, tmp_path):
    with pytest.raises(ClientError) as failed:
        pip_install(proxy.index(BASE), ["oldpkg"], target_venv=tmp_path / "base")
    assert "tinybackend>=2" in failed.value.stdout + failed.value.stderr

    index = proxy.index(f"{BASE},tinybackend=live")
    assert pip_install(index, ["oldpkg"], target_venv=tmp_path / "venv") == {"oldpkg": "1.0"}
    assert imported_version(tmp_path / "venv") == "1.0\n"


def test_uv_builds_an_old_sdist_with_the_backend_an_override_lets_through(graph, proxy, tmp_path):
    with pytest.raises(ClientError) as failed:
        uv_install(proxy.index(BASE), ["oldpkg"], target_venv=tmp_path / "base")
    assert "tinybackend>=2" in failed.value.stderr

    index = proxy.index(f"{BASE},tinybackend=2024-06-01")
    assert uv_install(index, ["oldpkg"], target_venv=tmp_path / "venv") == {"oldpkg": "1.0"}
    assert imported_version(tmp_path / "venv") == "1.0\n"


def test_an_overridden_project_is_answered_at_its_own_pin_and_says_so(graph, proxy):
    pin = f"{BASE},TinyBackend=2024-06-01"
    # The base pin's page first: a fixed view, kept in memory under its cutoff.
    base = proxy.get(f"/{BASE}/simple/tinybackend/", {"Accept": JSON})
    assert json.loads(base.body)["versions"] == ["1.0"]

    page = proxy.get(f"/{pin}/simple/tinybackend/", {"Accept": JSON})
    assert page.status == 200 and json.loads(page.body)["versions"] == ["1.0", "2.0"]
    assert page.header("Datepin-Pin") == f"{BASE},tinybackend=2024-06-01"
    assert page.header("Datepin-Cutoff") == "2024-06-01T00:00:00Z"
    assert page.header("Datepin-View") == "reconstructed"
    assert "2024-06-01T00:00:00Z" in page.header("ETag") and page.header("ETag") != base.header("ETag")
    assert page.header("Cache-Control") == "max-age=600, public"

    other = proxy.get(f"/{pin}/simple/oldpkg/", {"Accept": JSON})
    assert other.status == 200 and other.header("Datepin-Pin") == f"{BASE},tinybackend=2024-06-01"
    assert other.header("Datepin-Cutoff") == "2018-06-01T00:00:00Z"
    assert other.header("Datepin-View") == "reconstructed"
    root = proxy.get(f"/{pin}/simple/", {"Accept": JSON})
    assert root.header("Datepin-Cutoff") == "2018-06-01T00:00:00Z"

    # The base pin's page is still the base pin's (kept under the other cutoff).
    assert proxy.get(f"/{BASE}/simple/tinybackend/", {"Accept": JSON}).body == base.body

    api = proxy.get(f"/{pin}/pypi/tinybackend/json")
    assert api.status == 200 and json.loads(api.body)["info"]["version"] == "2.0"
    assert api.header("Datepin-Cutoff") == "2024-06-01T00:00:00Z"
    registry = proxy.get(f"/{pin}/r/mirror/tinybackend/", {"Accept": JSON})
    assert json.loads(registry.body)["versions"] == ["1.0", "2.0"]
    assert registry.header("Datepin-Cutoff") == "2024-06-01T00:00:00Z"


def test_an_override_to_live_makes_that_project_live(graph, proxy):
    page = proxy.get(f"/{BASE},tinybackend=live/simple/tinybackend/", {"Accept": JSON})
    assert json.loads(page.body)["versions"] == ["1.0", "2.0"]
    assert page.header("Datepin-Pin") == f"{BASE},tinybackend=live"
    assert page.header("Datepin-Cutoff") is None
    assert page.header("Datepin-View") == "live"
    assert page.header("Cache-Control") == "max-age=60, public"
    assert page.header("ETag").endswith('-live"')


def test_overrides_in_urls_percent_encoded_or_redirected(graph, proxy):
    encoded = proxy.get(f"/{BASE}%2Ctinybackend%3Dlive/simple/tinybackend/", {"Accept": JSON})
    assert encoded.status == 200 and json.loads(encoded.body)["versions"] == ["1.0", "2.0"]
    assert encoded.header("Datepin-Pin") == f"{BASE},tinybackend=live"
    moved = proxy.get(f"/{BASE},tinybackend=live/simple/TinyBackend/")
    assert moved.status == 301
    assert moved.header("Location") == f"/{BASE},tinybackend=live/simple/tinybackend/"


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        (f"{BASE},tinybackend=live,TinyBackend=live", b"names tinybackend twice"),
        (f"{BASE},", b"empty part"),
        (BASE + "".join(f",p{i}=live" for i in range(33)), b"33 overrides, at most 32"),
        (f"{BASE},tinybackend=2999-01-01", b"in the future"),
    ],
)
def test_a_malformed_override_is_a_400_showing_the_form(graph, proxy, pin, reason):
    page = proxy.get(f"/{pin}/simple/tinybackend/")
    assert page.status == 400 and reason in page.body
    assert b"<pin>[,<project>=<pin>]..." in page.body and page.body.count(b"\n") == 1
    api = proxy.get(f"/{pin}/pypi/tinybackend/json")
    assert api.status == 400 and reason.decode() in json.loads(api.body)["message"]


def test_errors_and_the_json_api_of_an_overridden_project_are_at_its_own_pin(graph, proxy, fake_pypi):
    api = proxy.get(f"/{BASE},tinybackend=live/pypi/tinybackend/json")
    assert api.status == 200 and json.loads(api.body)["info"]["version"] == "2.0"
    assert api.header("ETag").endswith('-live"')
    assert api.header("Cache-Control") == "max-age=60, public"

    early = proxy.get(f"/{BASE},tinybackend=2017-06-01/simple/tinybackend/")
    assert early.status == 404 and b"no files before 2017-06-01T00:00:00Z" in early.body
    assert early.header("Datepin-Cutoff") == "2017-06-01T00:00:00Z"
    absent = proxy.get(f"/{BASE},nothere=live/simple/nothere/")
    assert absent.status == 404 and absent.header("Datepin-Cutoff") is None
    assert absent.header("Datepin-Pin") == f"{BASE},nothere=live"
    fake_pypi.fault("/simple/oldpkg/", "status", status=500)
    failed = proxy.get(f"/{BASE},oldpkg=2024-06-01/simple/oldpkg/")
    assert failed.status == 502 and failed.header("Datepin-Cutoff") == "2024-06-01T00:00:00Z"
