from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datepin.rewrite.negotiate import choose_format, content_type

JSON = "application/vnd.pypi.simple.v1+json"
V1HTML = "application/vnd.pypi.simple.v1+html"


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        # What real clients send (PROTOCOL.md).
        (f"{JSON}, {V1HTML}; q=0.1, text/html; q=0.01", "v1+json"),  # pip, PDM
        (f"{JSON}, {V1HTML};q=0.2, text/html;q=0.01", "v1+json"),  # uv
        (f"{JSON}, */*;q=0.1", "v1+json"),  # Poetry
        (None, "html"),  # pipenv's hash helper
        ("", "html"),
        ("*/*", "html"),
        # Plain cases.
        ("text/html", "html"),
        (V1HTML, "v1+html"),
        (JSON, "v1+json"),
        ("application/vnd.pypi.simple.latest+json", "v1+json"),
        ("application/vnd.pypi.simple.latest+html", "v1+html"),
        ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", "v1+json"),
        # Ties: text/html, then v1+html, then v1+json.
        (f"{JSON}, {V1HTML}, text/html", "html"),
        (f"{JSON}, {V1HTML}", "v1+html"),
        (f"{JSON};q=0.5, {V1HTML};q=0.5", "v1+html"),
        ("application/*", "v1+html"),
        (f"application/*;q=0.5, {JSON}", "v1+json"),
        (f"application/*, {V1HTML};q=0", "v1+json"),
        # The most specific range decides (RFC 9110 12.5.1): text/* over */*.
        ("*/*, text/*;q=0", "v1+html"),
        # Highest q wins.
        (f"text/html;q=0.5, {JSON};q=0.6", "v1+json"),
        (f"{JSON};q=0.1, text/*;q=0.2", "html"),
        # q=0 excludes, even when a wildcard would match.
        (f"text/html;q=0, {JSON}", "v1+json"),
        ("*/*, text/html;q=0", "v1+html"),
        (f"*/*, text/html;q=0, {V1HTML};q=0", "v1+json"),
        # Nothing acceptable or nothing we know -> HTML, as PyPI does.
        ("application/xml", "html"),
        ("text/html;q=0", "html"),
        (f"{JSON};q=0", "html"),
        # Garbage.
        ("garbage", "html"),
        (";;;,,,", "html"),
        (f"{JSON};q=abc", "html"),
        (f"{JSON};q=2", "html"),
        (f"{JSON};q=nan, text/html;q=0.1", "html"),
        (f"{JSON};q=-1, {V1HTML};q=0.1", "v1+html"),
        (f"{JSON} ; charset=utf-8 ; q=0.9, text/html;q=0.8", "v1+json"),
        # Parameter names are case-insensitive (RFC 9110 5.6.6).
        (f"{JSON};Q=0.5, text/html;q=0.6", "html"),
    ],
)
def test_choose_format(accept: str | None, fmt: str) -> None:
    assert choose_format(accept) == fmt


@given(st.one_of(st.none(), st.text()))
def test_never_raises(accept: str | None) -> None:
    assert choose_format(accept) in ("html", "v1+html", "v1+json")


def test_content_types() -> None:
    assert content_type("html") == "text/html; charset=utf-8"
    assert content_type("v1+html") == V1HTML
    assert content_type("v1+json") == JSON
