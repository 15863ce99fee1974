"""Observe tracked projects, fold what changed into history, rescue files that went away.

DESIGN.md "When upstream is contacted": every tracked project is re-observed once a day so
deletions and yanks are seen within a day; a file that disappears upstream is downloaded at
once if it is not stored yet, and marked irreplaceable (never evicted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from datepin.config import Registry
from datepin.model import DistFile
from datepin.service import Index
from datepin.upstream import UpstreamError

log = logging.getLogger(__name__)

Rescue = Callable[[Registry, DistFile], Awaitable[bool]]  # True: newly stored


@dataclass
class Summary:
    observed: int = 0
    changed: int = 0
    files_gone: int = 0
    files_rescued: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"observed {self.observed}, changed {self.changed}, files gone {self.files_gone}, "
            f"files rescued {self.files_rescued}, failures {len(self.failures)}"
        )


async def snapshot(
    index: Index,
    projects: Iterable[tuple[Registry, str]],
    *,
    rescue: Rescue,
    concurrency: int = 8,
    progress: Callable[[str], None] | None = None,
) -> Summary:
    """Observe each project once, with at most `concurrency` in flight."""
    summary = Summary()
    limit = asyncio.Semaphore(concurrency)

    async def one(registry: Registry, name: str) -> None:
        async with limit:
            try:
                change = await index.observe(registry, name)
            except UpstreamError as e:
                summary.failures.append((name, str(e)))
                log.warning("snapshot %s: %s", name, e)
                return
            finally:
                if progress:
                    progress(name)
            summary.observed += 1
            if change is None or not change.is_change:
                return
            summary.changed += 1
            summary.files_gone += len(change.gone)
            for file in change.gone:
                try:
                    if await rescue(registry, file):
                        summary.files_rescued += 1
                except (UpstreamError, OSError, ValueError) as e:
                    summary.failures.append((file.filename, f"rescue failed: {e}"))
                    log.warning("rescue %s: %s", file.filename, e)

    async with asyncio.TaskGroup() as group:
        for registry, name in projects:
            group.create_task(one(registry, name))
    return summary
