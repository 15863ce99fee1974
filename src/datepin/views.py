"""The view function: what a client sees of a project at a cutoff.  The only place that decides.

Pure: history and cutoff in, View out (DESIGN.md, "The view function").  `view()` and
`explain()` share one decision function (`_decide`), so what is served and what
`datepin history` says about it can never disagree.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime

from packaging.version import Version

from datepin.model import DistFile, FileHistory, FileState, ProjectHistory, View, ViewKind
from datepin.pins import format_time
from datepin.rewrite.filenames import version_of

__all__ = ["Verdict", "explain", "is_fixed", "view"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether one file is in a view, and why (in words a user can act on)."""

    filename: str
    visible: bool
    reason: str
    file: DistFile | None  # the file as of the cutoff; None if it was gone by then


def view(history: ProjectHistory, cutoff: datetime | None) -> View:
    verdicts = explain(history, cutoff)
    files = tuple(v.file for v in verdicts if v.visible and v.file is not None)
    status, reason = _status(history, cutoff)
    return View(
        name=history.name,
        cutoff=cutoff,
        kind=_kind(history, cutoff),
        files=files,
        versions=_versions(files),
        status=status,
        status_reason=reason,
    )


def explain(history: ProjectHistory, cutoff: datetime | None) -> tuple[Verdict, ...]:
    """One verdict per file ever observed, sorted by filename."""
    facts = _Facts.of(history, cutoff)
    ordered = sorted(history.files, key=lambda fh: fh.filename)
    return tuple(_decide(facts, fh, cutoff) for fh in ordered)


def is_fixed(history: ProjectHistory, cutoff: datetime) -> bool:
    """True iff the project was observed at or after the cutoff: its view can't change again.

    Later observations only add facts dated after the cutoff, which `_decide` never reads.
    """
    last = history.last_observed
    return last is not None and last >= cutoff


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the decision needs from the project's observations, computed once."""

    first: datetime | None  # the project's first observation
    closing: datetime | None  # the first observation at or after the cutoff

    @classmethod
    def of(cls, history: ProjectHistory, cutoff: datetime | None) -> _Facts:
        observations = sorted(history.observations)
        first = observations[0] if observations else None
        if cutoff is None:
            return cls(first=first, closing=None)
        index = bisect_left(observations, cutoff)
        return cls(first=first, closing=observations[index] if index < len(observations) else None)


def _decide(facts: _Facts, fh: FileHistory, cutoff: datetime | None) -> Verdict:
    if cutoff is None:
        return _decide_live(fh)
    if facts.closing is not None and fh.first_seen > facts.closing:
        # It appeared only after a page that already described the cutoff (a stale page or
        # a backfill); letting it in would change a view that may have been served.
        return Verdict(
            fh.filename,
            False,
            f"first seen at {format_time(fh.first_seen)}, after the first observation "
            f"at/after the cutoff ({format_time(facts.closing)}): backfill",
            None,
        )
    state = _state_at(fh, cutoff)
    if state.file is None:
        return _gone(fh, state)
    return _decide_by_time(facts, fh, state.file, cutoff)


def _decide_live(fh: FileHistory) -> Verdict:
    state = fh.states[-1]
    if state.file is None:
        return _gone(fh, state)
    return Verdict(fh.filename, True, _visible_reason(state.file, "live", "now"), state.file)


def _gone(fh: FileHistory, state: FileState) -> Verdict:
    return Verdict(
        fh.filename, False, f"deleted upstream: seen gone at {format_time(state.at)}", None
    )


def _decide_by_time(facts: _Facts, fh: FileHistory, file: DistFile, cutoff: datetime) -> Verdict:
    if file.upload_time is not None:
        uploaded = f"uploaded {format_time(file.upload_time)}"
        if file.upload_time < cutoff:
            return Verdict(fh.filename, True, _visible_reason(file, uploaded), file)
        return Verdict(fh.filename, False, f"{uploaded}, not before the cutoff", file)
    # No upload time (registries without PEP 700): the first sighting stands in for it, and
    # a cutoff before the first observation sees the first observation (DESIGN.md).
    seen = f"no upload time; first seen {format_time(fh.first_seen)}"
    if fh.first_seen < cutoff:
        return Verdict(fh.filename, True, _visible_reason(file, seen), file)
    if fh.first_seen == facts.first:
        why = f"{seen}, in the first observation"
        return Verdict(fh.filename, True, _visible_reason(file, why), file)
    return Verdict(fh.filename, False, f"{seen}, not before the cutoff", file)


def _visible_reason(file: DistFile, why: str, as_of: str = "as of cutoff") -> str:
    if file.yanked is None:
        return f"visible; {why}"
    return f"visible; {why}; yanked {as_of}: {file.yanked!r}"


def _state_at(fh: FileHistory, cutoff: datetime) -> FileState:
    """The latest state at or before the cutoff; the first sighting if there is none
    (PyPI does not say when a yank happened: a cutoff before we looked sees what we saw
    first, as `uv --exclude-newer` does)."""
    index = bisect_right(fh.states, cutoff, key=lambda state: state.at)
    return fh.states[index - 1] if index else fh.states[0]


def _kind(history: ProjectHistory, cutoff: datetime | None) -> ViewKind:
    if cutoff is None:
        return "live"
    if not history.observations or cutoff < min(history.observations):
        return "reconstructed"
    return "observed"


def _status(history: ProjectHistory, cutoff: datetime | None) -> tuple[str | None, str | None]:
    """PEP 792 status as of the cutoff: the latest change at or before it.

    A cutoff before the first observation sees the first observation, as files do.  If
    no change is recorded by then, the project had no status marker (a store that does
    not record the initial "no status" must not make a later marker leak backwards:
    that would change a view already served).  Without observations, the first change.
    """
    changes = history.status_changes
    if not changes:
        return None, None
    if cutoff is None:
        return changes[-1][1], changes[-1][2]
    moment = max(cutoff, min(history.observations)) if history.observations else cutoff
    before = [change for change in changes if change[0] <= moment]
    if before:
        return before[-1][1], before[-1][2]
    return (None, None) if history.observations else (changes[0][1], changes[0][2])


def _versions(files: tuple[DistFile, ...]) -> tuple[str, ...]:
    """PEP 700 versions from the files shown: unique, ascending; equal versions spelled
    differently count once, under their first spelling in filename order."""
    seen: dict[Version, str] = {}
    for f in files:
        version = version_of(f.filename)
        if version is not None and version not in seen:
            seen[version] = str(version)
    return tuple(text for _, text in sorted(seen.items(), key=lambda item: item[0]))
