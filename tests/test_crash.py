"""kill -9 at random moments (issue 8, part 2).

One data directory, one `datepin serve` process after another (forked from a parent that has
done the slow imports once, so fifty restarts fit in about a minute), each SIGKILLed at a random moment while
clients fill files (made slow upstream so kills land mid-fill), observe new projects (history
writes) and re-observe a `live` project (history writes on every request).  After every kill:

- every SQLite file passes `PRAGMA integrity_check`;
- the blob store verifies (no corrupt or missing blob) and holds only bytes upstream served;
- history never recorded a file as gone (none ever was) -- no half-written observation;
and after every restart the first requests get correct pages and correct bytes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import re
import threading
import time
from pathlib import Path

import pytest

import storecheck
from datepin.blobs import BlobStore
from fakepypi import FakeFile, FakePyPI
from forkserver import ForkServer
from proxyproc import Proxy, write_config

JSON = "application/vnd.pypi.simple.v1+json"
PIN = "2023-03-01"
OLD = "2023-01-01T10:00:00Z"
KILLS = 50
SLOW_SECONDS = 0.25  # every file stalls this long half-way, so fills are in flight when killed


def get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes, bool]:
    """(status, body, complete); a cut or refused connection is (0, b"", False)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        try:
            return resp.status, resp.read(), True
        except http.client.IncompleteRead as e:
            return resp.status, e.partial, False
    except (OSError, http.client.HTTPException):
        return 0, b"", False
    finally:
        conn.close()


def file_paths(body: bytes, port: int) -> dict[str, str]:
    return {f["filename"]: f["url"].split(f":{port}", 1)[1] for f in json.loads(body)["files"]}


class Clients:
    """Worker threads hammering one proxy process until it dies or `stop` is called."""

    def __init__(self, port: int, fresh: list[str], stored: list[str], rng: random.Random) -> None:
        self.port, self.fresh, self.stored, self.rng = port, fresh, stored, rng
        self.stop = threading.Event()
        self.bad: list[str] = []
        self.fills_started = 0
        self.threads = [threading.Thread(target=self._fill, args=(p,)) for p in fresh]
        self.threads += [threading.Thread(target=self._live), threading.Thread(target=self._hits)]

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def _fill(self, project: str) -> None:
        status, body, complete = get(self.port, f"/{PIN}/simple/{project}/", {"Accept": JSON})
        if status != 200 or not complete or self.stop.is_set():
            return  # killed meanwhile
        for path in file_paths(body, self.port).values():
            self.fills_started += 1
            got = get(self.port, path)
            self._check(path, got)

    def _live(self) -> None:
        while not self.stop.is_set():
            status, body, complete = get(self.port, "/live/simple/common/", {"Accept": JSON})
            if status == 200 and complete and len(json.loads(body)["files"]) != 2:
                self.bad.append(f"live page lost files: {body[:200]!r}")

    def _hits(self) -> None:
        while not self.stop.is_set() and self.stored:
            self._check(path := self.rng.choice(self.stored), get(self.port, path))

    def _check(self, path: str, got: tuple[int, bytes, bool]) -> None:
        status, body, complete = got
        if status == 200 and complete:
            expected = path.split("/")[3]
            if hashlib.sha256(body).hexdigest() != expected:
                self.bad.append(f"{path}: complete 200 with wrong bytes")


def check_store(data: Path, served: dict[str, FakeFile], projects: list[str]) -> None:
    for db in storecheck.databases(data):
        assert storecheck.integrity(db) == "ok", db
    store = BlobStore(data / "blobs", size_limit=10**12)
    try:
        problems = [p for p in store.verify() if p.kind != "orphan"]
    finally:
        store.close()
    assert problems == []
    assert storecheck.stored_contents_match(data) == []
    assert storecheck.stored(data) <= set(served)  # only bytes upstream served (and hashes say)
    for project in projects:
        assert storecheck.gone_states(data, project) == [], project


@pytest.mark.slow
def test_kill_minus_9_during_fills_and_history_writes(tmp_path: Path) -> None:
    rng = random.Random(8)
    data = tmp_path / "data"
    t_start = time.monotonic()
    with FakePyPI() as fake:
        served: dict[str, FakeFile] = {}
        for tag in ("py2-none-any", "py3-none-any"):
            w = fake.add_wheel("common", "1.0", upload_time=OLD, tag=tag)
            served[w.sha256] = w
        fake.fault(re.compile(r"^/files/.*\.whl$"), "stall_body", times=None, seconds=SLOW_SECONDS)
        config = write_config(
            tmp_path / "proxy.toml", simple_url=fake.simple_url, json_url=fake.json_url,
            files_url=fake.files_url, upstream_timeout="5s", live_ttl="0s",
        )
        projects = ["common"]
        stored_paths: list[str] = []
        previous: list[str] = []
        figures = dict.fromkeys(
            ("kills", "kills_mid_fill", "kills_at_startup", "fills_started", "restarts_checked"), 0
        )
        args = ["--data-dir", data, "--config", config, "--listen", "127.0.0.1:0"]
        with ForkServer() as forks:
            for i in range(KILLS):
                fresh = [f"p{i}-{k}" for k in range(3)]
                for name in fresh:
                    w = fake.add_wheel(name, "1.0", upload_time=OLD,
                                       payload_size=rng.randrange(50_000, 600_000))
                    served[w.sha256] = w
                projects += fresh
                if i % 10 == 5:  # now and then, a kill while the stores are being opened
                    early = forks.spawn(args, tmp_path / f"early-{i}.log")
                    time.sleep(rng.uniform(0.0, 0.3))
                    early.kill()
                    figures["kills_at_startup"] += 1
                    check_store(data, served, projects)
                child = forks.spawn(args, tmp_path / f"serve-{i}.log")
                port = child.wait_ready()
                # After a restart: the first requests get correct pages and bytes.
                if previous:
                    name = rng.choice(previous)
                    status, body, complete = get(port, f"/{PIN}/simple/{name}/", {"Accept": JSON})
                    assert status == 200 and complete
                    [(filename, path)] = file_paths(body, port).items()
                    assert filename == fake.files(name)[0].filename
                    status, body, complete = get(port, path)
                    assert status == 200 and complete, (name, status)
                    assert hashlib.sha256(body).hexdigest() == fake.files(name)[0].sha256
                    stored_paths.append(path)
                    figures["restarts_checked"] += 1
                with Clients(port, fresh, stored_paths, rng) as clients:
                    time.sleep(rng.uniform(0.0, 0.5))
                    child.kill()
                figures["kills"] += 1
                figures["fills_started"] += clients.fills_started
                figures["kills_mid_fill"] += bool(storecheck.temp_files(data))
                assert clients.bad == []
                check_store(data, served, projects)
                previous = fresh
        # The real `datepin serve`, once more: everything is still served, correctly.
        with Proxy(data_dir=data, config=config) as proxy:
            for name in projects[1:]:
                status, body, _ = get(proxy.port, f"/{PIN}/simple/{name}/", {"Accept": JSON})
                assert status == 200, name
            for path in rng.sample(stored_paths, min(10, len(stored_paths))):
                status, body, complete = get(proxy.port, path)
                assert complete and hashlib.sha256(body).hexdigest() == path.split("/")[3]
    figures["blobs_after"] = len(storecheck.stored(data))
    figures["observations_of_live_project"] = storecheck.observations(data, "common")
    figures["seconds"] = round(time.monotonic() - t_start, 1)
    print(f"\ncrash loop figures: {figures}")
    assert figures["kills"] >= 50
