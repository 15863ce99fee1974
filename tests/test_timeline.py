"""Per-file facts folded from history: what `datepin history` reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from datepin.model import DistFile, FileHistory, FileState, ProjectHistory
from datepin.timeline import YankChange, facts_of

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
