"""The benchmark's fixture registry: real wheels and pre-rendered index pages, on disk.

    <root>/
      stamp.json                          the parameters it was built with (reuse check)
      simple/index.json, index.html       root pages
      simple/<name>/index.json, .html     PEP 691 JSON and PEP 503 HTML, plus .gz of each
      packages/<name>/<wheel>             real wheels (tests/fakepypi.py builds them)
      packages/<name>/<wheel>.metadata    their core metadata (PEP 658)
      same/                               pages copied from datepin's answers (baselines)

Four kinds of project:

- `bench-pkg-NN`: installable, 3 versions each, wheel sizes log-uniform between tens of KB
  and a few MB, each depending on up to three later ones (a DAG, so every install resolves);
- `bench-grow-N`: N files listed (versions x platform wheels), for page-size growth;
- `bench-huge`: one wheel of `huge` bytes (1 GiB by default);
- `bench-snap-NNN`: small pages only, so that the snapshot has enough projects to time.

Only `bench-pkg-*` and `bench-huge` files exist on disk; the others' links lead nowhere,
which the benchmark never follows.  Upload times all fall before `PIN`.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import math
import random
import shutil
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakepypi import wheel_metadata, write_wheel  # noqa: E402
from storecheck import sha256_of  # noqa: E402

FIXTURE_VERSION = 1
PIN = "2025-01-01"  # after every upload time below, so the views of the pin are complete
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_EPOCH = datetime(2021, 1, 1, tzinfo=UTC)
_TAGS = [
    f"cp3{minor}-cp3{minor}-manylinux_2_17_{arch}"
    for minor in (8, 9, 10, 11, 12)
    for arch in ("x86_64", "aarch64")
]


@dataclass(frozen=True)
class Params:
    projects: int = 40
    versions: int = 3
    min_wheel: int = 20_000
    max_wheel: int = 4_000_000
    growth: tuple[int, ...] = (100, 1_000, 20_000)
    huge: int = 1 << 30
    snapshot_projects: int = 460
    seed: int = 7


QUICK = Params(
    projects=6, min_wheel=5_000, max_wheel=60_000, growth=(10, 100, 1_000), huge=16 << 20,
    snapshot_projects=20,
)


@dataclass(frozen=True)
class Listed:
    """One file as the index lists it."""

    filename: str
    url: str  # relative to the project page
    sha256: str
    size: int
    upload_time: datetime
    metadata_sha256: str | None = None
    requires_python: str | None = ">=3.8"


@dataclass
class Fixture:
    root: Path
    params: Params
    packages: list[str] = field(default_factory=list)  # installable, all resolvable together
    growth: dict[int, str] = field(default_factory=dict)  # file count -> project
    huge: str = "bench-huge"
    huge_filename: str = ""
    snapshot: list[str] = field(default_factory=list)  # every project, for `snapshot --all`
    bytes_on_disk: int = 0

    @property
    def all_projects(self) -> list[str]:
        return [*self.packages, *self.growth.values(), self.huge, *self.snapshot]


def fixture(root: Path, params: Params, *, log: object = print) -> tuple[Fixture, bool]:
    """The fixture at `root`, built now unless a complete one with `params` is there.

    Returns (fixture, reused)."""
    stamp = root / "stamp.json"
    wanted = {"version": FIXTURE_VERSION, "params": asdict(params)}
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        if {k: saved.get(k) for k in wanted} == json.loads(json.dumps(wanted)):
            return _from_stamp(root, params, saved), True
    if root.exists():
        shutil.rmtree(root)
    building = root.with_name(root.name + ".building")
    if building.exists():
        shutil.rmtree(building)
    built = build(building, params, log=log)
    building.rename(root)
    built.root = root
    stamp.write_text(json.dumps({**wanted, "fixture": _describe(built)}, indent=1))
    return built, False


def _describe(f: Fixture) -> dict[str, object]:
    return {
        "packages": f.packages,
        "growth": {str(k): v for k, v in f.growth.items()},
        "huge": f.huge,
        "huge_filename": f.huge_filename,
        "snapshot": f.snapshot,
        "bytes_on_disk": f.bytes_on_disk,
    }


def _from_stamp(root: Path, params: Params, saved: dict[str, object]) -> Fixture:
    d = saved["fixture"]
    assert isinstance(d, dict)
    return Fixture(
        root=root,
        params=params,
        packages=list(d["packages"]),
        growth={int(k): v for k, v in d["growth"].items()},
        huge=d["huge"],
        huge_filename=d["huge_filename"],
        snapshot=list(d["snapshot"]),
        bytes_on_disk=int(d["bytes_on_disk"]),
    )


def build(root: Path, params: Params, *, log: object = print) -> Fixture:
    rng = random.Random(params.seed)
    out = Fixture(root=root, params=params)
    (root / "same").mkdir(parents=True)
    names = [f"bench-pkg-{i:02d}" for i in range(params.projects)]
    for i, name in enumerate(names):
        later = names[i + 1 :]
        deps = rng.sample(later, min(len(later), rng.randint(0, 3)))
        size = _log_uniform(rng, params.min_wheel, params.max_wheel)
        files = []
        for v in range(params.versions):
            version = f"{v + 1}.{rng.randint(0, 9)}.0"
            uploaded = _EPOCH + timedelta(days=200 * v + i, seconds=rng.randint(0, 86_399))
            files.append(_real_wheel(root, name, version, [f"{d}>=1" for d in deps], size, uploaded))
        write_project(root, name, files)
        out.packages.append(name)
    out.bytes_on_disk += _size_of(root / "packages")
    _log(log, f"fixture: {len(names)} installable projects, {out.bytes_on_disk / 1e6:.0f} MB of wheels")

    for count in params.growth:
        name = f"bench-grow-{count}"
        write_project(root, name, _listed_only(rng, name, count))
        out.growth[count] = name
    _log(log, f"fixture: pages of {', '.join(map(str, params.growth))} files")

    huge = _real_wheel(root, out.huge, "1.0", [], params.huge, _EPOCH + timedelta(days=700))
    write_project(root, out.huge, [huge])
    out.huge_filename = huge.filename
    out.bytes_on_disk += huge.size
    _log(log, f"fixture: {huge.filename} ({huge.size / 2**30:.2f} GiB)")

    snap = [f"bench-snap-{i:03d}" for i in range(params.snapshot_projects)]
    for name in snap:
        write_project(root, name, _listed_only(rng, name, rng.randint(5, 20)))
    out.snapshot = snap
    write_root(root, [*names, *out.growth.values(), out.huge, *snap])
    return out


def _log(log: object, message: str) -> None:
    if callable(log):
        log(message)


def _size_of(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def _real_wheel(
    root: Path, name: str, version: str, requires: list[str], payload: int, uploaded: datetime
) -> Listed:
    directory = root / "packages" / name
    directory.mkdir(parents=True, exist_ok=True)
    path = write_wheel(directory, name, version, requires_dist=requires, payload_size=payload)
    metadata = wheel_metadata(path)
    (directory / (path.name + ".metadata")).write_bytes(metadata)
    return Listed(
        filename=path.name,
        url=f"../../packages/{name}/{path.name}",
        sha256=sha256_of(path),
        size=path.stat().st_size,
        upload_time=uploaded,
        metadata_sha256=hashlib.sha256(metadata).hexdigest(),
    )


def _listed_only(rng: random.Random, name: str, count: int) -> list[Listed]:
    """`count` platform wheels over count/10 versions, spread over four years."""
    module = name.replace("-", "_")
    files = []
    for n in range(count):
        version, tag = f"{n // len(_TAGS) // 100}.{n // len(_TAGS) % 100}.0", _TAGS[n % len(_TAGS)]
        filename = f"{module}-{version}-{tag}.whl"
        fake = hashlib.sha256(filename.encode()).hexdigest()
        files.append(Listed(
            filename=filename,
            url=f"../../packages/{name}/{filename}",
            sha256=fake,
            size=rng.randint(1_000_000, 50_000_000),
            upload_time=_EPOCH + timedelta(seconds=int(4 * 365 * 86_400 * n / max(count, 1))),
            metadata_sha256=hashlib.sha256(fake.encode()).hexdigest(),
        ))
    return files


def upload_time_text(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as warehouse writes it


def render_json(name: str, files: list[Listed]) -> bytes:
    versions = sorted({f.filename.split("-")[1] for f in files}, key=lambda v: tuple(map(int, v.split("."))))
    doc = {
        "meta": {"api-version": "1.1"},
        "name": name,
        "versions": versions,
        "files": [
            {
                "filename": f.filename,
                "url": f.url,
                "hashes": {"sha256": f.sha256},
                "requires-python": f.requires_python,
                "core-metadata": {"sha256": f.metadata_sha256} if f.metadata_sha256 else False,
                "data-dist-info-metadata": {"sha256": f.metadata_sha256} if f.metadata_sha256 else False,
                "yanked": False,
                "upload-time": upload_time_text(f.upload_time),
                "size": f.size,
            }
            for f in files
        ],
    }
    return json.dumps(doc).encode()


def render_html(name: str, files: list[Listed]) -> bytes:
    esc = html.escape
    links = []
    for f in files:
        attrs = [("href", f"{f.url}#sha256={f.sha256}")]
        if f.requires_python:
            attrs.append(("data-requires-python", f.requires_python))
        if f.metadata_sha256:
            attrs.append(("data-dist-info-metadata", f"sha256={f.metadata_sha256}"))
            attrs.append(("data-core-metadata", f"sha256={f.metadata_sha256}"))
        attrs.append(("data-upload-time", upload_time_text(f.upload_time)))
        rendered = " ".join(f'{k}="{esc(v)}"' for k, v in attrs)
        links.append(f"    <a {rendered}>{esc(f.filename)}</a><br />")
    lines = [
        "<!DOCTYPE html>", "<html>", "  <head>",
        '    <meta name="pypi:repository-version" content="1.1">',
        f"    <title>Links for {esc(name)}</title>", "  </head>", "  <body>",
        f"    <h1>Links for {esc(name)}</h1>", *links, "  </body>", "</html>", "",
    ]
    return "\n".join(lines).encode()


def write_page(path: Path, body: bytes) -> None:
    """A page and its .gz sibling (served pre-compressed, like nginx's gzip_static)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(body, compresslevel=6, mtime=0))


def write_project(root: Path, name: str, files: list[Listed]) -> None:
    directory = root / "simple" / name
    write_page(directory / "index.json", render_json(name, files))
    write_page(directory / "index.html", render_html(name, files))


def write_root(root: Path, names: list[str]) -> None:
    doc = {"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in sorted(names)]}
    write_page(root / "simple" / "index.json", json.dumps(doc).encode())
    links = "".join(f'    <a href="{n}/">{n}</a><br />\n' for n in sorted(names))
    write_page(
        root / "simple" / "index.html",
        f"<!DOCTYPE html>\n<html>\n  <body>\n{links}  </body>\n</html>\n".encode(),
    )
