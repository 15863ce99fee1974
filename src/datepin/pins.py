"""Pins: what a client asks for (a date, a timestamp or `live`) and the instant it stands for.

This is the one place dates are read (DESIGN.md, "Pins").  Everything returned is a
timezone-aware UTC datetime; the clock is a parameter (`now`), never read here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

__all__ = ["Pin", "PinError", "format_time", "leading_timestamp", "parse_pin", "parse_timestamp"]

LIVE = "live"

_ACCEPTED = "use YYYY-MM-DD, an RFC 3339 timestamp such as 2023-11-18T14:05:00Z, or live"

# ASCII digits only ([0-9], not \d, which also matches other scripts' digits).
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


class PinError(ValueError):
    """A pin (or timestamp) that cannot be read, or names a moment that is not over yet."""


@dataclass(frozen=True, slots=True)
class Pin:
    text: str  # canonical text: "live", or the date / timestamp as the client wrote it
    cutoff: datetime | None  # None: live


def parse_pin(text: str, *, now: datetime) -> Pin:
    """Read a pin; reject malformed ones and cutoffs later than `now`."""
    _require_aware(now, "now")
    if text == LIVE:
        return Pin(text=LIVE, cutoff=None)
    try:
        cutoff = _parse_date(text) if _DATE.fullmatch(text) else parse_timestamp(text)
    except PinError:
        raise PinError(f"{text!r} is not a pin: {_ACCEPTED}") from None
    if cutoff > now:
        raise PinError(
            f"{text!r} is in the future (now is {format_time(now)}): "
            "a pin must name a moment that is over"
        )
    return Pin(text=text, cutoff=cutoff)


def leading_timestamp(text: str) -> str | None:
    """The RFC 3339 timestamp `text` starts with, as written there (unchecked: parse_timestamp
    reads it), or None."""
    match = _TIMESTAMP.match(text)
    return match.group(0) if match else None


def parse_timestamp(text: str, *, assume_utc: bool = False, round_up: bool = True) -> datetime:
    """Read an RFC 3339 timestamp (seconds required) into an aware UTC datetime.

    Without `assume_utc` the zone (`Z` or an offset) is required; with it, a timestamp
    without a zone is read as UTC (PyPI's JSON API writes `upload_time` that way).

    Fractions beyond microseconds are rounded up for cutoffs and down (`round_up=False`)
    for upload times: then `upload < cutoff` on the rounded values is exactly the
    comparison of the exact values whenever one side has microsecond precision.
    """
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise PinError(f"{text!r} is not an RFC 3339 timestamp")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if zone is None and not assume_utc:
        raise PinError(f"{text!r} has no time zone")
    try:
        parsed = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=_zone(zone),
        )
        return (parsed + _fraction(fraction, round_up=round_up)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # month 13, second 60, year 0, 9999 + 1s
        raise PinError(f"{text!r} is not a valid time: {exc}") from None


def format_time(dt: datetime) -> str:
    """RFC 3339 in UTC with `Z`; microseconds only when there are some."""
    _require_aware(dt, "dt")
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _parse_date(text: str) -> datetime:
    """`YYYY-MM-DD` -> the start of that day, UTC (never local time: DESIGN.md)."""
    year, month, day = (int(part) for part in text.split("-"))
    try:
        return datetime(year, month, day, tzinfo=UTC)
    except ValueError as exc:
        raise PinError(f"{text!r} is not a valid date: {exc}") from None


def _zone(zone: str | None) -> timezone:
    if zone is None or zone in ("Z", "z"):
        return UTC
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 23 or minutes > 59:
        raise PinError(f"bad UTC offset {zone!r}")
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if zone[0] == "-" else offset)


def _fraction(digits: str | None, *, round_up: bool) -> timedelta:
    if not digits:
        return timedelta(0)
    micros = int(digits[:6].ljust(6, "0"))
    if round_up and digits[6:].strip("0"):
        micros += 1
    return timedelta(microseconds=micros)


def _require_aware(dt: datetime, what: str) -> None:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {dt!r}")
