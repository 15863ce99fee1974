"""The SQLite history store: what it records, and that past views never change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datepin.history import HistoryStore
from datepin.model import DistFile, ProjectPage
from datepin.rewrite.render import render_html, render_json
from datepin.views import view

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
    found = store.find_file("pypi", b.sha256 or "")
    assert found is not None and not found.present and found.file.filename == b.filename


def _fields(f: DistFile) -> dict[str, object]:
    return {name: getattr(f, name) for name in f.__slots__}  # type: ignore[attr-defined]


def test_observation_times_stay_increasing(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    when1, _ = store.record("pypi", "demo", page(), T0)
    when2, _ = store.record("pypi", "demo", page(), T0 - timedelta(hours=1))  # clock went back
    assert when2 > when1


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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
    store.note_rescue("pypi", b.sha256 or "", kept=True)
    for _ in range(3):
        store.note_rescue("pypi", c.sha256 or "", kept=False)
    assert store.unkept("pypi", "demo", 3) == []  # b kept; c tried enough
    assert [f.filename for f in store.unkept("pypi", "demo", 4)] == [c.filename]
    store.record("pypi", "other", None, T0)  # never seen, 404: nothing to keep
    assert store.unkept("pypi", "other", 3) == []


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
