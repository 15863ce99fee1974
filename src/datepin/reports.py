"""What the read-only CLI commands report: a project's history, the blob store's state.

These read the data directory directly (a server may be running on it: SQLite WAL and the blob
store's own locking make that safe) and never contact upstream.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from datepin.blobs import BlobStats, BlobStore, VerifyProblem
from datepin.config import Config, Registry
from datepin.history import HistoryStore, file_key
from datepin.pins import Pin
from datepin.timeline import Storage, facts_of, render_json, render_text
from datepin.views import explain, view

HISTORY_FILE = "history.sqlite3"  # the names server.Paths gives them
BLOBS_DIR = "blobs"


class NoHistory(LookupError):
    """Nothing is recorded for what was asked (or there is no data directory at all)."""


def _blob_store(config: Config) -> BlobStore:
    """The data directory's blob store; never creates one where there was no data directory."""
    if not config.data_dir.is_dir():
        raise NoHistory(f"no data directory at {config.data_dir}")
    return BlobStore(config.data_dir / BLOBS_DIR, size_limit=config.size_limit)


@contextmanager
def _stores(config: Config) -> Iterator[tuple[HistoryStore, BlobStore]]:
    path = config.data_dir / HISTORY_FILE
    if not path.exists():
        raise NoHistory(
            f"no history in {config.data_dir} (run `datepin serve` or `datepin snapshot`)"
        )
    history = HistoryStore(path)
    store = _blob_store(config)
    try:
        yield history, store
    finally:
        history.close()
        store.close()


def project_history(
    config: Config, registry: Registry, name: str, *, at: Pin | None = None, as_json: bool = False
) -> str:
    """`datepin history`: the project's timeline, or its view at a pin with the reasons."""
    with _stores(config) as (history, store):
        loaded = history.load(registry.name, name)
        if loaded is None:
            raise NoHistory(f"{registry.name}:{name} has never been observed by this proxy")
        facts = facts_of(loaded)
        storage: dict[str, Storage] = {}
        first_states = {fh.filename: fh.states[0].file for fh in loaded.files}
        for f in facts.files:
            sha = f.sha256
            listed = first_states[f.filename]
            if sha is None and listed is not None:  # no hash upstream: the one computed on store
                stored = history.find_file(registry.name, file_key(listed), listed.filename)
                sha = stored.sha256 if stored is not None else None
            storage[f.filename] = Storage(
                sha, sha is not None and store.has(sha), sha is not None and store.is_irreplaceable(sha)
            )
    shown = None
    if at is not None:
        applied = at.for_project(name)
        shown = (applied, view(loaded, applied.cutoff), explain(loaded, applied.cutoff))
    if as_json:
        return json.dumps(render_json(facts, storage, at=shown), indent=2) + "\n"
    return render_text(facts, storage, at=shown)


@dataclass(frozen=True)
class CacheStats:
    blobs: BlobStats
    size_limit: int
    server: dict[str, float] | None  # counters from a running server's /-/metrics


def cache_stats(config: Config, url: str | None = None) -> CacheStats:
    store = _blob_store(config)
    try:
        stats = store.stats()
    finally:
        store.close()
    return CacheStats(stats, config.size_limit, server_metrics(url) if url else None)


def server_metrics(url: str, timeout: float = 10.0) -> dict[str, float]:
    """The counters a running datepin serves on `/-/metrics` (Prometheus text format).

    Raises OSError when the server cannot be asked."""
    target = url.rstrip("/") + "/-/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # it is local
    try:
        with opener.open(target, timeout=timeout) as resp:
            text = resp.read().decode()
    except urllib.error.URLError as e:
        raise OSError(f"{target}: {e.reason}") from None
    metrics: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            metrics[key] = float(value)
        except ValueError:
            continue
    return metrics


def verify_store(config: Config) -> tuple[int, list[VerifyProblem]]:
    """Re-hash every blob; corrupt ones move to quarantine.  Returns (blobs checked, problems)."""
    store = _blob_store(config)
    try:
        count = store.stats().count
        return count, store.verify(quarantine=True)
    finally:
        store.close()


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
