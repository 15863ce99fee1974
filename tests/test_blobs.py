"""The blob store: commit by rename, LRU over replaceable blobs, crash safety, verify."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from datepin.blobs import INLINE_LIMIT, BlobStats, BlobStore, HashMismatch

KIB = 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def put(store: BlobStore, data: bytes) -> str:
    fill = store.open_fill(sha(data))
    fill.write(data)
    return fill.commit()


def blob_files(directory: Path) -> list[Path]:
    return sorted((directory / "cas").glob("*/*.val"))


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / "tmp").iterdir())


def test_fill_commit_then_read(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    data = os.urandom(300 * KIB)
    fill = store.open_fill(sha(data))
    for i in range(0, len(data), 7000):
        fill.write(data[i : i + 7000])
    assert (fill.size, fill.sha256) == (len(data), sha(data))
    assert not store.has(sha(data))  # nothing visible before the commit
    assert fill.commit() == sha(data)

    assert store.has(sha(data)) and store.size(sha(data)) == len(data)
    path = store.path(sha(data))
    assert path is not None and path.read_bytes() == data
    handle = store.open(sha(data))
    assert handle is not None
    with handle:
        assert handle.size == len(data) and handle.file.read() == data
    assert store.stats() == BlobStats(1, len(data), 0, 0)
    assert temp_files(tmp_path) == []


def test_commit_is_a_rename_not_a_copy(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 40)
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    fill = store.open_fill(None)
    for _ in range(64):
        fill.write(block)
        digest.update(block)
    inode = os.stat(fill.path).st_ino
    assert fill.commit() == digest.hexdigest()
    path = store.path(digest.hexdigest())
    assert path is not None
    assert os.stat(path).st_ino == inode  # the very file the fill wrote
    assert not fill.path.exists()


def test_hash_mismatch_is_not_committed(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    expected = sha(b"the real bytes")
    fill = store.open_fill(expected)
    fill.write(b"other bytes")
    with pytest.raises(HashMismatch):
        fill.commit()
    assert not store.has(expected) and not store.has(sha(b"other bytes"))
    assert temp_files(tmp_path) == []
    assert store.stats().count == 0


def test_abort_and_context_manager_delete_the_temp(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    fill = store.open_fill(None)
    fill.write(b"x" * 1000)
    fill.abort()
    with pytest.raises(RuntimeError), store.open_fill(None) as other:
        other.write(b"y")
        raise RuntimeError("upstream went away")
    assert temp_files(tmp_path) == [] and store.stats().count == 0


def test_bad_hash_strings_are_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    for bad in ("../../etc/passwd", "ABC", "0" * 63, "G" * 64):
        with pytest.raises(ValueError):
            store.has(bad)
        with pytest.raises(ValueError):
            store.open_fill(bad)


def test_same_blob_twice_keeps_one_copy(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    data = os.urandom(10 * KIB)
    put(store, data)
    put(store, data)
    assert store.stats() == BlobStats(1, len(data), 0, 0)
    assert len(blob_files(tmp_path)) == 1 and temp_files(tmp_path) == []
    assert store.verify() == []


def test_blob_files_go_in_directories_made_with_the_store_and_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    cas = tmp_path / "cas"
    made = sorted(p.name for p in cas.iterdir() if p.is_dir())
    assert made == [f"{i:02x}" for i in range(256)]
    blobs = [put(store, os.urandom(KIB)) for _ in range(20)]
    paths = [store.path(b) for b in blobs]
    assert all(p is not None and p.parent.parent == cas for p in paths)
    store.size_limit = 0
    assert sorted(store.evict_to_limit()) == sorted(blobs)
    assert not any(p is not None and p.exists() for p in paths)
    assert sorted(p.name for p in cas.iterdir() if p.is_dir()) == made  # none removed
    # A directory removed behind the store's back is made again by the next commit there.
    for sub in made:
        os.rmdir(cas / sub)
    data = b"after the directories went"
    put(store, data)
    with store.open(sha(data)) as handle:  # type: ignore[union-attr]
        assert handle.file.read() == data


def test_blobs_of_the_two_level_layout_are_read_evicted_and_swept(tmp_path: Path) -> None:
    import diskcache  # type: ignore[import-untyped]

    # A store whose files diskcache named itself, in two levels of directories.
    old = b"stored in two levels"
    with diskcache.Cache(str(tmp_path / "cas"), disk_min_file_size=0) as cache:
        cache.set(sha(old), old)
        (old_path,) = (tmp_path / "cas").glob("*/*/*.val")
    stray = old_path.with_name("stray.val")
    stray.write_bytes(b"not in the index")
    long_ago = time.time() - 2 * 3600
    os.utime(stray, (long_ago, long_ago))

    store = BlobStore(tmp_path, size_limit=1 << 30)
    with store.open(sha(old)) as handle:  # type: ignore[union-attr]
        assert handle.file.read() == old
    (problem,) = store.verify()
    assert problem.kind == "orphan" and problem.moved_to is not None
    assert problem.moved_to.read_bytes() == b"not in the index"
    store.size_limit = 0
    assert store.evict_to_limit() == [sha(old)] and not old_path.exists()


def test_lru_evicts_oldest_replaceable_never_irreplaceable(tmp_path: Path) -> None:
    clock = Clock()
    store = BlobStore(tmp_path, size_limit=3 * KIB, clock=clock)
    blobs = {}
    for name in "abcd":
        clock.now += 10
        blobs[name] = put(store, name.encode() * KIB)
    assert store.mark_irreplaceable(blobs["a"])  # the oldest, but gone upstream
    clock.now += 10
    store.touch(blobs["b"])  # b is now the most recent
    # replaceable: b, c, d = 3 KiB: fits
    assert store.evict_to_limit() == []
    clock.now += 10
    blobs["e"] = put(store, b"e" * KIB)
    assert store.evict_to_limit() == [blobs["c"]]  # oldest replaceable; a is skipped
    clock.now += 10
    blobs["f"] = put(store, b"f" * (2 * KIB))
    assert store.evict_to_limit() == [blobs["d"], blobs["b"]]
    assert store.has(blobs["a"]) and store.is_irreplaceable(blobs["a"])
    assert store.stats() == BlobStats(3, 4 * KIB, 1, KIB)


def test_evict_if_over_counts_its_own_commits_and_recounts_for_other_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    store = BlobStore(tmp_path, size_limit=3 * KIB, clock=clock)
    other = BlobStore(tmp_path, size_limit=3 * KIB, clock=clock)
    blobs = []
    for i in range(3):
        clock.now += 10
        blobs.append(put(store, bytes([i]) * KIB))
        assert store.evict_if_over() == []  # 1, 2, 3 KiB: within the limit
    clock.now += 10
    put(store, b"x" * KIB)
    assert store.evict_if_over() == [blobs[0]]  # its own commit took it over
    clock.now += 10
    put(other, b"y" * KIB)  # another process's commit: not seen until a recount
    assert store.evict_if_over() == []
    monkeypatch.setattr("datepin.blobs._RECOUNT_SECONDS", 0.0)
    assert store.evict_if_over() == [blobs[1]]
    assert store.stats().bytes == 3 * KIB


def test_put_stores_a_whole_file_once_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    data = os.urandom(3 * KIB)
    with pytest.raises(HashMismatch):
        store.put(sha(b"something else"), data)
    assert store.stats().count == 0 and temp_files(tmp_path) == []
    assert store.put(sha(data), data) is True
    assert store.put(sha(data), data) is False  # stored already
    handle = store.open(sha(data))
    assert handle is not None
    with handle:
        assert handle.file.read() == data


def test_a_small_file_put_whole_is_held_in_the_index_a_bigger_one_gets_a_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    small, big = os.urandom(INLINE_LIMIT - 1), os.urandom(INLINE_LIMIT)
    assert store.put(sha(small), small) and store.put(sha(big), big)
    assert store.put(sha(small), small) is False  # stored already
    assert blob_files(tmp_path) == [store.path(sha(big))]
    assert store.path(sha(small)) is None and store.size(sha(small)) == len(small)
    handle = store.open(sha(small))
    assert handle is not None
    with handle:
        assert (handle.inline, handle.path, handle.size) == (True, None, len(small))
        assert handle.read_all() == small == handle.file.read()
    assert store.stats() == BlobStats(2, len(small) + len(big), 0, 0)
    assert temp_files(tmp_path) == []
    reopened = BlobStore(tmp_path, size_limit=1 << 30)  # held in the index, so kept
    assert reopened.stats() == store.stats() and reopened.verify() == []
    reopened.size_limit = 0  # and evicted as any other blob
    assert sorted(reopened.evict_to_limit()) == sorted([sha(small), sha(big)])
    assert not reopened.has(sha(small)) and blob_files(tmp_path) == []


def test_verify_moves_a_corrupt_blob_held_in_the_index_to_quarantine(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    data = os.urandom(1000)
    store.put(sha(data), data)
    rotten = bytes([data[0] ^ 0xFF]) + data[1:]
    with sqlite3.connect(tmp_path / "cas" / "cache.db") as db:  # bit rot inside the index
        rows = db.execute("UPDATE Cache SET value = ? WHERE key = ? RETURNING 1", (rotten, sha(data))).fetchall()
    assert rows == [(1,)]
    (problem,) = store.verify()
    assert (problem.kind, problem.sha256) == ("corrupt", sha(data))
    assert problem.moved_to is not None and problem.moved_to.read_bytes() == rotten
    assert not store.has(sha(data)) and store.stats().count == 0


def test_irreplaceable_beyond_the_limit_is_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 * KIB)
    kept = [put(store, bytes([i]) * (4 * KIB)) for i in range(3)]
    for digest in kept:
        store.mark_irreplaceable(digest)
    assert store.evict_to_limit() == []
    assert all(store.has(d) for d in kept)


def test_mark_before_the_blob_arrives_protects_it(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=0)
    data = b"rescued later" * 100
    assert store.mark_irreplaceable(sha(data)) is False  # not stored yet
    put(store, data)
    assert store.evict_to_limit() == []
    assert store.has(sha(data))


def test_open_blob_is_leased_and_survives_eviction_by_another_process(tmp_path: Path) -> None:
    clock = Clock()
    store = BlobStore(tmp_path, size_limit=KIB, clock=clock)
    old = os.urandom(4 * KIB)
    put(store, old)
    handle = store.open(sha(old))
    assert handle is not None
    clock.now += 10
    put(store, os.urandom(KIB))
    # This process is reading `old`: its eviction waits.
    assert sha(old) not in store.evict_to_limit()
    assert store.has(sha(old))
    # Another process (its own BlobStore, no lease) evicts it from under us...
    other = BlobStore(tmp_path, size_limit=KIB)
    assert sha(old) in other.evict_to_limit()
    assert not store.has(sha(old)) and not handle.path.exists()
    # ...and the open file still reads whole (POSIX: unlink leaves open files alone).
    assert handle.file.read() == old
    handle.close()
    assert store.evict_to_limit() == []


def test_two_stores_on_one_directory_share_state(tmp_path: Path) -> None:
    first = BlobStore(tmp_path, size_limit=0)
    second = BlobStore(tmp_path, size_limit=0)
    data = os.urandom(2 * KIB)
    put(first, data)
    assert second.has(sha(data)) and second.size(sha(data)) == len(data)
    first.mark_irreplaceable(sha(data))
    assert second.is_irreplaceable(sha(data))
    assert second.evict_to_limit() == []
    assert second.stats() == BlobStats(1, len(data), 1, len(data))


def test_stale_temp_files_are_removed_at_start_live_ones_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    live = store.open_fill(None)
    live.write(b"in progress")
    stale = tmp_path / "tmp" / "0123456789abcdef.part"
    stale.write_bytes(b"left by a crash")

    BlobStore(tmp_path, size_limit=1 << 30)  # e.g. `datepin snapshot` starting meanwhile

    assert temp_files(tmp_path) == [live.path.name]
    live.write(b", still")
    assert live.commit() == sha(b"in progress, still")


def run_child(directory: Path, code: str) -> None:
    """Run `code` in a fresh interpreter that dies with os._exit (a crash) at some point."""
    prelude = f"import os, sys\nfrom pathlib import Path\nfrom datepin.blobs import BlobStore\nd = Path({str(directory)!r})\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, timeout=60
    )
    assert result.returncode == 17, result.stderr.decode()


def test_crash_while_filling_leaves_nothing(tmp_path: Path) -> None:
    run_child(
        tmp_path,
        """
        store = BlobStore(d, size_limit=1 << 30)
        fill = store.open_fill(None)
        fill.write(b"half a wheel")
        os._exit(17)
        """,
    )
    assert len(temp_files(tmp_path)) == 1
    store = BlobStore(tmp_path, size_limit=1 << 30)
    assert temp_files(tmp_path) == []
    assert store.stats().count == 0


def test_crash_between_rename_and_index_leaves_nothing_visible(tmp_path: Path) -> None:
    data = b"a complete wheel"
    run_child(
        tmp_path,
        """
        import datepin.blobs as blobs
        original = blobs._RenamingDisk.store
        def store_then_die(self, *args, **kwargs):
            original(self, *args, **kwargs)
            os._exit(17)
        blobs._RenamingDisk.store = store_then_die
        store = BlobStore(d, size_limit=1 << 30)
        fill = store.open_fill(None)
        fill.write(b"a complete wheel")
        fill.commit()
        """,
    )
    store = BlobStore(tmp_path, size_limit=1 << 30)
    assert not store.has(sha(data)) and store.stats().count == 0
    (orphan,) = blob_files(tmp_path)
    old = time.time() - 2 * 3600
    os.utime(orphan, (old, old))
    (problem,) = store.verify()
    assert problem.kind == "orphan" and problem.moved_to is not None
    assert problem.moved_to.read_bytes() == data  # quarantined, not lost
    assert not orphan.exists()


@pytest.mark.parametrize(
    "store_it",
    [
        "fill = store.open_fill(None); fill.write(data); fill.commit()",
        "store.put(hashlib.sha256(data).hexdigest(), data)",  # held in the index
    ],
)
def test_crash_after_index_insert_is_reconciled(tmp_path: Path, store_it: str) -> None:
    data = b"committed, metadata not yet written"
    run_child(
        tmp_path,
        f"""
        import hashlib
        store = BlobStore(d, size_limit=1 << 30)
        add = store._cache.add
        def add_then_die(*args, **kwargs):
            add(*args, **kwargs)
            os._exit(17)
        store._cache.add = add_then_die
        data = {data!r}
        {store_it}
        """,
    )
    store = BlobStore(tmp_path, size_limit=1 << 30)
    assert store.has(sha(data))
    assert store.stats() == BlobStats(1, len(data), 0, 0)
    assert store.verify() == []


def test_verify_quarantines_corrupt_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    good, bad = os.urandom(5 * KIB), os.urandom(5 * KIB)
    put(store, good)
    put(store, bad)
    store.mark_irreplaceable(sha(bad))
    path = store.path(sha(bad))
    assert path is not None
    with open(path, "r+b") as f:  # bit rot (a byte that differs: random data may hold a 0 there)
        f.seek(100)
        f.write(bytes([bad[100] ^ 0xFF]))

    (reported,) = store.verify(quarantine=False)
    assert reported.kind == "corrupt" and reported.moved_to is None and store.has(sha(bad))

    (problem,) = store.verify()
    assert problem.kind == "corrupt" and problem.sha256 == sha(bad)
    assert "irreplaceable" in problem.detail
    assert problem.moved_to is not None and problem.moved_to.parent == tmp_path / "quarantine"
    assert not store.has(sha(bad)) and store.has(sha(good))
    assert store.stats() == BlobStats(1, len(good), 0, 0)
    assert store.verify() == []


def test_verify_reports_missing_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, size_limit=1 << 30)
    data = os.urandom(KIB)
    put(store, data)
    path = store.path(sha(data))
    assert path is not None
    path.unlink()
    (problem,) = store.verify()
    assert (problem.kind, problem.sha256) == ("missing", sha(data))
    assert not store.has(sha(data)) and store.stats().count == 0
