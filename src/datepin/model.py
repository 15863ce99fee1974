"""The values datepin passes around: upstream files, observations, history, views.

Everything here is a frozen dataclass; no I/O.  Datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from packaging.utils import NormalizedName

ViewKind = Literal["observed", "reconstructed", "live"]


@dataclass(frozen=True, slots=True)
class DistFile:
    """One file of a project as an upstream index listed it (PEP 503 / 691 / 700 / 714)."""

    filename: str
    url: str  # absolute upstream URL, without the #fragment
    hashes: Mapping[str, str] = field(default_factory=dict)  # algorithm -> lowercase hex
    requires_python: str | None = None
    # PEP 714: None when the index offers no .metadata file; a (possibly empty) mapping of
    # hashes when it does ({} stands for `core-metadata: true`).
    core_metadata: Mapping[str, str] | None = None
    # PEP 592: None when not yanked; "" when yanked without a reason; else the reason.
    yanked: str | None = None
    upload_time: datetime | None = None  # parsed from upload_time_raw, UTC
    upload_time_raw: str | None = None  # the string upstream sent, kept byte for byte
    size: int | None = None

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")


@dataclass(frozen=True, slots=True)
class ProjectPage:
    """One upstream project page, parsed (the I/O layer hands this to history)."""

    name: NormalizedName
    files: tuple[DistFile, ...]
    status: str | None = None  # PEP 792 project-status, e.g. "archived"
    status_reason: str | None = None
    # What identifies it: its digest, upstream's ETag and Last-Modified (service.page_validator).
    validator: str | None = None


@dataclass(frozen=True, slots=True)
class FileState:
    """What one observation said about a file: present with these attributes, or absent."""

    at: datetime
    file: DistFile | None  # None: absent from the page observed at `at`


@dataclass(frozen=True, slots=True)
class FileHistory:
    """Every change datepin has observed for one file, oldest first.

    `states[0]` is the first sighting (always present).  A new state is recorded only when
    something changed (attributes, yank, presence), so an unchanged observation adds nothing.
    """

    filename: str
    states: tuple[FileState, ...]

    @property
    def first_seen(self) -> datetime:
        return self.states[0].at


@dataclass(frozen=True, slots=True)
class ProjectHistory:
    """Everything recorded for one project of one registry."""

    registry: str
    name: NormalizedName
    # Times of every successful observation (a 404 upstream counts: it observed a removal).
    observations: tuple[datetime, ...]
    files: tuple[FileHistory, ...]
    # (at, status, reason) changes of PEP 792 project status, oldest first.
    status_changes: tuple[tuple[datetime, str | None, str | None], ...] = ()
    # The observations (a subset of `observations`) at which upstream answered 404.
    not_found: tuple[datetime, ...] = ()

    @property
    def last_observed(self) -> datetime | None:
        return self.observations[-1] if self.observations else None


@dataclass(frozen=True, slots=True)
class View:
    """What a client sees of a project at a cutoff (None: live)."""

    name: NormalizedName
    cutoff: datetime | None
    kind: ViewKind
    files: tuple[DistFile, ...]  # sorted by filename; yank state as of the cutoff
    versions: tuple[str, ...]  # PEP 700, recomputed from `files`, ascending
    status: str | None = None
    status_reason: str | None = None
