"""What a request for a pinned project needs: when to observe upstream, and the view.

DESIGN.md "When upstream is contacted": a pinned request whose project was observed at or
after the cutoff is answered from history alone; otherwise observe first.  `live` observes
when the last observation is older than the TTL and falls back to history on failure.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import IO

from packaging.utils import NormalizedName

from datepin.auth import AccessGate, UpstreamAuth, same_origin
from datepin.config import Config, Registry
from datepin.coremetadata import MAX_METADATA, MetadataError, is_sdist, read_core_metadata
from datepin.history import (
    Change,
    HistoryBusy,
    HistoryStore,
    HistoryWriteError,
    StoredFile,
    file_key,
    first_history,
)
from datepin.model import DistFile, ProjectHistory, ProjectPage, View
from datepin.pins import Pin
from datepin.rewrite.filenames import project_of, version_of
from datepin.rewrite.parse import (
    PAGE_READER,
    NotAProjectPage,
    PageError,
    check_html_complete,
    json_text,
    parse_html_page,
    parse_json_api_info,
    parse_json_page,
)
from datepin.rewrite.render import choose_release, info_from_metadata
from datepin.upstream import (
    SIMPLE_ACCEPT,
    THROTTLED,
    Fetched,
    Upstream,
    UpstreamError,
    Via,
    mask_url,
    one_line,
    status_error,
    strip_userinfo,
)
from datepin.views import is_fixed, view

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# A file from the blob store, fetched into it first if need be (with these upstream headers),
# to read while the block it opens lasts.  Raises UpstreamError (OSError: the store's).
FetchFile = Callable[
    [DistFile, Registry, Mapping[str, str]], Awaitable[AbstractContextManager[IO[bytes]]]
]
# A file as datepin keeps it (its `.metadata` file when the flag says so), to read while the
# block it opens lasts; None when it is not kept.  Never asks upstream.
OpenKept = Callable[[DistFile, bool], Awaitable[AbstractContextManager[IO[bytes]] | None]]
# Where a release's core metadata may be read: a file, and whether it is its `.metadata`.
MetadataSource = tuple[DistFile, bool]

# Fixed views kept in memory, counted in files (about 1 KB each).  Their rendered pages are
# cached by the addon, so this serves other formats and the JSON API's releases; a view of
# more than half of this (a 20,000-file project) is recomputed instead of crowding out the
# rest.  PyPI's biggest projects reach it: pydantic-core's view at 2023-11-18 has 7,091
# files, and each recomputation read its history and made the view again (0.3 s).
FIXED_VIEW_FILES = 20_000
# Pages up to this size are parsed on the event loop (a few dozen files: well under a
# millisecond), bigger ones in a thread.
SMALL_PAGE = 32 * 1024
SMALL_PAGE_FILES = 1000
# Observations of up to this many files are recorded on the event loop (about 30 us a file),
# unless another writer is at work: in a thread, each of a record's SQLite calls waited for
# the loop to let go of the GIL, and a 3-file record took 4-8 ms on a busy proxy (bench/run,
# cold installs, which got 6-10% faster).
QUICK_RECORD_FILES = 50


# What an observation changed, and (when asked for) the project's history right after it.
Observed = tuple[Change, ProjectHistory | None]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Answer:
    # None: the project is as it was at the caller's `unchanged_since` (see `Index.answer`).
    view: View | None
    warning: str | None = None  # set when upstream failed and history was served instead
    fixed: bool = False  # observed at or after a dated cutoff: this view never changes
    # The project's last change the view reflects (history read then or later holds no
    # other): a live view stays what it is until an observation changes the project.
    changed_at: datetime | None = None


class NotModified(Exception):
    """Upstream's page is still the one history holds: it answered 304 to that page's
    validators, or sent the same bytes again.  `renewed`: what identifies it from now on."""

    def __init__(self, url: str, renewed: str) -> None:
        super().__init__(url)
        self.renewed = renewed


class NotObserved(LookupError):
    """Upstream does not know the project and history has nothing."""


class RescueError(Exception):
    """A file that went away upstream could not be kept (no longer downloadable, bad hash)."""


# Keep a file that went away upstream: store it if missing, mark it irreplaceable.
# `authorization`: the credentials of the client whose request saw it go (passthrough
# registries, which datepin holds none of its own for).
# Returns True when it had to be downloaded now; raises RescueError.
Rescue = Callable[[Registry, DistFile, str | None], Awaitable[bool]]


class Index:
    """Observes projects upstream, records them, and computes views.  One per process."""

    def __init__(
        self,
        config: Config,
        history: HistoryStore,
        upstream: Upstream,
        *,
        clock: Clock = utcnow,
        fetch_file: FetchFile | None = None,
        open_kept: OpenKept | None = None,
        auth: UpstreamAuth | None = None,
        gate: AccessGate | None = None,
        rescue: Rescue | None = None,
    ) -> None:
        self.config = config
        self.history = history
        self.upstream = upstream
        self.clock = clock
        self.fetch_file = fetch_file
        self.open_kept = open_kept
        self.auth = auth or UpstreamAuth()
        self.gate = gate or AccessGate()
        self._rescue = rescue
        self._rescues: dict[tuple[str, str], asyncio.Task[None]] = {}
        # A project removed upstream may take thousands of files with it: a few at a time.
        self._rescue_slots = asyncio.Semaphore(config.snapshot_concurrency)
        self._inflight: dict[tuple[str, ...], asyncio.Future[Observed | None]] = {}
        self._checks: dict[bytes, asyncio.Future[None]] = {}
        self._checkpoint: asyncio.Task[None] | None = None
        self._fixed: OrderedDict[tuple[str, str, datetime], View] = OrderedDict()
        self._fixed_files = 0
        self.observations = 0
        self.pages_not_modified = 0  # observations that found history's page (`NotModified`)
        self.upstream_failures = 0
        self.access_checks = 0
        self.access_denied = 0

    def upstream_headers(
        self, registry: Registry, url: str, authorization: str | None = None
    ) -> dict[str, str]:
        """Authorization for a request to `url` for `registry` (static, or the client's own
        for passthrough registries); empty for other registries and other hosts."""
        return self.auth.headers(registry, url, authorization)

    def via(self, registry: Registry) -> Via | None:
        """The egress proxy `registry`'s upstream requests go through; None: direct."""
        return self.auth.via(registry)

    # -- upstream ------------------------------------------------------------------------

    async def fetch_page(
        self,
        registry: Registry,
        name: str,
        headers: Mapping[str, str] | None = None,
        *,
        authorization: str | None = None,
        validator: str | None = None,
    ) -> ProjectPage | None:
        """One upstream project page, parsed; None when upstream says it does not exist.

        `authorization`: the client's own credentials, sent upstream for passthrough registries.
        `validator`: what identifies the page history has (`Latest.validator`), to ask for
        the page only if it changed; raises NotModified when it did not.
        """
        url = f"{registry.url}{name}/"
        # Credentials upstream are decided by the registry's auth mode alone.
        extra = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        fetched = await self.upstream.get(url, via=self.via(registry), headers={
            "Accept": SIMPLE_ACCEPT,
            **extra,
            **conditions(validator),
            **self.upstream_headers(registry, url, authorization),
        })
        if fetched.status == 304 and validator is not None:
            if not fetched.redirected:
                raise NotModified(url, validator)
            # Another URL's validators are not the ones history holds: ask for the page.
            return await self.fetch_page(registry, name, headers, authorization=authorization)
        if fetched.status in (404, 410):
            return None
        if fetched.status in (401, 403):
            raise _refused(registry, url, fetched.status)
        if fetched.status != 200:
            raise status_error(url, fetched.status, fetched.headers)
        # Redirected to another host, which got no credentials: its 200 is not the registry
        # accepting them (a single sign-on front's login page, say), unless it is another
        # index's page of the project (below).
        elsewhere = registry.auth != "none" and not same_origin(fetched.url, registry)
        base_url, redirected = fetched.url, fetched.redirected
        json_page = "json" in fetched.content_type
        # Big pages (thousands of files) take milliseconds to parse: off the event loop.  A
        # small one is read here: the hop to a thread would cost more than the reading.
        small = len(fetched.body) <= SMALL_PAGE
        renewed = None
        if not redirected:
            # The same bytes as the page history holds (upstream sent no validators, or
            # ignored them): not read again, as a 304 would not be (pydantic-core's 6.5 MB:
            # 4 ms to hash, 0.3 s to read and compare).
            digest = page_digest(fetched) if small else await asyncio.to_thread(page_digest, fetched)
            renewed = page_validator(fetched, digest)
            if _identified(validator).get("digest") == digest:
                raise NotModified(url, renewed)
        try:
            if json_page:
                # The bytes go before the files are read: a 20,000-file page is 12 MB of
                # them, on top of its text and its files (bench/run, growth: peak RSS).
                read = functools.partial(parse_json_page, json_text(fetched.body), base_url)
                del fetched
            else:
                check_html_complete(fetched.body)
                read = functools.partial(
                    parse_html_page, fetched.body, base_url, name, fetched.content_type
                )
            page: ProjectPage | None = read() if small else await asyncio.to_thread(read)
        except NotAProjectPage as e:
            if not redirected:
                # A maintenance page, a proxy repository's empty listing: upstream failing,
                # not the project having no files (DESIGN.md "Determinism").
                reason = one_line(str(e))
                raise UpstreamError(
                    f"{mask_url(url)} answered a page that is not a project page: {reason}"
                ) from None
            page = None  # lists no package: a login page (below)
        except PageError as e:
            reason = one_line(str(e))
            raise UpstreamError(f"{mask_url(url)} sent a page datepin cannot read: {reason}") from None
        if elsewhere:
            if page is not None and any(project_of(f.filename) == name for f in page.files):
                # The registry forwards projects it does not hold to another index (GitLab
                # sends them to pypi.org): not on this registry, as a 404 would say.  The
                # client takes the project from its other index, pinned there.
                log.info("%s: %s is not on this registry (forwarded to %s)",
                         registry.name, name, mask_url(base_url))
                return None
            raise _refused(registry, url, 401, f"redirected to {mask_url(base_url)}")
        if page is None or (redirected and not json_page and not page.files):
            # Sent to an HTML page that lists no package, on whatever host: a login page (a
            # single sign-on front whose session expired), not the project.  Recorded, it
            # would be the project having no files at that moment, for every pin (DESIGN.md
            # "Determinism"); an empty project's page is answered where it was asked for.
            how = f"redirected to {mask_url(base_url)}, a page that lists no package: a login page?"
            raise _refused(registry, url, 401, how)
        # A link with user:password in it would put a secret into history.
        files = tuple(
            replace(f, url=strip_userinfo(f.url)) if "@" in f.url else f for f in page.files
        )
        return replace(page, files=files, validator=renewed)

    async def observe(
        self,
        registry: Registry,
        name: str,
        headers: Mapping[str, str] | None = None,
        *,
        authorization: str | None = None,
    ) -> Change | None:
        """Fetch and record one observation; concurrent callers share one fetch (for a
        passthrough registry, callers have passed `authorize` for the project first).

        Returns None when upstream does not know a project history has never seen.
        """
        observed = await self._observe_shared(registry, name, headers, authorization, load=False)
        return None if observed is None else observed[0]

    async def _observe_shared(
        self,
        registry: Registry,
        name: str,
        headers: Mapping[str, str] | None,
        authorization: str | None,
        *,
        load: bool,
    ) -> Observed | None:
        """`observe`, and with `load` the project's history as recorded, read in the same
        thread call (a caller that joins an observation started without `load` gets None
        for it and reads history itself)."""
        key: tuple[str, ...] = (registry.name, name)
        if registry.auth == "passthrough":
            # Each client's credentials are asked about on their own: one client's refusal
            # (or acceptance) is not another's.
            key += (self.gate.key(authorization, registry.name, name).hex(),)
        return await _shared(
            self._inflight, key,
            lambda: self._observe(registry, name, headers, authorization, load=load),
        )

    async def _observe(
        self,
        registry: Registry,
        name: str,
        headers: Mapping[str, str] | None,
        authorization: str | None,
        *,
        load: bool = False,
    ) -> Observed | None:
        # Recorded as of the request: upstream builds the page after this, so it lists every
        # file uploaded before it.  Stamped when the answer arrives instead, a file uploaded
        # while the page was on its way (before a cutoff between the two times) would be
        # missing from an observation that seems to describe that cutoff: hidden for good.
        started = self.clock()
        # Asked only for a page other than history's latest.  Not for a passthrough registry:
        # its page is what says upstream accepted this client's credentials, and a 304 from
        # a cache before it would not.
        latest = None if registry.auth == "passthrough" else self.history.latest(registry.name, name)
        validator = None if latest is None else latest.validator
        try:
            try:
                page = await self.fetch_page(
                    registry, name, headers, authorization=authorization, validator=validator
                )
            except NotModified as e:
                assert validator is not None
                observed = await self._record_unchanged(
                    registry, name, started, validator, e.renewed
                )
                if observed is not None:
                    return observed
                started = self.clock()
                page = await self.fetch_page(registry, name, headers, authorization=authorization)
        except UpstreamError as e:
            self.upstream_failures += 1
            if registry.auth == "passthrough" and e.status in (401, 403):
                # Upstream refused these credentials: no access from history meanwhile, and
                # no grace later (the access check's own refusals do the same).
                self.gate.revoke(self.gate.key(authorization, registry.name, name))
            raise
        if page is None and registry.auth == "passthrough":
            # Registries that hide private projects answer 404 to credentials without access
            # (GitLab, GitHub): it ends this client's access, and says nothing of the project
            # for the clients upstream still shows it to (recorded, every file would be gone).
            self.gate.revoke(self.gate.key(authorization, registry.name, name))
            return None
        return await self._record(
            registry, name, page, started, load=load, authorization=authorization
        )

    async def _record(
        self,
        registry: Registry,
        name: str,
        page: ProjectPage | None,
        at: datetime,
        *,
        load: bool = False,
        authorization: str | None = None,
    ) -> Observed | None:
        """Record `page`, as upstream had it at `at` (when it was asked for)."""
        self.observations += 1
        if page is None and await asyncio.to_thread(self.history.last_observed, registry.name, name) is None:
            return None
        # Read back in the same thread call: a cold page's answer waits for each hop.  Not
        # for a big page: its files and its history would be in memory at once (bench/run,
        # growth: 20,000 files, peak RSS), and one hop more is nothing next to its reading.
        # A first observation's history is the page's own files: nothing to read back, and
        # no second copy of them, whatever its size.
        read_back = load and (page is None or len(page.files) <= SMALL_PAGE_FILES)

        def fold(*, wait: bool = True) -> Observed:
            _, change = self.history.record(registry.name, name, page, at, wait=wait)
            if load and change.first:
                return change, first_history(registry.name, change, page)
            if not read_back:
                return change, None
            return change, self.history.load(registry.name, name)

        quick = read_back and (page is None or len(page.files) <= QUICK_RECORD_FILES)
        observed = await self._write(name, fold, quick=quick)
        # Whoever observed it (a request, live or pinned, or the snapshotter): a file seen
        # going away is kept at once, while upstream may still serve it (DESIGN.md).
        if self._rescue is not None:
            for file in observed[0].gone:
                self.rescue(registry, file, authorization)
        return observed

    async def _write[T](self, name: str, write: Callable[..., T], *, quick: bool) -> T:
        """`write(wait=...)` an observation of `name` into history: on the loop if `quick`
        and no other writer is at work, else in a thread.  A write that fails is answered
        like an upstream failure: from history with a warning where it can."""
        try:
            if quick:
                try:
                    return write(wait=False)
                except HistoryBusy:
                    pass
                finally:
                    self._checkpoint_if_due()
            return await asyncio.to_thread(write)
        except HistoryWriteError as e:
            raise UpstreamError(f"{name}: datepin {e}", status=503) from None

    async def _record_unchanged(
        self, registry: Registry, name: str, at: datetime, validator: str, renewed: str
    ) -> Observed | None:
        """Record that upstream still had, at `at`, the page `validator` names (`renewed`
        names it from now on); None when history's latest page is another
        (`HistoryStore.record_unchanged`)."""

        def write(*, wait: bool = True) -> tuple[datetime, Change] | None:
            return self.history.record_unchanged(
                registry.name, name, at, validator, renewed, wait=wait
            )

        recorded = await self._write(name, write, quick=True)  # one row
        if recorded is None:
            return None
        self.observations += 1
        self.pages_not_modified += 1
        return recorded[1], None

    # -- passthrough access ----------------------------------------------------------------

    async def authorize(self, registry: Registry, name: str, authorization: str | None) -> None:
        """Passthrough registries: let a client see stored pages and files of a project only
        if upstream accepted its credentials (None: anonymous) for that project within
        `access_ttl`.  Asks upstream with those credentials when it has not; the page it gets
        is recorded as an observation.  Fails closed: raises UpstreamError (401/403, or 502
        when upstream cannot be asked) or NotObserved (upstream says 404).  No-op for other
        registries."""
        if registry.auth != "passthrough":
            return
        key = self.gate.key(authorization, registry.name, name)
        if self.gate.state(key, ttl=registry.access_ttl) == "fresh":
            return
        await _shared(self._checks, key, lambda: self._check(registry, name, authorization, key))

    async def _check(
        self, registry: Registry, name: str, authorization: str | None, key: bytes
    ) -> None:
        self.access_checks += 1
        started = self.clock()
        try:
            page = await self.fetch_page(registry, name, authorization=authorization)
        except UpstreamError as e:
            if e.status in (401, 403):
                self.refused(registry, name, authorization)
                raise
            if self.gate.state(key, ttl=registry.access_ttl, grace=registry.grace) == "grace":
                log.warning("%s/%s: access not re-checked, within grace: %s", registry.name, name, e)
                return
            self.access_denied += 1
            raise e.restated(
                f"cannot check access to {name} on registry {registry.name!r}, so its stored "
                f"files are not served: {e}"
            ) from None
        if page is None:
            self.gate.revoke(key)
            raise NotObserved(name)
        self.gate.grant(key)
        log.debug("%s/%s: upstream accepted the client's credentials", registry.name, name)
        await self._record(registry, name, page, started, authorization=authorization)

    async def look_up(self, registry: Registry, name: str, authorization: str | None) -> None:
        """Have the project in history as upstream lists it now (as `live` would: at most
        `live_ttl` old), for a file URL that no page of this datepin listed yet: a lock file
        made through another datepin, or before this data directory.  Raises what
        `authorize` and `observe` raise; NotObserved when upstream has no such project."""
        await self.authorize(registry, name, authorization)
        if self._needs_observation(self.history.last_observed(registry.name, name), None):
            if await self.observe(registry, name, authorization=authorization) is None:
                raise NotObserved(name)

    async def signed_anew(
        self, registry: Registry, name: str, key: str, filename: str, authorization: str | None
    ) -> StoredFile | None:
        """The file as upstream lists it now (as `live` would: at most `live_ttl` old), for
        a file whose URL is presigned (a query string: S3, GCS, Artifactory's `?sig=`) and
        may have expired since the page history has it from was read: a pin fixed long ago
        is never observed again, and every signature it saw has expired.  None when upstream
        cannot say, or no longer lists it: the URL history has is tried all the same."""
        try:
            await self.look_up(registry, name, authorization)
        except (UpstreamError, NotObserved) as e:
            log.info("%s: no newer URL for %s: %s", registry.name, filename, e)
            return None
        fresh = await asyncio.to_thread(self.history.find_file, registry.name, key, filename)
        return fresh if fresh is not None and fresh.present else None

    def refused(self, registry: Registry, name: str, authorization: str | None) -> None:
        """Upstream refused these credentials for a page or a file of the project: they lose
        the access they were granted, and its grace, until upstream accepts them again."""
        self.gate.revoke(self.gate.key(authorization, registry.name, name))
        self.access_denied += 1
        log.info("%s/%s: upstream refused the client's credentials", registry.name, name)

    async def visible_names(self, registry: Registry, authorization: str | None) -> list[str]:
        """The root page: projects with files; for passthrough registries only those these
        credentials were recently accepted for (project names can be private too)."""
        names = await asyncio.to_thread(self.history.visible_names, registry.name)
        if registry.auth != "passthrough":
            return names
        return [
            n for n in names
            if self.gate.state(self.gate.key(authorization, registry.name, n),
                               ttl=registry.access_ttl) == "fresh"
        ]

    # -- rescue --------------------------------------------------------------------------

    def rescue(
        self, registry: Registry, file: DistFile, authorization: str | None = None
    ) -> asyncio.Task[None]:
        """Start keeping a file that went away upstream, or join the rescue in progress.

        The task ends once the file is stored and marked irreplaceable, or raises
        RescueError (also logged).  Await it through `asyncio.shield` so that a cancelled
        caller does not cancel a rescue others may wait for.
        """
        key = (registry.name, file_key(file))
        task = self._rescues.get(key)
        if task is None:
            task = asyncio.create_task(
                self._rescue_one(registry, file, authorization), name=f"rescue {file.filename}"
            )
            self._rescues[key] = task
            task.add_done_callback(lambda done: self._rescued(key, file.filename, done))
        return task

    async def _rescue_one(
        self, registry: Registry, file: DistFile, authorization: str | None
    ) -> None:
        if self._rescue is None:
            raise RescueError(f"{file.filename}: no file store to keep it in")
        try:
            async with self._rescue_slots:
                downloaded = await self._rescue(registry, file, authorization)
        except RescueError:
            await asyncio.to_thread(
                self.history.note_rescue, registry.name, file_key(file), file.filename, False
            )
            raise
        await asyncio.to_thread(
            self.history.note_rescue, registry.name, file_key(file), file.filename, True
        )
        if downloaded:
            log.info("rescued %s (gone upstream): stored, irreplaceable", file.filename)

    def _rescued(self, key: tuple[str, str], filename: str, task: asyncio.Task[None]) -> None:
        if self._rescues.get(key) is task:
            del self._rescues[key]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("could not keep %s, gone upstream: %s", filename, error)

    async def drain(self) -> None:
        """Wait for the rescues in progress to finish (their failures are logged)."""
        while self._rescues:
            await asyncio.gather(*self._rescues.values(), return_exceptions=True)

    async def close(self) -> None:
        """Cancel rescues still running (shutdown), and wait for a checkpoint in progress."""
        tasks = list(self._rescues.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)

    def _checkpoint_if_due(self) -> None:
        """Records made on the loop leave the WAL to grow (HistoryStore.needs_checkpoint)."""
        if self.history.needs_checkpoint and (self._checkpoint is None or self._checkpoint.done()):
            self._checkpoint = asyncio.create_task(asyncio.to_thread(self.history.checkpoint))
            self._checkpoint.add_done_callback(_log_checkpoint_failure)

    # -- views ---------------------------------------------------------------------------

    async def answer(
        self,
        registry: Registry,
        name: NormalizedName,
        pin: Pin,
        headers: Mapping[str, str] | None = None,
        *,
        authorization: str | None = None,
        unchanged_since: datetime | None = None,
    ) -> Answer:
        """The view of a project at a pin, observing upstream only when history can't answer.

        Passthrough registries: call `authorize` first; `authorization` is used to observe.
        `unchanged_since`: the last change a live view the caller holds reflects
        (`Answer.changed_at`); if the project has not changed since, once observed when due,
        the answer has no view (and history is not read): the caller's view is still live."""
        cutoff = pin.for_project(name).cutoff
        if cutoff is not None:
            cached = self._fixed.get((registry.name, name, cutoff))
            if cached is not None:
                self._fixed.move_to_end((registry.name, name, cutoff))
                return Answer(cached, fixed=True)
        # One indexed read (WAL: readers never wait for writers): made tiny rather than a
        # thread-pool hop (STYLE.md rule 3), as every cold or live request makes it.
        latest = self.history.latest(registry.name, name)
        last = None if latest is None else latest.observed
        changed_at = None if latest is None else latest.changed
        warning = None
        history = None
        if self._needs_observation(last, cutoff):
            try:
                observed = await self._observe_shared(registry, name, headers, authorization, load=True)
                if observed is not None and cutoff is not None and observed[0].at < cutoff:
                    # Joined a fetch asked for before the cutoff: it cannot describe the
                    # cutoff, so observe again (the fetch asked for now comes after it).
                    observed = await self._observe_shared(
                        registry, name, headers, authorization, load=True
                    )
                if observed is None:
                    raise NotObserved(name)
                # Not kept: the change lists every file the observation added (20,000 files:
                # 22 MB), which must be gone before a big project's history is read back.
                changed_at, history, observed = observed[0].state_at, observed[1], None
            except UpstreamError as e:
                if last is None or e.status in (401, 403):
                    raise
                warning = f"upstream unavailable, answered from history: {e}"
                log.warning("%s: %s", name, warning)
        if unchanged_since is not None and warning is None and changed_at == unchanged_since:
            return Answer(None, changed_at=changed_at)
        if history is None:
            history = await asyncio.to_thread(self.history.load, registry.name, name)
        if history is None:
            raise NotObserved(name)
        result = view(history, cutoff)
        fixed = cutoff is not None and is_fixed(history, cutoff)
        if fixed:
            assert cutoff is not None
            self._remember(registry.name, name, cutoff, result)
        return Answer(result, warning, fixed, changed_at)

    def live_since(self, registry: Registry, name: NormalizedName) -> datetime | None:
        """The project's last change if `live` may still be answered from history (observed
        within `live_ttl`), else None: a live page made since that change is still live."""
        latest = self.history.latest(registry.name, name)
        if latest is None or self._needs_observation(latest.observed, None):
            return None
        return latest.changed

    def _needs_observation(self, last: datetime | None, cutoff: datetime | None) -> bool:
        if last is None:
            return True
        if cutoff is None:
            return self.clock() - last > timedelta(seconds=self.config.live_ttl)
        return last < cutoff

    def _remember(self, registry: str, name: str, cutoff: datetime, result: View) -> None:
        # A view observed at or after its cutoff never changes (DESIGN.md "Determinism"),
        # so it can be kept as long as memory allows.
        if len(result.files) > FIXED_VIEW_FILES // 2:
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
        self,
        registry: Registry,
        result: View,
        version: str | None,
        *,
        authorization: str | None = None,
    ) -> tuple[str, dict[str, object]] | None:
        """The `info` of the release the JSON API shows (the chosen one, or `version`)."""
        chosen = version or choose_release(result)
        if chosen is None:
            return None
        name = result.name
        stored = await asyncio.to_thread(self.history.release_info, registry.name, name, chosen)
        if stored is not None:
            return chosen, stored
        failures: list[UpstreamError] = []
        info = await self._fetch_release_info(registry, result, chosen, authorization, failures)
        if info is None and failures:
            # Not a stand-in: it would lack requires_dist, and be replaced by the real info
            # once upstream is back, changing what a fixed view answers.  Throttled, the
            # client is told when to ask again, as for a page.
            failed = next((e for e in failures if e.status in THROTTLED), failures[0])
            raise failed.restated(
                f"{name} {chosen}: release metadata not kept, no file of the release kept to"
                f" read it from, and upstream failed: {failed}"
            )
        if info is not None:
            try:
                await asyncio.to_thread(self.history.save_release_info, registry.name, name, chosen, info)
            except HistoryWriteError as e:
                log.warning("%s %s: release info not kept: %s", name, chosen, e)
        return chosen, info or {"name": name, "version": chosen}

    async def _fetch_release_info(
        self,
        registry: Registry,
        result: View,
        version: str,
        authorization: str | None,
        failures: list[UpstreamError],
    ) -> dict[str, object] | None:
        if registry.json_url:
            for url in (
                f"{registry.json_url}{result.name}/{version}/json",
                f"{registry.json_url}{result.name}/json",
            ):
                try:
                    fetched = await self.upstream.get(url, via=self.via(registry), headers={
                        "Accept": "application/json",
                        **self.upstream_headers(registry, url, authorization),
                    })
                    if fetched.status == 200:
                        info = parse_json_api_info(fetched.body)
                        if str(info.get("version")) == version:
                            return info
                    elif fetched.status not in (404, 410):
                        failures.append(status_error(url, fetched.status, fetched.headers))
                except (UpstreamError, PageError) as e:
                    log.info("JSON API for %s %s: %s", result.name, version, e)
                    failures.append(e if isinstance(e, UpstreamError) else UpstreamError(str(e)))
        return await self._info_from_files(registry, result, version, authorization, failures)

    async def _info_from_files(
        self,
        registry: Registry,
        result: View,
        version: str,
        authorization: str | None,
        failures: list[UpstreamError],
    ) -> dict[str, object] | None:
        """Fall back to the release's core metadata (DESIGN.md "The view function"): a wheel's
        (its `.metadata` file, else the METADATA inside it), else an sdist's PKG-INFO, from
        the file uploaded first, as warehouse describes a release.  What datepin has kept is
        read before upstream is asked: the release may be gone upstream, or upstream down."""
        files = sorted(
            (f for f in result.files if str(version_of(f.filename)) == version), key=_upload_order
        )
        wheels = [(f, True) for f in files if f.core_metadata is not None]
        wheels += [(f, False) for f in files if f.filename.endswith(".whl")]
        sdists = [(f, False) for f in files if is_sdist(f.filename)]
        for sources in (wheels, sdists):
            info = await self._kept_info(registry, sources)
            if info is None:
                info = await self._fetched_info(
                    registry, result.name, sources, authorization, failures
                )
            if info is not None:
                return info
        return None

    async def _kept_info(
        self, registry: Registry, sources: list[MetadataSource]
    ) -> dict[str, object] | None:
        if self.open_kept is None:
            return None
        for f, metadata in sources:
            if not metadata and f.sha256 is None:
                f = await asyncio.to_thread(self._as_kept, registry, f)
            kept = await self.open_kept(f, metadata)
            if kept is None:
                continue
            name = f.filename + ".metadata" if metadata else f.filename
            try:
                with kept as file:
                    return await asyncio.to_thread(_read_info, file, name)
            except (OSError, MetadataError) as e:
                log.warning("kept %s: %s", name, e)
        return None

    def _as_kept(self, registry: Registry, f: DistFile) -> DistFile:
        """`f` with the sha256 datepin computed when it kept it, where its index lists none
        (an md5 alone, a bare link): the store knows files by it (`set_sha256`)."""
        stored = self.history.find_file(registry.name, file_key(f), f.filename)
        if stored is None or stored.sha256 is None:
            return f
        return replace(f, hashes={**f.hashes, "sha256": stored.sha256})

    async def _fetched_info(
        self,
        registry: Registry,
        name: str,
        sources: list[MetadataSource],
        authorization: str | None,
        failures: list[UpstreamError],
    ) -> dict[str, object] | None:
        for f, metadata in sources:
            if metadata:
                url = f.url + ".metadata"
                try:
                    fetched = await self.upstream.get(
                        url,
                        headers=self.upstream_headers(registry, url, authorization),
                        max_bytes=MAX_METADATA,
                        via=self.via(registry),
                    )
                except UpstreamError as e:
                    log.info("metadata of %s: %s", f.filename, e)
                    failures.append(e)
                    continue
                expected = (f.core_metadata or {}).get("sha256")
                if fetched.status == 200 and expected not in (None, hashlib.sha256(fetched.body).hexdigest()):
                    # Kept for good once read: wrong bytes must not become the release's info.
                    failures.append(UpstreamError(f"{f.filename}.metadata: sha256 mismatch"))
                elif fetched.status == 200:
                    return info_from_metadata(fetched.body)
                elif fetched.status in (401, 403) and registry.auth == "passthrough":
                    # A file refused to the client's credentials ends their access, as a
                    # page refused does.
                    self.refused(registry, name, authorization)
                    raise _refused(registry, url, fetched.status)
                elif fetched.status not in (404, 410):
                    failures.append(status_error(url, fetched.status, fetched.headers))
            elif self.fetch_file is not None:
                if "?" in f.url:
                    fresh = await self.signed_anew(
                        registry, name, file_key(f), f.filename, authorization
                    )
                    f = f if fresh is None else fresh.file
                try:
                    headers = self.upstream_headers(registry, f.url, authorization)
                    with await self.fetch_file(f, registry, headers) as file:
                        return await asyncio.to_thread(_read_info, file, f.filename)
                except UpstreamError as e:
                    log.info("metadata inside %s: %s", f.filename, e)
                    failures.append(e)
                except OSError as e:
                    log.info("metadata inside %s: %s", f.filename, e)
                    failures.append(UpstreamError(str(e)))
                except MetadataError as e:
                    log.info("metadata inside %s: %s", f.filename, e)
        return None


def page_validator(fetched: Fetched, digest: str) -> str:
    """What identifies a page, for the next observation to tell whether upstream's page is
    still the one history holds: upstream's ETag and Last-Modified, to ask with
    (`conditions`), and the digest of what the page was read from (`page_digest`), to
    compare a whole page with when upstream sends neither or ignores them.

    Last-Modified counts in whole seconds: a page changed again within the second it names
    would be "not modified since" it.  So it is kept only when the response's Date is a
    second or more after it (RFC 9110 8.8.2.2), by when that second was over."""
    headers = {k.lower(): v for k, v in fetched.headers.items()}
    found = {k: headers[k] for k in ("etag", "last-modified") if headers.get(k)}
    if "last-modified" in found and not _settled(found["last-modified"], headers.get("date")):
        del found["last-modified"]
    return json.dumps({**found, "digest": digest}, sort_keys=True)


def page_digest(fetched: Fetched) -> str:
    """A page as read: the same digest, the same ProjectPage.  It starts with PAGE_READER,
    which counts the changes to how pages are read: a page read otherwise before is read
    again, whatever upstream says of it."""
    h = hashlib.sha256(f"{fetched.url}\n{fetched.content_type}\n".encode())
    h.update(fetched.body)
    return f"{PAGE_READER}:{h.hexdigest()}"


def conditions(validator: str | None) -> dict[str, str]:
    """The request headers that ask upstream for a page only if it is no longer the one
    `validator` names (none for a page read otherwise then: it must come whole)."""
    found = _identified(validator)
    if not str(found.get("digest", "")).startswith(f"{PAGE_READER}:"):
        return {}
    asked = {"If-None-Match": found.get("etag"), "If-Modified-Since": found.get("last-modified")}
    return {k: v for k, v in asked.items() if isinstance(v, str) and v}


def _identified(validator: str | None) -> dict[str, object]:
    """What `page_validator` put in `validator`; nothing for a damaged one (the page is then
    asked for whole and read)."""
    try:
        found = json.loads(validator) if validator is not None else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _settled(last_modified: str, date: str | None) -> bool:
    try:
        return date is not None and (
            parsedate_to_datetime(date) - parsedate_to_datetime(last_modified)
        ) >= timedelta(seconds=1)
    except (TypeError, ValueError):  # not HTTP dates, or one with a zone and one without
        return False


def _log_checkpoint_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("history checkpoint failed: %s", error)


def _refused(registry: Registry, url: str, status: int, how: str | None = None) -> UpstreamError:
    """Upstream answered 401/403 (or sent the request to log in, `how`).  Only a passthrough
    client can fix that with its own credentials; otherwise it is datepin's configuration
    (502)."""
    if registry.auth == "passthrough":
        return UpstreamError(
            f"registry {registry.name!r} refused these credentials ({how or f'HTTP {status}'}) for "
            f"{mask_url(url)}; datepin has none of its own for it: a client gives its own, in"
            " its index URL (http://USER:TOKEN@HOST/...) or from a keyring",
            status=status,
        )
    if registry.auth == "static":
        hint = f"check the credentials in ${registry.auth_env}"
    else:
        hint = 'it needs credentials: set auth = "static" or "passthrough" in proxy.toml'
    return UpstreamError(
        f"{mask_url(url)} refused datepin ({how or f'HTTP {status}'}): {hint}", status=502
    )


async def _shared[K, T](
    inflight: dict[K, asyncio.Future[T]], key: K, start: Callable[[], Awaitable[T]]
) -> T:
    """Run `start()` once per key at a time; concurrent callers share its result or error."""
    if key in inflight:
        return await asyncio.shield(inflight[key])
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    inflight[key] = future
    try:
        result = await start()
    except BaseException as e:
        future.set_exception(e)
        future.exception()  # mark retrieved: the caller re-raises it
        raise
    else:
        future.set_result(result)
        return result
    finally:
        del inflight[key]


def _upload_order(f: DistFile) -> tuple[bool, datetime, str]:
    """Files of a release as uploaded (warehouse describes a release by its first file);
    files without an upload time last."""
    return (f.upload_time is None, f.upload_time or datetime.min.replace(tzinfo=UTC), f.filename)


def _read_info(file: IO[bytes], filename: str) -> dict[str, object]:
    """The JSON API `info` from the core metadata in `file` (a thread's work: it decompresses
    and parses).  Raises MetadataError, OSError."""
    return info_from_metadata(read_core_metadata(file, filename))
