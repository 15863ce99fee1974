"""A fake upstream PyPI for tests: a real HTTP/1.1 server on 127.0.0.1, port 0.

    with FakePyPI() as fake:                       # or the `fake_pypi` fixture
        fake.add_wheel("alpha", "1.0", upload_time="2023-11-17T10:00:00Z",
                       requires_dist=["beta>=1"])
        fake.add_wheel("beta", "1.0", upload_time="2023-01-01T00:00:00Z")
        fake.yank("beta-1.0-py3-none-any.whl", "broken")
        fake.fault("/files/", "cut", times=1)      # the next file download dies half-way
        ...                                        # point a client or datepin at fake.simple_url
        assert not fake.requests_for("/simple/")   # e.g. a cache hit made no upstream call

It serves what datepin reads upstream, shaped like warehouse (PyPI) serves it:

- `/simple/` and `/simple/<project>/`: PEP 503 HTML or PEP 691 JSON by `Accept` (PEP 700
  upload-time/size/versions, PEP 714 core-metadata, PEP 592 yanks, PEP 792 project status),
  ETag, and 304 to an If-None-Match naming it;
- `/pypi/<project>/json` and `/pypi/<project>/<version>/json`: the JSON API;
- `/files/packages/<b2>/<b2>/<rest>/<filename>` (and `<filename>.metadata`): the bytes, with
  HEAD, single ranges, ETag.

The distributions it builds are real: `add_wheel` makes an installable wheel with byte-for-byte
reproducible content, so a test can predict hashes.  State can be changed between requests from
the test thread; one lock guards it.  Switches (`serve_json`, `relative_links`, ...) are plain
attributes read once per request.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import io
import json
import logging
import os
import random
import re
import socket
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from packaging.requirements import Requirement
from packaging.tags import parse_tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

log = logging.getLogger(__name__)

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_V1_TYPE = "application/vnd.pypi.simple.v1+html"
HTML_TYPE = "text/html"
# On equal q-values PyPI prefers plain HTML (PROTOCOL.md, "Content negotiation").
_PREFERENCE = (HTML_TYPE, HTML_V1_TYPE, JSON_TYPE)
_CONTENT_TYPES = {
    HTML_TYPE: "text/html; charset=utf-8",
    HTML_V1_TYPE: HTML_V1_TYPE,
    JSON_TYPE: JSON_TYPE,
}
API_VERSION = "1.1"
API_VERSION_STATUS = "1.4"  # PEP 792 project status needs repository version 1.4

_CHUNK = 64 * 1024
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
TRICKLE_PIECES = 10  # a "trickle" fault sends the body in this many pieces
_FLIP = bytes(i ^ 0x01 for i in range(256))  # wrong_bytes: same length, every byte differs
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")

FaultKind = Literal[
    "status", "stall", "stall_body", "cut", "wrong_bytes", "truncate_page", "malformed", "trickle"
]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "status", "stall", "stall_body", "cut", "wrong_bytes", "truncate_page", "malformed", "trickle"
)


# ---------------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------------


def parse_time(value: datetime | str) -> datetime:
    """An aware datetime or an ISO 8601 string with an offset (`...Z` is fine) -> UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        raise ValueError(f"upload_time must carry a timezone (e.g. 'Z'): {value!r}")
    return value.astimezone(UTC)


def format_upload_time(value: datetime) -> str:
    """PEP 700 `upload-time` as warehouse writes it: `2023-11-18T07:08:33.123456Z`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------
# Building distributions (pure: values in, bytes out)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuiltDist:
    filename: str
    content: bytes
    metadata: bytes  # the core metadata inside (METADATA / PKG-INFO)


def dist_name(project: str) -> str:
    """The name as it appears in wheel and sdist filenames and as the import name."""
    return canonicalize_name(project).replace("-", "_")


def core_metadata(
    name: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    requires_python: str | None = None,
    summary: str | None = None,
) -> bytes:
    """Core metadata 2.1 (the METADATA file of a wheel, PKG-INFO of an sdist)."""
    requires = [str(Requirement(r)) for r in requires_dist]
    extras = sorted({m for r in requires for m in _EXTRA_MARKER.findall(r)})
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {summary if summary is not None else f'{name}, a fakepypi test package'}",
    ]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Provides-Extra: {e}" for e in extras]
    lines += [f"Requires-Dist: {r}" for r in requires]
    return ("\n".join(lines) + "\n\n").encode()


def wheel_filename(project: str, version: str, tag: str = "py3-none-any") -> str:
    return f"{dist_name(project)}-{Version(version)}-{tag}.whl"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def _zip_info(name: str, compress_type: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.create_system = 3  # unix, so the mode bits below are read the same everywhere
    info.external_attr = 0o644 << 16
    info.compress_type = compress_type
    return info


def _padding(seed: str, size: int) -> Iterator[bytes]:
    """Deterministic incompressible bytes (seeded by a string, so PYTHONHASHSEED is moot)."""
    rng = random.Random(seed)
    while size > 0:
        n = min(size, 1 << 20)
        yield rng.randbytes(n)
        size -= n


def _write_wheel(
    out: BinaryIO,
    project: str,
    version: str,
    *,
    requires_dist: Iterable[str],
    requires_python: str | None,
    tag: str,
    payload_size: int,
    init_py: str | None = None,
) -> tuple[str, bytes]:
    """Write a wheel to `out` (streaming the padding); return (filename, METADATA)."""
    filename = wheel_filename(project, version, tag)
    module = dist_name(project)
    norm_version = str(Version(version))
    dist_info = f"{module}-{norm_version}.dist-info"
    metadata = core_metadata(
        project, norm_version, requires_dist=requires_dist, requires_python=requires_python
    )
    tags = sorted(parse_tag(tag), key=str)
    purelib = all(t.abi == "none" and t.platform == "any" for t in tags)
    wheel_text = (
        "Wheel-Version: 1.0\nGenerator: fakepypi\n"
        f"Root-Is-Purelib: {'true' if purelib else 'false'}\n"
        + "".join(f"Tag: {t}\n" for t in tags)
    ).encode()
    records: list[str] = []
    with zipfile.ZipFile(out, "w") as zf:

        def add(name: str, data: bytes) -> None:
            zf.writestr(_zip_info(name, zipfile.ZIP_DEFLATED), data)
            records.append(f"{name},{_record_hash(data)},{len(data)}")

        if init_py is None:
            init_py = f'__version__ = "{norm_version}"\n'
        add(f"{module}/__init__.py", init_py.encode())
        if payload_size:
            name = f"{module}/_payload.bin"
            info = _zip_info(name, zipfile.ZIP_STORED)
            info.file_size = payload_size  # lets zipfile decide on zip64 up front
            digest = hashlib.sha256()
            with zf.open(info, "w", force_zip64=payload_size >= zipfile.ZIP64_LIMIT) as f:
                for chunk in _padding(filename, payload_size):
                    f.write(chunk)
                    digest.update(chunk)
            b64 = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
            records.append(f"{name},sha256={b64},{payload_size}")
        add(f"{dist_info}/METADATA", metadata)
        add(f"{dist_info}/WHEEL", wheel_text)
        records.append(f"{dist_info}/RECORD,,")
        zf.writestr(
            _zip_info(f"{dist_info}/RECORD", zipfile.ZIP_DEFLATED),
            "".join(r + "\n" for r in records),
        )
    return filename, metadata


def build_wheel(
    project: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    requires_python: str | None = None,
    tag: str = "py3-none-any",
    payload_size: int = 0,
    init_py: str | None = None,
) -> BuiltDist:
    """An installable wheel in memory; the same arguments always give the same bytes.
    `init_py`: the module's `__init__.py` (default: its `__version__` alone)."""
    buf = io.BytesIO()
    filename, metadata = _write_wheel(
        buf,
        project,
        version,
        requires_dist=requires_dist,
        requires_python=requires_python,
        tag=tag,
        payload_size=payload_size,
        init_py=init_py,
    )
    return BuiltDist(filename, buf.getvalue(), metadata)


def write_wheel(
    directory: str | os.PathLike[str],
    project: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    requires_python: str | None = None,
    tag: str = "py3-none-any",
    payload_size: int = 0,
) -> Path:
    """Like `build_wheel`, but streamed to a file in `directory` (for multi-GB benchmarks)."""
    path = Path(directory) / wheel_filename(project, version, tag)
    with path.open("wb") as out:
        _write_wheel(
            out,
            project,
            version,
            requires_dist=requires_dist,
            requires_python=requires_python,
            tag=tag,
            payload_size=payload_size,
        )
    return path


def wheel_metadata(wheel: bytes | str | os.PathLike[str]) -> bytes:
    """The `*.dist-info/METADATA` of a wheel (bytes or a path; read by seeking, not whole)."""
    source: BinaryIO | str | os.PathLike[str] = (
        io.BytesIO(wheel) if isinstance(wheel, bytes) else wheel
    )
    with zipfile.ZipFile(source) as zf:
        for name in zf.namelist():
            top, _, rest = name.partition("/")
            if top.endswith(".dist-info") and rest == "METADATA":
                return zf.read(name)
    raise ValueError("wheel has no *.dist-info/METADATA")


def build_sdist(
    project: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    requires_python: str | None = None,
    build_requires: Iterable[str] = ("setuptools>=61",),
    build_backend: str = "setuptools.build_meta",
    project_table: bool = True,
) -> BuiltDist:
    """A reproducible `.tar.gz` with PKG-INFO, pyproject.toml and the module.  Its
    `[build-system]` names `build_requires` and `build_backend` (setuptools by default).
    Without `project_table` its pyproject.toml has no `[project]`, as in the setup.py sdists
    of old: with no `requires_dist` either, nothing in it says it has no dependencies, and a
    locker learns that only by building its metadata."""
    requires_dist = list(requires_dist)
    norm_version = str(Version(version))
    module = dist_name(project)
    base = f"{module}-{norm_version}"
    metadata = core_metadata(
        project, norm_version, requires_dist=requires_dist, requires_python=requires_python
    )
    project_lines = [f"name = {json.dumps(project)}", f"version = {json.dumps(norm_version)}"]
    if requires_python:
        project_lines.append(f"requires-python = {json.dumps(requires_python)}")
    project_lines.append(f"dependencies = {json.dumps(requires_dist)}")
    pyproject = (
        f"[build-system]\nrequires = {json.dumps(list(build_requires))}\n"
        f"build-backend = {json.dumps(build_backend)}\n"
        + ("\n[project]\n" + "".join(line + "\n" for line in project_lines) if project_table else "")
    ).encode()
    members = {
        f"{base}/PKG-INFO": metadata,
        f"{base}/pyproject.toml": pyproject,
        f"{base}/{module}/__init__.py": f'__version__ = "{norm_version}"\n'.encode(),
    }
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    return BuiltDist(f"{base}.tar.gz", buf.getvalue(), metadata)


# A PEP 517 build backend in one module (the source of a wheel's `__init__.py`), needing nothing
# but the standard library: it builds an sdist made by build_sdist (PKG-INFO, pyproject.toml,
# one package) into a pure-Python wheel, with PKG-INFO as its METADATA.  An sdist that names it
# (build_backend="<its project>") builds with no setuptools and no network.
TINY_BACKEND = r'''
import base64
import hashlib
import os
import re
import zipfile
from email.parser import Parser

WHEEL = "Wheel-Version: 1.0\nGenerator: tinybackend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _dist_info():
    with open("PKG-INFO", encoding="utf-8") as f:
        metadata = f.read()
    headers = Parser().parsestr(metadata)
    module = re.sub(r"[-_.]+", "_", headers["Name"]).lower()
    return module, f"{module}-{headers['Version']}", metadata


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _, base, metadata = _dist_info()
    target = os.path.join(metadata_directory, base + ".dist-info")
    os.makedirs(target, exist_ok=True)
    for name, text in (("METADATA", metadata), ("WHEEL", WHEEL)):
        with open(os.path.join(target, name), "w", encoding="utf-8") as f:
            f.write(text)
    return base + ".dist-info"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    module, base, metadata = _dist_info()
    members = {}
    for root, _, files in os.walk(module):
        for name in sorted(files):
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                members[path.replace(os.sep, "/")] = f.read()
    members[base + ".dist-info/METADATA"] = metadata.encode()
    members[base + ".dist-info/WHEEL"] = WHEEL.encode()
    record = []
    for name, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}\n")
    record.append(base + ".dist-info/RECORD,,\n")
    members[base + ".dist-info/RECORD"] = "".join(record).encode()
    filename = base + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return filename
'''


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FakeFile:
    """One uploaded file; immutable.  Yank and deletion state live in the FakePyPI."""

    project: NormalizedName
    version: str
    filename: str
    url: str  # absolute: http://127.0.0.1:PORT/files/packages/../filename
    path: str  # the URL path: /files/packages/../filename
    sha256: str
    md5: str
    blake2b_256: str
    size: int
    upload_time: datetime
    requires_python: str | None
    packagetype: str  # bdist_wheel | sdist | ...
    python_version: str  # the wheel's python tag, or "source"
    metadata: bytes | None = field(repr=False)  # served as <url>.metadata (PEP 658)
    content: bytes | None = field(repr=False)  # None: the bytes are streamed from `source`
    source: Path | None = None

    @property
    def upload_time_str(self) -> str:
        return format_upload_time(self.upload_time)

    @property
    def metadata_sha256(self) -> str | None:
        return None if self.metadata is None else hashlib.sha256(self.metadata).hexdigest()

    @property
    def metadata_url(self) -> str | None:
        return None if self.metadata is None else self.url + ".metadata"

    @property
    def origin(self) -> bytes | Path:
        """Where the bytes are: in memory, or the file they are streamed from."""
        if self.content is not None:
            return self.content
        assert self.source is not None
        return self.source

    def read(self) -> bytes:
        """The whole content (reads `source` for disk-backed files)."""
        origin = self.origin
        return origin if isinstance(origin, bytes) else origin.read_bytes()


@dataclass(slots=True)
class _Entry:
    file: FakeFile
    yanked: str | None = None  # None: not yanked; "": yanked without a reason
    deleted: bool = False


@dataclass(slots=True)
class _Project:
    name: NormalizedName
    display_name: str
    files: dict[str, _Entry] = field(default_factory=dict)
    status: str | None = None
    status_reason: str | None = None
    last_serial: int = 0

    def live(self) -> list[_Entry]:
        entries = [e for e in self.files.values() if not e.deleted]
        return sorted(entries, key=lambda e: (Version(e.file.version), e.file.filename))


@dataclass(slots=True)
class Fault:
    """Misbehave on the next `remaining` requests whose path matches (None: until cleared).

    status       answer `status` (default 503) with `headers` (and `body`, when given),
                 whatever was asked
    stall        wait `seconds` (or until the server stops) before answering normally
    stall_body   send headers and half the body, wait, then send the rest
    cut          send headers with the full Content-Length, half the body, then close
    wrong_bytes  the same length, every byte different
    truncate_page  the first half of the body, with a Content-Length that matches it
    malformed    an invalid body for its Content-Type (JSON that does not parse, HTML with
                 an unterminated tag and invalid UTF-8, a file that is not a distribution)
    trickle      send headers, then the body in TRICKLE_PIECES pieces `seconds` apart: each
                 read comes within a read timeout, the whole body does not
    """

    match: str | re.Pattern[str]
    kind: FaultKind
    remaining: int | None = 1
    status: int = 503
    seconds: float = 30.0
    method: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    hits: int = 0
    body: bytes | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        if isinstance(self.match, str):
            return path.startswith(self.match)
        return self.match.search(path) is not None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    method: str
    path: str  # without the query string
    query: str
    headers: Mapping[str, str]  # lower-cased names
    time: float  # time.time() when the request arrived
    status: int  # what the fake answered (before a fault mangled the body)
    fault: FaultKind | None


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FileSlice:
    path: Path
    offset: int
    length: int


@dataclass(slots=True)
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | _FileSlice = b""

    @property
    def length(self) -> int:
        return self.body.length if isinstance(self.body, _FileSlice) else len(self.body)

    def content_type(self) -> str:
        return next((v for k, v in self.headers if k.lower() == "content-type"), "")


def _text(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> _Reply:
    return _Reply(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), *headers],
        f"{status} {message}\n".encode(),
    )


LOGIN_PATH = "/login"
# A sign-in form: HTML that answers 200 and has a link, but no package file among its links.
_LOGIN_PAGE = b"""<!DOCTYPE html>
<html><head><title>Sign in</title></head><body>
<form method="post" action="/login"><input name="user"><input name="password" type="password">
<button>Sign in</button></form>
<a href="/login/reset">Forgot your password?</a>
</body></html>
"""


def _json_reply(status: int, doc: object, content_type: str = "application/json") -> _Reply:
    return _Reply(status, [("Content-Type", content_type)], json.dumps(doc).encode())


def _not_found_json() -> _Reply:
    return _json_reply(404, {"message": "Not Found"})


def negotiate(accept: str | None, offers: Iterable[str]) -> str:
    """Pick a simple-API content type as PyPI does (PEP 691): q-values, ties -> HTML."""
    offers = [o for o in _PREFERENCE if o in set(offers)]
    if not accept:
        return HTML_TYPE
    ranges: list[tuple[str, float]] = []
    for part in accept.split(","):
        media, *params = part.split(";")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((media.strip().lower(), q))
    best, best_q = HTML_TYPE, 0.0
    for offer in offers:
        q = _quality(offer, ranges)
        if q > best_q:
            best, best_q = offer, q
    return best


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    major = offer.partition("/")[0]
    specificity, quality = -1, 0.0
    for media, q in ranges:
        spec = {offer: 2, f"{major}/*": 1, "*/*": 0}.get(media, -1)
        if spec < 0:
            continue
        if spec > specificity or (spec == specificity and q > quality):
            specificity, quality = spec, q
    return quality


def _parse_range(header: str, size: int) -> tuple[int, int] | None | Literal["unsatisfiable"]:
    """A single `bytes=` range -> (start, end inclusive); None: ignore the header (RFC 9110)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":  # suffix range: the last n bytes
            n = int(last)
            if n <= 0 or size == 0:
                return "unsatisfiable"
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return "unsatisfiable"
    if start < 0 or end < start:
        return None
    return start, min(end, size - 1)


def _http_date(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC), usegmt=True)


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, port: int, fake: FakePyPI) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def close_connections(self) -> None:
        """Drop keep-alive connections too, so a stopped server really refuses to answer."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hanging up mid-response (timeouts, cut faults) are expected; the rest is not.
        expected = isinstance(sys.exc_info()[1], OSError)
        level = logging.DEBUG if expected else logging.WARNING
        log.log(level, "fakepypi: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections are closed after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the client went away; nothing left to flush to

    def log_message(self, format: str, *args: object) -> None:
        log.debug("fakepypi: " + format, *args)

    def _handle(self) -> None:
        if length := int(self.headers.get("Content-Length") or 0):
            self.rfile.read(length)
        url = urlsplit(self.path)
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        fake = self.server.fake
        fault = fake._take_fault(self.command, url.path)
        if fault is not None and fault.kind == "status" and fault.body is not None:
            reply = _Reply(fault.status, list(fault.headers.items()), fault.body)
        elif fault is not None and fault.kind == "status":
            reply = _text(fault.status, "fault injected", fault.headers.items())
        else:
            try:
                # A fault that mangles the body is given one to mangle: no 304.
                whole = fault is not None and fault.kind != "stall"
                reply = fake._respond(
                    self.command, unquote(url.path), url.query, headers, conditional=not whole
                )
            except Exception as exc:  # a bug in the fake: say so loudly, to log and client
                log.exception("fakepypi: error answering %s %s", self.command, self.path)
                reply = _text(500, f"fakepypi bug: {exc!r}")
        fake._record(
            RequestRecord(
                self.command, url.path, url.query, headers, time.time(), reply.status,
                fault.kind if fault else None,
            )
        )
        try:
            self._send(reply, fault)
        except OSError:  # the client hung up or timed out, or stop() dropped the connection
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _handle

    def _send(self, reply: _Reply, fault: Fault | None) -> None:
        stopping = self.server.stopping
        kind, seconds = (fault.kind, fault.seconds) if fault is not None else (None, 0.0)
        if kind == "stall" and stopping.wait(seconds):
            self.close_connection = True
            return
        body = reply.body
        if kind == "truncate_page":
            body = _truncate(body)
        elif kind == "malformed":
            body = _malformed(reply.content_type())
        length = body.length if isinstance(body, _FileSlice) else len(body)
        self.send_response(reply.status)
        for key, value in reply.headers:
            self.send_header(key, value)
        if (cookie := self.server.fake.set_cookie) is not None:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD" or reply.status in (204, 304):
            return
        if isinstance(body, _FileSlice) and kind in (None, "stall"):
            with body.path.open("rb") as f:  # zero-copy, so benchmarks measure the proxy
                self.connection.sendfile(f, body.offset, body.length)
            return
        chunks = _chunks(body)
        if kind == "wrong_bytes":
            chunks = (c.translate(_FLIP) for c in chunks)
        if kind == "trickle":
            data = b"".join(chunks)
            step = -(-len(data) // TRICKLE_PIECES)
            for start in range(0, len(data), step):
                if start and stopping.wait(seconds):
                    self.close_connection = True
                    return
                self.wfile.write(data[start : start + step])
                self.wfile.flush()
            return
        if kind in ("cut", "stall_body"):
            self._write(_limit(chunks, length // 2))
            self.wfile.flush()
            if kind == "cut" or stopping.wait(seconds):
                self.close_connection = True
                return
            chunks = _skip(_chunks(body), length // 2)
        self._write(chunks)

    def _write(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.wfile.write(chunk)


def _chunks(body: bytes | _FileSlice) -> Iterator[bytes]:
    if isinstance(body, bytes):
        for i in range(0, len(body), _CHUNK):
            yield body[i : i + _CHUNK]
        return
    with body.path.open("rb") as f:
        f.seek(body.offset)
        remaining = body.length
        while remaining > 0:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                raise OSError(f"{body.path} shrank while being served")
            remaining -= len(chunk)
            yield chunk


def _limit(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    for chunk in chunks:
        if limit <= 0:
            return
        yield chunk[:limit]
        limit -= len(chunk)


def _skip(chunks: Iterable[bytes], count: int) -> Iterator[bytes]:
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0


def _truncate(body: bytes | _FileSlice) -> bytes | _FileSlice:
    if isinstance(body, _FileSlice):
        return _FileSlice(body.path, body.offset, body.length // 2)
    return body[: len(body) // 2]


def _malformed(content_type: str) -> bytes:
    if "json" in content_type:
        return b'{"meta": {"api-version": "1.1"}, "files": [{"filename": "'
    if "html" in content_type:
        return b'<!DOCTYPE html>\n<html><body><h1>Links for</h1>\n<a href="\xff\xfe\xfd'
    return b"this is not a distribution\n"


class FakePyPI:
    """A fake upstream PyPI on http://127.0.0.1:PORT.  Bound on construction; serves after
    `start()` (or `with FakePyPI() as fake:`).  `stop()` then `start()` reuses the port."""

    def __init__(self) -> None:
        # Switches: plain attributes, set them from the test at any time.
        self.serve_json = True  # False: simple pages are always HTML
        self.html_upload_time = False  # PyPI's HTML has no data-upload-time
        self.html_core_metadata = True  # False: like the PyPI reached from this machine
        self.relative_links = False  # file URLs on simple pages relative to the page
        self.per_version_json = True  # False: /pypi/P/V/json is 404, as PyPI is from here
        self.keep_serving_deleted_files = False
        self.gzip_pages = False  # gzip simple/JSON pages when the client accepts it
        # 304 to an If-None-Match that names a simple page's ETag, as PyPI answers; False:
        # the whole page every time, as a registry that ignores conditions does.
        self.conditional_pages = True
        self.require_basic: tuple[str, str] | None = None
        self.require_bearer: str | None = None
        self.set_cookie: str | None = None  # a Set-Cookie on every answer, as session-keeping registries send
        # Expiring signed file URLs (S3 presigned, as private registries on object storage
        # link them): every page lists each file with a new `?X-Amz-...&X-Amz-Signature=`
        # query, and a file is served only under a signature that has not expired
        # (`expire_signatures`); others get S3's 403.  PEP 658 files cannot be signed this
        # way (the `.metadata` suffix would land in the query), so none are listed.
        self.signed_links = False
        self.html_hash = "sha256"  # the one hash of HTML links: "md5" (pypiserver), "" (none)

        self._lock = threading.RLock()
        self._projects: dict[NormalizedName, _Project] = {}
        self._by_filename: dict[str, _Entry] = {}
        self._by_path: dict[str, _Entry] = {}  # every file ever added, by URL path
        self._faults: list[Fault] = []
        self._log: list[RequestRecord] = []
        self._serial = 0
        self._signatures: set[str] = set()

        self._server: _Server | None = _Server(0, self)
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakePyPI:
        if self._thread is not None:
            return self
        if self._server is None:
            self._server = _Server(self.port, self)
        server = self._server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"fakepypi:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, drop open connections and release stalled requests."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.stopping.set()
        if thread is not None:
            server.shutdown()
            thread.join(timeout=10)
        server.server_close()
        server.close_connections()
        self._server = self._thread = None

    close = stop

    @property
    def running(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> FakePyPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple/"

    @property
    def json_url(self) -> str:
        return f"{self.url}/pypi/"

    @property
    def files_url(self) -> str:
        return f"{self.url}/files/"

    def project_url(self, project: str) -> str:
        return f"{self.simple_url}{canonicalize_name(project)}/"

    @property
    def login_url(self) -> str:
        """A sign-in form, served to anyone (credentials or not), as a single sign-on front
        (oauth2-proxy, Cloudflare Access, IAP) serves its login page."""
        return f"{self.url}{LOGIN_PATH}"

    def send_to_login(self, match: str, login_url: str | None = None) -> Fault:
        """Answer requests whose path starts with `match` with a 302 to a login page (this
        fake's own, or `login_url` on another host) until `clear_faults`, as a single sign-on
        front does when a session or token has expired."""
        target = login_url or self.login_url
        return self.fault(match, "status", status=302, times=None,
                          headers={"Location": f"{target}?next={quote(match)}"})

    def answer_with(self, match: str, body: bytes, content_type: str = "text/html") -> Fault:
        """Answer requests whose path starts with `match` with 200 and `body` until
        `clear_faults`: a page that is not the one asked for (a maintenance page, a proxy
        repository's empty listing)."""
        return self.fault(match, "status", status=200, times=None, body=body,
                          headers={"Content-Type": content_type})

    # -- uploads ----------------------------------------------------------------------------

    def add_wheel(
        self,
        project: str,
        version: str,
        *,
        upload_time: datetime | str,
        requires_dist: Iterable[str] = (),
        requires_python: str | None = None,
        tag: str = "py3-none-any",
        metadata_file: bool = True,
        payload_size: int = 0,
        init_py: str | None = None,
    ) -> FakeFile:
        built = build_wheel(
            project, version, requires_dist=requires_dist, requires_python=requires_python,
            tag=tag, payload_size=payload_size, init_py=init_py,
        )
        return self.add_file(
            project, built.filename, built.content, upload_time=upload_time,
            version=version, requires_python=requires_python,
            metadata=built.metadata if metadata_file else None,
        )

    def add_sdist(
        self,
        project: str,
        version: str,
        *,
        upload_time: datetime | str,
        requires_dist: Iterable[str] = (),
        requires_python: str | None = None,
        metadata_file: bool = False,  # PyPI serves .metadata for wheels only
        build_requires: Iterable[str] = ("setuptools>=61",),
        build_backend: str = "setuptools.build_meta",
        project_table: bool = True,
    ) -> FakeFile:
        built = build_sdist(
            project, version, requires_dist=requires_dist, requires_python=requires_python,
            build_requires=build_requires, build_backend=build_backend, project_table=project_table,
        )
        return self.add_file(
            project, built.filename, built.content, upload_time=upload_time,
            version=version, requires_python=requires_python,
            metadata=built.metadata if metadata_file else None,
        )

    def add_file(
        self,
        project: str,
        filename: str,
        content: bytes | str | os.PathLike[str],
        *,
        upload_time: datetime | str,
        version: str | None = None,
        requires_python: str | None = None,
        metadata: bytes | None = None,
        packagetype: str | None = None,
        python_version: str | None = None,
    ) -> FakeFile:
        """Upload any file.  `content` is bytes, or a path streamed from disk on each request
        (for big files: never read into memory).  The version and package type come from
        the filename when it is a wheel or an sdist."""
        name = canonicalize_name(project)
        guessed_version, guessed_type, guessed_python = _describe(filename)
        version = version if version is not None else guessed_version
        if version is None:
            raise ValueError(f"pass version=...: cannot read one from {filename!r}")
        Version(version)  # the pages sort by it: reject what packaging cannot parse now
        data: bytes | None = None
        if isinstance(content, bytes):
            data, source, digests, size = content, None, _digests([content]), len(content)
        else:
            source = Path(content).resolve()
            with source.open("rb") as f:
                digests = _digests(iter(lambda: f.read(1 << 20), b""))
            size = source.stat().st_size
        b2 = digests["blake2b_256"]
        path = f"/files/packages/{b2[:2]}/{b2[2:4]}/{b2[4:]}/{filename}"
        file = FakeFile(
            project=name, version=str(version), filename=filename, url=self.url + path,
            path=path, sha256=digests["sha256"], md5=digests["md5"], blake2b_256=b2,
            size=size, upload_time=parse_time(upload_time), requires_python=requires_python,
            packagetype=packagetype or guessed_type, python_version=python_version
            or guessed_python, metadata=metadata, content=data, source=source,
        )
        with self._lock:
            if filename in self._by_filename:
                raise ValueError(f"{filename} was already uploaded (PyPI never reuses names)")
            proj = self._projects.get(name)
            if proj is None:
                proj = self._projects[name] = _Project(name, project)
            entry = _Entry(file)
            proj.files[filename] = entry
            self._by_filename[filename] = entry
            self._by_path[path] = entry
            self._touch(proj)
        return file

    # -- changes ----------------------------------------------------------------------------

    def delete(self, filename: str) -> None:
        """Drop a file from every page; `/files/` keeps it only if keep_serving_deleted_files."""
        with self._lock:
            entry = self._entry(filename)
            entry.deleted = True
            self._touch(self._projects[entry.file.project])

    def yank(self, filename: str, reason: str = "") -> None:
        with self._lock:
            entry = self._entry(filename)
            entry.yanked = reason
            self._touch(self._projects[entry.file.project])

    def unyank(self, filename: str) -> None:
        with self._lock:
            entry = self._entry(filename)
            entry.yanked = None
            self._touch(self._projects[entry.file.project])

    def remove_project(self, project: str) -> None:
        """The project is gone (404 everywhere); its files count as deleted."""
        with self._lock:
            proj = self._projects.pop(canonicalize_name(project))
            for filename, entry in proj.files.items():
                entry.deleted = True
                del self._by_filename[filename]
            self._serial += 1

    def set_status(self, project: str, status: str | None, reason: str | None = None) -> None:
        """PEP 792 project status (active, archived, quarantined, deprecated); None clears."""
        with self._lock:
            proj = self._projects[canonicalize_name(project)]
            proj.status, proj.status_reason = status, reason
            self._touch(proj)

    def file(self, filename: str) -> FakeFile:
        with self._lock:
            return self._entry(filename).file

    def files(self, project: str) -> list[FakeFile]:
        """The files a project page lists now."""
        with self._lock:
            proj = self._projects.get(canonicalize_name(project))
            return [e.file for e in proj.live()] if proj else []

    def _entry(self, filename: str) -> _Entry:
        try:
            return self._by_filename[filename]
        except KeyError:
            raise KeyError(f"no file {filename!r} on this fake PyPI") from None

    def _touch(self, proj: _Project) -> None:
        self._serial += 1
        proj.last_serial = self._serial

    # -- faults -----------------------------------------------------------------------------

    def fault(
        self,
        match: str | re.Pattern[str],
        kind: FaultKind,
        *,
        times: int | None = 1,
        status: int = 503,
        seconds: float = 30.0,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Fault:
        """Misbehave on the next `times` requests (None: until `clear_faults`) whose path
        starts with `match` (a str) or is matched by it (a compiled regex).  See `Fault`."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
        fault = Fault(match, kind, times, status, seconds, method, dict(headers or {}), body=body)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining != 0 and fault.matches(method, path):
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    # -- request log ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def requests_for(self, prefix: str, method: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [
                r for r in self._log
                if r.path.startswith(prefix) and (method is None or r.method == method)
            ]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    # -- routing ----------------------------------------------------------------------------

    def _respond(
        self, method: str, path: str, query: str, headers: Mapping[str, str], *, conditional: bool = True
    ) -> _Reply:
        if path == LOGIN_PATH:
            return _Reply(200, [("Content-Type", "text/html; charset=utf-8")], _LOGIN_PAGE)
        if not self._authorized(headers.get("authorization")):
            scheme = "Basic" if self.require_basic else "Bearer"
            return _text(401, "Unauthorized", [("WWW-Authenticate", f'{scheme} realm="fakepypi"')])
        if method not in ("GET", "HEAD"):
            return _text(405, "Method Not Allowed", [("Allow", "GET, HEAD")])
        parts = path.split("/")
        with self._lock:
            if path == "/simple/":
                reply = self._root_page(query, headers)
            elif path.startswith("/simple/") and len(parts) in (3, 4):
                reply = self._project_page(parts[2], path.endswith("/"), query, headers)
            elif path.startswith("/pypi/") and (api_parts := _json_api_parts(parts)):
                reply = self._json_api(api_parts)
            elif path.startswith("/files/"):
                return self._file(path, query, headers)
            else:
                return _text(404, "Not Found")
        if "gzip" in headers.get("accept-encoding", "") and self.gzip_pages:
            if reply.status == 200 and isinstance(reply.body, bytes):
                reply.body = gzip.compress(reply.body, mtime=0)
                # a strong ETag must differ per content-coding (RFC 9110 8.8.3)
                reply.headers = [
                    (k, v[:-1] + '-gzip"' if k == "ETag" else v) for k, v in reply.headers
                ]
                reply.headers.append(("Content-Encoding", "gzip"))
        if conditional and self.conditional_pages and reply.status == 200 and path.startswith("/simple/"):
            etag = next((v for k, v in reply.headers if k == "ETag"), None)
            if etag is not None and etag in _etags(headers.get("if-none-match")):
                kept = ("ETag", "Cache-Control", "Vary", "X-PyPI-Last-Serial")
                return _Reply(304, [(k, v) for k, v in reply.headers if k in kept])
        return reply

    def _authorized(self, authorization: str | None) -> bool:
        if self.require_basic is None and self.require_bearer is None:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic" and self.require_basic is not None:
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return (user, password) == tuple(self.require_basic)
        if scheme.lower() == "bearer" and self.require_bearer is not None:
            return value.strip() == self.require_bearer
        return False

    def _page_headers(self, serial: int, content_type: str, body: bytes) -> list[tuple[str, str]]:
        return [
            ("Content-Type", _CONTENT_TYPES[content_type]),
            ("Vary", "Accept, Accept-Encoding"),
            ("ETag", f'"{hashlib.sha256(body).hexdigest()[:32]}"'),
            ("Cache-Control", "max-age=600, public"),
            ("X-PyPI-Last-Serial", str(serial)),
        ]

    def _choose_type(self, query: str, headers: Mapping[str, str]) -> str:
        offers = _PREFERENCE if self.serve_json else (HTML_TYPE, HTML_V1_TYPE)
        # warehouse also accepts ?format=<content type> in place of Accept
        requested = parse_qs(query).get("format", [None])[0]
        return negotiate(requested or headers.get("accept"), offers)

    def _root_page(self, query: str, headers: Mapping[str, str]) -> _Reply:
        kind = self._choose_type(query, headers)
        projects = sorted(self._projects.values(), key=lambda p: p.name)
        if kind == JSON_TYPE:
            body = json.dumps({
                "meta": {"api-version": API_VERSION, "_last-serial": self._serial},
                "projects": [
                    {"name": p.display_name, "_last-serial": p.last_serial} for p in projects
                ],
            }).encode()
        else:
            links = "".join(
                f'    <a href="/simple/{p.name}/">{html.escape(p.display_name)}</a><br />\n'
                for p in projects
            )
            body = (
                "<!DOCTYPE html>\n<html>\n  <head>\n"
                f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
                "    <title>Simple index</title>\n  </head>\n  <body>\n"
                f"{links}  </body>\n</html>\n"
            ).encode()
        return _Reply(200, self._page_headers(self._serial, kind, body), body)

    def _project_page(
        self, raw: str, slash: bool, query: str, headers: Mapping[str, str]
    ) -> _Reply:
        name = canonicalize_name(raw)
        if raw != name or not slash:  # PyPI redirects to the normalized, slashed URL
            location = f"/simple/{name}/" + (f"?{query}" if query else "")
            return _text(301, "Moved Permanently", [("Location", location)])
        proj = self._projects.get(name)
        if proj is None:
            return _text(404, "Not Found")
        kind = self._choose_type(query, headers)
        api_version = API_VERSION_STATUS if proj.status else API_VERSION
        entries = proj.live()
        if kind == JSON_TYPE:
            body = self._project_json(proj, entries, api_version)
        else:
            body = self._project_html(proj, entries, api_version)
        return _Reply(200, self._page_headers(proj.last_serial, kind, body), body)

    def _link(self, file: FakeFile) -> str:
        # The page lives at /simple/<name>/, so ../../ is the site root (pip, uv and Poetry
        # resolve relative links against the page URL).
        link = ".." + "/.." + file.path if self.relative_links else file.url
        if self.signed_links:
            link += "?" + self._sign()
        return link

    def _sign(self) -> str:
        signature = os.urandom(16).hex()
        self._signatures.add(signature)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={stamp}&X-Amz-Expires=900"
                f"&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}")

    def expire_signatures(self) -> None:
        """Every file URL listed so far stops working (403), as presigned URLs do."""
        with self._lock:
            self._signatures.clear()

    def _project_json(self, proj: _Project, entries: list[_Entry], api_version: str) -> bytes:
        files = []
        for e in entries:
            f = e.file
            listed = f.metadata is not None and not self.signed_links
            metadata: object = {"sha256": f.metadata_sha256} if listed else False
            files.append({
                "filename": f.filename,
                "url": self._link(f),
                "hashes": {"sha256": f.sha256},
                "requires-python": f.requires_python,
                "yanked": (e.yanked or True) if e.yanked is not None else False,
                "core-metadata": metadata,
                "data-dist-info-metadata": metadata,
                "upload-time": f.upload_time_str,
                "size": f.size,
            })
        doc: dict[str, object] = {
            "meta": {"api-version": api_version, "_last-serial": proj.last_serial},
            "name": proj.name,
        }
        if proj.status:
            status: dict[str, str] = {"status": proj.status}
            if proj.status_reason is not None:
                status["reason"] = proj.status_reason
            doc["project-status"] = status
        doc["files"] = files
        doc["versions"] = _versions(entries)
        return json.dumps(doc).encode()

    def _project_html(self, proj: _Project, entries: list[_Entry], api_version: str) -> bytes:
        esc = html.escape
        head = [f'    <meta name="pypi:repository-version" content="{api_version}">']
        if proj.status:
            head.append(f'    <meta name="pypi:project-status" content="{esc(proj.status)}">')
            if proj.status_reason is not None:
                reason = esc(proj.status_reason)
                head.append(f'    <meta name="pypi:project-status-reason" content="{reason}">')
        links = []
        for e in entries:
            f = e.file
            digest = {"sha256": f.sha256, "md5": f.md5}.get(self.html_hash)
            attrs = [("href", self._link(f) + (f"#{self.html_hash}={digest}" if digest else ""))]
            if f.requires_python:
                attrs.append(("data-requires-python", f.requires_python))
            if f.metadata is not None and self.html_core_metadata and not self.signed_links:
                attrs.append(("data-dist-info-metadata", f"sha256={f.metadata_sha256}"))
                attrs.append(("data-core-metadata", f"sha256={f.metadata_sha256}"))
            if e.yanked is not None:
                attrs.append(("data-yanked", e.yanked))
            if self.html_upload_time:
                attrs.append(("data-upload-time", f.upload_time_str))
            rendered = " ".join(f'{k}="{esc(v)}"' for k, v in attrs)
            links.append(f"    <a {rendered}>{esc(f.filename)}</a><br />")
        lines = [
            "<!DOCTYPE html>", "<html>", "  <head>", *head,
            f"    <title>Links for {esc(proj.name)}</title>", "  </head>", "  <body>",
            f"    <h1>Links for {esc(proj.name)}</h1>", *links, "  </body>", "</html>", "",
        ]
        return "\n".join(lines).encode()

    def _json_api(self, parts: list[str]) -> _Reply:
        if len(parts) not in (1, 2):
            return _not_found_json()
        proj = self._projects.get(canonicalize_name(parts[0]))
        if proj is None:
            return _not_found_json()
        releases: dict[str, list[_Entry]] = {}
        for e in proj.live():
            releases.setdefault(str(Version(e.file.version)), []).append(e)
        if not releases:
            return _not_found_json()
        if len(parts) == 2:
            if not self.per_version_json:
                return _not_found_json()
            try:
                wanted = Version(parts[1])
            except ValueError:
                return _not_found_json()
            version = next((v for v in releases if Version(v) == wanted), None)
            if version is None:
                return _not_found_json()
        else:
            version = _latest(releases)
        doc: dict[str, object] = {
            "info": self._info(proj, version, releases[version]),
            "last_serial": proj.last_serial,
        }
        if len(parts) == 1:
            doc["releases"] = {
                v: [self._api_file(e) for e in releases[v]]
                for v in sorted(releases, key=Version)
            }
        doc["urls"] = [self._api_file(e) for e in releases[version]]
        doc["vulnerabilities"] = []
        reply = _json_reply(200, doc)
        reply.headers.append(("X-PyPI-Last-Serial", str(proj.last_serial)))
        return reply

    def _api_file(self, e: _Entry) -> dict[str, object]:
        f = e.file
        return {
            "comment_text": "",
            "digests": {"blake2b_256": f.blake2b_256, "md5": f.md5, "sha256": f.sha256},
            "downloads": -1,
            "filename": f.filename,
            "has_sig": False,
            "md5_digest": f.md5,
            "packagetype": f.packagetype,
            "python_version": f.python_version,
            "requires_python": f.requires_python,
            "size": f.size,
            "upload_time": f.upload_time.strftime("%Y-%m-%dT%H:%M:%S"),
            "upload_time_iso_8601": f.upload_time_str,
            "url": f.url,
            "yanked": e.yanked is not None,
            "yanked_reason": e.yanked or None,
        }

    def _info(self, proj: _Project, version: str, entries: list[_Entry]) -> dict[str, object]:
        """The JSON API `info` of one release, read from its core metadata like warehouse."""
        raw = next((e.file.metadata for e in entries if e.file.metadata is not None), None)
        if raw is None:
            wheels = [e.file for e in entries if e.file.filename.endswith(".whl")]
            raw = wheel_metadata(wheels[0].origin) if wheels else None
        meta = BytesParser().parsebytes(raw or b"")
        yanked = all(e.yanked is not None for e in entries)
        reasons = [e.yanked for e in entries if e.yanked]
        requires_dist = meta.get_all("Requires-Dist")
        return {
            "author": meta.get("Author", ""),
            "author_email": meta.get("Author-email", ""),
            "bugtrack_url": None,
            "classifiers": meta.get_all("Classifier") or [],
            "description": meta.get_payload() if isinstance(meta.get_payload(), str) else "",
            "description_content_type": meta.get("Description-Content-Type"),
            "docs_url": None,
            "download_url": "",
            "downloads": {"last_day": -1, "last_month": -1, "last_week": -1},
            "dynamic": None,
            "home_page": meta.get("Home-page", ""),
            "keywords": meta.get("Keywords", ""),
            "license": meta.get("License", ""),
            "maintainer": meta.get("Maintainer", ""),
            "maintainer_email": meta.get("Maintainer-email", ""),
            "name": meta.get("Name", proj.display_name),
            "package_url": f"{self.url}/project/{proj.name}/",
            "platform": None,
            "project_url": f"{self.url}/project/{proj.name}/",
            "project_urls": None,
            "provides_extra": meta.get_all("Provides-Extra"),
            "release_url": f"{self.url}/project/{proj.name}/{version}/",
            "requires_dist": list(requires_dist) if requires_dist else None,
            "requires_python": meta.get("Requires-Python", entries[0].file.requires_python),
            "summary": meta.get("Summary", ""),
            "version": meta.get("Version", version),
            "yanked": yanked,
            "yanked_reason": (reasons[0] if reasons else None) if yanked else None,
        }

    def _file(self, path: str, query: str, headers: Mapping[str, str]) -> _Reply:
        want_metadata = path.endswith(".metadata")
        entry = self._by_path.get(path[: -len(".metadata")] if want_metadata else path)
        if entry is None or (entry.deleted and not self.keep_serving_deleted_files):
            return _text(404, "Not Found")
        if self.signed_links:
            signature = parse_qs(query).get("X-Amz-Signature", [""])[0]
            if signature not in self._signatures:
                return _Reply(403, [("Content-Type", "application/xml")],
                              b"<Error><Code>AccessDenied</Code>"
                              b"<Message>Request has expired</Message></Error>")
        f = entry.file
        if want_metadata:
            if f.metadata is None:
                return _text(404, "Not Found")
            body: bytes | _FileSlice = f.metadata
            etag = f'"{hashlib.md5(f.metadata).hexdigest()}"'
        else:
            origin = f.origin
            body = origin if isinstance(origin, bytes) else _FileSlice(origin, 0, f.size)
            etag = f'"{f.md5}"'
        size = len(body) if isinstance(body, bytes) else body.length
        last_modified = _http_date(f.upload_time)
        common = [
            ("ETag", etag),
            ("Last-Modified", last_modified),
            ("Accept-Ranges", "bytes"),
            ("Cache-Control", "max-age=365000000, immutable, public"),
        ]
        if etag in _etags(headers.get("if-none-match")):
            return _Reply(304, common)
        common.insert(0, ("Content-Type", "application/octet-stream"))
        range_header = headers.get("range")
        if_range = headers.get("if-range")
        if range_header and if_range is not None and if_range not in (etag, last_modified):
            range_header = None  # the client's copy is stale: send everything (RFC 9110 13.1.5)
        span = _parse_range(range_header, size) if range_header else None
        if span == "unsatisfiable":
            return _text(
                416, "Range Not Satisfiable",
                [("Accept-Ranges", "bytes"), ("Content-Range", f"bytes */{size}")],
            )
        if span is None:
            return _Reply(200, common, body)
        start, end = span
        common.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        if isinstance(body, bytes):
            return _Reply(206, common, body[start : end + 1])
        return _Reply(206, common, _FileSlice(body.path, start, end - start + 1))


def _json_api_parts(parts: list[str]) -> list[str] | None:
    """["", "pypi", P, (V,) "json"(, "")] -> [P(, V)]; None for any other path."""
    if parts[-1] == "":
        parts = parts[:-1]
    if parts[-1] != "json" or len(parts) not in (4, 5):
        return None
    return parts[2:-1]


def _etags(header: str | None) -> set[str]:
    return {t.strip().removeprefix("W/") for t in (header or "").split(",") if t.strip()}


def _versions(entries: list[_Entry]) -> list[str]:
    return sorted({str(Version(e.file.version)) for e in entries}, key=Version)


def _latest(releases: Mapping[str, list[_Entry]]) -> str:
    """The release warehouse puts in `info`: not yanked first, then final, then highest."""
    def rank(v: str) -> tuple[bool, bool, Version]:
        not_yanked = not all(e.yanked is not None for e in releases[v])
        return not_yanked, not Version(v).is_prerelease, Version(v)

    return max(releases, key=rank)


def _describe(filename: str) -> tuple[str | None, str, str]:
    """(version, packagetype, python_version) read from a distribution filename."""
    if filename.endswith(".whl"):
        try:
            _, version, _, _ = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            return None, "bdist_wheel", "py3"
        return str(version), "bdist_wheel", filename[:-4].split("-")[-3]
    try:
        _, version = parse_sdist_filename(filename)
    except InvalidSdistFilename:
        return None, "sdist", "source"
    return str(version), "sdist", "source"


def _digests(chunks: Iterable[bytes]) -> dict[str, str]:
    sha256, md5, blake2b = hashlib.sha256(), hashlib.md5(), hashlib.blake2b(digest_size=32)
    for chunk in chunks:
        sha256.update(chunk)
        md5.update(chunk)
        blake2b.update(chunk)
    return {
        "sha256": sha256.hexdigest(),
        "md5": md5.hexdigest(),
        "blake2b_256": blake2b.hexdigest(),
    }


def add_alpha_beta(fake: FakePyPI) -> FakePyPI:
    """The graph most end-to-end tests resolve: alpha 1.0 (Jan 2023) needs beta; alpha 2.0
    (Jun 2023) needs beta>=2; beta 1.0 (Dec 2022), 2.0 (May 2023)."""
    fake.add_wheel("beta", "1.0", upload_time="2022-12-01T10:00:00Z")
    fake.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z", requires_dist=["beta"])
    fake.add_wheel("beta", "2.0", upload_time="2023-05-01T10:00:00Z")
    fake.add_wheel("alpha", "2.0", upload_time="2023-06-01T10:00:00Z", requires_dist=["beta>=2"])
    return fake


def add_old_sdists(fake: FakePyPI) -> FakePyPI:
    """Sdists of 2018 that build only with a backend of 2024: `oldpkg` 1.0 (March 2018) and
    `oldsetup` 1.0 (April 2018), sdists only, build with `tinybackend>=2`; tinybackend 1.0
    came out in January 2018, 2.0 in January 2024.  oldpkg's pyproject.toml says it has no
    dependencies; oldsetup's has no `[project]` (a setup.py sdist of old), so a locker builds
    its metadata to learn that."""
    fake.add_wheel("tinybackend", "1.0", upload_time="2018-01-01T10:00:00Z", init_py=TINY_BACKEND)
    fake.add_sdist("oldpkg", "1.0", upload_time="2018-03-01T10:00:00Z",
                   build_requires=["tinybackend>=2"], build_backend="tinybackend")
    fake.add_sdist("oldsetup", "1.0", upload_time="2018-04-01T10:00:00Z",
                   build_requires=["tinybackend>=2"], build_backend="tinybackend", project_table=False)
    fake.add_wheel("tinybackend", "2.0", upload_time="2024-01-01T10:00:00Z", init_py=TINY_BACKEND)
    return fake


_HELD_PORTS: list[socket.socket] = []


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections to it are refused).

    The port stays bound, never listening, until the test process ends: released, it could be
    handed to the next server that binds port 0 (such as datepin's internal file server), and a
    request meant to be refused would get that server's answer (a 404, seen once in CI)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    _HELD_PORTS.append(s)
    return int(s.getsockname()[1])
