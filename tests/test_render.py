from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from bs4 import BeautifulSoup, Tag
from hypothesis import example, given
from hypothesis import strategies as st
from packaging.utils import InvalidWheelFilename, NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from datepin.addon import path_links
from datepin.model import DistFile, View
from datepin.rewrite.filenames import package_type, project_of, python_version, version_of
from datepin.rewrite.parse import parse_html_page, parse_json_api_info, parse_json_page
from datepin.rewrite.render import (
    UnknownRelease,
    choose_release,
    info_from_metadata,
    render_html,
    render_json,
    render_json_api,
    render_root_html,
    render_root_json,
)

DATA = Path(__file__).parent / "data"
PAGE_URL = "http://proxy.test/2023-11-18/simple/foo/"
SHA = "a" * 64
T0 = datetime(2023, 11, 1, 10, 0, tzinfo=UTC)


def link(f: DistFile) -> str:
    return f"http://proxy.test/files/{quote(f.filename)}"


def dist(filename: str, **fields: object) -> DistFile:
    defaults: dict[str, object] = {
        "url": f"https://files.test/{filename}",
        "hashes": {"sha256": SHA},
    }
    return DistFile(filename=filename, **{**defaults, **fields})  # type: ignore[arg-type]


def make_view(*files: DistFile, status: str | None = None, reason: str | None = None) -> View:
    ordered = tuple(sorted(files, key=lambda f: f.filename))
    versions = sorted({v for f in ordered if (v := version_of(f.filename)) is not None})
    return View(
        name=NormalizedName("foo"),
        cutoff=T0,
        kind="observed",
        files=ordered,
        versions=tuple(str(v) for v in versions),
        status=status,
        status_reason=reason,
    )


def anchors(body: bytes) -> list[Tag]:
    return [a for a in BeautifulSoup(body, "html.parser").find_all("a") if isinstance(a, Tag)]


def meta(body: bytes, name: str) -> str | None:
    tag = BeautifulSoup(body, "html.parser").find("meta", attrs={"name": name})
    return str(tag["content"]) if isinstance(tag, Tag) else None


FULL = dist(
    "foo-1.0-py3-none-any.whl",
    requires_python=">=3.8",
    core_metadata={"sha256": "b" * 64},
    yanked='broken "badly" <see #1>',
    upload_time=T0,
    upload_time_raw="2023-11-01T10:00:00.000000Z",
    size=1234,
)
PLAIN = dist("foo-1.0.tar.gz", hashes={})


# --- HTML -----------------------------------------------------------------------------------------


def test_html_file_attributes() -> None:
    body = render_html(make_view(FULL, PLAIN), link)
    a_whl, a_sdist = anchors(body)  # sorted by filename ("-" sorts before ".")
    assert a_whl["href"] == f"http://proxy.test/files/foo-1.0-py3-none-any.whl#sha256={SHA}"
    assert a_whl.get_text() == "foo-1.0-py3-none-any.whl"
    assert a_whl["data-requires-python"] == ">=3.8"
    assert a_whl["data-core-metadata"] == a_whl["data-dist-info-metadata"] == "sha256=" + "b" * 64
    assert a_whl["data-yanked"] == 'broken "badly" <see #1>'
    assert a_whl["data-upload-time"] == "2023-11-01T10:00:00.000000Z"
    # A file with nothing known: no fragment, no optional attributes.
    assert a_sdist["href"] == "http://proxy.test/files/foo-1.0.tar.gz"
    assert set(a_sdist.attrs) == {"href"}
    assert b"&gt;=3.8" in body and b"<br />" in body
    assert b"<h1>Links for foo</h1>" in body
    assert meta(body, "pypi:repository-version") == "1.1"
    assert meta(body, "pypi:project-status") is None


def test_html_core_metadata_without_hash_is_true() -> None:
    (a,) = anchors(render_html(make_view(dist("foo-1.0.tar.gz", core_metadata={})), link))
    assert a["data-core-metadata"] == a["data-dist-info-metadata"] == "true"


def test_html_yanked_without_reason_is_present_and_empty() -> None:
    (a,) = anchors(render_html(make_view(dist("foo-1.0.tar.gz", yanked="")), link))
    assert a["data-yanked"] == ""


def test_html_project_status() -> None:
    body = render_html(make_view(PLAIN, status="archived", reason='use "bar" & co'), link)
    assert meta(body, "pypi:repository-version") == "1.4"
    assert meta(body, "pypi:project-status") == "archived"
    assert meta(body, "pypi:project-status-reason") == 'use "bar" & co'


# --- JSON -----------------------------------------------------------------------------------------


def test_json_file_entries() -> None:
    doc = json.loads(render_json(make_view(FULL, PLAIN), link))
    assert doc["meta"] == {"api-version": "1.1"}
    assert doc["name"] == "foo"
    assert doc["versions"] == ["1.0"]
    assert "project-status" not in doc
    whl, sdist = doc["files"]
    assert whl == {
        "filename": "foo-1.0-py3-none-any.whl",
        "url": "http://proxy.test/files/foo-1.0-py3-none-any.whl",
        "hashes": {"sha256": SHA},
        "requires-python": ">=3.8",
        "yanked": 'broken "badly" <see #1>',
        "core-metadata": {"sha256": "b" * 64},
        "upload-time": "2023-11-01T10:00:00.000000Z",
        "size": 1234,
    }
    assert sdist == {
        "filename": "foo-1.0.tar.gz",
        "url": "http://proxy.test/files/foo-1.0.tar.gz",
        "hashes": {},
        "requires-python": None,
        "yanked": False,
        "core-metadata": False,
    }


@pytest.mark.parametrize(
    ("fields", "yanked", "core"),
    [({"yanked": ""}, True, False), ({"core_metadata": {}}, False, True)],
)
def test_json_true_values(fields: dict[str, object], yanked: object, core: object) -> None:
    (entry,) = json.loads(render_json(make_view(dist("foo-1.0.tar.gz", **fields)), link))["files"]
    assert entry["yanked"] is yanked and entry["core-metadata"] is core


def test_json_never_emits_dist_info_metadata() -> None:
    body = render_json(make_view(FULL, dist("foo-2.0.tar.gz", core_metadata={})), link)
    assert b"dist-info-metadata" not in body


def test_json_empty_view_has_a_files_list() -> None:
    doc = json.loads(render_json(make_view(), link))
    assert doc["files"] == [] and doc["versions"] == []


def test_json_project_status() -> None:
    doc = json.loads(render_json(make_view(PLAIN, status="quarantined", reason="malware"), link))
    assert doc["meta"]["api-version"] == "1.4"
    assert doc["project-status"] == {"status": "quarantined", "reason": "malware"}


def test_renders_do_not_depend_on_hash_order() -> None:
    a = dist(
        "foo-1.0.tar.gz",
        hashes={"sha256": SHA, "md5": "c" * 32},
        core_metadata={"sha256": "1", "md5": "2"},
    )
    b = dist(
        "foo-1.0.tar.gz",
        hashes={"md5": "c" * 32, "sha256": SHA},
        core_metadata={"md5": "2", "sha256": "1"},
    )
    for render in (render_html, render_json):
        assert render(make_view(a), link) == render(make_view(b), link)


# --- root pages -----------------------------------------------------------------------------------


def test_root_pages() -> None:
    html = render_root_html(["zope-interface", "foo", "foo"])
    hrefs = [(a["href"], a.get_text()) for a in anchors(html)]
    assert hrefs == [("foo/", "foo"), ("zope-interface/", "zope-interface")]
    doc = json.loads(render_root_json(iter(["zope-interface", "foo"])))
    assert doc == {
        "meta": {"api-version": "1.1"},
        "projects": [{"name": "foo"}, {"name": "zope-interface"}],
    }


# --- property: HTML and JSON say the same thing ---------------------------------------------------

def hexes(size: int) -> st.SearchStrategy[str]:
    """Digests as a page may list them: hex of the algorithm's length (others are refused)."""
    return st.text("0123456789abcdef", min_size=size, max_size=size)


sha256s, md5s = hexes(64), hexes(32)
# NUL is excluded: HTML cannot carry it (&#0; reads back as U+FFFD).
free_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20
)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


@st.composite
def dist_files(draw: st.DrawFn) -> DistFile:
    project = draw(st.sampled_from(["foo", "foo_bar"]))
    version = draw(st.sampled_from(["1.0", "1.0.post1", "2.0rc1", "10.1", "0.9.dev3"]))
    suffix = draw(
        st.sampled_from(
            ["-py3-none-any.whl", "-cp312-cp312-manylinux_2_17_x86_64.whl", ".tar.gz", ".zip"]
        )
    )
    upload = draw(st.none() | times)
    raw = None
    if upload is not None:
        layout = draw(st.sampled_from(["%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"]))
        raw = upload.strftime(layout)
    hashes = draw(st.fixed_dictionaries({}, optional={"sha256": sha256s, "md5": md5s}))
    return DistFile(
        filename=f"{project}-{version}{suffix}",
        url="https://files.test/x",
        hashes=hashes,
        requires_python=draw(st.none() | free_text | st.just(">=3.8,<4")),
        core_metadata=draw(st.none() | st.just({}) | st.builds(lambda h: {"sha256": h}, sha256s)),
        yanked=draw(st.none() | st.just("") | free_text),
        upload_time=None,  # set below from the raw string, as a parser would
        upload_time_raw=raw,
        size=draw(st.none() | st.integers(0, 2**40)),
    )


def with_parsed_time(f: DistFile) -> DistFile:
    """Set upload_time from the raw string, independently of the code under test."""
    if f.upload_time_raw is None:
        return f
    layout = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in f.upload_time_raw else "%Y-%m-%dT%H:%M:%SZ"
    parsed = datetime.strptime(f.upload_time_raw, layout).replace(tzinfo=UTC)
    return dataclasses.replace(f, upload_time=parsed)


views = st.builds(
    lambda files, status: make_view(
        *{f.filename: with_parsed_time(f) for f in files}.values(),
        status=status[0],
        reason=status[1],
    ),
    st.lists(dist_files(), max_size=8),
    st.sampled_from([(None, None), ("archived", None), ("deprecated", 'see "bar" & <baz>\r\n')]),
)


@given(views)
def test_json_round_trips_through_our_parser(view: View) -> None:
    page = parse_json_page(render_json(view, link), PAGE_URL)
    assert page.name == view.name
    assert page.files == tuple(dataclasses.replace(f, url=link(f)) for f in view.files)
    assert (page.status, page.status_reason) == (view.status, view.status_reason)


@given(views)
def test_html_and_json_list_the_same_files(view: View) -> None:
    html = render_html(view, link)
    # HTML5 parsers read a raw CR as LF: attributes (yank reasons, status reasons) would change.
    assert b"\r" not in html
    from_html = parse_html_page(html, PAGE_URL, view.name).files
    from_json = parse_json_page(render_json(view, link), PAGE_URL).files
    assert [f.filename for f in from_html] == [f.filename for f in from_json]
    for h, j in zip(from_html, from_json, strict=True):
        assert h.url == j.url
        assert h.sha256 == j.sha256
        assert h.yanked == j.yanked
        assert h.requires_python == j.requires_python
        assert h.upload_time_raw == j.upload_time_raw
        assert h.upload_time == j.upload_time
        assert (h.core_metadata is None) == (j.core_metadata is None)
        assert (
            h.core_metadata is None
            or j.core_metadata is None
            or h.core_metadata.items() <= j.core_metadata.items()
        )


@given(views)
def test_rendering_is_deterministic(view: View) -> None:
    copy = dataclasses.replace(
        view,
        files=tuple(
            dataclasses.replace(f, hashes=dict(reversed(list(f.hashes.items()))))
            for f in view.files
        ),
    )
    assert render_html(view, link) == render_html(copy, link)
    assert render_json(view, link) == render_json(copy, link)
    assert render_json_api(view, {}, link, version=None) == render_json_api(
        copy, {}, link, version=None
    )


# --- choosing the release -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([], None),
        (["foo-1.0.tar.gz", "foo-1.10.tar.gz", "foo-1.9.tar.gz"], "1.10"),
        (["foo-1.0.tar.gz", "foo-2.0rc1.tar.gz", "foo-2.0.dev1.tar.gz"], "1.0"),
        (["foo-2.0rc1.tar.gz", "foo-2.0b1.tar.gz"], "2.0rc1"),
        (["foo-1.0.tar.gz", "foo-1.0.post1.tar.gz"], "1.0.post1"),
        (["foo-1.0.tar.gz", "foo-2.0.tar.gz", "foo-2.0-py3-none-any.whl", "garbage.txt"], "2.0"),
    ],
)
def test_choose_release(files: list[str], expected: str | None) -> None:
    assert choose_release(make_view(*(dist(f) for f in files))) == expected


def test_choose_release_skips_fully_yanked_releases() -> None:
    yanked_2 = (dist("foo-2.0.tar.gz", yanked="oops"), dist("foo-2.0-py3-none-any.whl", yanked=""))
    assert (
        choose_release(make_view(dist("foo-1.0.tar.gz"), *yanked_2, dist("foo-3.0rc1.tar.gz")))
        == "1.0"
    )
    # A pre-release beats a fully yanked final.
    assert choose_release(make_view(*yanked_2, dist("foo-3.0rc1.tar.gz"))) == "3.0rc1"
    # One file of 2.0 still not yanked: 2.0 is not fully yanked, and it is final.
    partly = make_view(
        dist("foo-1.0.tar.gz"), dist("foo-2.0.tar.gz", yanked="x"), dist("foo-2.0-py3-none-any.whl")
    )
    assert choose_release(partly) == "2.0"


def test_choose_release_when_everything_is_yanked() -> None:
    view = make_view(
        dist("foo-1.0.tar.gz", yanked=""),
        dist("foo-2.0.tar.gz", yanked=""),
        dist("foo-3.0a1.tar.gz", yanked=""),
    )
    assert choose_release(view) == "2.0"


# --- JSON API -------------------------------------------------------------------------------------

INFO: dict[str, object] = {"name": "foo", "version": "9.9", "summary": "Foo", "yanked": False}


def test_json_api_project_shape() -> None:
    whl = dist(
        "foo-1.10-cp312-cp312-manylinux_2_17_x86_64.whl",
        hashes={"sha256": SHA, "md5": "c" * 32},
        requires_python=">=3.12",
        upload_time=datetime(2023, 11, 1, 10, 0, 5, 123456, tzinfo=UTC),
        upload_time_raw="2023-11-01T10:00:05.123456Z",
        size=99,
    )
    view = make_view(
        dist("foo-1.9.tar.gz", yanked="bad"), whl, dist("foo-1.10.tar.gz"), dist("foo-2.0a1.tar.gz")
    )
    doc = json.loads(render_json_api(view, INFO, link, version=None))
    assert set(doc) == {"info", "releases", "urls", "vulnerabilities"}
    assert doc["info"] == {
        "name": "foo",
        "version": "1.10",
        "summary": "Foo",
        "yanked": False,
        "yanked_reason": None,
    }
    assert list(doc["releases"]) == ["1.9", "1.10", "2.0a1"]  # by Version, not by string
    assert [u["filename"] for u in doc["urls"]] == [
        "foo-1.10-cp312-cp312-manylinux_2_17_x86_64.whl",
        "foo-1.10.tar.gz",
    ]
    assert doc["urls"] == doc["releases"]["1.10"]
    assert doc["vulnerabilities"] == []
    entry = doc["urls"][0]
    assert entry == {
        "comment_text": "",
        "digests": {"md5": "c" * 32, "sha256": SHA},
        "filename": "foo-1.10-cp312-cp312-manylinux_2_17_x86_64.whl",
        "has_sig": False,
        "md5_digest": "c" * 32,
        "packagetype": "bdist_wheel",
        "python_version": "cp312",
        "requires_python": ">=3.12",
        "size": 99,
        "upload_time": "2023-11-01T10:00:05",
        "upload_time_iso_8601": "2023-11-01T10:00:05.123456Z",
        "url": "http://proxy.test/files/foo-1.10-cp312-cp312-manylinux_2_17_x86_64.whl",
        "yanked": False,
        "yanked_reason": None,
    }
    sdist = doc["urls"][1]
    assert (sdist["packagetype"], sdist["python_version"], "md5_digest" in sdist) == (
        "sdist",
        "source",
        False,
    )
    (yanked,) = doc["releases"]["1.9"]
    assert (yanked["yanked"], yanked["yanked_reason"]) == (True, "bad")


def test_json_api_version_shape_and_yank() -> None:
    view = make_view(
        dist("foo-1.0.tar.gz", yanked=""),
        dist("foo-1.0-py3-none-any.whl", yanked="security"),
        dist("foo-2.0.tar.gz"),
    )
    doc = json.loads(render_json_api(view, INFO, link, version="1.0"))
    assert set(doc) == {"info", "urls", "vulnerabilities"}
    assert doc["info"]["version"] == "1.0"
    assert (doc["info"]["yanked"], doc["info"]["yanked_reason"]) == (True, "security")
    assert [u["filename"] for u in doc["urls"]] == ["foo-1.0-py3-none-any.whl", "foo-1.0.tar.gz"]
    # An equal version spelled differently finds the same release.
    assert json.loads(render_json_api(view, INFO, link, version="1.0.0"))["urls"] == doc["urls"]


def test_json_api_yank_is_per_release_and_per_file() -> None:
    view = make_view(
        dist("foo-1.0.tar.gz", yanked="bad"),
        dist("foo-1.0-py3-none-any.whl"),  # 1.0 is not fully yanked: no release-level reason
        dist("foo-2.0.tar.gz", yanked=""),  # yanked without a reason is still yanked
    )
    doc = json.loads(render_json_api(view, INFO, link, version="1.0"))
    assert (doc["info"]["yanked"], doc["info"]["yanked_reason"]) == (False, None)
    (entry,) = json.loads(render_json_api(view, INFO, link, version="2.0"))["urls"]
    assert (entry["yanked"], entry["yanked_reason"]) == (True, None)
    # No release at all (no file names a version): nothing is yanked.
    bare = json.loads(render_json_api(make_view(dist("foo.txt")), INFO, link, version=None))
    assert (bare["info"]["yanked"], bare["urls"]) == (False, [])


def test_json_api_unknown_version() -> None:
    view = make_view(dist("foo-1.0.tar.gz"))
    with pytest.raises(UnknownRelease):
        render_json_api(view, INFO, link, version="2.0")
    with pytest.raises(LookupError):
        render_json_api(view, INFO, link, version="not a version")


def test_json_api_from_real_info() -> None:
    info = parse_json_api_info((DATA / "typing-extensions.pypi.json").read_bytes())
    page = parse_json_page(
        (DATA / "typing-extensions.simple.json").read_bytes(),
        "https://pypi.org/simple/typing-extensions/",
    )
    view = make_view(*page.files)
    doc = json.loads(render_json_api(view, info, link, version=None))
    # The live info said 4.16.0; the view only has up to 4.9.0, and 4.9.0 is final.
    assert doc["info"]["version"] == "4.9.0"
    assert doc["info"]["summary"] == info["summary"]
    assert list(doc["releases"]) == ["4.8.0", "4.9.0rc1", "4.9.0"]
    assert {u["upload_time"] for u in doc["urls"]} == {"2023-12-10T01:14:20", "2023-12-10T01:14:22"}


# --- core metadata -> info ------------------------------------------------------------------------


def test_info_from_real_metadata() -> None:
    info = info_from_metadata(
        (DATA / "typing_extensions-4.16.0-py3-none-any.whl.metadata").read_bytes()
    )
    real = parse_json_api_info((DATA / "typing-extensions.pypi.json").read_bytes())
    for key in (
        "version",
        "summary",
        "author",
        "author_email",
        "license_expression",
        "requires_python",
        "description_content_type",
        "project_urls",
        "requires_dist",
        "home_page",
        "maintainer",
    ):
        assert info[key] == real[key], key
    assert isinstance(info["classifiers"], list) and isinstance(real["classifiers"], list)
    assert sorted(info["classifiers"]) == sorted(real["classifiers"])
    assert isinstance(info["description"], str) and info["description"].startswith(
        "# Typing Extensions"
    )
    assert info["name"] == "typing_extensions"


OLD_METADATA = b"""Metadata-Version: 1.1
Name: oldpkg
Version: 0.3
Summary: An old package
Home-page: http://example.test/
Author: A. Person
Author-email: a@example.test
License: MIT
Description: First line.
        |
        |    indented code
        |Last line.
Keywords: old package
Platform: UNKNOWN
Classifier: License :: OSI Approved :: MIT License
"""

NEW_METADATA = """Metadata-Version: 2.4
Name: newpkg
Version: 1.0
Requires-Dist: requests>=2
Requires-Dist: rich; extra == "cli"
Provides-Extra: cli
Dynamic: license
Project-URL: Source, https://example.test/src
Requires-Python: >=3.9

Body with ünïcode.
""".encode()


def test_info_from_old_metadata() -> None:
    info = info_from_metadata(OLD_METADATA)
    assert info["description"] == "First line.\n\n    indented code\nLast line."
    assert (info["home_page"], info["author"], info["license"], info["platform"]) == (
        "http://example.test/",
        "A. Person",
        "MIT",
        "UNKNOWN",
    )
    assert info["classifiers"] == ["License :: OSI Approved :: MIT License"]
    assert info["requires_dist"] is None and info["project_urls"] is None
    assert info["requires_python"] is None and info["keywords"] == "old package"


def test_info_from_new_metadata() -> None:
    info = info_from_metadata(NEW_METADATA)
    assert info["description"] == "Body with ünïcode.\n"
    assert info["requires_dist"] == ["requests>=2", 'rich; extra == "cli"']
    assert info["provides_extra"] == ["cli"]
    assert info["dynamic"] == ["license"]
    assert info["project_urls"] == {"Source": "https://example.test/src"}
    assert info["classifiers"] == [] and info["summary"] is None
    expected_keys = {
        "name",
        "version",
        "summary",
        "description",
        "description_content_type",
        "author",
        "author_email",
        "maintainer",
        "maintainer_email",
        "license",
        "license_expression",
        "keywords",
        "classifiers",
        "platform",
        "home_page",
        "download_url",
        "requires_dist",
        "requires_python",
        "project_urls",
        "provides_extra",
        "dynamic",
    }
    assert set(info) == expected_keys


# --- filenames ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "version", "kind", "python"),
    [
        ("foo-1.0-py3-none-any.whl", "1.0", "bdist_wheel", "py3"),
        ("foo-1.0-1-py2.py3-none-any.whl", "1.0", "bdist_wheel", "py2.py3"),
        ("foo_bar-2.0rc1.tar.gz", "2.0rc1", "sdist", "source"),
        ("foo-1.0.zip", "1.0", "sdist", "source"),
        ("foo-0.5.tar.bz2", "0.5", "sdist", "source"),
        ("foo-0.5-py2.7.egg", "0.5", "bdist_egg", "2.7"),
        ("foo-0.5.win32.exe", None, "bdist_wininst", "any"),
        ("foo.tar.gz", None, "sdist", "source"),
        ("foo-1.0-bad.whl", None, "bdist_wheel", "any"),
        ("README", None, "sdist", "source"),
    ],
)
def test_filenames(filename: str, version: str | None, kind: str, python: str) -> None:
    parsed = version_of(filename)
    assert (str(parsed) if parsed else None) == version
    assert package_type(filename) == kind
    assert python_version(filename) == python


@pytest.mark.parametrize(
    ("filename", "project"),
    [
        ("Foo_Bar-1.0-py3-none-any.whl", "foo-bar"),
        ("foo-bar-2.0.tar.gz", "foo-bar"),
        ("foo-1.0.zip", "foo"),
        ("Foo.Bar-0.9.tar.bz2", "foo-bar"),  # the archive kinds PyPI once took too
        ("foo-1.0.tgz", "foo"),
        ("foo-notaversion.tgz", None),
        ("foo.tar.gz", None),
        ("foo-1.0.egg", None),  # eggs are not looked up
        ("..-1.0.tar.gz", None),  # only a project name may become part of an upstream URL
        ("README", None),
    ],
)
def test_project_a_filename_names(filename: str, project: str | None) -> None:
    assert project_of(filename) == project


# Each part of a wheel's name, valid and not (packaging 26.3 refuses more tags than before).
_WHEEL_NAMES = (
    st.sampled_from(["foo", "Foo_Bar", "foo.bar", "foo__bar", "", "f!o"]) | st.text("aZ9_.!", max_size=4)
)
_WHEEL_VERSIONS = st.sampled_from(["1.0", "2.0rc1", "1.0.post1", "1.0+local", "1.0.0", "v1", "bad!", ""])
_WHEEL_BUILDS = st.none() | st.sampled_from(["1", "12abc", "abc", "", "1_2"])
_WHEEL_TAGS = st.sampled_from([
    "py3-none-any", "py2.py3-none-any", "cp311-abi3-win_amd64.macosx_11_0_arm64",
    "3py-none-any", "py3--any", "py3-none-", "-none-any", "py3.-none-any", "py3-none-any.",
]) | st.builds("-".join, st.lists(st.text("py3c._!", max_size=4), min_size=3, max_size=3))


@given(_WHEEL_NAMES, _WHEEL_VERSIONS, _WHEEL_BUILDS, _WHEEL_TAGS)
def test_a_wheels_version_is_what_packaging_reads(
    name: str, version: str, build: str | None, tags: str
) -> None:
    # version_of checks a wheel's name, build and tags once each, not for every file.
    filename = "-".join([name, version, *([build] if build is not None else []), tags]) + ".whl"
    try:
        expected: Version | None = parse_wheel_filename(filename)[1]
    except (InvalidWheelFilename, InvalidVersion):
        expected = None
    got = version_of(filename)
    assert (got, str(got)) == (expected, str(expected))


@given(st.text(min_size=1))
@example("foo-1.0.tar.gz")
@example("foo 1.0.tar.gz")
@example("foo-1.0+cpu-py3-none-any.whl")
@example("föö-1.0.tar.gz")
def test_path_mode_links_name_files_as_quote_spells_them(filename: str) -> None:
    # The plain names nearly every file has are used as they are, the rest quoted.
    link = path_links("http://proxy.test", "pypi")
    assert link(dist(filename)).endswith("/" + quote(filename))


def test_versions_are_versions() -> None:
    assert version_of("foo-1.0.0-py3-none-any.whl") == Version("1.0")
    assert canonicalize_name("Foo_Bar") == "foo-bar"
    assert T0 + timedelta(0) == T0


def test_html_fragment_names_only_a_hashlib_guaranteed_hash() -> None:
    # PEP 503: the fragment's hash name must be one hashlib always has; pip reads no other.
    (a,) = anchors(render_html(make_view(dist("foo-1.0.tar.gz", hashes={"blake3": "ab" * 32})), link))
    assert a["href"] == "http://proxy.test/files/foo-1.0.tar.gz"


def test_html_anchor_text_is_the_filename_escaped() -> None:
    name = "foo-1.0&amp;<b>.tar.gz"
    (a,) = anchors(render_html(make_view(dist(name)), link))
    assert a.get_text() == name


def test_pages_of_many_files_list_every_file_once() -> None:
    # Pages are rendered a few hundred files at a time: the chunks must join into one document.
    files = [dist(f"foo-1.{i}.tar.gz") for i in range(1201)]
    view = make_view(*files)
    expected = [f.filename for f in view.files]
    assert [f["filename"] for f in json.loads(render_json(view, link))["files"]] == expected
    assert [a.get_text() for a in anchors(render_html(view, link))] == expected


def test_html_keeps_a_hash_that_is_not_sha256() -> None:
    """A registry that lists only md5 (or sha512): JSON passes it on, HTML must too, else
    pip/uv reading the HTML page check nothing at all."""
    f = DistFile(filename="foo-1.0.tar.gz", url="https://r.test/foo-1.0.tar.gz",
                 hashes={"md5": "0" * 32})
    v = View(name=NormalizedName("foo"), cutoff=datetime(2023, 1, 1, tzinfo=UTC),
             kind="observed", files=(f,), versions=("1.0",))
    link = lambda f: "http://proxy.test/files/" + f.filename  # noqa: E731
    from_json = parse_json_page(render_json(v, link), "http://proxy.test/x/foo/").files[0]
    from_html = parse_html_page(render_html(v, link), "http://proxy.test/x/foo/", "foo").files[0]
    assert from_json.hashes == {"md5": "0" * 32}
    assert from_html.hashes == from_json.hashes
