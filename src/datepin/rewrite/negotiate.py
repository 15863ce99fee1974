"""Content negotiation for simple-API pages (PEP 691), as PyPI does it.

Highest q wins; ties prefer text/html, then v1+html, then v1+json (PROTOCOL.md); no Accept,
`*/*` alone, or nothing acceptable -> text/html.  Garbage never raises.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Format", "choose_format", "content_type"]

Format = Literal["html", "v1+html", "v1+json"]

# In tie-break order: the first of several equal q-values wins.
_FORMATS: tuple[Format, ...] = ("html", "v1+html", "v1+json")

# Media ranges naming each format exactly.  `latest` is PEP 691's alias for the newest v1.
_EXACT: dict[Format, frozenset[str]] = {
    "html": frozenset({"text/html"}),
    "v1+html": frozenset(
        {"application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.latest+html"}
    ),
    "v1+json": frozenset(
        {"application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.latest+json"}
    ),
}
_SUBTYPE_WILDCARD: dict[Format, str] = {
    "html": "text/*",
    "v1+html": "application/*",
    "v1+json": "application/*",
}

_CONTENT_TYPES: dict[Format, str] = {
    "html": "text/html; charset=utf-8",
    "v1+html": "application/vnd.pypi.simple.v1+html",
    "v1+json": "application/vnd.pypi.simple.v1+json",
}


def choose_format(accept: str | None) -> Format:
    """The page format to answer with for this Accept header."""
    ranges = _parse_accept(accept or "")
    scores = {fmt: _quality(fmt, ranges) for fmt in _FORMATS}
    best = max(_FORMATS, key=lambda fmt: scores[fmt])  # max() keeps the first of equals
    return best if scores[best] > 0 else "html"


def content_type(fmt: Format) -> str:
    return _CONTENT_TYPES[fmt]


def _quality(fmt: Format, ranges: dict[str, float]) -> float:
    """q of the most specific range matching `fmt` (RFC 9110 12.5.1); 0 if none does."""
    exact = [ranges[r] for r in _EXACT[fmt] if r in ranges]
    if exact:
        return max(exact)
    for wildcard in (_SUBTYPE_WILDCARD[fmt], "*/*"):
        if wildcard in ranges:
            return ranges[wildcard]
    return 0.0


def _parse_accept(accept: str) -> dict[str, float]:
    """media range -> q; entries with a malformed q are dropped."""
    ranges: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        q = _q_value(params)
        if "/" not in media or q is None:
            continue
        ranges[media] = max(q, ranges.get(media, 0.0))
    return ranges


def _q_value(params: list[str]) -> float | None:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() != "q":
            continue
        try:
            q = float(value.strip())
        except ValueError:
            return None
        return q if 0.0 <= q <= 1.0 else None  # also rejects nan and inf
    return 1.0
