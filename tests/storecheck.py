"""Look inside a proxy's data directory from the test process: what history recorded, which
blobs are stored, whether the SQLite files are sound.  Read-only unless a name says otherwise."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def integrity(path: Path) -> str:
    """`PRAGMA integrity_check` of one SQLite file ("ok" when sound)."""
    with closing(_ro(path)) as db:
        return ";".join(row[0] for row in db.execute("PRAGMA integrity_check"))


def databases(data_dir: Path) -> list[Path]:
    candidates = [
        data_dir / "history.sqlite3",
        data_dir / "blobs" / "meta.sqlite3",
        data_dir / "blobs" / "cas" / "cache.db",
    ]
    return [p for p in candidates if p.exists()]


def observations(data_dir: Path, project: str, registry: str = "pypi") -> int:
    db_path = data_dir / "history.sqlite3"
    if not db_path.exists():
        return 0
    with closing(_ro(db_path)) as db:
        (n,) = db.execute(
            "SELECT count(*) FROM observations o JOIN projects p ON p.id = o.project_id"
            " WHERE p.registry = ? AND p.name = ?",
            (registry, project),
        ).fetchone()
    return int(n)


def gone_states(data_dir: Path, project: str, registry: str = "pypi") -> list[str]:
    """Files history has ever recorded as absent from an upstream page of `project`."""
    db_path = data_dir / "history.sqlite3"
    if not db_path.exists():
        return []
    with closing(_ro(db_path)) as db:
        return [
            row[0]
            for row in db.execute(
                "SELECT f.filename FROM file_states s JOIN files f ON f.id = s.file_id"
                " JOIN projects p ON p.id = f.project_id"
                " WHERE p.registry = ? AND p.name = ? AND s.state IS NULL",
                (registry, project),
            )
        ]


def stored(data_dir: Path) -> set[str]:
    """sha256 of every blob in the diskcache index."""
    db_path = data_dir / "blobs" / "cas" / "cache.db"
    if not db_path.exists():
        return set()
    with closing(_ro(db_path)) as db:
        return {row[0] for row in db.execute("SELECT key FROM Cache")}


def blob_files(data_dir: Path) -> list[Path]:
    """Every blob file in cas/ (one level of directories; two for blobs of older stores)."""
    cas = data_dir / "blobs" / "cas"
    return sorted([*cas.glob("*/*.val"), *cas.glob("*/*/*.val")])


def temp_files(data_dir: Path) -> list[Path]:
    tmp = data_dir / "blobs" / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def stored_contents_match(data_dir: Path) -> list[str]:
    """Problems: a stored blob whose bytes do not hash to its key (read-only check).  A small
    blob is held in the index row itself (no file name)."""
    problems = []
    db_path = data_dir / "blobs" / "cas" / "cache.db"
    if not db_path.exists():
        return problems
    with closing(_ro(db_path)) as db:
        rows = db.execute("SELECT key, filename, value FROM Cache").fetchall()
    for key, filename, value in rows:
        if filename is None:
            if (digest := hashlib.sha256(value).hexdigest()) != key:
                problems.append(f"{key}: content held in the index hashes to {digest}")
            continue
        path = data_dir / "blobs" / "cas" / filename
        if not path.exists():
            problems.append(f"{key}: indexed, file missing")
        elif sha256_of(path) != key:
            problems.append(f"{key}: content hashes to {sha256_of(path)}")
    return problems
