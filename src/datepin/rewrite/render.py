"""Render a View: PEP 503 HTML, PEP 691 JSON, the root pages, and PyPI's JSON API.

One model feeds every renderer (warehouse's habit; STYLE.md): the view is already filtered,
renderers only format it.  Output is deterministic: the same View and link function always
give the same bytes, so ETags stay stable and past views stay byte-identical.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC
from email import policy
from email.message import Message
from email.parser import Parser
from html import escape
from urllib.parse import quote

from packaging.version import Version

from datepin.model import DistFile, View
from datepin.rewrite.filenames import package_type, parse_version, python_version, version_of

__all__ = [
    "LinkFn",
    "UnknownRelease",
    "choose_release",
    "info_from_metadata",
    "iter_html",
    "iter_json",
    "render_html",
    "render_json",
    "render_json_api",
    "render_root_html",
    "render_root_json",
]

# The URL a client should fetch a file from: back to the proxy in path mode, the upstream
# URL in forward mode.  PEP 658/714: its metadata lives at that URL + ".metadata", so the
# renderers only say whether it exists and what its hashes are.
type LinkFn = Callable[[DistFile], str]

_API_VERSION = "1.1"  # PEP 700: versions, upload-time, size
_API_VERSION_WITH_STATUS = "1.4"  # PEP 792: project status markers
# Files per chunk of a streamed page: a 20,000-file page never exists as a list of lines
# (or of dicts), a string and bytes at once.
_CHUNK_FILES = 500


class UnknownRelease(LookupError):
    """The JSON API was asked for a version that has no file in the view."""


# --- PEP 503 HTML -------------------------------------------------------------------------


def render_html(view: View, link: LinkFn) -> bytes:
    return b"".join(iter_html(view, link))


def iter_html(view: View, link: LinkFn) -> Iterator[bytes]:
    """`render_html`, in chunks of a few hundred files."""
    name = escape(view.name)
    head = [_meta("pypi:repository-version", _api_version(view))]
    if view.status is not None:
        head.append(_meta("pypi:project-status", view.status))
        if view.status_reason is not None:
            head.append(_meta("pypi:project-status-reason", view.status_reason))
    head.append(f"<title>Links for {name}</title>")
    start, end = _html_frame(head)
    yield (start + f"    <h1>Links for {name}</h1>\n").encode("utf-8")
    for chunk in _chunks(view.files):
        yield "".join(f"    {_html_anchor(f, link)}<br />\n" for f in chunk).encode("utf-8")
    yield end.encode("utf-8")


def _chunks(files: tuple[DistFile, ...]) -> Iterator[tuple[DistFile, ...]]:
    for i in range(0, len(files), _CHUNK_FILES):
        yield files[i : i + _CHUNK_FILES]


def _html_anchor(f: DistFile, link: LinkFn) -> str:
    # PEP 503: one hash in the fragment; sha256 if there is one, else the index's other hash.
    pair = _hash_pair({a: h for a, h in f.hashes.items() if a in hashlib.algorithms_guaranteed})
    href = link(f) + (f"#{pair}" if pair else "")
    attrs = [("href", href)]
    if f.requires_python is not None:
        attrs.append(("data-requires-python", f.requires_python))
    if f.core_metadata is not None:
        # PEP 714: both names, same value, so old and new clients find the .metadata file.
        value = _hash_pair(f.core_metadata) or "true"
        attrs += [("data-core-metadata", value), ("data-dist-info-metadata", value)]
    if f.yanked is not None:
        attrs.append(("data-yanked", f.yanked))
    if f.upload_time_raw is not None:
        attrs.append(("data-upload-time", f.upload_time_raw))  # PEP 700 in HTML; uv reads it
    rendered = " ".join(f'{key}="{_escape_attr(value)}"' for key, value in attrs)
    return f"<a {rendered}>{escape(f.filename)}</a>"


def _escape_attr(value: str) -> str:
    # HTML5 parsers turn a raw CR into LF; a character reference keeps yank reasons and
    # requires-python byte for byte.
    return escape(value).replace("\r", "&#13;")


def _hash_pair(hashes: Mapping[str, str]) -> str | None:
    """`sha256=hex` (preferred) or the first other hash; None for no hashes."""
    if "sha256" in hashes:
        return f"sha256={hashes['sha256']}"
    for algo in sorted(hashes):
        return f"{algo}={hashes[algo]}"
    return None


def render_root_html(names: Iterable[str]) -> bytes:
    """The root page: one relative link per project, sorted, duplicates dropped."""
    head = [_meta("pypi:repository-version", _API_VERSION), "<title>Simple index</title>"]
    body = [f'<a href="{escape(quote(n))}/">{escape(n)}</a><br />' for n in sorted(set(names))]
    return _html_document(head, body)


def _meta(name: str, content: str) -> str:
    return f'<meta name="{escape(name)}" content="{_escape_attr(content)}">'


def _html_document(head: list[str], body: list[str]) -> bytes:
    start, end = _html_frame(head)
    return (start + "".join(f"    {line}\n" for line in body) + end).encode("utf-8")


def _html_frame(head: list[str]) -> tuple[str, str]:
    """A document's text before and after the lines of its body."""
    start = "<!DOCTYPE html>\n<html>\n  <head>\n" + "".join(f"    {line}\n" for line in head)
    return start + "  </head>\n  <body>\n", "  </body>\n</html>\n"


# --- PEP 691 JSON -------------------------------------------------------------------------


def render_json(view: View, link: LinkFn) -> bytes:
    return b"".join(iter_json(view, link))


def iter_json(view: View, link: LinkFn) -> Iterator[bytes]:
    """`render_json`, in chunks of a few hundred files (the same bytes: `files` comes last)."""
    doc: dict[str, object] = {
        "meta": {"api-version": _api_version(view)},
        "name": view.name,
    }
    if view.status is not None:
        # PEP 792 as the simple-API spec now words it (and PyPI serves it): a top-level
        # object; api-version 1.4 announces it.
        status: dict[str, str] = {"status": view.status}
        if view.status_reason is not None:
            status["reason"] = view.status_reason
        doc["project-status"] = status
    doc["versions"] = list(view.versions)
    doc["files"] = []
    head = _dump(doc)
    yield head[: -len(b"]}")]
    separator = b""
    for chunk in _chunks(view.files):
        yield separator + _dump([_json_file(f, link) for f in chunk])[1:-1]
        separator = b","
    yield b"]}"


def _json_file(f: DistFile, link: LinkFn) -> dict[str, object]:
    entry: dict[str, object] = {
        "filename": f.filename,
        "url": link(f),
        "hashes": _sorted(f.hashes),
        "requires-python": f.requires_python,
        "yanked": _json_yanked(f.yanked),
        # PEP 714: never the key `dist-info-metadata` (it crashes pip 22.3-23.1).
        "core-metadata": _json_core_metadata(f.core_metadata),
    }
    if f.upload_time_raw is not None:
        entry["upload-time"] = f.upload_time_raw
    if f.size is not None:
        entry["size"] = f.size
    return entry


def _json_yanked(yanked: str | None) -> bool | str:
    # PEP 592/691: false, true (yanked without a reason) or the reason.
    if yanked is None:
        return False
    return yanked or True


def _json_core_metadata(core_metadata: Mapping[str, str] | None) -> bool | dict[str, str]:
    if core_metadata is None:
        return False
    return _sorted(core_metadata) or True  # {} means "exists, hashes unknown"


def render_root_json(names: Iterable[str]) -> bytes:
    projects = [{"name": n} for n in sorted(set(names))]
    return _dump({"meta": {"api-version": _API_VERSION}, "projects": projects})


def _api_version(view: View) -> str:
    return _API_VERSION_WITH_STATUS if view.status is not None else _API_VERSION


def _sorted(mapping: Mapping[str, str]) -> dict[str, str]:
    return dict(sorted(mapping.items())) if len(mapping) > 1 else dict(mapping)


def _dump(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("ascii")


# --- PyPI JSON API ------------------------------------------------------------------------


def choose_release(view: View) -> str | None:
    """The release PyPI's JSON API would have called latest at the cutoff.

    Not fully yanked first, then final before pre-/dev releases, then the highest version.
    """
    releases = _releases(view)
    if not releases:
        return None

    def rank(version: Version) -> tuple[bool, bool, Version]:
        fully_yanked = all(f.yanked is not None for f in releases[version][1])
        return (not fully_yanked, not version.is_prerelease, version)

    return releases[max(releases, key=rank)][0]


def render_json_api(
    view: View, info: Mapping[str, object], link: LinkFn, *, version: str | None
) -> bytes:
    """`/pypi/P/json` (version=None) or `/pypi/P/V/json`, as PyPI would have served it.

    `info` is the metadata of the release shown (the chosen one, or `version`); its
    `version`, `yanked` and `yanked_reason` are set from the view.  `last_serial` is
    omitted: datepin cannot know PyPI's serial at the cutoff.
    """
    releases = _releases(view)
    if version is None:
        chosen = choose_release(view)
        shown = _find_release(releases, chosen) if chosen is not None else None
    else:
        shown = _find_release(releases, version)
        if shown is None:
            raise UnknownRelease(f"{view.name} has no release {version} in this view")
    text, files = shown if shown is not None else (None, ())
    doc: dict[str, object] = {"info": _release_info(info, text, files)}
    if version is None:
        doc["releases"] = {
            release_text: [_api_file(f, link) for f in release_files]
            for _, (release_text, release_files) in sorted(releases.items())
        }
    doc["urls"] = [_api_file(f, link) for f in files]
    doc["vulnerabilities"] = []
    return _dump(doc)


def _release_info(
    info: Mapping[str, object], version: str | None, files: tuple[DistFile, ...]
) -> dict[str, object]:
    result = dict(info)
    yanked = bool(files) and all(f.yanked is not None for f in files)
    reasons = [f.yanked for f in files if f.yanked]
    if version is not None:
        result["version"] = version
    result["yanked"] = yanked
    result["yanked_reason"] = reasons[0] if yanked and reasons else None
    return result


def _api_file(f: DistFile, link: LinkFn) -> dict[str, object]:
    entry: dict[str, object] = {
        "comment_text": "",
        "digests": _sorted(f.hashes),
        "filename": f.filename,
        "has_sig": False,
    }
    if "md5" in f.hashes:
        entry["md5_digest"] = f.hashes["md5"]
    entry |= {
        "packagetype": package_type(f.filename),
        "python_version": python_version(f.filename),
        "requires_python": f.requires_python,
        "size": f.size,
        "upload_time": (
            f.upload_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
            if f.upload_time is not None
            else None
        ),
        "upload_time_iso_8601": f.upload_time_raw,
        "url": link(f),
        "yanked": f.yanked is not None,
        "yanked_reason": f.yanked or None,
    }
    return entry


def _releases(view: View) -> dict[Version, tuple[str, tuple[DistFile, ...]]]:
    """Version -> (its text, its files), for every file whose name gives a version.

    Equal versions spelled differently (1.0 / 1.0.0) are one release, named by the first
    spelling in filename order.
    """
    grouped: dict[Version, tuple[str, tuple[DistFile, ...]]] = {}
    for f in sorted(view.files, key=lambda f: f.filename):
        version = version_of(f.filename)
        if version is None:
            continue
        text, files = grouped.get(version, (str(version), ()))
        grouped[version] = (text, (*files, f))
    return grouped


def release_named(versions: Iterable[str], version: str) -> str | None:
    """The spelling among `versions` of the release `version` names: the same text, else an
    equal version (1.0 for 1.0.0, as PyPI finds it); None if there is no such release."""
    versions = tuple(versions)
    if version in versions:
        return version
    wanted = parse_version(version)
    if wanted is None:
        return None
    return next((v for v in versions if parse_version(v) == wanted), None)


def _find_release(
    releases: Mapping[Version, tuple[str, tuple[DistFile, ...]]], version: str
) -> tuple[str, tuple[DistFile, ...]] | None:
    """The release named `version` (see release_named)."""
    text = release_named((text for text, _ in releases.values()), version)
    return next((release for release in releases.values() if release[0] == text), None)


# --- core metadata -> JSON API info ---------------------------------------------------------

# Single-use core metadata fields and their JSON API `info` keys.  A field missing from the
# metadata is None here; PyPI itself mixes None and "" (older uploads got ""), we always
# use None so a client can test one thing.
_SINGLE_FIELDS = {
    "Name": "name",
    "Version": "version",
    "Summary": "summary",
    "Description-Content-Type": "description_content_type",
    "Author": "author",
    "Author-email": "author_email",
    "Maintainer": "maintainer",
    "Maintainer-email": "maintainer_email",
    "License": "license",
    "License-Expression": "license_expression",
    "Keywords": "keywords",
    "Home-page": "home_page",
    "Download-URL": "download_url",
    "Requires-Python": "requires_python",
}
# Multiple-use fields: a list, or None when absent (classifiers: always a list, as on PyPI).
_LIST_FIELDS = {
    "Requires-Dist": "requires_dist",
    "Provides-Extra": "provides_extra",
    "Dynamic": "dynamic",
}


def info_from_metadata(metadata: bytes | bytearray) -> dict[str, object]:
    """A JSON API `info` dict from a release's core metadata (any Metadata-Version)."""
    message = Parser(policy=policy.compat32).parsestr(metadata.decode("utf-8", "replace"))
    info: dict[str, object] = {key: message.get(field) for field, key in _SINGLE_FIELDS.items()}
    info["description"] = _description(message)
    info["classifiers"] = message.get_all("Classifier") or []
    platforms = message.get_all("Platform")
    info["platform"] = platforms[0] if platforms else None
    for field, key in _LIST_FIELDS.items():
        info[key] = message.get_all(field) or None
    info["project_urls"] = _project_urls(message.get_all("Project-URL") or [])
    return dict(sorted(info.items()))


def _description(message: Message) -> str | None:
    """The body (Metadata-Version >= 2.1), else the folded `Description` header."""
    body = message.get_payload()
    if isinstance(body, str) and body.strip():
        return body
    header = message.get("Description")
    if header is None:
        return None
    # Folded lines carry an indent, and "|" since setuptools 36 (to keep blank lines).
    first, *rest = header.split("\n")
    return "\n".join([first, *(_unfold(line) for line in rest)])


def _unfold(line: str) -> str:
    stripped = line.lstrip(" \t")
    if stripped.startswith("|"):
        return stripped[1:]
    return line[8:] if line.startswith(" " * 8) else stripped


def _project_urls(values: list[str]) -> dict[str, str] | None:
    urls: dict[str, str] = {}
    for value in values:
        label, sep, url = value.partition(",")
        if sep:
            urls[label.strip()] = url.strip()
    return urls or None
