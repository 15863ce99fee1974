"""The blob store: package files kept once by sha256 (DESIGN.md, "Blobs").

Layout of the store directory (all on one filesystem, so that a commit is a rename):

    cas/          diskcache Cache: key = sha256 hex, value = the file (MODE_BINARY), in
                  cas/<2 hex digits>/<random>.val (all 256 directories made with the store);
                  a blob of less than INLINE_LIMIT bytes stored whole (`put`) is held in the
                  index itself (MODE_RAW), with no file of its own
    tmp/          fills in progress: <random>.part, each flock()ed by its writer (.new: being created)
    quarantine/   blobs that failed `verify`, and orphan files
    meta.sqlite3  per-blob metadata: size, last use (LRU), irreplaceable flag

This is the only module that imports diskcache.  diskcache's own eviction is off
(`eviction_policy="none"`): its size limit counts every value, and its default (1 GiB) evicts a
1 GiB wheel right after storing it.  Our LRU (`evict_to_limit`) counts replaceable blobs only and
never touches irreplaceable ones.

Several processes may share a store (the server and a `datepin snapshot` run).  diskcache's
SQLite index handles that for presence; `meta.sqlite3` (WAL) holds what diskcache cannot update in
place.  Every step that changes both (commit, eviction, quarantine) runs inside one write
transaction on `meta.sqlite3`, always taken before diskcache's, so processes serialise on it.

Readers get an open file (`open`).  On POSIX an unlinked file stays readable through open
descriptors, so an eviction in another process never cuts a download; within this process an open
`BlobHandle` is also a lease that `evict_to_limit` respects.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import itertools
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import diskcache  # type: ignore[import-untyped]
from diskcache.core import MODE_BINARY, UNKNOWN  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Blobs stored whole (`put`) below this size (`.metadata` files, small wheels) go in the index,
# in one SQLite transaction: a file of their own cost a create, an fsync and two renames (cold
# `.metadata` files: 0.6 -> 0.1-0.2 ms of CPU each in the committing thread; 1.8 ms on an ext4
# without a journal right after many files were deleted).
INLINE_LIMIT = 32 * 1024
_HASH_BLOCK = 1 << 20
# A `.new` temp file younger than this may be a live writer's, created but not yet locked.
_TEMP_GRACE_SECONDS = 5.0
# A data file in cas/ not known to the index may be a commit between its rename and its index
# insert in another process; only older ones are orphans.
_ORPHAN_AGE_SECONDS = 3600.0
# `evict_if_over` recounts the store at least this often: other processes commit blobs too.
_RECOUNT_SECONDS = 30.0
# The directories of cas/ that blob files go in, by the first two hex digits of their names.
_SUBDIRS = tuple(f"{i:02x}" for i in range(256))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blob (
    sha256 TEXT PRIMARY KEY,
    size INTEGER,                  -- NULL when the blob is not stored
    last_used REAL NOT NULL DEFAULT 0,
    irreplaceable INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_lru ON blob (irreplaceable, last_used) WHERE size IS NOT NULL;
"""


class HashMismatch(ValueError):
    """A fill's bytes do not hash to the sha256 the index announced."""


@dataclass(frozen=True, slots=True)
class BlobStats:
    count: int
    bytes: int
    irreplaceable_count: int
    irreplaceable_bytes: int


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    kind: Literal["corrupt", "missing", "orphan"]
    sha256: str | None  # None for an orphan file
    detail: str
    moved_to: Path | None = None  # where the file went in quarantine/, if it was moved


def _mismatch(expected: str, got: str, size: int) -> HashMismatch:
    return HashMismatch(f"sha256 mismatch: expected {expected}, got {got} ({size} bytes)")


def check_sha256(value: str) -> str:
    """Return `value` if it is a lowercase sha256 hex digest, else raise ValueError."""
    if not _SHA256.fullmatch(value):
        raise ValueError(f"not a lowercase sha256 hex digest: {value[:80]!r}")
    return value


@dataclass(frozen=True, slots=True)
class _Staged:
    """A finished temp file, handed to diskcache as a value so that it is renamed, not copied."""

    path: Path
    size: int


class _RenamingDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk, except that a `_Staged` value is moved into place with one rename, and
    files go in one level of `_SUBDIRS` directories that stay (`BlobStore` makes them all)."""

    def filename(self, key: Any = UNKNOWN, value: Any = UNKNOWN) -> tuple[str, str]:
        # diskcache's own names take two levels of directories, made on demand and removed
        # when empty: a fresh store made two directories a blob, and a directory's inode
        # search made up most of a commit's CPU on ext4 (bench/run, cold uv install: commit
        # threads 0.09 -> 0.04 s of CPU, wall 0.81 -> 0.70 s in 8 interleaved pairs).
        name = secrets.token_hex(16)
        filename = os.path.join(name[:2], f"{name[2:]}.val")
        return filename, os.path.join(self._directory, filename)

    def remove(self, file_path: str) -> None:
        # Another process may remove the same file at the same time (diskcache's reason, too).
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self._directory, file_path))

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, str | None, Any]:
        if not isinstance(value, _Staged):
            return super().store(value, read, key=key)  # type: ignore[no-any-return]
        filename, full_path = self.filename(key, value)
        try:
            os.rename(value.path, full_path)
        except FileNotFoundError:
            if not value.path.exists():
                raise
            # Its directory was removed behind the store's back: made again.
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(value.path, full_path)
        return value.size, MODE_BINARY, filename, None


class BlobHandle:
    """An open, leased blob: `file` is readable even if the blob is evicted meanwhile.

    A blob held in the index (`inline`) comes as an in-memory file, with no `path` or fd."""

    def __init__(self, release: Callable[[], None], sha256: str, file: IO[bytes], size: int):
        self.sha256 = sha256
        self.file = file
        self.size = size
        self._release: Callable[[], None] | None = release

    @property
    def inline(self) -> bool:
        return isinstance(self.file, io.BytesIO)

    @property
    def path(self) -> Path | None:
        return None if self.inline else Path(self.file.name)

    def read_all(self) -> bytes:
        """The whole blob, in memory: for small blobs only."""
        if isinstance(self.file, io.BytesIO):
            return self.file.getvalue()
        return os.pread(self.file.fileno(), self.size, 0)

    def close(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            self.file.close()
            release()

    def __enter__(self) -> BlobHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Fill:
    """A blob being written: a locked temp file in the store, hashed as it grows.

    `write` appends and hashes; the bytes are on disk (page cache) when it returns, so another
    reader may `pread` the file at `path` up to `size`.  `commit` verifies and renames the file
    into the store; `abort` deletes it.  Used as a context manager, it aborts unless committed.
    """

    def __init__(
        self, store: BlobStore, path: Path, expected_sha256: str | None, also: str | None = None
    ):
        self._store = store
        self.path = path
        self.expected_sha256 = expected_sha256
        self.size = 0
        self._hash = hashlib.sha256()
        # Another algorithm to hash with (`also_digest`): an index that gives md5 alone.
        self._also = hashlib.new(also) if also is not None else None
        # Created under another name and locked before it takes its `.part` name, so that a
        # cleaner never sees an unlocked `.part` file of a live writer.  Unbuffered: whatever
        # write() accepted is visible to readers of `path` at once.
        fresh = path.with_suffix(".new")
        self._file: IO[bytes] | None = open(fresh, "xb", buffering=0)
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(fresh, path)
        except BaseException:
            fresh.unlink(missing_ok=True)
            self._close()
            raise

    @property
    def sha256(self) -> str:
        """The sha256 of the bytes written so far."""
        return self._hash.hexdigest()

    @property
    def also_digest(self) -> str | None:
        """The digest of the bytes written so far in the `also` algorithm, if one was named."""
        return None if self._also is None else self._also.hexdigest()

    @property
    def finished(self) -> bool:
        return self._file is None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is None:
            raise ValueError("write to a finished fill")
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if written is None:  # only for non-blocking files; keeps the type checker honest
                continue
            view = view[written:]
        self._hash.update(data)
        if self._also is not None:
            self._also.update(data)
        self.size += len(data)

    def commit(self) -> str:
        """Store the blob (atomically, by rename) and return its sha256.

        Raises HashMismatch, after deleting the temp file, if it does not match `expected_sha256`.
        """
        if self._file is None:
            raise ValueError("commit of a finished fill")
        digest = self._hash.hexdigest()
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            self._discard()
            raise _mismatch(self.expected_sha256, digest, self.size)
        try:
            # Durable bytes before the rename makes them visible: after a power cut the index
            # never points at a file whose data did not reach the disk.
            os.fsync(self._file.fileno())
            self._store._adopt(self.path, digest, self.size)
        except BaseException:
            self._discard()
            raise
        self._close()  # the lock goes last: until now a cleaner could not take the file
        return digest

    def abort(self) -> None:
        if self._file is not None:
            self._discard()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._close()

    def __enter__(self) -> Fill:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class BlobStore:
    """Blobs by sha256 in a diskcache under `directory`, with an LRU over replaceable blobs.

    `size_limit` bounds the bytes of replaceable blobs; irreplaceable blobs do not count against
    it and are never evicted.  All methods are synchronous and thread-safe; the ones that read or
    write files belong in a worker thread when called from an event loop.
    """

    def __init__(
        self, directory: Path, *, size_limit: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = Path(directory)
        self.size_limit = size_limit
        self._clock = clock
        self._tmp = self.directory / "tmp"
        self._quarantine = self.directory / "quarantine"
        for sub in (self._tmp, self._quarantine):
            sub.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(
            str(self.directory / "cas"),
            disk=_RenamingDisk,
            eviction_policy="none",
            size_limit=2**62,
            cull_limit=0,
            statistics=False,
            disk_min_file_size=INLINE_LIMIT,
            # Blobs held in the index make it big: no map of it, and a small page cache (each
            # thread has its own), so that reading them does not grow the process.
            sqlite_mmap_size=0,
            sqlite_cache_size=256,
        )
        if os.stat(self._tmp).st_dev != os.stat(self._cache.directory).st_dev:
            raise ValueError(f"{self._tmp} and {self._cache.directory} must share a filesystem")
        self._make_subdirs()
        self._lock = threading.RLock()
        self._leases: Counter[str] = Counter()
        # Replaceable bytes at the last count, and bytes this process committed since.
        self._counted: tuple[int, float] | None = None
        self._added = 0
        self._db = sqlite3.connect(
            self.directory / "meta.sqlite3",
            timeout=60.0,
            isolation_level=None,
            check_same_thread=False,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._remove_stale_temps()
        self._reconcile()

    def _make_subdirs(self) -> None:
        cas = self._cache.directory
        present = set(os.listdir(cas))
        for name in _SUBDIRS:
            if name not in present:
                with contextlib.suppress(FileExistsError):  # another process made it
                    os.mkdir(os.path.join(cas, name))

    def close(self) -> None:
        with self._lock:
            self._cache.close()
            self._db.close()

    # -- filling -------------------------------------------------------------------------------

    def open_fill(self, expected_sha256: str | None, *, also: str | None = None) -> Fill:
        if expected_sha256 is not None:
            check_sha256(expected_sha256)
        return Fill(self, self._tmp / f"{secrets.token_hex(16)}.part", expected_sha256, also)

    def put(self, sha256: str, data: bytes) -> bool:
        """Store a whole file held in memory; False when it was stored already (by another
        process).  Raises HashMismatch, storing nothing, when `data` does not hash to `sha256`."""
        check_sha256(sha256)
        if len(data) >= INLINE_LIMIT:
            if self.has(sha256):
                return False
            with self.open_fill(sha256) as fill:
                fill.write(data)
                fill.commit()
            return True
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise _mismatch(sha256, digest, len(data))
        try:
            with self._write() as db:
                # diskcache keeps a value under its disk_min_file_size in the index row itself.
                added: bool = self._cache.add(sha256, bytes(data), retry=True)
                self._record(db, sha256, len(data))
        except sqlite3.OperationalError as e:  # disk full: as a file's write would fail
            raise OSError(f"cannot store blob {sha256}: {e}") from e
        if added:
            self._added += len(data)
        return added

    def _record(self, db: sqlite3.Connection, sha256: str, size: int) -> None:
        db.execute(
            "INSERT INTO blob (sha256, size, last_used) VALUES (?, ?, ?)"
            " ON CONFLICT (sha256) DO UPDATE SET size = excluded.size, last_used = excluded.last_used",
            (sha256, size, self._clock()),
        )

    def _adopt(self, path: Path, sha256: str, size: int) -> None:
        """Move a verified temp file into the store (Fill.commit's second half)."""
        with self._write() as db:
            # Stored already (by another process): diskcache keeps the first copy and deletes
            # this one, once renamed into cas/.
            if self._cache.add(sha256, _Staged(path, size), retry=True):
                self._added += size
            self._record(db, sha256, size)

    # -- reading -------------------------------------------------------------------------------

    def open(self, sha256: str) -> BlobHandle | None:
        """Open a stored blob for reading (a lease until closed), or None if it is not stored."""
        check_sha256(sha256)
        value = self._cache.get(sha256, read=True)
        if value is None:
            return None
        if isinstance(value, bytes):  # held in the index
            file, size = io.BytesIO(value), len(value)
        else:
            file, size = value, os.fstat(value.fileno()).st_size
        with self._lock:
            self._leases[sha256] += 1
        return BlobHandle(lambda: self._unlease(sha256), sha256, file, size)

    def _unlease(self, sha256: str) -> None:
        with self._lock:
            self._leases[sha256] -= 1
            if self._leases[sha256] <= 0:
                del self._leases[sha256]

    def path(self, sha256: str) -> Path | None:
        """Where the blob's file is now (None also for a blob held in the index).  Prefer
        `open`: an eviction may unlink the path later."""
        handle = self.open(sha256)
        if handle is None:
            return None
        with handle:
            return handle.path

    def has(self, sha256: str) -> bool:
        return check_sha256(sha256) in self._cache

    def size(self, sha256: str) -> int | None:
        check_sha256(sha256)
        with self._lock:
            row = self._db.execute("SELECT size FROM blob WHERE sha256 = ?", (sha256,)).fetchone()
        if row is not None and row[0] is not None:
            return int(row[0])
        handle = self.open(sha256)  # committed by another process a moment ago
        if handle is None:
            return None
        with handle:
            return handle.size

    def touch(self, sha256: str) -> None:
        """Record a use of the blob (LRU recency).

        Best effort: recency is a hint for eviction, and a store hit must still be served when
        the write cannot be made (disk full, database locked by another process for too long).
        """
        check_sha256(sha256)
        try:
            with self._lock:
                self._db.execute(
                    "UPDATE blob SET last_used = max(last_used, ?) WHERE sha256 = ? AND size IS NOT NULL",
                    (self._clock(), sha256),
                )
        except sqlite3.OperationalError as e:
            log.warning("cannot record the use of blob %s: %s", sha256, e)

    # -- irreplaceable blobs -------------------------------------------------------------------

    def mark_irreplaceable(self, sha256: str) -> bool:
        """Never evict this blob (upstream no longer has it).  Returns whether it is stored.

        The flag belongs to the hash: marking a blob that is not stored yet protects it once a
        fill commits it.  False means the caller should fill it (it may just have been evicted).
        """
        check_sha256(sha256)
        with self._write() as db:
            db.execute(
                "INSERT INTO blob (sha256, irreplaceable) VALUES (?, 1)"
                " ON CONFLICT (sha256) DO UPDATE SET irreplaceable = 1",
                (sha256,),
            )
            row = db.execute("SELECT size FROM blob WHERE sha256 = ?", (sha256,)).fetchone()
        return bool(row[0] is not None and sha256 in self._cache)

    def is_irreplaceable(self, sha256: str) -> bool:
        check_sha256(sha256)
        with self._lock:
            row = self._db.execute(
                "SELECT irreplaceable FROM blob WHERE sha256 = ?", (sha256,)
            ).fetchone()
        return bool(row and row[0])

    # -- eviction, stats -------------------------------------------------------------------------

    def evict_if_over(self) -> list[str]:
        """`evict_to_limit`, when the store may be over its limit: the last count plus what
        this process committed since exceeds it, or the count is older than _RECOUNT_SECONDS.

        Counting sums every blob's size, too much to do after each commit of a big store.
        Other processes' commits are seen at the next recount, so the store may run over its
        limit by what they committed in the meantime."""
        counted = self._counted
        if (
            counted is not None
            and counted[0] + self._added <= self.size_limit
            and time.monotonic() - counted[1] < _RECOUNT_SECONDS
        ):
            return []
        return self.evict_to_limit()

    def evict_to_limit(self) -> list[str]:
        """Evict least recently used replaceable blobs until they fit `size_limit`.

        Skips blobs leased in this process (open handles).  Returns the evicted sha256s.
        """
        evicted: list[str] = []
        with self._write() as db:
            (total,) = db.execute(
                "SELECT coalesce(sum(size), 0) FROM blob WHERE size IS NOT NULL AND irreplaceable = 0"
            ).fetchone()
            self._counted, self._added = (total, time.monotonic()), 0
            if total <= self.size_limit:
                return evicted
            rows = db.execute(
                "SELECT sha256, size FROM blob WHERE size IS NOT NULL AND irreplaceable = 0"
                " ORDER BY last_used, sha256"
            ).fetchall()
            for sha256, size in rows:
                if total <= self.size_limit:
                    break
                if self._leases[sha256] > 0:
                    continue
                # The irreplaceable flag is re-read inside this transaction: marking serialises
                # with us, so a blob marked a moment ago is never evicted.
                self._cache.delete(sha256, retry=True)
                db.execute("UPDATE blob SET size = NULL WHERE sha256 = ?", (sha256,))
                total -= size
                evicted.append(sha256)
            self._counted = (total, time.monotonic())
        if evicted:
            log.info("evicted %d blobs; replaceable bytes now %d", len(evicted), total)
        if total > self.size_limit:
            log.warning("blob store over its limit (%d > %d): blobs in use", total, self.size_limit)
        return evicted

    def stats(self) -> BlobStats:
        with self._lock:
            row = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(irreplaceable), 0),"
                " coalesce(sum(size * irreplaceable), 0) FROM blob WHERE size IS NOT NULL"
            ).fetchone()
        return BlobStats(*(int(v) for v in row))

    # -- integrity ---------------------------------------------------------------------------

    def verify(self, quarantine: bool = True) -> list[VerifyProblem]:
        """Re-hash every blob.  Corrupt ones (and old orphan files) move to quarantine/."""
        problems: list[VerifyProblem] = []
        referenced: set[Path] = set()
        for key in list(self._cache.iterkeys()):
            if not isinstance(key, str) or not _SHA256.fullmatch(key):
                continue
            problem = self._verify_one(key, quarantine, referenced)
            if problem is not None:
                problems.append(problem)
        problems.extend(self._sweep_orphans(referenced, quarantine))
        return problems

    def _verify_one(self, sha256: str, quarantine: bool, referenced: set[Path]) -> VerifyProblem | None:
        handle = self.open(sha256)
        if handle is None:
            if sha256 not in self._cache:
                return None  # evicted while we were verifying
            if quarantine:
                self._drop(sha256)
            return VerifyProblem("missing", sha256, "indexed but its file is gone")
        with handle:
            path = handle.path
            if path is not None:
                referenced.add(path)
            held = handle.read_all() if handle.inline else None
            digest = hashlib.sha256()
            while block := handle.file.read(_HASH_BLOCK):
                digest.update(block)
        if digest.hexdigest() == sha256:
            return None
        detail = f"content hashes to {digest.hexdigest()}"
        if self.is_irreplaceable(sha256):
            detail += " (irreplaceable: upstream no longer has it)"
        if not quarantine:
            return VerifyProblem("corrupt", sha256, detail)
        if path is not None:
            moved = self._quarantine_file(path, f"{sha256}.corrupt")
        else:
            assert held is not None
            moved = self._quarantine_bytes(held, f"{sha256}.corrupt")
        self._drop(sha256)
        log.error("blob %s is corrupt; moved to %s", sha256, moved)
        return VerifyProblem("corrupt", sha256, detail, moved)

    def _sweep_orphans(self, referenced: set[Path], quarantine: bool) -> Iterator[VerifyProblem]:
        cutoff = time.time() - _ORPHAN_AGE_SECONDS
        cas = Path(self._cache.directory)
        # Two levels: blobs stored by a datepin before the store's directories were fixed.
        for path in itertools.chain(cas.glob("*/*.val"), cas.glob("*/*/*.val")):
            if path in referenced:
                continue
            try:
                if path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            moved = self._quarantine_file(path, f"{path.name}.orphan") if quarantine else None
            yield VerifyProblem("orphan", None, f"{path} is not in the index", moved)

    def _quarantine_file(self, path: Path, name: str) -> Path | None:
        target = self._quarantine / f"{name}.{secrets.token_hex(4)}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None
        return target

    def _quarantine_bytes(self, data: bytes, name: str) -> Path:
        target = self._quarantine / f"{name}.{secrets.token_hex(4)}"
        target.write_bytes(data)
        return target

    def _drop(self, sha256: str) -> None:
        with self._write() as db:
            self._cache.delete(sha256, retry=True)
            db.execute("UPDATE blob SET size = NULL WHERE sha256 = ?", (sha256,))

    # -- startup -------------------------------------------------------------------------------

    def _remove_stale_temps(self) -> None:
        """Delete temp files whose writer is gone (its flock died with it)."""
        now = time.time()
        for path in self._tmp.iterdir():
            try:
                fd = os.open(path, os.O_RDONLY)
            except (FileNotFoundError, IsADirectoryError):
                continue
            try:
                # A `.new` file may be one a live writer has created but not yet locked.
                if path.suffix != ".part" and now - os.fstat(fd).st_mtime < _TEMP_GRACE_SECONDS:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        continue  # a live fill (this process or another)
                    raise
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                log.info("removed temp file left by an interrupted fill: %s", path.name)
            finally:
                os.close(fd)

    def _reconcile(self) -> None:
        """Make meta.sqlite3 agree with the diskcache index after a crash between the two."""
        with self._write() as db:
            present = {
                k for k in self._cache.iterkeys() if isinstance(k, str) and _SHA256.fullmatch(k)
            }
            known = {r[0] for r in db.execute("SELECT sha256 FROM blob WHERE size IS NOT NULL")}
            for sha256 in known - present:
                db.execute("UPDATE blob SET size = NULL WHERE sha256 = ?", (sha256,))
            for sha256 in present - known:
                handle = self.open(sha256)
                if handle is None:
                    continue
                with handle:
                    size = handle.size
                db.execute(
                    "INSERT INTO blob (sha256, size, last_used) VALUES (?, ?, ?)"
                    " ON CONFLICT (sha256) DO UPDATE SET size = excluded.size",
                    (sha256, size, self._clock()),
                )

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on meta.sqlite3 (serialises with other processes)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
