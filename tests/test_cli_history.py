"""`datepin history` and `datepin cache`: what a user reads about the past and the file store."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from datepin.blobs import BlobStore
from datepin.cli import main
from datepin.history import HistoryStore
from datepin.model import DistFile, ProjectPage

T0 = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def cli(data: Path, *args: str) -> Result:
    return CliRunner(env={"DATEPIN_CONFIG": None}).invoke(main, [*args, "--data-dir", str(data)])


def wait_for(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def content(filename: str) -> bytes:
    return f"the bytes of {filename}".encode()


def dist(filename: str, uploaded: datetime, yanked: str | None = None) -> DistFile:
    return DistFile(
        filename=filename,
        url=f"https://files.example/{filename}",
        hashes={"sha256": hashlib.sha256(content(filename)).hexdigest()},
        yanked=yanked,
        upload_time=uploaded,
        upload_time_raw=uploaded.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        size=len(content(filename)),
    )


def page(*files: DistFile, status: str | None = None) -> ProjectPage:
    return ProjectPage(name="demo", files=files, status=status)  # type: ignore[arg-type]


OLD = dist("demo-1.0-py3-none-any.whl", T0 - 300 * DAY)
MID = dist("demo-2.0-py3-none-any.whl", T0 - 30 * DAY)
MID_YANKED = dist(MID.filename, MID.upload_time, yanked="broken")  # type: ignore[arg-type]
LATE = dist("demo-3.0-py3-none-any.whl", T0 + 5 * DAY)
BACKFILL = dist("demo-1.0-py2-none-any.whl", T0 - 299 * DAY)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A history of `demo`: observed from T0 daily; 2.0 yanked on day 2 and unyanked on day 4;
    3.0 uploaded on day 5; 1.0 deleted on day 6 (kept in the store); a wheel backfilled for
    1.0 on day 7; archived on day 8; the project gone (404) on day 9."""
    data = tmp_path / "data"
    history = HistoryStore(data / "history.sqlite3")
    days = [
        page(OLD, MID),
        page(OLD, MID),
        page(OLD, MID_YANKED),
        page(OLD, MID_YANKED),
        page(OLD, MID),
        page(OLD, MID, LATE),
        page(MID, LATE),
        page(MID, LATE, BACKFILL),
        page(MID, LATE, BACKFILL, status="archived"),
        None,
    ]
    for day, observed in enumerate(days):
        history.record("pypi", "demo", observed, T0 + day * DAY)
    history.close()
    store = BlobStore(data / "blobs", size_limit=1 << 30)
    for f in (OLD, LATE):
        with store.open_fill(f.sha256) as fill:
            fill.write(content(f.filename))
            fill.commit()
    store.mark_irreplaceable(OLD.sha256 or "")
    store.close()
    return data


def test_history_tells_each_files_story(data: Path) -> None:
    result = cli(data, "history", "demo")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "pypi:demo: observed 10 times, 2024-03-01T00:00:00Z .. 2024-03-10T00:00:00Z" in text
    assert "project not found upstream (404) from 2024-03-10T00:00:00Z (still)" in text
    assert "status archived since 2024-03-09T00:00:00Z" in text
    old = text.split(OLD.filename)[1].split("demo-")[0]
    assert "uploaded 2023-05-06T00:00:00Z; first seen 2024-03-01T00:00:00Z; last seen 2024-03-06T00:00:00Z" in old
    assert "gone since 2024-03-07T00:00:00Z" in old
    assert "stored, irreplaceable" in old
    mid = text.split(MID.filename)[1].split("demo-")[0]
    assert "yanked at 2024-03-03T00:00:00Z ('broken')" in mid
    assert "unyanked at 2024-03-05T00:00:00Z" in mid
    assert "last seen 2024-03-09T00:00:00Z" in mid and "gone since 2024-03-10T00:00:00Z" in mid
    assert "not in the blob store" in mid
    late = text.split(LATE.filename)[1].split("demo-")[0]
    assert "stored\n" in late and "irreplaceable" not in late


def test_history_at_a_pin_gives_the_reason_for_each_file(data: Path) -> None:
    result = cli(data, "history", "demo", "--at", "2024-03-04T12:00:00Z")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "view at 2024-03-04T12:00:00Z (cutoff 2024-03-04T12:00:00Z, observed): 2 of 4 files visible" in lines
    assert f"  + {OLD.filename}: visible; uploaded 2023-05-06T00:00:00Z" in lines
    assert f"  + {MID.filename}: visible; uploaded 2024-01-31T00:00:00Z; yanked as of cutoff: 'broken'" in lines
    assert f"  - {BACKFILL.filename}: first seen at 2024-03-08T00:00:00Z, after the first " \
        "observation at/after the cutoff (2024-03-05T00:00:00Z): backfill" in lines

    later = cli(data, "history", "demo", "--at", "2024-03-05T12:00:00Z").stdout.splitlines()
    assert f"  + {MID.filename}: visible; uploaded 2024-01-31T00:00:00Z" in later  # unyanked
    assert f"  - {LATE.filename}: uploaded 2024-03-06T00:00:00Z, not before the cutoff" in later

    deleted = cli(data, "history", "demo", "--at", "2024-03-07T12:00:00Z").stdout
    assert f"  - {OLD.filename}: deleted upstream: seen gone at 2024-03-07T00:00:00Z" in deleted
    gone = cli(data, "history", "demo", "--at", "2024-03-11").stdout
    assert "0 of 4 files visible" in gone


def test_history_at_a_pin_with_overrides_shows_the_pin_applied_to_the_project(data: Path) -> None:
    # The project's own override applies; another project's does not.
    overridden = cli(data, "history", "demo", "--at", "2024-02-01,Demo=2024-03-05T12:00:00Z")
    assert overridden.exit_code == 0, overridden.output
    lines = overridden.stdout.splitlines()
    assert "view at 2024-03-05T12:00:00Z (cutoff 2024-03-05T12:00:00Z, observed): 2 of 4 files visible" \
        in lines
    # The reasons too: at the base pin, the first observation after the cutoff is 2024-03-01's.
    assert f"  - {BACKFILL.filename}: first seen at 2024-03-08T00:00:00Z, after the first " \
        "observation at/after the cutoff (2024-03-06T00:00:00Z): backfill" in lines
    other = cli(data, "history", "demo", "--at", "2024-02-01,setuptools=live")
    assert "view at 2024-02-01 (cutoff 2024-02-01T00:00:00Z, reconstructed)" in other.stdout
    bad = cli(data, "history", "demo", "--at", "2024-02-01,demo=live,demo=live")
    assert bad.exit_code != 0 and "names demo twice" in bad.output


def test_history_json_is_for_scripts(data: Path) -> None:
    result = cli(data, "history", "demo", "--json", "--at", "2024-02-01")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["project"] == "demo" and doc["observations"]["count"] == 10
    assert doc["not_found"] == [{"from": "2024-03-10T00:00:00Z", "until": None}]
    files = {f["filename"]: f for f in doc["files"]}
    assert files[OLD.filename]["gone_since"] == "2024-03-07T00:00:00Z"
    assert files[OLD.filename]["stored"] and files[OLD.filename]["irreplaceable"]
    assert files[MID.filename]["yank_changes"] == [
        {"at": "2024-03-03T00:00:00Z", "yanked": True, "reason": "broken"},
        {"at": "2024-03-05T00:00:00Z", "yanked": False, "reason": None},
    ]
    assert doc["view"]["kind"] == "reconstructed" and doc["view"]["versions"] == ["1.0", "2.0"]
    verdicts = {v["filename"]: v for v in doc["view"]["files"]}
    assert verdicts[MID.filename]["visible"] and verdicts[MID.filename]["yanked"] is None
    assert verdicts[OLD.filename]["reason"].startswith("visible; uploaded 2023-")
    assert not verdicts[LATE.filename]["visible"]
    assert verdicts[LATE.filename]["reason"].endswith("backfill")


def test_history_errors_say_what_to_do(data: Path, tmp_path: Path) -> None:
    unknown = cli(data, "history", "other")
    assert unknown.exit_code == 1 and "pypi:other has never been observed" in unknown.stderr
    bad = cli(data, "history", "demo", "--at", "yesterday")
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.stderr
    future = cli(data, "history", "demo", "--at", "2999-01-01")
    assert future.exit_code == 2 and "future" in future.stderr
    empty = cli(tmp_path / "nothing", "history", "demo")
    assert empty.exit_code == 1 and "no history in" in empty.stderr
    assert not (tmp_path / "nothing").exists()


def test_cache_stats_counts_blobs_and_irreplaceable_ones(data: Path) -> None:
    result = cli(data, "cache", "stats", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    size = len(content(OLD.filename)) + len(content(LATE.filename))
    assert (doc["blobs"], doc["bytes"], doc["irreplaceable"]) == (2, size, 1)
    assert doc["server"] is None
    text = cli(data, "cache", "stats").stdout
    assert f"blobs: 2, {size} B ({size} bytes)" in text
    assert "irreplaceable: 1," in text


def test_cache_stats_reads_a_running_servers_hits_and_misses(fake_pypi, proxy) -> None:
    fake_pypi.add_wheel("alpha", "1.0", upload_time="2023-01-01T10:00:00Z")
    page = json.loads(proxy.get("/live/simple/alpha/", {"Accept": "application/vnd.pypi.simple.v1+json"}).body)
    url = page["files"][0]["url"]
    assert proxy.get(url.removeprefix(proxy.url)).status == 200  # a miss, filled
    wait_for(lambda: b"datepin_files_fills_total 1" in proxy.get("/-/metrics").body)
    assert proxy.get(url.removeprefix(proxy.url)).status == 200  # a hit
    result = cli(proxy.data_dir, "cache", "stats", "--url", proxy.url)
    assert result.exit_code == 0, result.output
    assert "server since start: hits 1, misses 1, fills 1" in result.stdout
    down = cli(proxy.data_dir, "cache", "stats", "--url", "http://127.0.0.1:9")
    assert down.exit_code == 1 and "/-/metrics" in down.stderr


def test_cache_verify_quarantines_corrupt_blobs(data: Path) -> None:
    clean = cli(data, "cache", "verify")
    assert clean.exit_code == 0 and "verified 2 blobs: 0 corrupt or missing" in clean.stdout
    store = BlobStore(data / "blobs", size_limit=1 << 30)
    path = store.path(OLD.sha256 or "")
    store.close()
    assert path is not None
    path.write_bytes(b"bit rot")
    broken = cli(data, "cache", "verify")
    assert broken.exit_code == 1
    assert f"corrupt: {OLD.sha256} content hashes to" in broken.stderr
    assert "irreplaceable: upstream no longer has it" in broken.stderr
    assert list((data / "blobs" / "quarantine").iterdir())
    again = cli(data, "cache", "verify")
    assert again.exit_code == 0 and "verified 1 blobs" in again.stdout


def test_cache_commands_need_a_data_directory(tmp_path: Path) -> None:
    for command in (["cache", "stats"], ["cache", "verify"]):
        result = cli(tmp_path / "nothing", *command)
        assert result.exit_code == 1 and "no data directory at" in result.stderr
    assert not (tmp_path / "nothing").exists()
