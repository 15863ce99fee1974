"""Throughput of the file server, against a plain static server, on one 1 GiB file.

    .venv/bin/python bench/files.py [--size-mib 1024] [--runs 3] [--dir DIR]

Measures, with an external client (curl, else a Python subprocess) so that client work does not
share this process's event loop:

- static: aiohttp's own static file serving (sendfile), the baseline;
- cold fill: FileServer with an empty store, filling from the static server while streaming to
  the client (client time, and time until the blob is committed);
- hit: FileServer serving the stored blob.

Prints MB/s (10^6 bytes) for each, the hit/static ratio, and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from datepin.blobs import BlobStore
from datepin.fileserver import FileServer, FileTarget

MIB = 1 << 20


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def make_file(path: Path, size: int) -> str:
    """Write `size` bytes (a random 4 MiB block, repeated with a counter) and return the sha256."""
    block = bytearray(os.urandom(4 * MIB))
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        written = 0
        while written < size:
            block[:8] = written.to_bytes(8, "little")
            piece = block[: min(len(block), size - written)]
            f.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


async def client_get(url: str) -> float:
    """Download `url` into /dev/null in a subprocess; return the seconds it took."""
    if shutil.which("curl"):
        cmd = ["curl", "-sS", "--fail", "-o", "/dev/null", "--noproxy", "*", url]
    else:
        code = (
            "import sys, urllib.request\n"
            "r = urllib.request.urlopen(sys.argv[1])\n"
            "while r.read(1 << 20): pass\n"
        )
        cmd = [sys.executable, "-c", code, url]
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(*cmd)
    if await process.wait() != 0:
        raise RuntimeError(f"client failed on {url}")
    return time.perf_counter() - start


async def static_server(directory: Path) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_static("/", directory)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


async def bench(work: Path, size: int, runs: int) -> None:
    source_dir = work / "static"
    source_dir.mkdir()
    t0 = time.perf_counter()
    sha256 = make_file(source_dir / "big.whl", size)
    print(f"made {size / MIB:.0f} MiB test file in {time.perf_counter() - t0:.1f} s")

    runner, static_port = await static_server(source_dir)
    store = BlobStore(work / "store", size_limit=4 * size)
    async with aiohttp.ClientSession() as session:
        server = FileServer(store, session, timeout=30.0)
        await server.start()
        target = FileTarget(f"http://127.0.0.1:{static_port}/big.whl", sha256, "big.whl", size)

        def ticket_url() -> str:
            return f"http://127.0.0.1:{server.port}{server.ticket(target)}"

        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
        baseline_rss = status_kib("VmRSS")

        static = [await client_get(f"http://127.0.0.1:{static_port}/big.whl") for _ in range(runs)]

        t0 = time.perf_counter()
        cold_client = await client_get(ticket_url())
        await server.wait_idle()
        cold_commit = time.perf_counter() - t0
        if not store.has(sha256):
            raise RuntimeError("cold fill did not store the blob")

        hits = [await client_get(ticket_url()) for _ in range(runs)]
        counters = server.counters
        await server.stop()
    await runner.cleanup()
    store.close()

    best_static, best_hit = min(static), min(hits)
    print(f"static (aiohttp static)  : {mbps(size, best_static):7.0f} MB/s   "
          f"(runs: {', '.join(f'{mbps(size, s):.0f}' for s in static)})")
    print(f"cold fill, client        : {mbps(size, cold_client):7.0f} MB/s")
    print(f"cold fill, until commit  : {mbps(size, cold_commit):7.0f} MB/s   ({cold_commit:.2f} s)")
    print(f"hit (FileServer)         : {mbps(size, best_hit):7.0f} MB/s   "
          f"(runs: {', '.join(f'{mbps(size, s):.0f}' for s in hits)}; "
          f"median {mbps(size, statistics.median(hits)):.0f})")
    print(f"hit / static             : {mbps(size, best_hit) / mbps(size, best_static):7.2f}")
    print(f"peak RSS                 : {status_kib('VmHWM') / 1024:7.1f} MiB "
          f"(at start of the runs: {baseline_rss / 1024:.1f} MiB)")
    print(f"counters                 : {counters}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="datepin-bench-", dir=args.dir) as work:
        asyncio.run(bench(Path(work), args.size_mib * MIB, args.runs))


if __name__ == "__main__":
    main()
