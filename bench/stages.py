"""The five measurements of `bench/run`, each next to its baseline from the same run.

Every function takes what it needs (the fixture, the static upstream, a running datepin, the
scale) and returns a plain dict for results.json.  Nothing here prints tables.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from clients import client_env, make_venv, uv_bin, venv_python
from clients import run as run_client
from fixture import JSON_TYPE, PIN, Fixture, write_page
from procs import Datepin, Keeper, Relay, StaticServer, cpu_seconds, download, run_load
from proxyproc import fetch

# What pip 24+ and uv send for index pages.
PAGE_HEADERS = {
    "Accept": f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
    "Accept-Encoding": "gzip, deflate",
}
MB = 1e6

Log = Callable[[str], None]


@dataclass(frozen=True)
class Scale:
    """How much of each measurement to do (full run or --quick)."""

    repeats: int = 7  # single downloads and snapshots, per mode
    # End-to-end installs per mode: the stage reports the median of each repetition's ratios,
    # and one uv cold/direct ratio ranged from 1.25 to 2.10 within a run of seven.
    installs: int = 11
    load_requests: int = 5_000
    load_seconds: float = 5.0
    concurrency: tuple[int, ...] = (1, 16, 64)
    growth_requests: int = 200
    growth_seconds: float = 4.0
    days: int = 100  # simulated days of unchanged observations
    days_largest: int = 10  # ... for the largest growth project (each record reads it all)
    snapshot_concurrency: int = 8
    cold_page_rounds: int = 3  # fresh datepin and relay each, every snapshot project's page


QUICK_SCALE = Scale(
    repeats=1, installs=1, load_requests=300, load_seconds=1.0, growth_requests=30, growth_seconds=1.0,
    days=10, days_largest=3, cold_page_rounds=1,
)


def timed_fetch(url: str, headers: dict[str, str] | None = None) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    r = fetch(url, headers=headers or PAGE_HEADERS)
    elapsed = time.perf_counter() - t0
    if r.status != 200:
        raise RuntimeError(f"{url}: HTTP {r.status}: {r.body[:300]!r}")
    return elapsed, r.body


def page_json(url: str) -> dict[str, object]:
    r = fetch(url, headers={"Accept": JSON_TYPE})
    if r.status != 200:
        raise RuntimeError(f"{url}: HTTP {r.status}: {r.body[:300]!r}")
    doc: dict[str, object] = json.loads(r.body)
    return doc


# -- 1. index pages --------------------------------------------------------------------------


def index_pages(
    fx: Fixture, static: StaticServer, relay: Relay, dp: Datepin, scale: Scale, log: Log
) -> dict[str, object]:
    """Latency and throughput of a pinned page already in history, against the static server
    sending a file with the very bytes datepin answers (so: the same size), and against
    mitmproxy alone relaying that file."""
    project = fx.packages[0]
    url = f"{dp.index(PIN)}{project}/"
    fetch(url, headers=PAGE_HEADERS)  # in history (and in datepin's caches) from now on
    plain = fetch(url, headers={"Accept": PAGE_HEADERS["Accept"]}).body
    write_page(fx.root / "same" / f"{project}.json", plain)
    same = f"{static.url}/same/{project}.json"
    result: dict[str, object] = {"project": project, "page_bytes": len(plain)}
    for c in scale.concurrency:
        requests = scale.load_requests if c > 1 else scale.load_requests // 2
        kw = dict(concurrency=c, requests=requests, seconds=scale.load_seconds, headers=PAGE_HEADERS)
        ours, base = run_load(url, **kw), run_load(same, **kw)
        relayed = run_load(f"{relay.url}/same/{project}.json", **kw)
        for r in (ours, base, relayed):
            if r["errors"]:
                raise RuntimeError(f"index page load: {r['errors']} errors, e.g. {r['first_error']}")
        result[f"c{c}"] = {"datepin": ours, "static": base, "relay": relayed}
        log(f"pages c={c}: datepin p50 {ours['p50_ms']} ms {ours['rps']} req/s; "
            f"static p50 {base['p50_ms']} ms {base['rps']} req/s; "
            f"mitmproxy alone p50 {relayed['p50_ms']} ms {relayed['rps']} req/s")
    return result


def cold_pages(fx: Fixture, static: StaticServer, scale: Scale, work: Path, log: Log) -> dict[str, object]:
    """What a project page costs a proxy the first time it is asked for, in CPU per page: a
    fresh datepin (fetch, read, record, view, render) against the aiohttp relay (fetch and
    pass on), the snapshot's small pages asked for as many at once as a snapshot does.  A
    cold install's forty pages, as one figure its noise does not hide."""
    ours, relayed = [], []
    for i in range(scale.cold_page_rounds):
        dp = Datepin(work / f"cold-pages-{i}", static.url)
        with dp:
            assert dp.proxy is not None and dp.proxy.process is not None
            ours.append(_page_burst(dp.proxy.process.pid, f"{dp.url}/{PIN}", fx.snapshot, scale))
        shutil.rmtree(dp.data_dir, ignore_errors=True)
        with Keeper(static.url) as relay:
            assert relay.process is not None
            relayed.append(_page_burst(relay.process.pid, relay.url, fx.snapshot, scale))
    out = {
        "pages": len(fx.snapshot),
        "concurrency": scale.snapshot_concurrency,
        "datepin_cpu_ms": round(statistics.median(cpu for cpu, _ in ours), 3),
        "relay_cpu_ms": round(statistics.median(cpu for cpu, _ in relayed), 3),
        "datepin_pages_per_s": round(statistics.median(rate for _, rate in ours), 1),
        "relay_pages_per_s": round(statistics.median(rate for _, rate in relayed), 1),
    }
    log(f"cold pages: datepin {out['datepin_cpu_ms']} ms of CPU a page ({out['datepin_pages_per_s']}"
        f" pages/s), the aiohttp relay {out['relay_cpu_ms']} ms ({out['relay_pages_per_s']} pages/s)")
    return out


def _page_burst(pid: int, base: str, projects: list[str], scale: Scale) -> tuple[float, float]:
    """Every project's page once through the proxy `pid` serving `base`: its CPU in ms a
    page, and pages a second."""
    before = cpu_seconds(pid)
    seconds = asyncio.run(_fetch_all(base, projects, scale.snapshot_concurrency))
    after = cpu_seconds(pid)
    if before is None or after is None:
        raise RuntimeError("cannot read the proxy's CPU time from /proc")
    return 1000 * (after - before) / len(projects), len(projects) / seconds


# -- 2. growth -------------------------------------------------------------------------------


def growth(fx: Fixture, static: StaticServer, dp: Datepin, scale: Scale, work: Path, log: Log) -> dict[str, object]:
    sizes: dict[str, dict[str, object]] = {}
    for count, project in fx.growth.items():
        first, _ = timed_fetch(f"{dp.index(PIN)}{project}/")
        sizes[str(count)] = {"project": project, "first_observe_ms": round(first * 1000, 1)}
    dp.restart()  # what follows reads history, not datepin's memory
    for count, project in fx.growth.items():
        entry = sizes[str(count)]
        url = f"{dp.index(PIN)}{project}/"
        t, body = timed_fetch(url)
        entry["first_from_history_ms"] = round(t * 1000, 1)
        entry["page_bytes_gz"] = len(body)
        kw = dict(concurrency=1, requests=scale.growth_requests, seconds=scale.growth_seconds,
                  headers=PAGE_HEADERS)
        entry["datepin"] = run_load(url, **kw)
        entry["static"] = run_load(f"{static.url}/simple/{project}/", **kw)
        entry.update(history_bytes(fx, project, scale, work, days=scale.days_largest
                                   if count == max(fx.growth) else scale.days))
        log(f"growth {count} files: first {entry['first_observe_ms']} ms (observe), "
            f"{entry['first_from_history_ms']} ms (from history), p50 {entry['datepin']['p50_ms']} ms "
            f"(static {entry['static']['p50_ms']} ms); history {entry['history_bytes']} B, "
            f"{entry['bytes_per_day']} B/day")
    return {"pin": PIN, "sizes": sizes}


def history_bytes(fx: Fixture, project: str, scale: Scale, work: Path, *, days: int) -> dict[str, object]:
    """History bytes of one project, and what a day of unchanged observations adds.

    A scratch HistoryStore of its own, so the bytes are the project's alone; days are
    simulated by recording the same page with successive dates (what the daily snapshot
    records).  Bytes are those SQLite uses in its pages (dbstat: page size minus free space),
    so that a few days' growth shows although the file grows a page at a time."""
    from datepin.history import HistoryStore
    from datepin.rewrite.parse import parse_json_page

    page_file = fx.root / "simple" / project / "index.json"
    page = parse_json_page(page_file.read_bytes(), f"http://upstream.invalid/simple/{project}/")
    directory = work / f"history-{project}"
    shutil.rmtree(directory, ignore_errors=True)
    store = HistoryStore(directory / "history.sqlite3")
    try:
        empty = _used_bytes(store)
        day0 = datetime(2026, 1, 1, tzinfo=UTC)
        store.record("pypi", project, page, day0)
        once, file_size = _used_bytes(store), store.size_bytes()
        t0 = time.perf_counter()
        for day in range(1, days + 1):
            store.record("pypi", project, page, day0 + timedelta(days=day))
        record_s = (time.perf_counter() - t0) / days
        after = _used_bytes(store)
    finally:
        store.close()
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "history_bytes": once - empty,
        "history_file_bytes": file_size,
        "days_simulated": days,
        "bytes_per_day": round((after - once) / days, 1),
        "record_unchanged_ms": round(record_s * 1000, 2),
    }


def _used_bytes(store: object) -> int:
    db = store._db()  # type: ignore[attr-defined]
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (used,) = db.execute("SELECT sum(pgsize - unused) FROM dbstat").fetchone()
    return int(used)


def merge_peaks(into: Datepin, other: Datepin) -> None:
    for label, kib in other.peaks.items():
        into.peaks[label] = max(into.peaks.get(label, 0), kib)


# -- 3. files --------------------------------------------------------------------------------


def _fills(dp: Datepin) -> int:
    for line in fetch(f"{dp.url}/-/metrics").body.decode().splitlines():
        if line.startswith("datepin_files_fills_total "):
            return int(line.split()[1])
    return 0


def _wait_fills(dp: Datepin, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _fills(dp) < at_least:
        if time.monotonic() > deadline:
            raise RuntimeError("the fill did not commit")
        time.sleep(0.05)


def _huge_link(fx: Fixture, dp: Datepin) -> tuple[str, int]:
    doc = page_json(f"{dp.index(PIN)}{fx.huge}/")
    [entry] = doc["files"]  # type: ignore[misc]
    return entry["url"], entry["size"]


def files(
    fx: Fixture, static: StaticServer, relay: Relay, dp: Datepin, scale: Scale, work: Path, log: Log
) -> dict[str, object]:
    """The 1 GiB wheel through the full proxy (`/files/...` from a pinned page) vs static,
    and vs mitmproxy alone relaying it from static."""
    link, size = _huge_link(fx, dp)
    path = f"/packages/{fx.huge}/{fx.huge_filename}"
    direct = f"{static.url}{path}"
    n = scale.repeats

    def rate(seconds: float, parallel: int = 1) -> float:
        return round(size * parallel / seconds / MB, 1)

    out: dict[str, object] = {"bytes": size}
    out["static_single"] = max(rate(download(direct)) for _ in range(n))
    out["static_x4"] = rate(download(direct, 4), 4)
    out["relay_single"] = max(rate(download(f"{relay.url}{path}")) for _ in range(n))
    out["relay_x4"] = rate(download(f"{relay.url}{path}", 4), 4)

    fills = _fills(dp)
    dp.phase("files: cold fill")
    out["cold_single"] = rate(download(link))
    _wait_fills(dp, fills + 1)
    out["rss_cold_single_mb"] = dp.peak_mb("files: cold fill")

    dp.phase("files: hit")
    out["hit_single"] = max(rate(download(link)) for _ in range(n))
    out["rss_hit_single_mb"] = dp.peak_mb("files: hit")
    dp.phase("files: hit x4")
    out["hit_x4"] = rate(download(link, 4), 4)
    out["rss_hit_x4_mb"] = dp.peak_mb("files: hit x4")

    # Four clients at once on a file nobody has: one upstream download, four tails.
    cold = Datepin(work / "files-cold", dp.upstream)
    with cold:
        link4, _ = _huge_link(fx, cold)
        cold.phase("files: cold fill x4 (fresh datepin)")
        out["cold_x4"] = rate(download(link4, 4), 4)
        _wait_fills(cold, 1)
        out["rss_cold_x4_mb"] = cold.peak_mb("files: cold fill x4 (fresh datepin)")
    shutil.rmtree(cold.data_dir, ignore_errors=True)
    merge_peaks(dp, cold)
    log(f"files MB/s: static {out['static_single']} (x4 {out['static_x4']}), mitmproxy alone "
        f"{out['relay_single']} (x4 {out['relay_x4']}), hit {out['hit_single']} "
        f"(x4 {out['hit_x4']}), cold {out['cold_single']} (x4 {out['cold_x4']}); RSS MB: "
        f"cold {out['rss_cold_single_mb']}, hit {out['rss_hit_single_mb']}, hit x4 {out['rss_hit_x4_mb']}, "
        f"cold x4 {out['rss_cold_x4_mb']}")
    return out


# -- 4. end to end ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Install:
    """One timed install: its wall time, the CPU time used while it ran by the client (with
    its children) and by each watched process, and for uv the time of each of its phases as
    it reports them (seconds): `resolve` (every page and `.metadata` file it asks for),
    `prepare` (downloading and unpacking the wheels), `install` (into the venv)."""

    seconds: float
    cpu: dict[str, float | None]
    phases: dict[str, float]


# What uv prints after each phase, unless told to be quiet: "Resolved 40 packages in 92ms".
_UV_PHASE = re.compile(r"^(Resolved|Prepared|Installed) \d+ packages? in ([\d.]+)(ms|s)$", re.MULTILINE)
_PHASE_NAMES = {"Resolved": "resolve", "Prepared": "prepare", "Installed": "install"}


def uv_phases(output: str) -> dict[str, float]:
    """uv's phase times (seconds) from what `uv pip install` printed."""
    return {
        _PHASE_NAMES[verb]: float(amount) / (1000 if unit == "ms" else 1)
        for verb, amount, unit in _UV_PHASE.findall(output)
    }


def drop_cached(root: Path) -> None:
    """Write back what is under `root` and drop it from the page cache; the files stay.

    On this VM (KVM, free pages handed back to the host) a page the page cache takes from
    free memory costs about ten times more to write the first time than one freed a moment
    ago: writing 500 MB went from 0.11 s to 1.0-1.5 s once the page cache had grown by 1 GB,
    and stayed at 0.10-0.16 s when each step's file was dropped from the cache after it.
    The e2e stage keeps everything it writes (see `end_to_end`), so without this each
    install wrote into colder memory than the one before it, and the modes that write the
    most (a cold datepin's blobs) paid the most."""
    os.sync()
    if not hasattr(os, "posix_fadvise"):
        return
    for directory, _, names in os.walk(root):
        for name in names:
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:  # a symbolic link, or gone meanwhile
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _install(client: str, index: str, packages: list[str], venv: Path, watch: Mapping[str, int]) -> Install:
    """A fresh environment at `venv` (a path not used before), then one timed install with no
    client cache, watching the CPU time of the processes in `watch` (name -> pid).  The
    environment is left for the caller to delete once nothing is timed."""
    if client == "uv":
        run_client([uv_bin(), "venv", "-q", "--python", sys.executable, str(venv)])
        # Not quiet: the lines it prints give each phase's time (`uv_phases`).
        cmd = [uv_bin(), "pip", "install", "--python", str(venv_python(venv)),
               "--index-url", index, *packages]
    else:
        make_venv(venv)
        cmd = [sys.executable, "-m", "pip", "--python", str(venv_python(venv)), "install", "-q",
               "--progress-bar", "off", "--index-url", index, *packages]
    # Dirty pages of earlier runs (a cold datepin writes 110 MB, the venvs more) are written
    # back now rather than during this one.
    os.sync()
    before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = run_client(cmd, timeout=600)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu: dict[str, float | None] = {
        "client": after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    }
    for name, pid in watch.items():
        now, then = cpu_seconds(pid), before[name]
        cpu[name] = None if now is None or then is None else now - then
    installed = list(venv.glob("lib/python*/site-packages/*.dist-info"))
    if len(installed) != len(packages):
        raise RuntimeError(f"{client} installed {len(installed)} of {len(packages)} projects")
    drop_cached(venv)
    return Install(elapsed, cpu, uv_phases(done.stderr) if client == "uv" else {})


Runs = dict[str, dict[str, list[Install]]]  # client -> mode -> one Install per repetition


def _end_to_end_runs(
    static: StaticServer, dp: Datepin, scale: Scale, servers: dict[str, tuple[str, int | None]],
    made: Path, install: Callable[[str, str, Mapping[str, int]], Install],
) -> Runs:
    """Installs by client and mode: through each of `servers` (mode -> index URL and the pid of
    the process serving it, None for the static server itself), through a fresh relay keeping
    files (bench/keeper.py: like a cold datepin, no upstream connection open yet), and cold (a
    fresh datepin).  The static server's CPU is watched in every mode, the proxy's in each
    mode that has one."""
    assert static.process is not None
    upstream = static.process.pid

    def watched(proxy: int | None) -> dict[str, int]:
        return {"upstream": upstream} | ({"proxy": proxy} if proxy is not None else {})

    for client in ("uv", "pip"):  # warm-up: history and blobs for the warm runs
        install(client, dp.index(PIN), {})
    modes = [*servers, "keeping", "cold"]
    runs: Runs = {c: {m: [] for m in modes} for c in ("uv", "pip")}
    for rep in range(scale.installs):
        # Each rep starts at another mode, so that no mode is always measured last.
        order = modes[rep % len(modes):] + modes[: rep % len(modes)]
        for client in ("uv", "pip"):
            for mode in order:
                if mode == "keeping":
                    with Keeper(static.url, made / f"kept-{client}-{rep}") as keeping:
                        assert keeping.process is not None
                        runs[client][mode].append(
                            install(client, f"{keeping.url}/simple/", watched(keeping.process.pid)))
                    drop_cached(made / f"kept-{client}-{rep}")
                    continue
                if mode != "cold":
                    url, pid = servers[mode]
                    runs[client][mode].append(install(client, url, watched(pid)))
                    continue
                cold = Datepin(made / f"cold-{client}-{rep}", static.url)
                with cold:
                    assert cold.proxy is not None and cold.proxy.process is not None
                    cold.phase("e2e: cold installs (fresh datepin)")
                    runs[client]["cold"].append(
                        install(client, cold.index(PIN), watched(cold.proxy.process.pid)))
                drop_cached(cold.data_dir)
                merge_peaks(dp, cold)
    return runs


def end_to_end(
    fx: Fixture, static: StaticServer, relay: Relay, dp: Datepin, scale: Scale, work: Path, log: Log
) -> dict[str, object]:
    """uv and pip installs of every installable project: direct, through mitmproxy alone,
    through a plain aiohttp relay and one that keeps files (bench/keeper.py), through datepin
    warm, and through datepin cold (a fresh data dir each time).  Runs interleaved; median of
    each, with the CPU time each process used meanwhile."""
    # Nothing made here is deleted before the stage ends.  On ext4 without a journal (this
    # machine's disk) the allocator skips inodes freed in the last seconds, so each file an
    # install creates cost more after a delete: with the last environment (300 files) and
    # cold data dir deleted before each run, uv direct went 0.32 -> 0.72 s over eight runs and
    # cold/direct read 1.33x; with nothing deleted, direct stayed at 0.26-0.32 s and
    # cold/direct read 1.49x (8 interleaved pairs each).  What each install wrote is dropped
    # from the page cache after it instead (`drop_cached`), so that it does not pile up.
    made = work / "e2e"
    count = itertools.count()

    def install(client: str, index: str, watch: Mapping[str, int]) -> Install:
        return _install(client, index, fx.packages, made / f"venv-{next(count)}", watch)

    made.mkdir(parents=True)
    try:
        with Keeper(static.url) as plain:
            assert relay.process is not None and plain.process is not None
            assert dp.proxy is not None and dp.proxy.process is not None
            servers = {
                "direct": (f"{static.url}/simple/", None),
                "relay": (f"{relay.url}/simple/", relay.process.pid),
                "plain": (f"{plain.url}/simple/", plain.process.pid),
                "warm": (dp.index(PIN), dp.proxy.process.pid),
            }
            runs = _end_to_end_runs(static, dp, scale, servers, made, install)
    finally:
        shutil.rmtree(made, ignore_errors=True)
    out: dict[str, object] = {"projects": len(fx.packages), "runs": scale.installs}
    for client, modes in runs.items():
        times = {mode: [i.seconds for i in installs] for mode, installs in modes.items()}
        med = {mode: round(statistics.median(ts), 3) for mode, ts in times.items()}
        # Ratios within each repetition, whose installs ran a minute apart at most: whatever
        # else the machine does over a stage weighs on both sides alike.
        pairs = [("relay", "direct"), ("plain", "direct"), ("keeping", "direct"), ("warm", "direct"),
                 ("cold", "direct"), ("warm", "relay"), ("cold", "relay"), ("cold", "keeping")]
        out[client] = {
            **{f"{mode}_s": v for mode, v in med.items()},
            "runs": {mode: [round(t, 3) for t in ts] for mode, ts in times.items()},
            "paired_ratios": {
                f"{a}/{b}": round(statistics.median(x / y for x, y in zip(times[a], times[b])), 3)
                for a, b in pairs
            },
            "cpu_s": {mode: _median_cpu(installs) for mode, installs in modes.items()},
            "phases_s": {mode: _median_phases(installs) for mode, installs in modes.items()},
            "cores_busy": {mode: _cores_busy(installs) for mode, installs in modes.items()},
        }
        log(f"{client}: direct {med['direct']:.2f} s, mitmproxy alone {med['relay']:.2f} s, "
            f"aiohttp relay {med['plain']:.2f} s, keeping files {med['keeping']:.2f} s, "
            f"warm {med['warm']:.2f} s, cold {med['cold']:.2f} s")
    return out


def _median_cpu(installs: list[Install]) -> dict[str, float | None]:
    """Median CPU seconds of each process over the installs (None where it could not be read)."""
    out: dict[str, float | None] = {}
    for name in installs[0].cpu:
        values = [v for i in installs if (v := i.cpu.get(name)) is not None]
        out[name] = round(statistics.median(values), 3) if len(values) == len(installs) else None
    return out


def _median_phases(installs: list[Install]) -> dict[str, float]:
    """Median seconds of each phase every install reported (uv; none for pip, nor if uv
    changes what it prints)."""
    return {
        name: round(statistics.median(i.phases[name] for i in installs), 4)
        for name in _PHASE_NAMES.values()
        if all(name in i.phases for i in installs)
    }


def _cores_busy(installs: list[Install]) -> float | None:
    """Median over the installs of the CPU time of every watched process and the client,
    divided by the install's wall time: how many cores the install kept busy."""
    busy = []
    for i in installs:
        if any(v is None for v in i.cpu.values()):
            return None
        busy.append(sum(v for v in i.cpu.values() if v is not None) / i.seconds)
    return round(statistics.median(busy), 2)


# -- 5. snapshot -----------------------------------------------------------------------------


def snapshot_cli_available() -> bool:
    proc = subprocess.run([sys.executable, "-m", "datepin", "snapshot", "--help"],
                          capture_output=True, text=True, env=client_env())
    return proc.returncode == 0 and "--all" in proc.stdout


def snapshot(fx: Fixture, static: StaticServer, scale: Scale, work: Path, log: Log) -> dict[str, object]:
    """`datepin snapshot --all` over every fixture project, when nothing changed upstream
    (the second and later runs), against fetching the same pages from the static server."""
    from datepin.history import HistoryStore

    dp = Datepin(work / "snapshot", static.url)
    config = dp.config()
    history = HistoryStore(dp.data_dir / "history.sqlite3")
    for name in fx.all_projects:
        history.track("pypi", name)
    history.close()
    use_cli = snapshot_cli_available()
    how = "cli" if use_cli else "service"

    def once() -> float:
        if use_cli:
            t0 = time.perf_counter()
            run_client([sys.executable, "-m", "datepin", "snapshot", "--all", "--config", str(config),
                        "--data-dir", str(dp.data_dir)], timeout=600)
            return time.perf_counter() - t0
        return asyncio.run(_snapshot_service(config, dp.data_dir, scale.snapshot_concurrency))

    def forgetting(update: str) -> float:
        with closing(sqlite3.connect(dp.data_dir / "history.sqlite3")) as db, db:
            db.execute(update)
        return once()

    once()  # first observation of each project: not measured
    # The static server answers 304 to the ETag of each page history has, as PyPI does.
    runs = [once() for _ in range(scale.repeats)]
    # As from a registry that sends no ETag: each page comes whole, the same bytes as before.
    same = [forgetting("UPDATE projects SET validator = json_remove(validator, '$.etag',"
                       " '$.last-modified')") for _ in range(scale.repeats)]
    # As when history does not know the page (read by an earlier datepin): read and compared.
    whole = [forgetting("UPDATE projects SET validator = NULL") for _ in range(scale.repeats)]
    baseline = asyncio.run(_fetch_all(static.url, fx.all_projects, scale.snapshot_concurrency))
    shutil.rmtree(dp.data_dir, ignore_errors=True)
    count = len(fx.all_projects)
    out = {
        "via": how,
        "projects": count,
        "concurrency": scale.snapshot_concurrency,
        "runs_s": [round(r, 3) for r in runs],
        "projects_per_s": round(count / statistics.median(runs), 1),
        "same_runs_s": [round(r, 3) for r in same],
        "same_projects_per_s": round(count / statistics.median(same), 1),
        "whole_runs_s": [round(r, 3) for r in whole],
        "whole_projects_per_s": round(count / statistics.median(whole), 1),
        "static_pages_per_s": round(count / baseline, 1),
    }
    log(f"snapshot ({how}): {out['projects_per_s']} projects/s asked with ETags,"
        f" {out['same_projects_per_s']} sent the same pages, {out['whole_projects_per_s']} reading"
        f" every page; static fetch {out['static_pages_per_s']} pages/s")
    return out


async def _snapshot_service(config_path: Path, data_dir: Path, concurrency: int) -> float:
    """The snapshot through the service layer, timed without process start-up."""
    from datepin.config import resolve
    from datepin.runtime import runtime
    from datepin.snapshotter import snapshot as run_snapshot

    config = resolve(config_path, data_dir=data_dir)
    async with runtime(config) as rt:
        registry = config.pypi
        projects = [(registry, name) for _, name in rt.history.projects("pypi")]
        t0 = time.perf_counter()
        summary = await run_snapshot(rt.index, projects, rescue=rt.rescue, concurrency=concurrency)
        elapsed = time.perf_counter() - t0
    if summary.failures:
        raise RuntimeError(f"snapshot failures: {summary.failures[:3]}")
    return elapsed


async def _fetch_all(base: str, projects: list[str], concurrency: int) -> float:
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(trust_env=False) as session:

        async def one(name: str) -> None:
            async with limit, session.get(f"{base}/simple/{name}/", headers={"Accept": JSON_TYPE}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"{name}: HTTP {r.status}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(n) for n in projects))
        return time.perf_counter() - t0
