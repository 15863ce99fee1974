"""A bounded HTTP load generator, run as its own process so it does not share a loop or a GIL
with what it measures.

    .venv/bin/python bench/load.py URL --concurrency 16 --requests 4000 --seconds 8 \\
        --header "Accept: application/vnd.pypi.simple.v1+json"

`concurrency` keep-alive connections (aiohttp), each sending its next request as soon as the
previous body has arrived, until `requests` were sent or `seconds` passed.  A short warm-up
(one request per connection) is not counted.  Bodies are read, not decoded.  Prints one JSON
object: requests, errors, seconds, rps, p50_ms, p99_ms, max_ms, body_bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp


async def load(
    url: str, headers: dict[str, str], concurrency: int, requests: int, seconds: float
) -> dict[str, object]:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    latencies: list[float] = []
    errors: list[str] = []
    body_bytes = 0
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, trust_env=False,
        timeout=aiohttp.ClientTimeout(total=60),
    ) as session:

        async def one() -> None:
            nonlocal body_bytes
            t0 = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    errors.append(f"HTTP {resp.status}")
                    return
            latencies.append(time.perf_counter() - t0)
            body_bytes = len(body)

        await asyncio.gather(*(one() for _ in range(concurrency)))  # warm-up: open connections
        latencies.clear()
        sent = 0
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal sent
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                try:
                    await one()
                except (aiohttp.ClientError, TimeoutError) as e:
                    errors.append(type(e).__name__)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(statistics.median(ordered) * 1000, 3) if ordered else None,
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3)
        if ordered else None,
        "max_ms": round(ordered[-1] * 1000, 3) if ordered else None,
        "body_bytes": body_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    result = asyncio.run(load(args.url, headers, args.concurrency, args.requests, args.seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
