"""A damaged data directory: clear errors, no request falling through, and a way back.

- A history or file-store database that is not SQLite stops `datepin serve` with one line.
- An error nobody anticipated (history unreadable) is a 500 saying so, never a request that
  mitmproxy passes on to its target (for path mode: the proxy itself).
- A stored file whose bytes rotted is found by `BlobStore.verify`, moved to quarantine, and
  fetched again from upstream on the next request.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import storecheck
from datepin.blobs import BlobStore
from fakepypi import FakePyPI
from proxyproc import Proxy, write_config

JSON = "application/vnd.pypi.simple.v1+json"
PIN = "2023-03-01"
OLD = "2023-01-01T10:00:00Z"


@pytest.mark.parametrize("damaged", ["history.sqlite3", "blobs/meta.sqlite3", "blobs/cas/cache.db"])
def test_a_damaged_database_stops_serve_with_one_line(tmp_path: Path, damaged: str) -> None:
    data = tmp_path / "data"
    target = data / damaged
    target.parent.mkdir(parents=True)
    target.write_bytes(b"this is not an SQLite database, whatever its name says\n" * 100)
    run = subprocess.run(
        [sys.executable, "-m", "datepin", "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith("Error: cannot open the "), run.stderr
    assert "move it away" in run.stderr


def test_an_unexpected_error_is_a_500_not_a_request_passed_on() -> None:
    """Left unanswered, a path-mode request would be sent on by mitmproxy to its target: this
    proxy.  A failure nobody anticipated (here: history unreadable) must be answered."""
    import asyncio
    import sqlite3
    from datetime import UTC, datetime

    from mitmproxy.test import tflow

    from datepin.addon import DatepinAddon
    from datepin.config import Config

    class BrokenIndex:
        async def answer(self, *args: object, **kwargs: object) -> None:
            raise sqlite3.DatabaseError("database disk image is malformed")

    addon = DatepinAddon(Config(), BrokenIndex(), None, clock=lambda: datetime.now(UTC))  # type: ignore[arg-type]
    flow = tflow.tflow()
    flow.client_conn.sockname = ("127.0.0.1", 8080)
    flow.request.host, flow.request.port = "127.0.0.1", 8080
    flow.request.path = f"/{PIN}/simple/alpha/"
    asyncio.run(addon.request(flow))
    assert flow.response is not None and flow.response.status_code == 500
    assert b"internal error" in flow.response.content


def test_a_rotten_blob_is_quarantined_and_fetched_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with FakePyPI() as fake:
        wheel = fake.add_wheel("alpha", "1.0", upload_time=OLD, payload_size=50_000)
        config = write_config(tmp_path / "p.toml", simple_url=fake.simple_url,
                              json_url=fake.json_url, files_url=fake.files_url)
        proxy = Proxy(data_dir=data, config=config)
        with proxy:
            page = proxy.get(f"/{PIN}/simple/alpha/", {"Accept": JSON})
            [url] = [f["url"] for f in json.loads(page.body)["files"]]
            path = url.split(str(proxy.port), 1)[1]
            assert hashlib.sha256(proxy.get(path).body).hexdigest() == wheel.sha256
        [blob] = storecheck.blob_files(data)
        with blob.open("r+b") as f:
            f.seek(1000)
            f.write(b"\xff" * 16)  # bit rot
        store = BlobStore(data / "blobs", size_limit=10**9)
        try:
            [problem] = store.verify()
        finally:
            store.close()
        assert (problem.kind, problem.sha256) == ("corrupt", wheel.sha256)
        assert problem.moved_to is not None and problem.moved_to.exists()
        assert wheel.sha256 not in storecheck.stored(data)
        fake.clear_log()
        with proxy:
            again = proxy.get(path, {})
            assert again.status == 200 and hashlib.sha256(again.body).hexdigest() == wheel.sha256
        assert [r.path for r in fake.requests_for("/files/")] == [wheel.path]
        assert storecheck.stored_contents_match(data) == []
