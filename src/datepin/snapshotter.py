"""Observe tracked projects, fold what changed into history, rescue files that went away.

DESIGN.md "When upstream is contacted": every tracked project is re-observed once a day so
deletions and yanks are seen within a day; a file that disappears upstream is downloaded at
once if it is not stored yet, and marked irreplaceable (never evicted).  `Index.observe`
starts that rescue for every observation; a snapshot waits for it and counts it.

Tracked projects: every project ever recorded in history (requested through the proxy, or
named to `datepin snapshot`), plus `[snapshot] track` from the config.

A registry that throttles (429, 503 with Retry-After) is waited for and asked again when it
says, so that a rate-limited registry's daily snapshot completes, slower, rather than fail
every project after the first refusal; see THROTTLED_PATIENCE.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from packaging.utils import NormalizedName

from datepin.config import Config, Registry, parse_project
from datepin.history import HistoryStore
from datepin.model import DistFile
from datepin.service import Index
from datepin.upstream import THROTTLED, HoldOff, UpstreamError

log = logging.getLogger(__name__)

Project = tuple[Registry, NormalizedName]

# Later snapshots retry a file that went away without being kept this many times in all
# (upstream often serves a deleted file for a while; a crash may cut a rescue short).
RESCUE_ATTEMPTS = 5
# How long a snapshot keeps waiting for a registry that lets no request through (each answer
# it does let through starts the count anew).  A rate limit lets some through every window
# (Retry-After is at most MAX_RETRY_AFTER, 60 s); one that has refused everything for ten
# minutes will not let the run finish today, and the projects left fail at once instead.
THROTTLED_PATIENCE = 600.0


@dataclass
class Summary:
    observed: int = 0
    changed: int = 0
    files_gone: int = 0
    files_rescued: int = 0  # gone files now stored and marked irreplaceable
    failures: list[tuple[str, str]] = field(default_factory=list)  # (what, why)

    def line(self) -> str:
        return (
            f"observed {self.observed}, changed {self.changed}, files gone {self.files_gone}, "
            f"files rescued {self.files_rescued}, failures {len(self.failures)}"
        )

    def counts(self) -> dict[str, int]:
        return {
            "observed": self.observed,
            "changed": self.changed,
            "files_gone": self.files_gone,
            "files_rescued": self.files_rescued,
            "failures": len(self.failures),
        }


# -- what to observe ---------------------------------------------------------------------------


def label(registry: Registry, name: str) -> str:
    """How a project is named on the command line: `name`, or `registry:name` off PyPI."""
    return name if registry.name == "pypi" else f"{registry.name}:{name}"


def tracked(config: Config, history: HistoryStore) -> list[Project]:
    """Every project to observe: all ever recorded, plus `[snapshot] track`, sorted, once each.

    A project of a registry no longer in the config is skipped (logged), and so are those of
    passthrough registries: datepin holds no credentials of its own for them, so they are
    observed only when a client asks, with the client's credentials."""
    found: dict[tuple[str, str], Project] = {}
    for registry_name, name in history.projects():
        registry = config.registry(registry_name)
        if registry is None:
            log.info("not observing %s:%s: no such registry in the config", registry_name, name)
            continue
        if registry.auth == "passthrough":
            continue
        found[(registry_name, name)] = (registry, name)
    for text in config.track:
        try:
            registry, name = parse_project(text, config)
        except ValueError as e:
            log.warning("[snapshot] track: %s", e)
            continue
        found[(registry.name, name)] = (registry, name)
    return [found[key] for key in sorted(found)]


# -- one snapshot ------------------------------------------------------------------------------


class Patience:
    """When a snapshot asks a throttling registry again: once its hold-off is over, as long
    as the registry has not refused everything for `limit` seconds."""

    def __init__(
        self, holdoff: HoldOff, limit: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._holdoff = holdoff
        self._limit = limit
        self._clock = clock
        self._since: dict[str, float] = {}  # registry -> when it began to refuse everything

    def wait(self, registry: Registry, error: UpstreamError) -> int | None:
        """Seconds to wait before asking again after `error`; None: count it as a failure."""
        if error.status not in THROTTLED:
            return None
        held = self._holdoff.check(registry.url)
        if held is None:  # not held off (a 503 without Retry-After): a failure like any
            return None
        now = self._clock()
        since = self._since.setdefault(registry.name, now)
        if now + held.retry_after - since > self._limit:
            return None
        return held.retry_after

    def answered(self, registry: Registry) -> None:
        self._since.pop(registry.name, None)


async def snapshot(
    index: Index,
    projects: Iterable[Project],
    *,
    concurrency: int = 8,
    progress: Callable[[str], None] | None = None,
    patience: float = THROTTLED_PATIENCE,
) -> Summary:
    """Observe each project once, with at most `concurrency` in flight, and wait for the
    rescue of every file seen going away.  A project whose registry throttles is asked
    again when the registry says (`Patience`)."""
    summary = Summary()
    work = iter(projects)
    waits = Patience(index.upstream.holdoff, patience)

    async def worker() -> None:
        for registry, name in work:  # one shared iterator: each project is taken once
            try:
                await _observe_one(index, registry, name, summary, waits)
            except Exception as e:
                # A bug met on one project must not cost the run every project after it (the
                # schedule would meet it again first, every day).
                what = label(registry, name)
                log.exception("snapshot of %s", what)
                summary.failures.append((what, f"internal error: {type(e).__name__}: {e}"))
            if progress is not None:
                progress(label(registry, name))

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, concurrency)):
            group.create_task(worker())
    return summary


async def _observe_one(
    index: Index, registry: Registry, name: str, summary: Summary, waits: Patience
) -> None:
    what = label(registry, name)
    while True:
        try:
            change = await index.observe(registry, name)
            break
        except UpstreamError as e:
            if (seconds := waits.wait(registry, e)) is None:
                summary.failures.append((what, str(e)))
                return
            log.info("%s: %s; asking again in %d s", what, e, seconds)
            await asyncio.sleep(seconds)
        except (OSError, sqlite3.Error) as e:
            summary.failures.append((what, str(e)))
            return
    waits.answered(registry)
    if change is None:
        summary.failures.append((what, f"{registry.name} does not know this project (404)"))
        return
    summary.observed += 1
    if change.is_change:
        summary.changed += 1
        summary.files_gone += len(change.gone)
    # Files that went away earlier but were not kept: a rescue cut short by a crash, or
    # upstream failing for a while.  Retried a few times; their failures were counted then.
    just_gone = {file.filename for file in change.gone}
    earlier = [
        file
        for file in await asyncio.to_thread(
            index.history.unkept, registry.name, name, RESCUE_ATTEMPTS
        )
        if file.filename not in just_gone
    ]
    for file, error in await _rescue(index, registry, [*change.gone, *earlier]):
        if error is None:
            summary.files_rescued += 1
        elif file.filename in just_gone:
            summary.failures.append((file.filename, f"gone upstream and not kept: {error}"))


async def _rescue(
    index: Index, registry: Registry, files: Sequence[DistFile]
) -> list[tuple[DistFile, BaseException | None]]:
    # Index.observe has started the rescue of newly gone files; shield them so that
    # cancelling a snapshot does not cancel a rescue a request may be waiting for too.
    rescues = [asyncio.shield(index.rescue(registry, file)) for file in files]
    results = await asyncio.gather(*rescues, return_exceptions=True)
    return [
        (file, result if isinstance(result, BaseException) else None)
        for file, result in zip(files, results, strict=True)
    ]


async def snapshot_tracked(
    index: Index,
    projects: Sequence[Project] | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Summary:
    """A snapshot of every tracked project (or of `projects`, the tracked list computed by the
    caller), recorded as a completed run for the server's schedule."""
    started = index.clock()
    if projects is None:
        projects = await asyncio.to_thread(tracked, index.config, index.history)
    summary = await snapshot(
        index, projects, concurrency=index.config.snapshot_concurrency, progress=progress
    )
    await asyncio.to_thread(
        index.history.record_snapshot_run, started, index.clock(), summary.counts()
    )
    return summary


# -- in the server -----------------------------------------------------------------------------


def first_delay(last_run: datetime | None, now: datetime, interval: float) -> float:
    """Seconds until the server's first snapshot: at once when the last completed one is older
    than the interval (or there was none), else when the interval since it runs out.

    Counting from the last run rather than from the start keeps "seen within a day" true
    across restarts: a server restarted every few hours still snapshots daily."""
    if last_run is None:
        return 0.0
    due = last_run + timedelta(seconds=interval)
    return max(0.0, (due - now).total_seconds())


async def keep_snapshotting(index: Index) -> None:
    """Snapshot every tracked project every `[snapshot] interval`, until cancelled.

    Runs in the server's event loop: observations are network waits plus SQLite calls in
    worker threads, at most `[snapshot] concurrency` at a time, so requests are not held up.
    An interval of 0 turns it off."""
    interval = index.config.snapshot_interval
    if interval <= 0:
        return
    last = await asyncio.to_thread(index.history.last_snapshot_run)
    delay = first_delay(last, index.clock(), interval)
    while True:
        log.info("next snapshot of tracked projects in %.0fs", delay)
        await asyncio.sleep(delay)
        started = index.clock()
        try:
            summary = await snapshot_tracked(index)
        except Exception:
            # A bug or a broken store must not end the schedule; the next run tries again.
            log.exception("snapshot failed")
        else:
            log.info("snapshot: %s", summary.line())
            for what, why in summary.failures:
                log.warning("snapshot: %s: %s", what, why)
        elapsed = (index.clock() - started).total_seconds()
        delay = max(0.0, interval - elapsed)
