"""Exposure (issue 8, part 6): who can reach the proxy, who can read its files, where secrets go.

- The default listen address is loopback; another one is explicit and logged with a warning.
- mitmproxy's `block_global` (refuse clients from public addresses) and upstream TLS
  verification stay on; `proxyauth` stays off.
- The CA's private key and the history are readable by their owner only.
- Credentials in configured URLs never reach a response, a log line (even at -v) or disk.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from datepin import server
from datepin.config import Config, ConfigError, parse, resolve
from datepin.upstream import mask_url
from fakepypi import FakePyPI, closed_port
from proxyproc import Proxy, write_config

SECRET = "s3cr3t-Pa55"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- listening ---------------------------------------------------------------------------------


def test_default_listen_address_is_loopback() -> None:
    config = resolve(None, environ={})
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8080)
    assert Config().listen_host == "127.0.0.1"


def test_binding_beyond_loopback_is_explicit_and_warned(tmp_path: Path) -> None:
    with Proxy(data_dir=tmp_path / "data") as loopback:
        assert not any("anyone who can reach it" in line for line in loopback.log)
    wide = Proxy(data_dir=tmp_path / "data")
    wide_cmd_host = "0.0.0.0"
    # Proxy.start always passes --listen 127.0.0.1:PORT; ask for every interface instead.
    wide.extra_args = ["--listen", f"{wide_cmd_host}:0"]
    with wide:
        deadline = time.monotonic() + 10  # logged just after the "listening" line
        while not any("anyone who can reach it" in line for line in wide.log):
            assert time.monotonic() < deadline, wide.log
            time.sleep(0.05)
        assert any("WARNING" in line and "anyone who can reach it" in line for line in wide.log)
        assert wide.get("/-/health").status == 200


def test_mitmproxy_safety_options_stay_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run datepin's real startup with a master that records its options instead of serving."""
    seen: dict[str, Any] = {}

    make_master = server.make_master

    def recording(options: Any) -> Any:
        master = make_master(options)

        async def run() -> None:
            for name in ("block_global", "block_private", "ssl_insecure", "proxyauth",
                         "listen_host", "confdir", "mode"):
                seen[name] = getattr(master.options, name, None)

        master.run = run
        return master

    monkeypatch.setattr(server, "make_master", recording)
    config = Config(data_dir=tmp_path / "data", listen_port=0)
    asyncio.run(server.run(config))
    assert seen["block_global"] is True  # clients from public addresses are refused
    assert seen["ssl_insecure"] is False  # upstream certificates are verified
    assert seen["proxyauth"] in (None, "")  # would answer 407 to path mode (DESIGN.md)
    assert seen["listen_host"] == "127.0.0.1"
    assert seen["mode"] == ["regular"]


# -- files on disk -----------------------------------------------------------------------------


def test_ca_key_and_history_are_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # a data dir made by someone else with the usual umask
    with FakePyPI() as fake:
        fake.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z")
        config = write_config(tmp_path / "p.toml", simple_url=fake.simple_url,
                              json_url=fake.json_url, files_url=fake.files_url)
        with Proxy(data_dir=data, config=config) as proxy:
            assert proxy.get("/2023-03-01/simple/alpha/").status == 200
            check_owner_only(data)  # while running: the WAL and shared-memory files exist
    check_owner_only(data)


def check_owner_only(data: Path) -> None:
    assert mode(data) == 0o700
    assert mode(data / "ca") == 0o700
    keys = [p for p in (data / "ca").iterdir() if p.name in ("mitmproxy-ca.pem", "mitmproxy-ca.p12")]
    assert len(keys) == 2, sorted(p.name for p in (data / "ca").iterdir())
    history = sorted(data.glob("history.sqlite3*"))
    assert history
    for path in keys + history:
        assert mode(path) == 0o600, f"{path.name} is {oct(mode(path))}"


# -- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://user:{SECRET}@pypi.test/simple/", "https://***@pypi.test/simple/"),
        (f"https://{SECRET}@pypi.test:8443/simple/", "https://***@pypi.test:8443/simple/"),
        (f"https://:{SECRET}@pypi.test/simple/", "https://***@pypi.test/simple/"),
        (f"https://user:{SECRET}%40x@[::1]:8443/s/", "https://***@[::1]:8443/s/"),
        ("https://pypi.test/simple/?a=b", "https://pypi.test/simple/?a=b"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert SECRET not in mask_url(url)


@pytest.mark.parametrize(
    "table",
    [
        {"pypi": {"simple_url": f"ftp://user:{SECRET}@pypi.test/simple/"}},
        {"pypi": {"files_url": f"user:{SECRET}@pypi.test"}},
        {"registry": [{"name": "private", "url": f"ftp://user:{SECRET}@host/"}]},
        {"registry": [{"name": "private", "url": f"https://user:{SECRET}@host/", "auth": "bogus"}]},
        {"registry": [{"name": "private", "url": f"https://user:{SECRET}@host/", "json_url": 5}]},
    ],
)
def test_config_errors_do_not_echo_credentials(table: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as error:
        parse(table, source="proxy.toml")
    assert SECRET not in str(error.value)
    assert "proxy.toml" in str(error.value)


def test_credentials_in_upstream_urls_never_leak(tmp_path: Path) -> None:
    with FakePyPI() as fake:
        for name in ("alpha", "beta", "gamma"):
            fake.add_wheel(name, "1.0", upload_time="2023-01-01T10:00:00Z")
        # Credentials written into a URL are refused, without echoing them.
        authed = fake.url.replace("http://", f"http://user:{SECRET}@")
        bad = write_config(
            tmp_path / "bad.toml", simple_url=f"{authed}/simple/", json_url=f"{authed}/pypi/",
            files_url=f"{authed}/files/",
        )
        refused = subprocess.run(
            [sys.executable, "-m", "datepin", "serve", "--config", str(bad),
             "--data-dir", str(tmp_path / "bad-data"), "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60,
        )
        assert refused.returncode != 0 and "credentials" in refused.stderr
        assert SECRET not in refused.stdout + refused.stderr
        # Static credentials come from the environment and go upstream masked everywhere.
        extra = (f'[[registry]]\nname = "gone"\nauth = "static"\nauth_env = "GONE_TOKEN"\n'
                 f'url = "http://127.0.0.1:{closed_port()}/simple/"\n')
        config = write_config(
            tmp_path / "p.toml", simple_url=f"{fake.url}/simple/", json_url=f"{fake.url}/pypi/",
            files_url=f"{fake.url}/files/", upstream_timeout="1s", live_ttl="0s", extra=extra,
        )
        env = {**os.environ, "GONE_TOKEN": f"user:{SECRET}"}
        proxy = Proxy(data_dir=tmp_path / "data", config=config, env=env)
        proxy.extra_args = ["-v"]
        answers = []
        with proxy:
            answers.append(proxy.get("/live/simple/alpha/"))  # observes
            assert answers[-1].status == 200
            fake.fault("/simple/", "status", status=503)
            answers.append(proxy.get("/live/simple/alpha/"))  # served with a Warning
            assert answers[-1].header("Warning")
            fake.fault("/simple/", "stall", seconds=5)
            answers.append(proxy.get("/2023-03-01/simple/beta/"))  # timeout
            fake.fault("/simple/", "malformed")
            answers.append(proxy.get("/2023-03-01/simple/gamma/"))  # unreadable page
            answers.append(proxy.get("/2023-03-01/r/gone/alpha/"))  # connection refused
            answers.append(proxy.get("/2023-03-01/pypi/alpha/json"))
            answers.append(proxy.get("/"))
        assert [a.status for a in answers[2:5]] == [504, 502, 502]
    token = base64.b64encode(f"user:{SECRET}".encode()).decode()
    for answer in answers:
        text = answer.body.decode("utf-8", "replace") + repr(answer.headers)
        assert SECRET not in text and token not in text, text
    log = "".join(proxy.log)
    assert "DEBUG" in log  # -v took effect
    assert SECRET not in log and token not in log
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and token.encode() not in data, path

