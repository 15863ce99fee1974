"""Rendered pages as datepin sends them, and the cache of pages that cannot change (fixed
views), or not before the project changes (live views).

A page is built from the renderer's chunks: hashed (the ETag) and gzipped as they come, so a
20,000-file page (10 MB of JSON) never sits in memory uncompressed; pip and uv always accept
gzip.  Small pages keep their identity bytes as well.  No I/O here.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime

GZIP_MIN = 512  # bodies up to this size are sent as they are
KEEP_PLAIN = 256 * 1024  # identity bytes are kept up to this size; bigger: gunzipped on demand
_GZIP_LEVEL = 1  # as mitmproxy compresses: a 10 MB page in 0.15 s, not 0.25 s for 10% less


@dataclass(frozen=True, slots=True)
class Page:
    content_type: str
    digest: str  # of the identity bytes: first 32 hex digits of their sha256
    size: int  # of the identity bytes
    plain: bytes | None  # the identity bytes, if small enough to keep
    gzipped: bytes | None  # None for bodies of GZIP_MIN bytes or less
    kind: str | None = None  # the Datepin-View of the view it shows
    # A live page: the project's last change it shows (valid until the project changes again).
    changed_at: datetime | None = None

    def body(self, *, gzip_ok: bool) -> tuple[bytes, bool]:
        """The bytes to send, and whether they are gzipped."""
        if gzip_ok and self.gzipped is not None:
            return self.gzipped, True
        if self.plain is not None:
            return self.plain, False
        assert self.gzipped is not None
        return zlib.decompress(self.gzipped, wbits=31), False

    @property
    def weight(self) -> int:
        return len(self.plain or b"") + len(self.gzipped or b"")


def build_page(chunks: Iterable[bytes], content_type: str, kind: str | None = None) -> Page:
    digest = hashlib.sha256()
    gzip = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    parts: list[bytes] | None = []
    compressed: list[bytes] = []
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        compressed.append(gzip.compress(chunk))
        size += len(chunk)
        if parts is not None:
            parts.append(chunk)
            if size > KEEP_PLAIN:
                parts = None
    compressed.append(gzip.flush())
    return Page(
        content_type=content_type,
        digest=digest.hexdigest()[:32],
        size=size,
        plain=b"".join(parts) if parts is not None else None,
        gzipped=b"".join(compressed) if size > GZIP_MIN else None,
        kind=kind,
    )


class PageCache:
    """Pages of fixed views (DESIGN.md "Determinism": they never change) and of live views
    (checked against the project's last change by the caller), least recently used
    first out, bounded by the bytes they hold."""

    def __init__(self, max_bytes: int = 32 * 2**20) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Hashable, Page] = OrderedDict()

    def get(self, key: Hashable) -> Page | None:
        page = self._items.get(key)
        if page is not None:
            self._items.move_to_end(key)
        return page

    def put(self, key: Hashable, page: Page) -> None:
        if page.weight > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.weight
        self._items[key] = page
        self.bytes += page.weight
        while self.bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.bytes -= evicted.weight

    def __len__(self) -> int:
        return len(self._items)
