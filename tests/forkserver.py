"""Start `datepin serve` processes fast, for crash loops: a parent process imports datepin and
mitmproxy once (most of a start's CPU), then forks one server per request.  Each child runs the
real CLI (`datepin.cli.main(["serve", ...])`) and can be SIGKILLed like any process.

    with ForkServer() as fs:
        child = fs.spawn(["--data-dir", d, "--config", c, "--listen", "127.0.0.1:0"], log_path)
        child.wait_ready()          # -> port, read from the child's log
        child.kill()                # SIGKILL, and wait until it is gone
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from proxyproc import LISTENING

_PARENT = r"""
import json, os, signal, sys
import datepin.server, datepin.cli  # the slow imports, done once
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
for line in sys.stdin:
    args, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            datepin.cli.main(["serve", *args])
        except SystemExit as e:
            os._exit(e.code if isinstance(e.code, int) else 1)
        os._exit(0)
    print(pid, flush=True)
"""


@dataclass
class Child:
    pid: int
    log: Path
    port: int = 0

    def wait_ready(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists():
                for line in self.log.read_text(errors="replace").splitlines():
                    if m := LISTENING.search(line):
                        self.port = int(m.group(2))
                        return self.port
            if not self.alive():
                break
            time.sleep(0.01)
        raise RuntimeError(f"datepin serve did not start:\n{self.log.read_text(errors='replace')}")

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self, timeout: float = 10.0) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"process {self.pid} survived SIGKILL")
            time.sleep(0.005)


class ForkServer:
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DATEPIN_CONFIG"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env,
        )

    def spawn(self, args: list[str], log: Path) -> Child:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([[str(a) for a in args], str(log)]) + "\n")
        self.process.stdin.flush()
        return Child(int(self.process.stdout.readline()), log)

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait()
