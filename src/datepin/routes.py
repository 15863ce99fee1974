"""Pure request routing: (method, path) of a path-mode request -> a Route value.

Path mode (DESIGN.md "Path mode URLs"); the first segment of every index URL is the pin, which
is parsed later (it needs the clock).  Forward-mode requests use `route_forward`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from packaging.utils import NormalizedName, canonicalize_name

RESERVED = frozenset({"simple", "pypi", "r", "files", "-"})
_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_KEY = re.compile(r"^([0-9a-f]{64}|u[0-9a-f]{40})$")
_REGISTRY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Health:
    pass


@dataclass(frozen=True)
class Metrics:
    pass


@dataclass(frozen=True)
class Root:
    pin: str
    registry: str


@dataclass(frozen=True)
class Project:
    pin: str
    registry: str
    project: NormalizedName


@dataclass(frozen=True)
class JsonApi:
    pin: str
    registry: str
    project: NormalizedName
    version: str | None


@dataclass(frozen=True)
class File:
    registry: str
    key: str
    filename: str
    metadata: bool  # the PEP 658 `.metadata` file of `filename`


@dataclass(frozen=True)
class UpstreamFile:
    """Forward mode: a file URL on an intercepted host, looked up by URL."""

    url: str


@dataclass(frozen=True)
class Redirect:
    location: str


@dataclass(frozen=True)
class Reject:
    status: int
    message: str


Route = (
    Help | Health | Metrics | Root | Project | JsonApi | File | UpstreamFile | Redirect | Reject
)

NOT_FOUND_HELP = (
    "datepin serves index URLs of the form /<pin>/simple/<project>/, where <pin> is a date "
    "(2023-11-18), an RFC 3339 timestamp (2023-11-18T14:05:00Z) or 'live'. See / for how to "
    "point pip, uv, Poetry, PDM and Docker at this proxy."
)


def _split(path: str) -> tuple[list[str], bool, str]:
    """Segments (with // collapsed), whether the path ended in '/', and the query string."""
    path, _, query = path.partition("?")
    path = path.partition("#")[0]
    return path_segments(path), path.endswith("/"), query


def path_segments(path: str) -> list[str]:
    """A URL path's non-empty segments, decoded (a request's, or an index URL's, which may
    carry an encoded segment: GitLab's `projects/group%2Fproject/`)."""
    return [unquote(s) for s in path.partition("?")[0].partition("#")[0].split("/") if s]


_SAFE = "!$&'()*+,;=:@-._~"


def _with_query(location: str, query: str, *, encoded: bool = False) -> str:
    """A Location on this proxy, percent-encoded: segments were unquoted, and a CR LF sent as
    %0d%0a would otherwise end the header and let a request write its own response headers.
    `encoded`: `location` is a path as the client sent it, whose escapes stay as they are."""
    location = quote(location, safe="/" + _SAFE + ("%" if encoded else ""))
    return f"{location}?{quote(query, safe='/?%' + _SAFE)}" if query else location


def route_path(method: str, path: str) -> Route:
    if method not in ("GET", "HEAD"):
        return Reject(405, f"{method} is not supported: datepin is a read-only index\n")
    segs, slash, query = _split(path)
    if any(s in (".", "..") or "/" in s or "\\" in s or "\x00" in s for s in segs):
        return Reject(400, "path segments '.' and '..' are not allowed\n")
    if not segs:
        return Help()
    head = segs[0]
    if head == "-":
        if segs[1:] == ["health"]:
            return Health()
        if segs[1:] == ["metrics"]:
            return Metrics()
        return Reject(404, NOT_FOUND_HELP + "\n")
    if head == "files":
        return _route_file(segs[1:])
    if head in RESERVED or len(segs) == 1 and not slash and "." in head:
        return Reject(404, NOT_FOUND_HELP + "\n")
    pin, rest = head, segs[1:]
    registry = "pypi"
    prefix = f"/{pin}"
    if rest[:1] == ["r"]:
        if len(rest) < 2 or not _REGISTRY.match(rest[1]):
            return Reject(404, "use /<pin>/r/<registry>/<project>/ for an extra registry\n")
        registry = rest[1]
        prefix = f"/{pin}/r/{registry}"
        rest = rest[2:]
    if rest[:1] == ["pypi"] and len(rest) >= 3 and rest[-1] == "json" and len(rest) <= 4:
        return _route_json(pin, registry, prefix, rest[1], rest[2] if len(rest) == 4 else None, query)
    under_simple = rest[:1] == ["simple"]
    if under_simple:
        rest = rest[1:]
        prefix += "/simple"
    if not rest:
        if not slash:
            return Redirect(_with_query(prefix + "/", query))
        return Root(pin, registry)
    # Reserved words are reserved only where they would be ambiguous: `/{pin}/pypi/` is no
    # project page, but `/{pin}/simple/pypi/` is (`pypi` and `files` are PyPI projects).
    if len(rest) != 1 or (not under_simple and rest[0] in RESERVED):
        return Reject(404, NOT_FOUND_HELP + "\n")
    name = rest[0]
    if not _NAME.match(name):
        return Reject(404, f"{name!r} is not a valid project name (PEP 508)\n")
    normal = canonicalize_name(name)
    if name != normal or not slash:
        return Redirect(_with_query(f"{prefix}/{normal}/", query))
    return Project(pin, registry, normal)


def _route_json(
    pin: str, registry: str, prefix: str, name: str, version: str | None, query: str
) -> Route:
    if not _NAME.match(name):
        return Reject(404, f"{name!r} is not a valid project name (PEP 508)\n")
    normal = canonicalize_name(name)
    if name != normal:
        tail = f"{version}/json" if version else "json"
        return Redirect(_with_query(f"{prefix}/pypi/{normal}/{tail}", query))
    return JsonApi(pin, registry, normal, version)


def _route_file(segs: list[str]) -> Route:
    if len(segs) != 3 or not _REGISTRY.match(segs[0]) or not _KEY.match(segs[1]):
        return Reject(404, "file URLs look like /files/<registry>/<sha256>/<filename>\n")
    registry, key, filename = segs
    metadata = filename.endswith(".metadata")
    if metadata:
        filename = filename.removesuffix(".metadata")
    if not filename:
        return Reject(404, "missing file name\n")
    return File(registry, key, filename, metadata)


def route_forward(method: str, host: str, path: str, *, index_host: bool) -> Route:
    """A request for an intercepted host (forward mode).  `index_host`: the host serves
    `/simple/` and `/pypi/` (pypi.org); otherwise it serves files (files.pythonhosted.org)."""
    if method not in ("GET", "HEAD"):
        return Reject(405, f"{method} is not supported through datepin\n")
    if not index_host:
        segs, _, _ = _split(path)
        if any(s in (".", "..") for s in segs) or not segs:
            return Reject(404, "not a file URL\n")
        # The path as sent: history keeps upstream URLs as upstream wrote them.
        raw = path.partition("?")[0].partition("#")[0].lstrip("/")
        return UpstreamFile(f"https://{host}/{raw}")
    segs, slash, query = _split(path)
    if segs[:1] == ["simple"]:
        if len(segs) == 1:
            return Root("", "pypi") if slash else Redirect(_with_query("/simple/", query))
        if len(segs) == 2 and _NAME.match(segs[1]):
            normal = canonicalize_name(segs[1])
            if segs[1] != normal or not slash:
                return Redirect(_with_query(f"/simple/{normal}/", query))
            return Project("", "pypi", normal)
    if segs[:1] == ["pypi"] and segs[-1:] == ["json"] and len(segs) in (3, 4):
        return _route_json("", "pypi", "", segs[1], segs[2] if len(segs) == 4 else None, query)
    return Reject(404, f"datepin serves only the package index on {host}\n")


def route_registry_forward(method: str, registry: str, base: str, url: str) -> Route:
    """Forward mode for an extra registry (intercept = true): `base` is its index URL.  Pages
    are the URLs under it that end in '/' (clients always ask `{index}/{name}/`); any other
    URL on the host is a file, looked up by URL in history."""
    if method not in ("GET", "HEAD"):
        return Reject(405, f"{method} is not supported through datepin\n")
    parts, base_parts = urlsplit(url), urlsplit(base)
    segs, slash, _ = _split(parts.path)
    query = parts.query
    if any(s in (".", "..") for s in segs):
        return Reject(400, "path segments '.' and '..' are not allowed\n")
    base_segs = path_segments(base_parts.path)  # compared decoded, as the request's
    if not slash or segs[: len(base_segs)] != base_segs:
        return UpstreamFile(url.partition("#")[0])
    rest = segs[len(base_segs):]
    if not rest:
        return Root("", registry)
    if len(rest) != 1 or not _NAME.match(rest[0]):
        return Reject(404, f"not a project page of registry {registry!r}\n")
    normal = canonicalize_name(rest[0])
    if rest[0] != normal:
        # The path as the client sent it (still encoded), with the name replaced.
        head = parts.path.rstrip("/")
        location = head[: head.rfind("/") + 1] + normal + "/"
        return Redirect(_with_query(location, query, encoded=True))
    return Project("", registry, normal)
