"""The benchmark's upstream, and its baseline: the fixture directory served as plain files.

    .venv/bin/python bench/static.py ROOT       # prints "listening on http://127.0.0.1:PORT/"

aiohttp's FileResponse (sendfile(2), HEAD, Range, and pre-compressed `.gz` siblings when the
client accepts gzip).  The only logic: a project URL `/simple/<name>/` picks `index.json` or
`index.html` by Accept, as an index must (PEP 691).  Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from aiohttp import web

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def app(root: Path) -> web.Application:
    simple = root / "simple"

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "")
        directory = simple / name if name else simple
        if "/" in name or name.startswith(".") or not directory.is_dir():
            return web.Response(status=404, text="Not Found\n")
        if JSON_TYPE in request.headers.get("Accept", ""):
            path, ctype = directory / "index.json", JSON_TYPE
        else:
            path, ctype = directory / "index.html", "text/html; charset=utf-8"
        return web.FileResponse(path, headers={"Content-Type": ctype, "Vary": "Accept"})

    application = web.Application()
    application.router.add_get("/simple/", page)
    application.router.add_get("/simple/{name}/", page)
    application.router.add_static("/packages", root / "packages")
    application.router.add_static("/same", root / "same")
    return application


async def serve(application: web.Application) -> None:
    """Serve `application` on 127.0.0.1, a free port, announced on stdout, until SIGTERM or
    SIGINT (bench/keeper.py serves its relay the same way)."""
    runner = web.AppRunner(application, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(app(Path(sys.argv[1]))))
