"""What a request for a pinned project needs: when to observe upstream, and the view.

DESIGN.md "When upstream is contacted": a pinned request whose project was observed at or
after the cutoff is answered from history alone; otherwise observe first.  `live` observes
when the last observation is older than the TTL and falls back to history on failure.
"""

from __future__ import annotations

import asyncio
import logging
import zipfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from packaging.utils import NormalizedName

from datepin.config import Config, Registry
from datepin.history import Change, HistoryStore
from datepin.model import DistFile, ProjectHistory, ProjectPage, View
from datepin.pins import Pin
from datepin.rewrite.filenames import version_of
from datepin.rewrite.parse import PageError, parse_html_page, parse_json_api_info, parse_json_page
from datepin.rewrite.render import choose_release, info_from_metadata
from datepin.upstream import SIMPLE_ACCEPT, Upstream, UpstreamError, mask_url
from datepin.views import is_fixed, view

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Fixed views kept in memory, counted in files (about 1 KB each).  Their rendered pages are
# cached by the addon, so this serves other formats and the JSON API; a view of more than a
# quarter of this (a 20,000-file project) is recomputed instead of crowding out the rest.
FIXED_VIEW_FILES = 20_000


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Answer:
    view: View
    warning: str | None = None  # set when upstream failed and history was served instead
    fixed: bool = False  # observed at or after a dated cutoff: this view never changes


class NotObserved(LookupError):
    """Upstream does not know the project and history has nothing."""


class Index:
    """Observes projects upstream, records them, and computes views.  One per process."""

    def __init__(
        self,
        config: Config,
        history: HistoryStore,
        upstream: Upstream,
        *,
        clock: Clock = utcnow,
        fetch_file: Callable[[DistFile, Registry], Awaitable[Path]] | None = None,
    ) -> None:
        self.config = config
        self.history = history
        self.upstream = upstream
        self.clock = clock
        self.fetch_file = fetch_file
        self._inflight: dict[tuple[str, str], asyncio.Future[Change | None]] = {}
        self._fixed: OrderedDict[tuple[str, str, datetime], View] = OrderedDict()
        self._fixed_files = 0
        self.observations = 0
        self.upstream_failures = 0

    # -- upstream ------------------------------------------------------------------------

    async def fetch_page(
        self, registry: Registry, name: str, headers: Mapping[str, str] | None = None
    ) -> ProjectPage | None:
        """One upstream project page, parsed; None when upstream says it does not exist."""
        url = f"{registry.url}{name}/"
        fetched = await self.upstream.get(url, headers={"Accept": SIMPLE_ACCEPT, **(headers or {})})
        if fetched.status in (404, 410):
            return None
        if fetched.status in (401, 403):
            raise UpstreamError(
                f"{mask_url(url)} refused the credentials (HTTP {fetched.status})",
                status=fetched.status,
            )
        if fetched.status != 200:
            raise UpstreamError(f"{mask_url(url)} answered HTTP {fetched.status}")
        try:
            if "json" in fetched.content_type:
                page = parse_json_page(fetched.body, fetched.url)
            else:
                page = parse_html_page(fetched.body, fetched.url, name)
        except PageError as e:
            raise UpstreamError(f"{mask_url(url)} sent a page datepin cannot read: {e}") from None
        return page

    async def observe(
        self, registry: Registry, name: str, headers: Mapping[str, str] | None = None
    ) -> Change | None:
        """Fetch and record one observation; concurrent callers share one fetch.

        Returns None when upstream does not know a project history has never seen.
        """
        key = (registry.name, name)
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[Change | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._observe(registry, name, headers)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # mark retrieved: the caller re-raises it
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]

    async def _observe(
        self, registry: Registry, name: str, headers: Mapping[str, str] | None
    ) -> Change | None:
        try:
            page = await self.fetch_page(registry, name, headers)
        except UpstreamError:
            self.upstream_failures += 1
            raise
        self.observations += 1
        if page is None and await asyncio.to_thread(self.history.last_observed, registry.name, name) is None:
            return None
        _, change = await asyncio.to_thread(
            self.history.record, registry.name, name, page, self.clock()
        )
        return change

    # -- views ---------------------------------------------------------------------------

    async def answer(
        self,
        registry: Registry,
        name: NormalizedName,
        pin: Pin,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """The view of a project at a pin, observing upstream only when history can't answer."""
        cutoff = pin.cutoff
        if cutoff is not None:
            cached = self._fixed.get((registry.name, name, cutoff))
            if cached is not None:
                self._fixed.move_to_end((registry.name, name, cutoff))
                return Answer(cached, fixed=True)
        # One indexed read (WAL: readers never wait for writers): made tiny rather than a
        # thread-pool hop (STYLE.md rule 3), as every cold or live request makes it.
        last = self.history.last_observed(registry.name, name)
        warning = None
        if self._needs_observation(last, cutoff):
            try:
                if await self.observe(registry, name, headers) is None:
                    raise NotObserved(name)
            except UpstreamError as e:
                if last is None or e.status in (401, 403):
                    raise
                warning = f"upstream unavailable, answered from history: {e}"
                log.warning("%s: %s", name, warning)
        history = await asyncio.to_thread(self.history.load, registry.name, name)
        if history is None:
            raise NotObserved(name)
        result = view(history, cutoff)
        fixed = cutoff is not None and is_fixed(history, cutoff)
        if fixed:
            assert cutoff is not None
            self._remember(registry.name, name, cutoff, result)
        return Answer(result, warning, fixed)

    def _needs_observation(self, last: datetime | None, cutoff: datetime | None) -> bool:
        if last is None:
            return True
        if cutoff is None:
            return self.clock() - last > timedelta(seconds=self.config.live_ttl)
        return last < cutoff

    def _remember(self, registry: str, name: str, cutoff: datetime, result: View) -> None:
        # A view observed at or after its cutoff never changes (DESIGN.md "Determinism"),
        # so it can be kept as long as memory allows.
        if len(result.files) > FIXED_VIEW_FILES // 4:
            return
        key = (registry, name, cutoff)
        old = self._fixed.pop(key, None)
        self._fixed_files -= len(old.files) if old is not None else 0
        self._fixed[key] = result
        self._fixed_files += len(result.files)
        while self._fixed_files > FIXED_VIEW_FILES or len(self._fixed) > 4096:
            _, evicted = self._fixed.popitem(last=False)
            self._fixed_files -= len(evicted.files)

    async def load(self, registry: str, name: str) -> ProjectHistory | None:
        return await asyncio.to_thread(self.history.load, registry, name)

    # -- JSON API ------------------------------------------------------------------------

    async def release_info(
        self, registry: Registry, result: View, version: str | None
    ) -> tuple[str, dict[str, object]] | None:
        """The `info` of the release the JSON API shows (the chosen one, or `version`)."""
        chosen = version or choose_release(result)
        if chosen is None:
            return None
        name = result.name
        stored = await asyncio.to_thread(self.history.release_info, registry.name, name, chosen)
        if stored is not None:
            return chosen, stored
        info = await self._fetch_release_info(registry, result, chosen)
        if info is not None:
            await asyncio.to_thread(self.history.save_release_info, registry.name, name, chosen, info)
        return chosen, info or {"name": name, "version": chosen}

    async def _fetch_release_info(
        self, registry: Registry, result: View, version: str
    ) -> dict[str, object] | None:
        if registry.json_url:
            for url in (
                f"{registry.json_url}{result.name}/{version}/json",
                f"{registry.json_url}{result.name}/json",
            ):
                try:
                    fetched = await self.upstream.get(url, headers={"Accept": "application/json"})
                    if fetched.status == 200:
                        info = parse_json_api_info(fetched.body)
                        if str(info.get("version")) == version:
                            return info
                except (UpstreamError, PageError) as e:
                    log.info("JSON API for %s %s: %s", result.name, version, e)
        return await self._info_from_files(registry, result, version)

    async def _info_from_files(
        self, registry: Registry, result: View, version: str
    ) -> dict[str, object] | None:
        """Fall back to the release's core metadata: its .metadata file, else a wheel's."""
        files = [f for f in result.files if str(version_of(f.filename)) == version]
        for f in files:
            if f.core_metadata is not None:
                try:
                    fetched = await self.upstream.get(f.url + ".metadata")
                    if fetched.status == 200:
                        return info_from_metadata(fetched.body)
                except UpstreamError as e:
                    log.info("metadata of %s: %s", f.filename, e)
        if self.fetch_file is None:
            return None
        for f in files:
            if f.filename.endswith(".whl"):
                try:
                    path = await self.fetch_file(f, registry)
                    return await asyncio.to_thread(_wheel_metadata, path)
                except (UpstreamError, OSError, ValueError, zipfile.BadZipFile) as e:
                    log.info("metadata inside %s: %s", f.filename, e)
        return None


def _wheel_metadata(path: Path) -> dict[str, object] | None:
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            parts = member.split("/")
            if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                return info_from_metadata(zf.read(member))
    return None
