"""The processes a benchmark run drives: the static upstream, datepin, load and download clients,
and a sampler of datepin's memory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from proxyproc import Proxy, write_config

BENCH = Path(__file__).resolve().parent


class Listener:
    """A helper server process that prints "listening on http://127.0.0.1:PORT/" once bound."""

    port: int = 0
    process: subprocess.Popen[str] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.process = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the server prints it once bound
        if not line.startswith("listening on "):
            self.__exit__()
            raise RuntimeError(f"{type(self).__name__} did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1].strip("/\n"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class StaticServer(Listener):
    """The upstream, and the baseline: the fixture served as plain files (bench/static.py)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def argv(self) -> list[str]:
        return [sys.executable, str(BENCH / "static.py"), str(self.root)]


class Relay(Listener):
    """mitmproxy alone, relaying to `upstream` (bench/relay.py): the floor under datepin."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    def argv(self) -> list[str]:
        return [sys.executable, str(BENCH / "relay.py"), self.upstream]


class Keeper(Listener):
    """aiohttp relaying `upstream`, keeping every file in `keep` if given (bench/keeper.py): what
    any Python proxy costs, and any that keeps files."""

    def __init__(self, upstream: str, keep: Path | None = None) -> None:
        self.upstream = upstream
        self.keep = keep

    def argv(self) -> list[str]:
        return [sys.executable, str(BENCH / "keeper.py"), self.upstream, *([str(self.keep)] if self.keep else [])]


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time a live process has used so far, all its threads (from /proc);
    None where there is no /proc or the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


@dataclass
class RssSampler:
    """Samples VmRSS (and the kernel's VmHWM) of one process every `interval` s.

    `phase(label)` starts a phase: it resets VmHWM (clear_refs 5) so that the phase's peak
    counts only that phase; `peaks` holds the peak of each label (kiB), shared across
    restarts when the caller passes the same dict."""

    pid: int
    peaks: dict[str, int] = field(default_factory=dict)
    label: str = "start"
    interval: float = 0.02
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        try:
            s = status_kib(self.pid)
        except (OSError, ValueError):
            return
        top = max(s.get("VmRSS", 0), s.get("VmHWM", 0))
        self.peaks[self.label] = max(self.peaks.get(self.label, 0), top)

    def phase(self, label: str) -> None:
        self._sample()
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            pass  # not allowed here: phases then see the whole life's peak
        self.label = label
        self._sample()

    def peak_mb(self, label: str | None = None) -> float:
        self._sample()
        kib = self.peaks.get(label, 0) if label else max(self.peaks.values(), default=0)
        return round(kib / 1024, 1)

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        if self._thread:
            self._thread.join()


@dataclass
class Datepin:
    """`datepin serve` on a free port against the static upstream, with its RSS sampled.

    `peaks` maps a phase label (see `phase`) to the peak RSS seen in it, in kiB, across
    restarts."""

    data_dir: Path
    upstream: str
    proxy: Proxy | None = None
    rss: RssSampler | None = None
    peaks: dict[str, int] = field(default_factory=dict)

    def config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return write_config(
            self.data_dir.parent / f"{self.data_dir.name}.toml",
            simple_url=f"{self.upstream}/simple/",
            json_url=f"{self.upstream}/pypi/",
            files_url=f"{self.upstream}/packages/",
            upstream_timeout="120s",
        )

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    def index(self, pin: str) -> str:
        return f"{self.url}/{pin}/simple/"

    def phase(self, label: str) -> None:
        assert self.rss is not None
        self.rss.phase(label)

    def peak_mb(self, label: str | None = None) -> float:
        if self.rss is not None:
            self.rss._sample()
        kib = self.peaks.get(label, 0) if label else max(self.peaks.values(), default=0)
        return round(kib / 1024, 1)

    def start(self) -> Datepin:
        self.proxy = Proxy(data_dir=self.data_dir, config=self.config()).start()
        assert self.proxy.process is not None
        label = self.rss.label if self.rss is not None else "start"
        self.rss = RssSampler(self.proxy.process.pid, self.peaks, label).start()
        return self

    def stop(self) -> None:
        if self.rss is not None:
            self.rss.stop()
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None

    def restart(self) -> Datepin:
        self.stop()
        return self.start()

    def __enter__(self) -> Datepin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_load(
    url: str, *, concurrency: int, requests: int, seconds: float, headers: dict[str, str]
) -> dict[str, object]:
    cmd = [sys.executable, str(BENCH / "load.py"), url, "--concurrency", str(concurrency),
           "--requests", str(requests), "--seconds", str(seconds)]
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed:\n{proc.stderr}")
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def download_command(url: str) -> list[str]:
    if shutil.which("curl"):
        return ["curl", "-sS", "--fail", "-o", "/dev/null", "--noproxy", "*", url]
    code = (
        "import sys, urllib.request\n"
        "r = urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[1])\n"
        "while r.read(1 << 20): pass\n"
    )
    return [sys.executable, "-c", code, url]


def download(url: str, parallel: int = 1, timeout: float = 300) -> float:
    """Download `url` `parallel` times at once into /dev/null; the seconds until all finished."""
    start = time.perf_counter()
    procs = [subprocess.Popen(download_command(url), env=_no_proxy_env()) for _ in range(parallel)]
    failed = [p for p in procs if p.wait(timeout) != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {parallel} downloads of {url} failed")
    return time.perf_counter() - start


def _no_proxy_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
