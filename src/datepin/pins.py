"""Pins: what a client asks for (a date, a timestamp or `live`) and the instant it stands for.

This is the one place dates are read (DESIGN.md, "Pins").  Everything returned is a
timezone-aware UTC datetime; the clock is a parameter (`now`), never read here.

A pin may name other pins for some projects: `2018-06-01,setuptools=live` (DESIGN.md: old
dates often need a newer `setuptools` to build sdists).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import unquote

from packaging.utils import NormalizedName, canonicalize_name

__all__ = ["Pin", "PinError", "format_time", "leading_pin", "parse_pin", "parse_timestamp"]

LIVE = "live"
MAX_OVERRIDES = 32

_FORMS = "use YYYY-MM-DD, an RFC 3339 timestamp such as 2023-11-18T14:05:00Z, or live"
_GRAMMAR = "<pin>[,<project>=<pin>]... (e.g. 2018-06-01,setuptools=live)"
_ACCEPTED = f"{_FORMS}, with per-project overrides after it: {_GRAMMAR}"
# PEP 508 names (as routes reads them in URLs).
_NAME = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE)

# ASCII digits only ([0-9], not \d, which also matches other scripts' digits).
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
# The form PyPI writes upload times in (and format_time writes): UTC, `Z`, at most
# microseconds.  datetime.fromisoformat reads it exactly, in a fifth of the time (a big
# page lists thousands).
_PLAIN_UTC = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z"
)
# A pin's text up to the first colon that is not in a timestamp (the base's or an override's).
# Each repetition starts at a comma, so matching takes time linear in the text.
_VALUE = rf"(?:{_TIMESTAMP.pattern}|[^,:]*)"
_LEADING_PIN = re.compile(rf"{_VALUE}(?:,[^,:=]*={_VALUE})*")


class PinError(ValueError):
    """A pin (or timestamp) that cannot be read, or names a moment that is not over yet."""


@dataclass(frozen=True, slots=True)
class Pin:
    # Canonical text: "live", or the date / timestamp as the client wrote it; then each
    # override as `,<normalised project>=<pin>`, in the order written.
    text: str
    cutoff: datetime | None  # the base pin's; None: live
    overrides: tuple[tuple[NormalizedName, Pin], ...] = ()

    def for_project(self, name: str) -> Pin:
        """The pin a project's answers are given at: its override, else the base pin."""
        if not self.overrides:
            return self
        project = canonicalize_name(name)
        for overridden, pin in self.overrides:
            if overridden == project:
                return pin
        return Pin(text=self.text.partition(",")[0], cutoff=self.cutoff)


def parse_pin(text: str, *, now: datetime) -> Pin:
    """Read a pin and its per-project overrides (`<pin>[,<project>=<pin>]...`); reject
    malformed ones and cutoffs later than `now`.  A percent-encoded pin is read decoded (no
    pin holds a `%`): a client may encode the `,` `=` `:` of an index URL or credentials."""
    _require_aware(now, "now")
    if "%" in text:
        text = unquote(text)
    base, *parts = text.split(",")
    if not parts:
        return _parse_one(text, now=now, forms=_ACCEPTED)
    if len(parts) > MAX_OVERRIDES:
        raise PinError(
            f"{text[:40]!r}... has {len(parts)} overrides, at most {MAX_OVERRIDES}: {_GRAMMAR}"
        )
    if not base or not all(parts):
        raise PinError(f"{text!r} has an empty part: {_GRAMMAR}")
    try:
        pin = _parse_one(base, now=now)
        overrides: dict[NormalizedName, Pin] = {}
        for part in parts:
            name, project = _override_name(part)
            if project in overrides:
                raise PinError(f"names {project} twice")
            overrides[project] = _parse_one(part[len(name) + 1 :], now=now)
    except PinError as e:
        raise PinError(f"{text!r}: {e}; a pin with overrides is {_GRAMMAR}") from None
    canonical = ",".join([pin.text, *(f"{name}={p.text}" for name, p in overrides.items())])
    return Pin(text=canonical, cutoff=pin.cutoff, overrides=tuple(overrides.items()))


def _override_name(part: str) -> tuple[str, NormalizedName]:
    """The project an override part (`<project>=<pin>`) names, as written and normalised."""
    name, equals, value = part.partition("=")
    if not equals or not name:
        raise PinError(f"{part!r} is not <project>=<pin>")
    if not _NAME.fullmatch(name):
        raise PinError(f"{name!r} is not a project name (PEP 508)")
    if "=" in value:
        raise PinError(f"the pin of {name} has no overrides of its own")
    return name, canonicalize_name(name)


def _parse_one(text: str, *, now: datetime, forms: str = _FORMS) -> Pin:
    """A pin without overrides: a date, a timestamp or `live`.  `forms`: what a malformed
    one is told to use."""
    if text == LIVE:
        return Pin(text=LIVE, cutoff=None)
    try:
        cutoff = _parse_date(text) if _DATE.fullmatch(text) else parse_timestamp(text)
    except PinError:
        raise PinError(f"{text!r} is not a pin: {forms}") from None
    if cutoff > now:
        raise PinError(
            f"{text!r} is in the future (now is {format_time(now)}): "
            "a pin must name a moment that is over"
        )
    return Pin(text=text, cutoff=cutoff)


def leading_pin(text: str) -> str:
    """The pin `text` starts with, up to the first colon outside a timestamp (unchecked:
    parse_pin reads it): decoded proxy credentials put a pin's colons before the user name's."""
    match = _LEADING_PIN.match(text)
    assert match is not None  # every part of the pattern may match nothing
    return match.group(0)


def parse_timestamp(text: str, *, assume_utc: bool = False, round_up: bool = True) -> datetime:
    """Read an RFC 3339 timestamp (seconds required) into an aware UTC datetime.

    Without `assume_utc` the zone (`Z` or an offset) is required; with it, a timestamp
    without a zone is read as UTC (PyPI's JSON API writes `upload_time` that way).

    Fractions beyond microseconds are rounded up for cutoffs and down (`round_up=False`)
    for upload times: then `upload < cutoff` on the rounded values is exactly the
    comparison of the exact values whenever one side has microsecond precision.
    """
    if _PLAIN_UTC.fullmatch(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # month 13 and the like: refused below, as any other timestamp
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
