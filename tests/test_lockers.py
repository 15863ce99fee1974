"""Poetry and PDM lock a project whose only source is datepin's path mode at a pin."""

from __future__ import annotations

import json
import shutil
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients import ClientError, make_venv, run, uv_compile
from egress import EgressProxy
from fakepypi import FakePyPI, add_old_sdists
from proxyproc import Proxy, write_config

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[FakePyPI, Proxy]]:
    """One fake upstream (alpha 1.0 needs beta; alpha 2.0, June 2023, needs beta>=2) and one
    proxy for the module: every test here only reads."""
    tmp = tmp_path_factory.mktemp("lockers")
    with FakePyPI() as fake:
        fake.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z")
        fake.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta"])
        fake.add_wheel("beta", "2.0", upload_time="2023-05-01T10:00:00Z")
        fake.add_wheel("alpha", "2.0", upload_time="2023-06-01T10:00:00Z",
                       requires_dist=["beta>=2"])
        config = write_config(tmp / "proxy.toml", simple_url=fake.simple_url,
                              json_url=fake.json_url, files_url=fake.files_url)
        with Proxy(data_dir=tmp / "data", config=config) as proxy:
            yield fake, proxy


@pytest.fixture
def graph(served) -> FakePyPI:
    return served[0]


@pytest.fixture
def proxy(served) -> Proxy:
    return served[1]


def tool(name: str) -> str:
    """The tool from the test venv (the `test` extra installs it)."""
    path = BIN / name
    if not path.exists() and (found := shutil.which(name)) is None:
        pytest.skip(f"{name} is not installed: run scripts/bootstrap --test (the test extra has it)")
    return str(path) if path.exists() else str(found)


def isolated_env(home: Path) -> dict[str, str]:
    """No user config, cache or keyring (a keyring backend may wait for a desktop session)."""
    home.mkdir(exist_ok=True)
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_DATA_HOME": str(home / "data"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "POETRY_NO_INTERACTION": "1",
        "POETRY_VIRTUALENVS_CREATE": "false",
        "PDM_CHECK_UPDATE": "false",
        "PDM_NON_INTERACTIVE": "1",
        "PDM_PYTHON": sys.executable,
    }


def project(path: Path, source: str, dependencies: list[str] | None = None) -> Path:
    path.mkdir()
    (path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.12"\n'
        f'dependencies = {json.dumps(dependencies or ["alpha"])}\n\n{source}'
    )
    return path


def index_source(name: str, index: str) -> str:
    """The project's only source: Poetry's primary source (PyPI is then left out), PDM's
    source named `pypi` (which replaces PyPI)."""
    if name == "poetry":
        return f'[[tool.poetry.source]]\nname = "datepin"\nurl = "{index}"\npriority = "primary"\n'
    return f'[[tool.pdm.source]]\nname = "pypi"\nurl = "{index}"\n'


def install(exe: str, path: Path, venv: Path, env: dict[str, str]) -> list[str]:
    """`poetry install --no-root` or `pdm sync --no-self` into a fresh venv: the dist-infos."""
    make_venv(venv)
    env = {**env, "VIRTUAL_ENV": str(venv), "PDM_PYTHON": str(venv / "bin" / "python"),
           "PDM_IGNORE_ACTIVE_VENV": "0", "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    command = ["install", "--no-root"] if Path(exe).name == "poetry" else ["sync", "--no-self"]
    run([exe, *command], cwd=path, env_extra=env)
    site = next(venv.glob("lib/python*/site-packages"))
    return sorted(p.name for p in site.glob("*.dist-info"))


def locked(lockfile: Path) -> dict[str, str]:
    return {p["name"]: p["version"] for p in tomllib.loads(lockfile.read_text())["package"]}


@pytest.mark.parametrize(("pin", "versions"), [
    ("2023-03-01", {"alpha": "1.0", "beta": "1.0"}),
    ("2023-07-01", {"alpha": "2.0", "beta": "2.0"}),
])
def test_poetry_locks_the_versions_of_the_pin(graph, proxy, tmp_path, pin, versions):
    poetry = tool("poetry")
    path = project(tmp_path / "demo", index_source("poetry", proxy.index(pin)))
    run([poetry, "lock"], cwd=path, env_extra=isolated_env(tmp_path / "home"))
    assert locked(path / "poetry.lock") == versions
    assert f"/{pin}/simple" in (path / "poetry.lock").read_text()


@pytest.mark.parametrize(("pin", "versions"), [
    ("2023-03-01", {"alpha": "1.0", "beta": "1.0"}),
    ("2023-07-01", {"alpha": "2.0", "beta": "2.0"}),
])
def test_pdm_locks_the_versions_of_the_pin(graph, proxy, tmp_path, pin, versions):
    pdm = tool("pdm")
    path = project(tmp_path / "demo", index_source("pdm", proxy.index(pin)))
    run([pdm, "lock"], cwd=path, env_extra=isolated_env(tmp_path / "home"))
    assert locked(path / "pdm.lock") == versions
    wheel = graph.file(f"alpha-{versions['alpha']}-py3-none-any.whl")
    assert f"sha256:{wheel.sha256}" in (path / "pdm.lock").read_text()


@pytest.mark.parametrize(("name", "ca_variable"), [
    ("poetry", "REQUESTS_CA_BUNDLE"), ("pdm", "REQUESTS_CA_BUNDLE"), ("pdm", "SSL_CERT_FILE"),
])
def test_poetry_and_pdm_lock_and_install_through_https_proxy(graph, proxy, tmp_path, name, ca_variable):
    """Forward mode: the default PyPI source, the pin as the proxy user name, and one CA
    variable (what the README tells Poetry and PDM users); install fetches the files from
    files.pythonhosted.org through datepin too."""
    exe = tool(name)
    bundle = tmp_path / "bundle.pem"
    run([sys.executable, "-m", "datepin", "ca", "--data-dir", str(proxy.data_dir), "--bundle", str(bundle)])
    path = project(tmp_path / "demo", "")
    env = {
        **isolated_env(tmp_path / "home"),
        "HTTPS_PROXY": f"http://2023-03-01:x@127.0.0.1:{proxy.port}",
        ca_variable: str(bundle),
    }
    run([exe, "lock"], cwd=path, env_extra=env)
    assert locked(path / f"{name}.lock") == {"alpha": "1.0", "beta": "1.0"}
    assert install(exe, path, tmp_path / "venv", env) == ["alpha-1.0.dist-info", "beta-1.0.dist-info"]


# -- lock, install, upstream deletes a file, install again from the lock -----------------------


@pytest.mark.parametrize("name", ["poetry", "pdm"])
def test_lock_install_then_reinstall_after_upstream_deleted_a_file(tmp_path, name):
    exe = tool(name)
    with FakePyPI() as fake:
        fake.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z")
        fake.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta"])
        fake.add_wheel("beta", "2.0", upload_time="2023-05-01T10:00:00Z")
        config = write_config(tmp_path / "proxy.toml", simple_url=fake.simple_url,
                              json_url=fake.json_url, files_url=fake.files_url)
        with Proxy(data_dir=tmp_path / "data", config=config) as proxy:
            path = project(tmp_path / "demo", index_source(name, proxy.index("2023-03-01")))
            run([exe, "lock"], cwd=path, env_extra=isolated_env(tmp_path / "home-lock"))
            install(exe, path, tmp_path / "venv-1", isolated_env(tmp_path / "home-1"))
            fake.delete("alpha-1.0-py3-none-any.whl")
            fake.delete("beta-1.0-py3-none-any.whl")
            # Fresh client caches: every file from datepin.
            assert install(exe, path, tmp_path / "venv-2", isolated_env(tmp_path / "home-2")) == [
                "alpha-1.0.dist-info", "beta-1.0.dist-info"]


def test_poetry_locks_from_the_json_api_a_release_deleted_before_its_info_was_fetched(tmp_path):
    """uv locked the pin through path mode (datepin kept the `.metadata` files it read, not
    the wheels), then upstream deleted both releases.  Poetry reads PyPI's JSON API (forward
    mode): datepin answers it from the kept core metadata, and Poetry locks the same."""
    poetry = tool("poetry")
    with FakePyPI() as fake:
        fake.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z")
        fake.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta"])
        config = write_config(tmp_path / "proxy.toml", simple_url=fake.simple_url,
                              json_url=fake.json_url, files_url=fake.files_url)
        with Proxy(data_dir=tmp_path / "data", config=config) as proxy:
            assert uv_compile(proxy.index("2023-03-01"), ["alpha"]) == {"alpha": "1.0", "beta": "1.0"}
            deadline = time.monotonic() + 30
            while b"datepin_files_fills_total 2" not in proxy.get("/-/metrics").body:
                assert time.monotonic() < deadline, "the .metadata files were never kept"
            fake.delete("alpha-1.0-py3-none-any.whl")
            fake.delete("beta-1.0-py3-none-any.whl")
            bundle = tmp_path / "bundle.pem"
            run([sys.executable, "-m", "datepin", "ca", "--data-dir", str(proxy.data_dir),
                 "--bundle", str(bundle)])
            path = project(tmp_path / "demo", "")
            env = {**isolated_env(tmp_path / "home"), "REQUESTS_CA_BUNDLE": str(bundle),
                   "HTTPS_PROXY": f"http://2023-03-01:x@127.0.0.1:{proxy.port}"}
            run([poetry, "lock"], cwd=path, env_extra=env)
            assert locked(path / "poetry.lock") == {"alpha": "1.0", "beta": "1.0"}


# -- a private registry (passthrough credentials) beside the pinned PyPI ----------------------


def private_sources(name: str, proxy: Proxy, pin: str) -> str:
    """The sources as README shows them: the private registry first (both tools send the
    datepin-wide /files/ URLs the credentials of the first source on the host)."""
    private = f"{proxy.url}/{pin}/r/private/"
    if name == "poetry":
        first = f'[[tool.poetry.source]]\nname = "private"\nurl = "{private}"\npriority = "supplemental"\n'
    else:
        with_credentials = private.replace("http://", "http://${PRIVATE_USER}:${PRIVATE_TOKEN}@")
        first = f'[[tool.pdm.source]]\nname = "private"\nurl = "{with_credentials}"\n'
    return f"{first}\n{index_source(name, proxy.index(pin))}"


@pytest.mark.parametrize("name", ["poetry", "pdm"])
def test_a_private_registry_locks_installs_and_reinstalls_after_upstream_deleted_it(tmp_path, name):
    exe = tool(name)
    credentials = ({"POETRY_HTTP_BASIC_PRIVATE_USERNAME": "alice", "POETRY_HTTP_BASIC_PRIVATE_PASSWORD": "tok"}
                   if name == "poetry" else {"PRIVATE_USER": "alice", "PRIVATE_TOKEN": "tok"})
    with FakePyPI() as public, FakePyPI() as private:
        public.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z")
        private.require_basic = ("alice", "tok")
        private.serve_json = False
        private.relative_links = True
        private.add_wheel("secretpkg", "1.0", upload_time="2023-01-01T00:00:00Z", requires_dist=["beta"])
        extra = f'[[registry]]\nname = "private"\nurl = "{private.simple_url}"\nauth = "passthrough"\n'
        config = write_config(tmp_path / "proxy.toml", simple_url=public.simple_url,
                              json_url=public.json_url, files_url=public.files_url, extra=extra)
        with Proxy(data_dir=tmp_path / "data", config=config) as proxy:
            path = project(tmp_path / "demo", private_sources(name, proxy, "2024-01-01"), ["secretpkg"])
            lock = [exe, "lock"] if name == "poetry" else [exe, "lock", "--strategy", "static_urls"]
            run(lock, cwd=path, env_extra={**isolated_env(tmp_path / "home-lock"), **credentials})
            lockfile = (path / f"{name}.lock").read_text()
            assert locked(path / f"{name}.lock") == {"secretpkg": "1.0", "beta": "1.0"}
            secret = private.file("secretpkg-1.0-py3-none-any.whl")
            assert f"sha256:{secret.sha256}" in lockfile
            if name == "pdm":
                assert f"{proxy.url}/files/private/{secret.sha256}/" in lockfile
            assert "tok" not in lockfile

            def env(home: str) -> dict[str, str]:
                return {**isolated_env(tmp_path / home), **credentials}

            install(exe, path, tmp_path / "venv-1", env("home-1"))
            private.delete("secretpkg-1.0-py3-none-any.whl")
            public.delete("beta-1.0-py3-none-any.whl")
            # Fresh client caches: every file from datepin's store.
            assert install(exe, path, tmp_path / "venv-2", env("home-2")) == [
                "beta-1.0.dist-info", "secretpkg-1.0.dist-info"]


# -- old sdists whose build backend is newer than the pin (per-project overrides) ------------

OLD = "2018-06-01"
BUILT = ["oldpkg-1.0.dist-info", "oldsetup-1.0.dist-info"]  # what an install of both leaves


@pytest.fixture(scope="module")
def old_sdists(tmp_path_factory) -> Iterator[tuple[FakePyPI, Proxy]]:
    """A proxy over add_old_sdists: sdists of 2018 that build only with tinybackend 2.0 (2024)."""
    tmp = tmp_path_factory.mktemp("old-sdists")
    with FakePyPI() as fake:
        add_old_sdists(fake)
        config = write_config(tmp / "proxy.toml", simple_url=fake.simple_url,
                              json_url=fake.json_url, files_url=fake.files_url)
        with Proxy(data_dir=tmp / "data", config=config) as proxy:
            yield fake, proxy


@pytest.mark.parametrize("name", ["poetry", "pdm"])
def test_poetry_and_pdm_build_old_sdists_with_the_backend_an_override_lets_through(
        old_sdists, tmp_path, name):
    """Both build an sdist in an isolated environment whose build requirements come from the
    project's source at its pin (never from PyPI or pip's config): when they install it, and
    while locking when only a build tells its dependencies.  Nothing but loopback is reachable:
    every other host goes to a proxy that refuses it and records the attempt."""
    exe = tool(name)
    proxy = old_sdists[1]
    with EgressProxy() as egress:
        env = {**isolated_env(tmp_path / "home"), "HTTP_PROXY": egress.url,
               "HTTPS_PROXY": egress.url, "NO_PROXY": "127.0.0.1"}
        base = project(tmp_path / "base", index_source(name, proxy.index(OLD)), ["oldpkg"])
        run([exe, "lock"], cwd=base, env_extra=env)  # oldpkg's pyproject.toml is enough
        assert locked(base / f"{name}.lock") == {"oldpkg": "1.0"}
        with pytest.raises(ClientError) as failed:
            install(exe, base, tmp_path / "venv-base", env)
        assert "tinybackend" in failed.value.stdout + failed.value.stderr
        built = project(tmp_path / "built", index_source(name, proxy.index(OLD)), ["oldsetup"])
        with pytest.raises(ClientError) as failed:
            run([exe, "lock"], cwd=built, env_extra=env)
        assert "tinybackend" in failed.value.stdout + failed.value.stderr

        pin = f"{OLD},tinybackend=live"
        path = project(tmp_path / "demo", index_source(name, proxy.index(pin)), ["oldpkg", "oldsetup"])
        run([exe, "lock"], cwd=path, env_extra=env)
        assert locked(path / f"{name}.lock") == {"oldpkg": "1.0", "oldsetup": "1.0"}
        assert install(exe, path, tmp_path / "venv", env) == BUILT
        assert egress.requests == []


def test_poetry_through_https_proxy_builds_old_sdists_with_the_override_in_the_credentials(
        old_sdists, tmp_path):
    """Forward mode: Poetry's PyPI source reads the JSON API (`/pypi/tinybackend/2.0/json`),
    which answers at the override's pin as the pages do."""
    poetry = tool("poetry")
    fake, proxy = old_sdists
    bundle = tmp_path / "bundle.pem"
    run([sys.executable, "-m", "datepin", "ca", "--data-dir", str(proxy.data_dir), "--bundle", str(bundle)])
    env = {**isolated_env(tmp_path / "home"), "REQUESTS_CA_BUNDLE": str(bundle),
           "HTTPS_PROXY": f"http://{OLD},tinybackend=live:x@127.0.0.1:{proxy.port}"}
    path = project(tmp_path / "demo", "", ["oldpkg", "oldsetup"])
    run([poetry, "lock"], cwd=path, env_extra=env)
    assert locked(path / "poetry.lock") == {"oldpkg": "1.0", "oldsetup": "1.0"}
    assert install(poetry, path, tmp_path / "venv", env) == BUILT
    assert fake.requests_for("/pypi/tinybackend/2.0/json")
