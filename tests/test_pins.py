from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datepin.pins import Pin, PinError, format_time, parse_pin, parse_timestamp

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "cutoff"),
    [
        ("2023-11-18", datetime(2023, 11, 18, tzinfo=UTC)),
        ("2023-11-18T14:05:00Z", datetime(2023, 11, 18, 14, 5, tzinfo=UTC)),
        ("2023-11-18T14:05:00+02:00", datetime(2023, 11, 18, 12, 5, tzinfo=UTC)),
        ("2023-11-18T14:05:00-05:30", datetime(2023, 11, 18, 19, 35, tzinfo=UTC)),
        ("2023-11-18t14:05:00z", datetime(2023, 11, 18, 14, 5, tzinfo=UTC)),
        ("2023-11-18T14:05:00.25Z", datetime(2023, 11, 18, 14, 5, 0, 250000, tzinfo=UTC)),
        ("2023-11-18T00:30:00+01:00", datetime(2023, 11, 17, 23, 30, tzinfo=UTC)),
        ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_dated_pins(text: str, cutoff: datetime) -> None:
    pin = parse_pin(text, now=NOW)
    assert pin == Pin(text=text, cutoff=cutoff)
    assert pin.cutoff is not None and pin.cutoff.utcoffset() == timedelta(0)


def test_live() -> None:
    assert parse_pin("live", now=NOW) == Pin(text="live", cutoff=None)


@pytest.mark.parametrize(
    "text",
    [
        "2023-13-01",
        "2023-02-30",
        "2023-11-18T14:05Z",  # seconds are required
        "2023-11-18T14:05:00",  # a zone is required
        "2023-11-18 14:05:00Z",
        "2023-11-18T24:00:00Z",
        "2023-11-18T14:05:60Z",
        "2023-11-18T14:05:00+24:00",
        "2023-11-18T14:05:00+01:60",
        "2023-11-18T14:05:00.Z",
        "23-11-18",
        "2023/11/18",
        "20231118",
        "Live",
        " live",
        "2023-11-18 ",
        "",
        "yesterday",
        "\uff12\uff10\uff12\uff13-11-18",  # fullwidth digits
        "0000-01-01",
        "9999-12-31T23:59:59-01:00",
    ],
)
def test_malformed_pins_name_the_text_and_the_forms(text: str) -> None:
    with pytest.raises(PinError) as info:
        parse_pin(text, now=NOW)
    message = str(info.value)
    assert repr(text) in message
    assert "YYYY-MM-DD" in message and "RFC 3339" in message and "live" in message


def test_pin_error_is_a_value_error() -> None:
    assert issubclass(PinError, ValueError)


@pytest.mark.parametrize(
    "text", ["2026-11-27", "2026-11-26T12:00:01Z", "2026-11-26T13:00:00+00:30"]
)
def test_future_pins_are_rejected_saying_so(text: str) -> None:
    with pytest.raises(PinError) as info:
        parse_pin(text, now=NOW)
    assert "future" in str(info.value)
    assert "2026-11-26T12:00:00Z" in str(info.value)


def test_a_pin_at_now_and_today_are_accepted() -> None:
    assert parse_pin("2026-11-26T12:00:00Z", now=NOW).cutoff == NOW
    assert parse_pin("2026-11-26", now=NOW).cutoff == datetime(2026, 11, 26, tzinfo=UTC)


def test_now_is_compared_as_an_instant() -> None:
    now = datetime(2026, 11, 26, 13, 0, tzinfo=timezone(timedelta(hours=1)))  # 12:00Z
    assert parse_pin("2026-11-26T12:00:00Z", now=now).cutoff == NOW
    with pytest.raises(PinError):
        parse_pin("2026-11-26T12:30:00Z", now=now)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        parse_pin("2023-01-01", now=datetime(2026, 1, 1))


def test_sub_microsecond_cutoffs_round_up_and_upload_times_down() -> None:
    base = datetime(2023, 1, 1, tzinfo=UTC)
    assert parse_timestamp("2023-01-01T00:00:00.0000001Z") == base + timedelta(microseconds=1)
    assert parse_timestamp("2023-01-01T00:00:00.0000001Z", round_up=False) == base
    assert parse_timestamp("2023-01-01T00:00:00.1000000Z") == base + timedelta(milliseconds=100)


@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
    st.integers(min_value=0, max_value=6),
    st.booleans(),
)
def test_plain_utc_timestamps_read_as_any_other(moment: datetime, digits: int, round_up: bool) -> None:
    # PyPI's form (`Z`, up to microseconds) is read by datetime itself: the same instant.
    fraction = f".{moment.microsecond:06d}"[: digits + 1] if digits else ""
    text = moment.isoformat(timespec="seconds")
    expected = moment.replace(
        microsecond=int(fraction[1:].ljust(6, "0")) if digits else 0, tzinfo=UTC
    )
    assert parse_timestamp(f"{text}{fraction}Z", round_up=round_up) == expected


@pytest.mark.parametrize(
    "text",
    ["2021-13-01T00:00:00Z", "0000-01-01T00:00:00Z", "2021-01-01T23:59:60Z", "2021-02-30T00:00:00.5Z"],
)
def test_impossible_plain_utc_timestamps_are_refused(text: str) -> None:
    with pytest.raises(PinError, match="not a valid time"):
        parse_timestamp(text)


def test_timestamps_without_zone_only_when_asked() -> None:
    with pytest.raises(PinError):
        parse_timestamp("2023-11-18T07:08:33")
    assert parse_timestamp("2023-11-18T07:08:33", assume_utc=True) == datetime(
        2023, 11, 18, 7, 8, 33, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (datetime(2023, 11, 18, tzinfo=UTC), "2023-11-18T00:00:00Z"),
        (datetime(2023, 11, 18, 7, 8, 33, 123456, tzinfo=UTC), "2023-11-18T07:08:33.123456Z"),
        (datetime(2023, 11, 18, 7, 8, 33, 500000, tzinfo=UTC), "2023-11-18T07:08:33.500000Z"),
        (datetime(2023, 11, 18, 2, 0, tzinfo=timezone(timedelta(hours=2))), "2023-11-18T00:00:00Z"),
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05Z"),
    ],
)
def test_format_time(dt: datetime, text: str) -> None:
    assert format_time(dt) == text


def test_format_time_refuses_naive() -> None:
    with pytest.raises(ValueError):
        format_time(datetime(2023, 1, 1))


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )
)
def test_format_time_round_trips_through_parse_pin(dt: datetime) -> None:
    text = format_time(dt)
    now = datetime(9999, 12, 31, tzinfo=UTC)
    assert parse_pin(text, now=now) == Pin(text=text, cutoff=dt)


@given(st.text(max_size=40))
def test_parse_pin_only_raises_pin_error(text: str) -> None:
    try:
        pin = parse_pin(text, now=NOW)
    except PinError:
        return
    assert parse_pin(pin.text, now=NOW) == pin  # the text it keeps reads back the same
    assert pin.cutoff is None or pin.cutoff <= NOW
    for _, override in pin.overrides:
        assert override.cutoff is None or override.cutoff <= NOW


# -- per-project overrides ---------------------------------------------------------------------


def test_overrides_apply_to_their_project_and_the_base_to_every_other() -> None:
    pin = parse_pin("2018-06-01,setuptools=live,wheel=2024-01-01", now=NOW)
    assert pin.text == "2018-06-01,setuptools=live,wheel=2024-01-01"
    assert pin.cutoff == datetime(2018, 6, 1, tzinfo=UTC)
    assert pin.for_project("setuptools") == Pin(text="live", cutoff=None)
    assert pin.for_project("wheel") == Pin(text="2024-01-01", cutoff=datetime(2024, 1, 1, tzinfo=UTC))
    assert pin.for_project("numpy") == Pin(text="2018-06-01", cutoff=datetime(2018, 6, 1, tzinfo=UTC))
    assert pin.for_project("numpy").overrides == ()


def test_a_pin_without_overrides_applies_to_every_project_as_it_is() -> None:
    pin = parse_pin("2023-11-18T14:05:00Z", now=NOW)
    assert pin.overrides == () and pin.for_project("anything") == pin


def test_override_names_are_compared_pep_503_normalised() -> None:
    pin = parse_pin("live,Zope.Interface=2020-01-01,typing_extensions=2021-01-01", now=NOW)
    assert pin.text == "live,zope-interface=2020-01-01,typing-extensions=2021-01-01"
    assert pin.cutoff is None
    assert pin.for_project("zope-interface").cutoff == datetime(2020, 1, 1, tzinfo=UTC)
    assert pin.for_project("Typing.Extensions").cutoff == datetime(2021, 1, 1, tzinfo=UTC)


def test_an_override_may_be_a_timestamp() -> None:
    pin = parse_pin("2018-06-01,setuptools=2024-01-01T12:00:00+02:00", now=NOW)
    assert pin.for_project("setuptools").cutoff == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert pin.for_project("setuptools").text == "2024-01-01T12:00:00+02:00"


def test_a_percent_encoded_pin_reads_as_written_plainly() -> None:
    encoded = parse_pin("2018-06-01%2Csetuptools%3Dlive%2cwheel%3d2024-01-01T00%3A00%3A00Z", now=NOW)
    assert encoded == parse_pin("2018-06-01,setuptools=live,wheel=2024-01-01T00:00:00Z", now=NOW)


def test_thirty_two_overrides_are_accepted() -> None:
    text = "2018-06-01" + "".join(f",p{i}=live" for i in range(32))
    assert len(parse_pin(text, now=NOW).overrides) == 32


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2018-06-01,setuptools=live,Setuptools=2024-01-01", "names setuptools twice"),
        ("2018-06-01,setuptools=live,setuptools=live", "names setuptools twice"),
        ("2018-06-01,", "empty part"),
        ("2018-06-01,,setuptools=live", "empty part"),
        (",setuptools=live", "empty part"),
        ("2018-06-01" + "".join(f",p{i}=live" for i in range(33)), "33 overrides, at most 32"),
        ("2018-06-01,setuptools", "'setuptools' is not <project>=<pin>"),
        ("2018-06-01,=live", "'=live' is not <project>=<pin>"),
        ("2018-06-01,-bad-=live", "'-bad-' is not a project name"),
        ("2018-06-01,setuptools-=live", "'setuptools-' is not a project name"),
        ("2018-06-01,setup tools=live", "'setup tools' is not a project name"),
        ("2018-06-01,setuptools=live=2024-01-01", "no overrides of its own"),
        ("setuptools=live", "'setuptools=live' is not a pin"),
        ("2018-06-01,setuptools=2023-13-45", "'2023-13-45' is not a pin"),
        ("2018-06-01,setuptools=2999-01-01", "in the future"),
        ("2999-01-01,setuptools=live", "in the future"),
    ],
)
def test_malformed_overrides_say_why_and_show_the_form(text: str, reason: str) -> None:
    with pytest.raises(PinError) as info:
        parse_pin(text, now=NOW)
    message = str(info.value)
    assert reason in message and "\n" not in message
    assert "<pin>[,<project>=<pin>]..." in message
