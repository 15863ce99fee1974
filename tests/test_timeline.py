"""Per-file facts folded from history: what `datepin history` reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from datepin.model import DistFile, FileHistory, FileState, ProjectHistory
from datepin.pins import Pin
from datepin.timeline import Storage, YankChange, facts_of, render_json, render_text
from datepin.views import explain, view

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(day: int) -> datetime:
    return T0 + timedelta(days=day)


def dist(filename: str, yanked: str | None = None) -> DistFile:
    return DistFile(filename=filename, url=f"https://x/{filename}", yanked=yanked,
                    upload_time=T0 - timedelta(days=10))


def test_facts_follow_each_file_through_absences_yanks_and_removal() -> None:
    a, b = "demo-1.0.tar.gz", "demo-2.0.tar.gz"
    history = ProjectHistory(
        registry="pypi",
        name="demo",  # type: ignore[arg-type]
        observations=tuple(at(d) for d in range(7)),
        not_found=(at(4), at(5)),
        files=(
            FileHistory(a, (
                FileState(at(0), dist(a)),
                FileState(at(4), None),  # the project went away...
                FileState(at(6), dist(a)),  # ...and came back
            )),
            FileHistory(b, (
                FileState(at(1), dist(b, yanked="")),  # yanked when first seen
                FileState(at(2), dist(b)),
                FileState(at(3), None),  # deleted
            )),
        ),
    )
    facts = facts_of(history)
    assert facts.removals == ((at(4), at(6)),)
    fa, fb = facts.files
    assert (fa.first_seen, fa.last_seen, fa.gone_since) == (at(0), at(6), None)
    assert fa.absences == ((at(4), at(6)),)
    assert (fb.first_seen, fb.last_seen, fb.gone_since) == (at(1), at(2), at(3))
    assert fb.yank_changes == (YankChange(at(1), ""), YankChange(at(2), None))


def test_reports_say_yanked_for_a_yank_without_reason_and_use_what_the_store_knows() -> None:
    name = "demo-1.0.tar.gz"
    history = ProjectHistory(
        registry="pypi",
        name="demo",  # type: ignore[arg-type]
        observations=tuple(at(d) for d in range(4)),
        files=(FileHistory(name, (FileState(at(0), dist(name, yanked="")),)),),  # no sha256
    )
    facts = facts_of(history)
    (f,) = facts.files
    assert f.last_seen == at(3)  # still listed by the last observation
    sha = "e" * 64
    storage = {name: Storage(sha256=sha, stored=True, irreplaceable=False)}
    pin = Pin("2024-01-03", at(2))
    shown = (pin, view(history, at(2)), explain(history, at(2)))
    doc = render_json(facts, storage, at=shown)
    (entry,) = doc["files"]  # type: ignore[misc]
    assert entry["sha256"] == sha  # computed when stored: the index gave none
    assert entry["yank_changes"] == [{"at": "2024-01-01T00:00:00Z", "yanked": True, "reason": None}]
    (shown_file,) = doc["view"]["files"]  # type: ignore[index]
    assert (shown_file["visible"], shown_file["yanked"]) == (True, "")
    assert "yanked when first seen" in render_text(facts, storage)
