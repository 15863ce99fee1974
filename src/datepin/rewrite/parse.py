"""Parse upstream pages into the model: PEP 691 JSON, PEP 503 HTML, the JSON API's `info`.

Pure: bytes in, frozen values out.  Any page that cannot be read raises PageError, so the
caller can fail closed (502) instead of passing an unfiltered page through.
"""

from __future__ import annotations

import functools
import hashlib
import json
import posixpath
import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from packaging.utils import canonicalize_name

from datepin.model import DistFile, ProjectPage
from datepin.pins import PinError, parse_timestamp
from datepin.rewrite.filenames import is_distribution

# beautifulsoup4 is imported when a page is HTML: 4 MB of resident memory that a proxy of
# registries with JSON pages (PyPI's included) never needs.
if TYPE_CHECKING:
    from bs4 import BeautifulSoup, Tag

__all__ = [
    "PAGE_READER",
    "NotAProjectPage",
    "PageError",
    "check_html_complete",
    "parse_html_page",
    "parse_json_api_info",
    "json_text",
    "parse_json_page",
]

# How pages are read into ProjectPages, counted: raise it when the same bytes would be read
# into another page (a field read that was not, a link read otherwise).  History identifies
# each page it holds with it, and a page read before a change is read again, not taken as
# unchanged (service.page_digest).
PAGE_READER = 1

_HASH_NAMES = frozenset(hashlib.algorithms_guaranteed | hashlib.algorithms_available)
# One string per algorithm name for all files, not a copy per file from the JSON decoder.
_NAME_STRINGS: dict[str, str] = {name: name for name in _HASH_NAMES}
_HEX = re.compile(r"[0-9a-f]+")
# Hex digits of a digest, for the algorithms pip checks (PEP 503's "hashlib names"); others
# (blake2b under another length, say) are passed on as upstream wrote them.
_HEX_LENGTHS: dict[str, int] = {
    name: 2 * hashlib.new(name).digest_size
    for name in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
}


class PageError(ValueError):
    """An upstream page that is not a valid simple-API / JSON-API page."""


class NotAProjectPage(PageError):
    """An HTML page that lists no package and does not say it is a project page: a
    maintenance page, a proxy repository's empty listing, a login form.  Recorded, it would
    be the project having no files at that moment, for every pin (DESIGN.md "Determinism")."""


# --- PEP 691 JSON -------------------------------------------------------------------------


def parse_json_page(body: bytes | str, base_url: str) -> ProjectPage:
    """A PEP 691 project page; relative file URLs are resolved against `base_url`.

    `body` may be the text already decoded (`json_text`), so that a caller can let go of
    the bytes before the files are read."""
    doc, files = _load_project_json(body, base_url)
    meta = doc.get("meta", {})
    if isinstance(meta, dict) and "api-version" in meta:
        _check_api_version(meta["api-version"], "meta.api-version")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise PageError("project page without a name")
    if files is None:
        raise PageError("project page without a files list")
    status, reason = _json_status(doc)
    return ProjectPage(
        name=canonicalize_name(name),
        files=tuple(files),
        status=status,
        status_reason=reason,
    )


_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


def json_text(body: bytes | bytearray) -> str:
    """A JSON document's text, in whichever encoding json.loads would have read it."""
    try:
        return body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise PageError(f"not JSON: {exc}") from None


def _load_project_json(body: bytes | str, base_url: str) -> tuple[dict[str, object], list[DistFile] | None]:
    """The page's top-level object, with `files` read entry by entry into DistFiles.

    json.loads would hold every file's dict at once (a 20,000-file page: about 50 MB, and
    the memory stays with the process); here each entry is decoded and turned into its
    DistFile before the next is read.  Each value is still decoded by the json module, so
    what is accepted is what json.loads accepts (duplicate keys: the last wins)."""
    text = body if isinstance(body, str) else json_text(body)
    doc: dict[str, object] = {}
    files: list[DistFile] | None = None
    try:
        pos = _skip(text, 0)
        if not text.startswith("{", pos):
            json.loads(text)  # the json module's own message for what is not JSON at all
            raise PageError("not a JSON object")
        pos = _skip(text, pos + 1)
        if text.startswith("}", pos):
            pos += 1
        else:
            while True:
                if not text.startswith('"', pos):
                    raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, pos)
                key, pos = _DECODER.raw_decode(text, pos)
                pos = _skip(text, pos)
                if not text.startswith(":", pos):
                    raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
                pos = _skip(text, pos + 1)
                if key == "files" and text.startswith("[", pos):
                    files, pos = _json_files(text, pos, base_url)
                    doc.pop(key, None)
                else:
                    doc[key], pos = _DECODER.raw_decode(text, pos)
                    if key == "files":
                        files = None  # a later non-list `files` replaces an earlier list
                pos = _skip(text, pos)
                if text.startswith("}", pos):
                    pos += 1
                    break
                if not text.startswith(",", pos):
                    raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
                pos = _skip(text, pos + 1)
        if _skip(text, pos) != len(text):
            raise json.JSONDecodeError("Extra data", text, pos)
    except PageError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError
        raise PageError(f"not JSON: {exc}") from None
    return doc, files


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    assert match is not None  # `*` matches the empty string
    return match.end()


def _json_files(text: str, pos: int, base_url: str) -> tuple[list[DistFile], int]:
    """The array at text[pos] ('['), each entry made a DistFile as soon as it is decoded."""
    files: list[DistFile] = []
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        return files, pos + 1
    while True:
        entry, pos = _DECODER.raw_decode(text, pos)
        files.append(_json_file(entry, base_url, len(files)))
        pos = _skip(text, pos)
        if text.startswith("]", pos):
            return files, pos + 1
        if not text.startswith(",", pos):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = _skip(text, pos + 1)


def _json_file(entry: object, base_url: str, index: int) -> DistFile:
    if not isinstance(entry, dict):
        raise PageError(f"files[{index}] is not an object")
    filename = entry.get("filename")
    url = entry.get("url")
    if not isinstance(filename, str) or not filename:
        raise PageError(f"files[{index}] has no filename")
    if not isinstance(url, str) or not url:
        raise PageError(f"{filename}: no url")
    where = filename
    # PEP 714: `core-metadata` replaces `dist-info-metadata`; read the old key only if the
    # new one is absent.
    metadata_key = "core-metadata" if "core-metadata" in entry else "dist-info-metadata"
    upload_raw = _optional(entry, "upload-time", str, where)
    return DistFile(
        filename=filename,
        url=_file_url(base_url, url),
        hashes=_hashes(entry.get("hashes", {}), where),
        requires_python=_optional(entry, "requires-python", str, where),
        core_metadata=_json_core_metadata(entry.get(metadata_key, False), where),
        yanked=_json_yanked(entry.get("yanked", False), where),
        upload_time=_upload_time(upload_raw, where),
        upload_time_raw=upload_raw,
        size=_size(entry.get("size"), where),
    )


# An absolute URL with a host, made of characters urllib neither splits on (`;`, `?`, `#`,
# brackets), strips nor checks: what urljoin and urldefrag give back unchanged.  PyPI lists
# every file so; parsing each took a third of reading its entry.
_SEGMENT_CHARS = r"\w\-.~%!$&'()*+,=@"  # and ':' in a host or a path, '/' in a path
_PLAIN_URL = re.compile(rf"https?://[{_SEGMENT_CHARS}:][{_SEGMENT_CHARS}:/]*\Z", re.ASCII)


# A relative URL of the same characters, with no scheme, host or dot segment at its end: its
# directory resolves as urljoin resolves it whole, and its last segment is appended as it is.
# Registries other than PyPI list files so ("../../packages/..."): each directory is joined
# once, not each file (bench/run's 12-file pages: read in 225 us instead of 340).
_PLAIN_RELATIVE = re.compile(
    rf"(?!//)(?P<dir>[{_SEGMENT_CHARS}/]*/)(?P<last>(?!\.*\Z)[{_SEGMENT_CHARS}]+)\Z", re.ASCII
)


def _file_url(base_url: str, url: str) -> str:
    """`url` resolved against the page's URL, without its fragment."""
    if _PLAIN_URL.match(url):
        return url
    if relative := _PLAIN_RELATIVE.match(url):
        return _joined_dir(base_url, relative["dir"]) + relative["last"]
    return urldefrag(urljoin(base_url, url)).url


@functools.lru_cache(maxsize=256)
def _joined_dir(base_url: str, directory: str) -> str:
    return urljoin(base_url, directory)


def _json_status(doc: Mapping[str, object]) -> tuple[str | None, str | None]:
    """PEP 792 status: the spec's top-level `project-status` object ({status, reason}),
    else the same object, or the first draft's plain strings, in `meta`."""
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise PageError("meta is not an object")
    for holder in (doc, meta):
        value = holder.get("project-status")
        if value is None:
            continue
        if isinstance(value, dict):
            status, reason = value.get("status"), value.get("reason")
        else:
            status, reason = value, holder.get("project-status-reason")
        if not isinstance(status, str) or not isinstance(reason, str | None):
            raise PageError("malformed project-status")
        return status, reason
    return None, None


def _json_yanked(value: object, where: str) -> str | None:
    # PEP 592 / 691: false, true, or a reason string (true means yanked without a reason).
    if value is False:
        return None
    if value is True:
        return ""
    if isinstance(value, str):
        return value
    raise PageError(f"{where}: yanked is {type(value).__name__}, not bool or string")


def _json_core_metadata(value: object, where: str) -> dict[str, str] | None:
    # PEP 658 / 714: false (or absent), true, or a dict of hashes of the .metadata file.
    if value is False or value is None:
        return None
    if value is True:
        return {}
    return _hashes(value, where)


def _hashes(value: object, where: str) -> dict[str, str]:
    if type(value) is dict and len(value) == 1 and (digest := value.get("sha256")) is not None:
        # What nearly every file lists: one sha256, as _digest would give it back.
        sha256_ok = isinstance(digest, str) and len(digest) == _HEX_LENGTHS["sha256"]
        if sha256_ok and _HEX.fullmatch(digest):
            return {"sha256": digest}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise PageError(f"{where}: hashes must map names to strings")
    hashes: dict[str, str] = {}
    for algo, digest in value.items():
        hashes[_NAME_STRINGS.get(algo) or algo] = _digest(algo, digest, where)
    return hashes


def _digest(algo: str, digest: str, where: str) -> str:
    """A hex digest, lowercased.  One that is not hex of its algorithm's length matches no
    bytes, so the file could never be served (files are stored, linked and checked by their
    sha256): the page is refused rather than listing a file nobody can fetch."""
    digest = digest.lower()
    length = _HEX_LENGTHS.get(algo)
    if length is not None and (len(digest) != length or not _HEX.fullmatch(digest)):
        raise PageError(f"{where}: {algo} hash {digest[:80]!r} is not a {algo} digest")
    return digest


def _check_api_version(value: object, what: str) -> None:
    """PEP 629: a client must fail hard on a major version it does not know; this reader
    knows version 1 (PEP 691, 700, 714, 792 are all 1.x)."""
    major = value.partition(".")[0] if isinstance(value, str) else None
    if major != "1":
        raise PageError(f"{what} is {value!r}: datepin reads version 1 of the simple API")


def _size(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PageError(f"{where}: size must be a non-negative integer")
    return value


def _optional[T](entry: Mapping[str, object], key: str, kind: type[T], where: str) -> T | None:
    value = entry.get(key)
    if value is None or isinstance(value, kind):
        return value
    raise PageError(f"{where}: {key} is {type(value).__name__}, not {kind.__name__}")


def _upload_time(raw: str | None, where: str) -> datetime | None:
    if raw is None:
        return None
    try:
        # Rounded down: see pins.parse_timestamp.  No zone = UTC, as PyPI means it.
        return parse_timestamp(raw, assume_utc=True, round_up=False)
    except PinError as exc:
        raise PageError(f"{where}: bad upload-time: {exc}") from None


def _load_json_object(body: bytes | bytearray) -> dict[str, object]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8
        raise PageError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PageError("not a JSON object")
    return doc


# --- PEP 503 HTML -------------------------------------------------------------------------


def parse_html_page(
    body: bytes | bytearray, base_url: str, name: str, content_type: str = ""
) -> ProjectPage:
    """A PEP 503 project page (with PEP 592/629/658/700/714/792 attributes), decoded in the
    charset its `content_type` names, else UTF-8 (as pip and uv read it)."""
    from bs4 import Tag

    soup = _soup(body, _charset(content_type))
    if (version := _meta_content(soup, "pypi:repository-version")) is not None:
        _check_api_version(version.strip(), "pypi:repository-version")
    base_tag = soup.find("base", href=True)
    if isinstance(base_tag, Tag):
        base_url = _join(base_url, _attr(base_tag, "href") or "")
    # Only links to distributions are files: pip and uv skip the rest (a "status" link on a
    # maintenance page, a directory listing's README or .metadata files).
    project = canonicalize_name(name)
    files = tuple(
        _html_file(anchor, url, filename)
        for anchor in soup.find_all("a")
        if isinstance(anchor, Tag)
        and (href := _attr(anchor, "href")) is not None
        and not _is_directory(url := _join(base_url, href))
        and is_distribution(filename := _filename(anchor, url), project)
    )
    if not files and not _says_it_is_a_project_page(soup):
        raise NotAProjectPage(
            "it lists no package, and has neither a 'Links for' title or heading nor a pypi:"
            " meta tag (down for maintenance, or a proxy repository whose own upstream is"
            " blocked?)"
        )
    return ProjectPage(
        name=project,
        files=files,
        status=_meta_content(soup, "pypi:project-status"),
        status_reason=_meta_content(soup, "pypi:project-status-reason"),
    )


_END_TAGS = (b"</html", b"</body")


def check_html_complete(body: bytes | bytearray) -> None:
    """Raise PageError unless a whole HTML document arrived.

    JSON that is cut short does not parse, but HTML does: the first half of a page is a valid
    page with fewer links, and recording it would mark the other files deleted upstream.  A
    page whose bytes end early with a matching Content-Length (a broken upstream cache, a
    proxy that gave up) is caught only by its missing end tag.  PEP 503 allows omitting it;
    every index seen in practice (warehouse, devpi, pypiserver, Artifactory, GitLab, the
    PyTorch index) writes it, so a page without one is refused rather than half-recorded.
    """
    tail = body[-4096:].lower()
    if not any(tag in tail for tag in _END_TAGS):
        raise PageError("HTML page has no </body> or </html>: cut short upstream?")


def _says_it_is_a_project_page(soup: BeautifulSoup) -> bool:
    """A page with no file is a project's only if it says so: by a PEP 629 or PEP 792 meta
    tag, or by the title or heading PEP 503's example and every index writes ("Links for
    <name>": warehouse, pypiserver, GitLab, PyTorch's; devpi's "<index>: links for <name>")."""
    from bs4 import Tag

    if any(_meta_content(soup, name) is not None
           for name in ("pypi:repository-version", "pypi:project-status")):
        return True
    return any(
        "links for" in " ".join(tag.get_text().split()).lower()
        for tag in soup.find_all(("title", "h1"))
        if isinstance(tag, Tag)
    )


def _filename(anchor: Tag, joined: str) -> str:
    """The name of the file a link (`joined` to the page's base URL) points at."""
    # The URL's, as pip and uv read it: PEP 503 says the text must match it, but web
    # servers' directory listings cut long names short in the text ("...m..>", nginx).
    return _last_segment(urldefrag(joined).url) or anchor.get_text().strip()


def _html_file(anchor: Tag, joined: str, filename: str) -> DistFile:
    """The file `anchor` links to, `joined` to the page's base URL."""
    url, fragment = urldefrag(joined)
    metadata = _attr(anchor, "data-core-metadata")
    if metadata is None:
        metadata = _attr(anchor, "data-dist-info-metadata")
    upload_raw = _attr(anchor, "data-upload-time")
    return DistFile(
        filename=filename,
        url=url,
        hashes=_fragment_hash(fragment, filename),
        requires_python=_attr(anchor, "data-requires-python"),  # bs4 unescapes &gt; etc.
        core_metadata=_html_core_metadata(metadata),
        yanked=_attr(anchor, "data-yanked"),  # "" when present without a reason
        upload_time=_upload_time(upload_raw, filename),
        upload_time_raw=upload_raw,
    )


def _fragment_hash(fragment: str, where: str) -> dict[str, str]:
    algo, sep, digest = fragment.partition("=")
    if sep and algo in _HASH_NAMES and digest:
        return {algo: _digest(algo, digest, where)}
    return {}


def _html_core_metadata(value: str | None) -> dict[str, str] | None:
    # PEP 714: "true", or "<hashname>=<hex>".  Anything else advertises nothing we can trust.
    if value is None:
        return None
    if value.strip().lower() == "true":
        return {}
    try:
        hashes = _fragment_hash(value.strip(), "data-core-metadata")
    except PageError:
        return None
    return hashes or None


def _meta_content(soup: BeautifulSoup, name: str) -> str | None:
    from bs4 import Tag

    tag = soup.find("meta", attrs={"name": name})
    return _attr(tag, "content") if isinstance(tag, Tag) else None


def _attr(tag: Tag, name: str) -> str | None:
    value = tag.get(name)
    if isinstance(value, list):  # bs4 splits multi-valued attributes (class, rel...)
        return " ".join(value)
    return value


def _join(base_url: str, href: str) -> str:
    """`href` resolved against `base_url`; PageError for a link urllib cannot read (a host
    that changes under NFKC normalisation, an unclosed IPv6 address)."""
    try:
        return urljoin(base_url, href)
    except ValueError as e:
        raise PageError(f"link {href!r}: {e}") from None


def _last_segment(url: str) -> str:
    return unquote(posixpath.basename(urlsplit(url).path))


def _is_directory(url: str) -> bool:
    """A link to a directory (a listing's "../", "sub/"): never a distribution file."""
    path = urlsplit(url).path
    return path.endswith("/") or posixpath.basename(path) in (".", "..")


def _charset(content_type: str) -> str:
    """The `charset` parameter of a Content-Type, else UTF-8 (pip's and uv's default)."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"'):
            return value.strip().strip('"')
    return "utf-8"


def _soup(body: bytes | bytearray, charset: str = "utf-8") -> BeautifulSoup:
    from bs4 import BeautifulSoup
    from bs4.exceptions import ParserRejectedMarkup

    try:
        text = body.decode(charset)
    except LookupError:
        raise PageError(f"HTML page in an unknown charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        raise PageError(f"HTML page is not {charset}: {exc}") from None
    try:
        return BeautifulSoup(text, "html.parser")
    except (ParserRejectedMarkup, AssertionError) as exc:
        raise PageError(f"unparseable HTML: {exc}") from None


# --- PyPI JSON API ------------------------------------------------------------------------


def parse_json_api_info(body: bytes | bytearray) -> dict[str, object]:
    """The `info` object of `/pypi/P/json` or `/pypi/P/V/json`."""
    info = _load_json_object(body).get("info")
    if not isinstance(info, dict):
        raise PageError("JSON API response without an info object")
    if not isinstance(info.get("name"), str) or not isinstance(info.get("version"), str):
        raise PageError("JSON API info without name and version")
    return info
