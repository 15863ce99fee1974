"""Two more floors under datepin: the least a Python proxy does, and the least one that keeps
files does.

    .venv/bin/python bench/keeper.py UPSTREAM_URL [KEEP_DIR]   # prints "listening on http://127.0.0.1:PORT/"

aiohttp's server answering every GET by asking the upstream with aiohttp's client and streaming
the body back as it comes (the same libraries datepin's path mode uses, and a read buffer of the
same size).  With KEEP_DIR, each body that is not an index page is also written to a temp file
there and hashed (sha256) as it passes, then fsynced and renamed in a thread once whole: the work
any proxy that keeps files must do for each, without datepin's history, views, blob index or
shared downloads.  bench/run shows datepin's cold installs against both.
Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sys
from pathlib import Path
from typing import IO

import aiohttp
from aiohttp import web

from static import serve  # bench/, the script's own directory

_ASKED = ("accept", "accept-encoding", "range", "if-none-match")  # what a client sends that matters
_ANSWERED = ("content-type", "content-encoding", "content-length", "content-range", "etag")
_READ_BUFFER = 256 * 1024  # as datepin's downloads (src/datepin/fileserver.py)


def _settle(file: IO[bytes], temp: Path, kept: Path) -> None:
    os.fsync(file.fileno())
    file.close()
    os.rename(temp, kept)


def app(upstream: str, keep: Path | None) -> web.Application:
    session: aiohttp.ClientSession | None = None

    async def relay(request: web.Request) -> web.StreamResponse:
        assert session is not None
        asked = {k: v for k, v in request.headers.items() if k.lower() in _ASKED}
        async with session.get(upstream + request.raw_path, headers=asked, read_bufsize=_READ_BUFFER) as up:
            response = web.StreamResponse(
                status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() in _ANSWERED}
            )
            await response.prepare(request)
            temp, file = None, None
            if keep is not None and up.status == 200 and not request.path.endswith("/"):
                temp = keep / f"{secrets.token_hex(16)}.part"
                file = open(temp, "xb")
            digest = hashlib.sha256()
            async for chunk in up.content.iter_any():
                if file is not None:
                    file.write(chunk)
                    digest.update(chunk)
                await response.write(chunk)
            if file is not None and temp is not None:
                await asyncio.to_thread(_settle, file, temp, temp.with_name(digest.hexdigest()))
            await response.write_eof()
            return response

    async def open_session(_: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())

    async def close_session(_: web.Application) -> None:
        if session is not None:
            await session.close()

    application = web.Application()
    application.router.add_get("/{tail:.*}", relay)
    application.on_startup.append(open_session)
    application.on_cleanup.append(close_session)
    return application


async def main(upstream: str, keep: Path | None) -> None:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    await serve(app(upstream.rstrip("/"), keep))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None))
