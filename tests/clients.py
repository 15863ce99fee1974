"""Run real package clients (pip, uv) as subprocesses, isolated from this machine's setup.

This machine's global pip config adds `find-links` and local `file://` indexes, and the
environment carries PIP_*, proxy and CA variables: a client run with them might never ask the
index under test.  `client_env` removes all of that; every helper here runs with it.

    versions = pip_resolve(fake.simple_url, ["alpha"])     # {"alpha": "1.0", "beta": "2.0"}
    versions = uv_compile(proxy_index, ["onnx==1.14.0"], python_version="3.11")
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

TIMEOUT = 180.0  # seconds for one client run; a hung client fails its test instead

_DROPPED = {"REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "NO_PROXY", "PYTHONPATH"}
_ISOLATION = {
    "PIP_CONFIG_FILE": os.devnull,  # pip then reads no config file at all, global included
    "PIP_NO_CACHE_DIR": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
    "UV_NO_CACHE": "1",
    "UV_NO_CONFIG": "1",
    "UV_PYTHON_DOWNLOADS": "never",
}
_PINNED_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


class ClientError(RuntimeError):
    """A client exited non-zero or timed out; the message carries its output."""

    def __init__(self, cmd: Sequence[str], returncode: int | None, stdout: str, stderr: str):
        self.cmd, self.returncode, self.stdout, self.stderr = list(cmd), returncode, stdout, stderr
        status = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(
            f"{' '.join(self.cmd)}\n{status}\n"
            f"--- stdout ---\n{_tail(stdout)}\n--- stderr ---\n{_tail(stderr)}"
        )


def _tail(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def client_env(**extra: str | None) -> dict[str, str]:
    """os.environ without PIP_*, UV_*, *_PROXY, CA-bundle variables and PYTHONPATH, plus the
    isolation settings above; then `extra` (a value of None removes the key)."""
    env = {k: v for k, v in os.environ.items() if not _leaks(k)}
    env.update(_ISOLATION)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _leaks(key: str) -> bool:
    upper = key.upper()
    return upper.startswith(("PIP_", "UV_")) or upper.endswith("_PROXY") or upper in _DROPPED


def ca_bundle_env(bundle: str | os.PathLike[str]) -> dict[str, str]:
    """Variables that make pip and uv trust `bundle` (pip: REQUESTS_CA_BUNDLE wins over
    PIP_CERT, so set both; uv reads SSL_CERT_FILE).  Pass as env_extra."""
    path = os.fspath(bundle)
    return {"PIP_CERT": path, "REQUESTS_CA_BUNDLE": path, "SSL_CERT_FILE": path}


def system_ca_bundle() -> str | None:
    """The CA bundle this machine's environment names (needed to reach PyPI from here)."""
    for key in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        if (path := os.environ.get(key)) and os.path.isfile(path):
            return path
    default = "/etc/ssl/certs/ca-certificates.crt"
    return default if os.path.isfile(default) else None


def run(
    cmd: Sequence[str],
    *,
    env_extra: Mapping[str, str | None] | None = None,
    input: str | None = None,
    timeout: float = TIMEOUT,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a client with `client_env(**env_extra)`; raise ClientError unless it exits 0."""
    env = client_env(**dict(env_extra or {}))
    try:
        proc = subprocess.run(
            list(cmd), env=env, input=input, capture_output=True, text=True,
            timeout=timeout, cwd=cwd, stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClientError(cmd, None, _text(exc.stdout), _text(exc.stderr)) from None
    if proc.returncode != 0:
        raise ClientError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


# -- pip ------------------------------------------------------------------------------------


def pip_report(
    index_url: str,
    requirements: Iterable[str],
    *,
    python: str = sys.executable,
    env_extra: Mapping[str, str | None] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = TIMEOUT,
) -> dict[str, object]:
    """`pip install --dry-run --ignore-installed --report`: the whole report (files, hashes,
    download URLs), for tests that need more than versions."""
    with tempfile.TemporaryDirectory(prefix="datepin-pip-") as tmp:
        report = Path(tmp, "report.json")
        run(
            [python, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--report", str(report), "-q", "--progress-bar", "off",
             "--index-url", index_url, *extra_args, *requirements],
            env_extra=env_extra, timeout=timeout,
        )
        parsed: dict[str, object] = json.loads(report.read_text())
        return parsed


def pip_resolve(
    index_url: str,
    requirements: Iterable[str],
    *,
    python: str = sys.executable,
    env_extra: Mapping[str, str | None] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = TIMEOUT,
) -> dict[str, str]:
    """What pip would install, as {normalized name: version}."""
    report = pip_report(
        index_url, requirements, python=python, env_extra=env_extra,
        extra_args=extra_args, timeout=timeout,
    )
    return _report_versions(report)


def _report_versions(report: Mapping[str, object]) -> dict[str, str]:
    installs = report["install"]
    assert isinstance(installs, list)
    return {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in installs
    }


def venv_python(venv: str | os.PathLike[str]) -> Path:
    return Path(venv, "bin", "python")


def make_venv(venv: str | os.PathLike[str], *, python: str = sys.executable) -> Path:
    """A fresh venv without pip (fast: pip is driven from outside with `--python`)."""
    venv = Path(venv)
    if venv.exists() and any(venv.iterdir()):
        raise ValueError(f"{venv} exists and is not empty; give a fresh directory")
    run([python, "-m", "venv", "--without-pip", str(venv)])
    return venv_python(venv)


def pip_install(
    index_url: str,
    requirements: Iterable[str],
    *,
    target_venv: str | os.PathLike[str],
    python: str = sys.executable,
    env_extra: Mapping[str, str | None] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = TIMEOUT,
) -> dict[str, str]:
    """Create a fresh venv at `target_venv` and really install into it with pip; return what
    was installed as {normalized name: version}.  Run code with `venv_python(target_venv)`."""
    target = make_venv(target_venv, python=python)
    with tempfile.TemporaryDirectory(prefix="datepin-pip-") as tmp:
        report = Path(tmp, "report.json")
        run(
            [python, "-m", "pip", "--python", str(target), "install",
             "--report", str(report), "-q", "--progress-bar", "off",
             "--index-url", index_url, *extra_args, *requirements],
            env_extra=env_extra, timeout=timeout,
        )
        return _report_versions(json.loads(report.read_text()))


# -- uv -------------------------------------------------------------------------------------


@functools.cache
def uv_bin() -> str:
    """The uv binary of the `uv` PyPI package installed in the test venv."""
    from uv import find_uv_bin

    return find_uv_bin()


def parse_pins(text: str) -> dict[str, str]:
    """`name==version` lines (as `uv pip compile` / `pip freeze` print) -> {name: version}."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        if match := _PINNED_LINE.match(line.strip()):
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def uv_compile(
    index_url: str,
    requirements: Iterable[str],
    *,
    python_version: str = "3.12",
    python: str | None = None,
    env_extra: Mapping[str, str | None] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = TIMEOUT,
) -> dict[str, str]:
    """`uv pip compile` (requirements on stdin) for `python_version` -> {name: version}."""
    cmd = [uv_bin(), "pip", "compile", "-", "--index-url", index_url,
           "--python-version", python_version, "--no-header", "--no-annotate"]
    if python is not None:
        cmd += ["--python", python]
    proc = run([*cmd, *extra_args], env_extra=env_extra, timeout=timeout,
               input="".join(f"{r}\n" for r in requirements))
    return parse_pins(proc.stdout)


def uv_install(
    index_url: str,
    requirements: Iterable[str],
    *,
    target_venv: str | os.PathLike[str],
    python: str = sys.executable,
    env_extra: Mapping[str, str | None] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = TIMEOUT,
) -> dict[str, str]:
    """Create a fresh venv at `target_venv` with uv and install into it; return
    {normalized name: version} of everything installed there."""
    venv = Path(target_venv)
    if venv.exists() and any(venv.iterdir()):
        raise ValueError(f"{venv} exists and is not empty; give a fresh directory")
    run([uv_bin(), "venv", "-q", "--python", python, str(venv)],
        env_extra=env_extra, timeout=timeout)
    target = str(venv_python(venv))
    run([uv_bin(), "pip", "install", "--python", target, "--index-url", index_url,
         *extra_args, *requirements], env_extra=env_extra, timeout=timeout)
    proc = run([uv_bin(), "pip", "freeze", "--python", target],
               env_extra=env_extra, timeout=timeout)
    return parse_pins(proc.stdout)


# -- interpreters ---------------------------------------------------------------------------


@functools.cache
def python311() -> str | None:
    """A Python 3.11 interpreter (onnx 1.14.0 has no 3.12 wheels), or None.  Looks at
    python3.11 on PATH, then ~/.pyenv/versions/3.11*; returns the real executable, not a
    pyenv shim."""
    pyenv = sorted(Path("~/.pyenv/versions").expanduser().glob("3.11*/bin/python"), reverse=True)
    for candidate in [shutil.which("python3.11"), *map(str, pyenv)]:
        if candidate and (found := _interpreter(candidate, (3, 11))):
            return found
    return None


def _interpreter(candidate: str, version: tuple[int, int]) -> str | None:
    check = f"import sys; print(sys.executable if sys.version_info[:2] == {version!r} else '')"
    try:
        proc = run([candidate, "-c", check], timeout=30)
    except (ClientError, OSError):
        return None
    return proc.stdout.strip() or None
