"""The snapshotter: the past never changes (issue 5).

End to end with the real `datepin serve`, the `datepin snapshot` CLI as a subprocess on the same
data directory, real pip, and the fake upstream deleting and yanking files; plus a property test
that drives the service layer (`Index`, the real `Upstream`, file server and blob store) through
random upstream changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients import pip_install, pip_resolve
from datepin.blobs import BlobStore
from datepin.cli import main
from datepin.config import Config, Registry, parse
from datepin.history import HistoryStore
from datepin.model import View
from datepin.pins import Pin, format_time
from datepin.rewrite.render import render_html, render_json
from datepin.runtime import runtime
from datepin.service import Index, NotObserved
from datepin.snapshotter import first_delay, keep_snapshotting, tracked
from datepin.views import is_fixed
from fakepypi import FakePyPI, add_alpha_beta
from proxyproc import Proxy, fetch, write_config

JSON = "application/vnd.pypi.simple.v1+json"
LIVE = Pin("live", None)


def datepin(config: Path, data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `datepin` CLI in a subprocess."""
    env = {k: v for k, v in os.environ.items() if k != "DATEPIN_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "datepin", *args, "--config", str(config), "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def cli(config: Path, data_dir: Path, *args: str) -> Result:
    """The `datepin` CLI in this process (faster; the subprocess form is for tests where the
    command runs beside a server, or gets killed)."""
    return CliRunner().invoke(main, [*args, "--config", str(config), "--data-dir", str(data_dir)])


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def files_of(body: bytes) -> dict[str, dict[str, object]]:
    return {f["filename"]: f for f in json.loads(body)["files"]}


def now_pin() -> str:
    return format_time(datetime.now(UTC))


@pytest.fixture
def graph(fake_pypi: FakePyPI) -> FakePyPI:
    return add_alpha_beta(fake_pypi)


# -- end to end ---------------------------------------------------------------------------------


def test_pinned_install_survives_a_deletion_and_a_yank(graph, proxy, proxy_config, tmp_path):
    pin = proxy.index("2023-07-01")
    before = pip_install(pin, ["alpha"], target_venv=tmp_path / "v1")
    assert before == {"alpha": "2.0", "beta": "2.0"}

    deleted = graph.file("alpha-2.0-py3-none-any.whl")
    graph.delete(deleted.filename)
    graph.yank("beta-2.0-py3-none-any.whl", "broken")
    done = datepin(proxy_config, proxy.data_dir, "snapshot", "--all")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "observed 2, changed 2, files gone 1, files rescued 1, failures 0"
    )
    assert fetch(deleted.url).status == 404  # upstream no longer has it

    graph.clear_log()
    assert pip_install(pin, ["alpha"], target_venv=tmp_path / "v2") == before
    assert graph.requests_for(deleted.path) == []  # served from the store
    assert graph.requests_for("/simple/") == []  # the pinned view came from history

    assert pip_resolve(proxy.index("live"), ["alpha"]) == {"alpha": "1.0", "beta": "1.0"}
    live = files_of(proxy.get("/live/simple/alpha/", {"Accept": JSON}).body)
    assert deleted.filename not in live


def test_snapshot_rescues_a_deleted_file_not_yet_stored(graph, proxy, proxy_config):
    first = proxy.get("/2023-07-01/simple/alpha/", {"Accept": JSON})
    gone = graph.file("alpha-2.0-py3-none-any.whl")
    link = str(files_of(first.body)[gone.filename]["url"])

    graph.keep_serving_deleted_files = True  # as files.pythonhosted.org often does for a while
    graph.delete(gone.filename)
    done = cli(proxy_config, proxy.data_dir, "snapshot", "alpha")
    assert done.exit_code == 0, done.stderr
    assert "files gone 1, files rescued 1, failures 0" in done.stdout

    graph.keep_serving_deleted_files = False
    graph.clear_log()
    got = fetch(link)
    assert got.status == 200 and hashlib.sha256(got.body).hexdigest() == gone.sha256
    assert graph.requests_for("/files/") == []
    assert proxy.get("/2023-07-01/simple/alpha/", {"Accept": JSON}).body == first.body
    assert gone.filename not in files_of(proxy.get("/live/simple/alpha/", {"Accept": JSON}).body)

    doc = json.loads(cli(proxy_config, proxy.data_dir, "history", "alpha", "--json").stdout)
    [facts] = [f for f in doc["files"] if f["filename"] == gone.filename]
    assert facts["stored"] and facts["irreplaceable"] and facts["gone_since"]


def test_yank_and_unyank_show_from_the_observation_that_saw_them(graph, proxy, proxy_config):
    wheel = "beta-2.0-py3-none-any.whl"

    def yanked(pin: str) -> object:
        r = proxy.get(f"/{pin}/simple/beta/", {"Accept": JSON})
        assert r.status == 200, r.body
        return files_of(r.body)[wheel]["yanked"]

    assert yanked("live") is False  # the first observation
    before_yank = now_pin()
    graph.yank(wheel, "broken")
    assert cli(proxy_config, proxy.data_dir, "snapshot", "beta").exit_code == 0
    after_yank = now_pin()
    graph.unyank(wheel)
    assert cli(proxy_config, proxy.data_dir, "snapshot", "beta").exit_code == 0
    after_unyank = now_pin()

    assert yanked("2023-07-01") is False  # before the first observation: as first seen
    assert yanked(before_yank) is False
    assert yanked(after_yank) == "broken"
    assert yanked(after_unyank) is False
    assert pip_resolve(proxy.index(after_yank), ["beta"]) == {"beta": "1.0"}
    assert pip_resolve(proxy.index(before_yank), ["beta"]) == {"beta": "2.0"}


def test_a_snapshot_of_an_unchanged_page_is_a_304_recorded_as_a_look(graph, proxy, proxy_config):
    """The snapshot asks with the ETag of the page history has; upstream's 304 is recorded as
    an observation that changed nothing, so pins up to it are answered from history."""
    assert proxy.get("/live/simple/beta/", {"Accept": JSON}).status == 200
    graph.clear_log()
    snapshot = cli(proxy_config, proxy.data_dir, "snapshot", "beta")
    after = datetime.now(UTC)
    assert snapshot.exit_code == 0, snapshot.output
    [asked] = graph.requests_for("/simple/beta/")
    assert asked.status == 304 and asked.headers["if-none-match"]
    history = HistoryStore(proxy.data_dir / "history.sqlite3")
    try:
        beta = history.load("pypi", "beta")
        assert beta is not None and len(beta.observations) == 2 and is_fixed(beta, beta.observations[-1])
        assert all(len(fh.states) == 1 for fh in beta.files)
    finally:
        history.close()
    graph.clear_log()
    at_the_look = format_time(min(after, beta.observations[-1]))
    assert proxy.get(f"/{at_the_look}/simple/beta/", {"Accept": JSON}).status == 200
    assert not graph.requests_for("/simple/beta/")


def test_the_snapshot_command_starts_without_mitmproxy():
    """Importing mitmproxy is 0.3 s of a CLI command's start; only `serve` needs it."""
    code = (
        "import sys, datepin.cli, datepin.runtime, datepin.snapshotter, datepin.reports\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mitmproxy'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_deleted_project_keeps_its_pinned_views_and_live_is_404(graph, proxy, proxy_config):
    pinned = proxy.get("/2023-07-01/simple/beta/", {"Accept": JSON})
    assert pinned.status == 200
    stored = str(files_of(pinned.body)["beta-1.0-py3-none-any.whl"]["url"])
    assert fetch(stored).status == 200  # now in the store

    graph.remove_project("beta")
    assert proxy.get("/live/simple/beta/").status == 404
    assert proxy.get("/live/pypi/beta/json").status == 404
    done = cli(proxy_config, proxy.data_dir, "snapshot", "--all")
    assert done.exit_code == 0, done.stderr

    again = proxy.get("/2023-07-01/simple/beta/", {"Accept": JSON})
    assert again.status == 200 and again.body == pinned.body
    # The answer above may come from the proxy's memory of views it served: ask a fresh
    # process, which can only answer from history (the 404 is its last observation).
    proxy.restart()
    again = proxy.get("/2023-07-01/simple/beta/", {"Accept": JSON})
    assert again.status == 200 and again.body == pinned.body
    assert fetch(stored).status == 200
    assert proxy.get(f"/{now_pin()}/simple/beta/").status == 404
    text = cli(proxy_config, proxy.data_dir, "history", "beta").stdout
    assert "project not found upstream (404) from" in text


def test_snapshot_cli_names_failures_and_exits_nonzero(graph, tmp_path):
    config = write_config(
        tmp_path / "proxy.toml",
        simple_url=graph.simple_url, json_url=graph.json_url, files_url=graph.files_url,
        upstream_timeout="5s",
        extra=f'[snapshot]\ntrack = ["beta"]\n\n[[registry]]\nname = "extra"\nurl = "{graph.simple_url}"\n',
    )
    data = tmp_path / "data"
    graph.fault("/simple/beta/", "status", status=503, times=1)
    done = cli(config, data, "snapshot", "alpha", "Alpha", "extra:alpha", "nope", "beta")
    assert done.exit_code == 1
    assert "failed: nope: pypi does not know this project (404)" in done.stderr
    assert "failed: beta:" in done.stderr and "503" in done.stderr
    assert done.stdout.strip().startswith("observed 2, changed 2,")
    assert done.stdout.strip().endswith("failures 2")

    everything = cli(config, data, "snapshot", "--all")  # alpha, extra:alpha, track: beta
    assert everything.exit_code == 0, everything.stderr
    assert everything.stdout.startswith("observed 3, changed 1,")

    assert cli(config, data, "snapshot").exit_code == 2
    bad = cli(config, data, "snapshot", "elsewhere:alpha")
    assert bad.exit_code == 2 and "no registry named 'elsewhere'" in bad.stderr


def test_a_snapshot_answered_by_a_maintenance_page_fails_and_keeps_nothing(fake_pypi, tmp_path):
    """An HTML registry down for maintenance answers 200 with a page of its own: not the
    project losing its files (which would be kept at once, and gone for the pins of that
    moment), but a project that could not be observed."""
    with FakePyPI() as html:
        html.serve_json = False
        html.add_wheel("alpha", "1.0", upload_time="2023-01-01T00:00:00Z")
        config = write_config(
            tmp_path / "proxy.toml",
            simple_url=fake_pypi.simple_url, json_url=fake_pypi.json_url, files_url=fake_pypi.files_url,
            upstream_timeout="5s", extra=f'[[registry]]\nname = "html"\nurl = "{html.simple_url}"\n',
        )
        data = tmp_path / "data"
        assert cli(config, data, "snapshot", "html:alpha").exit_code == 0
        html.answer_with("/simple/alpha/", b"<!DOCTYPE html><html><head><title>Maintenance</title>"
                         b'</head><body><h1>Down for maintenance</h1><a href="/status">status</a>'
                         b"</body></html>")
        done = cli(config, data, "snapshot", "html:alpha")
        assert done.exit_code == 1
        assert done.stdout.strip() == (
            "observed 0, changed 0, files gone 0, files rescued 0, failures 1"
        )
        assert f"{html.project_url('alpha')} answered a page that is not a project page" in done.stderr
        assert html.requests_for("/files/") == [] and html.requests_for("/status") == []
        html.clear_faults()
        doc = json.loads(cli(config, data, "history", "html:alpha", "--json").stdout)
        assert [f["filename"] for f in doc["files"] if not f["gone_since"]] == [
            "alpha-1.0-py3-none-any.whl"]


def test_serve_snapshots_in_the_background_and_stops_cleanly(graph, tmp_path):
    config = write_config(
        tmp_path / "proxy.toml",
        simple_url=graph.simple_url, json_url=graph.json_url, files_url=graph.files_url,
        upstream_timeout="5s", extra='[snapshot]\ninterval = "1s"\ntrack = ["alpha"]\n',
    )
    gone = graph.file("alpha-1.0-py3-none-any.whl")
    with Proxy(data_dir=tmp_path / "data", config=config) as p:
        wait_for(lambda: graph.requests_for("/simple/alpha/"), what="the first snapshot")
        graph.keep_serving_deleted_files = True
        graph.delete(gone.filename)
        wait_for(lambda: graph.requests_for(gone.path), what="the rescue")
        store = BlobStore(tmp_path / "data" / "blobs", size_limit=1 << 30)
        wait_for(lambda: store.has(gone.sha256) and store.is_irreplaceable(gone.sha256),
                 what="the rescue to commit")
        store.close()
        assert p.get("/-/health").status == 200
    assert p.process is not None and p.process.returncode == 0
    log = "".join(p.log)
    assert "Traceback" not in log and "was destroyed" not in log
    assert "snapshot: observed 1" in log


def test_serve_snapshots_tracked_projects_of_an_extra_registry(graph, tmp_path):
    with FakePyPI() as corp:
        corp.add_wheel("corp", "1.0", upload_time="2023-01-01T00:00:00Z")
        corp.add_wheel("alpha", "9.0", upload_time="2023-01-01T00:00:00Z")  # not tracked there
        config = write_config(
            tmp_path / "proxy.toml",
            simple_url=graph.simple_url, json_url=graph.json_url, files_url=graph.files_url,
            upstream_timeout="5s",
            extra=f'[snapshot]\ninterval = "1h"\ntrack = ["corp:corp", "alpha"]\n\n'
                  f'[[registry]]\nname = "corp"\nurl = "{corp.simple_url}"\n',
        )
        with Proxy(data_dir=tmp_path / "data", config=config) as p:
            wait_for(lambda: "snapshot: observed" in "".join(p.log), what="the first snapshot")
        assert corp.requests_for("/simple/corp/") and not corp.requests_for("/simple/alpha/")
        assert graph.requests_for("/simple/alpha/") and not graph.requests_for("/simple/corp/")
    assert "snapshot: observed 2, changed 2," in "".join(p.log)
    history = HistoryStore(tmp_path / "data" / "history.sqlite3")
    assert history.projects() == [("corp", "corp"), ("pypi", "alpha")]


def test_tracked_takes_registry_and_project_from_each_track_entry(tmp_path):
    config = parse({
        "snapshot": {"track": ["corp:Corp", "alpha", "pypi:beta"]},
        "registry": [{"name": "corp", "url": "https://corp.test/simple/"}],
    })
    history = HistoryStore(tmp_path / "history.sqlite3")
    assert [(registry.name, name) for registry, name in tracked(config, history)] == [
        ("corp", "corp"), ("pypi", "alpha"), ("pypi", "beta"),
    ]


def test_a_snapshot_interval_of_zero_never_snapshots(graph, tmp_path):
    config = config_for(graph, tmp_path / "data", track=("alpha",),
                        snapshot_interval=parse({"snapshot": {"interval": "0"}}).snapshot_interval)

    async def main() -> None:
        async with runtime(config) as rt:
            # Returns at once; any other interval snapshots at once (there was no last run)
            # and keeps going until cancelled, so this would time out.
            await asyncio.wait_for(keep_snapshotting(rt.index), 5)
            assert await asyncio.to_thread(rt.history.last_snapshot_run) is None

    asyncio.run(main())
    assert graph.requests_for("/simple/") == []


def test_first_snapshot_of_a_server_is_due_an_interval_after_the_last():
    now = datetime(2025, 1, 2, tzinfo=UTC)
    day = 86400.0
    assert first_delay(None, now, day) == 0
    assert first_delay(now - timedelta(days=2), now, day) == 0
    assert first_delay(now - timedelta(hours=20), now, day) == 4 * 3600


# -- the service layer: any observation rescues --------------------------------------------------


def config_for(fake: FakePyPI, data_dir: Path, **changes: object) -> Config:
    pypi = Registry("pypi", fake.simple_url, json_url=fake.json_url)
    base = Config(data_dir=data_dir, pypi=pypi, files_url=fake.files_url, live_ttl=0.0,
                  upstream_timeout=5.0)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_request_that_sees_a_file_go_rescues_it(graph, tmp_path):
    gone = graph.file("alpha-2.0-py3-none-any.whl")

    async def main() -> None:
        async with runtime(config_for(graph, tmp_path / "data")) as rt:
            pypi = rt.config.pypi
            await rt.index.answer(pypi, "alpha", LIVE)
            graph.keep_serving_deleted_files = True
            graph.delete(gone.filename)
            answer = await rt.index.answer(pypi, "alpha", LIVE)  # live: observes, sees it go
            assert gone.filename not in [f.filename for f in answer.view.files]
            await rt.index.drain()
            assert rt.store.has(gone.sha256) and rt.store.is_irreplaceable(gone.sha256)
            assert rt.store.is_irreplaceable(gone.metadata_sha256 or "")
            assert await asyncio.to_thread(rt.history.unkept, "pypi", "alpha", 5) == []

    asyncio.run(main())


def test_an_unexpected_error_on_one_project_does_not_end_the_run(graph, tmp_path, monkeypatch):
    from datepin.snapshotter import snapshot

    async def main() -> tuple[str, list[tuple[str, str]], bool]:
        async with runtime(config_for(graph, tmp_path / "data")) as rt:
            observe = rt.index.observe

            async def observe_or_break(registry: Registry, name: str) -> object:
                if name == "alpha":
                    raise KeyError("a bug")
                return await observe(registry, name)

            monkeypatch.setattr(rt.index, "observe", observe_or_break)
            pypi = rt.config.pypi
            summary = await snapshot(rt.index, [(pypi, "alpha"), (pypi, "beta")], concurrency=1)
            seen = await asyncio.to_thread(rt.history.last_observed, "pypi", "beta") is not None
            return summary.line(), summary.failures, seen

    line, failures, beta_seen = asyncio.run(main())
    assert line.startswith("observed 1,") and line.endswith("failures 1")
    assert failures == [("alpha", "internal error: KeyError: 'a bug'")]
    assert beta_seen


def test_a_rescue_cut_short_is_retried_by_the_next_snapshot(graph, tmp_path):
    gone = graph.file("alpha-2.0-py3-none-any.whl")
    config = config_for(graph, tmp_path / "data")

    async def observe_deletion_then_crash() -> None:
        async with runtime(config) as rt:
            await rt.index.observe(config.pypi, "alpha")
            graph.delete(gone.filename)  # and upstream does not serve it for now
            await rt.index.observe(config.pypi, "alpha")
            await rt.index.drain()  # the rescue failed (404)

    async def snapshot_later() -> tuple[str, bool]:
        from datepin.snapshotter import snapshot_tracked

        async with runtime(config) as rt:
            summary = await snapshot_tracked(rt.index)
            return summary.line(), rt.store.is_irreplaceable(gone.sha256) and rt.store.has(gone.sha256)

    asyncio.run(observe_deletion_then_crash())
    graph.keep_serving_deleted_files = True
    line, kept = asyncio.run(snapshot_later())
    assert line == "observed 1, changed 0, files gone 0, files rescued 1, failures 0"
    assert kept


# -- determinism through the Index ---------------------------------------------------------------

T0 = datetime(2024, 1, 1, tzinfo=UTC)
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["add", "backfill", "delete", "yank", "unyank", "remove", "restore",
                         "observe", "live", "pinned"]),
        st.integers(0, 4),
        st.integers(1, 72),  # hours until the event
    ),
    min_size=1,
    max_size=20,
)
_projects = itertools.count()


@settings(max_examples=25,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=EVENTS, probe_hours=st.lists(st.integers(-48, 24 * 60), min_size=1, max_size=5))
def test_views_served_through_the_index_never_change(fake_pypi, tmp_path_factory, events, probe_hours):
    """Random upstream changes (adds, backfills, deletions, yanks, project removal) interleaved
    with snapshots, live and pinned requests through the Index: every view served for a cutoff
    at or before the project's last observation is byte-identical when asked again at the end,
    and every file that went away upstream is kept in the store, irreplaceable."""
    fake = fake_pypi
    fake.keep_serving_deleted_files = True
    name = f"p{next(_projects)}"
    config = config_for(fake, tmp_path_factory.mktemp("data"))
    clock = [T0]

    def link(f: object) -> str:
        return "/files/" + getattr(f, "filename")

    def rendered(v: View) -> tuple[bytes, bytes]:
        return render_json(v, link), render_html(v, link)

    async def main() -> None:
        served: dict[datetime, tuple[bytes, bytes]] = {}
        listed: dict[str, str] = {}  # filename -> sha256 of every file ever uploaded
        live: set[str] = set()  # filenames upstream lists now
        removed = False
        async with runtime(config, clock=lambda: clock[0]) as rt:
            pypi, index = config.pypi, rt.index
            for action, n, hours in events:
                clock[0] += timedelta(hours=hours)
                now = clock[0]
                version = f"1.{n}"
                filename = f"{name}-{version}-py3-none-any.whl"
                if action == "add" and filename not in listed and not removed:
                    f = fake.add_wheel(name, version, upload_time=now - timedelta(minutes=1))
                    listed[f.filename] = f.sha256
                    live.add(f.filename)
                elif action == "backfill" and not removed:
                    version = f"0.{n}.{len(listed)}"
                    f = fake.add_wheel(name, version, upload_time=T0 - timedelta(days=n + 1))
                    listed[f.filename] = f.sha256
                    live.add(f.filename)
                elif action == "delete" and filename in live:
                    fake.delete(filename)
                    live.discard(filename)
                elif action in ("yank", "unyank") and filename in live:
                    (fake.yank if action == "yank" else fake.unyank)(filename)
                elif action == "remove" and not removed and live:
                    fake.remove_project(name)
                    live.clear()
                    removed = True
                elif action == "restore" and removed:
                    removed = False  # a new upload brings the project back
                    f = fake.add_wheel(name, f"2.{len(listed)}", upload_time=now - timedelta(minutes=1))
                    listed[f.filename] = f.sha256
                    live.add(f.filename)
                try:
                    if action == "live":
                        await index.answer(pypi, name, LIVE)
                    elif action == "pinned":
                        cutoff = T0 + timedelta(hours=probe_hours[n % len(probe_hours)])
                        if cutoff <= now:
                            await index.answer(pypi, name, Pin(format_time(cutoff), cutoff))
                    else:
                        await index.observe(pypi, name)
                except NotObserved:
                    pass
                history = await asyncio.to_thread(rt.history.load, "pypi", name)
                if history is None:
                    continue
                for h in probe_hours:
                    cutoff = T0 + timedelta(hours=h)
                    if cutoff not in served and is_fixed(history, cutoff):
                        answer = await index.answer(pypi, name, Pin(format_time(cutoff), cutoff))
                        served[cutoff] = rendered(answer.view)
            await index.drain()

            fake.keep_serving_deleted_files = False
            fake.clear_log()
            again = Index(config, rt.history, rt.upstream, clock=lambda: clock[0])
            for cutoff, expected in served.items():
                try:
                    answer = await again.answer(pypi, name, Pin(format_time(cutoff), cutoff))
                except NotObserved:
                    # Only a view that never had a file may turn into "not observed".
                    assert b'"files":[]' in expected[0].replace(b" ", b""), (cutoff, expected[0])
                    continue
                assert rendered(answer.view) == expected
            assert fake.requests_for(f"/simple/{name}/") == []  # fixed views: from history alone
            for filename, sha in listed.items():
                if filename not in live:
                    assert rt.store.has(sha) and rt.store.is_irreplaceable(sha), filename

    asyncio.run(main())


# -- durability ----------------------------------------------------------------------------------


def test_kill_9_during_a_snapshot_leaves_the_store_consistent(fake_pypi, proxy_config, tmp_path):
    names = [f"proj{i}" for i in range(30)]
    for name in names:
        fake_pypi.add_wheel(name, "1.0", upload_time="2023-01-01T00:00:00Z", payload_size=200_000)
        fake_pypi.add_wheel(name, "2.0", upload_time="2023-06-01T00:00:00Z", payload_size=200_000)
    data = tmp_path / "data"
    seeded = cli(proxy_config, data, "snapshot", *names)
    assert seeded.exit_code == 0, seeded.stderr

    fake_pypi.keep_serving_deleted_files = True
    for name in names:
        fake_pypi.delete(f"{name}-1.0-py3-none-any.whl")
    fake_pypi.fault("/simple/", "stall", seconds=0.05, times=None)
    fake_pypi.fault("/files/", "stall_body", seconds=0.2, times=None)
    fake_pypi.clear_log()
    cmd = [sys.executable, "-m", "datepin", "snapshot", "--all",
           "--config", str(proxy_config), "--data-dir", str(data)]
    victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(fake_pypi.requests_for("/files/")) >= 6, what="rescues under way")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    observed_before_kill = len(fake_pypi.requests_for("/simple/"))
    assert 0 < observed_before_kill < len(names)

    for db in (data / "history.sqlite3", data / "blobs" / "meta.sqlite3"):
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    verified = cli(proxy_config, data, "cache", "verify")
    assert verified.exit_code == 0, verified.stderr
    assert "0 corrupt or missing" in verified.stdout

    fake_pypi.clear_faults()
    again = cli(proxy_config, data, "snapshot", "--all")
    assert again.exit_code == 0, again.stderr
    with sqlite3.connect(data / "history.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM snapshot_runs").fetchone() == (1,)
    history = HistoryStore(data / "history.sqlite3")
    assert all(history.unkept("pypi", name, 5) == [] for name in names)  # all rescued by now
    assert {name for _, name in tracked(config_for(fake_pypi, data), history)} == set(names)

    fake_pypi.keep_serving_deleted_files = False
    with Proxy(data_dir=data, config=proxy_config) as p:
        for name in names[::7]:
            page = p.get(f"/2023-07-01/simple/{name}/", {"Accept": JSON})
            assert page.status == 200
            old = files_of(page.body)[f"{name}-1.0-py3-none-any.whl"]
            assert fetch(str(old["url"])).status == 200  # deleted upstream, kept here


def test_a_page_the_snapshot_cli_asked_for_first_and_recorded_last_changes_no_view(
    fake_pypi, proxy, proxy_config, tmp_path
):
    """`datepin snapshot` beside the server, on its data directory: the snapshot asks first,
    a file is uploaded, the server asks and records; then the snapshot records its older page.
    That page must not record the new file as deleted (hiding it from every later pin)."""
    name = "raced"
    old = fake_pypi.add_wheel(name, "1.0", upload_time="2023-01-01T00:00:00Z")
    assert proxy.get(f"/live/simple/{name}/", {"Accept": JSON}).status == 200
    fake_pypi.clear_log()
    fake_pypi.fault(f"/simple/{name}/", "stall", seconds=2)
    env = {k: v for k, v in os.environ.items() if k != "DATEPIN_CONFIG"}
    snapshot = subprocess.Popen(
        [sys.executable, "-m", "datepin", "snapshot", name,
         "--config", str(proxy_config), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        wait_for(lambda: fake_pypi.requests_for(f"/simple/{name}/"), what="the snapshot's request")
        new = fake_pypi.add_wheel(name, "1.1", upload_time="2023-02-01T00:00:00Z")
        live = proxy.get(f"/live/simple/{name}/", {"Accept": JSON})
        assert set(files_of(live.body)) == {old.filename, new.filename}
        out, err = snapshot.communicate(timeout=60)
    finally:
        snapshot.kill()
    assert snapshot.returncode == 0, err
    assert "files gone 0" in out, out
    pin = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # after both observations
    pinned = proxy.get(f"/{pin}/simple/{name}/", {"Accept": JSON})
    assert pinned.status == 200
    assert set(files_of(pinned.body)) == {old.filename, new.filename}


# -- an observation that spans a cutoff ----------------------------------------------------------


def _upload_during_a_slow_observation(fake: FakePyPI, tmp_path: Path, *, join: bool) -> None:
    """Upstream builds the page when the fetch starts (the stall fault answers it later); a
    wheel uploaded while the page is on its way, before the cutoff, must be in the pinned
    view, now and after the next observation."""
    clock = [T0]
    name = "slowpage"
    fake.add_wheel(name, "1.0", upload_time=T0 - timedelta(days=1))
    config = config_for(fake, tmp_path / "data")
    late = f"{name}-2.0-py3-none-any.whl"
    cutoff = T0 + timedelta(hours=1, minutes=2)
    pin = Pin(format_time(cutoff), cutoff)

    async def main() -> tuple[list[str], list[str]]:
        async with runtime(config, clock=lambda: clock[0]) as rt:
            pypi, index = config.pypi, rt.index
            await index.answer(pypi, name, LIVE)  # first observation, at T0
            clock[0] = T0 + timedelta(hours=1)
            fake.clear_log()
            fake.fault(f"/simple/{name}/", "stall", seconds=1.0)
            slow = asyncio.create_task(index.observe(pypi, name))  # a snapshot, begun at T0+1h
            while not fake.requests_for(f"/simple/{name}/"):
                await asyncio.sleep(0.01)  # upstream has built its page
            fake.add_wheel(name, "2.0", upload_time=T0 + timedelta(hours=1, minutes=1))
            clock[0] = T0 + timedelta(hours=1, minutes=3)  # the cutoff is over
            if join:  # the pinned request joins the fetch in flight
                first = await index.answer(pypi, name, pin)
                await slow
            else:  # it comes after the snapshot has recorded the page
                await slow
                first = await index.answer(pypi, name, pin)
            clock[0] = T0 + timedelta(hours=2)
            await index.observe(pypi, name)  # the next snapshot lists the new wheel
            again = Index(config, rt.history, rt.upstream, clock=lambda: clock[0])
            later = await again.answer(pypi, name, pin)
            return ([f.filename for f in first.view.files], [f.filename for f in later.view.files])

    first, later = asyncio.run(main())
    assert late in first, f"uploaded before the cutoff, missing from the pinned view: {first}"
    assert first == later


def test_a_pinned_request_that_joins_a_fetch_begun_before_its_cutoff(fake_pypi, tmp_path):
    _upload_during_a_slow_observation(fake_pypi, tmp_path, join=True)


def test_an_observation_begun_before_a_cutoff_does_not_describe_it(fake_pypi, tmp_path):
    _upload_during_a_slow_observation(fake_pypi, tmp_path, join=False)


def test_a_request_that_sees_a_private_file_go_rescues_it(fake_pypi, tmp_path):
    """Passthrough registries are observed only by requests, with the client's credentials;
    a file such a request sees going away must be kept all the same (README: "whoever
    notices the deletion first: the snapshot or a request")."""
    private = fake_pypi
    private.require_bearer = "tok"
    gone = private.add_wheel("secret", "1.0", upload_time="2023-01-01T00:00:00Z")
    private.add_wheel("secret", "2.0", upload_time="2023-06-01T00:00:00Z")
    corp = Registry("corp", private.simple_url, auth="passthrough")
    config = config_for(private, tmp_path / "data", registries=(corp,))
    client = "Bearer tok"

    async def main() -> None:
        async with runtime(config) as rt:
            await rt.index.authorize(corp, "secret", client)
            await rt.index.answer(corp, "secret", LIVE, authorization=client)
            private.keep_serving_deleted_files = True
            private.delete(gone.filename)
            answer = await rt.index.answer(corp, "secret", LIVE, authorization=client)
            assert gone.filename not in [f.filename for f in answer.view.files]
            await rt.index.drain()
            assert rt.store.has(gone.sha256) and rt.store.is_irreplaceable(gone.sha256)

    asyncio.run(main())
