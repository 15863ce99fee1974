"""The history store: every observation of every project, folded into per-file facts (SQLite, WAL).

No HTTP here.  `record` writes one observation in one transaction; `load` returns a
`ProjectHistory` for the pure view function.  An observation that changes nothing adds one
small row (its time), so an unchanged project costs a few dozen bytes a day.

Calls are synchronous and short; the server runs them in a thread pool.  Each thread gets its
own connection (WAL lets readers proceed while one writer commits).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

from packaging.utils import NormalizedName, canonicalize_name

from datepin.model import DistFile, FileHistory, FileState, ProjectHistory, ProjectPage

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    registry TEXT NOT NULL,
    name TEXT NOT NULL,
    tracked INTEGER NOT NULL DEFAULT 1,
    status TEXT,
    status_reason TEXT,
    validator TEXT,               -- what identifies the latest page: its digest, upstream's ETag... (JSON)
    changed_at INTEGER,           -- the last observation that changed what history says of the project
    noted_at INTEGER,             -- the observation the two above were last brought up to date by
    UNIQUE (registry, name)
);
CREATE TABLE IF NOT EXISTS observations (
    project_id INTEGER NOT NULL REFERENCES projects(id),
    at INTEGER NOT NULL,          -- microseconds since the epoch, UTC
    found INTEGER NOT NULL,       -- 0: upstream answered 404 (project removed)
    PRIMARY KEY (project_id, at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    filename TEXT NOT NULL,
    key TEXT NOT NULL,            -- sha256 from the index, else 'u' + sha256(url)[:40]
    sha256 TEXT,                  -- from the index or computed when the file was stored
    url TEXT NOT NULL,
    current TEXT,                 -- JSON of the latest state; NULL while absent upstream
    url_tail TEXT NOT NULL,       -- what follows the url's last '/' (url_tail()): its index
    UNIQUE (project_id, filename)
);
CREATE TABLE IF NOT EXISTS file_states (
    file_id INTEGER NOT NULL REFERENCES files(id),
    at INTEGER NOT NULL,
    state TEXT,                   -- JSON of the file as listed; NULL: absent from the page
    PRIMARY KEY (file_id, at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS status_changes (
    project_id INTEGER NOT NULL REFERENCES projects(id),
    at INTEGER NOT NULL,
    status TEXT,
    reason TEXT,
    PRIMARY KEY (project_id, at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rescues (  -- files seen going away: were they kept?
    file_id INTEGER PRIMARY KEY REFERENCES files(id),
    kept INTEGER NOT NULL DEFAULT 0,  -- 1: stored and marked irreplaceable
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS snapshot_runs (
    started INTEGER PRIMARY KEY,  -- microseconds since the epoch, UTC
    finished INTEGER NOT NULL,
    observed INTEGER NOT NULL,
    changed INTEGER NOT NULL,
    files_gone INTEGER NOT NULL,
    files_rescued INTEGER NOT NULL,
    failures INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS release_info (
    project_id INTEGER NOT NULL REFERENCES projects(id),
    version TEXT NOT NULL,
    info TEXT NOT NULL,
    PRIMARY KEY (project_id, version)
) WITHOUT ROWID;
"""

# The schema's version, kept in SQLite's user_version (0: written before versions were kept).
# 1: files are looked up by key or by url only together with a column that sorts a project's
# files side by side.  Keys (sha256) and upstream urls are random: with an index on each, every
# file a first observation added was two inserts at random places in big indexes (a history of
# 60,000 files, 15-file pages first observed: 1.7 ms a page with them, 0.7 ms with these).
# 2: projects keep upstream's validators of their latest page (conditional requests) and the
# time of their last change (a live page stays valid through observations that change nothing),
# with the observation that noted them: an observation recorded by a datepin that knows nothing
# of them (an earlier version sharing the data directory) makes them unknown, not wrong.
SCHEMA_VERSION = 2
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS files_filename ON files (filename)",
    "CREATE INDEX IF NOT EXISTS files_url_tail ON files (url_tail)",
    "DROP INDEX IF EXISTS files_key",
    "DROP INDEX IF EXISTS files_url",
)
# url_tail() in SQL: rtrim strips the characters after the last '/'.
_URL_TAIL_SQL = "substr(url, length(rtrim(url, replace(url, '/', ''))) + 1)"


# Observation times closer than this are one moment: their order is the order recorded.
SAME_MOMENT_MICROS = 1000


class HistoryWriteError(OSError):
    """History could not be written (disk full, database locked); nothing was recorded."""


class HistoryBusy(BlockingIOError):
    """A write made without waiting found another writer at work; nothing was recorded."""


def to_micros(dt: datetime) -> int:
    delta = dt.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def file_key(file: DistFile) -> str:
    """The date-independent name of a file in `/files/{registry}/{key}/{filename}` URLs.
    Without a sha256, its URL without the query: a registry on object storage lists each
    file under a new presigned URL (`?X-Amz-Signature=...`) on every page."""
    return file.sha256 or "u" + hashlib.sha256(unsigned_url(file.url).encode()).hexdigest()[:40]


def unsigned_url(url: str) -> str:
    """`url` without its query string: what stays of a presigned URL from one page to the next."""
    return url.partition("?")[0]


def _only_signature_changed(encoded_old: str | None, file: DistFile, encoded: str) -> bool:
    """Whether a file listed as `encoded_old` is listed as `file` (`encoded`) with nothing
    changed but its URL's query: a new signature for the same file, which is not a change
    to record (every observation would add a state per file, and report it changed)."""
    if encoded_old is None or "?" not in file.url:
        return False
    old = decode_file(encoded_old)
    return (
        old.url != file.url
        and unsigned_url(old.url) == unsigned_url(file.url)
        and encode_file(replace(old, url=file.url)) == encoded
    )


def url_tail(url: str) -> str:
    """What follows the last '/' of `url`: for a registry's file URL, its file name."""
    return url[url.rfind("/") + 1 :]


# One encoder for every file: json.dumps with options makes a new one each call (a third of
# encoding a file).
_FILE_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def encode_file(file: DistFile) -> str:
    data: dict[str, Any] = {"filename": file.filename, "url": file.url}
    if file.hashes:
        data["hashes"] = dict(file.hashes)
    if file.requires_python is not None:
        data["requires_python"] = file.requires_python
    if file.core_metadata is not None:
        data["core_metadata"] = dict(file.core_metadata)
    if file.yanked is not None:
        data["yanked"] = file.yanked
    if file.upload_time_raw is not None:
        data["upload_time_raw"] = file.upload_time_raw
    if file.upload_time is not None:
        data["upload_time"] = to_micros(file.upload_time)
    if file.size is not None:
        data["size"] = file.size
    return _FILE_ENCODER.encode(data)


def decode_file(text: str, strings: dict[str, str] | None = None) -> DistFile:
    """`strings`: one string for equal values across the files decoded with it (hash names,
    requires-python): 150 bytes a file, 3 MB for a 20,000-file project."""
    d = json.loads(text)
    share = (lambda v: v) if strings is None else (lambda v: strings.setdefault(v, v))
    hashes, core_metadata = d.get("hashes", {}), d.get("core_metadata")
    requires_python = d.get("requires_python")
    return DistFile(
        filename=d["filename"],
        url=d["url"],
        hashes={share(k): v for k, v in hashes.items()},
        requires_python=None if requires_python is None else share(requires_python),
        core_metadata=None if core_metadata is None else {share(k): v for k, v in core_metadata.items()},
        yanked=d.get("yanked"),
        upload_time=from_micros(d["upload_time"]) if "upload_time" in d else None,
        upload_time_raw=d.get("upload_time_raw"),
        size=d.get("size"),
    )


def first_history(registry: str, change: Change, page: ProjectPage | None) -> ProjectHistory:
    """What `HistoryStore.load` reads back right after `record` made `page` a project's first
    observation (`change.first`), without reading it: a cold page's answer waits for it."""
    assert change.first
    at = change.at
    return ProjectHistory(
        registry=registry,
        name=change.project,
        observations=(at,),
        # As `load` orders them: SQLite compares file names' UTF-8 bytes, which sort as
        # their code points do.
        files=tuple(
            FileHistory(f.filename, (FileState(at, f),))
            for f in sorted(change.added, key=lambda f: f.filename)
        ),
        status_changes=(
            ((at, page.status, page.status_reason),)
            if page is not None and (page.status, page.status_reason) != (None, None)
            else ()
        ),
        not_found=() if page is not None else (at,),
    )


# Commits made without waiting (`HistoryStore.record(wait=False)`) before a checkpoint is
# due: a small page's record writes a few pages, SQLite checkpoints by itself every 1,000.
CHECKPOINT_EVERY = 200
_RUN_COUNTS = ("observed", "changed", "files_gone", "files_rescued", "failures")


@dataclass(frozen=True)
class Change:
    """What one observation changed, for the snapshotter's summary and rescue."""

    project: NormalizedName
    at: datetime
    added: tuple[DistFile, ...] = ()
    gone: tuple[DistFile, ...] = ()
    changed: tuple[DistFile, ...] = ()  # attributes or yank state changed
    removed: bool = False  # upstream answered 404 for a project it had before
    first: bool = False  # the project's first observation: its history is this one alone
    # The project's last change as of this observation (this one's time if it changed it).
    state_at: datetime | None = None

    @property
    def is_change(self) -> bool:
        return bool(self.added or self.gone or self.changed or self.removed)


class Latest(NamedTuple):
    observed: datetime  # the project's last observation
    changed: datetime  # the last observation that changed it
    validator: str | None  # what identifies the page observed then (service.page_validator)


def _at(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)


@dataclass(frozen=True)
class StoredFile:
    registry: str
    project: NormalizedName
    key: str
    sha256: str | None
    file: DistFile  # latest known state (or last state before it went away)
    present: bool  # still listed upstream at the last observation


class HistoryStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Writers of this process take turns here rather than in SQLite's busy handler, which
        # sleeps 1, 2, 5, 10, ... ms between tries (40 cold pages at once, bench/run: records
        # waited up to 108 ms).  Other processes still meet the busy handler.
        self._write_lock = threading.Lock()
        self._unsynced_commits = 0  # made without waiting, so without a checkpoint
        # Owner only, and before SQLite opens it: SQLite gives the -wal and -shm files it
        # creates the mode of the database file.
        path.touch(mode=0o600)
        for suffix in ("", "-wal", "-shm"):
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                extra.chmod(0o600)
        self._db().executescript(SCHEMA)
        self._upgrade()

    def _upgrade(self) -> None:
        """Bring a new history, or one an earlier datepin wrote, to SCHEMA_VERSION.  Several
        processes may open it at once: the version is read again inside the transaction."""
        if self._version(self._db()) >= SCHEMA_VERSION:
            return
        with self._tx() as db:
            if self._version(db) >= SCHEMA_VERSION:
                return
            columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
            if "url_tail" not in columns:
                db.execute("ALTER TABLE files ADD COLUMN url_tail TEXT NOT NULL DEFAULT ''")
                db.execute(f"UPDATE files SET url_tail = {_URL_TAIL_SQL}")
            for statement in _INDEXES:
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(projects)")}
            for column in ("validator TEXT", "changed_at INTEGER", "noted_at INTEGER"):
                if column.split()[0] not in columns:
                    # Not noted yet (`latest`): the next observation of each project asks for
                    # the whole page, and its last change is taken to be its last observation.
                    db.execute(f"ALTER TABLE projects ADD COLUMN {column}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _version(db: sqlite3.Connection) -> int:
        return int(db.execute("PRAGMA user_version").fetchone()[0])

    def _db(self, *, wait: bool = True) -> sqlite3.Connection:
        """This thread's connection; with `wait` False, its second one, which never waits for
        a lock and never checkpoints (see `_tx`)."""
        name = "db" if wait else "quick_db"
        db: sqlite3.Connection | None = getattr(self._local, name, None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30 if wait else 0, isolation_level=None)
            if wait:
                db.execute("PRAGMA journal_mode=WAL")  # kept in the file: __init__ has set it
            else:
                db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            setattr(self._local, name, db)
        return db

    @contextmanager
    def _tx(self, *, wait: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; HistoryWriteError (nothing written) when SQLite cannot write.

        With `wait` False, for a caller that must not block (the event loop): HistoryBusy at
        once if another writer holds the lock, in this process or another; and no WAL
        checkpoint, whose fsyncs may take long (see `needs_checkpoint`)."""
        db = self._db(wait=wait)
        if not self._write_lock.acquire(blocking=wait):
            raise HistoryBusy("history is being written")
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                if not wait and e.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:  # or extended
                    raise HistoryBusy("history is being written by another process") from e
                raise
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            if not wait:
                self._unsynced_commits += 1
        except sqlite3.OperationalError as e:  # disk full, database locked, read-only
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise HistoryWriteError(f"cannot write history: {e}") from e
        finally:
            self._write_lock.release()

    @property
    def needs_checkpoint(self) -> bool:
        """Whether so many commits were made without waiting that `checkpoint` should follow
        in a thread, lest the WAL file grow without end (other commits checkpoint by
        themselves, as SQLite does every 1,000 pages)."""
        return self._unsynced_commits >= CHECKPOINT_EVERY

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database, as far as readers allow."""
        self._unsynced_commits = 0
        self._db().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        for name in ("db", "quick_db"):
            db = getattr(self._local, name, None)
            if db is not None:
                db.close()
                setattr(self._local, name, None)

    # -- writing -------------------------------------------------------------------------

    def _project_id(self, db: sqlite3.Connection, registry: str, name: str) -> int:
        return self._project(db, registry, name)[0]

    @staticmethod
    def _project(db: sqlite3.Connection, registry: str, name: str) -> tuple[int, bool]:
        """The project's id, and whether its row was made just now."""
        row = db.execute(
            "SELECT id FROM projects WHERE registry=? AND name=?", (registry, name)
        ).fetchone()
        if row:
            return int(row[0]), False
        cur = db.execute("INSERT INTO projects (registry, name) VALUES (?, ?)", (registry, name))
        assert cur.lastrowid is not None
        return cur.lastrowid, True

    def track(self, registry: str, name: str) -> None:
        """Remember a project so the snapshotter observes it daily."""
        with self._tx() as db:
            self._project_id(db, registry, canonicalize_name(name))

    def record(
        self, registry: str, name: str, page: ProjectPage | None, at: datetime, *, wait: bool = True
    ) -> tuple[datetime, Change]:
        """Fold one observation into history (page None: upstream said 404).

        Returns the time recorded (kept strictly increasing per project) and what changed.
        The page's validator is kept for the next observation to ask whether upstream's page
        is still this one (`record_unchanged`).
        `wait` False: raise HistoryBusy rather than wait for another writer (see `_tx`).
        """
        project = canonicalize_name(name)
        with self._tx(wait=wait) as db:
            # A project never observed has no files, status or last change yet: its first
            # observation (every cold page) skips the reads that would find none.
            pid, created = self._project(db, registry, project)
            last = None if created else db.execute(
                "SELECT max(at) FROM observations WHERE project_id=?", (pid,)
            ).fetchone()[0]
            t = to_micros(at)
            # Asked for before the latest recorded observation, and recorded after it (another
            # process, or another client's credentials, observed the project meanwhile): an
            # older page than history holds.  Folded in, it would undo what the newer one saw,
            # e.g. a file uploaded between the two requests would be recorded as deleted, and
            # hidden for good from the pins after it.  It only says the project was observed.
            # Observations asked at one moment as the clock tells (a coarse or stopped clock)
            # are taken in the order they are recorded.
            stale = last is not None and t < last - SAME_MOMENT_MICROS
            if last is not None and t <= last:
                t = last + 1
            had_before = last is not None and db.execute(
                "SELECT found FROM observations WHERE project_id=? AND at=?", (pid, last)
            ).fetchone()[0]
            found = bool(had_before) if stale else page is not None
            db.execute("INSERT INTO observations VALUES (?, ?, ?)", (pid, t, int(found)))
            if stale:
                # The validator and the last change still describe the newer page.
                changed_at = db.execute(
                    "UPDATE projects SET noted_at = ? WHERE id=? AND noted_at=?"
                    " RETURNING changed_at", (t, pid, last)
                ).fetchone()
                state_at = from_micros(changed_at[0] if changed_at else t)
                return from_micros(t), Change(project, from_micros(t), state_at=state_at)
            current = {} if last is None else {
                row[1]: (row[0], row[2], row[3])
                for row in db.execute(
                    "SELECT id, filename, current, key FROM files WHERE project_id=?", (pid,)
                )
            }
            listed = {f.filename: f for f in (page.files if page else ())}
            added = [file for filename, file in listed.items() if filename not in current]
            gone: list[DistFile] = []
            changed: list[DistFile] = []
            if added:
                # Three statements for them all rather than two per file: a first observation
                # of PyPI's pydantic-core (15,000 files) is recorded in 320 ms, not 380.
                # New rows get ids past the largest one (SQLite's rowid; no other writer now);
                # on a first observation they are all the project has.
                if last is None:
                    new_rows, bound = "project_id = ?", pid
                else:
                    new_rows = "id > ?"
                    bound = db.execute("SELECT coalesce(max(id), 0) FROM files").fetchone()[0]
                db.executemany(
                    "INSERT INTO files (project_id, filename, key, sha256, url, url_tail, current)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        (pid, f.filename, file_key(f), f.sha256, f.url, url_tail(f.url), encode_file(f))
                        for f in added
                    ),
                )
                states = db.execute(
                    f"INSERT INTO file_states SELECT id, ?, current FROM files WHERE {new_rows}",
                    (t, bound),
                )
                assert states.rowcount == len(added), "new files got ids below the largest"
            for filename, file in listed.items():
                if filename not in current:
                    continue
                encoded = encode_file(file)
                if current[filename][1] != encoded:
                    file_id, encoded_old, old_key = current[filename]
                    key = file_key(file)
                    if key == old_key and _only_signature_changed(encoded_old, file, encoded):
                        # The latest URL is kept to fetch the file with (find_file reads
                        # `current`); history's states keep the one first seen.
                        db.execute(
                            "UPDATE files SET current=?, url=?, url_tail=? WHERE id=?",
                            (encoded, file.url, url_tail(file.url), file_id),
                        )
                        continue
                    if key == old_key:
                        db.execute(
                            "UPDATE files SET current=?, url=?, url_tail=?,"
                            " sha256=coalesce(?, sha256) WHERE id=?",
                            (encoded, file.url, url_tail(file.url), file.sha256, file_id),
                        )
                    else:
                        # Other bytes (or another URL) under the same name: the row now
                        # names the new file; the old one lives on in file_states, where
                        # find_file looks for it, and is kept like a deleted file.
                        db.execute(
                            "UPDATE files SET current=?, url=?, url_tail=?, key=?, sha256=?"
                            " WHERE id=?",
                            (encoded, file.url, url_tail(file.url), key, file.sha256, file_id),
                        )
                        if encoded_old is not None:
                            gone.append(decode_file(encoded_old))
                    db.execute("INSERT INTO file_states VALUES (?, ?, ?)", (file_id, t, encoded))
                    (added if encoded_old is None else changed).append(file)
            for filename, (file_id, encoded_old, _) in current.items():
                if filename not in listed and encoded_old is not None:
                    db.execute("UPDATE files SET current=NULL WHERE id=?", (file_id,))
                    db.execute("INSERT INTO file_states VALUES (?, ?, NULL)", (file_id, t))
                    gone.append(decode_file(encoded_old))
            status = (page.status, page.status_reason) if page else (None, None)
            row = (None, None, None, None) if last is None else db.execute(
                "SELECT status, status_reason, changed_at, noted_at FROM projects WHERE id=?", (pid,)
            ).fetchone()
            status_changed = page is not None and tuple(row[:2]) != status
            if status_changed:
                db.execute(
                    "UPDATE projects SET status=?, status_reason=? WHERE id=?", (*status, pid)
                )
                db.execute("INSERT INTO status_changes VALUES (?, ?, ?, ?)", (pid, t, *status))
            # What a view can tell apart: files, their states, the project's status, and
            # whether upstream had it at all.  A signed URL renewed is none of them.
            changes = (
                last is None or added or gone or changed or status_changed or found != bool(had_before)
            )
            # Unchanged, the last change is known only if the last observation noted it.
            changed_at = row[2] if not changes and row[3] == last else t
            db.execute(
                "UPDATE projects SET validator=?, changed_at=?, noted_at=? WHERE id=?",
                (page.validator if page is not None else None, changed_at, t, pid),
            )
        when = from_micros(t)
        return when, Change(
            project,
            when,
            tuple(added),
            tuple(gone),
            tuple(changed),
            removed=page is None and bool(had_before),
            first=last is None,
            state_at=_at(changed_at),
        )

    def record_unchanged(
        self,
        registry: str,
        name: str,
        at: datetime,
        validator: str,
        renewed: str | None = None,
        *,
        wait: bool = True,
    ) -> tuple[datetime, Change] | None:
        """Record an observation at `at` of the page `validator` names, which upstream still
        has (it answered 304, or sent the same page): the project as history has it,
        unchanged.  `renewed`: what names that page from now on (upstream's new ETag).

        None, and nothing recorded, when history's latest state is not that page's (another
        observation recorded another page since the validator was read): ask for it whole.
        """
        project = canonicalize_name(name)
        with self._tx(wait=wait) as db:
            row = db.execute(
                "SELECT id, validator, changed_at, noted_at FROM projects"
                " WHERE registry=? AND name=?",
                (registry, project),
            ).fetchone()
            if row is None or row[1] != validator:
                return None
            pid, _, changed_at, noted_at = row
            last = db.execute(
                "SELECT at, found FROM observations WHERE project_id=? ORDER BY at DESC LIMIT 1",
                (pid,),
            ).fetchone()
            if last is None or not last[1] or last[0] != noted_at:
                return None
            t = max(to_micros(at), last[0] + 1)
            db.execute("INSERT INTO observations VALUES (?, ?, 1)", (pid, t))
            db.execute(
                "UPDATE projects SET noted_at=?, validator=? WHERE id=?", (t, renewed or validator, pid)
            )
        when = from_micros(t)
        return when, Change(project, when, state_at=_at(changed_at))

    def set_sha256(self, registry: str, key: str, filename: str, sha256: str) -> None:
        """Remember the hash computed when a file without an index hash was stored."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET sha256=? WHERE filename=? AND key=? AND sha256 IS NULL"
                " AND project_id IN (SELECT id FROM projects WHERE registry=?)",
                (sha256, filename, key, registry),
            )

    def note_rescue(self, registry: str, key: str, filename: str, kept: bool) -> None:
        """Remember one attempt to keep a file that went away upstream, and its outcome."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO rescues (file_id, kept, attempts)"
                " SELECT f.id, ?, 1 FROM files f JOIN projects p ON p.id = f.project_id"
                " WHERE f.filename=? AND f.key=? AND p.registry=?"
                " ON CONFLICT (file_id) DO UPDATE SET kept = max(kept, excluded.kept),"
                " attempts = attempts + 1",
                (int(kept), filename, key, registry),
            )

    def unkept(self, registry: str, name: str, max_attempts: int) -> list[DistFile]:
        """Files absent upstream now that were never kept, tried fewer than `max_attempts`
        times (e.g. a rescue cut short by a crash, or upstream failing for a while)."""
        return [
            decode_file(state)
            for (state,) in self._db().execute(
                "SELECT (SELECT s.state FROM file_states s WHERE s.file_id = f.id"
                "        AND s.state IS NOT NULL ORDER BY s.at DESC LIMIT 1)"
                " FROM files f JOIN projects p ON p.id = f.project_id"
                " LEFT JOIN rescues r ON r.file_id = f.id"
                " WHERE p.registry=? AND p.name=? AND f.current IS NULL"
                " AND coalesce(r.kept, 0) = 0 AND coalesce(r.attempts, 0) < ?"
                " ORDER BY f.filename",
                (registry, canonicalize_name(name), max_attempts),
            )
        ]

    def save_release_info(
        self, registry: str, name: str, version: str, info: Mapping[str, object]
    ) -> None:
        with self._tx() as db:
            pid = self._project_id(db, registry, canonicalize_name(name))
            db.execute(
                "INSERT OR IGNORE INTO release_info VALUES (?, ?, ?)",
                (pid, version, json.dumps(info, sort_keys=True)),
            )

    # -- reading -------------------------------------------------------------------------

    def last_observed(self, registry: str, name: str) -> datetime | None:
        latest = self.latest(registry, name)
        return None if latest is None else latest.observed

    def latest(self, registry: str, name: str) -> Latest | None:
        """The project's last observation, last change and page validator; None: never observed."""
        row = self._db().execute(
            "SELECT (SELECT max(at) FROM observations WHERE project_id = p.id),"
            " p.changed_at, p.validator, p.noted_at FROM projects p WHERE p.registry=? AND p.name=?",
            (registry, canonicalize_name(name)),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        last, changed_at, validator, noted_at = row
        if noted_at != last:  # recorded by a datepin that does not note them: not known
            return Latest(from_micros(last), from_micros(last), None)
        return Latest(from_micros(last), from_micros(changed_at), validator)

    def load(self, registry: str, name: str) -> ProjectHistory | None:
        db = self._db()
        project = canonicalize_name(name)
        row = db.execute(
            "SELECT id FROM projects WHERE registry=? AND name=?", (registry, project)
        ).fetchone()
        if row is None:
            return None
        pid = row[0]
        rows = db.execute(
            "SELECT at, found FROM observations WHERE project_id=? ORDER BY at", (pid,)
        ).fetchall()
        if not rows:
            return None
        observations = tuple(from_micros(at) for at, _ in rows)
        not_found = tuple(from_micros(at) for at, found in rows if not found)
        states: dict[str, list[FileState]] = {}
        # A file whose attributes come back unchanged (absent, then present again) shares one
        # decoded record.  Only the file's previous state is kept for that: keeping every
        # state's text until the end held 12 MB more for a 20,000-file project.
        previous: tuple[str, str, DistFile] | None = None
        strings: dict[str, str] = {}
        for filename, at, state in db.execute(
            "SELECT f.filename, s.at, s.state FROM file_states s JOIN files f ON f.id = s.file_id"
            " WHERE f.project_id=? ORDER BY f.filename, s.at",
            (pid,),
        ):
            file = None
            if state is not None:
                if previous is not None and previous[0] == filename and previous[1] == state:
                    file = previous[2]
                else:
                    file = decode_file(state, strings)
                    previous = (filename, state, file)
            states.setdefault(filename, []).append(FileState(from_micros(at), file))
        statuses = tuple(
            (from_micros(at), status, reason)
            for at, status, reason in db.execute(
                "SELECT at, status, reason FROM status_changes WHERE project_id=? ORDER BY at",
                (pid,),
            )
        )
        return ProjectHistory(
            registry=registry,
            name=project,
            observations=observations,
            files=tuple(FileHistory(fn, tuple(s)) for fn, s in states.items()),
            status_changes=statuses,
            not_found=not_found,
        )

    def find_file(self, registry: str, key: str, filename: str) -> StoredFile | None:
        """The file with this key and name (files with the same bytes under several names,
        in several projects, share a key), also when upstream has since put other bytes
        under its name (old views still list it)."""
        stored = self._stored("f.filename=? AND f.key=? AND p.registry=?", (filename, key, registry))
        if stored is not None and file_key(stored.file) == key:  # else a stale key column
            return stored
        return self._earlier(
            "f.filename=? AND p.registry=?", (filename, registry), lambda f: file_key(f) == key
        )

    def find_file_by_url(self, url: str) -> StoredFile | None:
        return self._stored("f.url_tail=? AND f.url=?", (url_tail(url), url)) or self._earlier(
            "f.filename=?", (unquote(url_tail(url)),), lambda f: f.url == url
        )

    def _earlier(
        self, where: str, args: tuple[str, ...], match: Callable[[DistFile], bool]
    ) -> StoredFile | None:
        """A file as an earlier observation listed it, before its name got other bytes."""
        for registry, project, file_id in self._db().execute(
            "SELECT p.registry, p.name, f.id FROM files f"
            f" JOIN projects p ON p.id = f.project_id WHERE {where}",
            args,
        ).fetchall():
            for (state,) in self._db().execute(
                "SELECT state FROM file_states WHERE file_id=? AND state IS NOT NULL"
                " ORDER BY at DESC",
                (file_id,),
            ):
                file = decode_file(state)
                if match(file):
                    return StoredFile(registry, project, file_key(file), file.sha256, file, False)
        return None

    def _stored(self, where: str, args: tuple[str, ...]) -> StoredFile | None:
        row = self._db().execute(
            "SELECT p.registry, p.name, f.key, f.sha256, f.current, f.id FROM files f"
            f" JOIN projects p ON p.id = f.project_id WHERE {where} LIMIT 1",
            args,
        ).fetchone()
        if row is None:
            return None
        registry, project, key, sha256, current, file_id = row
        if current is None:
            last = self._db().execute(
                "SELECT state FROM file_states WHERE file_id=? AND state IS NOT NULL"
                " ORDER BY at DESC LIMIT 1",
                (file_id,),
            ).fetchone()
            file = decode_file(last[0])
        else:
            file = decode_file(current)
        return StoredFile(registry, project, key, sha256, file, current is not None)

    def release_info(self, registry: str, name: str, version: str) -> dict[str, object] | None:
        row = self._db().execute(
            "SELECT r.info FROM release_info r JOIN projects p ON p.id = r.project_id"
            " WHERE p.registry=? AND p.name=? AND r.version=?",
            (registry, canonicalize_name(name), version),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def projects(self, registry: str | None = None) -> list[tuple[str, NormalizedName]]:
        """Every project ever requested or observed (the snapshotter's work list)."""
        sql = "SELECT registry, name FROM projects WHERE tracked=1"
        args: tuple[str, ...] = ()
        if registry is not None:
            sql += " AND registry=?"
            args = (registry,)
        return [(r, NormalizedName(n)) for r, n in self._db().execute(sql + " ORDER BY 1, 2", args)]

    def visible_names(self, registry: str) -> list[str]:
        """Projects that have ever had a file (for the root page)."""
        return [
            n
            for (n,) in self._db().execute(
                "SELECT DISTINCT p.name FROM projects p JOIN files f ON f.project_id = p.id"
                " WHERE p.registry=? ORDER BY p.name",
                (registry,),
            )
        ]

    def record_snapshot_run(
        self, started: datetime, finished: datetime, counts: Mapping[str, int]
    ) -> None:
        """Remember a completed snapshot of every tracked project (the server's schedule
        reads it back after a restart).  A run killed half-way leaves no row: it is redone."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO snapshot_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    to_micros(started),
                    to_micros(finished),
                    *(counts.get(k, 0) for k in _RUN_COUNTS),
                ),
            )

    def last_snapshot_run(self) -> datetime | None:
        """When the latest completed snapshot of every tracked project started."""
        row = self._db().execute("SELECT max(started) FROM snapshot_runs").fetchone()
        return from_micros(row[0]) if row and row[0] is not None else None

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = self.path.with_name(self.path.name + suffix)
            if p.exists():
                total += p.stat().st_size
        return total
