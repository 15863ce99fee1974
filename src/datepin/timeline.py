"""What `datepin history` shows: per-file facts folded from a project's history, as text or JSON.

Pure: a `ProjectHistory` (and what the blob store knows) in, values and strings out.  Every fact
is derived from observations and state changes; nothing here is stored on its own, so an
unchanged observation costs one row in `observations` and no per-file row (history.py).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from datepin.model import FileHistory, ProjectHistory, View
from datepin.pins import Pin, format_time
from datepin.views import Verdict

__all__ = [
    "FileFacts",
    "ProjectFacts",
    "Storage",
    "YankChange",
    "facts_of",
    "render_json",
    "render_text",
]

Period = tuple[datetime, datetime | None]  # [start, end); end None: still so


@dataclass(frozen=True, slots=True)
class YankChange:
    at: datetime  # the observation that first showed this state
    yanked: str | None  # PEP 592: None = not yanked, "" = yanked without a reason


@dataclass(frozen=True, slots=True)
class FileFacts:
    filename: str
    sha256: str | None  # from the index
    upload_time: datetime | None
    first_seen: datetime
    last_seen: datetime  # the last observation that listed it
    absences: tuple[Period, ...]  # periods it was missing upstream (deleted, project 404)
    # Yank state changes; the first entry is the state at first sight when it was yanked then.
    yank_changes: tuple[YankChange, ...]

    @property
    def gone_since(self) -> datetime | None:
        if self.absences and self.absences[-1][1] is None:
            return self.absences[-1][0]
        return None


@dataclass(frozen=True, slots=True)
class ProjectFacts:
    registry: str
    name: str
    observations: int
    first_observed: datetime
    last_observed: datetime
    removals: tuple[Period, ...]  # periods upstream answered 404 for the whole project
    status_changes: tuple[tuple[datetime, str | None, str | None], ...]
    files: tuple[FileFacts, ...]  # by filename


@dataclass(frozen=True, slots=True)
class Storage:
    """What the blob store holds of one file."""

    sha256: str | None  # from the index, or computed when stored
    stored: bool
    irreplaceable: bool


def facts_of(history: ProjectHistory) -> ProjectFacts:
    observations = history.observations
    return ProjectFacts(
        registry=history.registry,
        name=history.name,
        observations=len(observations),
        first_observed=observations[0],
        last_observed=observations[-1],
        removals=_removals(observations, frozenset(history.not_found)),
        status_changes=history.status_changes,
        files=tuple(
            _file_facts(fh, observations)
            for fh in sorted(history.files, key=lambda fh: fh.filename)
        ),
    )


def _removals(observations: Sequence[datetime], not_found: frozenset[datetime]) -> tuple[Period, ...]:
    periods: list[Period] = []
    start: datetime | None = None
    for at in observations:
        if at in not_found and start is None:
            start = at
        elif at not in not_found and start is not None:
            periods.append((start, at))
            start = None
    if start is not None:
        periods.append((start, None))
    return tuple(periods)


def _file_facts(fh: FileHistory, observations: Sequence[datetime]) -> FileFacts:
    absences: list[Period] = []
    yanks: list[YankChange] = []
    known = fh.states[0].file
    assert known is not None, "a file's first state is a sighting"
    if known.yanked is not None:
        yanks.append(YankChange(fh.first_seen, known.yanked))
    gone: datetime | None = None
    for state in fh.states:
        if state.file is None:
            gone = gone or state.at
            continue
        if gone is not None:
            absences.append((gone, state.at))
            gone = None
        if state.file.yanked != known.yanked:
            yanks.append(YankChange(state.at, state.file.yanked))
        known = state.file
    if gone is not None:
        absences.append((gone, None))
        last_seen = observations[max(bisect_left(observations, gone) - 1, 0)]
    else:
        last_seen = observations[-1]
    return FileFacts(
        filename=fh.filename,
        sha256=known.sha256,
        upload_time=known.upload_time,
        first_seen=fh.first_seen,
        last_seen=last_seen,
        absences=tuple(absences),
        yank_changes=tuple(yanks),
    )


# -- rendering ---------------------------------------------------------------------------------


def _t(dt: datetime | None) -> str | None:
    return format_time(dt) if dt is not None else None


def _yank_text(change: YankChange, first_seen: datetime) -> str:
    when = "when first seen" if change.at == first_seen else f"at {format_time(change.at)}"
    if change.yanked is None:
        return f"unyanked {when}"
    reason = f" ({change.yanked!r})" if change.yanked else ""
    return f"yanked {when}{reason}"


def _storage_text(storage: Storage | None) -> str:
    if storage is None or not storage.stored:
        return "not in the blob store"
    return "stored, irreplaceable" if storage.irreplaceable else "stored"


def render_text(
    facts: ProjectFacts,
    storage: Mapping[str, Storage],
    *,
    at: tuple[Pin, View, Sequence[Verdict]] | None = None,
) -> str:
    """A readable timeline; with `at`, the view at that pin and why each file is in or out."""
    lines = [
        f"{facts.registry}:{facts.name}: observed {facts.observations} times, "
        f"{format_time(facts.first_observed)} .. {format_time(facts.last_observed)}"
    ]
    for start, end in facts.removals:
        until = f" until {format_time(end)}" if end else " (still)"
        lines.append(f"  project not found upstream (404) from {format_time(start)}{until}")
    for when, status, reason in facts.status_changes:
        said = status or "no status"
        lines.append(f"  status {said}{f' ({reason})' if reason else ''} since {format_time(when)}")
    if at is not None:
        lines += _render_view(*at)
        return "\n".join(lines) + "\n"
    lines.append(f"  {len(facts.files)} file{'' if len(facts.files) == 1 else 's'}")
    for f in facts.files:
        uploaded = format_time(f.upload_time) if f.upload_time else "unknown"
        lines.append(f"  {f.filename}")
        lines.append(
            f"    uploaded {uploaded}; first seen {format_time(f.first_seen)}; "
            f"last seen {format_time(f.last_seen)}"
        )
        for start, end in f.absences:
            if end is None:
                lines.append(f"    gone since {format_time(start)}")
            else:
                lines.append(f"    missing from {format_time(start)} until {format_time(end)}")
        for change in f.yank_changes:
            lines.append(f"    {_yank_text(change, f.first_seen)}")
        lines.append(f"    {_storage_text(storage.get(f.filename))}")
    return "\n".join(lines) + "\n"


def _render_view(pin: Pin, view: View, verdicts: Sequence[Verdict]) -> list[str]:
    cutoff = format_time(pin.cutoff) if pin.cutoff else "none"
    shown = sum(v.visible for v in verdicts)
    lines = [
        f"view at {pin.text} (cutoff {cutoff}, {view.kind}): "
        f"{shown} of {len(verdicts)} files visible"
    ]
    if view.status:
        lines.append(f"  status {view.status}")
    for v in verdicts:
        lines.append(f"  {'+' if v.visible else '-'} {v.filename}: {v.reason}")
    return lines


def render_json(
    facts: ProjectFacts,
    storage: Mapping[str, Storage],
    *,
    at: tuple[Pin, View, Sequence[Verdict]] | None = None,
) -> dict[str, object]:
    doc: dict[str, object] = {
        "registry": facts.registry,
        "project": facts.name,
        "observations": {
            "count": facts.observations,
            "first": _t(facts.first_observed),
            "last": _t(facts.last_observed),
        },
        "not_found": [{"from": _t(s), "until": _t(e)} for s, e in facts.removals],
        "status_changes": [
            {"at": _t(when), "status": status, "reason": reason}
            for when, status, reason in facts.status_changes
        ],
        "files": [_file_json(f, storage.get(f.filename)) for f in facts.files],
    }
    if at is not None:
        pin, view, verdicts = at
        doc["view"] = {
            "pin": pin.text,
            "cutoff": _t(pin.cutoff),
            "kind": view.kind,
            "status": view.status,
            "versions": list(view.versions),
            "files": [
                {
                    "filename": v.filename,
                    "visible": v.visible,
                    "reason": v.reason,
                    "yanked": v.file.yanked if v.visible and v.file else None,
                }
                for v in verdicts
            ],
        }
    return doc


def _file_json(f: FileFacts, storage: Storage | None) -> dict[str, object]:
    return {
        "filename": f.filename,
        "sha256": storage.sha256 if storage and storage.sha256 else f.sha256,
        "upload_time": _t(f.upload_time),
        "first_seen": _t(f.first_seen),
        "last_seen": _t(f.last_seen),
        "gone_since": _t(f.gone_since),
        "absences": [{"from": _t(s), "until": _t(e)} for s, e in f.absences],
        "yank_changes": [
            {"at": _t(c.at), "yanked": c.yanked is not None, "reason": c.yanked or None}
            for c in f.yank_changes
        ],
        "stored": bool(storage and storage.stored),
        "irreplaceable": bool(storage and storage.irreplaceable),
    }
