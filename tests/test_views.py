"""The view function: examples for each rule, then the properties DESIGN.md asks for.

Histories are built the way the snapshotter builds them: a sequence of observed pages, each
recorded as changes (`record` below is this test's own, independent recorder).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.utils import NormalizedName

from datepin.model import DistFile, FileHistory, FileState, ProjectHistory, View
from datepin.rewrite.parse import parse_html_page, parse_json_page
from datepin.rewrite.render import render_html, render_json, render_json_api
from datepin.views import Verdict, explain, is_fixed, view

BASE = datetime(2023, 11, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


def dist(filename: str, uploaded: float | None, **fields: object) -> DistFile:
    upload = at(uploaded) if uploaded is not None else None
    raw = upload.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if upload is not None else None
    return DistFile(
        filename=filename,
        url=f"https://files.test/{filename}",
        hashes={"sha256": f"{abs(hash(filename)):064x}"[:64]},
        upload_time=upload,
        upload_time_raw=raw,
        **fields,  # type: ignore[arg-type]
    )


Page = Mapping[str, DistFile]
Status = tuple[str | None, str | None]


def record(
    history: ProjectHistory, when: datetime, page: Page, status: Status = (None, None)
) -> ProjectHistory:
    """Fold one observed page into a history: a new state only where something changed."""
    files: list[FileHistory] = []
    for fh in history.files:
        now = page.get(fh.filename)
        if now != fh.states[-1].file:
            fh = FileHistory(fh.filename, (*fh.states, FileState(when, now)))
        files.append(fh)
    known = {fh.filename for fh in history.files}
    files += [
        FileHistory(name, (FileState(when, f),)) for name, f in page.items() if name not in known
    ]
    last_status = history.status_changes[-1][1:] if history.status_changes else (None, None)
    changes = history.status_changes
    if status != last_status:
        changes = (*changes, (when, *status))
    return dataclasses.replace(
        history,
        observations=(*history.observations, when),
        files=tuple(files),
        status_changes=changes,
    )


def history_of(*observations: tuple[float, Page] | tuple[float, Page, Status]) -> ProjectHistory:
    h = ProjectHistory(registry="pypi", name=NormalizedName("foo"), observations=(), files=())
    for when, files, *status in observations:
        h = record(h, at(when), files, *status)
    return h


def page(*files: DistFile) -> dict[str, DistFile]:
    return {f.filename: f for f in files}


def names(v: View) -> list[str]:
    return [f.filename for f in v.files]


def verdict(h: ProjectHistory, cutoff: datetime | None, filename: str) -> Verdict:
    (found,) = [v for v in explain(h, cutoff) if v.filename == filename]
    return found


A = dist("foo-1.0.tar.gz", 10)
B = dist("foo-1.1-py3-none-any.whl", 50)
C = dist("foo-2.0.tar.gz", 90)


# --- examples, one per rule -------------------------------------------------------------------


def test_upload_time_strictly_before_the_cutoff() -> None:
    h = history_of((100, page(A, B, C)))
    assert names(view(h, at(50))) == ["foo-1.0.tar.gz"]
    assert names(view(h, at(50.001))) == ["foo-1.0.tar.gz", "foo-1.1-py3-none-any.whl"]
    assert "not before the cutoff" in verdict(h, at(50), B.filename).reason
    assert view(h, at(100)).files == (A, B, C)  # sorted by filename, attributes as observed


def test_view_kinds() -> None:
    h = history_of((100, page(A)))
    assert view(h, at(99)).kind == "reconstructed"
    assert view(h, at(100)).kind == "observed"
    assert view(h, at(500)).kind == "observed"
    assert view(h, None).kind == "live"


def test_backfill_after_the_cutoff_was_observed_stays_out() -> None:
    # B (uploaded at 50) shows up only at 200, after the page at 100 had described cutoff 60.
    h = history_of((100, page(A)), (200, page(A, B)))
    assert names(view(h, at(60))) == ["foo-1.0.tar.gz"]
    reason = verdict(h, at(60), B.filename).reason
    assert (
        "backfill" in reason
        and "2023-11-01T03:20:00Z" in reason
        and "2023-11-01T01:40:00Z" in reason
    )
    # A cutoff the page at 100 did not cover is first described by the page at 200.
    assert names(view(h, at(150))) == ["foo-1.0.tar.gz", "foo-1.1-py3-none-any.whl"]


def test_deleted_files_vanish_from_the_deletion_on() -> None:
    h = history_of((100, page(A, B)), (200, page(A)), (300, page(A)))
    assert names(view(h, at(199))) == ["foo-1.0.tar.gz", "foo-1.1-py3-none-any.whl"]
    assert names(view(h, at(200))) == ["foo-1.0.tar.gz"]
    assert names(view(h, None)) == ["foo-1.0.tar.gz"]
    gone = verdict(h, at(250), B.filename)
    assert not gone.visible and gone.file is None
    assert gone.reason == "deleted upstream: seen gone at 2023-11-01T03:20:00Z"
    # Before the first observation the first sighting counts: the file was there.
    assert names(view(h, at(60))) == ["foo-1.0.tar.gz", "foo-1.1-py3-none-any.whl"]


def test_yank_as_of_the_cutoff() -> None:
    yanked = dataclasses.replace(B, yanked="broken")
    h = history_of((100, page(A, B)), (200, page(A, yanked)), (300, page(A, B)))
    assert view(h, at(150)).files[1].yanked is None
    assert view(h, at(200)).files[1].yanked == "broken"
    assert view(h, at(300)).files[1].yanked is None
    assert view(h, None).files[1].yanked is None
    assert verdict(h, at(250), B.filename).reason == (
        "visible; uploaded 2023-11-01T00:50:00Z; yanked as of cutoff: 'broken'"
    )


def test_a_cutoff_before_the_first_observation_sees_its_yanks() -> None:
    # PyPI does not say when a yank happened: the first observed state stands (as uv does).
    h = history_of((100, page(A, dataclasses.replace(B, yanked=""))))
    assert view(h, at(60)).files[1].yanked == ""


def test_attributes_come_from_the_state_at_the_cutoff() -> None:
    fixed = dataclasses.replace(B, requires_python=">=3.8", core_metadata={"sha256": "ab"})
    h = history_of((100, page(B)), (200, page(fixed)))
    assert view(h, at(150)).files == (B,)
    assert view(h, at(200)).files == (fixed,)


def test_without_upload_times_the_first_sighting_counts() -> None:
    old = dist("foo-1.0.tar.gz", None)
    new = dist("foo-2.0.tar.gz", None)
    h = history_of((100, page(old)), (200, page(old, new)))
    # The first observation is visible even to a cutoff before it.
    assert names(view(h, at(10))) == ["foo-1.0.tar.gz"]
    assert "first observation" in verdict(h, at(10), old.filename).reason
    assert names(view(h, at(150))) == ["foo-1.0.tar.gz"]
    assert names(view(h, at(200))) == ["foo-1.0.tar.gz"]  # first seen 200, not before 200
    assert names(view(h, at(201))) == ["foo-1.0.tar.gz", "foo-2.0.tar.gz"]
    assert "no upload time" in verdict(h, at(200), new.filename).reason


def test_live_shows_the_latest_state() -> None:
    yanked = dataclasses.replace(A, yanked="x")
    h = history_of((100, page(A, B)), (200, page(yanked, C)))
    live = view(h, None)
    assert live.cutoff is None
    assert live.files == (yanked, C)
    assert not verdict(h, None, B.filename).visible


def test_versions_are_recomputed_from_visible_files() -> None:
    files = page(
        dist("foo-1.10.tar.gz", 10),
        dist("foo-1.9-py3-none-any.whl", 10),
        dist("foo-1.9.tar.gz", 10),
        dist("foo-2.0rc1.tar.gz", 10),
        dist("foo-3.0.tar.gz", 500),
        dist("not-a-dist.txt", 10),
    )
    v = view(history_of((600, files)), at(100))
    assert v.versions == ("1.9", "1.10", "2.0rc1")
    assert "not-a-dist.txt" in names(v)  # files without a version are still files


def test_equal_versions_spelled_differently_are_one_version_named_as_the_json_api_names_it() -> None:
    # 1.0.0 and 1.0 are one release: named by its first spelling in filename order, in
    # `versions` as in the JSON API's releases.
    files = page(dist("foo-1.0.0-py3-none-any.whl", 10), dist("foo-1.0.tar.gz", 10))
    v = view(history_of((100, files)), at(50))
    releases = json.loads(render_json_api(v, {"name": "foo"}, link, version=None))["releases"]
    assert v.versions == tuple(releases) == ("1.0.0",)


def test_project_status_as_of_the_cutoff() -> None:
    h = history_of(
        (100, page(A)), (200, page(A), ("archived", "done")), (300, page(A), ("active", None))
    )
    assert (view(h, at(150)).status, view(h, at(150)).status_reason) == (None, None)
    assert (view(h, at(250)).status, view(h, at(250)).status_reason) == ("archived", "done")
    assert view(h, at(300)).status == "active"
    assert view(h, None).status == "active"
    assert view(h, at(10)).status is None  # before the first observation: what it showed
    first = history_of((100, page(A), ("deprecated", "r")), (200, page(A)))
    assert view(first, at(10)).status == "deprecated"


def test_is_fixed() -> None:
    h = history_of((100, page(A)), (200, page(A)))
    assert is_fixed(h, at(200))
    assert is_fixed(h, at(10))
    assert not is_fixed(h, at(200.5))
    assert not is_fixed(history_of(), at(0))


def test_explain_covers_every_file_and_agrees_with_view() -> None:
    h = history_of((100, page(A, B)), (200, page(A)), (300, page(A, C, dist("foo-0.1.tar.gz", 1))))
    for cutoff in (None, at(0), at(60), at(150), at(250), at(400)):
        verdicts = explain(h, cutoff)
        assert [v.filename for v in verdicts] == sorted(fh.filename for fh in h.files)
        assert [v.filename for v in verdicts if v.visible] == names(view(h, cutoff))
        assert all(v.reason for v in verdicts)


# --- generated histories ---------------------------------------------------------------------

VERSIONS = ["0.9", "1.0", "1.0.post1", "1.1rc1", "2.0", "10.0.dev1"]
SUFFIXES = [".tar.gz", "-py3-none-any.whl", "-cp312-cp312-win_amd64.whl"]


@dataclass(frozen=True)
class Add:
    version: int
    suffix: int
    age: int | None  # minutes between upload and observation; None: no upload time


@dataclass(frozen=True)
class Delete:
    index: int


@dataclass(frozen=True)
class Yank:
    index: int
    reason: str | None


@dataclass(frozen=True)
class Edit:
    index: int
    requires_python: str | None
    core_metadata: bool


@dataclass(frozen=True)
class SetStatus:
    status: Status


Op = Add | Delete | Yank | Edit | SetStatus

ops = st.one_of(
    # Ages up to 300 minutes reach far behind earlier observations: stale pages, backfills.
    st.builds(
        Add,
        st.integers(0, len(VERSIONS) - 1),
        st.integers(0, len(SUFFIXES) - 1),
        st.none() | st.sampled_from([0, 1]) | st.integers(0, 300),
    ),
    st.builds(Delete, st.integers(0, 20)),
    st.builds(
        Yank, st.integers(0, 20), st.none() | st.sampled_from(["", "broken", 'bad "<x>" & y'])
    ),
    st.builds(
        Edit, st.integers(0, 20), st.none() | st.sampled_from([">=3.8", ">=3.9,<4"]), st.booleans()
    ),
    st.builds(
        SetStatus, st.sampled_from([(None, None), ("archived", None), ("deprecated", "use bar")])
    ),
)
# Each step: minutes since the previous observation, and what changed upstream before it.
steps = st.lists(st.tuples(st.integers(1, 60), st.lists(ops, max_size=4)), min_size=1, max_size=8)


@dataclass
class Upstream:
    files: dict[str, DistFile]
    status: Status = (None, None)

    def apply(self, op: Op, now: datetime) -> None:
        present = sorted(self.files)
        match op:
            case Add(version, suffix, age):
                name = f"foo-{VERSIONS[version]}{SUFFIXES[suffix]}"
                if name not in self.files:
                    minutes = None if age is None else (now - BASE).total_seconds() / 60 - age
                    self.files[name] = dist(name, minutes)
            case Delete(index) if present:
                del self.files[present[index % len(present)]]
            case Yank(index, reason) if present:
                name = present[index % len(present)]
                self.files[name] = dataclasses.replace(self.files[name], yanked=reason)
            case Edit(index, requires_python, core) if present:
                name = present[index % len(present)]
                self.files[name] = dataclasses.replace(
                    self.files[name],
                    requires_python=requires_python,
                    core_metadata={"sha256": "cd" * 32} if core else None,
                )
            case SetStatus(status):
                self.status = status
            case _:
                pass


def build(
    history: ProjectHistory,
    upstream: Upstream,
    start: datetime,
    plan: Sequence[tuple[int, list[Op]]],
) -> tuple[ProjectHistory, datetime]:
    """Play `plan` against `upstream`, observing after each step; returns the history and
    the time of the last observation."""
    now = start
    for gap, changes in plan:
        now += timedelta(minutes=gap)
        for op in changes:
            upstream.apply(op, now)
        history = record(history, now, dict(upstream.files), upstream.status)
    return history, now


def fresh() -> tuple[ProjectHistory, Upstream]:
    return ProjectHistory(
        registry="pypi", name=NormalizedName("foo"), observations=(), files=()
    ), Upstream({})


def link(f: DistFile) -> str:
    return f"http://proxy.test/files/{f.sha256}/{f.filename}"


def renders(v: View) -> tuple[bytes, bytes, bytes]:
    return (
        render_html(v, link),
        render_json(v, link),
        render_json_api(v, {"name": "foo"}, link, version=None),
    )


cutoff_minutes = st.integers(-30, 600)


def draw_cutoff(
    data: st.DataObject, history: ProjectHistory, *, upto: datetime | None = None
) -> datetime:
    """Any minute, or (often) exactly an observation or upload time: the edges that matter."""
    edges = {s.at for fh in history.files for s in fh.states} | set(history.observations)
    edges |= {
        s.file.upload_time
        for fh in history.files
        for s in fh.states
        if s.file and s.file.upload_time
    }
    anywhere = cutoff_minutes.map(at)
    choices = anywhere | st.sampled_from(sorted(edges)) if edges else anywhere
    cutoff = data.draw(
        choices if upto is None else choices.filter(lambda c: c <= upto), label="cutoff"
    )
    return cutoff


@given(steps, st.data())
def test_no_file_at_or_after_the_cutoff_is_shown(
    plan: list[tuple[int, list[Op]]], data: st.DataObject
) -> None:
    history, _ = build(*fresh(), BASE, plan)
    cutoff = draw_cutoff(data, history)
    first_seen = {fh.filename: fh.first_seen for fh in history.files}
    for f in view(history, cutoff).files:
        if f.upload_time is not None:
            assert f.upload_time < cutoff
        else:
            seen = first_seen[f.filename]
            assert seen < cutoff or seen == history.observations[0]


@given(steps, st.data())
def test_a_later_cutoff_never_loses_a_file_still_there(
    plan: list[tuple[int, list[Op]]], data: st.DataObject
) -> None:
    history, _ = build(*fresh(), BASE, plan)
    c1, c2 = sorted((draw_cutoff(data, history), draw_cutoff(data, history)))
    shown_later = set(names(view(history, c2)))
    for fh in history.files:
        deleted = any(s.file is None and s.at <= c2 for s in fh.states)
        if fh.filename in names(view(history, c1)) and not deleted:
            assert fh.filename in shown_later, fh


@settings(max_examples=300)
@given(steps, steps, st.data())
def test_history_grows_past_views_do_not_change(
    before: list[tuple[int, list[Op]]], after: list[tuple[int, list[Op]]], data: st.DataObject
) -> None:
    history, upstream = fresh()
    history, last = build(history, upstream, BASE, before)
    # Any cutoff up to the last observation, including before the first one.
    cutoff = draw_cutoff(data, history, upto=last)
    assert is_fixed(history, cutoff)
    seen = view(history, cutoff)
    grown, _ = build(history, upstream, last, after)
    assert is_fixed(grown, cutoff)
    again = view(grown, cutoff)
    assert again == seen
    assert renders(again) == renders(seen)
    # `datepin history` tells the same story about the files it already knew.
    known = {fh.filename for fh in history.files}
    assert tuple(v for v in explain(grown, cutoff) if v.filename in known) == explain(
        history, cutoff
    )


@given(steps, st.one_of(st.none(), cutoff_minutes))
def test_html_and_json_renderings_of_any_view_list_the_same_files(
    plan: list[tuple[int, list[Op]]], minutes: int | None
) -> None:
    history, _ = build(*fresh(), BASE, plan)
    v = view(history, None if minutes is None else at(minutes))
    url = "http://proxy.test/2023-11-18/simple/foo/"
    from_html = parse_html_page(render_html(v, link), url, "foo")
    from_json = parse_json_page(render_json(v, link), url)

    def key(f: DistFile) -> tuple[object, ...]:
        return (
            f.filename,
            f.url,
            f.sha256,
            f.yanked,
            f.requires_python,
            f.core_metadata,
            f.upload_time,
        )

    assert [key(f) for f in from_html.files] == [key(f) for f in from_json.files]
    assert [f.filename for f in from_json.files] == names(v)
    assert (from_html.status, from_html.status_reason) == (
        from_json.status,
        from_json.status_reason,
    )
    assert json.loads(render_json(v, link))["versions"] == list(v.versions)


@given(steps, cutoff_minutes)
def test_view_is_sorted_and_versions_match_files(
    plan: list[tuple[int, list[Op]]], minutes: int
) -> None:
    history, _ = build(*fresh(), BASE, plan)
    v = view(history, at(minutes))
    assert names(v) == sorted(names(v))
    assert len(set(names(v))) == len(v.files)
    expected = {f.filename.split("-")[1].removesuffix(".tar.gz") for f in v.files}
    assert set(v.versions) == expected
