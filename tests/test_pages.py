"""Rendered pages (gzip, ETag digest) and the byte-bounded cache of fixed pages."""

from __future__ import annotations

import gzip
import hashlib
import os

from datepin.pages import GZIP_MIN, KEEP_PLAIN, PageCache, build_page


def chunks(data: bytes, size: int = 1000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_page_built_from_chunks_is_the_joined_bytes_gzipped() -> None:
    data = b"".join(b'{"filename":"f-%d.whl"},' % i for i in range(5000))
    page = build_page(chunks(data), "application/json", "observed")
    assert page.digest == hashlib.sha256(data).hexdigest()[:32]
    assert page.size == len(data) and page.kind == "observed"
    body, gzipped = page.body(gzip_ok=True)
    assert gzipped and gzip.decompress(body) == data and len(body) < len(data) // 5
    assert page.body(gzip_ok=False) == (data, False)


def test_big_pages_keep_only_the_gzipped_bytes() -> None:
    data = os.urandom(KEEP_PLAIN // 2 + 1).hex().encode()  # bigger than KEEP_PLAIN
    page = build_page(chunks(data, 4096), "text/html")
    assert page.plain is None and page.weight == len(page.gzipped or b"")
    assert page.body(gzip_ok=False) == (data, False)  # gunzipped for clients without gzip


def test_small_pages_are_not_compressed() -> None:
    data = b"x" * GZIP_MIN
    page = build_page([data], "text/html")
    assert page.gzipped is None
    assert page.body(gzip_ok=True) == (data, False)
    assert build_page([], "text/html").body(gzip_ok=True) == (b"", False)


def test_the_cache_drops_least_recently_used_pages_beyond_its_bytes() -> None:
    def page(n: int) -> bytes:
        return os.urandom(n)  # incompressible: weight is about n + its gzip

    cache = PageCache(max_bytes=10_000)
    cache.put("a", build_page([page(2000)], "x"))
    cache.put("b", build_page([page(2000)], "x"))
    assert cache.get("a") is not None  # now more recent than b
    cache.put("c", build_page([page(2000)], "x"))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.bytes <= 10_000
    cache.put("huge", build_page([page(20_000)], "x"))  # bigger than the whole cache
    assert cache.get("huge") is None and len(cache) == 2
