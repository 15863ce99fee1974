"""Forward-mode (HTTPS_PROXY) clients over HTTP/1.1 that stop taking their answer are dropped
after `idle_timeout`, their connection, file descriptors and blob leases released; clients
that take it slowly are not, as in path mode (tests/test_stalls.py; src/datepin/connections.py)."""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fakepypi import FakePyPI
from proxyproc import Proxy, get_head
from storecheck import stored
from test_forward import _proxy_rss, connect, make_bundle, start_proxy
from test_stalls import blob_files_open, dropped_within, logged_no_error, open_files, settles, wait_fills

IDLE = 1.0  # the proxy's idle_timeout here, seconds
UPLOADED = "2023-01-01T00:00:00Z"
FILES = "files.pythonhosted.org"


@dataclass
class Forward:
    fake: FakePyPI
    proxy: Proxy
    bundle: Path


@pytest.fixture
def forward(tmp_path: Path, fake_pypi: FakePyPI) -> Iterator[Forward]:
    proxy = start_proxy(tmp_path, fake_pypi, "stalls", idle_timeout=f"{IDLE:g}s",
                        extra='[cache]\nsize_limit = "40MB"')  # one 32 MiB file fits, two do not
    try:
        yield Forward(fake_pypi, proxy, make_bundle(proxy, tmp_path / "bundle.pem"))
    finally:
        proxy.stop()


def ask(forward: Forward, path: str, *, rcvbuf: int = 16384) -> tuple[ssl.SSLSocket, bytes]:
    """A GET of https://files.pythonhosted.org`path` through a CONNECT tunnel, over HTTP/1.1,
    on a connection with a small receive buffer; returns it and what it has read: the
    answer's head and whatever of the body came with it."""
    sock, answer = connect(forward.proxy, f"{FILES}:443")
    assert answer.startswith(b"HTTP/1.1 200"), answer
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    context = ssl.create_default_context(cafile=str(forward.bundle))
    context.set_alpn_protocols(["http/1.1"])
    tls = context.wrap_socket(sock, server_hostname=FILES)
    tls.settimeout(10)
    return tls, get_head(tls, path, FILES)


def upstream_path(fake_path: str) -> str:
    """A fake upstream file's path at files.pythonhosted.org."""
    return fake_path.removeprefix("/files")


def fetched(forward: Forward, path: str) -> str:
    """The sha256 of a whole file got through the tunnel."""
    tls, head = ask(forward, path, rcvbuf=1 << 20)
    with tls:
        assert head.startswith(b"HTTP/1.1 200"), head
        length = content_length(head)
        digest = hashlib.sha256(head.split(b"\r\n\r\n", 1)[1])
        got = len(head.split(b"\r\n\r\n", 1)[1])
        while got < length:
            piece = tls.recv(1 << 20)
            assert piece, f"cut after {got} of {length} bytes"
            digest.update(piece)
            got += len(piece)
        return digest.hexdigest()


def content_length(head: bytes) -> int:
    return int(next(
        line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    ))


def test_a_forward_client_that_stops_reading_a_stored_file_is_dropped(forward):
    fake, proxy = forward.fake, forward.proxy
    big = fake.add_wheel("omega", "1.0", upload_time=UPLOADED, payload_size=32 << 20)
    assert proxy.get("/2023-06-01/simple/omega/").status == 200  # in history now
    path = upstream_path(big.path)
    assert fetched(forward, path) == big.sha256
    wait_fills(proxy, 1)
    idle_fds, _ = settles(proxy, at_most=10_000)
    before = _proxy_rss(proxy)

    tls, head = ask(forward, path)
    with tls:
        assert head.startswith(b"HTTP/1.1 200"), head
        assert blob_files_open(proxy)  # the blob being sent, leased
        after = dropped_within(tls, timeout=IDLE * 10)
        grown = _proxy_rss(proxy) - before
        assert after is not None, "never dropped"
        assert after >= IDLE * 0.9  # not before the limit
    assert grown < 24 << 20, f"RSS grew {grown >> 20} MiB while the client read nothing"
    count, blobs = settles(proxy, at_most=idle_fds)
    assert (count, blobs) <= (idle_fds, []), open_files(proxy)
    assert fetched(forward, path) == big.sha256

    # No lease is left: filling another big file evicts it (the store holds one of them).
    other = fake.add_wheel("psi", "1.0", upload_time=UPLOADED, payload_size=32 << 20)
    assert proxy.get("/2023-06-01/simple/psi/").status == 200
    assert fetched(forward, upstream_path(other.path)) == other.sha256
    wait_fills(proxy, 2)
    assert other.sha256 in stored(proxy.data_dir)
    assert big.sha256 not in stored(proxy.data_dir)
    assert logged_no_error(proxy), proxy.log


def test_a_forward_client_that_stops_reading_a_download_is_dropped(forward):
    """Dropped while upstream is stalled mid-body: the download goes on for the client that
    waits for upstream's bytes (it has taken all there is), and the file is stored."""
    fake, proxy = forward.fake, forward.proxy
    big = fake.add_wheel("omega", "1.0", upload_time=UPLOADED, payload_size=32 << 20)
    assert proxy.get("/2023-06-01/simple/omega/").status == 200
    path = upstream_path(big.path)
    idle_fds, _ = settles(proxy, at_most=10_000)
    fake.fault("/files/", "stall_body", seconds=4 * IDLE, times=1)  # half, a pause, the rest

    tls, head = ask(forward, path)
    with tls:
        assert head.startswith(b"HTTP/1.1 200"), head
        after = dropped_within(tls, timeout=IDLE * 10)
        assert after is not None, "never dropped"
        assert after >= IDLE * 0.9
    wait_fills(proxy, 1)
    assert big.sha256 in stored(proxy.data_dir)
    count, blobs = settles(proxy, at_most=idle_fds)
    assert (count, blobs) <= (idle_fds, []), open_files(proxy)
    assert logged_no_error(proxy), proxy.log


def test_a_slow_but_steady_forward_client_is_not_cut(forward):
    """6 MiB read at about 1 MiB/s.  Once the socket's buffers are full (about 4 MB), each of
    mitmproxy's reads of the file (a MiB) waits about a second for this client, as long as
    the limit, with no traffic mitmproxy counts meanwhile."""
    fake, proxy = forward.fake, forward.proxy
    big = fake.add_wheel("omega", "1.0", upload_time=UPLOADED, payload_size=6 << 20)
    assert proxy.get("/2023-06-01/simple/omega/").status == 200
    path = upstream_path(big.path)
    assert fetched(forward, path) == big.sha256
    wait_fills(proxy, 1)

    tls, head = ask(forward, path, rcvbuf=64 * 1024)
    with tls:
        start = time.monotonic()
        length = content_length(head)
        body = bytearray(head.split(b"\r\n\r\n", 1)[1])
        while len(body) < length:
            piece = tls.recv(min(16 * 1024, length - len(body)))
            assert piece, f"cut after {len(body)} of {length} bytes"
            body += piece
            time.sleep(len(piece) / (1 << 20))
        assert time.monotonic() - start > 3 * IDLE
        assert hashlib.sha256(body).hexdigest() == big.sha256
        # Nothing left to send: a connection that then says nothing is closed as idle.
        assert dropped_within(tls, timeout=IDLE * 10) is not None
    assert logged_no_error(proxy), proxy.log
