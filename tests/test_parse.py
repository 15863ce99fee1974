from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from datepin.model import DistFile
from datepin.rewrite.parse import (
    _PLAIN_RELATIVE,
    _PLAIN_URL,
    NotAProjectPage,
    PageError,
    _file_url,
    check_html_complete,
    parse_html_page,
    parse_json_api_info,
    parse_json_page,
)

DATA = Path(__file__).parent / "data"
BASE = "https://pypi.org/simple/typing-extensions/"
SHA_WHL = "af72aea155e91adfc61c3ae9e0e342dbc0cba726d6cba4b6c72c1f34e47291cd"
URL_WHL = (
    "https://files.pythonhosted.org/packages/b7/f4/6a90020cd2d93349b442bfcb657d0dc91eee65491600"
    "b2cb1d388bc98e6b/typing_extensions-4.9.0-py3-none-any.whl"
)


def _by_name(files: tuple[DistFile, ...]) -> dict[str, DistFile]:
    return {f.filename: f for f in files}


# --- real pages -----------------------------------------------------------------------------


def test_real_json_page() -> None:
    page = parse_json_page((DATA / "typing-extensions.simple.json").read_bytes(), BASE)
    assert page.name == "typing-extensions"
    assert len(page.files) == 6
    whl = _by_name(page.files)["typing_extensions-4.9.0-py3-none-any.whl"]
    assert whl == DistFile(
        filename="typing_extensions-4.9.0-py3-none-any.whl",
        url=URL_WHL,
        hashes={"sha256": SHA_WHL},
        requires_python=">=3.8",
        core_metadata=None,
        yanked=None,
        upload_time=datetime(2023, 12, 10, 1, 14, 20, 617723, tzinfo=UTC),
        upload_time_raw="2023-12-10T01:14:20.617723Z",
        size=32750,
    )
    assert page.status is None and page.status_reason is None


def test_real_html_page_agrees_with_json() -> None:
    html = parse_html_page(
        (DATA / "typing-extensions.simple.html").read_bytes(), BASE, "typing_extensions"
    )
    json_page = parse_json_page((DATA / "typing-extensions.simple.json").read_bytes(), BASE)
    assert html.name == "typing-extensions"
    by_json = _by_name(json_page.files)
    assert set(_by_name(html.files)) == set(by_json)
    for f in html.files:
        j = by_json[f.filename]
        assert (f.url, f.hashes, f.requires_python, f.yanked) == (
            j.url,
            j.hashes,
            j.requires_python,
            j.yanked,
        )
        assert f.upload_time is None  # this PyPI does not put upload times in HTML


def test_real_json_api_info() -> None:
    info = parse_json_api_info((DATA / "typing-extensions.pypi.json").read_bytes())
    assert info["name"] == "typing-extensions"
    assert info["version"] == "4.16.0"
    assert info["requires_python"] == ">=3.9"


# --- JSON (PEP 691) -------------------------------------------------------------------------


def _json(files: list[dict[str, object]], **extra: object) -> bytes:
    return json.dumps(
        {"meta": {"api-version": "1.1"}, "name": "Foo.Bar", "files": files, **extra}
    ).encode()


def _file(**fields: object) -> dict[str, object]:
    return {"filename": "foo-1.0.tar.gz", "url": "foo-1.0.tar.gz", "hashes": {}, **fields}


def test_json_name_is_normalized_and_relative_urls_resolved() -> None:
    page = parse_json_page(
        _json([_file(url="../../files/foo-1.0.tar.gz#sha256=AA", hashes={"sha256": "ABCDEF" * 10 + "ABCD"})]),
        "https://example.test/simple/foo-bar/",
    )
    assert page.name == "foo-bar"
    (f,) = page.files
    assert f.url == "https://example.test/files/foo-1.0.tar.gz"
    assert f.hashes == {"sha256": "abcdef" * 10 + "abcd"}


_URL_CHARS = st.sampled_from(list("aZ09-._~%!$&'()*+,=:@/;?#[]\\ \t\néß") + ["%2F", "..", "//"])


@given(
    st.sampled_from([
        "https://pypi.org/simple/foo/",
        "http://127.0.0.1:8080/r/private/foo/",
        "https://idx.test/simple/foo",  # redirected to a URL without the slash
        "https://idx.test/a/b/simple/foo/?page=1#top",
    ]),
    st.one_of(
        st.from_regex(_PLAIN_URL, fullmatch=True),
        st.from_regex(_PLAIN_RELATIVE, fullmatch=True),
        st.builds(
            "".join,
            st.tuples(
                st.sampled_from(["https://", "http://", "HTTPS://", "ftp://", "//", "/", "", "https:///"]),
                st.lists(_URL_CHARS, max_size=12).map("".join),
            ),
        ),
    ),
)
@example("https://pypi.org/simple/foo/", "../../packages/a/foo-1.0.tar.gz")
@example("https://pypi.org/simple/foo/", "a/..")  # dot segments last: resolved by urllib
@example("https://pypi.org/simple/foo/", "../.")
@example("https://pypi.org/simple/foo/", "//files.test/a/foo-1.0.tar.gz")  # another host
@example("https://pypi.org/simple/foo/", "//files.test")  # a host, not a last segment
def test_file_urls_resolve_as_urljoin_and_urldefrag_resolve_them(base: str, url: str) -> None:
    # The shortcuts for plain absolute and relative URLs must give what urllib gives for
    # every URL.
    try:
        expected = urldefrag(urljoin(base, url)).url
    except ValueError:  # urllib refuses it (an unclosed IPv6 host): the page is refused
        with pytest.raises(ValueError):
            _file_url(base, url)
        return
    assert _file_url(base, url) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(False, None), (True, ""), ("broken", "broken"), ("", "")]
)
def test_json_yanked(value: object, expected: str | None) -> None:
    (f,) = parse_json_page(_json([_file(yanked=value)]), BASE).files
    assert f.yanked == expected


def test_json_yanked_absent_means_not_yanked() -> None:
    (f,) = parse_json_page(_json([_file()]), BASE).files
    assert f.yanked is None and f.core_metadata is None and f.upload_time is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"core-metadata": True}, {}),
        ({"core-metadata": False}, None),
        ({"core-metadata": {"sha256": "AB" * 32}}, {"sha256": "ab" * 32}),
        ({"dist-info-metadata": True}, {}),
        ({"dist-info-metadata": {"sha256": "cd" * 32}}, {"sha256": "cd" * 32}),
        # PEP 714: core-metadata wins over the old key.
        ({"core-metadata": False, "dist-info-metadata": True}, None),
        (
            {"core-metadata": {"sha256": "ab" * 32}, "dist-info-metadata": {"sha256": "cd" * 32}},
            {"sha256": "ab" * 32},
        ),
    ],
)
def test_json_core_metadata(fields: dict[str, object], expected: object) -> None:
    (f,) = parse_json_page(_json([_file(**fields)]), BASE).files
    assert f.core_metadata == expected


def test_json_upload_time_keeps_the_raw_string() -> None:
    (f,) = parse_json_page(
        _json([_file(**{"upload-time": "2023-11-18T07:08:33.123456Z"})]), BASE
    ).files
    assert f.upload_time == datetime(2023, 11, 18, 7, 8, 33, 123456, tzinfo=UTC)
    assert f.upload_time_raw == "2023-11-18T07:08:33.123456Z"


def test_json_upload_time_with_offset() -> None:
    (f,) = parse_json_page(
        _json([_file(**{"upload-time": "2023-11-18T09:08:33+02:00"})]), BASE
    ).files
    assert f.upload_time == datetime(2023, 11, 18, 7, 8, 33, tzinfo=UTC)


@pytest.mark.parametrize(
    ("doc", "status", "reason"),
    [
        ({"project-status": {"status": "archived", "reason": "done"}}, "archived", "done"),
        ({"project-status": {"status": "quarantined"}}, "quarantined", None),
        (
            {
                "meta": {
                    "api-version": "1.4",
                    "project-status": {"status": "deprecated", "reason": "r"},
                }
            },
            "deprecated",
            "r",
        ),
        (
            {
                "meta": {
                    "api-version": "1.4",
                    "project-status": "archived",
                    "project-status-reason": "x",
                }
            },
            "archived",
            "x",
        ),
        ({}, None, None),
    ],
)
def test_json_project_status(
    doc: dict[str, object], status: str | None, reason: str | None
) -> None:
    body = json.dumps({"meta": {"api-version": "1.1"}, "name": "foo", "files": [], **doc}).encode()
    page = parse_json_page(body, BASE)
    assert (page.status, page.status_reason) == (status, reason)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html></html>",
        b"\xff\xfe",
        b"[]",
        b'{"name": "foo"}',
        b'{"name": "foo", "files": null}',
        b'{"name": "foo", "files": {}}',
        b'{"files": []}',
        b'{"name": 3, "files": []}',
        b'{"name": "foo", "files": [3]}',
        b'{"name": "foo", "files": [{"url": "x"}]}',
        b'{"name": "foo", "files": [{"filename": "x"}]}',
        b'{"name": "foo", "files": [{"filename": "x", "url": "x", "hashes": []}]}',
        b'{"name": "foo", "files": [{"filename": "x", "url": "x", "hashes": {"sha256": 1}}]}',
        b'{"name": "foo", "files": [{"filename": "x", "url": "x", "yanked": 1}]}',
        b'{"name": "foo", "files": [{"filename": "x", "url": "x", "size": "12"}]}',
        b'{"name": "foo", "files": [{"filename": "x", "url": "x", "size": -1}]}',
        b'{"name": "foo", "files": [{"filename": "x", "url": "x", "requires-python": 3}]}',
        b'{"name": "foo", "files": [{"filename": "x", "url": "x", "core-metadata": "yes"}]}',
        b'{"name": "foo", "files": [{"filename": "x", "url": "x", "upload-time": "yesterday"}]}',
        b'{"name": "foo", "files": [], "meta": []}',
        b'{"name": "foo", "files": [], "project-status": {"status": 1}}',
    ],
)
def test_json_structural_problems_raise_page_error(body: bytes) -> None:
    with pytest.raises(PageError):
        parse_json_page(body, BASE)


@given(st.binary(max_size=200))
def test_json_garbage_raises_only_page_error(body: bytes) -> None:
    with contextlib.suppress(PageError):
        parse_json_page(body, BASE)


def _reference_files(body: bytes) -> list[tuple[str, str]]:
    """What a page lists, read the plain way (json.loads of the whole page)."""
    return [(f["filename"], f["url"]) for f in json.loads(body)["files"]]


_FILE = st.fixed_dictionaries(
    {"filename": st.text("abc._-", min_size=1, max_size=8), "url": st.text("abc.", min_size=1, max_size=8)},
    optional={"size": st.integers(0, 10**12), "yanked": st.booleans() | st.text(max_size=5),
              "hashes": st.sampled_from([{}, {"sha256": "0f" * 32}, {"md5": "a" * 32, "sha256": "1" * 64}]),
              "core-metadata": st.booleans(), "requires-python": st.text(max_size=6)},
)
_PAGE = st.fixed_dictionaries(
    {"name": st.text("abc-", min_size=1, max_size=6), "files": st.lists(_FILE, max_size=6)},
    optional={"meta": st.just({"api-version": "1.1"}), "versions": st.lists(st.text(max_size=3))},
)


@given(_PAGE, st.sampled_from([None, 0, 2]), st.sampled_from(["", " ", "\n\t "]))
def test_json_read_file_by_file_agrees_with_json_loads(doc: dict[str, object], indent: int | None, pad: str) -> None:
    """The page is read one file entry at a time; whatever the layout, it lists what
    json.loads of the whole page lists, in the same order."""
    body = (pad + json.dumps(doc, indent=indent, ensure_ascii=indent is None) + pad).encode()
    page = parse_json_page(body, "https://idx.test/simple/p/")
    assert [(f.filename, f.url) for f in page.files] == [
        (name, urljoin("https://idx.test/simple/p/", url)) for name, url in _reference_files(body)
    ]


@pytest.mark.parametrize(
    ("body", "files"),
    [
        (b'{"files": [{"filename": "a", "url": "a"}], "name": "p", "files": []}', []),  # last wins
        (b'{"files": 3, "name": "p", "files": [{"filename": "b", "url": "b"}]}', ["b"]),
        (b'\xef\xbb\xbf{"name": "p", "files": []}', []),  # a UTF-8 byte order mark, as json.loads allows
        ('{"name": "p", "files": []}'.encode("utf-16"), []),
    ],
)
def test_json_page_keys_and_encodings_as_json_loads_reads_them(body: bytes, files: list[str]) -> None:
    assert [f.filename for f in parse_json_page(body, BASE).files] == files


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "p", "files": [{"filename": "a", "url": "a"},]}',
        b'{"name": "p", "files": [{"filename": "a", "url": "a"}] "x": 1}',
        b'{"name": "p", "files": [{"filename": "a", "url": "a"}]} []',
        b'{"name": "p", "files": [{"filename": "a", "url": "a"}',
        b'{"name": "p" "files": []}',
        b'{name: "p", "files": []}',
        b'{"name": "p", "files": []',
        b'["name", "files"]',
    ],
)
def test_json_page_not_json_at_all_is_refused(body: bytes) -> None:
    with pytest.raises(PageError, match="not JSON|not a JSON object"):
        parse_json_page(body, BASE)


# --- HTML (PEP 503) -------------------------------------------------------------------------

HTML = b"""<!DOCTYPE html>
<html><head>
<meta name="pypi:repository-version" content="1.4">
<meta name="pypi:project-status" content="archived">
<meta name="pypi:project-status-reason" content="moved to &quot;bar&quot;">
<base href="https://mirror.test/root/">
</head><body>
<a href="pkgs/foo-1.0.tar.gz#sha256=ABCDEF""" + b"AB" * 29 + b"""" data-requires-python="&gt;=3.8,&lt;4"
   data-yanked="bad &amp; broken" data-core-metadata="sha256=""" + b"12" * 32 + b""""
   data-dist-info-metadata="sha256=""" + b"99" * 32 + b"""" data-upload-time="2023-11-18T07:08:33.123456Z">
   foo-1.0.tar.gz </a><br/>
<a href="/abs/foo-1.1-py3-none-any.whl#md5=""" + b"0f" * 16 + b"""" data-yanked data-dist-info-metadata="true"></a>
<a href="https://other.test/foo-1.2.zip#egg=foo" data-core-metadata="false">foo-1.2.zip</a>
<a name="no-href">not a file</a>
</body></html>
"""


def test_html_page_attributes() -> None:
    page = parse_html_page(HTML, "https://pypi.test/simple/foo/", "Foo")
    assert page.name == "foo"
    assert (page.status, page.status_reason) == ("archived", 'moved to "bar"')
    a, b, c = page.files
    assert a == DistFile(
        filename="foo-1.0.tar.gz",
        url="https://mirror.test/root/pkgs/foo-1.0.tar.gz",
        hashes={"sha256": "abcdef" + "ab" * 29},
        requires_python=">=3.8,<4",
        core_metadata={"sha256": "12" * 32},  # data-core-metadata wins over the old name
        yanked="bad & broken",
        upload_time=datetime(2023, 11, 18, 7, 8, 33, 123456, tzinfo=UTC),
        upload_time_raw="2023-11-18T07:08:33.123456Z",
    )
    # No text: the filename is the last path segment; md5 is a hashlib name.
    assert b.filename == "foo-1.1-py3-none-any.whl"
    assert b.url == "https://mirror.test/abs/foo-1.1-py3-none-any.whl"
    assert b.hashes == {"md5": "0f" * 16}
    assert b.yanked == ""
    assert b.core_metadata == {}
    assert b.requires_python is None and b.upload_time is None
    # Unknown fragments are not hashes; "false" advertises no metadata.
    assert c.hashes == {} and c.core_metadata is None and c.yanked is None
    assert c.url == "https://other.test/foo-1.2.zip"


def test_html_without_base_resolves_against_the_page_url() -> None:
    body = b'<a href="../../packages/foo-1.0.tar.gz">foo-1.0.tar.gz</a>'
    (f,) = parse_html_page(body, "https://pypi.test/simple/foo/", "foo").files
    assert f.url == "https://pypi.test/packages/foo-1.0.tar.gz"


def test_html_percent_encoded_filename_from_url() -> None:
    body = b'<a href="/p/foo%2B1-1.0.tar.gz"></a>'
    (f,) = parse_html_page(body, "https://pypi.test/simple/foo/", "foo").files
    assert f.filename == "foo+1-1.0.tar.gz"


def test_html_empty_page_is_a_page() -> None:
    page = parse_html_page(b"<html><body><h1>Links for foo</h1></body></html>", BASE, "foo")
    assert page.files == ()


@pytest.mark.parametrize(
    "body",
    [
        b"<title>Links for foo</title>",  # PEP 503's example; warehouse, pypiserver, GitLab
        b"<html><body><h1>Links for foo</h1></body></html>",  # PyTorch's: a heading alone
        b"<title>root/pypi: links for foo</title>",  # devpi
        b"<html><body><h1>\n    Links\n    for foo\n  </h1></body></html>",  # a template's lines
        b'<meta name="pypi:repository-version" content="1.0">',
        b'<meta name="pypi:project-status" content="quarantined">',
        b'<title>Links for foo</title><a href="https://status.example.com">status</a>',
    ],
)
def test_an_html_page_without_files_that_says_it_is_the_projects_is_a_page(body: bytes) -> None:
    assert parse_html_page(body, BASE, "foo").files == ()


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body><h1>Down for maintenance</h1>"
        b'<a href="https://status.example.com">status</a></body></html>',
        b"<html><head></head><body></body></html>",  # a proxy repository's empty listing
        b'<html><head><title>Sign in</title></head><body><form action="/login"></form>'
        b'<a href="/login/reset">Forgot your password?</a></body></html>',
        b'<html><body><a href="README.html">README.html</a></body></html>',
    ],
)
def test_an_html_page_without_files_that_does_not_say_so_is_not_a_project_page(body: bytes) -> None:
    """Recorded, such a page would say the project had no files at that moment, for good."""
    with pytest.raises(NotAProjectPage, match="lists no package"):
        parse_html_page(body, BASE, "foo")


def test_html_links_to_what_is_not_a_distribution_are_not_files() -> None:
    """pip and uv skip them; in history they would be files nobody installs, "deleted" and
    kept when the link goes."""
    body = (
        b'<html><body><a href="https://status.example.com">status</a>'
        b'<a href="foo-1.0-py3-none-any.whl.metadata">m</a><a href="README.md">README.md</a>'
        b'<a href="foo-latest.tar.gz">foo-latest.tar.gz</a>'
        b'<a href="foo-1.0-py3-none-any.whl">w</a><a href="foo-1.0.tar.gz">s</a></body></html>'
    )
    page = parse_html_page(body, BASE, "foo")
    assert [f.filename for f in page.files] == ["foo-1.0-py3-none-any.whl", "foo-1.0.tar.gz"]


@pytest.mark.parametrize(
    "filename",
    [
        "foo-1.0-rc1.tar.gz",  # 1.0rc1: pip and uv read the version after the project's name
        "foo-2.0-beta.zip",
        "Foo_Bar-1.0-dev.tar.gz",  # the page of foo-bar
        "foo-bar-1.0-rc1.tar.gz",  # a name with a dash: the version is what follows all of it
        "foo-1.0.tar.lz",  # archives pip unpacks (ARCHIVE_EXTENSIONS) beyond packaging's two
        "foo-1.0.txz",
        "foo-1.0.tar.zst",  # uv reads it
    ],
)
def test_html_sdists_pip_and_uv_install_are_files(filename: str) -> None:
    """Their versions are PEP 440 once read after the project's name (`1.0-rc1`), as pip's
    and uv's finders read them; dropped, a project listing only such files is "not a project
    page", and one listing some loses them."""
    project = "foo-bar" if filename.lower().startswith(("foo_bar", "foo-bar")) else "foo"
    body = f'<html><body><a href="{filename}">{filename}</a></body></html>'.encode()
    (f,) = parse_html_page(body, BASE, project).files
    assert f.filename == filename


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe<html>",
        b'<a href="bad">x</a>'.replace(b"x", b"\xc3"),
        b'<a href="f-1.0.tar.gz" data-upload-time="soon">f</a>',
        # Links urllib cannot read (a host that changes under NFKC normalisation, an IPv6
        # address left open): refused like the rest, not a crash of the request.
        '<a href="https://files.example\uff0fevil.example/f-1.0.tar.gz">f</a>'.encode(),
        b'<a href="http://[::1/f-1.0.tar.gz">f</a>',
        b'<base href="http://[::1/"><a href="f-1.0.tar.gz">f</a>',
    ],
)
def test_html_unreadable_raises_page_error(body: bytes) -> None:
    with pytest.raises(PageError):
        parse_html_page(body, BASE, "foo")


@given(st.binary(max_size=200))
def test_html_garbage_raises_only_page_error(body: bytes) -> None:
    with contextlib.suppress(PageError):
        parse_html_page(body, BASE, "foo")


# --- JSON API ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'{"releases": {}}', b'{"info": []}', b'{"info": {"name": "x"}}', b"nope"],
)
def test_json_api_info_malformed(body: bytes) -> None:
    with pytest.raises(PageError):
        parse_json_api_info(body)


# --- cut-short HTML -------------------------------------------------------------------------


def test_html_cut_short_is_refused_before_it_can_lose_files() -> None:
    whole = (DATA / "typing-extensions.simple.html").read_bytes()
    check_html_complete(whole)
    half = whole[: len(whole) // 2]
    # Half a page parses as a valid page with fewer links: only the end tag tells.
    assert 0 < len(parse_html_page(half, BASE, "typing-extensions").files)
    with pytest.raises(PageError, match="cut short"):
        check_html_complete(half)
    check_html_complete(b"<html><body></body>")  # </html> may be omitted after </body>
    check_html_complete(b"<HTML><BODY></BODY></HTML>\n\n")


# --- HTML as plain web servers write it -------------------------------------------------------


def test_html_filename_comes_from_the_url_as_pip_and_uv_read_it() -> None:
    """nginx's autoindex cuts link text longer than 50 bytes ("..&gt;"); pip and uv take a
    file's name from the URL, so the text must not rename the file."""
    name = "a_rather_long_project_name_for_autoindex-1.0-py3-none-any.whl"
    body = (
        '<html><body><pre><a href="../">../</a>\r\n'
        f'<a href="{name}">{name[:47]}..&gt;</a>   01-Jan-2023 00:00   1234\r\n'
        "</pre></body></html>"
    ).encode()
    page = parse_html_page(body, "https://files.test/simple/a/", "a")
    assert [f.filename for f in page.files] == [name]  # and "../" is no file


def test_html_page_is_decoded_in_the_charset_its_content_type_names() -> None:
    body = '<a href="foo-1.0.tar.gz" data-yanked="retir\u00e9e">foo-1.0.tar.gz</a>'.encode("latin-1")
    (f,) = parse_html_page(body, BASE, "foo", "text/html; charset=ISO-8859-1").files
    assert f.yanked == "retir\u00e9e"
    with pytest.raises(PageError):
        parse_html_page(body, BASE, "foo", "text/html")  # no charset: UTF-8, which it is not


# --- what no bytes can match, and versions of the API this reader does not know ----------

_SHA = "ab" * 32


@pytest.mark.parametrize(
    "fields",
    [
        {"hashes": {"sha256": "NOTHEX"}},
        {"hashes": {"sha256": "ab" * 31}},  # 62 digits: no sha256 is that short
        {"hashes": {"sha256": "g" * 64}},  # the length of one, not hex
        {"hashes": {"sha256": "../../" + "a" * 58}},
        {"hashes": {"sha256": ""}},
        {"hashes": {"sha256": _SHA, "md5": "xyz"}},
        {"hashes": {"sha256": _SHA}, "core-metadata": {"sha256": "zz"}},
    ],
)
def test_json_hash_no_bytes_can_match_is_refused(fields: dict[str, object]) -> None:
    """A file is stored and linked under its sha256 (/files/<registry>/<sha256>/<name>) and
    served only if its bytes match: a digest that is not hex of the algorithm's length names
    a file nobody can fetch, so the page is refused like any other malformed field."""
    with pytest.raises(PageError, match="hash"):
        parse_json_page(_json([_file(**fields)]), BASE)


@pytest.mark.parametrize("fragment", ["#sha256=NOTHEX", "#sha256=abc", "#sha256=" + "0" * 63 + "g"])
def test_html_hash_no_bytes_can_match_is_refused(fragment: str) -> None:
    body = f'<html><body><a href="/p/foo-1.0.tar.gz{fragment}">foo-1.0.tar.gz</a></body></html>'
    with pytest.raises(PageError, match="hash"):
        parse_html_page(body.encode(), BASE, "foo")


def test_hashes_are_kept_lowercase_whatever_case_upstream_wrote() -> None:
    (f,) = parse_json_page(_json([_file(hashes={"sha256": _SHA.upper()})]), BASE).files
    assert f.hashes == {"sha256": _SHA}


@pytest.mark.parametrize("version", ["2.0", "10.1", 2, "x"])
def test_json_page_of_an_api_major_version_not_1_is_refused(version: object) -> None:
    """PEP 629: a client seeing a major version it does not know must fail hard."""
    body = json.dumps({"meta": {"api-version": version}, "name": "foo", "files": []}).encode()
    with pytest.raises(PageError, match="api-version"):
        parse_json_page(body, BASE)


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.4", "1.99"])
def test_json_page_of_api_version_1_is_read(version: str) -> None:
    body = json.dumps({"meta": {"api-version": version}, "name": "foo", "files": []}).encode()
    assert parse_json_page(body, BASE).files == ()


def test_html_page_of_a_repository_version_not_1_is_refused() -> None:
    body = (b'<html><head><meta name="pypi:repository-version" content="2.0"></head>'
            b'<body><a href="/p/foo-1.0.tar.gz">foo-1.0.tar.gz</a></body></html>')
    with pytest.raises(PageError, match="repository-version"):
        parse_html_page(body, BASE, "foo")
