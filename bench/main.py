"""`bench/run`: how fast datepin is, how big its history gets, how it grows.

Builds (or reuses) a fixture registry under OUT/fixture, serves it from a static upstream
(bench/static.py; also the baseline), runs datepin against it, and measures (pages, files and
installs also through mitmproxy alone relaying the upstream, bench/relay.py: the floor any
mitmproxy addon stands on):

1. index pages: pinned pages already in history, p50/p99 and req/s at concurrency 1, 16, 64;
   and cold pages (a fresh datepin's first look at each), CPU per page against the aiohttp relay;
2. growth: pinned pages of 100, 1,000 and 20,000 files; history bytes, and per unchanged day;
3. files: the 1 GiB wheel through the proxy, store hit and cold fill; datepin's peak RSS;
4. end to end: uv and pip installs of the fixture set, direct / mitmproxy alone / aiohttp
   relay / relay keeping files (bench/keeper.py) / warm / cold;
5. snapshot: projects per second for `datepin snapshot --all` with nothing changed (pages
   answered 304, and pages sent whole).

Prints a table and writes OUT/results.json.  `--quick`: a tiny fixture and few requests, to
check that the benchmark still runs (tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH))

import stages  # noqa: E402
from fixture import PIN, QUICK, Params, fixture  # noqa: E402
from procs import Datepin, Relay, StaticServer  # noqa: E402
from report import rows, table  # noqa: E402

STAGES = ("pages", "growth", "files", "e2e", "snapshot")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny fixture, few requests (< 1 min)")
    parser.add_argument("--out", type=Path, help="output directory (default bench/out, or bench/out/quick)")
    parser.add_argument("--only", action="append", choices=STAGES, help="run only these stages")
    args = parser.parse_args()
    out = args.out or (BENCH / "out" / ("quick" if args.quick else ""))
    params, scale = (QUICK, stages.QUICK_SCALE) if args.quick else (Params(), stages.Scale())
    only = set(args.only or STAGES)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    fx, reused = fixture(out / "fixture", params, log=log)
    log(f"fixture {'reused' if reused else 'built'} at {fx.root}")
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    results: dict[str, object] = {"meta": meta(args.quick, params, scale)}
    try:
        with StaticServer(fx.root) as static, Relay(static.url) as relay:
            dp = Datepin(work / "main", static.url)
            with dp:
                if "e2e" in only:
                    dp.phase("e2e: warm installs")
                    results["e2e"] = stages.end_to_end(fx, static, relay, dp, scale, work, log)
                if "pages" in only:
                    dp.phase("pages")
                    results["pages"] = stages.index_pages(fx, static, relay, dp, scale, log)
                    results["cold_pages"] = stages.cold_pages(fx, static, scale, work, log)
                if "growth" in only:
                    dp.phase("growth")
                    results["growth"] = stages.growth(fx, static, dp, scale, work, log)
                if "files" in only:
                    results["files"] = stages.files(fx, static, relay, dp, scale, work, log)
            results["rss_peaks_mb"] = {k: round(v / 1024, 1) for k, v in dp.peaks.items()}
            results["peak_rss_mb"] = dp.peak_mb()
            if "snapshot" in only:
                results["snapshot"] = stages.snapshot(fx, static, scale, work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["meta"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]  # type: ignore[index]
    table_rows = rows(results)
    results["table"] = [r.as_dict() for r in table_rows]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table(table_rows))
    print(f"\n{len(fx.packages)} installable projects, pin {PIN}; {results['seconds']} s in all; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; results in {out / 'results.json'}")
    return 0


def meta(quick: bool, params: Params, scale: stages.Scale) -> dict[str, object]:
    from dataclasses import asdict

    return {
        "quick": quick,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "params": asdict(params),
        "scale": asdict(scale),
    }


if __name__ == "__main__":
    sys.exit(main())
