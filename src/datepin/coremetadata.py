"""A release's core metadata from a file datepin holds: a PEP 658 `.metadata` file, the
`*.dist-info/METADATA` of a wheel, or the `PKG-INFO` of an sdist (PEP 643).

Files are read from a seekable file object (a stored blob) with bounded memory: only the one
member is decompressed, and no more than MAX_METADATA bytes of it, whatever the archive's
headers claim.
"""

from __future__ import annotations

import gzip
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from typing import IO

__all__ = ["MAX_METADATA", "MetadataError", "is_sdist", "read_core_metadata"]

# Real METADATA files, long descriptions included, stay well under 1 MB.
MAX_METADATA = 4 * 2**20
# Members of an sdist read through for its PKG-INFO, which some backends (hatchling) write
# last; tarfile keeps each member's header (a few hundred bytes) while it reads.
MAX_SDIST_MEMBERS = 20_000
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".tar")
# What a damaged archive raises while a member is found or decompressed.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    gzip.BadGzipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    NotImplementedError,  # a zip compression method Python lacks
)


class MetadataError(ValueError):
    """The file holds no core metadata datepin can read."""


def is_sdist(filename: str) -> bool:
    """Whether `filename` is an sdist archive this module reads (`.tar.Z` it does not)."""
    return filename.endswith((".zip", *_TAR_SUFFIXES))


def read_core_metadata(file: IO[bytes], filename: str) -> bytes:
    """The core metadata `file` (named `filename`) holds.  Raises MetadataError."""
    try:
        if filename.endswith(".metadata"):
            return _capped(file, filename)
        if filename.endswith(".whl"):
            return _from_zip(file, filename, _is_wheel_metadata)
        if filename.endswith(".zip"):
            return _from_zip(file, filename, _is_pkg_info)
        if filename.endswith(_TAR_SUFFIXES):
            return _from_tar(file, filename)
    except _ARCHIVE_ERRORS as e:
        raise MetadataError(f"{filename}: unreadable ({type(e).__name__}: {e})") from None
    raise MetadataError(f"{filename}: not a wheel or an sdist")


def _is_wheel_metadata(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA"


def _is_pkg_info(name: str) -> bool:
    # The sdist's own, in its top directory; not an `*.egg-info/PKG-INFO` deeper down.
    parts = name.removeprefix("./").split("/")
    return len(parts) == 2 and parts[1] == "PKG-INFO"


def _capped(member: IO[bytes], filename: str) -> bytes:
    data = member.read(MAX_METADATA + 1)
    if len(data) > MAX_METADATA:
        raise MetadataError(f"{filename}: core metadata over {MAX_METADATA} bytes")
    return data


def _from_zip(file: IO[bytes], filename: str, wanted: Callable[[str], bool]) -> bytes:
    with zipfile.ZipFile(file) as zf:
        info = next((i for i in zf.infolist() if wanted(i.filename)), None)
        if info is None:
            raise MetadataError(f"{filename}: no core metadata inside")
        if info.file_size > MAX_METADATA:
            raise MetadataError(f"{filename}: core metadata over {MAX_METADATA} bytes")
        with zf.open(info) as member:
            return _capped(member, filename)


def _from_tar(file: IO[bytes], filename: str) -> bytes:
    with tarfile.open(fileobj=file, mode="r:*") as tar:
        for _ in range(MAX_SDIST_MEMBERS):
            member = tar.next()
            if member is None:
                break
            if member.isfile() and _is_pkg_info(member.name):
                if member.size > MAX_METADATA:
                    raise MetadataError(f"{filename}: core metadata over {MAX_METADATA} bytes")
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file
                return _capped(extracted, filename)
    raise MetadataError(f"{filename}: no PKG-INFO in its top directory")
