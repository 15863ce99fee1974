"""Run the real `datepin serve` as a subprocess on a free port, for integration tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

LISTENING = re.compile(r"listening on http://([\d.]+|\[[0-9a-f:]+\]):(\d+)/")


def write_config(path: Path, *, simple_url: str, json_url: str, files_url: str, extra: str = "", **server: object) -> Path:
    """A proxy.toml pointing the built-in registry at a fake upstream."""
    lines = ["[server]"]
    for key, value in server.items():
        lines.append(f"{key} = {toml_value(value)}")
    lines += [
        "[pypi]",
        f'simple_url = "{simple_url}"',
        f'json_url = "{json_url}"',
        f'files_url = "{files_url}"',
        extra,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Proxy:
    data_dir: Path
    config: Path | None = None
    env: dict[str, str] | None = None
    port: int = 0
    process: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)  # more `datepin serve` arguments

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def index(self, pin: str) -> str:
        return f"{self.url}/{pin}/simple/"

    def start(self, timeout: float = 60.0) -> Proxy:
        cmd = [sys.executable, "-m", "datepin", "serve", "--data-dir", str(self.data_dir),
               "--listen", f"127.0.0.1:{self.port}"]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        cmd += self.extra_args
        env = dict(os.environ if self.env is None else self.env)
        env.pop("DATEPIN_CONFIG", None)
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        found = threading.Event()

        def drain() -> None:
            assert self.process and self.process.stderr
            for line in self.process.stderr:
                self.log.append(line)
                m = LISTENING.search(line)
                if m and not found.is_set():
                    self.port = int(m.group(2))
                    found.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("datepin serve did not start:\n" + "".join(self.log))
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> Proxy:
        self.stop()
        return self.start()

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Response:
        return fetch(self.url + path, headers=headers, method=method)

    def counter(self, name: str, default: int | None = None) -> int:
        """A counter of `/-/metrics` (`name` with its labels, as the line writes it); `default`
        for one not there, else AssertionError."""
        for line in self.get("/-/metrics").body.decode().splitlines():
            key, _, value = line.rpartition(" ")
            if key == name:
                return int(value)
        if default is None:
            raise AssertionError(f"no {name} in /-/metrics")
        return default

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def fetch(url: str, *, headers: dict[str, str] | None = None, method: str = "GET", timeout: float = 60) -> Response:
    """One request with no redirects followed and no proxy from the environment."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with _opener.open(request, timeout=timeout) as resp:
            return Response(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers.items()), e.read())


def get_head(sock: socket.socket, path: str, host: str) -> bytes:
    """Send a GET for `path` on `sock` and read its answer's head (with whatever of the body
    came in the same reads), no more: for clients that then read slowly or not at all."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        piece = sock.recv(1024)
        assert piece, head
        head += piece
    return head
