"""The table `bench/run` prints: each figure next to its baseline, with the target it has."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

KB = 1000
ALONE = "mitmproxy alone"  # bench/relay.py: mitmproxy relaying the upstream, no datepin
PLAIN = "aiohttp relay"  # bench/keeper.py: aiohttp's server and client relaying the upstream
KEEPING = "relay keeping files"  # the same, writing, hashing and fsyncing every file


@dataclass(frozen=True)
class Target:
    text: str
    ok: Callable[[float, float | None], bool]  # (value, ratio to the baseline) -> met


def at_most(limit: float, text: str) -> Target:
    return Target(text, lambda v, r: v <= limit)


def ratio_at_most(limit: float) -> Target:
    return Target(f"<= {limit:.2f}x base", lambda v, r: r is not None and r <= limit)


def ratio_at_least(limit: float) -> Target:
    return Target(f">= {limit:.2f}x base", lambda v, r: r is not None and r >= limit)


@dataclass(frozen=True)
class Row:
    section: str
    figure: str
    value: float | None
    baseline: float | None = None
    unit: str = ""
    target: Target | None = None
    # Where value and baseline were measured in pairs (installs: one of each per repetition),
    # the median of the pairs' ratios, which slow drift of the machine does not move as much
    # as it moves the ratio of the two medians.
    paired_ratio: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.target.ok(self.value, self.ratio)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target"] = self.target.text if self.target else None
        d["ratio"] = None if self.ratio is None else round(self.ratio, 3)
        d["met"] = self.met
        return d


def rows(results: Mapping[str, Any]) -> list[Row]:
    out: list[Row] = []
    if pages := results.get("pages"):
        for key, run in pages.items():
            if not key.startswith("c"):
                continue
            ours, base = run["datepin"], run["static"]
            c = key[1:]
            target = at_most(5, "<= 5 ms") if c == "1" else None
            out += [
                Row("pages", f"p50, c={c}", ours["p50_ms"], base["p50_ms"], "ms", target),
                Row("pages", f"p99, c={c}", ours["p99_ms"], base["p99_ms"], "ms"),
                Row("pages", f"req/s, c={c}", ours["rps"], base["rps"], "req/s"),
            ]
            if relay := run.get("relay"):
                out += [
                    Row("pages", f"p50, c={c}: {ALONE}", relay["p50_ms"], base["p50_ms"], "ms"),
                    Row("pages", f"req/s, c={c}: {ALONE}", relay["rps"], base["rps"], "req/s"),
                ]
    if cold := results.get("cold_pages"):
        out += [
            Row("pages", f"cold page: proxy CPU, against {PLAIN}", cold["datepin_cpu_ms"],
                cold["relay_cpu_ms"], "CPU ms"),
            Row("pages", f"cold pages/s, c={cold['concurrency']}, against {PLAIN}",
                cold["datepin_pages_per_s"], cold["relay_pages_per_s"], "pages/s"),
        ]
    if growth := results.get("growth"):
        sizes = growth["sizes"]
        largest = max(sizes, key=int)
        for count, g in sizes.items():
            target = at_most(100, "<= 100 ms") if count == largest else None
            out += [
                Row("growth", f"{count} files: page p50", g["datepin"]["p50_ms"], g["static"]["p50_ms"], "ms", target),
                Row("growth", f"{count} files: 1st answer from history", g["first_from_history_ms"], None, "ms"),
                Row("growth", f"{count} files: 1st answer, observing", g["first_observe_ms"], None, "ms"),
                Row("growth", f"{count} files: history", g["history_bytes"] / KB, None, "KB"),
                Row("growth", f"{count} files: history per unchanged day", g["bytes_per_day"], None,
                    "B/day", at_most(1000, "< 1 KB/day")),
            ]
    if files := results.get("files"):
        base1, base4 = files["static_single"], files["static_x4"]
        out += [
            Row("files", "1 GiB store hit", files["hit_single"], base1, "MB/s", ratio_at_least(0.35)),
            Row("files", "1 GiB store hit, 4 parallel", files["hit_x4"], base4, "MB/s", ratio_at_least(0.35)),
            Row("files", f"1 GiB: {ALONE}", files["relay_single"], base1, "MB/s"),
            Row("files", f"1 GiB, 4 parallel: {ALONE}", files["relay_x4"], base4, "MB/s"),
            Row("files", "1 GiB store hit, against mitmproxy alone", files["hit_single"],
                files["relay_single"], "MB/s"),
            Row("files", "1 GiB cold fill", files["cold_single"], base1, "MB/s"),
            Row("files", "1 GiB cold fill, 4 parallel", files["cold_x4"], base4, "MB/s"),
        ]
        rss = at_most(150, "<= 150 MB")
        for key, name in (("cold_single", "cold fill"), ("hit_single", "hit"),
                          ("hit_x4", "hit, 4 parallel"), ("cold_x4", "cold fill, 4 parallel")):
            out.append(Row("files", f"peak RSS, {name}", files[f"rss_{key}_mb"], None, "MB", rss))
    for label, mb in results.get("rss_peaks_mb", {}).items():
        if not label.startswith("files:") and label != "start":
            out.append(Row("rss", f"peak RSS, {label}", mb, None, "MB", at_most(150, "<= 150 MB")))
    if "peak_rss_mb" in results:
        out.append(Row("rss", "peak RSS, whole run", results["peak_rss_mb"], None, "MB",
                       at_most(150, "<= 150 MB")))
    if e2e := results.get("e2e"):
        for client in ("uv", "pip"):
            r = e2e[client]
            paired = r.get("paired_ratios", {})
            out += [
                Row("e2e", f"{client} install, warm", r["warm_s"], r["direct_s"], "s", ratio_at_most(1.10),
                    paired.get("warm/direct")),
                Row("e2e", f"{client} install, cold", r["cold_s"], r["direct_s"], "s", ratio_at_most(1.30),
                    paired.get("cold/direct")),
            ]
            if "relay_s" in r:
                out += [
                    Row("e2e", f"{client} install: {ALONE}", r["relay_s"], r["direct_s"], "s", None,
                        paired.get("relay/direct")),
                    Row("e2e", f"{client} install, warm, against mitmproxy alone", r["warm_s"], r["relay_s"],
                        "s", None, paired.get("warm/relay")),
                    Row("e2e", f"{client} install, cold, against mitmproxy alone", r["cold_s"], r["relay_s"],
                        "s", None, paired.get("cold/relay")),
                ]
            if "keeping_s" in r:
                out += [
                    Row("e2e", f"{client} install: {PLAIN}", r["plain_s"], r["direct_s"], "s", None,
                        paired.get("plain/direct")),
                    Row("e2e", f"{client} install: {KEEPING}", r["keeping_s"], r["direct_s"], "s", None,
                        paired.get("keeping/direct")),
                    Row("e2e", f"{client} install, cold, against {KEEPING}", r["cold_s"], r["keeping_s"],
                        "s", None, paired.get("cold/keeping")),
                ]
            out += _phase_rows(client, r)
            out += _cpu_rows(client, r)
    if snap := results.get("snapshot"):
        what = f"via {snap['via']} ({snap['projects']} projects)"
        out.append(Row("snapshot", f"unchanged, {what}, upstream answering 304",
                       snap["projects_per_s"], snap["static_pages_per_s"], "proj/s"))
        for key, how in (("same_projects_per_s", "the same pages sent whole"),
                         ("whole_projects_per_s", "every page read")):
            if key in snap:
                out.append(Row("snapshot", f"unchanged, {what}, {how}",
                               snap[key], snap["static_pages_per_s"], "proj/s"))
    return out


def _phase_rows(client: str, r: Mapping[str, Any]) -> list[Row]:
    """Where a cold install's time goes, from the phases the client reports (uv only):
    resolving (every page and `.metadata` file) and preparing (downloading and unpacking
    the wheels), cold datepin against direct and against the relay keeping files."""
    phases = r.get("phases_s", {})
    cold, direct, keeping = phases.get("cold", {}), phases.get("direct", {}), phases.get("keeping", {})
    rows = []
    for name, what in (("resolve", "pages, .metadata"), ("prepare", "wheels")):
        if name not in cold:
            continue
        ms = 1000 * cold[name]
        rows += [
            Row("e2e", f"{client} install, cold: {name} ({what})", ms,
                1000 * direct[name] if name in direct else None, "ms"),
            Row("e2e", f"{client} install, cold: {name}, against {KEEPING}", ms,
                1000 * keeping[name] if name in keeping else None, "ms"),
        ]
    return rows


def _cpu_rows(client: str, r: Mapping[str, Any]) -> list[Row]:
    """What the installs cost in CPU time: the proxy's, against the relays that do the least,
    and how many cores an install keeps busy (client, upstream and proxy together)."""
    cpu, busy = r.get("cpu_s"), r.get("cores_busy")
    if not cpu or not busy:
        return []

    def proxy(mode: str) -> float | None:
        value = cpu.get(mode, {}).get("proxy")
        return None if value is None else float(value)

    rows = [
        Row("e2e", f"{client} install, warm: proxy CPU, against {PLAIN}", proxy("warm"), proxy("plain"), "CPU s"),
        Row("e2e", f"{client} install, cold: proxy CPU, against {KEEPING}", proxy("cold"), proxy("keeping"),
            "CPU s"),
        Row("e2e", f"{client} install, direct: cores busy", busy.get("direct"), None, "cores"),
        Row("e2e", f"{client} install, cold: cores busy", busy.get("cold"), None, "cores"),
    ]
    return [row for row in rows if row.value is not None]  # none where there is no /proc


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(items: list[Row]) -> str:
    header = ("section", "figure", "datepin", "baseline", "unit", "ratio", "target", "")
    lines = [header]
    for r in items:
        mark = {True: "ok", False: "MISSED", None: ""}[r.met]
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        lines.append((r.section, r.figure, _num(r.value), _num(r.baseline), r.unit, ratio,
                      r.target.text if r.target else "", mark))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {2, 3, 5}
    out = []
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)

