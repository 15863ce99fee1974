"""The SQLite history store: what it records, and that past views never change."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import struct
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from packaging.utils import canonicalize_name

from datepin.config import Config, Registry
from datepin.history import (
    CHECKPOINT_EVERY,
    SCHEMA_VERSION,
    HistoryBusy,
    HistoryStore,
    encode_file,
    first_history,
    to_micros,
    url_tail,
)
from datepin.model import DistFile, ProjectPage
from datepin.pins import Pin
from datepin.rewrite.render import render_html, render_json
from datepin import service
from datepin.rewrite.parse import PAGE_READER
from datepin.service import SMALL_PAGE_FILES, Index, conditions, page_digest, page_validator
from datepin.upstream import Fetched, Upstream
from datepin.views import view
from fakepypi import FakePyPI

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def dist(version: str, *, uploaded: datetime, yanked: str | None = None, tag: str = "py3-none-any") -> DistFile:
    filename = f"demo-{version}-{tag}.whl"
    return DistFile(
        filename=filename,
        url=f"https://files.example/{filename}",
        hashes={"sha256": f"{abs(hash(filename)):064x}"[:64]},
        yanked=yanked,
        upload_time=uploaded,
        upload_time_raw=uploaded.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        size=100,
    )


def page(*files: DistFile, status: str | None = None) -> ProjectPage:
    return ProjectPage(name="demo", files=tuple(files), status=status)  # type: ignore[arg-type]


def link(f: DistFile) -> str:
    return "/files/" + f.filename


def test_records_changes_only(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    a = dist("1.0", uploaded=T0 - timedelta(days=30))
    b = dist("2.0", uploaded=T0 - timedelta(days=1))
    _, first = store.record("pypi", "demo", page(a, b), T0)
    assert [f.filename for f in first.added] == [a.filename, b.filename]
    size_after_first = store.size_bytes()
    for day in range(1, 30):
        _, same = store.record("pypi", "Demo", page(a, b), T0 + timedelta(days=day))
        assert not same.is_change
    history = store.load("pypi", "demo")
    assert history is not None
    assert len(history.observations) == 30
    assert all(len(fh.states) == 1 for fh in history.files)
    _, gone = store.record("pypi", "demo", page(a), T0 + timedelta(days=31))
    assert [f.filename for f in gone.gone] == [b.filename]
    _, yank = store.record("pypi", "demo", page(a.__class__(**{**_fields(a), "yanked": "bad"})), T0 + timedelta(days=32))
    assert [f.filename for f in yank.changed] == [a.filename]
    _, removed = store.record("pypi", "demo", None, T0 + timedelta(days=33))
    assert removed.removed and [f.filename for f in removed.gone] == [a.filename]
    assert store.size_bytes() >= size_after_first
    found = store.find_file("pypi", b.sha256 or "", b.filename)
    assert found is not None and not found.present and found.file.filename == b.filename


def _fields(f: DistFile) -> dict[str, object]:
    return {name: getattr(f, name) for name in f.__slots__}  # type: ignore[attr-defined]


def test_a_new_signature_alone_is_no_change_but_a_yank_that_comes_with_one_is(tmp_path: Path) -> None:
    """A registry on object storage lists each file under a new presigned URL on every page:
    that alone changes nothing, but what else changes with it (a yank) is recorded."""
    store = HistoryStore(tmp_path / "h.sqlite3")
    a = dist("1.0", uploaded=T0 - timedelta(days=30))
    signed = [replace(a, url=f"{a.url}?X-Amz-Signature={n}") for n in range(3)]
    store.record("pypi", "demo", page(signed[0]), T0)
    _, resigned = store.record("pypi", "demo", page(signed[1]), T0 + timedelta(days=1))
    assert not resigned.is_change
    _, yanked = store.record("pypi", "demo", page(replace(signed[2], yanked="broken")), T0 + timedelta(days=2))
    assert [f.filename for f in yanked.changed] == [a.filename]
    history = store.load("pypi", "demo")
    assert history is not None
    [before] = view(history, T0 + timedelta(days=1, hours=1)).files
    [after] = view(history, T0 + timedelta(days=2, hours=1)).files
    assert (before.yanked, after.yanked) == (None, "broken")


def test_observation_times_stay_increasing(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    when1, _ = store.record("pypi", "demo", page(), T0)
    when2, _ = store.record("pypi", "demo", page(), T0 - timedelta(hours=1))  # clock went back
    assert when2 > when1



def test_an_observation_asked_before_the_last_recorded_one_changes_no_view(tmp_path: Path) -> None:
    """Two processes on one data directory (the server and `datepin snapshot`) observe a
    project at once; the page asked for first comes back last, older than what is recorded."""
    store = HistoryStore(tmp_path / "h.sqlite3")
    a = dist("1.0", uploaded=T0 - timedelta(days=30))
    b = dist("1.1", uploaded=T0 + timedelta(seconds=1))  # between the two requests
    store.record("pypi", "demo", page(a), T0 - timedelta(days=1))
    store.record("pypi", "demo", page(a, b), T0 + timedelta(seconds=2))  # asked second
    when, late = store.record("pypi", "demo", page(a), T0)  # asked first, recorded last
    assert not late.is_change, late
    store.record("pypi", "demo", page(a, b), T0 + timedelta(hours=2))  # a later request
    history = store.load("pypi", "demo")
    assert history is not None
    cutoff = T0 + timedelta(hours=1)
    assert [f.filename for f in view(history, cutoff).files] == [a.filename, b.filename]
    assert all(state.file is not None for fh in history.files for state in fh.states)
    assert when > T0 + timedelta(seconds=2)  # times stay increasing


def test_a_404_asked_before_the_last_recorded_observation_is_no_removal(tmp_path: Path) -> None:
    """The project was gone for a moment (404), then back; the 404, asked for first, is
    recorded last: `datepin history` must not show the project removed since then."""
    store = HistoryStore(tmp_path / "h.sqlite3")
    a = dist("1.0", uploaded=T0 - timedelta(days=30))
    store.record("pypi", "demo", page(a), T0 - timedelta(days=1))
    store.record("pypi", "demo", page(a), T0 + timedelta(seconds=2))
    _, late = store.record("pypi", "demo", None, T0)
    assert not late.removed
    history = store.load("pypi", "demo")
    assert history is not None and history.not_found == ()


def test_observations_asked_at_one_moment_are_folded_in_the_order_recorded(tmp_path: Path) -> None:
    """A clock that did not move between requests (coarse, or stopped in tests) says
    nothing about their order: each observation still counts."""
    store = HistoryStore(tmp_path / "h.sqlite3")
    a, b = dist("1.0", uploaded=T0 - timedelta(days=2)), dist("1.1", uploaded=T0 - timedelta(days=1))
    store.record("pypi", "demo", page(a), T0)
    _, added = store.record("pypi", "demo", page(a, b), T0)
    _, gone = store.record("pypi", "demo", page(a), T0)
    assert [f.filename for f in added.added] == [b.filename]
    assert [f.filename for f in gone.gone] == [b.filename]

# URLs a registry may list: a query string, an encoded and a non-ASCII name, no file name.
_ODD_URLS = (
    "https://files.example/packages/ab/cd/demo-1.0-py3-none-any.whl",
    "https://dl.example/whl/demo-1.1%2Bcpu-py3-none-any.whl?token=x/y",
    "https://dl.example/ünï/démo-1.2-py3-none-any.whl",
    "https://dl.example/download/",
    "demo-1.3-py3-none-any.whl",
)


def _odd_files() -> list[DistFile]:
    return [replace(dist(f"1.{i}", uploaded=T0), url=url) for i, url in enumerate(_ODD_URLS)]


def test_files_are_found_by_key_and_by_url_through_their_indexes(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    files = _odd_files()
    store.record("pypi", "demo", page(*files), T0)
    for f in files:
        by_key = store.find_file("pypi", f.sha256 or "", f.filename)
        by_url = store.find_file_by_url(f.url)
        assert by_key is not None and by_url is not None
        assert by_key.file == by_url.file == f
    assert store.find_file("pypi", files[0].sha256 or "", files[1].filename) is None
    assert store.find_file_by_url(files[0].url + "x") is None
    # Neither lookup scans the files table (what it would do without an index to use).
    db = store._db()
    for where, args in (("filename=? AND key=?", ("a", "b")), ("url_tail=? AND url=?", ("a", "b"))):
        plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN SELECT id FROM files WHERE {where}", args))
        assert "USING INDEX files_" in plan, plan


def test_a_history_written_before_url_tail_is_upgraded_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    files = _odd_files()
    store.record("pypi", "demo", page(*files), T0)
    store.close()
    db = sqlite3.connect(path, isolation_level=None)  # as an earlier datepin left it
    db.executescript(
        "DROP INDEX files_filename; DROP INDEX files_url_tail; ALTER TABLE files DROP COLUMN url_tail;"
        " CREATE INDEX files_key ON files (key); CREATE INDEX files_url ON files (url);"
        " PRAGMA user_version = 0;"
    )
    db.close()
    for _ in range(2):  # the second opening finds nothing to do
        store = HistoryStore(path)
        db = store._db()
        tails = dict(db.execute("SELECT url, url_tail FROM files").fetchall())
        assert tails == {f.url: url_tail(f.url) for f in files}
        indexes = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='files'")}
        assert {"files_filename", "files_url_tail"} <= indexes and not {"files_key", "files_url"} & indexes
        assert all(store.find_file_by_url(f.url) is not None for f in files)
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        store.record("pypi", "demo", page(*files[1:]), T0 + timedelta(days=1))  # and it is written as before
        store.close()


def test_a_history_written_before_validators_is_upgraded_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    a, b = dist("1.0", uploaded=T0), dist("2.0", uploaded=T0)
    store.record("pypi", "demo", page(a), T0)
    store.record("pypi", "demo", page(a, b), T0 + timedelta(days=1))
    store.record("pypi", "demo", page(a, b), T0 + timedelta(days=2))
    store.close()
    db = sqlite3.connect(path, isolation_level=None)  # as schema version 1 left it
    db.executescript(
        "ALTER TABLE projects DROP COLUMN validator; ALTER TABLE projects DROP COLUMN changed_at;"
        " ALTER TABLE projects DROP COLUMN noted_at; PRAGMA user_version = 1;"
    )
    db.close()
    for _ in range(2):  # the second opening finds nothing to do
        store = HistoryStore(path)
        # No validator yet; the last change is taken to be the last observation.
        assert store.latest("pypi", "demo") == (T0 + timedelta(days=2), T0 + timedelta(days=2), None)
        assert store._db().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        store.close()


def test_a_304_is_recorded_as_an_unchanged_observation_of_the_page_it_names(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    a, b = dist("1.0", uploaded=T0 - timedelta(days=2)), dist("2.0", uploaded=T0 - timedelta(days=1))
    tag = '{"etag": "\"one\""}'
    store.record("pypi", "demo", replace(page(a, b), validator=tag), T0)
    assert store.latest("pypi", "demo") == (T0, T0, tag)
    later = T0 + timedelta(days=1)
    recorded = store.record_unchanged("pypi", "Demo", later, tag)
    assert recorded is not None
    when, change = recorded
    assert when == later and not change.is_change and change.state_at == T0
    assert store.latest("pypi", "demo") == (later, T0, tag)
    history = store.load("pypi", "demo")
    assert history is not None and history.observations == (T0, later)
    assert view(history, later + timedelta(hours=1)).files == view(history, T0 + timedelta(hours=1)).files
    assert all(len(fh.states) == 1 for fh in history.files)  # an observation row, no more
    # A validator that is not the latest page's, a project never seen, one upstream had
    # gone from: nothing recorded, the page must be asked for whole.
    assert store.record_unchanged("pypi", "demo", later + timedelta(days=1), '{"etag": "\"two\""}') is None
    assert store.record_unchanged("pypi", "other", later + timedelta(days=1), tag) is None
    store.record("pypi", "demo", None, later + timedelta(days=2))
    assert store.latest("pypi", "demo") == (later + timedelta(days=2), later + timedelta(days=2), None)
    assert store.record_unchanged("pypi", "demo", later + timedelta(days=3), tag) is None
    assert store.last_observed("pypi", "demo") == later + timedelta(days=2)


def test_a_last_modified_within_the_second_of_the_answer_is_no_validator() -> None:
    modified = "Tue, 21 Nov 2023 10:00:00 GMT"

    def asked(**headers: str) -> dict[str, str]:
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        fetched = Fetched(200, "https://example.org/simple/demo/", "text/html", bytearray(b"-"), sent)
        return conditions(page_validator(fetched, page_digest(fetched)))

    assert asked(ETag='"a"', Date="Tue, 21 Nov 2023 10:00:00 GMT", Last_Modified=modified) == {
        "If-None-Match": '"a"'
    }
    assert asked(Date="Tue, 21 Nov 2023 10:00:01 GMT", Last_Modified=modified) == {
        "If-Modified-Since": modified
    }
    assert asked(Last_Modified=modified) == {}  # no Date: when it was sent is not known
    assert asked(Date="yesterday", Last_Modified=modified) == {}
    assert asked() == {} and conditions(None) == {}
    # A page another PAGE_READER read is asked for whole, to be read again; so is one whose
    # validator is damaged.
    assert conditions(json.dumps({"etag": '"a"', "digest": f"{PAGE_READER - 1}:00"})) == {}
    assert conditions('{"etag": ') == {} and conditions("[1]") == {}


def test_the_same_page_sent_whole_again_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry that ignores conditions (or sends no validators) sends the page whole: the
    same bytes as the page history holds are an unchanged observation, not read again, unless
    pages are read otherwise since (PAGE_READER)."""

    async def go(fake: FakePyPI) -> None:
        async with pypi_index(fake, tmp_path / "h.sqlite3") as (index, pypi):
            await index.observe(pypi, "alpha")
            reads: list[object] = []
            read = service.parse_json_page
            monkeypatch.setattr(service, "parse_json_page", lambda *a: reads.append(a) or read(*a))
            change = await index.observe(pypi, "alpha")
            assert change is not None and not change.is_change
            assert (reads, index.pages_not_modified) == ([], 1)
            fake.add_wheel("alpha", "2.0", upload_time="2023-02-01T00:00:00Z")
            change = await index.observe(pypi, "alpha")
            assert change is not None and [f.filename for f in change.added] == ["alpha-2.0-py3-none-any.whl"]
            assert len(reads) == 1
            monkeypatch.setattr(service, "PAGE_READER", PAGE_READER + 1)
            change = await index.observe(pypi, "alpha")
            assert change is not None and not change.is_change
            assert (len(reads), index.pages_not_modified) == (2, 1)
            assert [r.status for r in fake.requests_for("/simple/alpha/")] == [200] * 4

    with FakePyPI() as fake:
        fake.conditional_pages = False
        fake.add_wheel("alpha", "1.0", upload_time="2023-01-01T00:00:00Z")
        asyncio.run(asyncio.wait_for(go(fake), 60))


def test_an_observation_recorded_by_an_earlier_datepin_leaves_validator_and_last_change_unknown(
    tmp_path: Path,
) -> None:
    """An earlier datepin sharing the data directory records pages without noting validators
    or last changes: what was noted before describes an older page then, and is not used."""
    store = HistoryStore(tmp_path / "h.sqlite3")
    tag = '{"etag": "\\"one\\""}'
    store.record("pypi", "demo", replace(page(dist("1.0", uploaded=T0)), validator=tag), T0)
    later = T0 + timedelta(days=1)
    with store._tx() as db:  # what its record writes for a file upstream added meanwhile
        db.execute("INSERT INTO observations SELECT id, ?, 1 FROM projects", (to_micros(later),))
    assert store.latest("pypi", "demo") == (later, later, None)
    assert store.record_unchanged("pypi", "demo", later + timedelta(days=1), tag) is None
    _, change = store.record("pypi", "demo", replace(page(dist("1.0", uploaded=T0)), validator=tag),
                             later + timedelta(days=2))
    assert not change.is_change and change.state_at == later + timedelta(days=2)  # not known: now
    assert store.latest("pypi", "demo") == (later + timedelta(days=2), later + timedelta(days=2), tag)


def test_the_last_change_moves_only_with_what_a_view_can_tell_apart(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    a = dist("1.0", uploaded=T0 - timedelta(days=1))
    days = iter(T0 + timedelta(days=n) for n in range(100))

    def changed(p: ProjectPage | None) -> bool:
        before = store.latest("pypi", "demo")
        at, change = store.record("pypi", "demo", p, next(days))
        latest = store.latest("pypi", "demo")
        assert latest is not None and latest.observed == at and change.state_at == latest.changed
        return before is None or latest.changed != before.changed

    assert changed(page(a))  # the first observation
    assert not changed(page(a))
    assert not changed(replace(page(a), validator='{"etag": "\"new\""}'))  # other validators
    assert not changed(page(replace(a, url=a.url + "?X-Amz-Signature=2")))  # a new signature
    assert changed(page(replace(a, yanked="bad")))
    assert changed(page(replace(a, yanked="bad"), status="archived"))
    assert changed(None)  # upstream's 404
    assert not changed(None)
    assert changed(page())  # back, with no files
    assert changed(page(a))


def test_unchanged_observations_cost_little(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    files = [dist(f"1.{i}", uploaded=T0 - timedelta(days=i + 1)) for i in range(200)]
    store.record("pypi", "demo", page(*files), T0)
    store._db().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = (tmp_path / "h.sqlite3").stat().st_size
    for day in range(1, 101):
        store.record("pypi", "demo", page(*files), T0 + timedelta(days=day))
    store._db().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    after = (tmp_path / "h.sqlite3").stat().st_size
    assert (after - before) / 100 < 1024  # bytes per unchanged day


_TEXT = st.text("aZé_ü-.1/", max_size=10)
_FILES = st.lists(
    st.builds(
        DistFile,
        filename=st.text("aZé_ü-.1", min_size=1, max_size=10),
        url=_TEXT,
        hashes=st.dictionaries(st.sampled_from(["sha256", "md5", "blake2b_256"]), st.text("0123456789abcdef", max_size=8)),
        requires_python=st.none() | _TEXT,
        core_metadata=st.none() | st.dictionaries(st.sampled_from(["sha256", "md5"]), st.text("0123456789abcdef", max_size=8)),
        yanked=st.none() | _TEXT,
        upload_time=st.none() | st.datetimes(datetime(1990, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
        upload_time_raw=st.none() | _TEXT,
        size=st.none() | st.integers(0, 2**40),
    ),
    max_size=8,  # file names may repeat: the last one listed counts, as in `record`
)


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=_FILES,
    status=st.none() | st.sampled_from(["archived", "quarantined"]),
    reason=st.none() | _TEXT,
    found=st.booleans(),
)
def test_a_first_observation_is_its_history_without_reading_it_back(  # type: ignore[no-untyped-def]
    tmp_path_factory, files, status, reason, found
) -> None:
    """A cold page's view is computed from `first_history`: it must be what `load` reads."""
    store = HistoryStore(tmp_path_factory.mktemp("h") / "h.sqlite3")
    store.track("pypi", "demo")  # known as a project, never observed: still a first observation
    observed = ProjectPage(name="demo", files=tuple(files), status=status, status_reason=reason) if found else None  # type: ignore[arg-type]
    _, change = store.record("pypi", "Demo", observed, T0)
    assert change.first
    assert first_history("pypi", change, observed) == store.load("pypi", "demo")
    _, again = store.record("pypi", "demo", observed, T0 + timedelta(hours=1))
    assert not again.first


# -- determinism through the real store ------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["add", "backfill", "delete", "yank", "unyank", "remove", "restore", "observe"]),
        st.integers(0, 5),
        st.integers(1, 72),  # hours until the event
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS, probe_hours=st.lists(st.integers(-48, 24 * 80), min_size=1, max_size=6))
def test_past_views_never_change(tmp_path_factory, events, probe_hours) -> None:  # type: ignore[no-untyped-def]
    """Random upstream changes interleaved with observations: every view whose cutoff is at or
    before the last observation renders byte-identically after all later changes."""
    store = HistoryStore(tmp_path_factory.mktemp("h") / "h.sqlite3")
    upstream: dict[str, DistFile] = {}
    removed = False
    now = T0
    served: dict[datetime, tuple[bytes, bytes]] = {}
    for action, n, hours in events:
        now += timedelta(hours=hours)
        key = f"1.{n}"
        if action == "add":
            upstream[key] = dist(key, uploaded=now - timedelta(minutes=1))
        elif action == "backfill":
            upstream[key + ".post1"] = dist(key + ".post1", uploaded=T0 - timedelta(days=n))
        elif action == "delete":
            upstream.pop(key, None)
        elif action in ("yank", "unyank") and key in upstream:
            fields = _fields(upstream[key])
            fields["yanked"] = "broken" if action == "yank" else None
            upstream[key] = DistFile(**fields)  # type: ignore[arg-type]
        elif action == "remove":
            removed = True
        elif action == "restore":
            removed = False
        store.record("pypi", "demo", None if removed else page(*upstream.values()), now)
        history = store.load("pypi", "demo")
        assert history is not None
        for h in probe_hours:
            cutoff = T0 + timedelta(hours=h)
            if cutoff > history.observations[-1] or cutoff in served:
                continue
            v = view(history, cutoff)
            served[cutoff] = (render_json(v, link), render_html(v, link))
    final = store.load("pypi", "demo")
    assert final is not None
    for cutoff, bodies in served.items():
        v = view(final, cutoff)
        assert (render_json(v, link), render_html(v, link)) == bodies


def test_gone_files_are_remembered_until_kept(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    a = dist("1.0", uploaded=T0 - timedelta(days=3))
    b = dist("2.0", uploaded=T0 - timedelta(days=2))
    c = dist("3.0", uploaded=T0 - timedelta(days=1))
    store.record("pypi", "demo", page(a, b, c), T0)
    store.record("pypi", "demo", page(a), T0 + timedelta(days=1))
    assert [f.filename for f in store.unkept("pypi", "demo", 3)] == [b.filename, c.filename]
    store.note_rescue("pypi", b.sha256 or "", b.filename, kept=True)
    for _ in range(3):
        store.note_rescue("pypi", c.sha256 or "", c.filename, kept=False)
    assert store.unkept("pypi", "demo", 3) == []  # b kept; c tried enough
    assert [f.filename for f in store.unkept("pypi", "demo", 4)] == [c.filename]
    store.record("pypi", "other", None, T0)  # never seen, 404: nothing to keep
    assert store.unkept("pypi", "other", 3) == []


def test_other_bytes_under_a_listed_name_count_as_the_old_file_gone(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    old = dist("1.0", uploaded=T0 - timedelta(days=3))
    moved = replace(old, url="https://mirror.example/" + old.filename)  # same bytes, new URL
    new = replace(moved, hashes={"sha256": "f" * 64})
    store.record("pypi", "demo", page(old), T0)
    store.record("pypi", "demo", page(moved), T0 + timedelta(days=1))
    _, change = store.record("pypi", "demo", page(new), T0 + timedelta(days=2))
    assert change.gone == (moved,)  # to be rescued, as a deleted file is
    current = store.find_file("pypi", "f" * 64, new.filename)
    assert current is not None and current.present and current.file == new
    # Old views still list the old bytes: found where upstream last had them.
    earlier = store.find_file("pypi", old.sha256 or "", old.filename)
    assert earlier is not None and not earlier.present and earlier.file == moved
    by_url = store.find_file_by_url(old.url)
    assert by_url is not None and by_url.file == old
    # A URL never listed finds nothing, whatever file name it ends with.
    assert store.find_file_by_url("https://elsewhere.example/" + old.filename) is None


def test_a_404_changes_no_status_and_removes_only_what_was_there(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    day = timedelta(days=1)
    assert not store.record("pypi", "demo", None, T0)[1].removed  # never seen: nothing removed
    store.record("pypi", "demo", page(dist("1.0", uploaded=T0), status="archived"), T0 + day)
    assert store.record("pypi", "demo", None, T0 + 2 * day)[1].removed
    assert not store.record("pypi", "demo", None, T0 + 3 * day)[1].removed  # already gone
    history = store.load("pypi", "demo")
    # A 404 says nothing about PEP 792 status: the project stays archived.
    assert history is not None and history.status_changes == ((T0 + day, "archived", None),)


def test_snapshot_runs_and_removals_are_recorded(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    assert store.last_snapshot_run() is None
    store.record_snapshot_run(T0, T0 + timedelta(minutes=5), {"observed": 3})
    store.record_snapshot_run(T0 + timedelta(days=1), T0 + timedelta(days=1, minutes=5), {})
    assert store.last_snapshot_run() == T0 + timedelta(days=1)
    store.record("pypi", "demo", page(dist("1.0", uploaded=T0)), T0)
    store.record("pypi", "demo", None, T0 + timedelta(days=1))
    store.record("pypi", "demo", page(), T0 + timedelta(days=2))
    history = store.load("pypi", "demo")
    assert history is not None and history.not_found == (T0 + timedelta(days=1),)


def test_a_write_without_waiting_gives_way_to_other_writers_and_records_nothing(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    a = dist("1.0", uploaded=T0 - timedelta(days=1))
    # Another process writing: SQLite's lock.
    other = sqlite3.connect(tmp_path / "h.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(HistoryBusy):
        store.record("pypi", "demo", page(a), T0, wait=False)
    assert time.monotonic() - started < 1  # at once, not after SQLite's busy timeout
    other.execute("ROLLBACK")
    # Another thread of this process writing: its lock.
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._tx():
            holding.set()
            release.wait(10)

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(hold)
        assert holding.wait(10)
        with pytest.raises(HistoryBusy):
            store.record("pypi", "demo", page(a), T0, wait=False)
        release.set()
        held.result()
    assert store.load("pypi", "demo") is None  # nothing recorded by either refusal
    _, change = store.record("pypi", "demo", page(a), T0, wait=False)
    assert [f.filename for f in change.added] == [a.filename]
    history = store.load("pypi", "demo")
    assert history is not None and len(history.observations) == 1


def test_writes_without_waiting_ask_for_a_checkpoint_that_empties_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    store.record("pypi", "first", page(dist("1.0", uploaded=T0)), T0)  # a waiting write
    store.checkpoint()
    assert _wal_frames_not_in_database(path) == 0
    for i in range(CHECKPOINT_EVERY):
        assert not store.needs_checkpoint
        store.record("pypi", f"p{i}", page(dist("1.0", uploaded=T0)), T0, wait=False)
    assert store.needs_checkpoint
    assert _wal_frames_not_in_database(path) > 0  # no commit made without waiting checkpointed
    store.checkpoint()
    assert not store.needs_checkpoint
    assert _wal_frames_not_in_database(path) == 0
    assert store.load("pypi", f"p{CHECKPOINT_EVERY - 1}") is not None


def _wal_frames_not_in_database(path: Path) -> int:
    """mxFrame - nBackfill of the WAL index (https://www.sqlite.org/walformat.html): frames
    committed to the WAL and not yet copied into the database."""
    shm = path.with_name(path.name + "-shm").read_bytes()
    max_frame, backfilled = struct.unpack_from("=I", shm, 16)[0], struct.unpack_from("=I", shm, 96)[0]
    return int(max_frame - backfilled)


@contextlib.asynccontextmanager
async def pypi_index(fake: FakePyPI, path: Path) -> AsyncIterator[tuple[Index, Registry]]:
    """An Index over a new history at `path`, and its built-in registry pointed at `fake`."""
    upstream = Upstream(timeout=5)
    history = HistoryStore(path)
    pypi = Config().registry("pypi")
    assert pypi is not None
    try:
        yield Index(Config(), history, upstream), replace(pypi, url=fake.simple_url)
    finally:
        await upstream.close()
        history.close()


def test_a_big_first_observation_is_answered_without_reading_history_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first observation's history is the page's own files, whatever the page's size:
    over SMALL_PAGE_FILES too, its view is not read back, and is the view of what was
    recorded."""
    cutoff = datetime(2023, 6, 1, tzinfo=UTC)
    count = SMALL_PAGE_FILES + 1

    async def go(fake: FakePyPI) -> None:
        async with pypi_index(fake, tmp_path / "h.sqlite3") as (index, pypi):
            read_back = index.history.load
            loads: list[tuple[str, ...]] = []
            monkeypatch.setattr(index.history, "load", lambda *args: loads.append(args) or read_back(*args))
            answer = await index.answer(pypi, canonicalize_name("big"), Pin("2023-06-01", cutoff))
            assert loads == []
            assert answer.fixed and answer.view is not None
            assert len(answer.view.files) == (count + 1) // 2
            assert answer.view == view(read_back("pypi", "big"), cutoff)

    with FakePyPI() as fake:
        for i in range(count):
            uploaded = cutoff + timedelta(hours=-1 if i % 2 == 0 else 1, seconds=i)
            fake.add_file("big", f"big-1.{i}-py3-none-any.whl", b"%d" % i, upload_time=uploaded)
        asyncio.run(asyncio.wait_for(go(fake), 60))


def test_a_304_for_a_page_history_no_longer_ends_with_is_followed_by_the_whole_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process may record a newer page between this one reading history's validator
    and upstream's 304 to it: the 304 then says nothing of history's latest page, so the page
    is asked for again, whole, and recorded."""

    async def go(fake: FakePyPI) -> None:
        async with pypi_index(fake, tmp_path / "h.sqlite3") as (index, pypi):
            history = index.history
            await index.observe(pypi, "alpha")
            read_before = history.latest("pypi", "alpha")
            assert read_before is not None and read_before.validator is not None
            newer = await index.fetch_page(pypi, "alpha")
            assert newer is not None
            history.record("pypi", "alpha", replace(newer, validator='{"etag": "\\"other\\""}'),
                           datetime.now(UTC))
            monkeypatch.setattr(history, "latest", lambda *args: read_before)
            fake.clear_log()
            change = await index.observe(pypi, "alpha")
            asked = fake.requests_for("/simple/alpha/")
            assert [r.status for r in asked] == [304, 200]
            assert "if-none-match" in asked[0].headers and "if-none-match" not in asked[1].headers
            assert change is not None and not change.is_change and index.pages_not_modified == 0
            monkeypatch.undo()
            assert history.latest("pypi", "alpha") == (change.at, change.state_at, read_before.validator)

    with FakePyPI() as fake:
        fake.add_wheel("alpha", "1.0", upload_time="2023-01-01T00:00:00Z")
        asyncio.run(asyncio.wait_for(go(fake), 60))


def test_cold_pages_recorded_on_the_loop_are_checkpointed_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index records small pages without waiting (no checkpoint), then has one made."""
    monkeypatch.setattr("datepin.history.CHECKPOINT_EVERY", 3)
    path = tmp_path / "h.sqlite3"

    async def go(fake: FakePyPI) -> None:
        async with pypi_index(fake, path) as (index, pypi):
            for name in ("a1", "a2"):
                await index.answer(pypi, canonicalize_name(name), Pin("live", None))
            assert not index.history.needs_checkpoint and _wal_frames_not_in_database(path) > 0
            await index.answer(pypi, canonicalize_name("a3"), Pin("live", None))
            await index.close()  # waits for the checkpoint it started
            assert not index.history.needs_checkpoint and _wal_frames_not_in_database(path) == 0

    with FakePyPI() as fake:
        for name in ("a1", "a2", "a3"):
            fake.add_wheel(name, "1.0", upload_time="2023-01-01T00:00:00Z")
        asyncio.run(asyncio.wait_for(go(fake), 30))


_ODD_TEXT = st.text(st.sampled_from(["a", "é", '"', "\\", "\n", "\x00", "\ud800", "😀", "\u2028"]), max_size=6)


@given(
    st.builds(
        DistFile,
        filename=_ODD_TEXT,
        url=_ODD_TEXT,
        hashes=st.dictionaries(_ODD_TEXT, _ODD_TEXT, max_size=3),
        requires_python=st.none() | _ODD_TEXT,
        core_metadata=st.none() | st.dictionaries(_ODD_TEXT, _ODD_TEXT, max_size=2),
        yanked=st.none() | _ODD_TEXT,
        upload_time=st.none() | st.datetimes(timezones=st.just(UTC)),
        upload_time_raw=st.none() | _ODD_TEXT,
        size=st.none() | st.integers(0, 2**63),
    )
)
@example(DistFile(filename="foo-1.0.tar.gz", url="https://files.test/foo-1.0.tar.gz"))
def test_a_file_is_encoded_as_every_state_before_it_was(file: DistFile) -> None:
    # History compares a file's state with the page's as text: sorted keys, no spaces and
    # ASCII escapes, as json.dumps has always written them.  Any drift would mark every
    # file of every project changed.
    text = encode_file(file)
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_a_files_encoding_names_its_fields_as_history_always_has() -> None:
    file = DistFile(
        filename="foo-1.0.tar.gz",
        url="https://files.test/foo-1.0.tar.gz",
        hashes={"sha256": "ab" * 32, "md5": "cd" * 16},
        requires_python=">=3.8",
        core_metadata={},
        yanked="broken",
        upload_time=T0,
        upload_time_raw="2024-01-01T00:00:00Z",
        size=10,
    )
    assert encode_file(file) == (
        '{"core_metadata":{},"filename":"foo-1.0.tar.gz",'
        f'"hashes":{{"md5":"{"cd" * 16}","sha256":"{"ab" * 32}"}},'
        '"requires_python":">=3.8","size":10,"upload_time":1704067200000000,'
        '"upload_time_raw":"2024-01-01T00:00:00Z","url":"https://files.test/foo-1.0.tar.gz",'
        '"yanked":"broken"}'
    )
