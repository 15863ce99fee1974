"""Core metadata read from kept files: a `.metadata` file, a wheel, an sdist; bounded."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from datepin.coremetadata import MAX_METADATA, MetadataError, is_sdist, read_core_metadata
from datepin.rewrite.render import info_from_metadata
from fakepypi import build_sdist, build_wheel, core_metadata

META = core_metadata("gamma", "1.0", requires_dist=["beta>=1"], requires_python=">=3.8")
OTHER = core_metadata("gamma", "1.0", summary="the egg-info copy, not the sdist's own")


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def read(data: bytes, filename: str) -> bytes:
    return read_core_metadata(io.BytesIO(data), filename)


def test_a_wheel_and_an_sdist_give_the_metadata_they_were_built_with() -> None:
    wheel = build_wheel("gamma", "1.0", requires_dist=["beta>=1"], requires_python=">=3.8",
                        payload_size=100_000)
    sdist = build_sdist("gamma", "1.0", requires_dist=["beta>=1"], requires_python=">=3.8")
    assert read(wheel.content, wheel.filename) == wheel.metadata == META
    assert read(sdist.content, sdist.filename) == sdist.metadata == META
    assert read(META, wheel.filename + ".metadata") == META
    info = info_from_metadata(read(sdist.content, sdist.filename))
    assert (info["requires_dist"], info["requires_python"]) == (["beta>=1"], ">=3.8")


@pytest.mark.parametrize("archive", [tar_gz, zipped])
def test_an_sdist_gives_its_own_pkg_info_not_an_egg_info_copy(archive) -> None:
    data = archive({
        "gamma-1.0/src/gamma.egg-info/PKG-INFO": OTHER,
        "gamma-1.0/setup.py": b"",
        "gamma-1.0/PKG-INFO": META,
    })
    filename = "gamma-1.0.tar.gz" if archive is tar_gz else "gamma-1.0.zip"
    assert read(data, filename) == META


def test_a_wheel_gives_its_metadata_whatever_its_dist_info_lists_first() -> None:
    data = zipped({
        "gamma/__init__.py": b"",
        "gamma-1.0.dist-info/LICENSE": b"MIT",
        "gamma-1.0.dist-info/METADATA": META,
        "gamma-1.0.dist-info/RECORD": b"",
    })
    assert read(data, "gamma-1.0-py3-none-any.whl") == META


def test_an_sdist_whose_members_start_with_dot_slash_gives_its_pkg_info() -> None:
    data = tar_gz({"./gamma-1.0/setup.py": b"", "./gamma-1.0/PKG-INFO": META})
    assert read(data, "gamma-1.0.tar.gz") == META


def test_metadata_is_read_no_further_than_the_limit() -> None:
    exact = io.BytesIO(b"x" * MAX_METADATA)
    assert len(read_core_metadata(exact, "gamma-1.0-py3-none-any.whl.metadata")) == MAX_METADATA
    huge = io.BytesIO(b"x" * (4 * MAX_METADATA))
    with pytest.raises(MetadataError, match="over"):
        read_core_metadata(huge, "gamma-1.0-py3-none-any.whl.metadata")
    assert huge.tell() <= MAX_METADATA + 1


@pytest.mark.parametrize(("data", "filename"), [
    (zipped({"gamma-1.0.dist-info/METADATA": b"x" * (MAX_METADATA + 1)}), "gamma-1.0-py3-none-any.whl"),
    (tar_gz({"gamma-1.0/PKG-INFO": b"x" * (MAX_METADATA + 1)}), "gamma-1.0.tar.gz"),
    (b"x" * (MAX_METADATA + 1), "gamma-1.0-py3-none-any.whl.metadata"),
])
def test_metadata_over_the_limit_is_refused(data: bytes, filename: str) -> None:
    with pytest.raises(MetadataError, match="over"):
        read(data, filename)


@pytest.mark.parametrize(("data", "filename"), [
    (b"not a zip", "gamma-1.0-py3-none-any.whl"),
    (b"not a tarball", "gamma-1.0.tar.gz"),
    (build_wheel("gamma", "1.0").content[:200], "gamma-1.0-py3-none-any.whl"),
    (build_sdist("gamma", "1.0").content[:60], "gamma-1.0.tar.gz"),
    (zipped({"gamma/__init__.py": b""}), "gamma-1.0-py3-none-any.whl"),
    (tar_gz({"gamma-1.0/setup.py": b""}), "gamma-1.0.tar.gz"),
    (b"", "gamma-1.0-py2.7.egg"),
])
def test_a_damaged_or_foreign_file_is_a_metadata_error(data: bytes, filename: str) -> None:
    with pytest.raises(MetadataError):
        read(data, filename)


def test_sdists_are_told_by_their_archive_suffix() -> None:
    assert [is_sdist(n) for n in ("a-1.tar.gz", "a-1.zip", "a-1.tar.bz2", "a-1-py3-none-any.whl",
                                  "a-1-py2.7.egg", "a-1.exe")] == [True, True, True, False, False, False]
